//! RED series per window, and a least-squares trend per series with the time it will
//! cross a bound (capacity planning).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::WindowAggregate;

use super::compare::Series;
use super::stats::fit_line;

/// One window of a RED series.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Window start and end, unix milliseconds.
    pub start: i64,
    pub end: i64,
    pub count: u64,
    pub error_count: u64,
    pub error_rate: f64,
    /// Calls per second.
    pub throughput: f64,
    /// Latency quantiles and mean in milliseconds (`null` without calls).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl Point {
    /// The figures of one window.
    pub fn of(w: &WindowAggregate) -> Self {
        let q = |p: f64| finite(w.quantile(p) / 1e6).filter(|_| w.count > 0);
        Self {
            start: w.window_start_ns.div_euclid(1_000_000),
            end: w.window_end_ns.div_euclid(1_000_000),
            count: w.count,
            error_count: w.error_count,
            error_rate: w.error_rate(),
            throughput: w.throughput_per_s(),
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            mean_ms: (w.count > 0).then(|| w.sum_ns as f64 / w.count as f64 / 1e6),
        }
    }
}

/// A RED series: its identity and its windows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoints {
    pub scope: String,
    pub key: BTreeMap<String, String>,
    pub window_seconds: f64,
    pub points: Vec<Point>,
}

/// The points of every series.
pub fn series_points(series: &[Series]) -> Vec<SeriesPoints> {
    series
        .iter()
        .map(|s| SeriesPoints {
            scope: s.scope.clone(),
            key: s.key.clone(),
            window_seconds: s.window_size_ns as f64 / 1e9,
            points: s.windows.iter().map(Point::of).collect(),
        })
        .collect()
}

/// The figure a trend is fitted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Latency quantiles, milliseconds.
    P50,
    P95,
    P99,
    /// Errors over calls.
    ErrorRate,
    /// Calls per second.
    Throughput,
}

impl Field {
    /// The names `field=` takes.
    pub const NAMES: [&'static str; 5] = ["p50", "p95", "p99", "error_rate", "throughput"];

    /// The field of a name in [`Field::NAMES`].
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "p50" => Field::P50,
            "p95" => Field::P95,
            "p99" => Field::P99,
            "error_rate" => Field::ErrorRate,
            "throughput" => Field::Throughput,
            _ => return None,
        })
    }

    /// The field's value in one window (`None` for a latency without calls).
    pub fn value(self, p: &Point) -> Option<f64> {
        match self {
            Field::P50 => p.p50_ms,
            Field::P95 => p.p95_ms,
            Field::P99 => p.p99_ms,
            Field::ErrorRate => (p.count > 0).then_some(p.error_rate),
            Field::Throughput => Some(p.throughput),
        }
    }
}

/// The fitted trend of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trend {
    pub scope: String,
    pub key: BTreeMap<String, String>,
    pub window_seconds: f64,
    pub field: Field,
    /// Windows with a value (at least 2 for a fit).
    pub points: usize,
    /// Change of the field per second.
    pub slope_per_second: Option<f64>,
    /// The fitted value at `interceptAt` (unix milliseconds: the first window's middle).
    pub intercept: Option<f64>,
    pub intercept_at: Option<i64>,
    pub r2: Option<f64>,
    /// The fitted value at the last window's middle.
    pub fitted_last: Option<f64>,
    pub bound: Option<f64>,
    /// When the fitted line reaches `bound`, unix milliseconds, if at or after the last
    /// window; `null` when it is flat, moves away from the bound or is already past it.
    pub crosses_at: Option<i64>,
    /// The fitted line reached `bound` before the last window and keeps going.
    pub already_crossed: bool,
}

