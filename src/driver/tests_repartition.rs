//! The repartition hop between instances, without a broker: two drivers split OTLP
//! messages holding spans of many traces, the test carries their repartition records to
//! the owner of each partition as a broker would, and every trace comes out whole, once,
//! closed only when every input has passed it.

use std::sync::Arc;

use super::tests::S;
use super::tests_cluster::*;
use super::*;
use crate::codec::otlp;
use crate::testkit;

/// Span `n` of trace `trace` at `at_ns` after T0 (span 1 is the root).
fn span(trace: u128, n: u64, at_ns: i64) -> Span {
    let parent = if n == 1 { 0 } else { 1 };
    testkit::span(trace, n, parent, T0 + at_ns, T0 + at_ns + 5 * MS, "svc")
}

#[test]
fn spans_of_one_trace_read_by_two_instances_come_out_as_one_trace() {
    let mut c = Cluster::new(&pipeline("", ""), 2, false);
    // every message holds spans of several traces; each trace's spans are split over
    // both source partitions, so over both instances
    for t in 1..=40u128 {
        let at = t as i64 * 10 * MS;
        c.send(0, 0, &[span(t, 1, at), span(t + 1000, 2, at)]);
        c.send(1, 1, &[span(t + 1000, 1, at), span(t, 2, at)]);
    }
    // both inputs move well past every trace, then everything closes
    c.send(0, 0, &[span(5000, 1, 10 * S)]);
    c.send(1, 1, &[span(5001, 1, 10 * S)]);
    c.tick(200);
    c.tick(200);
    for t in (1..=40u128).chain(1001..=1040) {
        let key = crate::model::hex_trace_id(t);
        let records = c
            .traces
            .get(&key)
            .unwrap_or_else(|| panic!("trace {t} not closed"));
        assert_eq!(records.len(), 1, "trace {t} written once: {records:?}");
        let mut ids = records[0].clone();
        ids.sort();
        assert_eq!(ids.len(), 2, "trace {t} whole: {ids:?}");
    }
    // the hop records held the source offsets only until they were acknowledged
    for (i, d) in c.drivers.iter().enumerate() {
        assert_eq!(
            d.committable("spans", i as i32),
            Some(41),
            "all 41 messages"
        );
    }
}

#[test]
fn a_trace_waits_for_the_least_advanced_input_until_its_writer_goes_silent() {
    let mut c = Cluster::new(&pipeline("", ""), 2, false);
    c.tick(200);
    // trace 7 starts on input 0; input 0 then runs far ahead while input 1 lags
    c.send(0, 0, &[span(7, 1, 0)]);
    c.send(1, 1, &[span(8, 1, 0)]);
    c.send(0, 0, &[span(9, 1, 30 * S)]);
    c.tick(200);
    assert!(
        c.traces.is_empty(),
        "input 1 has not passed trace 7: {:?}",
        c.traces
    );
    // a late child of trace 7 on the lagging input still joins it
    c.send(1, 1, &[span(7, 2, 20 * MS)]);
    c.send(1, 1, &[span(10, 1, 30 * S)]);
    c.tick(200);
    let t7 = &c.traces[&crate::model::hex_trace_id(7)];
    assert_eq!(t7.len(), 1);
    assert_eq!(t7[0].len(), 2, "the late child is in the one trace record");
    // instance 1 stops: no more progress from input 1. Trace 11 on input 0 closes once
    // the idle timeout says input 1's writer is gone, not before
    c.drivers.truncate(1);
    c.owner.insert((HOP.to_string(), 1), 0);
    c.drivers[0]
        .handle(Event::Assigned {
            partitions: vec![(HOP.to_string(), 1)],
            now_ms: c.now_ms,
        })
        .unwrap();
    c.send(0, 0, &[span(11, 1, 31 * S), span(12, 1, 60 * S)]);
    c.tick(1_000);
    assert!(!c.traces.contains_key(&crate::model::hex_trace_id(11)));
    c.tick(10_000);
    c.tick(200);
    assert!(
        c.traces.contains_key(&crate::model::hex_trace_id(11)),
        "a stopped writer holds the watermark back no longer than the idle timeout"
    );
}

#[test]
fn a_source_keyed_by_trace_id_is_assembled_where_it_is_read() {
    let config = pipeline("    keyed_by_trace: true\n", "");
    let mut d = instance(&config, false);
    assert_eq!(d.repartition_topic(), None, "no source needs the hop");
    d.handle(Event::Assigned {
        partitions: vec![("spans".into(), 0)],
        now_ms: 0,
    })
    .unwrap();
    let payload = otlp::encode_proto(&[span(1, 1, 0), span(2, 1, S)]);
    d.handle(Event::Records {
        records: vec![Record {
            topic: Arc::from("spans"),
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(payload),
        }],
        now_ms: 0,
    })
    .unwrap();
    let kinds: Vec<OutputKind> = d
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Produce(p) => Some(p.kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec![OutputKind::Trace]);
}

#[test]
fn a_bad_message_is_dead_lettered_before_the_hop_and_a_bad_hop_record_is_counted() {
    let mut c = Cluster::new(&pipeline("", ""), 1, false);
    let record = Record {
        topic: Arc::from("spans"),
        partition: 0,
        offset: 0,
        key: None,
        payload: Some(b"not protobuf at all \xff\xff".to_vec()),
    };
    c.drivers[0]
        .handle(Event::Records {
            records: vec![record],
            now_ms: 0,
        })
        .unwrap();
    let effects = c.drivers[0].take_effects();
    let dead: Vec<&Produce> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Produce(p) if p.kind == OutputKind::DeadLetter => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(&*dead[0].topic, "spans-dlq");
    let before = crate::telemetry::metrics::DECODE_ERRORS
        .with_label_values(&["repartition", "bad_magic_byte"])
        .get();
    c.drivers[0]
        .handle(Event::Records {
            records: vec![Record {
                topic: Arc::from(HOP),
                partition: 0,
                offset: 0,
                key: None,
                payload: Some(b"\x00garbage".to_vec()),
            }],
            now_ms: 0,
        })
        .unwrap();
    let after = crate::telemetry::metrics::DECODE_ERRORS
        .with_label_values(&["repartition", "bad_magic_byte"])
        .get();
    assert_eq!(after, before + 1);
    assert_eq!(
        c.drivers[0].committable(HOP, 0),
        Some(1),
        "skipped, not stuck"
    );
}
