//! Throughput and memory benchmarks: `cargo bench --bench throughput`.
//!
//! Every figure is printed as one line `bench: <name>: <value> <unit>`; context and
//! targets are printed as `note: ...` lines. Throughput figures are the best of 3 timed
//! runs after a warm-up run. Each section runs in a child process of its own (see
//! [`main`]). The whole program takes about two minutes on 2 cores.
//!
//! The stages are driven the way `runner::run` drives them: records are handled in
//! batches of up to 1024 (the consumer's poll batch), each record is marked consumed in
//! the `OffsetTracker`, its spans are pushed into the `Assembler`, and after each batch
//! the assembler advances on the wall clock (with every stage of the default pipeline,
//! `Stages::process` then runs the stages after assembly over what closed); the holds
//! of every emitted output are released at once, as if Kafka had acknowledged it
//! immediately. The analyze and aggregate figures run those stages alone over the
//! workload's traces, pre-assembled. The end-to-end figure runs `runner::run` on the
//! embedded broker and registry while a thread produces the input, a bounded distance
//! ahead of the pipeline, so that the measured window lasts several seconds although
//! the embedded broker keeps only about 5 MB per partition.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;

// the binary's allocator, counted
use mimalloc::MiMalloc as System;
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use spanline::codec::{avro, otlp, Format, SpanDecoder};
use spanline::config::PipelineConfig;
use spanline::driver::offsets::OffsetTracker;
use spanline::driver::{Driver, DriverSettings, Effect, Event, OutputKind, OutputSpec, Outputs};
use spanline::kafka::embedded::EmbeddedKafka;
use spanline::kafka::registry_client::RegistryClient;
use spanline::model::{hex_trace_id, CloseReason, Edge, EventsBuilder, Span, Trace, TraceId};
use spanline::output::Encoding;
use spanline::runner::{self, wall_ms, Endpoints};
use spanline::stage::aggregate::{AggregateStats, Aggregator, WindowAggregate};
use spanline::stage::analyze::analyze;
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
// Figures 5 to 7: the stages after assembly, over the workload's closed traces.

/// The default pipeline plus a rule that fires for every operation's first window (and
/// stays firing), so the end-to-end run delivers alerts whose latency from the window's
/// close to Kafka's acknowledgement is measured.
fn e2e_pipeline() -> String {
    let rule = "      - name: bench_every_operation\n        severity: warning\n        for: 0s\n        series: {scope: operation, window: 10s}\n        threshold: {field: count, above: 0}\n";
    let at = PIPELINE
        .find("\noutputs:")
        .expect("the default pipeline has outputs")
        + 1;
    format!("{}{rule}\n{}", &PIPELINE[..at], &PIPELINE[at..])
}

/// Count, mean and the upper bound of the bucket holding the 99th percentile of the
/// alert acknowledgement latency histogram (seconds).
fn ack_latency() -> (u64, f64, f64) {
    use prometheus::core::Collector;
    let h = &*metrics::ALERT_ACK_LATENCY;
    let n = h.get_sample_count();
    let mut p99 = f64::NAN;
    if let Some(m) = h
        .collect()
        .first()
        .and_then(|f| f.get_metric().first().cloned())
    {
        let hist = m.get_histogram();
        let want = (0.99 * n as f64).ceil() as u64;
        p99 = hist
            .get_bucket()
            .iter()
            .find(|b| b.cumulative_count() >= want)
            .map_or(f64::INFINITY, |b| b.upper_bound());
    }
    (n, h.get_sample_sum() / n.max(1) as f64, p99)
}

/// Series and windows of the scoring benchmark.
const SCORE_SERIES: usize = 200;
const SCORE_WINDOWS: i64 = 400;

