//! Encoding of output records, shared by the Kafka runner and `replay`.

use crate::codec::avro;
use crate::config::OutputFormat;
use crate::model::{hex_trace_id, Span, Trace};

/// How one output topic is encoded.
#[derive(Debug, Clone)]
pub enum Encoding {
    /// Confluent Avro with these registered schema ids.
    Avro {
        key_schema_id: u32,
        value_schema_id: u32,
    },
    /// JSON value, trace id hex as the key.
    Json,
}

impl Encoding {
    /// The encoding for `format`, given the ids the registry gave (ignored for JSON).
    pub fn new(format: OutputFormat, ids: Option<(u32, u32)>) -> Self {
        match (format, ids) {
            (OutputFormat::Avro, Some((key_schema_id, value_schema_id))) => Encoding::Avro {
                key_schema_id,
                value_schema_id,
            },
            _ => Encoding::Json,
        }
    }

    fn key(&self, trace_id: u128, buf: &mut Vec<u8>) {
        match self {
            Encoding::Avro { key_schema_id, .. } => {
                avro::put_frame(buf, *key_schema_id);
                avro::write_key(buf, trace_id);
            }
            Encoding::Json => buf.extend_from_slice(hex_trace_id(trace_id).as_bytes()),
        }
    }

    /// Key and value of a trace record.
    pub fn trace(&self, trace: &Trace) -> (Vec<u8>, Vec<u8>) {
        let mut key = Vec::with_capacity(40);
        self.key(trace.trace_id, &mut key);
        let value = match self {
            Encoding::Avro {
                value_schema_id, ..
            } => {
                let mut buf = Vec::with_capacity(64 + trace.spans.len() * 256);
                avro::put_frame(&mut buf, *value_schema_id);
                avro::write_trace(&mut buf, trace);
                buf
            }
            Encoding::Json => serde_json::to_vec(trace).expect("trace serialises"),
        };
        (key, value)
    }

    /// Key and value of a single-span record (late spans).
    pub fn span(&self, span: &Span) -> (Vec<u8>, Vec<u8>) {
        let mut key = Vec::with_capacity(40);
        self.key(span.trace_id, &mut key);
        let value = match self {
            Encoding::Avro {
                value_schema_id, ..
            } => {
                let mut buf = Vec::with_capacity(256);
                avro::put_frame(&mut buf, *value_schema_id);
                avro::write_span(&mut buf, span);
                buf
            }
            Encoding::Json => serde_json::to_vec(span).expect("span serialises"),
        };
        (key, value)
    }
}
