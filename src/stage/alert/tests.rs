//! Every rule kind fires and resolves on hand-built windows and scores (event time in
//! seconds from a fixed origin).

use std::sync::Arc;

use super::*;
use crate::config::ConfigErrors;
use crate::model::{AlertStatus, Explanation};

pub(super) const S: i64 = 1_000_000_000;
pub(super) const MS: i64 = 1_000_000;
/// Event-time origin: windows and traces happen after it.
pub(super) const T0: i64 = 1_700_000_000 * S;

pub(super) fn config(yaml: &str) -> AlertConfig {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

pub(super) fn engine(yaml: &str) -> AlertEngine {
    let c = config(yaml);
    let mut errors = ConfigErrors::default();
    c.validate("alert", &mut errors);
    assert!(errors.is_empty(), "{errors}");
    AlertEngine::new(c.settings())
}

/// A window of scope `service` ending `end_s` seconds after T0, with `count` calls of
/// `latency_ms` each, `errors` of them failed.
pub(super) fn window(
    service: &str,
    end_s: i64,
    size_s: i64,
    count: u64,
    errors: u64,
    latency_ms: f64,
) -> WindowAggregate {
    let mut w = WindowAggregate::empty(
        T0 + (end_s - size_s) * S,
        size_s * S,
        Arc::from("service"),
        vec![(Arc::from("service"), Arc::from(service))],
        500 * MS,
    );
    let ns = latency_ms * MS as f64;
    for _ in 0..count {
        w.sketch.add(ns);
    }
    w.count = count;
    w.error_count = errors;
    if count > 0 {
        w.min_ns = ns as i64;
        w.max_ns = ns as i64;
        w.sum_ns = ns as i64 * count as i64;
        w.slo_good = if ns <= 500.0 * MS as f64 { count } else { 0 };
    }
    w
}

pub(super) fn advance(e: &mut AlertEngine, at_s: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    e.advance(T0 + at_s * S, &mut out);
    out
}

pub(super) fn note(a: &Alert) -> &str {
    a.annotations
        .get(NOTIFICATION_ANNOTATION)
        .map_or("", String::as_str)
}

/// (notification, service label) of each event.
pub(super) fn events(alerts: &[Alert]) -> Vec<(String, String)> {
    alerts
        .iter()
        .map(|a| {
            (
                note(a).to_string(),
                a.labels.get("service").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

pub(super) fn ev(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const ERROR_RATE: &str = "
group_wait: 0s
rules:
  - name: high_error_rate
    severity: critical
    labels: {team: 'shop-{{service}}'}
    annotations: {summary: '{{service}} fails {{value}} of calls'}
    series: {scope: service, window: 10s}
    threshold: {field: error_rate, above: 0.1}
";

#[test]
fn threshold_fires_then_resolves() {
    let mut e = engine(ERROR_RATE);
    e.observe_window(&window("gateway", 10, 10, 100, 1, 50.0));
    assert!(advance(&mut e, 10).is_empty());
    e.observe_window(&window("gateway", 20, 10, 100, 30, 50.0));
    let fired = advance(&mut e, 20);
    assert_eq!(fired.len(), 1);
    let a = &fired[0];
    assert_eq!(
        (a.status, note(a), a.rule.as_str(), a.severity.as_str()),
        (AlertStatus::Firing, "new", "high_error_rate", "critical")
    );
    assert_eq!(a.starts_at_ms, (T0 + 20 * S) / MS);
    assert_eq!(a.ends_at_ms, None);
    assert_eq!(a.value, Some(0.3), "the measured value");
    assert_eq!(a.score, 0.0, "no detector scores the series");
    assert_eq!(a.summary, "gateway fails 30% of calls");
    let labels: Vec<(&str, &str)> = a
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("alertname", "high_error_rate"),
            ("scope", "service"),
            ("service", "gateway"),
            ("team", "shop-gateway"),
            ("window", "10s")
        ]
    );
    let fp = fingerprint(
        "high_error_rate",
        a.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    assert_eq!(a.fingerprint, format!("{fp:016x}"));

    e.observe_window(&window("gateway", 30, 10, 100, 40, 50.0));
    assert!(advance(&mut e, 30).is_empty(), "still firing: no duplicate");
    e.observe_window(&window("gateway", 40, 10, 100, 2, 50.0));
    let resolved = advance(&mut e, 40);
    assert_eq!(resolved.len(), 1);
    let r = &resolved[0];
    assert_eq!((r.status, note(r)), (AlertStatus::Resolved, "resolved"));
    assert_eq!(
        r.summary, "high_error_rate service=gateway, team=shop-gateway: resolved, error_rate 2%",
        "a resolved event says so, not the firing summary"
    );
    assert_eq!(r.annotations["summary"], r.summary);
    assert_eq!(
        (r.fingerprint.as_str(), r.starts_at_ms, r.ends_at_ms),
        (
            a.fingerprint.as_str(),
            a.starts_at_ms,
            Some((T0 + 40 * S) / MS)
        )
    );
    assert_eq!(e.stats().emitted_new, 1);
    assert_eq!(e.stats().emitted_resolved, 1);
}

#[test]
fn a_rule_on_measured_values_reports_the_detectors_score_of_its_series() {
    let mut e = engine(ERROR_RATE);
    e.observe_window(&window("gateway", 10, 10, 100, 30, 50.0));
    // a warm score of the series the alert is on; a cold one and another series' do not
    // count
    e.observe_score(&series_score("gateway", 10, 0.87, true));
    e.observe_score(&series_score("gateway", 10, 0.99, false));
    e.observe_score(&series_score("other", 10, 0.5, true));
    let fired = advance(&mut e, 10);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].value, Some(0.3));
    assert_eq!(fired[0].score, 0.87);
}

#[test]
fn a_rule_can_word_its_resolved_events() {
    let rule = ERROR_RATE.replace(
        "annotations: {summary: '{{service}} fails {{value}} of calls'}",
        "annotations: {summary: '{{service}} fails {{value}} of calls', resolved_summary: '{{service}} recovered ({{value}} of calls fail)'}",
    );
    let mut e = engine(&rule);
    e.observe_window(&window("gateway", 10, 10, 100, 30, 50.0));
    let fired = advance(&mut e, 10);
    assert_eq!(fired[0].summary, "gateway fails 30% of calls");
    e.observe_window(&window("gateway", 20, 10, 100, 2, 50.0));
    let resolved = advance(&mut e, 20);
    assert_eq!(resolved[0].status, AlertStatus::Resolved);
    assert_eq!(resolved[0].summary, "gateway recovered (2% of calls fail)");
}

#[test]
fn other_window_sizes_and_services_are_other_series() {
    let mut e = engine(ERROR_RATE);
    e.observe_window(&window("gateway", 60, 60, 100, 50, 50.0));
    e.observe_window(&window("orders", 10, 10, 100, 50, 50.0));
    e.observe_window(&window("gateway", 10, 10, 100, 50, 50.0));
    let out = advance(&mut e, 60);
    let mut got = events(&out);
    got.sort();
    assert_eq!(
        got,
        ev(&[("new", "gateway"), ("new", "orders")]),
        "the 1m window is not selected"
    );
    assert!(out.iter().all(|a| a.labels["window"] == "10s"));
}

#[test]
fn for_keeps_an_alert_pending() {
    let yaml = ERROR_RATE.replace(
        "    severity: critical\n",
        "    severity: critical\n    for: 30s\n",
    );
    let mut e = engine(&yaml);
    // condition at 10, 20, 30: pending for 20s only, then clears: never fires
    for t in [10, 20, 30] {
        e.observe_window(&window("gateway", t, 10, 100, 50, 50.0));
    }
    e.observe_window(&window("gateway", 40, 10, 100, 0, 50.0));
    assert!(advance(&mut e, 40).is_empty());
    assert_eq!(e.stats().fired, 0);
    // condition from 50 on: fires at the first window 30s later (80)
    for t in [50, 60, 70] {
        e.observe_window(&window("gateway", t, 10, 100, 50, 50.0));
        assert!(advance(&mut e, t).is_empty(), "pending at {t}");
        assert_eq!(e.stats().pending, 1);
    }
    e.observe_window(&window("gateway", 80, 10, 100, 50, 50.0));
    let out = advance(&mut e, 80);
    assert_eq!(events(&out), ev(&[("new", "gateway")]));
    assert_eq!(out[0].starts_at_ms, (T0 + 80 * S) / MS);
}

#[test]
fn windows_without_a_value_or_too_few_calls_decide_nothing() {
    let mut e = engine(
        "
group_wait: 0s
rules:
  - name: slow
    series: {scope: service, min_count: 10}
    threshold: {field: latency_p99_ns, above: 200ms}
",
    );
    e.observe_window(&window("gateway", 10, 10, 0, 0, 0.0));
    e.observe_window(&window("gateway", 20, 10, 5, 0, 900.0));
    assert!(advance(&mut e, 20).is_empty());
    e.observe_window(&window("gateway", 30, 10, 50, 0, 900.0));
    let out = advance(&mut e, 30);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].annotations["value"], "900ms");
    assert_eq!(out[0].annotations["threshold"], "200ms");
    assert_eq!(
        out[0].summary,
        "slow service=gateway: latency_p99_ns 900ms above 200ms"
    );
    // an empty window does not resolve it
    e.observe_window(&window("gateway", 40, 10, 0, 0, 0.0));
    assert!(advance(&mut e, 40).is_empty());
}

#[test]
fn below_bounds_fire_on_low_values() {
    let mut e = engine(
        "
group_wait: 0s
rules:
  - name: traffic_drop
    series: {scope: service}
    threshold: {field: throughput_per_s, below: 5}
",
    );
    e.observe_window(&window("gateway", 10, 10, 100, 0, 1.0));
    e.observe_window(&window("gateway", 20, 10, 20, 0, 1.0));
    let out = advance(&mut e, 20);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].summary.ends_with("throughput_per_s 2 below 5"),
        "{}",
        out[0].summary
    );
}

