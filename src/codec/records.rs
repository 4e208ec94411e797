//! Readers of the records spanline itself writes to its output topics (traces,
//! aggregates, alerts), in both output formats: the inverse of `crate::output`. The
//! trace repository's feeder reads the pipeline's outputs with them.
//!
//! Avro trace records are read directly (the writer schema is `schemas/trace.avsc`,
//! which spanline registered itself; the analysis fields are skipped, a reader analyses
//! the spans again when it needs them). Aggregate and alert records go through
//! `apache-avro` with their schemas, then share the JSON readers.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use serde_json::Value as Json;

use crate::model::{
    Alert, AlertStatus, AttrValue, Attributes, AttributesBuilder, CloseReason, Events,
    EventsBuilder, Interner, Span, SpanKind, StatusCode, Trace, WindowAggregate,
};

use super::avro::{self, read_span, ResourceCache};
use super::avro_bin::{AvroReadError, Reader};
use super::DecodeError;

/// Decodes the output records of one pipeline, sharing interned names and resources.
#[derive(Default)]
pub struct RecordReader {
    interner: Interner,
    resources: ResourceCache,
}

impl RecordReader {
    /// A trace record (`schemas/trace.avsc` in the Confluent wire format).
    pub fn trace_avro(&mut self, record: &[u8]) -> Result<Trace, DecodeError> {
        let (_, datum) = avro::unframe(record)?;
        let mut r = Reader::new(datum);
        let trace_id = u128::from_be_bytes(r.fixed(16)?.try_into().expect("16 bytes"));
        let amendment = r.bool()?;
        let reason = r.long()?;
        let close_reason =
            CloseReason::from_index(reason).ok_or(AvroReadError::BadEnum(reason, "CloseReason"))?;
        let incomplete = r.bool()?;
        for _ in 0..5 {
            r.long()?; // span_count, start, end, duration, error_count
        }
        skip_optional(&mut r, "Trace.root_service", |r| r.str().map(drop))?;
        skip_optional(&mut r, "Trace.root_name", |r| r.str().map(drop))?;
        skip_array(&mut r, |r| r.str().map(drop))?;
        skip_analysis(&mut r)?;
        let mut spans = Vec::new();
        loop {
            let n = r.block_count()?;
            if n == 0 {
                break;
            }
            for _ in 0..n {
                spans.push(read_span(&mut r, &mut self.interner, &mut self.resources)?);
            }
        }
        check_ids(trace_id, &spans)?;
        Ok(Trace {
            trace_id,
            spans,
            amendment,
            close_reason,
            incomplete,
        })
    }

    /// A JSON trace record (as `crate::output` writes it).
    pub fn trace_json(&mut self, record: &[u8]) -> Result<Trace, DecodeError> {
        if record.is_empty() {
            return Err(DecodeError::Empty);
        }
        let v: Json = serde_json::from_slice(record)?;
        let trace_id = hex_id(&v, "trace_id")?;
        let reason = str_field(&v, "close_reason")?;
        let close_reason = CloseReason::ALL
            .into_iter()
            .find(|r| r.as_str() == reason)
            .ok_or_else(|| bad(format!("unknown close_reason `{reason}`")))?;
        let spans = v
            .get("spans")
            .and_then(Json::as_array)
            .ok_or_else(|| bad("no spans array"))?
            .iter()
            .map(|s| self.span_json(s))
            .collect::<Result<Vec<_>, _>>()?;
        check_ids(trace_id, &spans)?;
        Ok(Trace {
            trace_id,
            spans,
            amendment: v.get("amendment").and_then(Json::as_bool).unwrap_or(false),
            close_reason,
            incomplete: v.get("incomplete").and_then(Json::as_bool).unwrap_or(false),
        })
    }

