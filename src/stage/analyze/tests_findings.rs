//! Service-graph edges and finding rules on hand-built traces (times in ms).

use super::tests::{failed, named, run, sp, trace, with_kind, MS};
use super::*;
use crate::model::{AttrValue, AttributesBuilder, Edge, EdgeKind, SpanKind};

fn client(id: u64, parent: u64, start: i64, end: i64, service: &str) -> Span {
    with_kind(sp(id, parent, start, end, service), SpanKind::Client)
}

fn server(id: u64, parent: u64, start: i64, end: i64, service: &str) -> Span {
    with_kind(sp(id, parent, start, end, service), SpanKind::Server)
}

fn with_attrs(mut s: Span, attrs: &[(&str, &str)]) -> Span {
    let mut b = AttributesBuilder::default();
    for (k, v) in attrs {
        b.push(k, AttrValue::Str(v));
    }
    s.attributes = b.build();
    s
}

fn edge_pairs(a: &Analysis) -> Vec<(&str, &str, EdgeKind, u64)> {
    a.edges
        .iter()
        .map(|e| (&*e.client, &*e.server, e.kind, e.server_span_id))
        .collect()
}

fn of_kind(a: &Analysis, kind: FindingKind) -> Vec<&Finding> {
    a.findings.iter().filter(|f| f.kind == kind).collect()
}

#[test]
fn client_server_pairs_across_services_are_request_reply_edges() {
    let a = run(vec![
        server(1, 0, 0, 100, "gateway"),
        failed(client(2, 1, 10, 60, "gateway")),
        server(3, 2, 15, 55, "api"),
        client(4, 3, 20, 30, "api"),
        // a loopback call within one service is no edge
        server(5, 4, 21, 29, "api"),
    ]);
    assert_eq!(
        a.edges,
        [Edge {
            client: Arc::from("gateway"),
            server: Arc::from("api"),
            kind: EdgeKind::RequestReply,
            client_latency_ns: 50 * MS,
            server_latency_ns: 40 * MS,
            error: true,
            end_ns: 55 * MS,
            server_span_id: 3,
        }]
    );
}

#[test]
fn producer_to_consumer_descendant_is_a_messaging_edge() {
    let a = run(vec![
        server(1, 0, 0, 100, "api"),
        with_kind(sp(2, 1, 10, 20, "api"), SpanKind::Producer),
        // e.g. a broker hop inside the producing service
        sp(3, 2, 12, 18, "api"),
        with_kind(sp(4, 3, 150, 300, "worker"), SpanKind::Consumer),
        // a consumer below a server below the producer was not sent by it
        server(5, 2, 14, 16, "other"),
        with_kind(sp(6, 5, 200, 210, "worker2"), SpanKind::Consumer),
    ]);
    assert_eq!(
        edge_pairs(&a),
        [("api", "worker", EdgeKind::Messaging, 4)],
        "server 5 under a producer is no pair either"
    );
    let e = &a.edges[0];
    assert_eq!(
        (e.client_latency_ns, e.server_latency_ns),
        (10 * MS, 150 * MS)
    );
    assert_eq!(e.end_ns, 300 * MS);
}

#[test]
fn cross_service_links_without_client_kinds_are_parent_child_edges() {
    let a = run(vec![
        server(1, 0, 0, 100, "a"),
        sp(2, 1, 10, 20, "b"),
        // a caller without client spans
        server(3, 1, 30, 40, "c"),
        sp(4, 3, 31, 39, "c"),
        // a client whose callee recorded only an internal span: not parent/child
        client(5, 1, 50, 60, "a"),
        sp(6, 5, 51, 59, "d"),
        // an orphan: its caller is unknown
        server(7, 99, 70, 80, "e"),
    ]);
    assert_eq!(
        edge_pairs(&a),
        [
            ("a", "b", EdgeKind::ParentChild, 2),
            ("a", "c", EdgeKind::ParentChild, 3),
        ]
    );
}

#[test]
fn clients_without_server_child_point_at_their_peer() {
    let a = run(vec![
        server(1, 0, 0, 100, "app"),
        with_attrs(
            client(2, 1, 10, 20, "app"),
            &[("peer.service", "pg"), ("db.system", "postgresql")],
        ),
        with_attrs(
            client(3, 1, 20, 30, "app"),
            &[("db.system", "redis"), ("server.address", "cache.local")],
        ),
        failed(with_attrs(
            client(4, 1, 30, 40, "app"),
            &[("db.system", "postgresql")],
        )),
        with_attrs(
            client(5, 1, 40, 50, "app"),
            &[("http.request.method", "GET")],
        ),
        with_attrs(client(6, 1, 50, 60, "app"), &[("peer.service", "app")]),
    ]);
    assert_eq!(
        edge_pairs(&a),
        [
            ("app", "pg", EdgeKind::RequestReply, 2),
            ("app", "cache.local", EdgeKind::RequestReply, 3),
            ("app", "postgresql", EdgeKind::RequestReply, 4),
        ]
    );
    let e = &a.edges[2];
    assert_eq!(
        (e.client_latency_ns, e.server_latency_ns, e.error, e.end_ns),
        (10 * MS, 10 * MS, true, 40 * MS)
    );
}

