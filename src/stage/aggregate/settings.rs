//! What the aggregate stage computes, and the checks a configuration must pass.

use thiserror::Error;

use super::dimension::Dimension;

/// The scope name of service-graph edge aggregates.
pub const SERVICE_GRAPH_SCOPE: &str = "service_graph";

/// Aggregate settings, in nanoseconds of event time.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateSettings {
    /// Window sizes, each tumbling or hopping; sizes must differ.
    pub windows: Vec<WindowSpec>,
    /// The monitoring scopes: each set's keys are aggregated separately.
    pub dimension_sets: Vec<DimensionSet>,
    /// Live keys per (window size, scope) before new keys go to the overflow series.
    pub max_series: usize,
    /// SLO compliance is the share of calls with latency at most this.
    pub slo_latency_ns: i64,
    /// A key without calls for this long (event time, measured at the watermark) is
    /// forgotten, freeing room under `max_series`. Never shorter than a window size: a
    /// key is not forgotten while a window holding its calls is open.
    pub idle_series_expiry_ns: i64,
    /// Also aggregate service-graph edges per window (scope `service_graph`, key
    /// `client`, `server`, `connection_type`).
    pub service_graph: bool,
}

/// One window size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Window length, positive.
    pub size_ns: i64,
    /// Hopping windows start every `hop_ns` (at most `size_ns`); `None` is tumbling.
    pub hop_ns: Option<i64>,
}

impl WindowSpec {
    /// Tumbling windows of `size_ns`.
    pub fn tumbling(size_ns: i64) -> Self {
        Self {
            size_ns,
            hop_ns: None,
        }
    }

    /// Hopping windows of `size_ns` starting every `hop_ns`.
    pub fn hopping(size_ns: i64, hop_ns: i64) -> Self {
        Self {
            size_ns,
            hop_ns: Some(hop_ns),
        }
    }

    /// The hop; the size for tumbling windows.
    pub fn hop(&self) -> i64 {
        self.hop_ns.unwrap_or(self.size_ns)
    }
}

/// A monitoring scope: a name and the dimensions of its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimensionSet {
    /// The `scope` of its aggregates.
    pub name: String,
    /// Key dimensions, in order; none aggregates every call under one key.
    pub dimensions: Vec<Dimension>,
}

impl DimensionSet {
    /// A set named `name` over `dimensions`.
    pub fn new(name: &str, dimensions: Vec<Dimension>) -> Self {
        Self {
            name: name.to_owned(),
            dimensions,
        }
    }
}

/// A problem with [`AggregateSettings`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingsError {
    #[error("windows: at least one window is needed")]
    NoWindows,
    #[error("windows[{index}].size: must be positive, got {size_ns} ns")]
    WindowSize { index: usize, size_ns: i64 },
    #[error("windows[{index}].hop: must be positive and at most the size ({size_ns} ns), got {hop_ns} ns")]
    Hop {
        index: usize,
        size_ns: i64,
        hop_ns: i64,
    },
    #[error(
        "windows[{index}].size: {size_ns} ns is already used by another window (sizes must differ)"
    )]
    DuplicateSize { index: usize, size_ns: i64 },
    #[error("dimension_sets[{index}].name: must not be empty")]
    EmptyName { index: usize },
    #[error("dimension_sets[{index}].name: {name:?} is used twice")]
    DuplicateName { index: usize, name: String },
    #[error(
        "dimension_sets[{index}].name: {SERVICE_GRAPH_SCOPE:?} is reserved for service-graph edges"
    )]
    ReservedName { index: usize },
    #[error("dimension_sets[{index}].dimensions: {dimension} appears twice")]
    DuplicateDimension { index: usize, dimension: String },
    #[error("max_series: must be at least 1")]
    MaxSeries,
    #[error("idle_series_expiry: must be positive, got {0} ns")]
    IdleExpiry(i64),
}

