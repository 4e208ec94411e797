//! One destination: its queue, its counters, and the task that delivers from the queue
//! with retries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::{AlertSinksConfig, AlertmanagerConfig, WebhookConfig};
use super::format::{self, now_ms};
use super::queue::Queue;
use super::retry::{self, Backoff};
use super::{alertmanager, metrics, webhook, Outcome, SinkKind, SinkStats, MAX_BATCH};
use crate::model::Alert;

/// Characters of a refused response's body kept for the error message.
const BODY_EXCERPT: usize = 200;

/// A destination with its queue and counters, shared by the sender and its task.
#[derive(Debug)]
pub(super) struct Destination {
    pub(super) kind: SinkKind,
    pub(super) name: String,
    url: String,
    timeout: Duration,
    headers: HeaderMap,
    generator_url: Option<String>,
    ui_url: Option<String>,
    pub(super) queue: Queue<Arc<Alert>>,
    counts: [AtomicU64; 4],
    /// Set at the first drop of an episode (logged then), cleared by a delivery.
    dropping: AtomicBool,
}

impl Destination {
    pub(super) fn alertmanager(am: &AlertmanagerConfig, config: &AlertSinksConfig) -> Self {
        Self::new(
            SinkKind::Alertmanager,
            format!("alertmanager {}", origin(&am.url)),
            alertmanager::endpoint(&am.url),
            am.timeout,
            HeaderMap::new(),
            config,
        )
    }

    pub(super) fn webhook(index: usize, hook: &WebhookConfig, config: &AlertSinksConfig) -> Self {
        let name = format!("webhooks[{index}] {}", origin(&hook.url));
        let mut headers = HeaderMap::new();
        for (key, value) in &hook.headers {
            match (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(key), Ok(mut value)) => {
                    value.set_sensitive(true);
                    headers.insert(key, value);
                }
                _ => tracing::warn!(destination = %name, header = %key, "invalid header left out"),
            }
        }
        Self::new(
            SinkKind::Webhook,
            name,
            hook.url.clone(),
            hook.timeout,
            headers,
            config,
        )
    }

    fn new(
        kind: SinkKind,
        name: String,
        url: String,
        timeout: Duration,
        headers: HeaderMap,
        config: &AlertSinksConfig,
    ) -> Self {
        Destination {
            kind,
            name,
            url,
            timeout,
            headers,
            generator_url: config.generator_url.clone(),
            ui_url: config.ui_url.clone(),
            queue: Queue::new(config.queue_capacity),
            counts: Default::default(),
            dropping: AtomicBool::new(false),
        }
    }

    fn count(&self, outcome: Outcome, alerts: usize) {
        if alerts == 0 {
            return;
        }
        self.counts[outcome.index()].fetch_add(alerts as u64, Ordering::Relaxed);
        metrics::DELIVERIES
            .with_label_values(&[self.kind.as_str(), outcome.as_str()])
            .inc_by(alerts as u64);
    }

    fn depth(&self, change: f64) {
        if change != 0.0 {
            metrics::QUEUE_DEPTH
                .with_label_values(&[self.kind.as_str()])
                .add(change);
        }
    }

    /// Queues `alerts` without waiting; counts what the queue drops.
    pub(super) fn enqueue(&self, alerts: &[Arc<Alert>]) {
        let pushed = self.queue.push_all(alerts.iter().cloned());
        self.depth(pushed.added as f64);
        if pushed.dropped > 0 {
            self.count(Outcome::Dropped, pushed.dropped);
            if !self.dropping.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    destination = %self.name,
                    capacity = self.queue.capacity(),
                    "alert queue full or closed: dropping the oldest alerts"
                );
            }
        }
    }

    pub(super) fn stats(&self) -> SinkStats {
        let get = |o: Outcome| self.counts[o.index()].load(Ordering::Relaxed);
        SinkStats {
            kind: self.kind,
            destination: self.name.clone(),
            queued: self.queue.len(),
            capacity: self.queue.capacity(),
            delivered: get(Outcome::Delivered),
            retried: get(Outcome::Retried),
            failed: get(Outcome::Failed),
            dropped: get(Outcome::Dropped),
        }
    }

    /// The request bodies for a batch, each with the number of alerts it carries.
    fn bodies(&self, batch: &[Arc<Alert>]) -> Vec<(Vec<u8>, usize)> {
        let now = now_ms();
        let linked;
        let batch = match &self.ui_url {
            Some(ui) => {
                linked = batch
                    .iter()
                    .map(|a| format::with_trace_url(a, ui))
                    .collect::<Vec<_>>();
                &linked[..]
            }
            None => batch,
        };
        let generator_url = self.generator_url.as_deref();
        match self.kind {
            SinkKind::Alertmanager => {
                vec![(alertmanager::body(batch, generator_url, now), batch.len())]
            }
            SinkKind::Webhook => webhook::payloads(batch, generator_url, now)
                .into_iter()
                .map(|p| {
                    let n = p.alerts.len();
                    (serde_json::to_vec(&p).expect("payload serializes"), n)
                })
                .collect(),
        }
    }

    async fn post(&self, client: &reqwest::Client, body: Vec<u8>) -> Result<(), DeliveryError> {
        let response = client
            .post(&self.url)
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            // Replaces the defaults above with the configured ones of the same name.
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::Request(error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let body: String = text.trim().chars().take(BODY_EXCERPT).collect();
        Err(DeliveryError::Status {
            status,
            body,
            retry_after,
        })
    }
}

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("http status {status}: {body}")]
    Status {
        status: StatusCode,
        body: String,
        retry_after: Option<Duration>,
    },
}

