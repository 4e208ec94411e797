//! Alert deliveries against real receivers: a Prometheus Alertmanager process, and local
//! HTTP servers standing in for webhooks (one that fails before it succeeds, and a port
//! nobody listens on).
//!
//! The tests by receiver: `alertmanager` (a real Alertmanager's API) and `webhooks` (the
//! v4 payload, retries, an unreachable destination). The alerts they send and the sinks'
//! shared settings are here.

#[path = "alert_sinks/alertmanager.rs"]
mod alertmanager;
mod support;
#[path = "alert_sinks/webhooks.rs"]
mod webhooks;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spanline::model::{Alert, AlertStatus};
use spanline::sinks::{AlertSinks, AlertSinksConfig, SinkStats};

const GENERATOR_URL: &str = "http://spanline.test:9464/alerts";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

/// Parses an RFC 3339 time as unix milliseconds.
fn parse_ms(text: &str) -> i64 {
    let t = humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A firing alert of `rule` on `service` that started a minute ago.
fn firing(rule: &str, service: &str, fingerprint: &str) -> Alert {
    Alert {
        fingerprint: fingerprint.to_owned(),
        status: AlertStatus::Firing,
        rule: rule.to_owned(),
        severity: "critical".to_owned(),
        starts_at_ms: now_ms() - 60_000,
        ends_at_ms: None,
        labels: BTreeMap::from([
            ("alertname".to_owned(), rule.to_owned()),
            ("service".to_owned(), service.to_owned()),
        ]),
        annotations: BTreeMap::from([(
            "description".to_owned(),
            "p99 latency 4.2x its baseline".to_owned(),
        )]),
        summary: format!("{service} p99 latency is high"),
        suspected_service: Some("llm-openai".to_owned()),
        suspected_services: vec![],
        score: 0.97,
        value: Some(0.97),
        exemplar_trace_ids: vec![
            "0af7651916cd43dd8448eb211c80319c".to_owned(),
            "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
        ],
    }
}

/// `alert` resolved a second ago.
fn resolved(alert: &Alert) -> Alert {
    Alert {
        status: AlertStatus::Resolved,
        ends_at_ms: Some(now_ms() - 1_000),
        ..alert.clone()
    }
}

fn sinks_config() -> AlertSinksConfig {
    AlertSinksConfig {
        max_retries: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        generator_url: Some(GENERATOR_URL.to_owned()),
        ..AlertSinksConfig::default()
    }
}

/// Asks the tasks to finish what is queued and waits for them.
async fn shut_down(sinks: &AlertSinks, handle: tokio::task::JoinHandle<()>) -> Vec<SinkStats> {
    sinks.shutdown(Duration::from_secs(10));
    tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("delivery tasks end within the shutdown timeout")
        .expect("delivery tasks do not panic");
    sinks.stats()
}

/// The value of `spanline_alert_deliveries_total{sink,outcome}` on `/metrics`.
fn deliveries_metric(sink: &str, outcome: &str) -> f64 {
    spanline::telemetry::metrics::render()
        .lines()
        .filter(|l| l.starts_with("spanline_alert_deliveries_total{"))
        .filter(|l| l.contains(&format!("sink=\"{sink}\"")))
        .find(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no deliveries metric for {sink}/{outcome}"))
}
