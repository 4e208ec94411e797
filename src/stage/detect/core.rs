//! The streaming state of one subject (a series or a root operation): per-feature robust
//! baselines and calibrators, the training history, the quarantine of flagged samples,
//! the installed model and the training schedule. Series and traces differ only in the
//! features they feed in.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::model::Explanation;

use super::feature_state::{Categories, FeatureSpec, FeatureState, MIN_BASELINE_VALUES};
use super::model::ModelSet;
use super::model_fit::MIN_TRAIN_ROWS;
use super::robust::{ln_tail_p, Baseline, Window};
use super::score::{finite, ln_harmonic_mean_p, score_of_ln_p, short_shift, z_of_ln_p, SHORT};
use super::DetectSettings;

/// Event time of history before the seasonal profile may be used.
const SEASONAL_AFTER_NS: i64 = 2 * 86_400_000_000_000;
/// Earlier values of the same hour at least as extreme that make a value usual.
const SEASONAL_USUAL_K: usize = 1;
/// The score, at least, of a series value beyond the range of all earlier ones.
const NEW_GROUND_SCORE: f64 = 0.99;

/// A flagged sample held back from training, adopted if the change persists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Held {
    at_ns: i64,
    x: Vec<f64>,
    row: Vec<f64>,
    tag: Option<u64>,
    /// `seen` when it arrived.
    seq: u64,
}

/// What one observation produced.
pub(super) struct Outcome {
    pub score: f64,
    pub warm: bool,
    pub model: &'static str,
    pub explanations: Vec<Explanation>,
    /// Features skipped because they were not finite.
    pub skipped: usize,
    pub flagged: bool,
    /// A changed regime was adopted as the new baseline.
    pub adopted: bool,
    /// Training data to fit a model on, with the generation it will carry.
    pub job: Option<(u64, Vec<f64>, usize, Vec<f64>)>,
}

/// Streaming state of one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Core {
    features: Vec<FeatureState>,
    /// Samples the baselines and the training history keep.
    cap: usize,
    seen: u64,
    accepted: u64,
    first_at_ns: Option<i64>,
    last_at_ns: Option<i64>,
    interval_ns: i64,
    /// Deviations of the last `SHORT − 1` samples (none where there was none: JSON has
    /// no NaN).
    trail: VecDeque<Vec<Option<f64>>>,
    /// The last model row, whose values stand in for missing ones.
    last_row: Vec<f64>,
    history: VecDeque<Vec<f64>>,
    categories: Option<Categories>,
    held: VecDeque<Held>,
    recent_flags: VecDeque<bool>,
    since_train: u64,
    /// Event time of the last training request.
    #[serde(default)]
    trained_at_ns: Option<i64>,
    generation: u64,
    /// Generation and `seen` of the training request not yet answered.
    pending: Option<(u64, u64)>,
    model: Option<ModelSet>,
    /// Per model of `model`, its scores of the recent samples.
    model_recent: Vec<Window>,
}

impl Core {
    /// `categorical`: samples carry a tag (structure signature) scored by its frequency.
    pub(super) fn new(specs: &[FeatureSpec], categorical: bool, s: &DetectSettings) -> Self {
        let cap = s.baseline_windows.max(1);
        Self {
            features: specs.iter().map(|f| FeatureState::new(f, cap)).collect(),
            cap,
            seen: 0,
            accepted: 0,
            first_at_ns: None,
            last_at_ns: None,
            interval_ns: 0,
            trail: VecDeque::new(),
            last_row: Vec::new(),
            history: VecDeque::new(),
            categories: categorical.then(|| Categories {
                recent: VecDeque::new(),
                counts: FxHashMap::default(),
                cap,
            }),
            held: VecDeque::new(),
            recent_flags: VecDeque::new(),
            since_train: 0,
            trained_at_ns: None,
            generation: 0,
            pending: None,
            model: None,
            model_recent: Vec::new(),
        }
    }

    /// Appends a feature (a newly seen service's share); its past values count as 0.
    pub(super) fn add_feature(&mut self, spec: &FeatureSpec, s: &DetectSettings) {
        self.features
            .push(FeatureState::new(spec, s.baseline_windows.max(1)));
    }

