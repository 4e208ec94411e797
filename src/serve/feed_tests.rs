use std::path::PathBuf;

use super::*;
use crate::model::{AlertStatus, CloseReason, Trace};
use crate::output::Encoding;
use crate::testkit;

#[derive(Default)]
struct FakeStore {
    traces: Vec<TraceRecord>,
    windows: usize,
    alerts: usize,
    full: bool,
}

impl Store for FakeStore {
    fn store_traces(&mut self, records: &[TraceRecord]) -> Result<(), RepositoryError> {
        if self.full {
            return Err(RepositoryError::Full {
                path: PathBuf::from("/tmp/x.db"),
                during: "storing traces",
            });
        }
        self.traces.extend_from_slice(records);
        Ok(())
    }
    fn store_windows(&mut self, windows: &[WindowAggregate]) -> Result<(), RepositoryError> {
        self.windows += windows.len();
        Ok(())
    }
    fn store_alerts(&mut self, alerts: &[Alert]) -> Result<(), RepositoryError> {
        self.alerts += alerts.len();
        Ok(())
    }
}

fn topics(format: OutputFormat) -> Vec<FeedTopic> {
    [
        ("traces", Kind::Traces),
        ("aggregates", Kind::Aggregates),
        ("alerts", Kind::Alerts),
    ]
    .into_iter()
    .map(|(topic, kind)| FeedTopic {
        topic: topic.into(),
        kind,
        format,
    })
    .collect()
}

fn trace(id: u128) -> Trace {
    Trace {
        trace_id: id,
        spans: vec![
            testkit::span(id, 1, 0, 1_000, 9_000, "gateway"),
            testkit::span(id, 2, 1, 2_000, 5_000, "orders"),
        ],
        amendment: false,
        close_reason: CloseReason::Completed,
        incomplete: false,
    }
}

fn alert() -> Alert {
    Alert {
        fingerprint: "f1".into(),
        status: AlertStatus::Firing,
        rule: "r".into(),
        severity: "warning".into(),
        starts_at_ms: 1,
        ends_at_ms: None,
        labels: Default::default(),
        annotations: Default::default(),
        summary: "s".into(),
        suspected_service: None,
        suspected_services: vec![],
        score: 1.0,
        value: None,
        exemplar_trace_ids: vec![],
    }
}

#[test]
fn records_are_batched_stored_analysed_and_their_offsets_committed() {
    for (format, enc) in [
        (
            OutputFormat::Avro,
            Encoding::Avro {
                key_schema_id: 1,
                value_schema_id: 2,
            },
        ),
        (OutputFormat::Json, Encoding::Json),
    ] {
        let mut feeder = Feeder::new(topics(format), AnalyzeSettings::default(), 3);
        let mut store = FakeStore::default();
        for i in 0..2 {
            let (_, v) = enc.trace(&trace(10 + i), None);
            assert_eq!(feeder.offer("traces", 1, 40 + i as i64, Some(&v)), None);
            assert!(!feeder.is_full());
        }
        let (_, v) = enc.alert(&alert());
        assert_eq!(feeder.offer("alerts", 0, 7, Some(&v)), None);
        let (_, v) = enc.trace(&trace(12), None);
        assert_eq!(feeder.offer("traces", 0, 3, Some(&v)), None);
        assert!(feeder.is_full());
        let flushed = feeder.flush(&mut store);
        assert!(flushed.dropped.is_empty());
        assert_eq!(flushed.stored[&Kind::Traces], 3);
        assert_eq!(flushed.stored[&Kind::Alerts], 1);
        assert_eq!(
            flushed.commit,
            vec![
                ("alerts".to_string(), 0, 8),
                ("traces".to_string(), 0, 4),
                ("traces".to_string(), 1, 42)
            ]
        );
        assert_eq!(store.traces.len(), 3);
        let a = store.traces[0].analysis.as_ref().expect("analysed");
        assert_eq!(a.span_count, 2);
        assert_eq!(store.alerts, 1);
        assert!(!feeder.has_pending());
        assert_eq!(feeder.flush(&mut store), Flushed::default());
    }
}

#[test]
fn undecodable_records_are_counted_drops_and_still_committed() {
    let mut feeder = Feeder::new(topics(OutputFormat::Avro), AnalyzeSettings::default(), 10);
    let d = feeder.offer("traces", 2, 5, Some(b"\x01garbage")).unwrap();
    assert_eq!(
        (d.kind, d.reason, d.records),
        (Kind::Traces, "bad_magic_byte", 1)
    );
    assert_eq!(d.positions, vec![("traces".to_string(), 2, 5, 5)]);
    let d = feeder.offer("aggregates", 0, 9, None).unwrap();
    assert_eq!(d.reason, "empty");
    assert_eq!(feeder.offer("unrelated", 0, 1, Some(b"x")), None);
    let flushed = feeder.flush(&mut FakeStore::default());
    assert_eq!(
        flushed.commit,
        vec![
            ("aggregates".to_string(), 0, 10),
            ("traces".to_string(), 2, 6)
        ]
    );
}

#[test]
fn a_batch_the_store_refuses_is_one_counted_drop_naming_its_offsets() {
    let mut feeder = Feeder::new(topics(OutputFormat::Json), AnalyzeSettings::default(), 10);
    for (p, o) in [(0, 3), (0, 4), (1, 8)] {
        let (_, v) = Encoding::Json.trace(&trace(100 + o as u128), None);
        feeder.offer("traces", p, o, Some(&v));
    }
    let mut store = FakeStore {
        full: true,
        ..Default::default()
    };
    let flushed = feeder.flush(&mut store);
    assert_eq!(flushed.dropped.len(), 1);
    let d = &flushed.dropped[0];
    assert_eq!((d.reason, d.records), ("full", 3));
    assert_eq!(
        d.positions,
        vec![
            ("traces".to_string(), 0, 3, 4),
            ("traces".to_string(), 1, 8, 8)
        ]
    );
    assert!(d.message.contains("free disk space"), "{}", d.message);
    assert_eq!(
        flushed.commit.len(),
        2,
        "dropped records are not read again"
    );
}
