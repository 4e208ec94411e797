//! The trace repository: store rate of 25-span traces with their analysis, bytes on
//! disk per span, and search latency over the stored traces.
//!
//! Traces come from the synthetic workload (each analysed by the analyze stage), cut or
//! grown to 25 spans: a trace with more keeps its first 25 in span order, one with fewer
//! takes more spans of the next trace under new span ids and its own root. Templates are
//! replayed under fresh trace ids (spread over the id space, as random ones are), 10 ms
//! apart in event time. They are stored in batches
//! of 1,000 (one transaction each), as the repository's consumer would.
//!
//! Searches are service + operation + duration range + tag queries built from stored
//! spans (the duration range brackets that span's duration; the tag is one of its
//! attributes or its resource's), newest 20 first, over all time and over the last hour.
//!
//! `cargo bench --bench repository`; `SPANLINE_BENCH_TRACES=100000` for a quicker run
//! (default 1,000,000 traces).

use std::collections::BTreeMap;
use std::time::Instant;

use spanline::model::{AttrValue, CloseReason, Span, Trace};
use spanline::repository::{Repository, RetentionSettings, TraceQuery, TraceRecord};
use spanline::stage::analyze::{analyze, AnalyzeSettings};
use spanline::workload::{Workload, WorkloadConfig};

// the binary's allocator, so the figures are the binary's
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPANS_PER_TRACE: usize = 25;
const TEMPLATES: usize = 5_000;
const BATCH: usize = 1_000;
const GAP_NS: i64 = 10_000_000;
const QUERIES: usize = 1_000;

/// Workload traces of exactly `SPANS_PER_TRACE` spans, each a list sorted by start.
fn templates() -> Vec<Vec<Span>> {
    let mut workload = Workload::new(WorkloadConfig {
        seed: 11,
        traces_per_second: 100.0,
        ..Default::default()
    });
    let mut by_trace: BTreeMap<u128, Vec<Span>> = BTreeMap::new();
    let mut order = Vec::new();
    for s in workload.generate_traces(TEMPLATES * 2) {
        let e = by_trace.entry(s.trace_id).or_default();
        if e.is_empty() {
            order.push(s.trace_id);
        }
        e.push(s);
    }
    let mut traces: Vec<Vec<Span>> = order
        .iter()
        .filter_map(|id| by_trace.remove(id))
        .map(|mut v| {
            v.sort_by_key(|s| (s.start_ns, s.span_id));
            v
        })
        .collect();
    let mut out = Vec::with_capacity(TEMPLATES);
    for i in 0..traces.len() {
        if out.len() == TEMPLATES {
            break;
        }
        let mut spans = std::mem::take(&mut traces[i]);
        let mut donor = i + 1;
        while spans.len() < SPANS_PER_TRACE && donor < traces.len() {
            // children of the donor hang under this trace's root, under new span ids
            let root = spans[0].span_id;
            for (k, s) in traces[donor].iter().filter(|s| !s.is_root()).enumerate() {
                if spans.len() == SPANS_PER_TRACE {
                    break;
                }
                let mut s = s.clone();
                s.trace_id = spans[0].trace_id;
                s.span_id ^= 0x5a5a_0000_0000_0000 | k as u64;
                s.parent_span_id = root;
                let d = s.end_ns - s.start_ns;
                s.start_ns = spans[0].start_ns;
                s.end_ns = s.start_ns + d;
                spans.push(s);
            }
            donor += 1;
        }
        spans.truncate(SPANS_PER_TRACE);
        spans.sort_by_key(|s| (s.start_ns, s.span_id));
        if spans.len() == SPANS_PER_TRACE {
            out.push(spans);
        }
    }
    out
}

/// The id of the `i`-th trace: distinct and spread over the id space as real ones are
/// (random ids land all over the trace id index; consecutive ones would only append).
fn trace_id(i: usize) -> u128 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // the low half is `i` itself, so ids never collide
    (u128::from(mix(i as u64 ^ 0x5eed)) << 64) | i as u128
}

