//! End to end on the embedded broker: spans in (Avro, OTLP protobuf, OTLP JSON), traces
//! out, dead letters, a crash and restart, and live versus replay.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use apache_avro::Schema;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use spanline::codec::{avro, otlp};
use spanline::config::{load_str, PipelineConfig};
use spanline::kafka::embedded::EmbeddedKafka;
use spanline::kafka::registry_client::RegistryClient;
use spanline::model::{hex_trace_id, Span};
use spanline::runner::{self, Endpoints};
use spanline::testkit;

const S: i64 = 1_000_000_000;
const PARTITIONS: i32 = 3;

struct Env {
    kafka: EmbeddedKafka,
    registry: spanline::registry::RegistryHandle,
}

async fn env(topics: &[&str]) -> Env {
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    let kafka = EmbeddedKafka::start(PARTITIONS, &topics).unwrap();
    let registry = spanline::registry::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    Env { kafka, registry }
}

fn pipeline(group: &str, sources: &str, traces_format: &str) -> PipelineConfig {
    pipeline_with(group, sources, traces_format, "")
}

/// The test pipeline with `extra` appended to its stages (and an aggregates output when
/// it aggregates).
fn pipeline_with(group: &str, sources: &str, traces_format: &str, extra: &str) -> PipelineConfig {
    let mut aggregates = String::new();
    if extra.contains("type: aggregate") {
        aggregates.push_str("  aggregates: {topic: aggregates, format: json}\n");
    }
    if extra.contains("type: alert") {
        aggregates.push_str("  alerts: {topic: alerts, format: json}\n");
    }
    let text = format!(
        r#"
name: e2e
kafka: {{brokers: embedded, group_id: {group}, commit_interval: 200ms}}
schema_registry: {{url: embedded}}
sources:
{sources}
stages:
  - type: assemble
    out_of_orderness: 1s
    idle_gap: 2s
    max_duration: 60s
    grace: 30s
    idle_partition_timeout: 60s
{extra}
outputs:
  traces: {{topic: traces, format: {traces_format}}}
  late: {{topic: spans-late, format: avro}}
{aggregates}"#
    );
    load_str(&text, |_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the pipeline in the background; dropping the handle's sender stops it cleanly,
/// aborting the task simulates a crash.
fn start(
    env: &Env,
    config: PipelineConfig,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<runner::RunSummary, runner::RunError>>,
) {
    let endpoints = Endpoints {
        brokers: env.kafka.bootstrap().to_string(),
        registry: Some(env.registry.url().to_string()),
    };
    support::spawn_pipeline(config, endpoints)
}

fn producer(env: &Env) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", env.kafka.bootstrap())
        .create()
        .unwrap()
}

fn send(p: &BaseProducer, topic: &str, partition: i32, value: &[u8]) {
    p.send(
        BaseRecord::to(topic)
            .partition(partition)
            .key("k")
            .payload(value),
    )
    .unwrap();
    p.poll(Duration::ZERO);
}

fn flush(p: &BaseProducer) {
    p.flush(Duration::from_secs(10)).unwrap();
}

/// `traces` traces of a root and three children at event time `base`.
fn traces(first_id: u128, n: u128, base: i64) -> Vec<Span> {
    let mut out = Vec::new();
    for t in first_id..first_id + n {
        out.push(testkit::span(t, 1, 0, base, base + S / 2, "gateway"));
        out.push(testkit::span(t, 2, 1, base + 1, base + S / 10, "orders"));
        out.push(testkit::span(t, 3, 1, base + 2, base + S / 5, "db"));
        out.push(testkit::span(t, 4, 2, base + 3, base + S / 20, "cache"));
    }
    out
}

/// One span per partition far ahead in event time, so every partition's watermark passes.
fn pushers(id: u128, base: i64) -> Vec<(i32, Span)> {
    (0..PARTITIONS)
        .map(|p| {
            (
                p,
                testkit::span(id + p as u128, 1, 0, base, base + 1, "clock"),
            )
        })
        .collect()
}

fn framed(id: u32, span: &Span) -> Vec<u8> {
    let mut buf = Vec::new();
    avro::put_frame(&mut buf, id);
    avro::write_span(&mut buf, span);
    buf
}

struct Received {
    key: Vec<u8>,
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// Reads `topic` from the beginning until `done` holds or the deadline passes.
fn read_until(
    env: &Env,
    topic: &str,
    deadline: Duration,
    mut done: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env.kafka.bootstrap())
        .set("group.id", "e2e-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + deadline;
    while Instant::now() < end && !done(&got) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            got.push(Received {
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    got
}

fn field<'a>(fields: &'a [(String, Value)], name: &str) -> &'a Value {
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

/// Decodes Avro trace records: trace id → (span ids, close reason, amendment).
fn decode_traces(records: &[Received]) -> Vec<(u128, BTreeSet<u64>, String, bool)> {
    let schema = Schema::parse_str(avro::TRACE_SCHEMA).unwrap();
    records
        .iter()
        .map(|r| {
            let (_, datum) = avro::unframe(&r.value).unwrap();
            let Value::Record(f) = avro::read_value(&schema, None, datum).unwrap() else {
                panic!()
            };
            let Value::Fixed(16, id) = field(&f, "trace_id") else {
                panic!()
            };
            let id = u128::from_be_bytes(id.as_slice().try_into().unwrap());
            let Value::Array(spans) = field(&f, "spans") else {
                panic!()
            };
            let ids = spans
                .iter()
                .map(|s| {
                    let Value::Record(sf) = s else { panic!() };
                    let Value::Fixed(8, b) = field(sf, "span_id") else {
                        panic!()
                    };
                    u64::from_be_bytes(b.as_slice().try_into().unwrap())
                })
                .collect();
            let Value::Enum(_, reason) = field(&f, "close_reason") else {
                panic!()
            };
            let Value::Boolean(amendment) = field(&f, "amendment") else {
                panic!()
            };
            // the key is the Avro TraceKey with the same id
            let (_, key) = avro::unframe(&r.key).unwrap();
            let key_schema = Schema::parse_str(avro::TRACE_KEY_SCHEMA).unwrap();
            let Value::Record(kf) = avro::read_value(&key_schema, None, key).unwrap() else {
                panic!()
            };
            assert_eq!(field(&kf, "trace_id"), &Value::String(hex_trace_id(id)));
            (id, ids, reason.clone(), *amendment)
        })
        .collect()
}

/// True once `group` has a committed offset on some partition of `spans`.
fn wait_for_commit(env: &Env, group: &str, deadline: Duration) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env.kafka.bootstrap())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition("spans", p);
    }
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Ok(c) = consumer.committed_offsets(tpl.clone(), Duration::from_secs(2)) {
            if c.elements()
                .iter()
                .any(|e| matches!(e.offset(), Offset::Offset(o) if o > 0))
            {
                return true;
            }
        }
    }
    false
}

