//! The YAML settings of the `detect` stage.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{duration, ConfigErrors};

use super::{DetectSettings, ModelKind};

/// Settings of the `detect` stage: anomaly scores for aggregate series and traces.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Samples (closed windows, or traces of a root operation) a detector learns from
    /// before its scores are warm; until then scores are 0. Default 30.
    #[serde(default = "d_min_samples")]
    pub min_samples: usize,
    /// Samples the rolling baselines and the models' training history keep. Default 360
    /// (an hour of 10 s windows).
    #[serde(default = "d_baseline_windows")]
    pub baseline_windows: usize,
    /// Accepted samples between trainings of a detector's models. Default 180: half the
    /// default history, so each accepted sample is in about two trainings (the rolling
    /// baselines learn from every sample; a persistent change retrains at once).
    #[serde(default = "d_retrain_every")]
    pub retrain_every: usize,
    /// Event time between two trainings of one detector's models, at least: a busy root
    /// operation's traces reach `retrain_every` many times a second. Default 1m.
    #[serde(default = "d_retrain_min_interval", with = "duration")]
    pub retrain_min_interval: Duration,
    /// Score at or above which a sample is anomalous: it is not learnt from. Scores are
    /// `L² / (L² + 4)` with L = −log₁₀ p of the combined tail probability p, so 0.8 means
    /// p = 10⁻⁴ and 0.9 means p = 10⁻⁶. Default 0.9.
    #[serde(default = "d_threshold")]
    pub anomaly_threshold: f64,
    /// Anomalous samples within twice as many samples that make a change the new
    /// baseline (a deploy that moved latency for good). Default 30.
    #[serde(default = "d_adapt_after")]
    pub adapt_after: usize,
    /// linfa models on top of the robust baselines: `kmeans`, `gmm`, `ocsvm`, `knn`.
    /// Default `[kmeans, gmm, knn]`.
    #[serde(default = "d_models")]
    pub models: Vec<ModelKind>,
    /// Aggregate scopes (dimension set names, or `service_graph`) to watch; empty
    /// watches all. Default `[]`.
    #[serde(default)]
    pub series_scopes: Vec<String>,
    /// The aggregate window size to watch (one of the aggregate stage's `windows`);
    /// default: the smallest.
    #[serde(default, with = "duration::option")]
    pub window: Option<Duration>,
    /// Also score every closed trace against its root operation's baseline. Default true.
    #[serde(default = "d_true")]
    pub traces: bool,
    /// Series, and root operations, tracked at most (each); others are counted, not
    /// scored. Default 1000.
    #[serde(default = "d_max_subjects")]
    pub max_subjects: usize,
    /// Directory of the detectors' snapshot (`detect-snapshot.json`: baselines,
    /// calibrators, history and models of every subject). At start a snapshot found
    /// there is restored, so a restart does not learn from zero; one that cannot be read
    /// (another format version, a damaged file) is logged, counted
    /// (`spanline_detect_snapshots_total{result="rejected"}`), moved aside to
    /// `detect-snapshot.rejected.json`, and the detectors start from warm-up. Written
    /// atomically every `snapshot_every` and when the pipeline stops, not when it is
    /// killed (`replay`: at the end). `run` and `demo` use it only with
    /// `kafka.changelogs: false`: with changelogs the detectors' state is checkpointed
    /// in `<group_id>-detect-changelog` with the rest of the pipeline's state.
    /// Default: none, nothing is saved.
    #[serde(default)]
    pub snapshot_dir: Option<PathBuf>,
    /// Instead of a directory, a compacted Kafka topic (create it with
    /// `cleanup.policy=compact`) on the pipeline's brokers: one record per subject keyed
    /// by kind and subject, plus a `meta` record; read from its start at start-up, the
    /// latest record of each key counts. `replay` does not use it. Default: none.
    #[serde(default)]
    pub snapshot_topic: Option<String>,
    /// How often (wall clock) `run` and `demo` save the snapshot. Default 1m.
    #[serde(default = "d_snapshot_every", with = "duration")]
    pub snapshot_every: Duration,
}

