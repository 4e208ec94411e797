//! Trend and error-budget burn rules fire and resolve on hand-built windows.

use super::tests::{advance, engine, window};
use super::*;
use crate::model::AlertStatus;

#[test]
fn trend_predicts_crossing_before_it_happens() {
    let mut e = engine(
        "
group_wait: 0s
rules:
  - name: p99_heading_to_slo
    series: {scope: service}
    trend: {field: latency_p99_ns, above: 1s, windows: 5, horizon: 2m}
    annotations: {description: 'crosses {{threshold}} in {{eta}}'}
",
    );
    // flat at 100ms: no alert
    for i in 1..=6 {
        e.observe_window(&window("db", i * 10, 10, 100, 0, 100.0));
    }
    assert!(advance(&mut e, 60).is_empty());
    // +50ms per 10s window from 70s: once the fit is a clean line, at 300ms it reaches 1s
    // in 140s (beyond the horizon), at 400ms in 120s
    let mut fired_at = None;
    for i in 7..=20 {
        let ms = 100.0 + 50.0 * (i - 6) as f64;
        e.observe_window(&window("db", i * 10, 10, 100, 0, ms));
        let out = advance(&mut e, i * 10);
        if !out.is_empty() {
            fired_at = Some((i, ms, out));
            break;
        }
    }
    let (i, ms, out) = fired_at.expect("fires");
    assert_eq!(ms, 400.0, "fires long before the value crosses");
    assert!(
        out[0].annotations["description"].starts_with("crosses 1s in "),
        "{:?}",
        out[0].annotations
    );
    // falling again: the line no longer reaches the bound
    for j in 1..=5 {
        e.observe_window(&window("db", (i + j) * 10, 10, 100, 0, 100.0));
    }
    let out = advance(&mut e, (i + 5) * 10);
    assert_eq!(
        out.iter().map(|a| a.status).collect::<Vec<_>>(),
        [AlertStatus::Resolved]
    );
}

#[test]
fn slo_burn_needs_both_windows_burning() {
    let mut e = engine(
        "
group_wait: 0s
rules:
  - name: budget_burn
    severity: critical
    series: {scope: service, window: 1m}
    slo_burn: {objective: 0.99, long: 1h, short: 5m, factor: 10}
",
    );
    let mut t = 0;
    let mut feed = |e: &mut AlertEngine, errors: u64| {
        t += 60;
        e.observe_window(&window("payments", t, 60, 100, errors, 10.0));
        advance(e, t)
    };
    for _ in 0..60 {
        assert!(feed(&mut e, 0).is_empty());
    }
    // 20% errors: short burn 20 at once, long burn 20·k/60 passes 10 after 31 windows
    let mut bad = 0;
    let out = loop {
        bad += 1;
        let out = feed(&mut e, 20);
        if !out.is_empty() || bad > 40 {
            break out;
        }
    };
    assert_eq!(bad, 31);
    assert_eq!(out[0].annotations["threshold"], "10");
    let burn = out[0].value.expect("a burn rate");
    assert!(burn > 10.0 && burn < 11.0, "{burn}");
    assert_eq!(out[0].score, 0.0);
    // recovered: the short window stops burning after a few good windows
    let mut good = 0;
    loop {
        good += 1;
        let out = feed(&mut e, 0);
        if !out.is_empty() {
            assert_eq!(out[0].status, AlertStatus::Resolved);
            break;
        }
        assert!(good < 10);
    }
    assert_eq!(
        good, 3,
        "short burn (2 bad of 5 windows: 8) below 10 after 3 good windows"
    );
}

#[test]
fn slo_burn_on_latency_counts_slow_calls() {
    let mut e = engine(
        "
group_wait: 0s
rules:
  - name: latency_budget
    series: {scope: service}
    slo_burn: {objective: 0.9, long: 10m, short: 1m, factor: 2, indicator: latency}
",
    );
    e.observe_window(&window("search", 60, 60, 100, 0, 100.0));
    assert!(advance(&mut e, 60).is_empty());
    e.observe_window(&window("search", 120, 60, 100, 0, 900.0));
    assert_eq!(
        advance(&mut e, 120).len(),
        1,
        "half the calls slow: burn 5 over both windows"
    );
}
