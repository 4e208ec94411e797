//! Jaeger's UI JSON model (`model/json` in jaegertracing/jaeger) and its response
//! envelope (`structuredResponse` of the query service's HTTP handler), built from
//! stored traces.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use crate::model::{
    hex_span_id, hex_trace_id, AttrValue, Attributes, Resource, SpanKind, StatusCode,
};
use crate::repository::{Dependency, StoredTrace};

/// `{"data": …, "total": n, "limit": n, "offset": 0, "errors": null}`.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    pub data: T,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
    pub errors: Option<Vec<ApiError>>,
}

impl<T: Serialize> Envelope<T> {
    /// A successful response.
    pub fn ok(data: T, total: usize, limit: usize) -> Self {
        Self {
            data,
            total,
            limit,
            offset: 0,
            errors: None,
        }
    }
}

/// One entry of `errors`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub msg: String,
}

/// The envelope of a failed request: no data, one error.
pub fn error_body(code: u16, msg: impl Into<String>) -> Envelope<Option<()>> {
    Envelope {
        data: None,
        total: 0,
        limit: 0,
        offset: 0,
        errors: Some(vec![ApiError {
            code,
            msg: msg.into(),
        }]),
    }
}

/// A Jaeger key-value: `{"key", "type", "value"}` with type `string`, `bool`, `int64`
/// or `float64`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyValue {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: Value,
}

impl KeyValue {
    fn string(key: &str, value: &str) -> Self {
        Self {
            key: key.to_string(),
            kind: "string",
            value: Value::String(value.to_string()),
        }
    }

    fn of(key: &str, value: AttrValue<'_>) -> Self {
        let (kind, value) = match value {
            AttrValue::Str(s) => ("string", Value::String(s.to_string())),
            AttrValue::Bool(b) => ("bool", Value::Bool(b)),
            AttrValue::Int(i) => ("int64", json!(i)),
            // JSON has no NaN or infinity: those are written as text
            AttrValue::Double(d) => match serde_json::Number::from_f64(d) {
                Some(n) => ("float64", Value::Number(n)),
                None => ("string", Value::String(d.to_string())),
            },
        };
        Self {
            key: key.to_string(),
            kind,
            value,
        }
    }
}

fn tags_of(attrs: &Attributes) -> Vec<KeyValue> {
    attrs.iter().map(|(k, v)| KeyValue::of(k, v)).collect()
}

/// The lowercase span kind Jaeger's OTLP translator writes as the `span.kind` tag.
pub fn kind_tag(kind: SpanKind) -> Option<&'static str> {
    match kind {
        SpanKind::Unspecified => None,
        SpanKind::Internal => Some("internal"),
        SpanKind::Server => Some("server"),
        SpanKind::Client => Some("client"),
        SpanKind::Producer => Some("producer"),
        SpanKind::Consumer => Some("consumer"),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    pub ref_type: &'static str,
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

#[derive(Debug, Serialize)]
pub struct Log {
    /// Microseconds since the epoch.
    pub timestamp: i64,
    pub fields: Vec<KeyValue>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
    pub flags: u32,
    pub operation_name: String,
    pub references: Vec<Reference>,
    /// Microseconds since the epoch.
    pub start_time: i64,
    /// Microseconds.
    pub duration: i64,
    pub tags: Vec<KeyValue>,
    pub logs: Vec<Log>,
    #[serde(rename = "processID")]
    pub process_id: String,
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub service_name: String,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Serialize)]
pub struct Trace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub spans: Vec<Span>,
    pub processes: HashMap<String, Process>,
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DependencyLink {
    pub parent: String,
    pub child: String,
    pub call_count: u64,
}

/// One operation of `/api/operations`.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub name: String,
    pub span_kind: String,
}

fn micros(ns: i64) -> i64 {
    ns.div_euclid(1_000)
}

/// A stored trace in Jaeger's model: spans in start order, one process per distinct
/// resource (`p1`, `p2`, … in order of first use), OTLP status and kind as the tags
/// Jaeger's OTLP translator writes (`span.kind`, `otel.status_code`,
/// `otel.status_description`, `error`), events as logs with an `event` field.
pub fn trace(t: &StoredTrace) -> Trace {
    let trace_id = hex_trace_id(t.summary.trace_id);
    let mut processes: HashMap<String, Process> = HashMap::new();
    let mut ids: Vec<(Arc<Resource>, String)> = Vec::new();
    let spans = t
        .spans
        .iter()
        .map(|s| {
            let process_id = match ids
                .iter()
                .find(|(r, _)| Arc::ptr_eq(r, &s.resource) || **r == *s.resource)
            {
                Some((_, id)) => id.clone(),
                None => {
                    let id = format!("p{}", ids.len() + 1);
                    ids.push((s.resource.clone(), id.clone()));
                    processes.insert(
                        id.clone(),
                        Process {
                            service_name: s.service().to_string(),
                            tags: tags_of(&s.resource.attributes),
                        },
                    );
                    id
                }
            };
            let mut tags = tags_of(&s.attributes);
            if let Some(kind) = kind_tag(s.kind) {
                tags.push(KeyValue::string("span.kind", kind));
            }
            match s.status {
                StatusCode::Unset => {}
                StatusCode::Ok => tags.push(KeyValue::string("otel.status_code", "OK")),
                StatusCode::Error => {
                    tags.push(KeyValue::string("otel.status_code", "ERROR"));
                    tags.push(KeyValue::of("error", AttrValue::Bool(true)));
                }
            }
            if let Some(m) = &s.status_message {
                tags.push(KeyValue::string("otel.status_description", m));
            }
            let logs = s
                .events
                .iter()
                .map(|(time, name, attrs)| {
                    let mut fields = vec![KeyValue::string("event", name)];
                    fields.extend(tags_of(&attrs));
                    Log {
                        timestamp: micros(time),
                        fields,
                    }
                })
                .collect();
            let references = if s.is_root() {
                Vec::new()
            } else {
                vec![Reference {
                    ref_type: "CHILD_OF",
                    trace_id: trace_id.clone(),
                    span_id: hex_span_id(s.parent_span_id),
                }]
            };
            Span {
                trace_id: trace_id.clone(),
                span_id: hex_span_id(s.span_id),
                flags: 1,
                operation_name: s.name.to_string(),
                references,
                start_time: micros(s.start_ns),
                duration: micros(s.end_ns.saturating_sub(s.start_ns).max(0)),
                tags,
                logs,
                process_id,
                warnings: None,
            }
        })
        .collect();
    let mut warnings = Vec::new();
    if t.summary.incomplete {
        warnings.push(format!(
            "trace is incomplete: spans are missing (closed as {})",
            t.summary.close_reason.as_str()
        ));
    }
    Trace {
        trace_id,
        spans,
        processes,
        warnings: (!warnings.is_empty()).then_some(warnings),
    }
}

/// Dependencies in Jaeger's model.
pub fn dependencies(deps: &[Dependency]) -> Vec<DependencyLink> {
    deps.iter()
        .map(|d| DependencyLink {
            parent: d.parent.clone(),
            child: d.child.clone(),
            call_count: d.call_count,
        })
        .collect()
}

#[cfg(test)]
#[path = "jaeger_tests.rs"]
mod tests;
