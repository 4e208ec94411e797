//! Event-time trace assembly: a session window keyed by trace id.
//!
//! A trace closes when its root span has ended and the watermark has passed its last
//! span by `idle_gap`, or when it has lasted `max_duration`, or when state bounds evict
//! it. A span for a trace that closed less than `grace` ago reopens it as an amendment;
//! a span older than that is late and goes to the late output (or is counted as dropped).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustc_hash::FxHashMap;

mod close;
mod config;
mod open;
mod running;
mod state;

pub use config::AssembleConfig;
pub use state::{ClosedTraceState, OpenTraceState};

use super::watermark::Watermarks;
use crate::model::{CloseReason, HoldOffsets, Span, SpanId, Trace, TraceId};
pub use crate::model::{Holds, Origin};
use open::{Closed, OpenTrace, LINEAR_DEDUP_LIMIT};

/// Assembly settings, in nanoseconds of event time unless named otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub out_of_orderness_ns: i64,
    pub idle_gap_ns: i64,
    pub max_duration_ns: i64,
    pub grace_ns: i64,
    /// Processing time after which a silent partition stops holding the watermark back.
    pub idle_partition_timeout_ms: i64,
    pub max_open_traces: usize,
    pub max_spans_per_trace: usize,
    pub max_span_bytes: usize,
    /// Whether spans later than `grace` go to a late output (else they are counted drops).
    pub late_output: bool,
}

impl Default for Settings {
    fn default() -> Self {
        const S: i64 = 1_000_000_000;
        Self {
            out_of_orderness_ns: 2 * S,
            idle_gap_ns: 5 * S,
            max_duration_ns: 300 * S,
            grace_ns: 60 * S,
            idle_partition_timeout_ms: 10_000,
            max_open_traces: 200_000,
            max_spans_per_trace: 10_000,
            max_span_bytes: 64 * 1024,
            late_output: true,
        }
    }
}

/// What the assembler produced.
#[derive(Debug)]
pub enum Output {
    /// A closed trace (or an amendment to one).
    Trace { trace: Trace, holds: Holds },
    /// A span later than `grace`, for the late output.
    Late { span: Span, origin: Origin },
}

/// What happened to one pushed span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Added to an open trace.
    Added,
    /// Added to an amendment of a closed trace.
    Amended,
    /// A span id the trace already had: dropped.
    Duplicate,
    /// Later than grace: sent to the late output.
    Late,
    /// Later than grace with no late output: dropped.
    DroppedLate,
    /// Bigger than `max_span_bytes`: not buffered; the caller dead-letters the record.
    TooLarge,
}

/// Counters of what the assembler did, read by the metrics exporter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub spans_added: u64,
    pub duplicates: u64,
    pub late_amended: u64,
    pub late_routed: u64,
    pub late_dropped: u64,
    pub too_large: u64,
    pub revoked_spans: u64,
    /// Closed traces by reason, indexed like [`CloseReason::ALL`].
    pub closed: [u64; CloseReason::ALL.len()],
    pub amendments_closed: u64,
}

/// The assembler. Pure: time and offsets come in as arguments.
#[derive(Debug)]
pub struct Assembler {
    settings: Settings,
    open: FxHashMap<TraceId, OpenTrace>,
    due: BTreeMap<(i64, u64), TraceId>,
    /// Open traces by their earliest span start: what later stages may still receive.
    starts: BTreeSet<(i64, TraceId)>,
    closed: FxHashMap<TraceId, Closed>,
    expiry: VecDeque<(i64, TraceId)>,
    watermarks: Watermarks,
    seq: u64,
    buffered_spans: usize,
    buffered_bytes: usize,
    stats: Stats,
    /// Changes kept for a changelog (see `state.rs`), when one is kept.
    changes: Option<state::Changes>,
}