#[test]
fn dynamic_baseline_fires_after_warm_up_and_resolves() {
    let mut e = engine(
        "
group_wait: 0s
rules:
  - name: p95_vs_baseline
    series: {scope: service}
    dynamic: {field: latency_p95_ns, k: 4, samples: 30, min_samples: 10}
",
    );
    // a spike during warm-up decides nothing
    e.observe_window(&window("orders", 10, 10, 50, 0, 900.0));
    for i in 2..=20 {
        let ms = 100.0 + (i % 5) as f64 * 4.0;
        e.observe_window(&window("orders", i * 10, 10, 50, 0, ms));
    }
    assert!(advance(&mut e, 200).is_empty());
    e.observe_window(&window("orders", 210, 10, 50, 0, 400.0));
    let out = advance(&mut e, 210);
    assert_eq!(out.len(), 1);
    let value = out[0].value.expect("a value");
    assert!((value - 400e6).abs() < 400e6 * 0.02);
    e.observe_window(&window("orders", 220, 10, 50, 0, 104.0));
    let out = advance(&mut e, 220);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, AlertStatus::Resolved);
}

pub(super) fn series_score(service: &str, at_s: i64, score: f64, warm: bool) -> AnomalyScore {
    AnomalyScore {
        subject: Subject::Series {
            window_size_ns: 10 * S,
            scope: Arc::from("service"),
            key: vec![(Arc::from("service"), Arc::from(service))],
        },
        at_ns: T0 + at_s * S,
        score,
        warm,
        model: "mad",
        explanations: vec![Explanation {
            feature: "latency_p99_ns".into(),
            value: 1.0,
            baseline: 0.5,
            deviations: 6.0,
        }],
    }
}

