//! spanline's own query API under `/api/spanline/`: a trace's analysis, alert events
//! and active alerts, RED series, baseline-against-current comparisons and trends, in
//! the same envelope and error shape as the Jaeger API.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::model::{hex_span_id, hex_trace_id, Alert, Analysis, Trace};
use crate::repository::StoredTrace;
use crate::serve::compare::{self, SeriesComparison, SeriesSelection};
use crate::serve::trend::{self, SeriesPoints, Trend};
use crate::stage::analyze::{analyze, AnalyzeSettings};

use super::jaeger::Envelope;
use super::own_params::{self as p, ms_to_ns, DEFAULT_RANGE_MS};
use super::{params, Answer, ApiFailure, ApiState, Params};

/// The prefix of every route of this module.
pub const PREFIX: &str = "/api/spanline";

/// The routes (merged into the `/api/` router, behind its token check).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            &format!("{PREFIX}/traces/{{trace_id}}/analysis"),
            get(analysis),
        )
        .route(&format!("{PREFIX}/alerts"), get(alerts))
        .route(&format!("{PREFIX}/series"), get(series))
        .route(&format!("{PREFIX}/compare"), get(compare_ranges))
        .route(&format!("{PREFIX}/trend"), get(trends))
}

fn ok<T: Serialize>(data: Vec<T>, limit: usize) -> Json<Envelope<Vec<T>>> {
    let n = data.len();
    Json(Envelope::ok(data, n, limit))
}

/// The analysis of a stored trace as JSON (ids in hex, durations in milliseconds).
pub fn analysis_json(trace_id: u128, a: &Analysis, reanalyzed: bool) -> Value {
    let ms = |ns: i64| ns as f64 / 1e6;
    json!({
        "traceID": hex_trace_id(trace_id),
        "reanalyzed": reanalyzed,
        "durationMs": ms(a.duration_ns),
        "spanCount": a.span_count,
        "depth": a.depth,
        "errorCount": a.error_count,
        "services": a.services,
        "rootService": a.root_service,
        "rootName": a.root_name,
        "criticalPath": a.critical_path.iter().map(|s| json!({
            "spanID": hex_span_id(s.span_id),
            "service": s.service,
            "name": s.name,
            "selfTimeMs": ms(s.self_time_ns),
        })).collect::<Vec<_>>(),
        "bottleneck": a.bottleneck.as_ref().map(|b| json!({
            "spanID": hex_span_id(b.span_id),
            "service": b.service,
            "name": b.name,
            "selfTimeMs": ms(b.self_time_ns),
            "share": b.share,
        })),
        "bottleneckService": a.bottleneck_service.as_ref().map(|(s, share)| json!({
            "service": s,
            "share": share,
        })),
        "findings": a.findings.iter().map(|f| json!({
            "kind": f.kind.as_str(),
            "spanIDs": f.span_ids.iter().map(|id| hex_span_id(*id)).collect::<Vec<_>>(),
            "service": f.service,
            "message": f.message,
        })).collect::<Vec<_>>(),
        "edges": a.edges.iter().map(|e| json!({
            "client": e.client,
            "server": e.server,
            "kind": e.kind.as_str(),
            "clientLatencyMs": ms(e.client_latency_ns),
            "serverLatencyMs": ms(e.server_latency_ns),
            "error": e.error,
        })).collect::<Vec<_>>(),
        "oddities": a.oddities.labels()
            .map(|(k, n)| (k.to_string(), Value::from(n)))
            .collect::<serde_json::Map<String, Value>>(),
    })
}

/// The stored analysis, or a new one when it is missing or older than the spans
/// (amendments added spans after it was made).
pub fn current_analysis(t: StoredTrace, settings: &AnalyzeSettings) -> (Analysis, bool) {
    match t.analysis {
        Some(a) if a.span_count >= t.spans.len() => (a, false),
        _ => {
            let trace = Trace {
                trace_id: t.summary.trace_id,
                spans: t.spans,
                amendment: false,
                close_reason: t.summary.close_reason,
                incomplete: t.summary.incomplete,
            };
            (analyze(&trace, settings), true)
        }
    }
}

