//! The payload Alertmanager's webhook receiver sends (version 4), so receivers written for
//! Alertmanager take spanline's alerts unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::format::{annotations, labels, rfc3339_ms, with_superseded};
use crate::model::{Alert, AlertStatus, INCIDENT_ANNOTATION};

/// The `receiver` name in every payload.
pub const RECEIVER: &str = "spanline";

/// What Alertmanager sends as `endsAt` while an alert fires (Go's zero time).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One notification: the alerts of one group (one rule).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub version: &'static str,
    pub group_key: String,
    pub truncated_alerts: u64,
    /// `firing` when any alert of the group fires, else `resolved`.
    pub status: &'static str,
    pub receiver: &'static str,
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert of the group has, with the same value.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert of the group has, with the same value.
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
}

/// One alert of a notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: &'static str,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    /// [`ZERO_TIME`] while firing.
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

impl WebhookAlert {
    fn new(alert: &Alert, generator_url: &str, now_ms: i64) -> Self {
        let ends_at = match alert.status {
            AlertStatus::Firing => ZERO_TIME.to_owned(),
            AlertStatus::Resolved => {
                rfc3339_ms(alert.ends_at_ms.unwrap_or(now_ms).max(alert.starts_at_ms))
            }
        };
        WebhookAlert {
            status: alert.status.as_str(),
            labels: labels(alert),
            annotations: annotations(alert),
            starts_at: rfc3339_ms(alert.starts_at_ms),
            ends_at,
            generator_url: generator_url.to_owned(),
            fingerprint: alert.fingerprint.clone(),
        }
    }
}

/// The payloads for `alerts`: one per incident (group label `incident`, for alerts filed
/// under one) or else per rule (`alertname`, as Alertmanager's default route groups), in
/// order of each group's first alert. The group key of an incident stays the same for all
/// its alerts, so a receiver that deduplicates by it (as PagerDuty does) pages once.
pub fn payloads(alerts: &[Arc<Alert>], external_url: Option<&str>, now_ms: i64) -> Vec<Payload> {
    let external_url = external_url.unwrap_or_default();
    let mut groups: Vec<((&str, &str), Vec<WebhookAlert>)> = Vec::new();
    for alert in alerts {
        let items =
            with_superseded(alert, now_ms).map(|a| WebhookAlert::new(&a, external_url, now_ms));
        let key = match alert.annotations.get(INCIDENT_ANNOTATION) {
            Some(id) => (INCIDENT_ANNOTATION, id.as_str()),
            None => ("alertname", alert.rule.as_str()),
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.extend(items),
            None => groups.push((key, items.collect())),
        }
    }
    groups
        .into_iter()
        .map(|((name, value), alerts)| {
            let status = if alerts
                .iter()
                .any(|a| a.status == AlertStatus::Firing.as_str())
            {
                AlertStatus::Firing
            } else {
                AlertStatus::Resolved
            };
            let group_labels = BTreeMap::from([(name.to_owned(), value.to_owned())]);
            Payload {
                version: "4",
                // Alertmanager's form: the route's key, then the group labels.
                group_key: format!("{{}}:{{{name}={value:?}}}"),
                truncated_alerts: 0,
                status: status.as_str(),
                receiver: RECEIVER,
                group_labels,
                common_labels: common(alerts.iter().map(|a| &a.labels)),
                common_annotations: common(alerts.iter().map(|a| &a.annotations)),
                external_url: external_url.to_owned(),
                alerts,
            }
        })
        .collect()
}

/// The entries every map has with the same value.
fn common<'a>(
    mut maps: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let Some(first) = maps.next() else {
        return BTreeMap::new();
    };
    let mut shared = first.clone();
    for map in maps {
        shared.retain(|k, v| map.get(k) == Some(v));
    }
    shared
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::sinks::format::tests::alert;

    #[test]
    fn firing_payload_matches_alertmanager_v4() {
        let a = Arc::new(alert("LatencyHigh", "checkout"));
        let p = payloads(&[Arc::clone(&a)], Some("http://spanline:9464"), 0);
        assert_eq!(p.len(), 1);
        let v: Value = serde_json::to_value(&p[0]).unwrap();
        let labels =
            json!({"alertname": "LatencyHigh", "service": "checkout", "severity": "warning"});
        let annotations = json!({
            "description": "p99 latency over baseline",
            "exemplar_trace_ids": "0af7651916cd43dd8448eb211c80319c,4bf92f3577b34da6a3ce929d0e0e4736",
            "score": "0.93",
            "summary": "checkout is slow",
            "suspected_service": "llm-openai",
            "suspected_services": crate::sinks::format::suspects_text(&crate::sinks::format::tests::alert("LatencyHigh", "checkout").suspected_services)
        });
        assert_eq!(
            v,
            json!({
                "version": "4",
                "groupKey": "{}:{alertname=\"LatencyHigh\"}",
                "truncatedAlerts": 0,
                "status": "firing",
                "receiver": "spanline",
                "groupLabels": {"alertname": "LatencyHigh"},
                "commonLabels": labels,
                "commonAnnotations": annotations,
                "externalURL": "http://spanline:9464",
                "alerts": [{
                    "status": "firing",
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": "2024-05-01T12:00:00.250Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://spanline:9464",
                    "fingerprint": a.fingerprint,
                }]
            })
        );
    }

    #[test]
    fn groups_by_rule_with_common_labels_and_status() {
        let mut resolved = alert("LatencyHigh", "search");
        resolved.status = AlertStatus::Resolved;
        resolved.ends_at_ms = Some(resolved.starts_at_ms + 1_000);
        resolved.summary = "search is slow".to_owned();
        let alerts: Vec<Arc<Alert>> = vec![
            Arc::new(alert("LatencyHigh", "checkout")),
            Arc::new(alert("ErrorsHigh", "checkout")),
            Arc::new(resolved),
        ];
        let p = payloads(&alerts, None, 0);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].group_labels["alertname"], "LatencyHigh");
        assert_eq!(p[0].status, "firing");
        assert_eq!(p[0].alerts.len(), 2);
        assert_eq!(p[0].alerts[1].status, "resolved");
        assert_eq!(p[0].alerts[1].ends_at, "2024-05-01T12:00:01.250Z");
        assert_eq!(p[0].external_url, "");
        assert_eq!(
            p[0].common_labels,
            BTreeMap::from([
                ("alertname".to_owned(), "LatencyHigh".to_owned()),
                ("severity".to_owned(), "warning".to_owned()),
            ])
        );
        assert!(!p[0].common_annotations.contains_key("summary"));
        assert_eq!(p[0].common_annotations["suspected_service"], "llm-openai");
        assert_eq!(p[1].group_key, "{}:{alertname=\"ErrorsHigh\"}");

        let only_resolved = payloads(&alerts[2..], None, 0);
        assert_eq!(only_resolved[0].status, "resolved");
    }

    #[test]
    fn group_key_escapes_quotes() {
        let a = Arc::new(alert("say \"hi\"", "x"));
        assert_eq!(
            payloads(&[a], None, 0)[0].group_key,
            r#"{}:{alertname="say \"hi\""}"#
        );
    }
}
