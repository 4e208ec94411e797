//! The alert stage's lifecycle in the changelog: a driver restarted from its last
//! checkpoint emits the same alert events as one that never stopped (no firing alert
//! fires again, a pending group batch is still sent, the resolution still comes).

use super::tests::{ack, driver_with, pipeline, produced, root, S};
use super::*;
use crate::model::{AlertStatus, LiveEvent};
use crate::state::Store;

/// The test pipeline with a rule that fires while a 10 s window has more than 2 calls.
fn alerting() -> PipelineConfig {
    let mut config = pipeline(true, "otlp_json");
    let yaml = "
type: alert
group_by: [alertname]
group_wait: 5s
repeat_interval: 1h
resolve_timeout: 1h
rules:
  - name: busy
    for: 0s
    series: {scope: service, window: 10s}
    threshold: {field: count, above: 2}
";
    config
        .stages
        .push(serde_yaml::from_str(yaml).expect("alert stage"));
    config
}

fn with_changelogs(config: &PipelineConfig) -> Driver {
    let changelog = ChangelogSettings {
        group_id: "g".into(),
        exactly_once: false,
    };
    driver_with(config, false, Some(changelog))
}

/// Traces per 10 s window: busy, busy, busy, quiet, quiet (each window is closed by
/// the first trace of a later one).
const WINDOWS: [usize; 6] = [3, 3, 3, 1, 1, 1];

fn notifications(effects: &[Effect]) -> Vec<(AlertStatus, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify(a) => Some((a.status, a.annotations["notification"].clone())),
            _ => None,
        })
        .collect()
}

/// Feeds window `w` of [`WINDOWS`], acknowledges what was written and returns the
/// alert events.
fn feed(d: &mut Driver, w: usize, next_offset: &mut i64) -> Vec<(AlertStatus, String)> {
    for i in 0..WINDOWS[w] {
        let id = (w * 10 + i + 1) as u128;
        let at = w as i64 * 10 * S + i as i64 * S;
        d.push_spans("spans", 0, *next_offset, [root(id, at)], 0);
        *next_offset += 1;
    }
    let effects = d.take_effects();
    let alerts = notifications(&effects);
    ack(d, produced(effects));
    alerts
}

#[test]
fn a_restarted_driver_continues_the_alert_lifecycle_from_its_changelog() {
    let config = alerting();
    let mut control = with_changelogs(&config);
    let mut expected = Vec::new();
    let mut offset = 0;
    for w in 0..WINDOWS.len() {
        expected.extend(feed(&mut control, w, &mut offset));
    }
    let events: Vec<&str> = expected.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(events, ["new", "resolved"], "{expected:?}");

    // the same input with a checkpoint and a restart after window 1 (the alert is
    // firing, its group batch pending), 2 (announced) and 3 (resolving)
    for stop_after in [1, 2, 3] {
        let mut d = with_changelogs(&config);
        let mut got = Vec::new();
        let mut offset = 0;
        for w in 0..=stop_after {
            got.extend(feed(&mut d, w, &mut offset));
        }
        d.handle(Event::Tick { now_ms: 10_000 }).unwrap();
        let effects = d.take_effects();
        got.extend(notifications(&effects));
        let state = produced(effects);
        assert!(
            state
                .iter()
                .any(|p| p.topic.as_ref() == "g-alert-changelog"),
            "the alert lifecycle is checkpointed"
        );
        let mut restarted = with_changelogs(&config);
        for store in Store::ALL {
            let topic = store.topic("g");
            let records = state
                .iter()
                .enumerate()
                .filter(|(_, p)| *p.topic == topic)
                .map(|(i, p)| StateRecord {
                    partition: 0,
                    offset: i as i64,
                    key: p.key.clone(),
                    value: (!p.tombstone).then(|| p.value.clone()),
                })
                .collect();
            restarted.handle(Event::Restore { store, records }).unwrap();
        }
        got.extend(notifications(&restarted.take_effects()));
        for w in stop_after + 1..WINDOWS.len() {
            got.extend(feed(&mut restarted, w, &mut offset));
        }
        assert_eq!(got, expected, "restarted after window {stop_after}");
    }
}

