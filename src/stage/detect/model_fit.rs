//! Training: standard scaling of a subject's accepted history, then each requested linfa
//! model fitted and kept as its parameters with the sorted scores of its training data.

use std::panic::{catch_unwind, AssertUnwindSafe};

use linfa::prelude::*;
use linfa::DatasetBase;
use linfa_clustering::{GaussianMixtureModel, KMeans};
use linfa_preprocessing::linear_scaling::LinearScaler;
use linfa_svm::Svm;
use ndarray::{Array2, ArrayView1};

use super::model::{Component, Fitted, ModelKind, ModelSet, Part, MAX_CLUSTERS};

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
            // scoring searches the stored vectors, which need at least one dimension
            (x.ncols() > 0).then(|| Fitted::Knn {
                points: x.iter().copied().collect(),
                k: KNN_K.min(n.saturating_sub(1)).max(1),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::detect::model::sq_dist;

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
}
