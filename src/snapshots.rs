//! The detect stage's snapshots in a running pipeline (`detect.snapshot_dir`, or
//! `detect.snapshot_topic`): restored at start, saved every `snapshot_every` (wall clock)
//! and when the pipeline stops (`replay`: at the end), so a restart does not learn from
//! zero.
//!
//! **On a topic** (compacted, `cleanup.policy=compact`), a snapshot is one record per
//! subject keyed by kind and subject, plus a `meta` record; subjects gone since the last
//! save get a tombstone. At start the topic is read from its beginning to its end, the
//! latest record of each key counts. A save is not atomic: a pipeline killed while
//! writing leaves some subjects at the previous save's state, each one whole.
//!
//! **Restore never stops the pipeline.** A snapshot that cannot be used (another format
//! version, a damaged or unreadable file) is logged as a warning, counted
//! (`spanline_detect_snapshots_total{result="rejected"}`) and renamed to
//! [`REJECTED_FILE`] in the same directory (kept for inspection, or for a rollback to
//! the build that wrote it); the detectors then start from warm-up, as without a
//! snapshot. Losing learnt state costs `min_samples` windows of warm-up; refusing to
//! start would cost the whole pipeline.
//!
//! **Saving never blocks the async threads for long.** The runner clones the learnt
//! state ([`Detector::snapshot`]) on its thread, then serialises and writes it on the
//! blocking pool; the file is replaced atomically (temporary file, sync, rename), and
//! one save runs at a time. A failed save is a warning and a count
//! (`result="save_failed"`); the next period tries again.
//!
//! A snapshot is not tied to committed offsets: after a restart, records re-read from
//! Kafka are learnt a second time (or, when the snapshot is older than the last commit,
//! a few windows are not learnt at all), which moves baselines of hundreds of samples
//! by a handful of samples.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kafka::state::StateTopic;
use crate::stage::detect::{Detector, Snapshot, SnapshotCounts, SnapshotError, SNAPSHOT_FILE};
use crate::telemetry::metrics;

/// How long reading or writing a snapshot topic may take.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(60);

/// Where snapshots are kept.
#[derive(Debug, Clone)]
pub enum Store {
    /// `dir/detect-snapshot.json`.
    Dir(PathBuf),
    /// A compacted topic; the keys of the last save (for tombstones).
    Topic(StateTopic, Arc<Mutex<BTreeSet<String>>>),
}

impl Store {
    pub fn topic(topic: StateTopic) -> Self {
        Store::Topic(topic, Arc::default())
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Dir(dir) => write!(f, "{}", dir.display()),
            Store::Topic(t, _) => write!(f, "topic {}", t.topic),
        }
    }
}

/// Where a snapshot that could not be restored is moved.
pub const REJECTED_FILE: &str = "detect-snapshot.rejected.json";

/// A snapshot read from its directory (by [`read`], on a blocking thread).
#[derive(Debug)]
pub struct Loaded {
    result: Result<Option<Snapshot>, SnapshotError>,
    /// Where a rejected snapshot was moved.
    moved_to: Option<PathBuf>,
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// There was no snapshot: the detectors start from warm-up.
    Nothing,
    /// The detectors continue from the snapshot; what they hold now.
    Restored(SnapshotCounts),
    /// There was a snapshot that could not be used (why): the detectors start from
    /// warm-up.
    Rejected(String),
}

/// Reads the snapshot (I/O and JSON parsing: call it off the async threads); a file that
/// cannot be used is moved to [`REJECTED_FILE`] (a topic's records stay: the next save
/// replaces them).
pub fn read(store: &Store) -> Loaded {
    let dir = match store {
        Store::Dir(dir) => dir,
        Store::Topic(t, written) => {
            let result = t
                .read(TOPIC_TIMEOUT)
                .map_err(|e| SnapshotError::Topic {
                    topic: t.topic.clone(),
                    source: Box::new(e),
                })
                .and_then(|records| {
                    // what is there is what the next save replaces or deletes
                    *written.lock().expect("keys") = records.keys().cloned().collect();
                    Snapshot::from_records(records)
                });
            return Loaded {
                result,
                moved_to: None,
            };
        }
    };
    let result = Snapshot::load(dir);
    let moved_to = match &result {
        Err(_) => {
            let to = dir.join(REJECTED_FILE);
            std::fs::rename(dir.join(SNAPSHOT_FILE), &to)
                .ok()
                .map(|()| to)
        }
        Ok(_) => None,
    };
    Loaded { result, moved_to }
}

