//! The runner's part in keeping state: changelog topics created when missing, restored
//! when partitions are assigned (before their records are processed), checkpointed when
//! partitions are revoked and when the pipeline stops.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::config::PipelineConfig;
use crate::driver::{Driver, Event, StateRecord};
use crate::kafka::admin::{self, AdminError};
use crate::kafka::state::{Checkpointed, LatestRecord, StateTopic, StateTopicError};
use crate::state::{Store, CHECKPOINT_MARKER};

use super::{wall_ms, Endpoints, RunError, Shell};

/// How long restoring one changelog may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an assignment waits for the previous owner's last transaction to end.
const STABLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the changelogs of a pipeline.
pub(super) struct Restorer {
    brokers: String,
    properties: BTreeMap<String, String>,
    reset: bool,
}

impl Restorer {
    /// Creates the changelog topics that are missing, as many partitions as the most
    /// partitioned source topic.
    pub(super) async fn prepare(
        config: &PipelineConfig,
        endpoints: &Endpoints,
        driver: &Driver,
    ) -> Result<Self, RunError> {
        let err = |source: AdminError| super::setup::admin_error(config, source);
        let properties = config.kafka.common();
        let sources: Vec<String> = config
            .sources
            .iter()
            .flat_map(|s| s.topics.clone())
            .chain(driver.repartition_topic().map(str::to_string))
            .collect();
        let counts = super::setup::partition_counts(config, &endpoints.brokers, sources).await?;
        let partitions = counts.values().copied().max().unwrap_or(1).max(1);
        let changelogs: Vec<(String, usize)> = Store::ALL
            .iter()
            .filter_map(|s| driver.changelog_topic(*s))
            .map(|t| (t.to_string(), partitions))
            .collect();
        admin::ensure_changelogs(&endpoints.brokers, &properties, &changelogs)
            .await
            .map_err(err)?;
        if config.kafka.reset_state {
            tracing::warn!("--reset-state: stored state is deleted, not restored");
        }
        Ok(Self {
            brokers: endpoints.brokers.clone(),
            properties,
            reset: config.kafka.reset_state,
        })
    }
}

impl Shell {
    /// Partitions were assigned: their state is restored before their records come.
    pub(super) async fn assigned(
        &mut self,
        partitions: Vec<(String, i32)>,
    ) -> Result<(), RunError> {
        // open traces follow the partitions they are assembled from: not the source
        // partitions split onto the repartition topic
        let assembled: BTreeSet<i32> = partitions
            .iter()
            .filter(|(t, _)| self.driver.keeps_state(t))
            .map(|(_, p)| *p)
            .collect();
        let owns_windows = self.driver.owns_windows(&partitions);
        let stateful = partitions.clone();
        self.handle(Event::Assigned {
            partitions,
            now_ms: wall_ms(),
        })
        .await?;
        let Some(restorer) = &self.state else {
            return Ok(());
        };
        let (brokers, properties, reset) = (
            restorer.brokers.clone(),
            restorer.properties.clone(),
            restorer.reset,
        );
        self.wait_for_previous_owner(stateful).await;
        for store in Store::ALL {
            let Some(topic) = self.driver.changelog_topic(store).map(str::to_string) else {
                continue;
            };
            // open traces follow their input partition; the windows and the alerts live
            // in partition 0 with the owner of the inputs' partition 0
            let parts: Vec<i32> = match store {
                Store::Assemble => assembled.iter().copied().collect(),
                Store::Aggregate | Store::Alert | Store::Detect => {
                    owns_windows.then_some(0).into_iter().collect()
                }
            };
            if parts.is_empty() {
                continue;
            }
            let started = Instant::now();
            let read = self
                .read_changelog(&brokers, &properties, &topic, parts)
                .await?
                .map_err(|source| RunError::Restore {
                    pipeline: self.pipeline.clone(),
                    source: Box::new(source),
                })?;
            let mut records = state_records(read.records);
            let repairs = state_records(read.repairs);
            let (n, bytes) = (
                records.len(),
                records
                    .iter()
                    .map(|r| r.key.len() + r.value.as_ref().map_or(0, Vec::len))
                    .sum::<usize>(),
            );
            let event = if reset {
                // the keys of an unfinished checkpoint are deleted too
                records.extend(repairs.iter().map(|r| StateRecord {
                    value: Some(Vec::new()),
                    ..r.clone()
                }));
                Event::ResetState { store, records }
            } else {
                if !repairs.is_empty() {
                    self.handle(Event::Repair {
                        store,
                        records: repairs,
                    })
                    .await?;
                }
                Event::Restore { store, records }
            };
            self.handle(event).await?;
            tracing::info!(%topic, records = n, bytes, elapsed_ms = started.elapsed().as_millis() as u64, reset, "state restored");
        }
        if !reset && !assembled.is_empty() && self.driver.wants_trace_models() {
            self.take_trace_models(&brokers, &properties).await?;
        }
        Ok(())
    }

