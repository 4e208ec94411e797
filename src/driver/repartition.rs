//! The repartition hop: spans of sources that are not keyed by trace id are written,
//! grouped by trace, to the pipeline's repartition topic at the partition of their trace
//! id, and assembled by whoever owns that partition; as in Kafka Streams, the hop is a
//! topic, so scaling out needs Kafka only.
//!
//! Watermarks cross the hop as data: the writer of each input partition reports, on
//! every partition of the topic and after the spans it covers, how far the input has got
//! (or that it is idle). The reader of a partition of the topic is then as far as the
//! least advanced live input ([`crate::stage::watermark::Watermarks::progress`]). The
//! spans and the reports are outputs like any other: they hold their input offsets until
//! Kafka has them, and with exactly-once they are in the transaction that commits those
//! offsets.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::codec::avro::ResourceCache;
use crate::codec::hop::{self, HopRecord, Progress};
use crate::model::{Holds, Interner, Origin, Record, TraceId};
use crate::stage::assemble::Pushed;
use crate::stage::watermark::Watermarks;
use crate::telemetry::metrics;

use super::{Driver, OutputKind, Produce, RepartitionSettings};

/// The key of progress records (span records are keyed by their trace id).
const PROGRESS_KEY: &[u8] = b"progress";

/// The partition of the repartition topic that a trace's spans go to: FNV-1a of the
/// trace id's 16 bytes, big endian, modulo the partition count (stable across builds and
/// hosts, so every instance sends a trace to the same place).
pub fn hop_partition(trace_id: TraceId, partitions: i32) -> i32 {
    let hash = fnv1a(&trace_id.to_be_bytes(), FNV_OFFSET);
    (hash % partitions.max(1) as u64) as i32
}

/// The id readers know an input partition by in the progress reports.
pub fn input_id(topic: &str, partition: i32) -> u64 {
    fnv1a(
        &partition.to_be_bytes(),
        fnv1a(topic.as_bytes(), FNV_OFFSET),
    )
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// How the records of a topic reach the assembler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Assembled where they are read (keyed by trace id, or no repartitioning).
    Direct,
    /// Split by trace id onto the repartition topic.
    Split,
    /// The repartition topic: assembled here, watermarks from the progress reports.
    Hop,
    /// The aggregate repartition topic: partial windows merged here.
    Merge,
}

/// The driver's side of the hop.
pub(super) struct Repartition {
    pub(super) topic: Arc<str>,
    partitions: i32,
    progress_interval_ms: i64,
    heartbeat_ms: i64,
    /// The source partitions this instance splits, by the event times they delivered.
    pub(super) inputs: Watermarks,
    /// The ids of every input partition that writes to the topic.
    pub(super) input_ids: Vec<u64>,
    /// What was last reported of each input: (watermark, idle).
    reported: FxHashMap<u32, (i64, bool)>,
    last_report_ms: Option<i64>,
    last_heartbeat_ms: Option<i64>,
    interner: Interner,
    resources: ResourceCache,
}

impl Repartition {
    pub(super) fn new(settings: &RepartitionSettings) -> Self {
        Self {
            topic: Arc::from(settings.topic.as_str()),
            partitions: settings.partitions.max(1),
            progress_interval_ms: settings.progress_interval_ms,
            heartbeat_ms: (settings.idle_timeout_ms / 4).max(1),
            inputs: Watermarks::new(settings.out_of_orderness_ns, settings.idle_timeout_ms),
            input_ids: settings
                .inputs
                .iter()
                .map(|(t, p)| input_id(t, *p))
                .collect(),
            reported: FxHashMap::default(),
            last_report_ms: None,
            last_heartbeat_ms: None,
            interner: Interner::default(),
            resources: ResourceCache::default(),
        }
    }

    /// An input partition was revoked: this instance no longer reports it.
    pub(super) fn revoke(&mut self, id: u32) {
        self.inputs.revoke(id);
        self.reported.remove(&id);
    }
}

