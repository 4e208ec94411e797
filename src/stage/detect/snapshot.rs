//! Snapshots of every detector's state (baselines, calibrators, history, models) as one
//! versioned JSON document, written atomically.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::core::Core;
use super::{DetectStats, Detector, SeriesKey, TraceKey, TraceState};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 2;

/// File name of the snapshot in its directory.
pub const SNAPSHOT_FILE: &str = "detect-snapshot.json";

/// Everything a [`Detector`] has learnt; serde JSON-serialisable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version ([`SNAPSHOT_VERSION`] when written by this build).
    pub version: u32,
    series: Vec<(SeriesKey, Core)>,
    values: Vec<(SeriesKey, Core)>,
    traces: Vec<(TraceKey, TraceState)>,
    smallest_window_ns: Option<i64>,
    stats: DetectStats,
}

/// Why a snapshot could not be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("detect snapshot has version {found}, this build reads version {supported}")]
    Version { found: u32, supported: u32 },
    #[error("detect snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("detect snapshot {path} is not valid: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("detect snapshot record {key:?} is not valid: {source}")]
    Record {
        key: String,
        source: serde_json::Error,
    },
    #[error("detect snapshot topic {topic}: {source}")]
    Topic {
        topic: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The key of a subject's record on a snapshot topic or changelog.
pub(super) fn record_key(kind: &str, subject: &impl Serialize) -> String {
    format!(
        "{kind}/{}",
        serde_json::to_string(subject).expect("subject keys serialize")
    )
}

/// Key of a snapshot topic's record holding the version, the smallest window and the
/// counters; the other records hold one subject each, keyed by kind and subject.
pub const META_KEY: &str = "meta";

/// One record of a snapshot on a topic.
#[derive(Serialize, Deserialize)]
struct Envelope {
    version: u32,
    entry: Entry,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Meta {
        smallest_window_ns: Option<i64>,
        stats: DetectStats,
    },
    Series(SeriesKey, Core),
    Value(SeriesKey, Core),
    Trace(TraceKey, TraceState),
}

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

/// What a snapshot or a detector holds, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotCounts {
    /// Aggregate and plain series.
    pub series: usize,
    /// Root operations.
    pub root_operations: usize,
    /// Subjects with an installed model.
    pub models: usize,
}

impl Snapshot {
    /// A stable order of the subjects makes snapshots of equal state equal.
    fn sort(&mut self) {
        self.series.sort_by(|a, b| {
            (a.0.window_size_ns, &a.0.scope, &a.0.key).cmp(&(
                b.0.window_size_ns,
                &b.0.scope,
                &b.0.key,
            ))
        });
        self.values.sort_by(|a, b| {
            (a.0.window_size_ns, &a.0.scope, &a.0.key).cmp(&(
                b.0.window_size_ns,
                &b.0.scope,
                &b.0.key,
            ))
        });
        self.traces.sort_by(|a, b| {
            (&a.0.root_service, &a.0.root_operation).cmp(&(&b.0.root_service, &b.0.root_operation))
        });
    }

    /// The snapshot as records for a compacted topic: (key, JSON value), the meta record
    /// ([`META_KEY`]) first, then one per subject, keyed by its kind and subject (a
    /// subject's record replaces its previous one on compaction). Each record carries the
    /// version.
    pub fn into_records(self) -> Vec<(String, Vec<u8>)> {
        let version = self.version;
        let json = |entry: Entry| {
            serde_json::to_vec(&Envelope { version, entry }).expect("snapshot state serializes")
        };
        let mut out =
            Vec::with_capacity(1 + self.series.len() + self.values.len() + self.traces.len());
        out.push((
            META_KEY.to_string(),
            json(Entry::Meta {
                smallest_window_ns: self.smallest_window_ns,
                stats: self.stats,
            }),
        ));
        for (k, c) in self.series {
            out.push((record_key("series", &k), json(Entry::Series(k, c))));
        }
        for (k, c) in self.values {
            out.push((record_key("value", &k), json(Entry::Value(k, c))));
        }
        for (k, t) in self.traces {
            out.push((record_key("trace", &k), json(Entry::Trace(k, t))));
        }
        out
    }

