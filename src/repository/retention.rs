//! Retention: by age (event time against a given `now`) and by size (oldest traces
//! first), then returning freed pages to the filesystem.

use super::error::{Context, RepositoryError};
use super::ids;
use super::postings::{drop_batch, kill_rows};
use super::prepare::DEPENDENCY_BUCKET_NS;
use super::Repository;

/// What one [`Repository::enforce_retention`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Traces older than `max_age`.
    pub traces_by_age: u64,
    /// Oldest traces deleted to get under `max_bytes` (whole stored batches, oldest
    /// first).
    pub traces_by_size: u64,
    pub windows: u64,
    pub alerts: u64,
    /// Pages in use before and after, in bytes.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Repository {
    /// Applies the retention settings at event time `now_ns`: deletes traces that
    /// started, windows that ended and alert events that happened more than `max_age`
    /// before it (a firing alert still active is kept), then the oldest traces while
    /// the pages in use exceed `max_bytes`, then reclaims the freed pages.
    pub fn enforce_retention(&mut self, now_ns: i64) -> Result<RetentionReport, RepositoryError> {
        const DURING: &str = "enforcing retention";
        let mut report = RetentionReport {
            bytes_before: self.used_bytes()?,
            ..Default::default()
        };
        if let Some(max_age) = self.retention.max_age_ns {
            let cutoff = now_ns.saturating_sub(max_age.max(0));
            report.traces_by_age = self.delete_before(cutoff)?;
            let cutoff_ms = cutoff.div_euclid(1_000_000);
            let minute = cutoff.div_euclid(DEPENDENCY_BUCKET_NS) * DEPENDENCY_BUCKET_NS;
            let tx = self.conn.transaction().during(&self.path, DURING)?;
            report.windows = tx
                .execute("DELETE FROM windows WHERE end_ns < ?1", [cutoff])
                .during(&self.path, DURING)? as u64;
            report.alerts = tx
                .execute(
                    "DELETE FROM alerts AS a WHERE a.at_ms < ?1 AND NOT (a.status = 0 \
                     AND NOT EXISTS (SELECT 1 FROM alerts r WHERE r.fingerprint = a.fingerprint \
                         AND r.status = 1 AND r.starts_at_ms >= a.starts_at_ms) \
                     AND NOT EXISTS (SELECT 1 FROM alerts n WHERE n.fingerprint = a.fingerprint \
                         AND n.status = 0 AND n.starts_at_ms > a.starts_at_ms))",
                    [cutoff_ms],
                )
                .during(&self.path, DURING)? as u64;
            tx.execute("DELETE FROM dependencies WHERE minute_ns < ?1", [minute])
                .during(&self.path, DURING)?;
            tx.commit().during(&self.path, DURING)?;
        }
        if let Some(max_bytes) = self.retention.max_bytes {
            loop {
                let used = self.used_bytes()?;
                if used <= max_bytes {
                    break;
                }
                let batches: i64 = self
                    .conn
                    .query_row("SELECT count(*) FROM batches", [], |r| r.get(0))
                    .during(&self.path, DURING)?;
                if batches == 0 {
                    break;
                }
                // the batches' share of the pages is unknown: aim a little past the excess
                let per_batch = (used / batches as u64).max(1);
                let want = (used - max_bytes) / per_batch + 1;
                report.traces_by_size += self.drop_oldest_batches(want)?;
            }
        }
        if report.traces_by_age + report.traces_by_size > 0 {
            let tx = self.conn.transaction().during(&self.path, DURING)?;
            ids::sweep(&tx).during(&self.path, DURING)?;
            tx.commit().during(&self.path, DURING)?;
            self.recent_ids = ids::recent_count(&self.conn).during(&self.path, DURING)?;
        }
        if report.traces_by_age + report.traces_by_size + report.windows + report.alerts > 0 {
            self.reclaim().during(&self.path, "reclaiming space")?;
        }
        report.bytes_after = self.used_bytes()?;
        Ok(report)
    }

    /// Returns free pages to the filesystem: the vacuum moves them to the end of the
    /// file (one page per step of the pragma), the checkpoint truncates the file.
    fn reclaim(&self) -> rusqlite::Result<()> {
        let mut st = self.conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = st.query([])?;
        while rows.next()?.is_some() {}
        drop(rows);
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    /// Deletes the traces that started before `cutoff`: whole batches whose newest
    /// trace did, then single traces of the batches left (marked dead in their batch).
    fn delete_before(&mut self, cutoff: i64) -> Result<u64, RepositoryError> {
        const DURING: &str = "deleting old traces";
        let path = self.path.clone();
        let tx = self.conn.transaction().during(&path, DURING)?;
        let old: Vec<(i64, i64)> = {
            let mut st = tx
                .prepare_cached("SELECT batch, last_row FROM batches WHERE max_start < ?1")
                .during(&path, DURING)?;
            let rows = st
                .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))
                .during(&path, DURING)?;
            rows.collect::<rusqlite::Result<_>>()
                .during(&path, DURING)?
        };
        let mut deleted = 0;
        for (batch, last_row) in old {
            deleted += drop_batch(&tx, batch, last_row).during(&path, DURING)?;
        }
        let single: Vec<i64> = {
            let mut st = tx
                .prepare_cached("SELECT id FROM traces WHERE start_ns < ?1")
                .during(&path, DURING)?;
            let rows = st.query_map([cutoff], |r| r.get(0)).during(&path, DURING)?;
            rows.collect::<rusqlite::Result<_>>()
                .during(&path, DURING)?
        };
        for row in &single {
            tx.prepare_cached("DELETE FROM traces WHERE id = ?1")
                .and_then(|mut st| st.execute([row]))
                .during(&path, DURING)?;
        }
        kill_rows(&tx, &single).during(&path, DURING)?;
        tx.commit().during(&path, DURING)?;
        Ok(deleted + single.len() as u64)
    }

    /// Deletes the `n` batches with the oldest newest trace; returns the traces deleted.
    fn drop_oldest_batches(&mut self, n: u64) -> Result<u64, RepositoryError> {
        const DURING: &str = "deleting the oldest traces";
        let path = self.path.clone();
        let tx = self.conn.transaction().during(&path, DURING)?;
        let old: Vec<(i64, i64)> = {
            let mut st = tx
                .prepare_cached(
                    "SELECT batch, last_row FROM batches ORDER BY max_start, batch LIMIT ?1",
                )
                .during(&path, DURING)?;
            let rows = st
                .query_map([n.max(1) as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .during(&path, DURING)?;
            rows.collect::<rusqlite::Result<_>>()
                .during(&path, DURING)?
        };
        let mut deleted = 0;
        for (batch, last_row) in old {
            deleted += drop_batch(&tx, batch, last_row).during(&path, DURING)?;
        }
        tx.commit().during(&path, DURING)?;
        Ok(deleted)
    }
}
