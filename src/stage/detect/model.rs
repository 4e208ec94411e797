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
//! - kNN: mean distance to the k nearest training vectors (linfa-nn; on the training data
//!   leave-one-out, so a training vector is not its own neighbour).

use std::panic::{catch_unwind, AssertUnwindSafe};

use linfa::prelude::*;
use linfa::DatasetBase;
use linfa_clustering::{GaussianMixtureModel, KMeans};
use linfa_nn::distance::L2Dist;
use linfa_nn::{
    CommonNearestNeighbour, LinearSearchIndex, NearestNeighbour, NearestNeighbourIndex,
};
use linfa_preprocessing::linear_scaling::LinearScaler;
use linfa_svm::Svm;
use ndarray::{Array2, ArrayView1, ArrayView2};
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
const MAX_CLUSTERS: usize = 4;
/// Fewest training vectors.
pub(super) const MIN_TRAIN_ROWS: usize = 100;
/// Training vectors per cluster or mixture component, at least.
const ROWS_PER_CLUSTER: usize = 50;
/// Neighbours of the kNN score.
const KNN_K: usize = 5;
/// Training vectors the one-class SVM sees at most (its kernel matrix is dense).
const SVM_MAX_ROWS: usize = 400;
/// The SVM's ν: the share of training vectors allowed outside its boundary.
const SVM_NU: f64 = 0.05;
/// Sorted training scores kept per model for tail probabilities.
const TAIL_VALUES: usize = 256;

/// Fitted models over standard-scaled vectors of `dim` features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ModelSet {
    pub dim: usize,
    offsets: Vec<f64>,
    /// Multipliers (1 / standard deviation, the deviation at least the feature's floor).
    scales: Vec<f64>,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Part {
    fitted: Fitted,
    /// Sorted scores of the training vectors (at most `TAIL_VALUES`, evenly by rank).
    tail: Vec<f64>,
    beta_floor: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Fitted {
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
struct Component {
    ln_weight: f64,
    mean: Vec<f64>,
    /// Lower Cholesky factor of the covariance, row-major.
    chol: Vec<f64>,
    /// −½ (d ln 2π + ln |Σ|).
    ln_norm: f64,
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
    fn score(&self, x: &[f64], skip: Option<usize>) -> f64 {
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
                let n = points.len() / d.max(1);
                let Ok(view) = ArrayView2::from_shape((n, d), points) else {
                    return 0.0;
                };
                let Ok(index) = LinearSearchIndex::new(&view, L2Dist) else {
                    return 0.0;
                };
                let want = (*k + usize::from(skip.is_some())).min(n);
                let Ok(found) = index.k_nearest(ArrayView1::from(x), want) else {
                    return 0.0;
                };
                let dists: Vec<f64> = found
                    .iter()
                    .filter(|(_, i)| Some(*i) != skip)
                    .take(*k)
                    .map(|(p, _)| sq_dist(p.as_slice().unwrap_or(&[]), x).sqrt())
                    .collect();
                dists.iter().sum::<f64>() / dists.len().max(1) as f64
            }
        }
    }
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
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

/// Lower Cholesky factor of a symmetric d×d matrix (row-major); None unless positive
/// definite with finite entries.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= l[i * d + k] * l[j * d + k];
            }
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return None;
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    l.iter().all(|v| v.is_finite()).then_some(l)
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

