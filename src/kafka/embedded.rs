//! The embedded Kafka-protocol broker: librdkafka's mock cluster on loopback ports.
//!
//! It supports consumer groups, idempotent producers and transactions, and keeps only a
//! few MB per partition: it is for `demo`, `brokers: embedded` and tests, not storage.

use std::sync::mpsc;
use std::thread;

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot start the embedded broker: {0}")]
    Cluster(#[source] KafkaError),
    #[error("cannot create topic {topic} on the embedded broker: {source}")]
    Topic {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot start the embedded broker's thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the embedded broker's thread died")]
    Died,
}

/// A running embedded broker; stops on drop.
pub struct EmbeddedKafka {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a 1-broker cluster with `topics` created, each with `partitions` partitions.
    pub fn start(partitions: i32, topics: &[String]) -> Result<Self, EmbeddedError> {
        let topics: Vec<(String, i32)> = topics.iter().map(|t| (t.clone(), partitions)).collect();
        Self::start_topics(&topics)
    }

    /// Starts a 1-broker cluster with each of `topics` created with its partition count.
    pub fn start_topics(topics: &[(String, i32)]) -> Result<Self, EmbeddedError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, EmbeddedError>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let topics = topics.to_vec();
        // The mock cluster is not Send: it lives and dies on its own thread.
        let thread = thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(EmbeddedError::Cluster(e)));
                        return;
                    }
                };
                for (t, partitions) in &topics {
                    if let Err(source) = cluster.create_topic(t, *partitions, 1) {
                        let _ = ready_tx.send(Err(EmbeddedError::Topic {
                            topic: t.clone(),
                            source,
                        }));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(EmbeddedError::Thread)?;
        let bootstrap = ready_rx.recv().map_err(|_| EmbeddedError::Died)??;
        Ok(Self {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `host:port` to give clients.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
