//! The search index: per batch of stored traces, a posting list per term, and the
//! start and duration of every row of the batch.
//!
//! One row per (batch, term) instead of one per (term, trace): a batch of 1,000
//! workload traces has about 88,000 (trace, term) pairs but a few thousand distinct
//! terms, and a posting costs one or a few bytes. A trace that is amended moves to a
//! new row in the batch being written; its old row is marked dead in its batch, so a
//! stale posting never matches.
//!
//! Encodings (varints as in `codec.rs`):
//! - posting list: `kind u8` (1: with durations), `n`, then per entry the row offset
//!   within the batch as a delta from the previous entry, and for kind 1 the duration;
//! - batch rows: per row from `batch` to `last_row`, 0 for a dead row, else the start
//!   minus the batch's smallest start plus 1, then the trace's duration.

use rusqlite::{params, OptionalExtension, Transaction};
use rustc_hash::FxHashMap;

use super::codec::{get_varint, put_varint, DecodeError};
use super::terms::Term;

/// One entry of a posting list: row offset in the batch and, for service and
/// operation terms, the duration of the longest span.
pub(crate) type Posting = (u32, Option<i64>);

fn encode_list(entries: &[Posting]) -> Vec<u8> {
    let with_dur = entries.first().is_some_and(|e| e.1.is_some());
    let mut out = Vec::with_capacity(2 + entries.len() * if with_dur { 5 } else { 1 });
    out.push(u8::from(with_dur));
    put_varint(&mut out, entries.len() as u64);
    let mut prev = 0u32;
    for &(offset, dur) in entries {
        put_varint(&mut out, u64::from(offset - prev));
        prev = offset;
        if with_dur {
            put_varint(&mut out, dur.unwrap_or(0).max(0) as u64);
        }
    }
    out
}

/// Decodes a posting list, keeping the entries whose duration (when the list has
/// durations) is within `dur`.
pub(crate) fn decode_list(
    blob: &[u8],
    dur: (i64, i64),
    out: &mut Vec<u32>,
) -> Result<(), DecodeError> {
    out.clear();
    let mut pos = 1;
    let with_dur = match blob.first() {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(DecodeError("bad posting list kind")),
    };
    let n = get_varint(blob, &mut pos)?;
    let mut offset = 0u64;
    for _ in 0..n {
        offset += get_varint(blob, &mut pos)?;
        let keep = if with_dur {
            let d = get_varint(blob, &mut pos)? as i64;
            d >= dur.0 && d <= dur.1
        } else {
            true
        };
        if keep {
            out.push(u32::try_from(offset).map_err(|_| DecodeError("offset out of range"))?);
        }
    }
    Ok(())
}

/// A row of a batch: the trace's start and duration, or `None` when it is dead.
pub(crate) type BatchRow = Option<(i64, i64)>;

fn encode_rows(min_start: i64, rows: &[BatchRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 8);
    for r in rows {
        match r {
            None => out.push(0),
            Some((start, dur)) => {
                put_varint(
                    &mut out,
                    (start.wrapping_sub(min_start) as u64).wrapping_add(1),
                );
                put_varint(&mut out, (*dur).max(0) as u64);
            }
        }
    }
    out
}

pub(crate) fn decode_rows(min_start: i64, blob: &[u8]) -> Result<Vec<BatchRow>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < blob.len() {
        match get_varint(blob, &mut pos)? {
            0 => out.push(None),
            d => {
                let dur = get_varint(blob, &mut pos)? as i64;
                out.push(Some((min_start.wrapping_add((d - 1) as i64), dur)));
            }
        }
    }
    Ok(out)
}

/// The index entries of the traces written in one transaction.
pub(crate) struct BatchBuilder {
    first_row: i64,
    rows: Vec<BatchRow>,
    lists: FxHashMap<i64, Vec<Posting>>,
}

impl BatchBuilder {
    pub(crate) fn new(first_row: i64) -> Self {
        Self {
            first_row,
            rows: Vec::new(),
            lists: FxHashMap::default(),
        }
    }

    /// The row id the next trace gets.
    pub(crate) fn next_row(&self) -> i64 {
        self.first_row + self.rows.len() as i64
    }

