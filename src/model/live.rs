//! What the pipeline pushes to live clients (the web UI) as it emits: each closed
//! aggregate window, compactly, and each alert event.

use serde::Serialize;

use super::{Alert, WindowAggregate};

/// One pushed event, serialised as `{"type": "window" | "alert", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    Window(LiveWindow),
    Alert(Box<Alert>),
}

/// A closed aggregate window in brief.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveWindow {
    /// The dimension set's name (`service`, `operation`, ...) or `service_graph`.
    pub scope: String,
    /// `(dimension, value)` pairs in the set's order.
    pub key: Vec<(String, String)>,
    /// Window size in milliseconds.
    pub window_ms: i64,
    /// Window end (exclusive), unix milliseconds.
    pub window_end_ms: i64,
    pub count: u64,
    pub errors: u64,
    /// Latency p50 and p99 in milliseconds (`None` without calls).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl LiveWindow {
    /// The brief of `w`.
    pub fn of(w: &WindowAggregate) -> Self {
        let ms = |q: f64| Some(w.quantile(q) / 1e6).filter(|v| v.is_finite());
        Self {
            scope: w.scope.to_string(),
            key: w
                .key
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            window_ms: w.window_size_ns / 1_000_000,
            window_end_ms: w.window_end_ns / 1_000_000,
            count: w.count,
            errors: w.error_count,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_window_brief_serialises_compactly_with_its_type() {
        let mut w = WindowAggregate::empty(
            10_000_000_000,
            10_000_000_000,
            Arc::from("service"),
            vec![(Arc::from("service"), Arc::from("orders"))],
            2_000_000_000,
        );
        let brief = LiveWindow::of(&w);
        assert_eq!(brief.p99_ms, None, "no calls, no latency");
        w.count = 4;
        w.error_count = 1;
        let json = serde_json::to_value(LiveEvent::Window(LiveWindow::of(&w))).unwrap();
        assert_eq!(json["type"], "window");
        assert_eq!(json["scope"], "service");
        assert_eq!(json["key"][0][1], "orders");
        assert_eq!(json["windowEndMs"], 20_000);
        assert_eq!(
            (json["count"].clone(), json["errors"].clone()),
            (4.into(), 1.into())
        );
    }
}