impl DeliveryError {
    /// Whether trying again may help: no answer, or an answer saying "later".
    fn is_transient(&self) -> bool {
        match self {
            DeliveryError::Request(_) => true,
            DeliveryError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Status { retry_after, .. } => *retry_after,
            DeliveryError::Request(_) => None,
        }
    }
}

/// An error with its causes, `a: b: c` (reqwest's own message alone rarely says why).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Scheme, host and port of a URL, for logs: webhook paths and queries often hold
/// secrets.
fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "(invalid url)".to_owned(),
    }
}

/// The shutdown deadline as the tasks see it.
#[derive(Debug, Clone)]
pub(super) struct Stop(watch::Receiver<Option<Instant>>);

impl Stop {
    pub(super) fn new(rx: watch::Receiver<Option<Instant>>) -> Self {
        Stop(rx)
    }

    fn passed(&self) -> bool {
        matches!(*self.0.borrow(), Some(d) if Instant::now() >= d)
    }

    /// Resolves when the deadline is set and has passed.
    async fn reached(&mut self) {
        loop {
            let deadline = *self.0.borrow_and_update();
            if let Some(deadline) = deadline {
                tokio::time::sleep_until(deadline).await;
                return;
            }
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }
}

/// How one request ended.
enum Sent {
    Delivered,
    Failed,
    /// The shutdown deadline passed first.
    Abandoned,
}

/// The task of one destination: takes batches from its queue and delivers them until the
/// queue is closed and empty, or the shutdown deadline passes.
pub(super) async fn run(
    destination: Arc<Destination>,
    client: reqwest::Client,
    backoff: Backoff,
    max_retries: u32,
    mut stop: Stop,
) {
    let seed = retry::seed(&destination.name);
    let mut request_no: u64 = 0;
    let mut abandoned = 0usize;
    while let Some(batch) = destination.queue.pop(MAX_BATCH).await {
        destination.depth(-(batch.len() as f64));
        if stop.passed() {
            abandoned += batch.len();
            continue;
        }
        for (body, alerts) in destination.bodies(&batch) {
            if abandoned > 0 {
                abandoned += alerts;
                continue;
            }
            request_no += 1;
            let retry = Retry {
                destination: &destination,
                client: &client,
                backoff,
                max_retries,
                jitter_seed: seed,
                request_no,
            };
            match retry.send(body, alerts, &mut stop).await {
                Sent::Delivered => destination.dropping.store(false, Ordering::Relaxed),
                Sent::Failed => {}
                Sent::Abandoned => abandoned += alerts,
            }
        }
    }
    if abandoned > 0 {
        destination.count(Outcome::Dropped, abandoned);
        tracing::warn!(
            destination = %destination.name,
            alerts = abandoned,
            "shutdown timeout passed: alerts left undelivered"
        );
    }
}

/// One request and its retries.
struct Retry<'a> {
    destination: &'a Destination,
    client: &'a reqwest::Client,
    backoff: Backoff,
    max_retries: u32,
    jitter_seed: u64,
    request_no: u64,
}

impl Retry<'_> {
    async fn send(&self, body: Vec<u8>, alerts: usize, stop: &mut Stop) -> Sent {
        let d = self.destination;
        let mut retries = 0u32;
        loop {
            let result = tokio::select! {
                biased;
                _ = stop.reached() => return Sent::Abandoned,
                result = d.post(self.client, body.clone()) => result,
            };
            let error = match result {
                Ok(()) => {
                    d.count(Outcome::Delivered, alerts);
                    return Sent::Delivered;
                }
                Err(e) => e,
            };
            if !error.is_transient() || retries >= self.max_retries {
                d.count(Outcome::Failed, alerts);
                tracing::warn!(
                    destination = %d.name,
                    alerts,
                    attempts = retries + 1,
                    error = %error,
                    "alert delivery failed"
                );
                return Sent::Failed;
            }
            let jitter = retry::jitter(self.jitter_seed, self.request_no, retries);
            let wait = self
                .backoff
                .delay_with_hint(retries, jitter, error.retry_after());
            tracing::debug!(destination = %d.name, error = %error, wait = ?wait, "alert delivery will be retried");
            tokio::select! {
                biased;
                _ = stop.reached() => return Sent::Abandoned,
                _ = tokio::time::sleep(wait) => {}
            }
            retries += 1;
            d.count(Outcome::Retried, alerts);
        }
    }
}
