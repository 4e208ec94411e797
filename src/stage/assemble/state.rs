//! The assembler's state as a changelog keeps it: which open and closed traces changed
//! since the changes were last taken, a view of each, and their restoration. Also what
//! happens to that state when partitions are revoked.

use super::*;
use crate::model::NoHolds;

/// Trace ids whose changelog records are due, with the partition each record is kept in
/// (that of the trace's first span).
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Open-trace records: written if the trace is open when taken, else deleted.
    open: Vec<(TraceId, u32)>,
    /// Closed-trace records: written if remembered when taken, else deleted.
    closed: Vec<(TraceId, u32)>,
}

impl Changes {
    /// An open trace changed; `dirty` is its flag (set once until taken).
    #[inline]
    pub(super) fn open_changed(&mut self, id: TraceId, partition: u32, dirty: &mut bool) {
        if !*dirty {
            *dirty = true;
            self.open.push((id, partition));
        }
    }

    /// A trace closed: its open record goes, its closed record comes.
    pub(super) fn closed_changed(&mut self, id: TraceId, partition: u32, was_dirty: bool) {
        if !was_dirty {
            self.open.push((id, partition));
        }
        self.closed.push((id, partition));
    }

    /// A closed trace was forgotten (older than grace).
    pub(super) fn forgotten(&mut self, id: TraceId, partition: u32) {
        self.closed.push((id, partition));
    }
}

/// An open trace, as the changelog keeps it.
#[derive(Debug)]
pub struct OpenTraceState<'a> {
    pub spans: &'a [Span],
    /// The partition of each span.
    pub partitions: &'a [u32],
    /// Span ids of the closed trace this amends, sorted.
    pub prior: Option<&'a [SpanId]>,
    pub amendment: bool,
    pub incomplete: bool,
}

/// A closed trace remembered for amendments and duplicates, as the changelog keeps it.
#[derive(Debug)]
pub struct ClosedTraceState<'a> {
    /// Sorted.
    pub span_ids: &'a [SpanId],
    /// Event time after which it is forgotten.
    pub expires: i64,
}

