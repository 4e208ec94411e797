//! The `spanline` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use spanline::codec::Format;
use spanline::config::{self, PipelineConfig};
use spanline::generate::{self, GenerateOptions};
use spanline::kafka::embedded::EmbeddedKafka;
use spanline::runner::{self, Endpoints};
use spanline::telemetry::{self, http::Readiness};
use spanline::workload::parse_faults;

/// `println!` for a long-running process: a closed stdout (a reader that went away, as
/// in `spanline run | head -3`) loses the line instead of panicking the pipeline.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod compare_cmd;
mod demo;
mod serve_cmd;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stream processor for distributed-tracing data on Kafka.
#[derive(Parser)]
#[command(name = "spanline", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: embedded broker and schema registry, a synthetic
    /// multi-agent workload with faults, and the default pipeline.
    Demo(demo::DemoArgs),
    /// Run a pipeline against the brokers it names.
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Delete the state kept in the changelog topics instead of restoring it (after
        /// a change that makes it unreadable); logged and counted.
        #[arg(long)]
        reset_state: bool,
    },
    /// Run only the trace repository and its query API, fed from the output topics of
    /// a pipeline that runs elsewhere (its consumer group is `<group_id>-repository-<instance>`).
    Serve {
        /// The pipeline file whose outputs to read (its `repository:` and `http:`).
        pipeline: PathBuf,
    },
    /// Compare a baseline time range against a current one per service and operation
    /// (latency quantiles, error rate, throughput, with significance), from the
    /// pipeline's trace repository.
    Compare(compare_cmd::CompareArgs),
    /// Check pipeline files without connecting anywhere; reports every error.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
    },
    /// Run a pipeline's stages over recorded OTLP JSON lines (`.gz` accepted), without
    /// Kafka, and write each output topic to DIR/<topic>.jsonl.
    Replay {
        pipeline: PathBuf,
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        #[arg(long)]
        output_dir: PathBuf,
    },
    /// Run the pipeline's series detector over the NAB corpus and write NAB result files
    /// (`<out>/<detector>/<category>/<detector>_<file>.csv`) for NAB's scorer.
    Nab {
        /// The corpus' data directory (one folder per category of CSV files).
        #[arg(long)]
        data: PathBuf,
        /// Where the result files go.
        #[arg(long)]
        out: PathBuf,
        /// Detector name in the result paths (no `_`).
        #[arg(long, default_value = "spanline")]
        detector: String,
    },
    /// Produce the synthetic workload to a Kafka topic.
    Generate {
        #[arg(long)]
        brokers: String,
        #[arg(long, default_value = "spans")]
        topic: String,
        #[arg(long, default_value = "avro")]
        format: Format,
        /// Schema registry URL (for --format avro).
        #[arg(long)]
        schema_registry: Option<String>,
        /// Traces per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Stop after this long (e.g. 30s); without it, run until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Faults, e.g. `latency:llm-openai*8@60s+30s,errors:vector-store@120s+20s,outage:search-agent@200s+30s`.
        #[arg(long, default_value = "")]
        faults: String,
        /// Produce in order, with no late, duplicate or malformed records.
        #[arg(long)]
        clean: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(matches!(cli.log_format, LogFormat::Json));
    if let Command::Validate { pipelines } = &cli.command {
        return validate(pipelines);
    }
    if let Command::Compare(args) = cli.command {
        return match compare_cmd::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Run {
                pipeline,
                reset_state,
            } => run(pipeline, reset_state).await,
            Command::Serve { pipeline } => serve_cmd::serve(&pipeline).await,
            Command::Replay {
                pipeline,
                input,
                output_dir,
            } => {
                let config = load(&pipeline)?;
                let s = spanline::replay::replay(&config, &input, &output_dir)?;
                println!(
                    "replayed {} lines: {} spans, {} traces, {} late spans, {} bad lines -> {}",
                    s.lines,
                    s.spans,
                    s.traces,
                    s.late,
                    s.bad_lines,
                    output_dir.display()
                );
                Ok(())
            }
            Command::Generate {
                brokers,
                topic,
                format,
                schema_registry,
                rate,
                duration,
                faults,
                clean,
                seed,
            } => {
                let faults = parse_faults(&faults).map_err(|e| format!("--faults: {e}"))?;
                let opts = GenerateOptions {
                    brokers,
                    topic,
                    format,
                    registry: schema_registry,
                    rate,
                    faults,
                    seed,
                    disorder: !clean,
                    batch: 100,
                };
                let s = generate::generate(opts, stop_after(duration)).await?;
                println!(
                    "produced {} traces, {} spans, {} malformed records",
                    s.traces, s.spans, s.malformed
                );
                Ok(())
            }
            Command::Nab {
                data,
                out,
                detector,
            } => {
                let summary = spanline::nab::run(&data, &out, &detector)?;
                println!("{summary:?}");
                Ok(())
            }
            Command::Validate { .. } | Command::Compare(_) => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// What a command reports when it fails: the error's message names its causes.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn validate(paths: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in paths {
        match config::load_file(path) {
            Ok(_) => println!("{}: ok", path.display()),
            Err(errors) => {
                failed = true;
                for e in &errors.0 {
                    println!("{}: {e}", path.display());
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub fn load(path: &std::path::Path) -> Result<PipelineConfig, CliError> {
    config::load_file(path).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect();
        CliError::from(format!("invalid pipeline\n{}", lines.join("\n")))
    })
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (`docker stop`, a Kubernetes pod stop), or
/// after `duration` when given. The signals are caught from the call on, so one that
/// comes while the pipeline still starts (joins, restores) stops it once it runs.
pub fn stop_after(duration: Option<Duration>) -> impl std::future::Future<Output = ()> {
    let signals = StopSignals::listen();
    async move {
        let sleep = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            signal = signals.first() => tracing::info!(signal, "stopping"),
        }
    }
}

/// SIGINT and SIGTERM, listened for from creation.
struct StopSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind)
                    .map_err(|e| tracing::warn!(error = %e, "cannot listen for {name}"))
                    .ok()
            };
            Self {
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The first of SIGINT and SIGTERM.
    async fn first(mut self) -> &'static str {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let (interrupt, terminate) = (self.interrupt.take(), self.terminate.take());
            tokio::select! {
                _ = wait(interrupt) => "SIGINT",
                _ = wait(terminate) => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// Topics the embedded broker must have for `config`, with their partition counts: the
/// sources, outputs and changelogs with `kafka.embedded_partitions`, the internal topics
/// as the runner would create them (the embedded broker answers no CreateTopics).
pub fn pipeline_topics(config: &PipelineConfig) -> Vec<(String, i32)> {
    let mut topics: Vec<String> = config
        .sources
        .iter()
        .flat_map(|s| s.topics.iter().cloned())
        .collect();
    topics.extend(
        config
            .sources
            .iter()
            .filter_map(|s| s.dead_letter_topic.clone()),
    );
    topics.push(config.outputs.traces.topic.clone());
    topics.extend(config.outputs.late.as_ref().map(|l| l.topic.clone()));
    topics.extend(config.outputs.aggregates.as_ref().map(|l| l.topic.clone()));
    topics.extend(config.outputs.alerts.as_ref().map(|l| l.topic.clone()));
    if config.kafka.changelogs {
        topics.extend(
            spanline::state::Store::ALL
                .iter()
                .map(|s| s.topic(&config.kafka.group_id)),
        );
    }
    topics.sort();
    topics.dedup();
    let partitions = config.kafka.embedded_partitions;
    let mut topics: Vec<(String, i32)> = topics.into_iter().map(|t| (t, partitions)).collect();
    if config.repartitions_spans() {
        let n = config.kafka.repartition_partitions.unwrap_or(partitions);
        topics.push((config.kafka.repartition_topic(), n.max(1)));
    }
    if config.merges_windows() {
        topics.push((
            config.kafka.aggregate_repartition_topic(),
            runner::MERGE_PARTITIONS as i32,
        ));
    }
    topics
}

/// Embedded services a pipeline asked for, kept alive while it runs.
pub struct Embedded {
    pub kafka: Option<EmbeddedKafka>,
    pub registry: Option<spanline::registry::RegistryHandle>,
    pub endpoints: Endpoints,
}

/// Starts `embedded` broker and registry where the pipeline names them, and checks that
/// real ones are reachable.
pub async fn resolve(config: &PipelineConfig) -> Result<Embedded, CliError> {
    let kafka = if config.kafka.brokers == "embedded" {
        Some(EmbeddedKafka::start_topics(&pipeline_topics(config))?)
    } else {
        None
    };
    let brokers = kafka
        .as_ref()
        .map_or(config.kafka.brokers.clone(), |k| k.bootstrap().to_string());
    if kafka.is_none() {
        check_brokers(&brokers, &config.kafka.common())?;
    }
    let registry = match config.schema_registry.as_ref().map(|s| s.url.as_str()) {
        Some("embedded") => Some(
            spanline::registry::start(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .map_err(|e| format!("cannot start the embedded schema registry: {e}"))?,
        ),
        _ => None,
    };
    let registry_url = match (&registry, &config.schema_registry) {
        (Some(r), _) => Some(r.url().to_string()),
        (None, Some(s)) => Some(s.url.clone()),
        (None, None) => None,
    };
    Ok(Embedded {
        kafka,
        registry,
        endpoints: Endpoints {
            brokers,
            registry: registry_url,
        },
    })
}

pub fn check_brokers(
    brokers: &str,
    properties: &std::collections::BTreeMap<String, String>,
) -> Result<(), CliError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut cfg = rdkafka::ClientConfig::new();
    cfg.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer = cfg.create().map_err(|e| format!("kafka client: {e}"))?;
    tokio::task::block_in_place(|| consumer.fetch_metadata(None, Duration::from_secs(10)))
        .map(|_| ())
        .map_err(|e| format!("cannot reach kafka brokers {brokers}: {e} (check kafka.brokers and kafka.properties)").into())
}

async fn run(path: PathBuf, reset_state: bool) -> Result<(), CliError> {
    let mut config = load(&path)?;
    config.kafka.reset_state = reset_state;
    let embedded = resolve(&config).await?;
    let ready = Readiness::default();
    telemetry::init();
    let repository = serve_cmd::start_beside(&config, &embedded.endpoints.brokers);
    let api = serve_cmd::routes(&repository, &ready);
    let (addr, _server) = telemetry::http::serve_with(config.http.listen, ready.clone(), api)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e} (set http.listen)",
                config.http.listen
            )
        })?;
    say!("ui: http://{addr}/");
    say!("kafka: {}", embedded.endpoints.brokers);
    if let Some(url) = &embedded.endpoints.registry {
        say!("schema registry: {url}");
    }
    say!("metrics: http://{addr}/metrics");
    serve_cmd::announce(&repository, addr);
    let result = runner::run(config, embedded.endpoints.clone(), ready, stop_after(None)).await;
    if let Some(r) = repository {
        r.stop().await;
    }
    result.map(|_| ()).map_err(CliError::from)
}
