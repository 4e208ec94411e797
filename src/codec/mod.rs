//! Decoders and encoders for the formats spanline reads and writes.
//!
//! Decoding is pure: a [`SpanDecoder`] turns one Kafka record's value into spans or a
//! [`DecodeError`] that names why, so the runner can dead-letter the record.

pub mod avro;
pub mod avro_bin;
pub mod hop;
pub mod otlp;
pub mod records;

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

/// A format name that is not one of [`Format`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown format `{0}`, expected avro, otlp_proto or otlp_json")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "avro" => Ok(Format::Avro),
            "otlp_proto" => Ok(Format::OtlpProto),
            "otlp_json" => Ok(Format::OtlpJson),
            other => Err(UnknownFormat(other.to_string())),
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
    #[error("span time out of range: {0}")]
    TimeOutOfRange(String),
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
            DecodeError::TimeOutOfRange(_) => "time_out_of_range",
        }
    }

    /// Every reason label, for pre-registering metrics.
    pub const REASONS: [&'static str; 9] = [
        "empty",
        "bad_magic_byte",
        "unknown_schema_id",
        "avro",
        "schema",
        "protobuf",
        "json",
        "invalid_span",
        "time_out_of_range",
    ];
}

/// 2100-01-01T00:00:00Z in unix nanoseconds: no span time is this late. A later time is
/// a corrupt or mis-scaled value that would move the event-time watermark decades ahead
/// and make every later span late.
pub const MAX_TIME_NS: i64 = 4_102_444_800_000_000_000;

/// Rejects a span time (`field` names it) before 1970 or from 2100 on. Taken as an
/// `i128` so that OTLP's unsigned times are checked before they are narrowed.
pub fn check_time(field: &str, ns: i128) -> Result<(), DecodeError> {
    if ns < 0 {
        Err(DecodeError::TimeOutOfRange(format!(
            "{field} {ns} ns is before 1970-01-01"
        )))
    } else if ns >= i128::from(MAX_TIME_NS) {
        Err(DecodeError::TimeOutOfRange(format!(
            "{field} {ns} ns is after 2100-01-01, not a plausible span time"
        )))
    } else {
        Ok(())
    }
}

/// Rejects spans no trace can hold: zero ids, a span that is its own parent, times
/// outside [`check_time`]'s range. An end before the start is kept (analysis records
/// it as an oddity).
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
    check_time("start time", span.start_ns.into())?;
    check_time("end time", span.end_ns.into())
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
        if record.is_empty() {
            // a tombstone or an empty value, whatever the format
            return Err(DecodeError::Empty);
        }
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
#[cfg(test)]
mod tests_prop;
