//! Every internal metric, in one place. Labels come from a fixed set (reasons, outcomes)
//! or from the pipeline file (source and topic names), never from span data.

use std::sync::LazyLock;

use prometheus::{
    Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::model::CloseReason;
use crate::stage::assemble::Stats;

/// The registry `/metrics` serves.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<T: prometheus::core::Collector + Clone + 'static>(metric: prometheus::Result<T>) -> T {
    let metric = metric.expect("valid metric");
    REGISTRY
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help))
}

/// Registers a counter family (for the other telemetry modules).
pub fn register_counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    counter_vec(name, help, labels)
}

/// Registers a histogram family.
pub fn register_histogram_vec(
    opts: prometheus::HistogramOpts,
    labels: &[&str],
) -> prometheus::HistogramVec {
    register(prometheus::HistogramVec::new(opts, labels))
}

/// Registers a float gauge family.
pub fn register_gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    fgauge_vec(name, help, labels)
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels))
}

fn fgauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(GaugeVec::new(Opts::new(name, help), labels))
}

fn fgauge(name: &str, help: &str) -> Gauge {
    register(Gauge::new(name, help))
}

pub static RECORDS_IN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_records_in_total",
        "Kafka records read, by source",
        &["source"],
    )
});
pub static SPANS_IN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_spans_in_total",
        "Spans decoded, by source",
        &["source"],
    )
});
pub static DECODE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_decode_errors_total",
        "Records that could not be decoded, by source and reason",
        &["source", "reason"],
    )
});
pub static DEAD_LETTERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_dead_lettered_total",
        "Records written to a dead-letter topic, by reason",
        &["reason"],
    )
});
pub static UNDELIVERABLE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_bad_records_skipped_total",
        "Bad records skipped because the source has no dead-letter topic, by reason",
        &["reason"],
    )
});
pub static RECORDS_SKIPPED_RESTORED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "spanline_records_skipped_restored_total",
        "Records read again below the position their partition's restored state stands at: skipped, they are in the state",
    )
});
pub static OPEN_TRACES: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("spanline_open_traces", "Traces being assembled"));
pub static BUFFERED_SPANS: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("spanline_buffered_spans", "Spans held in open traces"));
pub static BUFFERED_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "spanline_buffered_span_bytes",
        "Bytes of spans held in open traces",
    )
});
pub static OPEN_TRACES_LIMIT: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("spanline_open_traces_limit", "Configured max_open_traces"));
pub static TRACES_CLOSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_traces_closed_total",
        "Traces closed, by reason",
        &["reason"],
    )
});
pub static EVICTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_evictions_total",
        "Traces emitted early as incomplete because of a state bound, by reason",
        &["reason"],
    )
});
pub static AMENDMENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "spanline_amendments_total",
        "Amendment records emitted for closed traces",
    )
});
pub static LATE_SPANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_late_spans_total",
        "Spans for closed traces, by outcome (amended, late_topic, dropped)",
        &["outcome"],
    )
});
pub static DUPLICATES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "spanline_duplicate_spans_total",
        "Spans dropped because their trace already had that span id",
    )
});
pub static SPANS_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_spans_dropped_total",
        "Spans not buffered, by reason (too_large, revoked)",
        &["reason"],
    )
});
pub static WATERMARK_LAG: LazyLock<GaugeVec> = LazyLock::new(|| {
    fgauge_vec(
        "spanline_watermark_lag_seconds",
        "Wall clock minus the partition's event-time watermark",
        &["topic", "partition"],
    )
});
pub static WATERMARK: LazyLock<Gauge> = LazyLock::new(|| {
    fgauge(
        "spanline_watermark_seconds",
        "Combined event-time watermark (unix seconds)",
    )
});
pub static CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "spanline_consumer_lag",
        "Records behind the partition's high watermark",
        &["topic", "partition"],
    )
});
pub static PRODUCED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_records_out_total",
        "Records acknowledged by Kafka, by topic",
        &["topic"],
    )
});
pub static PRODUCE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_produce_errors_total",
        "Records Kafka failed to acknowledge, by topic",
        &["topic"],
    )
});
pub static COMMITS: LazyLock<IntCounter> =
    LazyLock::new(|| counter("spanline_offset_commits_total", "Offset commits sent"));