/// Restores `detector` from what [`read`] found, and logs and counts the outcome.
pub fn apply(detector: &mut Detector, store: &Store, loaded: Loaded) -> Restored {
    let result = match loaded.result {
        Ok(None) => {
            tracing::info!(store = %store, "no detect snapshot: the detectors start from warm-up");
            return Restored::Nothing;
        }
        Ok(Some(snapshot)) => detector.restore(snapshot),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            let counts = detector.subject_counts();
            metrics::DETECT_SNAPSHOTS
                .with_label_values(&["restored"])
                .inc();
            tracing::info!(
                store = %store,
                series = counts.series,
                root_operations = counts.root_operations,
                models = counts.models,
                "detect snapshot restored: {} series, {} root operations, {} models",
                counts.series,
                counts.root_operations,
                counts.models,
            );
            Restored::Restored(counts)
        }
        Err(e) => {
            metrics::DETECT_SNAPSHOTS
                .with_label_values(&["rejected"])
                .inc();
            let moved = loaded.moved_to.as_ref().map_or_else(
                || "left in place".to_string(),
                |p| format!("moved to {}", p.display()),
            );
            tracing::warn!(
                store = %store,
                error = %e,
                "detect snapshot not restored ({e}; {moved}): the detectors start from warm-up"
            );
            Restored::Rejected(e.to_string())
        }
    }
}

/// Writes `snapshot` to `store` (blocking: serialisation and I/O), and counts the
/// outcome; returns the bytes written.
pub fn save(snapshot: Snapshot, store: &Store) -> Result<usize, SnapshotError> {
    let started = Instant::now();
    let result = match store {
        Store::Dir(dir) => snapshot.save(dir).map(|(_, bytes)| bytes),
        Store::Topic(t, written) => {
            let mut records: Vec<(String, Option<Vec<u8>>)> = snapshot
                .into_records()
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect();
            let keys: BTreeSet<String> = records.iter().map(|(k, _)| k.clone()).collect();
            let mut written = written.lock().expect("keys");
            // subjects dropped since the last save are deleted
            records.extend(written.difference(&keys).map(|k| (k.clone(), None)));
            let result = t
                .write(&records, TOPIC_TIMEOUT)
                .map_err(|e| SnapshotError::Topic {
                    topic: t.topic.clone(),
                    source: Box::new(e),
                });
            if result.is_ok() {
                *written = keys;
            }
            result
        }
    };
    match result {
        Ok(bytes) => {
            metrics::DETECT_SNAPSHOTS
                .with_label_values(&["saved"])
                .inc();
            metrics::DETECT_SNAPSHOT_BYTES.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            tracing::debug!(store = %store, bytes, took_ms = started.elapsed().as_millis() as u64, "detect snapshot saved");
            Ok(bytes)
        }
        Err(e) => {
            metrics::DETECT_SNAPSHOTS
                .with_label_values(&["save_failed"])
                .inc();
            Err(e)
        }
    }
}

