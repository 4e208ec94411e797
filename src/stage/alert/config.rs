//! The `alert` stage in a pipeline file. The doc comment of every field is the user
//! documentation of that key; [`AlertConfig::validate`] checks what the types cannot.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::duration;

/// Settings of the `alert` stage: rules, grouping, repetition, escalation, inhibition
/// and correlation.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Alerting rules, evaluated in event time on every closed aggregate window and
    /// every anomaly score they select.
    pub rules: Vec<RuleConfig>,
    /// Labels whose values put alerts in one group; the alerts of a group that start
    /// firing within `group_wait` are emitted together. Empty: one group for all.
    #[serde(default = "d_group_by")]
    pub group_by: Vec<String>,
    /// How long (event time) a group waits after its first new firing alert before the
    /// batch is emitted. 0 emits at once.
    #[serde(default = "d_group_wait", with = "duration")]
    pub group_wait: Duration,
    /// A still-firing alert is emitted again this long (event time) after its last
    /// emission, with annotation `notification: repeat`.
    #[serde(default = "d_repeat_interval", with = "duration")]
    pub repeat_interval: Duration,
    /// An alert firing this long (event time) is raised one step up `severities` and
    /// emitted once more (annotation `notification: escalation`). Unset: no escalation.
    #[serde(default, with = "duration::option")]
    pub escalate_after: Option<Duration>,
    /// Severities from lowest to highest: the values a rule's `severity` may take and the
    /// ladder escalation climbs.
    #[serde(default = "d_severities")]
    pub severities: Vec<String>,
    /// Suppress the alerts of services that call the service of a root-cause alert of
    /// the same rule group (service graph learned from the traces).
    #[serde(default = "d_true")]
    pub inhibit: bool,
    /// An incident (the alerts of one fault, see the README) stays open this long
    /// (event time) after its last alert resolved: an alert of the same cause firing
    /// again within it joins the incident instead of notifying again.
    #[serde(default = "d_incident_linger", with = "duration")]
    pub incident_linger: Duration,
    /// A pending or firing alert whose series has no new window or score for this long
    /// (event time) resolves.
    #[serde(default = "d_resolve_timeout", with = "duration")]
    pub resolve_timeout: Duration,
    /// The state of a quiet series (its baseline, trend or burn history) is forgotten
    /// after this long without windows or scores (event time).
    #[serde(default = "d_series_expiry", with = "duration")]
    pub series_expiry: Duration,
    /// Series tracked per rule at most; further series are not evaluated (counted).
    #[serde(default = "d_max_series")]
    pub max_series_per_rule: usize,
    /// How alerts name a suspected service and exemplar traces.
    #[serde(default)]
    pub correlation: CorrelationConfig,
}

/// Correlation of alerts with traces.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorrelationConfig {
    /// Traces that ended this long (event time) before an alert is emitted are evidence
    /// for its suspected service and exemplars.
    #[serde(default = "d_correlation_window", with = "duration")]
    pub window: Duration,
    /// Traces remembered at most (the oldest are forgotten first).
    #[serde(default = "d_max_traces")]
    pub max_traces: usize,
    /// A trace with a warm anomaly score at least this high counts as anomalous evidence.
    #[serde(default = "d_evidence_score")]
    pub evidence_score: f64,
    /// Traces per root operation (durations) and per root service and service
    /// (critical-path shares) in the rolling baselines that "slow" and "share increase"
    /// are measured against.
    #[serde(default = "d_baseline_samples")]
    pub baseline_samples: usize,
    /// A call between two services not seen for this long (event time) leaves the
    /// service graph used for correlation and inhibition.
    #[serde(default = "d_graph_ttl", with = "duration")]
    pub service_graph_ttl: Duration,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self {
            window: d_correlation_window(),
            max_traces: d_max_traces(),
            evidence_score: d_evidence_score(),
            baseline_samples: d_baseline_samples(),
            service_graph_ttl: d_graph_ttl(),
        }
    }
}