    fn span_json(&mut self, v: &Json) -> Result<Span, DecodeError> {
        let kind = str_field(v, "kind")?;
        let kind = SpanKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| bad(format!("unknown span kind `{kind}`")))?;
        let status = match str_field(v, "status_code")? {
            "UNSET" => StatusCode::Unset,
            "OK" => StatusCode::Ok,
            "ERROR" => StatusCode::Error,
            other => return Err(bad(format!("unknown status_code `{other}`"))),
        };
        let resource_attrs = attributes_json(v.get("resource_attributes"))?;
        let service = str_field(v, "service_name")?;
        let resource = self
            .resources
            .share(&mut self.interner, service, &resource_attrs);
        let parent_span_id = match v.get("parent_span_id") {
            None | Some(Json::Null) => 0,
            Some(_) => hex_id(v, "parent_span_id")? as u64,
        };
        let span = Span {
            trace_id: hex_id(v, "trace_id")?,
            span_id: hex_id(v, "span_id")? as u64,
            parent_span_id,
            start_ns: i64_field(v, "start_time_unix_nano")?,
            end_ns: i64_field(v, "end_time_unix_nano")?,
            name: self.interner.intern(str_field(v, "name")?),
            kind,
            status,
            status_message: v
                .get("status_message")
                .and_then(Json::as_str)
                .map(Into::into),
            resource,
            attributes: attributes_json(v.get("attributes"))?,
            events: events_json(v.get("events"))?,
        };
        super::validate_span(&span)?;
        Ok(span)
    }
}

/// An aggregate record (`schemas/aggregate.avsc` in the Confluent wire format).
pub fn aggregate_avro(record: &[u8]) -> Result<WindowAggregate, DecodeError> {
    static SCHEMA: LazyLock<apache_avro::Schema> = LazyLock::new(|| {
        apache_avro::Schema::parse_str(avro::AGGREGATE_SCHEMA).expect("valid schema")
    });
    aggregate_from(&avro_to_json(&SCHEMA, record)?)
}

/// A JSON aggregate record.
pub fn aggregate_json(record: &[u8]) -> Result<WindowAggregate, DecodeError> {
    if record.is_empty() {
        return Err(DecodeError::Empty);
    }
    aggregate_from(&serde_json::from_slice(record)?)
}

/// An alert record (`schemas/alert.avsc` in the Confluent wire format).
pub fn alert_avro(record: &[u8]) -> Result<Alert, DecodeError> {
    static SCHEMA: LazyLock<apache_avro::Schema> =
        LazyLock::new(|| apache_avro::Schema::parse_str(avro::ALERT_SCHEMA).expect("valid schema"));
    alert_from(&avro_to_json(&SCHEMA, record)?)
}

/// A JSON alert record.
pub fn alert_json(record: &[u8]) -> Result<Alert, DecodeError> {
    if record.is_empty() {
        return Err(DecodeError::Empty);
    }
    alert_from(&serde_json::from_slice(record)?)
}

fn avro_to_json(schema: &apache_avro::Schema, record: &[u8]) -> Result<Json, DecodeError> {
    let (_, datum) = avro::unframe(record)?;
    let value =
        avro::read_value(schema, None, datum).map_err(|e| DecodeError::Schema(e.to_string()))?;
    Json::try_from(value).map_err(|e| DecodeError::Schema(e.to_string()))
}

