//! Pipeline files: YAML with `${VAR}` / `${VAR:-default}` interpolation, unknown keys
//! rejected, every error reported at once with its path ([`load`]).
//!
//! The doc comment of every field is the user documentation of that key.

mod kafka;
mod load;
mod repository;
mod stages;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use crate::model::duration;
pub use crate::model::{did_you_mean, ConfigError, ConfigErrors};
pub use kafka::KafkaConfig;
pub use load::{interpolate, load_file, load_str};
pub use repository::{parse_size, RepositoryConfig};
pub use stages::StageConfig;

use crate::codec::Format;
pub use crate::stage::aggregate::AggregateConfig;
pub use crate::stage::analyze::AnalyzeConfig;
pub use crate::stage::assemble::AssembleConfig;

/// A pipeline: where spans come from, what is done to them, where results go.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name of the pipeline, used in logs and metrics.
    pub name: String,
    /// The Kafka cluster.
    pub kafka: KafkaConfig,
    /// The schema registry (needed by Avro sources and outputs).
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// Span topics to consume.
    pub sources: Vec<SourceConfig>,
    /// Processing stages, in order.
    pub stages: Vec<StageConfig>,
    /// Output topics.
    pub outputs: OutputsConfig,
    /// The HTTP server for `/metrics`, `/healthz` and `/readyz`.
    #[serde(default)]
    pub http: HttpConfig,
    /// What a consumer of the outputs sees after a crash: `at_least_once` (whole records,
    /// some written twice) or `exactly_once` (one Kafka transaction per commit interval
    /// carries the outputs, the state changes and the input offsets; consumers set
    /// `isolation.level=read_committed`).
    #[serde(default)]
    pub delivery: Delivery,
    /// The trace repository and its query API.
    #[serde(default)]
    pub repository: RepositoryConfig,
}

/// The delivery guarantee of a pipeline's outputs.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Outputs are written as they are made; offsets are committed once the outputs
    /// and the state they depend on are safe. After a crash some whole records are
    /// written again.
    #[default]
    AtLeastOnce,
    /// Outputs, changelog records and offsets commit in one transaction per commit
    /// interval; a crash aborts the open one.
    ExactlyOnce,
}

/// Confluent-compatible schema registry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL (`http://host:8081`), or `embedded` to start one in-process.
    pub url: String,
    /// Basic-auth user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(default)]
    pub password: Option<String>,
}

/// One or more span topics of one format.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name of the source, used in logs and metrics.
    pub name: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Record format: `avro` (Confluent wire format), `otlp_proto` or `otlp_json`.
    pub format: Format,
    /// Where records that cannot be decoded go, unchanged, with headers naming why.
    /// Without it such records are counted and logged, then skipped.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Whether the producers key this source's records by trace id, so that every span
    /// of a trace is on one partition. When they do not (the default for `otlp_proto`
    /// and `otlp_json`: the OpenTelemetry Collector's Kafka exporter packs spans of many
    /// traces into one message), spanline re-keys the spans by trace id through the
    /// pipeline's repartition topic, so more processes in the group still assemble
    /// whole traces. Default `true` for `avro` (one span per record, keyed by trace id).
    #[serde(default)]
    pub keyed_by_trace: Option<bool>,
}

impl SourceConfig {
    /// Whether the records are keyed by trace id (see `keyed_by_trace`).
    pub fn keyed_by_trace(&self) -> bool {
        self.keyed_by_trace.unwrap_or(self.format == Format::Avro)
    }
}

/// Output topics.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputsConfig {
    /// Closed traces and amendments, keyed by trace id.
    pub traces: TopicOutput,
    /// Spans later than the assemble stage's `grace`, as single-span records.
    #[serde(default)]
    pub late: Option<TopicOutput>,
    /// Closed aggregate windows, keyed by window and key (needs an aggregate stage).
    #[serde(default)]
    pub aggregates: Option<TopicOutput>,
    /// Alert events (firing, repeats, escalations, resolved), keyed by fingerprint
    /// (needs an alert stage).
    #[serde(default)]
    pub alerts: Option<TopicOutput>,
    /// Alertmanager and webhook deliveries of alert events.
    #[serde(default)]
    pub notify: Option<crate::sinks::AlertSinksConfig>,
}

/// One output topic.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicOutput {
    /// Topic name.
    pub topic: String,
    /// `avro` (Confluent wire format, schema registered under `<topic>-value`) or `json`.
    #[serde(default)]
    pub format: OutputFormat,
}

