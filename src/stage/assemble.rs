//! Event-time trace assembly: a session window keyed by trace id.
//!
//! A trace closes when its root span has ended and the watermark has passed its last
//! span by `idle_gap`, or when it has lasted `max_duration`, or when state bounds evict
//! it. A span for a trace that closed less than `grace` ago reopens it as an amendment;
//! a span older than that is late and goes to the late output (or is counted as dropped).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustc_hash::{FxHashMap, FxHashSet};

mod config;
mod state;

pub use config::AssembleConfig;
pub use state::{ClosedTraceState, OpenTraceState};

use super::watermark::{Watermarks, NO_WATERMARK};
use crate::model::{CloseReason, HoldOffsets, Span, SpanId, Trace, TraceId};
pub use crate::model::{Holds, Origin};

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

const LINEAR_DEDUP_LIMIT: usize = 16;

#[derive(Debug)]
struct OpenTrace {
    spans: Vec<Span>,
    /// The partition of each span, for revocation.
    partitions: Vec<u32>,
    holds: Holds,
    /// Span ids, once the trace is too big for a linear scan.
    seen: Option<FxHashSet<SpanId>>,
    /// Span ids of the closed trace this amends, sorted.
    prior: Option<Box<[SpanId]>>,
    min_start: i64,
    max_end: i64,
    has_root: bool,
    amendment: bool,
    incomplete: bool,
    bytes: usize,
    deadline: (i64, u64),
    /// Changed since the changelog last took the changes.
    dirty: bool,
}

impl OpenTrace {
    fn new(amendment: bool, prior: Option<Box<[SpanId]>>) -> Self {
        Self {
            spans: Vec::new(),
            partitions: Vec::new(),
            holds: Holds::new(),
            seen: None,
            prior,
            min_start: i64::MAX,
            max_end: i64::MIN,
            has_root: false,
            amendment,
            incomplete: false,
            bytes: 0,
            deadline: (i64::MAX, 0),
            dirty: false,
        }
    }

    fn contains(&self, id: SpanId) -> bool {
        if self
            .prior
            .as_ref()
            .is_some_and(|p| p.binary_search(&id).is_ok())
        {
            return true;
        }
        match &self.seen {
            Some(set) => set.contains(&id),
            None => self.spans.iter().any(|s| s.span_id == id),
        }
    }

    fn add(&mut self, span: Span, origin: Origin, tracker: &mut impl HoldOffsets) {
        if !self.holds.iter().any(|(p, _)| *p == origin.partition) {
            self.holds.push((origin.partition, origin.offset));
            tracker.hold(origin.partition, origin.offset);
        }
        self.min_start = self.min_start.min(span.start_ns);
        self.max_end = self.max_end.max(span.end_ns);
        self.has_root |= span.is_root();
        self.bytes += span.memory_size();
        if let Some(seen) = &mut self.seen {
            seen.insert(span.span_id);
        } else if self.spans.len() == LINEAR_DEDUP_LIMIT {
            let mut set: FxHashSet<SpanId> = self.spans.iter().map(|s| s.span_id).collect();
            set.insert(span.span_id);
            self.seen = Some(set);
        }
        self.spans.push(span);
        self.partitions.push(origin.partition);
    }

    /// When the trace closes, in event time, and why.
    fn due(&self, s: &Settings) -> (i64, CloseReason) {
        let by_idle = self.max_end.saturating_add(s.idle_gap_ns);
        if self.amendment {
            return (by_idle, CloseReason::Completed);
        }
        let by_duration = self.min_start.saturating_add(s.max_duration_ns);
        if self.has_root && by_idle <= by_duration {
            (by_idle, CloseReason::Completed)
        } else {
            (by_duration, CloseReason::MaxDuration)
        }
    }
}

#[derive(Debug)]
struct Closed {
    span_ids: Box<[SpanId]>,
    expires: i64,
    /// The partition its first span came from (where its changelog record is kept).
    partition: u32,
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

