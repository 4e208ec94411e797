//! Topic administration: the changelog topics a pipeline keeps its state in.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use thiserror::Error;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Why the changelog topics could not be checked or created.
#[derive(Debug, Error)]
pub enum AdminError {
    /// A Kafka client call failed.
    #[error("{doing}")]
    Kafka {
        doing: &'static str,
        #[source]
        source: KafkaError,
    },
    /// The broker refused to create a topic.
    #[error("creating changelog topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
    /// A changelog topic exists with fewer partitions than the inputs.
    #[error("changelog topic {topic} has {have} partitions, the inputs need {need}: add partitions to it (or delete it to start from empty state)")]
    TooFewPartitions {
        topic: String,
        have: usize,
        need: usize,
    },
    /// Asking for a topic's metadata did not create it with enough partitions.
    #[error("{topic} was not created with {need} partitions (it has {have})")]
    NotCreated {
        topic: String,
        have: usize,
        need: usize,
    },
    /// CreateTopics failed, and so did asking the broker to create them on request.
    #[error("{create}; asking the broker to create them failed too")]
    BothFailed {
        create: Box<AdminError>,
        #[source]
        auto: Box<AdminError>,
    },
    /// The blocking metadata task did not finish.
    #[error("the metadata task stopped")]
    Task(#[source] tokio::task::JoinError),
}

fn kafka(doing: &'static str) -> impl FnOnce(KafkaError) -> AdminError {
    move |source| AdminError::Kafka { doing, source }
}

/// The number of partitions of each of `topics` that exists.
pub fn partition_counts(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topics: &[String],
) -> Result<BTreeMap<String, usize>, AdminError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config
        .create()
        .map_err(kafka("creating a metadata client"))?;
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .map_err(kafka("reading topic metadata"))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|n| n == t.name()) && t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect())
}

/// Creates each missing topic of `changelogs` with `partitions` partitions and
/// `cleanup.policy=compact`; an existing one with fewer partitions is an error (its
/// records could not follow the input partitions).
pub async fn ensure_changelogs(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    changelogs: &[(String, usize)],
) -> Result<(), AdminError> {
    ensure_topics(brokers, properties, changelogs, "compact").await
}

/// Creates each missing topic of `topics` with its partition count and `cleanup.policy`
/// (`compact` for changelogs, `delete` for the repartition topic); an existing one with
/// fewer partitions is an error.
pub async fn ensure_topics(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    changelogs: &[(String, usize)],
    cleanup_policy: &'static str,
) -> Result<(), AdminError> {
    let names: Vec<String> = changelogs.iter().map(|(t, _)| t.clone()).collect();
    let existing = {
        let (b, p, n) = (brokers.to_string(), properties.clone(), names.clone());
        tokio::task::spawn_blocking(move || partition_counts(&b, &p, &n))
            .await
            .map_err(AdminError::Task)??
    };
    let mut missing = Vec::new();
    for (topic, partitions) in changelogs {
        match existing.get(topic) {
            Some(&have) if have < *partitions => {
                return Err(AdminError::TooFewPartitions {
                    topic: topic.clone(),
                    have,
                    need: *partitions,
                })
            }
            Some(_) => {}
            None => missing.push((topic.clone(), *partitions)),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        config.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> =
        config.create().map_err(kafka("creating an admin client"))?;
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|(t, n)| {
            NewTopic::new(t, *n as i32, TopicReplication::Fixed(-1))
                .set("cleanup.policy", cleanup_policy)
        })
        .collect();
    let created = admin
        .create_topics(&new, &create_options())
        .await
        .map_err(kafka("creating topics"))
        .and_then(|results| {
            results.into_iter().try_for_each(|r| match r {
                Ok(topic) => {
                    tracing::info!(%topic, cleanup_policy, "topic created");
                    Ok(())
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(()),
                Err((topic, code)) => Err(AdminError::Create { topic, code }),
            })
        });
    let Err(failure) = created else {
        return Ok(());
    };
    // a broker without the CreateTopics API (librdkafka's mock cluster) may still
    // create topics when a client asks for their metadata
    let (b, p) = (brokers.to_string(), properties.clone());
    let wanted = missing.clone();
    let auto = tokio::task::spawn_blocking(move || auto_create(&b, &p, &wanted))
        .await
        .map_err(AdminError::Task)?;
    match auto {
        Ok(()) => {
            tracing::info!(topics = ?missing, "topics created by the broker on request");
            Ok(())
        }
        Err(auto) => Err(AdminError::BothFailed {
            create: Box::new(failure),
            auto: Box::new(auto),
        }),
    }
}

/// A broker without the CreateTopics API (librdkafka's mock cluster) lets the request
/// time out: fail fast and ask it to create them another way.
fn create_options() -> AdminOptions {
    let quick = Some(Duration::from_secs(5));
    AdminOptions::new()
        .request_timeout(quick)
        .operation_timeout(quick)
}

/// Asks for the metadata of `topics` with auto-creation allowed, then checks each exists
/// with enough partitions.
fn auto_create(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topics: &[(String, usize)],
) -> Result<(), AdminError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "true");
    for (k, v) in properties {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config
        .create()
        .map_err(kafka("creating a metadata client"))?;
    for (topic, _) in topics {
        consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(kafka("asking for a topic's metadata"))?;
    }
    let names: Vec<String> = topics.iter().map(|(t, _)| t.clone()).collect();
    let have = partition_counts(brokers, properties, &names)?;
    for (topic, partitions) in topics {
        let n = have.get(topic).copied().unwrap_or(0);
        if n < *partitions {
            return Err(AdminError::NotCreated {
                topic: topic.clone(),
                have: n,
                need: *partitions,
            });
        }
    }
    Ok(())
}
