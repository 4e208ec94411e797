//! The web UI: a single page and its assets, embedded in the binary (no CDN, no build
//! step), served at `/` and `/ui/{asset}` by the same listener as `/metrics`. The page
//! reads the query API and `/api/spanline/events`; the assets themselves need no token.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// `(name, content type, bytes)` of every asset under `/ui/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/app.css"),
    ),
    ("api.js", JS, include_bytes!("../../ui/api.js")),
    ("views.js", JS, include_bytes!("../../ui/views.js")),
    ("trace.js", JS, include_bytes!("../../ui/trace.js")),
    ("app.js", JS, include_bytes!("../../ui/app.js")),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../ui/favicon.svg"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = include_str!("../../ui/index.html");

/// The routes of the UI.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ui/", get(index))
        .route("/ui/{asset}", get(asset))
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_embedded_assets() {
        for (name, _, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name} is empty");
        }
        for part in INDEX.split("/ui/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "index.html links /ui/{name}, which is not embedded"
            );
        }
        assert!(!INDEX.contains("://"), "no asset from another host");
    }
}
