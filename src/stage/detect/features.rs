//! What the detectors look at: the RED features of a closed window, the one value of a
//! plain series, and the features and structure signature of a trace.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::model::Analysis;
use crate::model::WindowAggregate;
use crate::model::{SpanId, Trace};

use super::feature_state::{FeatureSpec, Scale};

fn spec(name: &str, scale: Scale, floor: f64, floor_rel: f64) -> FeatureSpec {
    FeatureSpec {
        name: name.to_string(),
        scale,
        floor,
        floor_rel,
    }
}

/// Features of an aggregate series, in the order of [`window_features`]. Latencies and
/// throughput are log-scaled (floors: 5 % of the value), the error rate is linear (floor:
/// half a percentage point).
pub(super) fn window_specs() -> Vec<FeatureSpec> {
    vec![
        spec("latency_p50_ns", Scale::Log1p, 0.05, 0.0),
        spec("latency_p95_ns", Scale::Log1p, 0.05, 0.0),
        spec("latency_p99_ns", Scale::Log1p, 0.05, 0.0),
        spec("error_rate", Scale::Linear, 0.005, 0.0),
        spec("throughput_per_s", Scale::Log1p, 0.05, 0.0),
    ]
}

/// p50, p95, p99 latency, error rate, throughput of a closed window (NaN latencies
/// without calls).
pub(super) fn window_features(w: &WindowAggregate) -> [f64; 5] {
    [
        w.quantile(0.5),
        w.quantile(0.95),
        w.quantile(0.99),
        w.error_rate(),
        w.throughput_per_s(),
    ]
}

/// The one feature of a plain series (its spread floored at 0.1 % of its median).
pub(super) fn value_specs() -> Vec<FeatureSpec> {
    vec![spec("value", Scale::Linear, 1e-9, 1e-3)]
}

/// Fixed trace features before the per-service critical-path shares.
pub(super) fn trace_specs() -> Vec<FeatureSpec> {
    vec![
        spec("duration_ns", Scale::Log1p, 0.05, 0.0),
        spec("span_count", Scale::Log1p, 0.05, 0.0),
        spec("depth", Scale::Linear, 0.5, 0.0),
        spec("error_count", Scale::Log1p, 0.25, 0.0),
    ]
}

/// The feature of one service's critical-path share.
pub(super) fn share_spec(service: &str) -> FeatureSpec {
    spec(&format!("share.{service}"), Scale::Linear, 0.02, 0.0)
}

/// Services whose shares a root operation tracks, at most (the first ones seen).
pub(super) const MAX_SHARE_SERVICES: usize = 16;

/// The fixed trace features and each service's share of the critical path.
pub(super) fn trace_features(a: &Analysis) -> ([f64; 4], Vec<(Arc<str>, f64)>) {
    let fixed = [
        a.duration_ns as f64,
        a.span_count as f64,
        a.depth as f64,
        a.error_count as f64,
    ];
    let total: i64 = a.critical_path.iter().map(|s| s.self_time_ns.max(0)).sum();
    let mut shares: Vec<(Arc<str>, f64)> = Vec::new();
    if total > 0 {
        for seg in &a.critical_path {
            let share = seg.self_time_ns.max(0) as f64 / total as f64;
            match shares.iter_mut().find(|(s, _)| *s == seg.service) {
                Some((_, v)) => *v += share,
                None => shares.push((seg.service.clone(), share)),
            }
        }
    }
    (fixed, shares)
}

/// A stable 64-bit hash (FNV-1a), so signatures survive snapshots and upgrades.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(mut self, b: &[u8]) -> Self {
        for x in b {
            self.0 ^= u64::from(*x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // a separator, so ("ab", "c") and ("a", "bc") differ
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        self
    }
}

/// The structure signature: a hash of the multiset of links (parent service → child
/// service, child name) of the trace's spans whose parent is in the trace.
pub(super) fn structure_signature(t: &Trace) -> u64 {
    let services: FxHashMap<SpanId, &str> =
        t.spans.iter().map(|s| (s.span_id, s.service())).collect();
    let mut links: Vec<u64> = t
        .spans
        .iter()
        .filter(|s| !s.is_root())
        .filter_map(|s| {
            let parent = services.get(&s.parent_span_id)?;
            Some(
                Fnv::new()
                    .bytes(parent.as_bytes())
                    .bytes(s.service().as_bytes())
                    .bytes(s.name.as_bytes())
                    .0,
            )
        })
        .collect();
    links.sort_unstable();
    links
        .iter()
        .fold(Fnv::new(), |h, l| h.bytes(&l.to_le_bytes()))
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CloseReason;
    use crate::testkit;

    fn trace(spans: Vec<crate::model::Span>) -> Trace {
        Trace {
            trace_id: 1,
            spans,
            amendment: false,
            close_reason: CloseReason::Completed,
            incomplete: false,
        }
    }

    #[test]
    fn signature_ignores_order_and_counts_repeats() {
        let a = testkit::span(1, 1, 0, 0, 100, "gw");
        let b = testkit::span(1, 2, 1, 10, 20, "db");
        let c = testkit::span(1, 3, 1, 30, 40, "cache");
        let d = testkit::span(1, 4, 1, 50, 60, "db");
        let one = structure_signature(&trace(vec![a.clone(), b.clone(), c.clone()]));
        let reordered = structure_signature(&trace(vec![c.clone(), a.clone(), b.clone()]));
        let repeated = structure_signature(&trace(vec![a.clone(), b, c, d]));
        assert_eq!(one, reordered);
        assert_ne!(one, repeated);
        let lone = structure_signature(&trace(vec![a]));
        assert_ne!(lone, one);
    }
}