impl Driver {
    /// Whether the state of `topic`'s partitions is this instance's when it reads them:
    /// not for source topics split onto the repartition topic (their traces' state
    /// follows the partitions of that topic).
    pub fn keeps_state(&self, topic: &str) -> bool {
        matches!(self.route(topic), Route::Direct | Route::Hop)
    }

    /// Whether the windows' state (and the detectors' and alert rules', which follow
    /// the windows) is this instance's among `partitions` (topic, partition): with
    /// two-phase aggregation, with partition 0 of the aggregate repartition topic; else
    /// with partition 0 of an assembled topic.
    pub fn owns_windows(&self, partitions: &[(String, i32)]) -> bool {
        partitions.iter().any(|(t, p)| {
            *p == 0
                && match &self.merge {
                    Some(m) => *t == *m.topic,
                    None => self.keeps_state(t),
                }
        })
    }

    /// The aggregate repartition topic, when windows are counted in two phases.
    pub fn merge_topic(&self) -> Option<&str> {
        self.merge.as_ref().map(|m| &*m.topic)
    }

    /// The repartition topic, when spans are re-keyed through one.
    pub fn repartition_topic(&self) -> Option<&str> {
        self.repartition.as_ref().map(|r| &*r.topic)
    }

    pub(super) fn route(&self, topic: &str) -> Route {
        if self.is_hop(topic) {
            return Route::Hop;
        }
        if self.is_merge(topic) {
            return Route::Merge;
        }
        match self.topic_source.get(topic) {
            Some(&si) if self.splits(si) => Route::Split,
            _ => Route::Direct,
        }
    }

    pub(super) fn is_hop(&self, topic: &str) -> bool {
        self.repartition
            .as_ref()
            .is_some_and(|r| &*r.topic == topic)
    }

    /// Whether the records of source `si` are split onto the repartition topic.
    pub(super) fn splits(&self, si: usize) -> bool {
        self.repartition.is_some() && !self.sources[si].spec.keyed_by_trace
    }

    /// Writes the decoded spans of `rec` (read on the split partition `part`) to the
    /// repartition topic, one record per trace, each holding the input offset until
    /// Kafka has it. Spans over `max_span_bytes` stay behind and the record goes to the
    /// dead-letter topic, as when it is assembled where it is read.
    pub(super) fn split(&mut self, si: usize, rec: Record, part: u32) {
        let Some(rp) = &mut self.repartition else {
            return;
        };
        let max = self.stages.assembler.settings().max_span_bytes;
        let before = self.spans.len();
        self.spans.retain(|s| s.memory_size() <= max);
        let too_large = before - self.spans.len();
        for s in &self.spans {
            rp.inputs.observe(part, s.event_time(), self.now_ms);
        }
        self.spans.sort_by_key(|s| s.trace_id);
        let (topic, partitions) = (rp.topic.clone(), rp.partitions);
        let spans = std::mem::take(&mut self.spans);
        for trace in spans.chunk_by(|a, b| a.trace_id == b.trace_id) {
            let mut value = Vec::with_capacity(64 + trace.len() * 160);
            hop::write_spans(&mut value, trace);
            self.tracker.hold(part, rec.offset);
            let mut holds = Holds::new();
            holds.push((part, rec.offset));
            self.produce_output(Produce {
                kind: OutputKind::Repartition,
                topic: topic.clone(),
                partition: Some(hop_partition(trace[0].trace_id, partitions)),
                key: trace[0].trace_id.to_be_bytes().to_vec(),
                value,
                tombstone: false,
                headers: Vec::new(),
                holds,
                epoch: 0,
            });
        }
        self.spans = spans;
        self.spans.clear();
        if too_large > 0 {
            self.stages.assembler.count_too_large(too_large as u64);
            let message = format!("a span is larger than max_span_bytes ({max})");
            self.dead_letter(si, rec, part, "span_too_large", message);
        }
    }

