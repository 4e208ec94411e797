//! What the alert engine runs: rules with parsed fields, bounds and templates, times in
//! nanoseconds of event time. Built from an [`AlertConfig`] that passed validation.

use std::time::Duration;

use super::config::{AlertConfig, Bound, Direction, Indicator, RuleConfig};
use super::template::Template;
use crate::model::WindowAggregate;

/// An aggregate field a rule can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Count,
    ErrorCount,
    ErrorRate,
    ThroughputPerS,
    LatencyP50,
    LatencyP90,
    LatencyP95,
    LatencyP99,
    LatencyMax,
    ConcurrencyMean,
    ConcurrencyMax,
    SloCompliance,
}

impl Field {
    /// Every field with its name in pipeline files.
    pub const ALL: [(&'static str, Field); 12] = [
        ("count", Field::Count),
        ("error_count", Field::ErrorCount),
        ("error_rate", Field::ErrorRate),
        ("throughput_per_s", Field::ThroughputPerS),
        ("latency_p50_ns", Field::LatencyP50),
        ("latency_p90_ns", Field::LatencyP90),
        ("latency_p95_ns", Field::LatencyP95),
        ("latency_p99_ns", Field::LatencyP99),
        ("latency_max_ns", Field::LatencyMax),
        ("concurrency_mean", Field::ConcurrencyMean),
        ("concurrency_max", Field::ConcurrencyMax),
        ("slo_compliance", Field::SloCompliance),
    ];

    /// The field of this name.
    pub fn parse(name: &str) -> Option<Field> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The name in pipeline files.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }

    /// Latency fields, in nanoseconds (bounds may be durations).
    pub fn is_nanos(self) -> bool {
        matches!(
            self,
            Field::LatencyP50
                | Field::LatencyP90
                | Field::LatencyP95
                | Field::LatencyP99
                | Field::LatencyMax
        )
    }

    /// Shares between 0 and 1.
    pub fn is_ratio(self) -> bool {
        matches!(self, Field::ErrorRate | Field::SloCompliance)
    }

    /// The field of one window; NaN for latencies of a window without calls.
    pub fn value(self, w: &WindowAggregate) -> f64 {
        let q = |q: f64| {
            if w.count == 0 {
                f64::NAN
            } else {
                w.quantile(q)
            }
        };
        match self {
            Field::Count => w.count as f64,
            Field::ErrorCount => w.error_count as f64,
            Field::ErrorRate => w.error_rate(),
            Field::ThroughputPerS => w.throughput_per_s(),
            Field::LatencyP50 => q(0.5),
            Field::LatencyP90 => q(0.9),
            Field::LatencyP95 => q(0.95),
            Field::LatencyP99 => q(0.99),
            Field::LatencyMax if w.count == 0 => f64::NAN,
            Field::LatencyMax => w.max_ns as f64,
            Field::ConcurrencyMean => w.concurrency_mean,
            Field::ConcurrencyMax => w.concurrency_max,
            Field::SloCompliance => w.slo_compliance(),
        }
    }

    /// What kind of trace explains the field going wrong.
    pub fn symptom(self) -> Symptom {
        match self {
            Field::ErrorCount | Field::ErrorRate => Symptom::Errors,
            Field::Count | Field::ThroughputPerS => Symptom::Other,
            _ => Symptom::Latency,
        }
    }
}

/// What kind of evidence the correlation looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Symptom {
    /// Slow or anomalous traces; the suspect is the service whose critical-path
    /// self-time share grew most.
    Latency,
    /// Traces with errors; the suspect is the most frequent deepest error origin.
    Errors,
    /// Any flagged trace, explained as for latency.
    Other,
}

/// Alert stage settings, in nanoseconds of event time.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    pub rules: Vec<Rule>,
    /// Label names whose values form the group key.
    pub group_by: Vec<String>,
    pub group_wait_ns: i64,
    pub repeat_interval_ns: i64,
    pub escalate_after_ns: Option<i64>,
    /// Lowest to highest.
    pub severities: Vec<String>,
    pub inhibit: bool,
    pub incident_linger_ns: i64,
    pub resolve_timeout_ns: i64,
    pub series_expiry_ns: i64,
    pub max_series_per_rule: usize,
    pub correlation: CorrelationSettings,
}

