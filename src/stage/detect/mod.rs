//! The detect stage: anomaly scores for aggregate series and for traces.
//!
//! Pure and synchronous: event time comes in with the data, training is handed out as
//! data ([`TrainingJob`]) so the caller decides where it runs (inline in replay,
//! `spawn_blocking` in the runner).
//!
//! **Subjects.** One detector per aggregate series (window size, scope, key; features of
//! each closed window: latency p50/p95/p99 and throughput log-scaled, error rate), one per
//! root operation for traces (root service and operation; features: duration, span
//! count, depth, error count, each service's share of the critical path over the first
//! 16 services seen, and the structure signature, a hash of the multiset of
//! (parent service → child service, child name) links), and one per plain
//! single-valued series ([`Detector::observe_value`]).
//!
//! **Evidence.** Each feature is compared with a robust baseline: the median and
//! 1.4826·MAD of its last `baseline_windows` accepted values (the spread floored, so a
//! constant series is not infinitely surprised), or, once the subject has two days of
//! history and the profile has tracked it better, the median/MAD of the same hour of
//! the day. The signed robust deviation z is turned into a tail probability by the
//! feature's own recent |z| values, flagged samples' too (spikes that recur are usual;
//! empirical rank, a generalized Pareto tail fitted to the top decile beyond it), never
//! smaller than the Gaussian tail of z; so is the shift the last three deviations agree
//! on (a shift that lasts). After two days, a sample each of whose values was met as
//! far from the median at the same hour on earlier days is capped at that share (a
//! nightly job is not an anomaly). Once a
//! series (not a trace) has seen `baseline_windows` samples, a value beyond every earlier
//! one by more than 5 % of their range is new ground and scores at least 0.99 however its
//! baseline judges it (the "spatial anomaly" of Numenta's NAB detector; it does not by
//! itself hold the sample out of learning). Once a model is installed, each of its linfa
//! models (k-means distance to the nearest centroid, GMM negative log density from the
//! fitted parameters, one-class SVM decision value, mean distance to the 5 nearest
//! training vectors) scores the standard-scaled feature vector
//! (the transformed feature values, a missing one as the last seen) and the score is
//! turned into a tail probability among that model's scores of its own training data.
//!
//! **Score.** The harmonic mean p-value of the m tail probabilities, m / Σ 1/pᵢ (Wilson
//! 2019: robust to dependence between the tests; never above Bonferroni's m · min pᵢ,
//! about equal to it when one test alone is surprised, up to m times smaller when
//! several agree), is the combined probability p
//! (for traces, a structure never seen has probability
//! (signatures seen once + 1) / (n + 1), the Good–Turing estimate of the unseen, and
//! takes part on its own, the smaller p wins); with L = −log₁₀ p the score is L² / (L² + 4):
//! 0.5 ⇔ p = 10⁻², 0.9 ⇔ p = 10⁻⁶, 0.99 ⇔ p ≈ 10⁻¹⁹·⁹. It is in [0, 1] and never NaN. Explanations list
//! each feature's value, baseline and signed deviations, largest |deviation| first.
//!
//! **Learning.** Before `min_samples` accepted samples the score is 0 and `warm` false.
//! A sample scoring at least `anomaly_threshold` is flagged and not learnt from (but by
//! the calibrators of |z|); when `adapt_after` of the last 2·`adapt_after` samples were flagged, the change has
//! persisted: the held samples become the new baseline (old baselines, history and model
//! are dropped). Every `retrain_every` accepted samples (sooner while the history grows:
//! once the samples since the last training are half as many as those it saw), but not
//! within `retrain_min_interval` of event time of the last one (a root operation with a
//! thousand traces a second would otherwise train sixteen times a second), and as soon
//! as there are `min_samples`, a [`TrainingJob`] over the accepted history is queued; until its
//! [`TrainedModel`] is installed the previous model, or the baseline alone, scores.
//!
//! **Inputs.** Non-finite feature values are skipped (counted in
//! [`DetectStats::skipped_values`]; missing model inputs are imputed from the baseline);
//! a sample with no finite value is skipped whole and gets no score.

mod changelog;
mod config;
mod core;
mod feature_state;
mod features;
mod model;
mod model_fit;
mod robust;
mod score;
mod series;
mod snapshot;
mod snapshot_records;
mod snapshot_restore;
mod trace;
mod training;

pub(crate) use robust::ln_gauss_two_sided;
pub(crate) use score::score_of_ln_p;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_learning;
#[cfg(test)]
mod tests_prop;
#[cfg(test)]
mod tests_trace;
#[cfg(test)]
mod tests_training;

use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::model::{AnomalyScore, Subject};

pub use config::DetectConfig;
pub use model::ModelKind;
pub use snapshot::{Snapshot, SnapshotCounts, SnapshotError, SNAPSHOT_FILE, SNAPSHOT_VERSION};
pub use training::{TrainedModel, TrainingJob};

use self::core::{Core, Outcome};
use self::trace::TraceState;

/// Settings of the detectors (see [`DetectConfig`] for the user documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectSettings {
    /// Accepted samples before a subject's scores are warm.
    pub min_samples: usize,
    /// Samples the rolling baselines and the training history keep.
    pub baseline_windows: usize,
    /// Accepted samples between trainings.
    pub retrain_every: usize,
    /// Event time between trainings of one subject, at least (busy root operations).
    pub retrain_min_interval_ns: i64,
    /// Scores at or above this flag a sample: it is not learnt from.
    pub anomaly_threshold: f64,
    /// Flagged samples within twice as many that make a change the new baseline.
    pub adapt_after: usize,
    /// The linfa models trained on top of the baselines.
    pub models: Vec<ModelKind>,
    /// Aggregate scopes to watch; empty watches all.
    pub series_scopes: Vec<String>,
    /// The window size to watch; None watches the smallest seen.
    pub window_size_ns: Option<i64>,
    /// Score traces per root operation.
    pub traces: bool,
    /// Subjects tracked at most (series and root operations each); more are not scored.
    pub max_subjects: usize,
}

