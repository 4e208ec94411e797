//! Aggregate windows survive their changelog: an aggregator restored from the records of
//! another emits the same aggregates on the same later calls.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::model::{Edge, EdgeKind, Trace};
use crate::stage::aggregate::{
    AggregateSettings, Aggregator, Dimension, DimensionSet, WindowAggregate, WindowSpec,
};
use crate::testkit;

const MS: i64 = 1_000_000;
const S: i64 = 1_000_000_000;

fn settings() -> AggregateSettings {
    AggregateSettings {
        windows: vec![
            WindowSpec::tumbling(10 * S),
            WindowSpec::hopping(20 * S, 5 * S),
        ],
        dimension_sets: vec![
            DimensionSet::new("service", vec![Dimension::Service]),
            DimensionSet::new("operation", vec![Dimension::Service, Dimension::Operation]),
        ],
        max_series: 4,
        slo_latency_ns: 1_000 * MS,
        idle_series_expiry_ns: 600 * S,
        service_graph: true,
    }
}

const SERVICES: [&str; 3] = ["gateway", "planner", "llm"];

/// (service, end ms, latency ms)
type Call = (usize, i64, i64);

fn add(agg: &mut Aggregator, calls: &[Call]) {
    for (i, &(svc, end_ms, latency_ms)) in calls.iter().enumerate() {
        let end = end_ms * MS;
        let span = testkit::span(
            1,
            i as u64 + 1,
            0,
            end - latency_ms * MS,
            end,
            SERVICES[svc],
        );
        let edge = Edge {
            client: Arc::from(SERVICES[svc]),
            server: Arc::from("db"),
            kind: EdgeKind::RequestReply,
            client_latency_ns: latency_ms * MS,
            server_latency_ns: latency_ms * MS / 2,
            error: false,
            end_ns: end,
            server_span_id: 1,
        };
        let trace = Trace {
            trace_id: 1,
            spans: vec![span],
            amendment: false,
            close_reason: crate::model::CloseReason::Completed,
            incomplete: false,
        };
        agg.add_trace(&trace, &[edge]);
    }
}

/// Writes the changes of `from` as records and applies them to `to`.
fn restore(from: &mut Aggregator, to: &mut Aggregator) {
    let mut changed = Vec::new();
    from.take_changes(&mut changed);
    let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = changed
        .into_iter()
        .map(|(size, start)| {
            let value = from.window_state(size, start).map(|w| encode_window(&w));
            (window_key(size, start), value)
        })
        .collect();
    records.push((
        closed_through_key(),
        Some(encode_closed_through(from.closed_through_ns())),
    ));
    for (key, value) in records {
        match (parse_key(&key).unwrap(), value) {
            (Key::Window(..), Some(v)) => {
                assert_eq!(to.restore_window(decode_window(&v).unwrap()), 0);
            }
            (Key::Window(..), None) => {}
            (Key::ClosedThrough, Some(v)) => {
                to.restore_closed_through(decode_closed_through(&v).unwrap())
            }
            (Key::ClosedThrough, None) => unreachable!(),
        }
    }
}

fn calls(from_ms: i64) -> impl Strategy<Value = Vec<Call>> {
    prop::collection::vec((0usize..3, from_ms..from_ms + 30_000, 0i64..3_000), 0..40)
}

fn by_key(mut v: Vec<WindowAggregate>) -> Vec<WindowAggregate> {
    v.sort_by_key(|a| (a.window_size_ns, a.window_start_ns, a.key_string()));
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Restored mid-stream (some windows closed, some open, the series cap reached),
    /// the aggregator emits exactly what the original does afterwards.
    #[test]
    fn a_restored_aggregator_emits_what_the_original_does(
        before in calls(0),
        after in calls(20_000),
        watermark_ms in 0i64..30_000,
    ) {
        let mut original = Aggregator::new(settings());
        original.track_changes();
        add(&mut original, &before);
        let mut first = Vec::new();
        original.advance(watermark_ms * MS, &mut first);
        let mut restored = Aggregator::new(settings());
        restore(&mut original, &mut restored);
        prop_assert_eq!(original.closed_through_ns(), restored.closed_through_ns());
        add(&mut original, &after);
        add(&mut restored, &after);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        original.flush(&mut a);
        restored.flush(&mut b);
        let (a, b) = (by_key(a), by_key(b));
        prop_assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            prop_assert!(x == y, "{} differs after the restore", x.key_string());
        }
    }
}

#[test]
fn damaged_and_foreign_records_are_errors() {
    assert!(matches!(
        decode_window(&[VERSION, 1, 2, 3]),
        Err(StateError::Damaged(_))
    ));
    assert!(matches!(
        decode_window(&[7]),
        Err(StateError::Version { found: 7, .. })
    ));
    assert!(matches!(parse_key(b"w1"), Err(StateError::Key(_))));
    assert_eq!(parse_key(&window_key(10, -5)).unwrap(), Key::Window(10, -5));
    assert_eq!(
        decode_closed_through(&encode_closed_through(-3)).unwrap(),
        -3
    );
}