/// Correlation settings, in nanoseconds of event time.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationSettings {
    pub window_ns: i64,
    pub max_traces: usize,
    pub evidence_score: f64,
    pub baseline_samples: usize,
    pub service_graph_ttl_ns: i64,
}

/// One rule, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// Inhibition group (the rule name unless configured).
    pub group: String,
    pub severity: String,
    pub labels: Vec<(String, Template)>,
    pub annotations: Vec<(String, Template)>,
    pub for_ns: i64,
    pub select: Select,
    pub condition: Condition,
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    Series {
        scope: String,
        /// (dimension, glob) pairs the key must match.
        matchers: Vec<(String, String)>,
        window_ns: Option<i64>,
        min_count: u64,
    },
    Traces {
        root_service: Option<String>,
        root_operation: Option<String>,
    },
}

/// A rule's condition with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Threshold {
        field: Field,
        above: Option<f64>,
        below: Option<f64>,
    },
    Dynamic {
        field: Field,
        k: f64,
        samples: usize,
        min_samples: usize,
        direction: Direction,
        min_delta: f64,
    },
    Anomaly {
        score: f64,
        windows: u32,
        feature: Option<String>,
    },
    Trend {
        field: Field,
        bound: f64,
        /// True: fires on crossing above `bound`; false: below.
        rising: bool,
        windows: usize,
        horizon_ns: i64,
    },
    SloBurn {
        objective: f64,
        long_ns: i64,
        short_ns: i64,
        factor: f64,
        indicator: Indicator,
    },
    CallPattern {
        z: f64,
        min_change: f64,
        window_ns: i64,
        every_ns: i64,
    },
}

impl Condition {
    /// The watched aggregate field, if any.
    pub fn field(&self) -> Option<Field> {
        match self {
            Condition::Threshold { field, .. }
            | Condition::Dynamic { field, .. }
            | Condition::Trend { field, .. } => Some(*field),
            Condition::Anomaly { .. }
            | Condition::SloBurn { .. }
            | Condition::CallPattern { .. } => None,
        }
    }

    /// The kind's name in pipeline files.
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::Threshold { .. } => "threshold",
            Condition::Dynamic { .. } => "dynamic",
            Condition::Anomaly { .. } => "anomaly",
            Condition::Trend { .. } => "trend",
            Condition::SloBurn { .. } => "slo_burn",
            Condition::CallPattern { .. } => "call_pattern",
        }
    }
}

