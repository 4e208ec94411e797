//! Anomaly scores (the detect stage's output) and alerts (the alert stage's output).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::span::TraceId;

/// What a score is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    /// One aggregate series: a window size, scope and key.
    Series {
        window_size_ns: i64,
        scope: Arc<str>,
        key: Vec<(Arc<str>, Arc<str>)>,
    },
    /// One closed trace, scored against its root operation's baseline.
    Trace {
        root_service: Arc<str>,
        root_operation: Arc<str>,
        trace_id: TraceId,
    },
}

/// Why a score is high: one feature against its baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// Feature name, e.g. `latency_p99_ns`, `error_rate`, `duration_ns`, `share.orders`.
    pub feature: String,
    pub value: f64,
    pub baseline: f64,
    /// Robust deviations from the baseline (signed; e.g. (value − median) / (1.4826·MAD)).
    pub deviations: f64,
}

/// One anomaly score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyScore {
    pub subject: Subject,
    /// Event time the score is for (window end, or trace end), unix nanos.
    pub at_ns: i64,
    /// In [0, 1]; never NaN. 0 during warm-up.
    pub score: f64,
    /// False until the model has `min_samples` of history: no alert may use it.
    pub warm: bool,
    /// The model(s) that produced the score, e.g. `mad+kmeans+gmm`.
    pub model: &'static str,
    /// Features by how far they are from baseline, largest first (at least one when warm).
    pub explanations: Vec<Explanation>,
}

/// One ranked root-cause candidate of an alert: a service, how strongly the traces of
/// the anomalous period point at it (in [0, 1]), and why, in words a person reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    pub service: String,
    pub score: f64,
    /// The strongest findings first, e.g. "ts-food-service self time on the critical
    /// path 12ms → 310ms in 83 % of 40 traces of ts-gateway-service /*".
    pub evidence: Vec<String>,
}

/// Alert status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    /// The record's `status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// An alert event: a firing alert (also re-sent on `repeat_interval` and on escalation)
/// or its resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable identity: hex of a hash of the rule name and the sorted labels.
    pub fingerprint: String,
    pub status: AlertStatus,
    pub rule: String,
    pub severity: String,
    /// Event time the alert started firing, unix milliseconds.
    pub starts_at_ms: i64,
    /// Event time it resolved, unix milliseconds; `None` while firing.
    pub ends_at_ms: Option<i64>,
    /// Identifying labels (`alertname`, `service`, ... ); the fingerprint covers them.
    pub labels: BTreeMap<String, String>,
    /// Descriptive annotations (`summary`, `description`, ...).
    pub annotations: BTreeMap<String, String>,
    pub summary: String,
    /// The service whose own self time or errors explain the condition.
    pub suspected_service: Option<String>,
    /// Ranked root-cause candidates, best first; `suspected_service` is the first one's
    /// service when there are any.
    #[serde(default)]
    pub suspected_services: Vec<Suspect>,
    /// The anomaly score in [0, 1]: of the rule for `anomaly` rules, else the detect
    /// stage's latest warm score of the alert's series (0 when it scores none).
    pub score: f64,
    /// The measured value the rule decided on, in its field's unit (nanoseconds for
    /// latencies; the burn rate for `slo_burn`, the score for `anomaly`).
    #[serde(default)]
    pub value: Option<f64>,
    /// Up to five trace ids that show the condition, 32 lowercase hex characters each.
    pub exemplar_trace_ids: Vec<String>,
}

/// Labels the engine sets itself; rules cannot set them.
pub const RESERVED_LABELS: [&str; 3] = ["alertname", "scope", "window"];
/// Annotation the engine sets itself (`new`, `grouped`, `repeat`, `escalation`,
/// `resolved`).
pub const NOTIFICATION_ANNOTATION: &str = "notification";
/// Annotation of every event of an alert filed under an incident: the incident's id (16
/// hex characters), shared by the alerts of one fault.
pub const INCIDENT_ANNOTATION: &str = "incident";
/// Annotation beside [`INCIDENT_ANNOTATION`]: the service the incident is named after,
/// its most likely root cause.
pub const INCIDENT_CAUSE_ANNOTATION: &str = "incident_cause";
/// Annotation of an escalation event: the severity it was raised from. Receivers that
/// identify alerts by labels (Alertmanager: `severity` is a label) resolve the alert of
/// that severity, so one alert stays active per fingerprint.
pub const ESCALATED_FROM_ANNOTATION: &str = "escalated_from";
/// Annotation a rule may set: the summary of its resolved events (without it they get a
/// default that says the alert resolved and the value it resolved at).
pub const RESOLVED_SUMMARY_ANNOTATION: &str = "resolved_summary";

/// A dimension name as a Prometheus/Alertmanager label name: characters outside
/// `[A-Za-z0-9_]` become `_`, and a leading digit gets a `_` in front
/// (`attr.http.route` → `attr_http_route`).
pub fn label_name(dimension: &str) -> String {
    let mut s: String = dimension
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// True when `name` is a valid label name as it is (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_label_name(name: &str) -> bool {
    !name.is_empty() && label_name(name) == name
}
