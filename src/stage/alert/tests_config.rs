//! The stage's configuration: the documented example, unknown keys, bad values.

use super::tests::config;
use super::*;
use crate::config::{AggregateConfig, ConfigErrors};

/// The example of the stage's documentation: every rule kind and every setting.
pub(super) const EXAMPLE: &str = r#"
group_by: [alertname, service]
group_wait: 30s
repeat_interval: 4h
escalate_after: 15m
severities: [info, warning, critical]
inhibit: true
resolve_timeout: 5m
series_expiry: 1h
max_series_per_rule: 10000
correlation:
  window: 5m
  max_traces: 10000
  evidence_score: 0.8
  baseline_samples: 256
  service_graph_ttl: 1h
rules:
  - name: high_error_rate
    severity: critical
    labels: {team: "{{service}}-oncall"}
    annotations:
      summary: "{{service}} fails {{value}} of its calls"
      runbook: https://runbooks.example/errors
    for: 1m
    series: {scope: service, window: 10s, min_count: 20}
    threshold: {field: error_rate, above: 0.05}
  - name: slow_llm_calls
    series: {scope: operation, match: {service: "llm-*"}, window: 1m}
    threshold: {field: latency_p99_ns, above: 8s}
  - name: latency_vs_baseline
    group: latency
    series: {scope: service, window: 1m}
    dynamic: {field: latency_p95_ns, k: 4, samples: 60, min_samples: 10, direction: above, min_delta: 50ms}
  - name: anomalous_service
    series: {scope: service, window: 1m}
    anomaly: {score: 0.9, windows: 3, feature: "latency_*"}
  - name: anomalous_checkouts
    traces: {root_service: api-gateway, root_operation: "POST /checkout"}
    anomaly: {score: 0.95, windows: 2}
  - name: p99_heading_to_slo
    severity: info
    series: {scope: service, window: 1m}
    trend: {field: latency_p99_ns, above: 2s, windows: 10, horizon: 30m}
  - name: error_budget_fast_burn
    severity: critical
    series: {scope: service, window: 1m}
    slo_burn: {objective: 0.999, long: 1h, short: 5m, factor: 14.4}
"#;

fn errs(yaml: &str) -> Vec<(String, String, String)> {
    let mut errors = ConfigErrors::default();
    config(yaml).validate("stages[4]", &mut errors);
    errors
        .0
        .into_iter()
        .map(|e| (e.path, e.message, e.hint))
        .collect()
}

#[track_caller]
fn has(errors: &[(String, String, String)], path: &str, needle: &str) {
    assert!(
        errors
            .iter()
            .any(|(p, m, h)| p == path && (m.contains(needle) || h.contains(needle))),
        "no error at {path} mentioning {needle:?} in {errors:#?}"
    );
}

#[test]
fn the_example_is_valid_and_converts() {
    assert_eq!(errs(EXAMPLE), []);
    let c = config(EXAMPLE);
    let s = c.settings();
    assert_eq!(s.rules.len(), 7);
    assert_eq!(s.escalate_after_ns, Some(900 * 1_000_000_000));
    assert_eq!(
        s.rules[1].condition,
        Condition::Threshold {
            field: Field::LatencyP99,
            above: Some(8e9),
            below: None
        }
    );
    assert_eq!(s.rules[2].group, "latency");
    assert_eq!(s.rules[0].group, "high_error_rate");
    match &s.rules[2].condition {
        Condition::Dynamic { min_delta, .. } => assert_eq!(*min_delta, 5e7),
        c => panic!("{c:?}"),
    }
    assert!(matches!(s.rules[4].select, Select::Traces { .. }));
    // the serialized form reads back the same
    let text = serde_yaml::to_string(&c).unwrap();
    assert_eq!(config(&text), c);
}

#[test]
fn defaults_fill_in_everything_but_the_rules() {
    let c = config(
        "rules: [{name: r, series: {scope: service}, threshold: {field: count, above: 10}}]",
    );
    assert_eq!(
        errs("rules: [{name: r, series: {scope: service}, threshold: {field: count, above: 10}}]"),
        []
    );
    assert_eq!(c.group_by, ["alertname"]);
    assert_eq!(c.severities, ["info", "warning", "critical"]);
    assert_eq!(c.rules[0].severity, "warning");
    assert!(c.inhibit && c.escalate_after.is_none());
}

#[test]
fn unknown_keys_are_errors_with_their_paths() {
    for (yaml, path, key) in [
        ("group_wiat: 1s\nrules: []", "group_wiat", "group_wiat"),
        (
            "rules: [{name: r, kind: threshold}]",
            "rules[0].kind",
            "kind",
        ),
        (
            "rules: [{name: r, series: {scope: s}, threshold: {field: count, abve: 1}}]",
            "rules[0].threshold.abve",
            "abve",
        ),
        (
            "rules: [{name: r, series: {scope: s, windows: 1m}}]",
            "rules[0].series.windows",
            "windows",
        ),
        (
            "correlation: {windw: 1m}\nrules: []",
            "correlation.windw",
            "windw",
        ),
    ] {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let err = serde_path_to_error::deserialize::<_, AlertConfig>(value).unwrap_err();
        assert_eq!(err.path().to_string(), path, "{yaml}");
        assert!(
            err.inner()
                .to_string()
                .starts_with(&format!("unknown field `{key}`")),
            "{err}"
        );
    }
    let value: serde_yaml::Value = serde_yaml::from_str("rules: [{name: r, for: soon}]").unwrap();
    let err = serde_path_to_error::deserialize::<_, AlertConfig>(value).unwrap_err();
    assert_eq!(err.path().to_string(), "rules[0].for");
    assert!(
        err.inner().to_string().contains("invalid duration"),
        "{err}"
    );
}