/// One alerting rule: a selector, exactly one condition (`threshold`, `dynamic`,
/// `anomaly`, `trend` or `slo_burn`), and what the alert carries.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name, unique in the stage; the alert's `alertname` label.
    pub name: String,
    /// Severity of its alerts, one of `severities`.
    #[serde(default = "d_severity")]
    pub severity: String,
    /// Rule group for inhibition: an alert suppresses only alerts of rules in the same
    /// group. Default: the rule name.
    #[serde(default)]
    pub group: Option<String>,
    /// Extra labels; values may use `{{label}}` of the series labels (`{{service}}`).
    /// Series labels win over a rule label of the same name.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations; values may use the labels and `{{value}}`, `{{threshold}}`,
    /// `{{eta}}` (trend rules). `summary` also becomes the alert's summary.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// How long (event time) the condition must hold before the alert fires; until then
    /// it is pending and not emitted.
    #[serde(default, rename = "for", with = "duration")]
    pub for_: Duration,
    /// Aggregate series (or, for `anomaly`, series scores) the rule watches.
    #[serde(default)]
    pub series: Option<SeriesSelector>,
    /// Trace anomaly scores the rule watches (`anomaly` and `call_pattern` only).
    #[serde(default)]
    pub traces: Option<TraceSelector>,
    /// A static bound on an aggregate field.
    #[serde(default)]
    pub threshold: Option<ThresholdConfig>,
    /// Outside a robust rolling baseline of the field ± `k` deviations.
    #[serde(default)]
    pub dynamic: Option<DynamicConfig>,
    /// Anomaly scores above `score` for `windows` consecutive scores.
    #[serde(default)]
    pub anomaly: Option<AnomalyRuleConfig>,
    /// A linear fit of the last windows predicts crossing a bound within `horizon`.
    #[serde(default)]
    pub trend: Option<TrendConfig>,
    /// Multi-window error-budget burn rate.
    #[serde(default)]
    pub slo_burn: Option<SloBurnConfig>,
    /// The calls in recent traces of a root operation against its normal period.
    #[serde(default)]
    pub call_pattern: Option<CallPatternConfig>,
}

/// Which aggregate series a rule watches.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeriesSelector {
    /// The monitoring scope: a dimension set of the aggregate stage, or `service_graph`.
    pub scope: String,
    /// Dimension values the series key must have; `*` matches any run of characters
    /// (`{service: "llm-*"}`). Empty: every series of the scope.
    #[serde(default, rename = "match")]
    pub match_: BTreeMap<String, String>,
    /// Window size; unset: every window size (each its own series).
    #[serde(default, with = "duration::option")]
    pub window: Option<Duration>,
    /// Windows with fewer calls are skipped (no decision either way).
    #[serde(default)]
    pub min_count: u64,
}

/// Which trace anomaly scores an `anomaly` rule watches; the series is the root
/// operation.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TraceSelector {
    /// Root service, `*` wildcards allowed; unset: any.
    #[serde(default)]
    pub root_service: Option<String>,
    /// Root operation (span name), `*` wildcards allowed; unset: any.
    #[serde(default)]
    pub root_operation: Option<String>,
}

/// A bound: a number, or for nanosecond fields also a duration (`750ms`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Bound {
    Number(f64),
    Text(String),
}

/// `threshold`: fires while the field is above `above` or below `below`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// Aggregate field: `count`, `error_count`, `error_rate`, `throughput_per_s`,
    /// `latency_p50_ns`, `latency_p90_ns`, `latency_p95_ns`, `latency_p99_ns`,
    /// `latency_max_ns`, `concurrency_mean`, `concurrency_max`, `slo_compliance`.
    pub field: String,
    /// Upper bound (exclusive).
    #[serde(default)]
    pub above: Option<Bound>,
    /// Lower bound (exclusive); with `above`, must be lower than it.
    #[serde(default)]
    pub below: Option<Bound>,
}

/// Which side of a baseline is abnormal.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Above,
    Below,
    Both,
}

/// `dynamic`: fires while the field is more than `k` robust deviations
/// (1.4826 · median absolute deviation) from the median of its last `samples` windows.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DynamicConfig {
    /// Aggregate field, as for `threshold`.
    pub field: String,
    /// Deviations from the median that are abnormal.
    #[serde(default = "d_k")]
    pub k: f64,
    /// Windows in the rolling baseline.
    #[serde(default = "d_samples")]
    pub samples: usize,
    /// Warm-up: no decision before the baseline holds this many windows.
    #[serde(default = "d_min_samples")]
    pub min_samples: usize,
    /// `above`, `below` or `both`.
    #[serde(default)]
    pub direction: Direction,
    /// Smallest absolute distance from the median that can fire (a number, or a duration
    /// for nanosecond fields); keeps flat baselines quiet.
    #[serde(default)]
    pub min_delta: Option<Bound>,
}

/// `anomaly`: fires after `windows` consecutive warm scores above `score`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnomalyRuleConfig {
    /// Score threshold, between 0 and 1 (exclusive).
    #[serde(default = "d_score")]
    pub score: f64,
    /// Consecutive scores above `score` needed.
    #[serde(default = "d_windows_anomaly")]
    pub windows: u32,
    /// Only scores whose leading explanation is this feature (`*` wildcards allowed)
    /// count as above; unset: any feature.
    #[serde(default)]
    pub feature: Option<String>,
}

