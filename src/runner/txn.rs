//! Exactly-once commits without stopping the pipeline: a transaction commits on the
//! blocking pool while records go on being read and processed. What the driver produces
//! meanwhile is held here and opens the next transaction once the commit is through; the
//! driver starts no other checkpoint until it hears [`Event::Committed`], so at most one
//! transaction commits at a time and each holds exactly the outputs emitted before its
//! offsets were taken.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::driver::{Commit, Event};
use crate::kafka::source::offset_list;
use crate::telemetry::metrics;

use super::{RunError, Shell};

/// A transaction being committed.
pub(super) struct Committing {
    task: tokio::task::JoinHandle<Result<(), KafkaError>>,
    commits: Vec<Commit>,
}

/// The outcome of the commit under way; pending forever when there is none (a
/// `select!` branch that waits on `&mut` to the shell's field).
pub(super) async fn outcome(
    committing: &mut Option<Committing>,
) -> Result<Result<(), KafkaError>, tokio::task::JoinError> {
    match committing {
        Some(c) => (&mut c.task).await,
        None => std::future::pending().await,
    }
}

impl Shell {
    /// Starts committing the open transaction with `commits` as the consumer's offsets
    /// (one is begun for offsets alone).
    pub(super) async fn start_commit(&mut self, commits: Vec<Commit>) -> Result<(), RunError> {
        // the driver waits for each commit before it asks for the next; never two at once
        self.finish_commit().await?;
        if !self.txn_open {
            self.sink
                .begin()
                .map_err(|e| self.kafka_error("begin a transaction", e))?;
            self.txn_open = true;
        }
        let offsets: Vec<(String, i32, i64)> = commits
            .iter()
            .map(|c| (c.topic.to_string(), c.partition, c.offset))
            .collect();
        let list = offset_list(&offsets).map_err(|e| self.kafka_error("list the offsets", e))?;
        let group = self
            .source
            .group_metadata()
            .ok_or_else(|| RunError::Consumer {
                pipeline: self.pipeline.clone(),
                problem: "the consumer has no group metadata for the transaction",
            })?;
        let sink = self.sink.clone();
        let task = tokio::task::spawn_blocking(move || sink.commit(&list, &group));
        self.committing = Some(Committing { task, commits });
        Ok(())
    }

    /// Waits for the commit under way, if any, and carries on from its outcome (the
    /// driver's effects of it are left for the caller to carry out).
    pub(super) async fn finish_commit(&mut self) -> Result<(), RunError> {
        if self.committing.is_none() {
            return Ok(());
        }
        let result = outcome(&mut self.committing).await;
        self.committed(result).await
    }

    /// The commit under way ended with `result`: carries on from it and carries out
    /// what the driver makes of it.
    pub(super) async fn commit_ended(
        &mut self,
        result: Result<Result<(), KafkaError>, tokio::task::JoinError>,
    ) -> Result<(), RunError> {
        self.committed(result).await?;
        self.execute().await
    }

    /// The commit under way ended with `result`. A commit that failed is aborted and
    /// ends the run: the stages' state is ahead of what committed, and a restart resumes
    /// from the last committed transaction. After a commit the records held meanwhile
    /// open the next transaction, and the driver hears of it (its effects are left for
    /// the caller to carry out).
    async fn committed(
        &mut self,
        result: Result<Result<(), KafkaError>, tokio::task::JoinError>,
    ) -> Result<(), RunError> {
        let Some(Committing { commits, .. }) = self.committing.take() else {
            return Ok(());
        };
        self.txn_open = false;
        let committed = result.map_err(|source| RunError::Task {
            pipeline: self.pipeline.clone(),
            doing: "committing the transaction",
            source,
        })?;
        if let Err(e) = committed {
            let sink = self.sink.clone();
            let aborted = tokio::task::spawn_blocking(move || sink.abort()).await;
            if refused(&e) && matches!(aborted, Ok(Ok(()))) {
                // a rebalance moved the partitions on (KIP-447 fencing): the next owner
                // redoes what the aborted transaction held, from the last committed one
                tracing::warn!(error = %e, "transaction refused by the group coordinator and aborted: a rebalance moved its partitions to another instance; their state is dropped until they are assigned again");
                metrics::TRANSACTIONS_REFUSED.inc();
                self.held.clear();
                self.dropped = true;
                self.restart_producer().await?;
                return self
                    .driver
                    .handle(Event::TransactionRefused)
                    .map_err(|e| self.driver_error(e));
            }
            tracing::error!(error = %e, aborted = ?aborted, "transaction commit failed");
            return Err(self.kafka_error(
                "commit the transaction (aborted; a restart resumes from the last committed one)",
                e,
            ));
        }
        metrics::TRANSACTIONS.inc();
        for p in std::mem::take(&mut self.held) {
            self.produce(p).await?;
        }
        self.driver
            .handle(Event::Committed(commits))
            .map_err(|e| self.driver_error(e))
    }
}

impl Shell {
    /// A new transactional producer of the same `transactional.id`, in a new epoch: after
    /// an abort the broker may no longer accept the old one's sequence numbers, and
    /// records it still holds belong to the aborted transaction.
    async fn restart_producer(&mut self) -> Result<(), RunError> {
        let (sink, acks) = self.producer_start.start(&self.pipeline).await?;
        self.sink = std::sync::Arc::new(sink);
        self.acks = acks;
        self.txn_open = false;
        Ok(())
    }
}

/// Whether a failed commit was refused because this consumer's group generation has
/// passed (its offsets are another member's to commit now), and may be aborted and
/// carried on from: librdkafka reports it as an abortable error of the offsets.
fn refused(e: &KafkaError) -> bool {
    let KafkaError::Transaction(t) = e else {
        return false;
    };
    t.txn_requires_abort()
        && !t.is_fatal()
        && matches!(
            t.code(),
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::RebalanceInProgress
        )
}
