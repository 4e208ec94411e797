//! Alert destinations: a Prometheus Alertmanager and HTTP webhooks.
//!
//! [`AlertSinks::send`] hands alerts over without waiting: each destination has its own
//! bounded queue and its own task that delivers from it, so a slow or unreachable
//! destination never holds up the pipeline or the other destinations.
//!
//! - **Overflow.** A full queue drops its *oldest* alert to make room: alerts are state
//!   updates (a firing alert is re-sent, then resolved), so the newest ones matter most.
//!   Drops are counted (`outcome="dropped"`) and logged once per episode.
//! - **Retries.** A request that fails with a connection error, a timeout, or HTTP 408,
//!   429 or 5xx is retried up to `max_retries` times with exponential backoff and
//!   deterministic jitter ([`Backoff`]); a `Retry-After` header lengthens the wait up to
//!   `max_backoff`. Other HTTP errors (a payload the receiver refuses) are not retried.
//!   When a request is given up its alerts are counted as failed and one warning names
//!   the destination and the error.
//! - **Batches.** A task takes up to [`MAX_BATCH`] queued alerts per request; the
//!   Alertmanager gets them in one array, a webhook one payload per rule.
//! - **Shutdown.** [`AlertSinks::shutdown`] stops taking alerts and lets each task
//!   deliver what is queued until the timeout; what is left then is counted as dropped.
//!   The handle returned by [`AlertSinks::start`] finishes when every task has.
//!
//! Counters are per alert: `delivered`, `failed` and `dropped` count each alert once;
//! `retried` counts an alert once per extra attempt.

pub mod alertmanager;
mod config;
mod deliver;
mod format;
pub mod metrics;
mod queue;
mod retry;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use config::{AlertSinksConfig, AlertmanagerConfig, WebhookConfig};
pub use format::rfc3339_ms;
pub use retry::{jitter, Backoff};

use crate::model::Alert;
use deliver::{Destination, Stop};

/// Alerts one request carries at most.
pub const MAX_BATCH: usize = 64;

/// The kind of a destination: the `sink` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkKind {
    Alertmanager,
    Webhook,
}

impl SinkKind {
    /// Every kind.
    pub const ALL: [SinkKind; 2] = [SinkKind::Alertmanager, SinkKind::Webhook];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Alertmanager => "alertmanager",
            SinkKind::Webhook => "webhook",
        }
    }
}

/// What happened to alerts: the `outcome` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Accepted by the destination (HTTP 2xx).
    Delivered,
    /// Sent again after a failed attempt (counted per attempt).
    Retried,
    /// Given up: retries exhausted, or refused with a non-retryable status.
    Failed,
    /// Never delivered because the queue was full, or left over at shutdown.
    Dropped,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 4] = [
        Outcome::Delivered,
        Outcome::Retried,
        Outcome::Failed,
        Outcome::Dropped,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts of one destination since start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkStats {
    pub kind: SinkKind,
    /// `alertmanager http://host:port` or `webhooks[i] https://host` (scheme, host and
    /// port only: webhook paths often hold secrets).
    pub destination: String,
    /// Alerts waiting now.
    pub queued: usize,
    /// The queue's bound.
    pub capacity: usize,
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    pub dropped: u64,
}

/// The running destinations. Cheap to clone; every clone feeds the same queues. When the
/// last clone is dropped without [`shutdown`](Self::shutdown), the tasks stop at once and
/// count what was queued as dropped.
#[derive(Debug, Clone)]
pub struct AlertSinks {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    destinations: Vec<Arc<Destination>>,
    stop: watch::Sender<Option<Instant>>,
}

impl AlertSinks {
    /// Starts one task per destination of `config` (which should have passed
    /// [`AlertSinksConfig::validate`]; an invalid webhook header is left out with a
    /// warning). Needs a tokio runtime. The handle finishes once every task has, after
    /// [`shutdown`](Self::shutdown).
    pub fn start(config: AlertSinksConfig) -> (AlertSinks, JoinHandle<()>) {
        metrics::init();
        let client = reqwest::Client::builder()
            .user_agent(concat!("spanline/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("http client with the built-in TLS configuration");
        let backoff = Backoff {
            initial: config.initial_backoff,
            max: config.max_backoff.max(config.initial_backoff),
        };
        let mut destinations = Vec::new();
        if let Some(am) = &config.alertmanager {
            destinations.push(Destination::alertmanager(am, &config));
        }
        for (i, hook) in config.webhooks.iter().enumerate() {
            destinations.push(Destination::webhook(i, hook, &config));
        }
        let destinations: Vec<Arc<Destination>> = destinations.into_iter().map(Arc::new).collect();
        let (stop, stop_rx) = watch::channel(None);
        let tasks: Vec<JoinHandle<()>> = destinations
            .iter()
            .map(|d| {
                tokio::spawn(deliver::run(
                    Arc::clone(d),
                    client.clone(),
                    backoff,
                    config.max_retries,
                    Stop::new(stop_rx.clone()),
                ))
            })
            .collect();
        let names: Vec<String> = destinations.iter().map(|d| d.name.clone()).collect();
        let handle = tokio::spawn(async move {
            for (task, name) in tasks.into_iter().zip(names) {
                if let Err(e) = task.await {
                    tracing::error!(destination = %name, error = %e, "alert delivery task ended abnormally");
                }
            }
        });
        let sinks = AlertSinks {
            shared: Arc::new(Shared { destinations, stop }),
        };
        (sinks, handle)
    }

    /// Queues `alerts` for every destination and returns at once: never waits for a
    /// destination, a full queue drops its oldest alerts instead.
    pub fn send(&self, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        let alerts: Vec<Arc<Alert>> = alerts.iter().cloned().map(Arc::new).collect();
        for destination in &self.shared.destinations {
            destination.enqueue(&alerts);
        }
    }

    /// Stops taking alerts (later ones are counted as dropped) and gives the tasks until
    /// `timeout` from now to deliver what is queued, retries included; then they stop and
    /// count what is left as dropped. Returns at once: await the handle from
    /// [`start`](Self::start) to wait for them. A second call can only shorten the time.
    pub fn shutdown(&self, timeout: Duration) {
        self.shared.stop_at(Instant::now() + timeout);
    }

    /// Counts per destination, in configuration order (the Alertmanager first).
    pub fn stats(&self) -> Vec<SinkStats> {
        self.shared.destinations.iter().map(|d| d.stats()).collect()
    }
}

impl Shared {
    fn stop_at(&self, deadline: Instant) {
        for destination in &self.destinations {
            destination.queue.close();
        }
        self.stop.send_if_modified(|current| match current {
            Some(d) if *d <= deadline => false,
            _ => {
                *current = Some(deadline);
                true
            }
        });
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.stop.borrow().is_none() {
            self.stop_at(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
