//! The `aggregate` stage in a pipeline file: its keys, their checks, and the settings
//! built from them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{duration, ConfigErrors};

use super::{AggregateSettings, Dimension, DimensionSet, WindowSpec};

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
    /// The aggregator's settings (call after [`AggregateConfig::validate`] passed).
    pub fn settings(&self) -> AggregateSettings {
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

    /// Records every problem of these settings under `path`.
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
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
                if let Err(e) = d.parse::<Dimension>() {
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
