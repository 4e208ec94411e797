//! What the runner prepares before it joins the consumer group: the output encodings
//! (Avro schemas registered), the metric series that exist from the start.

use crate::codec::{self, DecodeError};
use crate::config::{OutputFormat, PipelineConfig, TopicOutput};
use crate::driver::{MergeSettings, OutputSpec, Outputs, RepartitionSettings};
use crate::kafka::admin::{self, AdminError};
use crate::kafka::registry_client::RegistryClient;
use crate::output::Encoding;
use crate::telemetry::metrics;

use super::{Endpoints, RunError};

/// The aggregate repartition topic's partition count: one owner merges every
/// instance's partial windows.
pub const MERGE_PARTITIONS: usize = 1;

/// How often each input's progress may be reported on the repartition topic.
const PROGRESS_INTERVAL_MS: i64 = 200;

/// The repartition topic of `config`, created when missing, when a source is not keyed
/// by trace id. Its partition count is the topic's when it exists (every instance must
/// agree where a trace goes), else `kafka.repartition_partitions`, else the most
/// partitioned source topic's.
pub(super) async fn repartition(
    config: &PipelineConfig,
    endpoints: &Endpoints,
) -> Result<Option<RepartitionSettings>, RunError> {
    let Some(assemble) = config.assemble().filter(|_| config.repartitions_spans()) else {
        return Ok(None);
    };
    let err = |source: AdminError| admin_error(config, source);
    let topic = config.kafka.repartition_topic();
    let properties = config.kafka.common();
    let mut topics: Vec<String> = config
        .sources
        .iter()
        .flat_map(|s| s.topics.clone())
        .collect();
    topics.push(topic.clone());
    let counts = partition_counts(config, &endpoints.brokers, topics).await?;
    let wanted = config
        .kafka
        .repartition_partitions
        .map(|n| n.max(1) as usize);
    let partitions = match counts.get(&topic) {
        Some(&have) => {
            if wanted.is_some_and(|w| w != have) {
                tracing::warn!(%topic, have, wanted = ?wanted, "the repartition topic exists with another partition count: it is used as it is (add partitions only with every instance stopped and the topic drained)");
            }
            have
        }
        None => {
            let sources = counts.iter().filter(|(t, _)| **t != topic).map(|(_, n)| *n);
            let n = wanted.unwrap_or_else(|| sources.max().unwrap_or(1)).max(1);
            admin::ensure_topics(
                &endpoints.brokers,
                &properties,
                &[(topic.clone(), n)],
                "delete",
            )
            .await
            .map_err(err)?;
            // a broker that creates topics on request may give them its own count
            let created = partition_counts(config, &endpoints.brokers, vec![topic.clone()]).await?;
            created.get(&topic).copied().unwrap_or(n)
        }
    };
    let split: Vec<&String> = config
        .sources
        .iter()
        .filter(|s| !s.keyed_by_trace())
        .flat_map(|s| &s.topics)
        .collect();
    let inputs = counts
        .iter()
        .filter(|(t, _)| split.contains(t))
        .flat_map(|(t, n)| (0..*n as i32).map(move |p| (t.clone(), p)))
        .collect();
    let settings = assemble.settings(false);
    tracing::info!(%topic, partitions, "spans of sources not keyed by trace id are re-keyed through the repartition topic");
    Ok(Some(RepartitionSettings {
        topic,
        partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
        inputs,
        out_of_orderness_ns: settings.out_of_orderness_ns,
        idle_timeout_ms: settings.idle_partition_timeout_ms,
        progress_interval_ms: PROGRESS_INTERVAL_MS,
    }))
}

/// The registry client of `config`, when it has a registry.
pub(super) fn registry(
    config: &PipelineConfig,
    url: Option<&str>,
) -> Result<Option<RegistryClient>, RunError> {
    let Some(url) = url else { return Ok(None) };
    let sr = config.schema_registry.as_ref();
    RegistryClient::new(
        url,
        sr.and_then(|s| s.username.as_deref()),
        sr.and_then(|s| s.password.as_deref()),
    )
    .map(Some)
    .map_err(|source| RunError::Registry {
        pipeline: config.name.clone(),
        source,
    })
}

/// Each output topic with its encoding; Avro schemas are registered under
/// `<topic>-key` and `<topic>-value`.
pub(super) async fn outputs(
    config: &PipelineConfig,
    registry: Option<&RegistryClient>,
) -> Result<Outputs, RunError> {
    let outs = &config.outputs;
    let one = |o: Option<TopicOutput>, key: &'static str, value: &'static str| async move {
        let Some(o) = o else { return Ok(None) };
        let ids = match o.format {
            OutputFormat::Avro => Some(register(config, registry, &o.topic, key, value).await?),
            OutputFormat::Json => None,
        };
        Ok::<_, RunError>(Some(OutputSpec {
            encoding: Encoding::new(o.format, ids),
            topic: o.topic,
        }))
    };
    use codec::avro::*;
    let traces = one(Some(outs.traces.clone()), TRACE_KEY_SCHEMA, TRACE_SCHEMA)
        .await?
        .expect("traces output is required");
    Ok(Outputs {
        traces,
        late: one(outs.late.clone(), SPAN_KEY_SCHEMA, SPAN_SCHEMA).await?,
        aggregates: one(
            outs.aggregates.clone(),
            AGGREGATE_KEY_SCHEMA,
            AGGREGATE_SCHEMA,
        )
        .await?,
        alerts: one(outs.alerts.clone(), ALERT_KEY_SCHEMA, ALERT_SCHEMA).await?,
    })
}

