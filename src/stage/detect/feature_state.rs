//! The state of one feature of a subject: its transform, its rolling and hour-of-day
//! baselines, the residuals that choose between them and the calibrators of its
//! deviations; and the counts of a categorical feature (the trace structure signature).

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::robust::{Baseline, Calibrator, Ewm, Seasonal, Window};

/// How a feature's raw value is transformed before baselines and models see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Scale {
    Linear,
    /// `ln(1 + max(v, 0))`: latencies, counts, rates of calls.
    Log1p,
}

impl Scale {
    pub(super) fn apply(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log1p => v.max(0.0).ln_1p(),
        }
    }

    pub(super) fn invert(self, t: f64) -> f64 {
        match self {
            Scale::Linear => t,
            Scale::Log1p => t.exp_m1(),
        }
    }
}

/// Name, transform and smallest spread (transformed units, absolute and relative to the
/// median) of a feature.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FeatureSpec {
    pub name: String,
    pub scale: Scale,
    pub floor: f64,
    pub floor_rel: f64,
}

/// Rate of the exponentially weighted residuals that choose between the rolling and the
/// seasonal baseline.
const RESIDUAL_ALPHA: f64 = 0.02;
/// The seasonal spread is at least this share of the rolling one.
const SEASONAL_SPREAD_SHARE: f64 = 0.25;
/// How far beyond the range of every value seen so far, as a share of that range, a
/// value of a series is new ground (the "spatial anomaly" of Numenta's NAB detector).
const RANGE_TOLERANCE: f64 = 0.05;
/// Values a rolling baseline needs before it is used.
pub(super) const MIN_BASELINE_VALUES: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct FeatureState {
    pub(super) name: String,
    pub(super) scale: Scale,
    pub(super) floor: f64,
    floor_rel: f64,
    pub(super) roll: Window,
    pub(super) seasonal: Seasonal,
    resid_roll: Ewm,
    resid_seas: Ewm,
    pub(super) calib: Calibrator,
    /// Calibrates the shift the last `SHORT` deviations agree on.
    pub(super) calib_short: Calibrator,
    /// Smallest and largest (transformed) value ever seen, flagged ones included.
    #[serde(default)]
    range: Option<(f64, f64)>,
}

impl FeatureState {
    pub(super) fn new(spec: &FeatureSpec, cap: usize) -> Self {
        Self {
            name: spec.name.clone(),
            scale: spec.scale,
            floor: spec.floor,
            floor_rel: spec.floor_rel,
            roll: Window::new(cap),
            seasonal: Seasonal::new(),
            resid_roll: Ewm::default(),
            resid_seas: Ewm::default(),
            calib: Calibrator::new(cap),
            calib_short: Calibrator::new(cap),
            range: None,
        }
    }

    fn floor_at(&self, center: f64) -> f64 {
        self.floor.max(self.floor_rel * center.abs())
    }

    /// The rolling baseline: median and spread of the recent accepted values.
    pub(super) fn rolling(&self) -> Option<Baseline> {
        if self.roll.len() < MIN_BASELINE_VALUES {
            return None;
        }
        let center = self.roll.median();
        Baseline::of(&self.roll, self.floor_at(center))
    }

    /// The baseline a value is judged against: the hour-of-day profile once there are
    /// two days of history and it has tracked the series better than the rolling one
    /// (`rolling`, this feature's [`rolling`](Self::rolling) baseline).
    pub(super) fn baseline(
        &self,
        at_ns: i64,
        seasonal_ok: bool,
        rolling: Option<Baseline>,
    ) -> Option<Baseline> {
        let rolling = rolling?;
        if seasonal_ok && self.resid_seas.n > 0 && self.resid_seas.mean < self.resid_roll.mean {
            // an hour that is always the same value still varies as much as a quarter of
            // the whole series
            let floor = self
                .floor_at(rolling.center)
                .max(SEASONAL_SPREAD_SHARE * rolling.spread);
            if let Some(s) = self.seasonal.baseline(at_ns, floor) {
                return Some(s);
            }
        }
        Some(rolling)
    }

    /// Tracks how well each baseline predicted `x` (every sample, flagged or not: a
    /// baseline that misses a daily pattern keeps missing it); `rolling` as for
    /// [`baseline`](Self::baseline).
    pub(super) fn track(&mut self, at_ns: i64, x: f64, rolling: Option<Baseline>) {
        if let Some(r) = rolling {
            self.resid_roll.push((x - r.center).abs(), RESIDUAL_ALPHA);
        }
        if let Some(s) = self.seasonal.baseline(at_ns, self.floor) {
            self.resid_seas.push((x - s.center).abs(), RESIDUAL_ALPHA);
        }
    }

    /// Whether `x` lies beyond every value seen so far by more than `RANGE_TOLERANCE` of
    /// their range (never while all were one value); then widens the range to it.
    pub(super) fn beyond_range(&mut self, x: f64) -> bool {
        let Some((lo, hi)) = self.range else {
            self.range = Some((x, x));
            return false;
        };
        let tol = RANGE_TOLERANCE * (hi - lo);
        let beyond = hi > lo && (x > hi + tol || x < lo - tol);
        self.range = Some((lo.min(x), hi.max(x)));
        beyond
    }

    pub(super) fn accept(&mut self, at_ns: i64, interval_ns: i64, x: f64) {
        self.roll.push(x);
        self.seasonal.push(at_ns, interval_ns, x);
    }
}

/// Counts of a categorical feature (the trace structure signature) over the accepted
/// samples of the baseline window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Categories {
    pub(super) recent: VecDeque<u64>,
    pub(super) counts: FxHashMap<u64, u32>,
    pub(super) cap: usize,
}

impl Categories {
    pub(super) fn push(&mut self, tag: u64) {
        if self.recent.len() == self.cap {
            if let Some(old) = self.recent.pop_front() {
                if let Some(c) = self.counts.get_mut(&old) {
                    *c -= 1;
                    if *c == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        self.recent.push_back(tag);
        *self.counts.entry(tag).or_insert(0) += 1;
    }

    /// ln of the probability of a tag at most as frequent as this one: the baseline share
    /// of such tags, and for a tag never seen the Good–Turing estimate of the unseen mass
    /// (tags seen once, over n), both with add-one smoothing. Also this tag's and the
    /// most common tag's share.
    pub(super) fn ln_p(&self, tag: u64) -> (f64, f64, f64) {
        let n = self.recent.len() as f64;
        let count = self.counts.get(&tag).copied().unwrap_or(0);
        let top = self.counts.values().copied().max().unwrap_or(0);
        let mass = if count == 0 {
            self.counts.values().filter(|c| **c == 1).count() as f64
        } else {
            self.counts
                .values()
                .filter(|c| **c <= count)
                .map(|c| f64::from(*c))
                .sum()
        };
        (
            ((1.0 + mass) / (n + 1.0)).ln().min(0.0),
            f64::from(count) / n.max(1.0),
            f64::from(top) / n.max(1.0),
        )
    }
}