impl Assembler {
    /// Keeps track of changes for a changelog from now on.
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(Changes::default);
    }

    /// Moves the ids of traces whose open-trace record changed to `open`, and of those
    /// whose closed-trace record changed to `closed` (each once); read them with
    /// [`Assembler::open_trace`] and [`Assembler::closed_trace`] (`None`: delete the
    /// record).
    pub fn take_changes(
        &mut self,
        open: &mut Vec<(TraceId, u32)>,
        closed: &mut Vec<(TraceId, u32)>,
    ) {
        let Some(changes) = &mut self.changes else {
            return;
        };
        for (id, partition) in changes.open.drain(..) {
            if let Some(t) = self.open.get_mut(&id) {
                if !t.dirty {
                    continue;
                }
                t.dirty = false;
            }
            open.push((id, partition));
        }
        closed.append(&mut changes.closed);
        closed.sort_unstable();
        closed.dedup();
        open.sort_unstable();
        open.dedup();
    }

    /// The open trace `id`, if open.
    pub fn open_trace(&self, id: TraceId) -> Option<OpenTraceState<'_>> {
        self.open.get(&id).map(|t| OpenTraceState {
            spans: &t.spans,
            partitions: &t.partitions,
            prior: t.prior.as_deref(),
            amendment: t.amendment,
            incomplete: t.incomplete,
        })
    }

    /// The closed trace `id`, if remembered.
    pub fn closed_trace(&self, id: TraceId) -> Option<ClosedTraceState<'_>> {
        self.closed.get(&id).map(|c| ClosedTraceState {
            span_ids: &c.span_ids,
            expires: c.expires,
        })
    }

    /// Every open trace id, in no particular order (a full checkpoint).
    pub fn open_ids(&self) -> impl Iterator<Item = TraceId> + '_ {
        self.open.keys().copied()
    }

    /// Restores an open trace from its changelog record: `spans`, each read from the
    /// partition at the same index of `partitions`. It holds no offsets: the changelog
    /// keeps it. Bounds apply as to spans read (a trace over them is closed to `out`).
    #[allow(clippy::too_many_arguments)]
    pub fn restore_open(
        &mut self,
        id: TraceId,
        spans: Vec<Span>,
        partitions: Vec<u32>,
        prior: Option<Box<[SpanId]>>,
        amendment: bool,
        incomplete: bool,
        out: &mut Vec<Output>,
    ) {
        if let Some(old) = self.open.remove(&id) {
            self.due.remove(&old.deadline);
            self.starts.remove(&(old.min_start, id));
            self.buffered_spans -= old.spans.len();
            self.buffered_bytes -= old.bytes;
        }
        let mut trace = OpenTrace::new(amendment, prior);
        trace.incomplete = incomplete;
        for (span, partition) in spans.into_iter().zip(partitions) {
            self.buffered_spans += 1;
            self.buffered_bytes += span.memory_size();
            let origin = Origin {
                partition,
                offset: 0,
            };
            trace.add(span, origin, &mut NoHolds);
        }
        // restored state holds no offsets
        trace.holds.clear();
        if trace.spans.is_empty() {
            return;
        }
        self.starts.insert((trace.min_start, id));
        let full = trace.spans.len() >= self.settings.max_spans_per_trace;
        self.insert_open(id, trace, out);
        if full {
            self.close(id, CloseReason::EvictedMaxSpans, out);
        } else {
            self.reschedule(id);
        }
    }

    /// Restores a closed trace from its changelog record.
    pub fn restore_closed(
        &mut self,
        id: TraceId,
        span_ids: Box<[SpanId]>,
        expires: i64,
        partition: u32,
    ) {
        self.closed.insert(
            id,
            Closed {
                span_ids,
                expires,
                partition,
            },
        );
        self.expiry.push_back((expires, id));
    }

    /// Ends a batch of restores: the expiry queue is scanned in order, and restores come
    /// in any order.
    pub fn finish_restore(&mut self) {
        self.expiry.make_contiguous().sort_unstable();
    }

    /// Restores the latest event time of an assigned partition.
    pub fn restore_max_event(&mut self, partition: u32, max_event_ns: i64) {
        self.watermarks.restore_max_event(partition, max_event_ns);
    }

    /// Forgets an open trace whose changelog record was deleted.
    pub fn forget_open(&mut self, id: TraceId) {
        if let Some(t) = self.open.remove(&id) {
            self.due.remove(&t.deadline);
            self.starts.remove(&(t.min_start, id));
            self.buffered_spans -= t.spans.len();
            self.buffered_bytes -= t.bytes;
        }
    }

    /// Forgets a closed trace whose changelog record was deleted.
    pub fn forget_closed(&mut self, id: TraceId) {
        self.closed.remove(&id);
    }

    /// Partitions were revoked: their spans leave the open traces (another consumer
    /// re-reads them from the committed offsets), traces left empty are dropped, and the
    /// watermark forgets them.
    pub fn revoke(&mut self, revoked: &[u32]) {
        for p in revoked {
            self.watermarks.revoke(*p);
        }
        let mut emptied = Vec::new();
        let mut touched = Vec::new();
        for (id, t) in &mut self.open {
            if !t.partitions.iter().any(|p| revoked.contains(p)) {
                continue;
            }
            let before = t.spans.len();
            let parts = std::mem::take(&mut t.partitions);
            let mut keep = parts.iter().map(|p| !revoked.contains(p));
            t.spans.retain(|_| keep.next().unwrap_or(true));
            t.partitions = parts.into_iter().filter(|p| !revoked.contains(p)).collect();
            t.holds.retain(|(p, _)| !revoked.contains(p));
            let removed = before - t.spans.len();
            self.stats.revoked_spans += removed as u64;
            self.buffered_spans -= removed;
            let bytes: usize = t.spans.iter().map(Span::memory_size).sum();
            self.buffered_bytes -= t.bytes - bytes;
            t.bytes = bytes;
            self.starts.remove(&(t.min_start, *id));
            t.min_start = t.spans.iter().map(|s| s.start_ns).min().unwrap_or(i64::MAX);
            if !t.spans.is_empty() {
                self.starts.insert((t.min_start, *id));
            }
            t.max_end = t.spans.iter().map(|s| s.end_ns).max().unwrap_or(i64::MIN);
            t.has_root = t.spans.iter().any(Span::is_root);
            t.seen = (t.spans.len() > LINEAR_DEDUP_LIMIT)
                .then(|| t.spans.iter().map(|s| s.span_id).collect());
            if t.spans.is_empty() {
                emptied.push(*id);
            } else {
                touched.push(*id);
            }
        }
        for id in emptied {
            if let Some(t) = self.open.remove(&id) {
                self.due.remove(&t.deadline);
            }
        }
        for id in touched {
            self.reschedule(id);
        }
    }
}
