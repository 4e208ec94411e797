//! RED aggregates (rate, errors, duration) of closed traces in event-time windows.
//!
//! Every span of a closed trace is a call of its service: latency `end - start` (never
//! negative), an error when its status is ERROR. A call belongs to the windows holding
//! its end (event time), per window size (tumbling, or hopping when `hop < size`), and
//! per monitoring scope (a [`DimensionSet`]) under the key its dimensions give; with
//! `service_graph`, edges between services are aggregated the same way under the scope
//! `service_graph`. [`Aggregator::advance`] closes the windows the watermark has passed
//! and returns one [`WindowAggregate`] per series; a call for a window already closed is
//! late: dropped and counted, never merged into a window already emitted.
//!
//! Cardinality is capped per (window size, scope): past `max_series` live keys, new keys
//! are aggregated under the overflow key (every value `__overflow__`) and counted; a key
//! without calls for `idle_series_expiry_ns` of event time is forgotten and frees room.
//! Key values are interned once per live key, so an ordinary span allocates nothing.

mod accum;
mod config;
mod dimension;
mod registry;
mod settings;
mod state;
mod window;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_prop;
#[cfg(test)]
mod tests_workload;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use sketches_ddsketch::Config;
use smallvec::SmallVec;

use crate::model::{Edge, StatusCode, Trace};
use accum::{Accum, Call, Placement};
use dimension::{Reader, Text};
use registry::{Registry, Values, OVERFLOW};

pub use crate::model::{
    sketch_config, ServerLatency, WindowAggregate, OVERFLOW_VALUE, PROFILE_SLOTS, SKETCH_MAX_BINS,
    SKETCH_RELATIVE_ACCURACY,
};
pub use accum::AccumState;
pub use config::AggregateConfig;
pub use dimension::{Dimension, DimensionParseError};
pub use settings::{
    AggregateSettings, DimensionSet, SettingsError, WindowSpec, SERVICE_GRAPH_SCOPE,
};
pub use state::{SeriesState, WindowState};
pub use window::{window_end, window_start, window_starts, WindowStarts};

/// Counters and gauges of the aggregator, read by the metrics exporter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AggregateStats {
    /// Spans added (late ones included).
    pub spans: u64,
    /// Edges added (late ones included).
    pub edges: u64,
    /// Spans that missed at least one window because it had already closed (a span late
    /// for some hopping windows still counts in those still open).
    pub late_spans: u64,
    /// Edges that missed at least one window because it had already closed.
    pub late_edges: u64,
    /// Calls (span or edge) whose window lies outside representable time: dropped.
    pub out_of_range_calls: u64,
    /// Calls aggregated under an overflow key, once per (window size, scope).
    pub overflowed_calls: u64,
    /// Keys forgotten after `idle_series_expiry_ns` without calls.
    pub expired_series: u64,
    /// Window aggregates emitted.
    pub aggregates_emitted: u64,
    /// Windows open now, per window size.
    pub open_windows: usize,
    /// Live keys now, over every (window size, scope).
    pub live_series: usize,
}

/// A monitoring scope as the aggregator runs it.
#[derive(Debug)]
struct Scope {
    name: Arc<str>,
    dim_names: Vec<Arc<str>>,
    /// Index of each dimension's value among a call's values.
    values: Vec<usize>,
    overflow_key: Vec<(Arc<str>, Arc<str>)>,
    graph: bool,
}

impl Scope {
    fn new(name: &str, dim_names: Vec<String>, values: Vec<usize>, graph: bool) -> Self {
        let dim_names: Vec<Arc<str>> = dim_names.iter().map(|n| Arc::from(n.as_str())).collect();
        let overflow: Arc<str> = Arc::from(OVERFLOW_VALUE);
        let overflow_key = dim_names
            .iter()
            .map(|n| (n.clone(), overflow.clone()))
            .collect();
        Self {
            name: Arc::from(name),
            dim_names,
            values,
            overflow_key,
            graph,
        }
    }
}

/// The series of one scope in one open window.
#[derive(Debug, Default)]
struct WindowScope {
    index: FxHashMap<u32, u32>,
    accums: Vec<(u32, Accum)>,
}

