//! Shutdown and overflow of the running destinations, against a closed loopback port.

use std::time::Duration;

use super::format::tests::alert;
use super::*;

/// A loopback URL nothing listens on.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/hook")
}

fn config(url: &str, initial_backoff: Duration, max_retries: u32) -> AlertSinksConfig {
    AlertSinksConfig {
        webhooks: vec![WebhookConfig::new(url)],
        queue_capacity: 4,
        max_retries,
        initial_backoff,
        max_backoff: initial_backoff * 4,
        ..AlertSinksConfig::default()
    }
}

async fn finished(handle: JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("delivery tasks end after shutdown")
        .expect("delivery tasks do not panic");
}

#[tokio::test]
async fn shutdown_deadline_cuts_retries_short() {
    let (sinks, handle) = AlertSinks::start(config(&closed_url(), Duration::from_secs(60), 5));
    sinks.send(&[alert("LatencyHigh", "checkout")]);
    sinks.shutdown(Duration::from_millis(200));
    finished(handle).await;
    let s = &sinks.stats()[0];
    assert_eq!(
        (s.delivered, s.failed, s.dropped, s.queued),
        (0, 0, 1, 0),
        "{s:?}"
    );
}

#[tokio::test]
async fn shutdown_deadline_cuts_a_hanging_request_short() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut c = config(&url, Duration::from_secs(60), 5);
    c.webhooks[0].timeout = Duration::from_secs(60);
    let (sinks, handle) = AlertSinks::start(c);
    sinks.send(&[alert("LatencyHigh", "checkout")]);
    let started = std::time::Instant::now();
    sinks.shutdown(Duration::from_millis(200));
    finished(handle).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let s = &sinks.stats()[0];
    assert_eq!((s.delivered, s.failed, s.dropped), (0, 0, 1), "{s:?}");
    silent.abort();
}

#[tokio::test]
async fn alerts_after_shutdown_are_dropped() {
    let (sinks, handle) = AlertSinks::start(config(&closed_url(), Duration::from_millis(1), 0));
    sinks.shutdown(Duration::ZERO);
    sinks.send(&[
        alert("LatencyHigh", "checkout"),
        alert("ErrorsHigh", "checkout"),
    ]);
    finished(handle).await;
    let s = &sinks.stats()[0];
    assert_eq!((s.delivered, s.dropped, s.queued), (0, 2, 0), "{s:?}");
}

#[tokio::test]
async fn exhausted_retries_count_as_failed() {
    let (sinks, handle) = AlertSinks::start(config(&closed_url(), Duration::from_millis(1), 2));
    sinks.send(&[alert("LatencyHigh", "checkout")]);
    sinks.shutdown(Duration::from_secs(30));
    finished(handle).await;
    let s = &sinks.stats()[0];
    assert_eq!(
        (s.delivered, s.retried, s.failed, s.dropped),
        (0, 2, 1, 0),
        "{s:?}"
    );
}

#[tokio::test]
async fn full_queue_keeps_the_newest() {
    let (sinks, handle) = AlertSinks::start(config(&closed_url(), Duration::from_secs(60), 5));
    let alerts: Vec<Alert> = (0..100)
        .map(|i| alert("LatencyHigh", &format!("svc-{i}")))
        .collect();
    for chunk in alerts.chunks(10) {
        sinks.send(chunk);
        let s = &sinks.stats()[0];
        assert!(s.queued <= s.capacity, "{s:?}");
    }
    sinks.shutdown(Duration::ZERO);
    finished(handle).await;
    let s = &sinks.stats()[0];
    // Every alert is accounted for exactly once: at most one batch was taken for
    // delivery, the rest were dropped by the queue or at shutdown.
    assert_eq!(s.delivered + s.failed + s.dropped, 100, "{s:?}");
    assert!(s.dropped >= 96, "{s:?}");
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_tasks() {
    let (sinks, handle) = AlertSinks::start(config(&closed_url(), Duration::from_secs(60), 5));
    let clone = sinks.clone();
    sinks.send(&[alert("LatencyHigh", "checkout")]);
    drop(sinks);
    clone.send(&[alert("ErrorsHigh", "checkout")]);
    drop(clone);
    finished(handle).await;
}

#[test]
fn labels_are_fixed_sets() {
    assert_eq!(
        Outcome::ALL.map(Outcome::as_str),
        ["delivered", "retried", "failed", "dropped"]
    );
    for (i, o) in Outcome::ALL.iter().enumerate() {
        assert_eq!(o.index(), i);
    }
    assert_eq!(
        SinkKind::ALL.map(SinkKind::as_str),
        ["alertmanager", "webhook"]
    );
}
