//! Decoders and encoders for the formats spanline reads and writes.
//!
//! Decoding is pure: a [`SpanDecoder`] turns one Kafka record's value into spans or a
//! [`DecodeError`] that names why, so the runner can dead-letter the record.

pub mod avro;
pub mod avro_bin;
pub mod otlp;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::Span;

/// The formats a span topic can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One span per record, Avro in the Confluent wire format (`schemas/span.avsc` or a
    /// compatible writer schema from the registry).
    #[default]
    Avro,
    /// One OTLP protobuf `ExportTraceServiceRequest` per record.
    OtlpProto,
    /// One OTLP/JSON `ExportTraceServiceRequest` per record.
    OtlpJson,
}

impl Format {
    /// The name used in pipeline files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Avro => "avro",
            Format::OtlpProto => "otlp_proto",
            Format::OtlpJson => "otlp_json",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "avro" => Ok(Format::Avro),
            "otlp_proto" => Ok(Format::OtlpProto),
            "otlp_json" => Ok(Format::OtlpJson),
            other => Err(format!(
                "unknown format `{other}`, expected avro, otlp_proto or otlp_json"
            )),
        }
    }
}

/// Why a record could not be decoded.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("record is empty")]
    Empty,
    #[error("first byte is {0}, not the confluent magic byte 0")]
    BadMagic(u8),
    #[error("schema id {0} is not known to the schema registry")]
    UnknownSchemaId(u32),
    #[error(transparent)]
    Avro(#[from] avro_bin::AvroReadError),
    #[error("{0}")]
    Schema(String),
    #[error("protobuf: {0}")]
    Proto(#[from] prost::DecodeError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid span: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// A short label for metrics and the `spanline.error.reason` dead-letter header.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::BadMagic(_) => "bad_magic_byte",
            DecodeError::UnknownSchemaId(_) => "unknown_schema_id",
            DecodeError::Avro(_) => "avro",
            DecodeError::Schema(_) => "schema",
            DecodeError::Proto(_) => "protobuf",
            DecodeError::Json(_) => "json",
            DecodeError::Invalid(_) => "invalid_span",
        }
    }

    /// Every reason label, for pre-registering metrics.
    pub const REASONS: [&'static str; 8] = [
        "empty",
        "bad_magic_byte",
        "unknown_schema_id",
        "avro",
        "schema",
        "protobuf",
        "json",
        "invalid_span",
    ];
}

/// Rejects spans no trace can hold.
pub fn validate_span(span: &Span) -> Result<(), DecodeError> {
    if span.trace_id == 0 {
        return Err(DecodeError::Invalid("trace id is all zeroes".into()));
    }
    if span.span_id == 0 {
        return Err(DecodeError::Invalid("span id is all zeroes".into()));
    }
    if span.parent_span_id == span.span_id {
        return Err(DecodeError::Invalid("span is its own parent".into()));
    }
    Ok(())
}

/// Decodes records of one declared format.
pub struct SpanDecoder {
    format: Format,
    avro: avro::AvroSpanDecoder,
    otlp: otlp::OtlpDecoder,
}

impl SpanDecoder {
    /// A decoder for `format`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            avro: Default::default(),
            otlp: Default::default(),
        }
    }

    /// The declared format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The Avro decoder, to add writer schemas fetched from the registry.
    pub fn avro(&mut self) -> &mut avro::AvroSpanDecoder {
        &mut self.avro
    }

    /// Appends the spans of one record to `out`; on error `out` is unchanged.
    pub fn decode(&mut self, record: &[u8], out: &mut Vec<Span>) -> Result<(), DecodeError> {
        match self.format {
            Format::Avro => {
                out.push(self.avro.decode(record)?);
                Ok(())
            }
            Format::OtlpProto => self.otlp.decode_proto(record, out),
            Format::OtlpJson => self.otlp.decode_json(record, out),
        }
    }
}

/// The Confluent schema id of a framed record, for dead-letter headers.
pub fn schema_id_of(record: &[u8]) -> Option<u32> {
    avro::unframe(record).ok().map(|(id, _)| id)
}

#[cfg(test)]
mod tests;
