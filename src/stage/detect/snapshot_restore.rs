//! The detector's side of snapshots: its learnt state taken as a [`Snapshot`] and
//! restored from one (subjects the settings no longer watch left out), saved to and
//! loaded from a directory, and the subjects it tracks counted.

use std::path::{Path, PathBuf};

use super::core::Core;
use super::snapshot::{Snapshot, SnapshotCounts, SnapshotError, SNAPSHOT_VERSION};
use super::{Detector, SeriesKey};

impl Detector {
    /// The learnt state of every subject (queued training jobs are not part of it).
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot {
            version: SNAPSHOT_VERSION,
            series: self
                .series
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            values: self
                .values
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            traces: self
                .traces
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            smallest_window_ns: self.smallest_window_ns,
            stats: self.stats.clone(),
        };
        snap.sort();
        snap
    }

    /// Takes the trace models of another instance's snapshot (the windows' owner's,
    /// with two-phase aggregation) for the root operations this detector has no model
    /// of, so an instance that starts or restarts scores its traces at once instead of
    /// learning from scratch; the series models stay the owner's. Returns how many
    /// root operations it took.
    pub fn seed_trace_models(&mut self, s: Snapshot) -> usize {
        if !self.settings.traces || s.version != SNAPSHOT_VERSION {
            return 0;
        }
        let mut taken = 0;
        for (k, mut t) in s.traces {
            if !t.core.has_model() || self.traces.get(&k).is_some_and(|m| m.core.has_model()) {
                continue;
            }
            if !self.traces.contains_key(&k) && self.traces.len() >= self.settings.max_subjects {
                continue;
            }
            t.core.clear_pending();
            self.traces.insert(k, t);
            taken += 1;
        }
        self.stats.root_operations = self.traces.len();
        taken
    }

    /// Root operations with an installed trace model.
    pub fn trace_models(&self) -> usize {
        self.traces.values().filter(|t| t.core.has_model()).count()
    }

    /// Replaces the learnt state with a snapshot's. Training requests that were pending
    /// are asked again by the next samples; queued jobs are dropped. Subjects the
    /// current settings do not watch (another `window` or `series_scopes`, `traces`
    /// off) are left out, and at most `max_subjects` of each kind are kept.
    pub fn restore(&mut self, s: Snapshot) -> Result<(), SnapshotError> {
        if s.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: s.version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let unpend = |mut c: Core| {
            c.clear_pending();
            c
        };
        let set = &self.settings;
        let watched = |k: &SeriesKey| {
            (set.series_scopes.is_empty() || set.series_scopes.iter().any(|x| **x == *k.scope))
                && set.window_size_ns.is_none_or(|w| w == k.window_size_ns)
        };
        let max = set.max_subjects;
        self.series = s
            .series
            .into_iter()
            .filter(|(k, _)| watched(k))
            .take(max)
            .map(|(k, c)| (k, unpend(c)))
            .collect();
        self.values = s
            .values
            .into_iter()
            .take(max)
            .map(|(k, c)| (k, unpend(c)))
            .collect();
        self.traces = s
            .traces
            .into_iter()
            .filter(|_| set.traces)
            .take(max)
            .map(|(k, mut t)| {
                t.core.clear_pending();
                (k, t)
            })
            .collect();
        self.smallest_window_ns = s.smallest_window_ns;
        self.stats = s.stats;
        self.stats.series = self.series.len() + self.values.len();
        self.stats.root_operations = self.traces.len();
        self.jobs.clear();
        Ok(())
    }

    /// Writes the snapshot to `dir/detect-snapshot.json` atomically (a temporary file in
    /// the same directory, synced, then renamed over the old one); returns its path.
    pub fn save_snapshot(&self, dir: &Path) -> Result<PathBuf, SnapshotError> {
        self.snapshot().save(dir).map(|(path, _)| path)
    }

    /// Restores from `dir/detect-snapshot.json`; `Ok(false)` when there is none.
    pub fn load_snapshot(&mut self, dir: &Path) -> Result<bool, SnapshotError> {
        match Snapshot::load(dir)? {
            Some(snap) => {
                self.restore(snap)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl Detector {
    /// Series, root operations and installed models tracked now (after a restore: what
    /// was restored).
    pub fn subject_counts(&self) -> SnapshotCounts {
        let cores = self
            .series
            .values()
            .chain(self.values.values())
            .chain(self.traces.values().map(|t| &t.core));
        SnapshotCounts {
            series: self.series.len() + self.values.len(),
            root_operations: self.traces.len(),
            models: cores.filter(|c| c.has_model()).count(),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::AnomalyScore;
    use crate::model::WindowAggregate;
    use crate::stage::detect::{DetectSettings, ModelKind, SNAPSHOT_FILE};

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_700_000_000 * S;

    /// The `i`-th 10 s window of `service` with 20 calls of about 100 ms.
    fn window(scope: &str, service: &str, i: i64) -> WindowAggregate {
        let mut w = WindowAggregate::empty(
            T0 + i * 10 * S,
            10 * S,
            Arc::from(scope),
            vec![(Arc::from("service"), Arc::from(service))],
            500_000_000,
        );
        let ns = (100 + (i * 7919) % 13) as f64 * 1e6;
        for _ in 0..20 {
            w.sketch.add(ns);
        }
        w.count = 20;
        w.min_ns = ns as i64;
        w.max_ns = ns as i64;
        w.sum_ns = 20 * ns as i64;
        w.slo_good = 20;
        w
    }

    pub(in crate::stage::detect) fn settings() -> DetectSettings {
        DetectSettings {
            min_samples: 10,
            retrain_every: 10,
            models: vec![ModelKind::Knn],
            ..DetectSettings::default()
        }
    }

    pub(in crate::stage::detect) fn feed(
        d: &mut Detector,
        scope: &str,
        windows: std::ops::Range<i64>,
    ) -> Vec<AnomalyScore> {
        let mut out = Vec::new();
        for i in windows {
            d.observe_window(&window(scope, "api", i), &mut out);
            d.train_inline();
        }
        out
    }

    #[test]
    fn a_restored_detector_is_warm_and_scores_as_the_one_it_was_saved_from() {
        let mut a = Detector::new(settings());
        feed(&mut a, "service", 0..120);
        let dir = tempfile::tempdir().unwrap();
        let path = a.save_snapshot(dir.path()).unwrap();
        assert_eq!(path, dir.path().join(SNAPSHOT_FILE));
        let mut b = Detector::new(settings());
        assert!(b.load_snapshot(dir.path()).unwrap());
        assert_eq!(
            b.subject_counts(),
            SnapshotCounts {
                series: 1,
                root_operations: 0,
                models: 1
            }
        );
        assert_eq!(b.subject_counts(), a.snapshot().counts());
        assert_eq!(b.stats(), a.stats());
        let (sa, sb) = (
            feed(&mut a, "service", 120..130),
            feed(&mut b, "service", 120..130),
        );
        assert!(sb.iter().all(|s| s.warm && s.model != "mad"), "{sb:?}");
        for (x, y) in sa.iter().zip(&sb) {
            // JSON keeps floats to the last bit or one unit in the last place
            assert!((x.score - y.score).abs() < 1e-9, "{x:?} {y:?}");
        }
        // from zero, the first scores are warm-up
        let mut cold = Detector::new(settings());
        assert!(feed(&mut cold, "service", 120..130).iter().all(|s| !s.warm));
    }

    #[test]
    fn no_snapshot_other_versions_and_damaged_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Detector::new(settings());
        assert!(!d.load_snapshot(dir.path()).unwrap());
        let file = dir.path().join(SNAPSHOT_FILE);
        std::fs::write(&file, br#"{"version": 99, "series": "from the future"}"#).unwrap();
        let e = d.load_snapshot(dir.path()).unwrap_err();
        assert!(
            matches!(
                e,
                SnapshotError::Version {
                    found: 99,
                    supported: SNAPSHOT_VERSION
                }
            ),
            "{e}"
        );
        std::fs::write(&file, br#"{"version": 1, "series": [[{"bad": 1}"#).unwrap();
        assert!(matches!(
            d.load_snapshot(dir.path()),
            Err(SnapshotError::Json { .. })
        ));
        let mut snap = Detector::new(settings()).snapshot();
        snap.version = SNAPSHOT_VERSION + 1;
        assert!(matches!(
            d.restore(snap),
            Err(SnapshotError::Version { .. })
        ));
    }

    #[test]
    fn subjects_the_settings_no_longer_watch_are_not_restored() {
        let mut a = Detector::new(settings());
        feed(&mut a, "service", 0..12);
        feed(&mut a, "operation", 0..12);
        assert_eq!(a.subject_counts().series, 2);
        let mut b = Detector::new(DetectSettings {
            series_scopes: vec!["service".into()],
            ..settings()
        });
        b.restore(a.snapshot()).unwrap();
        assert_eq!(b.subject_counts().series, 1);
        assert_eq!(b.stats().series, 1);
        let mut c = Detector::new(DetectSettings {
            window_size_ns: Some(60 * S),
            ..settings()
        });
        c.restore(a.snapshot()).unwrap();
        assert_eq!(c.subject_counts().series, 0);
    }
}
