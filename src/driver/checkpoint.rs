//! Checkpoints: the stages' state written to changelog topics, then the offsets
//! committed at the consumer's position.
//!
//! Every record the driver writes belongs to an epoch. At a checkpoint the epoch ends:
//! the consumer's position is noted and the state that changed is encoded. Its changelog
//! records are written only once every output of that epoch and the earlier ones is
//! acknowledged (a trace must be on its topic before the record saying it closed), and
//! the position is committed only once the changelog records are acknowledged. So after
//! a crash the committed offsets, the restored state and the outputs agree: what was
//! read below the position is in the outputs or in the state, never only in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Alert, Interner};
use crate::state::Store;
use crate::telemetry::metrics;

use super::{Commit, Driver, Effect, Produce};

/// The largest state value written (brokers take 1 MB records by default).
pub(super) const MAX_STATE_RECORD: usize = 900_000;

/// Acknowledgements of changelog records carry their epoch with this bit set.
pub(super) const CHANGELOG_EPOCH: u64 = 1 << 63;

/// Where the state goes: one compacted topic per store, named from the group id.
#[derive(Debug, Clone)]
pub struct ChangelogSettings {
    pub group_id: String,
    /// Checkpoints commit a transaction holding the epoch's outputs, its changelog
    /// records and the position ([`Effect::CommitTransaction`]), and notifications wait
    /// for that commit.
    pub exactly_once: bool,
}

/// The epochs of a changelog-keeping driver.
pub(super) struct Checkpoints {
    pub(super) assemble: Arc<str>,
    pub(super) aggregate: Arc<str>,
    pub(super) alert: Arc<str>,
    pub(super) detect: Arc<str>,
    pub(super) epoch: u64,
    /// Outputs not yet acknowledged, by epoch.
    unacked: BTreeMap<u64, usize>,
    pending: Option<Pending>,
    pub(super) interner: Interner,
    pub(super) resources: crate::codec::avro::ResourceCache,
    exactly_once: bool,
    /// With exactly-once: whether the open transaction has outputs.
    produced: bool,
    /// With exactly-once: the position of the last transaction.
    last_position: Vec<Commit>,
    /// With exactly-once: notifications of alerts in the open transaction, and of those
    /// in the transaction being committed.
    notify_waiting: Vec<Alert>,
    notify_committing: Vec<Alert>,
    /// With exactly-once: a transaction is committing (its outcome not heard yet).
    committing: bool,
    /// What the last records of the watermarks and of the emitted-through time said:
    /// unchanged values are not written again.
    pub(super) written_watermarks: std::collections::HashMap<u32, i64>,
    pub(super) written_closed_through: Option<i64>,
    /// A hash of each alert instance's last record, and of the lifecycle record: only
    /// what changed is written.
    pub(super) written_alerts: std::collections::HashMap<u64, u64>,
    pub(super) written_alert_meta: Option<u64>,
    /// With exactly-once: the last epoch of a transaction the broker refused (its
    /// records' delivery errors are the abort's, not failures).
    refused_through: Option<u64>,
}

#[derive(Debug)]
struct Pending {
    epoch: u64,
    position: Vec<Commit>,
    /// Changelog records waiting for the epoch's outputs.
    records: Vec<Produce>,
    /// Changelog records written, not yet acknowledged.
    outstanding: usize,
}

impl Checkpoints {
    pub(super) fn new(settings: &ChangelogSettings) -> Self {
        Self {
            assemble: Arc::from(Store::Assemble.topic(&settings.group_id)),
            aggregate: Arc::from(Store::Aggregate.topic(&settings.group_id)),
            alert: Arc::from(Store::Alert.topic(&settings.group_id)),
            detect: Arc::from(Store::Detect.topic(&settings.group_id)),
            epoch: 0,
            unacked: BTreeMap::new(),
            pending: None,
            interner: Interner::default(),
            resources: Default::default(),
            exactly_once: settings.exactly_once,
            produced: false,
            last_position: Vec::new(),
            notify_waiting: Vec::new(),
            notify_committing: Vec::new(),
            committing: false,
            written_watermarks: std::collections::HashMap::new(),
            written_closed_through: None,
            written_alerts: std::collections::HashMap::new(),
            written_alert_meta: None,
            refused_through: None,
        }
    }

    /// The state was dropped (partitions revoked): what was last written is no longer
    /// this instance's to compare with.
    pub(super) fn forget_written(&mut self) {
        self.written_watermarks.clear();
        self.written_closed_through = None;
        self.written_alerts.clear();
        self.written_alert_meta = None;
    }

    /// The transaction under way was aborted: its notifications never go, and what it
    /// wrote is no longer what was last written.
    pub(super) fn refused(&mut self) {
        self.committing = false;
        self.produced = false;
        self.pending = None;
        self.unacked.clear();
        self.notify_committing.clear();
        self.notify_waiting.clear();
        self.last_position.clear();
        self.forget_written();
        // what comes after is of a new epoch
        self.refused_through = Some(self.epoch);
        self.epoch += 1;
    }