/// Trains the requested models on `rows` (n × dim, row-major); None when too few rows or
/// no model could be fitted. `floors` are the smallest standard deviations per feature.
pub(super) fn train(
    rows: &[f64],
    dim: usize,
    floors: &[f64],
    kinds: &[ModelKind],
) -> Option<ModelSet> {
    if dim == 0 || rows.len() < dim * MIN_TRAIN_ROWS || rows.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let n = rows.len() / dim;
    let raw = Array2::from_shape_vec((n, dim), rows[..n * dim].to_vec()).ok()?;
    // columns brought to at most 1 in magnitude by a power of two first (exact), so the
    // scaler's sums cannot overflow on values near f64::MAX
    let shrink: Vec<f64> = (0..dim)
        .map(|j| {
            let max = raw.column(j).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            if max > 1e100 {
                2f64.powi(-(max.log2().ceil() as i32))
            } else {
                1.0
            }
        })
        .collect();
    let shrunk = Array2::from_shape_fn((n, dim), |(i, j)| raw[(i, j)] * shrink[j]);
    let scaler = LinearScaler::standard()
        .fit(&DatasetBase::from(shrunk))
        .ok()?;
    // (v·f − o)·s = (v − o/f)·(s·f)
    let offsets: Vec<f64> = scaler
        .offsets()
        .iter()
        .zip(&shrink)
        .map(|(o, f)| o / f)
        .collect();
    let scales: Vec<f64> = scaler
        .scales()
        .iter()
        .zip(&shrink)
        .zip(floors.iter().chain(std::iter::repeat(&1e-9)))
        .map(|((s, f), floor)| (s * f).min(1.0 / floor.max(1e-12)))
        .collect();
    if offsets.iter().chain(&scales).any(|v| !v.is_finite()) {
        return None;
    }
    let scaled = Array2::from_shape_fn((n, dim), |(i, j)| {
        ((raw[(i, j)] - offsets[j]) * scales[j]).clamp(-1e6, 1e6)
    });
    let distinct = count_distinct_rows(&scaled, MAX_CLUSTERS);
    let mut parts = Vec::new();
    for kind in kinds {
        // a panic inside linfa on degenerate data drops that model, not the job
        let fitted = catch_unwind(AssertUnwindSafe(|| {
            let fitted = fit(*kind, &scaled, distinct)?;
            let scores: Vec<f64> = (0..n)
                .map(|i| {
                    let row = scaled.row(i);
                    fitted.score(row.as_slice().unwrap_or(&[]), Some(i))
                })
                .collect();
            Some((fitted, scores))
        }))
        .ok()
        .flatten();
        if let Some((fitted, mut scores)) = fitted {
            if scores.iter().any(|s| !s.is_finite()) {
                continue;
            }
            scores.sort_by(f64::total_cmp);
            let beta_floor = match kind {
                ModelKind::Kmeans | ModelKind::Knn => 0.25,
                ModelKind::Gmm => 0.5,
                ModelKind::Ocsvm => 0.02,
            };
            parts.push(Part {
                fitted,
                tail: thin_sorted(&scores, TAIL_VALUES),
                beta_floor,
            });
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(ModelSet {
        dim,
        offsets,
        scales,
        parts,
    })
}

fn count_distinct_rows(x: &Array2<f64>, enough: usize) -> usize {
    let mut seen: Vec<ArrayView1<f64>> = Vec::new();
    for row in x.rows() {
        if !seen.contains(&row) {
            seen.push(row);
            if seen.len() >= enough {
                break;
            }
        }
    }
    seen.len()
}

/// At most `max` values of a sorted slice, evenly by rank, always keeping the largest.
fn thin_sorted(sorted: &[f64], max: usize) -> Vec<f64> {
    let n = sorted.len();
    if n <= max {
        return sorted.to_vec();
    }
    (0..max)
        .map(|i| sorted[(i * (n - 1)) / (max - 1)])
        .collect()
}

fn fit(kind: ModelKind, x: &Array2<f64>, distinct: usize) -> Option<Fitted> {
    let (n, d) = x.dim();
    let clusters = MAX_CLUSTERS.min(distinct).min(n / ROWS_PER_CLUSTER).max(1);
    let data = DatasetBase::from(x.clone());
    match kind {
        ModelKind::Kmeans => {
            let m = KMeans::params(clusters)
                .max_n_iterations(100)
                .tolerance(1e-4)
                .fit(&data)
                .ok()?;
            let centroids = m.centroids().iter().copied().collect::<Vec<_>>();
            centroids
                .iter()
                .all(|v| v.is_finite())
                .then_some(Fitted::Kmeans { centroids })
        }
        ModelKind::Gmm => {
            let m = GaussianMixtureModel::params(clusters)
                .n_runs(1)
                .max_n_iterations(200)
                .tolerance(1e-4)
                .reg_covariance(1e-3)
                .fit(&data)
                .ok()?;
            let mut components = Vec::new();
            for c in 0..m.weights().len() {
                let w = m.weights()[c];
                let mean: Vec<f64> = m.means().row(c).to_vec();
                let cov: Vec<f64> = m
                    .covariances()
                    .index_axis(ndarray::Axis(0), c)
                    .iter()
                    .copied()
                    .collect();
                if !(w > 0.0 && w.is_finite()) || mean.iter().any(|v| !v.is_finite()) {
                    return None;
                }
                let chol = cholesky(&cov, d)?;
                let ln_det: f64 = (0..d).map(|i| 2.0 * chol[i * d + i].ln()).sum();
                let ln_norm = -0.5 * (d as f64 * (2.0 * std::f64::consts::PI).ln() + ln_det);
                components.push(Component {
                    ln_weight: w.ln(),
                    mean,
                    chol,
                    ln_norm,
                });
            }
            (!components.is_empty() && components.len() <= MAX_CLUSTERS)
                .then_some(Fitted::Gmm { components })
        }
        ModelKind::Ocsvm => {
            let step = n.div_ceil(SVM_MAX_ROWS);
            let rows: Vec<usize> = (0..n).rev().step_by(step).collect();
            let sub = x.select(ndarray::Axis(0), &rows);
            let width = d as f64;
            let m = Svm::params()
                .nu_weight(SVM_NU)
                .gaussian_kernel(width)
                .fit(&DatasetBase::from(sub.clone()))
                .ok()?;
            // the support vectors are the rows with a non-zero α, in row order (as in
            // linfa-svm's solver), so their weighted sum matches `Svm::weighted_sum`
            let threshold = 100.0 * f64::EPSILON;
            let mut support = Vec::new();
            let mut alpha = Vec::new();
            for (i, a) in m.alpha.iter().enumerate() {
                if a.abs() > threshold {
                    support.extend(sub.row(i).iter().copied());
                    alpha.push(*a);
                }
            }
            (!alpha.is_empty() && m.rho.is_finite()).then_some(Fitted::Ocsvm {
                support,
                alpha,
                rho: m.rho,
                width,
            })
        }
        ModelKind::Knn => {
            // linfa-nn checks the index builds; scoring searches the stored vectors
            CommonNearestNeighbour::LinearSearch
                .from_batch(x, L2Dist)
                .ok()?;
            Some(Fitted::Knn {
                points: x.iter().copied().collect(),
                k: KNN_K.min(n.saturating_sub(1)).max(1),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: usize, seed: u64) -> Vec<f64> {
        // a deterministic cloud around (10, 100) with unit-ish spread
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        (0..n)
            .flat_map(|_| [10.0 + 2.0 * next(), 100.0 + 20.0 * next()])
            .collect()
    }

    #[test]
    fn every_model_ranks_an_outlier_below_a_typical_vector() {
        let rows = blob(300, 7);
        let set = train(&rows, 2, &[1e-3, 1e-3], &ModelKind::ALL).expect("trained");
        assert_eq!(set.name(), "mad+kmeans+gmm+ocsvm+knn");
        let (mut scaled, mut ps) = (Vec::new(), Vec::new());
        set.scale(&[10.0, 100.0], &mut scaled);
        set.score(&scaled, &mut ps);
        let typical = ps.clone();
        set.scale(&[30.0, 400.0], &mut scaled);
        set.score(&scaled, &mut ps);
        for (i, (t, o)) in typical.iter().zip(&ps).enumerate() {
            assert!(
                o.1 < t.1 && o.1 < (0.01f64).ln(),
                "model {i}: typical {t:?}, outlier {o:?}"
            );
        }
    }

    #[test]
    fn svm_weighted_sum_matches_linfa() {
        let rows = blob(120, 3);
        let x = Array2::from_shape_vec((120, 2), rows).unwrap();
        let svm = Svm::params()
            .nu_weight(SVM_NU)
            .gaussian_kernel(2.0)
            .fit(&DatasetBase::from(x.clone()))
            .unwrap();
        let Some(Fitted::Ocsvm {
            support,
            alpha,
            rho,
            width,
        }) = fit(ModelKind::Ocsvm, &x, 4)
        else {
            panic!("svm fitted");
        };
        let p = [10.5, 90.0];
        let ours: f64 = support
            .chunks_exact(2)
            .zip(&alpha)
            .map(|(sv, a)| a * (-sq_dist(sv, &p) / width).exp())
            .sum();
        let theirs = svm.weighted_sum(&ArrayView1::from(&p[..]));
        // linfa sums the kernel in another order: equal to float rounding
        assert!(
            (ours - theirs).abs() <= 1e-6 * theirs.abs().max(1.0),
            "{ours} vs {theirs}"
        );
        assert!(
            (rho - svm.rho).abs() <= 1e-6 * svm.rho.abs().max(1.0),
            "{rho} vs {}",
            svm.rho
        );
    }

    #[test]
    fn constant_data_trains_without_nan() {
        let rows = vec![5.0; 200];
        let set = train(&rows, 2, &[0.1, 0.1], &ModelKind::ALL).expect("some model fits");
        let (mut scaled, mut ps) = (Vec::new(), Vec::new());
        for v in [[5.0, 5.0], [6.0, 5.0], [1e300, -1e300]] {
            set.scale(&v, &mut scaled);
            set.score(&scaled, &mut ps);
            assert!(
                ps.iter()
                    .all(|p| p.0.is_finite() && p.1.is_finite() && p.1 <= 0.0),
                "{ps:?}"
            );
        }
    }

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
