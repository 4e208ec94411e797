//! `call_pattern` rules: spans missing from the traces of a root operation fire one
//! alert with the change in words, a steady stream never fires, and the alert resolves
//! once the calls come back.

use super::tests::{advance, config, engine, MS, S, T0};
use super::tests_correlate::observe;
use super::*;
use std::sync::Arc;

use crate::config::ConfigErrors;
use crate::model::AlertStatus;
use crate::testkit;

/// gateway `/*` → shop `POST /checkout` → (stock `reserve`, payment `charge` unless
/// `charged` is false: the shop returns early), starting `at_s` seconds after T0.
fn checkout(id: u128, at_s: i64, charged: bool) -> Trace {
    let t = T0 + at_s * S;
    let mut spans = vec![
        testkit::span(id, 1, 0, t, t + 40 * MS, "gateway"),
        testkit::span(id, 2, 1, t + MS, t + 39 * MS, "shop"),
        testkit::span(id, 3, 2, t + 2 * MS, t + 10 * MS, "stock"),
    ];
    if charged {
        spans.push(testkit::span(id, 4, 2, t + 11 * MS, t + 30 * MS, "payment"));
    }
    let names = ["/*", "POST /checkout", "reserve", "charge"];
    for (s, name) in spans.iter_mut().zip(names) {
        s.name = Arc::from(name);
    }
    testkit::completed(id, spans)
}

const CALLS: &str = "
group_wait: 0s
resolve_timeout: 10m
rules:
  - name: calls_changed
    traces: {}
    call_pattern: {z: 4, min_change: 0.3, window: 1m, every: 10s}
";

/// Two traces a second for `secs` seconds from `from_s`, every `skip`-th without the
/// payment call (never when `skip` is 0); returns the alerts of each second's advance.
fn run(e: &mut AlertEngine, from_s: i64, secs: i64, skip: u128) -> Vec<Alert> {
    let mut out = Vec::new();
    for s in from_s..from_s + secs {
        for k in 0..2u128 {
            let id = (s as u128) * 2 + k;
            let charged = skip == 0 || !id.is_multiple_of(skip);
            observe(e, &checkout(id, s, charged));
        }
        out.extend(advance(e, s + 1));
    }
    out
}

#[test]
fn spans_missing_from_a_root_operation_fire_one_alert_with_the_change_in_words() {
    let mut e = engine(CALLS);
    // ten minutes of normal traffic: every checkout charges
    assert!(run(&mut e, 0, 600, 0).is_empty());
    // then the shop stops calling payment in every trace
    let out = run(&mut e, 600, 60, 1);
    let firing: Vec<&Alert> = out
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .collect();
    assert_eq!(firing.len(), 1, "{out:#?}");
    let a = firing[0];
    assert_eq!(a.labels["service"], "gateway");
    assert_eq!(a.labels["operation"], "/* → shop POST /checkout");
    // the first decision after the change already sees a third of the window without
    // payment (the window is a minute, decisions every 10 s)
    assert!(
        a.summary.contains("span charge of payment missing from")
            && a.summary
                .contains("of POST /checkout calls of shop (1.00 per call before"),
        "{}",
        a.summary
    );
    assert!(a.score > 0.8 && a.score <= 1.0, "score {}", a.score);
    assert!(a.value.is_some_and(|z| z >= 4.0));
    // decided every 10 s: the second decision after the change sees enough of it
    assert!(a.starts_at_ms <= (T0 + 621 * S) / MS, "{}", a.starts_at_ms);
    // the ranking blames the shop, whose calls changed
    assert_eq!(a.suspected_service.as_deref(), Some("shop"));
    assert!(a.suspected_services[0].evidence[0].contains("missing from"));
}

#[test]
fn a_steady_mix_of_shapes_never_fires_and_a_fault_resolves_when_calls_return() {
    let mut e = engine(CALLS);
    // every third checkout returns early, always: that is the normal shape mix
    assert!(run(&mut e, 0, 1200, 3).is_empty());
    let out = run(&mut e, 1200, 60, 1);
    assert_eq!(
        out.iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .count(),
        1
    );
    // the mix comes back: the alert resolves and says so
    let out = run(&mut e, 1260, 120, 3);
    let resolved: Vec<&Alert> = out
        .iter()
        .filter(|a| a.status == AlertStatus::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1, "{out:#?}");
    assert!(resolved[0]
        .summary
        .contains("resolved, calls back to their normal rates"));
    assert!(out.iter().all(|a| a.status != AlertStatus::Firing));
}

#[test]
fn call_pattern_rules_watch_traces_only() {
    let yaml = "
rules:
  - name: calls_changed
    series: {scope: service}
    call_pattern: {z: 0, min_change: 1.5, window: 0s}
";
    let config = config(yaml);
    let mut errors = ConfigErrors::default();
    config.validate("stages[0]", &mut errors);
    let text = errors.to_string();
    for expected in [
        "stages[0].rules[0].series: call_pattern rules watch traces",
        "call_pattern.z: must be more than 0",
        "call_pattern.min_change: must be between 0 and 1",
        "call_pattern.window: must be more than 0",
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }
}
