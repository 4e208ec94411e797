use std::sync::Arc;

use super::*;

const S: i64 = 1_000_000_000;
const T0: i64 = 1_767_225_600 * S;

/// A window of `size_s` seconds starting `at_s` after T0 with `count` calls of
/// `latency_ms` each (`+ i % 3` ms for spread), `errors` of them failed.
fn window(
    scope: &str,
    key: &[(&str, &str)],
    at_s: i64,
    size_s: i64,
    count: u64,
    errors: u64,
    latency_ms: i64,
) -> WindowAggregate {
    let mut w = WindowAggregate::empty(
        T0 + at_s * S,
        size_s * S,
        Arc::from(scope),
        key.iter()
            .map(|(k, v)| (Arc::from(*k), Arc::from(*v)))
            .collect(),
        S,
    );
    for i in 0..count {
        let ns = (latency_ms + (i % 3) as i64) * 1_000_000;
        w.count += 1;
        w.min_ns = w.min_ns.min(ns);
        w.max_ns = w.max_ns.max(ns);
        w.sum_ns += ns;
        w.sketch.add(ns as f64);
    }
    w.error_count = errors;
    w
}

fn orders(at_s: i64, count: u64, errors: u64, latency_ms: i64) -> WindowAggregate {
    window(
        "service",
        &[("service", "orders")],
        at_s,
        10,
        count,
        errors,
        latency_ms,
    )
}

#[test]
fn a_slower_failing_busier_current_range_is_significant() {
    // baseline: 10 windows of 100 calls, 2 errors, ~50 ms; current: 10 windows of 150
    // calls, 10 errors, ~80 ms
    let base: Vec<_> = (0..10).map(|i| orders(i * 10, 100, 2, 50)).collect();
    let cur: Vec<_> = (0..10)
        .map(|i| orders(1000 + i * 10, 150, 10, 80))
        .collect();
    let out = compare_series(group(base), group(cur), false);
    assert_eq!(out.len(), 1);
    let c = &out[0];
    assert_eq!(c.key["service"], "orders");
    assert_eq!(c.window_seconds, 10.0);
    assert_eq!((c.baseline.count, c.current.count), (1000, 1500));
    assert_eq!((c.baseline.seconds, c.current.seconds), (100.0, 100.0));
    assert_eq!(c.throughput.baseline, Some(10.0));
    assert_eq!(c.throughput.current, Some(15.0));
    assert_eq!(c.throughput.change, Some(5.0));
    assert_eq!(c.throughput.relative_change, Some(0.5));
    assert!(c.throughput.significant);
    // 20/1000 against 100/1500: z-test on the counts
    let z = super::super::stats::two_proportion_z(20.0, 1000.0, 100.0, 1500.0).unwrap();
    assert_eq!(c.error_rate.p_value, Some(z.p_value));
    assert!(c.error_rate.significant);
    assert_eq!(c.error_rate.baseline, Some(0.02));
    // every current window is slower than every baseline window (each side's values
    // tied): U test z = 49.5 / sqrt(100/12 * (21 - 1980/380)), p = 1.5938e-5
    let p50 = c.p50_ms.baseline.unwrap();
    assert!((p50 - 51.0).abs() <= 51.0 * 0.005, "{p50}");
    assert!((c.p50_ms.current.unwrap() - 81.0).abs() <= 81.0 * 0.005);
    assert!(c.p99_ms.significant && c.p50_ms.significant);
    assert!(
        (c.p99_ms.p_value.unwrap() - 1.593_791e-5).abs() < 1e-9,
        "{:?}",
        c.p99_ms
    );
    assert_eq!(c.p99_ms.test, "mann_whitney_per_window");
}

#[test]
fn the_same_behaviour_is_not_significant_and_one_window_is_not_enough() {
    let base: Vec<_> = (0..10).map(|i| orders(i * 10, 100, 5, 50)).collect();
    let cur: Vec<_> = (0..10).map(|i| orders(1000 + i * 10, 100, 5, 50)).collect();
    let c = &compare_series(group(base), group(cur), false)[0];
    assert_eq!(c.throughput.change, Some(0.0));
    assert!(!c.throughput.significant && !c.error_rate.significant);
    assert!(!c.p95_ms.significant);
    assert_eq!(c.p95_ms.p_value, None, "every per-window value is equal");
    // one window per side: latency cannot be tested
    let c = &compare_series(
        group(vec![orders(0, 100, 0, 50)]),
        group(vec![orders(1000, 100, 0, 500)]),
        false,
    )[0];
    assert!(!c.p99_ms.significant);
    assert!(c.p99_ms.relative_change.unwrap() > 8.0);
}

#[test]
fn hopping_windows_count_each_call_once() {
    // 30 s windows every 10 s: every call is in three windows
    let hop = |at: i64, count| window("service", &[("service", "a")], at, 30, count, 0, 5);
    let base: Vec<_> = (0..9).map(|i| hop(i * 10, 300)).collect();
    let s = &group(base)[0];
    assert_eq!(s.overlap(), 3.0);
    let r = RangeSummary::of(&s.windows, s.overlap());
    assert_eq!(r.seconds, 90.0);
    assert_eq!(r.throughput(), Some(10.0));
    assert_eq!(r.per_window_ms[0].len(), 3);
}

#[test]
fn series_pair_by_key_and_use_the_smallest_size() {
    let base = vec![
        orders(0, 10, 0, 5),
        window("service", &[("service", "orders")], 0, 60, 60, 0, 5),
        window("service", &[("service", "pay")], 0, 10, 10, 0, 5),
    ];
    let cur = vec![orders(1000, 10, 0, 5)];
    let out = compare_series(group(base), group(cur), false);
    let ids: Vec<(&str, f64)> = out
        .iter()
        .map(|c| (c.key["service"].as_str(), c.window_seconds))
        .collect();
    assert_eq!(ids, [("orders", 10.0), ("pay", 10.0)]);
    // a series missing from the current range compares against nothing
    let pay = &out[1];
    assert_eq!((pay.current.windows, pay.current.count), (0, 0));
    assert_eq!(pay.throughput.current, None);
    assert!(!pay.throughput.significant);
    assert_eq!(
        smallest_size(group(vec![
            window("service", &[("service", "orders")], 0, 60, 60, 0, 5),
            orders(0, 10, 0, 5),
        ]))
        .len(),
        1
    );
}

#[test]
fn selections_default_to_service_and_operation_scopes() {
    let mut s = SeriesSelection::default();
    assert_eq!(s.scopes(), ["service", "operation"]);
    s.operation = Some("GET /".into());
    assert_eq!(s.scopes(), ["operation"]);
    s.scopes = vec!["environment".into()];
    assert_eq!(s.scopes(), ["environment"]);
}
