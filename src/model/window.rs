//! What a closed aggregate window holds for one series: the RED figures, the latency
//! sketch and the concurrency profile, mergeable across partial windows.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use sketches_ddsketch::{Config, DDSketch};

/// Relative accuracy of the latency sketches: a quantile is within 0.5 % of the exact
/// value at its rank (the crate's default is 1 %).
pub const SKETCH_RELATIVE_ACCURACY: f64 = 0.005;

/// Bins per sketch: at 0.5 % accuracy, 4096 logarithmic bins span 1 ns to about 19
/// years before the lowest bins collapse. A sketch allocates only the bins between its
/// smallest and largest value (in chunks of 128, 8 bytes each).
pub const SKETCH_MAX_BINS: u32 = 4096;

/// The configuration of every sketch the stage builds; latencies are in nanoseconds and
/// a zero latency falls in the sketch's zero bucket.
pub fn sketch_config() -> Config {
    Config::new(SKETCH_RELATIVE_ACCURACY, SKETCH_MAX_BINS, 0.5)
}

/// Number of slots of a window's concurrency profile: the resolution of
/// `concurrency_max` is a hundredth of the window.
pub const PROFILE_SLOTS: usize = 100;

/// RED aggregates of one series (scope and key) in one closed event-time window.
///
/// Latencies are in nanoseconds, in the exact fields and in the sketch. For the
/// `service_graph` scope a call is an edge: the main latency fields are the caller-side
/// latency (what the client saw), [`WindowAggregate::server`] the callee side, and the
/// busy interval is the callee-side span (the only interval an edge knows exactly).
///
/// Equality compares sketches by their canonical encoding (bins, count, min, max, sum).
#[derive(Clone)]
pub struct WindowAggregate {
    /// The window size (a hopping window is as long as its size).
    pub window_size_ns: i64,
    /// Inclusive, a multiple of the hop (of the size for tumbling windows).
    pub window_start_ns: i64,
    /// Exclusive; saturates at `i64::MAX`.
    pub window_end_ns: i64,
    /// The dimension set's name, or `service_graph`.
    pub scope: Arc<str>,
    /// (dimension name, value) in the set's order; every value is
    /// [`OVERFLOW_VALUE`] for the series that collects keys over `max_series`.
    pub key: Vec<(Arc<str>, Arc<str>)>,
    /// Calls that ended in the window.
    pub count: u64,
    /// Calls with status ERROR (edges: either side failed).
    pub error_count: u64,
    /// Exact smallest latency.
    pub min_ns: i64,
    /// Exact largest latency.
    pub max_ns: i64,
    /// Exact summed latency (saturating).
    pub sum_ns: i64,
    /// Latency in nanoseconds (see [`SKETCH_RELATIVE_ACCURACY`]); mergeable.
    pub sketch: DDSketch,
    /// The SLO threshold the window was counted against.
    pub slo_latency_ns: i64,
    /// Calls with latency at most `slo_latency_ns`.
    pub slo_good: u64,
    /// Summed busy time of the calls inside the window (a call that started before the
    /// window counts only its in-window part; calls are windowed by their end).
    pub busy_ns: i64,
    /// Little's law: `busy_ns / window_size_ns`, the mean number of calls in progress.
    pub concurrency_mean: f64,
    /// The largest value of `concurrency_profile`.
    pub concurrency_max: f64,
    /// Per hundredth of the window, the calls active at some instant of it (an upper
    /// bound of the instantaneous concurrency at that resolution). Kept so that merging
    /// two partial aggregates of one window gives the exact maximum.
    pub concurrency_profile: Vec<u32>,
    /// Callee-side latency of service-graph edges; `None` for span scopes.
    pub server: Option<ServerLatency>,
}

/// The value of every dimension of the overflow series.
pub const OVERFLOW_VALUE: &str = "__overflow__";

/// The callee-side latency of the edges of a `service_graph` window.
#[derive(Clone)]
pub struct ServerLatency {
    /// Exact smallest callee-side latency.
    pub min_ns: i64,
    /// Exact largest callee-side latency.
    pub max_ns: i64,
    /// Exact summed callee-side latency (saturating).
    pub sum_ns: i64,
    /// Nanoseconds.
    pub sketch: DDSketch,
}

