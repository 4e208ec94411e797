//! Figure 8: end to end through the embedded broker and registry, every stage of the
//! default pipeline, with the input produced while the pipeline consumes it (by
//! `feed`); and the alert acknowledgement latency of those runs.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spanline::codec::avro;
use spanline::config::PipelineConfig;
use spanline::kafka::embedded::EmbeddedKafka;
use spanline::kafka::registry_client::RegistryClient;
use spanline::model::Span;
use spanline::runner::{self, Endpoints};
use spanline::telemetry::http::Readiness;
use spanline::telemetry::metrics;

use super::common::{note, pipeline_config, E2E_PARTITIONS, PIPELINE, RUNS};
use super::feed::{feed, E2eInput, FeedState};

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
pub fn ack_latency() -> (u64, f64, f64) {
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

/// Records prepared for the end-to-end figure (about 340 bytes each).
const E2E_SPANS: usize = 3_000_000;
/// The measured window: from the first record the pipeline decodes, production goes on
/// this long (then what is still unconsumed is drained, and counted).
const E2E_WINDOW: Duration = Duration::from_secs(8);
/// Records produced and not yet consumed, at most. The embedded broker keeps about 5 MB
/// of record batches per partition (about 80 bytes per lz4-compressed span record):
/// this keeps every unconsumed record well inside what it retains.
pub const E2E_LAG: u64 = 100_000;
/// The consumer's `fetch.wait.max.ms` in the end-to-end runs (see [`measure`]).
const E2E_FETCH_WAIT_MS: u32 = 5;
/// A run that has not finished by then failed.
const E2E_TIMEOUT: Duration = Duration::from_secs(60);

struct Progress {
    /// (when, spans) of the poll samples since the first record.
    samples: Vec<(Instant, u64)>,
    done: bool,
}

/// The figure's per-run result.
pub struct E2eRun {
    pub rate: f64,
    pub spans: u64,
    pub secs: f64,
}

/// How the end-to-end pipeline keeps its state and delivers.
#[derive(Debug, Clone, Copy)]
pub struct E2eMode {
    pub name: &'static str,
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

pub fn end_to_end(spans: &[Span]) -> Result<Vec<(E2eMode, E2eRun)>, String> {
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
    let client = RegistryClient::new(&url, None, None).map_err(|e| e.to_string())?;
    let schema_id = rt
        .block_on(client.register("spans-value", avro::SPAN_SCHEMA))
        .map_err(|e| e.to_string())?;

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
pub fn pipeline_topics(config: &PipelineConfig) -> Vec<String> {
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
        let kafka = EmbeddedKafka::start(E2E_PARTITIONS, &topics).map_err(|e| e.to_string())?;
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
