//! The chaos harness: a real `spanline run` process on a real broker process whose data
//! survives its restarts (tansu with sqlite storage and transactions, ci/tansu-eos), fed
//! a known stream with a fault, killed with SIGKILL at random moments (mid-window,
//! mid-transaction, mid-restore) and restarted, while the broker itself is killed and
//! restarted. Then the outputs are read with a `read_committed` consumer and compared with
//! what was fed:
//! - exactly-once: every span in exactly one trace record, aggregate counts per service
//!   and window exact and written once, one firing and one resolved event per alert,
//!   no duplicate at all;
//! - at-least-once: no span missing, no partial trace, no undercounted window, no
//!   re-fired alert; the duplicates (whole copies) are counted and printed.
//!
//! The short version runs in the suite; `scripts/chaos.sh` runs the long one. Sizes
//! come from `SPANLINE_CHAOS_KILLS`, `SPANLINE_CHAOS_BROKER_RESTARTS` and
//! `SPANLINE_CHAOS_TRACES`.

mod support;

#[path = "chaos/check.rs"]
mod check;
#[path = "chaos/process.rs"]
mod process;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use spanline::codec::otlp;
use spanline::model::{hex_trace_id, Span};
use spanline::workload::{parse_faults, Workload, WorkloadConfig};

use check::Expected;
use process::Pipeline;

const S: i64 = 1_000_000_000;
const PARTITIONS: i32 = 3;
const WINDOW: i64 = 10 * S;
const FAULTY: &str = "vector-store";

/// One chaos test at a time: each one loads both cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pipeline(brokers: &str, group: &str, delivery: &str) -> String {
    format!(
        r#"name: chaos
delivery: {delivery}
kafka:
  brokers: {brokers}
  group_id: {group}
  instance_id: chaos
  commit_interval: 300ms
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
fn exactly_once_under_kills_and_broker_restarts() {
    chaos("exactly_once");
}

#[test]
fn at_least_once_under_kills_and_broker_restarts() {
    chaos("at_least_once");
}

/// What interrupts a batch of input.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Disruption {
    /// SIGKILL of the pipeline while it consumes the batch.
    Kill,
    /// SIGKILL of the pipeline soon after it started (restoring, joining).
    KillEarly,
    /// SIGKILL and restart of the broker while the batch is consumed.
    BrokerRestart,
    /// The last batch: the stream ends and the pipeline stops with SIGTERM.
    None,
}

