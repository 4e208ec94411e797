//! Trace bodies compressed with trained dictionaries: training, reading back (by the
//! writer, after reopening, by a reader), amendments, retraining when the traffic
//! changes, and damage.

use std::collections::BTreeMap;

use super::bodies::COMPRESSED;
use super::tests::{record, resource, span, user_version};
use super::*;
use crate::model::AttrValue;
use crate::stage::analyze::{analyze, AnalyzeSettings};
use crate::workload::{Workload, WorkloadConfig};

/// Samples to train on in these tests (the default waits for 1,000 bodies).
const SAMPLES: usize = 40;

/// `n` whole traces of the synthetic workload, analysed, in the order they started.
fn workload_records(seed: u64, n: usize) -> Vec<TraceRecord> {
    let mut workload = Workload::new(WorkloadConfig {
        seed,
        traces_per_second: 100.0,
        ..Default::default()
    });
    let mut by_trace: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
    let mut order = Vec::new();
    for s in workload.generate_traces(n) {
        let spans = by_trace.entry(s.trace_id).or_default();
        if spans.is_empty() {
            order.push(s.trace_id);
        }
        spans.push(s);
    }
    let settings = AnalyzeSettings::default();
    order
        .into_iter()
        .filter_map(|id| by_trace.remove(&id))
        .map(|spans| {
            let mut r = record(spans[0].trace_id, spans, false);
            r.analysis = Some(analyze(&r.trace, &settings));
            r
        })
        .collect()
}

/// A two-span trace whose attribute is `len` characters of noise, distinct per trace:
/// nothing a dictionary learnt from other traffic can find.
fn noisy_record(trace_id: TraceId, len: usize) -> TraceRecord {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = (trace_id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let noise: String = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect();
    let res = resource(&format!("svc-{trace_id}"), "host-1");
    let attrs = [("payload", AttrValue::Str(&noise))];
    record(
        trace_id,
        vec![
            span(trace_id, 1, 0, &res, "root", SpanKind::Server, 0, 9, &attrs),
            span(
                trace_id,
                2,
                1,
                &res,
                "child",
                SpanKind::Client,
                1,
                5,
                &attrs,
            ),
        ],
        false,
    )
}

fn open_training(path: &std::path::Path) -> Repository {
    let mut repo = Repository::open(path, RetentionSettings::default()).unwrap();
    // every batch of these tests is a window of the compression ratio, and a dictionary
    // may be replaced after two
    repo.set_dictionary_training((SAMPLES, usize::MAX), 1, 2);
    repo
}

fn stored_body(repo: &Repository, trace_id: TraceId) -> Vec<u8> {
    repo.conn
        .query_row(
            "SELECT body FROM traces WHERE trace_id = ?1",
            [&write::id_bytes(trace_id)[..]],
            |r| r.get(0),
        )
        .unwrap()
}

fn dictionaries(repo: &Repository) -> i64 {
    repo.conn
        .query_row("SELECT count(*) FROM dictionaries", [], |r| r.get(0))
        .unwrap()
}

fn assert_reads_back(repo: &Repository, records: &[TraceRecord]) {
    for r in records {
        let stored = repo.get_trace(r.trace.trace_id).unwrap().unwrap();
        assert_eq!(stored.spans, r.trace.spans, "trace {:x}", r.trace.trace_id);
        assert_eq!(stored.analysis, r.analysis, "trace {:x}", r.trace.trace_id);
    }
}

#[test]
fn bodies_are_compressed_once_a_dictionary_is_trained_and_read_back_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.db");
    let records = workload_records(3, 160);
    let (first, later) = records.split_at(SAMPLES);
    let mut repo = open_training(&path);
    repo.store_traces(first).unwrap();
    // the batch that completed the samples trained the dictionary; its bodies are plain
    assert_eq!(dictionaries(&repo), 1);
    assert_ne!(stored_body(&repo, first[0].trace.trace_id)[0], COMPRESSED);
    repo.store_traces(later).unwrap();
    let (mut encoded, mut stored) = (0, 0);
    for r in later {
        let body = stored_body(&repo, r.trace.trace_id);
        assert_eq!(body[0], COMPRESSED, "trace {:x}", r.trace.trace_id);
        let spans = r.trace.spans.as_slice();
        encoded += codec::encode(spans, r.analysis.as_ref()).len();
        stored += body.len();
    }
    // the workload's bodies repeat names and attributes from trace to trace
    assert!(
        (stored as f64) < 0.6 * encoded as f64,
        "{stored} bytes stored for {encoded} encoded"
    );
    assert_reads_back(&repo, &records);

    drop(repo);
    let repo = open_training(&path);
    assert_reads_back(&repo, &records);
    let reader = Repository::open_read_only(&path).unwrap();
    assert_reads_back(&reader, &records);
}

#[test]
fn an_amendment_to_a_compressed_trace_keeps_every_span() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open_training(&dir.path().join("repo.db"));
    let records = workload_records(5, SAMPLES + 1);
    repo.store_traces(&records[..SAMPLES]).unwrap();
    let whole = &records[SAMPLES];
    repo.store_traces(std::slice::from_ref(whole)).unwrap();
    let id = whole.trace.trace_id;
    assert_eq!(stored_body(&repo, id)[0], COMPRESSED);

    let root = whole.trace.spans.iter().find(|s| s.is_root()).unwrap();
    let mut late = root.clone();
    late.span_id = 0xdead_beef;
    late.parent_span_id = root.span_id;
    late.name = std::sync::Arc::from("late.work");
    let report = repo
        .store_traces(&[record(id, vec![late.clone()], true)])
        .unwrap();
    assert_eq!(report.updated, 1);
    let stored = repo.get_trace(id).unwrap().unwrap();
    assert_eq!(stored.spans.len(), whole.trace.spans.len() + 1);
    assert!(stored.spans.contains(&late));
    assert!(whole.trace.spans.iter().all(|s| stored.spans.contains(s)));
    assert_eq!(stored_body(&repo, id)[0], COMPRESSED);
}

