//! Throughput and memory benchmarks: `cargo bench --bench throughput`.
//!
//! Every figure is printed as one line `bench: <name>: <value> <unit>`; context and
//! targets are printed as `note: ...` lines. Throughput figures are the best of 3 timed
//! runs after a warm-up run. Each section runs in a child process of its own (see
//! [`main`]). The whole program takes about a minute on 2 cores.
//!
//! The stages are driven the way `runner::run` drives them: records are handled in
//! batches of up to 1024 (the consumer's poll batch), each record is marked consumed in
//! the `OffsetTracker`, its spans are pushed into the `Assembler`, and after each batch
//! the assembler advances on the wall clock; the holds of every emitted output are
//! released at once, as if Kafka had acknowledged it immediately.

use std::alloc::{GlobalAlloc, Layout};

// the binary's allocator, counted
use mimalloc::MiMalloc as System;
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use spanline::codec::{avro, otlp, Format, SpanDecoder};
use spanline::kafka::embedded::EmbeddedKafka;
use spanline::kafka::offsets::OffsetTracker;
use spanline::kafka::registry_client::RegistryClient;
use spanline::model::{hex_trace_id, Span};
use spanline::runner::{self, wall_ms, Endpoints};
use spanline::stage::assemble::{Assembler, Origin, Output, Settings};
use spanline::telemetry::http::Readiness;
use spanline::telemetry::metrics;
use spanline::workload::{partition_for_trace, Workload, WorkloadConfig};

// ---------------------------------------------------------------------------------------
// Counting allocator: live heap bytes, counted only while COUNTING is on (the memory
// figure needs deltas over one window; the throughput figures should not pay for it).

struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn grow(n: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(n, Ordering::Relaxed);
    }
}

#[inline]
fn shrink(n: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_sub(n, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            grow(new_size);
            shrink(layout.size());
        }
        p
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------------------
// Parameters.

/// Spans generated for the in-process figures.
const SPANS: usize = 1_000_000;
/// Spans of the OTLP/JSON figure (JSON decoding is an order of magnitude slower).
const JSON_SPANS: usize = 300_000;
/// Spans of the warm-up run before each in-process figure.
const WARMUP_SPANS: usize = 200_000;
/// Spans per OTLP record.
const OTLP_BATCH: usize = 100;
/// Records buffered for the memory figure.
const MEMORY_SPANS: usize = 200_000;
/// Spans produced to the embedded broker for the end-to-end figure.
const E2E_SPANS: usize = 300_000;
/// Partitions of the embedded broker's topics.
const E2E_PARTITIONS: i32 = 3;
/// Trace arrival rate of the workload, in event time.
const TRACES_PER_S: f64 = 1_000.0;
/// Records per consumer poll batch, as `kafka::source` delivers them.
const POLL_BATCH: usize = 1024;
/// Timed runs per throughput figure; the best is reported.
const RUNS: usize = 3;
/// Schema id used in-process (the end-to-end figure uses the registry's).
const SCHEMA_ID: u32 = 1;

const PIPELINE: &str = include_str!("../pipelines/trace-analytics.yaml");

fn figure(name: &str, value: impl std::fmt::Display, unit: &str) {
    let mut out = std::io::stdout().lock();
    if unit.is_empty() {
        let _ = writeln!(out, "bench: {name}: {value}");
    } else {
        let _ = writeln!(out, "bench: {name}: {value} {unit}");
    }
    let _ = out.flush();
}

fn note(text: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "note: {text}");
    let _ = out.flush();
}

fn target(name: &str, value: f64, min: f64) {
    let verdict = if value >= min { "met" } else { "NOT met" };
    note(format_args!("{name}: target >= {min:.0} spans/s {verdict}"));
}

// ---------------------------------------------------------------------------------------
// The assembly stage as the runner drives it.

struct Stage {
    assembler: Assembler,
    tracker: OffsetTracker,
    out: Vec<Output>,
    traces: usize,
    spans_out: usize,
}

