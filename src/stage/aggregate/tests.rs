//! Tests of the aggregator: windows, lateness, cardinality, the service graph and
//! concurrency.

use std::sync::Arc;

use super::*;
use crate::model::{CloseReason, Edge, EdgeKind, Span, StatusCode, Trace};
use crate::testkit;

pub(super) const MS: i64 = 1_000_000;
pub(super) const S: i64 = 1_000_000_000;

/// A span of `service` named `name` from `start` to `end` (ns).
pub(super) fn span(service: &str, name: &str, start: i64, end: i64) -> Span {
    let mut s = testkit::span(
        7,
        (start as u64) ^ (end as u64) << 1,
        1,
        start,
        end,
        service,
    );
    s.name = Arc::from(name);
    s
}

pub(super) fn trace(spans: Vec<Span>) -> Trace {
    Trace {
        trace_id: 7,
        spans,
        amendment: false,
        close_reason: CloseReason::Completed,
        incomplete: false,
    }
}

/// 10 s tumbling windows over `service` and `operation` (service, span name).
pub(super) fn settings() -> AggregateSettings {
    AggregateSettings {
        windows: vec![WindowSpec::tumbling(10 * S)],
        dimension_sets: vec![
            DimensionSet::new("service", vec![Dimension::Service]),
            DimensionSet::new("operation", vec![Dimension::Service, Dimension::Operation]),
        ],
        max_series: 100,
        slo_latency_ns: 100 * MS,
        idle_series_expiry_ns: 60 * S,
        service_graph: false,
    }
}

fn key(pairs: &[(&str, &str)]) -> Vec<(Arc<str>, Arc<str>)> {
    pairs
        .iter()
        .map(|(k, v)| (Arc::from(*k), Arc::from(*v)))
        .collect()
}

pub(super) fn find<'a>(
    out: &'a [WindowAggregate],
    scope: &str,
    k: &[(&str, &str)],
) -> &'a WindowAggregate {
    let k = key(k);
    out.iter()
        .find(|a| &*a.scope == scope && a.key == k)
        .unwrap_or_else(|| panic!("no {scope} {k:?} in {out:#?}"))
}

