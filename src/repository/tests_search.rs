//! Search: each criterion alone and together, order, limits and bad queries.

use super::tests::{open, record, resource, shop_trace, span, user_version, MS, T0};
use super::*;
use crate::model::{AttrValue, StatusCode};

fn ids(found: &[TraceSummary]) -> Vec<TraceId> {
    found.iter().map(|t| t.trace_id).collect()
}

/// Traces 1..=10, trace i starting at i ms, slowed by 10·i ms; trace 10 goes through
/// `search` instead of `payments` and failed.
fn stored(dir: &tempfile::TempDir) -> Repository {
    let mut repo = open(dir);
    let mut batch: Vec<TraceRecord> = (1..=9)
        .map(|i| record(i, shop_trace(i, i as i64, 10 * i as i64), false))
        .collect();
    let gw = resource("gateway", "gw-2");
    let search = resource("search", "se-1");
    let mut failed = span(
        10,
        2,
        1,
        &search,
        "query",
        SpanKind::Server,
        11,
        5,
        &[("db.system", AttrValue::Str("elasticsearch"))],
    );
    failed.status = StatusCode::Error;
    batch.push(record(
        10,
        vec![
            span(10, 1, 0, &gw, "GET /find", SpanKind::Server, 10, 8, &[]),
            failed,
        ],
        false,
    ));
    // in two stored batches, so that search crosses them
    repo.store_traces(&batch[..4]).unwrap();
    repo.store_traces(&batch[4..]).unwrap();
    repo
}

#[test]
fn service_search_is_newest_first_and_limited() {
    let dir = tempfile::tempdir().unwrap();
    let repo = stored(&dir);
    let q = TraceQuery {
        service: Some("gateway".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(&repo.search(&q).unwrap()),
        (1..=10).rev().collect::<Vec<_>>()
    );
    let q = TraceQuery { limit: 3, ..q };
    assert_eq!(ids(&repo.search(&q).unwrap()), vec![10, 9, 8]);
    let q = TraceQuery {
        service: Some("nobody".into()),
        ..Default::default()
    };
    assert!(repo.search(&q).unwrap().is_empty());
}

#[test]
fn summaries_carry_the_trace_figures() {
    let dir = tempfile::tempdir().unwrap();
    let repo = stored(&dir);
    let q = TraceQuery {
        service: Some("search".into()),
        ..Default::default()
    };
    let found = repo.search(&q).unwrap();
    assert_eq!(found.len(), 1);
    let t = &found[0];
    assert_eq!((t.trace_id, t.span_count, t.error_count), (10, 2, 1));
    assert_eq!((t.start_ns, t.duration_ns), (T0 + 10 * MS, 8 * MS));
    assert_eq!(t.root_service.as_deref(), Some("gateway"));
    assert_eq!(t.root_name.as_deref(), Some("GET /find"));
    assert_eq!(t.services, vec!["gateway", "search"]);
}

#[test]
fn operation_and_duration_select_on_that_operations_spans() {
    let dir = tempfile::tempdir().unwrap();
    let repo = stored(&dir);
    // payments' "charge" lasts 2 + 10·i ms in trace i
    let q = TraceQuery {
        service: Some("payments".into()),
        operation: Some("charge".into()),
        min_duration_ns: Some(40 * MS),
        max_duration_ns: Some(70 * MS),
        ..Default::default()
    };
    assert_eq!(ids(&repo.search(&q).unwrap()), vec![6, 5, 4]);
    let q = TraceQuery {
        operation: Some("GET /buy".into()),
        ..q
    };
    assert!(
        repo.search(&q).unwrap().is_empty(),
        "GET /buy is not a payments span"
    );
}

#[test]
fn tags_match_span_and_resource_attributes_of_any_type() {
    let dir = tempfile::tempdir().unwrap();
    let repo = stored(&dir);
    let tag = |k: &str, v: &str| TraceQuery {
        tags: vec![(k.into(), v.into())],
        limit: 100,
        ..Default::default()
    };
    assert_eq!(repo.search(&tag("customer.id", "42")).unwrap().len(), 9);
    assert_eq!(repo.search(&tag("retry", "false")).unwrap().len(), 9);
    assert_eq!(
        ids(&repo.search(&tag("host.name", "gw-2")).unwrap()),
        vec![10]
    );
    assert_eq!(ids(&repo.search(&tag("error", "true")).unwrap()), vec![10]);
    assert_eq!(repo.search(&tag("span.kind", "client")).unwrap().len(), 9);
    assert!(repo.search(&tag("customer.id", "43")).unwrap().is_empty());
    // a tag with a service, and two tags together
    let q = TraceQuery {
        service: Some("gateway".into()),
        tags: vec![
            ("db.system".into(), "elasticsearch".into()),
            ("deployment.environment".into(), "production".into()),
        ],
        ..Default::default()
    };
    assert_eq!(ids(&repo.search(&q).unwrap()), vec![10]);
}

#[test]
fn time_range_and_trace_duration_without_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let repo = stored(&dir);
    let q = TraceQuery {
        start_ns: Some(T0 + 3 * MS),
        end_ns: Some(T0 + 5 * MS),
        ..Default::default()
    };
    assert_eq!(ids(&repo.search(&q).unwrap()), vec![5, 4, 3]);
    let q = TraceQuery {
        service: Some("gateway".into()),
        start_ns: Some(T0 + 3 * MS),
        end_ns: Some(T0 + 5 * MS),
        ..Default::default()
    };
    assert_eq!(ids(&repo.search(&q).unwrap()), vec![5, 4, 3]);
    // trace i lasts 10 + 10·i ms
    let q = TraceQuery {
        tags: vec![("customer.id".into(), "42".into())],
        min_duration_ns: Some(75 * MS),
        ..Default::default()
    };
    assert_eq!(ids(&repo.search(&q).unwrap()), vec![9, 8, 7]);
    let q = TraceQuery {
        min_duration_ns: Some(95 * MS),
        ..Default::default()
    };
    assert_eq!(ids(&repo.search(&q).unwrap()), vec![9]);
}