    /// A snapshot from the latest record of each key of a snapshot topic; `Ok(None)`
    /// when there is no meta record (nothing was saved). A record of another version is
    /// [`SnapshotError::Version`].
    pub fn from_records(
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let mut snap = Snapshot {
            version: SNAPSHOT_VERSION,
            series: Vec::new(),
            values: Vec::new(),
            traces: Vec::new(),
            smallest_window_ns: None,
            stats: DetectStats::default(),
        };
        let mut meta = false;
        for (key, value) in records {
            let invalid = |source| SnapshotError::Record {
                key: key.clone(),
                source,
            };
            let v: Version = serde_json::from_slice(&value).map_err(invalid)?;
            if v.version != SNAPSHOT_VERSION {
                return Err(SnapshotError::Version {
                    found: v.version,
                    supported: SNAPSHOT_VERSION,
                });
            }
            let envelope: Envelope = serde_json::from_slice(&value).map_err(invalid)?;
            match envelope.entry {
                Entry::Meta {
                    smallest_window_ns,
                    stats,
                } => {
                    meta = true;
                    snap.smallest_window_ns = smallest_window_ns;
                    snap.stats = stats;
                }
                Entry::Series(k, c) => snap.series.push((k, c)),
                Entry::Value(k, c) => snap.values.push((k, c)),
                Entry::Trace(k, t) => snap.traces.push((k, t)),
            }
        }
        snap.sort();
        Ok(meta.then_some(snap))
    }

    /// Series, root operations and installed models it holds.
    pub fn counts(&self) -> SnapshotCounts {
        let cores = self
            .series
            .iter()
            .chain(&self.values)
            .map(|(_, c)| c)
            .chain(self.traces.iter().map(|(_, t)| &t.core));
        SnapshotCounts {
            series: self.series.len() + self.values.len(),
            root_operations: self.traces.len(),
            models: cores.filter(|c| c.has_model()).count(),
        }
    }

    /// Writes it to `dir/detect-snapshot.json` atomically (a temporary file in the same
    /// directory, synced, then renamed over the old one); returns the path and the bytes
    /// written. CPU- and I/O-bound: the runner calls it on a blocking thread.
    pub fn save(&self, dir: &Path) -> Result<(PathBuf, usize), SnapshotError> {
        let path = dir.join(SNAPSHOT_FILE);
        let tmp = dir.join(format!(".{SNAPSHOT_FILE}.tmp"));
        let io = |source| SnapshotError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let json = serde_json::to_vec(self).map_err(|source| SnapshotError::Json {
            path: path.clone(),
            source,
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok((path, json.len()))
    }

    /// Reads `dir/detect-snapshot.json`; `Ok(None)` when there is none. A snapshot of
    /// another version is [`SnapshotError::Version`] (checked before the rest is parsed).
    pub fn load(dir: &Path) -> Result<Option<Snapshot>, SnapshotError> {
        let path = dir.join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SnapshotError::Io { path, source }),
        };
        // the version first, so a snapshot of another format says so rather than "invalid"
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version = serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Json {
            path: path.clone(),
            source,
        })?;
        if v.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: v.version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let snap: Snapshot = serde_json::from_slice(&bytes)
            .map_err(|source| SnapshotError::Json { path, source })?;
        Ok(Some(snap))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::AnomalyScore;
    use crate::model::WindowAggregate;
    use crate::stage::detect::{DetectSettings, ModelKind};

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

    #[test]
    fn as_topic_records_a_snapshot_is_one_record_per_subject_and_reads_back_whole() {
        let mut a = Detector::new(settings());
        feed(&mut a, "service", 0..40);
        feed(&mut a, "operation", 0..40);
        a.train_inline();
        let snap = a.snapshot();
        let records = snap.clone().into_records();
        let keys: Vec<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys[0], META_KEY);
        assert_eq!(keys.len(), 1 + 2, "{keys:?}");
        assert!(
            keys[1..].iter().all(|k| k.starts_with("series/")),
            "{keys:?}"
        );
        // in any order (a compacted topic keeps the latest per key, not their order)
        let mut shuffled = records.clone();
        shuffled.reverse();
        assert!(
            Snapshot::from_records(shuffled).unwrap() == Some(snap),
            "read back as written"
        );
        // without the meta record nothing was saved
        assert!(Snapshot::from_records(records[1..].to_vec())
            .unwrap()
            .is_none());
        // a record of another version, or a damaged one, is an error
        let mut other = records.clone();
        other[1].1 = format!(
            r#"{{"version": {}, "entry": "from the future"}}"#,
            SNAPSHOT_VERSION + 1
        )
        .into_bytes();
        let e = Snapshot::from_records(other).unwrap_err();
        assert!(matches!(e, SnapshotError::Version { .. }), "{e}");
        let mut damaged = records;
        damaged[2].1.truncate(10);
        let e = Snapshot::from_records(damaged).unwrap_err();
        assert!(
            matches!(&e, SnapshotError::Record { key, .. } if key.starts_with("series/")),
            "{e}"
        );
    }
}
