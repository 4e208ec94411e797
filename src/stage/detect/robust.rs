//! Robust streaming statistics: a rolling window kept sorted (median, MAD, ranks), the
//! hour-of-day profile, and tail probabilities (empirical ranks with an exponential tail
//! beyond the top decile, as in peaks-over-threshold; a Gaussian bound).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// 1.4826 · MAD estimates the standard deviation of a normal distribution.
pub(super) const MAD_TO_SIGMA: f64 = 1.482_6;
/// 1.2533 · mean absolute deviation estimates it too (√(π/2)).
const MEAN_AD_TO_SIGMA: f64 = 1.253_3;

/// Share of the largest calibration values the exponential tail is fitted to.
const TAIL_SHARE: f64 = 0.1;
/// Fewest values an empirical tail probability is computed from.
const MIN_TAIL_VALUES: usize = 20;

/// The most recent `cap` values, also kept sorted for quantiles and ranks.
///
/// Only finite values are stored (callers filter), so the sorted order is total and the
/// JSON form has no nulls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "WindowRepr", into = "WindowRepr")]
pub(super) struct Window {
    cap: usize,
    ring: VecDeque<f64>,
    sorted: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
struct WindowRepr {
    cap: usize,
    values: Vec<f64>,
}

impl From<WindowRepr> for Window {
    fn from(r: WindowRepr) -> Self {
        let mut w = Window::new(r.cap);
        for v in r.values.into_iter().filter(|v| v.is_finite()) {
            w.push(v);
        }
        w
    }
}

impl From<Window> for WindowRepr {
    fn from(w: Window) -> Self {
        WindowRepr {
            cap: w.cap,
            values: w.ring.into_iter().collect(),
        }
    }
}

impl Window {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            ring: VecDeque::new(),
            sorted: Vec::new(),
        }
    }

    /// Adds a finite value, dropping the oldest when full.
    pub(super) fn push(&mut self, v: f64) {
        debug_assert!(v.is_finite());
        if self.ring.len() == self.cap {
            if let Some(old) = self.ring.pop_front() {
                let i = self.sorted.partition_point(|x| *x < old);
                self.sorted.remove(i.min(self.sorted.len() - 1));
            }
        }
        self.ring.push_back(v);
        let i = self.sorted.partition_point(|x| *x < v);
        self.sorted.insert(i, v);
    }

    pub(super) fn len(&self) -> usize {
        self.ring.len()
    }

    pub(super) fn clear(&mut self) {
        self.ring.clear();
        self.sorted.clear();
    }

    /// Values in ascending order.
    pub(super) fn sorted(&self) -> &[f64] {
        &self.sorted
    }

    /// Values oldest first.
    #[cfg(test)]
    pub(super) fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.ring.iter().copied()
    }

    /// The median (NaN when empty).
    pub(super) fn median(&self) -> f64 {
        let s = &self.sorted;
        let n = s.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => s[n / 2],
            // halves first: the sum of two values near f64::MAX overflows
            _ => 0.5 * s[n / 2 - 1] + 0.5 * s[n / 2],
        }
    }

    /// The median absolute deviation from `center`, by merging the deviations on either
    /// side of it (both already in order) up to the middle: O(n), no allocation.
    pub(super) fn mad(&self, center: f64) -> f64 {
        let s = &self.sorted;
        let n = s.len();
        if n == 0 {
            return f64::NAN;
        }
        let split = s.partition_point(|x| *x < center);
        let (mut l, mut r) = (split, split);
        let mut next = || -> f64 {
            let left = (l > 0).then(|| center - s[l - 1]);
            let right = (r < n).then(|| s[r] - center);
            match (left, right) {
                (Some(a), Some(b)) if a <= b => {
                    l -= 1;
                    a
                }
                (Some(a), None) => {
                    l -= 1;
                    a
                }
                (_, Some(b)) => {
                    r += 1;
                    b
                }
                (None, None) => 0.0,
            }
        };
        let mut prev = 0.0;
        for _ in 0..n / 2 {
            prev = next();
        }
        let mid = next();
        if n % 2 == 1 {
            mid
        } else {
            0.5 * (prev + mid)
        }
    }
}

