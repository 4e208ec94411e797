//! The two-level trace id index: merges, moves, retention and the migration from
//! version 2.

use super::tests::{open, record, shop_trace, user_version, MS, T0};
use super::*;

fn count(repo: &Repository, table: &str) -> i64 {
    repo.conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn store(repo: &mut Repository, ids: std::ops::RangeInclusive<TraceId>) -> write::StoreReport {
    let batch: Vec<TraceRecord> = ids
        .map(|i| record(i, shop_trace(i, i as i64, 0), false))
        .collect();
    repo.store_traces(&batch).unwrap()
}

#[test]
fn ids_are_found_before_and_after_their_merge_and_amendments_move_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open(&dir);
    repo.recent_ids_max = 4;
    assert_eq!(store(&mut repo, 1..=3).inserted, 3);
    assert_eq!(
        (count(&repo, "trace_ids_recent"), count(&repo, "trace_ids")),
        (3, 0)
    );
    assert_eq!(store(&mut repo, 4..=6).inserted, 3);
    assert_eq!(
        (count(&repo, "trace_ids_recent"), count(&repo, "trace_ids")),
        (0, 6)
    );
    for id in 1..=6 {
        assert_eq!(repo.get_trace(id).unwrap().unwrap().summary.trace_id, id);
    }
    assert!(repo.get_trace(7).unwrap().is_none());
    // a merged id stored again is a duplicate, not a second trace
    assert_eq!(store(&mut repo, 2..=2).unchanged, 1);
    // an amendment moves a merged trace to a new row: its recent mapping shadows the
    // merged one, which points at a row that is gone
    let mut late = shop_trace(2, 2, 0);
    for s in &mut late {
        s.span_id += 100;
    }
    let report = repo.store_traces(&[record(2, late, true)]).unwrap();
    assert_eq!(report.updated, 1);
    assert_eq!(repo.get_trace(2).unwrap().unwrap().spans.len(), 8);
    assert_eq!(repo.trace_count().unwrap(), 6);
    assert_eq!(store(&mut repo, 2..=2).unchanged, 1);
    // reopened, the recent ids are counted again and still found
    drop(repo);
    let mut repo = open(&dir);
    assert_eq!(repo.recent_ids, 1);
    assert_eq!(repo.get_trace(2).unwrap().unwrap().spans.len(), 8);
    assert_eq!(store(&mut repo, 1..=6).unchanged, 6);
}

#[test]
fn the_filter_of_stored_ids_holds_every_stored_id_and_no_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open(&dir);
    repo.recent_ids_max = 4;
    store(&mut repo, 1..=5); // merged
    store(&mut repo, 6..=6); // recent
    assert_eq!(
        (count(&repo, "trace_ids_recent"), count(&repo, "trace_ids")),
        (1, 5)
    );
    let holds = |repo: &Repository, id: TraceId| {
        repo.known_ids
            .as_ref()
            .unwrap()
            .may_hold(&write::id_bytes(id))
    };
    assert!((1..=6).all(|id| holds(&repo, id)));
    drop(repo);
    // read back from both levels of the index when the writer opens the file
    let repo = open(&dir);
    assert!((1..=6).all(|id| holds(&repo, id)));
    let fresh = (1_000..2_000).filter(|&id| holds(&repo, id)).count();
    assert_eq!(fresh, 0, "new ids the filter takes for stored ones");
    let reader = Repository::open_read_only(dir.path().join("repo.db")).unwrap();
    assert!(reader.known_ids.is_none(), "a reader keeps no filter");
}

#[test]
fn retention_sweeps_the_ids_of_deleted_traces_and_they_can_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let retention = RetentionSettings {
        max_age_ns: Some(3_600_000 * MS),
        max_bytes: None,
    };
    let mut repo = Repository::open(dir.path().join("repo.db"), retention).unwrap();
    repo.recent_ids_max = 4;
    let hour = 3_600_000;
    for range in [1..=5, 6..=10] {
        let batch: Vec<TraceRecord> = range
            .map(|i| record(i, shop_trace(i, i as i64 * hour / 2, 0), false))
            .collect();
        repo.store_traces(&batch).unwrap();
    }
    assert_eq!(
        count(&repo, "trace_ids_recent") + count(&repo, "trace_ids"),
        10
    );
    // now = 5 h: the traces that started before 4 h go (1..=7; the first batch whole)
    let report = repo.enforce_retention(T0 + 5 * hour * MS).unwrap();
    assert_eq!(report.traces_by_age, 7);
    assert_eq!(
        count(&repo, "trace_ids_recent") + count(&repo, "trace_ids"),
        3
    );
    assert!(repo.get_trace(3).unwrap().is_none());
    assert!(repo.get_trace(9).unwrap().is_some());
    // a deleted trace stored again is new
    assert_eq!(store(&mut repo, 3..=3).inserted, 1);
    assert!(repo.get_trace(3).unwrap().is_some());
}

#[test]
fn a_version_2_file_moves_its_ids_to_the_index_and_keeps_its_traces() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut repo = open(&dir);
        store(&mut repo, 1..=5);
        // version 2 kept the ids in a unique index of the traces table
        repo.execute_raw(
            "DROP TABLE trace_ids; DROP TABLE trace_ids_recent; DROP TABLE dictionaries;
             CREATE TABLE traces_v2 (id INTEGER PRIMARY KEY, trace_id BLOB NOT NULL UNIQUE, \
             start_ns INTEGER NOT NULL, duration_ns INTEGER NOT NULL, \
             span_count INTEGER NOT NULL, error_count INTEGER NOT NULL, flags INTEGER NOT NULL, \
             root_service TEXT, root_name TEXT, services TEXT NOT NULL, body BLOB NOT NULL);
             INSERT INTO traces_v2 SELECT * FROM traces;
             DROP TABLE traces;
             ALTER TABLE traces_v2 RENAME TO traces;
             CREATE INDEX traces_start ON traces (start_ns);
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let mut repo = open(&dir);
    assert_eq!(user_version(&repo), SCHEMA_VERSION);
    assert_eq!(
        (count(&repo, "trace_ids_recent"), count(&repo, "trace_ids")),
        (0, 5)
    );
    for id in 1..=5 {
        assert_eq!(repo.get_trace(id).unwrap().unwrap().spans.len(), 4);
    }
    assert_eq!(store(&mut repo, 1..=6).inserted, 1);
    assert_eq!(repo.trace_count().unwrap(), 6);
}
