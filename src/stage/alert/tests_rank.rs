//! Root-cause ranking: missing spans, self time, waits outside callees, early returns,
//! error origins, callees before their callers, and no suspects when nothing changed.

use std::sync::Arc;

use super::correlate::ServiceGraph;
use super::rank::{callee_first, Profile, Ranker};
use crate::model::{SpanKind, StatusCode, Suspect, Trace};
use crate::stage::analyze::{analyze, AnalyzeSettings};
use crate::testkit;

const MS: i64 = 1_000_000;

/// One span: (id, parent id, service, span name, start ms, end ms, failed).
type Call<'a> = (u64, u64, &'a str, &'a str, i64, i64, bool);

fn trace(id: u128, at_ms: i64, calls: &[Call]) -> Trace {
    let t0 = 1_700_000_000_000 * MS + at_ms * MS;
    let spans = calls
        .iter()
        .map(|&(sid, parent, svc, name, a, b, failed)| {
            let mut s = testkit::span(id, sid, parent, t0 + a * MS, t0 + b * MS, svc);
            s.name = Arc::from(name);
            if failed {
                s.status = StatusCode::Error;
            }
            s
        })
        .collect();
    testkit::completed(id, spans)
}

/// gateway GET /order → orders place → (db query at `db`, cache get), with the db call
/// `db_ms` long and orders' own work `own_ms` after it.
fn order(id: u128, at_ms: i64, db_ms: i64, own_ms: i64, with_db: bool, db_fails: bool) -> Trace {
    let mut calls: Vec<Call> = vec![
        (1, 0, "gateway", "GET /order", 0, 0, false),
        (2, 1, "orders", "place", 1, 0, false),
        (4, 2, "cache", "get", 2, 4, false),
    ];
    let mut t = 4;
    if with_db {
        calls.push((3, 2, "db", "query", t, t + db_ms, db_fails));
        t += db_ms;
    }
    t += own_ms;
    calls[1].5 = t;
    calls[0].5 = t + 1;
    trace(id, at_ms, &calls)
}

fn profile(r: &mut Ranker, t: &Trace) -> Profile {
    let a = analyze(t, &AnalyzeSettings::default());
    let origin = a
        .findings
        .iter()
        .find(|f| f.kind == crate::stage::analyze::FindingKind::ErrorOrigin)
        .map(|f| f.service.clone());
    r.profile(t, &a, origin)
}

/// 40 normal traces folded into the baseline; then the anomalous ones ranked.
fn rank(anomalous: impl Fn(u128) -> Trace, graph: &ServiceGraph) -> Vec<Suspect> {
    let mut r = Ranker::new(256);
    for i in 0..40u128 {
        // db 8-11ms, orders' own work 3-5ms
        let normal = order(
            i,
            i as i64 * 100,
            8 + (i % 4) as i64,
            3 + (i % 3) as i64,
            true,
            false,
        );
        let p = profile(&mut r, &normal);
        r.fold(&p);
    }
    let bad: Vec<Profile> = (100..110u128)
        .map(|i| profile(&mut r, &anomalous(i)))
        .collect();
    let refs: Vec<&Profile> = bad.iter().collect();
    r.rank(&refs, &[], &|_| true, graph)
}

fn graph() -> ServiceGraph {
    let mut g = ServiceGraph::default();
    g.add(&Arc::from("gateway"), &Arc::from("orders"), 0);
    g.add(&Arc::from("orders"), &Arc::from("db"), 0);
    g.add(&Arc::from("orders"), &Arc::from("cache"), 0);
    g
}

#[test]
fn nothing_changed_names_no_suspect() {
    let s = rank(
        |i| {
            order(
                i,
                9_000,
                8 + (i % 4) as i64,
                3 + (i % 3) as i64,
                true,
                false,
            )
        },
        &graph(),
    );
    assert_eq!(s, vec![]);
}

#[test]
fn missing_child_spans_point_at_the_service_that_stopped_calling() {
    // orders returns before calling db
    let s = rank(|i| order(i, 9_000, 0, 3, false, false), &graph());
    assert_eq!(s[0].service, "orders", "{s:?}");
    assert!(s[0].score > 0.9, "{s:?}");
    assert!(
        s[0].evidence.iter().any(|e| e.starts_with(
            "span query of db missing from 100 % of place calls of orders (1.00 per call before, 0.00 now)"
        )),
        "{s:?}"
    );
    assert!(s[0]
        .evidence
        .iter()
        .any(|e| e.contains("in traces of gateway GET /order → orders place")));
}

#[test]
fn self_time_on_the_critical_path_points_at_the_slow_service() {
    // db takes 200ms in 8 of 10 traces
    let s = rank(
        |i| order(i, 9_000, if i % 5 == 0 { 9 } else { 200 }, 4, true, false),
        &graph(),
    );
    assert_eq!(s[0].service, "db", "{s:?}");
    assert!((s[0].score - 0.8).abs() < 1e-9, "{s:?}");
    assert_eq!(
        s[0].evidence[0],
        "db self time on the critical path 9ms → 200ms in 80 % of 10 traces of gateway GET /order → orders place"
    );
    assert_eq!(s.len(), 1, "gateway and orders did not change: {s:?}");
}

#[test]
fn error_origins_point_at_the_failing_service() {
    let s = rank(|i| order(i, 9_000, 9, 4, true, true), &graph());
    assert_eq!(s[0].service, "db", "{s:?}");
    assert!(
        s[0].evidence[0].starts_with("error origin in 100 % of 10 failed traces"),
        "{s:?}"
    );
}

