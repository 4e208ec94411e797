use std::sync::Arc;

use super::*;
use crate::config::OutputFormat;
use crate::model::{AttrValue, AttributesBuilder, EventsBuilder};
use crate::output::Encoding;
use crate::testkit;

const AVRO: Encoding = Encoding::Avro {
    key_schema_id: 1,
    value_schema_id: 2,
};

fn sample_trace() -> Trace {
    let mut spans = vec![
        testkit::span(7, 1, 0, 1_000, 9_000, "gateway"),
        testkit::span(7, 2, 1, 2_000, 5_000, "orders"),
    ];
    let mut attrs = AttributesBuilder::default();
    attrs
        .push("k", AttrValue::Str("v"))
        .push("ratio", AttrValue::Double(0.5));
    let mut events = EventsBuilder::default();
    events.push(3_000, "retry", &attrs.build());
    spans[1].events = events.build();
    spans[1].status = StatusCode::Error;
    spans[1].status_message = Some("boom".into());
    Trace {
        trace_id: 7,
        spans,
        amendment: false,
        close_reason: CloseReason::Completed,
        incomplete: false,
    }
}

#[test]
fn trace_records_read_back_in_both_formats() {
    let trace = sample_trace();
    let analysis = crate::stage::analyze::analyze(&trace, &Default::default());
    let mut reader = RecordReader::default();
    let (_, avro) = AVRO.trace(&trace, Some(&analysis));
    assert_eq!(reader.trace_avro(&avro).unwrap(), trace);
    let (_, json) = Encoding::new(OutputFormat::Json, None).trace(&trace, Some(&analysis));
    assert_eq!(reader.trace_json(&json).unwrap(), trace);
    let (_, bare) = AVRO.trace(&trace, None);
    assert_eq!(reader.trace_avro(&bare).unwrap(), trace);
}

#[test]
fn broken_trace_records_are_errors_not_panics() {
    let mut reader = RecordReader::default();
    let (_, avro) = AVRO.trace(&sample_trace(), None);
    for cut in [0, 3, 5, 20, avro.len() - 1] {
        assert!(reader.trace_avro(&avro[..cut]).is_err(), "cut at {cut}");
    }
    assert!(matches!(reader.trace_json(b""), Err(DecodeError::Empty)));
    assert!(matches!(
        reader.trace_json(b"{\"trace_id\": 1}"),
        Err(DecodeError::Schema(_))
    ));
    assert!(matches!(
        reader.trace_json(b"not json"),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn aggregate_records_keep_counts_and_approximate_quantiles() {
    let mut w = WindowAggregate::empty(
        10_000_000_000,
        10_000_000_000,
        Arc::from("service"),
        vec![(Arc::from("service"), Arc::from("orders"))],
        2_000_000_000,
    );
    for i in 1..=100 {
        let ns = i * 1_000_000;
        w.count += 1;
        w.min_ns = w.min_ns.min(ns);
        w.max_ns = w.max_ns.max(ns);
        w.sum_ns += ns;
        w.sketch.add(ns as f64);
    }
    w.error_count = 3;
    w.slo_good = 100;
    for enc in [AVRO, Encoding::Json] {
        let (_, value) = enc.aggregate(&w);
        let back = match enc {
            Encoding::Json => aggregate_json(&value).unwrap(),
            _ => aggregate_avro(&value).unwrap(),
        };
        assert_eq!(back.key_string(), w.key_string());
        assert_eq!((back.count, back.error_count, back.slo_good), (100, 3, 100));
        assert_eq!(
            (back.min_ns, back.max_ns, back.sum_ns),
            (w.min_ns, w.max_ns, w.sum_ns)
        );
        let p95 = back.quantile(0.95);
        assert!((p95 / w.quantile(0.95) - 1.0).abs() < 0.05, "p95 {p95}");
    }
}

#[test]
fn alert_records_read_back_in_both_formats() {
    let alert = Alert {
        fingerprint: "00ff".into(),
        status: AlertStatus::Firing,
        rule: "latency".into(),
        severity: "warning".into(),
        starts_at_ms: 1_000,
        ends_at_ms: None,
        labels: [("service".to_string(), "orders".to_string())].into(),
        annotations: [("summary".to_string(), "slow".to_string())].into(),
        summary: "p95 above baseline".into(),
        suspected_service: Some("db".into()),
        suspected_services: vec![],
        score: 0.75,
        value: Some(1.5e9),
        exemplar_trace_ids: vec!["ab".repeat(16)],
    };
    let (_, avro) = AVRO.alert(&alert);
    assert_eq!(alert_avro(&avro).unwrap(), alert);
    let (_, json) = Encoding::Json.alert(&alert);
    assert_eq!(alert_json(&json).unwrap(), alert);
    assert!(alert_avro(&avro[..avro.len() / 2]).is_err());
}