fn d_min_samples() -> usize {
    DetectSettings::default().min_samples
}
fn d_baseline_windows() -> usize {
    DetectSettings::default().baseline_windows
}
fn d_retrain_every() -> usize {
    DetectSettings::default().retrain_every
}
fn d_retrain_min_interval() -> Duration {
    Duration::from_nanos(DetectSettings::default().retrain_min_interval_ns as u64)
}
fn d_threshold() -> f64 {
    DetectSettings::default().anomaly_threshold
}
fn d_adapt_after() -> usize {
    DetectSettings::default().adapt_after
}
fn d_models() -> Vec<ModelKind> {
    DetectSettings::default().models
}
fn d_true() -> bool {
    true
}
fn d_max_subjects() -> usize {
    DetectSettings::default().max_subjects
}
fn d_snapshot_every() -> Duration {
    Duration::from_secs(60)
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            min_samples: d_min_samples(),
            baseline_windows: d_baseline_windows(),
            retrain_every: d_retrain_every(),
            retrain_min_interval: d_retrain_min_interval(),
            anomaly_threshold: d_threshold(),
            adapt_after: d_adapt_after(),
            models: d_models(),
            series_scopes: Vec::new(),
            window: None,
            traces: true,
            max_subjects: d_max_subjects(),
            snapshot_dir: None,
            snapshot_topic: None,
            snapshot_every: d_snapshot_every(),
        }
    }
}

impl DetectConfig {
    /// The detectors' settings (call after `validate` found no error).
    pub fn settings(&self) -> DetectSettings {
        let mut models = self.models.clone();
        models.sort_unstable();
        models.dedup();
        DetectSettings {
            min_samples: self.min_samples,
            baseline_windows: self.baseline_windows,
            retrain_every: self.retrain_every,
            retrain_min_interval_ns: i64::try_from(self.retrain_min_interval.as_nanos())
                .unwrap_or(i64::MAX),
            anomaly_threshold: self.anomaly_threshold,
            adapt_after: self.adapt_after,
            models,
            series_scopes: self.series_scopes.clone(),
            window_size_ns: self
                .window
                .map(|w| i64::try_from(w.as_nanos()).unwrap_or(i64::MAX)),
            traces: self.traces,
            max_subjects: self.max_subjects,
        }
    }

