//! Pipeline files: YAML with `${VAR}` / `${VAR:-default}` interpolation, unknown keys
//! rejected, every error reported at once with its path ([`load`]).
//!
//! The doc comment of every field is the user documentation of that key.

pub(crate) mod duration;
mod kafka;
mod load;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use kafka::KafkaConfig;
pub(crate) use load::did_you_mean;
pub use load::{interpolate, load_file, load_str, ConfigError, ConfigErrors};

use crate::codec::Format;
use crate::stage::assemble;

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
}

/// A processing stage, chosen by `type`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StageConfig {
    /// Groups spans into traces by trace id in event time.
    Assemble(AssembleConfig),
    /// Explains each closed trace: summary, critical path, bottleneck, service-graph
    /// edges, findings.
    Analyze(AnalyzeConfig),
    /// RED figures per event-time window and monitoring scope.
    Aggregate(AggregateConfig),
    /// Anomaly scores for aggregate series and traces (robust baselines and linfa models).
    Detect(crate::stage::detect::DetectConfig),
    /// Alert rules with an Alertmanager-like lifecycle.
    Alert(crate::stage::alert::AlertConfig),
}

impl StageConfig {
    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            StageConfig::Assemble(_) => "assemble",
            StageConfig::Analyze(_) => "analyze",
            StageConfig::Aggregate(_) => "aggregate",
            StageConfig::Detect(_) => "detect",
            StageConfig::Alert(_) => "alert",
        }
    }

    /// Field names of a stage type, or None for an unknown type.
    pub fn known_types() -> &'static [&'static str] {
        &["assemble", "analyze", "aggregate", "detect", "alert"]
    }
}

/// Settings of the `assemble` stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AssembleConfig {
    /// How far behind the newest span of a partition event time may still arrive in
    /// order: the partition's watermark is its latest span end minus this.
    #[serde(default = "d_out_of_orderness", with = "duration")]
    pub out_of_orderness: Duration,
    /// A trace whose root span has ended closes once the watermark passes its last span
    /// by this much.
    #[serde(default = "d_idle_gap", with = "duration")]
    pub idle_gap: Duration,
    /// A trace closes at the latest this long (event time) after its first span started,
    /// root or not.
    #[serde(default = "d_max_duration", with = "duration")]
    pub max_duration: Duration,
    /// How long after closing a trace still takes late spans as amendments; later spans
    /// go to `outputs.late` (or are counted as dropped).
    #[serde(default = "d_grace", with = "duration")]
    pub grace: Duration,
    /// Processing time after which a partition with no records stops holding the
    /// watermark back.
    #[serde(default = "d_idle_partition", with = "duration")]
    pub idle_partition_timeout: Duration,
    /// Open traces at most; beyond it the trace due first is emitted as incomplete.
    #[serde(default = "d_max_open")]
    pub max_open_traces: usize,
    /// Spans per trace at most; a trace reaching it is emitted as incomplete.
    #[serde(default = "d_max_spans")]
    pub max_spans_per_trace: usize,
    /// Bytes one buffered span may take; bigger spans are dead-lettered.
    #[serde(default = "d_max_span_bytes")]
    pub max_span_bytes: usize,
    /// On shutdown, emit open traces as incomplete (`true`) or leave them to be rebuilt
    /// from the committed offsets on restart (`false`, the at-least-once default).
    #[serde(default)]
    pub flush_on_shutdown: bool,
}

fn d_out_of_orderness() -> Duration {
    Duration::from_secs(2)
}
fn d_idle_gap() -> Duration {
    Duration::from_secs(5)
}
fn d_max_duration() -> Duration {
    Duration::from_secs(300)
}
fn d_grace() -> Duration {
    Duration::from_secs(60)
}
fn d_idle_partition() -> Duration {
    Duration::from_secs(10)
}
fn d_max_open() -> usize {
    200_000
}
fn d_max_spans() -> usize {
    10_000
}
fn d_max_span_bytes() -> usize {
    65_536
}

impl AssembleConfig {
    /// The assembler's settings; `late_output` says whether `outputs.late` is set.
    pub fn settings(&self, late_output: bool) -> assemble::Settings {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        assemble::Settings {
            out_of_orderness_ns: ns(self.out_of_orderness),
            idle_gap_ns: ns(self.idle_gap),
            max_duration_ns: ns(self.max_duration),
            grace_ns: ns(self.grace),
            idle_partition_timeout_ms: i64::try_from(self.idle_partition_timeout.as_millis())
                .unwrap_or(i64::MAX),
            max_open_traces: self.max_open_traces,
            max_spans_per_trace: self.max_spans_per_trace,
            max_span_bytes: self.max_span_bytes,
            late_output,
        }
    }
}

