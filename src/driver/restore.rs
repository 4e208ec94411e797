//! Restoring the stages' state from their changelog records, or deleting it.

use std::sync::Arc;

use crate::state::{self, StateError, Store};
use crate::telemetry::metrics;

use super::changelog::changelog_record;
use super::checkpoint::CHANGELOG_EPOCH;
use super::{Driver, DriverError, Effect};

/// The latest record of one key of a changelog partition.
#[derive(Debug, Clone)]
pub struct StateRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    /// `None`: a tombstone (compaction had not removed it yet).
    pub value: Option<Vec<u8>>,
}

impl Driver {
    /// Applies `records` of `store`'s changelog; a record that cannot be restored stops
    /// the driver with an error naming where it was read.
    pub(super) fn restore(
        &mut self,
        store: Store,
        records: Vec<StateRecord>,
    ) -> Result<(), DriverError> {
        let topic = match self.changelog_topic(store) {
            Some(t) => t.to_string(),
            None => return Ok(()),
        };
        // checkpoint markers are not restored: they say which input records the state
        // reflects already, and those are skipped if read again
        let (markers, records): (Vec<StateRecord>, Vec<StateRecord>) = records
            .into_iter()
            .partition(|r| r.key == state::CHECKPOINT_MARKER);
        for m in markers {
            for (t, p, offset) in state::decode_marker(m.value.as_deref().unwrap_or_default()) {
                if let Some(id) = self.partitions.live(&t, p) {
                    let from = self.restored_from.entry(id).or_insert(offset);
                    *from = (*from).max(offset);
                }
            }
        }
        let n = records.len();
        if store == Store::Detect {
            self.restore_detect(&topic, records)?;
            metrics::STATE_RECORDS_RESTORED
                .with_label_values(&[&topic])
                .inc_by(n as u64);
            return Ok(());
        }
        for r in records {
            let at = (r.partition, r.offset);
            let applied = match store {
                Store::Assemble => self.restore_assemble(r),
                Store::Aggregate => self.restore_aggregate(r),
                Store::Alert => self.restore_alert(r),
                Store::Detect => unreachable!("restored as a whole"),
            };
            applied.map_err(|source| DriverError::State {
                topic: topic.clone(),
                partition: at.0,
                offset: at.1,
                source,
            })?;
        }
        self.stages.assembler.finish_restore();
        metrics::STATE_RECORDS_RESTORED
            .with_label_values(&[&topic])
            .inc_by(n as u64);
        // traces over the bounds close at once
        self.step();
        Ok(())
    }

    fn restore_assemble(&mut self, r: StateRecord) -> Result<(), StateError> {
        use state::assemble::{decode_closed, decode_open, decode_watermark, parse_key, Key};
        // state of a partition this instance does not own goes with its trace's first
        // partition
        let fallback = self
            .partitions
            .live_ids()
            .find(|&id| self.partitions.name(id).1 == r.partition)
            .or_else(|| self.partitions.live_ids().next());
        let Some(fallback) = fallback else {
            return Err(StateError::Partition(r.partition.to_string()));
        };
        match (parse_key(&r.key)?, r.value) {
            (Key::Open(id), Some(v)) => {
                let cp = self
                    .checkpoints
                    .as_mut()
                    .expect("restoring needs changelogs");
                let mut t = decode_open(&v, &mut cp.interner, &mut cp.resources)?;
                if t.amendment && t.prior.as_ref().is_none_or(|p| p.is_empty()) {
                    // closed records sort before open ones, so the closed trace is back
                    t.prior = self
                        .stages
                        .assembler
                        .closed_trace(id)
                        .map(|c| c.span_ids.into());
                }
                let parts = t
                    .partitions
                    .iter()
                    .map(|(topic, p)| self.partitions.live(topic, *p).unwrap_or(fallback))
                    .collect();
                self.stages.assembler.restore_open(
                    id,
                    t.spans,
                    parts,
                    t.prior,
                    t.amendment,
                    t.incomplete,
                    &mut self.out,
                );
            }
            (Key::Open(id), None) => self.stages.assembler.forget_open(id),
            (Key::Closed(id), Some(v)) => {
                let (ids, expires) = decode_closed(&v)?;
                self.stages
                    .assembler
                    .restore_closed(id, ids, expires, fallback);
            }
            (Key::Closed(id), None) => self.stages.assembler.forget_closed(id),
            (Key::Watermark(topic, p), Some(v)) => {
                let ns = decode_watermark(&v)?;
                if let Some(id) = self.partitions.live(&topic, p) {
                    self.stages.assembler.restore_max_event(id, ns);
                }
            }
            (Key::Watermark(..), None) => {}
        }
        Ok(())
    }