impl AggregateSettings {
    /// Every problem with these settings (empty when they are usable).
    pub fn validate(&self) -> Vec<SettingsError> {
        let mut errors = Vec::new();
        if self.windows.is_empty() {
            errors.push(SettingsError::NoWindows);
        }
        for (index, w) in self.windows.iter().enumerate() {
            if w.size_ns <= 0 {
                errors.push(SettingsError::WindowSize {
                    index,
                    size_ns: w.size_ns,
                });
            } else if let Some(hop_ns) = w.hop_ns.filter(|&h| h <= 0 || h > w.size_ns) {
                errors.push(SettingsError::Hop {
                    index,
                    size_ns: w.size_ns,
                    hop_ns,
                });
            }
            if self.windows[..index].iter().any(|o| o.size_ns == w.size_ns) {
                errors.push(SettingsError::DuplicateSize {
                    index,
                    size_ns: w.size_ns,
                });
            }
        }
        for (index, set) in self.dimension_sets.iter().enumerate() {
            if set.name.is_empty() {
                errors.push(SettingsError::EmptyName { index });
            } else if set.name == SERVICE_GRAPH_SCOPE {
                errors.push(SettingsError::ReservedName { index });
            } else if self.dimension_sets[..index]
                .iter()
                .any(|o| o.name == set.name)
            {
                errors.push(SettingsError::DuplicateName {
                    index,
                    name: set.name.clone(),
                });
            }
            for (i, d) in set.dimensions.iter().enumerate() {
                if set.dimensions[..i].contains(d) {
                    errors.push(SettingsError::DuplicateDimension {
                        index,
                        dimension: d.to_string(),
                    });
                }
            }
        }
        if self.max_series == 0 {
            errors.push(SettingsError::MaxSeries);
        }
        if self.idle_series_expiry_ns <= 0 {
            errors.push(SettingsError::IdleExpiry(self.idle_series_expiry_ns));
        }
        errors
    }
}

impl Default for AggregateSettings {
    /// 10 s and 1 min tumbling windows over the scopes `service`, `operation` (service
    /// and span name) and `agent`; 10,000 series; a 500 ms SLO; keys idle for 10 min are
    /// forgotten; service-graph edges on.
    fn default() -> Self {
        const S: i64 = 1_000_000_000;
        Self {
            windows: vec![WindowSpec::tumbling(10 * S), WindowSpec::tumbling(60 * S)],
            dimension_sets: vec![
                DimensionSet::new("service", vec![Dimension::Service]),
                DimensionSet::new("operation", vec![Dimension::Service, Dimension::Operation]),
                DimensionSet::new("agent", vec![Dimension::Agent]),
            ],
            max_series: 10_000,
            slo_latency_ns: S / 2,
            idle_series_expiry_ns: 600 * S,
            service_graph: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(AggregateSettings::default().validate(), vec![]);
    }

    #[test]
    fn every_problem_is_reported() {
        let s = AggregateSettings {
            windows: vec![
                WindowSpec::tumbling(0),
                WindowSpec::hopping(10, 20),
                WindowSpec::hopping(10, 5),
            ],
            dimension_sets: vec![
                DimensionSet::new("", vec![]),
                DimensionSet::new("a", vec![Dimension::Service, Dimension::Service]),
                DimensionSet::new("a", vec![]),
                DimensionSet::new(SERVICE_GRAPH_SCOPE, vec![]),
            ],
            max_series: 0,
            slo_latency_ns: 1,
            idle_series_expiry_ns: 0,
            service_graph: true,
        };
        let messages: Vec<String> = s.validate().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            messages,
            [
                "windows[0].size: must be positive, got 0 ns",
                "windows[1].hop: must be positive and at most the size (10 ns), got 20 ns",
                "windows[2].size: 10 ns is already used by another window (sizes must differ)",
                "dimension_sets[0].name: must not be empty",
                "dimension_sets[1].dimensions: service appears twice",
                "dimension_sets[2].name: \"a\" is used twice",
                "dimension_sets[3].name: \"service_graph\" is reserved for service-graph edges",
                "max_series: must be at least 1",
                "idle_series_expiry: must be positive, got 0 ns",
            ]
        );
        assert_eq!(
            AggregateSettings {
                windows: vec![],
                ..AggregateSettings::default()
            }
            .validate(),
            vec![SettingsError::NoWindows]
        );
    }
}
