//! Copying the write-ahead log into the database file on a thread of its own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so
//! the writer waited for the copy and its two `fsync`s: about half of the time of a
//! stored batch. The writer's connection turns it off and this thread, with a
//! connection of its own, runs passive checkpoints (they never block the writer or
//! readers; frames committed meanwhile wait for the next one) after commits, at most
//! one per [`MIN_INTERVAL`]. `journal_size_limit` still truncates the log after a
//! checkpoint that caught up.
//!
//! Under a steady stream of batches a passive checkpoint never catches up with the
//! writer, and SQLite starts the log over only when a write transaction begins after
//! one that did: the log would grow without bound (gigabytes in the store bench, every
//! page of it new to the page cache, and every reader's lookup in its index slower).
//! So once the log holds more than [`LOG_LIMIT_BYTES`], the writer asks for a
//! checkpoint before its next transaction and waits for it ([`Checkpointer::drain`]):
//! with no write in flight it copies the rest, and the transaction starts the log over.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Least time between two checkpoints: each `fsync`s the log and the database, so a
/// few per second keep the log short without spending the disk on them.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// Length of the log past which the writer waits for a checkpoint so that the log
/// starts over (the same as the connection's `journal_size_limit`). A wait lasts about
/// as long whatever the limit (the passive checkpoints before it copied most of the
/// log; what is left is the copy and `fsync` since the last one), so a longer log waits
/// less often: 256 MB stored 28,300 traces/s over the store bench's million against
/// 25,600 with 64 MB, for up to 256 MB of log file on disk.
pub(crate) const LOG_LIMIT_BYTES: i64 = 256 << 20;

/// What the writer tells the thread.
enum Nudge {
    /// A transaction was committed.
    Committed,
    /// Checkpoint now and answer when done.
    Drain(SyncSender<()>),
}