#[test]
fn anomaly_needs_consecutive_warm_scores() {
    let mut e = engine(
        "
group_wait: 0s
rules:
  - name: anomalous_service
    series: {scope: service}
    anomaly: {score: 0.8, windows: 3}
",
    );
    e.observe_score(&series_score("db", 10, 0.99, false));
    e.observe_score(&series_score("db", 20, 0.9, true));
    e.observe_score(&series_score("db", 30, 0.95, true));
    e.observe_score(&series_score("db", 40, 0.3, true));
    e.observe_score(&series_score("db", 50, 0.9, true));
    e.observe_score(&series_score("db", 60, 0.9, true));
    assert!(advance(&mut e, 60).is_empty(), "streaks of 2 do not fire");
    e.observe_score(&series_score("db", 70, 0.91, true));
    let out = advance(&mut e, 70);
    assert_eq!(events(&out), ev(&[("new", "db")]));
    assert_eq!(out[0].score, 0.91);
    assert_eq!(out[0].value, Some(0.91));
    assert!(
        out[0].summary.contains("mostly latency_p99_ns"),
        "{}",
        out[0].summary
    );
    e.observe_score(&series_score("db", 80, 0.2, true));
    assert_eq!(events(&advance(&mut e, 80)), ev(&[("resolved", "db")]));
}

pub(super) fn trace_score(trace_id: u128, at_s: i64, score: f64) -> AnomalyScore {
    AnomalyScore {
        subject: Subject::Trace {
            root_service: Arc::from("gateway"),
            root_operation: Arc::from("GET /checkout"),
            trace_id,
        },
        at_ns: T0 + at_s * S,
        score,
        warm: true,
        model: "kmeans",
        explanations: vec![Explanation {
            feature: "duration_ns".into(),
            value: 3.0,
            baseline: 1.0,
            deviations: 8.0,
        }],
    }
}

#[test]
fn anomaly_on_traces_carries_the_scored_traces() {
    let mut e = engine(
        "
group_wait: 0s
rules:
  - name: odd_checkouts
    traces: {root_service: gateway, root_operation: 'GET /check*'}
    anomaly: {score: 0.7, windows: 2}
",
    );
    for (i, id) in (1..=7u128).enumerate() {
        e.observe_score(&trace_score(id, i as i64, 0.9));
    }
    let out = advance(&mut e, 10);
    assert_eq!(out.len(), 1);
    let a = &out[0];
    assert_eq!(
        (a.labels["service"].as_str(), a.labels["operation"].as_str()),
        ("gateway", "GET /checkout")
    );
    let ids: Vec<String> = (3..=7u128).rev().map(crate::model::hex_trace_id).collect();
    assert_eq!(a.exemplar_trace_ids, ids, "the latest five scored traces");
}
