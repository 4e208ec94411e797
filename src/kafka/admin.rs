//! Topic administration: the changelog topics a pipeline keeps its state in.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The number of partitions of each of `topics` that exists.
pub fn partition_counts(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topics: &[String],
) -> Result<BTreeMap<String, usize>, String> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .map_err(|e| format!("reading topic metadata: {e}"))?;
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
) -> Result<(), String> {
    let names: Vec<String> = changelogs.iter().map(|(t, _)| t.clone()).collect();
    let existing = {
        let (b, p, n) = (brokers.to_string(), properties.clone(), names.clone());
        tokio::task::spawn_blocking(move || partition_counts(&b, &p, &n))
            .await
            .map_err(|e| e.to_string())??
    };
    let mut missing = Vec::new();
    for (topic, partitions) in changelogs {
        match existing.get(topic) {
            Some(&have) if have < *partitions => {
                return Err(format!(
                    "changelog topic {topic} has {have} partitions, the inputs need {partitions}: add partitions to it (or delete it to start from empty state)"
                ))
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
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|(t, n)| {
            NewTopic::new(t, *n as i32, TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact")
        })
        .collect();
    let created = admin
        .create_topics(&new, &create_options())
        .await
        .map_err(|e| format!("creating changelog topics: {e}"))
        .and_then(|results| {
            results.into_iter().try_for_each(|r| match r {
                Ok(topic) => {
                    tracing::info!(%topic, "changelog topic created");
                    Ok(())
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(()),
                Err((topic, e)) => Err(format!("creating changelog topic {topic}: {e}")),
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
        .map_err(|e| e.to_string())?;
    match auto {
        Ok(()) => {
            tracing::info!(topics = ?missing, "changelog topics created by the broker on request");
            Ok(())
        }
        Err(e) => Err(format!(
            "{failure}; asking the broker to create them failed too: {e}"
        )),
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
) -> Result<(), String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "true");
    for (k, v) in properties {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    for (topic, _) in topics {
        consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| e.to_string())?;
    }
    let names: Vec<String> = topics.iter().map(|(t, _)| t.clone()).collect();
    let have = partition_counts(brokers, properties, &names)?;
    for (topic, partitions) in topics {
        match have.get(topic) {
            Some(n) if n >= partitions => {}
            Some(n) => {
                return Err(format!(
                    "{topic} was created with {n} partitions, {partitions} needed"
                ))
            }
            None => return Err(format!("{topic} was not created")),
        }
    }
    Ok(())
}