    /// Adds the trace at [`BatchBuilder::next_row`] with its terms.
    pub(crate) fn add(&mut self, start_ns: i64, duration_ns: i64, terms: &[Term]) {
        let offset = self.rows.len() as u32;
        self.rows.push(Some((start_ns, duration_ns)));
        for &(term, dur) in terms {
            self.lists.entry(term).or_default().push((offset, dur));
        }
    }

    /// Writes the batch and its posting lists; nothing when no trace was added.
    pub(crate) fn write(self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let starts = self.rows.iter().flatten().map(|r| r.0);
        let min_start = starts.clone().min().unwrap_or(0);
        let max_start = starts.max().unwrap_or(0);
        tx.prepare_cached(
            "INSERT INTO batches (batch, last_row, min_start, max_start, traces) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            self.first_row,
            self.next_row() - 1,
            min_start,
            max_start,
            encode_rows(min_start, &self.rows)
        ])?;
        let mut st =
            tx.prepare_cached("INSERT INTO postings (batch, term, list) VALUES (?1, ?2, ?3)")?;
        let mut lists: Vec<_> = self.lists.iter().collect();
        lists.sort_unstable_by_key(|(term, _)| **term);
        for (term, entries) in lists {
            st.execute(params![self.first_row, term, encode_list(entries)])?;
        }
        Ok(())
    }
}

/// Marks rows of earlier batches dead (their traces were moved or deleted).
pub(crate) fn kill_rows(tx: &Transaction<'_>, rows: &[i64]) -> rusqlite::Result<()> {
    let mut by_batch: FxHashMap<i64, Vec<i64>> = FxHashMap::default();
    for &row in rows {
        let batch: Option<i64> = tx
            .prepare_cached(
                "SELECT batch FROM batches WHERE batch <= ?1 ORDER BY batch DESC LIMIT 1",
            )?
            .query_row([row], |r| r.get(0))
            .optional()?;
        if let Some(b) = batch {
            by_batch.entry(b).or_default().push(row);
        }
    }
    for (batch, rows) in by_batch {
        let (min_start, blob): (i64, Vec<u8>) = tx
            .prepare_cached("SELECT min_start, traces FROM batches WHERE batch = ?1")?
            .query_row([batch], |r| Ok((r.get(0)?, r.get(1)?)))?;
        // a damaged row list cannot be patched: the batch's rows all read as dead
        let mut decoded = decode_rows(min_start, &blob).unwrap_or_default();
        for row in rows {
            if let Some(slot) = usize::try_from(row - batch)
                .ok()
                .and_then(|i| decoded.get_mut(i))
            {
                *slot = None;
            }
        }
        tx.prepare_cached("UPDATE batches SET traces = ?2 WHERE batch = ?1")?
            .execute(params![batch, encode_rows(min_start, &decoded)])?;
    }
    Ok(())
}

/// Deletes a batch with its traces and posting lists.
pub(crate) fn drop_batch(tx: &Transaction<'_>, batch: i64, last_row: i64) -> rusqlite::Result<u64> {
    let n = tx
        .prepare_cached("DELETE FROM traces WHERE id >= ?1 AND id <= ?2")?
        .execute([batch, last_row])?;
    tx.prepare_cached("DELETE FROM postings WHERE batch = ?1")?
        .execute([batch])?;
    tx.prepare_cached("DELETE FROM batches WHERE batch = ?1")?
        .execute([batch])?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_filter_by_duration_and_rows_mark_dead() {
        let list = encode_list(&[(0, Some(5)), (3, Some(50)), (9, Some(500))]);
        let mut out = Vec::new();
        decode_list(&list, (10, 100), &mut out).unwrap();
        assert_eq!(out, vec![3]);
        let tags = encode_list(&[(1, None), (2, None)]);
        decode_list(&tags, (10, 100), &mut out).unwrap();
        assert_eq!(out, vec![1, 2], "tag lists have no durations to filter on");
        let rows = vec![Some((100, 7)), None, Some((90, 0))];
        assert_eq!(decode_rows(90, &encode_rows(90, &rows)).unwrap(), rows);
        assert!(decode_list(&[7], (0, 1), &mut out).is_err());
    }
}
