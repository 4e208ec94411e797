//! Running executions: the traces a pipeline holds open, as a person looking at an
//! execution before it finishes wants to see them.

use serde::Serialize;

/// The root span of an open trace, once it has arrived.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningRoot {
    pub service: String,
    pub operation: String,
}

/// One open trace (times in unix milliseconds, as the query API gives them).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningTrace {
    /// 32 hex digits, as the query API names traces.
    #[serde(rename = "traceID")]
    pub trace_id: String,
    /// Spans received so far.
    pub spans: usize,
    /// The earliest span start.
    pub start_ms: f64,
    /// The latest span end so far.
    pub last_end_ms: f64,
    /// From the earliest span start to when the snapshot was taken (wall clock; event
    /// time and wall clock agree for live data).
    pub age_ms: f64,
    /// Distinct services of the spans so far, sorted.
    pub services: Vec<String>,
    pub root: Option<RunningRoot>,
    /// Spans that reopened a trace which had closed (within `grace`).
    pub amendment: bool,
}

/// The open traces of one pipeline process at one moment.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningSnapshot {
    /// When it was taken (unix milliseconds, wall clock).
    pub at_ms: i64,
    /// Every open trace of the process, including those not listed.
    pub open_traces: usize,
    /// The oldest open traces first (by earliest span start), at most the limit asked.
    pub traces: Vec<RunningTrace>,
}