async fn analysis(State(s): State<ApiState>, Path(id): Path<String>) -> Answer<Vec<Value>> {
    let id = params::trace_id("traceID", &id)?;
    let settings = s.analyze.clone();
    let found = s
        .pool
        .with(move |r| {
            Ok(r.get_trace(id)?.map(|t| {
                let (a, fresh) = current_analysis(t, &settings);
                analysis_json(id, &a, fresh)
            }))
        })
        .await?;
    match found {
        Some(v) => Ok(ok(vec![v], 0)),
        None => Err(ApiFailure::NotFound("trace not found".into())),
    }
}

async fn alerts(State(s): State<ApiState>, q: Params) -> Answer<Vec<Alert>> {
    let (q, active) = p::alerts(&super::params(q)?, crate::runner::wall_ms())?;
    let limit = q.limit;
    let found = s
        .pool
        .with(move |r| {
            if active {
                r.active_alerts(&q)
            } else {
                r.alerts(&q)
            }
        })
        .await?;
    Ok(ok(found, limit))
}

/// The selection, range and series limit shared by `series`, `compare` and `trend`.
fn selection(
    params: &[(String, String)],
    one_scope: bool,
) -> Result<(SeriesSelection, usize), ApiFailure> {
    let operation = p::name(params, "operation")?;
    let scope = p::scope(params)?;
    let scopes = match (scope, one_scope, &operation) {
        (Some(s), _, _) => vec![s],
        (None, true, Some(_)) => vec!["operation".to_string()],
        (None, true, None) => vec!["service".to_string()],
        (None, false, _) => Vec::new(),
    };
    let sel = SeriesSelection {
        scopes,
        service: p::name(params, "service")?,
        operation,
        window_size_ns: p::window(params)?,
    };
    let limit = p::limit(params, p::DEFAULT_SERIES_LIMIT, p::MAX_SERIES_LIMIT)?;
    Ok((sel, limit))
}

async fn series(State(s): State<ApiState>, q: Params) -> Answer<Vec<SeriesPoints>> {
    let q = super::params(q)?;
    let (sel, limit) = selection(&q, true)?;
    let now = crate::runner::wall_ms();
    let (start, end) = p::range(&q, ("start", "end"), now, (now, DEFAULT_RANGE_MS))?;
    let mut found = s
        .pool
        .with(move |r| sel.read(r, ms_to_ns(start), ms_to_ns(end)))
        .await
        .map(|s| trend::series_points(&s))?;
    found.truncate(limit);
    Ok(ok(found, limit))
}

async fn compare_ranges(State(s): State<ApiState>, q: Params) -> Answer<Vec<SeriesComparison>> {
    let q = super::params(q)?;
    let (sel, limit) = selection(&q, false)?;
    let now = crate::runner::wall_ms();
    let current = p::range(&q, ("start", "end"), now, (now, DEFAULT_RANGE_MS))?;
    let len = current.1 - current.0;
    let baseline = p::range(&q, ("baselineStart", "baselineEnd"), now, (current.0, len))?;
    let ns = |(a, b): (i64, i64)| (ms_to_ns(a), ms_to_ns(b));
    let mut found = s
        .pool
        .with(move |r| compare::compare(r, &sel, ns(baseline), ns(current)))
        .await?;
    found.truncate(limit);
    Ok(ok(found, limit))
}

async fn trends(State(s): State<ApiState>, q: Params) -> Answer<Vec<Trend>> {
    let q = super::params(q)?;
    let (sel, limit) = selection(&q, false)?;
    let field = p::field(&q)?;
    let bound = p::bound(&q)?;
    let now = crate::runner::wall_ms();
    let (start, end) = p::range(&q, ("start", "end"), now, (now, DEFAULT_RANGE_MS))?;
    let size_given = sel.window_size_ns.is_some();
    let mut found = s
        .pool
        .with(move |r| sel.read(r, ms_to_ns(start), ms_to_ns(end)))
        .await?;
    if !size_given {
        found = compare::smallest_size(found);
    }
    let mut out: Vec<Trend> = found
        .iter()
        .map(|s| trend::trend(s, field, bound))
        .collect();
    out.truncate(limit);
    Ok(ok(out, limit))
}
