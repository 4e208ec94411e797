//! What the assembler holds open, for a look at running executions.

use std::collections::BTreeSet;

use super::Assembler;
use crate::model::{hex_trace_id, RunningRoot, RunningSnapshot, RunningTrace};

impl Assembler {
    /// The `limit` oldest open traces (by earliest span start), optionally only those
    /// with a span of `service`, and how many traces are open in all. Costs one pass
    /// over the open traces; only the listed ones are summarised span by span.
    pub fn running(&self, limit: usize, service: Option<&str>, now_ms: i64) -> RunningSnapshot {
        let mut candidates: Vec<_> = self
            .open
            .iter()
            .filter(|(_, t)| service.is_none_or(|s| t.spans.iter().any(|sp| sp.service() == s)))
            .map(|(id, t)| (t.min_start, *id, t))
            .collect();
        if candidates.len() > limit {
            candidates.select_nth_unstable_by_key(limit, |(start, id, _)| (*start, *id));
            candidates.truncate(limit);
        }
        candidates.sort_unstable_by_key(|(start, id, _)| (*start, *id));
        let traces = candidates
            .into_iter()
            .map(|(_, id, t)| {
                let services: BTreeSet<&str> = t.spans.iter().map(|s| s.service()).collect();
                let root = t.spans.iter().find(|s| s.is_root()).map(|r| RunningRoot {
                    service: r.service().to_string(),
                    operation: r.name.to_string(),
                });
                RunningTrace {
                    trace_id: hex_trace_id(id),
                    spans: t.spans.len(),
                    start_ms: t.min_start as f64 / 1e6,
                    last_end_ms: t.max_end as f64 / 1e6,
                    age_ms: now_ms as f64 - t.min_start as f64 / 1e6,
                    services: services.into_iter().map(str::to_string).collect(),
                    root,
                    amendment: t.amendment,
                }
            })
            .collect();
        RunningSnapshot {
            at_ms: now_ms,
            open_traces: self.open.len(),
            traces,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Output, Settings};
    use super::*;
    use crate::driver::offsets::OffsetTracker;
    use crate::model::Origin;
    use crate::testkit::span;

    const MS: i64 = 1_000_000;

    fn assembler_with(spans: &[crate::model::Span]) -> Assembler {
        let mut asm = Assembler::new(Settings {
            out_of_orderness_ns: 0,
            idle_gap_ns: 100_000 * MS,
            max_duration_ns: 1_000_000 * MS,
            grace_ns: 1_000 * MS,
            idle_partition_timeout_ms: 60_000,
            max_open_traces: 1_000,
            max_spans_per_trace: 1_000,
            max_span_bytes: 64 * 1024,
            late_output: true,
        });
        let mut tracker = OffsetTracker::default();
        let mut out: Vec<Output> = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            let offset = i as i64 + 1;
            tracker.consumed(0, offset);
            let origin = Origin {
                partition: 0,
                offset,
            };
            asm.push(s.clone(), origin, 0, &mut tracker, &mut out);
        }
        asm
    }

    #[test]
    fn the_oldest_open_traces_first_with_their_services_and_root() {
        let asm = assembler_with(&[
            // trace 1: root seen, two services
            span(1, 1, 0, 30 * MS, 90 * MS, "gateway"),
            span(1, 2, 1, 40 * MS, 80 * MS, "orders"),
            // trace 2: the oldest, no root yet
            span(2, 5, 4, 10 * MS, 20 * MS, "payments"),
            // trace 3: the newest
            span(3, 7, 0, 50 * MS, 60 * MS, "gateway"),
        ]);
        let snap = asm.running(2, None, 1234);
        assert_eq!(snap.at_ms, 1234);
        assert_eq!(snap.open_traces, 3);
        let ids: Vec<&str> = snap.traces.iter().map(|t| &t.trace_id[30..]).collect();
        assert_eq!(ids, ["02", "01"]);
        let (second, first) = (&snap.traces[1], &snap.traces[0]);
        assert_eq!(first.root, None);
        assert_eq!(first.services, ["payments"]);
        assert_eq!(second.spans, 2);
        assert_eq!((second.start_ms, second.last_end_ms), (30.0, 90.0));
        assert_eq!(second.age_ms, 1234.0 - 30.0);
        assert_eq!(second.services, ["gateway", "orders"]);
        let root = second.root.as_ref().unwrap();
        assert_eq!(
            (root.service.as_str(), root.operation.as_str()),
            ("gateway", "gateway op")
        );
    }

    #[test]
    fn a_service_filter_keeps_traces_with_a_span_of_it() {
        let asm = assembler_with(&[
            span(1, 1, 0, 30 * MS, 90 * MS, "gateway"),
            span(1, 2, 1, 40 * MS, 80 * MS, "orders"),
            span(2, 5, 0, 10 * MS, 20 * MS, "payments"),
        ]);
        let snap = asm.running(10, Some("orders"), 0);
        assert_eq!(snap.open_traces, 2);
        assert_eq!(snap.traces.len(), 1);
        assert!(snap.traces[0].trace_id.ends_with('1'));
        assert!(asm.running(10, Some("nobody"), 0).traces.is_empty());
        assert!(asm.running(0, None, 0).traces.is_empty());
    }
}
