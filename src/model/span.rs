use std::sync::Arc;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use super::attrs::{AttrValue, Attributes, Events};

/// A trace id: the 16 bytes of the W3C/OTLP trace id, read big endian.
pub type TraceId = u128;

/// A span id: the 8 bytes of the OTLP span id, read big endian; 0 means none.
pub type SpanId = u64;

/// The 32 lowercase hex characters of a trace id.
pub fn hex_trace_id(id: TraceId) -> String {
    format!("{id:032x}")
}

/// The 16 lowercase hex characters of a span id.
pub fn hex_span_id(id: SpanId) -> String {
    format!("{id:016x}")
}

/// OTLP span kind (symbol order of `SpanKind` in schemas/span.avsc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(u8)]
pub enum SpanKind {
    #[default]
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

impl SpanKind {
    /// All kinds, by index.
    pub const ALL: [SpanKind; 6] = [
        SpanKind::Unspecified,
        SpanKind::Internal,
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
    ];

    /// The kind with this OTLP / Avro index.
    pub fn from_index(i: i64) -> Option<Self> {
        usize::try_from(i)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// The Avro symbol.
    pub fn as_str(self) -> &'static str {
        [
            "UNSPECIFIED",
            "INTERNAL",
            "SERVER",
            "CLIENT",
            "PRODUCER",
            "CONSUMER",
        ][self as usize]
    }
}

/// OTLP status code (symbol order of `StatusCode` in schemas/span.avsc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(u8)]
pub enum StatusCode {
    #[default]
    Unset = 0,
    Ok = 1,
    Error = 2,
}

impl StatusCode {
    /// The status with this OTLP / Avro index.
    pub fn from_index(i: i64) -> Option<Self> {
        match i {
            0 => Some(Self::Unset),
            1 => Some(Self::Ok),
            2 => Some(Self::Error),
            _ => None,
        }
    }

    /// The Avro symbol.
    pub fn as_str(self) -> &'static str {
        ["UNSET", "OK", "ERROR"][self as usize]
    }
}

/// What produced a span: its service and resource attributes, shared by every span
/// decoded from the same resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Resource {
    /// `service.name`.
    pub service_name: Arc<str>,
    /// The other resource attributes.
    pub attributes: Attributes,
}

/// One span, as buffered by the assembler.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The parent's span id; 0 for a root span.
    pub parent_span_id: SpanId,
    pub start_ns: i64,
    pub end_ns: i64,
    pub name: Arc<str>,
    pub kind: SpanKind,
    pub status: StatusCode,
    pub status_message: Option<Box<str>>,
    pub resource: Arc<Resource>,
    pub attributes: Attributes,
    pub events: Events,
}

impl Span {
    /// True when the span has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id == 0
    }

    /// The span's event time: when it ended.
    pub fn event_time(&self) -> i64 {
        self.end_ns
    }

    /// The service that emitted the span.
    pub fn service(&self) -> &str {
        &self.resource.service_name
    }

    /// Bytes this span holds on the heap and inline, not counting the shared resource
    /// and interned names.
    pub fn memory_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.attributes.heap_size()
            + self.events.heap_size()
            + self.status_message.as_ref().map_or(0, |m| m.len())
    }
}

struct AttrMap<'a>(&'a Attributes);

impl Serialize for AttrMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.0.iter() {
            match v {
                AttrValue::Str(x) => map.serialize_entry(k, x)?,
                AttrValue::Bool(x) => map.serialize_entry(k, &x)?,
                AttrValue::Int(x) => map.serialize_entry(k, &x)?,
                AttrValue::Double(x) => map.serialize_entry(k, &x)?,
            }
        }
        map.end()
    }
}

struct EventList<'a>(&'a Events);

impl Serialize for EventList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(time, name, attrs)| {
            serde_json::json!({
                "time_unix_nano": time,
                "name": name,
                "attributes": serde_json::to_value(AttrMap(&attrs)).unwrap_or_default(),
            })
        }))
    }
}

/// The JSON form used by `replay` output: ids as lowercase hex, enums as their symbols.
impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Span", 13)?;
        st.serialize_field("trace_id", &hex_trace_id(self.trace_id))?;
        st.serialize_field("span_id", &hex_span_id(self.span_id))?;
        let parent = (!self.is_root()).then(|| hex_span_id(self.parent_span_id));
        st.serialize_field("parent_span_id", &parent)?;
        st.serialize_field("name", &*self.name)?;
        st.serialize_field("kind", self.kind.as_str())?;
        st.serialize_field("start_time_unix_nano", &self.start_ns)?;
        st.serialize_field("end_time_unix_nano", &self.end_ns)?;
        st.serialize_field("status_code", self.status.as_str())?;
        st.serialize_field("status_message", &self.status_message)?;
        st.serialize_field("service_name", &*self.resource.service_name)?;
        st.serialize_field("attributes", &AttrMap(&self.attributes))?;
        st.serialize_field("resource_attributes", &AttrMap(&self.resource.attributes))?;
        st.serialize_field("events", &EventList(&self.events))?;
        st.end()
    }
}