fn now_ns() -> i64 {
    runner::wall_ms() * 1_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_spans_become_traces_and_bad_records_are_dead_lettered() {
    let env = env(&["spans", "spans-dlq", "traces", "spans-late"]).await;
    let sr = RegistryClient::new(env.registry.url(), None, None).unwrap();
    let id = sr.register("spans-value", avro::SPAN_SCHEMA).await.unwrap();
    let config = pipeline(
        "g-avro",
        "  - {name: spans, topics: [spans], format: avro, dead_letter_topic: spans-dlq}",
        "avro",
    );
    let (stop, task) = start(&env, config);

    let base = now_ns();
    let p = producer(&env);
    let spans = traces(100, 30, base);
    // spans of one trace spread over partitions, out of order, one duplicate
    for (i, s) in spans.iter().rev().enumerate() {
        send(&p, "spans", (i % 3) as i32, &framed(id, s));
    }
    send(&p, "spans", 0, &framed(id, &spans[5]));
    send(&p, "spans", 1, b"\x00\x00\x00\x00\x01garbage");
    send(&p, "spans", 2, b"{\"not\": \"avro\"}");
    for (part, s) in pushers(900, base + 30 * S) {
        send(&p, "spans", part, &framed(id, &s));
    }
    flush(&p);

    let got = read_until(&env, "traces", Duration::from_secs(60), |r| r.len() >= 30);
    let decoded = decode_traces(&got);
    let by_id: HashMap<u128, &(u128, BTreeSet<u64>, String, bool)> =
        decoded.iter().map(|t| (t.0, t)).collect();
    for t in 100..130u128 {
        let (_, ids, reason, amendment) = by_id
            .get(&t)
            .unwrap_or_else(|| panic!("trace {t} missing; got {}", decoded.len()));
        assert_eq!(ids, &BTreeSet::from([1, 2, 3, 4]), "trace {t}");
        assert_eq!(reason, "completed");
        assert!(!amendment);
    }
    assert_eq!(
        decoded.iter().filter(|t| (100..130).contains(&t.0)).count(),
        30,
        "one record per trace: the duplicate was dropped"
    );

    let dead = read_until(&env, "spans-dlq", Duration::from_secs(30), |r| r.len() >= 2);
    assert_eq!(dead.len(), 2);
    let garbage = dead
        .iter()
        .find(|d| d.value == b"\x00\x00\x00\x00\x01garbage")
        .expect("record kept unchanged");
    assert_eq!(garbage.headers["spanline.source.topic"], "spans");
    assert_eq!(garbage.headers["spanline.source.schema_id"], "1");
    assert!(garbage.headers.contains_key("spanline.source.offset"));
    assert!(garbage.headers.contains_key("spanline.error.message"));
    let json = dead.iter().find(|d| d.value.starts_with(b"{")).unwrap();
    assert_eq!(json.headers["spanline.error.reason"], "bad_magic_byte");

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_proto_and_json_messages_with_many_spans() {
    let env = env(&["otlp-proto", "otlp-json", "traces", "spans-late"]).await;
    let config = pipeline(
        "g-otlp",
        "  - {name: proto, topics: [otlp-proto], format: otlp_proto}\n  - {name: json, topics: [otlp-json], format: otlp_json}",
        "json",
    );
    let (stop, task) = start(&env, config);
    let base = now_ns();
    let p = producer(&env);
    let proto_spans = traces(200, 10, base);
    let json_spans = traces(300, 10, base);
    for (i, chunk) in proto_spans.chunks(7).enumerate() {
        send(&p, "otlp-proto", (i % 3) as i32, &otlp::encode_proto(chunk));
    }
    for (i, chunk) in json_spans.chunks(9).enumerate() {
        send(&p, "otlp-json", (i % 3) as i32, &otlp::encode_json(chunk));
    }
    for (topic, id) in [("otlp-proto", 910), ("otlp-json", 920)] {
        for (part, s) in pushers(id, base + 30 * S) {
            let bytes = if topic == "otlp-proto" {
                otlp::encode_proto([&s])
            } else {
                otlp::encode_json([&s])
            };
            send(&p, topic, part, &bytes);
        }
    }
    flush(&p);
    let got = read_until(&env, "traces", Duration::from_secs(60), |r| r.len() >= 20);
    let mut seen = BTreeMap::new();
    for r in &got {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(
            std::str::from_utf8(&r.key).unwrap(),
            v["trace_id"].as_str().unwrap()
        );
        seen.insert(v["trace_id"].as_str().unwrap().to_string(), v);
    }
    for t in (200..210u128).chain(300..310) {
        let v = seen
            .get(&hex_trace_id(t))
            .unwrap_or_else(|| panic!("trace {t} missing"));
        assert_eq!(v["span_count"], 4);
        assert_eq!(v["root_service"], "gateway");
        assert_eq!(
            v["services"],
            serde_json::json!(["cache", "db", "gateway", "orders"])
        );
        assert_eq!(v["spans"][0]["span_id"], "0000000000000001");
        assert_eq!(
            v["spans"][0]["attributes"]["http.response.status_code"],
            200
        );
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_window_then_restart_loses_no_span() {
    let env = env(&["spans", "traces", "spans-late"]).await;
    let sr = RegistryClient::new(env.registry.url(), None, None).unwrap();
    let id = sr.register("spans-value", avro::SPAN_SCHEMA).await.unwrap();
    let sources = "  - {name: spans, topics: [spans], format: avro}";
    let p = producer(&env);
    let base = now_ns();

    // first run: 10 complete traces, and 10 traces whose roots have not arrived yet
    let (_stop_a, task_a) = start(&env, pipeline("g-crash", sources, "avro"));
    let done = traces(400, 10, base);
    let open = traces(500, 10, base + 10 * S);
    for (i, s) in done.iter().enumerate() {
        send(&p, "spans", (i % 3) as i32, &framed(id, s));
    }
    let (open_roots, open_children): (Vec<Span>, Vec<Span>) =
        open.into_iter().partition(|s| s.is_root());
    for (i, s) in open_children.iter().enumerate() {
        send(&p, "spans", (i % 3) as i32, &framed(id, s));
    }
    for (part, s) in pushers(950, base + 8 * S) {
        send(&p, "spans", part, &framed(id, &s));
    }
    flush(&p);
    let first = read_until(&env, "traces", Duration::from_secs(60), |r| r.len() >= 10);
    assert!(
        first.len() >= 10,
        "the complete traces closed before the crash"
    );
    // wait until the group has committed something, then crash: no flush, no final commit
    assert!(
        wait_for_commit(&env, "g-crash", Duration::from_secs(30)),
        "no offset was committed"
    );
    task_a.abort();
    let _ = task_a.await;

    // the missing roots arrive; a new process in the same group takes over
    for (i, s) in open_roots.iter().enumerate() {
        send(&p, "spans", (i % 3) as i32, &framed(id, s));
    }
    for (part, s) in pushers(960, base + 60 * S) {
        send(&p, "spans", part, &framed(id, &s));
    }
    flush(&p);
    let (stop_b, task_b) = start(&env, pipeline("g-crash", sources, "avro"));
    let all = read_until(&env, "traces", Duration::from_secs(90), |r| {
        let d = decode_traces(r);
        (500..510u128).all(|t| d.iter().any(|x| x.0 == t && x.1.len() == 4))
    });
    let decoded = decode_traces(&all);
    // every span produced is in the traces topic, and the reopened traces are whole
    for t in (400..410u128).chain(500..510) {
        let spans: BTreeSet<u64> = decoded
            .iter()
            .filter(|x| x.0 == t)
            .flat_map(|x| x.1.iter().copied())
            .collect();
        assert_eq!(
            spans,
            BTreeSet::from([1, 2, 3, 4]),
            "trace {t} lost spans across the crash"
        );
    }
    for t in 500..510u128 {
        assert!(
            decoded
                .iter()
                .any(|x| x.0 == t && x.1.len() == 4 && x.2 == "completed"),
            "trace {t} rebuilt whole after restart"
        );
    }
    let _ = stop_b.send(());
    task_b.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_replay_close_the_same_traces() {
    use spanline::workload::{Workload, WorkloadConfig};
    let env = env(&["otlp-json", "traces", "spans-late"]).await;
    let config = pipeline(
        "g-live",
        "  - {name: json, topics: [otlp-json], format: otlp_json}",
        "json",
    );
    let base = now_ns();
    let mut workload = Workload::new(WorkloadConfig {
        seed: 11,
        traces_per_second: 20.0,
        start_ns: base,
        faults: vec![],
    });
    let mut spans = workload.generate_traces(100);
    spans.sort_by_key(|s| s.end_ns);
    let last_end = spans.iter().map(|s| s.end_ns).max().unwrap();
    let trace_ids: BTreeSet<u128> = spans.iter().map(|s| s.trace_id).collect();

    // the same messages go to Kafka and to a file of OTLP JSON lines
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("spans.jsonl");
    let mut lines = String::new();
    let p = producer(&env);
    for (i, chunk) in spans.chunks(25).enumerate() {
        let bytes = otlp::encode_json(chunk);
        lines.push_str(std::str::from_utf8(&bytes).unwrap());
        lines.push('\n');
        send(&p, "otlp-json", (i % 3) as i32, &bytes);
    }
    for (part, s) in pushers(990, last_end + 120 * S) {
        send(&p, "otlp-json", part, &otlp::encode_json([&s]));
    }
    flush(&p);
    std::fs::write(&input, lines).unwrap();

    let (stop, task) = start(&env, config.clone());
    let got = read_until(&env, "traces", Duration::from_secs(60), |r| {
        r.len() >= trace_ids.len()
    });
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let live: BTreeMap<String, serde_json::Value> = got
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.value).unwrap())
        .map(|v| (v["trace_id"].as_str().unwrap().to_string(), v))
        .collect();
    assert_eq!(
        live.len(),
        trace_ids.len(),
        "every workload trace closed live"
    );

    let out = dir.path().join("out");
    spanline::replay::replay(&config, &[input], &out).unwrap();
    let replayed: BTreeMap<String, serde_json::Value> =
        std::fs::read_to_string(out.join("traces.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["trace_id"].as_str().unwrap().to_string(), v))
            .collect();
    assert_eq!(replayed.len(), trace_ids.len());
    for (id, trace) in &live {
        assert_eq!(
            Some(trace),
            replayed.get(id),
            "trace {id} differs between live and replay"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_their_topic_keyed_by_fingerprint_and_their_acknowledgement_is_timed() {
    let env = env(&["spans", "traces", "spans-late", "aggregates", "alerts"]).await;
    let sr = RegistryClient::new(env.registry.url(), None, None).unwrap();
    let id = sr.register("spans-value", avro::SPAN_SCHEMA).await.unwrap();
    let config = pipeline_with(
        "g-alerts",
        "  - {name: spans, topics: [spans], format: avro}",
        "json",
        r#"
  - type: aggregate
    windows: [10s]
    dimensions:
      service: [service]
    service_graph: false
  - type: alert
    group_wait: 0s
    rules:
      - name: busy_service
        severity: warning
        for: 0s
        series: {scope: service, window: 10s}
        threshold: {field: count, above: 0}
        annotations:
          summary: "{{service}} served {{value}} spans"
"#,
    );
    let acked_before = spanline::telemetry::metrics::ALERT_ACK_LATENCY.get_sample_count();
    let base = now_ns() / (10 * S) * (10 * S);
    let p = producer(&env);
    for (i, s) in traces(1, 20, base).iter().enumerate() {
        send(&p, "spans", (i % 3) as i32, &framed(id, s));
    }
    for (part, s) in pushers(900, base + 120 * S) {
        send(&p, "spans", part, &framed(id, &s));
    }
    flush(&p);

    let (stop, task) = start(&env, config);
    let services = ["cache", "db", "gateway", "orders"];
    let got = read_until(&env, "alerts", Duration::from_secs(60), |r| {
        r.len() >= services.len()
    });
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    let mut fired = BTreeSet::new();
    for r in &got {
        let alert: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(
            r.key,
            alert["fingerprint"].as_str().unwrap().as_bytes(),
            "the record key is the fingerprint: {alert}"
        );
        assert_eq!(alert["rule"], "busy_service");
        if alert["status"] == "firing" {
            fired.insert(alert["labels"]["service"].as_str().unwrap().to_string());
        }
    }
    let want: BTreeSet<String> = services.iter().map(|s| s.to_string()).collect();
    assert!(
        want.is_subset(&fired),
        "firing alerts for {fired:?}, want {want:?}"
    );
    let acked = spanline::telemetry::metrics::ALERT_ACK_LATENCY.get_sample_count() - acked_before;
    assert!(
        acked >= services.len() as u64,
        "{acked} alert acknowledgements timed for {} alert records",
        got.len()
    );
}
