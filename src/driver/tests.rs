//! The driver's rebalance, acknowledgement and commit rules, without a broker: events
//! in, effects out, time injected.

use std::sync::Arc;

use super::*;
use crate::config::load_str;
use crate::output::Encoding;
use crate::testkit;

pub(super) const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
/// A multiple of every window size used here.
const T0: i64 = 1_700_000_000 * S;

pub(super) fn pipeline(aggregate: bool, format: &str) -> PipelineConfig {
    let aggregate = if aggregate {
        "  - type: aggregate\n    windows: [10s]\n    service_graph: false\n    dimensions:\n      service: [service]\n"
    } else {
        ""
    };
    let aggregates = if aggregate.is_empty() {
        ""
    } else {
        "  aggregates:\n    topic: aggregates\n    format: json\n"
    };
    let registry = if format == "avro" {
        "schema_registry:\n  url: http://127.0.0.1:1\n"
    } else {
        ""
    };
    let yaml = format!(
        "name: driver-test
kafka:
  brokers: localhost:9092
  group_id: driver-test
  commit_interval: 1s
{registry}sources:
  - name: spans
    topics: [spans]
    format: {format}
    dead_letter_topic: spans-dlq
stages:
  - type: assemble
    out_of_orderness: 0s
    idle_gap: 100ms
    max_duration: 1m
    grace: 1s
{aggregate}outputs:
  traces:
    topic: traces
    format: json
{aggregates}"
    );
    load_str(&yaml, |_| None).expect("valid test pipeline")
}

fn driver_for(config: &PipelineConfig, schema_registry: bool) -> Driver {
    driver_with(config, schema_registry, None)
}

/// A driver of `config` with JSON outputs and partition 0 of `spans` assigned.
pub(super) fn driver_with(
    config: &PipelineConfig,
    schema_registry: bool,
    changelog: Option<ChangelogSettings>,
) -> Driver {
    let outputs = json_outputs(config);
    let settings = DriverSettings {
        commit_interval_ms: 1000,
        schema_registry,
        span_metrics: false,
        repartition: None,
        merge: None,
        changelog,
    };
    let mut d = Driver::new(config, Driver::sources_of(config), outputs, settings);
    d.handle(Event::Assigned {
        partitions: vec![("spans".into(), 0)],
        now_ms: 0,
    })
    .unwrap();
    d
}

/// JSON outputs: traces, and aggregates when `config` aggregates.
pub(super) fn json_outputs(config: &PipelineConfig) -> Outputs {
    let json = |topic: &str| OutputSpec {
        topic: topic.into(),
        encoding: Encoding::Json,
    };
    Outputs {
        traces: json("traces"),
        late: None,
        aggregates: config.aggregate().map(|_| json("aggregates")),
        alerts: config.alert().map(|_| json("alerts")),
    }
}

fn driver(aggregate: bool) -> Driver {
    driver_for(&pipeline(aggregate, "otlp_json"), false)
}

/// A root span of its own trace, at `at_ns` after T0, lasting 10 ms.
pub(super) fn root(trace: u128, at_ns: i64) -> Span {
    testkit::span(trace, 1, 0, T0 + at_ns, T0 + at_ns + 10 * MS, "svc")
}

pub(super) fn produced(effects: Vec<Effect>) -> Vec<Produce> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Produce(p) => Some(p),
            _ => None,
        })
        .collect()
}

pub(super) fn ack(d: &mut Driver, records: Vec<Produce>) {
    for p in records {
        d.handle(Event::Acked {
            topic: p.topic,
            holds: p.holds,
            epoch: p.epoch,
            error: None,
        })
        .unwrap();
    }
}

fn of_kind(records: &[Produce], kind: OutputKind) -> usize {
    records.iter().filter(|p| p.kind == kind).count()
}

#[test]
fn a_trace_holds_its_offsets_until_kafka_has_it() {
    let mut d = driver(false);
    d.push_spans("spans", 0, 0, [root(1, 0)], 0);
    assert_eq!(
        d.committable("spans", 0),
        Some(0),
        "the open trace holds offset 0"
    );
    // a later span moves event time on: trace 1 closes
    d.push_spans("spans", 0, 1, [root(2, S)], 0);
    let traces = produced(d.take_effects());
    assert_eq!(of_kind(&traces, OutputKind::Trace), 1);
    assert_eq!(
        d.committable("spans", 0),
        Some(0),
        "written, not acknowledged"
    );
    ack(&mut d, traces);
    assert_eq!(d.committable("spans", 0), Some(1), "trace 2 is still open");
}

