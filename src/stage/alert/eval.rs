//! Rule conditions over one series: the per-series state each kind keeps and the small
//! numeric functions behind them (robust baseline, least-squares line, burn rate).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::config::{Direction, Indicator};
use super::settings::Condition;
use crate::model::AnomalyScore;
use crate::model::WindowAggregate;

/// One decision about a series at one event time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Eval {
    /// The condition holds.
    pub active: bool,
    /// The watched value (field value, score, predicted value, burn rate).
    pub value: f64,
    /// What it was compared with (bound, baseline bound, score threshold, factor).
    pub threshold: f64,
    /// Trend rules: nanoseconds until the line crosses the bound (0 when beyond it).
    pub eta_ns: Option<i64>,
}

impl Eval {
    pub(super) fn new(active: bool, value: f64, threshold: f64) -> Self {
        Self {
            active,
            value,
            threshold,
            eta_ns: None,
        }
    }
}

/// What a series remembers between decisions, per rule kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EvalState {
    Stateless,
    Baseline(RollingBaseline),
    Streak(u32),
    Points(VecDeque<(i64, f64)>),
    /// (window end, calls, bad calls) within the long burn window.
    Burn(VecDeque<(i64, u64, u64)>),
}

impl EvalState {
    /// The empty state for a condition.
    pub fn new(condition: &Condition) -> Self {
        match condition {
            Condition::Threshold { .. } | Condition::CallPattern { .. } => EvalState::Stateless,
            Condition::Dynamic { samples, .. } => {
                EvalState::Baseline(RollingBaseline::new(*samples))
            }
            Condition::Anomaly { .. } => EvalState::Streak(0),
            Condition::Trend { .. } => EvalState::Points(VecDeque::new()),
            Condition::SloBurn { .. } => EvalState::Burn(VecDeque::new()),
        }
    }
}

/// Evaluates a window-based condition on the series' next window (at its end). `None`:
/// no decision (no value, warm-up, or an anomaly rule).
pub fn on_window(cond: &Condition, state: &mut EvalState, w: &WindowAggregate) -> Option<Eval> {
    let at = w.window_end_ns;
    match (cond, state) {
        (
            Condition::Threshold {
                field,
                above,
                below,
            },
            _,
        ) => {
            let v = field.value(w);
            if v.is_nan() {
                return None;
            }
            let over = above.is_some_and(|a| v > a);
            let under = below.is_some_and(|b| v < b);
            let bound = match (under, below) {
                (true, Some(b)) => *b,
                _ => above.or(*below).unwrap_or(f64::NAN),
            };
            Some(Eval::new(over || under, v, bound))
        }
        (
            Condition::Dynamic {
                field,
                k,
                min_samples,
                direction,
                min_delta,
                ..
            },
            EvalState::Baseline(base),
        ) => {
            let v = field.value(w);
            if v.is_nan() {
                return None;
            }
            let decision = (base.len() >= *min_samples).then(|| {
                let (median, scale) = base.median_scale();
                dynamic(v, median, scale, *k, *direction, *min_delta)
            });
            base.push(v);
            decision
        }
        (
            Condition::Trend {
                field,
                bound,
                rising,
                windows,
                horizon_ns,
            },
            EvalState::Points(points),
        ) => {
            let v = field.value(w);
            if v.is_nan() {
                return None;
            }
            points.push_back((at, v));
            while points.len() > *windows {
                points.pop_front();
            }
            if points.len() < *windows {
                return None;
            }
            trend(points, at, *bound, *rising, *horizon_ns)
        }
        (
            Condition::SloBurn {
                objective,
                long_ns,
                short_ns,
                factor,
                indicator,
            },
            EvalState::Burn(history),
        ) => {
            let bad = match indicator {
                Indicator::Errors => w.error_count,
                Indicator::Latency => w.count.saturating_sub(w.slo_good),
            };
            history.push_back((at, w.count, bad));
            let oldest = at.saturating_sub(*long_ns);
            while history.front().is_some_and(|e| e.0 <= oldest) {
                history.pop_front();
            }
            let long = burn_rate(history, at.saturating_sub(*long_ns), *objective)?;
            let short = burn_rate(history, at.saturating_sub(*short_ns), *objective)?;
            let binding = long.min(short);
            Some(Eval::new(binding > *factor, binding, *factor))
        }
        _ => None,
    }
}

/// Evaluates an anomaly condition on the series' next score. `None`: not warm.
pub fn on_score(cond: &Condition, state: &mut EvalState, s: &AnomalyScore) -> Option<Eval> {
    let (
        Condition::Anomaly {
            score,
            windows,
            feature,
        },
        EvalState::Streak(streak),
    ) = (cond, state)
    else {
        return None;
    };
    if !s.warm || s.score.is_nan() {
        return None;
    }
    let feature_ok = feature.as_deref().is_none_or(|f| {
        s.explanations
            .first()
            .is_some_and(|e| super::template::glob_match(f, &e.feature))
    });
    if feature_ok && s.score > *score {
        *streak = streak.saturating_add(1);
    } else {
        *streak = 0;
    }
    Some(Eval::new(*streak >= *windows, s.score, *score))
}

