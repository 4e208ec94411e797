//! The detect stage's snapshots in a running pipeline (`detect.snapshot_dir`): restored
//! at start, saved every `snapshot_every` (wall clock) and when the pipeline stops
//! (`replay`: at the end), so a restart does not learn from zero.
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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::stage::detect::{Detector, Snapshot, SnapshotCounts, SnapshotError, SNAPSHOT_FILE};
use crate::telemetry::metrics;

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

/// Reads `dir/detect-snapshot.json` (file I/O and JSON parsing: call it off the async
/// threads); one that cannot be used is moved to [`REJECTED_FILE`].
pub fn read(dir: &Path) -> Loaded {
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
pub fn apply(detector: &mut Detector, dir: &Path, loaded: Loaded) -> Restored {
    let result = match loaded.result {
        Ok(None) => {
            tracing::info!(dir = %dir.display(), "no detect snapshot: the detectors start from warm-up");
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
                dir = %dir.display(),
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
                dir = %dir.display(),
                error = %e,
                "detect snapshot not restored ({e}; {moved}): the detectors start from warm-up"
            );
            Restored::Rejected(e.to_string())
        }
    }
}

/// Writes `snapshot` to `dir` (blocking: serialisation and file I/O), and counts the
/// outcome; returns the bytes written.
pub fn save(snapshot: &Snapshot, dir: &Path) -> Result<usize, SnapshotError> {
    let started = Instant::now();
    match snapshot.save(dir) {
        Ok((path, bytes)) => {
            metrics::DETECT_SNAPSHOTS
                .with_label_values(&["saved"])
                .inc();
            metrics::DETECT_SNAPSHOT_BYTES.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            tracing::debug!(path = %path.display(), bytes, took_ms = started.elapsed().as_millis() as u64, "detect snapshot saved");
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
    dir: PathBuf,
    every: Duration,
    last: Instant,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Saver {
    /// Saves to `dir` every `every`, counted from `now`.
    pub fn new(dir: PathBuf, every: Duration, now: Instant) -> Self {
        Self {
            dir,
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
        let dir = self.dir.clone();
        self.running = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = save(&snapshot, &dir) {
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
        let dir = self.dir.clone();
        match tokio::task::spawn_blocking(move || save(&snapshot, &dir)).await {
            Ok(Ok(bytes)) => tracing::info!(
                dir = %self.dir.display(),
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
        let mut saver = Saver::new(tmp.path().to_path_buf(), every, t0);
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
        assert!(tmp.path().join(crate::stage::detect::SNAPSHOT_FILE).exists());
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
        let r = apply(&mut d, dir.path(), read(dir.path()));
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
        save(&d.snapshot(), dir.path()).unwrap();
        assert!(matches!(
            apply(&mut d, dir.path(), read(dir.path())),
            Restored::Restored(_)
        ));
    }

    #[test]
    fn no_snapshot_and_a_damaged_one_start_from_warm_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Detector::new(DetectSettings::default());
        assert_eq!(
            apply(&mut d, dir.path(), read(dir.path())),
            Restored::Nothing
        );
        std::fs::write(
            dir.path().join(SNAPSHOT_FILE),
            b"{\"version\": 1, \"series\": [",
        )
        .unwrap();
        assert!(
            matches!(apply(&mut d, dir.path(), read(dir.path())), Restored::Rejected(why) if why.contains("not valid"))
        );
        assert_eq!(d.subject_counts(), SnapshotCounts::default());
    }
}