/// The checkpoint thread of a writing [`Repository`](super::Repository).
pub(crate) struct Checkpointer {
    nudge: Option<SyncSender<Nudge>>,
    thread: Option<JoinHandle<()>>,
    /// Frames in the log at the last checkpoint (-1 before the first).
    log_frames: Arc<AtomicI64>,
    /// Checkpoints the writer waited for.
    drains: AtomicI64,
    /// [`LOG_LIMIT_BYTES`] in frames (pages) of this database.
    limit_frames: i64,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `path`; `None` (the writer's commits
    /// then checkpoint as SQLite does by default) when the connection cannot be opened.
    pub(crate) fn start(path: &Path) -> Option<Self> {
        let conn = Connection::open(path)
            .and_then(|c| {
                c.execute_batch("PRAGMA busy_timeout = 5000;")?;
                let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                Ok((c, page))
            })
            .map_err(|e| {
                tracing::warn!(path = %path.display(), error = %e,
                    "trace repository: no checkpoint thread, commits will checkpoint");
            })
            .ok()?;
        let (conn, page) = conn;
        let (nudge, nudged) = mpsc::sync_channel(1);
        let path = path.to_path_buf();
        let log_frames = Arc::new(AtomicI64::new(-1));
        let frames = Arc::clone(&log_frames);
        let thread = std::thread::Builder::new()
            .name("repository-checkpoint".into())
            .spawn(move || run(conn, path, nudged, frames))
            .ok()?;
        Some(Self {
            nudge: Some(nudge),
            thread: Some(thread),
            log_frames,
            drains: AtomicI64::new(0),
            limit_frames: LOG_LIMIT_BYTES / page.max(512),
        })
    }

    /// Tells the thread a transaction was committed; never waits.
    pub(crate) fn committed(&self) {
        if let Some(nudge) = &self.nudge {
            // full: a nudge is already waiting; disconnected: the thread is gone
            let _: Result<(), TrySendError<Nudge>> = nudge.try_send(Nudge::Committed);
        }
    }

    /// Frames in the log at the last checkpoint (-1 before the first).
    #[cfg(test)]
    pub(crate) fn log_frames(&self) -> i64 {
        self.log_frames.load(Ordering::Relaxed)
    }

    /// Checkpoints the writer waited for.
    #[cfg(test)]
    pub(crate) fn drains(&self) -> i64 {
        self.drains.load(Ordering::Relaxed)
    }

    /// Sets the length past which [`Checkpointer::drain`] waits, in frames.
    #[cfg(test)]
    pub(crate) fn set_limit_frames(&mut self, frames: i64) {
        self.limit_frames = frames;
    }

    /// Before a write transaction: when the log has grown past [`LOG_LIMIT_BYTES`],
    /// waits for a checkpoint of all of it, so that the transaction starts it over.
    pub(crate) fn drain(&self) {
        if self.log_frames.load(Ordering::Relaxed) <= self.limit_frames {
            return;
        }
        let Some(nudge) = &self.nudge else { return };
        let (done, wait) = mpsc::sync_channel(1);
        if nudge.send(Nudge::Drain(done)).is_ok() {
            // an error: the thread is gone, and there is nothing to wait for
            let _ = wait.recv();
            self.drains.fetch_add(1, Ordering::Relaxed);
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

fn run(conn: Connection, path: PathBuf, nudged: mpsc::Receiver<Nudge>, frames: Arc<AtomicI64>) {
    let mut last = Instant::now() - MIN_INTERVAL;
    let mut pending = false;
    let mut failing = false;
    let checkpoint_and_report = |failing: &mut bool| {
        if let Some(log) = checkpoint(&conn, &path, failing) {
            frames.store(log, Ordering::Relaxed);
        }
    };
    loop {
        let wait = if pending {
            MIN_INTERVAL.saturating_sub(last.elapsed())
        } else {
            Duration::from_secs(3600)
        };
        match nudged.recv_timeout(wait) {
            Ok(Nudge::Committed) => pending = true,
            Ok(Nudge::Drain(done)) => {
                checkpoint_and_report(&mut failing);
                // the writer's next transaction starts the log over
                frames.store(0, Ordering::Relaxed);
                last = Instant::now();
                pending = false;
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if pending {
                    checkpoint_and_report(&mut failing);
                }
                return;
            }
        }
        if pending && last.elapsed() >= MIN_INTERVAL {
            checkpoint_and_report(&mut failing);
            last = Instant::now();
            pending = false;
        }
    }
}

/// One passive checkpoint; the frames in the log, or `None` when it failed. A failure
/// is logged once until a checkpoint succeeds (the writer's own statements report a
/// full disk or a damaged file where they matter).
fn checkpoint(conn: &Connection, path: &Path, failing: &mut bool) -> Option<i64> {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
    match result {
        Ok(log) => {
            *failing = false;
            Some(log)
        }
        Err(e) => {
            if !std::mem::replace(failing, true) {
                tracing::warn!(path = %path.display(), error = %e,
                    "trace repository: checkpoint failed; the write-ahead log grows until one succeeds");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::tests::{open, record, shop_trace};

    /// Frames in the log of `repo`'s file and how many are copied, by a passive
    /// checkpoint on the writer's connection.
    fn log(repo: &super::super::Repository) -> (i64, i64) {
        repo.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .unwrap()
    }

    #[test]
    fn a_long_log_makes_the_next_batch_wait_for_a_checkpoint_and_start_it_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = open(&dir);
        repo.checkpointer.as_mut().unwrap().set_limit_frames(1);
        let batch = |first: u128| -> Vec<_> {
            (first..first + 200)
                .map(|id| record(id, shop_trace(id, id as i64, 0), false))
                .collect()
        };
        repo.store_traces(&batch(1)).unwrap();
        let checkpointer = repo.checkpointer.as_ref().unwrap();
        assert_eq!(
            checkpointer.drains(),
            0,
            "the log was empty before the first batch"
        );
        // the commit's checkpoint reports the log's length (a wait for an event, bounded)
        let deadline = Instant::now() + Duration::from_secs(30);
        while checkpointer.log_frames() < 0 {
            assert!(Instant::now() < deadline, "no checkpoint after the commit");
            std::thread::yield_now();
        }
        let after_first = checkpointer.log_frames();
        assert!(after_first > 1, "one batch takes {after_first} frames");
        repo.store_traces(&batch(1_000)).unwrap();
        assert_eq!(repo.checkpointer.as_ref().unwrap().drains(), 1);
        let (after_second, copied) = log(&repo);
        assert!(
            after_second <= after_first,
            "the log started over: {after_second} frames after the second batch, {after_first} after the first"
        );
        assert_eq!(
            copied, after_second,
            "an idle writer's checkpoint copies all"
        );
        assert_eq!(repo.trace_count().unwrap(), 400);
    }
}
