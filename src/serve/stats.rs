//! The statistics behind `compare` and `trend`: significance tests and a least-squares
//! line. Pure functions over numbers, no I/O.
//!
//! Every test is two-sided and returns a p-value; a change is significant when the
//! p-value is below [`ALPHA`].

/// The significance level of every test.
pub const ALPHA: f64 = 0.05;

/// The complementary error function, with a fractional error below 1.2e-7 everywhere
/// (the Chebyshev fit of Numerical Recipes' `erfcc`).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ans = t * poly.exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// The two-sided p-value of a standard normal statistic `z`: P(|Z| >= |z|).
pub fn two_sided_p(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

/// The outcome of a test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// The standard normal statistic (positive when the second sample is larger).
    pub z: f64,
    pub p_value: f64,
}

impl TestResult {
    /// The p-value is below [`ALPHA`].
    pub fn significant(&self) -> bool {
        self.p_value < ALPHA
    }
}

/// Two-proportion z-test with pooled variance: `x1` successes of `n1` against `x2` of
/// `n2` (counts may be fractional, e.g. scaled for overlapping windows). `None` when a
/// sample is empty or the pooled proportion is 0 or 1 (no variance to test against).
pub fn two_proportion_z(x1: f64, n1: f64, x2: f64, n2: f64) -> Option<TestResult> {
    if n1 <= 0.0 || n2 <= 0.0 {
        return None;
    }
    let pooled = (x1 + x2) / (n1 + n2);
    let var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2);
    if var <= 0.0 || !var.is_finite() {
        return None;
    }
    let z = (x2 / n2 - x1 / n1) / var.sqrt();
    Some(TestResult {
        z,
        p_value: two_sided_p(z),
    })
}

/// Poisson rate test: `c1` events over exposure `t1` against `c2` over `t2`. Given the
/// total `n = c1 + c2`, `c2` is binomial with `p = t2 / (t1 + t2)` when the rates are
/// equal; the test uses its normal approximation with continuity correction. `None`
/// without events or without exposure.
pub fn poisson_rate_test(c1: f64, t1: f64, c2: f64, t2: f64) -> Option<TestResult> {
    if t1 <= 0.0 || t2 <= 0.0 {
        return None;
    }
    let n = c1 + c2;
    if n <= 0.0 {
        return None;
    }
    let p = t2 / (t1 + t2);
    let sd = (n * p * (1.0 - p)).sqrt();
    let diff = c2 - n * p;
    let corrected = (diff.abs() - 0.5).max(0.0);
    let z = corrected.copysign(diff) / sd;
    Some(TestResult {
        z,
        p_value: two_sided_p(z),
    })
}

/// Mann–Whitney U test of `b` against `a` (is one sample's distribution shifted?), with
/// average ranks for ties, the tie-corrected variance and a continuity correction (as
/// SciPy's `mannwhitneyu(method="asymptotic")`). `z` is positive when `b` tends to be
/// larger. `None` when a sample is empty or all values are equal. NaN values are left
/// out.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<TestResult> {
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&v| (v, false))
        .chain(b.iter().map(|&v| (v, true)))
        .filter(|(v, _)| !v.is_nan())
        .collect();
    let n1 = all.iter().filter(|(_, in_b)| !in_b).count() as f64;
    let n2 = all.len() as f64 - n1;
    if n1 == 0.0 || n2 == 0.0 {
        return None;
    }
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let (mut rank_sum_b, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // ranks i+1 ..= j+1 share their average
        let avg = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        rank_sum_b += avg * all[i..=j].iter().filter(|(_, in_b)| *in_b).count() as f64;
        i = j + 1;
    }
    let nf = n as f64;
    let u_b = rank_sum_b - n2 * (n2 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return None;
    }
    let diff = u_b - mean;
    let z = (diff.abs() - 0.5).max(0.0).copysign(diff) / var.sqrt();
    Some(TestResult {
        z,
        p_value: two_sided_p(z),
    })
}

/// A least-squares line `y = intercept + slope * (x - x0)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    /// The x the intercept is given at (the first point's x, so that large x such as
    /// unix times lose no precision).
    pub x0: f64,
    pub intercept: f64,
    pub slope: f64,
    /// Share of the variance of y the line explains; `None` when y is constant.
    pub r2: Option<f64>,
    pub points: usize,
}

impl Line {
    /// The line's y at `x`.
    pub fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * (x - self.x0)
    }

    /// The x at which the line reaches `bound`; `None` when it is flat.
    pub fn crossing(&self, bound: f64) -> Option<f64> {
        if self.slope == 0.0 || !self.slope.is_finite() {
            return None;
        }
        Some(self.x0 + (bound - self.intercept) / self.slope)
    }
}

/// Fits a least-squares line to the points (NaN and infinite values left out). `None`
/// with fewer than two points or when every x is the same.
pub fn fit_line(points: &[(f64, f64)]) -> Option<Line> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let x0 = pts[0].0;
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0 - x0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in &pts {
        let (dx, dy) = (x - x0 - mx, y - my);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = (syy > 0.0).then(|| (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0));
    Some(Line {
        x0,
        intercept: my - slope * mx,
        slope,
        r2,
        points: pts.len(),
    })
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
