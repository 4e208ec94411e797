//! Trace-derived metrics on `/metrics`, named as OpenTelemetry's spanmetrics and
//! servicegraph connectors (and Grafana Tempo's metrics generator) name them, so existing
//! dashboards work: calls and latency per service/span, requests and latency per edge.
//!
//! Series are capped: past `max_series` per family, new label sets go to an overflow
//! series (every label `__overflow__`); series not seen for `idle_expiry_ns` of event
//! time are removed. Both are counted.

use std::sync::{Arc, LazyLock};

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec};
use rustc_hash::FxHashMap;

use super::metrics::{register_histogram_vec, REGISTRY};
use crate::model::{AnomalyScore, Subject, WindowAggregate};
use crate::model::{Edge, SpanKind, StatusCode, Trace};

/// Latency buckets in seconds (those of Tempo's metrics generator, extended).
pub const BUCKETS: [f64; 15] = [
    0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
    16.384, 32.768,
];

/// Label value of series over the cap.
pub const OVERFLOW: &str = "__overflow__";

const SPAN_LABELS: [&str; 4] = ["service_name", "span_name", "span_kind", "status_code"];
const EDGE_LABELS: [&str; 3] = ["client", "server", "connection_type"];

pub static CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    super::metrics::register_counter_vec(
        "traces_spanmetrics_calls_total",
        "Spans in closed traces",
        &SPAN_LABELS,
    )
});
pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec(
        HistogramOpts::new("traces_spanmetrics_latency", "Span duration in seconds")
            .buckets(BUCKETS.to_vec()),
        &SPAN_LABELS,
    )
});
pub static GRAPH_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    super::metrics::register_counter_vec(
        "traces_service_graph_request_total",
        "Calls between services",
        &EDGE_LABELS,
    )
});
pub static GRAPH_FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    super::metrics::register_counter_vec(
        "traces_service_graph_request_failed_total",
        "Failed calls between services",
        &EDGE_LABELS,
    )
});
pub static GRAPH_SERVER_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec(
        HistogramOpts::new(
            "traces_service_graph_request_server_seconds",
            "Callee-side duration of calls between services",
        )
        .buckets(BUCKETS.to_vec()),
        &EDGE_LABELS,
    )
});
pub static GRAPH_CLIENT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec(
        HistogramOpts::new(
            "traces_service_graph_request_client_seconds",
            "Caller-side duration of calls between services",
        )
        .buckets(BUCKETS.to_vec()),
        &EDGE_LABELS,
    )
});
const WINDOW_LABELS: [&str; 3] = ["window", "scope", "series"];

pub static WINDOW_LATENCY: LazyLock<GaugeVec> = LazyLock::new(|| {
    super::metrics::register_gauge_vec(
        "spanline_window_latency_seconds",
        "Latency quantile of the last closed window, per window size, scope and series",
        &["window", "scope", "series", "percentile"],
    )
});
pub static WINDOW_ERROR_RATE: LazyLock<GaugeVec> = LazyLock::new(|| {
    super::metrics::register_gauge_vec(
        "spanline_window_error_rate",
        "Share of failed calls in the last closed window",
        &WINDOW_LABELS,
    )
});
pub static WINDOW_THROUGHPUT: LazyLock<GaugeVec> = LazyLock::new(|| {
    super::metrics::register_gauge_vec(
        "spanline_window_throughput_per_second",
        "Calls per second in the last closed window",
        &WINDOW_LABELS,
    )
});
pub static WINDOW_SLO: LazyLock<GaugeVec> = LazyLock::new(|| {
    super::metrics::register_gauge_vec(
        "spanline_window_slo_compliance",
        "Share of calls under the SLO latency in the last closed window",
        &WINDOW_LABELS,
    )
});
pub static WINDOW_ANOMALY: LazyLock<GaugeVec> = LazyLock::new(|| {
    super::metrics::register_gauge_vec(
        "spanline_window_anomaly_score",
        "Anomaly score in [0, 1] of the last closed window (0 while the detector warms up)",
        &WINDOW_LABELS,
    )
});

/// Quantiles published per window series, as the `percentile` label (promtool reserves
/// `quantile` for summaries).
pub const WINDOW_QUANTILES: [(f64, &str); 4] =
    [(0.5, "p50"), (0.9, "p90"), (0.95, "p95"), (0.99, "p99")];

pub static OVERFLOWED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    super::metrics::register_counter_vec(
        "spanline_metric_series_overflow_total",
        "Observations put in the overflow series because a family reached max_series",
        &["family"],
    )
});
pub static EXPIRED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    super::metrics::register_counter_vec(
        "spanline_metric_series_expired_total",
        "Series removed from /metrics after idle_series_expiry without data",
        &["family"],
    )
});

