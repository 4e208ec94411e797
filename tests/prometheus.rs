//! spanline's `/metrics` scraped by a real Prometheus server (Debian package), and
//! checked with `promtool check metrics`.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use spanline::codec::avro;
use spanline::config::load_str;
use spanline::kafka::embedded::EmbeddedKafka;
use spanline::kafka::registry_client::RegistryClient;
use spanline::runner::{self, Endpoints};
use spanline::telemetry::http::{self, Readiness};
use spanline::testkit;

const S: i64 = 1_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_call_counts_equal_to_the_spans_processed() {
    let kafka =
        EmbeddedKafka::start(3, &["spans".into(), "traces".into(), "aggregates".into()]).unwrap();
    let registry = spanline::registry::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let ready = Readiness::default();
    let (addr, _server) = http::serve("127.0.0.1:0".parse().unwrap(), ready.clone())
        .await
        .unwrap();
    // the harness uses blocking HTTP: keep it off the async workers
    let Some(prom) =
        tokio::task::block_in_place(|| support::Prometheus::start_or_skip(&addr.to_string()))
    else {
        return;
    };

    let sr = RegistryClient::new(registry.url(), None, None).unwrap();
    let id = sr.register("spans-value", avro::SPAN_SCHEMA).await.unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .unwrap();
    let base = runner::wall_ms() * 1_000_000;
    // 30 traces: gateway root, orders child, db grandchild; 10 of them also call cache
    let mut expected: BTreeMap<&str, f64> = BTreeMap::new();
    let mut send = |p: i32, span: spanline::model::Span| {
        *expected
            .entry(match span.service() {
                "gateway" => "gateway",
                "orders" => "orders",
                "db" => "db",
                _ => "cache",
            })
            .or_default() += 1.0;
        let mut buf = Vec::new();
        avro::put_frame(&mut buf, id);
        avro::write_span(&mut buf, &span);
        producer
            .send(BaseRecord::to("spans").partition(p).key("k").payload(&buf))
            .unwrap();
    };
    for t in 0..30u128 {
        let p = (t % 3) as i32;
        send(p, testkit::span(t + 1, 1, 0, base, base + S / 2, "gateway"));
        send(
            p,
            testkit::span(t + 1, 2, 1, base + 1, base + S / 4, "orders"),
        );
        send(p, testkit::span(t + 1, 3, 2, base + 2, base + S / 8, "db"));
        if t % 3 == 0 {
            send(
                p,
                testkit::span(t + 1, 4, 1, base + 3, base + S / 16, "cache"),
            );
        }
    }
    for p in 0..3 {
        let mut buf = Vec::new();
        avro::put_frame(&mut buf, id);
        avro::write_span(
            &mut buf,
            &testkit::span(
                900 + p as u128,
                1,
                0,
                base + 60 * S,
                base + 60 * S + 1,
                "clock",
            ),
        );
        producer
            .send(BaseRecord::to("spans").partition(p).key("k").payload(&buf))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let text =
        "name: prom\nkafka: {brokers: embedded, group_id: prom, commit_interval: 200ms}\nschema_registry: {url: embedded}\n\
         sources: [{name: spans, topics: [spans], format: avro}]\n\
         stages: [{type: assemble, out_of_orderness: 1s, idle_gap: 2s, idle_partition_timeout: 60s}, {type: analyze},\n\
         {type: aggregate, windows: [10s]}]\n\
         outputs: {traces: {topic: traces}, aggregates: {topic: aggregates}}\n";
    let config = load_str(text, |_| None).unwrap_or_else(|e| panic!("{e}"));
    let endpoints = Endpoints {
        brokers: kafka.bootstrap().to_string(),
        registry: Some(registry.url().to_string()),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner::run(config, endpoints, ready, async move {
        let _ = stopped.await;
    }));

    // the scraped counts reach what was produced (a bounded wait on Prometheus itself)
    let query = "sum by (service_name) (traces_spanmetrics_calls_total)";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut scraped = BTreeMap::new();
    while Instant::now() < deadline {
        scraped = tokio::task::block_in_place(|| prom.query(query))
            .into_iter()
            .map(|(labels, v)| {
                (
                    labels["service_name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    v,
                )
            })
            .collect();
        if expected.iter().all(|(s, n)| scraped.get(*s) == Some(n)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (service, n) in &expected {
        assert_eq!(
            scraped.get(*service),
            Some(n),
            "{service}: scraped {scraped:?}\n{}",
            prom.log_tail()
        );
    }
    // and the service graph: gateway -> orders -> db, gateway -> cache (parent/child edges)
    let edges: BTreeMap<(String, String), f64> = tokio::task::block_in_place(|| {
        prom.query("sum by (client, server) (traces_service_graph_request_total)")
    })
    .into_iter()
    .map(|(l, v)| {
        (
            (
                l["client"].as_str().unwrap().to_string(),
                l["server"].as_str().unwrap().to_string(),
            ),
            v,
        )
    })
    .collect();
    assert_eq!(
        edges.get(&("gateway".into(), "orders".into())),
        Some(&30.0),
        "{edges:?}"
    );
    assert_eq!(
        edges.get(&("orders".into(), "db".into())),
        Some(&30.0),
        "{edges:?}"
    );
    assert_eq!(
        edges.get(&("gateway".into(), "cache".into())),
        Some(&10.0),
        "{edges:?}"
    );

    // the exposition passes promtool's lint
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("traces_spanmetrics_latency_bucket"));
    if let Some(promtool) = support::find_program("promtool") {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    tokio::task::block_in_place(move || drop(prom));
}
