//! `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// Whether the pipeline is ready (consumer assigned, outputs registered).
#[derive(Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    executions: super::executions::Executions,
    live: super::live::Live,
}

impl Readiness {
    /// Marks the pipeline ready or not.
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// True when ready.
    pub fn get(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The pipeline's open traces, on request (`/api/spanline/executions`).
    pub fn executions(&self) -> &super::executions::Executions {
        &self.executions
    }

    /// The pipeline's closed windows and alert events, as emitted
    /// (`/api/spanline/events`).
    pub fn live(&self) -> &super::live::Live {
        &self.live
    }
}

/// Binds `addr` and serves until the returned task is aborted; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    ready: Readiness,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(addr, ready, Router::new()).await
}

/// As [`serve`], with `extra` routes (the query API) beside the built-in ones.
pub async fn serve_with(
    addr: SocketAddr,
    ready: Readiness,
    extra: Router,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = extra
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    super::metrics::render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.get();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok((bound, task))
}