pub static TRANSACTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "spanline_transactions_committed_total",
        "Transactions committed (delivery: exactly_once)",
    )
});
pub static TRANSACTIONS_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "spanline_transactions_refused_total",
        "Transactions the group coordinator refused after a rebalance moved their partitions on (aborted; redone by the partitions' next owner)",
    )
});
pub static STATE_RECORDS_WRITTEN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_state_records_written_total",
        "State records (and tombstones) written to changelog topics, by topic",
        &["topic"],
    )
});
pub static STATE_RECORDS_RESTORED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_state_records_restored_total",
        "State records read back from changelog topics, by topic",
        &["topic"],
    )
});
pub static STATE_RESETS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_state_resets_total",
        "Changelogs deleted instead of restored (--reset-state), by topic",
        &["topic"],
    )
});
pub static STATE_RECORDS_OVERSIZE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_state_records_oversize_total",
        "State records not written because they exceed 900 kB (the subject starts afresh after a restart), by topic",
        &["topic"],
    )
});
pub static HELD_OFFSETS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "spanline_held_offsets",
        "Input offsets held by open traces and unacknowledged outputs",
    )
});

pub static TRACES_ANALYZED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "spanline_traces_analyzed_total",
        "Closed traces the analyze stage explained",
    )
});
pub static ODDITIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_trace_oddities_total",
        "Broken-trace problems found by analysis, by kind (clock_skew, orphans, cycles, extra_roots, negative_durations, zero_durations, synthetic_root)",
        &["kind"],
    )
});
pub static FINDINGS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_findings_total",
        "Findings of the analyze stage, by kind",
        &["kind"],
    )
});

pub static AGGREGATE_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_aggregate_calls_total",
        "Calls seen by the aggregate stage, by outcome (span, edge, late_span, late_edge, out_of_range, overflow)",
        &["outcome"],
    )
});
pub static AGGREGATE_EXPIRED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "spanline_aggregate_expired_series_total",
        "Aggregate keys forgotten after idle_series_expiry",
    )
});
pub static AGGREGATE_WINDOWS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "spanline_aggregate_windows_total",
        "Aggregate windows closed and emitted",
    )
});
pub static AGGREGATE_OPEN_WINDOWS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "spanline_aggregate_open_windows",
        "Aggregate windows open now",
    )
});
pub static AGGREGATE_LIVE_SERIES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "spanline_aggregate_live_series",
        "Aggregate keys live now over all window sizes and scopes",
    )
});

pub static ALERTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_alerts_total",
        "Alert events emitted, by rule, severity and status",
        &["rule", "severity", "status"],
    )
});
pub static ALERT_ACK_LATENCY: LazyLock<prometheus::Histogram> = LazyLock::new(|| {
    register(prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new(
            "spanline_alert_ack_latency_seconds",
            "From a window closing to its alert record being acknowledged by Kafka",
        )
        .buckets(vec![
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ]),
    ))
});

pub static DETECT_SNAPSHOTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "spanline_detect_snapshots_total",
        "Detect stage snapshots, by result (restored, rejected: unusable at start, saved, save_failed)",
        &["result"],
    )
});
pub static DETECT_SNAPSHOT_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "spanline_detect_snapshot_bytes",
        "Size of the last detect snapshot written",
    )
});

/// Moves the aggregate stage's counters forward and sets its gauges.
pub fn publish_aggregates(
    last: &crate::stage::aggregate::AggregateStats,
    now: &crate::stage::aggregate::AggregateStats,
) {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    for (outcome, a, b) in [
        ("span", last.spans, now.spans),
        ("edge", last.edges, now.edges),
        ("late_span", last.late_spans, now.late_spans),
        ("late_edge", last.late_edges, now.late_edges),
        (
            "out_of_range",
            last.out_of_range_calls,
            now.out_of_range_calls,
        ),
        ("overflow", last.overflowed_calls, now.overflowed_calls),
    ] {
        AGGREGATE_CALLS
            .with_label_values(&[outcome])
            .inc_by(d(a, b));
    }
    AGGREGATE_EXPIRED.inc_by(d(last.expired_series, now.expired_series));
    AGGREGATE_WINDOWS.inc_by(d(last.aggregates_emitted, now.aggregates_emitted));
    AGGREGATE_OPEN_WINDOWS.set(now.open_windows as i64);
    AGGREGATE_LIVE_SERIES.set(now.live_series as i64);
}

/// Moves the counters of the stages after assembly forward.
pub fn publish_stages(
    last: &crate::stage::pipeline::StageStats,
    now: &crate::stage::pipeline::StageStats,
) {
    use crate::stage::analyze::{FindingKind, Oddities};
    TRACES_ANALYZED.inc_by(now.analyzed.saturating_sub(last.analyzed));
    for (i, kind) in Oddities::REASONS.iter().enumerate() {
        ODDITIES
            .with_label_values(&[kind])
            .inc_by(now.oddities[i].saturating_sub(last.oddities[i]));
    }
    for (i, kind) in FindingKind::ALL.iter().enumerate() {
        FINDINGS
            .with_label_values(&[kind.as_str()])
            .inc_by(now.findings[i].saturating_sub(last.findings[i]));
    }
}

