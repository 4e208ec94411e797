//! Two-phase aggregation between instances, without a broker: each instance counts the
//! traces it assembles and hands its partial windows over at every checkpoint; the owner
//! merges them and publishes one exact aggregate per series and window, once every
//! assembling partition has passed the window.

use std::collections::BTreeMap;

use super::tests::S;
use super::tests_cluster::*;
use crate::testkit;

const AGGREGATE: &str = "  - type: aggregate
    windows: [10s]
    service_graph: false
    dimensions:
      service: [service]
";

fn span(trace: u128, n: u64, at_ns: i64, service: &str) -> crate::model::Span {
    let parent = if n == 1 { 0 } else { 1 };
    testkit::span(trace, n, parent, T0 + at_ns, T0 + at_ns + 5 * MS, service)
}

/// Spans per service in the window starting at T0, by the instance that published it.
fn counts(c: &Cluster) -> BTreeMap<(usize, String), Vec<i64>> {
    let mut out: BTreeMap<(usize, String), Vec<i64>> = BTreeMap::new();
    for (i, a) in &c.aggregates {
        if a["window_start_unix_nano"].as_i64() == Some(T0) {
            let service = a["dimensions"][0]["value"].as_str().unwrap().to_string();
            out.entry((*i, service))
                .or_default()
                .push(a["count"].as_i64().unwrap());
        }
    }
    out
}

#[test]
fn two_instances_publish_one_exact_aggregate_per_series_and_window() {
    let mut c = Cluster::new(&pipeline("", AGGREGATE), 2, true);
    // every trace has a span on each input, so on each instance; both instances
    // assemble (each owns a partition of the repartition topic)
    for t in 1..=40u128 {
        let at = t as i64 * 100 * MS;
        c.send(0, 0, &[span(t, 1, at, "a"), span(t + 1000, 2, at, "b")]);
        c.send(1, 1, &[span(t + 1000, 1, at, "a"), span(t, 2, at, "b")]);
        if t % 10 == 0 {
            // checkpoints hand over partials mid-window
            c.tick(1_000);
        }
    }
    assert!(counts(&c).is_empty(), "the window is open");
    c.send(0, 0, &[span(5000, 1, 30 * S, "a")]);
    c.send(1, 1, &[span(5001, 1, 30 * S, "a")]);
    for _ in 0..4 {
        c.tick(1_000);
    }
    let got = counts(&c);
    let want: BTreeMap<(usize, String), Vec<i64>> = [
        ((0, "a".to_string()), vec![80]),
        ((0, "b".to_string()), vec![80]),
    ]
    .into();
    assert_eq!(
        got, want,
        "one aggregate per service, from the owner, every span counted"
    );
}

#[test]
fn the_owner_waits_for_an_assembling_partition_that_lags() {
    let mut c = Cluster::new(&pipeline("", AGGREGATE), 2, true);
    c.tick(1_000);
    c.send(0, 0, &[span(1, 1, 0, "a")]);
    c.send(1, 1, &[span(2, 1, 0, "a")]);
    // input 0 runs past the window; input 1 stays behind it
    c.send(0, 0, &[span(3, 1, 30 * S, "a")]);
    c.send(1, 1, &[span(4, 1, 5 * S, "a")]);
    for _ in 0..3 {
        c.tick(1_000);
    }
    assert!(
        counts(&c).is_empty(),
        "input 1 may still bring spans of the window"
    );
    c.send(1, 1, &[span(5, 1, 9 * S, "a")]);
    c.send(1, 1, &[span(6, 1, 30 * S, "a")]);
    for _ in 0..3 {
        c.tick(1_000);
    }
    let got = counts(&c);
    assert_eq!(got.get(&(0, "a".to_string())), Some(&vec![4]), "{got:?}");
    assert_eq!(got.len(), 1);
}

#[test]
fn the_owner_alerts_once_on_the_merged_series() {
    let stages = format!(
        "{AGGREGATE}  - type: alert
    group_wait: 0s
    rules:
      - name: busy
        for: 0s
        series: {{scope: service, window: 10s}}
        threshold: {{field: count, above: 30}}
"
    );
    let config = pipeline("", &stages);
    let mut c = Cluster::new(&config, 2, true);
    // 20 spans of service a per instance: only the merged window passes 30
    for t in 1..=20u128 {
        let at = t as i64 * 100 * MS;
        c.send(0, 0, &[span(t, 1, at, "a")]);
        c.send(1, 1, &[span(t + 1000, 1, at, "a")]);
    }
    c.send(0, 0, &[span(5000, 1, 30 * S, "b")]);
    c.send(1, 1, &[span(5001, 1, 30 * S, "b")]);
    for _ in 0..4 {
        c.tick(1_000);
    }
    assert_eq!(counts(&c).get(&(0, "a".to_string())), Some(&vec![40]));
    let firing: Vec<&(usize, serde_json::Value)> = c
        .alerts
        .iter()
        .filter(|(_, a)| a["status"] == "firing")
        .collect();
    assert_eq!(firing.len(), 1, "{:?}", c.alerts);
    assert_eq!(firing[0].0, 0, "from the owner");
    assert_eq!(firing[0].1["labels"]["service"], "a");
}

#[test]
fn a_fault_in_windows_that_close_together_still_fires_then_resolves() {
    let stages = format!(
        "{AGGREGATE}  - type: alert
    group_by: [alertname, service]
    group_wait: 5s
    repeat_interval: 1h
    resolve_timeout: 1h
    rules:
      - name: service_errors
        for: 0s
        series: {{scope: service, window: 10s, min_count: 5, match: {{service: a}}}}
        threshold: {{field: error_rate, above: 0.3}}
"
    );
    let mut c = Cluster::new(&pipeline("", &stages), 2, true);
    // errors in the first window, none in the next two; nothing closes until the end,
    // when every window closes in one step (an owner catching up)
    for w in 0..3i64 {
        for t in 1..=10u128 {
            let at = w * 10 * S + t as i64 * 100 * MS;
            let id = t + w as u128 * 100;
            let mut s0 = span(id, 1, at, "a");
            if w == 0 {
                s0.status = crate::model::StatusCode::Error;
            }
            c.send(0, 0, &[s0]);
            c.send(1, 1, &[span(id + 1000, 1, at, "a")]);
        }
    }
    assert!(counts(&c).is_empty() && c.alerts.is_empty());
    c.send(0, 0, &[span(5000, 1, 90 * S, "b")]);
    c.send(1, 1, &[span(5001, 1, 90 * S, "b")]);
    for _ in 0..4 {
        c.tick(1_000);
    }
    let events: Vec<(String, String)> = c
        .alerts
        .iter()
        .map(|(_, a)| (a["status"].to_string(), a["labels"]["service"].to_string()))
        .collect();
    assert_eq!(
        events,
        vec![
            ("\"firing\"".to_string(), "\"a\"".to_string()),
            ("\"resolved\"".to_string(), "\"a\"".to_string())
        ]
    );
}
