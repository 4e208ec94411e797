//! Deliveries to a real Prometheus Alertmanager: the process, and the alerts it lists
//! after a firing, an escalation and a resolution.

use serde_json::{json, Value};

use spanline::sinks::{AlertSinks, AlertSinksConfig, AlertmanagerConfig};

use super::support::Alertmanager;
use super::{firing, now_ms, parse_ms, resolved, shut_down, sinks_config, GENERATOR_URL};

/// The sinks' settings with `am` as their one destination.
fn alertmanager_sinks(am: &Alertmanager) -> AlertSinksConfig {
    AlertSinksConfig {
        alertmanager: Some(AlertmanagerConfig::new(am.url())),
        ..sinks_config()
    }
}

fn is_ours(alert: &Value, service: &str) -> bool {
    alert["labels"]["alertname"] == "LatencyHigh" && alert["labels"]["service"] == service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_receives_and_resolves() {
    let Some(am) = Alertmanager::start_or_skip(Alertmanager::BLACKHOLE).await else {
        return;
    };
    let (sinks, handle) = AlertSinks::start(alertmanager_sinks(&am));

    let alert = firing("LatencyHigh", "checkout", "5c2e1a0b9d8f7e61");
    sinks.send(std::slice::from_ref(&alert));
    let listed = am
        .poll("", "the firing alert", |all| {
            all.iter().any(|a| is_ours(a, "checkout"))
        })
        .await;
    let got = listed.iter().find(|a| is_ours(a, "checkout")).unwrap();
    assert_eq!(
        got["labels"],
        json!({"alertname": "LatencyHigh", "service": "checkout", "severity": "critical"})
    );
    assert_eq!(
        got["annotations"],
        json!({
            "description": "p99 latency 4.2x its baseline",
            "summary": "checkout p99 latency is high",
            "suspected_service": "llm-openai",
            "score": "0.97",
            "exemplar_trace_ids": "0af7651916cd43dd8448eb211c80319c,4bf92f3577b34da6a3ce929d0e0e4736"
        })
    );
    assert_eq!(got["status"]["state"], "active", "{got:#}");
    assert_eq!(got["generatorURL"], GENERATOR_URL);
    assert_eq!(
        parse_ms(got["startsAt"].as_str().unwrap()),
        alert.starts_at_ms
    );
    // Without an end Alertmanager keeps it active for its resolve_timeout.
    assert!(
        parse_ms(got["endsAt"].as_str().unwrap()) > now_ms(),
        "{got:#}"
    );

    sinks.send(&[resolved(&alert)]);
    am.poll("?active=true", "the alert resolved", |all| {
        !all.iter().any(|a| is_ours(a, "checkout"))
    })
    .await;

    let stats = shut_down(&sinks, handle).await;
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert_eq!(
        (s.delivered, s.failed, s.dropped, s.queued),
        (2, 0, 0, 0),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_alert_replaces_its_lower_severity_in_alertmanager() {
    let Some(am) = Alertmanager::start_or_skip(Alertmanager::BLACKHOLE).await else {
        return;
    };
    let (sinks, handle) = AlertSinks::start(alertmanager_sinks(&am));
    let severities = |all: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = all
            .iter()
            .filter(|a| is_ours(a, "payments"))
            .map(|a| a["labels"]["severity"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };

    let mut warning = firing("LatencyHigh", "payments", "77aa00bb11cc22dd");
    warning.severity = "warning".to_owned();
    warning
        .annotations
        .insert("notification".to_owned(), "new".to_owned());
    sinks.send(std::slice::from_ref(&warning));
    am.poll("?active=true", "the warning", |all| {
        severities(all) == ["warning"]
    })
    .await;

    // what the alert stage emits on escalation: the same fingerprint, the raised
    // severity, and the severity it left
    let mut critical = warning.clone();
    critical.severity = "critical".to_owned();
    critical
        .annotations
        .insert("notification".to_owned(), "escalation".to_owned());
    critical
        .annotations
        .insert("escalated_from".to_owned(), "warning".to_owned());
    sinks.send(std::slice::from_ref(&critical));
    am.poll("?active=true", "only the critical alert active", |all| {
        severities(all) == ["critical"]
    })
    .await;

    sinks.send(&[resolved(&critical)]);
    am.poll("?active=true", "nothing of ours active", |all| {
        severities(all).is_empty()
    })
    .await;
    let stats = shut_down(&sinks, handle).await;
    assert_eq!(
        (stats[0].delivered, stats[0].failed),
        (3, 0),
        "{:?}",
        stats[0]
    );
}
