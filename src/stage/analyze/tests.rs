//! Summary, critical path and bottleneck on hand-built traces (times in ms).

use super::*;
use crate::model::{CloseReason, SpanKind, StatusCode};
use crate::testkit;

pub(super) const MS: i64 = 1_000_000;

/// A span of trace 1 with times in milliseconds.
pub(super) fn sp(id: u64, parent: u64, start_ms: i64, end_ms: i64, service: &str) -> Span {
    testkit::span(1, id, parent, start_ms * MS, end_ms * MS, service)
}

pub(super) fn with_kind(mut s: Span, kind: SpanKind) -> Span {
    s.kind = kind;
    s
}

pub(super) fn failed(mut s: Span) -> Span {
    s.status = StatusCode::Error;
    s
}

pub(super) fn named(mut s: Span, name: &str) -> Span {
    s.name = Arc::from(name);
    s
}

pub(super) fn trace(spans: Vec<Span>) -> Trace {
    let mut t = Trace {
        trace_id: 1,
        spans,
        amendment: false,
        close_reason: CloseReason::Completed,
        incomplete: false,
    };
    t.sort_spans();
    t
}

pub(super) fn run(spans: Vec<Span>) -> Analysis {
    analyze(&trace(spans), &AnalyzeSettings::default())
}

/// (span id, self time in ms) of the critical path, checking that the self times sum to
/// `total_ms`.
pub(super) fn path(a: &Analysis, total_ms: i64) -> Vec<(u64, i64)> {
    let sum: i64 = a.critical_path.iter().map(|s| s.self_time_ns).sum();
    assert_eq!(sum, total_ms * MS, "self times sum to the root duration");
    a.critical_path
        .iter()
        .map(|s| (s.span_id, s.self_time_ns / MS))
        .collect()
}

#[test]
fn summary_of_a_small_trace() {
    let a = run(vec![
        sp(1, 0, 0, 100, "gateway"),
        failed(sp(2, 1, 10, 40, "db")),
        sp(3, 1, 40, 90, "app"),
        sp(4, 3, 50, 60, "db"),
        sp(5, 4, 55, 58, "app"),
    ]);
    assert_eq!(a.duration_ns, 100 * MS);
    assert_eq!(a.span_count, 5);
    assert_eq!(a.depth, 4);
    assert_eq!(a.error_count, 1);
    let services: Vec<&str> = a.services.iter().map(|s| &**s).collect();
    assert_eq!(services, ["app", "db", "gateway"]);
    assert_eq!(a.root_service.as_deref(), Some("gateway"));
    assert_eq!(a.root_name.as_deref(), Some("gateway op"));
    assert!(!a.oddities.any());
}

#[test]
fn empty_trace_gives_an_empty_analysis() {
    assert_eq!(run(vec![]), Analysis::default());
}

#[test]
fn lone_root_is_the_whole_path_and_the_bottleneck() {
    let a = run(vec![sp(1, 0, 0, 100, "a")]);
    assert_eq!(a.depth, 1);
    assert_eq!(path(&a, 100), [(1, 100)]);
    let b = a.bottleneck.unwrap();
    assert_eq!((b.span_id, b.self_time_ns, b.share), (1, 100 * MS, 1.0));
    assert_eq!(a.bottleneck_service, Some((Arc::from("a"), 1.0)));
}

#[test]
fn zero_duration_root_has_no_bottleneck() {
    let a = run(vec![sp(1, 0, 5, 5, "a")]);
    assert_eq!(path(&a, 0), [(1, 0)]);
    assert_eq!(a.bottleneck, None);
    assert_eq!(a.bottleneck_service, None);
    assert_eq!(a.oddities.zero_durations, 1);
}

#[test]
fn sequential_children_are_all_on_the_path() {
    let a = run(vec![
        sp(1, 0, 0, 100, "a"),
        sp(2, 1, 10, 40, "b"),
        sp(3, 1, 40, 90, "c"),
    ]);
    assert_eq!(path(&a, 100), [(1, 20), (2, 30), (3, 50)]);
}

#[test]
fn of_parallel_children_only_the_last_to_finish_is_on_the_path() {
    let a = run(vec![
        sp(1, 0, 0, 100, "a"),
        sp(2, 1, 10, 70, "b"),
        sp(3, 1, 20, 90, "c"),
    ]);
    assert_eq!(path(&a, 100), [(1, 30), (3, 70)]);
}

#[test]
fn overlapping_children_skip_the_one_that_overlaps_covered_time() {
    // C finishes last; B overlaps C's interval; A ends before C starts
    let a = run(vec![
        sp(1, 0, 0, 100, "a"),
        sp(2, 1, 5, 30, "b"),
        sp(3, 1, 20, 60, "c"),
        sp(4, 1, 50, 95, "d"),
    ]);
    assert_eq!(path(&a, 100), [(1, 30), (2, 25), (4, 45)]);
}

#[test]
fn nested_children_and_equal_starts_list_parents_first() {
    let a = run(vec![
        sp(1, 0, 0, 100, "a"),
        sp(2, 1, 10, 90, "b"),
        sp(3, 2, 20, 40, "c"),
        sp(4, 2, 30, 80, "d"),
        sp(5, 2, 80, 85, "e"),
        sp(6, 1, 0, 5, "f"),
    ]);
    // root: 90..100 and 5..10; b: 85..90 and 10..30; c is hidden by d
    assert_eq!(path(&a, 100), [(1, 15), (6, 5), (2, 25), (4, 50), (5, 5)]);
    let b = a.bottleneck.unwrap();
    assert_eq!((b.span_id, b.self_time_ns, b.share), (4, 50 * MS, 0.5));
    assert_eq!(&*b.service, "d");
}