#[test]
fn aggregate_windows_hold_offsets_until_their_records_are_acknowledged() {
    let mut d = driver(true);
    d.push_spans("spans", 0, 0, [root(1, 0)], 0);
    d.push_spans("spans", 0, 1, [root(2, S)], 0);
    let first = produced(d.take_effects());
    assert_eq!(of_kind(&first, OutputKind::Trace), 1);
    assert_eq!(
        of_kind(&first, OutputKind::Aggregate),
        0,
        "its window is open"
    );
    ack(&mut d, first);
    assert_eq!(
        d.committable("spans", 0),
        Some(0),
        "trace 1 is written but its window [T0, T0+10s) only lives in memory"
    );
    // event time passes the window's end: trace 2 closes, the window closes
    d.push_spans("spans", 0, 2, [root(3, 20 * S)], 0);
    let second = produced(d.take_effects());
    let aggregates: Vec<&Produce> = second
        .iter()
        .filter(|p| p.kind == OutputKind::Aggregate)
        .collect();
    assert!(!aggregates.is_empty(), "the window closed");
    assert!(
        aggregates
            .iter()
            .all(|p| p.holds.iter().any(|&(_, o)| o == 0)),
        "each aggregate record holds the lowest offset it counts"
    );
    let (aggs, traces): (Vec<Produce>, Vec<Produce>) = second
        .into_iter()
        .partition(|p| p.kind == OutputKind::Aggregate);
    ack(&mut d, traces);
    assert_eq!(
        d.committable("spans", 0),
        Some(0),
        "aggregates not yet taken"
    );
    ack(&mut d, aggs);
    assert_eq!(
        d.committable("spans", 0),
        Some(2),
        "only trace 3, still open, holds now"
    );
}

#[test]
fn commits_follow_the_commit_interval_in_processing_time() {
    let mut d = driver(false);
    d.push_spans("spans", 0, 0, [root(1, 0)], 0);
    d.push_spans("spans", 0, 1, [root(2, S)], 0);
    let records = produced(d.take_effects());
    ack(&mut d, records);
    let commits = |effects: Vec<Effect>| -> Vec<Vec<Commit>> {
        effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::Commit(c) => Some(c),
                _ => None,
            })
            .collect()
    };
    d.handle(Event::Tick { now_ms: 10_000 }).unwrap();
    let first = commits(d.take_effects());
    assert_eq!(first.len(), 1);
    assert_eq!(
        (
            &*first[0][0].topic,
            first[0][0].partition,
            first[0][0].offset
        ),
        ("spans", 0, 1)
    );
    d.handle(Event::Committed(first[0].clone())).unwrap();
    // trace 2 closes; it is acknowledged, but the interval has not passed
    d.push_spans("spans", 0, 2, [root(3, 2 * S)], 10_100);
    let records = produced(d.take_effects());
    ack(&mut d, records);
    d.handle(Event::Tick { now_ms: 10_500 }).unwrap();
    assert!(commits(d.take_effects()).is_empty(), "within the interval");
    d.handle(Event::Tick { now_ms: 11_000 }).unwrap();
    let second = commits(d.take_effects());
    assert_eq!(second.len(), 1);
    assert_eq!(second[0][0].offset, 2);
    d.handle(Event::Committed(second[0].clone())).unwrap();
    d.handle(Event::CommitNow).unwrap();
    assert!(
        commits(d.take_effects()).is_empty(),
        "nothing new to commit"
    );
}

#[test]
fn a_revoked_partition_forgets_its_state_and_late_acknowledgements() {
    let mut d = driver(false);
    d.push_spans("spans", 0, 0, [root(1, 0)], 0);
    d.push_spans("spans", 0, 1, [root(2, S)], 0);
    let old = produced(d.take_effects());
    assert_eq!(old.len(), 1);
    d.handle(Event::Revoked(vec![("spans".into(), 0)])).unwrap();
    assert!(!d.owns_partitions());
    assert_eq!(d.committable("spans", 0), None);
    // records polled before the revocation are not processed
    d.push_spans("spans", 0, 2, [root(3, 2 * S)], 0);
    assert!(d.take_effects().is_empty());
    // assigned again (from the committed offset 0): the old record's acknowledgement
    // arrives late and must not release what the new assignment holds
    d.handle(Event::Assigned {
        partitions: vec![("spans".into(), 0)],
        now_ms: 0,
    })
    .unwrap();
    // (other traces: the assembler remembers the ones it closed within grace)
    d.push_spans("spans", 0, 0, [root(5, 3 * S)], 0);
    d.push_spans("spans", 0, 1, [root(6, 4 * S)], 0);
    let new = produced(d.take_effects());
    assert_eq!(new.len(), 1);
    ack(&mut d, old);
    assert_eq!(
        d.committable("spans", 0),
        Some(0),
        "the new trace record is unacknowledged"
    );
    ack(&mut d, new);
    assert_eq!(d.committable("spans", 0), Some(1));
}

