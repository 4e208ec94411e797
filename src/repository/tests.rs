//! Opening, idempotent storage, amendments, errors and retention; the fixtures the
//! other test files share.

use std::sync::Arc;

use super::*;
use crate::model::{AttrValue, AttributesBuilder, Resource, StatusCode};

use super::tests_codec::full_analysis;

pub(super) const T0: i64 = 1_800_000_000_000_000_000;
pub(super) const MS: i64 = 1_000_000;

pub(super) fn resource(service: &str, host: &str) -> Arc<Resource> {
    let mut b = AttributesBuilder::default();
    b.push("host.name", AttrValue::Str(host))
        .push("deployment.environment", AttrValue::Str("production"));
    Arc::new(Resource {
        service_name: Arc::from(service),
        attributes: b.build(),
    })
}

/// A span of `trace`; ids, times in ms after `T0`.
#[allow(clippy::too_many_arguments)]
pub(super) fn span(
    trace: TraceId,
    id: u64,
    parent: u64,
    res: &Arc<Resource>,
    name: &str,
    kind: SpanKind,
    start_ms: i64,
    dur_ms: i64,
    attrs: &[(&str, AttrValue<'_>)],
) -> Span {
    let mut b = AttributesBuilder::default();
    for (k, v) in attrs {
        b.push(k, *v);
    }
    Span {
        trace_id: trace,
        span_id: id,
        parent_span_id: parent,
        start_ns: T0 + start_ms * MS,
        end_ns: T0 + (start_ms + dur_ms) * MS,
        name: Arc::from(name),
        kind,
        status: StatusCode::Unset,
        status_message: None,
        resource: Arc::clone(res),
        attributes: b.build(),
        events: Default::default(),
    }
}

pub(super) fn record(trace_id: TraceId, mut spans: Vec<Span>, amendment: bool) -> TraceRecord {
    let mut trace = Trace {
        trace_id,
        spans: Vec::new(),
        amendment,
        close_reason: CloseReason::Completed,
        incomplete: false,
    };
    spans.sort_by_key(|s| (s.start_ns, s.span_id));
    trace.spans = spans;
    TraceRecord {
        trace,
        analysis: None,
    }
}

/// A gateway → checkout → payments trace of 4 spans starting `start_ms` after `T0`.
pub(super) fn shop_trace(trace_id: TraceId, start_ms: i64, slow_ms: i64) -> Vec<Span> {
    let gw = resource("gateway", "gw-1");
    let co = resource("checkout", "co-1");
    let pay = resource("payments", "pay-1");
    let b = start_ms;
    vec![
        span(
            trace_id,
            1,
            0,
            &gw,
            "GET /buy",
            SpanKind::Server,
            b,
            10 + slow_ms,
            &[("http.request.method", AttrValue::Str("GET"))],
        ),
        span(
            trace_id,
            2,
            1,
            &gw,
            "checkout.Buy",
            SpanKind::Client,
            b + 1,
            8 + slow_ms,
            &[],
        ),
        span(
            trace_id,
            3,
            2,
            &co,
            "checkout.Buy",
            SpanKind::Server,
            b + 2,
            6 + slow_ms,
            &[("customer.id", AttrValue::Int(42))],
        ),
        span(
            trace_id,
            4,
            3,
            &pay,
            "charge",
            SpanKind::Server,
            b + 3,
            2 + slow_ms,
            &[("retry", AttrValue::Bool(false))],
        ),
    ]
}

/// The schema version of the file.
pub(super) fn user_version(repo: &Repository) -> i64 {
    repo.conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

pub(super) fn open(dir: &tempfile::TempDir) -> Repository {
    Repository::open(dir.path().join("repo.db"), RetentionSettings::default()).unwrap()
}

#[test]
fn open_creates_schema_and_reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut repo = open(&dir);
        let report = repo
            .store_traces(&[record(1, shop_trace(1, 0, 0), false)])
            .unwrap();
        assert_eq!(report.inserted, 1);
    }
    let repo = open(&dir);
    assert_eq!(user_version(&repo), SCHEMA_VERSION);
    let mode: String = repo
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(repo.trace_count().unwrap(), 1);
}

#[test]
fn newer_schema_version_and_foreign_database_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.db");
    drop(Repository::open(&path, RetentionSettings::default()).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    match Repository::open(&path, RetentionSettings::default()) {
        Err(RepositoryError::UnknownVersion { found: 99, .. }) => {}
        other => panic!("expected UnknownVersion, got {other:?}"),
    }

    let other = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&other).unwrap();
    conn.execute_batch("CREATE TABLE mine (x)").unwrap();
    drop(conn);
    let err = Repository::open(&other, RetentionSettings::default()).unwrap_err();
    assert!(
        matches!(err, RepositoryError::UnknownVersion { found: 0, .. }),
        "{err}"
    );
}