#[test]
fn children_ending_together_prefer_the_longest() {
    let a = run(vec![
        sp(1, 0, 0, 100, "a"),
        sp(2, 1, 50, 100, "b"),
        sp(3, 1, 10, 100, "c"),
    ]);
    assert_eq!(path(&a, 100), [(1, 10), (3, 90)]);
}

#[test]
fn async_children_are_clamped_to_their_parent() {
    let a = run(vec![
        with_kind(sp(1, 0, 0, 100, "gateway"), SpanKind::Server),
        with_kind(sp(2, 1, 10, 20, "api"), SpanKind::Producer),
        // the consumer starts after its producer ended: off the path
        with_kind(sp(3, 2, 150, 300, "worker"), SpanKind::Consumer),
        // outlives the root: counts until the root ends
        sp(4, 1, 50, 200, "background"),
        // starts after its (clamped) parent ended: off the path
        sp(5, 4, 120, 180, "background"),
    ]);
    assert_eq!(path(&a, 100), [(1, 40), (2, 10), (4, 50)]);
    assert_eq!(a.duration_ns, 300 * MS, "the summary covers every span");
    assert_eq!(a.oddities.clock_skew, 1, "only the background span");
}

#[test]
fn back_to_back_and_zero_length_children() {
    let a = run(vec![
        sp(1, 0, 0, 30, "a"),
        sp(2, 1, 0, 10, "b"),
        sp(3, 1, 10, 10, "c"),
        sp(4, 1, 10, 30, "d"),
    ]);
    assert_eq!(path(&a, 30), [(1, 0), (2, 10), (4, 20)]);
}

#[test]
fn bottleneck_ties_go_to_the_deeper_span() {
    let a = run(vec![sp(1, 0, 0, 100, "a"), sp(2, 1, 50, 100, "b")]);
    assert_eq!(path(&a, 100), [(1, 50), (2, 50)]);
    assert_eq!(a.bottleneck.unwrap().span_id, 2);
}

#[test]
fn bottleneck_service_sums_self_time_by_service() {
    let spans = vec![
        sp(1, 0, 0, 100, "a"),
        sp(2, 1, 10, 30, "b"),
        sp(3, 1, 40, 60, "b"),
        sp(4, 1, 60, 95, "c"),
    ];
    let a = run(spans.clone());
    assert_eq!(path(&a, 100), [(1, 25), (2, 20), (3, 20), (4, 35)]);
    assert_eq!(a.bottleneck.as_ref().unwrap().span_id, 4);
    let (svc, share) = a.bottleneck_service.clone().unwrap();
    assert_eq!((&*svc, share), ("b", 0.4));
    assert!(a.findings.is_empty(), "{:?}", a.findings);

    let low = AnalyzeSettings {
        dominant_dependency_share: 0.35,
        ..AnalyzeSettings::default()
    };
    let a = analyze(&trace(spans), &low);
    let dominant: Vec<_> = a
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::DominantDependency)
        .collect();
    assert_eq!(dominant.len(), 1, "c has exactly 35%, not more");
    assert_eq!(&*dominant[0].service, "b");
    assert_eq!(dominant[0].span_ids, [2, 3]);
    assert_eq!(dominant[0].message, "b takes 40% of the critical path");
}

#[test]
fn the_root_service_is_never_a_dominant_dependency() {
    let a = run(vec![sp(1, 0, 0, 100, "a"), sp(2, 1, 10, 20, "a")]);
    assert_eq!(a.bottleneck_service.as_ref().unwrap().1, 1.0);
    assert!(a.findings.is_empty());
    let a = run(vec![sp(1, 0, 0, 100, "a"), sp(2, 1, 10, 80, "b")]);
    assert_eq!(a.findings.len(), 1);
    assert_eq!(a.findings[0].kind, FindingKind::DominantDependency);
    assert_eq!(a.findings[0].message, "b takes 70% of the critical path");
}

#[test]
fn serialises_kinds_as_snake_case() {
    let a = run(vec![sp(1, 0, 0, 100, "a"), failed(sp(2, 1, 10, 80, "b"))]);
    let json = serde_json::to_value(&a).unwrap();
    let kinds: Vec<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dominant_dependency", "error_origin"]);
    assert_eq!(json["oddities"]["synthetic_root"], false);
    assert_eq!(json["critical_path"][0]["service"], "a");
    for k in FindingKind::ALL {
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
    }
}

#[test]
fn oddity_labels_cover_every_reason() {
    let odd = Oddities {
        clock_skew: 1,
        orphans: 2,
        cycles: 3,
        extra_roots: 4,
        negative_durations: 5,
        zero_durations: 6,
        synthetic_root: true,
    };
    let labels: Vec<(&str, u32)> = odd.labels().collect();
    assert_eq!(
        labels,
        [
            ("clock_skew", 1),
            ("orphans", 2),
            ("cycles", 3),
            ("extra_roots", 4),
            ("negative_durations", 5),
            ("zero_durations", 6),
            ("synthetic_root", 1),
        ]
    );
    assert!(odd.any());
    assert!(!Oddities::default().any());
    assert!(Oddities::default().labels().all(|(_, n)| n == 0));
}