fn chaos(delivery: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut broker) = support::Tansu::start_durable_or_skip() else {
        return;
    };
    let kills = env_or("SPANLINE_CHAOS_KILLS", 3);
    let restarts = env_or("SPANLINE_CHAOS_BROKER_RESTARTS", 1);
    let n_traces = env_or("SPANLINE_CHAOS_TRACES", 1000);
    broker.create_topics(&[
        ("spans", PARTITIONS),
        ("traces", PARTITIONS),
        ("aggregates", 1),
        ("alerts", 1),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("chaos.yaml");
    let group = format!("chaos-{delivery}-{}", std::process::id());
    std::fs::write(&config, pipeline(&broker.bootstrap(), &group, delivery)).unwrap();
    // kept after the test, for a look at what happened when it fails
    let log =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{delivery}.log"));
    let _ = std::fs::remove_file(&log);

    // the input: traces of the demo workload with an error burst, one span a record,
    // spread over the partitions by span id (not keyed by trace id), in end-time order
    let start_ns = (spanline::runner::wall_ms() / 10_000) * 10_000 * 1_000_000;
    let mut workload = Workload::new(WorkloadConfig {
        seed: 7,
        traces_per_second: 20.0,
        start_ns,
        faults: parse_faults(&format!("errors:{FAULTY}*0.9@15s+15s")).unwrap(),
    });
    let mut spans: Vec<Span> = workload.generate_traces(n_traces);
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
    // then, per partition, a span far ahead: event time passes every trace and window
    let last_end = spans.iter().map(|s| s.end_ns).max().unwrap();
    let clock: Vec<Span> = (0..PARTITIONS)
        .map(|p| {
            let at = last_end + 600 * S;
            spanline::testkit::span(u128::MAX - p as u128, 1, 0, at, at + 1, "clock")
        })
        .collect();

    let producer: BaseProducer = broker
        .client_config()
        .set("message.timeout.ms", "120000")
        .create()
        .unwrap();
    let send = |s: &Span, partition: i32| {
        let payload = otlp::encode_json([s]);
        loop {
            let record = BaseRecord::to("spans")
                .partition(partition)
                .key("k")
                .payload(&payload);
            match producer.send(record) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    };

    // the input arrives in batches, each interrupted by one disruption, in random order
    let mut rng = SmallRng::seed_from_u64(11);
    let mut plan: Vec<Disruption> = (0..kills)
        .map(|k| {
            if k % 3 == 2 {
                Disruption::KillEarly
            } else {
                Disruption::Kill
            }
        })
        .chain((0..restarts).map(|_| Disruption::BrokerRestart))
        .collect();
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.random_range(0..=i));
    }
    plan.push(Disruption::None);
    let batches: Vec<&[Span]> = spans.chunks(spans.len() / plan.len() + 1).collect();
    let mut current: Option<Pipeline> = None;
    let mut exits = 0;
    for (k, batch) in batches.iter().enumerate() {
        let disruption = plan.get(k).copied().unwrap_or(Disruption::None);
        // a pipeline that stopped by itself (a transaction the restarted broker lost) is
        // restarted, as a supervisor would; a killed one was taken away already
        if !current.as_mut().is_some_and(Pipeline::running) {
            exits += usize::from(current.is_some());
            current = Some(Pipeline::start(&config, &log));
        }
        if disruption == Disruption::KillEarly {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
            current.take().unwrap().signal("KILL");
            current = Some(Pipeline::start(&config, &log));
        }
        let p = current.as_mut().unwrap();
        assert!(
            p.wait_ready(Duration::from_secs(180)),
            "{delivery}: run {k} never owned partitions\n{}",
            support::file_tail(&log, 30)
        );
        let chunks: Vec<&[Span]> = batch.chunks(100).collect();
        let at = rng.random_range(chunks.len() / 4..chunks.len().max(1));
        for (i, chunk) in chunks.iter().enumerate() {
            if i == at {
                match disruption {
                    // mid-stream: while it reads, assembles, writes or commits
                    Disruption::Kill => current.take().unwrap().signal("KILL"),
                    Disruption::BrokerRestart => broker.restart(),
                    Disruption::KillEarly | Disruption::None => {}
                }
            }
            for s in *chunk {
                send(s, (s.span_id % PARTITIONS as u64) as i32);
            }
            producer.flush(Duration::from_secs(120)).unwrap();
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
    // the last run finishes the stream and stops cleanly (restarted, as a supervisor
    // would, if it stops by itself first)
    let mut clock_sent = false;
    let mut tries = 0;
    let counters = loop {
        tries += 1;
        if !current.as_mut().is_some_and(Pipeline::running) {
            exits += usize::from(current.is_some());
            current = Some(Pipeline::start(&config, &log));
        }
        let p = current.as_mut().unwrap();
        assert!(
            p.wait_ready(Duration::from_secs(180)),
            "{}",
            support::file_tail(&log, 30)
        );
        if !clock_sent {
            for (i, s) in clock.iter().enumerate() {
                send(s, i as i32);
            }
            producer.flush(Duration::from_secs(60)).unwrap();
            clock_sent = true;
        }
        let complete = check::wait_for_traces(&broker, &expected, Duration::from_secs(180));
        let p = current.as_mut().unwrap();
        if complete && p.running() {
            let counters = p.counters();
            p.signal("TERM");
            if p.wait_success() {
                break counters;
            }
        }
        assert!(
            tries < 4,
            "the last run never finished\n{}",
            support::file_tail(&log, 40)
        );
    };

    let found = check::Found::read(&broker);
    let report = check::compare(&expected, &found, FAULTY, delivery == "exactly_once")
        .unwrap_or_else(|e| {
            panic!(
                "{delivery}: {e}\ninput: {}\n{counters}\n{}",
                check::input_summary(&broker),
                support::file_tail(&log, 40)
            )
        });
    println!(
        "{delivery}: {kills} kills, {restarts} broker restarts, {exits} exits after a broker restart: {report}"
    );
}