/// Robust center and spread of a feature: median and 1.4826 · MAD, the spread floored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Baseline {
    pub center: f64,
    pub spread: f64,
}

impl Baseline {
    /// Of a window, with the spread at least `floor`, and at least half the mean
    /// absolute deviation's estimate of σ (a series that is mostly one value, such as a
    /// count that is mostly 0, has MAD 0 but still varies).
    pub(super) fn of(w: &Window, floor: f64) -> Option<Baseline> {
        if w.len() == 0 {
            return None;
        }
        let center = w.median();
        let mean_ad = w.sorted().iter().map(|v| (v - center).abs()).sum::<f64>() / w.len() as f64;
        let spread = (MAD_TO_SIGMA * w.mad(center))
            .max(0.5 * MEAN_AD_TO_SIGMA * mean_ad)
            .max(floor);
        Some(Baseline { center, spread }).filter(|b| b.center.is_finite() && b.spread > 0.0)
    }

    /// Signed robust deviations of `x`, finite (bounded by ±1e12).
    pub(super) fn deviations(&self, x: f64) -> f64 {
        let z = (x - self.center) / self.spread;
        // inf / inf: a spread beyond f64 explains any value
        if z.is_nan() {
            return 0.0;
        }
        z.clamp(-1e12, 1e12)
    }
}

/// Hours in a day: the buckets of the seasonal profile.
pub(super) const HOURS: usize = 24;
const NS_PER_HOUR: i64 = 3_600_000_000_000;
/// Values per bucket of the seasonal profile.
const SEASONAL_CAP: usize = 64;
/// Values a bucket receives per day (a stride thins faster series), so a bucket spans
/// about four days.
const SEASONAL_PER_DAY: i64 = 16;

/// Values an hour of the profile needs before it can call a value usual.
const SEASONAL_TYPICAL_MIN: usize = 24;

/// The hour of the (UTC) day of an event time.
pub(super) fn hour_of_day(at_ns: i64) -> usize {
    at_ns.div_euclid(NS_PER_HOUR).rem_euclid(HOURS as i64) as usize
}

/// A daily profile: per hour of the day, a window of recent values of that hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Seasonal {
    buckets: Vec<Window>,
    seen: Vec<u32>,
}

impl Seasonal {
    pub(super) fn new() -> Self {
        Self {
            buckets: vec![Window::new(SEASONAL_CAP); HOURS],
            seen: vec![0; HOURS],
        }
    }

    /// Adds a value at an event time; with samples `interval_ns` apart only every
    /// stride-th value of an hour is kept.
    pub(super) fn push(&mut self, at_ns: i64, interval_ns: i64, v: f64) {
        let h = hour_of_day(at_ns);
        let per_hour = NS_PER_HOUR / interval_ns.max(1);
        let stride = (per_hour / SEASONAL_PER_DAY).max(1) as u32;
        self.seen[h] = self.seen[h].wrapping_add(1);
        if self.seen[h].is_multiple_of(stride) {
            self.buckets[h].push(v);
        }
    }

    /// The profile's baseline for the hour of `at_ns` (enough values in its bucket).
    pub(super) fn baseline(&self, at_ns: i64, floor: f64) -> Option<Baseline> {
        let w = &self.buckets[hour_of_day(at_ns)];
        if w.len() < 6 {
            return None;
        }
        Baseline::of(w, floor)
    }

    /// How usual `x` is for the hour of `at_ns`: the share `(1 + k) / (n + 1)` of the
    /// hour's `n` values at least as far from their median as `x`, with `k` that count.
    /// None before the hour has `SEASONAL_TYPICAL_MIN` values.
    pub(super) fn usual(&self, at_ns: i64, x: f64) -> Option<(f64, usize)> {
        let w = &self.buckets[hour_of_day(at_ns)];
        if w.len() < SEASONAL_TYPICAL_MIN {
            return None;
        }
        let c = w.median();
        let d = (x - c).abs();
        let k = w.sorted().iter().filter(|v| (*v - c).abs() >= d).count();
        Some(((1 + k) as f64 / (w.len() + 1) as f64, k))
    }
}

