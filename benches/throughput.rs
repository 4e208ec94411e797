//! Throughput and memory benchmarks: `cargo bench --bench throughput`.
//!
//! Every figure is printed as one line `bench: <name>: <value> <unit>`; context and
//! targets are printed as `note: ...` lines. Throughput figures are the best of 3 timed
//! runs after a warm-up run. Each section runs in a child process of its own (see
//! [`main`]). The whole program takes about three and a half minutes on 2
//! cores (the `hop` section one and a half).
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
//!
//! The figures by what they measure: `assemble` (1 to 3: the assembly stage, over spans
//! and over records of each format), `memory` (4, with the counting allocator), `stages`
//! (5 to 7: the stages after assembly, and all of them), `detect` (7b: scoring latency),
//! `e2e` (8: through the embedded broker, fed by `feed`), `hop` (9 and 10: the
//! repartition hop, `spanline run` processes on the embedded broker, run by
//! `processes`); `common` holds the parameters and what they share.

#[path = "throughput/assemble.rs"]
mod assemble;
#[path = "throughput/common.rs"]
mod common;
#[path = "throughput/detect.rs"]
mod detect;
#[path = "throughput/e2e.rs"]
mod e2e;
#[path = "throughput/feed.rs"]
mod feed;
#[path = "throughput/hop.rs"]
mod hop;
#[path = "throughput/memory.rs"]
mod memory;
#[path = "throughput/processes.rs"]
mod processes;
#[path = "throughput/stages.rs"]
mod stages;

use std::time::{Duration, Instant};

use spanline::codec::{otlp, Format, SpanDecoder};

use assemble::{assemble_core, decode_assemble};
use common::{
    avro_decoder, avro_record, figure, note, target, workload_spans, JSON_SPANS, OTLP_BATCH,
    SCHEMA_ID, SPANS, TRACES_PER_S, WARMUP_SPANS,
};
use detect::{detect_scoring, SCORE_SERIES};
use e2e::{ack_latency, end_to_end};
use memory::memory;
use stages::{aggregate_figure, all_stages, analyze_figure, workload_traces};

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
const SECTIONS: [&str; 11] = [
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
    "hop",
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

    // 9-10. the repartition hop
    if run("hop") {
        if let Err(e) = hop::hop_figures(&spans) {
            note(format_args!("hop failed: {e}"));
            std::process::exit(1);
        }
    }
    if !child {
        note(format_args!("total {:.0} s", all.elapsed().as_secs_f64()));
    }
}
