//! Small builders for tests and benchmarks (also used by the integration tests).

use std::sync::Arc;

use crate::model::{
    AttrValue, AttributesBuilder, CloseReason, Resource, Span, SpanKind, StatusCode, Trace,
};

/// A span with a few attributes and the given ids and times (nanoseconds).
pub fn span(
    trace_id: u128,
    span_id: u64,
    parent: u64,
    start_ns: i64,
    end_ns: i64,
    service: &str,
) -> Span {
    let mut attrs = AttributesBuilder::default();
    attrs
        .push("http.request.method", AttrValue::Str("GET"))
        .push("http.response.status_code", AttrValue::Int(200));
    let mut res = AttributesBuilder::default();
    res.push("deployment.environment", AttrValue::Str("test"));
    Span {
        trace_id,
        span_id,
        parent_span_id: parent,
        start_ns,
        end_ns,
        name: Arc::from(format!("{service} op").as_str()),
        kind: if parent == 0 {
            SpanKind::Server
        } else {
            SpanKind::Internal
        },
        status: StatusCode::Unset,
        status_message: None,
        resource: Arc::new(Resource {
            service_name: Arc::from(service),
            attributes: res.build(),
        }),
        attributes: attrs.build(),
        events: Default::default(),
    }
}

/// A completed trace of `spans`, sorted as assembly leaves them.
pub fn completed(trace_id: u128, spans: Vec<Span>) -> Trace {
    let mut trace = Trace {
        trace_id,
        spans,
        amendment: false,
        close_reason: CloseReason::Completed,
        incomplete: false,
    };
    trace.sort_spans();
    trace
}

/// Completed traces of `spans` that come trace by trace (as the workload generates
/// them), each sorted as assembly leaves it.
pub fn completed_traces(spans: Vec<Span>) -> Vec<Trace> {
    let mut out: Vec<Trace> = Vec::new();
    for s in spans {
        match out.last_mut() {
            Some(t) if t.trace_id == s.trace_id => t.spans.push(s),
            _ => out.push(completed(s.trace_id, vec![s])),
        }
    }
    for t in &mut out {
        t.sort_spans();
    }
    out
}
