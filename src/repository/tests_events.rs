//! Aggregate windows and alert events.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::tests::{open, MS, T0};
use super::*;
use crate::model::{Alert, AlertStatus, ServerLatency, WindowAggregate};

const MINUTE: i64 = 60_000 * MS;

fn window(service: &str, start: i64, count: u64) -> WindowAggregate {
    let mut w = WindowAggregate::empty(
        start,
        MINUTE,
        Arc::from("service"),
        vec![(Arc::from("service"), Arc::from(service))],
        100 * MS,
    );
    for i in 0..count {
        let latency = (i as i64 + 1) * MS;
        w.count += 1;
        w.min_ns = w.min_ns.min(latency);
        w.max_ns = w.max_ns.max(latency);
        w.sum_ns += latency;
        w.sketch.add(latency as f64);
    }
    w.error_count = count / 10;
    w.concurrency_profile[3] = 7;
    w.busy_ns = 5 * MS;
    w.refresh_concurrency();
    w
}

fn query(service: &str) -> WindowQuery {
    WindowQuery {
        scope: "service".into(),
        key: vec![("service".into(), service.into())],
        ..Default::default()
    }
}

#[test]
fn windows_round_trip_and_replace_by_series_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open(&dir);
    let mut edge = window("checkout", T0, 5);
    edge.server = Some(ServerLatency {
        min_ns: 1,
        max_ns: 9,
        sum_ns: 20,
        sketch: window("x", T0, 3).sketch,
    });
    let ws = vec![
        edge,
        window("checkout", T0 + MINUTE, 50),
        window("gateway", T0, 10),
    ];
    repo.store_windows(&ws).unwrap();
    let back = repo.windows(&query("checkout")).unwrap();
    assert_eq!(back, ws[..2].to_vec());
    assert_eq!(back[1].quantile(0.5), ws[1].quantile(0.5));
    // stored again, and a newer figure for one window: one row per window, the latest
    let newer = window("checkout", T0 + MINUTE, 60);
    repo.store_windows(&[ws[0].clone(), newer.clone()]).unwrap();
    let back = repo.windows(&query("checkout")).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[1], newer);
    // a time range and a size
    let q = WindowQuery {
        from_ns: Some(T0 + MINUTE),
        ..query("checkout")
    };
    assert_eq!(repo.windows(&q).unwrap(), vec![newer]);
    let q = WindowQuery {
        window_size_ns: Some(2 * MINUTE),
        ..query("checkout")
    };
    assert!(repo.windows(&q).unwrap().is_empty());
}

fn alert(fp: &str, status: AlertStatus, starts_min: i64, service: &str) -> Alert {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), format!("rule-{fp}"));
    labels.insert("service".to_string(), service.to_string());
    Alert {
        fingerprint: fp.into(),
        status,
        rule: format!("rule-{fp}"),
        severity: "warning".into(),
        starts_at_ms: T0 / MS + starts_min * 60_000,
        ends_at_ms: (status == AlertStatus::Resolved).then(|| T0 / MS + (starts_min + 5) * 60_000),
        labels,
        annotations: BTreeMap::new(),
        summary: format!("{service} is slow"),
        suspected_service: Some(format!("{service}-db")),
        suspected_services: vec![],
        score: 0.9,
        value: Some(1.5),
        exemplar_trace_ids: vec!["0123456789abcdef0123456789abcdef".into()],
    }
}