#[test]
fn validate_reports_bad_values_with_paths_and_hints() {
    let e = errs(
        r#"
group_by: [team-name]
repeat_interval: 0s
severities: [page]
escalate_after: 10m
correlation: {evidence_score: 2}
rules:
  - name: a
    series: {scope: service}
    threshold: {field: latency_p98_ns, above: 1s}
  - name: a
    severity: urgent
    series: {scope: service}
    threshold: {field: error_rate, above: 1.5, below: 2}
  - name: c
    series: {scope: service}
  - name: d
    series: {scope: service}
    threshold: {field: count, above: 5}
    dynamic: {field: count}
  - name: e
    traces: {}
    threshold: {field: error_rate, above: 750ms}
  - name: f
    labels: {alertname: x, shard: "{{value}}", bad-name: x}
    annotations: {notification: x, escalated_from: y, summary: "{{service"}
    series: {scope: service}
    threshold: {field: count, above: -1}
  - name: g
    series: {scope: service, window: 10m}
    slo_burn: {objective: 1.0, long: 5m, short: 5m}
  - name: h
    series: {scope: service}
    slo_burn: {objective: 0.9, factor: 20}
  - name: i
    series: {scope: service}
    dynamic: {field: count, k: 0, min_samples: 2, samples: 1}
  - name: j
    series: {scope: service}
    anomaly: {score: 1.2, windows: 0}
  - name: k
    series: {scope: service}
    trend: {field: count, above: 10, below: 1, windows: 2, horizon: 0s}
  - name: l
    series: {scope: service}
    threshold: {field: count, above: 5, below: 10}
"#,
    );
    let r = |i: usize, rest: &str| format!("stages[4].rules[{i}]{rest}");
    has(&e, "stages[4].group_by[0]", "not a label name");
    has(&e, "stages[4].repeat_interval", "more than 0");
    has(&e, "stages[4].escalate_after", "two severities");
    has(
        &e,
        "stages[4].correlation.evidence_score",
        "between 0 and 1",
    );
    has(
        &e,
        &r(0, ".threshold.field"),
        "did you mean `latency_p99_ns`?",
    );
    has(&e, &r(0, ".severity"), "not one of severities");
    has(&e, &r(1, ".name"), "used twice");
    has(&e, &r(1, ".severity"), "`urgent`");
    has(&e, &r(1, ".threshold.above"), "between 0 and 1");
    has(&e, &r(1, ".threshold.below"), "between 0 and 1");
    has(&e, &r(2, ""), "needs a condition");
    has(&e, &r(3, ""), "has 2 conditions");
    has(&e, &r(4, ".traces"), "only anomaly and call_pattern rules");
    has(&e, &r(4, ".threshold.above"), "`750ms` is not a number");
    has(&e, &r(5, ".labels.alertname"), "set by the alert stage");
    has(&e, &r(5, ".labels.shard"), "fingerprint");
    has(&e, &r(5, ".labels.bad-name"), "not a label name");
    has(
        &e,
        &r(5, ".annotations.notification"),
        "set by the alert stage",
    );
    has(
        &e,
        &r(5, ".annotations.escalated_from"),
        "set by the alert stage",
    );
    has(&e, &r(5, ".annotations.summary"), "without a closing");
    has(&e, &r(5, ".threshold.above"), "never negative");
    has(&e, &r(6, ".slo_burn.objective"), "between 0 and 1");
    has(&e, &r(6, ".slo_burn.short"), "less than long");
    has(&e, &r(6, ".slo_burn.short"), "series window");
    has(&e, &r(7, ".slo_burn.factor"), "can never fire");
    has(&e, &r(8, ".dynamic.k"), "more than 0");
    has(&e, &r(8, ".dynamic.min_samples"), "at least 3");
    has(&e, &r(8, ".dynamic.samples"), "at least min_samples");
    has(&e, &r(9, ".anomaly.score"), "between 0 and 1");
    has(&e, &r(9, ".anomaly.windows"), "at least 1");
    has(&e, &r(10, ".trend"), "exactly one of");
    has(&e, &r(10, ".trend.windows"), "at least 3");
    has(&e, &r(10, ".trend.horizon"), "more than 0");
    has(&e, &r(11, ".threshold.below"), "less than above");
    assert!(
        !e.iter()
            .any(|(p, _, _)| p.starts_with(&r(7, ".slo_burn.short"))),
        "defaults 1h/5m are fine"
    );
}

#[test]
fn selectors_are_checked_against_the_aggregate_stage() {
    let aggregate: AggregateConfig = serde_yaml::from_str("{}").unwrap();
    let c = config(
        r#"
rules:
  - name: a
    series: {scope: services}
    threshold: {field: count, above: 1}
  - name: b
    series: {scope: operation, match: {svc: x, operation: "GET *"}, window: 30s}
    threshold: {field: count, above: 1}
  - name: c
    series: {scope: service_graph, match: {server: db}, window: 1m}
    threshold: {field: error_rate, above: 0.1}
"#,
    );
    let mut errors = ConfigErrors::default();
    c.validate_with_aggregate("stages[3]", &aggregate, &mut errors);
    let e: Vec<(String, String, String)> = errors
        .0
        .into_iter()
        .map(|e| (e.path, e.message, e.hint))
        .collect();
    has(
        &e,
        "stages[3].rules[0].series.scope",
        "did you mean `service`?",
    );
    has(
        &e,
        "stages[3].rules[1].series.match.svc",
        "not a dimension of scope `operation`",
    );
    has(&e, "stages[3].rules[1].series.window", "one of: 10s, 1m");
    assert_eq!(e.len(), 3, "{e:#?}");
}