#[test]
fn garbage_file_is_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.db");
    std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
    let err = Repository::open(&path, RetentionSettings::default()).unwrap_err();
    assert!(matches!(err, RepositoryError::Corrupt { .. }), "{err:?}");
    assert!(err.is_drop());
    assert!(err.to_string().contains("repo.db"), "{err}");
}

#[test]
fn full_database_is_a_typed_error_and_the_batch_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open(&dir);
    repo.store_traces(&[record(1, shop_trace(1, 0, 0), false)])
        .unwrap();
    let pages: i64 = repo
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    repo.execute_raw(&format!("PRAGMA max_page_count = {}", pages + 2))
        .unwrap();
    let batch: Vec<TraceRecord> = (10..2_000)
        .map(|i| record(i, shop_trace(i, i as i64, 0), false))
        .collect();
    let err = repo.store_traces(&batch).unwrap_err();
    assert!(matches!(err, RepositoryError::Full { .. }), "{err:?}");
    assert!(err.is_drop());
    // nothing of the failed batch is there, and the repository goes on working
    assert_eq!(repo.trace_count().unwrap(), 1);
    assert!(repo.get_trace(1).unwrap().is_some());
    repo.store_traces(&[record(2, shop_trace(2, 5, 0), false)])
        .unwrap();
    assert_eq!(repo.trace_count().unwrap(), 2);
}

#[test]
fn writes_through_a_read_only_connection_are_read_only_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.db");
    let mut writer = Repository::open(&path, RetentionSettings::default()).unwrap();
    writer
        .store_traces(&[record(1, shop_trace(1, 0, 0), false)])
        .unwrap();
    let mut reader = Repository::open_read_only(&path).unwrap();
    assert_eq!(reader.get_trace(1).unwrap().unwrap().spans.len(), 4);
    let err = reader
        .store_traces(&[record(2, shop_trace(2, 0, 0), false)])
        .unwrap_err();
    assert!(matches!(err, RepositoryError::ReadOnly { .. }), "{err:?}");
}

#[test]
fn a_trace_stored_twice_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open(&dir);
    let r = record(5, shop_trace(5, 0, 0), false);
    assert_eq!(
        repo.store_traces(std::slice::from_ref(&r))
            .unwrap()
            .inserted,
        1
    );
    let before = repo.get_trace(5).unwrap().unwrap();
    let again = repo.store_traces(&[r.clone(), r]).unwrap();
    assert_eq!(
        again,
        write::StoreReport {
            unchanged: 1,
            ..Default::default()
        }
    );
    assert_eq!(repo.trace_count().unwrap(), 1);
    assert_eq!(repo.get_trace(5).unwrap().unwrap(), before);
    let deps = repo.dependencies(T0 + 60_000 * MS, 3_600_000 * MS).unwrap();
    assert_eq!(
        deps,
        vec![
            Dependency {
                parent: "checkout".into(),
                child: "payments".into(),
                call_count: 1
            },
            Dependency {
                parent: "gateway".into(),
                child: "checkout".into(),
                call_count: 1
            },
        ]
    );
}

#[test]
fn amendments_add_spans_and_recompute_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open(&dir);
    let all = shop_trace(9, 0, 0);
    // the first record lacks the payments span; the amendment brings it, a span the
    // trace already has, and a late span that started before everything else
    let mut whole = record(9, all[..3].to_vec(), false);
    let mut analysis = full_analysis();
    analysis.span_count = 3;
    whole.analysis = Some(analysis.clone());
    repo.store_traces(&[whole]).unwrap();
    let s = repo.get_trace(9).unwrap().unwrap().summary;
    assert_eq!((s.span_count, s.error_count), (3, 0));
    assert_eq!(s.services, vec!["checkout", "gateway"]);

    let pay = resource("payments", "pay-1");
    let mut late = all[3].clone();
    late.status = StatusCode::Error;
    let early = span(9, 8, 1, &pay, "audit", SpanKind::Internal, -5, 40, &[]);
    let mut amend = record(9, vec![all[1].clone(), late, early], true);
    amend.trace.incomplete = true;
    amend.analysis = Some(Analysis {
        span_count: 3,
        ..Default::default()
    });
    assert_eq!(repo.store_traces(&[amend.clone()]).unwrap().updated, 1);
    let t = repo.get_trace(9).unwrap().unwrap();
    assert_eq!(t.spans.len(), 5);
    let ids: Vec<u64> = t.spans.iter().map(|s| s.span_id).collect();
    assert_eq!(ids, vec![8, 1, 2, 3, 4], "canonical order");
    assert_eq!(t.summary.start_ns, T0 - 5 * MS);
    assert_eq!(
        t.summary.duration_ns,
        40 * MS,
        "from -5 ms to the audit span's end"
    );
    assert_eq!(t.summary.error_count, 1);
    assert_eq!(t.summary.services, vec!["checkout", "gateway", "payments"]);
    assert_eq!(t.summary.root_name.as_deref(), Some("GET /buy"));
    assert!(t.summary.incomplete);
    // the analysis of the whole trace is kept over the amendment's
    assert_eq!(t.analysis, Some(analysis));
    // the amendment again changes nothing
    assert_eq!(repo.store_traces(&[amend]).unwrap().unchanged, 1);
    // the index follows the new start: found from there, not from the old one
    let q = TraceQuery {
        service: Some("payments".into()),
        ..Default::default()
    };
    let found = repo.search(&q).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].start_ns, T0 - 5 * MS);
    let at_old_start = TraceQuery {
        start_ns: Some(T0),
        end_ns: Some(T0 + MS),
        ..q
    };
    assert!(repo.search(&at_old_start).unwrap().is_empty());
}

