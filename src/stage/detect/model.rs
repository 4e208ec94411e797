//! The linfa models: trained on standard-scaled feature vectors, kept as their fitted
//! parameters (plain data: serialisable, scored without linfa's per-call allocations),
//! each with the sorted scores of its own training data to turn a new score into a tail
//! probability.
//!
//! - k-means: distance to the nearest centroid.
//! - GMM: negative log density of the mixture, computed from the fitted weights, means and
//!   covariances (Cholesky factors; log-sum-exp over components). `predict_proba` only
//!   gives responsibilities, and EM can fail or overflow on degenerate data: a mixture
//!   that does not fit, or has a non-finite or non-positive-definite parameter, is left
//!   out of the set.
//! - one-class SVM (`nu_weight`, Gaussian kernel of width = number of features): `rho −
//!   Σ αᵢ K(svᵢ, x)` over the support vectors, normalised by `Σ αᵢ`.
//! - kNN: mean distance to the k nearest training vectors (one linear pass; on the training data
//!   leave-one-out, so a training vector is not its own neighbour).

use serde::{Deserialize, Serialize};

use super::robust::ln_tail_p;

/// A model that scores scaled feature vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Distance to the nearest k-means centroid.
    Kmeans,
    /// Negative log-likelihood under a Gaussian mixture.
    Gmm,
    /// One-class SVM decision value.
    Ocsvm,
    /// Mean distance to the nearest training vectors.
    Knn,
}

impl ModelKind {
    /// All kinds, in the order their names are joined.
    pub const ALL: [ModelKind; 4] = [
        ModelKind::Kmeans,
        ModelKind::Gmm,
        ModelKind::Ocsvm,
        ModelKind::Knn,
    ];

    /// The config and label name.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Kmeans => "kmeans",
            ModelKind::Gmm => "gmm",
            ModelKind::Ocsvm => "ocsvm",
            ModelKind::Knn => "knn",
        }
    }

    fn bit(self) -> usize {
        match self {
            ModelKind::Kmeans => 1,
            ModelKind::Gmm => 2,
            ModelKind::Ocsvm => 4,
            ModelKind::Knn => 8,
        }
    }
}

/// `AnomalyScore::model` for each subset of models (bit 1 k-means, 2 GMM, 4 SVM, 8 kNN),
/// the robust baseline always first.
const MODEL_NAMES: [&str; 16] = [
    "mad",
    "mad+kmeans",
    "mad+gmm",
    "mad+kmeans+gmm",
    "mad+ocsvm",
    "mad+kmeans+ocsvm",
    "mad+gmm+ocsvm",
    "mad+kmeans+gmm+ocsvm",
    "mad+knn",
    "mad+kmeans+knn",
    "mad+gmm+knn",
    "mad+kmeans+gmm+knn",
    "mad+ocsvm+knn",
    "mad+kmeans+ocsvm+knn",
    "mad+gmm+ocsvm+knn",
    "mad+kmeans+gmm+ocsvm+knn",
];

/// Clusters of k-means and components of the mixture, at most.
pub(super) const MAX_CLUSTERS: usize = 4;

