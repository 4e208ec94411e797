//! A compacted topic as a key-value store: the detect stage's snapshot records are
//! written to it, and read back (the latest value of each key) when a pipeline starts.
//!
//! Blocking calls (librdkafka's own threads do the I/O): run them off the async threads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Where records go and come from.
#[derive(Debug, Clone)]
pub struct StateTopic {
    pub brokers: String,
    /// librdkafka properties of the pipeline (security settings and the like).
    pub properties: BTreeMap<String, String>,
    pub topic: String,
}

#[derive(Default)]
struct Failures(Mutex<Vec<String>>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
            let mut failures = self.0.lock().expect("failures");
            failures.push(format!("{key}: {e}"));
        }
    }
}

impl StateTopic {
    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Writes `records` (a `None` value is a tombstone: the key is deleted on compaction)
    /// and waits until Kafka has all of them or `timeout` passes; returns the bytes
    /// written.
    pub fn write(
        &self,
        records: &[(String, Option<Vec<u8>>)],
        timeout: Duration,
    ) -> Result<usize, StateTopicError> {
        let write = |source| StateTopicError::Write {
            topic: self.topic.clone(),
            source,
        };
        let mut config = self.config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            // a subject's state is a few hundred KB of JSON
            .set("message.max.bytes", "16000000");
        let producer: ThreadedProducer<Failures> = config
            .create_with_context(Failures::default())
            .map_err(write)?;
        let started = Instant::now();
        let mut bytes = 0;
        for (key, value) in records {
            let mut record = BaseRecord::to(&self.topic).key(key.as_bytes());
            if let Some(v) = value {
                record = record.payload(v);
                bytes += v.len();
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if started.elapsed() > timeout {
                            return Err(StateTopicError::QueueTimeout {
                                topic: self.topic.clone(),
                            });
                        }
                        record = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(write(e)),
                }
            }
        }
        producer
            .flush(timeout.saturating_sub(started.elapsed()))
            .map_err(write)?;
        let failures = producer.context().0.lock().expect("failures");
        match failures.first() {
            None => Ok(bytes),
            Some(first) => Err(StateTopicError::NotAcknowledged {
                topic: self.topic.clone(),
                failed: failures.len(),
                first: first.clone(),
            }),
        }
    }

    /// The latest value of every key up to the end of the topic when called (keys whose
    /// latest record is a tombstone are left out), in key order. A topic that does not
    /// exist reads as empty.
    pub fn read(&self, timeout: Duration) -> Result<BTreeMap<String, Vec<u8>>, StateTopicError> {
        let kafka = |source| StateTopicError::Kafka {
            topic: self.topic.clone(),
            source,
        };
        let mut config = self.config();
        config
            .set("group.id", format!("spanline-state-{}", self.topic))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = config.create().map_err(kafka)?;
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(kafka)?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == self.topic) else {
            return Ok(BTreeMap::new());
        };
        if let Some(e) = topic.error() {
            if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition {
                return Ok(BTreeMap::new());
            }
            return Err(StateTopicError::Broker {
                topic: self.topic.clone(),
                code: RDKafkaErrorCode::from(e),
            });
        }
        // read each partition from its start to the end it has now
        let mut tpl = TopicPartitionList::new();
        let mut pending = BTreeSet::new();
        let mut ends = BTreeMap::new();
        for p in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(&self.topic, p.id(), timeout)
                .map_err(kafka)?;
            if high > low {
                tpl.add_partition_offset(&self.topic, p.id(), Offset::Offset(low))
                    .map_err(kafka)?;
                pending.insert(p.id());
                ends.insert(p.id(), high);
            }
        }
        if pending.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        consumer.assign(&tpl).map_err(kafka)?;
        let deadline = Instant::now() + timeout;
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StateTopicError::Timeout {
                    topic: self.topic.clone(),
                    partitions: pending.into_iter().collect(),
                });
            }
            match consumer.poll(left.min(Duration::from_millis(200))) {
                None => {}
                Some(Err(e)) => return Err(kafka(e)),
                Some(Ok(m)) => {
                    if let Some(key) = m.key() {
                        let key = String::from_utf8_lossy(key).into_owned();
                        latest.insert(key, m.payload().map(<[u8]>::to_vec));
                    }
                    if m.offset() + 1 >= ends[&m.partition()] {
                        pending.remove(&m.partition());
                    }
                }
            }
        }
        Ok(latest
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect())
    }
}

/// How long partitions read to their reported end must stay quiet before a restore
/// takes them as read.
const QUIET: Duration = Duration::from_millis(300);

/// The latest record of one key: (partition, offset, key, value; `None` a tombstone).
pub type LatestRecord = (i32, i64, Vec<u8>, Option<Vec<u8>>);

/// Why a state topic could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateTopicError {
    #[error("reading {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("timed out reading {topic}; partitions {partitions:?} not read to their end")]
    Timeout { topic: String, partitions: Vec<i32> },
    #[error("{topic}: the broker reports {code:?}")]
    Broker {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("writing {topic}: {source}")]
    Write {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("writing {topic}: timed out queueing records")]
    QueueTimeout { topic: String },
    #[error("writing {topic}: {failed} records not acknowledged, the first {first}")]
    NotAcknowledged {
        topic: String,
        failed: usize,
        first: String,
    },
}

