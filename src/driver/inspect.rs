//! What a runner reads of a driver: counts, checkpoint and partition state, the stages,
//! and the process metrics it publishes.

use super::Driver;
use crate::stage::pipeline::{Stages, TraceDigest};
use crate::telemetry::metrics;

impl Driver {
    /// Spans decoded from records (or pushed) so far.
    pub fn spans_read(&self) -> u64 {
        self.spans_read
    }

    /// Whether a checkpoint is waiting for acknowledgements.
    pub fn checkpoint_in_progress(&self) -> bool {
        self.checkpoints.as_ref().is_some_and(|c| c.in_progress())
    }

    /// The changelog topic of `store`, when state is kept in changelogs.
    pub fn changelog_topic(&self, store: crate::state::Store) -> Option<&str> {
        self.checkpoints.as_ref().map(|c| c.topic(store).as_ref())
    }

    /// Whether this instance owns any input partition.
    pub fn owns_partitions(&self) -> bool {
        !self.partitions.is_empty()
    }

    /// The stages, for their statistics and state.
    pub fn stages(&self) -> &Stages {
        &self.stages
    }

    /// The stages, to restore state into.
    pub fn stages_mut(&mut self) -> &mut Stages {
        &mut self.stages
    }

    /// The slowest analysed traces so far, slowest first.
    pub fn slowest(&self) -> &[TraceDigest] {
        self.stages.slowest()
    }

    /// The offset that may be committed for (`topic`, `partition`) now, if assigned.
    pub fn committable(&self, topic: &str, partition: i32) -> Option<i64> {
        self.tracker
            .committable(self.partitions.live(topic, partition)?)
    }

    /// Publishes what the stages counted since the last call, and the gauges, to the
    /// process's metrics.
    pub fn publish_metrics(&mut self) {
        let asm = self.stages.assembler.stats().clone();
        metrics::publish_assembler(&self.published.assembler, &asm);
        self.published.assembler = asm;
        let stages = self.stages.stats().clone();
        metrics::publish_stages(&self.published.stages, &stages);
        self.published.stages = stages;
        if let Some(agg) = self.stages.aggregator() {
            let now = agg.stats().clone();
            metrics::publish_aggregates(&self.published.aggregates, &now);
            self.published.aggregates = now;
        }
        let asm = &self.stages.assembler;
        metrics::OPEN_TRACES.set(asm.open_traces() as i64);
        metrics::BUFFERED_SPANS.set(asm.buffered_spans() as i64);
        metrics::BUFFERED_BYTES.set(asm.buffered_bytes() as i64);
        metrics::HELD_OFFSETS.set(self.tracker.held() as i64);
        let wm = asm.watermarks().current();
        if wm != crate::stage::watermark::NO_WATERMARK {
            metrics::WATERMARK.set(wm as f64 / 1e9);
        }
        let now_s = self.now_ms as f64 / 1000.0;
        for (id, pwm) in asm.watermarks().per_partition() {
            if pwm == crate::stage::watermark::NO_WATERMARK {
                continue;
            }
            let (t, p) = self.partitions.name(id);
            metrics::WATERMARK_LAG
                .with_label_values(&[&**t, &p.to_string()])
                .set(now_s - pwm as f64 / 1e9);
        }
    }
}