#[derive(Debug)]
struct OpenWindow {
    start_ns: i64,
    /// By scope index.
    scopes: Vec<WindowScope>,
    /// Changed since the changelog last took the changes.
    dirty: bool,
}

/// The state of one window size.
#[derive(Debug)]
struct SizeState {
    size_ns: i64,
    hop_ns: i64,
    /// Sorted by start.
    windows: VecDeque<OpenWindow>,
    /// By scope index.
    registries: Vec<Registry>,
}

/// The aggregate stage. Pure: event time and the watermark come in as arguments.
#[derive(Debug)]
pub struct Aggregator {
    settings: AggregateSettings,
    sketch_config: Config,
    reader: Reader,
    /// Span scopes first, then the service graph when enabled.
    scopes: Vec<Scope>,
    span_scopes: usize,
    sizes: Vec<SizeState>,
    values: Values,
    /// Every window ending at or before this has been emitted.
    closed_through_ns: i64,
    stats: AggregateStats,
    scratch: String,
    /// Windows whose changelog records are due, when a changelog is kept: (size, start).
    changes: Option<Vec<(i64, i64)>>,
}

/// Per call, the id of each value of its key (`None`: no live key has it).
type ValueIds = SmallVec<[Option<u32>; 8]>;

/// What became of a call.
enum Placed {
    Added,
    /// Missed at least one closed window.
    Late,
    OutOfRange,
}