/// Fitted models over standard-scaled vectors of `dim` features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ModelSet {
    pub dim: usize,
    pub(super) offsets: Vec<f64>,
    /// Multipliers (1 / standard deviation, the deviation at least the feature's floor).
    pub(super) scales: Vec<f64>,
    pub(super) parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Part {
    pub(super) fitted: Fitted,
    /// Sorted scores of the training vectors (at most `TAIL_VALUES`, evenly by rank).
    pub(super) tail: Vec<f64>,
    pub(super) beta_floor: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Fitted {
    Kmeans {
        centroids: Vec<f64>,
    },
    Gmm {
        components: Vec<Component>,
    },
    Ocsvm {
        support: Vec<f64>,
        alpha: Vec<f64>,
        rho: f64,
        width: f64,
    },
    Knn {
        points: Vec<f64>,
        k: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Component {
    pub(super) ln_weight: f64,
    pub(super) mean: Vec<f64>,
    /// Lower Cholesky factor of the covariance, row-major.
    pub(super) chol: Vec<f64>,
    /// −½ (d ln 2π + ln |Σ|).
    pub(super) ln_norm: f64,
}

impl Fitted {
    fn kind(&self) -> ModelKind {
        match self {
            Fitted::Kmeans { .. } => ModelKind::Kmeans,
            Fitted::Gmm { .. } => ModelKind::Gmm,
            Fitted::Ocsvm { .. } => ModelKind::Ocsvm,
            Fitted::Knn { .. } => ModelKind::Knn,
        }
    }

    /// Anomaly score of a scaled vector (larger is more unusual); `skip` leaves out one
    /// training vector (leave-one-out for kNN).
    pub(super) fn score(&self, x: &[f64], skip: Option<usize>) -> f64 {
        let d = x.len();
        match self {
            Fitted::Kmeans { centroids } => centroids
                .chunks_exact(d)
                .map(|c| sq_dist(c, x))
                .fold(f64::INFINITY, f64::min)
                .sqrt(),
            Fitted::Gmm { components } => {
                let mut terms = [0.0; MAX_CLUSTERS];
                let mut y = vec![0.0; d];
                for (t, c) in terms.iter_mut().zip(components) {
                    *t =
                        c.ln_weight + c.ln_norm - 0.5 * mahalanobis_sq(&c.chol, &c.mean, x, &mut y);
                }
                -log_sum_exp(&terms[..components.len()])
            }
            Fitted::Ocsvm {
                support,
                alpha,
                rho,
                width,
            } => {
                let total: f64 = alpha.iter().sum();
                let sum: f64 = support
                    .chunks_exact(d)
                    .zip(alpha)
                    .map(|(sv, a)| a * (-sq_dist(sv, x) / width).exp())
                    .sum();
                (rho - sum) / total.max(f64::MIN_POSITIVE)
            }
            Fitted::Knn { points, k } => {
                if d == 0 {
                    return 0.0;
                }
                // one pass keeping the k smallest squared distances, in order (no index
                // to build per scored vector: linfa-nn's linear search cost 10 % more)
                let mut nearest: Vec<f64> = Vec::with_capacity(*k + 1);
                for (i, p) in points.chunks_exact(d).enumerate() {
                    if Some(i) == skip {
                        continue;
                    }
                    let dist = sq_dist(p, x);
                    if nearest.len() == *k && nearest.last().is_none_or(|&far| dist >= far) {
                        continue;
                    }
                    let at = nearest.partition_point(|&n| n <= dist);
                    nearest.insert(at, dist);
                    nearest.truncate(*k);
                }
                nearest.iter().map(|s| s.sqrt()).sum::<f64>() / nearest.len().max(1) as f64
            }
        }
    }
}

pub(super) fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum()
}

/// (x − μ)ᵀ Σ⁻¹ (x − μ) with Σ = L Lᵀ: forward substitution L y = x − μ, then |y|².
fn mahalanobis_sq(chol: &[f64], mean: &[f64], x: &[f64], y: &mut [f64]) -> f64 {
    let d = x.len();
    for i in 0..d {
        let mut s = x[i] - mean[i];
        for j in 0..i {
            s -= chol[i * d + j] * y[j];
        }
        y[i] = s / chol[i * d + i];
    }
    y.iter().map(|v| v * v).sum()
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
}

impl ModelSet {
    /// `AnomalyScore::model` for this set.
    pub(super) fn name(&self) -> &'static str {
        let bits = self.parts.iter().fold(0, |b, p| b | p.fitted.kind().bit());
        MODEL_NAMES[bits]
    }

    /// Scales a raw vector (missing trailing features count as 0 before scaling).
    pub(super) fn scale(&self, raw: &[f64], out: &mut Vec<f64>) {
        out.clear();
        out.extend((0..self.dim).map(|i| {
            let v = raw.get(i).copied().unwrap_or(0.0);
            ((v - self.offsets[i]) * self.scales[i]).clamp(-1e6, 1e6)
        }));
    }

    /// Per model: the score of a scaled vector and ln of its tail probability among
    /// the model's training scores.
    pub(super) fn score(&self, scaled: &[f64], out: &mut Vec<(f64, f64)>) {
        out.clear();
        for p in &self.parts {
            let s = p.fitted.score(scaled, None);
            let s = if s.is_nan() {
                f64::MAX
            } else {
                s.clamp(-f64::MAX, f64::MAX)
            };
            out.push((s, ln_tail_p(&p.tail, s, p.beta_floor).unwrap_or(0.0)));
        }
    }

    /// Models in the set.
    pub(super) fn len(&self) -> usize {
        self.parts.len()
    }

    /// Smallest mean excess of each model's scores in an exponential tail.
    pub(super) fn beta_floor(&self, i: usize) -> f64 {
        self.parts.get(i).map_or(1.0, |p| p.beta_floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmm_density_matches_a_known_gaussian() {
        // one component, identity covariance: −ln N(0 | 0, I) in 2-d is ln 2π
        let c = Component {
            ln_weight: 0.0,
            mean: vec![0.0, 0.0],
            chol: vec![1.0, 0.0, 0.0, 1.0],
            ln_norm: -(2.0 * std::f64::consts::PI).ln(),
        };
        let g = Fitted::Gmm {
            components: vec![c],
        };
        assert!((g.score(&[0.0, 0.0], None) - (2.0 * std::f64::consts::PI).ln()).abs() < 1e-12);
        assert!(
            (g.score(&[1.0, 1.0], None) - (2.0 * std::f64::consts::PI).ln() - 1.0).abs() < 1e-12
        );
    }
}
