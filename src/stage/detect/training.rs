//! Training handed out as data: the jobs a detector queues (a subject's accepted
//! history), run wherever the caller likes, and the trained models installed back.

use super::model::{ModelKind, ModelSet};
use super::model_fit;
use super::{Detector, Target};

/// A model to train: owns its data (accepted history of one subject), so it can move to
/// a blocking thread. [`TrainingJob::run`] is pure and CPU-heavy.
#[derive(Debug, Clone)]
pub struct TrainingJob {
    pub(super) target: Target,
    pub(super) generation: u64,
    pub(super) rows: Vec<f64>,
    pub(super) dim: usize,
    pub(super) floors: Vec<f64>,
    pub(super) models: Vec<ModelKind>,
}

impl TrainingJob {
    /// Fits the models (standard scaling, then each model) and their score tails.
    pub fn run(self) -> TrainedModel {
        let model =
            on_this_thread(|| model_fit::train(&self.rows, self.dim, &self.floors, &self.models));
        TrainedModel {
            target: self.target,
            generation: self.generation,
            model,
        }
    }

    /// Training vectors.
    pub fn samples(&self) -> usize {
        self.rows.len() / self.dim.max(1)
    }
}

/// Runs `f` with the data-parallel loops of linfa's algorithms (rayon, through ndarray)
/// on this thread alone. A training has hundreds of vectors: handing each loop's halves
/// to the pool's threads and waiting for them cost more than the loop (profiles of replay
/// showed the training threads mostly waking, waiting and yielding), and trainings
/// already run side by side. The same models whatever the number of cores.
fn on_this_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread_local! {
        // a pool of one thread, this one; none on a thread of another pool already
        static ALONE: Option<rayon::ThreadPool> = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .use_current_thread()
            .build()
            .ok();
    }
    ALONE.with(|pool| match pool {
        Some(pool) => pool.install(f),
        None => f(),
    })
}

/// The result of a [`TrainingJob`], for [`Detector::install`].
#[derive(Debug, Clone)]
pub struct TrainedModel {
    target: Target,
    generation: u64,
    model: Option<ModelSet>,
}

impl Detector {
    /// The training jobs queued since the last call.
    pub fn take_training_jobs(&mut self) -> Vec<TrainingJob> {
        std::mem::take(&mut self.jobs)
    }

    /// Runs the queued training jobs on this thread and installs their models (replay,
    /// tests, benchmarks).
    pub fn train_inline(&mut self) {
        for job in self.take_training_jobs() {
            self.install(job.run());
        }
    }

    /// Installs a trained model; one for a subject that is gone, or that asked for a
    /// newer model since, is dropped (and counted).
    pub fn install(&mut self, m: TrainedModel) {
        let target = m.target.clone();
        let core = match &m.target {
            Target::Series(k) => self.series.get_mut(k),
            Target::Value(k) => self.values.get_mut(k),
            Target::Trace(k) => self.traces.get_mut(k).map(|t| &mut t.core),
        };
        if core.is_some_and(|c| c.install(m.generation, m.model)) {
            if let Some(c) = &mut self.changed {
                c.insert(target);
            }
            self.stats.models_installed += 1;
        } else {
            self.stats.models_stale += 1;
        }
    }
}