impl ServerLatency {
    /// Callee-side latency at quantile `q` in nanoseconds, as [`WindowAggregate::quantile`].
    pub fn quantile(&self, q: f64) -> f64 {
        sketch_quantile(&self.sketch, q)
    }

    fn merge(&mut self, other: &ServerLatency) {
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        merge_sketch(&mut self.sketch, &other.sketch);
    }
}

fn sketch_quantile(sketch: &DDSketch, q: f64) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    sketch
        .quantile(q.clamp(0.0, 1.0))
        .ok()
        .flatten()
        .unwrap_or(f64::NAN)
}

fn merge_sketch(into: &mut DDSketch, other: &DDSketch) {
    // every sketch of the stage has the same configuration, so this cannot fail
    let merged = into.merge(other);
    debug_assert!(merged.is_ok(), "sketch configurations differ");
}

fn sketch_eq(a: &DDSketch, b: &DDSketch) -> bool {
    a.to_java_bytes() == b.to_java_bytes()
}

impl WindowAggregate {
    /// An empty aggregate of a window, scope and key (no calls).
    pub fn empty(
        window_start_ns: i64,
        window_size_ns: i64,
        scope: Arc<str>,
        key: Vec<(Arc<str>, Arc<str>)>,
        slo_latency_ns: i64,
    ) -> Self {
        Self {
            window_size_ns,
            window_start_ns,
            window_end_ns: window_start_ns.saturating_add(window_size_ns),
            scope,
            key,
            count: 0,
            error_count: 0,
            min_ns: i64::MAX,
            max_ns: i64::MIN,
            sum_ns: 0,
            sketch: DDSketch::new(sketch_config()),
            slo_latency_ns,
            slo_good: 0,
            busy_ns: 0,
            concurrency_mean: 0.0,
            concurrency_max: 0.0,
            concurrency_profile: vec![0; PROFILE_SLOTS],
            server: None,
        }
    }

    /// Errors over calls (0 without calls).
    pub fn error_rate(&self) -> f64 {
        ratio(self.error_count, self.count, 0.0)
    }

    /// Calls per second of window.
    pub fn throughput_per_s(&self) -> f64 {
        self.count as f64 * 1e9 / self.window_size_ns as f64
    }

    /// Share of calls within the SLO latency (1 without calls).
    pub fn slo_compliance(&self) -> f64 {
        ratio(self.slo_good, self.count, 1.0)
    }

    /// Latency at quantile `q` (clamped to [0, 1]; NaN gives NaN) in nanoseconds, within the sketch's
    /// relative accuracy of the exact value at rank `floor(q * (count - 1))`; 0 and 1
    /// give the exact minimum and maximum; NaN without calls. Estimates are clamped to
    /// the exact [min, max], so a constant latency comes out exact.
    pub fn quantile(&self, q: f64) -> f64 {
        let v = sketch_quantile(&self.sketch, q);
        if v.is_nan() || self.count == 0 {
            return v;
        }
        v.clamp(self.min_ns as f64, self.max_ns as f64)
    }

