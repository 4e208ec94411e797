//! Grouping, repeats, escalation, staleness, inhibition and bounds.

use super::tests::{advance, engine, ev, events, note, window, MS, S, T0};
use super::tests_correlate::{observe, three_tier};
use super::*;
use crate::model::AlertStatus;

fn error_rule(top: &str) -> String {
    format!(
        "{top}
rules:
  - name: high_error_rate
    series: {{scope: service}}
    threshold: {{field: error_rate, above: 0.1}}
"
    )
}

fn bad(e: &mut AlertEngine, service: &str, t: i64) {
    e.observe_window(&window(service, t, 10, 100, 50, 20.0));
}

fn good(e: &mut AlertEngine, service: &str, t: i64) {
    e.observe_window(&window(service, t, 10, 100, 0, 20.0));
}

#[test]
fn group_wait_batches_alerts_that_start_together() {
    let mut e = engine(&error_rule("group_by: [alertname]\ngroup_wait: 30s"));
    bad(&mut e, "gateway", 10);
    assert!(advance(&mut e, 10).is_empty());
    assert!(advance(&mut e, 20).is_empty());
    bad(&mut e, "orders", 30);
    assert!(advance(&mut e, 35).is_empty());
    let mut batch = events(&advance(&mut e, 40));
    batch.sort();
    assert_eq!(batch, ev(&[("new", "gateway"), ("new", "orders")]));
    // a later alert opens a new batch, due group_wait after it started
    bad(&mut e, "payments", 50);
    assert!(advance(&mut e, 79).is_empty());
    assert_eq!(events(&advance(&mut e, 80)), ev(&[("new", "payments")]));
}

#[test]
fn groups_wait_independently() {
    let mut e = engine(&error_rule("group_by: [service]\ngroup_wait: 30s"));
    bad(&mut e, "gateway", 10);
    bad(&mut e, "orders", 30);
    assert_eq!(events(&advance(&mut e, 40)), ev(&[("new", "gateway")]));
    assert_eq!(events(&advance(&mut e, 60)), ev(&[("new", "orders")]));
}

#[test]
fn an_alert_resolved_within_group_wait_is_never_emitted() {
    let mut e = engine(&error_rule("group_wait: 30s"));
    bad(&mut e, "gateway", 10);
    good(&mut e, "gateway", 20);
    assert!(advance(&mut e, 60).is_empty());
    assert_eq!(e.stats().fired, 1);
    assert_eq!(e.stats().resolved_unemitted, 1);
}

#[test]
fn repeat_interval_re_emits_a_firing_alert() {
    let mut e = engine(&error_rule("group_wait: 0s\nrepeat_interval: 1m"));
    let mut all = Vec::new();
    for t in (10..=140).step_by(10) {
        bad(&mut e, "gateway", t);
        for a in advance(&mut e, t) {
            all.push((t, note(&a).to_string(), a.starts_at_ms));
        }
    }
    good(&mut e, "gateway", 150);
    for a in advance(&mut e, 150) {
        all.push((150, note(&a).to_string(), a.starts_at_ms));
    }
    let start = (T0 + 10 * S) / MS;
    let want: Vec<(i64, String, i64)> = [
        (10, "new"),
        (70, "repeat"),
        (130, "repeat"),
        (150, "resolved"),
    ]
    .into_iter()
    .map(|(t, n)| (t, n.to_string(), start))
    .collect();
    assert_eq!(all, want);
    assert_eq!(e.stats().emitted_repeat, 2);
}