#[test]
fn n_plus_one_needs_consecutive_sequential_calls_to_one_operation() {
    let call = |id, start, end| named(client(id, 1, start, end, "app"), "SELECT users");
    let a = run(vec![
        server(1, 0, 0, 100, "app"),
        call(2, 0, 10),
        call(3, 10, 20),
        call(4, 20, 30),
        named(client(5, 1, 30, 40, "app"), "GET"),
        call(6, 40, 50),
        call(7, 50, 60),
        // overlaps the previous call: a new run of one
        call(8, 55, 65),
    ]);
    let found = of_kind(&a, FindingKind::NPlusOne);
    assert_eq!(found.len(), 1, "{:?}", a.findings);
    assert_eq!(found[0].span_ids, [2, 3, 4]);
    assert_eq!(&*found[0].service, "app");
    assert_eq!(
        found[0].message,
        "3 sequential calls to SELECT users from app: batch them into one call"
    );
}

#[test]
fn sequential_calls_to_different_services_are_parallelizable() {
    let spans = vec![
        server(1, 0, 0, 100, "gateway"),
        named(client(2, 1, 0, 30, "gateway"), "get user"),
        server(3, 2, 1, 29, "users"),
        named(client(4, 1, 30, 60, "gateway"), "get cart"),
        server(5, 4, 31, 59, "carts"),
        sp(6, 1, 60, 61, "gateway"),
        with_attrs(
            named(client(7, 1, 61, 91, "gateway"), "get prices"),
            &[("peer.service", "prices")],
        ),
    ];
    let a = run(spans.clone());
    let found = of_kind(&a, FindingKind::Parallelizable);
    assert_eq!(found.len(), 1, "{:?}", a.findings);
    assert_eq!(found[0].span_ids, [2, 4, 7]);
    assert_eq!(&*found[0].service, "gateway");
    assert_eq!(
        found[0].message,
        "3 sequential calls from gateway to users, carts, prices could run concurrently: saves ~60 ms"
    );
    let strict = AnalyzeSettings {
        parallelizable_min_saving_share: 0.61,
        ..AnalyzeSettings::default()
    };
    assert!(analyze(&trace(spans), &strict)
        .findings
        .iter()
        .all(|f| f.kind != FindingKind::Parallelizable));
}

#[test]
fn overlapping_or_repeated_callees_split_parallelizable_runs() {
    let a = run(vec![
        server(1, 0, 0, 100, "gateway"),
        named(client(2, 1, 0, 30, "gateway"), "a"),
        server(3, 2, 1, 29, "users"),
        named(client(4, 1, 30, 60, "gateway"), "b"),
        server(5, 4, 31, 59, "users"),
        named(client(6, 1, 55, 90, "gateway"), "c"),
        server(7, 6, 56, 89, "carts"),
        // a call to an unknown service ends a run
        named(client(8, 1, 90, 95, "gateway"), "d"),
        named(client(9, 1, 95, 99, "gateway"), "e"),
        server(10, 9, 96, 98, "carts"),
    ]);
    assert!(
        of_kind(&a, FindingKind::Parallelizable).is_empty(),
        "{:?}",
        a.findings
    );
}

#[test]
fn a_failed_span_followed_by_the_same_operation_is_a_retry() {
    let call = |id, start, end| named(client(id, 1, start, end, "app"), "POST /pay");
    let a = run(vec![
        server(1, 0, 0, 100, "app"),
        failed(call(2, 0, 10)),
        // started before the failure ended: not its retry
        call(3, 5, 12),
        call(4, 50, 60),
        failed(call(5, 70, 80)),
        named(client(6, 1, 85, 90, "app"), "POST /refund"),
    ]);
    let found = of_kind(&a, FindingKind::RetryAfterError);
    assert_eq!(found.len(), 1, "{:?}", a.findings);
    assert_eq!(found[0].span_ids, [2, 4]);
    assert_eq!(found[0].message, "retry of POST /pay after an error");
}

#[test]
fn the_deepest_failed_span_is_the_error_origin() {
    let a = run(vec![
        failed(server(1, 0, 0, 100, "gateway")),
        failed(client(2, 1, 10, 50, "gateway")),
        failed(server(3, 2, 12, 48, "api")),
        failed(named(sp(4, 3, 20, 30, "api"), "parse")),
        failed(named(sp(5, 3, 15, 18, "api"), "validate")),
        sp(6, 5, 16, 17, "api"),
    ]);
    let found = of_kind(&a, FindingKind::ErrorOrigin);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].span_ids, [5], "ties go to the earliest");
    assert_eq!(
        found[0].message,
        "api validate is the likely origin of the error"
    );
    assert_eq!(a.error_count, 5);
    assert!(of_kind(&run(vec![sp(1, 0, 0, 10, "a")]), FindingKind::ErrorOrigin).is_empty());
}

#[test]
fn a_failed_call_no_server_answered_blames_the_callee() {
    // an outage: the orchestrator's call to search-agent failed fast, no SERVER span
    let a = run(vec![
        failed(server(1, 0, 0, 100, "orchestrator")),
        failed(with_attrs(
            client(2, 1, 10, 12, "orchestrator"),
            &[("peer.service", "search-agent")],
        )),
    ]);
    let found = of_kind(&a, FindingKind::ErrorOrigin);
    assert_eq!(found.len(), 1);
    assert_eq!(&*found[0].service, "search-agent");
    assert_eq!(found[0].span_ids, [2]);
    assert!(
        found[0]
            .message
            .starts_with("search-agent failed to answer orchestrator"),
        "{}",
        found[0].message
    );
}
