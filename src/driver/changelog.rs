//! The records of a checkpoint: every piece of state that changed since the last one,
//! encoded for its changelog topic, and the alerts' records.

use std::sync::Arc;

use crate::model::Holds;
#[cfg(test)]
use crate::model::TraceId;
use crate::state;
use crate::telemetry::metrics;

use super::checkpoint::{CHANGELOG_EPOCH, MAX_STATE_RECORD};
use super::{Driver, OutputKind, Produce};

impl Driver {
    /// Every changed piece of state as a changelog record.
    pub(super) fn state_records(&mut self) -> Vec<Produce> {
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