/// Per-window scoring latency of the detect stage with the default pipeline's settings:
/// `SCORE_SERIES` service series of 10 s windows (100 calls each, lognormal-ish latency,
/// a few errors), every window closing for all series at once; models trained inline
/// between windows (not timed; the pipeline trains on the blocking pool). Returns the
/// sorted per-series-window times and the per-closed-window totals, both of warm,
/// model-backed windows only.
fn detect_scoring() -> (Vec<Duration>, Vec<Duration>) {
    use rand::{Rng, SeedableRng};
    use spanline::stage::detect::Detector;
    let config = pipeline_config();
    let mut det = Detector::new(
        config
            .detect()
            .expect("the default pipeline detects")
            .settings(),
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let size = 10_000_000_000i64;
    let t0 = 1_700_000_000_000_000_000i64;
    let services: Vec<Arc<str>> = (0..SCORE_SERIES)
        .map(|i| Arc::from(format!("svc-{i:03}")))
        .collect();
    let (mut per_series, mut per_window) = (Vec::new(), Vec::new());
    let mut out = Vec::new();
    for i in 0..SCORE_WINDOWS {
        let windows: Vec<WindowAggregate> = services
            .iter()
            .map(|svc| {
                let mut w = WindowAggregate::empty(
                    t0 + i * size,
                    size,
                    Arc::from("service"),
                    vec![(Arc::from("service"), svc.clone())],
                    500_000_000,
                );
                for _ in 0..100 {
                    let ms = 100.0 * (1.0 + rng.random::<f64>()).powi(3);
                    let ns = ms * 1e6;
                    w.sketch.add(ns);
                    w.min_ns = w.min_ns.min(ns as i64);
                    w.max_ns = w.max_ns.max(ns as i64);
                    w.sum_ns = w.sum_ns.saturating_add(ns as i64);
                    w.slo_good += u64::from(ns <= 500e6);
                }
                w.count = 100;
                w.error_count = rng.random_range(0..3);
                w
            })
            .collect();
        let mut total = Duration::ZERO;
        let mut warm = true;
        for w in &windows {
            out.clear();
            let started = Instant::now();
            det.observe_window(w, &mut out);
            let took = started.elapsed();
            black_box(&out);
            let scored = out.first().is_some_and(|s| s.warm && s.model != "mad");
            warm &= scored;
            if scored {
                per_series.push(took);
            }
            total += took;
        }
        if warm {
            per_window.push(total);
        }
        det.train_inline();
    }
    per_series.sort();
    per_window.sort();
    (per_series, per_window)
}

fn pipeline_config() -> PipelineConfig {
    spanline::config::load_str(PIPELINE, |_| None).expect("pipelines/trace-analytics.yaml is valid")
}

/// The workload's traces as the assembler closes them: spans grouped by trace id and
/// sorted as `Trace::sort_spans` sorts them; traces in the order of their last span's end.
fn workload_traces(spans: &[Span]) -> Vec<Trace> {
    let mut index: HashMap<TraceId, usize> = HashMap::with_capacity(spans.len() / 8);
    let mut traces: Vec<Trace> = Vec::new();
    for span in spans {
        let i = *index.entry(span.trace_id).or_insert_with(|| {
            traces.push(Trace {
                trace_id: span.trace_id,
                spans: Vec::new(),
                amendment: false,
                close_reason: CloseReason::Completed,
                incomplete: false,
            });
            traces.len() - 1
        });
        traces[i].spans.push(span.clone());
    }
    for trace in &mut traces {
        trace.sort_spans();
    }
    traces.sort_by_key(Trace::end_ns);
    traces
}

/// How many of the first traces hold about `spans` spans.
fn traces_holding(traces: &[Trace], spans: usize) -> usize {
    let mut seen = 0;
    traces
        .iter()
        .take_while(|t| {
            seen += t.spans.len();
            seen <= spans
        })
        .count()
        .max(1)
}

/// Figure 5: `analyze` over every trace, with the default pipeline's settings.
fn analyze_figure(traces: &[Trace]) -> f64 {
    let settings = pipeline_config()
        .analyze()
        .expect("an analyze stage")
        .settings();
    let warmup = traces_holding(traces, WARMUP_SPANS);
    let mut last = (0usize, 0usize, 0usize);
    let rate = best_of(|warmup_run| {
        let traces = if warmup_run {
            &traces[..warmup]
        } else {
            traces
        };
        let (mut spans, mut edges, mut findings) = (0, 0, 0);
        let started = Instant::now();
        for trace in traces {
            let analysis = analyze(black_box(trace), &settings);
            spans += trace.spans.len();
            edges += analysis.edges.len();
            findings += analysis.findings.len();
            black_box(analysis);
        }
        let secs = started.elapsed().as_secs_f64();
        last = (traces.len(), edges, findings);
        (spans, secs)
    });
    note(format_args!(
        "analyze: {} traces, {:.1} edges and {:.2} findings per trace",
        last.0,
        last.1 as f64 / last.0.max(1) as f64,
        last.2 as f64 / last.0.max(1) as f64
    ));
    rate
}

/// Traces added between two advances of the aggregator's watermark.
const ADVANCE_EVERY: usize = 100;

/// Figure 6: `Aggregator::add_trace` over every trace with its edges, with the default
/// pipeline's settings, advancing every `ADVANCE_EVERY` traces to the earliest start of
/// the traces not yet added (as `Stages` advances to the earliest open start).
fn aggregate_figure(traces: &[Trace]) -> f64 {
    let config = pipeline_config();
    let analyze_settings = config.analyze().expect("an analyze stage").settings();
    let settings = config.aggregate().expect("an aggregate stage").settings();
    let edges: Vec<Vec<Edge>> = traces
        .iter()
        .map(|t| analyze(t, &analyze_settings).edges)
        .collect();
    let mut watermarks = vec![i64::MAX; traces.len() + 1];
    for i in (0..traces.len()).rev() {
        watermarks[i] = watermarks[i + 1].min(traces[i].start_ns());
    }
    let warmup = traces_holding(traces, WARMUP_SPANS);
    let mut last = (0usize, AggregateStats::default());
    let rate = best_of(|warmup_run| {
        let n = if warmup_run { warmup } else { traces.len() };
        let mut aggregator = Aggregator::new(settings.clone());
        let mut out: Vec<WindowAggregate> = Vec::new();
        let (mut spans, mut emitted) = (0usize, 0usize);
        let started = Instant::now();
        for (i, trace) in traces[..n].iter().enumerate() {
            aggregator.add_trace(black_box(trace), &edges[i]);
            spans += trace.spans.len();
            if (i + 1) % ADVANCE_EVERY == 0 {
                aggregator.advance(watermarks[i + 1], &mut out);
                emitted += out.len();
                black_box(&out);
                out.clear();
            }
        }
        aggregator.flush(&mut out);
        emitted += out.len();
        black_box(&out);
        out.clear();
        let secs = started.elapsed().as_secs_f64();
        last = (emitted, aggregator.stats().clone());
        (spans, secs)
    });
    let (emitted, stats) = last;
    note(format_args!(
        "aggregate: {} windows of {:?}, {} scopes{}; {} spans and {} edges added ({} late), {} window aggregates emitted, {} calls overflowed",
        settings.windows.len(),
        settings.windows.iter().map(|w| Duration::from_nanos(w.size_ns as u64)).collect::<Vec<_>>(),
        settings.dimension_sets.len(),
        if settings.service_graph { " + service graph" } else { "" },
        stats.spans,
        stats.edges,
        stats.late_spans + stats.late_edges,
        emitted,
        stats.overflowed_calls
    ));
    rate
}

/// What the pure pipeline emitted in one run.
#[derive(Default)]
struct StagesTally {
    traces: usize,
    spans_out: usize,
    late: usize,
    aggregates: usize,
    /// Records of the stages after aggregate (alerts), if the pipeline has any.
    other: usize,
    analyzed: u64,
    open: usize,
    /// Model trainings of the detect stage asked for, models installed, and the time
    /// the training thread spent.
    trainings: usize,
    installed: usize,
    training: Duration,
    secs: f64,
}

/// The default pipeline's driver as `spanline run` builds it, outputs Avro-encoded (with
/// made-up schema ids), without Kafka: one input partition.
fn bench_driver(config: &PipelineConfig) -> Driver {
    let avro = |o: &spanline::config::TopicOutput| OutputSpec {
        topic: o.topic.clone(),
        encoding: Encoding::Avro {
            key_schema_id: 1,
            value_schema_id: 2,
        },
    };
    let outs = &config.outputs;
    let outputs = Outputs {
        traces: avro(&outs.traces),
        late: outs.late.as_ref().map(avro),
        aggregates: outs.aggregates.as_ref().map(avro),
        alerts: outs.alerts.as_ref().map(avro),
    };
    let settings = DriverSettings {
        commit_interval_ms: 1000,
        schema_registry: false,
        span_metrics: true,
        changelog: None,
    };
    let mut driver = Driver::new(config, Driver::sources_of(config), outputs, settings);
    let assigned = Event::Assigned {
        partitions: vec![("spans".to_string(), 0)],
        now_ms: wall_ms(),
    };
    driver.handle(assigned).expect("assigned");
    driver
}

/// Figure 7: every stage of the default pipeline (assemble, analyze, aggregate and
/// those after them) over pre-decoded spans, driven as `runner::run` drives them,
/// without Kafka.
fn all_stages(spans: &[Span]) -> f64 {
    let config = pipeline_config();
    let mut last = StagesTally::default();
    let rate = best_of(|warmup| {
        let n = if warmup {
            WARMUP_SPANS.min(spans.len())
        } else {
            spans.len()
        };
        // cloned before the clock starts
        let input: Vec<Span> = spans[..n].to_vec();
        let mut input = input.into_iter();
        let mut driver = bench_driver(&config);
        let mut tally = StagesTally::default();
        let mut offset = 0i64;
        let (jobs, trainer_jobs) = std::sync::mpsc::channel();
        let (trainer_models, trained) = std::sync::mpsc::channel();
        let trainer = std::thread::spawn(move || {
            let mut busy = Duration::ZERO;
            for job in trainer_jobs {
                let started = Instant::now();
                let model = spanline::stage::detect::TrainingJob::run(job);
                busy += started.elapsed();
                if trainer_models.send(model).is_err() {
                    break;
                }
            }
            busy
        });
        let started = Instant::now();
        loop {
            let now = wall_ms();
            let mut any = false;
            // one record a span, a poll batch at a time, as the runner feeds the driver
            for span in input.by_ref().take(POLL_BATCH) {
                driver.push_spans("spans", 0, offset, [span], now);
                offset += 1;
                any = true;
            }
            driver
                .handle(Event::Tick { now_ms: wall_ms() })
                .expect("no delivery fails here");
            // as the runner does: every record acknowledged, models trained on another
            // thread and installed once trained
            for effect in driver.take_effects() {
                match effect {
                    Effect::Produce(p) => {
                        match p.kind {
                            OutputKind::Trace => tally.traces += 1,
                            OutputKind::Late => tally.late += 1,
                            OutputKind::Aggregate => tally.aggregates += 1,
                            _ => tally.other += 1,
                        }
                        black_box(&p.value);
                        let acked = Event::Acked {
                            topic: p.topic,
                            holds: p.holds,
                            epoch: p.epoch,
                            error: None,
                        };
                        driver.handle(acked).expect("acknowledged");
                    }
                    Effect::Train(job) => {
                        tally.trainings += 1;
                        let _ = jobs.send(job);
                    }
                    Effect::Commit(c) | Effect::CommitTransaction(c) => {
                        driver.handle(Event::Committed(c)).expect("committed")
                    }
                    other => {
                        black_box(&other);
                    }
                }
            }
            while let Ok(model) = trained.try_recv() {
                tally.installed += 1;
                driver.handle(Event::Trained(model)).expect("installed");
            }
            if !any {
                break;
            }
        }
        let asm = &driver.stages().assembler;
        // every span added left in a trace record, but those still buffered
        tally.spans_out = (asm.stats().spans_added as usize).saturating_sub(asm.buffered_spans());
        let secs = started.elapsed().as_secs_f64();
        drop((jobs, trained));
        tally.training = trainer.join().expect("trainer");
        tally.secs = secs;
        tally.analyzed = driver.stages().stats().analyzed;
        tally.open = driver.stages().assembler.open_traces();
        last = tally;
        drop(driver);
        (n, secs)
    });
    let stages: Vec<&str> = config.stages.iter().map(|s| s.type_name()).collect();
    note(format_args!(
        "all_stages ({}): {} spans, {} traces emitted ({} spans, {} analysed), {} late spans, {} window aggregates, {} other records, {} traces still open at the end; the detect stage asked for {} model trainings ({} installed in time), which kept a thread of their own busy {:.2} s of the run's {:.2} s",
        stages.join(" -> "),
        spans.len(),
        last.traces,
        last.spans_out,
        last.analyzed,
        last.late,
        last.aggregates,
        last.other,
        last.open,
        last.trainings,
        last.installed,
        last.training.as_secs_f64(),
        last.secs
    ));
    rate
}

// ---------------------------------------------------------------------------------------
// Figure 8: end to end through the embedded broker and registry, every stage of the
// default pipeline, with the input produced while the pipeline consumes it.

/// Records prepared for the end-to-end figure (about 340 bytes each).
const E2E_SPANS: usize = 3_000_000;
/// The measured window: from the first record the pipeline decodes, production goes on
/// this long (then what is still unconsumed is drained, and counted).
const E2E_WINDOW: Duration = Duration::from_secs(8);
/// Records produced and not yet consumed, at most. The embedded broker keeps about 5 MB
/// of record batches per partition (about 80 bytes per lz4-compressed span record):
/// this keeps every unconsumed record well inside what it retains.
const E2E_LAG: u64 = 100_000;
/// The consumer's `fetch.wait.max.ms` in the end-to-end runs (see [`measure`]).
const E2E_FETCH_WAIT_MS: u32 = 5;
/// A run that has not finished by then failed.
const E2E_TIMEOUT: Duration = Duration::from_secs(60);

/// The end-to-end input, Avro-encoded before any run: the workload's spans over and over,
/// each repetition later in event time than the one before and with trace ids of its own.
struct E2eInput {
    bytes: Vec<u8>,
    /// End of each record in `bytes`.
    ends: Vec<usize>,
    trace_ids: Vec<TraceId>,
}

impl E2eInput {
    fn new(spans: &[Span], total: usize, schema_id: u32) -> Self {
        let first = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let last = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
        // a gap of 10 s between repetitions closes every trace of the one before
        let period = last - first + 10_000_000_000;
        let mut input = Self {
            bytes: Vec::with_capacity(total * 340),
            ends: Vec::with_capacity(total),
            trace_ids: Vec::with_capacity(total),
        };
        for i in 0..total {
            let cycle = i / spans.len();
            let span = &spans[i % spans.len()];
            if cycle == 0 {
                input.push(span, schema_id);
            } else {
                input.push(&shifted(span, cycle, period), schema_id);
            }
        }
        input
    }

    fn push(&mut self, span: &Span, schema_id: u32) {
        avro::put_frame(&mut self.bytes, schema_id);
        avro::write_span(&mut self.bytes, span);
        self.ends.push(self.bytes.len());
        self.trace_ids.push(span.trace_id);
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// `span` of repetition `cycle`: `cycle * period` later, its trace id changed.
fn shifted(span: &Span, cycle: usize, period: i64) -> Span {
    let shift = cycle as i64 * period;
    let mut s = span.clone();
    s.trace_id ^= (cycle as u128) << 100;
    s.start_ns += shift;
    s.end_ns += shift;
    if !s.events.is_empty() {
        let mut events = EventsBuilder::default();
        for (time, name, attributes) in span.events.iter() {
            events.push(time + shift, name, &attributes);
        }
        s.events = events.build();
    }
    s
}

struct Progress {
    /// (when, spans) of the poll samples since the first record.
    samples: Vec<(Instant, u64)>,
    done: bool,
}

/// Shared between the feeding thread and the run's shutdown future.
#[derive(Default)]
struct FeedState {
    /// Records handed to the producer so far.
    sent: AtomicU64,
    /// Set once the feeder stopped and flushed: `sent` is final.
    done: AtomicBool,
    /// Asks the feeder to stop.
    stop: AtomicBool,
}

/// What the feeding thread did in one run.
#[derive(Default)]
struct Feed {
    sent: u64,
    /// Time spent waiting on the lag bound once the pipeline was consuming.
    waited: Duration,
    /// Every prepared record was sent before the window ended.
    exhausted: bool,
}

/// Produces the records of `input` in order until asked to stop, keeping at most
/// `E2E_LAG` records produced and not yet consumed (`consumed()` counts the spans the
/// pipeline decoded): the rate follows the pipeline's, just above it.
fn feed(
    bootstrap: &str,
    input: &E2eInput,
    consumed: impl Fn() -> u64,
    state: &FeedState,
) -> Result<Feed, String> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    let mut fed = Feed::default();
    'records: for i in 0..input.len() {
        loop {
            if state.stop.load(Ordering::Relaxed) {
                break 'records;
            }
            let seen = consumed();
            if fed.sent < seen + E2E_LAG {
                break;
            }
            let waiting = Instant::now();
            std::thread::sleep(Duration::from_micros(500));
            if seen > 0 {
                fed.waited += waiting.elapsed();
            }
        }
        let trace_id = input.trace_ids[i];
        let key = hex_trace_id(trace_id);
        let partition = partition_for_trace(trace_id, E2E_PARTITIONS as u32) as i32;
        let mut record = BaseRecord::to("spans")
            .partition(partition)
            .key(key.as_bytes())
            .payload(input.record(i));
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    state.done.store(true, Ordering::Release);
                    return Err(format!("produce: {e}"));
                }
            }
        }
        fed.sent += 1;
        state.sent.store(fed.sent, Ordering::Release);
        fed.exhausted = i + 1 == input.len();
    }
    let flushed = producer
        .flush(Duration::from_secs(30))
        .map_err(|e| format!("flush: {e}"));
    state.done.store(true, Ordering::Release);
    flushed.map(|()| fed)
}

