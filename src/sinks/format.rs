//! What both payloads share: an alert's labels and annotations as Alertmanager sees
//! them, and RFC 3339 times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::{Alert, AlertStatus, ESCALATED_FROM_ANNOTATION, INCIDENT_ANNOTATION};

/// The latest instant RFC 3339 (four-digit years) can show: 9999-12-31T23:59:59.999Z.
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

/// Unix milliseconds as RFC 3339 in UTC with milliseconds (`2024-05-01T12:00:00.250Z`);
/// clamped to years 1970..=9999.
pub fn rfc3339_ms(ms: i64) -> String {
    let ms = ms.clamp(0, MAX_RFC3339_MS) as u64;
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Wall-clock now, unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `name` as a valid Alertmanager label or annotation name (`[a-zA-Z_][a-zA-Z0-9_]*`):
/// other characters become `_`, as Prometheus does with OpenTelemetry attribute names.
/// Alertmanager refuses a whole request over one invalid name.
pub fn label_name(name: &str) -> String {
    crate::model::label_name(name)
}

fn sanitized(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| (label_name(k), v.clone()))
        .collect()
}

/// The alert's labels (names made valid) plus `alertname` (the rule), `severity` and,
/// for an alert filed under an incident, `incident` (its id, the same for every event of
/// the episode), which win over labels of the same name. Alertmanager routes that group
/// by `incident` notify once per fault.
pub fn labels(alert: &Alert) -> BTreeMap<String, String> {
    let mut labels = sanitized(&alert.labels);
    labels.insert("alertname".to_owned(), alert.rule.clone());
    labels.insert("severity".to_owned(), alert.severity.clone());
    if let Some(id) = alert.annotations.get(INCIDENT_ANNOTATION) {
        labels.insert(INCIDENT_ANNOTATION.to_owned(), id.clone());
    }
    labels
}

/// What a receiver that identifies alerts by their labels is sent for `alert`: the alert,
/// and for an escalation (annotation `escalated_from`) first the alert at the severity it
/// left, resolved at `now_ms` (never before it started). `severity` is a label there, so
/// without that resolution the lower-severity alert would stay active beside the raised
/// one until it timed out.
pub fn with_superseded(alert: &Alert, now_ms: i64) -> impl Iterator<Item = Alert> + '_ {
    let superseded = alert
        .annotations
        .get(ESCALATED_FROM_ANNOTATION)
        .filter(|from| alert.status == AlertStatus::Firing && **from != alert.severity)
        .map(|from| Alert {
            status: AlertStatus::Resolved,
            severity: from.clone(),
            ends_at_ms: Some(now_ms.max(alert.starts_at_ms)),
            ..alert.clone()
        });
    superseded.into_iter().chain(std::iter::once(alert.clone()))
}

/// The alert's annotations (names made valid) plus `summary`, `suspected_service` (when
/// known), `suspected_services` (the ranked suspects, one line each: rank, service,
/// score and evidence; when any), `score` and `exemplar_trace_ids` (comma-joined, when
/// any), which win over annotations of the same name.
pub fn annotations(alert: &Alert) -> BTreeMap<String, String> {
    let mut annotations = sanitized(&alert.annotations);
    annotations.insert("summary".to_owned(), alert.summary.clone());
    if let Some(service) = &alert.suspected_service {
        annotations.insert("suspected_service".to_owned(), service.clone());
    }
    if !alert.suspected_services.is_empty() {
        annotations.insert(
            "suspected_services".to_owned(),
            suspects_text(&alert.suspected_services),
        );
    }
    annotations.insert("score".to_owned(), alert.score.to_string());
    if !alert.exemplar_trace_ids.is_empty() {
        annotations.insert(
            "exemplar_trace_ids".to_owned(),
            alert.exemplar_trace_ids.join(","),
        );
    }
    annotations
}