/// A changelog as of its last complete checkpoint.
#[derive(Debug, Default)]
pub struct Checkpointed {
    /// The latest record of every key up to the last checkpoint marker of its partition
    /// (all of a partition that has no marker: a changelog written before markers).
    pub records: Vec<LatestRecord>,
    /// Keys written after the last marker (a checkpoint cut short by a crash), with their
    /// value as of that marker (`None`: the key did not exist then). Writing these back
    /// undoes the unfinished checkpoint.
    pub repairs: Vec<LatestRecord>,
}

impl StateTopic {
    /// The latest record of every key of `partitions` up to their end when called,
    /// reading only committed transactions. A topic or partition that does not exist
    /// reads as empty.
    pub fn read_latest(
        &self,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<Vec<LatestRecord>, StateTopicError> {
        self.read_checkpointed(partitions, timeout, crate::state::CHECKPOINT_MARKER)
            .map(|c| c.records)
    }

    /// The latest record of every key of `partitions` as of the last record whose key is
    /// `marker` in each partition (every record when `marker` is empty or a partition has
    /// none), and the keys written after it; reading only committed transactions.
    pub fn read_checkpointed(
        &self,
        partitions: &[i32],
        timeout: Duration,
        marker: &[u8],
    ) -> Result<Checkpointed, StateTopicError> {
        let mut config = self.config();
        config
            .set("group.id", format!("spanline-restore-{}", self.topic))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed");
        let kafka = |source: KafkaError| StateTopicError::Kafka {
            topic: self.topic.clone(),
            source,
        };
        let consumer: BaseConsumer = config.create().map_err(kafka)?;
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for &p in partitions {
            let (low, high) = match consumer.fetch_watermarks(&self.topic, p, timeout) {
                Ok(w) => w,
                Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition))
                | Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownPartition)) => continue,
                Err(e) => return Err(kafka(e)),
            };
            if high > low {
                tpl.add_partition_offset(&self.topic, p, Offset::Offset(low))
                    .map_err(kafka)?;
                ends.insert(p, high);
            }
        }
        // (partition, key) -> (offset, value), as of the last marker and after it
        type Latest = BTreeMap<(i32, Vec<u8>), (i64, Option<Vec<u8>>)>;
        let mut latest = Latest::new();
        let mut tail = Latest::new();
        let mut marked = std::collections::BTreeSet::new();
        if ends.is_empty() {
            return Ok(Checkpointed::default());
        }
        consumer.assign(&tpl).map_err(kafka)?;
        // Some brokers (tansu 0.6) report a high watermark below the last record of a
        // batch: past the reported end, read on until the partitions are quiet.
        let deadline = Instant::now() + timeout;
        let mut quiet_since: Option<Instant> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StateTopicError::Timeout {
                    topic: self.topic.clone(),
                    partitions: ends.keys().copied().collect(),
                });
            }
            match consumer.poll(left.min(Duration::from_millis(100))) {
                None => {
                    // under read_committed the end can be a transaction marker: reached
                    // when the position has
                    let position = consumer.position().map_err(kafka)?;
                    ends.retain(|p, end| {
                        position
                            .find_partition(&self.topic, *p)
                            .and_then(|e| e.offset().to_raw())
                            .is_none_or(|o| o < *end)
                    });
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if ends.is_empty() && since.elapsed() >= QUIET {
                        break;
                    }
                }
                Some(Err(e)) => return Err(kafka(e)),
                Some(Ok(m)) => {
                    quiet_since = None;
                    match m.key() {
                        Some(key) if !marker.is_empty() && key == marker => {
                            // a checkpoint is complete: what came before it counts
                            let p = m.partition();
                            marked.insert(p);
                            let done: Vec<(i32, Vec<u8>)> = tail
                                .range((p, Vec::new())..)
                                .take_while(|(k, _)| k.0 == p)
                                .map(|(k, _)| k.clone())
                                .collect();
                            for k in done {
                                let v = tail.remove(&k).expect("listed");
                                latest.insert(k, v);
                            }
                        }
                        Some(key) => {
                            tail.insert(
                                (m.partition(), key.to_vec()),
                                (m.offset(), m.payload().map(<[u8]>::to_vec)),
                            );
                        }
                        None => {}
                    }
                    if ends
                        .get(&m.partition())
                        .is_some_and(|end| m.offset() + 1 >= *end)
                    {
                        ends.remove(&m.partition());
                    }
                }
            }
        }
        let mut repairs = Vec::new();
        for ((p, key), v) in tail {
            if marked.contains(&p) {
                let before = latest.get(&(p, key.clone()));
                repairs.push((p, v.0, key, before.and_then(|b| b.1.clone())));
            } else {
                latest.insert((p, key), v);
            }
        }
        Ok(Checkpointed {
            records: latest
                .into_iter()
                .map(|((p, key), (offset, value))| (p, offset, key, value))
                .collect(),
            repairs,
        })
    }
}