impl Stage {
    fn new(settings: Settings) -> Self {
        let mut assembler = Assembler::new(settings);
        let mut tracker = OffsetTracker::default();
        tracker.assign(0);
        assembler.assign(0, wall_ms());
        Self {
            assembler,
            tracker,
            out: Vec::new(),
            traces: 0,
            spans_out: 0,
        }
    }

    #[inline]
    fn consumed(&mut self, offset: i64) {
        self.tracker.consumed(0, offset);
    }

    #[inline]
    fn push(&mut self, span: Span, offset: i64, now_ms: i64) {
        let pushed = self.assembler.push(
            span,
            Origin {
                partition: 0,
                offset,
            },
            now_ms,
            &mut self.tracker,
            &mut self.out,
        );
        black_box(pushed);
    }

    /// End of a poll batch: advance, emit, and release the holds as the acks would.
    fn advance(&mut self) {
        self.assembler.advance(wall_ms(), &mut self.out);
        for output in self.out.drain(..) {
            match output {
                Output::Trace { trace, holds } => {
                    for (p, o) in holds {
                        self.tracker.release(p, o);
                    }
                    self.traces += 1;
                    self.spans_out += trace.spans.len();
                    black_box(&trace);
                }
                Output::Late { span, origin } => {
                    self.tracker.release(origin.partition, origin.offset);
                    black_box(&span);
                }
            }
        }
    }
}

fn pipeline_settings() -> Settings {
    let config = spanline::config::load_str(PIPELINE, |_| None)
        .expect("pipelines/trace-analytics.yaml is valid");
    config
        .assemble()
        .expect("an assemble stage")
        .settings(config.outputs.late.is_some())
}

/// Settings under which nothing closes: every pushed span stays buffered.
fn keep_open_settings() -> Settings {
    const DAY: i64 = 86_400 * 1_000_000_000;
    Settings {
        idle_gap_ns: 10_000 * DAY,
        max_duration_ns: 20_000 * DAY,
        grace_ns: DAY,
        max_open_traces: usize::MAX,
        max_spans_per_trace: usize::MAX,
        ..pipeline_settings()
    }
}

// ---------------------------------------------------------------------------------------
// Inputs.

/// About `n` spans of the synthetic workload, in the order a span topic holds them: by
/// end time (an exporter sends a span when it ends; `spanline generate` sorts the same way).
fn workload_spans(n: usize) -> Vec<Span> {
    let mut workload = Workload::new(WorkloadConfig {
        seed: 42,
        traces_per_second: TRACES_PER_S,
        ..Default::default()
    });
    let mut spans = Vec::with_capacity(n + 1024);
    while spans.len() < n {
        workload.generate_traces_into(100, &mut spans);
    }
    spans.sort_by_key(|s| s.end_ns);
    spans
}

fn avro_record(span: &Span, schema_id: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    avro::put_frame(&mut buf, schema_id);
    avro::write_span(&mut buf, span);
    buf
}

fn avro_decoder() -> SpanDecoder {
    let mut decoder = SpanDecoder::new(Format::Avro);
    decoder
        .avro()
        .add_schema(SCHEMA_ID, avro::SPAN_SCHEMA)
        .expect("span schema");
    decoder
}

// ---------------------------------------------------------------------------------------
// Runs.

/// Runs `f` once on the warm-up input and `RUNS` times on the full input; returns the best
/// rate in spans per second. `f` returns (spans handled, seconds spent in the timed part).
fn best_of(mut f: impl FnMut(bool) -> (usize, f64)) -> f64 {
    black_box(f(true));
    (0..RUNS)
        .map(|_| {
            let (spans, secs) = f(false);
            spans as f64 / secs
        })
        .fold(0.0, f64::max)
}