/// The figure's per-run result.
struct E2eRun {
    rate: f64,
    spans: u64,
    secs: f64,
}

/// How the end-to-end pipeline keeps its state and delivers.
#[derive(Debug, Clone, Copy)]
struct E2eMode {
    name: &'static str,
    changelogs: bool,
    exactly_once: bool,
}

/// The modes compared in one run: state in memory (as before the changelogs), the
/// default (at-least-once with changelogs), and exactly-once. The embedded broker
/// (librdkafka's mock cluster) answers the transaction requests without writing markers:
/// the figure is the pipeline's own cost of transactions, not a broker's.
const E2E_MODES: [E2eMode; 3] = [
    E2eMode {
        name: "in_memory",
        changelogs: false,
        exactly_once: false,
    },
    E2eMode {
        name: "at_least_once",
        changelogs: true,
        exactly_once: false,
    },
    E2eMode {
        name: "exactly_once",
        changelogs: true,
        exactly_once: true,
    },
];

fn end_to_end(spans: &[Span]) -> Result<Vec<(E2eMode, E2eRun)>, String> {
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

    let started = Instant::now();
    let input = E2eInput::new(spans, E2E_SPANS, schema_id);
    note(format_args!(
        "end_to_end: {} single-span Avro records prepared ({:.1} bytes/record, the workload repeated {} times) in {:.1} s",
        input.len(),
        input.bytes.len() as f64 / input.len().max(1) as f64,
        input.len().div_ceil(spans.len().max(1)),
        started.elapsed().as_secs_f64()
    ));
    let mut result = Ok(Vec::new());
    for mode in E2E_MODES {
        match measure(&rt, &url, &input, mode) {
            Ok(run) => {
                if let Ok(runs) = &mut result {
                    runs.push((mode, run));
                }
            }
            Err(e) => {
                result = Err(format!("{}: {e}", mode.name));
                break;
            }
        }
    }
    drop(input);
    drop(registry);
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Every topic the default pipeline reads or writes (as `spanline demo` creates them on
/// the embedded broker).
fn pipeline_topics(config: &PipelineConfig) -> Vec<String> {
    let sources = &config.sources;
    let outputs = &config.outputs;
    let mut topics: Vec<String> = sources.iter().flat_map(|s| s.topics.clone()).collect();
    topics.extend(sources.iter().filter_map(|s| s.dead_letter_topic.clone()));
    topics.push(outputs.traces.topic.clone());
    topics.extend(
        [&outputs.late, &outputs.aggregates, &outputs.alerts]
            .into_iter()
            .flatten()
            .map(|o| o.topic.clone()),
    );
    topics.sort();
    topics.dedup();
    topics
}

/// Runs the pipeline `RUNS` times, each on a fresh embedded broker fed while the pipeline
/// consumes; returns the run with the best rate of `spanline_spans_in_total` from the first
/// decoded record to the last poll before everything produced was consumed.
fn measure(
    rt: &tokio::runtime::Runtime,
    url: &str,
    input: &E2eInput,
    mode: E2eMode,
) -> Result<E2eRun, String> {
    metrics::init();
    let topics = pipeline_topics(&pipeline_config());
    note(format_args!(
        "end_to_end: topics {} ({E2E_PARTITIONS} partitions each)",
        topics.join(", ")
    ));
    let mut best: Option<E2eRun> = None;
    for run in 0..RUNS {
        let kafka = EmbeddedKafka::start(E2E_PARTITIONS, &topics)?;
        let bootstrap = kafka.bootstrap().to_string();
        let mut config =
            spanline::config::load_str(&e2e_pipeline(), |_| None).map_err(|e| e.to_string())?;
        config.kafka.brokers = bootstrap.clone();
        config.kafka.group_id = format!(
            "bench-throughput-{}-{}-{run}",
            mode.name,
            std::process::id()
        );
        config.kafka.changelogs = mode.changelogs;
        if mode.exactly_once {
            config.delivery = spanline::config::Delivery::ExactlyOnce;
        }
        // The embedded broker answers a fetch that finds no data only after the fetch's
        // whole wait (default 500 ms), even when records arrive meanwhile; a real broker
        // answers as soon as they arrive. With the input produced as the pipeline reads
        // it, the consumer catches up now and then, and would then idle that long.
        config
            .kafka
            .properties
            .insert("fetch.wait.max.ms".into(), E2E_FETCH_WAIT_MS.to_string());
        if let Some(sr) = &mut config.schema_registry {
            sr.url = url.to_string();
        }
        config.http.listen = "127.0.0.1:0".parse().expect("address");
        let endpoints = Endpoints {
            brokers: bootstrap.clone(),
            registry: Some(url.to_string()),
        };
        let counter = metrics::SPANS_IN.with_label_values(&["spans"]);
        let base = counter.get();
        let state = Arc::new(FeedState::default());
        let progress = Arc::new(Mutex::new(Progress {
            samples: Vec::new(),
            done: false,
        }));
        let stop = {
            let progress = progress.clone();
            let counter = counter.clone();
            let state = state.clone();
            async move {
                let started = Instant::now();
                let mut first: Option<Instant> = None;
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let seen = counter.get() - base;
                    let now = Instant::now();
                    let mut p = progress.lock().expect("progress");
                    if seen > 0 {
                        p.samples.push((now, seen));
                        first.get_or_insert(now);
                    }
                    if first.is_some_and(|t| now - t >= E2E_WINDOW) {
                        state.stop.store(true, Ordering::Relaxed);
                    }
                    if state.done.load(Ordering::Acquire)
                        && seen >= state.sent.load(Ordering::Acquire)
                    {
                        p.done = true;
                        return;
                    }
                    if now - started > E2E_TIMEOUT {
                        state.stop.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        };
        let started = Instant::now();
        let (ran, fed) = std::thread::scope(|s| {
            let feeder = {
                let counter = counter.clone();
                let state = &*state;
                let bootstrap = bootstrap.as_str();
                s.spawn(move || feed(bootstrap, input, || counter.get() - base, state))
            };
            let ran = rt.block_on(runner::run(config, endpoints, Readiness::default(), stop));
            state.stop.store(true, Ordering::Relaxed);
            let fed = feeder
                .join()
                .unwrap_or_else(|_| Err("the feeding thread panicked".to_string()));
            (ran, fed)
        });
        drop(kafka);
        ran.map_err(|e| e.to_string())?;
        let fed = fed?;
        let p = progress.lock().expect("progress");
        let total = fed.sent;
        if !p.done {
            return Err(format!(
                "run {}: {} of {total} produced spans consumed within {} s (records lost to the broker's retention?)",
                run + 1,
                p.samples.last().map_or(0, |s| s.1),
                E2E_TIMEOUT.as_secs()
            ));
        }
        let (t0, v0) = p.samples[0];
        // From the first sample with records to the last sample before the end (the last
        // poll overshoots the moment the last span arrived).
        let (t1, v1) = p
            .samples
            .iter()
            .rev()
            .find(|s| s.1 < total && s.1 > v0)
            .copied()
            .unwrap_or(*p.samples.last().expect("a sample"));
        let secs = (t1 - t0).as_secs_f64();
        let rate = if secs > 0.0 {
            (v1 - v0) as f64 / secs
        } else {
            0.0
        };
        note(format_args!(
            "end_to_end {} run {}: first record {:.2} s after start; {} spans over {:.2} s measured ({} samples), {:.0} spans/s; all {total} produced spans consumed; the producer waited on the {E2E_LAG}-record lag bound {:.0}% of the measured time{}",
            mode.name,
            run + 1,
            (t0 - started).as_secs_f64(),
            v1 - v0,
            secs,
            p.samples.len(),
            rate,
            100.0 * fed.waited.as_secs_f64() / secs.max(1e-9),
            if fed.exhausted { " (ran out of prepared records)" } else { "" }
        ));
        if best.as_ref().is_none_or(|b| rate > b.rate) {
            best = Some(E2eRun {
                rate,
                spans: v1 - v0,
                secs,
            });
        }
    }
    best.ok_or_else(|| "no run".to_string())
}

// ---------------------------------------------------------------------------------------

/// Notes the load average: the figures assume nothing else runs on the machine.
fn load_average(when: &str) {
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        note(format_args!(
            "load average at {when}: {} (1, 5, 15 min)",
            load.join(" ")
        ));
    }
}

/// The sections, in the order they run.
const SECTIONS: [&str; 10] = [
    "core",
    "analyze",
    "aggregate",
    "stages",
    "avro",
    "proto",
    "json",
    "memory",
    "detect",
    "e2e",
];
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
        load_average("start");
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
        load_average("end");
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

    // 5-7. the stages after assembly
    if run("analyze") || run("aggregate") {
        let started = Instant::now();
        let traces = workload_traces(&spans);
        note(format_args!(
            "traces: {} pre-assembled workload traces ({:.1} spans per trace) built in {:.1} s",
            traces.len(),
            spans.len() as f64 / traces.len().max(1) as f64,
            started.elapsed().as_secs_f64()
        ));
        if run("analyze") {
            let rate = analyze_figure(&traces);
            let per_trace = spans.len() as f64 / traces.len().max(1) as f64;
            figure("analyze_spans_per_s", format_args!("{rate:.0}"), "spans/s");
            figure(
                "analyze_traces_per_s",
                format_args!("{:.0}", rate / per_trace),
                "traces/s",
            );
            target("analyze_spans_per_s", rate, 300_000.0);
        }
        if run("aggregate") {
            let rate = aggregate_figure(&traces);
            figure(
                "aggregate_spans_per_s",
                format_args!("{rate:.0}"),
                "spans/s",
            );
            target("aggregate_spans_per_s", rate, 1_000_000.0);
        }
    }
    if run("stages") {
        let rate = all_stages(&spans);
        figure(
            "all_stages_spans_per_s",
            format_args!("{rate:.0}"),
            "spans/s",
        );
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

    // 7b. detect: per-window scoring latency
    if run("detect") {
        let (series, windows) = detect_scoring();
        let q = |v: &[Duration], p: f64| {
            v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        figure(
            "detect_score_series_window_p99_us",
            format_args!("{:.1}", q(&series, 0.99).as_secs_f64() * 1e6),
            "us",
        );
        figure(
            "detect_score_closed_window_p99_ms",
            format_args!("{:.2}", q(&windows, 0.99).as_secs_f64() * 1e3),
            "ms",
        );
        note(format_args!(
            "detect: {} warm series-windows scored with models: p50 {:.1} us, p99 {:.1} us, max {:.1} us per series (target <= 1 ms {}); {} closed windows of {SCORE_SERIES} series: p50 {:.2} ms, p99 {:.2} ms (bound 200 ms {})",
            series.len(),
            q(&series, 0.5).as_secs_f64() * 1e6,
            q(&series, 0.99).as_secs_f64() * 1e6,
            series.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
            if q(&series, 0.99) <= Duration::from_millis(1) { "met" } else { "NOT met" },
            windows.len(),
            q(&windows, 0.5).as_secs_f64() * 1e3,
            q(&windows, 0.99).as_secs_f64() * 1e3,
            if q(&windows, 0.99) <= Duration::from_millis(200) { "met" } else { "NOT met" },
        ));
    }

    // 8. end to end
    if run("e2e") {
        match end_to_end(&spans) {
            Ok(modes) => {
                let (n, mean, p99) = ack_latency();
                figure("alert_ack_latency_p99_s", format_args!("<= {p99}"), "s");
                note(format_args!(
                    "alert_ack_latency: {n} alerts over all runs, mean {:.1} ms, p99 at most {p99} s (histogram bucket); target <= 1 s {}",
                    mean * 1e3,
                    if p99 <= 1.0 { "met" } else { "NOT met" }
                ));
                for (mode, best) in &modes {
                    figure(
                        &format!("end_to_end_embedded_all_stages_{}_spans_per_s", mode.name),
                        format_args!("{:.0}", best.rate),
                        "spans/s",
                    );
                    note(format_args!(
                        "end_to_end {}: {} spans over {:.1} s",
                        mode.name, best.spans, best.secs
                    ));
                }
                let rate = |name: &str| {
                    modes
                        .iter()
                        .find(|(m, _)| m.name == name)
                        .map_or(0.0, |(_, r)| r.rate)
                };
                let (memory, alo, eos) = (
                    rate("in_memory"),
                    rate("at_least_once"),
                    rate("exactly_once"),
                );
                note(format_args!(
                    "end_to_end ratios from this run: at-least-once with changelogs / state in memory = {:.2} (bar >= 0.80 {}); exactly-once / at-least-once = {:.2} (bar >= 0.70 {})",
                    alo / memory.max(1.0),
                    if alo >= 0.8 * memory { "met" } else { "NOT met" },
                    eos / alo.max(1.0),
                    if eos >= 0.7 * alo { "met" } else { "NOT met" },
                ));
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
