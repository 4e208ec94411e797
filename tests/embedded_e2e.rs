//! End to end on the embedded broker: spans in (Avro, OTLP protobuf, OTLP JSON), traces
//! out, dead letters, a crash and restart, and live versus replay.
//!
//! The tests by what they check: `sources` (each input format becomes traces, bad records
//! are dead-lettered), `restart` (a crash mid-window loses no span), `replay` (live and
//! replay close the same traces) and `alerts` (the alerts topic and the acknowledgement
//! latency), with the records they send and read in `records`. The broker, the registry
//! and the pipeline under test are set up here.

#[path = "embedded_e2e/alerts.rs"]
mod alerts;
#[path = "embedded_e2e/records.rs"]
mod records;
#[path = "embedded_e2e/replay.rs"]
mod replay;
#[path = "embedded_e2e/restart.rs"]
mod restart;
#[path = "embedded_e2e/sources.rs"]
mod sources;
mod support;

use tokio::sync::oneshot;

use spanline::config::{load_str, PipelineConfig};
use spanline::kafka::embedded::EmbeddedKafka;
use spanline::runner::{self, Endpoints};

const S: i64 = 1_000_000_000;
const PARTITIONS: i32 = 3;

struct Env {
    kafka: EmbeddedKafka,
    registry: spanline::registry::RegistryHandle,
}

async fn env(topics: &[&str]) -> Env {
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    let kafka = EmbeddedKafka::start(PARTITIONS, &topics).unwrap();
    let registry = spanline::registry::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    Env { kafka, registry }
}

fn pipeline(group: &str, sources: &str, traces_format: &str) -> PipelineConfig {
    pipeline_with(group, sources, traces_format, "")
}

/// The test pipeline with `extra` appended to its stages (and an aggregates output when
/// it aggregates).
fn pipeline_with(group: &str, sources: &str, traces_format: &str, extra: &str) -> PipelineConfig {
    let mut aggregates = String::new();
    if extra.contains("type: aggregate") {
        aggregates.push_str("  aggregates: {topic: aggregates, format: json}\n");
    }
    if extra.contains("type: alert") {
        aggregates.push_str("  alerts: {topic: alerts, format: json}\n");
    }
    let text = format!(
        r#"
name: e2e
kafka: {{brokers: embedded, group_id: {group}, commit_interval: 200ms}}
schema_registry: {{url: embedded}}
sources:
{sources}
stages:
  - type: assemble
    out_of_orderness: 1s
    idle_gap: 2s
    max_duration: 60s
    grace: 30s
    idle_partition_timeout: 60s
{extra}
outputs:
  traces: {{topic: traces, format: {traces_format}}}
  late: {{topic: spans-late, format: avro}}
{aggregates}"#
    );
    load_str(&text, |_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the pipeline in the background; dropping the handle's sender stops it cleanly,
/// aborting the task simulates a crash.
fn start(
    env: &Env,
    config: PipelineConfig,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<runner::RunSummary, runner::RunError>>,
) {
    let endpoints = Endpoints {
        brokers: env.kafka.bootstrap().to_string(),
        registry: Some(env.registry.url().to_string()),
    };
    support::spawn_pipeline(config, endpoints)
}

fn now_ns() -> i64 {
    runner::wall_ms() * 1_000_000
}
