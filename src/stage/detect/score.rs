//! Evidence into a score: the harmonic mean p-value of the tail probabilities, the
//! short-term shift the last deviations agree on, and the map from a combined tail
//! probability to a score in [0, 1] (and back to robust deviations).

use super::robust::ln_gauss_two_sided;

/// Samples whose common shift is the short-term evidence (a shift that lasts is seen
/// even where single-sample deviations of its size are common).
pub(super) const SHORT: usize = 3;

/// ln of the harmonic mean p-value `m / Σ 1/pᵢ` of m tail probabilities (given as ln pᵢ;
/// 0 for none; NaN ones count as tests without evidence). Like Bonferroni's `m · min pᵢ`
/// it is robust to dependence between the tests (Wilson 2019), and never above it: about
/// equal when one test alone is surprised, up to m times smaller when several agree (an
/// anomaly that the baseline, the short-term shift and the models all see is stronger
/// evidence than one of them alone). Computed in logs, so no pᵢ underflows.
pub(super) fn ln_harmonic_mean_p(ln_ps: &[f64]) -> f64 {
    let surprises = || ln_ps.iter().filter(|l| !l.is_nan()).map(|l| -l);
    let top = surprises().fold(f64::NEG_INFINITY, f64::max);
    if top == f64::INFINITY {
        // p = 0: a surprise without bound
        return f64::NEG_INFINITY;
    }
    if top == f64::NEG_INFINITY {
        return 0.0;
    }
    let lse = top + surprises().map(|a| (a - top).exp()).sum::<f64>().ln();
    ((ln_ps.len() as f64).ln() - lse).min(0.0)
}

/// The shift the last `SHORT` deviations (`z` and the earlier ones) agree on: the one
/// nearest 0 when all have the same sign, else 0; None unless all are finite. Large only
/// while every one of them, this sample's included, is.
pub(super) fn short_shift(z: f64, earlier: impl Iterator<Item = f64>) -> Option<f64> {
    let mut shift = z;
    let mut n = 1;
    for e in earlier {
        if !e.is_finite() {
            return None;
        }
        shift = if e.signum() != shift.signum() {
            0.0
        } else if e.abs() < shift.abs() {
            e
        } else {
            shift
        };
        n += 1;
    }
    (n == SHORT).then_some(shift)
}

pub(super) fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else if v > 0.0 {
        f64::MAX
    } else {
        f64::MIN
    }
}

/// The score of a combined tail probability p (given as ln p ≤ 0): with L = −log10 p
/// (the surprise in decades), `L² / (L² + 4)`. 0.5 means p = 10⁻², 0.8 means 10⁻⁴, 0.9
/// means 10⁻⁶, 0.99 means about 10⁻²⁰; always in [0, 1], strictly increasing in L (no
/// saturation, so the most extreme samples still rank).
pub(crate) fn score_of_ln_p(ln_p: f64) -> f64 {
    if ln_p.is_nan() {
        return 0.0;
    }
    let l = -ln_p.min(0.0) / std::f64::consts::LN_10;
    let l2 = l * l;
    if !l2.is_finite() {
        return 1.0;
    }
    (l2 / (l2 + 4.0)).clamp(0.0, 1.0)
}

/// The robust deviations whose two-sided Gaussian tail probability is p (ln p given).
pub(super) fn z_of_ln_p(ln_p: f64) -> f64 {
    // NaN too
    if ln_p.is_nan() || ln_p >= 0.0 {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while ln_gauss_two_sided(hi) > ln_p && hi < 1e12 {
        hi *= 2.0;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if ln_gauss_two_sided(mid) > ln_p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::ln_harmonic_mean_p;

    #[test]
    fn harmonic_mean_p_is_never_above_bonferroni_and_rewards_agreement() {
        let ln = |ps: &[f64]| ps.iter().map(|p: &f64| p.ln()).collect::<Vec<_>>();
        assert_eq!(ln_harmonic_mean_p(&[]), 0.0);
        assert_eq!(ln_harmonic_mean_p(&ln(&[1.0, 1.0, 1.0])), 0.0);
        // one surprised test of five: about Bonferroni's 5 · 1e-6
        let one = ln_harmonic_mean_p(&ln(&[1e-6, 0.5, 0.5, 0.5, 0.5])).exp();
        assert!(one <= 5e-6 && one > 4.9e-6, "{one}");
        // all five agree: 1e-6, five times less than Bonferroni
        let all = ln_harmonic_mean_p(&ln(&[1e-6; 5])).exp();
        assert!((all - 1e-6).abs() < 1e-12, "{all}");
        // no underflow for extreme evidence, p = 0 stays 0, NaN is no evidence
        assert!((ln_harmonic_mean_p(&[-2000.0, -2000.0]) + 2000.0).abs() < 1e-9);
        assert_eq!(
            ln_harmonic_mean_p(&[f64::NEG_INFINITY, -1.0]),
            f64::NEG_INFINITY
        );
        assert_eq!(ln_harmonic_mean_p(&[f64::NAN]), 0.0);
        assert!(ln_harmonic_mean_p(&[f64::NAN, -10.0]).is_finite());
    }
}
