//! Carrying out the driver's effects: produce, notify, fetch a schema, train, commit
//! offsets or a transaction.

use rdkafka::error::KafkaError;

use crate::driver::{DriverError, Effect, Event, OutputKind, Produce};
use crate::kafka::sink::{Ack, Lane, Token};

use super::{RunError, Shell};

impl Shell {
    /// Hands `event` to the driver and carries out every effect that follows.
    pub(super) async fn handle(&mut self, event: Event) -> Result<(), RunError> {
        let is_tick = matches!(event, Event::Tick { .. });
        self.driver
            .handle(event)
            .map_err(|e| self.driver_error(e))?;
        self.execute().await?;
        if is_tick {
            self.driver.publish_metrics();
        }
        Ok(())
    }

    pub(super) async fn acked(&mut self, ack: Ack) -> Result<(), RunError> {
        if ack.purged && self.producer_start.transactional_id.is_some() {
            // purged by the abort of a refused transaction (or at shutdown): nothing of
            // it counts, the transaction's offsets were not committed
            tracing::debug!(topic = %ack.token.topic, "record of an aborted transaction purged");
            return Ok(());
        }
        let Token {
            topic,
            holds,
            epoch,
            ..
        } = ack.token;
        let event = Event::Acked {
            topic,
            holds,
            epoch,
            error: ack.error,
        };
        self.handle(event).await
    }

    pub(super) fn driver_error(&self, source: DriverError) -> RunError {
        RunError::Driver {
            pipeline: self.pipeline.clone(),
            source,
        }
    }

    pub(super) async fn execute(&mut self) -> Result<(), RunError> {
        // a schema lookup feeds the driver again, which may have more effects
        while self.driver.has_effects() {
            for effect in self.driver.take_effects() {
                self.effect(effect).await?;
            }
        }
        Ok(())
    }

    async fn effect(&mut self, effect: Effect) -> Result<(), RunError> {
        match effect {
            // the open transaction is committing: the record goes in the next one
            Effect::Produce(p) if self.committing.is_some() => {
                self.held.push(p);
                Ok(())
            }
            Effect::Produce(p) => self.produce(p).await,
            Effect::Notify(alert) => {
                if let Some(n) = &self.notify {
                    n.send(std::slice::from_ref(&alert));
                }
                Ok(())
            }
            Effect::FetchSchema { source, id } => {
                let schema = match &self.registry {
                    Some(r) => r.schema(id).await.map_err(|e| e.to_string()),
                    None => Err("no schema registry".to_string()),
                };
                self.driver
                    .handle(Event::Schema { source, id, schema })
                    .map_err(|e| self.driver_error(e))
            }
            Effect::Train(job) => {
                let trained = self.trained.clone();
                // model training is CPU-heavy: off the async threads
                tokio::task::spawn_blocking(move || {
                    let _ = trained.send(job.run());
                });
                Ok(())
            }
            Effect::Commit(commits) => {
                let offsets: Vec<(String, i32, i64)> = commits
                    .iter()
                    .map(|c| (c.topic.to_string(), c.partition, c.offset))
                    .collect();
                let result = if self.sync_commits {
                    self.source.commit_sync(&offsets)
                } else {
                    self.source.commit(&offsets)
                };
                match result {
                    Ok(()) => self
                        .driver
                        .handle(Event::Committed(commits))
                        .map_err(|e| self.driver_error(e)),
                    Err(e) => {
                        tracing::warn!(error = %e, "offset commit failed; will retry");
                        Ok(())
                    }
                }
            }
            Effect::CommitTransaction(commits) => self.start_commit(commits).await,
            Effect::Live(event) => {
                self.live.publish(&event, super::wall_ms());
                Ok(())
            }
        }
    }

    /// Queues one record on its producer (with exactly-once, in the open transaction,
    /// begun first when none is).
    pub(super) async fn produce(&mut self, p: Produce) -> Result<(), RunError> {
        let (lane, emitted) = match p.kind {
            // alerts on their own producer: never behind the traces' queue; an
            // alert's delivery latency counts from here
            OutputKind::Alert => (Lane::Urgent, Some(std::time::Instant::now())),
            _ => (Lane::Bulk, None),
        };
        let token = Token {
            topic: p.topic.clone(),
            holds: p.holds,
            epoch: p.epoch,
            emitted,
        };
        let value = (!p.tombstone).then_some(p.value.as_slice());
        if self.sink.transactional() && !self.txn_open {
            self.sink
                .begin()
                .map_err(|e| self.kafka_error("begin a transaction", e))?;
            self.txn_open = true;
        }
        self.sink
            .send(
                lane,
                &p.topic,
                p.partition,
                &p.key,
                value,
                &p.headers,
                token,
            )
            .await
            .map_err(|source| RunError::Kafka {
                pipeline: self.pipeline.clone(),
                doing: format!("produce to {}", p.topic),
                source: Box::new(source),
            })
    }

    pub(super) fn kafka_error(&self, what: &str, e: KafkaError) -> RunError {
        RunError::Kafka {
            pipeline: self.pipeline.clone(),
            doing: what.to_string(),
            source: Box::new(e),
        }
    }
}