    /// Checks the values without I/O; every problem is pushed with its path.
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        if self.min_samples < 10 {
            errors.push(
                format!("{path}.min_samples"),
                "must be at least 10",
                "e.g. 30",
            );
        }
        if self.baseline_windows < self.min_samples.max(10) {
            errors.push(
                format!("{path}.baseline_windows"),
                format!("must be at least min_samples ({})", self.min_samples),
                "e.g. 360",
            );
        }
        if self.retrain_every == 0 {
            errors.push(
                format!("{path}.retrain_every"),
                "must be at least 1",
                "e.g. 60",
            );
        }
        if !(self.anomaly_threshold > 0.0 && self.anomaly_threshold <= 1.0) {
            errors.push(
                format!("{path}.anomaly_threshold"),
                "must be more than 0 and at most 1",
                "e.g. 0.9",
            );
        }
        if self.adapt_after == 0 {
            errors.push(
                format!("{path}.adapt_after"),
                "must be at least 1",
                "e.g. 30",
            );
        }
        if let Some(w) = self.window {
            if w.is_zero() {
                errors.push(
                    format!("{path}.window"),
                    "must be more than 0",
                    "one of the aggregate stage's windows, e.g. 10s",
                );
            }
        }
        for (i, scope) in self.series_scopes.iter().enumerate() {
            if scope.is_empty() {
                errors.push(
                    format!("{path}.series_scopes[{i}]"),
                    "must not be empty",
                    "a dimension set name, e.g. service",
                );
            }
        }
        if self.max_subjects == 0 {
            errors.push(
                format!("{path}.max_subjects"),
                "must be at least 1",
                "e.g. 1000",
            );
        }
        if self
            .snapshot_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            errors.push(
                format!("{path}.snapshot_dir"),
                "must not be empty",
                "a directory, e.g. /var/lib/spanline/detect, or leave the key out",
            );
        }
        if self
            .snapshot_topic
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            errors.push(
                format!("{path}.snapshot_topic"),
                "must not be empty",
                "a compacted topic, e.g. spanline-detect-state, or leave the key out",
            );
        }
        if self.snapshot_dir.is_some() && self.snapshot_topic.is_some() {
            errors.push(
                format!("{path}.snapshot_topic"),
                "snapshot_dir is set too",
                "keep snapshots in one place: a directory or a topic",
            );
        }
        if self.snapshot_every < Duration::from_secs(1) {
            errors.push(
                format!("{path}.snapshot_every"),
                "must be at least 1s",
                "e.g. 1m",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_match_the_settings_defaults() {
        let c: DetectConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c, DetectConfig::default());
        let mut errors = ConfigErrors::default();
        c.validate("stages[3]", &mut errors);
        assert!(errors.0.is_empty(), "{errors:?}");
        assert_eq!(c.settings(), DetectSettings::default());
    }

    #[test]
    fn keys_parse_and_bad_values_are_reported_with_paths() {
        let c: DetectConfig = serde_yaml::from_str(
            "{min_samples: 5, baseline_windows: 3, retrain_every: 0, anomaly_threshold: 1.5, adapt_after: 0, \
             models: [gmm, ocsvm, gmm], series_scopes: [service, ''], window: 0s, traces: false, max_subjects: 0, \
             snapshot_dir: '', snapshot_every: 500ms}",
        )
        .unwrap();
        let mut errors = ConfigErrors::default();
        c.validate("stages[3]", &mut errors);
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "stages[3].min_samples",
                "stages[3].baseline_windows",
                "stages[3].retrain_every",
                "stages[3].anomaly_threshold",
                "stages[3].adapt_after",
                "stages[3].window",
                "stages[3].series_scopes[1]",
                "stages[3].max_subjects",
                "stages[3].snapshot_dir",
                "stages[3].snapshot_every",
            ]
        );
        assert_eq!(c.settings().models, vec![ModelKind::Gmm, ModelKind::Ocsvm]);
        assert_eq!(c.settings().window_size_ns, Some(0));
    }

    #[test]
    fn unknown_keys_and_models_are_rejected() {
        assert!(serde_yaml::from_str::<DetectConfig>("{min_sample: 3}").is_err());
        assert!(serde_yaml::from_str::<DetectConfig>("{models: [forest]}").is_err());
        let c: DetectConfig = serde_yaml::from_str("{window: 1m}").unwrap();
        assert_eq!(c.settings().window_size_ns, Some(60_000_000_000));
        assert!(serde_yaml::from_str::<DetectConfig>("{snapshot_every: 1 minute}").is_ok());
        assert!(serde_yaml::from_str::<DetectConfig>("{snapshot_every: soon}").is_err());
    }

    #[test]
    fn a_snapshot_topic_is_one_place_to_keep_snapshots() {
        let c: DetectConfig = serde_yaml::from_str(
            "{snapshot_topic: spanline-detect-state, retrain_min_interval: 5m}",
        )
        .unwrap();
        assert_eq!(c.snapshot_topic.as_deref(), Some("spanline-detect-state"));
        assert_eq!(c.settings().retrain_min_interval_ns, 300_000_000_000);
        let mut errors = ConfigErrors::default();
        c.validate("stages[3]", &mut errors);
        assert!(errors.0.is_empty(), "{errors:?}");
        let both: DetectConfig =
            serde_yaml::from_str("{snapshot_topic: ' ', snapshot_dir: /tmp/x}").unwrap();
        both.validate("stages[3]", &mut errors);
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["stages[3].snapshot_topic", "stages[3].snapshot_topic"]
        );
        assert!(
            errors.0[1].message.contains("snapshot_dir is set too"),
            "{errors:?}"
        );
    }

    #[test]
    fn snapshot_keys_parse_and_default_to_off() {
        let c: DetectConfig =
            serde_yaml::from_str("{snapshot_dir: /var/lib/spanline/detect, snapshot_every: 30s}")
                .unwrap();
        assert_eq!(
            c.snapshot_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/spanline/detect"))
        );
        assert_eq!(c.snapshot_every, Duration::from_secs(30));
        // `snapshot_dir: ${VAR:-}` with the variable unset leaves the key empty: off
        let c: DetectConfig = serde_yaml::from_str("snapshot_dir:").unwrap();
        assert_eq!(c.snapshot_dir, None);
        assert_eq!(c.snapshot_every, Duration::from_secs(60));
    }
}