#[test]
fn a_failed_delivery_stops_the_driver_without_releasing() {
    let mut d = driver(false);
    d.push_spans("spans", 0, 0, [root(1, 0)], 0);
    d.push_spans("spans", 0, 1, [root(2, S)], 0);
    let p = produced(d.take_effects()).remove(0);
    let err = d
        .handle(Event::Acked {
            topic: p.topic,
            holds: p.holds,
            epoch: p.epoch,
            error: Some("broker down".into()),
        })
        .unwrap_err();
    assert!(err.to_string().contains("traces") && err.to_string().contains("broker down"));
    assert_eq!(d.committable("spans", 0), Some(0));
}

fn record(offset: i64, payload: &[u8]) -> Record {
    Record {
        topic: Arc::from("spans"),
        partition: 0,
        offset,
        key: Some(b"k".to_vec()),
        payload: Some(payload.to_vec()),
    }
}

#[test]
fn records_wait_in_order_while_a_schema_is_fetched() {
    let mut d = driver_for(&pipeline(false, "avro"), true);
    let unknown = [0u8, 0, 0, 0, 7, 1, 2, 3];
    d.handle(Event::Records {
        records: vec![record(0, &unknown), record(1, b"\x05not avro")],
        now_ms: 0,
    })
    .unwrap();
    let effects = d.take_effects();
    assert!(
        matches!(effects[..], [Effect::FetchSchema { source: 0, id: 7 }]),
        "{effects:?}"
    );
    assert_eq!(d.committable("spans", 0), None, "nothing processed yet");
    d.handle(Event::Schema {
        source: 0,
        id: 7,
        schema: Err("not found".into()),
    })
    .unwrap();
    let letters = produced(d.take_effects());
    let reasons: Vec<(&str, &str)> = letters
        .iter()
        .map(|p| {
            let header = |n: &str| {
                p.headers
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.as_str())
                    .unwrap()
            };
            (
                header("spanline.error.reason"),
                header("spanline.source.offset"),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [("unknown_schema_id", "0"), ("bad_magic_byte", "1")]
    );
    assert!(letters
        .iter()
        .all(|p| &*p.topic == "spans-dlq" && p.key == b"k"));
    assert_eq!(letters[0].value, unknown, "the record goes out unchanged");
    assert_eq!(
        d.committable("spans", 0),
        Some(0),
        "dead letters hold until taken"
    );
    ack(&mut d, letters);
    assert_eq!(d.committable("spans", 0), Some(2));
}

#[test]
fn without_a_registry_an_unknown_schema_is_a_dead_letter_at_once() {
    let mut d = driver_for(&pipeline(false, "avro"), false);
    d.handle(Event::Records {
        records: vec![record(0, &[0, 0, 0, 0, 9, 1])],
        now_ms: 0,
    })
    .unwrap();
    let letters = produced(d.take_effects());
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].kind, OutputKind::DeadLetter);
}

#[test]
fn ownership_follows_assignment() {
    let config = pipeline(false, "otlp_json");
    let mut d = Driver::new(
        &config,
        Driver::sources_of(&config),
        Outputs {
            traces: OutputSpec {
                topic: "traces".into(),
                encoding: Encoding::Json,
            },
            late: None,
            aggregates: None,
            alerts: None,
        },
        DriverSettings {
            commit_interval_ms: 1000,
            schema_registry: false,
            span_metrics: false,
            repartition: None,
            merge: None,
            changelog: None,
        },
    );
    assert!(!d.owns_partitions());
    d.handle(Event::Assigned {
        partitions: vec![("spans".into(), 0), ("spans".into(), 1)],
        now_ms: 0,
    })
    .unwrap();
    assert!(d.owns_partitions());
    assert_eq!(d.partitions.live_ids().count(), 2);
    d.handle(Event::Revoked(vec![
        ("spans".into(), 0),
        ("spans".into(), 1),
    ]))
    .unwrap();
    assert!(!d.owns_partitions());
}