/// Encoding of an output topic.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    #[default]
    Avro,
    Json,
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address; loopback by default. Port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

impl PipelineConfig {
    /// The assemble stage, if the pipeline has one.
    pub fn assemble(&self) -> Option<&AssembleConfig> {
        self.stages.iter().find_map(|s| match s {
            StageConfig::Assemble(a) => Some(a),
            _ => None,
        })
    }

    /// The aggregate stage, if the pipeline has one.
    pub fn aggregate(&self) -> Option<&AggregateConfig> {
        self.stages.iter().find_map(|s| match s {
            StageConfig::Aggregate(a) => Some(a),
            _ => None,
        })
    }

    /// Whether spans of some source are split per trace and re-keyed through the
    /// repartition topic (`<group_id>-repartition`).
    pub fn repartitions_spans(&self) -> bool {
        self.assemble().is_some() && !self.sources.iter().all(|s| s.keyed_by_trace())
    }

    /// Whether windows are counted in two phases, their partials merged by one owner
    /// through the aggregate repartition topic (`<group_id>-aggregate-repartition`).
    pub fn merges_windows(&self) -> bool {
        self.assemble().is_some() && self.aggregate().is_some() && self.kafka.changelogs
    }

    /// The detect stage, if the pipeline has one.
    pub fn detect(&self) -> Option<&crate::stage::detect::DetectConfig> {
        self.stages.iter().find_map(|s| match s {
            StageConfig::Detect(d) => Some(d),
            _ => None,
        })
    }

    /// The alert stage, if the pipeline has one.
    pub fn alert(&self) -> Option<&crate::stage::alert::AlertConfig> {
        self.stages.iter().find_map(|s| match s {
            StageConfig::Alert(a) => Some(a),
            _ => None,
        })
    }

    /// The analyze stage, if the pipeline has one.
    pub fn analyze(&self) -> Option<&AnalyzeConfig> {
        self.stages.iter().find_map(|s| match s {
            StageConfig::Analyze(a) => Some(a),
            _ => None,
        })
    }

    /// The settings of the pipeline's stages (call after [`PipelineConfig::validate`]
    /// passed).
    pub fn stage_settings(&self) -> crate::stage::pipeline::StageSettings {
        let assemble = self
            .assemble()
            .expect("validated pipelines have an assemble stage");
        crate::stage::pipeline::StageSettings {
            assemble: assemble.settings(self.outputs.late.is_some()),
            analyze: self.analyze().map(AnalyzeConfig::settings),
            aggregate: self.aggregate().map(AggregateConfig::settings),
            detect: self.detect().map(|d| d.settings()),
            alert: self.alert().map(|a| a.settings()),
        }
    }

    /// True when any source or output needs the schema registry.
    pub fn needs_registry(&self) -> bool {
        let avro =
            |o: &Option<TopicOutput>| o.as_ref().is_some_and(|o| o.format == OutputFormat::Avro);
        self.sources.iter().any(|s| s.format == Format::Avro)
            || self.outputs.traces.format == OutputFormat::Avro
            || avro(&self.outputs.late)
            || avro(&self.outputs.aggregates)
            || avro(&self.outputs.alerts)
    }

