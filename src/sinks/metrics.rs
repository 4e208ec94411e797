//! The alert deliveries' own metrics, in the registry `/metrics` serves. Labels come from
//! fixed sets: the sink kind and the outcome.

use std::sync::LazyLock;

use prometheus::{GaugeVec, IntCounterVec};

use super::{Outcome, SinkKind};
use crate::telemetry::metrics::{register_counter_vec, register_gauge_vec};

/// `spanline_alert_deliveries_total{sink,outcome}`.
pub static DELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "spanline_alert_deliveries_total",
        "Alerts by destination kind and outcome: delivered, retried (once per extra attempt), failed (retries exhausted or refused), dropped (queue full or shut down)",
        &["sink", "outcome"],
    )
});

/// `spanline_alert_queue_depth{sink}`.
pub static QUEUE_DEPTH: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec(
        "spanline_alert_queue_depth",
        "Alerts waiting for delivery, summed over the destinations of a kind",
        &["sink"],
    )
});

/// Creates every series at zero, so they exist before they move.
pub fn init() {
    for sink in SinkKind::ALL {
        for outcome in Outcome::ALL {
            DELIVERIES.with_label_values(&[sink.as_str(), outcome.as_str()]);
        }
        QUEUE_DEPTH.with_label_values(&[sink.as_str()]);
    }
}