/// Settings of the `analyze` stage: thresholds of the finding rules.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeConfig {
    /// Sequential sibling calls to one operation that make an N+1 finding.
    #[serde(default = "d_n_plus_one")]
    pub n_plus_one_min_calls: usize,
    /// Critical-path share above which a downstream service is a dominant dependency.
    #[serde(default = "d_dominant")]
    pub dominant_dependency_share: f64,
    /// Sequential sibling calls to different services that make a parallelizable finding.
    #[serde(default = "d_parallel_siblings")]
    pub parallelizable_min_siblings: usize,
    /// Report parallelizable calls only when running them concurrently would save at
    /// least this share of the trace's duration.
    #[serde(default = "d_parallel_saving")]
    pub parallelizable_min_saving_share: f64,
}

fn d_n_plus_one() -> usize {
    3
}
fn d_dominant() -> f64 {
    0.5
}
fn d_parallel_siblings() -> usize {
    2
}
fn d_parallel_saving() -> f64 {
    0.1
}

impl AnalyzeConfig {
    /// The analyzer's settings.
    pub fn settings(&self) -> crate::stage::analyze::AnalyzeSettings {
        crate::stage::analyze::AnalyzeSettings {
            n_plus_one_min_calls: self.n_plus_one_min_calls,
            dominant_dependency_share: self.dominant_dependency_share,
            parallelizable_min_siblings: self.parallelizable_min_siblings,
            parallelizable_min_saving_share: self.parallelizable_min_saving_share,
        }
    }

    fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        if self.n_plus_one_min_calls < 2 {
            errors.push(
                format!("{path}.n_plus_one_min_calls"),
                "must be at least 2",
                "e.g. 3",
            );
        }
        if self.parallelizable_min_siblings < 2 {
            errors.push(
                format!("{path}.parallelizable_min_siblings"),
                "must be at least 2",
                "e.g. 2",
            );
        }
        for (key, v) in [
            ("dominant_dependency_share", self.dominant_dependency_share),
            (
                "parallelizable_min_saving_share",
                self.parallelizable_min_saving_share,
            ),
        ] {
            if !(0.0..=1.0).contains(&v) {
                errors.push(
                    format!("{path}.{key}"),
                    "must be between 0 and 1",
                    "a share, e.g. 0.5",
                );
            }
        }
    }
}

/// Settings of the `aggregate` stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// Window sizes, e.g. `[10s, 1m]`; tumbling unless `hop` is set.
    #[serde(default = "d_windows", with = "duration::list")]
    pub windows: Vec<Duration>,
    /// Hop of hopping windows; every window size must be a multiple of it.
    #[serde(default, with = "duration::option")]
    pub hop: Option<Duration>,
    /// Dimension sets (the monitoring scopes) by name. Dimensions: `service`,
    /// `operation`, `span_kind`, `status_code`, `agent`, `attr.<span attribute>`,
    /// `resource.<resource attribute>`.
    #[serde(default = "d_dimensions")]
    pub dimensions: BTreeMap<String, Vec<String>>,
    /// Distinct keys per window size and dimension set; more go to an overflow key.
    #[serde(default = "d_max_series")]
    pub max_series: usize,
    /// Latency under which a call counts towards SLO compliance.
    #[serde(default = "d_slo_latency", with = "duration")]
    pub slo_latency: Duration,
    /// A key not seen for this long (event time) is forgotten, in windows and on /metrics.
    #[serde(default = "d_idle_series_expiry", with = "duration")]
    pub idle_series_expiry: Duration,
    /// Also aggregate service-graph edges (needs an analyze stage before this one).
    #[serde(default = "d_true")]
    pub service_graph: bool,
}