/// `call_pattern`: fires while, in the traces of a root operation that ended in the last
/// `window`, some child operation is called markedly less (spans missing) or more often
/// per call of its parent than in the operation's normal period: the count moved by at
/// least `z` standard scores (a Poisson count at the normal rate, on Anscombe's
/// square-root scale) and the rate by at least `min_change` of itself. Decided at most
/// once per `every` of event time per root operation, when its traces arrive.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallPatternConfig {
    /// Standard scores a call count must move by.
    #[serde(default = "d_call_z")]
    pub z: f64,
    /// Relative change of a call rate that counts, between 0 and 1.
    #[serde(default = "d_min_change")]
    pub min_change: f64,
    /// The recent period compared with the normal one.
    #[serde(default = "d_call_window", with = "duration")]
    pub window: Duration,
    /// Decisions per root operation at most once per this much event time.
    #[serde(default = "d_call_every", with = "duration")]
    pub every: Duration,
}

/// `trend`: least-squares line through the last `windows` values of the field; fires
/// while it is beyond the bound now or will be within `horizon`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrendConfig {
    /// Aggregate field, as for `threshold`.
    pub field: String,
    /// Fire when the line crosses above this (give `above` or `below`).
    #[serde(default)]
    pub above: Option<Bound>,
    /// Fire when the line crosses below this.
    #[serde(default)]
    pub below: Option<Bound>,
    /// Windows in the fit (at least 3).
    #[serde(default = "d_trend_windows")]
    pub windows: usize,
    /// How far ahead (event time) the line is extended.
    #[serde(with = "duration")]
    pub horizon: Duration,
}

/// What counts against the error budget.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    /// Calls with status ERROR.
    #[default]
    Errors,
    /// Calls slower than the aggregate stage's `slo_latency`.
    Latency,
}

/// `slo_burn`: fires while the budget burn rate, (bad / calls) / (1 − objective), is
/// above `factor` over both the `long` and the `short` window (SRE workbook,
/// multiwindow multi-burn-rate alerts).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SloBurnConfig {
    /// Target share of good calls, e.g. 0.999.
    pub objective: f64,
    /// The long window (event time).
    #[serde(default = "d_long", with = "duration")]
    pub long: Duration,
    /// The short window (event time), shorter than `long`.
    #[serde(default = "d_short", with = "duration")]
    pub short: Duration,
    /// Burn rate both windows must exceed (14.4 spends 2% of a 30-day budget in 1h).
    #[serde(default = "d_factor")]
    pub factor: f64,
    /// `errors` or `latency`.
    #[serde(default)]
    pub indicator: Indicator,
}

fn d_group_by() -> Vec<String> {
    vec!["alertname".to_string()]
}
fn d_group_wait() -> Duration {
    Duration::from_secs(30)
}
fn d_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn d_severities() -> Vec<String> {
    ["info", "warning", "critical"].map(String::from).to_vec()
}
fn d_true() -> bool {
    true
}
fn d_resolve_timeout() -> Duration {
    Duration::from_secs(300)
}
fn d_incident_linger() -> Duration {
    Duration::from_secs(120)
}
fn d_series_expiry() -> Duration {
    Duration::from_secs(3600)
}
fn d_max_series() -> usize {
    10_000
}
fn d_correlation_window() -> Duration {
    Duration::from_secs(300)
}
fn d_max_traces() -> usize {
    10_000
}
fn d_evidence_score() -> f64 {
    0.8
}
fn d_baseline_samples() -> usize {
    256
}
fn d_graph_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn d_severity() -> String {
    "warning".to_string()
}
fn d_k() -> f64 {
    3.0
}
fn d_samples() -> usize {
    60
}
fn d_min_samples() -> usize {
    10
}
fn d_score() -> f64 {
    0.8
}
fn d_windows_anomaly() -> u32 {
    1
}
fn d_call_z() -> f64 {
    4.0
}
fn d_min_change() -> f64 {
    0.3
}
fn d_call_window() -> Duration {
    Duration::from_secs(60)
}
fn d_call_every() -> Duration {
    Duration::from_secs(10)
}
fn d_trend_windows() -> usize {
    10
}
fn d_long() -> Duration {
    Duration::from_secs(3600)
}
fn d_short() -> Duration {
    Duration::from_secs(300)
}
fn d_factor() -> f64 {
    14.4
}