fn dynamic(v: f64, median: f64, scale: f64, k: f64, dir: Direction, min_delta: f64) -> Eval {
    let upper = median + k * scale;
    let lower = median - k * scale;
    let high = v > upper && v - median >= min_delta;
    let low = v < lower && median - v >= min_delta;
    match dir {
        Direction::Above => Eval::new(high, v, upper),
        Direction::Below => Eval::new(low, v, lower),
        Direction::Both if v < median => Eval::new(low, v, lower),
        Direction::Both => Eval::new(high, v, upper),
    }
}

fn trend(
    points: &VecDeque<(i64, f64)>,
    now: i64,
    bound: f64,
    rising: bool,
    horizon_ns: i64,
) -> Option<Eval> {
    // seconds relative to now keep the fit well-conditioned
    let xs: Vec<(f64, f64)> = points
        .iter()
        .map(|&(t, v)| ((t - now) as f64 / 1e9, v))
        .collect();
    let (intercept, slope) = linear_fit(&xs)?;
    let horizon_s = horizon_ns as f64 / 1e9;
    let predicted = intercept + slope * horizon_s;
    let eta_s = crossing_in(intercept, slope, bound, rising);
    let mut e = Eval::new(eta_s.is_some_and(|s| s <= horizon_s), predicted, bound);
    e.eta_ns = eta_s.map(|s| (s * 1e9).min(i64::MAX as f64) as i64);
    Some(e)
}

/// Least-squares line through `(x, y)` points: `(intercept, slope)`; `None` with fewer
/// than two distinct x values.
pub fn linear_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 || !sxx.is_finite() {
        return None;
    }
    let slope = sxy / sxx;
    Some((my - slope * mx, slope))
}

/// When (in x units from 0) the line `intercept + slope·x` is beyond `bound` (above it
/// when `rising`): 0 if it already is, `None` if it never will be.
pub fn crossing_in(intercept: f64, slope: f64, bound: f64, rising: bool) -> Option<f64> {
    let beyond = |v: f64| if rising { v > bound } else { v < bound };
    if beyond(intercept) {
        return Some(0.0);
    }
    let towards = if rising { slope > 0.0 } else { slope < 0.0 };
    towards.then(|| (bound - intercept) / slope)
}

/// Error-budget burn rate of the windows ending after `since`: bad share over
/// `1 − objective`; `None` without calls.
pub fn burn_rate(history: &VecDeque<(i64, u64, u64)>, since: i64, objective: f64) -> Option<f64> {
    let (calls, bad) = history
        .iter()
        .filter(|e| e.0 > since)
        .fold((0u64, 0u64), |(c, b), e| (c + e.1, b + e.2));
    (calls > 0).then(|| bad as f64 / calls as f64 / (1.0 - objective))
}

/// The last `capacity` values of a series, summarised by median and robust scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollingBaseline {
    values: VecDeque<f64>,
    capacity: usize,
    cached: Option<(f64, f64)>,
    pushes_since_cache: usize,
}

impl RollingBaseline {
    /// An empty baseline of at most `capacity` values.
    pub fn new(capacity: usize) -> Self {
        Self {
            values: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
            cached: None,
            pushes_since_cache: 0,
        }
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Adds a value, forgetting the oldest beyond capacity.
    pub fn push(&mut self, v: f64) {
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(v);
        self.pushes_since_cache += 1;
    }

    /// Median and robust scale (1.4826 · median absolute deviation, at least 1% of
    /// |median| and never 0, so a flat baseline still has a finite scale).
    pub fn median_scale(&mut self) -> (f64, f64) {
        let mut v: Vec<f64> = self.values.iter().copied().collect();
        let m = median(&mut v);
        for x in &mut v {
            *x = (*x - m).abs();
        }
        let mad = median(&mut v);
        let scale = (1.4826 * mad).max(0.01 * m.abs()).max(1e-12);
        self.cached = Some((m, scale));
        self.pushes_since_cache = 0;
        (m, scale)
    }

    /// As [`Self::median_scale`], recomputed only every `every` pushes (for hot paths
    /// where a slightly stale baseline is fine); `None` while empty.
    pub fn median_scale_cached(&mut self, every: usize) -> Option<(f64, f64)> {
        if self.values.is_empty() {
            return None;
        }
        match self.cached {
            Some(c) if self.pushes_since_cache < every => Some(c),
            _ => Some(self.median_scale()),
        }
    }
}

/// Median of the values (reorders them); NaN when empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
