//! Properties: merging the aggregates of two disjoint sets of calls equals aggregating
//! their union; arrival order does not change the output.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::tests::{span, trace, MS, S};
use super::*;
use crate::model::{Edge, EdgeKind, StatusCode};

/// One generated call: service, operation, end (ms), latency (ms), error, which half.
type Gen = (usize, usize, i64, i64, bool, bool);

fn calls() -> impl Strategy<Value = Vec<Gen>> {
    prop::collection::vec(
        (
            0usize..3,
            0usize..2,
            0i64..40_000,
            0i64..5_000,
            any::<bool>(),
            any::<bool>(),
        ),
        0..120,
    )
}

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
        max_series: 1_000,
        slo_latency_ns: 1_000 * MS,
        idle_series_expiry_ns: 600 * S,
        service_graph: true,
    }
}

const SERVICES: [&str; 3] = ["gateway", "planner", "llm"];
const OPERATIONS: [&str; 2] = ["chat", "embed"];

/// Aggregates the calls for which `keep` holds, by key string.
fn aggregate(calls: &[Gen], keep: impl Fn(&Gen) -> bool) -> BTreeMap<String, WindowAggregate> {
    emitted(calls, keep)
        .into_iter()
        .map(|a| (a.key_string(), a))
        .collect()
}

/// The output of aggregating the calls for which `keep` holds, each as a span and as an
/// edge, in one trace.
fn emitted(calls: &[Gen], keep: impl Fn(&Gen) -> bool) -> Vec<WindowAggregate> {
    let mut spans = Vec::new();
    let mut edges = Vec::new();
    for c @ &(svc, op, end_ms, latency_ms, error, _) in calls {
        if !keep(c) {
            continue;
        }
        let end = end_ms * MS;
        let mut s = span(SERVICES[svc], OPERATIONS[op], end - latency_ms * MS, end);
        if error {
            s.status = StatusCode::Error;
        }
        spans.push(s);
        edges.push(Edge {
            client: Arc::from(SERVICES[svc]),
            server: Arc::from(OPERATIONS[op]),
            kind: EdgeKind::RequestReply,
            client_latency_ns: latency_ms * MS,
            server_latency_ns: latency_ms * MS / 2,
            error,
            end_ns: end,
            server_span_id: 1,
        });
    }
    let mut agg = Aggregator::new(settings());
    agg.add_trace(&trace(spans), &edges);
    let mut out = Vec::new();
    agg.flush(&mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn merged_halves_equal_the_union(calls in calls()) {
        let union = aggregate(&calls, |_| true);
        let mut merged = aggregate(&calls, |c| c.5);
        for (k, b) in aggregate(&calls, |c| !c.5) {
            match merged.get_mut(&k) {
                Some(a) => a.merge(&b),
                None => {
                    merged.insert(k, b);
                }
            }
        }
        prop_assert_eq!(union.keys().collect::<Vec<_>>(), merged.keys().collect::<Vec<_>>());
        for (k, u) in &union {
            let m = &merged[k];
            prop_assert_eq!(
                (m.count, m.error_count, m.min_ns, m.max_ns, m.sum_ns, m.slo_good),
                (u.count, u.error_count, u.min_ns, u.max_ns, u.sum_ns, u.slo_good),
                "{}", k
            );
            for i in 0..=100 {
                let q = f64::from(i) / 100.0;
                prop_assert_eq!(m.quantile(q).to_bits(), u.quantile(q).to_bits(), "{} q={}", k, q);
            }
            prop_assert_eq!(m.busy_ns, u.busy_ns);
            prop_assert_eq!(&m.concurrency_profile, &u.concurrency_profile);
            prop_assert_eq!(m.concurrency_max, u.concurrency_max);
            prop_assert_eq!(m, u);
        }
    }

    #[test]
    fn arrival_order_does_not_change_the_output(calls in calls(), seed in any::<u64>()) {
        use rand::{seq::SliceRandom, SeedableRng};
        let mut shuffled = calls.clone();
        shuffled.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(seed));
        prop_assert_eq!(emitted(&calls, |_| true), emitted(&shuffled, |_| true));
    }
}

#[test]
fn merging_into_an_empty_aggregate_copies() {
    let calls: Vec<Gen> = vec![
        (0, 0, 1_000, 10, true, true),
        (0, 0, 2_000, 30, false, true),
    ];
    let full = aggregate(&calls, |_| true);
    for (_, a) in full {
        let mut e = WindowAggregate::empty(
            a.window_start_ns,
            a.window_size_ns,
            a.scope.clone(),
            a.key.clone(),
            a.slo_latency_ns,
        );
        e.merge(&a);
        assert_eq!(e, a);
    }
}