/// ln of the tail probability of `a` among `sorted` (ascending) values: the rank
/// `(1 + #{v ≥ a}) / (n + 1)` up to the top decile; beyond it a generalized Pareto tail
/// fitted to the top decile's excesses by the method of moments (shape ξ in [0, 0.45]:
/// exponential for light tails, polynomial for heavy ones, so a series whose extremes
/// recur is not extrapolated as if they never happened; scale at least `beta_floor`).
/// `None` with fewer than 20 values.
pub(super) fn ln_tail_p(sorted: &[f64], a: f64, beta_floor: f64) -> Option<f64> {
    let n = sorted.len();
    if n < MIN_TAIL_VALUES || !a.is_finite() {
        return None;
    }
    let k = ((TAIL_SHARE * n as f64).ceil() as usize).clamp(5, n);
    let u = sorted[n - k];
    let nf = (n + 1) as f64;
    if a <= u {
        let ge = n - sorted.partition_point(|x| *x < a);
        return Some(((1 + ge) as f64 / nf).ln().min(0.0));
    }
    let (xi, sigma) = gpd_fit(&sorted[n - k..], u, beta_floor);
    let y = a - u;
    let ln_survival = if xi < 1e-6 {
        -y / sigma
    } else {
        -(xi * y / sigma).ln_1p() / xi
    };
    Some(((k as f64 / nf).ln() + ln_survival).min(0.0))
}

/// Method-of-moments generalized Pareto fit of the excesses over `u` of `top`:
/// ξ = ½ (1 − m²/s²), σ = ½ m (1 + m²/s²), ξ clamped to [0, 0.45] (σ refitted as
/// m (1 − ξ)), σ at least `sigma_floor`.
fn gpd_fit(top: &[f64], u: f64, sigma_floor: f64) -> (f64, f64) {
    let k = top.len() as f64;
    let mean = top.iter().map(|v| v - u).sum::<f64>() / k;
    let var = top
        .iter()
        .map(|v| (v - u - mean) * (v - u - mean))
        .sum::<f64>()
        / (k - 1.0).max(1.0);
    if !(mean > 0.0 && var > 0.0 && mean.is_finite() && var.is_finite()) {
        return (0.0, mean.max(sigma_floor));
    }
    let xi = (0.5 * (1.0 - mean * mean / var)).clamp(0.0, 0.45);
    (xi, (mean * (1.0 - xi)).max(sigma_floor))
}

/// ln of the two-sided Gaussian tail probability of `z` standard deviations,
/// `ln erfc(|z|/√2)`, accurate to a relative 1.2e-7 and finite for any finite `z`
/// (Numerical Recipes' Chebyshev fit, taken in logs).
pub(crate) fn ln_gauss_two_sided(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    (t.ln() + poly).min(0.0)
}

/// Calibrates a nonnegative deviation (|robust z|) by the recent values of the same
/// deviation: the larger of its empirical tail probability and the Gaussian one, so a
/// heavy-tailed feature needs a larger deviation to be surprising, and a feature with no
/// history (or a constant one) is judged as Gaussian.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Calibrator {
    recent: Window,
}

/// Smallest mean excess of |z| in the exponential tail (a Gaussian's is about 0.45).
const Z_BETA_FLOOR: f64 = 0.4;

impl Calibrator {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            recent: Window::new(cap),
        }
    }

    /// ln of the tail probability of |z|.
    pub(super) fn ln_p(&self, z: f64) -> f64 {
        let a = z.abs();
        let gauss = ln_gauss_two_sided(a);
        match ln_tail_p(self.recent.sorted(), a, Z_BETA_FLOOR) {
            Some(emp) => emp.max(gauss),
            None => gauss,
        }
    }

    /// Records the |z| of a sample (flagged ones too).
    pub(super) fn push(&mut self, z: f64) {
        if z.is_finite() {
            self.recent.push(z.abs());
        }
    }
}

/// An exponentially weighted mean (of absolute residuals), NaN-free.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub(super) struct Ewm {
    pub mean: f64,
    pub n: u32,
}

