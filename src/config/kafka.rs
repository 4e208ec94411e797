//! The `kafka:` section: cluster, consumer group, and the librdkafka properties of each
//! client.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, ConfigErrors};

/// Kafka connection and consumer-group settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port,host:port`), or `embedded` to start an in-process
    /// Kafka-protocol broker (librdkafka's mock cluster).
    pub brokers: String,
    /// Consumer group id; run more processes with the same id to scale out.
    pub group_id: String,
    /// librdkafka properties for every client (`security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `ssl.ca.location`, ...). Consumer-only keys (`session.timeout.ms`,
    /// `fetch.*`, `isolation.level`, ...) reach only the consumer and producer-only keys
    /// (`linger.ms`, `compression.type`, ...) only the producers. `transactional.id` is
    /// rejected: spanline does not run transactions.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only, over `properties`.
    #[serde(default)]
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the producers only, over `properties`.
    #[serde(default)]
    pub producer_properties: BTreeMap<String, String>,
    /// How often offsets that are safe to commit are committed.
    #[serde(default = "default_commit_interval", with = "duration")]
    pub commit_interval: Duration,
    /// Keep the stages' state (open traces, open aggregate windows) in compacted
    /// changelog topics named `<group_id>-<stage>-changelog`, created when missing, and
    /// restore it when partitions are assigned, so a restart neither re-writes traces nor
    /// loses window counts. `false`: state lives in memory and offsets stay held until it
    /// is written out.
    #[serde(default = "default_changelogs")]
    pub changelogs: bool,
    /// Names this process's transactional producer with `delivery: exactly_once`: its
    /// `transactional.id` is `<group_id>-<instance_id>`. It must stay the same when the
    /// process restarts (so the restarted one aborts what the crashed one left open) and
    /// differ between the processes of a group. Default: the host name.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Delete the stored state instead of restoring it (the `--reset-state` flag).
    #[serde(skip)]
    pub reset_state: bool,
    /// Partitions of the repartition topic `<group_id>-repartition`, created when
    /// missing, through which the spans of sources not keyed by trace id are re-keyed.
    /// Default: as many as the most partitioned source topic. It bounds how many
    /// processes of the group assemble traces.
    #[serde(default)]
    pub repartition_partitions: Option<i32>,
    /// Partitions of each topic the embedded broker creates.
    #[serde(default = "default_partitions")]
    pub embedded_partitions: i32,
}

fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_partitions() -> i32 {
    3
}

fn default_changelogs() -> bool {
    true
}

/// librdkafka properties that only a consumer reads (librdkafka's CONFIGURATION.md,
/// marked C): given to a producer they only draw a warning.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "max.partition.fetch.bytes",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "consume.callback.max.messages",
    "offset.store.method",
];

/// librdkafka properties that only a producer reads (marked P).
const PRODUCER_ONLY: &[&str] = &[
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.ms",
    "linger.ms",
    "message.send.max.retries",
    "retries",
    "batch.num.messages",
    "batch.size",
    "delivery.report.only.error",
    "sticky.partitioning.linger.ms",
    "acks",
    "request.required.acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "partitioner",
    "compression.codec",
    "compression.type",
    "compression.level",
];

impl KafkaConfig {
    /// The properties the consumer is created with.
    pub fn consumer(&self) -> BTreeMap<String, String> {
        client(&self.properties, PRODUCER_ONLY, &self.consumer_properties)
    }

    /// The properties the producers are created with.
    pub fn producer(&self) -> BTreeMap<String, String> {
        client(&self.properties, CONSUMER_ONLY, &self.producer_properties)
    }

    /// The properties every kind of client reads (security and the like), for the
    /// clients that both read and write (state topics, connection checks).
    pub fn common(&self) -> BTreeMap<String, String> {
        let both: Vec<&str> = CONSUMER_ONLY.iter().chain(PRODUCER_ONLY).copied().collect();
        client(&self.properties, &both, &BTreeMap::new())
    }

    /// The aggregate repartition topic of the group, through which partial windows reach
    /// their owner: `<group_id>-aggregate-repartition`.
    pub fn aggregate_repartition_topic(&self) -> String {
        format!("{}-aggregate-repartition", self.group_id)
    }

    /// The repartition topic of the group: `<group_id>-repartition`.
    pub fn repartition_topic(&self) -> String {
        format!("{}-repartition", self.group_id)
    }

    /// The consumer group of this process's trace repository:
    /// `<group_id>-repository-<instance_id or host name>`. One group per instance: each
    /// repository holds every trace, aggregate and alert in its own file, and the group's
    /// committed offsets tell what that file holds.
    pub fn repository_group(&self) -> String {
        let instance = self.instance_id.clone().unwrap_or_else(host_name);
        format!("{}-repository-{instance}", self.group_id)
    }

    /// The `transactional.id` of this process's producer with exactly-once.
    pub fn transactional_id(&self) -> String {
        let instance = self.instance_id.clone().unwrap_or_else(host_name);
        format!("{}-{instance}", self.group_id)
    }