impl Default for DetectSettings {
    fn default() -> Self {
        Self {
            min_samples: 30,
            baseline_windows: 360,
            retrain_every: 180,
            retrain_min_interval_ns: 60_000_000_000,
            anomaly_threshold: 0.9,
            adapt_after: 30,
            models: vec![ModelKind::Kmeans, ModelKind::Gmm, ModelKind::Knn],
            series_scopes: Vec::new(),
            window_size_ns: None,
            traces: true,
            max_subjects: 1000,
        }
    }
}

/// Counters of the detectors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectStats {
    /// Scores emitted.
    pub scores: u64,
    /// Warm scores at or above the anomaly threshold.
    pub flagged: u64,
    /// Feature values skipped because they were NaN or infinite.
    pub skipped_values: u64,
    /// Samples skipped because no feature value was finite.
    pub skipped_samples: u64,
    /// Samples of subjects not tracked because `max_subjects` were.
    pub over_capacity: u64,
    /// Persistent changes adopted as a new baseline.
    pub adopted_changes: u64,
    /// Training jobs handed out.
    pub training_jobs: u64,
    /// Trained models installed.
    pub models_installed: u64,
    /// Trained models dropped: their subject is gone or retrained since.
    pub models_stale: u64,
    /// Series tracked.
    pub series: usize,
    /// Root operations tracked.
    pub root_operations: usize,
}

/// Identity of an aggregate or plain series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct SeriesKey {
    window_size_ns: i64,
    scope: Arc<str>,
    key: Vec<(Arc<str>, Arc<str>)>,
}

/// Identity of a root operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct TraceKey {
    root_service: Arc<str>,
    root_operation: Arc<str>,
}

/// Which subject a training job is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Series(SeriesKey),
    Value(SeriesKey),
    Trace(TraceKey),
}

/// Anomaly detectors for every watched series and root operation.
#[derive(Debug)]
pub struct Detector {
    settings: DetectSettings,
    series: FxHashMap<SeriesKey, Core>,
    values: FxHashMap<SeriesKey, Core>,
    traces: FxHashMap<TraceKey, TraceState>,
    smallest_window_ns: Option<i64>,
    jobs: Vec<TrainingJob>,
    stats: DetectStats,
    /// The subjects whose state changed since the last checkpoint, when tracked.
    changed: Option<rustc_hash::FxHashSet<Target>>,
}

impl Detector {
    /// A detector with no history.
    pub fn new(settings: DetectSettings) -> Self {
        Self {
            settings,
            series: FxHashMap::default(),
            values: FxHashMap::default(),
            traces: FxHashMap::default(),
            smallest_window_ns: None,
            jobs: Vec::new(),
            stats: DetectStats::default(),
            changed: None,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &DetectSettings {
        &self.settings
    }

    /// Counters.
    pub fn stats(&self) -> &DetectStats {
        &self.stats
    }

    fn finish(
        &mut self,
        target: Target,
        subject: Subject,
        at_ns: i64,
        outcome: Option<Outcome>,
        out: &mut Vec<AnomalyScore>,
    ) {
        if let Some(c) = &mut self.changed {
            c.insert(target.clone());
        }
        let Some(o) = outcome else {
            self.stats.skipped_samples += 1;
            return;
        };
        self.stats.skipped_values += o.skipped as u64;
        self.stats.scores += 1;
        self.stats.flagged += u64::from(o.flagged);
        self.stats.adopted_changes += u64::from(o.adopted);
        self.stats.series = self.series.len() + self.values.len();
        self.stats.root_operations = self.traces.len();
        if let Some((generation, rows, dim, floors)) = o.job {
            self.stats.training_jobs += 1;
            self.jobs.push(TrainingJob {
                target,
                generation,
                rows,
                dim,
                floors,
                models: self.settings.models.clone(),
            });
        }
        out.push(AnomalyScore {
            subject,
            at_ns,
            score: o.score,
            warm: o.warm,
            model: o.model,
            explanations: o.explanations,
        });
    }

    /// Whether a subject has an installed model (tests and status).
    pub fn has_model(&self, subject: &Subject) -> bool {
        match subject {
            Subject::Series {
                window_size_ns,
                scope,
                key,
            } => {
                let k = SeriesKey {
                    window_size_ns: *window_size_ns,
                    scope: scope.clone(),
                    key: key.clone(),
                };
                self.series
                    .get(&k)
                    .or(self.values.get(&k))
                    .is_some_and(Core::has_model)
            }
            Subject::Trace {
                root_service,
                root_operation,
                ..
            } => {
                let k = TraceKey {
                    root_service: root_service.clone(),
                    root_operation: root_operation.clone(),
                };
                self.traces.get(&k).is_some_and(|t| t.core.has_model())
            }
        }
    }
}

/// The state of a subject, created when there is room.
fn tracked<'a, K: std::hash::Hash + Eq + Clone, V>(
    map: &'a mut FxHashMap<K, V>,
    key: &K,
    s: &DetectSettings,
    stats: &mut DetectStats,
    new: impl FnOnce() -> V,
) -> Option<&'a mut V> {
    if !map.contains_key(key) {
        if map.len() >= s.max_subjects {
            stats.over_capacity += 1;
            return None;
        }
        map.insert(key.clone(), new());
    }
    map.get_mut(key)
}
