//! Snapshots of every detector's state (baselines, calibrators, history, models) as one
//! versioned JSON document, written atomically.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::core::Core;
use super::{DetectStats, Detector, SeriesKey, TraceKey, TraceState};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

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
    #[error("detect snapshot has version {found}, this build reads version {supported}: remove the snapshot to start the detectors from warm-up")]
    Version { found: u32, supported: u32 },
    #[error("detect snapshot {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("detect snapshot {path} is not valid: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
}

impl Detector {
    /// The learnt state of every subject (queued training jobs are not part of it).
    pub fn snapshot(&self) -> Snapshot {
        let mut series: Vec<_> = self.series.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut values: Vec<_> = self.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut traces: Vec<_> = self.traces.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        // a stable order makes snapshots of equal state equal
        series.sort_by(|a, b| (a.0.window_size_ns, &a.0.scope, &a.0.key).cmp(&(b.0.window_size_ns, &b.0.scope, &b.0.key)));
        values.sort_by(|a, b| (a.0.window_size_ns, &a.0.scope, &a.0.key).cmp(&(b.0.window_size_ns, &b.0.scope, &b.0.key)));
        traces.sort_by(|a, b| (&a.0.root_service, &a.0.root_operation).cmp(&(&b.0.root_service, &b.0.root_operation)));
        Snapshot {
            version: SNAPSHOT_VERSION,
            series,
            values,
            traces,
            smallest_window_ns: self.smallest_window_ns,
            stats: self.stats.clone(),
        }
    }

    /// Replaces the learnt state with a snapshot's. Training requests that were pending
    /// are asked again by the next samples; queued jobs are dropped.
    pub fn restore(&mut self, s: Snapshot) -> Result<(), SnapshotError> {
        if s.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version { found: s.version, supported: SNAPSHOT_VERSION });
        }
        let unpend = |mut c: Core| {
            c.clear_pending();
            c
        };
        self.series = s.series.into_iter().map(|(k, c)| (k, unpend(c))).collect();
        self.values = s.values.into_iter().map(|(k, c)| (k, unpend(c))).collect();
        self.traces = s
            .traces
            .into_iter()
            .map(|(k, mut t)| {
                t.core.clear_pending();
                (k, t)
            })
            .collect();
        self.smallest_window_ns = s.smallest_window_ns;
        self.stats = s.stats;
        self.jobs.clear();
        Ok(())
    }

    /// Writes the snapshot to `dir/detect-snapshot.json` atomically (a temporary file in
    /// the same directory, synced, then renamed over the old one); returns its path.
    pub fn save_snapshot(&self, dir: &Path) -> Result<PathBuf, SnapshotError> {
        let path = dir.join(SNAPSHOT_FILE);
        let tmp = dir.join(format!(".{SNAPSHOT_FILE}.tmp"));
        let io = |source| SnapshotError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let json = serde_json::to_vec(&self.snapshot()).map_err(|source| SnapshotError::Json { path: path.clone(), source })?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(path)
    }

    /// Restores from `dir/detect-snapshot.json`; `Ok(false)` when there is none.
    pub fn load_snapshot(&mut self, dir: &Path) -> Result<bool, SnapshotError> {
        let path = dir.join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(SnapshotError::Io { path, source }),
        };
        // the version first, so a snapshot of another format says so rather than "invalid"
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version = serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Json { path: path.clone(), source })?;
        if v.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version { found: v.version, supported: SNAPSHOT_VERSION });
        }
        let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Json { path, source })?;
        self.restore(snap)?;
        Ok(true)
    }
}
