//! spanline's own query API (`/api/spanline/…`) over a repository the test writes
//! itself: a trace's analysis (stored, and recomputed when missing), alert events and
//! active alerts, RED series, baseline-against-current comparison and trends, 400s
//! naming the parameter, 404 for an unknown trace, and the bearer token.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use spanline::model::{Alert, AlertStatus, CloseReason, Trace, WindowAggregate};
use spanline::repository::{Repository, TraceRecord};
use spanline::serve::api::{router, ApiState};
use spanline::stage::analyze::{analyze, AnalyzeSettings};
use spanline::telemetry::http::{serve_with, Readiness};
use spanline::testkit;

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
/// 2026-01-01T00:00:00Z in nanoseconds.
const T0: i64 = 1_767_225_600 * S;
const T0_MS: i64 = T0 / MS;

fn window(service: &str, at_s: i64, count: u64, errors: u64, latency_ms: i64) -> WindowAggregate {
    let mut w = WindowAggregate::empty(
        T0 + at_s * S,
        10 * S,
        Arc::from("service"),
        vec![(Arc::from("service"), Arc::from(service))],
        S,
    );
    for i in 0..count {
        let ns = (latency_ms + (i % 3) as i64) * MS;
        w.count += 1;
        w.min_ns = w.min_ns.min(ns);
        w.max_ns = w.max_ns.max(ns);
        w.sum_ns += ns;
        w.sketch.add(ns as f64);
    }
    w.error_count = errors;
    w
}

fn trace(id: u128) -> Trace {
    let b = T0;
    Trace {
        trace_id: id,
        spans: vec![
            testkit::span(id, 1, 0, b, b + 500 * MS, "gateway"),
            testkit::span(id, 2, 1, b + MS, b + 100 * MS, "orders"),
            testkit::span(id, 3, 1, b + 2 * MS, b + 200 * MS, "db"),
            testkit::span(id, 4, 2, b + 3 * MS, b + 50 * MS, "cache"),
        ],
        amendment: false,
        close_reason: CloseReason::Completed,
        incomplete: false,
    }
}

fn alert(fp: &str, status: AlertStatus, rule: &str, service: &str, start_s: i64) -> Alert {
    Alert {
        fingerprint: fp.into(),
        status,
        rule: rule.into(),
        severity: "warning".into(),
        starts_at_ms: T0_MS + start_s * 1000,
        ends_at_ms: (status == AlertStatus::Resolved).then_some(T0_MS + (start_s + 60) * 1000),
        labels: BTreeMap::from([("service".to_string(), service.to_string())]),
        annotations: BTreeMap::new(),
        summary: format!("{rule} on {service}"),
        suspected_service: None,
        suspected_services: vec![],
        score: 0.9,
        value: Some(1.0),
        exemplar_trace_ids: vec![],
    }
}