#[test]
fn alerts_are_idempotent_and_active_ones_are_unresolved() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open(&dir);
    let a1 = alert("a", AlertStatus::Firing, 0, "checkout");
    let a1_resolved = alert("a", AlertStatus::Resolved, 0, "checkout");
    let a2 = alert("a", AlertStatus::Firing, 20, "checkout");
    let b1 = alert("b", AlertStatus::Firing, 3, "gateway");
    let c1 = alert("c", AlertStatus::Firing, 4, "search");
    let c1_resolved = alert("c", AlertStatus::Resolved, 4, "search");
    repo.store_alerts(&[a1.clone(), b1.clone(), c1.clone()])
        .unwrap();
    // at least once: the same events again, then the rest
    repo.store_alerts(&[a1.clone(), a1_resolved.clone(), c1_resolved.clone()])
        .unwrap();
    let all = AlertQuery {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(repo.alerts(&all).unwrap().len(), 5);
    let active = repo.active_alerts(&all).unwrap();
    assert_eq!(active, vec![b1.clone()]);
    // a new episode of a fires again; an escalation of it replaces the event
    repo.store_alerts(std::slice::from_ref(&a2)).unwrap();
    let mut escalated = a2.clone();
    escalated.severity = "critical".into();
    repo.store_alerts(&[escalated.clone()]).unwrap();
    assert_eq!(
        repo.active_alerts(&all).unwrap(),
        vec![escalated.clone(), b1.clone()]
    );
    // filters: fingerprint, rule, service (label or suspected), time
    let by_fp = AlertQuery {
        fingerprint: Some("a".into()),
        ..all.clone()
    };
    assert_eq!(
        repo.alerts(&by_fp).unwrap(),
        vec![escalated.clone(), a1_resolved, a1]
    );
    let by_rule = AlertQuery {
        rule: Some("rule-c".into()),
        ..all.clone()
    };
    assert_eq!(repo.alerts(&by_rule).unwrap(), vec![c1_resolved, c1]);
    let by_service = AlertQuery {
        service: Some("gateway-db".into()),
        ..all.clone()
    };
    assert_eq!(repo.alerts(&by_service).unwrap(), vec![b1.clone()]);
    let by_time = AlertQuery {
        from_ms: Some(T0 / MS + 3 * 60_000),
        to_ms: Some(T0 / MS + 4 * 60_000),
        ..all
    };
    assert_eq!(repo.alerts(&by_time).unwrap(), vec![b1]);
}

#[test]
fn retention_by_age_keeps_active_alerts_and_recent_windows() {
    let dir = tempfile::tempdir().unwrap();
    let retention = RetentionSettings {
        max_age_ns: Some(60 * MINUTE),
        max_bytes: None,
    };
    let mut repo = Repository::open(dir.path().join("repo.db"), retention).unwrap();
    repo.store_windows(&[
        window("checkout", T0, 5),
        window("checkout", T0 + 90 * MINUTE, 5),
    ])
    .unwrap();
    let old_firing = alert("a", AlertStatus::Firing, 0, "checkout");
    let old_resolved_firing = alert("b", AlertStatus::Firing, 0, "gateway");
    let old_resolution = alert("b", AlertStatus::Resolved, 0, "gateway");
    repo.store_alerts(&[old_firing.clone(), old_resolved_firing, old_resolution])
        .unwrap();
    let report = repo.enforce_retention(T0 + 120 * MINUTE).unwrap();
    assert_eq!((report.windows, report.alerts), (1, 2));
    assert_eq!(repo.windows(&query("checkout")).unwrap().len(), 1);
    let all = AlertQuery::default();
    assert_eq!(repo.alerts(&all).unwrap(), vec![old_firing.clone()]);
    assert_eq!(repo.active_alerts(&all).unwrap(), vec![old_firing]);
}

fn op_window(service: &str, op: &str, start: i64, count: u64) -> WindowAggregate {
    let mut w = window(service, start, count);
    w.scope = Arc::from("operation");
    w.key = vec![
        (Arc::from("service"), Arc::from(service)),
        (Arc::from("operation"), Arc::from(op)),
    ];
    w
}

#[test]
fn scope_windows_match_dimension_values_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open(&dir);
    repo.store_windows(&[
        op_window("checkout", "pay", T0, 5),
        op_window("checkout", "pay", T0 + MINUTE, 6),
        op_window("checkout", "cart", T0, 7),
        op_window("gateway", "pay", T0, 8),
        window("checkout", T0, 9),
    ])
    .unwrap();
    let q = |matching: &[(&str, &str)], from: Option<i64>| ScopeQuery {
        scope: "operation".into(),
        matching: matching
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        from_ns: from,
        ..Default::default()
    };
    let counts = |ws: Vec<WindowAggregate>| ws.iter().map(|w| w.count).collect::<Vec<_>>();
    // by series (the key's JSON text), then start
    assert_eq!(
        counts(
            repo.scope_windows(&q(&[("service", "checkout")], None))
                .unwrap()
        ),
        [7, 5, 6]
    );
    assert_eq!(
        counts(
            repo.scope_windows(&q(&[("operation", "pay")], None))
                .unwrap()
        ),
        [5, 6, 8]
    );
    assert_eq!(
        counts(
            repo.scope_windows(&q(
                &[("service", "checkout"), ("operation", "pay")],
                Some(T0 + 1)
            ))
            .unwrap()
        ),
        [6]
    );
    assert_eq!(repo.scope_windows(&q(&[], None)).unwrap().len(), 4);
    assert!(repo
        .scope_windows(&q(&[("service", "nobody")], None))
        .unwrap()
        .is_empty());
}
