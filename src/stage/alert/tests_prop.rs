//! Per fingerprint, emitted events follow `new (repeat|escalation)* resolved`, whatever
//! the windows, the settings and the order of advances.
//!
//! Repeats and escalations of a still-firing alert are the only firing events that may
//! follow a firing event; they are told apart by the `notification` annotation.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::tests::{engine, series_score, window, S, T0};
use super::tests_correlate::{observe, three_tier};
use super::*;
use crate::model::AlertStatus;

const SERVICES: [&str; 3] = ["gateway", "orders", "db"];

fn yaml(group_wait: u64, repeat: u64, escalate: bool, for_s: u64, inhibit: bool) -> String {
    let escalate = if escalate {
        "escalate_after: 30s\n"
    } else {
        ""
    };
    format!(
        "group_by: [service]
group_wait: {group_wait}s
repeat_interval: {repeat}s
{escalate}inhibit: {inhibit}
resolve_timeout: 40s
rules:
  - name: errors
    for: {for_s}s
    series: {{scope: service}}
    threshold: {{field: error_rate, above: 0.1}}
  - name: latency
    group: errors
    series: {{scope: service}}
    threshold: {{field: latency_p99_ns, above: 200ms}}
  - name: anomalous
    series: {{scope: service}}
    anomaly: {{score: 0.5, windows: 2}}
"
    )
}

/// Per service and step: 0 no window, 1 healthy, 2 failing, 3 slow.
fn step() -> impl Strategy<Value = ([u8; 3], Option<(usize, bool)>, u8)> {
    (
        [0u8..4, 0u8..4, 0u8..4],
        proptest::option::of((0usize..3, any::<bool>())),
        0u8..3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn firing_and_resolved_alternate_per_fingerprint(
        group_wait in prop::sample::select(vec![0u64, 10, 30]),
        repeat in prop::sample::select(vec![20u64, 60]),
        escalate in any::<bool>(),
        for_s in prop::sample::select(vec![0u64, 20]),
        inhibit in any::<bool>(),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let mut e = engine(&yaml(group_wait, repeat, escalate, for_s, inhibit));
        observe(&mut e, &three_tier(1, 0, 300, 240));
        let mut out = Vec::new();
        for (i, (states, score, adv)) in steps.iter().enumerate() {
            let t = 10 * (i as i64 + 1);
            for (svc, state) in SERVICES.iter().zip(states) {
                match state {
                    1 => e.observe_window(&window(svc, t, 10, 100, 0, 50.0)),
                    2 => e.observe_window(&window(svc, t, 10, 100, 40, 50.0)),
                    3 => e.observe_window(&window(svc, t, 10, 100, 0, 900.0)),
                    _ => {}
                }
            }
            if let Some((svc, high)) = score {
                e.observe_score(&series_score(SERVICES[*svc], t, if *high { 0.9 } else { 0.1 }, true));
            }
            // advance sometimes, sometimes a little after the step
            if *adv > 0 {
                e.advance(T0 + t * S + i64::from(*adv - 1) * 5 * S, &mut out);
            }
        }
        e.advance(T0 + 100_000 * S, &mut out);

        // fingerprint → (firing since, escalated)
        let mut open: BTreeMap<String, (i64, bool)> = BTreeMap::new();
        // fingerprint → its episode went out as a symptom of an incident
        let mut grouped: BTreeMap<String, bool> = BTreeMap::new();
        for a in &out {
            let n = a.annotations.get(NOTIFICATION_ANNOTATION).map(String::as_str);
            let state = open.get(&a.fingerprint).copied();
            match (n, a.status, state) {
                (Some("new" | "grouped"), AlertStatus::Firing, None) => {
                    prop_assert!(a.ends_at_ms.is_none());
                    open.insert(a.fingerprint.clone(), (a.starts_at_ms, a.severity == "critical"));
                    grouped.insert(a.fingerprint.clone(), n == Some("grouped"));
                }
                (Some("repeat"), AlertStatus::Firing, Some((since, _))) => {
                    prop_assert_eq!(a.starts_at_ms, since);
                    prop_assert!(grouped.get(&a.fingerprint) != Some(&true), "a symptom repeated");
                }
                (Some("escalation"), AlertStatus::Firing, Some((since, false))) => {
                    prop_assert!(grouped.get(&a.fingerprint) != Some(&true), "a symptom escalated");
                    prop_assert_eq!(a.starts_at_ms, since);
                    prop_assert_eq!(a.severity.as_str(), "critical");
                    open.insert(a.fingerprint.clone(), (since, true));
                }
                (Some("resolved"), AlertStatus::Resolved, Some((since, _))) => {
                    prop_assert_eq!(a.starts_at_ms, since);
                    prop_assert!(a.ends_at_ms.is_some_and(|end| end >= since));
                    open.remove(&a.fingerprint);
                }
                _ => prop_assert!(false, "{:?} {:?} after {:?} for {}", n, a.status, state, a.fingerprint),
            }
            prop_assert!(a.exemplar_trace_ids.len() <= MAX_EXEMPLARS);
        }
        prop_assert!(open.is_empty(), "still open at the end: {:?}", open);
        let st = e.stats();
        prop_assert_eq!(st.firing, 0);
        prop_assert_eq!(st.emitted_new + st.emitted_grouped, st.emitted_resolved);
        prop_assert!(st.emitted_new <= st.fired);
    }
}
