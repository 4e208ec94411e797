//! `spanline demo`: embedded broker and registry, the workload generator and the default
//! pipeline in one process, with a status line every few seconds.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use spanline::codec::Format;
use spanline::config;

use crate::CliError;
use spanline::generate::{self, GenerateOptions};
use spanline::model::CloseReason;
use spanline::runner;
use spanline::telemetry::{self, http::Readiness, metrics};
use spanline::workload::parse_faults;

const DEFAULT_PIPELINE: &str = include_str!("../pipelines/trace-analytics.yaml");

/// Options of `spanline demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. 30s); without it, run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Traces per second the workload generates.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Start broker, registry and pipeline only: outside producers bring the spans.
    #[arg(long)]
    no_workload: bool,
    /// Address for the web UI, the query API, /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9464")]
    http: SocketAddr,
    /// Pipeline file (default: the built-in copy of pipelines/trace-analytics.yaml).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Faults injected by the workload, relative to its start. The default's first, an
    /// error burst, alerts about a minute after the start (its windows close once their
    /// traces have); the latency spike comes once the latency rule has learnt its
    /// baseline (twelve 10 s windows).
    #[arg(
        long,
        default_value = "errors:vector-store@15s+45s,latency:llm-openai*8@150s+20s,outage:search-agent@210s+20s"
    )]
    faults: String,
    /// Seconds between status lines.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    status_every: Duration,
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

struct Totals {
    spans: u64,
    closed: u64,
    late: u64,
    dead: u64,
}

fn totals(sources: &[String]) -> Totals {
    Totals {
        spans: sources
            .iter()
            .map(|s| metrics::SPANS_IN.with_label_values(&[s]).get())
            .sum(),
        closed: CloseReason::ALL
            .iter()
            .map(|r| {
                metrics::TRACES_CLOSED
                    .with_label_values(&[r.as_str()])
                    .get()
            })
            .sum(),
        late: ["amended", "late_topic", "dropped"]
            .iter()
            .map(|o| metrics::LATE_SPANS.with_label_values(&[o]).get())
            .sum(),
        dead: spanline::codec::DecodeError::REASONS
            .iter()
            .chain(["span_too_large"].iter())
            .map(|r| {
                metrics::DEAD_LETTERED.with_label_values(&[r]).get()
                    + metrics::UNDELIVERABLE.with_label_values(&[r]).get()
            })
            .sum(),
    }
}

/// The `n` highest values of a window gauge for `scope=service` (smallest window only),
/// as `service value` pairs.
fn top_services(family: &str, extra: Option<(&str, &str)>, n: usize) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, String, f64)> = Vec::new();
    for f in metrics::REGISTRY
        .gather()
        .iter()
        .filter(|f| f.name() == family)
    {
        for m in f.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
            };
            if label("scope").as_deref() != Some("service") {
                continue;
            }
            if let Some((k, v)) = extra {
                if label(k).as_deref() != Some(v) {
                    continue;
                }
            }
            let series = label("series").unwrap_or_default();
            let service = series
                .strip_prefix("service=")
                .unwrap_or(&series)
                .to_string();
            let window = label("window").unwrap_or_default();
            rows.push((window, service, m.get_gauge().get_value()));
        }
    }
    // the smallest window size reacts fastest
    let smallest = rows
        .iter()
        .filter_map(|(w, _, _)| humantime::parse_duration(w).ok())
        .min();
    let mut top: Vec<(String, f64)> = rows
        .into_iter()
        .filter(|(w, _, _)| humantime::parse_duration(w).ok() == smallest)
        .map(|(_, s, v)| (s, v))
        .filter(|(_, v)| v.is_finite())
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(n);
    top
}

