//! Baseline time range against current time range per series (service, operation):
//! latency quantiles, error rate and throughput from the stored aggregate windows, each
//! with its change and whether the change is significant ([`super::stats`]).
//!
//! How each figure is tested:
//! - error rate: two-proportion z-test on the error and call counts;
//! - throughput: Poisson rate test on the call counts over the time the windows cover;
//! - p50, p95, p99: Mann–Whitney U test on the per-window values of that quantile (so a
//!   range needs several windows with calls on both sides to show a significant change).
//!
//! Hopping windows overlap (a call is in `size / hop` of them): their counts are scaled
//! down by that factor for the tests and only every `size / hop`-th window gives a
//! per-window quantile, so overlapping windows do not inflate the evidence.

use std::collections::BTreeMap;

use serde::Serialize;
use sketches_ddsketch::DDSketch;

use crate::model::WindowAggregate;
use crate::repository::{Repository, RepositoryError, ScopeQuery};

use super::stats::{mann_whitney, poisson_rate_test, two_proportion_z, TestResult};

/// Which series to read: scopes (dimension sets), dimension values, window size, range.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesSelection {
    /// Dimension sets to read; empty: `operation` when an operation is given, else
    /// `service` and `operation`.
    pub scopes: Vec<String>,
    /// The key's `service` value.
    pub service: Option<String>,
    /// The key's `operation` value.
    pub operation: Option<String>,
    /// Windows of this size; `None`: per series, the smallest size stored.
    pub window_size_ns: Option<i64>,
}

impl SeriesSelection {
    /// The scopes to read.
    pub fn scopes(&self) -> Vec<String> {
        match (self.scopes.is_empty(), self.operation.is_some()) {
            (false, _) => self.scopes.clone(),
            (true, true) => vec!["operation".into()],
            (true, false) => vec!["service".into(), "operation".into()],
        }
    }

    fn matching(&self) -> Vec<(String, String)> {
        let mut m = Vec::new();
        if let Some(s) = &self.service {
            m.push(("service".to_string(), s.clone()));
        }
        if let Some(o) = &self.operation {
            m.push(("operation".to_string(), o.clone()));
        }
        m
    }

    /// The windows of the selected series that lie wholly in `[from_ns, to_ns)`.
    pub fn read(
        &self,
        repo: &Repository,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<Series>, RepositoryError> {
        let mut windows = Vec::new();
        for scope in self.scopes() {
            let q = ScopeQuery {
                scope,
                matching: self.matching(),
                window_size_ns: self.window_size_ns,
                from_ns: Some(from_ns),
                to_ns: Some(to_ns),
            };
            windows.extend(
                repo.scope_windows(&q)?
                    .into_iter()
                    .filter(|w| w.window_end_ns <= to_ns),
            );
        }
        Ok(group(windows))
    }
}

/// The windows of one series (scope, key, window size) in time order.
#[derive(Debug, Clone)]
pub struct Series {
    pub scope: String,
    pub key: BTreeMap<String, String>,
    pub window_size_ns: i64,
    pub windows: Vec<WindowAggregate>,
}

impl Series {
    /// How many windows each call is in: `size / hop` for hopping windows (the hop
    /// taken as the smallest gap between window starts), else 1.
    pub fn overlap(&self) -> f64 {
        let gap = self
            .windows
            .windows(2)
            .map(|p| p[1].window_start_ns - p[0].window_start_ns)
            .filter(|g| *g > 0)
            .min();
        match gap {
            Some(g) if g < self.window_size_ns => self.window_size_ns as f64 / g as f64,
            _ => 1.0,
        }
    }
}

/// A series' scope, key and window size.
type SeriesId = (String, BTreeMap<String, String>, i64);

/// Groups windows by scope, key and size, each group in start order.
pub fn group(windows: Vec<WindowAggregate>) -> Vec<Series> {
    let mut by: BTreeMap<SeriesId, Vec<WindowAggregate>> = BTreeMap::new();
    for w in windows {
        let key = w
            .key
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        by.entry((w.scope.to_string(), key, w.window_size_ns))
            .or_default()
            .push(w);
    }
    by.into_iter()
        .map(|((scope, key, size), mut windows)| {
            windows.sort_by_key(|w| w.window_start_ns);
            windows.dedup_by_key(|w| w.window_start_ns);
            Series {
                scope,
                key,
                window_size_ns: size,
                windows,
            }
        })
        .collect()
}

/// Keeps, per scope and key, only the series of the smallest window size.
pub fn smallest_size(series: Vec<Series>) -> Vec<Series> {
    let mut best: BTreeMap<(String, BTreeMap<String, String>), Series> = BTreeMap::new();
    for s in series {
        let id = (s.scope.clone(), s.key.clone());
        match best.get(&id) {
            Some(b) if b.window_size_ns <= s.window_size_ns => {}
            _ => {
                best.insert(id, s);
            }
        }
    }
    best.into_values().collect()
}

/// The quantiles compared.
pub const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// One range of one series, summed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeSummary {
    pub windows: usize,
    pub count: u64,
    pub error_count: u64,
    /// Seconds of time the windows cover (overlaps counted once).
    pub seconds: f64,
    #[serde(skip)]
    overlap: f64,
    /// Latency quantiles of all the range's calls (merged sketches), milliseconds.
    #[serde(skip)]
    quantiles_ms: [Option<f64>; 3],
    /// Per non-overlapping window with calls, the latency quantiles in milliseconds.
    #[serde(skip)]
    per_window_ms: [Vec<f64>; 3],
}