#[test]
fn escalation_raises_severity_once_and_keeps_the_fingerprint() {
    let mut e = engine(&error_rule(
        "group_wait: 0s\nrepeat_interval: 1h\nescalate_after: 2m",
    ));
    let mut all = Vec::new();
    for t in (10..=300).step_by(10) {
        bad(&mut e, "gateway", t);
        all.extend(advance(&mut e, t).into_iter().map(|a| (t, a)));
    }
    let got: Vec<(i64, &str, &str)> = all
        .iter()
        .map(|(t, a)| (*t, note(a), a.severity.as_str()))
        .collect();
    assert_eq!(
        got,
        [(10, "new", "warning"), (130, "escalation", "critical")]
    );
    assert_eq!(all[0].1.fingerprint, all[1].1.fingerprint);
    assert!(!all[1].1.labels.contains_key("severity"));
    assert_eq!(all[0].1.annotations.get("escalated_from"), None);
    assert_eq!(all[1].1.annotations["escalated_from"], "warning");
    good(&mut e, "gateway", 310);
    let r = advance(&mut e, 310);
    assert_eq!(
        (r[0].status, r[0].severity.as_str()),
        (AlertStatus::Resolved, "critical")
    );
}

#[test]
fn an_alert_first_emitted_after_escalate_after_is_new_and_escalated() {
    let mut e = engine(&error_rule("group_wait: 3m\nescalate_after: 2m"));
    for t in (10..=200).step_by(10) {
        bad(&mut e, "gateway", t);
    }
    let out = advance(&mut e, 200);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (note(&out[0]), out[0].severity.as_str()),
        ("new", "critical")
    );
    assert!(advance(&mut e, 400).is_empty());
    assert_eq!(e.stats().emitted_escalation, 0);
}

#[test]
fn a_quiet_series_resolves_after_resolve_timeout() {
    let mut e = engine(&error_rule("group_wait: 0s\nresolve_timeout: 1m"));
    bad(&mut e, "gateway", 10);
    assert_eq!(advance(&mut e, 10).len(), 1);
    assert!(advance(&mut e, 69).is_empty());
    let out = advance(&mut e, 70);
    assert_eq!(events(&out), ev(&[("resolved", "gateway")]));
    assert_eq!(out[0].ends_at_ms, Some((T0 + 70 * S) / MS));
    assert_eq!(e.stats().resolved_stale, 1);
}

#[test]
fn quiet_series_are_forgotten_and_series_are_capped() {
    let mut e = engine(&error_rule(
        "group_wait: 0s\nseries_expiry: 1m\nmax_series_per_rule: 2",
    ));
    good(&mut e, "a", 10);
    good(&mut e, "b", 10);
    bad(&mut e, "c", 10);
    assert!(advance(&mut e, 10).is_empty(), "c is over the cap");
    assert_eq!(e.stats().series_dropped, 1);
    assert_eq!(e.stats().series, 2);
    advance(&mut e, 80);
    assert_eq!((e.stats().series, e.stats().series_expired), (0, 2));
    bad(&mut e, "c", 90);
    assert_eq!(events(&advance(&mut e, 90)), ev(&[("new", "c")]));
}

fn latency_rules(top: &str, second_rule: bool) -> String {
    let mut y = format!(
        "{top}
group_wait: 0s
rules:
  - name: slow_service
    series: {{scope: service}}
    threshold: {{field: latency_p99_ns, above: 200ms}}
"
    );
    if second_rule {
        y.push_str(
            "  - name: slow_gateway
    series: {scope: service, match: {service: gateway}}
    threshold: {field: latency_p99_ns, above: 200ms}
",
        );
    }
    y
}

