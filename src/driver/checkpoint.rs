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

#[cfg(test)]
use crate::model::TraceId;
use crate::model::{Alert, Holds, Interner};
use crate::state::{self, Store};
use crate::telemetry::metrics;

use super::{Commit, Driver, Effect, OutputKind, Produce};

/// The largest state value written (brokers take 1 MB records by default).
const MAX_STATE_RECORD: usize = 900_000;

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
    assemble: Arc<str>,
    aggregate: Arc<str>,
    alert: Arc<str>,
    detect: Arc<str>,
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
    written_watermarks: std::collections::HashMap<u32, i64>,
    written_closed_through: Option<i64>,
    /// A hash of each alert instance's last record, and of the lifecycle record: only
    /// what changed is written.
    pub(super) written_alerts: std::collections::HashMap<u64, u64>,
    written_alert_meta: Option<u64>,
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

    /// Every changed piece of state as a changelog record.
    fn state_records(&mut self) -> Vec<Produce> {
        let Some(cp) = &self.checkpoints else {
            return Vec::new();
        };
        if self.partitions.is_empty() {
            // revoked (or a refused transaction): the state is its next owner's to write,
            // and this instance's was dropped
            return Vec::new();
        }
        let (assemble, aggregate) = (cp.assemble.clone(), cp.aggregate.clone());
        let epoch = CHANGELOG_EPOCH | cp.epoch;
        let mut out = Vec::new();
        let record = |topic: &Arc<str>, partition: i32, key: Vec<u8>, value: Option<Vec<u8>>| {
            changelog_record(topic, partition, key, value, epoch)
        };
        let (mut open, mut closed) = (Vec::new(), Vec::new());
        self.stages.assembler.take_changes(&mut open, &mut closed);
        let name = |id: u32| {
            let (t, p) = self.partitions.name(id);
            (t.as_ref(), p)
        };
        for (id, part) in open {
            let asm = &self.stages.assembler;
            let value = asm.open_trace(id).map(|mut t| {
                if asm.closed_trace(id).is_some() {
                    t.prior = None;
                }
                state::assemble::encode_open(&t, name)
            });
            let p = name(part).1;
            out.push(record(&assemble, p, state::assemble::open_key(id), value));
        }
        for (id, part) in closed {
            let value = self
                .stages
                .assembler
                .closed_trace(id)
                .map(|c| state::assemble::encode_closed(&c));
            let p = name(part).1;
            out.push(record(&assemble, p, state::assemble::closed_key(id), value));
        }
        // with two-phase aggregation the windows, the detectors and the alert rules are
        // the owner's: only it writes them (the others' changes are dropped)
        let owner = self.owns_window_state();
        let cp = self.checkpoints.as_mut().expect("checked above");
        for id in self.partitions.live_ids() {
            if let Some(ns) = self.stages.assembler.watermarks().max_event(id) {
                if cp.written_watermarks.insert(id, ns) == Some(ns) {
                    continue;
                }
                let (t, p) = self.partitions.name(id);
                let key = state::assemble::watermark_key(t, p);
                let value = Some(state::assemble::encode_watermark(ns));
                out.push(record(&assemble, p, key, value));
            }
        }
        if let Some(agg) = self.stages.aggregator_mut() {
            let mut windows = Vec::new();
            agg.take_changes(&mut windows);
            if !owner {
                windows.clear();
            }
            for (size, start) in windows {
                let value = agg
                    .window_state(size, start)
                    .map(|w| state::aggregate::encode_window(&w));
                out.push(record(
                    &aggregate,
                    0,
                    state::aggregate::window_key(size, start),
                    value,
                ));
            }
            let through = agg.closed_through_ns();
            if owner && cp.written_closed_through.replace(through) != Some(through) {
                let value = Some(state::aggregate::encode_closed_through(through));
                out.push(record(
                    &aggregate,
                    0,
                    state::aggregate::closed_through_key(),
                    value,
                ));
            }
        }
        if let Some(detector) = self.stages.detector_mut() {
            for (key, value) in detector.take_changes() {
                if !owner {
                    continue;
                }
                if value.as_ref().is_some_and(|v| v.len() > MAX_STATE_RECORD) {
                    // larger than a broker takes by default: this subject starts afresh
                    // after a restart
                    metrics::STATE_RECORDS_OVERSIZE
                        .with_label_values(&[cp.detect.as_ref()])
                        .inc();
                    tracing::warn!(%key, bytes = value.as_ref().map_or(0, Vec::len), "detector state too large for its changelog: not written");
                    continue;
                }
                out.push(record(&cp.detect, 0, key.into_bytes(), value));
            }
        }
        if owner {
            self.alert_records(&mut out);
        }
        // each changelog partition written to ends the checkpoint with a marker
        let mut written: Vec<(Arc<str>, i32)> = out
            .iter()
            .map(|r| (r.topic.clone(), r.partition.unwrap_or(0)))
            .collect();
        written.sort();
        written.dedup();
        for (topic, partition) in written {
            let positions = self.marker_positions(&topic, partition);
            let positions: Vec<(&str, i32, i64)> =
                positions.iter().map(|(t, p, o)| (&**t, *p, *o)).collect();
            let value = Some(state::encode_marker(epoch, &positions));
            out.push(record(
                &topic,
                partition,
                state::CHECKPOINT_MARKER.to_vec(),
                value,
            ));
        }
        out
    }

    /// The input positions the state in `partition` of the changelog `topic` stands at:
    /// for open traces, every assembled partition of that number; for the windows (and
    /// what follows them) with two-phase aggregation, the aggregate repartition topic's.
    fn marker_positions(&self, topic: &Arc<str>, partition: i32) -> Vec<(Arc<str>, i32, i64)> {
        let Some(cp) = &self.checkpoints else {
            return Vec::new();
        };
        let assemble = *topic == cp.assemble;
        if !assemble && self.merge.is_none() {
            return Vec::new();
        }
        self.partitions
            .live_ids()
            .filter_map(|id| {
                let (t, p) = self.partitions.name(id);
                let relevant = if assemble {
                    p == partition && self.keeps_state(t)
                } else {
                    p == 0 && self.is_merge(t)
                };
                // the state reflects the input up to what was restored, too: a partition
                // read nothing (or only records below that) since its state came back
                // must not lose the position, or the next owner reads them again
                let restored = self.restored_from.get(&id).copied();
                let next = match (self.tracker.next(id), restored) {
                    (Some(read), Some(restored)) => read.max(restored),
                    (read, restored) => read.or(restored)?,
                };
                relevant.then(|| (t.clone(), p, next))
            })
            .collect()
    }

    /// The alert instances and lifecycle that changed since the last checkpoint.
    fn alert_records(&mut self, out: &mut Vec<Produce>) {
        let Some(cp) = self.checkpoints.as_mut() else {
            return;
        };
        let epoch = CHANGELOG_EPOCH | cp.epoch;
        let record = |topic: &Arc<str>, key: Vec<u8>, value: Option<Vec<u8>>| {
            changelog_record(topic, 0, key, value, epoch)
        };
        if let Some(engine) = self.stages.alerts() {
            let alert = cp.alert.clone();
            let mut live = std::collections::HashSet::new();
            for (fp, inst) in engine.instances() {
                live.insert(fp);
                let value = state::alert::encode_instance(inst);
                let hash = hash_of(&value);
                if cp.written_alerts.insert(fp, hash) != Some(hash) {
                    out.push(record(&alert, state::alert::instance_key(fp), Some(value)));
                }
            }
            let gone: Vec<u64> = cp
                .written_alerts
                .keys()
                .filter(|fp| !live.contains(fp))
                .copied()
                .collect();
            for fp in gone {
                cp.written_alerts.remove(&fp);
                out.push(record(&alert, state::alert::instance_key(fp), None));
            }
            let meta = state::alert::encode_meta(&engine.lifecycle_meta());
            let hash = hash_of(&meta);
            if cp.written_alert_meta.replace(hash) != Some(hash) {
                out.push(record(&alert, state::alert::meta_key(), Some(meta)));
            }
        }
    }
}

/// A hash of a record's bytes, to tell whether it changed.
fn hash_of(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn cp_exactly_once(checkpoints: &Option<Checkpoints>) -> bool {
    checkpoints.as_ref().is_some_and(Checkpoints::exactly_once)
}

/// A changelog record of `key` in `partition`; `None` (or an empty value) deletes the
/// key (a compacted topic's tombstone).
pub(super) fn changelog_record(
    topic: &Arc<str>,
    partition: i32,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    epoch: u64,
) -> Produce {
    let value = value.unwrap_or_default();
    Produce {
        kind: OutputKind::Changelog,
        topic: topic.clone(),
        partition: Some(partition),
        key,
        tombstone: value.is_empty(),
        value,
        headers: Vec::new(),
        holds: Holds::new(),
        epoch,
    }
}

/// The trace id of an open-trace key, for tests.
#[cfg(test)]
pub(super) fn open_trace_of(key: &[u8]) -> Option<TraceId> {
    match state::assemble::parse_key(key).ok()? {
        state::assemble::Key::Open(id) => Some(id),
        _ => None,
    }
}
