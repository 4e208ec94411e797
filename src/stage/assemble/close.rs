//! Closing traces: when the watermark passes their deadline, on eviction, at the end of
//! input; a closed trace's span ids are remembered for `grace` so later spans amend it.

use super::{Assembler, Closed, Output};
use crate::model::{CloseReason, SpanId, Trace, TraceId};
use crate::stage::watermark::NO_WATERMARK;

impl Assembler {
    pub(super) fn close(&mut self, id: TraceId, forced: CloseReason, out: &mut Vec<Output>) {
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