#[test]
fn tumbling_window_closes_when_the_watermark_passes_its_end() {
    let mut agg = Aggregator::new(settings());
    let mut err = span("a", "get", 1_500 * MS, 2 * S);
    err.status = StatusCode::Error;
    agg.add_trace(
        &trace(vec![
            span("a", "get", 900 * MS, S),
            err,
            span("a", "put", 9 * S, 9_999 * MS),
            span("a", "get", 10 * S, 12 * S),
        ]),
        &[],
    );
    let mut out = Vec::new();
    agg.advance(10 * S - 1, &mut out);
    assert!(out.is_empty());
    agg.advance(10 * S, &mut out);
    assert_eq!(out.len(), 3, "{out:#?}");
    let a = find(&out, "service", &[("service", "a")]);
    assert_eq!(
        (a.window_start_ns, a.window_end_ns, a.window_size_ns),
        (0, 10 * S, 10 * S)
    );
    assert_eq!((a.count, a.error_count, a.slo_good), (3, 1, 1));
    assert_eq!(
        (a.min_ns, a.max_ns, a.sum_ns),
        (100 * MS, 999 * MS, 1_599 * MS)
    );
    assert_eq!(
        (a.quantile(0.0), a.quantile(1.0)),
        (100.0 * MS as f64, 999.0 * MS as f64)
    );
    assert!((a.quantile(0.5) / (500.0 * MS as f64) - 1.0).abs() <= 0.01);
    assert!((a.error_rate() - 1.0 / 3.0).abs() < 1e-12);
    assert!((a.throughput_per_s() - 0.3).abs() < 1e-12);
    assert!((a.slo_compliance() - 1.0 / 3.0).abs() < 1e-12);
    assert!(a.server.is_none());
    let get = find(&out, "operation", &[("service", "a"), ("operation", "get")]);
    assert_eq!(get.count, 2);
    // emitted in (end, size, scope, key) order
    let scopes: Vec<(&str, &str)> = out
        .iter()
        .map(|a| (&*a.scope, &*a.key.last().unwrap().1))
        .collect();
    assert_eq!(
        scopes,
        [("operation", "get"), ("operation", "put"), ("service", "a")]
    );
    assert_eq!(agg.stats().aggregates_emitted, 3);

    out.clear();
    agg.advance(20 * S, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(
        find(&out, "service", &[("service", "a")]).window_start_ns,
        10 * S
    );
    assert_eq!(agg.stats().open_windows, 0);
    assert_eq!(agg.stats().spans, 4);
}

#[test]
fn a_span_for_a_closed_window_is_counted_late() {
    let mut agg = Aggregator::new(settings());
    let mut out = Vec::new();
    agg.advance(10 * S, &mut out);
    agg.add_trace(
        &trace(vec![
            span("a", "get", 4 * S, 5 * S),
            span("a", "get", 9 * S, 10 * S),
        ]),
        &[],
    );
    assert_eq!(
        agg.stats().late_spans,
        1,
        "the span ending at 5 s; 10 s is in [10 s, 20 s)"
    );
    // the watermark never goes back
    agg.advance(5 * S, &mut out);
    assert_eq!(agg.closed_through_ns(), 10 * S);
    agg.flush(&mut out);
    assert_eq!(out.len(), 2);
    assert!(out
        .iter()
        .all(|a| a.window_start_ns == 10 * S && a.count == 1));
    // flushed windows are closed too
    agg.add_trace(&trace(vec![span("a", "get", 11 * S, 12 * S)]), &[]);
    assert_eq!(agg.stats().late_spans, 2);
    assert_eq!(agg.stats().open_windows, 0);
}

#[test]
fn keys_over_max_series_go_to_the_overflow_key() {
    let mut agg = Aggregator::new(AggregateSettings {
        max_series: 2,
        ..settings()
    });
    let spans = ["a", "b", "c", "d", "a"]
        .iter()
        .map(|s| span(s, "get", S, 2 * S))
        .collect();
    agg.add_trace(&trace(spans), &[]);
    assert_eq!(agg.stats().overflowed_calls, 4, "c and d, in both scopes");
    assert_eq!(agg.stats().live_series, 4);
    let mut out = Vec::new();
    agg.flush(&mut out);
    let over = find(
        &out,
        "operation",
        &[("service", OVERFLOW_VALUE), ("operation", OVERFLOW_VALUE)],
    );
    assert_eq!(over.count, 2);
    assert_eq!(
        find(&out, "service", &[("service", OVERFLOW_VALUE)]).count,
        2
    );
    assert_eq!(find(&out, "service", &[("service", "a")]).count, 2);
    assert_eq!(out.iter().map(|a| a.count).sum::<u64>(), 10);
}

#[test]
fn idle_keys_expire_and_free_room() {
    let mut agg = Aggregator::new(AggregateSettings {
        max_series: 1,
        idle_series_expiry_ns: 30 * S,
        ..settings()
    });
    let mut out = Vec::new();
    agg.add_trace(&trace(vec![span("a", "get", 0, S)]), &[]);
    agg.add_trace(&trace(vec![span("b", "get", 0, 20 * S)]), &[]);
    assert_eq!(agg.stats().overflowed_calls, 2);
    agg.advance(31 * S - 1, &mut out);
    assert_eq!(agg.stats().expired_series, 0);
    agg.advance(31 * S, &mut out);
    assert_eq!(agg.stats().expired_series, 2, "a, in both scopes");
    assert_eq!(agg.stats().live_series, 0);
    agg.add_trace(&trace(vec![span("b", "get", 40 * S, 41 * S)]), &[]);
    assert_eq!(agg.stats().overflowed_calls, 2, "b now has room");
    out.clear();
    agg.flush(&mut out);
    assert_eq!(find(&out, "service", &[("service", "b")]).count, 1);
    assert_eq!(agg.values.len(), 2, "b and get");
}

#[test]
fn expiry_is_never_shorter_than_the_window() {
    let mut agg = Aggregator::new(AggregateSettings {
        windows: vec![WindowSpec::tumbling(60 * S)],
        idle_series_expiry_ns: S,
        ..settings()
    });
    let mut out = Vec::new();
    agg.add_trace(&trace(vec![span("a", "get", 0, S)]), &[]);
    agg.advance(30 * S, &mut out);
    assert_eq!(agg.stats().expired_series, 0, "its window is still open");
    agg.add_trace(&trace(vec![span("a", "get", 0, 40 * S)]), &[]);
    agg.advance(60 * S, &mut out);
    assert_eq!(find(&out, "service", &[("service", "a")]).count, 2);
    assert_eq!(agg.stats().expired_series, 0);
    agg.advance(100 * S, &mut out);
    assert_eq!(agg.stats().expired_series, 2);
}

#[test]
fn hopping_windows_hold_a_span_size_over_hop_times() {
    let mut agg = Aggregator::new(AggregateSettings {
        windows: vec![
            WindowSpec::hopping(60 * S, 10 * S),
            WindowSpec::tumbling(10 * S),
        ],
        dimension_sets: vec![DimensionSet::new("service", vec![Dimension::Service])],
        ..settings()
    });
    agg.add_trace(&trace(vec![span("a", "get", 64 * S, 65 * S)]), &[]);
    assert_eq!(agg.stats().open_windows, 7);
    let mut out = Vec::new();
    agg.flush(&mut out);
    let starts: Vec<(i64, i64)> = out
        .iter()
        .map(|a| (a.window_size_ns / S, a.window_start_ns / S))
        .collect();
    assert_eq!(
        starts,
        [
            (10, 60),
            (60, 10),
            (60, 20),
            (60, 30),
            (60, 40),
            (60, 50),
            (60, 60)
        ]
    );
    assert!(out.iter().all(|a| a.count == 1));
}

#[test]
fn a_span_late_for_some_hopping_windows_counts_in_the_open_ones() {
    let mut agg = Aggregator::new(AggregateSettings {
        windows: vec![WindowSpec::hopping(30 * S, 10 * S)],
        ..settings()
    });
    let mut out = Vec::new();
    agg.advance(40 * S, &mut out);
    // windows holding 25 s: [0, 30) and [10, 40) are closed, [20, 50) is open
    agg.add_trace(&trace(vec![span("a", "get", 24 * S, 25 * S)]), &[]);
    assert_eq!(agg.stats().late_spans, 1);
    agg.flush(&mut out);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|a| a.window_start_ns == 20 * S));
}