    fn close(&mut self, id: TraceId, forced: CloseReason, out: &mut Vec<Output>) {
        let Some(trace) = self.open.remove(&id) else {
            return;
        };
        self.due.remove(&trace.deadline);
        self.starts.remove(&(trace.min_start, id));
        let reason = if forced.is_eviction()
            || forced == CloseReason::EndOfInput
            || forced == CloseReason::Shutdown
        {
            forced
        } else {
            trace.due(&self.settings).1
        };
        self.buffered_spans -= trace.spans.len();
        self.buffered_bytes -= trace.bytes;
        self.stats.closed[CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("listed")] += 1;
        if trace.amendment {
            self.stats.amendments_closed += 1;
        }
        let incomplete =
            trace.incomplete || reason.is_eviction() || (!trace.amendment && !trace.has_root);

        // remember the span ids so that a later span amends instead of starting over
        let mut ids: Vec<SpanId> = trace.prior.as_deref().unwrap_or_default().to_vec();
        ids.extend(trace.spans.iter().map(|s| s.span_id));
        ids.sort_unstable();
        let expires = self
            .watermarks
            .current()
            .max(trace.max_end)
            .saturating_add(self.settings.grace_ns);
        let partition = trace.partitions.first().copied().unwrap_or_default();
        self.closed.insert(
            id,
            Closed {
                span_ids: ids.into_boxed_slice(),
                expires,
                partition,
            },
        );
        self.expiry.push_back((expires, id));
        if let Some(changes) = &mut self.changes {
            changes.closed_changed(id, partition, trace.dirty);
        }

        let mut closed = Trace {
            trace_id: id,
            spans: trace.spans,
            amendment: trace.amendment,
            close_reason: reason,
            incomplete,
        };
        closed.sort_spans();
        out.push(Output::Trace {
            trace: closed,
            holds: trace.holds,
        });
    }

    /// Recomputes the watermark at processing time `now_ms`, closes every trace it has
    /// passed, and forgets closed traces older than `grace`. Returns the watermark.
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<Output>) -> i64 {
        let wm = self.watermarks.advance(now_ms);
        self.close_due(wm, out);
        wm
    }

    fn close_due(&mut self, wm: i64, out: &mut Vec<Output>) {
        if wm == NO_WATERMARK {
            return;
        }
        while let Some((&(at, seq), &id)) = self.due.first_key_value() {
            if at > wm {
                break;
            }
            debug_assert!(self.open.get(&id).is_some_and(|t| t.deadline == (at, seq)));
            self.close(id, CloseReason::Completed, out);
        }
        while let Some(&(expires, id)) = self.expiry.front() {
            if expires > wm {
                break;
            }
            self.expiry.pop_front();
            if self.closed.get(&id).is_some_and(|c| c.expires <= wm) {
                let gone = self.closed.remove(&id);
                if let (Some(changes), Some(c)) = (&mut self.changes, gone) {
                    changes.forgotten(id, c.partition);
                    // an open amendment's record now holds the prior span ids itself
                    if let Some(t) = self.open.get_mut(&id) {
                        let first = t.partitions.first().copied().unwrap_or(c.partition);
                        changes.open_changed(id, first, &mut t.dirty);
                    }
                }
            }
        }
    }

    /// Moves the watermark to at least `ns` and closes what it passed (replay's end).
    pub fn advance_to(&mut self, ns: i64, out: &mut Vec<Output>) {
        self.watermarks.force(ns);
        self.close_due(self.watermarks.current(), out);
    }

    /// Closes every open trace with `reason` (end of input, shutdown).
    pub fn flush(&mut self, reason: CloseReason, out: &mut Vec<Output>) {
        let ids: Vec<TraceId> = self.due.values().copied().collect();
        for id in ids {
            self.close(id, reason, out);
        }
    }
}

#[cfg(test)]
mod tests;
