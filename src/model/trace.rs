use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::span::{hex_trace_id, Span, StatusCode, TraceId};

/// Why the assembler closed a trace (symbols of `CloseReason` in schemas/trace.avsc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloseReason {
    /// The root span ended and the watermark passed the last span by `idle_gap`.
    Completed,
    /// The trace lasted longer than `max_duration` in event time.
    MaxDuration,
    /// Evicted because `max_open_traces` traces were open.
    EvictedMaxOpenTraces,
    /// Evicted because it reached `max_spans_per_trace` spans.
    EvictedMaxSpans,
    /// Replay reached the end of its input.
    EndOfInput,
    /// The pipeline shut down with `flush_on_shutdown` set.
    Shutdown,
}

impl CloseReason {
    /// All reasons, in Avro symbol order.
    pub const ALL: [CloseReason; 6] = [
        CloseReason::Completed,
        CloseReason::MaxDuration,
        CloseReason::EvictedMaxOpenTraces,
        CloseReason::EvictedMaxSpans,
        CloseReason::EndOfInput,
        CloseReason::Shutdown,
    ];

    /// The symbol, also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::MaxDuration => "max_duration",
            Self::EvictedMaxOpenTraces => "evicted_max_open_traces",
            Self::EvictedMaxSpans => "evicted_max_spans",
            Self::EndOfInput => "end_of_input",
            Self::Shutdown => "shutdown",
        }
    }

    /// The reason at this Avro symbol index.
    pub fn from_index(i: i64) -> Option<Self> {
        usize::try_from(i)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// True for the reasons that cut a trace short.
    pub fn is_eviction(self) -> bool {
        matches!(self, Self::EvictedMaxOpenTraces | Self::EvictedMaxSpans)
    }
}

/// A closed trace: its spans sorted by start time then span id, and why it closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub trace_id: TraceId,
    pub spans: Vec<Span>,
    /// Spans that arrived after the trace had closed (within `grace`); `spans` holds only
    /// those late spans.
    pub amendment: bool,
    pub close_reason: CloseReason,
    /// Some spans are known to be missing or were dropped (evictions, size limit, no root).
    pub incomplete: bool,
}

impl Trace {
    /// The root span, if the trace has one.
    pub fn root(&self) -> Option<&Span> {
        self.spans.iter().find(|s| s.is_root())
    }

    /// Earliest span start (unix nanos).
    pub fn start_ns(&self) -> i64 {
        self.spans.iter().map(|s| s.start_ns).min().unwrap_or(0)
    }

    /// Latest span end (unix nanos).
    pub fn end_ns(&self) -> i64 {
        self.spans.iter().map(|s| s.end_ns).max().unwrap_or(0)
    }

    /// End minus start, never negative.
    pub fn duration_ns(&self) -> i64 {
        (self.end_ns() - self.start_ns()).max(0)
    }

    /// Spans with status ERROR.
    pub fn error_count(&self) -> usize {
        self.spans
            .iter()
            .filter(|s| s.status == StatusCode::Error)
            .count()
    }

    /// Distinct service names, sorted.
    pub fn services(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.spans.iter().map(|s| s.service()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Puts spans in their canonical order (start time, then span id), so that a closed
    /// trace does not depend on arrival order.
    pub fn sort_spans(&mut self) {
        self.spans.sort_unstable_by_key(|s| (s.start_ns, s.span_id));
    }
}

/// The JSON form used by `replay` output (the same fields as the Avro trace record).
impl Serialize for Trace {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let root = self.root();
        let mut st = s.serialize_struct("Trace", 14)?;
        st.serialize_field("trace_id", &hex_trace_id(self.trace_id))?;
        st.serialize_field("amendment", &self.amendment)?;
        st.serialize_field("close_reason", self.close_reason.as_str())?;
        st.serialize_field("incomplete", &self.incomplete)?;
        st.serialize_field("span_count", &self.spans.len())?;
        st.serialize_field("start_time_unix_nano", &self.start_ns())?;
        st.serialize_field("end_time_unix_nano", &self.end_ns())?;
        st.serialize_field("duration_ns", &self.duration_ns())?;
        st.serialize_field("error_count", &self.error_count())?;
        st.serialize_field("root_service", &root.map(|r| r.service()))?;
        st.serialize_field("root_name", &root.map(|r| &*r.name))?;
        st.serialize_field("services", &self.services())?;
        st.serialize_field("spans", &self.spans)?;
        st.end()
    }
}
