use proptest::prelude::*;

use super::*;
use crate::driver::offsets::OffsetTracker;
use crate::testkit;

const MS: i64 = 1_000_000;

fn settings() -> Settings {
    Settings {
        out_of_orderness_ns: 0,
        idle_gap_ns: 100 * MS,
        max_duration_ns: 10_000 * MS,
        grace_ns: 1_000 * MS,
        idle_partition_timeout_ms: 60_000,
        max_open_traces: 1_000,
        max_spans_per_trace: 1_000,
        max_span_bytes: 64 * 1024,
        late_output: true,
    }
}

struct Harness {
    asm: Assembler,
    tracker: OffsetTracker,
    out: Vec<Output>,
    offset: i64,
}

impl Harness {
    fn new(s: Settings) -> Self {
        Self {
            asm: Assembler::new(s),
            tracker: OffsetTracker::default(),
            out: Vec::new(),
            offset: 0,
        }
    }

    fn push_on(&mut self, partition: u32, span: Span) -> Pushed {
        self.offset += 1;
        self.tracker.consumed(partition, self.offset);
        let origin = Origin {
            partition,
            offset: self.offset,
        };
        self.asm
            .push(span, origin, 0, &mut self.tracker, &mut self.out)
    }

    fn push(&mut self, span: Span) -> Pushed {
        self.push_on(0, span)
    }

    fn advance(&mut self) {
        self.asm.advance(0, &mut self.out);
    }

    fn traces(&mut self) -> Vec<Trace> {
        let mut v = Vec::new();
        for o in self.out.drain(..) {
            if let Output::Trace { trace, holds } = o {
                for (p, off) in holds {
                    self.tracker.release(p, off);
                }
                v.push(trace);
            }
        }
        v
    }
}

fn ids(t: &Trace) -> Vec<u64> {
    t.spans.iter().map(|s| s.span_id).collect()
}

#[test]
fn trace_closes_after_root_ends_and_idle_gap_passes() {
    let mut h = Harness::new(settings());
    h.push(testkit::span(1, 2, 1, 10 * MS, 50 * MS, "db"));
    h.push(testkit::span(1, 1, 0, 0, 60 * MS, "gw"));
    h.advance();
    assert!(
        h.traces().is_empty(),
        "watermark at 60ms, idle gap not passed"
    );
    // another trace moves event time to 159ms: not yet 60 + 100
    h.push(testkit::span(2, 1, 0, 150 * MS, 159 * MS, "gw"));
    h.advance();
    assert!(h.traces().is_empty());
    h.push(testkit::span(3, 1, 0, 150 * MS, 160 * MS, "gw"));
    h.advance();
    let closed = h.traces();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].trace_id, 1);
    assert_eq!(closed[0].close_reason, CloseReason::Completed);
    assert!(!closed[0].incomplete);
    assert_eq!(ids(&closed[0]), vec![1, 2], "sorted by start time");
}

#[test]
fn earliest_open_start_follows_open_traces() {
    let mut h = Harness::new(settings());
    assert_eq!(h.asm.earliest_open_start(), None);
    h.push(testkit::span(1, 2, 1, 30 * MS, 40 * MS, "db"));
    h.push(testkit::span(2, 1, 0, 20 * MS, 25 * MS, "gw"));
    assert_eq!(h.asm.earliest_open_start(), Some(20 * MS));
    h.push(testkit::span(1, 1, 0, 10 * MS, 50 * MS, "gw"));
    assert_eq!(h.asm.earliest_open_start(), Some(10 * MS));
    h.asm.flush(CloseReason::Shutdown, &mut h.out);
    assert_eq!(h.asm.earliest_open_start(), None);
}

#[test]
fn trace_without_root_closes_at_max_duration_as_incomplete() {
    let mut h = Harness::new(settings());
    h.push(testkit::span(1, 2, 1, 0, 10 * MS, "db"));
    h.push(testkit::span(9, 1, 0, 10_000 * MS, 10_000 * MS, "gw"));
    h.advance();
    let closed = h.traces();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].close_reason, CloseReason::MaxDuration);
    assert!(closed[0].incomplete);
}

#[test]
fn long_trace_with_root_closes_at_max_duration() {
    let mut h = Harness::new(settings());
    h.push(testkit::span(1, 1, 0, 0, 20_000 * MS, "gw"));
    h.advance();
    let closed = h.traces();
    assert_eq!(closed[0].close_reason, CloseReason::MaxDuration);
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let mut h = Harness::new(settings());
    let s = testkit::span(1, 1, 0, 0, MS, "gw");
    assert_eq!(h.push(s.clone()), Pushed::Added);
    assert_eq!(h.push(s.clone()), Pushed::Duplicate);
    // duplicate detection also works past the linear-scan size
    for i in 2..40 {
        h.push(testkit::span(1, i, 1, 0, MS, "db"));
    }
    assert_eq!(
        h.push(testkit::span(1, 30, 1, 0, MS, "db")),
        Pushed::Duplicate
    );
    assert_eq!(h.asm.stats().duplicates, 2);
    assert_eq!(h.asm.buffered_spans(), 39);
}

