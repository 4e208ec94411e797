//! The trace repository and its Jaeger query API end to end on the embedded broker:
//! spans in, the pipeline closes traces, the feeder stores them, and the API lists the
//! services, finds a trace by service and operation, returns it whole by id, lists the
//! dependencies, serves a trace's analysis from spanline's own API, rejects a bad
//! parameter with Jaeger's error envelope, and requires the bearer token when one is set.

mod support;

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::Value;

use spanline::codec::avro;
use spanline::config::load_str;
use spanline::kafka::embedded::EmbeddedKafka;
use spanline::kafka::registry_client::RegistryClient;
use spanline::model::{hex_trace_id, Span, StatusCode};
use spanline::runner::{self, Endpoints};
use spanline::serve::api::{router, ApiState};
use spanline::serve::RepositoryService;
use spanline::telemetry::http::{serve_with, Readiness};
use spanline::testkit;

const S: i64 = 1_000_000_000;
const PARTITIONS: i32 = 3;

/// A root in `gateway` with children in `orders` and `db`, and `cache` under `orders`.
fn trace_spans(id: u128, base: i64) -> Vec<Span> {
    let mut spans = vec![
        testkit::span(id, 1, 0, base, base + S / 2, "gateway"),
        testkit::span(id, 2, 1, base + 1, base + S / 10, "orders"),
        testkit::span(id, 3, 1, base + 2, base + S / 5, "db"),
        testkit::span(id, 4, 2, base + 3, base + S / 20, "cache"),
    ];
    if id.is_multiple_of(2) {
        spans[2].status = StatusCode::Error;
    }
    spans
}

