//! Restore of the assembler's changelog: 200,000 open traces (4 spans each, taken from the
//! synthetic workload without their roots, so they stay open) are checkpointed by the
//! default pipeline's driver and restored from those records into a new driver, as
//! `spanline run` does when it is assigned the partition. Prints the changelog's bytes
//! and the restore (decode and apply) time. The records are also written to a broker and
//! read back as a restore reads them:
//! - by default the embedded broker, which keeps only about 5 MB per partition: the read
//!   time of the whole changelog is estimated from the rate on what it kept;
//! - with `SPANLINE_BENCH_BROKERS=host:port` that broker (a real one, e.g. tansu with
//!   sqlite storage): the whole changelog is written and read, and the read is measured.
//!
//! `cargo bench --bench restore` (`-- 50000` for another number of open traces).

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use spanline::config::load_str;
use spanline::driver::{
    ChangelogSettings, Driver, DriverSettings, Effect, Event, OutputSpec, Outputs, StateRecord,
};
use spanline::kafka::embedded::EmbeddedKafka;
use spanline::kafka::state::StateTopic;
use spanline::model::Span;
use spanline::output::Encoding;
use spanline::state::Store;
use spanline::workload::{Workload, WorkloadConfig};

const PIPELINE: &str = include_str!("../pipelines/trace-analytics.yaml");
const GROUP: &str = "bench-restore";
const SPANS_PER_TRACE: usize = 4;

fn driver(config: &spanline::config::PipelineConfig) -> Driver {
    let json = |topic: &str| OutputSpec {
        topic: topic.into(),
        encoding: Encoding::Json,
    };
    let outputs = Outputs {
        traces: json("traces"),
        late: None,
        aggregates: None,
        alerts: None,
    };
    let settings = DriverSettings {
        commit_interval_ms: 1000,
        schema_registry: false,
        span_metrics: false,
        repartition: None,
        merge: None,
        changelog: Some(ChangelogSettings {
            group_id: GROUP.into(),
            exactly_once: false,
        }),
    };
    let mut d = Driver::new(config, Driver::sources_of(config), outputs, settings);
    d.handle(Event::Assigned {
        partitions: vec![("spans".into(), 0)],
        now_ms: 0,
    })
    .expect("assigned");
    d
}

/// Spans of workload traces without their roots, `SPANS_PER_TRACE` per trace.
fn templates() -> Vec<Vec<Span>> {
    let mut workload = Workload::new(WorkloadConfig {
        seed: 3,
        traces_per_second: 50.0,
        start_ns: 1_700_000_000_000_000_000,
        faults: Vec::new(),
    });
    let spans = workload.generate_traces(2_000);
    let mut by_trace: std::collections::BTreeMap<u128, Vec<Span>> = Default::default();
    for s in spans.into_iter().filter(|s| s.parent_span_id != 0) {
        by_trace.entry(s.trace_id).or_default().push(s);
    }
    by_trace
        .into_values()
        .filter(|v| v.len() >= SPANS_PER_TRACE)
        .map(|mut v| {
            v.truncate(SPANS_PER_TRACE);
            v
        })
        .collect()
}