#[test]
fn span_within_grace_becomes_an_amendment_and_later_ones_go_late() {
    let mut h = Harness::new(settings());
    h.push(testkit::span(1, 1, 0, 0, 10 * MS, "gw"));
    h.push(testkit::span(2, 1, 0, 200 * MS, 200 * MS, "gw"));
    h.advance();
    assert_eq!(h.traces().len(), 1);
    // within grace: amendment
    assert_eq!(
        h.push(testkit::span(1, 5, 1, 5 * MS, 8 * MS, "db")),
        Pushed::Amended
    );
    // a duplicate of a span of the closed trace is still a duplicate
    assert_eq!(
        h.push(testkit::span(1, 1, 0, 0, 10 * MS, "gw")),
        Pushed::Duplicate
    );
    h.push(testkit::span(3, 1, 0, 400 * MS, 400 * MS, "gw"));
    h.advance();
    let closed = h.traces();
    let amendment = closed
        .iter()
        .find(|t| t.trace_id == 1)
        .expect("amendment emitted");
    assert!(amendment.amendment);
    assert_eq!(ids(amendment), vec![5]);
    // far past grace: the closed trace is forgotten, the span is late
    h.push(testkit::span(4, 1, 0, 5_000 * MS, 5_000 * MS, "gw"));
    h.advance();
    h.traces();
    assert_eq!(
        h.push(testkit::span(1, 6, 1, 5 * MS, 9 * MS, "db")),
        Pushed::Late
    );
    assert!(matches!(h.out.last(), Some(Output::Late { span, .. }) if span.span_id == 6));
    let stats = h.asm.stats();
    assert_eq!((stats.late_amended, stats.late_routed), (1, 1));
}

#[test]
fn late_spans_without_late_output_are_counted_drops() {
    let mut h = Harness::new(Settings {
        late_output: false,
        ..settings()
    });
    h.push(testkit::span(4, 1, 0, 5_000 * MS, 5_000 * MS, "gw"));
    h.advance();
    assert_eq!(
        h.push(testkit::span(1, 6, 1, 5 * MS, 9 * MS, "db")),
        Pushed::DroppedLate
    );
    assert_eq!(h.asm.stats().late_dropped, 1);
    assert!(h.out.is_empty());
}

#[test]
fn max_open_traces_evicts_the_earliest_due_as_incomplete() {
    let mut h = Harness::new(Settings {
        max_open_traces: 2,
        ..settings()
    });
    h.push(testkit::span(1, 1, 0, 0, MS, "gw"));
    h.push(testkit::span(2, 1, 0, 0, 2 * MS, "gw"));
    h.push(testkit::span(3, 1, 0, 0, 3 * MS, "gw"));
    let closed = h.traces();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].trace_id, 1);
    assert_eq!(closed[0].close_reason, CloseReason::EvictedMaxOpenTraces);
    assert!(closed[0].incomplete);
    assert_eq!(h.asm.open_traces(), 2);
}

#[test]
fn max_spans_per_trace_evicts_and_later_spans_amend() {
    let mut h = Harness::new(Settings {
        max_spans_per_trace: 3,
        ..settings()
    });
    for i in 1..=3 {
        h.push(testkit::span(1, i, if i == 1 { 0 } else { 1 }, 0, MS, "gw"));
    }
    let closed = h.traces();
    assert_eq!(closed[0].close_reason, CloseReason::EvictedMaxSpans);
    assert_eq!(closed[0].spans.len(), 3);
    assert_eq!(h.push(testkit::span(1, 4, 1, 0, MS, "gw")), Pushed::Amended);
}

#[test]
fn oversized_span_is_refused_and_marks_the_trace_incomplete() {
    let mut h = Harness::new(Settings {
        max_span_bytes: 200,
        ..settings()
    });
    h.push(testkit::span(1, 1, 0, 0, MS, "gw"));
    let mut big = testkit::span(1, 2, 1, 0, MS, "gw");
    big.status_message = Some("x".repeat(500).into());
    assert_eq!(h.push(big), Pushed::TooLarge);
    h.asm.flush(CloseReason::Shutdown, &mut h.out);
    let closed = h.traces();
    assert!(closed[0].incomplete);
    assert_eq!(h.asm.stats().too_large, 1);
}

#[test]
fn offsets_are_held_until_the_trace_is_acknowledged() {
    let mut h = Harness::new(settings());
    h.push(testkit::span(1, 1, 0, 0, MS, "gw")); // offset 1
    h.push(testkit::span(2, 1, 0, 0, 500 * MS, "gw")); // offset 2
    assert_eq!(h.tracker.committable(0), Some(1));
    h.advance(); // trace 1 closes, not yet acknowledged
    assert_eq!(h.tracker.committable(0), Some(1));
    let _ = h.traces(); // acknowledged: releases its hold
    assert_eq!(h.tracker.committable(0), Some(2));
}