async fn register(
    config: &PipelineConfig,
    registry: Option<&RegistryClient>,
    topic: &str,
    key_schema: &str,
    value_schema: &str,
) -> Result<(u32, u32), RunError> {
    let pipeline = config.name.clone();
    let Some(r) = registry else {
        return Err(RunError::Config {
            pipeline,
            message: "avro outputs need schema_registry".into(),
        });
    };
    let key = r.register(&format!("{topic}-key"), key_schema).await;
    let value = r.register(&format!("{topic}-value"), value_schema).await;
    match (key, value) {
        (Ok(k), Ok(v)) => Ok((k, v)),
        (Err(source), _) | (_, Err(source)) => Err(RunError::Registry { pipeline, source }),
    }
}

/// Every labelled series the pipeline reports, at zero from the start.
pub(super) fn metric_series(config: &PipelineConfig, outputs: &Outputs) {
    for s in &config.sources {
        metrics::RECORDS_IN.with_label_values(&[&s.name]);
        metrics::SPANS_IN.with_label_values(&[&s.name]);
        for reason in DecodeError::REASONS {
            metrics::DECODE_ERRORS.with_label_values(&[&s.name, reason]);
        }
    }
    let topics = [&outputs.late, &outputs.aggregates, &outputs.alerts]
        .into_iter()
        .flatten()
        .map(|o| o.topic.as_str())
        .chain([outputs.traces.topic.as_str()])
        .chain(
            config
                .sources
                .iter()
                .filter_map(|s| s.dead_letter_topic.as_deref()),
        );
    for t in topics {
        metrics::PRODUCED.with_label_values(&[t]);
        metrics::PRODUCE_ERRORS.with_label_values(&[t]);
    }
    if let Some(a) = config.assemble() {
        metrics::OPEN_TRACES_LIMIT.set(a.max_open_traces as i64);
    }
    if let Some(alert) = config.alert() {
        // every rule's series from the start, at its first severity
        for rule in &alert.rules {
            for status in ["firing", "resolved"] {
                metrics::ALERTS.with_label_values(&[&rule.name, &rule.severity, status]);
            }
        }
    }
}

/// The aggregate repartition topic of `config` (one partition: one owner merges every
/// instance's partial windows), created when missing, when the pipeline aggregates with
/// its state in changelogs. Its inputs are every partition that assembles traces.
pub(super) async fn merge(
    config: &PipelineConfig,
    endpoints: &Endpoints,
    repartition: Option<&RepartitionSettings>,
) -> Result<Option<MergeSettings>, RunError> {
    let Some(assemble) = config.assemble().filter(|_| config.merges_windows()) else {
        return Ok(None);
    };
    let err = |source: AdminError| admin_error(config, source);
    let topic = config.kafka.aggregate_repartition_topic();
    let properties = config.kafka.common();
    let keyed: Vec<String> = config
        .sources
        .iter()
        .filter(|s| repartition.is_none() || s.keyed_by_trace())
        .flat_map(|s| s.topics.clone())
        .collect();
    let counts = partition_counts(config, &endpoints.brokers, keyed).await?;
    let mut inputs: Vec<(String, i32)> = counts
        .iter()
        .flat_map(|(t, n)| (0..*n as i32).map(move |p| (t.clone(), p)))
        .collect();
    if let Some(r) = repartition {
        inputs.extend((0..r.partitions).map(|p| (r.topic.clone(), p)));
    }
    admin::ensure_topics(
        &endpoints.brokers,
        &properties,
        &[(topic.clone(), MERGE_PARTITIONS)],
        "delete",
    )
    .await
    .map_err(err)?;
    Ok(Some(MergeSettings {
        topic,
        inputs,
        idle_timeout_ms: assemble.settings(false).idle_partition_timeout_ms,
    }))
}

/// The partition count of each of `topics` that exists, read off the async threads.
pub(super) async fn partition_counts(
    config: &PipelineConfig,
    brokers: &str,
    topics: Vec<String>,
) -> Result<std::collections::BTreeMap<String, usize>, RunError> {
    let (b, p) = (brokers.to_string(), config.kafka.common());
    tokio::task::spawn_blocking(move || admin::partition_counts(&b, &p, &topics))
        .await
        .map_err(|source| RunError::Task {
            pipeline: config.name.clone(),
            doing: "reading the source topics' metadata",
            source,
        })?
        .map_err(|source| admin_error(config, source))
}

/// An admin error of `config`'s pipeline.
pub(super) fn admin_error(config: &PipelineConfig, source: AdminError) -> RunError {
    RunError::Changelogs {
        pipeline: config.name.clone(),
        source: Box::new(source),
    }
}
