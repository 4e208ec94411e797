//! Incidents: one per fault, led by the alert on its cause, symptoms grouped under it.

use super::tests::{advance, engine, note, window};
use super::tests_correlate::{observe, three_tier};
use super::*;
use crate::model::{AlertStatus, INCIDENT_ANNOTATION, INCIDENT_CAUSE_ANNOTATION};

/// Two rules (two rule groups) on every service's latency, and one on errors.
const RULES: &str = "
group_wait: 0s
repeat_interval: 1m
incident_linger: 2m
rules:
  - name: slow_service
    series: {scope: service}
    threshold: {field: latency_p99_ns, above: 200ms}
  - name: slow_gateway
    series: {scope: service, match: {service: gateway}}
    threshold: {field: latency_p99_ns, above: 200ms}
  - name: failing_service
    series: {scope: service}
    threshold: {field: error_rate, above: 0.1}
";

/// (notification, rule, service, incident cause) of each event, sorted.
fn summary(out: &[Alert]) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = out
        .iter()
        .map(|a| {
            (
                note(a).to_owned(),
                a.rule.clone(),
                a.labels["service"].clone(),
                a.annotations
                    .get(INCIDENT_CAUSE_ANNOTATION)
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

fn row(n: &str, rule: &str, service: &str, cause: &str) -> (String, String, String, String) {
    (n.into(), rule.into(), service.into(), cause.into())
}

fn incident(a: &Alert) -> &str {
    a.annotations[INCIDENT_ANNOTATION].as_str()
}

/// db slow (gateway → orders → db): every service's latency alerts fire at `t`.
fn db_fault(e: &mut AlertEngine, t: i64) {
    for (svc, ms) in [("gateway", 900.0), ("orders", 850.0), ("db", 800.0)] {
        e.observe_window(&window(svc, t, 10, 100, 0, ms));
    }
}

/// The db fault goes on, and orders now also fails half of its calls.
fn symptom_on_orders(e: &mut AlertEngine, t: i64) {
    e.observe_window(&window("gateway", t, 10, 100, 0, 900.0));
    e.observe_window(&window("orders", t, 10, 100, 50, 850.0));
    e.observe_window(&window("db", t, 10, 100, 0, 800.0));
}

fn healthy(e: &mut AlertEngine, t: i64, services: &[&str]) {
    for svc in services {
        e.observe_window(&window(svc, t, 10, 100, 0, 50.0));
    }
}

#[test]
fn one_fault_on_many_services_and_rules_is_one_incident_led_by_its_cause() {
    let mut e = engine(RULES);
    observe(&mut e, &three_tier(1, 0, 300, 240));
    db_fault(&mut e, 10);
    let out = advance(&mut e, 10);
    assert_eq!(
        summary(&out),
        [
            row("grouped", "slow_gateway", "gateway", "db"),
            row("grouped", "slow_service", "gateway", "db"),
            row("grouped", "slow_service", "orders", "db"),
            row("new", "slow_service", "db", "db"),
        ],
        "the inhibited callers are in the incident, not lost"
    );
    let id = incident(&out[0]);
    assert_eq!(id.len(), 16);
    assert!(out.iter().all(|a| incident(a) == id), "one incident");
    assert_eq!((e.stats().incidents, e.stats().emitted_new), (1, 1));
    assert_eq!(e.stats().emitted_grouped, 3);
    assert_eq!(e.incidents().len(), 1);
    assert_eq!(e.incidents()[0].members.len(), 4);

    // an error alert on orders a little later, explained by nothing else: orders
    // calls db, so it is a symptom of the same incident
    symptom_on_orders(&mut e, 20);
    let out = advance(&mut e, 20);
    assert_eq!(
        summary(&out),
        [row("grouped", "failing_service", "orders", "db")]
    );
    assert_eq!(incident(&out[0]), id);
}

#[test]
fn only_the_lead_repeats_and_every_member_resolves_in_the_incident() {
    let mut e = engine(RULES);
    observe(&mut e, &three_tier(1, 0, 300, 240));
    db_fault(&mut e, 10);
    let first = advance(&mut e, 10);
    let id = incident(&first[0]).to_owned();
    for t in [20, 30, 40, 50, 60, 70] {
        db_fault(&mut e, t);
    }
    let out = advance(&mut e, 70);
    assert_eq!(
        summary(&out),
        [row("repeat", "slow_service", "db", "db")],
        "symptoms do not repeat"
    );
    db_fault(&mut e, 80);
    healthy(&mut e, 90, &["gateway", "orders", "db"]);
    let out = advance(&mut e, 90);
    assert_eq!(out.len(), 4, "{:?}", summary(&out));
    assert!(out
        .iter()
        .all(|a| a.status == AlertStatus::Resolved && incident(a) == id));
}

#[test]
fn a_fault_firing_again_within_the_linger_rejoins_its_incident_later_pages_again() {
    let mut e = engine(RULES);
    observe(&mut e, &three_tier(1, 0, 300, 240));
    db_fault(&mut e, 10);
    let id = incident(&advance(&mut e, 10)[0]).to_owned();
    healthy(&mut e, 20, &["gateway", "orders", "db"]);
    assert_eq!(advance(&mut e, 20).len(), 4, "all resolved");

    // flaps back 90 s later: the same incident, no one paged again
    observe(&mut e, &three_tier(2, 100, 300, 240));
    db_fault(&mut e, 110);
    let out = advance(&mut e, 110);
    assert_eq!(out.len(), 4);
    assert!(out
        .iter()
        .all(|a| note(a) == "grouped" && incident(a) == id));
    healthy(&mut e, 120, &["gateway", "orders", "db"]);
    advance(&mut e, 120);

    // back again after the linger: a new incident, paged once
    observe(&mut e, &three_tier(3, 300, 300, 240));
    db_fault(&mut e, 310);
    let out = advance(&mut e, 310);
    assert_eq!(out.iter().filter(|a| note(a) == "new").count(), 1);
    let again = incident(&out[0]);
    assert_ne!(again, id);
    assert!(out.iter().all(|a| incident(a) == again));
    assert_eq!(e.stats().incidents, 2);
}

#[test]
fn an_unrelated_fault_is_an_incident_of_its_own() {
    let mut e = engine(RULES);
    observe(&mut e, &three_tier(1, 0, 300, 240));
    db_fault(&mut e, 10);
    advance(&mut e, 10);
    // billing is not on the path to db and blames itself
    e.observe_window(&window("billing", 20, 10, 100, 50, 20.0));
    let out = advance(&mut e, 20);
    assert_eq!(
        summary(&out),
        [row("new", "failing_service", "billing", "billing")]
    );
    assert_eq!(e.stats().incidents, 2);
}

#[test]
fn incidents_survive_a_restart_through_the_lifecycle_state() {
    let mut e = engine(RULES);
    observe(&mut e, &three_tier(1, 0, 300, 240));
    db_fault(&mut e, 10);
    let id = incident(&advance(&mut e, 10)[0]).to_owned();

    let mut restarted = engine(RULES);
    observe(&mut restarted, &three_tier(2, 12, 300, 240));
    for (_, inst) in e.instances() {
        restarted.restore_instance(inst.clone());
    }
    restarted.restore_meta(e.lifecycle_meta());
    assert_eq!(restarted.incidents(), e.incidents());
    // a new symptom after the restart joins the incident opened before it
    symptom_on_orders(&mut restarted, 20);
    let out = advance(&mut restarted, 20);
    assert_eq!(
        summary(&out),
        [row("grouped", "failing_service", "orders", "db")]
    );
    assert_eq!(incident(&out[0]), id);
}

#[test]
fn a_gap_in_the_input_does_not_keep_an_incident_live() {
    let mut e = engine(&format!("resolve_timeout: 1m\n{RULES}"));
    observe(&mut e, &three_tier(1, 0, 300, 240));
    db_fault(&mut e, 10);
    let first = incident(&advance(&mut e, 10)[0]).to_owned();
    // nothing from these services for minutes (input that jumps in event time): their
    // alerts resolve for want of data, counted from their last window at 10 s
    healthy(&mut e, 400, &["billing"]);
    let out = advance(&mut e, 400);
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|a| a.status == AlertStatus::Resolved));
    // a fault 20 s after the input resumes is a new incident, not a flap of the old one
    observe(&mut e, &three_tier(2, 410, 300, 240));
    db_fault(&mut e, 420);
    let out = advance(&mut e, 420);
    assert_eq!(out.iter().filter(|a| note(a) == "new").count(), 1);
    assert_ne!(incident(&out[0]), first);
}