impl Aggregator {
    /// An aggregator with no open window.
    ///
    /// # Panics
    /// When `settings` fail [`AggregateSettings::validate`] (configuration is validated
    /// before a pipeline is built).
    pub fn new(settings: AggregateSettings) -> Self {
        let errors = settings.validate();
        assert!(errors.is_empty(), "invalid aggregate settings: {errors:?}");
        let mut dims: Vec<Dimension> = Vec::new();
        let mut scopes: Vec<Scope> = settings
            .dimension_sets
            .iter()
            .map(|set| {
                let values = set
                    .dimensions
                    .iter()
                    .map(|d| match dims.iter().position(|x| x == d) {
                        Some(i) => i,
                        None => {
                            dims.push(d.clone());
                            dims.len() - 1
                        }
                    })
                    .collect();
                let names = set.dimensions.iter().map(|d| d.to_string()).collect();
                Scope::new(&set.name, names, values, false)
            })
            .collect();
        let span_scopes = scopes.len();
        if settings.service_graph {
            let names = ["client", "server", "connection_type"]
                .map(String::from)
                .to_vec();
            scopes.push(Scope::new(SERVICE_GRAPH_SCOPE, names, vec![0, 1, 2], true));
        }
        let sizes = settings
            .windows
            .iter()
            .map(|w| SizeState {
                size_ns: w.size_ns,
                hop_ns: w.hop(),
                windows: VecDeque::new(),
                registries: (0..scopes.len())
                    .map(|_| {
                        Registry::new(
                            settings.max_series,
                            settings.idle_series_expiry_ns.max(w.size_ns),
                        )
                    })
                    .collect(),
            })
            .collect();
        Self {
            settings,
            sketch_config: sketch_config(),
            reader: Reader::new(dims),
            scopes,
            span_scopes,
            sizes,
            values: Values::default(),
            closed_through_ns: i64::MIN,
            stats: AggregateStats::default(),
            scratch: String::new(),
            changes: None,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &AggregateSettings {
        &self.settings
    }

    /// What the aggregator did so far.
    pub fn stats(&self) -> &AggregateStats {
        &self.stats
    }

    /// Every window ending at or before this event time has been emitted; calls for them
    /// are late.
    pub fn closed_through_ns(&self) -> i64 {
        self.closed_through_ns
    }

    /// The largest window size: a call at event time t is only in windows ending by
    /// t + this.
    pub fn horizon_ns(&self) -> i64 {
        self.sizes.iter().map(|s| s.size_ns).max().unwrap_or(0)
    }

    /// Adds every span of a closed trace (or amendment) as a call, and `edges` (the
    /// trace's service-graph edges) when the service graph is on.
    pub fn add_trace(&mut self, trace: &Trace, edges: &[Edge]) {
        let mut texts: SmallVec<[Text<'_>; 8]> = SmallVec::new();
        let mut ids = ValueIds::new();
        for span in &trace.spans {
            self.stats.spans += 1;
            texts.clear();
            self.scratch.clear();
            if self.span_scopes > 0 {
                self.reader.read(span, &mut self.scratch, &mut texts);
            }
            let latency_ns = span.end_ns.saturating_sub(span.start_ns).max(0);
            let call = Call {
                latency_ns,
                error: span.status == StatusCode::Error,
                start_ns: span.end_ns.saturating_sub(latency_ns),
                end_ns: span.end_ns,
                server_latency_ns: None,
            };
            match self.add_call(&call, 0..self.span_scopes, &texts, &mut ids) {
                Placed::Added => {}
                Placed::Late => self.stats.late_spans += 1,
                Placed::OutOfRange => self.stats.out_of_range_calls += 1,
            }
        }
        if !self.settings.service_graph {
            return;
        }
        let graph = self.span_scopes..self.span_scopes + 1;
        for edge in edges {
            self.stats.edges += 1;
            let texts = [
                Text::Borrowed(&edge.client),
                Text::Borrowed(&edge.server),
                Text::Borrowed(edge.kind.as_str()),
            ];
            let server_ns = edge.server_latency_ns.max(0);
            let call = Call {
                latency_ns: edge.client_latency_ns.max(0),
                error: edge.error,
                start_ns: edge.end_ns.saturating_sub(server_ns),
                end_ns: edge.end_ns,
                server_latency_ns: Some(server_ns),
            };
            match self.add_call(&call, graph.clone(), &texts, &mut ids) {
                Placed::Added => {}
                Placed::Late => self.stats.late_edges += 1,
                Placed::OutOfRange => self.stats.out_of_range_calls += 1,
            }
        }
    }

    /// Adds one call to every open window holding its end, in every scope of `scopes`.
    fn add_call(
        &mut self,
        call: &Call,
        scopes: Range<usize>,
        texts: &[Text<'_>],
        ids: &mut ValueIds,
    ) -> Placed {
        if scopes.is_empty() {
            return Placed::Added;
        }
        ids.clear();
        ids.extend(
            texts
                .iter()
                .map(|t| self.values.lookup(t.get(&self.scratch))),
        );
        let t = call.end_ns;
        let (mut late, mut placed) = (false, false);
        let mut series: SmallVec<[u32; 8]> = SmallVec::new();
        let mut starts: SmallVec<[i64; 8]> = SmallVec::new();
        for size in &mut self.sizes {
            starts.clear();
            for start in window_starts(t, size.size_ns, size.hop_ns) {
                if window_end(start, size.size_ns) <= self.closed_through_ns {
                    late = true;
                } else {
                    starts.push(start);
                }
            }
            if starts.is_empty() {
                continue;
            }
            placed = true;
            series.clear();
            for s in scopes.clone() {
                let id = resolve(
                    &mut size.registries[s],
                    &mut self.values,
                    &self.scopes[s],
                    texts,
                    &self.scratch,
                    ids,
                    t,
                    &mut self.stats,
                );
                series.push(id);
            }
            for &start in &starts {
                let window =
                    open_window(&mut size.windows, start, self.scopes.len(), &mut self.stats);
                if let (Some(changes), false) = (&mut self.changes, window.dirty) {
                    window.dirty = true;
                    changes.push((size.size_ns, start));
                }
                let at = Placement::new(call, start, size.size_ns);
                for (s, &id) in scopes.clone().zip(&series) {
                    let ws = &mut window.scopes[s];
                    let i = *ws.index.entry(id).or_insert_with(|| {
                        ws.accums
                            .push((id, Accum::new(self.sketch_config, self.scopes[s].graph)));
                        (ws.accums.len() - 1) as u32
                    });
                    ws.accums[i as usize]
                        .1
                        .add(call, &at, self.settings.slo_latency_ns);
                }
            }
        }
        match (late, placed) {
            (true, _) => Placed::Late,
            (false, true) => Placed::Added,
            (false, false) => Placed::OutOfRange,
        }
    }

    /// Closes every window ending at or before `watermark_ns` (the watermark never goes
    /// back: a smaller value closes nothing new), appending their aggregates to `out` in
    /// (window end, window size, scope, key) order, then forgets idle keys.
    pub fn advance(&mut self, watermark_ns: i64, out: &mut Vec<WindowAggregate>) {
        self.closed_through_ns = self.closed_through_ns.max(watermark_ns);
        let first = out.len();
        let slo = self.settings.slo_latency_ns;
        for size in &mut self.sizes {
            while size
                .windows
                .front()
                .is_some_and(|w| window_end(w.start_ns, size.size_ns) <= self.closed_through_ns)
            {
                let Some(window) = size.windows.pop_front() else {
                    break;
                };
                if let Some(changes) = &mut self.changes {
                    changes.push((size.size_ns, window.start_ns));
                }
                self.stats.open_windows -= 1;
                for (s, ws) in window.scopes.into_iter().enumerate() {
                    let scope = &self.scopes[s];
                    let registry = &size.registries[s];
                    for (id, acc) in ws.accums {
                        let key = if id == OVERFLOW {
                            scope.overflow_key.clone()
                        } else {
                            let values =
                                registry.key(id).iter().map(|&v| self.values.get(v).clone());
                            scope.dim_names.iter().cloned().zip(values).collect()
                        };
                        out.push(acc.finish(
                            window.start_ns,
                            size.size_ns,
                            scope.name.clone(),
                            key,
                            slo,
                        ));
                    }
                }
            }
        }
        out[first..].sort_unstable_by(WindowAggregate::emit_order);
        self.stats.aggregates_emitted += (out.len() - first) as u64;
        for size in &mut self.sizes {
            for registry in &mut size.registries {
                let expired = registry.expire(self.closed_through_ns, &mut self.values);
                self.stats.expired_series += expired;
                self.stats.live_series -= expired as usize;
            }
        }
    }

    /// Closes every open window (end of input): as [`Aggregator::advance`] to the end of
    /// the last open window, so calls for the windows emitted are late afterwards.
    pub fn flush(&mut self, out: &mut Vec<WindowAggregate>) {
        let last_end = self
            .sizes
            .iter()
            .filter_map(|s| s.windows.back().map(|w| window_end(w.start_ns, s.size_ns)))
            .max();
        if let Some(end) = last_end {
            self.advance(end, out);
        }
    }
}

/// The series of a call's key in `registry`: a live key, a new one, or the overflow.
#[allow(clippy::too_many_arguments)]
#[inline]
fn resolve(
    registry: &mut Registry,
    values: &mut Values,
    scope: &Scope,
    texts: &[Text<'_>],
    scratch: &str,
    ids: &mut ValueIds,
    t_ns: i64,
    stats: &mut AggregateStats,
) -> u32 {
    let mut key: SmallVec<[u32; 8]> = SmallVec::new();
    let known = scope.values.iter().all(|&v| match ids[v] {
        Some(id) => {
            key.push(id);
            true
        }
        None => false,
    });
    if known {
        if let Some(id) = registry.find(&key, t_ns) {
            return id;
        }
    }
    if registry.is_full() {
        stats.overflowed_calls += 1;
        return OVERFLOW;
    }
    key.clear();
    for &v in &scope.values {
        let id = values.acquire(texts[v].get(scratch));
        ids[v] = Some(id);
        key.push(id);
    }
    stats.live_series += 1;
    registry.insert(&key, t_ns)
}

/// The open window starting at `start_ns`, opened if needed (windows stay sorted).
fn open_window<'w>(
    windows: &'w mut VecDeque<OpenWindow>,
    start_ns: i64,
    scopes: usize,
    stats: &mut AggregateStats,
) -> &'w mut OpenWindow {
    // calls come roughly in event-time order: search from the latest window
    let at = match windows.iter().rposition(|w| w.start_ns <= start_ns) {
        Some(i) if windows[i].start_ns == start_ns => i,
        Some(i) => i + 1,
        None => 0,
    };
    if windows.get(at).is_none_or(|w| w.start_ns != start_ns) {
        let scopes = (0..scopes).map(|_| WindowScope::default()).collect();
        windows.insert(
            at,
            OpenWindow {
                start_ns,
                scopes,
                dirty: false,
            },
        );
        stats.open_windows += 1;
    }
    &mut windows[at]
}
