//! Scale-out on a real broker process: `spanline run` processes in one consumer group,
//! fed OTLP protobuf messages that each hold spans of many traces and are not keyed by
//! trace id (as the OpenTelemetry Collector's Kafka exporter writes them). The group goes
//! from 1 to 3 instances and back to 1, and one instance is killed with SIGKILL while it
//! works (and restarted, as its supervisor would), while a fault makes one service fail.
//! A `read_committed` consumer then finds every span in a trace record, each trace whole
//! (the repartition hop re-keys the spans by trace id, and watermarks cross it, so no
//! instance closes a trace whose spans another instance still has on the way); the
//! aggregate count of every service and window never below the input's (partial windows
//! merged by one owner, each window counted once); one firing and one resolved alert for
//! the fault; and nothing written twice, the SIGKILL included.

mod support;

#[path = "chaos/check.rs"]
#[allow(dead_code)]
mod check;
#[path = "chaos/process.rs"]
mod process;

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use spanline::codec::otlp;
use spanline::model::{hex_trace_id, Span};
use spanline::workload::{parse_faults, Workload, WorkloadConfig};

use check::Expected;
use process::Pipeline;

const S: i64 = 1_000_000_000;
const PARTITIONS: i32 = 3;
/// Spans per OTLP message: a batch of the exporter, spans of many traces.
const BATCH: usize = 40;
const WINDOW: i64 = 10 * S;
const FAULTY: &str = "vector-store";

fn pipeline(brokers: &str, group: &str, instance: usize) -> String {
    format!(
        r#"name: scale-out
delivery: exactly_once
kafka:
  brokers: {brokers}
  group_id: {group}
  instance_id: scale-{instance}
  commit_interval: 300ms
  consumer_properties: {{session.timeout.ms: "6000", heartbeat.interval.ms: "500"}}
sources:
  - {{name: spans, topics: [spans], format: otlp_proto}}
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
  - type: detect
    window: 10s
    min_samples: 10
    series_scopes: [service]
    traces: true
  - type: alert
    group_by: [alertname, service]
    group_wait: 5s
    repeat_interval: 1h
    resolve_timeout: 1h
    rules:
      - name: service_errors
        for: 0s
        series: {{scope: service, window: 10s, min_count: 5, match: {{service: {FAULTY}}}}}
        threshold: {{field: error_rate, above: 0.3}}
outputs:
  traces: {{topic: traces, format: json}}
  aggregates: {{topic: aggregates, format: json}}
  alerts: {{topic: alerts, format: json}}
http: {{listen: "127.0.0.1:0"}}
"#
    )
}

