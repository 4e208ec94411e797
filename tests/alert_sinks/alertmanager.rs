//! Deliveries to a real Prometheus Alertmanager: the process, and the alerts it lists
//! after a firing, an escalation and a resolution.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use spanline::sinks::{AlertSinks, AlertSinksConfig, AlertmanagerConfig};

use super::support;
use super::{firing, now_ms, parse_ms, resolved, shut_down, sinks_config, GENERATOR_URL};

/// A real Alertmanager (Debian package `prometheus-alertmanager`) on loopback, clustering
/// off, a receiver that notifies nobody; killed on drop.
struct Alertmanager {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn bin() -> Option<PathBuf> {
        support::find_program("prometheus-alertmanager")
            .or_else(|| support::find_program("alertmanager"))
    }

    /// Starts one when installed; `None` (test skipped) when not.
    async fn start_or_skip() -> Option<Self> {
        let bin = Self::bin();
        if !support::require_or_skip(
            "alertmanager (apt-get install prometheus-alertmanager)",
            bin.is_some(),
        ) {
            return None;
        }
        let bin = bin.unwrap();
        // The port is free when chosen but could be taken before Alertmanager binds it.
        let mut failure = String::new();
        for _ in 0..3 {
            match Self::start(&bin).await {
                Ok(am) => return Some(am),
                Err(e) => failure = e,
            }
        }
        panic!("alertmanager did not start: {failure}");
    }

    async fn start(bin: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        )
        .expect("write alertmanager.yml");
        let port = support::free_port();
        let log = dir.path().join("alertmanager.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut am = Alertmanager {
            child,
            port,
            log,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = am.child.try_wait() {
                return Err(format!("exited with {status}\n{}", am.log_tail()));
            }
            let ready = client
                .get(format!("{}/-/ready", am.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(am);
            }
            if Instant::now() >= deadline {
                let _ = am.child.kill();
                return Err(format!("not ready within 30s\n{}", am.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self) -> String {
        support::file_tail(&self.log, 30)
    }

    /// `GET /api/v2/alerts` with `query`.
    async fn alerts(&self, query: &str) -> Vec<Value> {
        let url = format!("{}/api/v2/alerts{query}", self.url());
        let body: Value = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        body.as_array().cloned().unwrap_or_default()
    }

    /// Polls `query` until `done` holds for the alerts listed, for at most 20 s.
    async fn poll(&self, query: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let alerts = self.alerts(query).await;
            if done(&alerts) {
                return alerts;
            }
            if Instant::now() >= deadline {
                panic!(
                    "alertmanager: {what} not seen within 20s; last answer: {alerts:#?}\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let Some(am) = Alertmanager::start_or_skip().await else {
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
    let Some(am) = Alertmanager::start_or_skip().await else {
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
