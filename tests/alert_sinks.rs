//! Alert deliveries against real receivers: a Prometheus Alertmanager process, and local
//! HTTP servers standing in for webhooks (one that fails before it succeeds, and a port
//! nobody listens on).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use spanline::model::{Alert, AlertStatus};
use spanline::sinks::{AlertSinks, AlertSinksConfig, AlertmanagerConfig, SinkStats, WebhookConfig};

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
        score: 0.97,
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

// ---------------------------------------------------------------------------------------
// Alertmanager

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

// ---------------------------------------------------------------------------------------
// Webhooks

/// A webhook receiver on 127.0.0.1:0: answers 503 to the first `fail_first` requests,
/// then 200, and hands every accepted request's headers and JSON body to the test.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    bodies: mpsc::UnboundedReceiver<(HeaderMap, Value)>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ReceiverState {
    fail_first: usize,
    requests: Arc<AtomicUsize>,
    bodies: mpsc::UnboundedSender<(HeaderMap, Value)>,
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    if n < state.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match serde_json::from_str(&body) {
        Ok(value) => {
            let _ = state.bodies.send((headers, value));
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let (tx, bodies) = mpsc::unbounded_channel();
        let requests = Arc::new(AtomicUsize::new(0));
        let state = ReceiverState {
            fail_first,
            requests: Arc::clone(&requests),
            bodies: tx,
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            addr,
            requests,
            bodies,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next accepted request, waiting at most 10 s.
    async fn next(&mut self) -> (HeaderMap, Value) {
        tokio::time::timeout(Duration::from_secs(10), self.bodies.recv())
            .await
            .expect("webhook request within 10s")
            .expect("receiver running")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receives_v4_payload() {
    let mut receiver = Receiver::start(0).await;
    let mut hook = WebhookConfig::new(receiver.url());
    hook.headers
        .insert("X-Spanline-Token".to_owned(), "s3cret".to_owned());
    let config = AlertSinksConfig {
        webhooks: vec![hook],
        ..sinks_config()
    };
    let (sinks, handle) = AlertSinks::start(config);

    let alert = firing("LatencyHigh", "checkout", "5c2e1a0b9d8f7e61");
    sinks.send(std::slice::from_ref(&alert));
    let (headers, body) = receiver.next().await;
    assert_eq!(headers["x-spanline-token"], "s3cret");
    assert_eq!(headers["content-type"], "application/json");
    let labels = json!({"alertname": "LatencyHigh", "service": "checkout", "severity": "critical"});
    let annotations = json!({
        "description": "p99 latency 4.2x its baseline",
        "summary": "checkout p99 latency is high",
        "suspected_service": "llm-openai",
        "score": "0.97",
        "exemplar_trace_ids": "0af7651916cd43dd8448eb211c80319c,4bf92f3577b34da6a3ce929d0e0e4736"
    });
    assert_eq!(
        body,
        json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"LatencyHigh\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "spanline",
            "groupLabels": {"alertname": "LatencyHigh"},
            "commonLabels": labels,
            "commonAnnotations": annotations,
            "externalURL": GENERATOR_URL,
            "alerts": [{
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(alert.starts_at_ms),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": GENERATOR_URL,
                "fingerprint": "5c2e1a0b9d8f7e61"
            }]
        })
    );

    let done = resolved(&alert);
    sinks.send(std::slice::from_ref(&done));
    let (_, body) = receiver.next().await;
    assert_eq!(body["status"], "resolved");
    let sent = &body["alerts"][0];
    assert_eq!(sent["status"], "resolved");
    assert_eq!(sent["fingerprint"], "5c2e1a0b9d8f7e61");
    assert_eq!(sent["startsAt"], rfc3339(alert.starts_at_ms));
    assert_eq!(sent["endsAt"], rfc3339(done.ends_at_ms.unwrap()));
    assert_eq!(
        parse_ms(sent["endsAt"].as_str().unwrap()),
        done.ends_at_ms.unwrap()
    );

    let stats = shut_down(&sinks, handle).await;
    let s = &stats[0];
    assert_eq!(
        (s.delivered, s.retried, s.failed, s.dropped),
        (2, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_then_delivers() {
    const FAILURES: usize = 3;
    let mut receiver = Receiver::start(FAILURES).await;
    let config = AlertSinksConfig {
        webhooks: vec![WebhookConfig::new(receiver.url())],
        max_retries: 5,
        ..sinks_config()
    };
    let (sinks, handle) = AlertSinks::start(config);
    let retried_before = deliveries_metric("webhook", "retried");

    sinks.send(&[firing("ErrorsHigh", "search", "9a8b7c6d5e4f3a2b")]);
    let (_, body) = receiver.next().await;
    assert_eq!(body["alerts"][0]["fingerprint"], "9a8b7c6d5e4f3a2b");

    let stats = shut_down(&sinks, handle).await;
    let s = &stats[0];
    assert_eq!(
        (s.delivered, s.retried, s.failed, s.dropped),
        (1, FAILURES as u64, 0, 0),
        "{s:?}"
    );
    assert_eq!(receiver.requests.load(Ordering::SeqCst), FAILURES + 1);
    assert!(receiver.bodies.try_recv().is_err(), "delivered once");
    // Other tests in this binary may count webhook retries too, never fewer.
    assert!(deliveries_metric("webhook", "retried") - retried_before >= FAILURES as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_webhook_never_blocks() {
    const CAPACITY: usize = 100;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}/hook")
    };
    let config = AlertSinksConfig {
        webhooks: vec![WebhookConfig::new(closed)],
        queue_capacity: CAPACITY,
        max_retries: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..AlertSinksConfig::default()
    };
    let (sinks, handle) = AlertSinks::start(config);
    let failed_before = deliveries_metric("webhook", "failed");
    let dropped_before = deliveries_metric("webhook", "dropped");

    let alerts: Vec<Alert> = (0..5_000)
        .map(|i| firing("LatencyHigh", &format!("svc-{i}"), &format!("{i:016x}")))
        .collect();
    let mut slowest = Duration::ZERO;
    let loop_started = Instant::now();
    for alert in &alerts {
        let started = Instant::now();
        sinks.send(std::slice::from_ref(alert));
        slowest = slowest.max(started.elapsed());
        let s = &sinks.stats()[0];
        assert!(s.queued <= CAPACITY, "queue grew past its bound: {s:?}");
    }
    // Waiting for the destination would take a connection attempt and three tries per
    // alert, seconds in all.
    let all_singles = loop_started.elapsed();
    let started = Instant::now();
    sinks.send(&alerts);
    slowest = slowest.max(started.elapsed());
    assert!(
        slowest < Duration::from_millis(500) && all_singles < Duration::from_secs(3),
        "send took up to {slowest:?} ({all_singles:?} for {} calls): it must not wait for the destination",
        alerts.len()
    );
    assert!(sinks.stats()[0].queued <= CAPACITY);

    let stats = shut_down(&sinks, handle).await;
    let s = &stats[0];
    let sent = 2 * alerts.len() as u64;
    assert_eq!(s.delivered, 0, "{s:?}");
    assert!(s.failed >= 1, "{s:?}");
    assert!(s.dropped > 0, "{s:?}");
    assert_eq!(
        s.failed + s.dropped,
        sent,
        "every alert accounted for once: {s:?}"
    );
    assert_eq!(s.queued, 0);
    assert!(deliveries_metric("webhook", "failed") - failed_before >= s.failed as f64);
    assert!(deliveries_metric("webhook", "dropped") - dropped_before >= s.dropped as f64);
}