impl RangeSummary {
    /// Sums the windows of one series (all of one size, in start order).
    pub fn of(windows: &[WindowAggregate], overlap: f64) -> Self {
        let mut sketch: Option<DDSketch> = None;
        let (mut min, mut max) = (i64::MAX, i64::MIN);
        let mut per_window_ms: [Vec<f64>; 3] = Default::default();
        let stride = (overlap.round() as usize).max(1);
        for (i, w) in windows.iter().enumerate() {
            if w.count == 0 {
                continue;
            }
            min = min.min(w.min_ns);
            max = max.max(w.max_ns);
            match &mut sketch {
                // every stored sketch has the same configuration
                Some(s) => {
                    let _ = s.merge(&w.sketch);
                }
                None => sketch = Some(w.sketch.clone()),
            }
            if i % stride == 0 {
                for (k, q) in QUANTILES.iter().enumerate() {
                    per_window_ms[k].push(w.quantile(*q) / 1e6);
                }
            }
        }
        let quantiles_ms = QUANTILES.map(|q| {
            sketch
                .as_ref()
                .and_then(|s| s.quantile(q).ok().flatten())
                .map(|v| v.clamp(min as f64, max as f64) / 1e6)
        });
        let size_s: f64 = windows.iter().map(|w| w.window_size_ns as f64 / 1e9).sum();
        Self {
            windows: windows.len(),
            count: windows.iter().map(|w| w.count).sum(),
            error_count: windows.iter().map(|w| w.error_count).sum(),
            seconds: size_s / overlap,
            overlap,
            quantiles_ms,
            per_window_ms,
        }
    }

    /// Calls per second (`None` without windows).
    pub fn throughput(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.count as f64 / self.overlap / self.seconds)
    }

    /// Errors over calls (`None` without calls).
    pub fn error_rate(&self) -> Option<f64> {
        (self.count > 0).then(|| self.error_count as f64 / self.count as f64)
    }

    /// The latency quantile `QUANTILES[i]` in milliseconds.
    pub fn quantile_ms(&self, i: usize) -> Option<f64> {
        self.quantiles_ms[i]
    }

    /// Calls with overlaps counted once.
    fn calls(&self) -> f64 {
        self.count as f64 / self.overlap
    }
}

/// One figure, baseline against current.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    /// `current - baseline`.
    pub change: Option<f64>,
    /// `change / baseline` (`None` when the baseline is 0 or missing).
    pub relative_change: Option<f64>,
    /// The test's two-sided p-value (`None` when it cannot be computed).
    pub p_value: Option<f64>,
    /// `p_value` is below [`super::stats::ALPHA`].
    pub significant: bool,
    /// The test: `mann_whitney_per_window`, `two_proportion_z` or `poisson_rate`.
    pub test: &'static str,
}

