//! Broken traces: orphans, cycles, several roots, bad times, clock skew, huge shapes,
//! and a property test over arbitrary parent links, times and kinds.

use proptest::prelude::*;

use super::tests::{path, run, sp, trace, with_kind, MS};
use super::*;
use crate::model::{SpanKind, StatusCode};

#[test]
fn orphans_hang_under_a_synthetic_root_covering_the_trace() {
    let a = run(vec![
        sp(1, 0, 0, 100, "a"),
        sp(2, 1, 10, 20, "a"),
        sp(3, 99, 50, 150, "b"),
    ]);
    assert_eq!(a.oddities.orphans, 1);
    assert!(a.oddities.synthetic_root);
    assert_eq!(a.oddities.extra_roots, 0);
    assert_eq!(a.root_service.as_deref(), Some("a"));
    assert_eq!(a.depth, 2);
    // the orphan finishes last; the root overlaps it and is skipped
    assert_eq!(path(&a, 150), [(0, 50), (3, 100)]);
    assert_eq!(&*a.critical_path[0].service, SYNTHETIC_SERVICE);
    assert_eq!(&*a.critical_path[0].name, SYNTHETIC_NAME);
    let b = a.bottleneck.unwrap();
    assert_eq!((b.span_id, b.share), (3, 100.0 / 150.0));
    assert_eq!(a.bottleneck_service.unwrap().0.as_ref(), "b");
}

#[test]
fn a_trace_without_root_has_no_root_service() {
    let a = run(vec![sp(2, 7, 0, 10, "a"), sp(3, 8, 20, 30, "b")]);
    assert_eq!(a.oddities.orphans, 2);
    assert_eq!(a.oddities.extra_roots, 0);
    assert!(a.oddities.synthetic_root);
    assert_eq!(a.root_service, None);
    assert_eq!(a.root_name, None);
    assert_eq!(path(&a, 30), [(0, 10), (2, 10), (3, 10)]);
}

#[test]
fn several_roots_hang_under_the_synthetic_root() {
    let a = run(vec![sp(1, 0, 0, 50, "a"), sp(2, 0, 60, 100, "b")]);
    assert_eq!(a.oddities.extra_roots, 1);
    assert!(a.oddities.synthetic_root);
    assert_eq!(a.root_service.as_deref(), Some("a"), "the earliest root");
    assert_eq!(path(&a, 100), [(0, 10), (1, 50), (2, 40)]);
    assert_eq!(a.depth, 1);
}

#[test]
fn cycles_are_cut_at_their_earliest_member_and_counted() {
    let a = run(vec![
        sp(1, 0, 0, 100, "a"),
        sp(2, 3, 10, 50, "b"),
        sp(3, 2, 20, 40, "c"),
        sp(4, 3, 25, 30, "d"),
        // a span that is its own parent
        sp(5, 5, 60, 70, "e"),
    ]);
    assert_eq!(a.oddities.cycles, 2);
    assert_eq!(a.oddities.orphans, 0);
    assert!(a.oddities.synthetic_root);
    assert_eq!(a.depth, 3, "2 -> 3 -> 4 once the cycle is cut above 2");
    assert_eq!(path(&a, 100), [(0, 0), (1, 100)]);
}

#[test]
fn negative_durations_count_as_zero() {
    let a = run(vec![
        sp(1, 0, 0, 100, "a"),
        sp(2, 1, 50, 40, "b"),
        sp(3, 1, 60, 60, "c"),
    ]);
    assert_eq!(a.oddities.negative_durations, 1);
    assert_eq!(a.oddities.zero_durations, 1);
    assert_eq!(path(&a, 100), [(1, 100)]);
    let huge = run(vec![sp(1, 0, 100, -100, "a")]);
    assert_eq!(huge.duration_ns, 0);
    assert_eq!(path(&huge, 0), [(1, 0)]);
}

#[test]
fn clock_skew_beyond_a_millisecond_is_counted_except_for_async_children() {
    let mut early = sp(2, 1, 0, 50, "b");
    early.start_ns = -MS / 2; // within tolerance
    let a = run(vec![
        sp(1, 0, 0, 100, "a"),
        early,
        sp(3, 1, -2, 50, "c"),
        sp(4, 1, 50, 102, "d"),
        with_kind(sp(5, 1, 10, 20, "e"), SpanKind::Producer),
        sp(6, 5, 15, 300, "f"),
        with_kind(sp(7, 1, 90, 300, "g"), SpanKind::Consumer),
    ]);
    assert_eq!(a.oddities.clock_skew, 2, "3 and 4");
    let sum: i64 = a.critical_path.iter().map(|s| s.self_time_ns).sum();
    assert_eq!(sum, 100 * MS);
}

#[test]
fn extreme_times_do_not_panic() {
    let a = run(vec![
        sp(1, 0, 0, 0, "a"),
        testkit_span(2, 1, i64::MIN, i64::MAX),
        testkit_span(3, 9, i64::MAX, i64::MIN),
        testkit_span(4, 0, i64::MIN, i64::MIN),
    ]);
    assert!(a.oddities.synthetic_root);
    assert_eq!(a.duration_ns, i64::MAX);
}