    /// Checks what the types cannot: every problem, with its path.
    pub fn validate(&self, errors: &mut ConfigErrors) {
        if self.name.trim().is_empty() {
            errors.push("name", "must not be empty", "give the pipeline a name");
        }
        self.kafka.validate(errors);
        self.kafka.validate_delivery(self.delivery, errors);
        self.repository.validate(errors);
        if self.needs_registry() && self.schema_registry.is_none() {
            errors.push(
                "schema_registry",
                "is required by avro sources and outputs",
                "add `schema_registry: {url: embedded}` or a registry url",
            );
        }
        if let Some(sr) = &self.schema_registry {
            if sr.url != "embedded"
                && !(sr.url.starts_with("http://") || sr.url.starts_with("https://"))
            {
                errors.push(
                    "schema_registry.url",
                    format!("`{}` is not an http(s) url", sr.url),
                    "write http://host:8081 or `embedded`",
                );
            }
            if sr.username.is_some() != sr.password.is_some() {
                errors.push(
                    "schema_registry",
                    "username and password go together",
                    "set both or neither",
                );
            }
        }
        if self.sources.is_empty() {
            errors.push(
                "sources",
                "must list at least one source",
                "add a source with topics and format",
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            if !names.insert(&s.name) {
                errors.push(
                    format!("sources[{i}].name"),
                    format!("`{}` is used twice", s.name),
                    "give each source its own name",
                );
            }
            if s.topics.is_empty() {
                errors.push(
                    format!("sources[{i}].topics"),
                    "must list at least one topic",
                    "e.g. topics: [spans]",
                );
            }
            for (j, t) in s.topics.iter().enumerate() {
                check_topic(errors, &format!("sources[{i}].topics[{j}]"), t);
            }
            if let Some(d) = &s.dead_letter_topic {
                check_topic(errors, &format!("sources[{i}].dead_letter_topic"), d);
                if s.topics.contains(d) {
                    errors.push(
                        format!("sources[{i}].dead_letter_topic"),
                        "must differ from the source topics",
                        "e.g. spans-dlq",
                    );
                }
            }
        }
        let assembles = self
            .stages
            .iter()
            .filter(|s| matches!(s, StageConfig::Assemble(_)))
            .count();
        if assembles != 1 {
            errors.push(
                "stages",
                format!("has {assembles} assemble stages, needs exactly 1"),
                "add `- type: assemble`",
            );
        }
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let path = format!("stages[{i}]");
            if !seen.insert(stage.type_name()) {
                errors.push(
                    format!("{path}.type"),
                    format!("a second `{}` stage", stage.type_name()),
                    "each stage type appears once",
                );
            }
            if i > 0 && matches!(stage, StageConfig::Assemble(_)) {
                errors.push(
                    format!("{path}.type"),
                    "assemble must be the first stage",
                    "move it to the top of stages",
                );
            }
            match stage {
                StageConfig::Assemble(a) => a.validate(&path, errors),
                StageConfig::Analyze(a) => a.validate(&path, errors),
                StageConfig::Detect(d) => d.validate(&path, errors),
                StageConfig::Alert(a) => {
                    a.validate(&path, errors);
                    match self.aggregate() {
                        Some(agg) => a.validate_with_aggregate(&path, agg, errors),
                        None if a.rules.iter().any(|r| r.series.is_some()) => errors.push(
                            format!("{path}.rules"),
                            "series rules need an aggregate stage",
                            "add `- type: aggregate` before this stage",
                        ),
                        None => {}
                    }
                }
                StageConfig::Aggregate(a) => {
                    a.validate(&path, errors);
                    if a.service_graph
                        && !self.stages[..i]
                            .iter()
                            .any(|s| matches!(s, StageConfig::Analyze(_)))
                    {
                        errors.push(
                            format!("{path}.service_graph"),
                            "needs an analyze stage before aggregate (edges come from analysis)",
                            "add `- type: analyze` before this stage, or set service_graph: false",
                        );
                    }
                }
            }
        }
        check_topic(errors, "outputs.traces.topic", &self.outputs.traces.topic);
        if let Some(late) = &self.outputs.late {
            check_topic(errors, "outputs.late.topic", &late.topic);
        }
        if let Some(alerts) = &self.outputs.alerts {
            check_topic(errors, "outputs.alerts.topic", &alerts.topic);
            if self.alert().is_none() {
                errors.push(
                    "outputs.alerts",
                    "has no alert stage to write it",
                    "add `- type: alert` or remove this output",
                );
            }
        }
        if let Some(notify) = &self.outputs.notify {
            notify.validate("outputs.notify", errors);
            if self.alert().is_none() {
                errors.push(
                    "outputs.notify",
                    "has no alert stage to deliver from",
                    "add `- type: alert` or remove this output",
                );
            }
        }
        if let Some(aggregates) = &self.outputs.aggregates {
            check_topic(errors, "outputs.aggregates.topic", &aggregates.topic);
            if self.aggregate().is_none() {
                errors.push(
                    "outputs.aggregates",
                    "has no aggregate stage to write it",
                    "add `- type: aggregate` or remove this output",
                );
            }
        }
        if self
            .sources
            .iter()
            .any(|s| s.topics.contains(&self.outputs.traces.topic))
        {
            errors.push(
                "outputs.traces.topic",
                "is also a source topic",
                "write traces to their own topic",
            );
        }
    }
}

fn check_topic(errors: &mut ConfigErrors, path: &str, topic: &str) {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        errors.push(
            path,
            format!("`{topic}` is not a valid kafka topic name"),
            "use 1-249 of a-z A-Z 0-9 . _ -",
        );
    }
}

#[cfg(test)]
mod tests;
