//! Anomaly scores of aggregate series reach `/metrics` beside their window's figures.

use super::tests::{json_outputs, pipeline, S};
use super::*;
use crate::config::load_str;
use crate::telemetry::spanmetrics::WINDOW_ANOMALY;
use crate::testkit;

const T0: i64 = 1_700_000_000 * S;

/// The driver test pipeline with an analyze, aggregate and detect stage, and span
/// metrics on.
fn scoring_driver() -> Driver {
    let base = pipeline(true, "otlp_json");
    let yaml = serde_yaml::to_string(&base).expect("yaml");
    let yaml = yaml.replacen(
        "- type: aggregate",
        "- type: analyze\n- type: detect\n  min_samples: 10\n  baseline_windows: 10\n  traces: false\n- type: aggregate",
        1,
    );
    let config = load_str(&yaml, |_| None).expect("valid pipeline");
    let outputs = json_outputs(&config);
    let settings = DriverSettings {
        commit_interval_ms: 1000,
        schema_registry: false,
        span_metrics: true,
        repartition: None,
        merge: None,
        changelog: None,
    };
    let mut d = Driver::new(&config, Driver::sources_of(&config), outputs, settings);
    d.handle(Event::Assigned {
        partitions: vec![("spans".into(), 0)],
        now_ms: 0,
    })
    .unwrap();
    d
}

#[test]
fn a_series_anomaly_score_is_published_with_its_window_labels() {
    let mut d = scoring_driver();
    let service = "scored-checkout";
    let labels = ["10s", "service", "service=scored-checkout"];
    let mut offset = 0;
    // 40 windows of 10 s, one 20 ms call a second; then one window of 2 s calls
    for second in 0..410i64 {
        let slow = second >= 400;
        let duration = if slow { 2 * S } else { 20_000_000 };
        let start = T0 + second * S;
        let span = testkit::span(
            0xabc0 + second as u128,
            1,
            0,
            start,
            start + duration,
            service,
        );
        d.push_spans("spans", 0, offset, [span], second * 1000);
        offset += 1;
        d.handle(Event::Tick {
            now_ms: second * 1000,
        })
        .unwrap();
        d.take_effects();
    }
    // the last slow window closes once the watermark passes it
    let late = T0 + 430 * S;
    d.push_spans(
        "spans",
        0,
        offset,
        [testkit::span(0xffff, 1, 0, late, late + 1, service)],
        430_000,
    );
    d.handle(Event::Tick { now_ms: 430_000 }).unwrap();
    let score = WINDOW_ANOMALY
        .get_metric_with_label_values(&labels)
        .expect("a score for the series")
        .get();
    assert!(
        score > 0.5,
        "a window of calls 100 times slower scores high: {score}"
    );
    assert!(score <= 1.0);
}