#[test]
fn revoke_drops_the_partitions_spans_and_holds() {
    let mut h = Harness::new(settings());
    h.push_on(0, testkit::span(1, 1, 0, 0, MS, "gw"));
    h.push_on(1, testkit::span(1, 2, 1, 0, MS, "db"));
    h.push_on(1, testkit::span(2, 1, 0, 0, MS, "gw"));
    h.tracker.revoke(1);
    h.asm.revoke(&[1]);
    assert_eq!(h.asm.open_traces(), 1);
    assert_eq!(h.asm.buffered_spans(), 1);
    h.asm.flush(CloseReason::Shutdown, &mut h.out);
    let closed = h.traces();
    assert_eq!(ids(&closed[0]), vec![1]);
    assert_eq!(h.tracker.committable(0), Some(2));
}

#[test]
fn watermark_waits_for_the_slowest_partition() {
    let mut h = Harness::new(settings());
    h.push_on(0, testkit::span(1, 1, 0, 0, MS, "gw"));
    h.push_on(1, testkit::span(2, 1, 0, 0, MS, "gw"));
    h.push_on(0, testkit::span(3, 1, 0, 900 * MS, 900 * MS, "gw"));
    h.advance();
    assert!(h.traces().is_empty(), "partition 1 still at 1ms");
    h.push_on(1, testkit::span(4, 1, 0, 900 * MS, 900 * MS, "gw"));
    h.advance();
    assert_eq!(h.traces().len(), 2);
}

/// Spans of `traces` traces with a root and children, ids unique per trace.
fn workload(traces: u64, children: u64) -> Vec<Span> {
    let mut v = Vec::new();
    for t in 1..=traces {
        let base = t as i64 * 10 * MS;
        v.push(testkit::span(t as u128, 1, 0, base, base + 8 * MS, "gw"));
        for c in 0..children {
            v.push(testkit::span(
                t as u128,
                2 + c,
                1,
                base + c as i64,
                base + MS + c as i64,
                "svc",
            ));
        }
    }
    v
}

fn run_all(spans: Vec<(u32, Span)>, s: Settings) -> (Vec<Trace>, Stats, Option<i64>) {
    let mut h = Harness::new(s);
    for (p, span) in spans {
        h.push_on(p, span);
        h.advance();
    }
    h.asm.flush(CloseReason::EndOfInput, &mut h.out);
    let mut traces = h.traces();
    traces.sort_by_key(|t| (t.trace_id, t.amendment));
    let commit = h.tracker.committable(0);
    (traces, h.asm.stats().clone(), commit)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No span is lost or duplicated, whatever the arrival order and partitioning.
    #[test]
    fn no_span_lost_or_duplicated(
        seed in any::<u64>(),
        traces in 1u64..30,
        children in 0u64..6,
        partitions in 1u32..4,
        dup_every in 2usize..9,
    ) {
        use rand::{seq::SliceRandom, Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let spans = workload(traces, children);
        let mut input: Vec<(u32, Span)> = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            let p = rng.random_range(0..partitions);
            input.push((p, s.clone()));
            if i % dup_every == 0 {
                input.push((rng.random_range(0..partitions), s.clone()));
            }
        }
        input.shuffle(&mut rng);
        let (closed, stats, _) = run_all(input, Settings { late_output: true, ..settings() });
        let mut seen: Vec<(u128, u64)> = closed.iter().flat_map(|t| t.spans.iter().map(|s| (s.trace_id, s.span_id))).collect();
        seen.sort_unstable();
        let mut expected: Vec<(u128, u64)> = spans.iter().map(|s| (s.trace_id, s.span_id)).collect();
        expected.sort_unstable();
        let late = stats.late_routed + stats.late_dropped;
        prop_assert_eq!(late, 0, "generous grace: nothing is late");
        prop_assert_eq!(seen, expected);
    }

    /// A closed trace does not depend on arrival order.
    #[test]
    fn closed_traces_do_not_depend_on_arrival_order(seed in any::<u64>(), traces in 1u64..20, children in 0u64..6) {
        use rand::{seq::SliceRandom, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let spans = workload(traces, children);
        let in_order: Vec<(u32, Span)> = spans.iter().cloned().map(|s| (0, s)).collect();
        let mut shuffled = in_order.clone();
        shuffled.shuffle(&mut rng);
        // out-of-orderness covers the whole input: only the order differs
        let s = Settings { out_of_orderness_ns: 1_000_000 * MS, ..settings() };
        let (a, _, _) = run_all(in_order, s.clone());
        let (b, _, _) = run_all(shuffled, s);
        prop_assert_eq!(a, b);
    }

    /// After everything is acknowledged, the whole input is committable.
    #[test]
    fn everything_acknowledged_means_everything_committable(traces in 1u64..20, children in 0u64..4) {
        let input: Vec<(u32, Span)> = workload(traces, children).into_iter().map(|s| (0, s)).collect();
        let n = input.len() as i64;
        let (_, _, commit) = run_all(input, settings());
        prop_assert_eq!(commit, Some(n + 1));
    }
}
