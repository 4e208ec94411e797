//! The running state of one series in one open window.

use std::fmt;
use std::sync::Arc;

use sketches_ddsketch::{Config, DDSketch};

use super::window::{profile_slot, window_end};
use crate::model::{ServerLatency, WindowAggregate, PROFILE_SLOTS};

/// One call: a span, or an edge between two services.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call {
    pub latency_ns: i64,
    pub error: bool,
    /// The busy interval `[start, end)` (end is the event time).
    pub start_ns: i64,
    pub end_ns: i64,
    /// The callee-side latency, for edges.
    pub server_latency_ns: Option<i64>,
}

/// Where a call falls in one window: its in-window busy time and profile slots.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placement {
    busy_ns: i64,
    first: usize,
    /// One past the last slot.
    last: usize,
}

impl Placement {
    /// The placement of `call` in the window `[start, start + size)` holding its end.
    pub(super) fn new(call: &Call, window_start_ns: i64, size_ns: i64) -> Self {
        let from = call.start_ns.max(window_start_ns);
        // both offsets are in [0, size): exact in wrapping arithmetic
        let from_off = from.wrapping_sub(window_start_ns) as u64;
        let to_off = call.end_ns.wrapping_sub(window_start_ns) as u64;
        let size = size_ns as u64;
        let first = profile_slot(from_off, size);
        // a call is active in every slot that `[from, to)` overlaps; a zero-length call
        // in the slot of its instant
        let last = profile_slot(to_off.saturating_sub(1), size).max(first) + 1;
        Self {
            busy_ns: (to_off - from_off) as i64,
            first,
            last,
        }
    }
}

/// An accumulator as its window's changelog record keeps it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct AccumState {
    pub count: u64,
    pub errors: u64,
    pub min_ns: i64,
    pub max_ns: i64,
    pub sum_ns: i64,
    pub slo_good: u64,
    pub busy_ns: i64,
    /// `PROFILE_SLOTS + 1` entries.
    pub diff: Vec<i32>,
    pub sketch: DDSketch,
    /// Callee-side latency of edges: min, max, sum and sketch.
    pub server: Option<(i64, i64, i64, DDSketch)>,
}

impl fmt::Debug for AccumState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccumState")
            .field("count", &self.count)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Side {
    min_ns: i64,
    max_ns: i64,
    sum_ns: i64,
    sketch: DDSketch,
}

/// Aggregates of one series in one window.
#[derive(Clone)]
pub(super) struct Accum {
    count: u64,
    errors: u64,
    min_ns: i64,
    max_ns: i64,
    sum_ns: i64,
    slo_good: u64,
    busy_ns: i64,
    /// Difference array of calls active per profile slot.
    diff: Box<[i32; PROFILE_SLOTS + 1]>,
    sketch: DDSketch,
    server: Option<Box<Side>>,
}

impl Accum {
    pub(super) fn new(config: Config, with_server: bool) -> Self {
        Self {
            count: 0,
            errors: 0,
            min_ns: i64::MAX,
            max_ns: i64::MIN,
            sum_ns: 0,
            slo_good: 0,
            busy_ns: 0,
            diff: Box::new([0; PROFILE_SLOTS + 1]),
            sketch: DDSketch::new(config),
            server: with_server.then(|| {
                Box::new(Side {
                    min_ns: i64::MAX,
                    max_ns: i64::MIN,
                    sum_ns: 0,
                    sketch: DDSketch::new(config),
                })
            }),
        }
    }

    /// The state to keep in a changelog.
    pub(super) fn to_state(&self) -> AccumState {
        AccumState {
            count: self.count,
            errors: self.errors,
            min_ns: self.min_ns,
            max_ns: self.max_ns,
            sum_ns: self.sum_ns,
            slo_good: self.slo_good,
            busy_ns: self.busy_ns,
            diff: self.diff.to_vec(),
            sketch: self.sketch.clone(),
            server: self
                .server
                .as_ref()
                .map(|s| (s.min_ns, s.max_ns, s.sum_ns, s.sketch.clone())),
        }
    }

