//! One alert instance (a rule on one series): its condition state, its phase (inactive,
//! pending, firing) and what has been emitted for it, and how it renders as an [`Alert`].

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::correlate::Correlation;
use super::eval::{Eval, EvalState};
use super::incident::Membership;
use super::settings::{Condition, Rule, Symptom};
use super::template::{format_ns, format_share, format_value, hex64};
use crate::model::{label_name, NOTIFICATION_ANNOTATION, RESOLVED_SUMMARY_ANNOTATION};
use crate::model::{Alert, AlertStatus, TraceId};
use crate::model::{INCIDENT_ANNOTATION, INCIDENT_CAUSE_ANNOTATION};

/// Where an instance is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Inactive,
    /// The condition holds since `since_ns`, not yet for the rule's `for`.
    Pending {
        since_ns: i64,
    },
    /// Firing since `since_ns` (the alert's `starts_at`).
    Firing {
        since_ns: i64,
    },
}

/// What a decision did to the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Fired,
    Resolved,
}

/// Why an alert event is emitted: the `notification` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notification {
    /// The first firing event of an episode.
    New,
    /// A still-firing alert re-sent after `repeat_interval`.
    Repeat,
    /// A still-firing alert re-sent once with a raised severity.
    Escalation,
    /// The episode ended.
    Resolved,
    /// The first firing event of an episode whose alert joined an incident another
    /// alert leads (a symptom: no one is notified again).
    Grouped,
}

impl Notification {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Notification::New => "new",
            Notification::Repeat => "repeat",
            Notification::Escalation => "escalation",
            Notification::Resolved => "resolved",
            Notification::Grouped => "grouped",
        }
    }
}

/// Emission state of the current firing episode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// When the instance's group batch is due.
    pub due_ns: i64,
    /// The `new` event went out.
    pub announced: bool,
    pub last_emit_ns: i64,
    /// Current severity (raised by escalation).
    pub severity: String,
    pub escalated: bool,
    /// Held back by inhibition now (counted once per episode).
    pub inhibited: bool,
    pub inhibition_counted: bool,
    pub correlation: Correlation,
    /// When `correlation` was computed.
    pub correlated_at_ns: Option<i64>,
    /// The incident the alert was filed under when it first went out.
    pub incident: Option<Membership>,
}

/// A rule applied to one series; all of it is the series' alert state (changelogs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub rule: usize,
    pub fingerprint: String,
    pub series_id: u64,
    pub labels: BTreeMap<String, String>,
    pub group_key: String,
    /// The service the alert is about (`service` label, else `server`).
    pub service: Option<String>,
    pub eval: EvalState,
    pub phase: Phase,
    pub last_seen_ns: i64,
    pub last: Option<Eval>,
    pub symptom: Symptom,
    /// Anomaly rules: the leading explanation feature of the last score.
    pub feature: Option<String>,
    /// Trace anomaly rules: the latest traces scored above the rule's threshold.
    pub scored_traces: VecDeque<TraceId>,
    /// Rules on measured values: the detect stage's latest warm score of the series.
    #[serde(default)]
    pub anomaly_score: Option<f64>,
    pub notice: Notice,
}

impl Instance {
    /// Applies one decision made at `at_ns`.
    pub fn step(&mut self, decision: Option<Eval>, at_ns: i64, for_ns: i64) -> Transition {
        let Some(e) = decision else {
            return Transition::None;
        };
        self.last = Some(e);
        match (self.phase, e.active) {
            (Phase::Inactive, true) if for_ns <= 0 => self.fire(at_ns),
            (Phase::Inactive, true) => {
                self.phase = Phase::Pending { since_ns: at_ns };
                Transition::None
            }
            (Phase::Pending { since_ns }, true) if at_ns.saturating_sub(since_ns) >= for_ns => {
                self.fire(at_ns)
            }
            (Phase::Pending { .. }, false) => {
                self.phase = Phase::Inactive;
                Transition::None
            }
            (Phase::Firing { .. }, false) => Transition::Resolved,
            _ => Transition::None,
        }
    }

    fn fire(&mut self, at_ns: i64) -> Transition {
        self.phase = Phase::Firing { since_ns: at_ns };
        Transition::Fired
    }

    /// True while firing.
    pub fn firing(&self) -> bool {
        matches!(self.phase, Phase::Firing { .. })
    }