fn framed(schema_id: u32, span: &Span) -> Vec<u8> {
    let mut buf = Vec::new();
    avro::put_frame(&mut buf, schema_id);
    avro::write_span(&mut buf, span);
    buf
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).send().await.expect("request");
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jaeger_api_serves_the_pipelines_traces() {
    let kafka = EmbeddedKafka::start(
        PARTITIONS,
        &["spans", "traces", "spans-late"].map(String::from),
    )
    .unwrap();
    let registry = spanline::registry::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sr = RegistryClient::new(registry.url(), None, None).unwrap();
    let schema_id = sr.register("spans-value", avro::SPAN_SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("repo").join("traces.db");
    let text = format!(
        r#"
name: query-api
kafka: {{brokers: embedded, group_id: g-query-api, commit_interval: 200ms}}
schema_registry: {{url: embedded}}
sources:
  - {{name: spans, topics: [spans], format: avro}}
stages:
  - type: assemble
    out_of_orderness: 1s
    idle_gap: 2s
    max_duration: 60s
    grace: 30s
    idle_partition_timeout: 60s
  - type: analyze
outputs:
  traces: {{topic: traces, format: avro}}
  late: {{topic: spans-late, format: avro}}
repository: {{path: "{}", batch_size: 50}}
"#,
        db.display()
    );
    let config = load_str(&text, |_| None).unwrap_or_else(|e| panic!("{e}"));
    let endpoints = Endpoints {
        brokers: kafka.bootstrap().to_string(),
        registry: Some(registry.url().to_string()),
    };
    let (stop, task) = support::spawn_pipeline(config.clone(), endpoints);
    let service = RepositoryService::start(&config, kafka.bootstrap()).unwrap();
    assert_eq!(service.path(), db);
    let (addr, server) = serve_with(
        "127.0.0.1:0".parse().unwrap(),
        Readiness::default(),
        router(ApiState::new(db.clone(), None)),
    )
    .await
    .unwrap();
    let (secured, secured_server) = serve_with(
        "127.0.0.1:0".parse().unwrap(),
        Readiness::default(),
        router(ApiState::new(db.clone(), Some("s3cret".into()))),
    )
    .await
    .unwrap();

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .unwrap();
    let base = runner::wall_ms() * 1_000_000;
    let ids: Vec<u128> = (0x1000..0x1014).collect();
    let mut n = 0;
    for &id in &ids {
        for s in trace_spans(id, base) {
            let record = framed(schema_id, &s);
            let key = hex_trace_id(id);
            producer
                .send(
                    BaseRecord::to("spans")
                        .partition(n % PARTITIONS)
                        .key(&key)
                        .payload(&record),
                )
                .unwrap();
            n += 1;
        }
    }
    // one span per partition far ahead in event time closes the traces
    for p in 0..PARTITIONS {
        let s = testkit::span(
            0x9000 + p as u128,
            1,
            0,
            base + 30 * S,
            base + 30 * S + 1,
            "clock",
        );
        let record = framed(schema_id, &s);
        producer
            .send(
                BaseRecord::<(), _>::to("spans")
                    .partition(p)
                    .payload(&record),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let client = reqwest::Client::new();
    let api = format!("http://{addr}/api");
    let search = format!("{api}/traces?service=orders&operation=orders%20op&limit=100");
    let deadline = Instant::now() + Duration::from_secs(90);
    let found = loop {
        let (status, body) = get(&client, &search).await;
        let count = body["data"].as_array().map_or(0, Vec::len);
        if status == 200 && count >= ids.len() {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "traces did not reach the repository: last answer {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(found["total"], ids.len());
    assert_eq!(found["errors"], Value::Null);
    let first = &found["data"][0];
    assert!(ids.iter().any(|id| first["traceID"] == hex_trace_id(*id)));

    // services and operations
    let (status, services) = get(&client, &format!("{api}/services")).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = services["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for s in ["cache", "db", "gateway", "orders"] {
        assert!(names.contains(&s), "{s} missing from {names:?}");
    }
    assert_eq!(services["total"], names.len());
    let (_, ops) = get(&client, &format!("{api}/services/orders/operations")).await;
    assert_eq!(ops["data"], serde_json::json!(["orders op"]));
    let (_, ops) = get(
        &client,
        &format!("{api}/operations?service=gateway&spanKind=server"),
    )
    .await;
    assert_eq!(
        ops["data"],
        serde_json::json!([{"name": "gateway op", "spanKind": "server"}])
    );

    // a trace by id, whole
    let id = hex_trace_id(ids[0]);
    let (status, one) = get(&client, &format!("{api}/traces/{id}")).await;
    assert_eq!(status, 200, "{one}");
    let trace = &one["data"][0];
    assert_eq!(trace["traceID"], id.as_str());
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 4);
    let mut span_ids: Vec<&str> = spans
        .iter()
        .map(|s| s["spanID"].as_str().unwrap())
        .collect();
    span_ids.sort();
    assert_eq!(
        span_ids,
        [
            "0000000000000001",
            "0000000000000002",
            "0000000000000003",
            "0000000000000004"
        ]
    );
    let cache = spans
        .iter()
        .find(|s| s["spanID"] == "0000000000000004")
        .unwrap();
    assert_eq!(cache["references"][0]["refType"], "CHILD_OF");
    assert_eq!(cache["references"][0]["spanID"], "0000000000000002");
    let process = cache["processID"].as_str().unwrap();
    assert_eq!(trace["processes"][process]["serviceName"], "cache");
    assert_eq!(spans[0]["duration"], 500_000, "500 ms in microseconds");

    // spanline's own API: the analysis stored with the trace
    let (status, analysis) = get(&client, &format!("{api}/spanline/traces/{id}/analysis")).await;
    assert_eq!(status, 200, "{analysis}");
    let a = &analysis["data"][0];
    assert_eq!(
        (a["spanCount"].as_u64(), a["durationMs"].as_f64()),
        (Some(4), Some(500.0))
    );
    assert_eq!(a["rootService"], "gateway");
    assert_eq!(a["criticalPath"][0]["spanID"], "0000000000000001");
    assert_eq!(a["bottleneck"]["service"], "gateway", "{a}");
    let (status, alerts) = get(&client, &format!("{api}/spanline/alerts?active=true")).await;
    assert_eq!((status, &alerts["data"]), (200, &serde_json::json!([])));

    // tags: the error spans are in the even traces
    let (_, errors) = get(
        &client,
        &format!("{api}/traces?service=db&tags=%7B%22error%22%3A%22true%22%7D&limit=100"),
    )
    .await;
    assert_eq!(
        errors["data"].as_array().unwrap().len(),
        ids.len() / 2,
        "{errors}"
    );
    let (_, slow) = get(
        &client,
        &format!("{api}/traces?service=gateway&minDuration=1s"),
    )
    .await;
    assert_eq!(slow["data"], serde_json::json!([]));

    // dependencies
    let (status, deps) = get(
        &client,
        &format!(
            "{api}/dependencies?endTs={}&lookback=3600000",
            runner::wall_ms() + 60_000
        ),
    )
    .await;
    assert_eq!(status, 200, "{deps}");
    let links: Vec<(String, String, u64)> = deps["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["parent"].as_str().unwrap().to_string(),
                d["child"].as_str().unwrap().to_string(),
                d["callCount"].as_u64().unwrap(),
            )
        })
        .collect();
    for (parent, child) in [
        ("gateway", "orders"),
        ("gateway", "db"),
        ("orders", "cache"),
    ] {
        let link = links.iter().find(|l| l.0 == parent && l.1 == child);
        assert_eq!(
            link.map(|l| l.2),
            Some(ids.len() as u64),
            "{parent} -> {child} in {links:?}"
        );
    }

    // bad parameters and unknown traces: Jaeger's error envelope
    let (status, bad) = get(&client, &format!("{api}/traces?service=orders&limit=lots")).await;
    assert_eq!(status, 400);
    assert_eq!(bad["data"], Value::Null);
    assert_eq!(bad["errors"][0]["code"], 400);
    assert!(
        bad["errors"][0]["msg"].as_str().unwrap().contains("limit"),
        "{bad}"
    );
    let (status, bad) = get(&client, &format!("{api}/traces?minDuration=soon")).await;
    assert_eq!(status, 400);
    assert!(bad["errors"][0]["msg"]
        .as_str()
        .unwrap()
        .contains("minDuration"));
    let (status, bad) = get(&client, &format!("{api}/traces/not-hex")).await;
    assert_eq!(status, 400);
    assert!(bad["errors"][0]["msg"]
        .as_str()
        .unwrap()
        .contains("traceID"));
    let (status, missing) = get(&client, &format!("{api}/traces/{}", "ab".repeat(16))).await;
    assert_eq!(
        (status, &missing["errors"][0]["code"]),
        (404, &Value::from(404))
    );

    // the bearer token
    let url = format!("http://{secured}/api/services");
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client
        .get(format!("http://{secured}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "only /api/ needs the token");

    service.stop().await;
    let _ = stop.send(());
    let _ = task.await;
    server.abort();
    secured_server.abort();
}