/// The record's quantiles become the sketch's points, weighted by the ranks between
/// them, so quantiles read back from the stored window approximate the published ones
/// (the exact sketch is not on the topic).
fn aggregate_from(v: &Json) -> Result<WindowAggregate, DecodeError> {
    let dims = v
        .get("dimensions")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("no dimensions array"))?;
    let key = dims
        .iter()
        .map(|d| {
            Ok((
                Arc::from(str_field(d, "name")?),
                Arc::from(str_field(d, "value")?),
            ))
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let size = i64_field(v, "window_size_ns")?;
    let mut w = WindowAggregate::empty(
        i64_field(v, "window_start_unix_nano")?,
        size,
        Arc::from(str_field(v, "scope")?),
        key,
        i64_field(v, "slo_latency_ns")?,
    );
    w.window_end_ns = i64_field(v, "window_end_unix_nano")?;
    w.count = u64::try_from(i64_field(v, "count")?).unwrap_or(0);
    w.error_count = u64::try_from(i64_field(v, "error_count")?).unwrap_or(0);
    w.min_ns = i64_field(v, "latency_min_ns")?;
    w.max_ns = i64_field(v, "latency_max_ns")?;
    w.sum_ns = i64_field(v, "latency_sum_ns")?;
    let f = |name: &str| v.get(name).and_then(Json::as_f64).unwrap_or(f64::NAN);
    w.concurrency_mean = f("concurrency_mean");
    w.concurrency_max = f("concurrency_max");
    w.busy_ns = (w.concurrency_mean * size as f64) as i64;
    let compliance = f("slo_compliance");
    if compliance.is_finite() {
        w.slo_good = (compliance * w.count as f64).round() as u64;
    }
    if w.count > 0 {
        let points = [
            (0.0, w.min_ns as f64),
            (0.5, f("latency_p50_ns")),
            (0.9, f("latency_p90_ns")),
            (0.95, f("latency_p95_ns")),
            (0.99, f("latency_p99_ns")),
            (1.0, w.max_ns as f64),
        ];
        let mut added = 0u64;
        for (i, (q, value)) in points.iter().enumerate() {
            let upto = if i + 1 == points.len() {
                w.count
            } else {
                ((q * w.count as f64).round() as u64).clamp(added, w.count)
            };
            if value.is_finite() && upto > added {
                w.sketch.add_with_count(value.max(0.0), upto - added);
                added = upto;
            }
        }
    }
    Ok(w)
}

fn alert_from(v: &Json) -> Result<Alert, DecodeError> {
    let status = match str_field(v, "status")? {
        "firing" => AlertStatus::Firing,
        "resolved" => AlertStatus::Resolved,
        other => return Err(bad(format!("unknown alert status `{other}`"))),
    };
    let map = |name: &str| -> BTreeMap<String, String> {
        v.get(name)
            .and_then(Json::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Alert {
        fingerprint: str_field(v, "fingerprint")?.to_string(),
        status,
        rule: str_field(v, "rule")?.to_string(),
        severity: str_field(v, "severity")?.to_string(),
        starts_at_ms: i64_field(v, "starts_at")?,
        ends_at_ms: v.get("ends_at").and_then(Json::as_i64),
        labels: map("labels"),
        annotations: map("annotations"),
        summary: str_field(v, "summary")?.to_string(),
        suspected_service: v
            .get("suspected_service")
            .and_then(Json::as_str)
            .map(str::to_string),
        suspected_services: v
            .get("suspected_services")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(suspect).collect())
            .unwrap_or_default(),
        score: v.get("score").and_then(Json::as_f64).unwrap_or(f64::NAN),
        value: v.get("value").and_then(Json::as_f64),
        exemplar_trace_ids: v
            .get("exemplar_trace_ids")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// One entry of an alert's `suspected_services`: `{service, score, evidence}`.
fn suspect(v: &Json) -> Option<crate::model::Suspect> {
    Some(crate::model::Suspect {
        service: v.get("service")?.as_str()?.to_string(),
        score: v.get("score").and_then(Json::as_f64).unwrap_or(0.0),
        evidence: v
            .get("evidence")
            .and_then(Json::as_array)
            .map(|e| {
                e.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

fn bad(message: impl Into<String>) -> DecodeError {
    DecodeError::Schema(message.into())
}

fn str_field<'a>(v: &'a Json, name: &str) -> Result<&'a str, DecodeError> {
    v.get(name)
        .and_then(Json::as_str)
        .ok_or_else(|| bad(format!("field `{name}` is missing or not a string")))
}

fn i64_field(v: &Json, name: &str) -> Result<i64, DecodeError> {
    v.get(name)
        .and_then(Json::as_i64)
        .ok_or_else(|| bad(format!("field `{name}` is missing or not an integer")))
}

/// A lowercase hex id (trace or span id).
fn hex_id(v: &Json, name: &str) -> Result<u128, DecodeError> {
    let s = str_field(v, name)?;
    if s.is_empty() || s.len() > 32 {
        return Err(bad(format!("field `{name}` is not a hex id")));
    }
    u128::from_str_radix(s, 16).map_err(|_| bad(format!("field `{name}` is not a hex id")))
}

fn attributes_json(v: Option<&Json>) -> Result<Attributes, DecodeError> {
    let mut b = AttributesBuilder::default();
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(b.build());
    };
    let map = v
        .as_object()
        .ok_or_else(|| bad("attributes are not an object"))?;
    for (k, v) in map {
        let value = match v {
            Json::String(s) => AttrValue::Str(s),
            Json::Bool(x) => AttrValue::Bool(*x),
            Json::Number(n) => match n.as_i64() {
                Some(i) => AttrValue::Int(i),
                None => AttrValue::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
            _ => return Err(bad(format!("attribute `{k}` is not a scalar"))),
        };
        b.push(k, value);
    }
    Ok(b.build())
}

fn events_json(v: Option<&Json>) -> Result<Events, DecodeError> {
    let mut b = EventsBuilder::default();
    for e in v.and_then(Json::as_array).into_iter().flatten() {
        let attrs = attributes_json(e.get("attributes"))?;
        b.push(
            i64_field(e, "time_unix_nano")?,
            str_field(e, "name")?,
            &attrs,
        );
    }
    Ok(b.build())
}

/// Every span of a trace record belongs to the trace.
fn check_ids(trace_id: u128, spans: &[Span]) -> Result<(), DecodeError> {
    if trace_id == 0 {
        return Err(DecodeError::Invalid("all-zero trace id".into()));
    }
    match spans.iter().find(|s| s.trace_id != trace_id) {
        Some(s) => Err(DecodeError::Invalid(format!(
            "span {:016x} has another trace id than its trace record",
            s.span_id
        ))),
        None => Ok(()),
    }
}

fn skip_optional(
    r: &mut Reader<'_>,
    field: &'static str,
    item: impl FnOnce(&mut Reader<'_>) -> Result<(), AvroReadError>,
) -> Result<(), AvroReadError> {
    match r.long()? {
        0 => Ok(()),
        1 => item(r),
        n => Err(AvroReadError::BadUnion(n, field)),
    }
}

fn skip_array(
    r: &mut Reader<'_>,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<(), AvroReadError>,
) -> Result<(), AvroReadError> {
    loop {
        let n = r.block_count()?;
        if n == 0 {
            return Ok(());
        }
        for _ in 0..n {
            item(r)?;
        }
    }
}

/// Skips the analysis fields of `schemas/trace.avsc` (depth through oddities).
fn skip_analysis(r: &mut Reader<'_>) -> Result<(), AvroReadError> {
    r.long()?; // depth
    skip_array(r, |r| {
        r.fixed(8)?;
        r.str()?;
        r.str()?;
        r.long().map(drop)
    })?;
    skip_optional(r, "Trace.bottleneck", |r| {
        r.fixed(8)?;
        r.str()?;
        r.str()?;
        r.long()?;
        r.double().map(drop)
    })?;
    skip_optional(r, "Trace.bottleneck_service", |r| r.str().map(drop))?;
    r.double()?;
    skip_array(r, |r| {
        r.str()?;
        r.str()?;
        skip_array(r, |r| r.fixed(8).map(drop))?;
        r.str().map(drop)
    })?;
    skip_array(r, |r| {
        r.str()?;
        r.long().map(drop)
    })
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