#[test]
fn pieces_in_one_batch_and_duplicate_span_ids_are_merged() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open(&dir);
    let all = shop_trace(3, 0, 0);
    let first = record(
        3,
        vec![all[0].clone(), all[1].clone(), all[1].clone()],
        false,
    );
    let second = record(
        3,
        vec![all[2].clone(), all[3].clone(), all[0].clone()],
        true,
    );
    let report = repo.store_traces(&[first, second]).unwrap();
    assert_eq!(report.inserted, 1);
    let t = repo.get_trace(3).unwrap().unwrap();
    assert_eq!(t.spans, all);
    assert_eq!(t.summary.close_reason, CloseReason::Completed);
    let deps = repo.dependencies(T0, 60_000 * MS).unwrap();
    assert_eq!(deps.iter().map(|d| d.call_count).sum::<u64>(), 2);
}

#[test]
fn operations_and_services_are_listed_with_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open(&dir);
    repo.store_traces(&[record(1, shop_trace(1, 0, 0), false)])
        .unwrap();
    repo.store_traces(&[record(2, shop_trace(2, 9, 0), false)])
        .unwrap();
    assert_eq!(
        repo.services().unwrap(),
        vec!["checkout", "gateway", "payments"]
    );
    assert_eq!(
        repo.operations("gateway").unwrap(),
        vec![
            Operation {
                name: "GET /buy".into(),
                span_kind: SpanKind::Server
            },
            Operation {
                name: "checkout.Buy".into(),
                span_kind: SpanKind::Client
            },
        ]
    );
    assert!(repo.operations("nobody").unwrap().is_empty());
}

#[test]
fn retention_by_age_deletes_old_traces_windows_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let retention = RetentionSettings {
        max_age_ns: Some(3_600_000 * MS),
        max_bytes: None,
    };
    let mut repo = Repository::open(dir.path().join("repo.db"), retention).unwrap();
    let hour = 3_600_000;
    // two stored batches: the first is old as a whole, the second in part
    for range in [1..=15, 16..=30] {
        let batch: Vec<TraceRecord> = range
            .map(|i| record(i, shop_trace(i, i as i64 * hour / 10, 0), false))
            .collect();
        repo.store_traces(&batch).unwrap();
    }
    // now = 3 h after T0: traces that started before 2 h go
    let report = repo.enforce_retention(T0 + 3 * hour * MS).unwrap();
    assert_eq!(report.traces_by_age, 19);
    assert_eq!(repo.trace_count().unwrap(), 11);
    assert!(repo.get_trace(19).unwrap().is_none());
    assert!(repo.get_trace(20).unwrap().is_some());
    let q = TraceQuery {
        service: Some("gateway".into()),
        limit: 100,
        ..Default::default()
    };
    let found = repo.search(&q).unwrap();
    assert_eq!(found.len(), 11);
    assert!(found.iter().all(|t| t.start_ns >= T0 + 2 * hour * MS));
    assert_eq!(
        repo.enforce_retention(T0 + 3 * hour * MS)
            .unwrap()
            .traces_by_age,
        0
    );
}

#[test]
fn retention_by_size_deletes_oldest_traces_until_under() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.db");
    let mut repo = Repository::open(&path, RetentionSettings::default()).unwrap();
    for chunk in 0..20 {
        let batch: Vec<TraceRecord> = (0..500)
            .map(|k| {
                let i = chunk * 500 + k + 1;
                record(i, shop_trace(i, i as i64, 0), false)
            })
            .collect();
        repo.store_traces(&batch).unwrap();
    }
    let used = repo.used_bytes().unwrap();
    let limit = used / 3;
    drop(repo);
    let retention = RetentionSettings {
        max_age_ns: None,
        max_bytes: Some(limit),
    };
    let mut repo = Repository::open(&path, retention).unwrap();
    let report = repo.enforce_retention(T0).unwrap();
    assert!(report.traces_by_size > 5_000, "{report:?}");
    assert!(report.bytes_after <= limit, "{report:?}");
    assert_eq!(report.bytes_before, used);
    // the oldest went, the newest stayed
    assert!(repo.get_trace(1).unwrap().is_none());
    assert!(repo.get_trace(10_000).unwrap().is_some());
    // and the file shrank: freed pages went back to the filesystem
    let file = std::fs::metadata(&path).unwrap().len();
    assert!(file <= limit + limit / 4, "file {file} over {limit}");
}