#[test]
fn traffic_unlike_the_samples_trains_a_new_dictionary_and_old_bodies_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open_training(&dir.path().join("repo.db"));
    let records = workload_records(7, SAMPLES * 3);
    for batch in records.chunks(SAMPLES) {
        repo.store_traces(batch).unwrap();
    }
    assert_eq!(dictionaries(&repo), 1);
    // noise compresses far worse than the workload did right after training: the next
    // bodies are sampled (stored plain) and a second dictionary is trained from them
    let noisy: Vec<TraceRecord> = (0..SAMPLES as u128 * 3)
        .map(|i| noisy_record(0x7000 + i, 600))
        .collect();
    for batch in noisy.chunks(SAMPLES) {
        repo.store_traces(batch).unwrap();
    }
    assert_eq!(dictionaries(&repo), 2);
    let plain = noisy
        .iter()
        .filter(|r| stored_body(&repo, r.trace.trace_id)[0] != COMPRESSED)
        .count();
    assert_eq!(plain, SAMPLES, "one batch of samples is stored plain");
    assert_reads_back(&repo, &records);
    assert_reads_back(&repo, &noisy);
}

#[test]
fn a_damaged_body_or_a_missing_dictionary_is_a_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.db");
    let mut repo = open_training(&path);
    let records = workload_records(9, SAMPLES + 2);
    repo.store_traces(&records[..SAMPLES]).unwrap();
    repo.store_traces(&records[SAMPLES..]).unwrap();
    let (cut, intact) = (
        records[SAMPLES].trace.trace_id,
        records[SAMPLES + 1].trace.trace_id,
    );
    repo.execute_raw(&format!(
        "UPDATE traces SET body = substr(body, 1, length(body) - 7) WHERE trace_id = x'{}'",
        write::id_bytes(cut)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
    .unwrap();
    match repo.get_trace(cut) {
        Err(RepositoryError::BadRecord { detail, .. }) => {
            assert!(detail.contains("compressed"), "{detail}")
        }
        other => panic!("expected a bad record, got {other:?}"),
    }
    assert!(repo.get_trace(intact).unwrap().is_some());

    repo.execute_raw("DELETE FROM dictionaries").unwrap();
    let reader = Repository::open_read_only(&path).unwrap();
    match reader.get_trace(intact) {
        Err(RepositoryError::BadRecord { detail, .. }) => {
            assert!(detail.contains("dictionary is missing"), "{detail}")
        }
        other => panic!("expected a bad record, got {other:?}"),
    }
}

#[test]
fn a_version_3_file_gets_the_dictionaries_table_and_keeps_its_traces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.db");
    let records = workload_records(11, SAMPLES + 5);
    {
        let mut repo = open_training(&path);
        repo.store_traces(&records[..5]).unwrap();
        // version 3 had no dictionaries: every body was stored plain
        repo.execute_raw("DROP TABLE dictionaries; PRAGMA user_version = 3;")
            .unwrap();
    }
    let mut repo = open_training(&path);
    assert_eq!(user_version(&repo), SCHEMA_VERSION);
    repo.store_traces(&records[5..]).unwrap();
    assert_eq!(dictionaries(&repo), 1);
    assert_reads_back(&repo, &records);
}

#[test]
fn a_dictionary_is_kept_for_its_first_windows_whatever_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open_training(&dir.path().join("repo.db"));
    repo.set_dictionary_training((SAMPLES, usize::MAX), 1, 5);
    let records = workload_records(13, SAMPLES * 2);
    for batch in records.chunks(SAMPLES) {
        repo.store_traces(batch).unwrap();
    }
    // windows 2 to 4 after the training: noise, but too soon to train again
    let noisy: Vec<TraceRecord> = (0..SAMPLES as u128 * 3)
        .map(|i| noisy_record(0x9000 + i, 600))
        .collect();
    for batch in noisy.chunks(SAMPLES) {
        repo.store_traces(batch).unwrap();
    }
    assert_eq!(dictionaries(&repo), 1);
    assert!(noisy
        .iter()
        .all(|r| stored_body(&repo, r.trace.trace_id)[0] == COMPRESSED));
    assert_reads_back(&repo, &noisy);
}

#[test]
fn large_traces_are_sampled_up_to_a_byte_budget_not_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = open_training(&dir.path().join("repo.db"));
    // a budget of 12 bodies of this size, far fewer than the 1,000 bodies wanted
    let big: Vec<TraceRecord> = (0..40u128)
        .map(|i| noisy_record(0xb000 + i, 3_000))
        .collect();
    let size = codec::encode(&big[0].trace.spans, None).len();
    repo.set_dictionary_training((1_000, 12 * size), 1, 2);
    repo.store_traces(&big[..20]).unwrap();
    assert_eq!(
        repo.bodies.samples_held(),
        0,
        "trained and let go of its samples"
    );
    assert_eq!(dictionaries(&repo), 1);
    repo.store_traces(&big[20..]).unwrap();
    assert!(big[20..]
        .iter()
        .all(|r| stored_body(&repo, r.trace.trace_id)[0] == COMPRESSED));
    assert_reads_back(&repo, &big);
}