/// Ranked suspects as text, a line each: `1. ts-food-service (0.83): evidence; evidence`.
pub fn suspects_text(suspects: &[crate::model::Suspect]) -> String {
    suspects
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "{}. {} ({:.2}): {}",
                i + 1,
                s.service,
                s.score,
                s.evidence.join("; ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the UI at `ui_url` shows trace `trace_id`.
pub fn trace_link(ui_url: &str, trace_id: &str) -> String {
    format!("{}/#/trace/{trace_id}", ui_url.trim_end_matches('/'))
}

/// `alert` with the annotation `trace_url` (its first exemplar trace in the UI at
/// `ui_url`), when it has exemplars and no such annotation yet.
pub fn with_trace_url(alert: &Arc<Alert>, ui_url: &str) -> Arc<Alert> {
    match alert.exemplar_trace_ids.first() {
        Some(id) if !alert.annotations.contains_key("trace_url") => {
            let mut linked = Alert::clone(alert);
            linked
                .annotations
                .insert("trace_url".to_owned(), trace_link(ui_url, id));
            Arc::new(linked)
        }
        _ => alert.clone(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A firing alert for tests.
    pub(crate) fn alert(rule: &str, service: &str) -> Alert {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_owned(), rule.to_owned());
        labels.insert("service".to_owned(), service.to_owned());
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "description".to_owned(),
            "p99 latency over baseline".to_owned(),
        );
        Alert {
            fingerprint: format!(
                "{:016x}",
                super::super::retry::seed(&format!("{rule}{service}"))
            ),
            status: AlertStatus::Firing,
            rule: rule.to_owned(),
            severity: "warning".to_owned(),
            starts_at_ms: 1_714_564_800_250,
            ends_at_ms: None,
            labels,
            annotations,
            summary: format!("{service} is slow"),
            suspected_service: Some("llm-openai".to_owned()),
            suspected_services: vec![
                crate::model::Suspect {
                    service: "llm-openai".to_owned(),
                    score: 0.83,
                    evidence: vec![
                        "llm-openai self time on the critical path 1s → 4s in 83 % of 12 traces"
                            .to_owned(),
                        "error origin in 40 % of 5 failed traces".to_owned(),
                    ],
                },
                crate::model::Suspect {
                    service: "vector-store".to_owned(),
                    score: 0.31,
                    evidence: vec!["span search missing from 31 % of query calls".to_owned()],
                },
            ],
            score: 0.93,
            value: Some(2.5e9),
            exemplar_trace_ids: vec![
                "0af7651916cd43dd8448eb211c80319c".to_owned(),
                "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            ],
        }
    }

    #[test]
    fn times_are_rfc3339_utc_with_millis() {
        assert_eq!(rfc3339_ms(1_714_564_800_250), "2024-05-01T12:00:00.250Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn labels_carry_rule_and_severity() {
        let mut a = alert("LatencyHigh", "checkout");
        a.labels.insert("severity".to_owned(), "stale".to_owned());
        let l = labels(&a);
        assert_eq!(l["alertname"], "LatencyHigh");
        assert_eq!(l["severity"], "warning");
        assert_eq!(l["service"], "checkout");
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn an_escalation_resolves_the_severity_it_left() {
        let plain = alert("LatencyHigh", "checkout");
        let sent: Vec<Alert> = with_superseded(&plain, 1_714_564_900_000).collect();
        assert_eq!(sent, std::slice::from_ref(&plain));

        let mut raised = plain.clone();
        raised.severity = "critical".to_owned();
        raised
            .annotations
            .insert(ESCALATED_FROM_ANNOTATION.to_owned(), "warning".to_owned());
        let sent: Vec<Alert> = with_superseded(&raised, 1_714_564_900_000).collect();
        assert_eq!(sent.len(), 2);
        let (old, new) = (&sent[0], &sent[1]);
        assert_eq!(
            (old.status, old.severity.as_str()),
            (AlertStatus::Resolved, "warning")
        );
        assert_eq!(old.ends_at_ms, Some(1_714_564_900_000));
        assert_eq!(
            (old.fingerprint.as_str(), old.starts_at_ms),
            (raised.fingerprint.as_str(), raised.starts_at_ms)
        );
        assert_eq!(new, &raised);
        // a clock behind the alert's start never ends it before it started
        let early: Vec<Alert> = with_superseded(&raised, 0).collect();
        assert_eq!(early[0].ends_at_ms, Some(raised.starts_at_ms));
        // its resolution is itself, at the raised severity
        let mut done = raised.clone();
        done.status = AlertStatus::Resolved;
        assert_eq!(with_superseded(&done, 0).count(), 1);
    }

    #[test]
    fn names_are_made_valid() {
        assert_eq!(label_name("service.name"), "service_name");
        assert_eq!(label_name("gen_ai.system"), "gen_ai_system");
        assert_eq!(label_name("2xx"), "_2xx");
        assert_eq!(label_name(""), "_");
        assert_eq!(label_name("ok_Name9"), "ok_Name9");
        let mut a = alert("LatencyHigh", "checkout");
        a.labels.insert("k8s.pod-name".to_owned(), "p-1".to_owned());
        a.annotations
            .insert("runbook url".to_owned(), "http://x".to_owned());
        assert_eq!(labels(&a)["k8s_pod_name"], "p-1");
        assert_eq!(annotations(&a)["runbook_url"], "http://x");
    }

    #[test]
    fn annotations_carry_the_explanation() {
        let a = alert("LatencyHigh", "checkout");
        let n = annotations(&a);
        assert_eq!(n["summary"], "checkout is slow");
        assert_eq!(n["suspected_service"], "llm-openai");
        assert_eq!(
            n["suspected_services"],
            "1. llm-openai (0.83): llm-openai self time on the critical path 1s → 4s in 83 % \
             of 12 traces; error origin in 40 % of 5 failed traces\n\
             2. vector-store (0.31): span search missing from 31 % of query calls"
        );
        assert_eq!(n["score"], "0.93");
        assert_eq!(
            n["exemplar_trace_ids"],
            "0af7651916cd43dd8448eb211c80319c,4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(n["description"], "p99 latency over baseline");

        let mut bare = a.clone();
        bare.suspected_service = None;
        bare.suspected_services.clear();
        bare.exemplar_trace_ids.clear();
        let n = annotations(&bare);
        assert!(!n.contains_key("suspected_service") && !n.contains_key("exemplar_trace_ids"));
        assert!(!n.contains_key("suspected_services"));
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;

    #[test]
    fn an_alert_with_exemplars_links_its_first_trace_in_the_ui() {
        let mut a = tests::alert("service_latency", "orders");
        a.exemplar_trace_ids = vec!["4bf92f3577b34da6a3ce929d0e0e4736".into(), "ab".into()];
        let linked = with_trace_url(&Arc::new(a), "https://spanline.example.com/");
        assert_eq!(
            annotations(&linked)["trace_url"],
            "https://spanline.example.com/#/trace/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut bare = tests::alert("service_latency", "orders");
        bare.exemplar_trace_ids.clear();
        let bare = Arc::new(bare);
        let unlinked = with_trace_url(&bare, "https://spanline.example.com");
        assert!(!annotations(&unlinked).contains_key("trace_url"));
    }
}