fn fill(db: &std::path::Path) -> Trace {
    let mut repo = Repository::open(db, Default::default()).unwrap();
    let t = trace(0xabc);
    let analysis = analyze(&t, &AnalyzeSettings::default());
    repo.store_traces(&[
        TraceRecord {
            trace: t.clone(),
            analysis: Some(analysis),
        },
        TraceRecord {
            trace: trace(0xdef),
            analysis: None,
        },
    ])
    .unwrap();
    let mut ws: Vec<_> = (0..10)
        .map(|i| window("orders", i * 10, 100, 2, 50))
        .collect();
    ws.extend((0..10).map(|i| window("orders", 1000 + i * 10, 150, 10, 80)));
    // pay's throughput grows by 0.2 calls/s per window
    ws.extend((0..10).map(|i| window("pay", i * 10, 10 + 2 * i as u64, 0, 5)));
    repo.store_windows(&ws).unwrap();
    repo.store_alerts(&[
        alert("f1", AlertStatus::Firing, "latency", "orders", 0),
        alert("f1", AlertStatus::Resolved, "latency", "orders", 0),
        alert("f2", AlertStatus::Firing, "errors", "pay", 30),
    ])
    .unwrap();
    t
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn close(v: &Value, expected: f64, tol: f64) {
    let x = v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"));
    assert!(
        (x - expected).abs() <= tol,
        "{x} is not within {tol} of {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanlines_own_api_answers_from_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let stored = fill(&db);
    let expected = analyze(&stored, &AnalyzeSettings::default());
    let (addr, server) = serve_with(
        "127.0.0.1:0".parse().unwrap(),
        Readiness::default(),
        router(ApiState::new(db.clone(), None)),
    )
    .await
    .unwrap();
    let api = format!("http://{addr}/api/spanline");
    let c = reqwest::Client::new();

    // analysis: stored, and recomputed for the trace stored without one
    let (status, body) = get(&c, &format!("{api}/traces/abc/analysis")).await;
    assert_eq!(status, 200, "{body}");
    let a = &body["data"][0];
    assert_eq!(a["traceID"], format!("{:032x}", 0xabc));
    assert_eq!(a["reanalyzed"], false);
    assert_eq!(a["durationMs"], 500.0);
    assert_eq!(a["spanCount"], 4);
    let b = expected.bottleneck.as_ref().unwrap();
    assert_eq!(a["bottleneck"]["service"], &*b.service);
    close(
        &a["bottleneck"]["selfTimeMs"],
        b.self_time_ns as f64 / 1e6,
        1e-9,
    );
    let path = a["criticalPath"].as_array().unwrap();
    assert_eq!(path.len(), expected.critical_path.len());
    assert_eq!(path[0]["spanID"], "0000000000000001");
    let self_total: f64 = path.iter().map(|s| s["selfTimeMs"].as_f64().unwrap()).sum();
    close(&Value::from(self_total), 500.0, 1e-6);
    assert_eq!(a["oddities"]["orphans"], 0);
    let (_, again) = get(&c, &format!("{api}/traces/def/analysis")).await;
    assert_eq!(again["data"][0]["reanalyzed"], true);
    assert_eq!(again["data"][0]["bottleneck"], a["bottleneck"]);
    let (status, missing) = get(&c, &format!("{api}/traces/{}/analysis", "1".repeat(32))).await;
    assert_eq!(
        (status, &missing["errors"][0]["code"]),
        (404, &Value::from(404))
    );
    let (status, bad) = get(&c, &format!("{api}/traces/xyz/analysis")).await;
    assert_eq!(status, 400);
    assert!(bad["errors"][0]["msg"]
        .as_str()
        .unwrap()
        .contains("traceID"));

    // alerts: events newest first, filters, active ones
    let (status, all) = get(&c, &format!("{api}/alerts")).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["total"], 3);
    assert_eq!(all["data"][0]["status"], "resolved");
    let (_, f1) = get(&c, &format!("{api}/alerts?fingerprint=f1")).await;
    assert_eq!(f1["total"], 2);
    let (_, active) = get(&c, &format!("{api}/alerts?active=true")).await;
    assert_eq!(active["total"], 1);
    assert_eq!(active["data"][0]["fingerprint"], "f2");
    let (_, rule) = get(
        &c,
        &format!("{api}/alerts?rule=latency&service=orders&limit=1"),
    )
    .await;
    assert_eq!(
        (rule["total"].as_u64(), rule["limit"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, early) = get(
        &c,
        &format!(
            "{api}/alerts?start=2026-01-01T00:00:00Z&end={}",
            T0_MS + 10_000
        ),
    )
    .await;
    assert_eq!(early["total"], 1, "only f1's firing event: {early}");

    // RED series of a service
    let range = "start=2026-01-01T00:00:00Z&end=2026-01-01T00:01:40Z";
    let (status, series) = get(&c, &format!("{api}/series?service=orders&{range}")).await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(series["total"], 1);
    let s = &series["data"][0];
    assert_eq!(
        (s["scope"].as_str(), s["windowSeconds"].as_f64()),
        (Some("service"), Some(10.0))
    );
    let points = s["points"].as_array().unwrap();
    assert_eq!(points.len(), 10);
    assert_eq!(points[0]["start"], T0_MS);
    assert_eq!(points[0]["count"], 100);
    assert_eq!(points[0]["errorRate"], 0.02);
    assert_eq!(points[0]["throughput"], 10.0);
    close(&points[0]["p50Ms"], 51.0, 51.0 * 0.005);
    close(&points[0]["meanMs"], 50.99, 1e-9);
    let (_, both) = get(&c, &format!("{api}/series?{range}")).await;
    assert_eq!(both["total"], 2, "orders and pay");

    // baseline against current
    let (status, cmp) = get(
        &c,
        &format!(
            "{api}/compare?service=orders&baselineStart={}&baselineEnd={}&start={}&end={}",
            T0_MS,
            T0_MS + 100_000,
            T0_MS + 1_000_000,
            T0_MS + 1_100_000
        ),
    )
    .await;
    assert_eq!(status, 200, "{cmp}");
    assert_eq!(cmp["total"], 1);
    let r = &cmp["data"][0];
    assert_eq!(r["throughput"]["baseline"], 10.0);
    assert_eq!(r["throughput"]["current"], 15.0);
    assert_eq!(r["throughput"]["test"], "poisson_rate");
    assert_eq!(r["throughput"]["significant"], true);
    assert_eq!(r["errorRate"]["test"], "two_proportion_z");
    assert_eq!(r["errorRate"]["significant"], true);
    close(&r["p99Ms"]["pValue"], 1.593_791e-5, 1e-9);
    close(&r["p50Ms"]["relativeChange"], 30.0 / 51.0, 0.01);

    // trend with a bound
    let (status, tr) = get(
        &c,
        &format!("{api}/trend?service=pay&field=throughput&bound=3&{range}"),
    )
    .await;
    assert_eq!(status, 200, "{tr}");
    let t = &tr["data"][0];
    assert_eq!(t["field"], "throughput");
    assert_eq!(t["points"], 10);
    close(&t["slopePerSecond"], 0.02, 1e-12);
    close(&t["intercept"], 1.0, 1e-9);
    close(&t["r2"], 1.0, 1e-12);
    assert_eq!(t["crossesAt"], T0_MS + 105_000);
    assert_eq!(t["alreadyCrossed"], false);

    // bad parameters name themselves
    for (query, parameter) in [
        ("series?window=fast", "window"),
        ("series?start=later", "start"),
        ("compare?baselineStart=x", "baselineStart"),
        ("trend?field=p42", "field"),
        ("trend?bound=lots", "bound"),
        ("alerts?active=maybe", "active"),
        ("alerts?limit=-3", "limit"),
        ("series?scope=a%27b", "scope"),
    ] {
        let (status, bad) = get(&c, &format!("{api}/{query}")).await;
        assert_eq!(status, 400, "{query}: {bad}");
        let msg = bad["errors"][0]["msg"].as_str().unwrap();
        assert!(msg.contains(&format!("'{parameter}'")), "{query}: {msg}");
    }
    server.abort();

    // the token guards these routes too
    let (addr, server) = serve_with(
        "127.0.0.1:0".parse().unwrap(),
        Readiness::default(),
        router(ApiState::new(db, Some("s3cret".into()))),
    )
    .await
    .unwrap();
    let url = format!("http://{addr}/api/spanline/alerts");
    assert_eq!(c.get(&url).send().await.unwrap().status().as_u16(), 401);
    let ok = c.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    server.abort();
}