#[test]
fn an_operation_without_a_service_is_a_bad_query() {
    let dir = tempfile::tempdir().unwrap();
    let repo = stored(&dir);
    let q = TraceQuery {
        operation: Some("charge".into()),
        ..Default::default()
    };
    match repo.search(&q) {
        Err(RepositoryError::InvalidQuery {
            parameter: "operation",
            ..
        }) => {}
        other => panic!("expected InvalidQuery, got {other:?}"),
    }
}

#[test]
fn limits_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open(&dir);
    let batch: Vec<TraceRecord> = (1..=(MAX_SEARCH_LIMIT as u128 + 10))
        .map(|i| record(i, shop_trace(i, i as i64, 0), false))
        .collect();
    repo.store_traces(&batch).unwrap();
    let q = TraceQuery {
        service: Some("payments".into()),
        limit: usize::MAX,
        ..Default::default()
    };
    assert_eq!(repo.search(&q).unwrap().len(), MAX_SEARCH_LIMIT);
    let q = TraceQuery { limit: 0, ..q };
    assert_eq!(repo.search(&q).unwrap().len(), DEFAULT_SEARCH_LIMIT);
}

#[test]
fn a_version_1_file_is_migrated_and_searches_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let q = TraceQuery {
        service: Some("payments".into()),
        tags: vec![("host.name".into(), "pay-1".into())],
        ..Default::default()
    };
    let before = {
        let repo = stored(&dir);
        let found = ids(&repo.search(&q).unwrap());
        // version 1 kept the posting lists by term first, and trace ids in the traces
        // table (unique: that index is not searched, so it is left out here)
        repo.execute_raw(
            "DROP TABLE trace_ids; DROP TABLE trace_ids_recent; DROP TABLE dictionaries;
             CREATE TABLE postings_v1 (term INTEGER NOT NULL, batch INTEGER NOT NULL, \
             list BLOB NOT NULL, PRIMARY KEY (term, batch)) WITHOUT ROWID;
             INSERT INTO postings_v1 SELECT term, batch, list FROM postings;
             DROP TABLE postings;
             ALTER TABLE postings_v1 RENAME TO postings;
             CREATE INDEX postings_batch ON postings (batch);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        found
    };
    assert_eq!(before, (1..=9).rev().collect::<Vec<_>>());
    let mut repo = open(&dir);
    assert_eq!(user_version(&repo), SCHEMA_VERSION);
    assert_eq!(ids(&repo.search(&q).unwrap()), before);
    // and the migrated file takes new batches
    repo.store_traces(&[record(11, shop_trace(11, 20, 0), false)])
        .unwrap();
    assert_eq!(ids(&repo.search(&q).unwrap())[0], 11);
}
