//! An open trace as the assembler buffers it (its spans and their partitions, the offsets
//! it holds, the span ids it has seen, when it is due to close) and what a closed trace
//! leaves behind for amendments.

use rustc_hash::FxHashSet;

use super::Settings;
use crate::model::{CloseReason, HoldOffsets, Holds, Origin, Span, SpanId};

pub(super) const LINEAR_DEDUP_LIMIT: usize = 16;

#[derive(Debug)]
pub(super) struct OpenTrace {
    pub(super) spans: Vec<Span>,
    /// The partition of each span, for revocation.
    pub(super) partitions: Vec<u32>,
    pub(super) holds: Holds,
    /// Span ids, once the trace is too big for a linear scan.
    pub(super) seen: Option<FxHashSet<SpanId>>,
    /// Span ids of the closed trace this amends, sorted.
    pub(super) prior: Option<Box<[SpanId]>>,
    pub(super) min_start: i64,
    pub(super) max_end: i64,
    pub(super) has_root: bool,
    pub(super) amendment: bool,
    pub(super) incomplete: bool,
    pub(super) bytes: usize,
    pub(super) deadline: (i64, u64),
    /// Changed since the changelog last took the changes.
    pub(super) dirty: bool,
}

impl OpenTrace {
    pub(super) fn new(amendment: bool, prior: Option<Box<[SpanId]>>) -> Self {
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

    pub(super) fn contains(&self, id: SpanId) -> bool {
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

    pub(super) fn add(&mut self, span: Span, origin: Origin, tracker: &mut impl HoldOffsets) {
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
    pub(super) fn due(&self, s: &Settings) -> (i64, CloseReason) {
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
pub(super) struct Closed {
    pub(super) span_ids: Box<[SpanId]>,
    pub(super) expires: i64,
    /// The partition its first span came from (where its changelog record is kept).
    pub(super) partition: u32,
}
