//! The query API over the trace repository: Jaeger's HTTP JSON API (`/api/services`,
//! `/api/services/{service}/operations`, `/api/operations`, `/api/traces`,
//! `/api/traces/{traceID}`, `/api/dependencies`), so Grafana's Jaeger data source and
//! the Jaeger UI read spanline's traces unchanged; and spanline's own API under
//! `/api/spanline/` ([`own`]): trace analyses, alerts, RED series, comparisons, trends.
//!
//! Every request reads the database on the blocking pool through a read-only
//! connection; when `SPANLINE_API_TOKEN` is set, every `/api/` request must carry
//! `Authorization: Bearer <token>`.

pub mod jaeger;
pub mod own;
pub mod own_params;
pub mod params;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::model::TraceId;
use crate::repository::{Repository, RepositoryError};
use crate::stage::analyze::AnalyzeSettings;

use jaeger::{error_body, Envelope};
use params::BadParam;

/// The environment variable that holds the API's bearer token.
pub const TOKEN_ENV: &str = "SPANLINE_API_TOKEN";

/// Read-only connections to the repository, reused across requests.
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Repository>>,
}

/// Connections kept open between requests.
const POOL_SIZE: usize = 4;

impl ReadPool {
    /// A pool of connections to the database at `path` (which must exist).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a connection, on the blocking pool.
    async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Repository) -> Result<T, RepositoryError> + Send + 'static,
    ) -> Result<T, ApiFailure> {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken = pool.idle.lock().ok().and_then(|mut idle| idle.pop());
            let repo = match taken {
                Some(r) => r,
                None => Repository::open_read_only(&pool.path)?,
            };
            let out = f(&repo);
            if let Ok(mut idle) = pool.idle.lock() {
                if idle.len() < POOL_SIZE {
                    idle.push(repo);
                }
            }
            out.map_err(ApiFailure::from)
        })
        .await
        .unwrap_or_else(|e| Err(ApiFailure::Internal(format!("query task failed: {e}"))))
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pool: Arc<ReadPool>,
    /// The bearer token `/api/` requires, if any.
    token: Option<Arc<str>>,
    /// How a trace whose stored analysis is missing or stale is analysed again.
    analyze: Arc<AnalyzeSettings>,
}

impl ApiState {
    /// Serves the repository at `path`, requiring `token` when given.
    pub fn new(path: PathBuf, token: Option<String>) -> Self {
        Self {
            pool: Arc::new(ReadPool::new(path)),
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
            analyze: Arc::default(),
        }
    }

    /// Analyses traces whose stored analysis is missing or stale with `settings` (the
    /// pipeline's analyze stage settings; default: [`AnalyzeSettings::default`]).
    pub fn with_analyze(mut self, settings: AnalyzeSettings) -> Self {
        self.analyze = Arc::new(settings);
        self
    }

    /// Reads the token from [`TOKEN_ENV`] (unset or empty: no token).
    pub fn from_env(path: PathBuf) -> Self {
        Self::new(path, std::env::var(TOKEN_ENV).ok())
    }

