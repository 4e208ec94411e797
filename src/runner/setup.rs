//! What the runner prepares before it joins the consumer group: the output encodings
//! (Avro schemas registered), the metric series that exist from the start.

use crate::codec::{self, DecodeError};
use crate::config::{OutputFormat, PipelineConfig, TopicOutput};
use crate::driver::{OutputSpec, Outputs};
use crate::kafka::registry_client::RegistryClient;
use crate::output::Encoding;
use crate::telemetry::metrics;

use super::RunError;

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