/// The `i`-th trace: template `i % len` under a new trace id, started `i` gaps later.
fn record(templates: &[(Trace, spanline::model::Analysis)], i: usize, t0: i64) -> TraceRecord {
    let (tmpl, analysis) = &templates[i % templates.len()];
    let id = trace_id(i);
    let shift = t0 + i as i64 * GAP_NS - tmpl.start_ns();
    let spans = tmpl
        .spans
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.trace_id = id;
            s.start_ns += shift;
            s.end_ns += shift;
            s
        })
        .collect();
    TraceRecord {
        trace: Trace {
            trace_id: id,
            spans,
            amendment: false,
            close_reason: CloseReason::Completed,
            incomplete: false,
        },
        analysis: Some(analysis.clone()),
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A service + operation + duration range + tag query from a span of a template.
fn query_from(span: &Span, lookback: Option<(i64, i64)>, pick: usize) -> TraceQuery {
    let mut tags: Vec<(String, String)> = span
        .attributes
        .iter()
        .chain(span.resource.attributes.iter())
        .filter_map(|(k, v)| match v {
            AttrValue::Str(s) => Some((k.to_string(), s.to_string())),
            AttrValue::Int(n) => Some((k.to_string(), n.to_string())),
            AttrValue::Bool(b) => Some((k.to_string(), b.to_string())),
            AttrValue::Double(_) => None,
        })
        .collect();
    if tags.is_empty() {
        tags.push(("span.kind".into(), "server".into()));
    }
    let tag = tags.swap_remove(pick % tags.len());
    let d = (span.end_ns - span.start_ns).max(1);
    TraceQuery {
        service: Some(span.service().to_string()),
        operation: Some(span.name.to_string()),
        tags: vec![tag],
        min_duration_ns: Some(d / 2),
        max_duration_ns: Some(d * 2),
        start_ns: lookback.map(|l| l.0),
        end_ns: lookback.map(|l| l.1),
        limit: 20,
    }
}

fn main() {
    let n: usize = std::env::var("SPANLINE_BENCH_TRACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("repository.db");
    let mut repo = Repository::open(&path, RetentionSettings::default()).expect("open");

    let settings = AnalyzeSettings::default();
    let templates: Vec<(Trace, spanline::model::Analysis)> = templates()
        .into_iter()
        .map(|spans| {
            let trace = Trace {
                trace_id: spans[0].trace_id,
                spans,
                amendment: false,
                close_reason: CloseReason::Completed,
                incomplete: false,
            };
            let a = analyze(&trace, &settings);
            (trace, a)
        })
        .collect();
    let t0 = 1_800_000_000_000_000_000;

    let mut store_s = 0.0;
    let mut first_rate = None;
    let mut batch = Vec::with_capacity(BATCH);
    let mut i = 0;
    while i < n {
        batch.clear();
        batch.extend((i..(i + BATCH).min(n)).map(|k| record(&templates, k, t0)));
        let started = Instant::now();
        let report = repo.store_traces(&batch).expect("store");
        store_s += started.elapsed().as_secs_f64();
        assert_eq!(report.inserted, batch.len());
        i += batch.len();
        if i >= 100_000 && first_rate.is_none() {
            first_rate = Some(i as f64 / store_s);
        }
    }
    let rate = n as f64 / store_s;
    repo.checkpoint().expect("checkpoint");
    let spans = n * SPANS_PER_TRACE;
    let used = repo.used_bytes().expect("size");
    let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    // queries: all time, and the last hour of event time
    let end = t0 + n as i64 * GAP_NS;
    let mut all = Vec::with_capacity(QUERIES);
    let mut hour = Vec::with_capacity(QUERIES);
    let mut hits = 0usize;
    for q in 0..QUERIES * 2 {
        let (tmpl, _) = &templates[(q * 7919) % templates.len()];
        let span = &tmpl.spans[(q * 31) % tmpl.spans.len()];
        let lookback = (q % 2 == 1).then_some((end - 3_600_000_000_000, end));
        let query = query_from(span, lookback, q / 2);
        let started = Instant::now();
        let found = repo.search(&query).expect("search");
        let ms = started.elapsed().as_secs_f64() * 1e3;
        hits += usize::from(!found.is_empty());
        if lookback.is_some() {
            hour.push(ms);
        } else {
            all.push(ms);
        }
    }
    all.sort_by(f64::total_cmp);
    hour.sort_by(f64::total_cmp);

    println!("repository_traces: {n} ({SPANS_PER_TRACE} spans each, with analysis; {} templates from the workload)", templates.len());
    println!(
        "repository_store_rate: {rate:.0} traces/s ({:.0} spans/s; first 100,000 traces: {:.0} traces/s; batches of {BATCH})",
        rate * SPANS_PER_TRACE as f64,
        first_rate.unwrap_or(rate)
    );
    println!(
        "repository_bytes_per_span: {:.1} (pages in use {:.1} MB, file {:.1} MB, index terms and analysis included)",
        used as f64 / spans as f64,
        used as f64 / 1e6,
        file as f64 / 1e6
    );
    println!(
        "repository_search_ms: all time p50 {:.2} p99 {:.2} max {:.2}; last hour p50 {:.2} p99 {:.2} max {:.2} ({} queries each, service + operation + duration range + tag, limit 20; {hits} of {} found traces)",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
        percentile(&hour, 0.5),
        percentile(&hour, 0.99),
        percentile(&hour, 1.0),
        QUERIES,
        QUERIES * 2
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "note: store target >= 30000 traces/s {}; search target p99 <= 50 ms {}",
        verdict(rate >= 30_000.0),
        verdict(percentile(&all, 0.99).max(percentile(&hour, 0.99)) <= 50.0)
    );
}
