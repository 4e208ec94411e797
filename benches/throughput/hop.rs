//! Figures 9 and 10: the cost of the repartition hop, end to end through the embedded
//! broker. The default pipeline reads OTLP protobuf messages of 100 spans each, spans of
//! many traces per message, spread over the partitions without keys (as the
//! OpenTelemetry Collector's Kafka exporter writes them), and runs as `spanline run`
//! processes (the binary built with this benchmark) in one consumer group:
//!
//! - `keyed_1`: one process, the source declared `keyed_by_trace: true`: spans are
//!   assembled where they are read (one process still assembles a trace whose spans are
//!   on several partitions);
//! - `repartition_1`: one process, `keyed_by_trace: false` (the default for OTLP): every
//!   message is split per trace onto `<group_id>-repartition` and read back from it;
//! - `repartition_2`: two processes, `keyed_by_trace: false`, in one group.
//!
//! Each run starts the processes, waits until each owns partitions, then produces the
//! whole input and times from the first span decoded to the moment every trace of the
//! input is on the traces topic (acknowledged by the broker), summed over the processes'
//! `/metrics`. The input ends with one span per partition six minutes of event time
//! later, which moves every watermark past every trace of the input (past `max_duration`
//! too), so the last traces close as soon as it is read.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use spanline::codec::otlp;
use spanline::kafka::embedded::EmbeddedKafka;
use spanline::model::{Span, TraceId};
use spanline::state::Store;

use super::common::{figure, note, OTLP_BATCH, PIPELINE, RUNS};
use super::e2e::pipeline_topics;
use super::processes::{Process, Sample};

/// Partitions of the input topic (and so of the repartition topic). The embedded broker
/// keeps about 5 MB per partition and the whole input is produced at once: enough
/// partitions that neither the input nor the repartition records of it are cut.
const HOP_PARTITIONS: i32 = 12;
/// Spans of the input, at most (whole traces only).
const HOP_SPANS: usize = 600_000;
/// The end-of-input span's distance past the last span: more than the default
/// pipeline's `max_duration` (5m), so traces without a root close too.
const TAIL_NS: i64 = 6 * 60 * 1_000_000_000;
/// A run that has not finished by then failed.
const HOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the processes' `/metrics` are read (each read costs the process an
/// exposition of every series: not more often).
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

/// One configuration of the figure.
#[derive(Debug, Clone, Copy)]
struct HopMode {
    name: &'static str,
    keyed_by_trace: bool,
    processes: usize,
}

const HOP_MODES: [HopMode; 3] = [
    HopMode {
        name: "keyed_1",
        keyed_by_trace: true,
        processes: 1,
    },
    HopMode {
        name: "repartition_1",
        keyed_by_trace: false,
        processes: 1,
    },
    HopMode {
        name: "repartition_2",
        keyed_by_trace: false,
        processes: 2,
    },
];

/// The input: OTLP messages in production order, each with its partition.
struct HopInput {
    records: Vec<(i32, Vec<u8>)>,
    spans: u64,
    traces: u64,
}

/// The spans of the traces that lie wholly within the first `HOP_SPANS` of `spans`, in
/// batches of `OTLP_BATCH` in end order, round robin over the partitions; then the
/// end-of-input span on each partition.
fn hop_input(spans: &[Span]) -> HopInput {
    let mut totals: HashMap<TraceId, (u32, u32)> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        let e = totals.entry(s.trace_id).or_default();
        e.0 += 1;
        e.1 += u32::from(i < HOP_SPANS);
    }
    let kept: Vec<&Span> = spans[..HOP_SPANS.min(spans.len())]
        .iter()
        .filter(|s| totals.get(&s.trace_id).is_some_and(|(all, n)| all == n))
        .collect();
    let traces = totals.values().filter(|(all, n)| all == n).count() as u64;
    let mut records: Vec<(i32, Vec<u8>)> = kept
        .chunks(OTLP_BATCH)
        .enumerate()
        .map(|(i, batch)| {
            let partition = (i % HOP_PARTITIONS as usize) as i32;
            (partition, otlp::encode_proto(batch.iter().copied()))
        })
        .collect();
    let last = kept.iter().map(|s| s.end_ns).max().unwrap_or(0);
    if let Some(root) = kept.iter().find(|s| s.is_root()) {
        for p in 0..HOP_PARTITIONS {
            let mut tail = (*root).clone();
            tail.trace_id = TraceId::MAX - p as u128;
            tail.start_ns = last + TAIL_NS;
            tail.end_ns = tail.start_ns + 1_000_000;
            records.push((p, otlp::encode_proto([&tail])));
        }
    }
    HopInput {
        records,
        spans: kept.len() as u64,
        traces,
    }
}