    /// Whether a record of `epoch` was in a transaction the broker refused.
    pub(super) fn was_refused(&self, epoch: u64) -> bool {
        self.refused_through
            .is_some_and(|last| epoch & !CHANGELOG_EPOCH <= last)
    }

    /// Whether outputs commit in transactions.
    pub(super) fn exactly_once(&self) -> bool {
        self.exactly_once
    }

    /// With exactly-once, an alert's notification waits for the commit of the
    /// transaction that holds its record; returns it back otherwise.
    pub(super) fn defer_notification(&mut self, alert: Alert) -> Option<Alert> {
        if !self.exactly_once {
            return Some(alert);
        }
        self.notify_waiting.push(alert);
        None
    }

    /// The transaction of the last checkpoint committed: its notifications may go.
    pub(super) fn committed(&mut self) -> Vec<Alert> {
        self.committing = false;
        std::mem::take(&mut self.notify_committing)
    }

    /// The changelog topic of `store`.
    pub(super) fn topic(&self, store: Store) -> &Arc<str> {
        match store {
            Store::Assemble => &self.assemble,
            Store::Aggregate => &self.aggregate,
            Store::Alert => &self.alert,
            Store::Detect => &self.detect,
        }
    }

    /// An output of the current epoch was written.
    pub(super) fn written(&mut self) -> u64 {
        self.produced = true;
        *self.unacked.entry(self.epoch).or_default() += 1;
        self.epoch
    }

    /// A record of `epoch` was acknowledged.
    pub(super) fn acked(&mut self, epoch: u64) {
        if epoch & CHANGELOG_EPOCH != 0 {
            if let Some(p) = &mut self.pending {
                p.outstanding = p.outstanding.saturating_sub(1);
            }
            return;
        }
        if let Some(n) = self.unacked.get_mut(&epoch) {
            *n -= 1;
            if *n == 0 {
                self.unacked.remove(&epoch);
            }
        }
    }

    /// Whether a checkpoint is under way (with exactly-once: its transaction is
    /// committing).
    pub(super) fn in_progress(&self) -> bool {
        self.pending.is_some() || self.committing
    }
}

impl Driver {
    /// Ends the epoch: notes the position, encodes the changed state, and goes on with
    /// [`Driver::advance_checkpoint`]. One checkpoint at a time.
    pub(super) fn begin_checkpoint(&mut self) {
        let Some(cp) = &self.checkpoints else { return };
        if cp.in_progress() {
            return;
        }
        // the windows counted in this epoch leave in it
        self.flush_partials();
        let position = self.commits(self.tracker.positions());
        let records = self.state_records();
        if cp_exactly_once(&self.checkpoints) {
            self.commit_transaction(position, records);
            return;
        }
        if position.is_empty() && records.is_empty() {
            return;
        }
        let cp = self.checkpoints.as_mut().expect("checked above");
        let epoch = cp.epoch;
        cp.epoch += 1;
        cp.pending = Some(Pending {
            epoch,
            position,
            records,
            outstanding: 0,
        });
        self.advance_checkpoint();
    }

    /// Writes the changelog records once the epoch's outputs are acknowledged, and
    /// commits once the records are.
    pub(super) fn advance_checkpoint(&mut self) {
        let Some(cp) = &mut self.checkpoints else {
            return;
        };
        let Some(p) = &mut cp.pending else { return };
        let outputs_done = cp.unacked.range(..=p.epoch).next().is_none();
        if !outputs_done {
            return;
        }
        if !p.records.is_empty() {
            p.outstanding += p.records.len();
            for r in p.records.drain(..) {
                metrics::STATE_RECORDS_WRITTEN
                    .with_label_values(&[r.topic.as_ref()])
                    .inc();
                self.effects.push(Effect::Produce(r));
            }
            return;
        }
        if p.outstanding > 0 {
            return;
        }
        let done = cp.pending.take().expect("pending");
        if !done.position.is_empty() {
            self.effects.push(Effect::Commit(done.position));
        }
    }

    /// Exactly-once: the changelog records join the open transaction, which commits
    /// with the position; nothing waits for acknowledgements, since the transaction
    /// makes the outputs, the state and the offsets visible together or not at all.
    fn commit_transaction(&mut self, position: Vec<Commit>, records: Vec<Produce>) {
        let cp = self.checkpoints.as_mut().expect("exactly-once checkpoints");
        let unchanged = records.is_empty()
            && !cp.produced
            && cp.notify_waiting.is_empty()
            && (position.is_empty() || position == cp.last_position);
        if unchanged {
            return;
        }
        cp.epoch += 1;
        cp.produced = false;
        cp.committing = true;
        cp.last_position.clone_from(&position);
        let waiting = std::mem::take(&mut cp.notify_waiting);
        cp.notify_committing.extend(waiting);
        for r in records {
            metrics::STATE_RECORDS_WRITTEN
                .with_label_values(&[r.topic.as_ref()])
                .inc();
            self.effects.push(Effect::Produce(r));
        }
        self.effects.push(Effect::CommitTransaction(position));
    }
}

fn cp_exactly_once(checkpoints: &Option<Checkpoints>) -> bool {
    checkpoints.as_ref().is_some_and(Checkpoints::exactly_once)
}