impl Change {
    fn new(
        baseline: Option<f64>,
        current: Option<f64>,
        test: &'static str,
        result: Option<TestResult>,
    ) -> Self {
        let change = baseline.zip(current).map(|(b, c)| c - b);
        let relative_change = change
            .zip(baseline)
            .filter(|(_, b)| *b != 0.0)
            .map(|(d, b)| d / b);
        Self {
            baseline,
            current,
            change,
            relative_change,
            p_value: result.map(|r| r.p_value),
            significant: result.is_some_and(|r| r.significant()),
            test,
        }
    }
}

/// One series, baseline against current.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesComparison {
    pub scope: String,
    pub key: BTreeMap<String, String>,
    pub window_seconds: f64,
    pub baseline: RangeSummary,
    pub current: RangeSummary,
    pub p50_ms: Change,
    pub p95_ms: Change,
    pub p99_ms: Change,
    pub error_rate: Change,
    /// Calls per second.
    pub throughput: Change,
}

/// Compares two summaries of one series.
pub fn compare_ranges(baseline: &RangeSummary, current: &RangeSummary) -> [Change; 5] {
    let latency = |i: usize| {
        Change::new(
            baseline.quantile_ms(i),
            current.quantile_ms(i),
            "mann_whitney_per_window",
            mann_whitney(&baseline.per_window_ms[i], &current.per_window_ms[i]),
        )
    };
    let (b_calls, c_calls) = (baseline.calls(), current.calls());
    let errors = |s: &RangeSummary| s.error_count as f64 / s.overlap;
    [
        latency(0),
        latency(1),
        latency(2),
        Change::new(
            baseline.error_rate(),
            current.error_rate(),
            "two_proportion_z",
            two_proportion_z(errors(baseline), b_calls, errors(current), c_calls),
        ),
        Change::new(
            baseline.throughput(),
            current.throughput(),
            "poisson_rate",
            poisson_rate_test(b_calls, baseline.seconds, c_calls, current.seconds),
        ),
    ]
}

/// Pairs the series of the two ranges by scope, key and size and compares each. With
/// no window size selected, each key uses the smallest size stored in either range.
pub fn compare_series(
    baseline: Vec<Series>,
    current: Vec<Series>,
    size_given: bool,
) -> Vec<SeriesComparison> {
    let mut pairs: BTreeMap<SeriesId, (Option<Series>, Option<Series>)> = BTreeMap::new();
    let mut sizes: BTreeMap<(String, BTreeMap<String, String>), i64> = BTreeMap::new();
    for (side, list) in [baseline, current].into_iter().enumerate() {
        for s in list {
            let size = sizes
                .entry((s.scope.clone(), s.key.clone()))
                .or_insert(s.window_size_ns);
            *size = (*size).min(s.window_size_ns);
            let e = pairs
                .entry((s.scope.clone(), s.key.clone(), s.window_size_ns))
                .or_default();
            if side == 0 {
                e.0 = Some(s);
            } else {
                e.1 = Some(s);
            }
        }
    }
    pairs
        .into_iter()
        .filter(|((scope, key, size), _)| {
            size_given || sizes[&(scope.clone(), key.clone())] == *size
        })
        .map(|((scope, key, size), (b, c))| {
            let summary = |s: &Option<Series>| match s {
                Some(s) => RangeSummary::of(&s.windows, s.overlap()),
                None => RangeSummary::of(&[], 1.0),
            };
            let (baseline, current) = (summary(&b), summary(&c));
            let [p50_ms, p95_ms, p99_ms, error_rate, throughput] =
                compare_ranges(&baseline, &current);
            SeriesComparison {
                scope,
                key,
                window_seconds: size as f64 / 1e9,
                baseline,
                current,
                p50_ms,
                p95_ms,
                p99_ms,
                error_rate,
                throughput,
            }
        })
        .collect()
}

/// Reads both ranges (unix nanos, `[start, end)`) and compares every selected series.
pub fn compare(
    repo: &Repository,
    selection: &SeriesSelection,
    baseline: (i64, i64),
    current: (i64, i64),
) -> Result<Vec<SeriesComparison>, RepositoryError> {
    let b = selection.read(repo, baseline.0, baseline.1)?;
    let c = selection.read(repo, current.0, current.1)?;
    Ok(compare_series(b, c, selection.window_size_ns.is_some()))
}

#[cfg(test)]
#[path = "compare_tests.rs"]
mod tests;