/// The default pipeline with an OTLP protobuf source, keyed by trace id or not; the
/// consumer's fetch wait as in the end-to-end figure (see `e2e::measure`).
fn hop_pipeline(keyed_by_trace: bool) -> String {
    let source = "    format: avro\n    dead_letter_topic";
    let properties = "  properties: {}";
    assert!(PIPELINE.contains(source) && PIPELINE.contains(properties));
    PIPELINE
        .replace(
            source,
            &format!(
                "    format: otlp_proto\n    keyed_by_trace: {keyed_by_trace}\n    dead_letter_topic"
            ),
        )
        .replace(properties, "  properties: {fetch.wait.max.ms: \"5\"}")
        // the pipeline alone: the trace repository (its own consumer and SQLite writer,
        // on by default in `run`) is measured by `cargo bench --bench repository`
        + "\nrepository: {enabled: false}\n"
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct HopRun {
    rate: f64,
    secs: f64,
}

/// Figures 9 and 10, printed; an error when a run failed.
pub fn hop_figures(spans: &[Span]) -> Result<(), String> {
    let started = Instant::now();
    let input = hop_input(spans);
    let bytes: usize = input.records.iter().map(|(_, r)| r.len()).sum();
    note(format_args!(
        "hop: {} spans of {} traces in {} OTLP protobuf records of up to {OTLP_BATCH} spans ({:.1} bytes/span), {HOP_PARTITIONS} partitions round robin, not keyed; prepared in {:.1} s",
        input.spans,
        input.traces,
        input.records.len(),
        bytes as f64 / input.spans.max(1) as f64,
        started.elapsed().as_secs_f64()
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let registry = rt
        .block_on(spanline::registry::start(
            "127.0.0.1:0".parse().expect("address"),
        ))
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-hop.log");
    let _ = std::fs::remove_file(&log);
    note(format_args!("hop: the processes log to {}", log.display()));

    // passes interleave the modes, so that a slow moment of the machine hits all of them
    let mut best: Vec<Option<HopRun>> = vec![None; HOP_MODES.len()];
    for pass in 0..RUNS {
        for (m, mode) in HOP_MODES.iter().enumerate() {
            let config = dir.path().join(format!("{}.yaml", mode.name));
            std::fs::write(&config, hop_pipeline(mode.keyed_by_trace))
                .map_err(|e| e.to_string())?;
            let run = measure(&config, registry.url(), &input, *mode, pass, &log)
                .map_err(|e| format!("{} run {}: {e}", mode.name, pass + 1))?;
            if best[m].is_none_or(|b| run.rate > b.rate) {
                best[m] = Some(run);
            }
        }
    }
    drop(registry);
    rt.shutdown_timeout(Duration::from_secs(5));

    let rate = |m: usize| best[m].map_or(0.0, |r| r.rate);
    for (m, mode) in HOP_MODES.iter().enumerate() {
        let run = best[m].expect("every mode ran");
        figure(
            &format!("end_to_end_embedded_otlp_{}_spans_per_s", mode.name),
            format_args!("{:.0}", run.rate),
            "spans/s",
        );
        note(format_args!(
            "hop {}: all {} traces out {:.2} s after the first span in",
            mode.name, input.traces, run.secs
        ));
    }
    let (keyed, hop, two) = (rate(0), rate(1), rate(2));
    note(format_args!(
        "hop ratios from this run: repartitioned / keyed, one process = {:.2} (bar >= 0.70 {}); two processes / one, repartitioned = {:.2} (figure only, on {} cores)",
        hop / keyed.max(1.0),
        if hop >= 0.7 * keyed { "met" } else { "NOT met" },
        two / hop.max(1.0),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ));
    Ok(())
}

/// One run of `mode` on a fresh embedded broker.
fn measure(
    config: &Path,
    registry: &str,
    input: &HopInput,
    mode: HopMode,
    pass: usize,
    log: &Path,
) -> Result<HopRun, String> {
    let group = format!("bench-hop-{}-{}-{pass}", mode.name, std::process::id());
    let parsed = spanline::config::load_str(&hop_pipeline(mode.keyed_by_trace), |k| {
        (k == "SPANLINE_GROUP_ID").then(|| group.clone())
    })
    .map_err(|e| e.to_string())?;
    // The embedded broker creates a topic that a client asks for with its own default
    // partition count, fewer than the inputs': the changelogs and the repartition topic
    // are created here with as many as the input.
    let mut topics = pipeline_topics(&parsed);
    topics.extend(Store::ALL.iter().map(|s| s.topic(&group)));
    if !mode.keyed_by_trace {
        topics.push(parsed.kafka.repartition_topic());
    }
    let kafka = EmbeddedKafka::start(HOP_PARTITIONS, &topics).map_err(|e| e.to_string())?;
    let env = [
        ("SPANLINE_BROKERS", kafka.bootstrap()),
        ("SPANLINE_SCHEMA_REGISTRY", registry),
        ("SPANLINE_GROUP_ID", group.as_str()),
        ("SPANLINE_HTTP", "127.0.0.1:0"),
    ];
    let processes = (0..mode.processes)
        .map(|_| Process::start(config, &env, log))
        .collect::<Result<Vec<_>, _>>()?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;

    // Every process owns partitions, and still does a second later: the group has
    // settled (a process that joins later would make the first give partitions up).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut settled = 0;
    while settled < 10 {
        if Instant::now() > deadline {
            return Err("the processes did not all own partitions within 60 s".into());
        }
        settled = if processes.iter().all(|p| p.ready(&client)) {
            settled + 1
        } else {
            0
        };
        std::thread::sleep(SCRAPE_EVERY);
    }

    let started = Instant::now();
    let (first, done, last, produced) = std::thread::scope(|s| {
        let producer = s.spawn(|| produce(kafka.bootstrap(), input));
        let (mut first, mut done) = (None, None);
        let mut sum = Sample::default();
        while Instant::now() - started < HOP_TIMEOUT {
            sum = Sample::default();
            for p in &processes {
                sum += p.sample(&client).unwrap_or_default();
            }
            let now = Instant::now();
            if sum.spans_in > 0 {
                first.get_or_insert(now);
            }
            if sum.traces_out >= input.traces {
                done = Some(now);
                break;
            }
            std::thread::sleep(SCRAPE_EVERY);
        }
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err("the producing thread panicked".into()));
        (first, done, sum, produced)
    });
    let produce_secs = produced?;
    drop(processes);
    drop(kafka);
    let (Some(first), Some(done)) = (first, done) else {
        return Err(format!(
            "{} of {} traces out and {} of {} spans in after {} s (see {})",
            last.traces_out,
            input.traces,
            last.spans_in,
            input.spans,
            HOP_TIMEOUT.as_secs(),
            log.display()
        ));
    };
    let secs = (done - first).as_secs_f64();
    let rate = input.spans as f64 / secs;
    note(format_args!(
        "hop {} run {}: {} process(es); all {} traces out {secs:.2} s after the first span in ({rate:.0} spans/s); input produced in {produce_secs:.2} s; {} amendments",
        mode.name,
        pass + 1,
        mode.processes,
        input.traces,
        last.amendments
    ));
    Ok(HopRun { rate, secs })
}

/// Produces every record of `input` to its partition, unkeyed; the seconds it took.
fn produce(bootstrap: &str, input: &HopInput) -> Result<f64, String> {
    let started = Instant::now();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    for (partition, payload) in &input.records {
        let mut record = BaseRecord::<(), _>::to("spans")
            .partition(*partition)
            .payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(format!("produce: {e}")),
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| format!("flush: {e}"))?;
    Ok(started.elapsed().as_secs_f64())
}
