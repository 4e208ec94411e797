//! The trace id index, in two levels.
//!
//! Trace ids are random, so a batch's new ids land all over a single index on them:
//! past a few hundred thousand traces every batch rewrote most of that index's pages
//! (about 20 MB of log for 4 MB of traces). New ids go to `trace_ids_recent`, a small
//! table whose pages stay few, and are merged into `trace_ids` in one sorted pass once
//! it holds [`RECENT_MAX`] ids: each page of the large table is then written once per
//! merge instead of once per batch.
//!
//! A mapping may outlive its row (a trace moved to a newer row, or retention deleted
//! it): a lookup takes only a row that exists and holds the same id, and a trace has at
//! most one row, so stale mappings are never wrong, only kept until
//! [`sweep`] or a newer mapping replaces them.

use rusqlite::{OptionalExtension, Transaction};

/// Ids in `trace_ids_recent` past which a batch merges them into `trace_ids`: with
/// 32 KB pages, about 30 pages to rewrite per batch, and a merge every 30 batches of
/// 1,000 new traces.
pub(crate) const RECENT_MAX: usize = 32_768;

/// The condition, on the `traces` table, that selects the row of the trace id `?1`.
pub(crate) const ROW_OF_ID: &str = "id IN (SELECT id FROM trace_ids_recent WHERE trace_id = ?1 \
     UNION ALL SELECT id FROM trace_ids WHERE trace_id = ?1) AND trace_id = ?1";

/// The row, flags and body stored for the trace id `key`.
pub(crate) fn find(
    tx: &Transaction<'_>,
    key: &[u8; 16],
) -> rusqlite::Result<Option<(i64, i64, Vec<u8>)>> {
    tx.prepare_cached(&format!(
        "SELECT id, flags, body FROM traces WHERE {ROW_OF_ID}"
    ))?
    .query_row([&key[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .optional()
}

/// Records that the trace id `key` is stored at `row`.
pub(crate) fn record(tx: &Transaction<'_>, key: &[u8; 16], row: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR REPLACE INTO trace_ids_recent (trace_id, id) VALUES (?1, ?2)")?
        .execute(rusqlite::params![&key[..], row])?;
    Ok(())
}

/// Merges the recent ids into the large table when there are more than `max` of them
/// (`recent` counts them, or more); returns how many are recent after.
pub(crate) fn merge_if_over(
    tx: &Transaction<'_>,
    recent: usize,
    max: usize,
) -> rusqlite::Result<usize> {
    if recent <= max {
        return Ok(recent);
    }
    // the recent table is keyed by id, so it is read in the large one's order
    tx.execute_batch(
        "INSERT OR REPLACE INTO trace_ids (trace_id, id) \
             SELECT trace_id, id FROM trace_ids_recent ORDER BY trace_id; \
         DELETE FROM trace_ids_recent;",
    )?;
    Ok(0)
}

/// How many ids are recent (at open).
pub(crate) fn recent_count(conn: &rusqlite::Connection) -> rusqlite::Result<usize> {
    conn.query_row("SELECT count(*) FROM trace_ids_recent", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as usize)
}

/// Deletes the mappings of rows older than the oldest trace stored (after retention);
/// returns how many.
pub(crate) fn sweep(tx: &Transaction<'_>) -> rusqlite::Result<u64> {
    // with no trace left, every mapping is stale
    let oldest = "(SELECT coalesce(min(id), 9223372036854775807) FROM traces)";
    let mut n = 0;
    for table in ["trace_ids_recent", "trace_ids"] {
        n += tx.execute(&format!("DELETE FROM {table} WHERE id < {oldest}"), [])?;
    }
    Ok(n as u64)
}