fn edge(
    client: &str,
    server: &str,
    kind: EdgeKind,
    end: i64,
    client_ms: i64,
    server_ms: i64,
    error: bool,
) -> Edge {
    Edge {
        client: Arc::from(client),
        server: Arc::from(server),
        kind,
        client_latency_ns: client_ms * MS,
        server_latency_ns: server_ms * MS,
        error,
        end_ns: end,
        server_span_id: 1,
    }
}

#[test]
fn service_graph_edges_are_aggregated_per_window() {
    let mut agg = Aggregator::new(AggregateSettings {
        service_graph: true,
        dimension_sets: vec![],
        ..settings()
    });
    let edges = [
        edge(
            "gateway",
            "orchestrator",
            EdgeKind::RequestReply,
            5 * S,
            100,
            80,
            false,
        ),
        edge(
            "gateway",
            "orchestrator",
            EdgeKind::RequestReply,
            7 * S,
            300,
            250,
            true,
        ),
        edge(
            "ingest",
            "indexer",
            EdgeKind::Messaging,
            8 * S,
            5,
            2_000,
            false,
        ),
        edge(
            "gateway",
            "orchestrator",
            EdgeKind::RequestReply,
            12 * S,
            50,
            40,
            false,
        ),
    ];
    agg.add_trace(&trace(vec![span("gateway", "get", 0, S)]), &edges);
    assert_eq!(agg.stats().edges, 4);
    let mut out = Vec::new();
    agg.flush(&mut out);
    assert_eq!(out.len(), 3, "{out:#?}");
    let gw = [
        ("client", "gateway"),
        ("server", "orchestrator"),
        ("connection_type", "request_reply"),
    ];
    let first = &out[0];
    assert_eq!(
        (&*first.scope, first.window_start_ns),
        (SERVICE_GRAPH_SCOPE, 0)
    );
    assert_eq!(first.key, key(&gw));
    assert_eq!(
        (first.count, first.error_count, first.sum_ns, first.slo_good),
        (2, 1, 400 * MS, 1)
    );
    let server = first.server.as_ref().unwrap();
    assert_eq!(
        (server.min_ns, server.max_ns, server.sum_ns),
        (80 * MS, 250 * MS, 330 * MS)
    );
    assert_eq!(server.quantile(1.0), 250.0 * MS as f64);
    assert_eq!(first.busy_ns, 330 * MS, "callee-side intervals");
    let msg = find(
        &out,
        SERVICE_GRAPH_SCOPE,
        &[
            ("client", "ingest"),
            ("server", "indexer"),
            ("connection_type", "messaging_system"),
        ],
    );
    assert_eq!((msg.count, msg.max_ns), (1, 5 * MS));
    assert_eq!(out[2].window_start_ns, 10 * S);
    assert_eq!(out[2].key, key(&gw));

    let mut off = Aggregator::new(settings());
    off.add_trace(&trace(vec![]), &edges);
    assert_eq!(off.stats().edges, 0, "ignored without service_graph");
}

