//! `GET /api/spanline/status`: what this process serves, for the web UI to know which
//! views it can fill: `{"data": {"repository": true}, ...}` (the API's envelope) when the trace
//! repository (and with it the query API) runs here. Open like `/healthz`: it says
//! nothing about the data.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::api::jaeger::Envelope;

/// What the process serves.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Status {
    /// The trace repository and the query API (`/api/services`, `/api/traces`,
    /// `/api/dependencies`, `/api/spanline/...` over stored data) are here.
    pub repository: bool,
}

/// The route.
pub fn router(status: Status) -> Router {
    Router::new().route(
        "/api/spanline/status",
        get(move || async move { Json(Envelope::ok(status, 1, 1)) }),
    )
}
