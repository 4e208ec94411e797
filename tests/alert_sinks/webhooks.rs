//! Deliveries to webhooks: a local HTTP receiver that checks the v4 payload and can fail
//! before it succeeds, and a port nobody listens on, which must never block the sender.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use spanline::model::Alert;
use spanline::sinks::{AlertSinks, AlertSinksConfig, WebhookConfig};

use super::{
    deliveries_metric, firing, parse_ms, resolved, rfc3339, shut_down, sinks_config, GENERATOR_URL,
};

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