pub async fn run(args: DemoArgs) -> Result<(), CliError> {
    let text = match &args.pipeline {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
        }
        None => DEFAULT_PIPELINE.to_string(),
    };
    let mut config = config::load_str(&text, |k| std::env::var(k).ok())
        .map_err(|e| format!("invalid pipeline\n{e}"))?;
    config.kafka.brokers = "embedded".into();
    if let Some(sr) = &mut config.schema_registry {
        sr.url = "embedded".into();
    }
    let faults = parse_faults(&args.faults).map_err(|e| format!("--faults: {e}"))?;
    let embedded = crate::resolve(&config).await?;
    telemetry::init();
    let ready = Readiness::default();
    let scratch = crate::serve_cmd::demo_repository(&mut config);
    let repository = crate::serve_cmd::start_beside(&config, &embedded.endpoints.brokers);
    let api = crate::serve_cmd::routes(&repository, &ready);
    let (addr, _server) = telemetry::http::serve_with(args.http, ready.clone(), api)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e} (use --http 127.0.0.1:0 for any free port)",
                args.http
            )
        })?;
    let endpoints = embedded.endpoints.clone();
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ui: http://{addr}/");
        let _ = writeln!(out, "kafka: {}", endpoints.brokers);
        let _ = writeln!(
            out,
            "schema registry: {}",
            endpoints.registry.clone().unwrap_or_default()
        );
        let _ = writeln!(out, "metrics: http://{addr}/metrics");
        let _ = out.flush();
    }
    crate::serve_cmd::announce(&repository, addr);
    let sources: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    let (stop_gen, gen_rx) = watch::channel(false);
    let (stop_run, run_rx) = watch::channel(false);
    let pipeline = tokio::spawn(runner::run(
        config.clone(),
        endpoints.clone(),
        ready,
        wait(run_rx),
    ));
    let generator = (!args.no_workload).then(|| {
        let source = &config.sources[0];
        let opts = GenerateOptions {
            brokers: endpoints.brokers.clone(),
            topic: source.topics[0].clone(),
            format: source.format,
            registry: endpoints.registry.clone(),
            rate: args.rate,
            faults,
            seed: 7,
            disorder: true,
            batch: if source.format == Format::Avro {
                1
            } else {
                100
            },
        };
        tokio::spawn(generate::generate(opts, wait(gen_rx)))
    });

    let started = Instant::now();
    let stop = crate::stop_after(args.duration);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(args.status_every);
    tick.tick().await;
    let mut last = (Instant::now(), totals(&sources).spans);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let t = totals(&sources);
                let rate = (t.spans - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), t.spans);
                say!(
                    "status: {:>5.0}s  {rate:>8.0} spans/s  open traces {:>6}  traces closed {:>8}  late spans {:>5}  dead-lettered {:>4}",
                    started.elapsed().as_secs_f64(), metrics::OPEN_TRACES.get(), t.closed, t.late, t.dead,
                );
                let p99 = top_services("spanline_window_latency_seconds", Some(("percentile", "p99")), 3);
                let errors = top_services("spanline_window_error_rate", None, 3);
                if !p99.is_empty() {
                    let p99: Vec<String> = p99.iter().map(|(s, v)| format!("{s} {:.0}ms", v * 1e3)).collect();
                    let errors: Vec<String> = errors.iter().map(|(s, v)| format!("{s} {:.1}%", v * 100.0)).collect();
                    say!("status:         top p99: {}  |  top error rate: {}", p99.join(", "), errors.join(", "));
                }
            }
        }
    }
    let _ = stop_gen.send(true);
    let produced = match generator {
        Some(handle) => Some(handle.await.map_err(|e| e.to_string())??),
        None => None,
    };
    let _ = stop_run.send(true);
    let run = pipeline
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let t = totals(&sources);
    let by_reason: Vec<String> = CloseReason::ALL
        .iter()
        .map(|r| {
            (
                r,
                metrics::TRACES_CLOSED
                    .with_label_values(&[r.as_str()])
                    .get(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{} {n}", r.as_str()))
        .collect();
    say!("summary: ran {:.0}s", started.elapsed().as_secs_f64());
    say!(
        "summary: {} spans in, {} traces closed ({})",
        t.spans,
        t.closed,
        by_reason.join(", ")
    );
    say!(
        "summary: {} amendments, {} late spans, {} duplicate spans dropped, {} records dead-lettered",
        metrics::AMENDMENTS.get(), t.late, metrics::DUPLICATES.get(), t.dead
    );
    if let Some(p) = produced {
        say!(
            "summary: generator produced {} traces, {} spans, {} malformed records",
            p.traces,
            p.spans,
            p.malformed
        );
    }
    if !run.slowest.is_empty() {
        say!("summary: slowest traces:");
    }
    for t in &run.slowest {
        say!(
            "summary:   {} {} {:.0}ms  bottleneck: {}",
            spanline::model::hex_trace_id(t.trace_id),
            t.root,
            t.duration_ns as f64 / 1e6,
            t.bottleneck.as_deref().unwrap_or("none")
        );
        for f in &t.findings {
            say!("summary:     - {f}");
        }
    }
    if let Some(r) = repository {
        r.stop().await;
    }
    drop(scratch);
    drop(embedded);
    Ok(())
}