/// OTLP name of a span kind, as the spanmetrics connector writes it.
pub fn kind_label(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
        SpanKind::Internal => "SPAN_KIND_INTERNAL",
        SpanKind::Server => "SPAN_KIND_SERVER",
        SpanKind::Client => "SPAN_KIND_CLIENT",
        SpanKind::Producer => "SPAN_KIND_PRODUCER",
        SpanKind::Consumer => "SPAN_KIND_CONSUMER",
    }
}

/// OTLP name of a status code.
pub fn status_label(status: StatusCode) -> &'static str {
    match status {
        StatusCode::Unset => "STATUS_CODE_UNSET",
        StatusCode::Ok => "STATUS_CODE_OK",
        StatusCode::Error => "STATUS_CODE_ERROR",
    }
}

/// Live label sets of one family, with the event time they were last seen.
struct Family {
    name: &'static str,
    seen: FxHashMap<Vec<String>, i64>,
}

impl Family {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            seen: FxHashMap::default(),
        }
    }

    /// The labels to record under: `labels`, or the overflow set when the cap is reached.
    fn admit(&mut self, labels: Vec<String>, at_ns: i64, cap: usize) -> Vec<String> {
        if let Some(t) = self.seen.get_mut(&labels) {
            *t = (*t).max(at_ns);
            return labels;
        }
        if self.seen.len() >= cap {
            OVERFLOWED.with_label_values(&[self.name]).inc();
            let overflow = vec![OVERFLOW.to_string(); labels.len()];
            self.seen.insert(overflow.clone(), at_ns);
            return overflow;
        }
        self.seen.insert(labels.clone(), at_ns);
        labels
    }

    fn expire(&mut self, before_ns: i64, remove: impl Fn(&[&str])) {
        let name = self.name;
        self.seen.retain(|labels, seen| {
            if *seen >= before_ns {
                return true;
            }
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            remove(&refs);
            EXPIRED.with_label_values(&[name]).inc();
            false
        });
    }
}

/// The labels of a window series: window size, scope and `dimension=value,...`.
fn window_labels(size_ns: i64, scope: &str, key: &[(Arc<str>, Arc<str>)]) -> Vec<String> {
    let series: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        humantime::format_duration(std::time::Duration::from_nanos(size_ns.max(0) as u64))
            .to_string(),
        scope.to_string(),
        series.join(","),
    ]
}

/// Records closed traces into the spanmetrics and servicegraph families.
pub struct SpanMetrics {
    max_series: usize,
    idle_expiry_ns: i64,
    spans: Family,
    edges: Family,
    windows: Family,
}

impl SpanMetrics {
    /// `max_series` per family; series idle for `idle_expiry_ns` of event time are removed.
    pub fn new(max_series: usize, idle_expiry_ns: i64) -> Self {
        for family in ["spanmetrics", "service_graph", "window"] {
            OVERFLOWED.with_label_values(&[family]);
            EXPIRED.with_label_values(&[family]);
        }
        Self {
            max_series,
            idle_expiry_ns,
            spans: Family::new("spanmetrics"),
            edges: Family::new("service_graph"),
            windows: Family::new("window"),
        }
    }

    /// Counts every span of the trace and every edge found in it.
    pub fn observe(&mut self, trace: &Trace, edges: &[Edge]) {
        for span in &trace.spans {
            let labels = vec![
                span.service().to_string(),
                span.name.to_string(),
                kind_label(span.kind).to_string(),
                status_label(span.status).to_string(),
            ];
            let labels = self.spans.admit(labels, span.end_ns, self.max_series);
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            CALLS.with_label_values(&refs).inc();
            LATENCY
                .with_label_values(&refs)
                .observe((span.end_ns - span.start_ns).max(0) as f64 / 1e9);
        }
        for edge in edges {
            let labels = vec![
                edge.client.to_string(),
                edge.server.to_string(),
                edge.kind.as_str().to_string(),
            ];
            let labels = self.edges.admit(labels, edge.end_ns, self.max_series);
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            GRAPH_REQUESTS.with_label_values(&refs).inc();
            if edge.error {
                GRAPH_FAILED.with_label_values(&refs).inc();
            }
            GRAPH_SERVER_SECONDS
                .with_label_values(&refs)
                .observe(edge.server_latency_ns.max(0) as f64 / 1e9);
            GRAPH_CLIENT_SECONDS
                .with_label_values(&refs)
                .observe(edge.client_latency_ns.max(0) as f64 / 1e9);
        }
    }

    /// Publishes a closed window's figures (the gauges hold the last closed window).
    pub fn observe_window(&mut self, w: &WindowAggregate) {
        let labels = window_labels(w.window_size_ns, &w.scope, &w.key);
        let labels = self.windows.admit(labels, w.window_end_ns, self.max_series);
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        for (q, name) in WINDOW_QUANTILES {
            let v = w.quantile(q);
            if v.is_finite() {
                WINDOW_LATENCY
                    .with_label_values(&[refs[0], refs[1], refs[2], name])
                    .set(v / 1e9);
            }
        }
        WINDOW_ERROR_RATE
            .with_label_values(&refs)
            .set(w.error_rate());
        WINDOW_THROUGHPUT
            .with_label_values(&refs)
            .set(w.throughput_per_s());
        WINDOW_SLO.with_label_values(&refs).set(w.slo_compliance());
    }