#[test]
fn concurrency_counts_overlapping_calls() {
    let mut agg = Aggregator::new(AggregateSettings {
        dimension_sets: vec![DimensionSet::new("all", vec![])],
        ..settings()
    });
    agg.add_trace(
        &trace(vec![
            span("a", "x", 11 * S, 13 * S),
            span("b", "y", 12 * S, 14 * S),
            span("c", "z", 12_500 * MS, 12_600 * MS),
            // started before the window: only its in-window second counts
            span("d", "w", 5 * S, 11 * S),
        ]),
        &[],
    );
    let mut out = Vec::new();
    agg.flush(&mut out);
    let all = find(&out, "all", &[]);
    assert_eq!(all.window_start_ns, 10 * S);
    assert_eq!(all.busy_ns, 5_100 * MS);
    assert!((all.concurrency_mean - 0.51).abs() < 1e-12);
    assert_eq!(all.concurrency_max, 3.0);
    assert_eq!(all.concurrency_profile.len(), PROFILE_SLOTS);
    assert_eq!(all.concurrency_profile[0], 1, "d in [10 s, 10.1 s)");
    assert_eq!(all.concurrency_profile[10], 1, "d ended at 11 s, a started");
    assert_eq!(
        all.concurrency_profile[25], 3,
        "a, b and c in [12.5 s, 12.6 s)"
    );
    assert_eq!(all.concurrency_profile[26], 2, "c ended at 12.6 s");
    assert_eq!(all.concurrency_profile[39], 1);
    assert_eq!(all.concurrency_profile[40], 0);
}

#[test]
fn key_string_is_stable_and_unambiguous() {
    let mut agg = Aggregator::new(settings());
    agg.add_trace(&trace(vec![span("a|b", "x=y%", S, 2 * S)]), &[]);
    let mut out = Vec::new();
    agg.flush(&mut out);
    let op = find(
        &out,
        "operation",
        &[("service", "a|b"), ("operation", "x=y%")],
    );
    assert_eq!(
        op.key_string(),
        "operation|10000000000|0|service=a%7Cb|operation=x%3Dy%25"
    );
    assert_eq!(op.key_string(), op.clone().key_string());
}

#[test]
fn calls_at_the_edges_of_time_are_windowed_or_counted() {
    let mut agg = Aggregator::new(settings());
    agg.add_trace(
        &trace(vec![
            span("a", "get", i64::MAX - 10 * MS, i64::MAX - 1),
            // its window would start before i64::MIN
            span("a", "get", i64::MIN, i64::MIN + 5),
        ]),
        &[],
    );
    assert_eq!(agg.stats().out_of_range_calls, 1);
    let mut out = Vec::new();
    agg.advance(i64::MAX - 1, &mut out);
    assert!(out.is_empty(), "the last window ends at i64::MAX");
    agg.flush(&mut out);
    let a = find(&out, "service", &[("service", "a")]);
    assert_eq!(
        (a.window_end_ns, a.count, a.max_ns),
        (i64::MAX, 1, 10 * MS - 1)
    );
    assert_eq!(
        a.window_start_ns,
        window_start(i64::MAX - 1, 10 * S).unwrap()
    );
    assert_eq!(a.busy_ns, 10 * MS - 1);
}