    /// True when a token protects the API.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

/// A failed request, answered in Jaeger's error envelope.
#[derive(Debug)]
pub enum ApiFailure {
    BadParam(BadParam),
    NotFound(String),
    Unauthorized,
    Internal(String),
}

impl From<BadParam> for ApiFailure {
    fn from(e: BadParam) -> Self {
        ApiFailure::BadParam(e)
    }
}

impl From<RepositoryError> for ApiFailure {
    fn from(e: RepositoryError) -> Self {
        match e {
            RepositoryError::InvalidQuery { parameter, detail } => {
                ApiFailure::BadParam(BadParam { parameter, detail })
            }
            other => ApiFailure::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            ApiFailure::BadParam(e) => (StatusCode::BAD_REQUEST, e.to_string()),
            ApiFailure::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiFailure::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".to_string(),
            ),
            ApiFailure::Internal(m) => {
                tracing::warn!(error = %m, "query api request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        };
        let mut response = (status, Json(error_body(status.as_u16(), msg))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;
type Answer<T> = Result<Json<Envelope<T>>, ApiFailure>;

fn params(p: Params) -> Result<Vec<(String, String)>, ApiFailure> {
    p.map(|Query(v)| v).map_err(|e| {
        ApiFailure::BadParam(BadParam {
            parameter: "query",
            detail: e.body_text(),
        })
    })
}

/// The `/api/` routes (to merge into the listener's router).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/services", get(services))
        .route("/api/services/{service}/operations", get(operations_legacy))
        .route("/api/operations", get(operations))
        .route("/api/traces", get(search))
        .route("/api/traces/{trace_id}", get(get_trace))
        .route("/api/dependencies", get(dependencies))
        .merge(own::routes())
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Rejects `/api/` requests without the bearer token, when one is set.
async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match refusal(state.token.as_deref(), &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// The `401` for `request` when `token` is set and the request does not carry it as
/// `Authorization: Bearer <token>`; `None` when it may pass.
pub(crate) fn refusal(token: Option<&str>, request: &Request) -> Option<Response> {
    let token = token?;
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    (!constant_time_eq(given.as_bytes(), token.as_bytes()))
        .then(|| ApiFailure::Unauthorized.into_response())
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

fn list<T: Serialize>(data: Vec<T>) -> Json<Envelope<Vec<T>>> {
    let n = data.len();
    Json(Envelope::ok(data, n, 0))
}

async fn services(State(s): State<ApiState>) -> Answer<Vec<String>> {
    Ok(list(s.pool.with(|r| r.services()).await?))
}

async fn operations_legacy(
    State(s): State<ApiState>,
    Path(service): Path<String>,
) -> Answer<Vec<String>> {
    let ops = s.pool.with(move |r| r.operations(&service)).await?;
    let mut names: Vec<String> = ops.into_iter().map(|o| o.name).collect();
    names.dedup();
    Ok(list(names))
}

async fn operations(State(s): State<ApiState>, p: Params) -> Answer<Vec<jaeger::Operation>> {
    let p = params(p)?;
    let get = |name: &str| {
        p.iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let service = get("service").ok_or(BadParam {
        parameter: "service",
        detail: "is required".into(),
    })?;
    let kind = get("spanKind");
    let ops = s.pool.with(move |r| r.operations(&service)).await?;
    Ok(list(
        ops.into_iter()
            .map(|o| jaeger::Operation {
                name: o.name,
                span_kind: jaeger::kind_tag(o.span_kind).unwrap_or("").to_string(),
            })
            .filter(|o| kind.as_deref().is_none_or(|k| k == o.span_kind))
            .collect(),
    ))
}

async fn search(State(s): State<ApiState>, p: Params) -> Answer<Vec<jaeger::Trace>> {
    let search = params::trace_search(&params(p)?)?;
    let limit = search.query.limit;
    let traces = s
        .pool
        .with(move |r| {
            let ids: Vec<TraceId> = if search.trace_ids.is_empty() {
                r.search(&search.query)?
                    .into_iter()
                    .map(|t| t.trace_id)
                    .collect()
            } else {
                search.trace_ids
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(t) = r.get_trace(id)? {
                    out.push(jaeger::trace(&t));
                }
            }
            Ok(out)
        })
        .await?;
    let n = traces.len();
    Ok(Json(Envelope::ok(traces, n, limit)))
}

async fn get_trace(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Answer<Vec<jaeger::Trace>> {
    let id = params::trace_id("traceID", &id)?;
    let found = s
        .pool
        .with(move |r| Ok(r.get_trace(id)?.map(|t| jaeger::trace(&t))))
        .await?;
    match found {
        Some(t) => Ok(Json(Envelope::ok(vec![t], 1, 0))),
        None => Err(ApiFailure::NotFound("trace not found".into())),
    }
}

async fn dependencies(State(s): State<ApiState>, p: Params) -> Answer<Vec<jaeger::DependencyLink>> {
    let p = params(p)?;
    let (end, lookback) = params::dependencies(&p, crate::runner::wall_ms())?;
    let service = p
        .iter()
        .find(|(k, v)| k == "service" && !v.is_empty())
        .map(|(_, v)| v.clone());
    let deps = s.pool.with(move |r| r.dependencies(end, lookback)).await?;
    let links: Vec<_> = jaeger::dependencies(&deps)
        .into_iter()
        .filter(|d| {
            service
                .as_deref()
                .is_none_or(|s| d.parent == s || d.child == s)
        })
        .collect();
    Ok(list(links))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
    }

    #[test]
    fn failures_are_jaeger_error_envelopes() {
        let r = ApiFailure::BadParam(BadParam {
            parameter: "limit",
            detail: "no".into(),
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = ApiFailure::Unauthorized.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let e: ApiFailure = RepositoryError::InvalidQuery {
            parameter: "operation",
            detail: "x".into(),
        }
        .into();
        assert!(matches!(
            e,
            ApiFailure::BadParam(BadParam {
                parameter: "operation",
                ..
            })
        ));
    }
}
