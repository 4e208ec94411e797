//! OTLP traces as the OpenTelemetry Collector's Kafka exporter writes them: one
//! `ExportTraceServiceRequest` per message, protobuf (`otlp_proto`) or JSON (`otlp_json`).

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::{self as otlp, ResourceSpans, ScopeSpans};
use prost::Message;

use super::avro::ResourceCache;
use super::DecodeError;
use crate::model::{
    AttrValue, Attributes, AttributesBuilder, EventsBuilder, Interner, Span, SpanKind, StatusCode,
};

/// Decodes OTLP messages into spans, sharing names and resources between them.
#[derive(Default)]
pub struct OtlpDecoder {
    interner: Interner,
    resources: ResourceCache,
}

impl OtlpDecoder {
    /// Decodes one protobuf `ExportTraceServiceRequest`.
    pub fn decode_proto(&mut self, bytes: &[u8], out: &mut Vec<Span>) -> Result<(), DecodeError> {
        let req = ExportTraceServiceRequest::decode(bytes)?;
        self.convert(req, out)
    }

    /// Decodes one OTLP/JSON `ExportTraceServiceRequest` (hex ids, as the OTLP spec and
    /// the Collector write them).
    pub fn decode_json(&mut self, bytes: &[u8], out: &mut Vec<Span>) -> Result<(), DecodeError> {
        let req: ExportTraceServiceRequest = serde_json::from_slice(bytes)?;
        self.convert(req, out)
    }

    fn convert(
        &mut self,
        req: ExportTraceServiceRequest,
        out: &mut Vec<Span>,
    ) -> Result<(), DecodeError> {
        let first = out.len();
        for rs in req.resource_spans {
            let (service, attrs) = split_resource(rs.resource.unwrap_or_default());
            let resource = self.resources.share(&mut self.interner, &service, &attrs);
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let span = self.convert_span(s, resource.clone());
                    match span.and_then(|s| super::validate_span(&s).map(|()| s)) {
                        Ok(span) => out.push(span),
                        Err(e) => {
                            out.truncate(first);
                            return Err(e);
                        }
                    }
                }
            }
        }
        if out.len() == first {
            // exporters never send empty requests: this is something else
            return Err(DecodeError::Invalid("message holds no spans".into()));
        }
        Ok(())
    }

    fn convert_span(
        &mut self,
        s: otlp::Span,
        resource: Arc<crate::model::Resource>,
    ) -> Result<Span, DecodeError> {
        let trace_id: [u8; 16] = s.trace_id.as_slice().try_into().map_err(|_| {
            DecodeError::Invalid(format!("trace id has {} bytes, not 16", s.trace_id.len()))
        })?;
        let span_id: [u8; 8] = s.span_id.as_slice().try_into().map_err(|_| {
            DecodeError::Invalid(format!("span id has {} bytes, not 8", s.span_id.len()))
        })?;
        let parent_span_id = match s.parent_span_id.len() {
            0 => 0,
            8 => u64::from_be_bytes(s.parent_span_id.as_slice().try_into().expect("8 bytes")),
            n => {
                return Err(DecodeError::Invalid(format!(
                    "parent span id has {n} bytes, not 8"
                )))
            }
        };
        // checked before narrowing: a u64 beyond i64::MAX would wrap to before 1970
        super::check_time("start time", s.start_time_unix_nano.into())?;
        super::check_time("end time", s.end_time_unix_nano.into())?;
        let status = s.status.unwrap_or_default();
        let mut events = EventsBuilder::default();
        for e in &s.events {
            events.push(e.time_unix_nano as i64, &e.name, &attributes(&e.attributes));
        }
        Ok(Span {
            trace_id: u128::from_be_bytes(trace_id),
            span_id: u64::from_be_bytes(span_id),
            parent_span_id,
            start_ns: s.start_time_unix_nano as i64,
            end_ns: s.end_time_unix_nano as i64,
            name: self.interner.intern(&s.name),
            kind: SpanKind::from_index(s.kind.into()).unwrap_or_default(),
            status: StatusCode::from_index(status.code.into()).unwrap_or_default(),
            status_message: (!status.message.is_empty()).then(|| status.message.into()),
            resource,
            attributes: attributes(&s.attributes),
            events: events.build(),
        })
    }
}

