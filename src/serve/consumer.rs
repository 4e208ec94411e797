//! The feeder's Kafka shell: a consumer in the group `<group_id>-repository-<instance>` on a
//! thread of its own (SQLite writes block), polling records into the [`Feeder`],
//! flushing batches into the repository, committing offsets after each flush, logging
//! and counting drops, and running retention on a timer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::repository::Repository;
use crate::telemetry::repository as metrics;

use super::feed::{Feeder, Flushed};

/// How long a poll waits; a partial batch is flushed when a poll comes back empty.
const POLL: Duration = Duration::from_millis(100);
/// A partial batch is flushed at least this often while records keep coming.
const MAX_BATCH_AGE: Duration = Duration::from_millis(500);

/// What the feeder thread needs.
pub struct FeedLoop {
    pub consumer: BaseConsumer,
    pub feeder: Feeder,
    pub repo: Repository,
    pub retention_interval: Duration,
    pub stop: Arc<AtomicBool>,
}

/// The consumer of the feeder in `group` (the repository's own, see
/// `KafkaConfig::repository_group`), offsets committed by hand, from the earliest record
/// when the group has none.
pub fn consumer(
    brokers: &str,
    group: &str,
    properties: &std::collections::BTreeMap<String, String>,
    read_committed: bool,
) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
    let mut cfg = ClientConfig::new();
    for (k, v) in properties {
        cfg.set(k, v);
    }
    cfg.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    if read_committed {
        cfg.set("isolation.level", "read_committed");
    }
    cfg.create()
}

impl FeedLoop {
    /// Runs until `stop` is set: the last batch is stored and committed before it returns.
    pub fn run(mut self) {
        let mut last_retention = Instant::now();
        let mut batch_started: Option<Instant> = None;
        self.retain();
        while !self.stop.load(Ordering::Relaxed) {
            match self.consumer.poll(POLL) {
                Some(Ok(m)) => {
                    let dropped =
                        self.feeder
                            .offer(m.topic(), m.partition(), m.offset(), m.payload());
                    if let Some(d) = dropped {
                        report(&d);
                    }
                    batch_started.get_or_insert_with(Instant::now);
                    if self.feeder.is_full()
                        || batch_started.is_some_and(|t| t.elapsed() >= MAX_BATCH_AGE)
                    {
                        self.flush(CommitMode::Async);
                        batch_started = None;
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "trace repository consumer error"),
                None => {
                    if self.feeder.has_pending() {
                        self.flush(CommitMode::Async);
                        batch_started = None;
                    }
                }
            }
            if last_retention.elapsed() >= self.retention_interval {
                self.retain();
                last_retention = Instant::now();
            }
        }
        self.flush(CommitMode::Sync);
        if let Err(e) = self.repo.checkpoint() {
            tracing::warn!(error = %e, "trace repository checkpoint at shutdown failed");
        }
    }

    fn flush(&mut self, mode: CommitMode) {
        let Flushed {
            stored,
            dropped,
            commit,
        } = self.feeder.flush(&mut self.repo);
        for (kind, n) in stored {
            metrics::STORED
                .with_label_values(&[kind.as_str()])
                .inc_by(n as u64);
        }
        for d in &dropped {
            report(d);
        }
        if commit.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in &commit {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                tracing::warn!(topic, partition, error = %e, "cannot commit repository offset");
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            // the records are stored: after a restart they are read and stored once more
            tracing::warn!(error = %e, "committing trace repository offsets failed");
        }
    }

    fn retain(&mut self) {
        let now_ns = crate::runner::wall_ms().saturating_mul(1_000_000);
        match self.repo.enforce_retention(now_ns) {
            Ok(r) => {
                let deleted = [
                    ("traces", "max_age", r.traces_by_age),
                    ("traces", "max_bytes", r.traces_by_size),
                    ("aggregates", "max_age", r.windows),
                    ("alerts", "max_age", r.alerts),
                ];
                for (kind, rule, n) in deleted {
                    metrics::RETENTION_DELETED
                        .with_label_values(&[kind, rule])
                        .inc_by(n);
                }
                metrics::BYTES.set(i64::try_from(r.bytes_after).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "trace repository retention failed"),
        }
    }
}

/// Counts dropped records and says where they were.
fn report(d: &super::feed::Dropped) {
    metrics::DROPPED
        .with_label_values(&[d.kind.as_str(), d.reason])
        .inc_by(d.records as u64);
    for (topic, partition, first, last) in &d.positions {
        tracing::warn!(
            topic,
            partition,
            first_offset = first,
            last_offset = last,
            records = d.records,
            reason = d.reason,
            "trace repository dropped records: {}",
            d.message
        );
    }
}