    /// Adds another partial aggregate of the same window, scope and key (for instance
    /// from another process): counts, sums and sketches add, min and max combine, the
    /// concurrency profiles add slot by slot, so `concurrency_max` is exact and
    /// `concurrency_mean` is the summed busy time over the window.
    pub fn merge(&mut self, other: &WindowAggregate) {
        debug_assert_eq!(
            (
                self.window_start_ns,
                self.window_size_ns,
                &self.scope,
                &self.key
            ),
            (
                other.window_start_ns,
                other.window_size_ns,
                &other.scope,
                &other.key
            ),
            "merging aggregates of different series"
        );
        self.count += other.count;
        self.error_count += other.error_count;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        merge_sketch(&mut self.sketch, &other.sketch);
        self.slo_good += other.slo_good;
        self.busy_ns = self.busy_ns.saturating_add(other.busy_ns);
        self.concurrency_profile.resize(PROFILE_SLOTS, 0);
        for (a, b) in self
            .concurrency_profile
            .iter_mut()
            .zip(&other.concurrency_profile)
        {
            *a = a.saturating_add(*b);
        }
        match (&mut self.server, &other.server) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.server = Some(b.clone()),
            _ => {}
        }
        self.refresh_concurrency();
    }

    /// Recomputes `concurrency_mean` and `concurrency_max` from `busy_ns` and the profile.
    pub fn refresh_concurrency(&mut self) {
        self.concurrency_mean = self.busy_ns as f64 / self.window_size_ns as f64;
        self.concurrency_max =
            f64::from(self.concurrency_profile.iter().copied().max().unwrap_or(0));
    }

    /// A stable identity of the series window, e.g. for the Kafka record key:
    /// `scope|window_size_ns|window_start_ns|name=value|…`, with `%`, `|` and `=` in
    /// names and values written as `%25`, `%7C` and `%3D` so that distinct series never
    /// share one.
    pub fn key_string(&self) -> String {
        let mut s = String::with_capacity(64);
        escape_into(&mut s, &self.scope);
        let _ = write!(s, "|{}|{}", self.window_size_ns, self.window_start_ns);
        for (name, value) in &self.key {
            s.push('|');
            escape_into(&mut s, name);
            s.push('=');
            escape_into(&mut s, value);
        }
        s
    }

    /// The order closed windows are emitted in: window end, window size, scope, key.
    pub fn emit_order(a: &Self, b: &Self) -> std::cmp::Ordering {
        (a.window_end_ns, a.window_size_ns, &a.scope, &a.key).cmp(&(
            b.window_end_ns,
            b.window_size_ns,
            &b.scope,
            &b.key,
        ))
    }
}

fn ratio(n: u64, d: u64, empty: f64) -> f64 {
    if d == 0 {
        empty
    } else {
        n as f64 / d as f64
    }
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
}

impl fmt::Debug for WindowAggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowAggregate")
            .field("window_start_ns", &self.window_start_ns)
            .field("window_size_ns", &self.window_size_ns)
            .field("scope", &self.scope)
            .field("key", &self.key)
            .field("count", &self.count)
            .field("error_count", &self.error_count)
            .field("min_ns", &self.min_ns)
            .field("max_ns", &self.max_ns)
            .field("sum_ns", &self.sum_ns)
            .field("p50_ns", &self.quantile(0.5))
            .field("p99_ns", &self.quantile(0.99))
            .field("slo_good", &self.slo_good)
            .field("busy_ns", &self.busy_ns)
            .field("concurrency_max", &self.concurrency_max)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ServerLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLatency")
            .field("min_ns", &self.min_ns)
            .field("max_ns", &self.max_ns)
            .field("sum_ns", &self.sum_ns)
            .field("p50_ns", &self.quantile(0.5))
            .finish_non_exhaustive()
    }
}

impl PartialEq for ServerLatency {
    fn eq(&self, other: &Self) -> bool {
        (self.min_ns, self.max_ns, self.sum_ns) == (other.min_ns, other.max_ns, other.sum_ns)
            && sketch_eq(&self.sketch, &other.sketch)
    }
}

impl PartialEq for WindowAggregate {
    fn eq(&self, o: &Self) -> bool {
        (
            self.window_size_ns,
            self.window_start_ns,
            self.window_end_ns,
        ) == (o.window_size_ns, o.window_start_ns, o.window_end_ns)
            && (&self.scope, &self.key) == (&o.scope, &o.key)
            && (
                self.count,
                self.error_count,
                self.min_ns,
                self.max_ns,
                self.sum_ns,
            ) == (o.count, o.error_count, o.min_ns, o.max_ns, o.sum_ns)
            && (self.slo_latency_ns, self.slo_good, self.busy_ns)
                == (o.slo_latency_ns, o.slo_good, o.busy_ns)
            && self.concurrency_mean.to_bits() == o.concurrency_mean.to_bits()
            && self.concurrency_max.to_bits() == o.concurrency_max.to_bits()
            && self.concurrency_profile == o.concurrency_profile
            && self.server == o.server
            && sketch_eq(&self.sketch, &o.sketch)
    }
}