/// Takes `service.name` out of the resource attributes.
fn split_resource(resource: OtlpResource) -> (String, Attributes) {
    let mut service = String::from("unknown_service");
    let mut rest = Vec::with_capacity(resource.attributes.len());
    for kv in resource.attributes {
        match (&*kv.key, &kv.value) {
            (
                "service.name",
                Some(AnyValue {
                    value: Some(any_value::Value::StringValue(s)),
                }),
            ) => service = s.clone(),
            _ => rest.push(kv),
        }
    }
    (service, attributes(&rest))
}

/// Converts OTLP key/values; arrays, maps and bytes become their JSON text.
fn attributes(kvs: &[KeyValue]) -> Attributes {
    let mut b = AttributesBuilder::default();
    for kv in kvs {
        let Some(value) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
            continue;
        };
        match value {
            any_value::Value::StringValue(s) => b.push(&kv.key, AttrValue::Str(s)),
            any_value::Value::BoolValue(x) => b.push(&kv.key, AttrValue::Bool(*x)),
            any_value::Value::IntValue(x) => b.push(&kv.key, AttrValue::Int(*x)),
            any_value::Value::DoubleValue(x) => b.push(&kv.key, AttrValue::Double(*x)),
            other => {
                let text = serde_json::to_string(other).unwrap_or_default();
                b.push(&kv.key, AttrValue::Str(&text))
            }
        };
    }
    b.build()
}

fn key_values(attrs: &Attributes) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                value: Some(match v {
                    AttrValue::Str(s) => any_value::Value::StringValue(s.to_string()),
                    AttrValue::Bool(x) => any_value::Value::BoolValue(x),
                    AttrValue::Int(x) => any_value::Value::IntValue(x),
                    AttrValue::Double(x) => any_value::Value::DoubleValue(x),
                }),
            }),
        })
        .collect()
}

/// Builds one `ExportTraceServiceRequest` holding `spans`, one `ResourceSpans` per
/// distinct resource (what an SDK or the Collector would send).
pub fn to_request<'a>(spans: impl IntoIterator<Item = &'a Span>) -> ExportTraceServiceRequest {
    let mut groups: Vec<(Arc<crate::model::Resource>, Vec<otlp::Span>)> = Vec::new();
    for span in spans {
        let idx = match groups
            .iter()
            .position(|(r, _)| Arc::ptr_eq(r, &span.resource) || **r == *span.resource)
        {
            Some(i) => i,
            None => {
                groups.push((span.resource.clone(), Vec::new()));
                groups.len() - 1
            }
        };
        groups[idx].1.push(otlp::Span {
            trace_id: span.trace_id.to_be_bytes().to_vec(),
            span_id: span.span_id.to_be_bytes().to_vec(),
            parent_span_id: if span.is_root() {
                Vec::new()
            } else {
                span.parent_span_id.to_be_bytes().to_vec()
            },
            name: span.name.to_string(),
            kind: span.kind as i32,
            start_time_unix_nano: span.start_ns as u64,
            end_time_unix_nano: span.end_ns as u64,
            attributes: key_values(&span.attributes),
            events: span
                .events
                .iter()
                .map(|(t, name, attrs)| otlp::span::Event {
                    time_unix_nano: t as u64,
                    name: name.to_string(),
                    attributes: key_values(&attrs),
                    ..Default::default()
                })
                .collect(),
            status: Some(otlp::Status {
                code: span.status as i32,
                message: span
                    .status_message
                    .as_deref()
                    .unwrap_or_default()
                    .to_string(),
            }),
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(resource, spans)| {
                let mut attrs = vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(
                            resource.service_name.to_string(),
                        )),
                    }),
                }];
                attrs.extend(key_values(&resource.attributes));
                ResourceSpans {
                    resource: Some(OtlpResource {
                        attributes: attrs,
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect(),
    }
}

/// Encodes spans as one protobuf `ExportTraceServiceRequest`.
pub fn encode_proto<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Vec<u8> {
    to_request(spans).encode_to_vec()
}

/// Encodes spans as one OTLP/JSON `ExportTraceServiceRequest`.
pub fn encode_json<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Vec<u8> {
    serde_json::to_vec(&to_request(spans)).expect("otlp json serialises")
}