    fn restore_aggregate(&mut self, r: StateRecord) -> Result<(), StateError> {
        use state::aggregate::{decode_closed_through, decode_window, parse_key, Key};
        let Some(agg) = self.stages.aggregator_mut() else {
            return Ok(());
        };
        match (parse_key(&r.key)?, r.value) {
            (Key::Window(..), Some(v)) => {
                let window = decode_window(&v)?;
                tracing::debug!(
                    offset = r.offset,
                    start_ns = window.start_ns,
                    spans = super::merge::spans_in(&window),
                    "window restored"
                );
                let dropped = agg.restore_window(window);
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "restored window series that this pipeline no longer aggregates"
                    );
                }
            }
            (Key::ClosedThrough, Some(v)) => agg.restore_closed_through(decode_closed_through(&v)?),
            (_, None) => {}
        }
        Ok(())
    }

    /// The detectors' state comes back as a whole, as from a snapshot topic.
    fn restore_detect(
        &mut self,
        topic: &str,
        records: Vec<StateRecord>,
    ) -> Result<(), DriverError> {
        let Some(detector) = self.stages.detector_mut() else {
            return Ok(());
        };
        let at = records.first().map_or((0, 0), |r| (r.partition, r.offset));
        let error = |source: StateError| DriverError::State {
            topic: topic.to_string(),
            partition: at.0,
            offset: at.1,
            source,
        };
        let snapshot =
            detect_snapshot(records).map_err(|e| error(StateError::Damaged(e.to_string())))?;
        if let Some(s) = snapshot {
            detector
                .restore(s)
                .map_err(|e| error(StateError::Damaged(e.to_string())))?;
        }
        Ok(())
    }

    /// Whether this instance would take the windows' owner's trace models: it assembles
    /// traces with two-phase aggregation, does not own the windows, scores traces, and
    /// has no trace model yet (it just started).
    pub fn wants_trace_models(&self) -> bool {
        self.merge.is_some()
            && !self.owns_window_state()
            && self
                .stages
                .detector()
                .is_some_and(|d| d.settings().traces && d.trace_models() == 0)
    }

    /// Takes the trace models of the owner's detect changelog records. The seed only
    /// saves learning time: records that cannot be read are passed over with a warning.
    pub(super) fn seed_trace_models(&mut self, records: Vec<StateRecord>) {
        if !self.wants_trace_models() {
            return;
        }
        let Some(detector) = self.stages.detector_mut() else {
            return;
        };
        match detect_snapshot(records) {
            Ok(Some(snapshot)) => {
                let taken = detector.seed_trace_models(snapshot);
                tracing::info!(
                    root_operations = taken,
                    "trace models taken from the windows' owner"
                );
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "the windows' owner's trace models are unreadable: learning them afresh")
            }
        }
    }

    fn restore_alert(&mut self, r: StateRecord) -> Result<(), StateError> {
        use crate::stage::alert::Restored;
        use state::alert::{decode_instance, decode_meta, parse_key, Key};
        let Some(engine) = self.stages.alerts_mut() else {
            return Ok(());
        };
        // alert state an earlier spanline wrote in an earlier format: dropped, the series
        // start afresh (a firing alert is announced again when it next fires)
        let outdated = |e: StateError| match e {
            StateError::Version { found, reads } if found < reads => {
                tracing::warn!(found, reads, "alert state of an earlier format: dropped");
                Ok(())
            }
            e => Err(e),
        };
        match (parse_key(&r.key)?, r.value) {
            (Key::Instance(_), Some(v)) => match decode_instance(&v) {
                Ok(inst) => {
                    if engine.restore_instance(inst) == Restored::UnknownRule {
                        tracing::warn!(
                            "restored alert state of a rule this pipeline no longer has: dropped"
                        );
                    }
                }
                Err(e) => outdated(e)?,
            },
            (Key::Instance(fp), None) => engine.forget_instance(fp),
            (Key::Meta, Some(v)) => match decode_meta(&v) {
                Ok(meta) => engine.restore_meta(meta),
                Err(e) => outdated(e)?,
            },
            (Key::Meta, None) => {}
        }
        Ok(())
    }

    /// Writes `records` back (a value, or a tombstone for `None`): after them the
    /// changelog says again what its last complete checkpoint said.
    pub(super) fn repair(&mut self, store: Store, records: Vec<StateRecord>) {
        let Some(topic) = self.changelog_topic(store).map(Arc::<str>::from) else {
            return;
        };
        if !records.is_empty() {
            tracing::warn!(%topic, keys = records.len(), "undoing a checkpoint a crash cut short");
        }
        for r in records {
            let record = changelog_record(&topic, r.partition, r.key, r.value, CHANGELOG_EPOCH);
            self.effects.push(Effect::Produce(record));
        }
    }

    /// Deletes every key of `records` (`--reset-state`): the stages start empty.
    pub(super) fn reset_state(&mut self, store: Store, records: Vec<StateRecord>) {
        let Some(topic) = self.changelog_topic(store).map(Arc::<str>::from) else {
            return;
        };
        let live: Vec<StateRecord> = records.into_iter().filter(|r| r.value.is_some()).collect();
        metrics::STATE_RESETS.with_label_values(&[&topic]).inc();
        tracing::warn!(%topic, keys = live.len(), "--reset-state: deleting the stored state instead of restoring it");
        for r in live {
            let record = changelog_record(&topic, r.partition, r.key, None, CHANGELOG_EPOCH);
            self.effects.push(Effect::Produce(record));
        }
    }
}

/// The detectors' state in the latest records of their changelog (markers and
/// tombstones left out), as one snapshot.
fn detect_snapshot(
    records: Vec<StateRecord>,
) -> Result<Option<crate::stage::detect::Snapshot>, crate::stage::detect::SnapshotError> {
    let live = records
        .into_iter()
        .filter(|r| r.key != state::CHECKPOINT_MARKER)
        .filter_map(|r| {
            let key = String::from_utf8_lossy(&r.key).into_owned();
            r.value.map(|v| (key, v))
        });
    crate::stage::detect::Snapshot::from_records(live)
}