fn d_windows() -> Vec<Duration> {
    vec![Duration::from_secs(10), Duration::from_secs(60)]
}
fn d_dimensions() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        ("service".to_string(), vec!["service".to_string()]),
        (
            "operation".to_string(),
            vec!["service".to_string(), "operation".to_string()],
        ),
        ("agent".to_string(), vec!["agent".to_string()]),
    ])
}
fn d_max_series() -> usize {
    10_000
}
fn d_slo_latency() -> Duration {
    Duration::from_millis(500)
}
fn d_idle_series_expiry() -> Duration {
    Duration::from_secs(600)
}
fn d_true() -> bool {
    true
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl AggregateConfig {
    /// The aggregator's settings (call after [`PipelineConfig::validate`] passed).
    pub fn settings(&self) -> crate::stage::aggregate::AggregateSettings {
        use crate::stage::aggregate::{AggregateSettings, DimensionSet, WindowSpec};
        AggregateSettings {
            windows: self
                .windows
                .iter()
                .map(|w| WindowSpec {
                    size_ns: nanos(*w),
                    hop_ns: self.hop.map(nanos),
                })
                .collect(),
            dimension_sets: self
                .dimensions
                .iter()
                .map(|(name, dims)| DimensionSet {
                    name: name.clone(),
                    dimensions: dims.iter().filter_map(|d| d.parse().ok()).collect(),
                })
                .collect(),
            max_series: self.max_series,
            slo_latency_ns: nanos(self.slo_latency),
            idle_series_expiry_ns: nanos(self.idle_series_expiry),
            service_graph: self.service_graph,
        }
    }

    fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        if self.windows.is_empty() {
            errors.push(
                format!("{path}.windows"),
                "must list at least one window",
                "e.g. [10s, 1m]",
            );
        }
        for (i, w) in self.windows.iter().enumerate() {
            if w.is_zero() {
                errors.push(
                    format!("{path}.windows[{i}]"),
                    "must be more than 0",
                    "e.g. 10s",
                );
            }
            if let Some(hop) = self.hop {
                if hop.is_zero() || hop > *w || w.as_nanos() % hop.as_nanos().max(1) != 0 {
                    errors.push(
                        format!("{path}.hop"),
                        format!(
                            "must divide every window size ({} does not)",
                            humantime::format_duration(*w)
                        ),
                        "e.g. windows: [1m] with hop: 10s",
                    );
                }
            }
        }
        if self.dimensions.is_empty() {
            errors.push(
                format!("{path}.dimensions"),
                "must name at least one dimension set",
                "e.g. service: [service]",
            );
        }
        for (name, dims) in &self.dimensions {
            if dims.is_empty() {
                errors.push(
                    format!("{path}.dimensions.{name}"),
                    "must list at least one dimension",
                    "e.g. [service, operation]",
                );
            }
            if name == "service_graph" {
                errors.push(
                    format!("{path}.dimensions.{name}"),
                    "is reserved for service-graph edges",
                    "choose another name",
                );
            }
            for (j, d) in dims.iter().enumerate() {
                if let Err(e) = d.parse::<crate::stage::aggregate::Dimension>() {
                    errors.push(format!("{path}.dimensions.{name}[{j}]"), e.to_string(), "service, operation, span_kind, status_code, agent, attr.<key> or resource.<key>");
                }
            }
        }
        if self.max_series == 0 {
            errors.push(
                format!("{path}.max_series"),
                "must be at least 1",
                "e.g. 10000",
            );
        }
        if self.idle_series_expiry.is_zero() {
            errors.push(
                format!("{path}.idle_series_expiry"),
                "must be more than 0",
                "e.g. 10m",
            );
        }
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

impl AssembleConfig {
    fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        if self.idle_gap.is_zero() {
            errors.push(format!("{path}.idle_gap"), "must be more than 0", "e.g. 5s");
        }
        if self.idle_gap >= self.max_duration {
            errors.push(
                format!("{path}.idle_gap"),
                format!(
                    "must be less than max_duration ({})",
                    humantime::format_duration(self.max_duration)
                ),
                "raise max_duration or lower idle_gap",
            );
        }
        if self.idle_partition_timeout.is_zero() {
            errors.push(
                format!("{path}.idle_partition_timeout"),
                "must be more than 0",
                "e.g. 10s",
            );
        }
        if self.max_open_traces == 0 {
            errors.push(
                format!("{path}.max_open_traces"),
                "must be at least 1",
                "e.g. 200000",
            );
        }
        if self.max_spans_per_trace < 2 {
            errors.push(
                format!("{path}.max_spans_per_trace"),
                "must be at least 2",
                "e.g. 10000",
            );
        }
        if self.max_span_bytes < 256 {
            errors.push(
                format!("{path}.max_span_bytes"),
                "must be at least 256",
                "e.g. 65536",
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
