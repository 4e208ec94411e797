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
mod close;
mod config;
mod dimension;
mod ingest;
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
use std::sync::Arc;

use rustc_hash::FxHashMap;
use sketches_ddsketch::Config;

use accum::Accum;
use dimension::Reader;
use registry::{Registry, Values};

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
    /// Series of partial windows (from other instances) that came after their window
    /// was emitted: dropped.
    pub late_partials: u64,
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
