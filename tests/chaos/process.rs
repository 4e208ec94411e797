//! A real `spanline run` process killed with SIGKILL at random moments while it consumes,
//! restarted each time, on a real broker process (tansu): with the stages' state in
//! changelog topics, no span is lost, no trace is written partially, every record of one
//! trace is the same whole trace (at-least-once duplicates are whole copies), and no
//! aggregate window undercounts. Duplicates are counted and printed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use spanline::codec::otlp;
use spanline::model::{hex_trace_id, Span};
use spanline::workload::{Workload, WorkloadConfig};

const S: i64 = 1_000_000_000;
const PARTITIONS: i32 = 3;
const WINDOW: i64 = 10 * S;
const KILLS: usize = 3;

fn pipeline(brokers: &str, group: &str) -> String {
    format!(
        r#"name: crash
kafka:
  brokers: {brokers}
  group_id: {group}
  commit_interval: 200ms
  consumer_properties: {{session.timeout.ms: "6000", heartbeat.interval.ms: "500"}}
sources:
  - {{name: spans, topics: [spans], format: otlp_json}}
stages:
  - type: assemble
    out_of_orderness: 1s
    idle_gap: 2s
    max_duration: 5m
    grace: 5m
    idle_partition_timeout: 60s
  - type: aggregate
    windows: [10s]
    dimensions: {{service: [service]}}
    service_graph: false
outputs:
  traces: {{topic: traces, format: json}}
  aggregates: {{topic: aggregates, format: json}}
http: {{listen: "127.0.0.1:0"}}
"#
    )
}

/// One `spanline run` process; its log goes to a file.
struct Pipeline {
    child: Child,
    readyz: String,
    metrics: String,
}

impl Pipeline {
    fn start(config: &Path, log: &Path, reset: bool) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spanline"));
        cmd.arg("run").arg(config);
        if reset {
            cmd.arg("--reset-state");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let metrics = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("metrics: ").map(str::to_string))
            .expect("the pipeline prints its metrics url");
        Self {
            child,
            readyz: metrics.replace("/metrics", "/readyz"),
            metrics,
        }
    }

    /// spanline's own counters that tell where spans went, for failure messages.
    fn counters(&self) -> String {
        let text = reqwest::blocking::get(&self.metrics)
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .filter(|l| {
                !l.starts_with('#')
                    && [
                        "open_traces",
                        "late_spans",
                        "spans_in",
                        "traces_closed",
                        "duplicate",
                        "state_records",
                    ]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the pipeline owns partitions (its state restored).
    fn wait_ready(&self, timeout: Duration) -> bool {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if client
                .get(&self.readyz)
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                return true;
            }
            std::thread::park_timeout(Duration::from_millis(100));
        }
        false
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record of `topic` from the start, as JSON.
fn read_all(broker: &support::Tansu, topic: &str, partitions: i32) -> Vec<serde_json::Value> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", format!("reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .unwrap();
            ends.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    // tansu can report a high watermark below the last record of a batch: past the
    // reported end, read on until the partitions are quiet
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = None;
                if let Some(v) = m.payload() {
                    out.push(serde_json::from_slice(v).unwrap());
                }
                if ends
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    ends.remove(&m.partition());
                }
            }
            _ => {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if ends.is_empty() && since.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
        }
    }
    assert!(ends.is_empty(), "{topic} not read to its end");
    out
}