impl Assembler {
    /// An assembler with no open traces.
    pub fn new(settings: Settings) -> Self {
        let watermarks = Watermarks::new(
            settings.out_of_orderness_ns,
            settings.idle_partition_timeout_ms,
        );
        Self {
            settings,
            open: FxHashMap::default(),
            due: BTreeMap::new(),
            starts: BTreeSet::new(),
            closed: FxHashMap::default(),
            expiry: VecDeque::new(),
            watermarks,
            seq: 0,
            buffered_spans: 0,
            buffered_bytes: 0,
            stats: Stats::default(),
            changes: None,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What the assembler did so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Open traces (amendments included).
    pub fn open_traces(&self) -> usize {
        self.open.len()
    }

    /// Spans buffered in open traces.
    pub fn buffered_spans(&self) -> usize {
        self.buffered_spans
    }

    /// Bytes of buffered spans (their [`Span::memory_size`]).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Closed traces remembered for amendments.
    pub fn remembered_closed(&self) -> usize {
        self.closed.len()
    }

    /// The earliest span start of any open trace: spans at or after it may still reach
    /// later stages, spans before it never will.
    pub fn earliest_open_start(&self) -> Option<i64> {
        self.starts.first().map(|(start, _)| *start)
    }

    /// The watermarks.
    pub fn watermarks(&self) -> &Watermarks {
        &self.watermarks
    }

    /// A partition was assigned at processing time `now_ms`.
    pub fn assign(&mut self, partition: u32, now_ms: i64) {
        self.watermarks.assign(partition, now_ms);
    }

    /// A partition of the repartition topic was assigned at `now_ms`: its watermark is
    /// what its writers report ([`Assembler::progress`]), not its span times.
    /// `inputs` are the ids of every input partition whose spans come through it.
    pub fn assign_hop(&mut self, partition: u32, inputs: &[u64], now_ms: i64) {
        self.watermarks.assign_hop(partition, inputs, now_ms);
    }

    /// Read on the repartition partition `partition`: the input `input` has got to
    /// `watermark_ns`, or is idle.
    pub fn progress(
        &mut self,
        partition: u32,
        input: u64,
        watermark_ns: i64,
        idle: bool,
        now_ms: i64,
    ) {
        self.watermarks
            .progress(partition, input, watermark_ns, idle, now_ms);
    }

    /// Spans over `max_span_bytes` were kept out before they reached the assembler.
    pub fn count_too_large(&mut self, spans: u64) {
        self.stats.too_large += spans;
    }

    /// Adds one span read from `origin` at processing time `now_ms`.
    pub fn push(
        &mut self,
        span: Span,
        origin: Origin,
        now_ms: i64,
        tracker: &mut impl HoldOffsets,
        out: &mut Vec<Output>,
    ) -> Pushed {
        self.watermarks
            .observe(origin.partition, span.event_time(), now_ms);
        if span.memory_size() > self.settings.max_span_bytes {
            self.stats.too_large += 1;
            if let Some(t) = self.open.get_mut(&span.trace_id) {
                t.incomplete = true;
            }
            return Pushed::TooLarge;
        }
        let trace_id = span.trace_id;
        let outcome = if let Some(trace) = self.open.get_mut(&trace_id) {
            if trace.contains(span.span_id) {
                self.stats.duplicates += 1;
                return Pushed::Duplicate;
            }
            if trace.amendment {
                self.stats.late_amended += 1;
                Pushed::Amended
            } else {
                Pushed::Added
            }
        } else if let Some(closed) = self.closed.get(&trace_id) {
            if closed.span_ids.binary_search(&span.span_id).is_ok() {
                self.stats.duplicates += 1;
                return Pushed::Duplicate;
            }
            let prior = closed.span_ids.clone();
            self.insert_open(trace_id, OpenTrace::new(true, Some(prior)), out);
            self.stats.late_amended += 1;
            Pushed::Amended
        } else {
            let too_late = span
                .end_ns
                .saturating_add(self.settings.idle_gap_ns)
                .saturating_add(self.settings.grace_ns)
                < self.watermarks.current();
            if too_late {
                if self.settings.late_output {
                    tracker.hold(origin.partition, origin.offset);
                    self.stats.late_routed += 1;
                    out.push(Output::Late { span, origin });
                    return Pushed::Late;
                }
                self.stats.late_dropped += 1;
                return Pushed::DroppedLate;
            }
            self.insert_open(trace_id, OpenTrace::new(false, None), out);
            Pushed::Added
        };
        let trace = self.open.get_mut(&trace_id).expect("inserted above");
        let first_partition = trace
            .partitions
            .first()
            .copied()
            .unwrap_or(origin.partition);
        if let Some(changes) = &mut self.changes {
            changes.open_changed(trace_id, first_partition, &mut trace.dirty);
        }
        self.buffered_spans += 1;
        self.buffered_bytes += span.memory_size();
        let start_before = trace.min_start;
        trace.add(span, origin, tracker);
        if trace.min_start != start_before {
            self.starts.remove(&(start_before, trace_id));
            self.starts.insert((trace.min_start, trace_id));
        }
        self.stats.spans_added += 1;
        if trace.spans.len() >= self.settings.max_spans_per_trace {
            self.close(trace_id, CloseReason::EvictedMaxSpans, out);
        } else {
            self.reschedule(trace_id);
        }
        outcome
    }

    fn insert_open(&mut self, id: TraceId, trace: OpenTrace, out: &mut Vec<Output>) {
        while self.open.len() >= self.settings.max_open_traces {
            let Some((_, victim)) = self.due.first_key_value().map(|(k, v)| (*k, *v)) else {
                break;
            };
            self.close(victim, CloseReason::EvictedMaxOpenTraces, out);
        }
        self.open.insert(id, trace);
    }

    fn reschedule(&mut self, id: TraceId) {
        let trace = self.open.get_mut(&id).expect("open trace");
        let (at, _) = trace.due(&self.settings);
        if trace.deadline.0 == at && self.due.contains_key(&trace.deadline) {
            return;
        }
        self.due.remove(&trace.deadline);
        self.seq += 1;
        trace.deadline = (at, self.seq);
        self.due.insert(trace.deadline, id);
    }
}

#[cfg(test)]
mod tests;
