//! Copying the write-ahead log into the database file on a thread of its own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so
//! the writer waited for the copy and its two `fsync`s: about half of the time of a
//! stored batch. The writer's connection turns it off and this thread, with a
//! connection of its own, runs passive checkpoints (they never block the writer or
//! readers; frames committed meanwhile wait for the next one) after commits, at most
//! one per [`MIN_INTERVAL`]. `journal_size_limit` still truncates the log after a
//! checkpoint that caught up.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Least time between two checkpoints: each `fsync`s the log and the database, so a
/// few per second keep the log short without spending the disk on them.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// The checkpoint thread of a writing [`Repository`](super::Repository).
pub(crate) struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `path`; `None` (the writer's commits
    /// then checkpoint as SQLite does by default) when the connection cannot be opened.
    pub(crate) fn start(path: &Path) -> Option<Self> {
        let conn = Connection::open(path)
            .and_then(|c| {
                c.execute_batch("PRAGMA busy_timeout = 5000;")?;
                Ok(c)
            })
            .map_err(|e| {
                tracing::warn!(path = %path.display(), error = %e,
                    "trace repository: no checkpoint thread, commits will checkpoint");
            })
            .ok()?;
        let (nudge, nudged) = mpsc::sync_channel(1);
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("repository-checkpoint".into())
            .spawn(move || run(conn, path, nudged))
            .ok()?;
        Some(Self {
            nudge: Some(nudge),
            thread: Some(thread),
        })
    }

    /// Tells the thread a transaction was committed; never waits.
    pub(crate) fn committed(&self) {
        if let Some(nudge) = &self.nudge {
            // full: a nudge is already waiting; disconnected: the thread is gone
            let _: Result<(), TrySendError<()>> = nudge.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // closing the channel ends the thread after its last checkpoint
        drop(self.nudge.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: Connection, path: PathBuf, nudged: mpsc::Receiver<()>) {
    let mut last = Instant::now() - MIN_INTERVAL;
    let mut pending = false;
    let mut failing = false;
    loop {
        let wait = if pending {
            MIN_INTERVAL.saturating_sub(last.elapsed())
        } else {
            Duration::from_secs(3600)
        };
        match nudged.recv_timeout(wait) {
            Ok(()) => pending = true,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if pending {
                    checkpoint(&conn, &path, &mut failing);
                }
                return;
            }
        }
        if pending && last.elapsed() >= MIN_INTERVAL {
            checkpoint(&conn, &path, &mut failing);
            last = Instant::now();
            pending = false;
        }
    }
}

/// One passive checkpoint; a failure is logged once until a checkpoint succeeds (the
/// writer's own statements report a full disk or a damaged file where they matter).
fn checkpoint(conn: &Connection, path: &Path, failing: &mut bool) {
    match conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
        Ok(()) => *failing = false,
        Err(e) => {
            if !std::mem::replace(failing, true) {
                tracing::warn!(path = %path.display(), error = %e,
                    "trace repository: checkpoint failed; the write-ahead log grows until one succeeds");
            }
        }
    }
}
