//! Metrics of the trace repository's feeder: records stored and dropped by kind (traces,
//! aggregates, alerts) and reason, retention deletions, and the database size.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGauge};

use super::metrics::register_counter_vec;

/// Kinds of records the feeder reads.
pub const KINDS: [&str; 3] = ["traces", "aggregates", "alerts"];

pub static STORED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "spanline_repository_records_stored_total",
        "Records of the output topics stored in the trace repository, by kind",
        &["kind"],
    )
});
pub static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "spanline_repository_records_dropped_total",
        "Records of the output topics the trace repository could not decode or store, by kind and reason",
        &["kind", "reason"],
    )
});
pub static RETENTION_DELETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "spanline_repository_retention_deleted_total",
        "Traces, windows and alert events deleted by retention, by kind and rule",
        &["kind", "rule"],
    )
});
pub static BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    let g = IntGauge::new(
        "spanline_repository_bytes",
        "Bytes of database pages in use by the trace repository",
    )
    .expect("valid metric");
    super::metrics::REGISTRY
        .register(Box::new(g.clone()))
        .expect("registered once");
    g
});

/// Registers the families with the labels known up front.
pub fn init() {
    for kind in KINDS {
        STORED.with_label_values(&[kind]);
    }
    for (kind, rule) in [
        ("traces", "max_age"),
        ("traces", "max_bytes"),
        ("aggregates", "max_age"),
        ("alerts", "max_age"),
    ] {
        RETENTION_DELETED.with_label_values(&[kind, rule]);
    }
    LazyLock::force(&DROPPED);
    LazyLock::force(&BYTES);
}