/// Fits `field` over the windows of `series` (x: window middle in seconds).
pub fn trend(series: &Series, field: Field, bound: Option<f64>) -> Trend {
    let pts: Vec<(f64, f64)> = series
        .windows
        .iter()
        .filter_map(|w| {
            let mid_s = (w.window_start_ns as f64 + w.window_size_ns as f64 / 2.0) / 1e9;
            field.value(&Point::of(w)).map(|v| (mid_s, v))
        })
        .collect();
    let line = fit_line(&pts);
    let last_x = pts.last().map(|p| p.0);
    let crossing = line.zip(bound).and_then(|(l, b)| l.crossing(b)).zip(last_x);
    let ms = |s: f64| (s * 1e3).round() as i64;
    Trend {
        scope: series.scope.clone(),
        key: series.key.clone(),
        window_seconds: series.window_size_ns as f64 / 1e9,
        field,
        points: pts.len(),
        slope_per_second: line.map(|l| l.slope),
        intercept: line.map(|l| l.intercept),
        intercept_at: line.map(|l| ms(l.x0)),
        r2: line.and_then(|l| l.r2),
        fitted_last: line.zip(last_x).map(|(l, x)| l.at(x)),
        bound,
        crosses_at: crossing.filter(|(t, last)| t >= last).map(|(t, _)| ms(t)),
        already_crossed: crossing.is_some_and(|(t, last)| t < last),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_767_225_600 * S;

    /// A 10 s window of `count` calls of `latency_ms` each, `errors` of them failed.
    fn window(i: i64, count: u64, errors: u64, latency_ms: i64) -> WindowAggregate {
        let mut w = WindowAggregate::empty(
            T0 + i * 10 * S,
            10 * S,
            Arc::from("service"),
            vec![(Arc::from("service"), Arc::from("orders"))],
            S,
        );
        for _ in 0..count {
            let ns = latency_ms * 1_000_000;
            w.count += 1;
            w.min_ns = w.min_ns.min(ns);
            w.max_ns = w.max_ns.max(ns);
            w.sum_ns += ns;
            w.sketch.add(ns as f64);
        }
        w.error_count = errors;
        w
    }

    fn series(windows: Vec<WindowAggregate>) -> Series {
        super::super::compare::group(windows).remove(0)
    }

    #[test]
    fn points_carry_red_figures_in_milliseconds() {
        let p = Point::of(&window(1, 20, 5, 40));
        assert_eq!((p.start, p.end), (1_767_225_610_000, 1_767_225_620_000));
        assert_eq!((p.count, p.error_count), (20, 5));
        assert_eq!(p.error_rate, 0.25);
        assert_eq!(p.throughput, 2.0);
        assert_eq!(
            (p.p50_ms, p.p99_ms, p.mean_ms),
            (Some(40.0), Some(40.0), Some(40.0))
        );
        let empty = Point::of(&window(0, 0, 0, 1));
        assert_eq!(
            (empty.p99_ms, empty.mean_ms, empty.throughput),
            (None, None, 0.0)
        );
    }

    #[test]
    fn throughput_growing_two_calls_per_window_crosses_its_bound() {
        // 10, 12, 14, ... calls per 10 s window: +0.2 calls/s per 10 s = 0.02 calls/s²
        let s = series((0..6).map(|i| window(i, 10 + 2 * i as u64, 0, 5)).collect());
        let t = trend(&s, Field::Throughput, Some(3.0));
        assert_eq!(t.points, 6);
        assert!((t.slope_per_second.unwrap() - 0.02).abs() < 1e-12, "{t:?}");
        assert!((t.intercept.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(t.intercept_at, Some(1_767_225_605_000));
        assert!((t.r2.unwrap() - 1.0).abs() < 1e-12);
        // 1.0 at the first middle, 3.0 after 100 s more
        assert_eq!(t.crosses_at, Some(1_767_225_705_000));
        assert!(!t.already_crossed);
        // a bound below the last value: crossed already
        let t = trend(&s, Field::Throughput, Some(1.5));
        assert_eq!((t.crosses_at, t.already_crossed), (None, true));
        // p99 is flat: no crossing
        let t = trend(&s, Field::P99, Some(100.0));
        assert_eq!(t.slope_per_second, Some(0.0));
        assert_eq!((t.crosses_at, t.already_crossed, t.r2), (None, false, None));
    }

    #[test]
    fn latency_fields_skip_windows_without_calls() {
        let s = series(vec![
            window(0, 10, 0, 10),
            window(1, 0, 0, 1),
            window(2, 10, 0, 30),
        ]);
        let t = trend(&s, Field::P50, None);
        assert_eq!(t.points, 2);
        // 20 ms over 20 s
        assert!((t.slope_per_second.unwrap() - 1.0).abs() < 1e-9, "{t:?}");
        assert_eq!((t.bound, t.crosses_at), (None, None));
        let t = trend(&s, Field::ErrorRate, None);
        assert_eq!(t.points, 2);
        assert_eq!(Field::parse("p99"), Some(Field::P99));
        assert_eq!(Field::parse("p42"), None);
    }
}
