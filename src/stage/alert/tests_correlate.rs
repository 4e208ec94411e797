//! Suspected services and exemplars from traces: self-time growth, error origins,
//! downstream only, anomalous traces as evidence.

use super::tests::{advance, engine, trace_score, window, MS, S, T0};
use super::*;
use crate::model::{hex_trace_id, StatusCode};
use crate::stage::analyze::{analyze, AnalyzeSettings};
use crate::testkit;

/// A trace of nested calls, each span the parent of the next: (service, start, end) in
/// milliseconds after `start_s` seconds past T0.
pub(super) fn chain(id: u128, start_s: i64, calls: &[(&str, i64, i64)]) -> Trace {
    let t = T0 + start_s * S;
    let spans = calls
        .iter()
        .enumerate()
        .map(|(i, (svc, a, b))| {
            testkit::span(id, i as u64 + 1, i as u64, t + a * MS, t + b * MS, svc)
        })
        .collect();
    testkit::completed(id, spans)
}

/// gateway → orders → db; db's call lasts `db_ms`.
pub(super) fn three_tier(id: u128, start_s: i64, total_ms: i64, db_ms: i64) -> Trace {
    chain(
        id,
        start_s,
        &[
            ("gateway", 0, total_ms),
            ("orders", 10, total_ms - 10),
            ("db", 20, 20 + db_ms),
        ],
    )
}

pub(super) fn observe(e: &mut AlertEngine, trace: &Trace) {
    e.observe_trace(trace, &analyze(trace, &AnalyzeSettings::default()));
}

const GATEWAY_LATENCY: &str = "
group_wait: 0s
rules:
  - name: slow_gateway
    series: {scope: service, match: {service: gateway}}
    threshold: {field: latency_p99_ns, above: 200ms}
  - name: slow_orders
    series: {scope: service, match: {service: orders}}
    threshold: {field: latency_p99_ns, above: 200ms}
  - name: failing_gateway
    series: {scope: service, match: {service: gateway}}
    threshold: {field: error_rate, above: 0.1}
";

#[test]
fn the_suspect_is_the_downstream_service_whose_self_time_grew() {
    let mut e = engine(GATEWAY_LATENCY);
    // normal: 100ms, db 20% of the critical path (orders 60%)
    for i in 0..20 {
        observe(&mut e, &three_tier(100 + i as u128, i, 100, 20));
    }
    // slow: 300ms, db 80%; the symptom shows at the root, gateway
    for i in 0..7 {
        observe(&mut e, &three_tier(200 + i as u128, 20 + i, 300, 240));
    }
    e.observe_window(&window("gateway", 30, 10, 100, 0, 300.0));
    let out = advance(&mut e, 30);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].suspected_service.as_deref(), Some("db"));
    let latest: Vec<String> = (202..=206u128).rev().map(hex_trace_id).collect();
    assert_eq!(
        out[0].exemplar_trace_ids, latest,
        "the five latest slow traces"
    );
    assert!(out[0].exemplar_trace_ids.iter().all(|id| id.len() == 32));
}

#[test]
fn upstream_services_are_never_suspects() {
    let mut e = engine(GATEWAY_LATENCY);
    for i in 0..20 {
        observe(&mut e, &three_tier(100 + i as u128, i, 100, 20));
    }
    // gateway's own time grows: orders (and db) only lose share
    for i in 0..3 {
        observe(
            &mut e,
            &chain(
                200 + i as u128,
                20 + i,
                &[("gateway", 0, 300), ("orders", 10, 90), ("db", 20, 40)],
            ),
        );
    }
    e.observe_window(&window("orders", 30, 10, 100, 0, 250.0));
    e.observe_window(&window("gateway", 30, 10, 100, 0, 300.0));
    let out = advance(&mut e, 30);
    let got: Vec<(&str, Option<&str>)> = out
        .iter()
        .map(|a| (a.rule.as_str(), a.suspected_service.as_deref()))
        .collect();
    let mut got = got.clone();
    got.sort();
    assert_eq!(
        got,
        [("slow_gateway", Some("gateway")), ("slow_orders", None)]
    );
}

#[test]
fn errors_point_at_the_deepest_error_origin() {
    let mut e = engine(GATEWAY_LATENCY);
    for i in 0..6 {
        let mut t = three_tier(300 + i as u128, i, 100, 20);
        for s in &mut t.spans {
            if matches!(s.service(), "db" | "gateway") {
                s.status = StatusCode::Error;
            }
        }
        observe(&mut e, &t);
    }
    // a failing trace that does not pass through gateway is no evidence
    let mut other = chain(400, 7, &[("billing", 0, 50), ("ledger", 5, 40)]);
    other.spans[1].status = StatusCode::Error;
    observe(&mut e, &other);
    e.observe_window(&window("gateway", 10, 10, 100, 30, 50.0));
    let out = advance(&mut e, 10);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule, "failing_gateway");
    assert_eq!(out[0].suspected_service.as_deref(), Some("db"));
    assert_eq!(out[0].exemplar_trace_ids.len(), 5);
    assert!(!out[0].exemplar_trace_ids.contains(&hex_trace_id(400)));
}

#[test]
fn anomalous_traces_are_evidence() {
    let mut e = engine(GATEWAY_LATENCY);
    for i in 0..3 {
        observe(&mut e, &three_tier(10 + i as u128, i, 100, 20));
    }
    observe(&mut e, &three_tier(20, 3, 150, 80));
    e.observe_score(&trace_score(20, 4, 0.95));
    e.observe_score(&trace_score(11, 4, 0.5));
    e.observe_window(&window("gateway", 10, 10, 100, 0, 300.0));
    let out = advance(&mut e, 10);
    assert_eq!(out[0].exemplar_trace_ids, [hex_trace_id(20)]);
    assert_eq!(out[0].suspected_service.as_deref(), Some("db"));
}

#[test]
fn the_service_graph_forgets_old_calls() {
    let mut e = engine(&format!(
        "correlation: {{service_graph_ttl: 1m, window: 1m}}\n{}",
        GATEWAY_LATENCY.trim_start()
    ));
    observe(&mut e, &three_tier(1, 0, 100, 20));
    advance(&mut e, 30);
    assert_eq!((e.stats().graph_edges, e.stats().evidence_traces), (2, 1));
    advance(&mut e, 120);
    assert_eq!((e.stats().graph_edges, e.stats().evidence_traces), (0, 0));
}