    /// Installs a trained model if it answers the pending request.
    pub(super) fn install(&mut self, generation: u64, model: Option<ModelSet>) -> bool {
        match self.pending {
            Some((g, _)) if g == generation => {
                self.pending = None;
                if let Some(m) = model {
                    // successive models score on similar scales: their recent scores stay
                    if self.model_recent.len() != m.len() {
                        self.model_recent = vec![Window::new(self.cap); m.len()];
                    }
                    self.model = Some(m);
                }
                true
            }
            _ => false,
        }
    }

    /// Forgets an unanswered training request (after a restore nothing is running).
    pub(super) fn clear_pending(&mut self) {
        self.pending = None;
    }

    pub(super) fn has_model(&self) -> bool {
        self.model.is_some()
    }

    /// Scores one sample of raw feature values (non-finite ones are skipped) and learns
    /// from it unless it is flagged. None when no value is finite.
    pub(super) fn observe(
        &mut self,
        at_ns: i64,
        raw: &[f64],
        tag: Option<u64>,
        s: &DetectSettings,
    ) -> Option<Outcome> {
        let d = self.features.len();
        let x: Vec<f64> = self
            .features
            .iter()
            .zip(raw.iter().chain(std::iter::repeat(&f64::NAN)))
            .map(|(f, v)| {
                if v.is_finite() {
                    f.scale.apply(*v)
                } else {
                    f64::NAN
                }
            })
            .collect();
        let skipped = x.iter().filter(|v| !v.is_finite()).count();
        if skipped == d {
            return None;
        }
        self.seen += 1;
        if let Some(last) = self.last_at_ns {
            let gap = at_ns.saturating_sub(last);
            if gap > 0 && (self.interval_ns == 0 || gap < self.interval_ns) {
                self.interval_ns = gap;
            }
        }
        self.last_at_ns = Some(self.last_at_ns.map_or(at_ns, |l| l.max(at_ns)));
        let first = *self.first_at_ns.get_or_insert(at_ns);
        let seasonal_ok = at_ns.saturating_sub(first) >= SEASONAL_AFTER_NS;

        // deviations from the baselines, and the model row (missing values imputed)
        let mut zs = vec![None; d];
        let mut zs_short = vec![None; d];
        let mut ln_ps = Vec::with_capacity(d + 5);
        let mut explanations = Vec::with_capacity(d + 1);
        // each rolling baseline once: it judges this sample and tracks how well it did
        let rolling: SmallVec<[Option<Baseline>; 8]> =
            self.features.iter().map(FeatureState::rolling).collect();
        for (i, f) in self.features.iter().enumerate() {
            let base = f.baseline(at_ns, seasonal_ok, rolling[i]);
            if !x[i].is_finite() {
                continue;
            }
            if let Some(b) = base {
                let z = b.deviations(x[i]);
                zs[i] = Some(z);
                ln_ps.push(f.calib.ln_p(z));
                if let Some(zm) = short_shift(
                    z,
                    self.trail
                        .iter()
                        .map(|t| t.get(i).copied().flatten().unwrap_or(f64::NAN)),
                ) {
                    zs_short[i] = Some(zm);
                    ln_ps.push(f.calib_short.ln_p(zm));
                }
                explanations.push(Explanation {
                    feature: f.name.clone(),
                    value: finite(f.scale.invert(x[i])),
                    baseline: finite(f.scale.invert(b.center)),
                    deviations: z,
                });
            }
        }
        // the models see the (transformed) values, a missing one as the last seen
        let row: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if v.is_finite() {
                    *v
                } else {
                    self.last_row.get(i).copied().unwrap_or(0.0)
                }
            })
            .collect();
        self.last_row.clone_from(&row);
        // a series value beyond all earlier ones (by a share of their range) is new ground
        // however usual its deviation from the recent baseline is; only once the series
        // has filled a baseline window (a short history's extremes are soon surpassed),
        // and never for traces, whose features have long tails
        let judge_range = self.categories.is_none() && self.seen > self.cap as u64;
        let mut new_ground = false;
        for ((f, v), r) in self.features.iter_mut().zip(&x).zip(&rolling) {
            if v.is_finite() {
                f.track(at_ns, *v, *r);
                new_ground |= f.beyond_range(*v) && judge_range;
            }
        }
        // the oldest entry's buffer is reused for this sample's deviations
        let mut entry = if self.trail.len() + 1 >= SHORT {
            self.trail.pop_front().unwrap_or_default()
        } else {
            Vec::new()
        };
        entry.clear();
        entry.extend(zs.iter().copied());
        self.trail.push_back(entry);

        // warm: enough accepted samples, and a baseline to judge this one by (right after
        // an adopted change there may be too few values for one)
        let warm = self.accepted >= s.min_samples as u64 && zs.iter().any(Option::is_some);
        let mut model_name = "mad";
        let mut model_scores = Vec::new();
        if let Some(m) = &self.model {
            let mut scaled = Vec::with_capacity(m.dim);
            let mut scores = Vec::with_capacity(m.len());
            m.scale(&row, &mut scaled);
            m.score(&scaled, &mut scores);
            for (i, (score, ln_p_train)) in scores.into_iter().enumerate() {
                let recent = &self.model_recent[i];
                let ln_p_recent =
                    ln_tail_p(recent.sorted(), score, m.beta_floor(i)).unwrap_or(f64::NEG_INFINITY);
                ln_ps.push(ln_p_train.max(ln_p_recent));
                model_scores.push(score);
            }
            model_name = m.name();
        }
        // the harmonic mean p-value of the continuous measures; the category is its own
        // evidence
        let mut ln_p = ln_harmonic_mean_p(&ln_ps);
        // a value as usual for its hour of the day as values of earlier days were is no
        // anomaly, however rare it is in the whole series (a nightly job)
        if seasonal_ok {
            let mut usual: Option<f64> = None;
            for (f, v) in self.features.iter().zip(&x) {
                if !v.is_finite() {
                    continue;
                }
                match f.seasonal.usual(at_ns, *v) {
                    Some((p, k)) if k >= SEASONAL_USUAL_K => {
                        usual = Some(usual.map_or(p, |u| u.min(p)))
                    }
                    _ => {
                        usual = None;
                        break;
                    }
                }
            }
            if let Some(p) = usual {
                ln_p = ln_p.max(p.ln());
            }
        }
        if let (Some(tag), Some(c)) = (tag, &self.categories) {
            if c.recent.len() >= MIN_BASELINE_VALUES {
                let (lp, share, top) = c.ln_p(tag);
                ln_p = ln_p.min(lp);
                explanations.push(Explanation {
                    feature: "structure".to_string(),
                    value: share,
                    baseline: top,
                    deviations: -z_of_ln_p(lp),
                });
            }
        }
        explanations.sort_by(|a, b| b.deviations.abs().total_cmp(&a.deviations.abs()));
        let score = if warm { score_of_ln_p(ln_p) } else { 0.0 };
        // new ground alone does not hold a sample out of learning: the baselines judge that
        let flagged = warm && score >= s.anomaly_threshold;
        let score = if warm && new_ground {
            score.max(NEW_GROUND_SCORE)
        } else {
            score
        };

        // the calibrators learn how far every sample deviates, flagged ones too: spikes
        // that recur are part of what a series does
        for ((f, z), zm) in self.features.iter_mut().zip(&zs).zip(&zs_short) {
            if let Some(z) = z {
                f.calib.push(*z);
            }
            if let Some(z) = zm {
                f.calib_short.push(*z);
            }
        }
        if !flagged {
            for (recent, score) in self.model_recent.iter_mut().zip(model_scores) {
                recent.push(score);
            }
        }
        let mut adopted = false;
        if flagged {
            self.held.push_back(Held {
                at_ns,
                x,
                row,
                tag,
                seq: self.seen,
            });
        } else {
            self.accept(at_ns, &x, row, tag);
        }
        let window = 2 * s.adapt_after.max(1) as u64;
        self.recent_flags.push_back(flagged);
        if self.recent_flags.len() as u64 > window {
            self.recent_flags.pop_front();
        }
        while self
            .held
            .front()
            .is_some_and(|h| h.seq + window <= self.seen)
        {
            self.held.pop_front();
        }
        if flagged && self.recent_flags.iter().filter(|f| **f).count() >= s.adapt_after.max(1) {
            self.adopt();
            adopted = true;
        }
        let job = self.training_request(at_ns, s);
        Some(Outcome {
            score,
            warm,
            model: model_name,
            explanations,
            skipped,
            flagged,
            adopted,
            job,
        })
    }

    fn accept(&mut self, at_ns: i64, x: &[f64], row: Vec<f64>, tag: Option<u64>) {
        // a held sample may predate features added since (a newly seen service)
        for (f, v) in self.features.iter_mut().zip(x) {
            if v.is_finite() {
                f.accept(at_ns, self.interval_ns, *v);
            }
        }
        if let (Some(tag), Some(c)) = (tag, &mut self.categories) {
            c.push(tag);
        }
        if self.history.len() >= self.cap {
            self.history.pop_front();
        }
        self.history.push_back(row);
        self.accepted += 1;
        self.since_train += 1;
    }

    /// The flagged samples of a persistent change become the new baseline: the old
    /// regime's rolling baselines, history and model are dropped (the hour-of-day profile
    /// stays), and a model is trained on the new regime as soon as it has enough samples.
    fn adopt(&mut self) {
        for f in &mut self.features {
            f.roll.clear();
        }
        self.history.clear();
        if let Some(c) = &mut self.categories {
            c.recent.clear();
            c.counts.clear();
        }
        self.model = None;
        self.model_recent.clear();
        self.pending = None;
        self.recent_flags.clear();
        let held: Vec<Held> = self.held.drain(..).collect();
        for h in held {
            self.accept(h.at_ns, &h.x, h.row, h.tag);
        }
        self.since_train = self.history.len() as u64;
    }

    fn training_request(
        &mut self,
        at_ns: i64,
        s: &DetectSettings,
    ) -> Option<(u64, Vec<f64>, usize, Vec<f64>)> {
        let retrain = s.retrain_every.max(1) as u64;
        if let Some((_, asked_at)) = self.pending {
            // a request nobody answered (a dropped job) is asked again
            if self.seen.saturating_sub(asked_at) <= 4 * retrain.max(s.min_samples as u64) {
                return None;
            }
        }
        let enough = self.history.len() >= s.min_samples.max(MIN_TRAIN_ROWS);
        // event time going backwards does not hold training back
        let waited = self
            .trained_at_ns
            .and_then(|t| at_ns.checked_sub(t))
            .is_none_or(|d| d < 0 || d >= s.retrain_min_interval_ns);
        // every `retrain_every` samples, and sooner while the history grows: once the
        // samples since the last training are half as many as those it saw, so a young
        // model keeps up (its trainings are small) and a full history is refitted every
        // `retrain_every` samples
        let len = self.history.len() as u64;
        let grown =
            len < self.cap as u64 && 2 * self.since_train >= len - self.since_train.min(len);
        let due = if self.model.is_none() {
            enough
        } else {
            (self.since_train >= retrain || grown) && waited
        };
        if !due || s.models.is_empty() || !enough {
            return None;
        }
        self.trained_at_ns = Some(at_ns);
        self.generation += 1;
        self.pending = Some((self.generation, self.seen));
        self.since_train = 0;
        let dim = self.history.iter().map(Vec::len).max().unwrap_or(0);
        let mut rows = Vec::with_capacity(dim * self.history.len());
        for r in &self.history {
            rows.extend(r.iter().copied());
            rows.extend(std::iter::repeat_n(0.0, dim - r.len()));
        }
        // a spread under a feature's floor is not resolved
        let floors: Vec<f64> = (0..dim)
            .map(|i| self.features.get(i).map_or(1e-9, |f| f.floor.max(1e-9)))
            .collect();
        Some((self.generation, rows, dim, floors))
    }
}
