//! `GET /api/spanline/executions`: the traces the pipeline of this process holds open (spans
//! so far, age, services, the root if seen), to look at an execution before it ends.
//! Answered by the running pipeline itself (see `telemetry::executions`), so it is
//! there in `run` and `demo`, with or without the repository, and not in `serve`.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::api::jaeger::{error_body, Envelope};
use super::api::params::BadParam;
use super::api::{refusal, TOKEN_ENV};
use crate::model::RunningSnapshot;
use crate::telemetry::executions::{Executions, ExecutionsQuery, MAX_LIMIT};

/// Traces listed when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 20;

/// How long a request waits for the pipeline's answer (it ticks every 200 ms).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct ExecState {
    executions: Executions,
    token: Option<std::sync::Arc<str>>,
}

/// The route, protected by the API's bearer token when `SPANLINE_API_TOKEN` is set.
pub fn router(executions: Executions) -> Router {
    let state = ExecState {
        executions,
        token: std::env::var(TOKEN_ENV).ok().map(Into::into),
    };
    Router::new()
        .route("/api/spanline/executions", get(list))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Parses `limit` (1..=1000, default 20) and `service`; anything else is a 400.
pub fn query(params: &[(String, String)]) -> Result<ExecutionsQuery, BadParam> {
    let mut q = ExecutionsQuery {
        limit: DEFAULT_LIMIT,
        service: None,
    };
    for (k, v) in params {
        match k.as_str() {
            "limit" => {
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| BadParam {
                        parameter: "limit",
                        detail: format!("{v:?} is not a whole number from 1 to {MAX_LIMIT}"),
                    })?;
            }
            "service" if !v.is_empty() => q.service = Some(v.clone()),
            "service" => {
                return Err(BadParam {
                    parameter: "service",
                    detail: "empty".into(),
                })
            }
            _ => {
                return Err(BadParam {
                    parameter: "query",
                    detail: format!("unknown parameter {k:?} (known: limit, service)"),
                })
            }
        }
    }
    Ok(q)
}

fn failure(status: StatusCode, msg: String) -> Response {
    (status, Json(error_body(status.as_u16(), msg))).into_response()
}

async fn list(
    State(state): State<ExecState>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => return failure(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let q = match query(&params) {
        Ok(q) => q,
        Err(e) => return failure(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.executions.ask(q, ANSWER_TIMEOUT).await {
        Some(snapshot) => Json(Envelope {
            data: RunningSnapshot::clone(&snapshot),
            total: snapshot.open_traces,
            limit: snapshot.traces.len(),
            offset: 0,
            errors: None,
        })
        .into_response(),
        None => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the pipeline did not answer within {ANSWER_TIMEOUT:?}"),
        ),
    }
}

async fn authorize(State(state): State<ExecState>, request: Request, next: Next) -> Response {
    match refusal(state.token.as_deref(), &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn limit_and_service_parse_and_bad_ones_name_the_parameter() {
        let q = query(&p(&[("limit", "5"), ("service", "orders")])).unwrap();
        assert_eq!((q.limit, q.service.as_deref()), (5, Some("orders")));
        assert_eq!(query(&[]).unwrap().limit, DEFAULT_LIMIT);
        for (bad, param) in [
            (p(&[("limit", "0")]), "limit"),
            (p(&[("limit", "1001")]), "limit"),
            (p(&[("limit", "ten")]), "limit"),
            (p(&[("service", "")]), "service"),
            (p(&[("lmit", "3")]), "query"),
        ] {
            assert_eq!(query(&bad).unwrap_err().parameter, param, "{bad:?}");
        }
    }
}