    pub(super) fn validate_delivery(&self, delivery: super::Delivery, errors: &mut ConfigErrors) {
        if delivery != super::Delivery::ExactlyOnce {
            return;
        }
        if !self.changelogs {
            errors.push(
                "delivery",
                "exactly_once needs the state in changelogs",
                "remove `kafka.changelogs: false`",
            );
        }
        if self.brokers.trim() == "embedded" {
            errors.push(
                "delivery",
                "exactly_once needs a broker that writes transaction markers; the embedded one does not",
                "point kafka.brokers at a Kafka cluster, or use at_least_once",
            );
        }
        if let Some(id) = &self.instance_id {
            if id.trim().is_empty() {
                errors.push(
                    "kafka.instance_id",
                    "must not be empty",
                    "e.g. the pod name",
                );
            }
        }
    }

    pub(super) fn validate(&self, errors: &mut ConfigErrors) {
        if self.brokers.trim().is_empty() {
            errors.push(
                "kafka.brokers",
                "must not be empty",
                "write host:port[,host:port] or `embedded`",
            );
        }
        if self.group_id.trim().is_empty() {
            errors.push(
                "kafka.group_id",
                "must not be empty",
                "every pipeline needs a consumer group id",
            );
        }
        if self.commit_interval.is_zero() {
            errors.push("kafka.commit_interval", "must be more than 0", "e.g. 1s");
        }
        if !(1..=1024).contains(&self.embedded_partitions) {
            errors.push(
                "kafka.embedded_partitions",
                "must be between 1 and 1024",
                "e.g. 3",
            );
        }
        if let Some(n) = self.repartition_partitions {
            if !(1..=10_000).contains(&n) {
                errors.push(
                    "kafka.repartition_partitions",
                    "must be between 1 and 10000",
                    "at least as many as the processes that should assemble traces, e.g. 12",
                );
            }
        }
        for (section, map) in [
            ("properties", &self.properties),
            ("producer_properties", &self.producer_properties),
            ("consumer_properties", &self.consumer_properties),
        ] {
            if map.contains_key("transactional.id") {
                errors.push(
                    format!("kafka.{section}.transactional.id"),
                    "is set by spanline",
                    "remove it and write `delivery: exactly_once` in the pipeline: spanline then names its transactional producer `<kafka.group_id>-<kafka.instance_id>` and commits outputs, state and offsets in one transaction",
                );
            }
            for key in ["group.id", "bootstrap.servers", "enable.auto.commit"] {
                if map.contains_key(key) {
                    errors.push(
                        format!("kafka.{section}.{key}"),
                        "is set by spanline",
                        "use kafka.group_id and kafka.brokers; offsets are committed by spanline when outputs are safe",
                    );
                }
            }
        }
    }
}

/// `common` without the `foreign` keys, then `own` over it.
fn client(
    common: &BTreeMap<String, String>,
    foreign: &[&str],
    own: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    common
        .iter()
        .filter(|(k, _)| !foreign.contains(&k.as_str()))
        .chain(own)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// This host's name (`HOSTNAME`, else the kernel's), for a default instance id.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "spanline".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "g".into(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            consumer_properties: BTreeMap::new(),
            producer_properties: [("linger.ms".to_string(), "20".to_string())].into(),
            commit_interval: Duration::from_secs(1),
            changelogs: true,
            repartition_partitions: None,
            instance_id: None,
            reset_state: false,
            embedded_partitions: 3,
        }
    }

    #[test]
    fn exactly_once_needs_changelogs_and_a_real_broker() {
        let check = |k: &KafkaConfig| {
            let mut errors = ConfigErrors::default();
            k.validate_delivery(crate::config::Delivery::ExactlyOnce, &mut errors);
            errors.to_string()
        };
        let mut k = kafka(&[]);
        assert_eq!(check(&k), "");
        k.instance_id = Some("pod-1".into());
        assert_eq!(k.transactional_id(), "g-pod-1");
        k.changelogs = false;
        assert!(
            check(&k).contains("needs the state in changelogs"),
            "{}",
            check(&k)
        );
        k.changelogs = true;
        k.brokers = "embedded".into();
        assert!(check(&k).contains("transaction markers"), "{}", check(&k));
        let mut errors = ConfigErrors::default();
        k.validate_delivery(crate::config::Delivery::AtLeastOnce, &mut errors);
        assert_eq!(errors.to_string(), "", "at-least-once needs neither");
    }

    #[test]
    fn each_client_gets_only_the_properties_it_reads() {
        let k = kafka(&[
            ("security.protocol", "SASL_SSL"),
            ("session.timeout.ms", "10000"),
            ("compression.type", "zstd"),
        ]);
        let consumer = k.consumer();
        let producer = k.producer();
        assert_eq!(
            consumer.get("security.protocol").map(String::as_str),
            Some("SASL_SSL")
        );
        assert_eq!(
            producer.get("security.protocol").map(String::as_str),
            Some("SASL_SSL")
        );
        assert!(consumer.contains_key("session.timeout.ms"));
        assert!(!producer.contains_key("session.timeout.ms"));
        assert!(producer.contains_key("compression.type"));
        assert!(!consumer.contains_key("compression.type"));
        assert_eq!(producer.get("linger.ms").map(String::as_str), Some("20"));
        assert!(!consumer.contains_key("linger.ms"));
    }

    #[test]
    fn a_transactional_id_is_rejected_with_its_path() {
        let mut errors = ConfigErrors::default();
        kafka(&[("transactional.id", "spanline-1")]).validate(&mut errors);
        let text = errors.to_string();
        assert!(
            text.contains("kafka.properties.transactional.id")
                && text.contains("delivery: exactly_once"),
            "{text}"
        );
    }
}