/// Figure 1: push + advance over pre-decoded spans.
fn assemble_core(spans: &[Span]) -> f64 {
    let settings = pipeline_settings();
    let mut last = (0, 0, 0);
    let rate = best_of(|warmup| {
        let n = if warmup {
            WARMUP_SPANS.min(spans.len())
        } else {
            spans.len()
        };
        let input: Vec<Span> = spans[..n].to_vec();
        let mut stage = Stage::new(settings.clone());
        let mut offset = 0i64;
        let mut input = input.into_iter();
        let started = Instant::now();
        loop {
            let now = wall_ms();
            let mut any = false;
            for span in input.by_ref().take(POLL_BATCH) {
                stage.consumed(offset);
                stage.push(span, offset, now);
                offset += 1;
                any = true;
            }
            stage.advance();
            if !any {
                break;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        last = (stage.traces, stage.spans_out, stage.assembler.open_traces());
        drop(stage);
        (n, secs)
    });
    note(format_args!(
        "assemble_core: {} spans, {} traces emitted ({} spans), {} traces still open at the end",
        spans.len(),
        last.0,
        last.1,
        last.2
    ));
    rate
}

/// Figures 2 and 3: decode records of one format and assemble their spans.
fn decode_assemble(
    records: &[Vec<u8>],
    spans_total: usize,
    spans_warmup: usize,
    make: impl Fn() -> SpanDecoder,
) -> f64 {
    let settings = pipeline_settings();
    let per_record = spans_total.div_ceil(records.len()).max(1);
    let warmup_records = spans_warmup.div_ceil(per_record).min(records.len());
    best_of(|warmup| {
        let records = if warmup {
            &records[..warmup_records]
        } else {
            records
        };
        let mut decoder = make();
        let mut stage = Stage::new(settings.clone());
        let mut spans: Vec<Span> = Vec::with_capacity(OTLP_BATCH);
        let mut decoded = 0usize;
        let started = Instant::now();
        for (b, batch) in records.chunks(POLL_BATCH).enumerate() {
            let now = wall_ms();
            for (i, record) in batch.iter().enumerate() {
                let offset = (b * POLL_BATCH + i) as i64;
                stage.consumed(offset);
                spans.clear();
                decoder
                    .decode(black_box(record), &mut spans)
                    .expect("record decodes");
                decoded += spans.len();
                for span in spans.drain(..) {
                    stage.push(span, offset, now);
                }
            }
            stage.advance();
        }
        let secs = started.elapsed().as_secs_f64();
        drop(stage);
        (decoded, secs)
    })
}

/// Figure 4: live heap per buffered span, and encoded Avro bytes per span (frame included).
fn memory(spans: &[Span]) -> (f64, f64) {
    let records: Vec<Vec<u8>> = spans
        .iter()
        .take(MEMORY_SPANS)
        .map(|s| avro_record(s, SCHEMA_ID))
        .collect();
    let encoded_bytes: usize = records.iter().map(Vec::len).sum();
    let mut decoder = avro_decoder();
    let mut stage = Stage::new(keep_open_settings());
    let mut scratch: Vec<Span> = Vec::with_capacity(1);

    COUNTING.store(true, Ordering::SeqCst);
    let before = LIVE.load(Ordering::SeqCst);
    for (b, batch) in records.chunks(POLL_BATCH).enumerate() {
        let now = wall_ms();
        for (i, record) in batch.iter().enumerate() {
            let offset = (b * POLL_BATCH + i) as i64;
            stage.consumed(offset);
            scratch.clear();
            decoder
                .decode(record, &mut scratch)
                .expect("record decodes");
            for span in scratch.drain(..) {
                stage.push(span, offset, now);
            }
        }
        stage.advance();
    }
    let after = LIVE.load(Ordering::SeqCst);
    COUNTING.store(false, Ordering::SeqCst);

    let buffered = stage.assembler.buffered_spans();
    assert_eq!(buffered, records.len(), "every span stays buffered");
    assert_eq!(stage.traces, 0, "nothing closes");
    let live = after.wrapping_sub(before) as f64;
    let per_span = live / buffered as f64;
    let encoded = encoded_bytes as f64 / records.len() as f64;
    let accounted = stage.assembler.buffered_bytes() as f64 / buffered as f64;
    note(format_args!(
        "memory: {} spans in {} open traces; live heap grew {:.1} MB; Span::memory_size accounts {:.1} bytes/span; size_of::<Span>() = {}",
        buffered,
        stage.assembler.open_traces(),
        live / 1e6,
        accounted,
        std::mem::size_of::<Span>()
    ));
    drop(stage);
    drop(decoder);
    (per_span, encoded)
}

// ---------------------------------------------------------------------------------------
// Figure 5: end to end through the embedded broker and registry.

struct Progress {
    /// (when, spans) of the poll samples since the first record.
    samples: Vec<(Instant, u64)>,
    done: bool,
}

/// Produces `spans` to `spans`; `Ok(Err(kept))` when the broker pruned some of them.
fn produce(bootstrap: &str, schema_id: u32, spans: &[Span]) -> Result<Result<(), usize>, String> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    for span in spans {
        let key = hex_trace_id(span.trace_id);
        let value = avro_record(span, schema_id);
        let partition = partition_for_trace(span.trace_id, E2E_PARTITIONS as u32) as i32;
        let mut record = BaseRecord::to("spans")
            .partition(partition)
            .key(key.as_bytes())
            .payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(format!("produce: {e}")),
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| format!("flush: {e}"))?;
    let mut retained = 0i64;
    let mut pruned = 0i64;
    for p in 0..E2E_PARTITIONS {
        let (low, high) = producer
            .client()
            .fetch_watermarks("spans", p, Duration::from_secs(10))
            .map_err(|e| format!("watermarks: {e}"))?;
        retained += high - low;
        pruned += low;
    }
    if pruned > 0 || retained != spans.len() as i64 {
        return Ok(Err(retained.max(0) as usize));
    }
    Ok(Ok(()))
}

fn end_to_end(spans: &[Span]) -> Result<(f64, usize), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let registry = rt
        .block_on(spanline::registry::start(
            "127.0.0.1:0".parse().expect("address"),
        ))
        .map_err(|e| e.to_string())?;
    let url = registry.url().to_string();
    let client = RegistryClient::new(&url, None, None)?;
    let schema_id = rt.block_on(client.register("spans-value", avro::SPAN_SCHEMA))?;
    let topics: Vec<String> = ["spans", "traces", "spans-dlq", "spans-late"]
        .iter()
        .map(|t| t.to_string())
        .collect();

    // The broker keeps 5 MB of record batches per partition: if the records do not fit,
    // retry with fewer on a fresh broker (so that nothing pruned is left behind).
    let mut n = E2E_SPANS.min(spans.len());
    let result = loop {
        let kafka = EmbeddedKafka::start(E2E_PARTITIONS, &topics)?;
        let bootstrap = kafka.bootstrap().to_string();
        let started = Instant::now();
        match produce(&bootstrap, schema_id, &spans[..n])? {
            Ok(()) => {
                note(format_args!(
                    "end_to_end: pre-produced {n} single-span Avro records (lz4, {E2E_PARTITIONS} partitions) in {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                if n < E2E_SPANS {
                    note(format_args!(
                        "end_to_end: measured at {n} spans, not {E2E_SPANS}: the embedded broker keeps only 5 MB per partition"
                    ));
                }
                let result = measure(&rt, &bootstrap, &url, n);
                drop(kafka);
                break result.map(|r| (r, n));
            }
            Err(kept) if kept >= 10_000 => {
                note(format_args!(
                    "end_to_end: the embedded broker kept {kept} of {n} records (5 MB per partition); retrying with fewer"
                ));
                n = n.min(kept) * 9 / 10;
            }
            Err(kept) => {
                break Err(format!(
                    "the embedded broker kept only {kept} of {n} records"
                ))
            }
        }
    };
    drop(registry);
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Runs the pipeline `RUNS` times, each with a fresh consumer group reading the topic
/// from the start; returns the best steady rate of `spanline_spans_in_total`.
fn measure(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
    url: &str,
    n: usize,
) -> Result<f64, String> {
    metrics::init();
    let mut best = 0.0f64;
    for run in 0..RUNS {
        let mut config =
            spanline::config::load_str(PIPELINE, |_| None).map_err(|e| e.to_string())?;
        config.kafka.brokers = bootstrap.to_string();
        config.kafka.group_id = format!("bench-throughput-{}-{run}", std::process::id());
        if let Some(sr) = &mut config.schema_registry {
            sr.url = url.to_string();
        }
        config.http.listen = "127.0.0.1:0".parse().expect("address");
        let endpoints = Endpoints {
            brokers: bootstrap.to_string(),
            registry: Some(url.to_string()),
        };
        let counter = metrics::SPANS_IN.with_label_values(&["spans"]);
        let base = counter.get();
        let progress = Arc::new(Mutex::new(Progress {
            samples: Vec::new(),
            done: false,
        }));
        let stop = {
            let progress = progress.clone();
            let counter = counter.clone();
            async move {
                let started = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let seen = counter.get() - base;
                    let mut p = progress.lock().expect("progress");
                    if seen > 0 {
                        p.samples.push((Instant::now(), seen));
                    }
                    if seen >= n as u64 {
                        p.done = true;
                        return;
                    }
                    if started.elapsed() > Duration::from_secs(90) {
                        return;
                    }
                }
            }
        };
        let started = Instant::now();
        rt.block_on(runner::run(config, endpoints, Readiness::default(), stop))
            .map_err(|e| e.to_string())?;
        let p = progress.lock().expect("progress");
        if !p.done {
            return Err(format!(
                "run {run}: only {} of {n} spans arrived within 90 s",
                p.samples.last().map_or(0, |s| s.1)
            ));
        }
        let (t0, v0) = p.samples[0];
        // The steady part: from the first sample with records to the last sample before
        // the end (the last poll overshoots the moment the last span arrived).
        let (t1, v1) = p
            .samples
            .iter()
            .rev()
            .find(|s| s.1 < n as u64 && s.1 > v0)
            .copied()
            .unwrap_or(*p.samples.last().expect("a sample"));
        let secs = (t1 - t0).as_secs_f64();
        let rate = if secs > 0.0 {
            (v1 - v0) as f64 / secs
        } else {
            0.0
        };
        note(format_args!(
            "end_to_end run {}: first record {:.2} s after start, {} spans over {:.2} s measured ({} samples), {:.0} spans/s",
            run + 1,
            (t0 - started).as_secs_f64(),
            v1 - v0,
            secs,
            p.samples.len(),
            rate
        ));
        best = best.max(rate);
    }
    Ok(best)
}

// ---------------------------------------------------------------------------------------

/// The sections, in the order they run.
const SECTIONS: [&str; 6] = ["core", "avro", "proto", "json", "memory", "e2e"];

/// Set in the environment of the per-section child processes.
const CHILD_ENV: &str = "SPANLINE_BENCH_SECTION_CHILD";

/// Without section names, runs every section in a child process of its own, so that no
/// figure depends on the heap the sections before it left behind (glibc malloc's free
/// lists move the OTLP figures by 20% or more). `cargo bench --bench throughput -- avro
/// proto` runs the named sections in this process instead. Flags cargo passes (`--bench`)
/// are ignored.
fn main() {
    let all = Instant::now();
    let names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Some(bad) = names.iter().find(|n| !SECTIONS.contains(&n.as_str())) {
        eprintln!("unknown section `{bad}`; sections: {}", SECTIONS.join(" "));
        std::process::exit(2);
    }
    let child = std::env::var_os(CHILD_ENV).is_some();
    if !child {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        figure("machine", cores, "cores");
        figure("spanline_version", env!("CARGO_PKG_VERSION"), "");
    }
    if names.is_empty() {
        let exe = std::env::current_exe().expect("own path");
        let mut failed = Vec::new();
        for section in SECTIONS {
            let status = std::process::Command::new(&exe)
                .arg(section)
                .env(CHILD_ENV, "1")
                .status();
            if !status.as_ref().is_ok_and(|s| s.success()) {
                note(format_args!("section {section} failed: {status:?}"));
                failed.push(section);
            }
        }
        note(format_args!("total {:.0} s", all.elapsed().as_secs_f64()));
        if !failed.is_empty() {
            std::process::exit(1);
        }
        return;
    }
    let run = |section: &str| names.iter().any(|n| n == section);

    let started = Instant::now();
    let spans = workload_spans(SPANS);
    if !child || run("core") {
        note(format_args!(
            "workload: {} spans ({:.1} per trace) at {TRACES_PER_S} traces/s event time, ordered by span end, generated in {:.1} s",
            spans.len(),
            spans.len() as f64 / spans.iter().filter(|s| s.is_root()).count().max(1) as f64,
            started.elapsed().as_secs_f64()
        ));
    }

    // 1. assembly alone
    if run("core") {
        let rate = assemble_core(&spans);
        figure(
            "assemble_core_spans_per_s",
            format_args!("{rate:.0}"),
            "spans/s",
        );
        target("assemble_core_spans_per_s", rate, 1_000_000.0);
    }

    // 2. single-span Avro records
    if run("avro") {
        let records: Vec<Vec<u8>> = spans.iter().map(|s| avro_record(s, SCHEMA_ID)).collect();
        let rate = decode_assemble(&records, spans.len(), WARMUP_SPANS, avro_decoder);
        drop(records);
        figure(
            "decode_assemble_avro_single_span_spans_per_s",
            format_args!("{rate:.0}"),
            "spans/s",
        );
    }

    // 3. OTLP batches
    if run("proto") {
        let records: Vec<Vec<u8>> = spans.chunks(OTLP_BATCH).map(otlp::encode_proto).collect();
        let bytes: usize = records.iter().map(Vec::len).sum();
        note(format_args!(
            "otlp_proto: {} records of {OTLP_BATCH} spans, {:.1} bytes/span",
            records.len(),
            bytes as f64 / spans.len() as f64
        ));
        let rate = decode_assemble(&records, spans.len(), WARMUP_SPANS, || {
            SpanDecoder::new(Format::OtlpProto)
        });
        drop(records);
        figure(
            "decode_assemble_otlp_proto_batched_spans_per_s",
            format_args!("{rate:.0}"),
            "spans/s",
        );
    }
    if run("json") {
        let json_spans = &spans[..JSON_SPANS.min(spans.len())];
        let records: Vec<Vec<u8>> = json_spans
            .chunks(OTLP_BATCH)
            .map(otlp::encode_json)
            .collect();
        let bytes: usize = records.iter().map(Vec::len).sum();
        note(format_args!(
            "otlp_json: {} records of {OTLP_BATCH} spans, {:.1} bytes/span (first {} spans only)",
            records.len(),
            bytes as f64 / json_spans.len() as f64,
            json_spans.len()
        ));
        let rate = decode_assemble(&records, json_spans.len(), WARMUP_SPANS / 4, || {
            SpanDecoder::new(Format::OtlpJson)
        });
        drop(records);
        figure(
            "decode_assemble_otlp_json_batched_spans_per_s",
            format_args!("{rate:.0}"),
            "spans/s",
        );
    }

    // 4. memory
    if run("memory") {
        let (per_span, encoded) = memory(&spans);
        figure(
            "memory_bytes_per_buffered_span",
            format_args!("{per_span:.1}"),
            "bytes",
        );
        figure(
            "encoded_bytes_per_span",
            format_args!("{encoded:.1}"),
            "bytes",
        );
        let ratio = per_span / encoded;
        figure("memory_ratio", format_args!("{ratio:.2}"), "x");
        note(format_args!(
            "memory_ratio: target <= 1.50 {}",
            if ratio <= 1.5 { "met" } else { "NOT met" }
        ));
    }

    // 5. end to end
    if run("e2e") {
        match end_to_end(&spans) {
            Ok((rate, n)) => {
                figure(
                    "end_to_end_embedded_spans_per_s",
                    format_args!("{rate:.0}"),
                    "spans/s",
                );
                target(
                    &format!("end_to_end_embedded_spans_per_s ({n} spans)"),
                    rate,
                    300_000.0,
                );
            }
            Err(e) => {
                note(format_args!("end_to_end failed: {e}"));
                std::process::exit(1);
            }
        }
    }
    if !child {
        note(format_args!("total {:.0} s", all.elapsed().as_secs_f64()));
    }
}