    /// Reads a record of the repartition topic: spans are assembled as read from `part`,
    /// progress moves `part`'s watermark. A record that cannot be read is counted and
    /// skipped with a warning (only spanline writes the topic).
    pub(super) fn hop_record(&mut self, rec: Record, part: u32) {
        self.tracker.consumed(part, rec.offset);
        let Some(rp) = &mut self.repartition else {
            return;
        };
        let payload = rec.payload.as_deref().unwrap_or_default();
        match hop::read(payload, &mut rp.interner, &mut rp.resources) {
            Ok(HopRecord::Spans(spans)) => {
                let origin = Origin {
                    partition: part,
                    offset: rec.offset,
                };
                for span in spans {
                    let pushed = self.stages.assembler.push(
                        span,
                        origin,
                        self.now_ms,
                        &mut self.tracker,
                        &mut self.out,
                    );
                    debug_assert!(pushed != Pushed::TooLarge, "checked before the hop");
                }
            }
            Ok(HopRecord::Progress(reports)) => {
                for p in reports {
                    self.stages.assembler.progress(
                        part,
                        input_id(&p.topic, p.partition),
                        p.watermark_ns,
                        p.idle,
                        self.now_ms,
                    );
                }
            }
            Ok(HopRecord::Window(_)) => {
                metrics::DECODE_ERRORS
                    .with_label_values(&["repartition", "invalid_span"])
                    .inc();
                tracing::warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, "a partial window on the span repartition topic skipped");
            }
            Err(e) => {
                metrics::DECODE_ERRORS
                    .with_label_values(&["repartition", e.reason()])
                    .inc();
                tracing::warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, error = %e, "repartition record skipped: it cannot be read (written by another spanline version?)");
            }
        }
    }

    /// Reports the progress of every input partition this instance splits on every
    /// partition of the repartition topic: when an input moved or went idle, at most
    /// every `progress_interval`, and at least every quarter of the idle timeout.
    pub(super) fn report_progress(&mut self) {
        let now = self.now_ms;
        let Some(rp) = &mut self.repartition else {
            return;
        };
        if rp
            .last_report_ms
            .is_some_and(|t| now - t < rp.progress_interval_ms)
        {
            return;
        }
        let mut reports = Vec::new();
        let mut changed = false;
        let mut inputs: Vec<(u32, i64)> = rp.inputs.per_partition().collect();
        inputs.sort_unstable();
        for (id, watermark_ns) in inputs {
            let idle = rp.inputs.is_idle(id, now);
            changed |= rp.reported.insert(id, (watermark_ns, idle)) != Some((watermark_ns, idle));
            let (topic, partition) = self.partitions.name(id);
            reports.push(Progress {
                topic: topic.to_string(),
                partition,
                watermark_ns,
                idle,
            });
        }
        let heartbeat = rp
            .last_heartbeat_ms
            .is_none_or(|t| now - t >= rp.heartbeat_ms);
        if reports.is_empty() || !(changed || heartbeat) {
            return;
        }
        rp.last_report_ms = Some(now);
        rp.last_heartbeat_ms = Some(now);
        let mut value = Vec::with_capacity(8 + reports.len() * 32);
        hop::write_progress(&mut value, &reports);
        let (topic, partitions) = (rp.topic.clone(), rp.partitions);
        for partition in 0..partitions {
            self.produce_output(Produce {
                kind: OutputKind::Repartition,
                topic: topic.clone(),
                partition: Some(partition),
                key: PROGRESS_KEY.to_vec(),
                value: value.clone(),
                tombstone: false,
                headers: Vec::new(),
                holds: Holds::new(),
                epoch: 0,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_partitions_are_stable_and_spread() {
        // fixed values (FNV-1a 64 of the 16 id bytes): every build and host must agree
        assert_eq!(hop_partition(0, 12), 9);
        assert_eq!(hop_partition(0xabcdef, 7), 3);
        assert_eq!(hop_partition(7, 1), 0);
        let mut counts = [0usize; 6];
        for t in 0..6_000u128 {
            let id = t.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            counts[hop_partition(id, 6) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1_200).contains(&c)),
            "{counts:?}"
        );
        assert_ne!(input_id("spans", 0), input_id("spans", 1));
        assert_ne!(input_id("spans", 1), input_id("spans1", 0));
    }
}
