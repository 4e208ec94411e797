//! The parameters, the output lines, and what the figures share: the workload's spans,
//! their Avro records, the default pipeline, and the best-of-runs timing.

use std::hint::black_box;
use std::io::Write;

use spanline::codec::{avro, Format, SpanDecoder};
use spanline::config::PipelineConfig;
use spanline::model::Span;
use spanline::workload::{Workload, WorkloadConfig};

// ---------------------------------------------------------------------------------------
// Parameters.

/// Spans generated for the in-process figures.
pub const SPANS: usize = 1_000_000;
/// Spans of the OTLP/JSON figure (JSON decoding is an order of magnitude slower).
pub const JSON_SPANS: usize = 300_000;
/// Spans of the warm-up run before each in-process figure.
pub const WARMUP_SPANS: usize = 200_000;
/// Spans per OTLP record.
pub const OTLP_BATCH: usize = 100;
/// Records buffered for the memory figure.
pub const MEMORY_SPANS: usize = 200_000;
/// Partitions of the embedded broker's topics.
pub const E2E_PARTITIONS: i32 = 3;
/// Trace arrival rate of the workload, in event time.
pub const TRACES_PER_S: f64 = 1_000.0;
/// Records per consumer poll batch, as `kafka::source` delivers them.
pub const POLL_BATCH: usize = 1024;
/// Timed runs per throughput figure; the best is reported.
pub const RUNS: usize = 3;
/// Schema id used in-process (the end-to-end figure uses the registry's).
pub const SCHEMA_ID: u32 = 1;

pub const PIPELINE: &str = include_str!("../../pipelines/trace-analytics.yaml");

pub fn figure(name: &str, value: impl std::fmt::Display, unit: &str) {
    let mut out = std::io::stdout().lock();
    if unit.is_empty() {
        let _ = writeln!(out, "bench: {name}: {value}");
    } else {
        let _ = writeln!(out, "bench: {name}: {value} {unit}");
    }
    let _ = out.flush();
}

pub fn note(text: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "note: {text}");
    let _ = out.flush();
}

pub fn target(name: &str, value: f64, min: f64) {
    let verdict = if value >= min { "met" } else { "NOT met" };
    note(format_args!("{name}: target >= {min:.0} spans/s {verdict}"));
}

// ---------------------------------------------------------------------------------------
// Inputs.

/// About `n` spans of the synthetic workload, in the order a span topic holds them: by
/// end time (an exporter sends a span when it ends; `spanline generate` sorts the same way).
pub fn workload_spans(n: usize) -> Vec<Span> {
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

pub fn avro_record(span: &Span, schema_id: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    avro::put_frame(&mut buf, schema_id);
    avro::write_span(&mut buf, span);
    buf
}

pub fn avro_decoder() -> SpanDecoder {
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
pub fn best_of(mut f: impl FnMut(bool) -> (usize, f64)) -> f64 {
    black_box(f(true));
    (0..RUNS)
        .map(|_| {
            let (spans, secs) = f(false);
            spans as f64 / secs
        })
        .fold(0.0, f64::max)
}

pub fn pipeline_config() -> PipelineConfig {
    spanline::config::load_str(PIPELINE, |_| None).expect("pipelines/trace-analytics.yaml is valid")
}
