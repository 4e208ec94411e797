//! Snapshots of every detector's state (baselines, calibrators, history, models) as one
//! versioned JSON document, written atomically.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::core::Core;
use super::{DetectStats, SeriesKey, TraceKey, TraceState};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 2;

/// File name of the snapshot in its directory.
pub const SNAPSHOT_FILE: &str = "detect-snapshot.json";

/// Everything a [`Detector`](super::Detector) has learnt; serde JSON-serialisable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version ([`SNAPSHOT_VERSION`] when written by this build).
    pub version: u32,
    pub(super) series: Vec<(SeriesKey, Core)>,
    pub(super) values: Vec<(SeriesKey, Core)>,
    pub(super) traces: Vec<(TraceKey, TraceState)>,
    pub(super) smallest_window_ns: Option<i64>,
    pub(super) stats: DetectStats,
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
    pub(super) fn sort(&mut self) {
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
