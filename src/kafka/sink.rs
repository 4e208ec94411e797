//! The producers: records go out through librdkafka's idempotent producers; delivery
//! reports come back as [`Ack`]s on a channel, carrying the input offsets to release.
//!
//! Alerts have a producer of their own ([`Lane::Urgent`]): its own connection and queue,
//! no linger, so an alert is not queued behind the traces and aggregates of a busy
//! pipeline waiting for a saturated broker. With exactly-once delivery there is one
//! transactional producer for everything, since one transaction spans every output.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::ClientContext;
use tokio::sync::mpsc;

use std::sync::Arc;

use crate::model::Holds;
use crate::telemetry::metrics;

/// How long a transaction step (init, offsets, commit, abort) may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a delivery report releases.
#[derive(Debug)]
pub struct Token {
    /// The topic written to.
    pub topic: Arc<str>,
    /// Input offsets to release once Kafka has the record.
    pub holds: Holds,
    /// The driver's epoch of the record.
    pub epoch: u64,
    /// When the record was emitted, for records whose delivery latency is measured
    /// (`spanline_alert_ack_latency_seconds`, observed when Kafka acknowledges it).
    pub emitted: Option<std::time::Instant>,
}

/// Which producer a record goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Traces, aggregates, late spans, dead letters: batched (`linger.ms` 5, lz4).
    Bulk,
    /// Alerts: their own producer, sent as soon as they are queued.
    Urgent,
}

/// A delivery report.
#[derive(Debug)]
pub struct Ack {
    pub token: Token,
    /// The error, when Kafka did not take the record.
    pub error: Option<String>,
    /// The record was purged from the queue unsent: its transaction was aborted.
    pub purged: bool,
}

struct SinkContext {
    acks: mpsc::UnboundedSender<Ack>,
}

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka producer error");
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<Token>) {
        let error = result.as_ref().err().map(|(e, _)| e.to_string());
        let purged = matches!(
            result,
            Err((
                KafkaError::MessageProduction(
                    RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
                ),
                _
            ))
        );
        if let (None, Some(emitted)) = (&error, token.emitted) {
            metrics::ALERT_ACK_LATENCY.observe(emitted.elapsed().as_secs_f64());
        }
        let _ = self.acks.send(Ack {
            token: *token,
            error,
            purged,
        });
    }
}

/// The running producers.
pub struct Sink {
    bulk: ThreadedProducer<SinkContext>,
    /// `None` with transactions: alerts go through `bulk`, in the same transaction.
    urgent: Option<ThreadedProducer<SinkContext>>,
}

impl Sink {
    /// Creates the two idempotent producers (acks=all); `properties` are passed through
    /// to both, except that the urgent one never lingers. With a `transactional_id`,
    /// one transactional producer instead, its transactions initialised (which aborts
    /// what an earlier producer of the same id left open and fences it).
    pub fn start(
        brokers: &str,
        properties: &BTreeMap<String, String>,
        transactional_id: Option<&str>,
    ) -> KafkaResult<(Self, mpsc::UnboundedReceiver<Ack>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let config = |urgent: bool| {
            let mut config = ClientConfig::new();
            config
                .set("bootstrap.servers", brokers)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .set("compression.type", if urgent { "none" } else { "lz4" })
                .set(
                    "queue.buffering.max.messages",
                    if urgent { "10000" } else { "200000" },
                );
            for (k, v) in properties {
                config.set(k, v);
            }
            if urgent {
                // whatever the properties say
                config.set("linger.ms", "0");
                // an id that names one producer
                if let Some(id) = properties.get("client.id") {
                    config.set("client.id", format!("{id}-alerts"));
                }
            }
            config
        };
        if let Some(id) = transactional_id {
            let mut c = config(false);
            c.set("transactional.id", id)
                .set("transaction.timeout.ms", "60000");
            let bulk: ThreadedProducer<SinkContext> =
                c.create_with_context(SinkContext { acks: tx })?;
            bulk.init_transactions(TXN_TIMEOUT)?;
            return Ok((Self { bulk, urgent: None }, rx));
        }
        let bulk = config(false).create_with_context(SinkContext { acks: tx.clone() })?;
        let urgent = config(true).create_with_context(SinkContext { acks: tx })?;
        Ok((
            Self {
                bulk,
                urgent: Some(urgent),
            },
            rx,
        ))
    }

    /// Whether records go out in transactions.
    pub fn transactional(&self) -> bool {
        self.urgent.is_none()
    }

    /// Begins a transaction (a local step: the broker hears of it with the first record).
    pub fn begin(&self) -> KafkaResult<()> {
        self.bulk.begin_transaction()
    }

    /// Adds the consumer's `offsets` to the open transaction and commits it: every
    /// record sent since [`Sink::begin`] becomes visible to `read_committed` readers
    /// together with the offsets. Blocks until the broker answers.
    /// Steps that time out (a broker restarting, say) are tried again, up to
    /// [`TXN_TRIES`] times; an error that needs an abort is returned at once.
    pub fn commit(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> KafkaResult<()> {
        if offsets.count() > 0 {
            retried("sending the offsets", || {
                self.bulk
                    .send_offsets_to_transaction(offsets, group, TXN_TIMEOUT)
            })?;
        }
        retried("committing", || self.bulk.commit_transaction(TXN_TIMEOUT))
    }

    /// Aborts the open transaction: nothing sent in it is ever visible to
    /// `read_committed` readers.
    pub fn abort(&self) -> KafkaResult<()> {
        self.bulk.abort_transaction(TXN_TIMEOUT)
    }

    /// Queues one record on `lane`'s producer; waits (asynchronously) while its queue
    /// is full.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        lane: Lane,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: Option<&[u8]>,
        headers: &[(&str, String)],
        token: Token,
    ) -> KafkaResult<()> {
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(token)).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if !headers.is_empty() {
            record = record.headers(owned_headers(headers));
        }
        let producer = match (lane, &self.urgent) {
            (Lane::Urgent, Some(urgent)) => urgent,
            _ => &self.bulk,
        };
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    // backpressure: the delivery thread drains the queue meanwhile
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits until every queued record is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        let started = std::time::Instant::now();
        if let Some(urgent) = &self.urgent {
            urgent.flush(timeout)?;
        }
        self.bulk.flush(timeout.saturating_sub(started.elapsed()))
    }
}

/// How often a transaction step that timed out is tried.
const TXN_TRIES: usize = 10;

/// Runs a transaction step, again while it fails in a way that may pass.
fn retried(what: &str, mut step: impl FnMut() -> KafkaResult<()>) -> KafkaResult<()> {
    let mut tries = 1;
    loop {
        match step() {
            Err(e) if retriable(&e) && tries < TXN_TRIES => {
                tracing::warn!(error = %e, tries, "{what} the transaction failed; trying again");
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Whether a transaction step may succeed when tried again (librdkafka: retriable
/// errors, and a flush that timed out).
fn retriable(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_retriable() && !t.txn_requires_abort(),
        KafkaError::Flush(code) => *code == RDKafkaErrorCode::OperationTimedOut,
        _ => false,
    }
}

/// Record headers from (name, value) pairs.
fn owned_headers(headers: &[(&str, String)]) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_str()),
            })
        },
    )
}