    /// The state is read only once the group's offsets of `partitions` are stable: a
    /// transaction of their previous owner that commits them (its last checkpoint, on
    /// being revoked) has ended, so its changelog records are all readable, and the
    /// state restored stands where the consumer starts. (A rebalance waits for the
    /// previous owner on Kafka; this also holds with a coordinator that does not.) A
    /// transaction committing them later is refused (KIP-447), so the restored state
    /// and the starting offsets cannot drift apart after this.
    async fn wait_for_previous_owner(&self, partitions: Vec<(String, i32)>) {
        if partitions.is_empty() {
            return;
        }
        let offsets = self.source.group_offsets();
        let waited = tokio::task::spawn_blocking(move || {
            offsets.wait_stable_offsets(&partitions, STABLE_TIMEOUT)
        })
        .await;
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "committed offsets not stable in time; restoring state anyway")
            }
            Err(error) => tracing::warn!(%error, "waiting for stable offsets failed"),
        }
    }

    /// An instance that assembles traces without owning the windows starts its trace
    /// models from the owner's (its detect changelog, partition 0, as of its last
    /// checkpoint) instead of learning them from scratch. Not reading them only costs
    /// learning time: a failure is a warning.
    async fn take_trace_models(
        &mut self,
        brokers: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RunError> {
        let Some(topic) = self
            .driver
            .changelog_topic(Store::Detect)
            .map(str::to_string)
        else {
            return Ok(());
        };
        match self
            .read_changelog(brokers, properties, &topic, vec![0])
            .await?
        {
            Ok(read) => {
                let records = state_records(read.records);
                self.handle(Event::SeedTraceModels(records)).await
            }
            Err(error) => {
                tracing::warn!(%topic, %error, "the windows' owner's trace models were not read: learning them afresh");
                Ok(())
            }
        }
    }

    /// Reads `parts` of the changelog `topic` as of their last checkpoint, on the
    /// blocking pool; the outer error is the task's, the inner one the read's.
    async fn read_changelog(
        &self,
        brokers: &str,
        properties: &BTreeMap<String, String>,
        topic: &str,
        parts: Vec<i32>,
    ) -> Result<Result<Checkpointed, StateTopicError>, RunError> {
        let reader = StateTopic {
            brokers: brokers.to_string(),
            properties: properties.clone(),
            topic: topic.to_string(),
        };
        tokio::task::spawn_blocking(move || {
            reader.read_checkpointed(&parts, RESTORE_TIMEOUT, CHECKPOINT_MARKER)
        })
        .await
        .map_err(|source| RunError::Task {
            pipeline: self.pipeline.clone(),
            doing: "reading a changelog",
            source,
        })
    }

    /// Partitions are being revoked: what is safe is written and committed while they
    /// are still ours, then their state is dropped (the next owner restores it).
    pub(super) async fn revoked(&mut self, partitions: Vec<(String, i32)>) -> Result<(), RunError> {
        tracing::info!(partitions = ?partitions, "partitions revoked");
        if self.state.is_some() {
            let sync = std::mem::replace(&mut self.sync_commits, true);
            let settled = self.settle(Duration::from_secs(10)).await;
            self.sync_commits = sync;
            settled?;
        }
        self.handle(Event::Revoked(partitions)).await
    }

    /// Commits what is safe and waits (at most `timeout`) until Kafka has every record
    /// that commit depends on and the commit is sent.
    pub(super) async fn settle(&mut self, timeout: Duration) -> Result<(), RunError> {
        let deadline = Instant::now() + timeout;
        // exactly-once: the transaction committing now, then one with everything since
        self.finish_commit().await?;
        self.handle(Event::CommitNow).await?;
        self.finish_commit().await?;
        self.execute().await?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = self.sink.flush(left) {
                tracing::warn!(error = %e, "producer flush incomplete");
            }
            while let Ok(ack) = self.acks.try_recv() {
                self.acked(ack).await?;
            }
            if !self.driver.checkpoint_in_progress() {
                break;
            }
            if left.is_zero() {
                tracing::warn!(
                    "checkpoint incomplete at the deadline; offsets stay at the last one"
                );
                break;
            }
        }
        if self.state.is_none() {
            // without changelogs, commit below what is still held
            self.handle(Event::CommitNow).await?;
        }
        Ok(())
    }
}

/// Changelog records as the driver restores them.
fn state_records(records: Vec<LatestRecord>) -> Vec<StateRecord> {
    records
        .into_iter()
        .map(|(partition, offset, key, value)| StateRecord {
            partition,
            offset,
            key,
            value,
        })
        .collect()
}