/// Periodic saves of the live runner, one at a time on the blocking pool.
pub struct Saver {
    store: Store,
    every: Duration,
    last: Instant,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Saver {
    /// Saves to `store` every `every`, counted from `now`.
    pub fn new(store: Store, every: Duration, now: Instant) -> Self {
        Self {
            store,
            every,
            last: now,
            running: None,
        }
    }

    /// Whether a save is due at `now`: `every` has passed since the last one started,
    /// and it has finished.
    pub fn due(&mut self, now: Instant) -> bool {
        if self.running.as_ref().is_some_and(|t| t.is_finished()) {
            self.running = None;
        }
        self.running.is_none() && now.saturating_duration_since(self.last) >= self.every
    }

    /// Writes `snapshot` on the blocking pool, a save started at `now`.
    pub fn start(&mut self, now: Instant, snapshot: Snapshot) {
        self.last = now;
        let store = self.store.clone();
        self.running = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = save(snapshot, &store) {
                tracing::warn!(error = %e, "detect snapshot not saved; the next one is tried in snapshot_every");
            }
        }));
    }

    /// Waits for a running save, then writes the final `snapshot` (when the pipeline
    /// stops).
    pub async fn finish(mut self, snapshot: Snapshot) {
        if let Some(t) = self.running.take() {
            let _ = t.await;
        }
        let counts = snapshot.counts();
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || save(snapshot, &store)).await {
            Ok(Ok(bytes)) => tracing::info!(
                store = %self.store,
                bytes,
                series = counts.series,
                root_operations = counts.root_operations,
                models = counts.models,
                "detect snapshot saved"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "detect snapshot not saved at shutdown; the last periodic one stays")
            }
            Err(e) => tracing::warn!(error = %e, "detect snapshot not saved at shutdown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::detect::{DetectSettings, Detector, SNAPSHOT_VERSION};

    #[tokio::test]
    async fn saves_are_due_every_period_and_one_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let every = Duration::from_secs(60);
        let mut saver = Saver::new(Store::Dir(tmp.path().to_path_buf()), every, t0);
        assert!(!saver.due(t0 + Duration::from_secs(59)));
        assert!(saver.due(t0 + every));
        let snapshot = Detector::new(DetectSettings::default()).snapshot();
        saver.start(t0 + every, snapshot.clone());
        // while it runs no other save starts, however late
        let running = saver.running.take().unwrap();
        saver.running = Some(tokio::task::spawn(std::future::pending()));
        assert!(!saver.due(t0 + 10 * every));
        saver.running.take().unwrap().abort();
        running.await.unwrap();
        assert!(tmp
            .path()
            .join(crate::stage::detect::SNAPSHOT_FILE)
            .exists());
        // the period counts from the start of the last save
        assert!(!saver.due(t0 + 2 * every - Duration::from_secs(1)));
        assert!(saver.due(t0 + 2 * every));
        saver.finish(snapshot).await;
    }

    #[test]
    fn a_snapshot_of_another_version_is_moved_aside_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SNAPSHOT_FILE),
            format!("{{\"version\": {}}}", SNAPSHOT_VERSION + 1),
        )
        .unwrap();
        let before = metrics::DETECT_SNAPSHOTS
            .with_label_values(&["rejected"])
            .get();
        let mut d = Detector::new(DetectSettings::default());
        let store = Store::Dir(dir.path().to_path_buf());
        let r = apply(&mut d, &store, read(&store));
        let found = format!("version {}", SNAPSHOT_VERSION + 1);
        assert!(
            matches!(&r, Restored::Rejected(why) if why.contains(&found)),
            "{r:?}"
        );
        assert!(
            metrics::DETECT_SNAPSHOTS
                .with_label_values(&["rejected"])
                .get()
                > before
        );
        assert!(!dir.path().join(SNAPSHOT_FILE).exists());
        assert!(dir.path().join(REJECTED_FILE).exists());
        // the next save writes a good one again
        save(d.snapshot(), &store).unwrap();
        assert!(matches!(
            apply(&mut d, &store, read(&store)),
            Restored::Restored(_)
        ));
    }

    #[test]
    fn no_snapshot_and_a_damaged_one_start_from_warm_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Detector::new(DetectSettings::default());
        let store = Store::Dir(dir.path().to_path_buf());
        assert_eq!(apply(&mut d, &store, read(&store)), Restored::Nothing);
        std::fs::write(
            dir.path().join(SNAPSHOT_FILE),
            b"{\"version\": 1, \"series\": [",
        )
        .unwrap();
        assert!(
            matches!(apply(&mut d, &store, read(&store)), Restored::Rejected(why) if why.contains("not valid"))
        );
        assert_eq!(d.subject_counts(), SnapshotCounts::default());
    }
}