impl Ewm {
    pub(super) fn push(&mut self, v: f64, alpha: f64) {
        if !v.is_finite() {
            return;
        }
        self.n = self.n.saturating_add(1);
        let a = alpha.max(1.0 / f64::from(self.n));
        self.mean += a * (v - self.mean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(values: &[f64]) -> Window {
        let mut w = Window::new(values.len().max(1));
        for v in values {
            w.push(*v);
        }
        w
    }

    fn naive_mad(values: &[f64]) -> f64 {
        let mut s = values.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let med = if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        };
        let mut d: Vec<f64> = s.iter().map(|v| (v - med).abs()).collect();
        d.sort_by(f64::total_cmp);
        if n % 2 == 1 {
            d[n / 2]
        } else {
            0.5 * (d[n / 2 - 1] + d[n / 2])
        }
    }

    #[test]
    fn median_and_mad_match_a_naive_computation() {
        for values in [
            vec![1.0],
            vec![1.0, 2.0],
            vec![5.0, 1.0, 9.0, 2.0, 2.0],
            vec![3.0, 3.0, 3.0, 3.0],
            vec![-4.0, 10.0, 0.5, 7.0, 7.0, 1.0, -2.0, 100.0],
        ] {
            let w = window(&values);
            let med = w.median();
            assert!(
                (w.mad(med) - naive_mad(&values)).abs() < 1e-12,
                "{values:?}"
            );
        }
    }

    #[test]
    fn window_drops_the_oldest_value() {
        let mut w = Window::new(3);
        for v in [10.0, 1.0, 2.0, 3.0] {
            w.push(v);
        }
        assert_eq!(w.sorted(), &[1.0, 2.0, 3.0]);
        assert_eq!(w.values().collect::<Vec<_>>(), vec![1.0, 2.0, 3.0]);
        let back: Window = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn a_value_seen_at_this_hour_on_earlier_days_is_usual() {
        const DAY: i64 = 86_400_000_000_000;
        const FIVE_MIN: i64 = 300_000_000_000;
        let mut s = Seasonal::new();
        // five days of 1.0 every five minutes, with a nightly 100.0 at 03:00
        for day in 0..5 {
            for k in 0..288 {
                s.push(
                    day * DAY + k * FIVE_MIN,
                    FIVE_MIN,
                    if k == 36 { 100.0 } else { 1.0 },
                );
            }
        }
        let three_am = 5 * DAY + 36 * FIVE_MIN;
        let (p, k) = s.usual(three_am, 100.0).unwrap();
        assert_eq!(k, 5, "once a night");
        assert!(p > 0.05, "{p}");
        assert_eq!(s.usual(three_am, 1000.0).unwrap().1, 0, "never that high");
        assert_eq!(
            s.usual(three_am + 6 * NS_PER_HOUR, 100.0).unwrap().1,
            0,
            "never at 09:00"
        );
        assert!(
            Seasonal::new().usual(three_am, 1.0).is_none(),
            "no history, no opinion"
        );
    }

    #[test]
    fn constant_window_has_the_floor_as_spread() {
        let w = window(&[7.0; 10]);
        let b = Baseline::of(&w, 0.5).unwrap();
        assert_eq!((b.center, b.spread), (7.0, 0.5));
        assert_eq!(b.deviations(8.0), 2.0);
    }

    #[test]
    fn gaussian_tail_is_close_to_known_values() {
        // two-sided tails of 1, 2 and 3 sigma, and a far one that must not underflow
        for (z, p) in [
            (1.0, 0.317_310_5),
            (2.0, 0.045_500_26),
            (3.0, 0.002_699_796),
        ] {
            assert!((ln_gauss_two_sided(z).exp() - p).abs() / p < 1e-6);
        }
        let far = ln_gauss_two_sided(1e6);
        assert!(far.is_finite() && far < -1e11);
        assert_eq!(ln_gauss_two_sided(0.0), 0.0);
    }

    #[test]
    fn tail_probability_decreases_beyond_the_largest_value() {
        let sorted: Vec<f64> = (0..100).map(f64::from).collect();
        let inside = ln_tail_p(&sorted, 50.0, 0.1).unwrap();
        assert!((inside.exp() - 51.0 / 101.0).abs() < 1e-12);
        let edge = ln_tail_p(&sorted, 99.0, 0.1).unwrap();
        let beyond = ln_tail_p(&sorted, 150.0, 0.1).unwrap();
        assert!(beyond < edge && beyond.is_finite());
        assert!(ln_tail_p(&sorted[..10], 5.0, 0.1).is_none());
    }
}
