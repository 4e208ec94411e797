//! The consumer: a thread polls librdkafka and turns messages and rebalance callbacks
//! into [`SourceEvent`]s on one channel, so the runner sees them in the order they
//! happened.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tokio::sync::mpsc;

pub use crate::model::Record;
use crate::telemetry::metrics;

/// What the consumer thread reports.
#[derive(Debug)]
pub enum SourceEvent {
    /// Records in the order they were polled.
    Records(Vec<Record>),
    /// Partitions were assigned.
    Assigned(Vec<(String, i32)>),
    /// Partitions are being taken away: their state must be written and dropped. The
    /// rebalance waits (up to [`REVOKE_WAIT`]) until `done` is sent or dropped, so what
    /// is safe can still be committed.
    Revoked(Vec<(String, i32)>, RevokeDone),
    /// A consumer error that did not stop the consumer.
    Error(String),
}

/// How long a rebalance waits for the runner to finish with revoked partitions.
pub const REVOKE_WAIT: Duration = Duration::from_secs(30);

/// Sent (or dropped) when the runner is done with revoked partitions.
pub type RevokeDone = std::sync::mpsc::SyncSender<()>;

struct SourceContext {
    events: mpsc::Sender<SourceEvent>,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                // librdkafka's own lag needs stored offsets, which spanline does not use;
                // fall back to the distance from the fetch position to the high watermark
                let lag = if part.consumer_lag >= 0 {
                    part.consumer_lag
                } else if part.hi_offset >= 0 && part.next_offset >= 0 {
                    (part.hi_offset - part.next_offset).max(0)
                } else {
                    continue;
                };
                if *p >= 0 {
                    metrics::CONSUMER_LAG
                        .with_label_values(&[topic, &p.to_string()])
                        .set(lag);
                }
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let (done, wait) = std::sync::mpsc::sync_channel(1);
            let sent = self
                .events
                .blocking_send(SourceEvent::Revoked(partitions(tpl), done));
            // the runner sends, or drops the sender, when it is done: only a timeout
            // means it is not
            let timed_out = sent.is_ok()
                && matches!(
                    wait.recv_timeout(REVOKE_WAIT),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
            if timed_out {
                tracing::warn!("revoked partitions not released within {REVOKE_WAIT:?}");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let _ = self
                    .events
                    .blocking_send(SourceEvent::Assigned(partitions(tpl)));
            }
            Rebalance::Error(e) => {
                let _ = self
                    .events
                    .blocking_send(SourceEvent::Error(format!("rebalance failed: {e}")));
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The group's committed offsets, as the running consumer is told them.
#[derive(Clone)]
pub struct GroupOffsets(Arc<BaseConsumer<SourceContext>>);

impl GroupOffsets {
    /// Waits (at most `timeout`) until the group's committed offsets of `partitions` are
    /// stable: with `read_committed`, librdkafka asks with `require_stable`, and the
    /// broker answers "unstable" while a transaction that commits any of them is open.
    pub fn wait_stable_offsets(
        &self,
        partitions: &[(String, i32)],
        timeout: std::time::Duration,
    ) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            tpl.add_partition(topic, *partition);
        }
        self.0.committed_offsets(tpl, timeout).map(drop)
    }
}

/// Leaves the group and joins it again: a member that joined while a crashed
/// predecessor was still registered can be left with no partitions by some brokers, and
/// one whose transaction was refused may hold partitions it dropped.
pub struct Rejoin(Arc<BaseConsumer<SourceContext>>, Vec<String>);

impl Rejoin {
    /// Blocks until librdkafka has taken both requests. Never call it where the
    /// consumer's events are handled: leaving revokes the partitions, and the revocation
    /// waits for them to be released.
    pub fn run(self) -> KafkaResult<()> {
        self.0.unsubscribe();
        let refs: Vec<&str> = self.1.iter().map(String::as_str).collect();
        self.0.subscribe(&refs)
    }
}

/// A running consumer.
pub struct Source {
    consumer: Arc<BaseConsumer<SourceContext>>,
    topics: Vec<String>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Source {
    /// Subscribes to `topics` and starts polling; events arrive on the returned channel.
    pub fn start(
        brokers: &str,
        group_id: &str,
        properties: &BTreeMap<String, String>,
        topics: &[String],
    ) -> KafkaResult<(Self, mpsc::Receiver<SourceEvent>)> {
        let (tx, rx) = mpsc::channel(64);
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "1000")
            .set("partition.assignment.strategy", "range,roundrobin");
        for (k, v) in properties {
            config.set(k, v);
        }
        let consumer: BaseConsumer<SourceContext> =
            config.create_with_context(SourceContext { events: tx.clone() })?;
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        let topics = topics.to_vec();
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let consumer = consumer.clone();
            let stop = stop.clone();
            thread::Builder::new()
                .name("kafka-source".into())
                .spawn(move || {
                    poll_loop(&consumer, &stop, &tx);
                    // rebalance callbacks run here, on this thread, never on the runtime's
                    consumer.unsubscribe();
                })
                .expect("spawn consumer thread")
        };
        Ok((
            Self {
                consumer,
                topics,
                stop,
                thread: Some(thread),
            },
            rx,
        ))
    }

    /// A handle for leaving and joining the group again from another thread.
    pub fn rejoin(&self) -> Rejoin {
        Rejoin(self.consumer.clone(), self.topics.clone())
    }

    /// A handle for asking the group's committed offsets from another thread.
    pub fn group_offsets(&self) -> GroupOffsets {
        GroupOffsets(self.consumer.clone())
    }

    /// Commits offsets (the next offset to read, per partition) without waiting.
    pub fn commit(&self, offsets: &[(String, i32, i64)]) -> KafkaResult<()> {
        self.consumer
            .commit(&offset_list(offsets)?, CommitMode::Async)
    }

    /// Commits and waits for the broker's answer (shutdown).
    pub fn commit_sync(&self, offsets: &[(String, i32, i64)]) -> KafkaResult<()> {
        self.consumer
            .commit(&offset_list(offsets)?, CommitMode::Sync)
    }

    /// The consumer's group membership, which a transaction's offsets are committed
    /// under (a member of an older generation is fenced).
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// Stops polling and leaves the group.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Offsets (the next offset to read, per partition) as librdkafka's list.
pub fn offset_list(offsets: &[(String, i32, i64)]) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    Ok(tpl)
}

const BATCH: usize = 1024;

fn poll_loop(
    consumer: &BaseConsumer<SourceContext>,
    stop: &AtomicBool,
    tx: &mpsc::Sender<SourceEvent>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut topic_names: Vec<Arc<str>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // wait for the first record, then drain what is already fetched
        let mut timeout = Duration::from_millis(100);
        while batch.len() < BATCH {
            match consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    let topic = match topic_names.iter().find(|t| &***t == m.topic()) {
                        Some(t) => t.clone(),
                        None => {
                            let t: Arc<str> = Arc::from(m.topic());
                            topic_names.push(t.clone());
                            t
                        }
                    };
                    batch.push(Record {
                        topic,
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                    });
                }
                Some(Err(e)) => {
                    if tx.blocking_send(SourceEvent::Error(e.to_string())).is_err() {
                        return;
                    }
                }
            }
            timeout = Duration::ZERO;
        }
        if !batch.is_empty() {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.blocking_send(SourceEvent::Records(full)).is_err() {
                return;
            }
        }
    }
}