fn testkit_span(id: u64, parent: u64, start: i64, end: i64) -> Span {
    crate::testkit::span(1, id, parent, start, end, "x")
}

const BIG: usize = 10_000;

#[test]
fn a_ten_thousand_span_chain_is_analysed_without_recursion() {
    // each span is the parent of the next and encloses it
    let n = BIG as i64;
    let spans: Vec<Span> = (1..=n)
        .map(|i| sp(i as u64, (i - 1) as u64, i, 2 * n - i + 1, "s"))
        .collect();
    let a = run(spans);
    assert_eq!(a.depth, BIG);
    assert_eq!(a.critical_path.len(), BIG);
    path(&a, 2 * n - 1);
    assert!(!a.oddities.any());
    // the same chain in reverse, all in one cycle
    let spans: Vec<Span> = (1..=n)
        .map(|i| sp(i as u64, (i % n + 1) as u64, i, i + 1, "s"))
        .collect();
    let a = run(spans);
    assert_eq!(a.oddities.cycles, 1);
    assert_eq!(a.depth, BIG);
}

#[test]
fn a_ten_thousand_span_fan_out_is_analysed() {
    let n = BIG as i64;
    let mut spans = vec![sp(1, 0, 0, n + 1, "root")];
    spans.extend((1..=n).map(|i| sp(i as u64 + 1, 1, i, i + 1, "leaf")));
    let a = run(spans);
    assert_eq!(a.depth, 2);
    assert_eq!(a.critical_path.len(), BIG + 1);
    path(&a, n + 1);
    let n1: Vec<&Finding> = a
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::NPlusOne)
        .collect();
    assert_eq!(n1.len(), 1);
    assert_eq!(n1[0].span_ids.len(), BIG);
    // all concurrent: only the one ending last is on the path
    let mut spans = vec![sp(1, 0, 0, n + 1, "root")];
    spans.extend((1..=n).map(|i| sp(i as u64 + 1, 1, 0, i, "leaf")));
    let a = run(spans);
    assert_eq!(path(&a, n + 1), [(1, 1), (BIG as u64 + 1, n)]);
}

/// (parent choice, start, duration, kind, status, service, name) per span; parent
/// choice 0 is none, else the span id `choice` (ids are 1..=n, so some are missing).
type Gen = (u64, i64, i64, usize, i64, u8, u8);

fn build(gen: &[Gen]) -> Trace {
    let spans = gen
        .iter()
        .enumerate()
        .map(|(i, &(parent, start, dur, kind, status, svc, name))| {
            let mut s = crate::testkit::span(
                1,
                i as u64 + 1,
                parent,
                start * MS,
                (start + dur) * MS,
                ["a", "b", "c"][usize::from(svc)],
            );
            s.kind = SpanKind::ALL[kind];
            s.status = StatusCode::from_index(status).unwrap_or_default();
            s.name = Arc::from(["op", "get", "put"][usize::from(name)]);
            s
        })
        .collect();
    trace(spans)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_and_self_times_sum_to_the_top_duration(
        gen in prop::collection::vec(
            (0u64..45, -50i64..50, -10i64..60, 0usize..6, 0i64..3, 0u8..3, 0u8..3),
            1..40,
        ),
        sorted in any::<bool>(),
        well_formed in any::<bool>(),
    ) {
        let mut gen = gen;
        if well_formed {
            // span i+1 hangs under an earlier span: one root, no orphan, no cycle
            for (i, g) in gen.iter_mut().enumerate() {
                g.0 = if i == 0 { 0 } else { 1 + g.0 % i as u64 };
            }
        }
        let mut t = build(&gen);
        if !sorted {
            t.spans.reverse();
        }
        let a = analyze(&t, &AnalyzeSettings::default());
        let top_ns = if a.oddities.synthetic_root {
            a.duration_ns
        } else {
            let r = t.root().unwrap();
            (r.end_ns - r.start_ns).max(0)
        };
        let sum: i64 = a.critical_path.iter().map(|s| s.self_time_ns).sum();
        prop_assert_eq!(sum, top_ns);
        prop_assert!(a.critical_path.iter().all(|s| s.self_time_ns >= 0));
        prop_assert_eq!(a.critical_path[0].span_id == 0, a.oddities.synthetic_root);
        let mut ids: Vec<u64> = a.critical_path.iter().map(|s| s.span_id).collect();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), a.critical_path.len(), "a span is on the path once");
        prop_assert!(a.depth >= 1 && a.depth <= t.spans.len());
        prop_assert!(a.duration_ns >= 0);
        prop_assert!(a.findings.iter().all(|f| !f.span_ids.is_empty()));
        prop_assert!(a.edges.iter().all(|e| e.client != e.server));
        if well_formed {
            prop_assert!(!a.oddities.synthetic_root);
            prop_assert_eq!(a.oddities.cycles + a.oddities.orphans, 0);
        }
        let roots = t.spans.iter().filter(|s| s.is_root()).count() as u32;
        prop_assert_eq!(a.oddities.extra_roots, roots.saturating_sub(1));
        if let Some(b) = &a.bottleneck {
            prop_assert!(b.share > 0.0 && b.share <= 1.0);
        }
    }
}