#[test]
fn sigkill_and_restart_lose_nothing_and_write_no_partial_trace() {
    let Some(broker) = support::Tansu::start_or_skip() else {
        return;
    };
    broker.create_topics(&[
        ("spans", PARTITIONS),
        ("traces", PARTITIONS),
        ("aggregates", 1),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("crash.yaml");
    let group = format!("crash-{}", std::process::id());
    std::fs::write(&config, pipeline(&broker.bootstrap(), &group)).unwrap();
    let log = tmp.path().join("spanline.log");

    // the input: traces of the demo workload, one span a record, spread over the
    // partitions by span id (not keyed by trace id), in end-time order
    let start_ns = (spanline::runner::wall_ms() / 10_000) * 10_000 * 1_000_000;
    let mut workload = Workload::new(WorkloadConfig {
        seed: 7,
        traces_per_second: 20.0,
        start_ns,
        faults: Vec::new(),
    });
    let mut spans: Vec<Span> = workload.generate_traces(800);
    spans.sort_by_key(|s| s.end_ns);
    let last_end = spans.iter().map(|s| s.end_ns).max().unwrap();
    let mut expected: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut windows: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for s in &spans {
        expected
            .entry(hex_trace_id(s.trace_id))
            .or_default()
            .insert(s.span_id);
        let window = s.end_ns.div_euclid(WINDOW) * WINDOW;
        *windows
            .entry((s.resource.service_name.to_string(), window))
            .or_default() += 1;
    }
    // then, per partition, a span far ahead: event time passes every trace and window
    let clock: Vec<Span> = (0..PARTITIONS)
        .map(|p| {
            let at = last_end + 600 * S;
            spanline::testkit::span(u128::MAX - p as u128, 1, 0, at, at + 1, "clock")
        })
        .collect();

    let mut counters = String::new();
    let producer: BaseProducer = broker.client_config().create().unwrap();
    let send = |s: &Span, partition: i32| {
        let payload = otlp::encode_json([s]);
        loop {
            match producer.send(
                BaseRecord::to("spans")
                    .partition(partition)
                    .key("k")
                    .payload(&payload),
            ) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    };

    // the input arrives in batches, each while a pipeline runs; all but the last are
    // killed somewhere in the middle of their batch
    let mut rng = SmallRng::seed_from_u64(11);
    let batches: Vec<&[Span]> = spans.chunks(spans.len() / (KILLS + 1) + 1).collect();
    for (k, batch) in batches.iter().enumerate() {
        let p = Pipeline::start(&config, &log, false);
        assert!(
            p.wait_ready(Duration::from_secs(120)),
            "run {k} never owned partitions\n{}",
            support::file_tail(&log, 30)
        );
        let chunks: Vec<&[Span]> = batch.chunks(100).collect();
        let kill_at = (k < KILLS).then(|| rng.random_range(chunks.len() / 4..chunks.len()));
        for (i, chunk) in chunks.iter().enumerate() {
            if kill_at == Some(i) {
                // mid-stream: while it reads, assembles, writes or checkpoints
                p.signal("KILL");
            }
            for s in *chunk {
                send(s, (s.span_id % PARTITIONS as u64) as i32);
            }
            producer.flush(Duration::from_secs(30)).unwrap();
            std::thread::park_timeout(Duration::from_millis(20));
        }
        if k < KILLS {
            drop(p);
            continue;
        }
        for (i, s) in clock.iter().enumerate() {
            send(s, i as i32);
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        // the last run finishes the stream and stops cleanly
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let traces = read_all(&broker, "traces", PARTITIONS);
            let seen: BTreeSet<String> = traces
                .iter()
                .filter_map(|t| t["trace_id"].as_str().map(str::to_string))
                .collect();
            if expected.keys().all(|t| seen.contains(t)) || Instant::now() > deadline {
                break;
            }
            std::thread::park_timeout(Duration::from_millis(500));
        }
        counters = p.counters();
        p.signal("TERM");
        let mut p = p;
        assert!(
            p.child.wait().unwrap().success(),
            "{}",
            support::file_tail(&log, 30)
        );
    }

    // every span in a trace record, every record of a trace the whole trace
    let traces = read_all(&broker, "traces", PARTITIONS);
    let mut records: BTreeMap<String, Vec<BTreeSet<u64>>> = BTreeMap::new();
    for t in &traces {
        let id = t["trace_id"].as_str().unwrap().to_string();
        assert_eq!(t["amendment"], false, "trace {id} written in pieces");
        let spans: BTreeSet<u64> = t["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| u64::from_str_radix(s["span_id"].as_str().unwrap(), 16).unwrap())
            .collect();
        records.entry(id).or_default().push(spans);
    }
    let lost: Vec<&String> = expected
        .keys()
        .filter(|t| !records.contains_key(*t))
        .collect();
    if !lost.is_empty() {
        let input = read_all(&broker, "spans", PARTITIONS);
        let in_input = input
            .iter()
            .filter(|r| {
                let text = r.to_string();
                lost.iter().any(|t| text.contains(t.as_str()))
            })
            .count();
        // the history of the lost traces in the changelog
        let consumer: BaseConsumer = broker
            .client_config()
            .set("group.id", "changelog-reader")
            .create()
            .unwrap();
        let topic = format!("{group}-assemble-changelog");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        let ids: Vec<u128> = lost
            .iter()
            .map(|t| u128::from_str_radix(t, 16).unwrap())
            .collect();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset("traces", p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(300)) {
                let key = m.key().unwrap_or_default();
                if m.topic() == "traces" {
                    let k = String::from_utf8_lossy(key);
                    if lost.iter().any(|t| **t == k) {
                        println!("traces p{} o{} {k}", m.partition(), m.offset());
                    }
                    continue;
                }
                if key.len() == 17 {
                    let id = u128::from_be_bytes(key[1..].try_into().unwrap());
                    if ids.contains(&id) {
                        println!(
                            "changelog p{} o{} {} {:x} value {:?}",
                            m.partition(),
                            m.offset(),
                            key[0] as char,
                            id,
                            m.payload().map(<[u8]>::len)
                        );
                    }
                }
            }
        }
        println!(
            "input topic: {} records of {} sent; {in_input} hold spans of the lost traces",
            input.len(),
            spans.len() + clock.len()
        );
    }
    assert!(
        lost.is_empty(),
        "{} of {} traces lost, e.g. {:?}\n{counters}\n{}",
        lost.len(),
        expected.len(),
        &lost[..lost.len().min(5)],
        support::file_tail(&log, 40)
    );
    let mut duplicates = 0;
    for (id, want) in &expected {
        let got = records
            .get(id)
            .unwrap_or_else(|| panic!("trace {id} lost\n{}", support::file_tail(&log, 30)));
        for r in got {
            assert_eq!(r, want, "trace {id} written partially");
        }
        duplicates += got.len() - 1;
    }

    // every window of every service counted at least once in full
    let aggregates = read_all(&broker, "aggregates", 1);
    let mut counted: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
    for a in &aggregates {
        let service = a["dimensions"][0]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let start = a["window_start_unix_nano"].as_i64().unwrap();
        counted
            .entry((service, start))
            .or_default()
            .push(a["count"].as_i64().unwrap());
    }
    let mut window_duplicates = 0;
    let mut overcounted = 0;
    for (key, exact) in &windows {
        let got = counted.get(key).unwrap_or_else(|| {
            panic!(
                "window {key:?} never written; {} aggregate records",
                aggregates.len()
            )
        });
        for c in got {
            assert!(c >= exact, "window {key:?} undercounted: {c} < {exact}");
            overcounted += usize::from(c > exact);
        }
        window_duplicates += got.len() - 1;
    }
    println!(
        "{KILLS} kills: {} traces ({} spans) whole, {duplicates} duplicate trace records; {} windows, {window_duplicates} duplicate window records, {overcounted} overcounted",
        expected.len(),
        spans.len(),
        windows.len()
    );
}