    /// The accumulator a changelog kept; `None` when its profile does not fit.
    pub(super) fn from_state(state: AccumState) -> Option<Self> {
        let diff: Box<[i32; PROFILE_SLOTS + 1]> = state.diff.into_boxed_slice().try_into().ok()?;
        Some(Self {
            count: state.count,
            errors: state.errors,
            min_ns: state.min_ns,
            max_ns: state.max_ns,
            sum_ns: state.sum_ns,
            slo_good: state.slo_good,
            busy_ns: state.busy_ns,
            diff,
            sketch: state.sketch,
            server: state.server.map(|(min_ns, max_ns, sum_ns, sketch)| {
                Box::new(Side {
                    min_ns,
                    max_ns,
                    sum_ns,
                    sketch,
                })
            }),
        })
    }

    #[inline]
    pub(super) fn add(&mut self, call: &Call, at: &Placement, slo_ns: i64) {
        let latency = call.latency_ns;
        self.count += 1;
        self.errors += u64::from(call.error);
        self.min_ns = self.min_ns.min(latency);
        self.max_ns = self.max_ns.max(latency);
        self.sum_ns = self.sum_ns.saturating_add(latency);
        self.slo_good += u64::from(latency <= slo_ns);
        self.busy_ns = self.busy_ns.saturating_add(at.busy_ns);
        self.diff[at.first] += 1;
        self.diff[at.last] -= 1;
        self.sketch.add(latency as f64);
        if let (Some(side), Some(server)) = (&mut self.server, call.server_latency_ns) {
            side.min_ns = side.min_ns.min(server);
            side.max_ns = side.max_ns.max(server);
            side.sum_ns = side.sum_ns.saturating_add(server);
            side.sketch.add(server as f64);
        }
    }

    /// Adds `other` (the same series in the same window, counted elsewhere): counts and
    /// sums add, extremes widen, the profiles and the sketches merge, exactly as if
    /// every call had been added here.
    pub(super) fn merge(&mut self, other: &Accum) {
        self.count += other.count;
        self.errors += other.errors;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.slo_good += other.slo_good;
        self.busy_ns = self.busy_ns.saturating_add(other.busy_ns);
        for (d, o) in self.diff.iter_mut().zip(other.diff.iter()) {
            *d += *o;
        }
        // both sketches use the crate's one configuration, so they always merge
        let _ = self.sketch.merge(&other.sketch);
        match (&mut self.server, &other.server) {
            (Some(side), Some(o)) => {
                side.min_ns = side.min_ns.min(o.min_ns);
                side.max_ns = side.max_ns.max(o.max_ns);
                side.sum_ns = side.sum_ns.saturating_add(o.sum_ns);
                let _ = side.sketch.merge(&o.sketch);
            }
            (None, Some(o)) => self.server = Some(o.clone()),
            _ => {}
        }
    }

    /// The closed aggregate of this series in the window `[start, start + size)`.
    pub(super) fn finish(
        self,
        window_start_ns: i64,
        window_size_ns: i64,
        scope: Arc<str>,
        key: Vec<(Arc<str>, Arc<str>)>,
        slo_latency_ns: i64,
    ) -> WindowAggregate {
        let mut active = 0i64;
        let mut profile = Vec::with_capacity(PROFILE_SLOTS);
        for d in &self.diff[..PROFILE_SLOTS] {
            active += i64::from(*d);
            profile.push(active.max(0) as u32);
        }
        let mut agg = WindowAggregate {
            window_size_ns,
            window_start_ns,
            window_end_ns: window_end(window_start_ns, window_size_ns),
            scope,
            key,
            count: self.count,
            error_count: self.errors,
            min_ns: self.min_ns,
            max_ns: self.max_ns,
            sum_ns: self.sum_ns,
            sketch: self.sketch,
            slo_latency_ns,
            slo_good: self.slo_good,
            busy_ns: self.busy_ns,
            concurrency_mean: 0.0,
            concurrency_max: 0.0,
            concurrency_profile: profile,
            server: self.server.map(|side| ServerLatency {
                min_ns: side.min_ns,
                max_ns: side.max_ns,
                sum_ns: side.sum_ns,
                sketch: side.sketch,
            }),
        };
        agg.refresh_concurrency();
        agg
    }
}

impl fmt::Debug for Accum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accum")
            .field("count", &self.count)
            .field("errors", &self.errors)
            .field("min_ns", &self.min_ns)
            .field("max_ns", &self.max_ns)
            .finish_non_exhaustive()
    }
}