    /// Records a series' anomaly score beside its window's figures (trace scores are
    /// per trace: not a metric).
    pub fn observe_score(&mut self, score: &AnomalyScore) {
        let Subject::Series {
            window_size_ns,
            scope,
            key,
        } = &score.subject
        else {
            return;
        };
        let labels = window_labels(*window_size_ns, scope, key);
        let labels = self.windows.admit(labels, score.at_ns, self.max_series);
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        WINDOW_ANOMALY.with_label_values(&refs).set(score.score);
    }

    /// Removes series not seen since `watermark_ns - idle_expiry`.
    pub fn expire(&mut self, watermark_ns: i64) {
        let before = watermark_ns.saturating_sub(self.idle_expiry_ns);
        self.spans.expire(before, |l| {
            let _ = CALLS.remove_label_values(l);
            let _ = LATENCY.remove_label_values(l);
        });
        self.edges.expire(before, |l| {
            let _ = GRAPH_REQUESTS.remove_label_values(l);
            let _ = GRAPH_FAILED.remove_label_values(l);
            let _ = GRAPH_SERVER_SECONDS.remove_label_values(l);
            let _ = GRAPH_CLIENT_SECONDS.remove_label_values(l);
        });
        self.windows.expire(before, |l| {
            for (_, q) in WINDOW_QUANTILES {
                let _ = WINDOW_LATENCY.remove_label_values(&[l[0], l[1], l[2], q]);
            }
            let _ = WINDOW_ERROR_RATE.remove_label_values(l);
            let _ = WINDOW_THROUGHPUT.remove_label_values(l);
            let _ = WINDOW_SLO.remove_label_values(l);
            let _ = WINDOW_ANOMALY.remove_label_values(l);
        });
    }
}

/// Forces registration so every family shows in `/metrics` from the start.
pub fn init() {
    LazyLock::force(&CALLS);
    LazyLock::force(&LATENCY);
    LazyLock::force(&GRAPH_REQUESTS);
    LazyLock::force(&GRAPH_FAILED);
    LazyLock::force(&GRAPH_SERVER_SECONDS);
    LazyLock::force(&GRAPH_CLIENT_SECONDS);
    LazyLock::force(&WINDOW_LATENCY);
    LazyLock::force(&WINDOW_ERROR_RATE);
    LazyLock::force(&WINDOW_THROUGHPUT);
    LazyLock::force(&WINDOW_SLO);
    LazyLock::force(&WINDOW_ANOMALY);
    LazyLock::force(&OVERFLOWED);
    LazyLock::force(&EXPIRED);
    let _ = &REGISTRY;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(service: &str, at_ns: i64, value: f64) -> AnomalyScore {
        AnomalyScore {
            subject: Subject::Series {
                window_size_ns: 10_000_000_000,
                scope: Arc::from("anomaly-cap-test"),
                key: vec![(Arc::from("service"), Arc::from(service))],
            },
            at_ns,
            score: value,
            warm: true,
            model: "mad",
            explanations: Vec::new(),
        }
    }

    fn gauge(series: &str) -> Option<f64> {
        WINDOW_ANOMALY
            .get_metric_with_label_values(&["10s", "anomaly-cap-test", series])
            .ok()
            .map(|g| g.get())
    }

    #[test]
    fn anomaly_scores_are_capped_like_the_window_series_and_expire() {
        let mut m = SpanMetrics::new(2, 60_000_000_000);
        m.observe_score(&score("a", 1, 0.25));
        m.observe_score(&score("b", 1, 0.5));
        // a third series goes to the overflow series: the family stays bounded
        m.observe_score(&score("c", 1, 0.75));
        assert_eq!(gauge("service=a"), Some(0.25));
        assert_eq!(gauge("service=b"), Some(0.5));
        let overflow = WINDOW_ANOMALY
            .get_metric_with_label_values(&[OVERFLOW, OVERFLOW, OVERFLOW])
            .unwrap()
            .get();
        assert_eq!(overflow, 0.75);
        let families = REGISTRY.gather();
        let family = families
            .iter()
            .find(|f| f.name() == "spanline_window_anomaly_score")
            .unwrap();
        let ours = family
            .get_metric()
            .iter()
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.value() == "anomaly-cap-test")
            })
            .count();
        assert_eq!(ours, 2, "series c has no gauge of its own");
        // idle series are removed with the window series
        m.expire(2 + 60_000_000_000);
        let families = REGISTRY.gather();
        let left = families
            .iter()
            .find(|f| f.name() == "spanline_window_anomaly_score")
            .map_or(0, |f| {
                f.get_metric()
                    .iter()
                    .filter(|m| {
                        m.get_label()
                            .iter()
                            .any(|l| l.value() == "anomaly-cap-test")
                    })
                    .count()
            });
        assert_eq!(left, 0);
    }
}
