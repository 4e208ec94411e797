//! Alertmanager's API v2: `POST {url}/api/v2/alerts` with a JSON array of alerts.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::format::{annotations, labels, rfc3339_ms, with_superseded};
use crate::model::{Alert, AlertStatus};

/// One alert as `POST /api/v2/alerts` takes it (`postableAlert`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    /// Left out while firing: Alertmanager then keeps the alert active for its
    /// `resolve_timeout` after the last update, so a firing alert must be re-sent within
    /// that time (the alert stage's `repeat_interval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

impl PostableAlert {
    /// The API's form of `alert`. A resolved alert ends at its `ends_at_ms` (`now_ms`
    /// when missing), never before it started, which Alertmanager would refuse.
    pub fn new(alert: &Alert, generator_url: Option<&str>, now_ms: i64) -> Self {
        let ends_at = match alert.status {
            AlertStatus::Firing => None,
            AlertStatus::Resolved => Some(rfc3339_ms(
                alert.ends_at_ms.unwrap_or(now_ms).max(alert.starts_at_ms),
            )),
        };
        PostableAlert {
            labels: labels(alert),
            annotations: annotations(alert),
            starts_at: rfc3339_ms(alert.starts_at_ms),
            ends_at,
            generator_url: generator_url.map(str::to_owned),
        }
    }
}

/// The endpoint under an Alertmanager base URL.
pub fn endpoint(base: &str) -> String {
    format!("{}/api/v2/alerts", base.trim_end_matches('/'))
}

/// The request body for `alerts`: one JSON array.
pub fn body(alerts: &[Arc<Alert>], generator_url: Option<&str>, now_ms: i64) -> Vec<u8> {
    let payload: Vec<PostableAlert> = alerts
        .iter()
        .flat_map(|a| with_superseded(a, now_ms))
        .map(|a| PostableAlert::new(&a, generator_url, now_ms))
        .collect();
    serde_json::to_vec(&payload).expect("alerts serialize")
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::sinks::format::tests::alert;

    #[test]
    fn firing_alert_has_no_end() {
        let a = Arc::new(alert("LatencyHigh", "checkout"));
        let v: Value = serde_json::from_slice(&body(&[a], None, 0)).unwrap();
        assert_eq!(
            v,
            json!([{
                "labels": {"alertname": "LatencyHigh", "service": "checkout", "severity": "warning"},
                "annotations": {
                    "description": "p99 latency over baseline",
                    "exemplar_trace_ids": "0af7651916cd43dd8448eb211c80319c,4bf92f3577b34da6a3ce929d0e0e4736",
                    "score": "0.93",
                    "summary": "checkout is slow",
                    "suspected_service": "llm-openai",
                    "suspected_services": crate::sinks::format::suspects_text(&crate::sinks::format::tests::alert("LatencyHigh", "checkout").suspected_services)
                },
                "startsAt": "2024-05-01T12:00:00.250Z"
            }])
        );
    }

    #[test]
    fn resolved_alert_ends_at_its_end_never_before_its_start() {
        let mut a = alert("LatencyHigh", "checkout");
        a.status = AlertStatus::Resolved;
        a.ends_at_ms = Some(a.starts_at_ms + 60_000);
        let p = PostableAlert::new(&a, Some("http://spanline:9464/"), 0);
        assert_eq!(p.ends_at.as_deref(), Some("2024-05-01T12:01:00.250Z"));
        assert_eq!(p.generator_url.as_deref(), Some("http://spanline:9464/"));

        a.ends_at_ms = Some(a.starts_at_ms - 1);
        let p = PostableAlert::new(&a, None, 0);
        assert_eq!(p.ends_at.as_deref(), Some("2024-05-01T12:00:00.250Z"));

        a.ends_at_ms = None;
        let p = PostableAlert::new(&a, None, a.starts_at_ms + 1_000);
        assert_eq!(p.ends_at.as_deref(), Some("2024-05-01T12:00:01.250Z"));
        let v = serde_json::to_value(&p).unwrap();
        assert!(v.get("generatorURL").is_none());
    }

    #[test]
    fn endpoint_joins_paths() {
        assert_eq!(endpoint("http://am:9093"), "http://am:9093/api/v2/alerts");
        assert_eq!(
            endpoint("http://am:9093/prefix/"),
            "http://am:9093/prefix/api/v2/alerts"
        );
    }
}