#[test]
fn exactly_once_notifies_only_after_the_transaction_with_the_alert_committed() {
    let config = alerting();
    let changelog = ChangelogSettings {
        group_id: "g".into(),
        exactly_once: true,
    };
    let mut d = driver_with(&config, false, Some(changelog));
    let mut offset = 0;
    let mut early = Vec::new();
    for w in 0..3 {
        early.extend(feed(&mut d, w, &mut offset));
    }
    assert!(
        early.is_empty(),
        "no notification before a commit: {early:?}"
    );
    d.handle(Event::Tick { now_ms: 10_000 }).unwrap();
    let effects = d.take_effects();
    assert!(notifications(&effects).is_empty(), "not while committing");
    let Some(Effect::CommitTransaction(position)) = effects.last() else {
        panic!("a transaction commit: {effects:?}");
    };
    let alert_records = effects
        .iter()
        .filter(|e| matches!(e, Effect::Produce(p) if p.topic.as_ref() == "g-alert-changelog"))
        .count();
    assert!(alert_records > 0, "the alert's state is in the transaction");
    d.handle(Event::Committed(position.clone())).unwrap();
    let after = notifications(&d.take_effects());
    assert_eq!(after, [(AlertStatus::Firing, "new".to_string())]);
}

#[test]
fn live_clients_get_each_closed_window_and_alert_only_when_asked() {
    let config = alerting();
    let live = |d: &mut Driver, offset: &mut i64| {
        let mut events = Vec::new();
        for (w, &n) in WINDOWS.iter().enumerate() {
            for i in 0..n {
                let id = (w * 10 + i + 1) as u128;
                let at = w as i64 * 10 * S + i as i64 * S;
                d.push_spans("spans", 0, *offset, [root(id, at)], 0);
                *offset += 1;
            }
            let effects = d.take_effects();
            events.extend(effects.iter().filter_map(|e| match e {
                Effect::Live(ev) => Some(ev.clone()),
                _ => None,
            }));
            ack(d, produced(effects));
        }
        events
    };
    let mut quiet = driver_with(&config, false, None);
    assert!(live(&mut quiet, &mut 0).is_empty(), "off by default");
    let mut d = driver_with(&config, false, None);
    d.push_live(true);
    let events = live(&mut d, &mut 0);
    let windows = events
        .iter()
        .filter(|e| matches!(e, LiveEvent::Window(w) if w.scope == "service"))
        .count();
    assert!(windows >= 4, "{events:?}");
    let alerts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Alert(a) => Some(a.status),
            _ => None,
        })
        .collect();
    assert_eq!(alerts, [AlertStatus::Firing, AlertStatus::Resolved]);
}

#[test]
fn alert_state_of_an_earlier_format_is_dropped_damaged_state_is_not() {
    use crate::state::alert::{instance_key, meta_key, ALERT_VERSION};
    let config = alerting();
    let mut d = with_changelogs(&config);
    // what a build before incidents wrote: version 1, another layout
    let earlier = |key: Vec<u8>| StateRecord {
        partition: 0,
        offset: 3,
        key,
        value: Some(vec![1, 0, 0, 0]),
    };
    d.handle(Event::Restore {
        store: Store::Alert,
        records: vec![earlier(instance_key(42)), earlier(meta_key())],
    })
    .expect("an earlier format is dropped, not fatal");
    assert_eq!(d.stages().alerts().map(|e| e.instances().count()), Some(0));
    // a record of this version that does not decode is damage: restore fails
    let damaged = StateRecord {
        value: Some(vec![ALERT_VERSION, 200, 200, 200]),
        ..earlier(instance_key(42))
    };
    let err = d
        .handle(Event::Restore {
            store: Store::Alert,
            records: vec![damaged],
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("g-alert-changelog partition 0 offset 3"),
        "{err}"
    );
}