#[test]
fn inhibition_holds_back_callers_of_the_root_cause_service() {
    let mut e = engine(&latency_rules("", true));
    // gateway → orders → db, with db's own time making the trace slow
    observe(&mut e, &three_tier(1, 0, 300, 240));
    for (svc, ms) in [("gateway", 900.0), ("orders", 850.0), ("db", 800.0)] {
        e.observe_window(&window(svc, 10, 10, 100, 0, ms));
    }
    let out = advance(&mut e, 10);
    let mut got: Vec<(&str, &str, &str, Option<&str>)> = out
        .iter()
        .map(|a| {
            (
                note(a),
                a.rule.as_str(),
                a.labels["service"].as_str(),
                a.suspected_service.as_deref(),
            )
        })
        .collect();
    got.sort();
    // the callers held back go out as symptoms of db's incident; slow_gateway is
    // another rule group (not inhibited) but blames db too
    assert_eq!(
        got,
        [
            ("grouped", "slow_gateway", "gateway", Some("db")),
            ("grouped", "slow_service", "gateway", Some("db")),
            ("grouped", "slow_service", "orders", Some("db")),
            ("new", "slow_service", "db", Some("db")),
        ]
    );
    assert_eq!(e.stats().inhibited, 2, "gateway and orders of slow_service");
    assert!(advance(&mut e, 15).is_empty());
    assert_eq!(e.stats().inhibited, 2, "counted once per episode");

    // db recovers while its callers are still slow: db's alert resolves, theirs stay
    // in the incident without notifying again
    e.observe_window(&window("db", 20, 10, 100, 0, 50.0));
    for svc in ["gateway", "orders"] {
        e.observe_window(&window(svc, 20, 10, 100, 0, 900.0));
    }
    let out = advance(&mut e, 20);
    let got: Vec<(&str, &str, &str)> = out
        .iter()
        .map(|a| (note(a), a.rule.as_str(), a.labels["service"].as_str()))
        .collect();
    assert_eq!(got, [("resolved", "slow_service", "db")]);
    assert_eq!(e.stats().inhibited, 2, "gateway's episode goes on");
}

#[test]
fn a_held_alert_whose_holder_is_not_out_yet_waits() {
    let rules = latency_rules("group_by: [service]", false);
    let mut e = engine(&rules.replace("group_wait: 0s", "group_wait: 30s"));
    observe(&mut e, &three_tier(1, 0, 300, 240));
    for (svc, ms) in [("gateway", 900.0), ("orders", 850.0)] {
        e.observe_window(&window(svc, 10, 10, 100, 0, ms));
    }
    // db fires later: its batch is due after the callers'
    e.observe_window(&window("db", 20, 10, 100, 0, 800.0));
    for svc in ["gateway", "orders"] {
        e.observe_window(&window(svc, 20, 10, 100, 0, 900.0));
    }
    assert!(
        advance(&mut e, 40).is_empty(),
        "held behind db, which is not out"
    );
    let mut got = events(&advance(&mut e, 50));
    got.sort();
    assert_eq!(
        got,
        ev(&[("grouped", "gateway"), ("grouped", "orders"), ("new", "db")])
    );
}

#[test]
fn without_inhibition_every_alert_goes_out() {
    let mut e = engine(&latency_rules("inhibit: false", false));
    observe(&mut e, &three_tier(1, 0, 300, 240));
    for (svc, ms) in [("gateway", 900.0), ("orders", 850.0), ("db", 800.0)] {
        e.observe_window(&window(svc, 10, 10, 100, 0, ms));
    }
    assert_eq!(advance(&mut e, 10).len(), 3);
    assert_eq!(e.stats().inhibited, 0);
}

#[test]
fn a_downstream_alert_explained_elsewhere_does_not_inhibit() {
    let mut e = engine(&latency_rules("", false));
    // orders' own time dominates: db is slow-ish but the suspect of both is orders
    observe(&mut e, &three_tier(1, 0, 300, 20));
    for (svc, ms) in [("orders", 850.0), ("db", 800.0)] {
        e.observe_window(&window(svc, 10, 10, 100, 0, ms));
    }
    let out = advance(&mut e, 10);
    let mut got: Vec<(&str, Option<&str>)> = out
        .iter()
        .map(|a| (a.labels["service"].as_str(), a.suspected_service.as_deref()))
        .collect();
    got.sort();
    assert_eq!(got, [("db", Some("db")), ("orders", Some("orders"))]);
}

#[test]
fn out_of_order_windows_are_ignored() {
    let mut e = engine(&error_rule("group_wait: 0s"));
    e.observe_window(&window("gateway", 20, 10, 100, 0, 50.0));
    e.observe_window(&window("gateway", 10, 10, 100, 90, 50.0));
    assert!(advance(&mut e, 20).is_empty());
    assert_eq!(e.stats().out_of_order, 1);
}