/// Registers every metric with its label values at zero, so they exist before they move.
pub fn init() {
    for r in CloseReason::ALL {
        TRACES_CLOSED.with_label_values(&[r.as_str()]);
        if r.is_eviction() {
            EVICTIONS.with_label_values(&[r.as_str()]);
        }
    }
    for o in ["amended", "late_topic", "dropped"] {
        LATE_SPANS.with_label_values(&[o]);
    }
    for r in ["too_large", "revoked"] {
        SPANS_DROPPED.with_label_values(&[r]);
    }
    for r in crate::codec::DecodeError::REASONS
        .iter()
        .chain(["span_too_large"].iter())
    {
        DEAD_LETTERED.with_label_values(&[r]);
    }
    for kind in crate::stage::analyze::Oddities::REASONS {
        ODDITIES.with_label_values(&[kind]);
    }
    for kind in crate::stage::analyze::FindingKind::ALL {
        FINDINGS.with_label_values(&[kind.as_str()]);
    }
    LazyLock::force(&TRACES_ANALYZED);
    for outcome in [
        "span",
        "edge",
        "late_span",
        "late_edge",
        "out_of_range",
        "overflow",
    ] {
        AGGREGATE_CALLS.with_label_values(&[outcome]);
    }
    LazyLock::force(&AGGREGATE_EXPIRED);
    // per rule: the runner adds its series when it knows the rules
    LazyLock::force(&ALERTS);
    LazyLock::force(&ALERT_ACK_LATENCY);
    for result in ["restored", "rejected", "saved", "save_failed"] {
        DETECT_SNAPSHOTS.with_label_values(&[result]);
    }
    LazyLock::force(&DETECT_SNAPSHOT_BYTES);
    LazyLock::force(&AGGREGATE_WINDOWS);
    LazyLock::force(&AGGREGATE_OPEN_WINDOWS);
    LazyLock::force(&AGGREGATE_LIVE_SERIES);
    LazyLock::force(&OPEN_TRACES);
    LazyLock::force(&BUFFERED_SPANS);
    LazyLock::force(&BUFFERED_BYTES);
    LazyLock::force(&OPEN_TRACES_LIMIT);
    LazyLock::force(&AMENDMENTS);
    LazyLock::force(&DUPLICATES);
    LazyLock::force(&WATERMARK);
    LazyLock::force(&COMMITS);
    LazyLock::force(&TRANSACTIONS);
    LazyLock::force(&TRANSACTIONS_REFUSED);
    LazyLock::force(&STATE_RECORDS_OVERSIZE);
    LazyLock::force(&HELD_OFFSETS);
    LazyLock::force(&WATERMARK_LAG);
    LazyLock::force(&CONSUMER_LAG);
    LazyLock::force(&PRODUCED);
    LazyLock::force(&PRODUCE_ERRORS);
    LazyLock::force(&RECORDS_IN);
    LazyLock::force(&SPANS_IN);
    LazyLock::force(&DECODE_ERRORS);
    LazyLock::force(&UNDELIVERABLE);
    LazyLock::force(&RECORDS_SKIPPED_RESTORED);
}

/// Moves the assembler counters forward to `now`, given what was published last time.
pub fn publish_assembler(last: &Stats, now: &Stats) {
    let delta = |a: u64, b: u64| b.saturating_sub(a);
    for (i, r) in CloseReason::ALL.iter().enumerate() {
        let d = delta(last.closed[i], now.closed[i]);
        TRACES_CLOSED.with_label_values(&[r.as_str()]).inc_by(d);
        if r.is_eviction() {
            EVICTIONS.with_label_values(&[r.as_str()]).inc_by(d);
        }
    }
    AMENDMENTS.inc_by(delta(last.amendments_closed, now.amendments_closed));
    DUPLICATES.inc_by(delta(last.duplicates, now.duplicates));
    LATE_SPANS
        .with_label_values(&["amended"])
        .inc_by(delta(last.late_amended, now.late_amended));
    LATE_SPANS
        .with_label_values(&["late_topic"])
        .inc_by(delta(last.late_routed, now.late_routed));
    LATE_SPANS
        .with_label_values(&["dropped"])
        .inc_by(delta(last.late_dropped, now.late_dropped));
    SPANS_DROPPED
        .with_label_values(&["too_large"])
        .inc_by(delta(last.too_large, now.too_large));
    SPANS_DROPPED
        .with_label_values(&["revoked"])
        .inc_by(delta(last.revoked_spans, now.revoked_spans));
}

/// The metrics in Prometheus text format.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut buf)
        .expect("text encoding");
    String::from_utf8(buf).expect("utf-8")
}