    /// The alert event for the current state.
    pub fn alert(&self, rule: &Rule, notification: Notification, ends_at_ns: Option<i64>) -> Alert {
        let since_ns = match self.phase {
            Phase::Firing { since_ns } | Phase::Pending { since_ns } => since_ns,
            Phase::Inactive => ends_at_ns.unwrap_or(0),
        };
        let e = self.last.unwrap_or(Eval {
            active: false,
            value: f64::NAN,
            threshold: f64::NAN,
            eta_ns: None,
        });
        let field = rule.condition.field();
        let format = |v: f64| match field {
            Some(f) if f.is_ratio() => format_share(v),
            f => format_value(v, f.is_some_and(|f| f.is_nanos())),
        };
        let value = format(e.value);
        let threshold = format(e.threshold);
        let eta = e.eta_ns.map(|ns| format_ns(ns as f64)).unwrap_or_default();
        let vars = [("value", &value), ("threshold", &threshold), ("eta", &eta)];
        let lookup = |name: &str| -> Option<&str> {
            self.labels
                .get(name)
                .or_else(|| self.labels.get(&label_name(name)))
                .map(String::as_str)
                .or_else(|| vars.iter().find(|v| v.0 == name).map(|v| v.1.as_str()))
        };
        let mut annotations: BTreeMap<String, String> = rule
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), t.render(lookup)))
            .collect();
        annotations
            .entry("value".into())
            .or_insert_with(|| value.clone());
        annotations
            .entry("threshold".into())
            .or_insert_with(|| threshold.clone());
        annotations.insert(NOTIFICATION_ANNOTATION.into(), notification.as_str().into());
        if let Some(m) = &self.notice.incident {
            annotations.insert(INCIDENT_ANNOTATION.into(), hex64(m.id));
            annotations.insert(INCIDENT_CAUSE_ANNOTATION.into(), m.cause.clone());
        }
        // a resolved event says so: the rule's `resolved_summary`, else the default
        // (never the firing wording of its `summary`)
        let written = match notification {
            Notification::Resolved => annotations.get(RESOLVED_SUMMARY_ANNOTATION),
            _ => annotations.get("summary"),
        };
        let summary = match written {
            Some(s) => s.clone(),
            None => self.default_summary(rule, notification, &value, &threshold, &eta),
        };
        if notification == Notification::Resolved {
            annotations.insert("summary".into(), summary.clone());
        }
        let severity = if self.notice.severity.is_empty() {
            rule.severity.clone()
        } else {
            self.notice.severity.clone()
        };
        let status = if notification == Notification::Resolved {
            AlertStatus::Resolved
        } else {
            AlertStatus::Firing
        };
        Alert {
            fingerprint: self.fingerprint.clone(),
            status,
            rule: rule.name.clone(),
            severity,
            starts_at_ms: since_ns.div_euclid(1_000_000),
            ends_at_ms: ends_at_ns.map(|ns| ns.div_euclid(1_000_000)),
            labels: self.labels.clone(),
            annotations,
            summary,
            suspected_service: self.notice.correlation.suspected.clone(),
            suspected_services: self.notice.correlation.suspects.clone(),
            score: match rule.condition {
                Condition::Anomaly { .. } if e.value.is_finite() => e.value.clamp(0.0, 1.0),
                Condition::Anomaly { .. } => 0.0,
                _ => self.anomaly_score.unwrap_or(0.0).clamp(0.0, 1.0),
            },
            value: e.value.is_finite().then_some(e.value),
            exemplar_trace_ids: self.notice.correlation.exemplars.clone(),
        }
    }

    fn default_summary(
        &self,
        rule: &Rule,
        n: Notification,
        value: &str,
        threshold: &str,
        eta: &str,
    ) -> String {
        let series: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "scope" | "window"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let subject = if series.is_empty() {
            rule.name.clone()
        } else {
            format!("{} {}", rule.name, series.join(", "))
        };
        let field = rule.condition.field().map_or("value", |f| f.name());
        let text = match (&rule.condition, n) {
            (Condition::Anomaly { .. }, Notification::Resolved) => format!("resolved, anomaly score {value}"),
            (Condition::SloBurn { .. }, Notification::Resolved) => format!("resolved, burn rate {value}"),
            (Condition::CallPattern { .. }, Notification::Resolved) => {
                format!("resolved, calls back to their normal rates (largest change {value} standard scores)")
            }
            (_, Notification::Resolved) => format!("resolved, {field} {value}"),
            (Condition::Threshold { .. }, _) => {
                let below = self.last.is_some_and(|e| e.value < e.threshold);
                let side = if below { "below" } else { "above" };
                format!("{field} {value} {side} {threshold}")
            }
            (Condition::Dynamic { .. }, _) => {
                format!("{field} {value} outside its baseline (bound {threshold})")
            }
            (Condition::Anomaly { .. }, _) => match &self.feature {
                Some(f) => format!("anomaly score {value} above {threshold} (mostly {f})"),
                None => format!("anomaly score {value} above {threshold}"),
            },
            (Condition::CallPattern { .. }, _) => match &self.feature {
                Some(f) => format!("{f} ({value} standard scores)"),
                None => format!("calls changed by {value} standard scores"),
            },
            (Condition::Trend { horizon_ns, .. }, _) => format!(
                "{field} predicted to cross {threshold} in {eta} ({value} in {})",
                format_ns(*horizon_ns as f64)
            ),
            (Condition::SloBurn { long_ns, short_ns, .. }, _) => format!(
                "error budget burning {value}x the sustainable rate over {} and {} (factor {threshold})",
                format_ns(*long_ns as f64),
                format_ns(*short_ns as f64)
            ),
        };
        format!("{subject}: {text}")
    }
}
