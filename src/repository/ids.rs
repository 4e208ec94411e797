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

use fastbloom::BloomFilter;
use rusqlite::{OptionalExtension, Transaction};

/// Ids in `trace_ids_recent` past which a batch merges them into `trace_ids`: with
/// 32 KB pages, about 30 pages to rewrite per batch, and a merge every 30 batches of
/// 1,000 new traces.
pub(crate) const RECENT_MAX: usize = 32_768;

/// The condition, on the `traces` table, that selects the row of the trace id `?1`.
pub(crate) const ROW_OF_ID: &str = "id IN (SELECT id FROM trace_ids_recent WHERE trace_id = ?1 \
     UNION ALL SELECT id FROM trace_ids WHERE trace_id = ?1) AND trace_id = ?1";

/// Bits of the [`KnownIds`] filter: 16 MB, under one false positive in 10,000 lookups
/// up to 5 million stored ids and one in 20 at 20 million; past that most new ids are
/// looked up, as without a filter.
const FILTER_BITS: usize = 1 << 27;

/// Hashes per id in the filter: the best for about 13 million ids.
const FILTER_HASHES: u32 = 7;

/// Every trace id the id index holds, as a Bloom filter: an id it does not contain is
/// not stored, so most of a batch's ids (new ones) need no lookup. It is filled from
/// both levels of the index when the writer opens the file and as ids are recorded;
/// ids deleted since (moved rows, retention) stay in it and are looked up, as are its
/// false positives.
pub(crate) struct KnownIds(BloomFilter);

impl KnownIds {
    /// The ids of the index of `conn`'s file.
    pub(crate) fn load(conn: &rusqlite::Connection) -> rusqlite::Result<Self> {
        let mut filter = BloomFilter::with_num_bits(FILTER_BITS).hashes(FILTER_HASHES);
        let mut st = conn.prepare(
            "SELECT trace_id FROM trace_ids UNION ALL SELECT trace_id FROM trace_ids_recent",
        )?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            filter.insert(row.get_ref(0)?.as_blob()?);
        }
        Ok(Self(filter))
    }

    /// False when `key` is certainly not stored.
    pub(crate) fn may_hold(&self, key: &[u8; 16]) -> bool {
        self.0.contains(&key[..])
    }

    fn insert(&mut self, key: &[u8; 16]) {
        self.0.insert(&key[..]);
    }
}

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

/// Records that the trace id `key` is stored at `row` (in the filter at once: a batch
/// rolled back leaves it there, a false positive).
pub(crate) fn record(
    tx: &Transaction<'_>,
    known: Option<&mut KnownIds>,
    key: &[u8; 16],
    row: i64,
) -> rusqlite::Result<()> {
    if let Some(known) = known {
        known.insert(key);
    }
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