#[test]
fn three_instances_assemble_every_trace_once_across_scaling_and_a_kill() {
    let Some(broker) = support::Tansu::start_durable_or_skip() else {
        return;
    };
    broker.create_topics(&[
        ("spans", PARTITIONS),
        ("traces", PARTITIONS),
        ("aggregates", 1),
        ("alerts", 1),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let group = format!("scale-{}", std::process::id());
    let configs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let path = tmp.path().join(format!("scale-{i}.yaml"));
            std::fs::write(&path, pipeline(&broker.bootstrap(), &group, i)).unwrap();
            path
        })
        .collect();
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scale-out.log");
    let _ = std::fs::remove_file(&log);

    let start_ns = (spanline::runner::wall_ms() / 10_000) * 10_000 * 1_000_000;
    let mut workload = Workload::new(WorkloadConfig {
        seed: 3,
        traces_per_second: 20.0,
        start_ns,
        faults: parse_faults(&format!("errors:{FAULTY}*0.9@15s+15s")).unwrap(),
    });
    let mut spans: Vec<Span> = workload.generate_traces(1200);
    spans.sort_by_key(|s| s.end_ns);
    let mut expected = Expected::default();
    for s in &spans {
        expected
            .traces
            .entry(hex_trace_id(s.trace_id))
            .or_insert_with(BTreeSet::new)
            .insert(s.span_id);
        let window = s.end_ns.div_euclid(WINDOW) * WINDOW;
        *expected
            .windows
            .entry((s.resource.service_name.to_string(), window))
            .or_default() += 1;
    }
    let producer: BaseProducer = broker
        .client_config()
        .set("message.timeout.ms", "120000")
        .create()
        .unwrap();
    let mut next_partition = 0;
    let mut send = |batch: &[Span]| {
        let payload = otlp::encode_proto(batch);
        let partition = next_partition;
        next_partition = (next_partition + 1) % PARTITIONS;
        loop {
            let record = BaseRecord::<(), _>::to("spans")
                .partition(partition)
                .payload(&payload);
            match producer.send(record) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    };
    let messages: Vec<&[Span]> = spans.chunks(BATCH).collect();
    let phases: Vec<&[&[Span]]> = messages.chunks(messages.len() / 4 + 1).collect();
    let ready = |p: &Pipeline| {
        assert!(
            p.wait_ready(Duration::from_secs(180)),
            "an instance never owned partitions\n{}",
            support::file_tail(&log, 30)
        );
    };
    let feed = |phase: &[&[Span]], send: &mut dyn FnMut(&[Span])| {
        for m in phase {
            send(m);
            std::thread::park_timeout(Duration::from_millis(15));
        }
        producer.flush(Duration::from_secs(120)).unwrap();
    };

    // one instance
    let mut instances: Vec<Option<Pipeline>> = vec![Some(Pipeline::start(&configs[0], &log))];
    ready(instances[0].as_ref().unwrap());
    feed(phases[0], &mut send);
    // three
    for config in &configs[1..] {
        instances.push(Some(Pipeline::start(config, &log)));
    }
    for p in instances.iter().flatten() {
        ready(p);
    }
    feed(phases[1], &mut send);
    // one of them killed mid-stream, restarted by its supervisor
    let (first, rest) = phases[2].split_at(phases[2].len() / 2);
    feed(first, &mut send);
    instances[1].take().unwrap().signal("KILL");
    feed(rest, &mut send);
    // restarted, as its supervisor would: starting, it aborts the transaction the killed
    // one left open (readers wait for that) and takes its share of the partitions again
    instances[1] = Some(Pipeline::start(&configs[1], &log));
    ready(instances[1].as_ref().unwrap());
    // back to one
    for p in instances[1..].iter_mut() {
        let mut p = p.take().unwrap();
        p.signal("TERM");
        assert!(p.wait_success(), "{}", support::file_tail(&log, 30));
    }
    feed(phases[3], &mut send);
    // a span far ahead on every partition: event time passes every trace
    let last_end = spans.iter().map(|s| s.end_ns).max().unwrap();
    for p in 0..PARTITIONS {
        let at = last_end + 600 * S;
        let clock = spanline::testkit::span(u128::MAX - p as u128, 1, 0, at, at + 1, "clock");
        send(&[clock]);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let complete = check::wait_for_traces(&broker, &expected, Duration::from_secs(180));
    let last = instances[0].as_mut().unwrap();
    assert!(last.running(), "{}", support::file_tail(&log, 30));
    let counters = last.counters();
    assert!(
        complete,
        "traces missing\n{counters}\n{}",
        support::file_tail(&log, 40)
    );
    last.signal("TERM");
    assert!(last.wait_success(), "{}", support::file_tail(&log, 30));

    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !log_text.contains("revoked partitions not released"),
        "an instance held revoked partitions for 30 s\n{}",
        support::file_tail(&log, 40)
    );
    let found = check::Found::read(&broker);
    // exactly-once across the SIGKILL too: an instance that takes over a partition while
    // the killed instance's transaction is still being committed waits for it (KIP-447's
    // stable offsets, ci/tansu-eos) instead of repeating what it wrote
    let report = check::compare(&expected, &found, FAULTY, true)
        .unwrap_or_else(|e| panic!("{e}\n{counters}\n{}", support::file_tail(&log, 40)));
    println!("scale-out (1 -> 3 -> 1 instances, one killed): {report}");
}