#[test]
fn an_early_return_is_evidence_against_the_service_that_returned() {
    let mut r = Ranker::new(256);
    let slow_db = |i: u128, at: i64, db: i64| {
        trace(
            i,
            at,
            &[
                (1, 0, "gateway", "GET /search", 0, db + 2, false),
                (2, 1, "search", "find", 1, db + 1, false),
            ],
        )
    };
    for i in 0..40u128 {
        let p = profile(&mut r, &slow_db(i, i as i64 * 100, 50 + (i % 5) as i64));
        r.fold(&p);
    }
    let bad: Vec<Profile> = (100..110u128)
        .map(|i| profile(&mut r, &slow_db(i, 9_000, 2)))
        .collect();
    let refs: Vec<&Profile> = bad.iter().collect();
    let mut calls = ServiceGraph::default();
    calls.add(&Arc::from("gateway"), &Arc::from("search"), 0);
    let s = r.rank(&refs, &[], &|_| true, &calls);
    // the gateway returned early too, because search did: the callee goes first
    assert_eq!(s[0].service, "search", "{s:?}");
    assert_eq!(s[1].service, "gateway", "{s:?}");
    assert!(
        s[0].evidence.iter().any(|e| e
            .starts_with("find of search returns after 2ms instead of 52ms in 100 % of 10 calls")),
        "{s:?}"
    );
}

#[test]
fn a_comparable_callee_goes_before_its_caller() {
    let suspect = |service: &str, score: f64| Suspect {
        service: service.to_string(),
        score,
        evidence: vec![],
    };
    let mut s = vec![
        suspect("orders", 0.9),
        suspect("gateway", 0.8),
        suspect("db", 0.7),
    ];
    callee_first(&mut s, &graph(), &|_| false);
    let names: Vec<&str> = s.iter().map(|x| x.service.as_str()).collect();
    assert_eq!(names, ["db", "orders", "gateway"]);
    // a callee far weaker than its caller stays behind it
    let mut s = vec![suspect("orders", 0.9), suspect("db", 0.3)];
    callee_first(&mut s, &graph(), &|_| false);
    assert_eq!(s[0].service, "orders");
    // without calls between them the order is the score's
    let mut s = vec![suspect("orders", 0.9), suspect("db", 0.7)];
    callee_first(&mut s, &ServiceGraph::default(), &|_| false);
    assert_eq!(s[0].service, "orders");
}

#[test]
fn ranking_without_a_normal_period_names_no_suspect() {
    let mut r = Ranker::new(256);
    let bad: Vec<Profile> = (100..110u128)
        .map(|i| profile(&mut r, &order(i, 9_000, 0, 3, false, false)))
        .collect();
    let refs: Vec<&Profile> = bad.iter().collect();
    assert_eq!(r.rank(&refs, &[], &|_| true, &graph()), vec![]);
}

/// checkout place → client call GET /price → pricing quote (5 ms), then client call GET
/// /stock → stock count (4 ms); each client span waits `price_wait` and `stock_wait`
/// ms before its server span starts.
fn checkout(id: u128, at_ms: i64, price_wait: i64, stock_wait: i64) -> Trace {
    let price_end = 1 + price_wait + 5;
    let stock_end = price_end + stock_wait + 4;
    let mut t = trace(
        id,
        at_ms,
        &[
            (1, 0, "checkout", "place", 0, stock_end + 1, false),
            (2, 1, "checkout", "GET /price", 1, price_end, false),
            (3, 2, "pricing", "quote", 1 + price_wait, price_end, false),
            (4, 1, "checkout", "GET /stock", price_end, stock_end, false),
            (
                5,
                4,
                "stock",
                "count",
                price_end + stock_wait,
                stock_end,
                false,
            ),
        ],
    );
    for s in t.spans.iter_mut().filter(|s| s.name.starts_with("GET")) {
        s.kind = SpanKind::Client;
    }
    t
}

/// 40 normal checkouts (waits of 1 or 2 ms) folded into the baseline, then 10 with the
/// given waits ranked.
fn rank_checkouts(price_wait: i64, stock_wait: i64) -> Vec<Suspect> {
    let mut r = Ranker::new(256);
    for i in 0..40u128 {
        let t = checkout(i, i as i64 * 100, 1 + (i % 2) as i64, 2 - (i % 2) as i64);
        let p = profile(&mut r, &t);
        r.fold(&p);
    }
    let bad: Vec<Profile> = (100..110u128)
        .map(|i| profile(&mut r, &checkout(i, 9_000, price_wait, stock_wait)))
        .collect();
    let refs: Vec<&Profile> = bad.iter().collect();
    let mut calls = ServiceGraph::default();
    calls.add(&Arc::from("checkout"), &Arc::from("pricing"), 0);
    calls.add(&Arc::from("checkout"), &Arc::from("stock"), 0);
    r.rank(&refs, &[], &|_| true, &calls)
}

#[test]
fn calls_waiting_outside_one_callee_point_at_that_callee() {
    // a slow network to pricing: the client span grows, pricing's own span does not
    let s = rank_checkouts(40, 1);
    assert_eq!(s[0].service, "pricing", "{s:?}");
    assert_eq!(
        s[0].evidence[0],
        "calls from checkout to pricing wait outside its spans (network, queueing) on the \
         critical path 1ms → 40ms in 100 % of 10 traces of checkout place → pricing quote"
    );
    assert!(
        s.iter().all(|x| x.service != "checkout"),
        "checkout's own work did not change: {s:?}"
    );
}

#[test]
fn a_caller_waiting_on_most_of_its_callees_is_the_suspect() {
    // checkout itself is slow to send and receive: every call of it waits
    let s = rank_checkouts(30, 30);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].service, "checkout", "{s:?}");
    assert!(
        s[0].evidence[0].starts_with(
            "checkout waits longer on 2 of the 2 services it calls (pricing, stock): pricing"
        ),
        "{s:?}"
    );
}