pub(super) fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The value of a bound: a number, a numeric string, or for nanosecond fields a duration.
pub(super) fn bound_value(b: &Bound, nanos_field: bool) -> Result<f64, String> {
    let v = match b {
        Bound::Number(v) => *v,
        Bound::Text(t) => match t.trim().parse::<f64>() {
            Ok(v) => v,
            Err(_) if nanos_field => humantime::parse_duration(t.trim())
                .map(|d| nanos(d) as f64)
                .map_err(|e| format!("`{t}` is neither a number nor a duration ({e})"))?,
            Err(_) => return Err(format!("`{t}` is not a number")),
        },
    };
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{v}` is not a finite number"))
    }
}

impl AlertConfig {
    /// The engine's settings (call after validation passed; rules that do not convert
    /// are left out).
    pub fn settings(&self) -> AlertSettings {
        let c = &self.correlation;
        AlertSettings {
            rules: self.rules.iter().filter_map(RuleConfig::rule).collect(),
            group_by: self.group_by.clone(),
            group_wait_ns: nanos(self.group_wait),
            repeat_interval_ns: nanos(self.repeat_interval).max(1),
            escalate_after_ns: self.escalate_after.map(nanos),
            severities: self.severities.clone(),
            inhibit: self.inhibit,
            incident_linger_ns: nanos(self.incident_linger),
            resolve_timeout_ns: nanos(self.resolve_timeout).max(1),
            series_expiry_ns: nanos(self.series_expiry).max(1),
            max_series_per_rule: self.max_series_per_rule,
            correlation: CorrelationSettings {
                window_ns: nanos(c.window),
                max_traces: c.max_traces.max(1),
                evidence_score: c.evidence_score,
                baseline_samples: c.baseline_samples.max(1),
                service_graph_ttl_ns: nanos(c.service_graph_ttl).max(1),
            },
        }
    }
}

impl RuleConfig {
    /// The conditions that are set, by name.
    pub(super) fn conditions(&self) -> Vec<&'static str> {
        [
            ("threshold", self.threshold.is_some()),
            ("dynamic", self.dynamic.is_some()),
            ("anomaly", self.anomaly.is_some()),
            ("trend", self.trend.is_some()),
            ("slo_burn", self.slo_burn.is_some()),
            ("call_pattern", self.call_pattern.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| n)
        .collect()
    }

    fn rule(&self) -> Option<Rule> {
        let templates = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| Template::parse(v).ok().map(|t| (k.clone(), t)))
                .collect::<Option<Vec<_>>>()
        };
        let select = match (&self.series, &self.traces) {
            (Some(s), None) => Select::Series {
                scope: s.scope.clone(),
                matchers: s
                    .match_
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                window_ns: s.window.map(nanos),
                min_count: s.min_count,
            },
            (None, Some(t)) => Select::Traces {
                root_service: t.root_service.clone(),
                root_operation: t.root_operation.clone(),
            },
            _ => return None,
        };
        Some(Rule {
            name: self.name.clone(),
            group: self.group.clone().unwrap_or_else(|| self.name.clone()),
            severity: self.severity.clone(),
            labels: templates(&self.labels)?,
            annotations: templates(&self.annotations)?,
            for_ns: nanos(self.for_),
            select,
            condition: self.condition()?,
        })
    }

    fn condition(&self) -> Option<Condition> {
        if self.conditions().len() != 1 {
            return None;
        }
        let bound = |b: &Option<Bound>, f: Field| match b {
            Some(b) => bound_value(b, f.is_nanos()).map(Some).ok(),
            None => Some(None),
        };
        if let Some(t) = &self.threshold {
            let field = Field::parse(&t.field)?;
            return Some(Condition::Threshold {
                field,
                above: bound(&t.above, field)?,
                below: bound(&t.below, field)?,
            });
        }
        if let Some(d) = &self.dynamic {
            let field = Field::parse(&d.field)?;
            return Some(Condition::Dynamic {
                field,
                k: d.k,
                samples: d.samples.max(1),
                min_samples: d.min_samples,
                direction: d.direction,
                min_delta: bound(&d.min_delta, field)?.unwrap_or(0.0),
            });
        }
        if let Some(a) = &self.anomaly {
            return Some(Condition::Anomaly {
                score: a.score,
                windows: a.windows.max(1),
                feature: a.feature.clone(),
            });
        }
        if let Some(t) = &self.trend {
            let field = Field::parse(&t.field)?;
            let (bound, rising) = match (bound(&t.above, field)?, bound(&t.below, field)?) {
                (Some(b), None) => (b, true),
                (None, Some(b)) => (b, false),
                _ => return None,
            };
            return Some(Condition::Trend {
                field,
                bound,
                rising,
                windows: t.windows.max(2),
                horizon_ns: nanos(t.horizon),
            });
        }
        if let Some(c) = &self.call_pattern {
            return Some(Condition::CallPattern {
                z: c.z,
                min_change: c.min_change,
                window_ns: nanos(c.window).max(1),
                every_ns: nanos(c.every),
            });
        }
        let s = self.slo_burn.as_ref()?;
        Some(Condition::SloBurn {
            objective: s.objective,
            long_ns: nanos(s.long),
            short_ns: nanos(s.short),
            factor: s.factor,
            indicator: s.indicator,
        })
    }
}