fn main() {
    let traces: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let mut config = load_str(PIPELINE, |_| None).expect("default pipeline");
    config.kafka.group_id = GROUP.into();
    let templates = templates();
    let mut d = driver(&config);
    let t0 = templates[0][0].start_ns;
    for i in 0..traces {
        let id = 0x5000_0000_0000_0000_0000_0000_0000_0000u128 + i as u128;
        let spans = templates[i % templates.len()].iter().map(|s| {
            let mut s = s.clone();
            s.trace_id = id;
            // all within one second: nothing reaches a bound
            s.end_ns = t0 + (s.end_ns - s.start_ns).min(500_000_000);
            s.start_ns = t0;
            s
        });
        d.push_spans("spans", 0, i as i64, spans, 0);
    }
    let open = d.stages().assembler.open_traces();
    d.handle(Event::Tick { now_ms: 10_000 }).expect("tick");
    let records: Vec<_> = d
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Produce(p) if p.topic.ends_with("assemble-changelog") => Some(p),
            _ => None,
        })
        .collect();
    let bytes: usize = records.iter().map(|r| r.key.len() + r.value.len()).sum();

    // the latest record of each key, as a restore reads them
    let state: Vec<StateRecord> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key != spanline::state::CHECKPOINT_MARKER)
        .map(|(i, r)| StateRecord {
            partition: 0,
            offset: i as i64,
            key: r.key.clone(),
            value: (!r.tombstone).then(|| r.value.clone()),
        })
        .collect();
    let n = state.len();
    let mut restored = driver(&config);
    let started = Instant::now();
    restored
        .handle(Event::Restore {
            store: Store::Assemble,
            records: state,
        })
        .expect("restore");
    let restore_s = started.elapsed().as_secs_f64();
    let back = restored.stages().assembler.open_traces();
    assert_eq!(back, open, "every open trace is back");

    // the read of a changelog partition from a broker
    let external = std::env::var("SPANLINE_BENCH_BROKERS").ok();
    let run_id = std::process::id();
    let (topic, kafka, brokers) = match &external {
        Some(brokers) => {
            let topic = format!("{}-{run_id}", Store::Assemble.topic(GROUP));
            create_topic(brokers, &topic);
            (topic, None, brokers.clone())
        }
        None => {
            let topic = Store::Assemble.topic(GROUP);
            let kafka =
                EmbeddedKafka::start(1, std::slice::from_ref(&topic)).expect("embedded broker");
            let brokers = kafka.bootstrap().to_string();
            (topic, Some(kafka), brokers)
        }
    };
    let where_from = if external.is_some() {
        format!("the broker at {brokers}")
    } else {
        "the embedded broker".to_string()
    };
    // the embedded broker keeps about 5 MB per partition: write only what it keeps
    let limit = if kafka.is_some() {
        4_000_000
    } else {
        usize::MAX
    };
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.max.bytes", "16000000")
        .create()
        .expect("producer");
    let mut sent = 0;
    let written = Instant::now();
    for r in &records {
        if sent > limit {
            break;
        }
        sent += r.key.len() + r.value.len();
        let mut record = BaseRecord::<[u8], [u8]>::to(&topic)
            .key(&r.key[..])
            .partition(0);
        if !r.tombstone {
            record = record.payload(&r.value[..]);
        }
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    let write_s = written.elapsed().as_secs_f64();
    let reader = StateTopic {
        brokers: brokers.clone(),
        properties: Default::default(),
        topic: topic.clone(),
    };
    let started = Instant::now();
    let read = reader
        .read_latest(&[0], Duration::from_secs(300))
        .expect("read the changelog");
    // a restore waits 300 ms of quiet after the end: not part of the rate
    let read_s = (started.elapsed().as_secs_f64() - 0.3).max(1e-3);
    let read_bytes: usize = read
        .iter()
        .map(|(_, _, k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    let rate = read_bytes as f64 / read_s;
    println!("restore_open_traces: {open} ({SPANS_PER_TRACE} spans each)");
    println!(
        "restore_changelog_bytes: {bytes} ({:.0} bytes per open trace, {n} records)",
        bytes as f64 / open.max(1) as f64
    );
    println!("restore_apply_s: {restore_s:.2} (decoding and restoring into the assembler)");
    println!(
        "restore_read_rate: {:.1} MB/s ({read_bytes} bytes of {} records read back from {where_from} in {read_s:.2} s; written in {write_s:.1} s)",
        rate / 1e6,
        read.len()
    );
    if kafka.is_some() {
        println!(
            "restore_total_s_estimated: {:.1} (apply, plus the changelog's bytes at that read rate)",
            restore_s + bytes as f64 / rate
        );
    } else {
        assert_eq!(read.len(), n, "every state record read back");
        println!(
            "restore_total_s: {:.1} (the whole changelog read from {where_from} and applied)",
            restore_s + read_s
        );
    }
    drop(kafka);
}

/// Creates `topic` with one partition, compacted, on the broker at `brokers`.
fn create_topic(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt
        .block_on(admin.create_topics(&[new], &AdminOptions::new()))
        .expect("create the topic");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create {t}: {e}"));
    }
}
