//! The driver: spanline's one synchronous core, events in, effects out.
//!
//! It owns the stages, the partition table and the offset bookkeeping, and reads no
//! clock and does no I/O: the Kafka runner ([`crate::runner`]), `replay`, the benchmarks
//! and the tests all feed it [`Event`]s (records, assignments, acknowledgements, a tick
//! at time t) and carry out the [`Effect`]s it returns (produce, notify, commit, fetch a
//! schema, train a model). Live and replay therefore cannot drift apart, and the
//! rebalance, acknowledgement and commit rules are tested here without a broker.

mod changelog;
mod checkpoint;
mod inspect;
mod merge;
pub mod offsets;
mod overlap;
mod partitions;
mod repartition;
mod restore;
mod step;
mod types;
mod windows;

pub use checkpoint::ChangelogSettings;
pub use merge::MergeSettings;
pub use repartition::{hop_partition, input_id};
pub use restore::StateRecord;
pub use types::*;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_alerts;
#[cfg(test)]
mod tests_checkpoint;
#[cfg(test)]
mod tests_cluster;
#[cfg(test)]
mod tests_merge;
#[cfg(test)]
mod tests_repartition;
#[cfg(test)]
mod tests_scores;
#[cfg(test)]
mod tests_seed;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::codec::{DecodeError, SpanDecoder};
use crate::config::PipelineConfig;
use crate::model::{CloseReason, Record, Span};
use crate::stage::aggregate::AggregateStats;
use crate::stage::assemble::{Output, Stats};
use crate::stage::pipeline::{Emit, StageStats, Stages};
use crate::telemetry::metrics;
use crate::telemetry::spanmetrics::SpanMetrics;

use offsets::OffsetTracker;
use partitions::Partitions;
use repartition::Route;
use windows::WindowHolds;

struct Source {
    spec: SourceSpec,
    decoder: SpanDecoder,
}

/// The pure core of a pipeline.
pub struct Driver {
    sources: Vec<Source>,
    topic_source: HashMap<Arc<str>, usize>,
    /// Shared with a deferred step's stages while they run.
    outputs: Arc<Outputs>,
    topics: Topics,
    stages: Stages,
    spanmetrics: Option<SpanMetrics>,
    tracker: OffsetTracker,
    partitions: Partitions,
    window_holds: WindowHolds,
    settings: DriverSettings,
    /// Records read but not processed: they wait while a schema is fetched.
    pending: VecDeque<Record>,
    /// The schema being fetched, if any (records wait).
    blocked: Option<(usize, u32)>,
    /// The schema just fetched, with the error adding it gave: the record that asked
    /// for it is decoded once more, then dead-lettered if it still fails.
    fetched: Option<(usize, u32, Option<DecodeError>)>,
    now_ms: i64,
    last_commit_ms: Option<i64>,
    effects: Vec<Effect>,
    out: Vec<Output>,
    emits: Vec<Emit>,
    spans: Vec<Span>,
    due: Vec<(u32, i64)>,
    published: Published,
    /// Spans decoded or pushed so far.
    spans_read: u64,
    /// Epochs and checkpoints, when state is kept in changelogs.
    checkpoints: Option<checkpoint::Checkpoints>,
    /// The repartition hop, when sources not keyed by trace id are re-keyed.
    repartition: Option<repartition::Repartition>,
    /// Two-phase aggregation, when windows may be counted by several instances.
    merge: Option<merge::Merge>,
    /// Per partition, the offset the restored state stands at: records below it are
    /// in the state already and skipped if the consumer reads them again.
    restored_from: rustc_hash::FxHashMap<u32, i64>,
    /// Whether closed windows and alerts also become [`Effect::Live`].
    live: bool,
    /// Whether a step's stages after assembly may run beside the next records.
    overlap: bool,
    /// A step whose stages after assembly have not run yet (see `overlap`).
    deferred: Option<overlap::Deferred>,
}

/// The output topics, shared with every record written to them.
struct Topics {
    traces: Arc<str>,
    late: Option<Arc<str>>,
    aggregates: Option<Arc<str>>,
    alerts: Option<Arc<str>>,
    dead_letters: Vec<Option<Arc<str>>>,
}

#[derive(Default)]
struct Published {
    assembler: Stats,
    stages: StageStats,
    aggregates: AggregateStats,
}

impl Driver {
    /// The stages `config` declares, reading `sources` and writing `outputs`.
    pub fn new(
        config: &PipelineConfig,
        sources: Vec<SourceSpec>,
        outputs: Outputs,
        settings: DriverSettings,
    ) -> Self {
        let mut topic_source = HashMap::new();
        for (i, s) in sources.iter().enumerate() {
            for t in &s.topics {
                topic_source.insert(Arc::from(t.as_str()), i);
            }
        }
        let arc = |o: &Option<OutputSpec>| o.as_ref().map(|o| Arc::from(o.topic.as_str()));
        let topics = Topics {
            traces: Arc::from(outputs.traces.topic.as_str()),
            late: arc(&outputs.late),
            aggregates: arc(&outputs.aggregates),
            alerts: arc(&outputs.alerts),
            dead_letters: sources
                .iter()
                .map(|s| s.dead_letter_topic.as_deref().map(Arc::from))
                .collect(),
        };
        let spanmetrics = settings.span_metrics.then(|| {
            let agg = config.aggregate();
            SpanMetrics::new(
                agg.map_or(10_000, |a| a.max_series),
                agg.map_or(600_000_000_000, |a| {
                    i64::try_from(a.idle_series_expiry.as_nanos()).unwrap_or(i64::MAX)
                }),
            )
        });
        let mut stages = Stages::new(config.stage_settings());
        let checkpoints = settings
            .changelog
            .as_ref()
            .map(checkpoint::Checkpoints::new);
        if checkpoints.is_some() {
            stages.track_changes();
        }
        let repartition = settings
            .repartition
            .as_ref()
            .filter(|_| sources.iter().any(|s| !s.keyed_by_trace))
            .map(repartition::Repartition::new);
        // two-phase aggregation needs checkpoints: the partials leave in the epoch of
        // the offsets of the traces they count
        let merge = settings
            .merge
            .as_ref()
            .filter(|_| checkpoints.is_some() && config.aggregate().is_some());
        if let Some(m) = merge {
            stages.aggregate_in_two_phases(m.idle_timeout_ms);
        }
        let merge = merge.map(merge::Merge::new);
        Self {
            sources: sources
                .into_iter()
                .map(|spec| Source {
                    decoder: SpanDecoder::new(spec.format),
                    spec,
                })
                .collect(),
            topic_source,
            outputs: Arc::new(outputs),
            topics,
            stages,
            spanmetrics,
            tracker: OffsetTracker::default(),
            partitions: Partitions::default(),
            window_holds: WindowHolds::default(),
            settings,
            pending: VecDeque::new(),
            blocked: None,
            fetched: None,
            now_ms: 0,
            last_commit_ms: None,
            effects: Vec::new(),
            out: Vec::new(),
            emits: Vec::new(),
            spans: Vec::new(),
            due: Vec::new(),
            published: Published::default(),
            spans_read: 0,
            checkpoints,
            repartition,
            merge,
            restored_from: Default::default(),
            live: false,
            overlap: false,
            deferred: None,
        }
    }

    /// The sources of `config`, as declared.
    pub fn sources_of(config: &PipelineConfig) -> Vec<SourceSpec> {
        config
            .sources
            .iter()
            .map(|s| SourceSpec {
                name: s.name.clone(),
                topics: s.topics.clone(),
                format: s.format,
                dead_letter_topic: s.dead_letter_topic.clone(),
                keyed_by_trace: s.keyed_by_trace(),
            })
            .collect()
    }

    /// Handles one event; its effects are then in [`Driver::take_effects`].
    pub fn handle(&mut self, event: Event) -> Result<(), DriverError> {
        // a deferred step comes first, except where it cannot make a difference:
        // acknowledgements and commits touch no stage, and a model trained meanwhile
        // is installed before the deferred step's stages run, as it was before the step
        // was deferred (see `overlap`)
        let untouched = matches!(
            event,
            Event::Records { .. } | Event::Acked { .. } | Event::Committed(_) | Event::Trained(_)
        );
        if !untouched {
            self.finish_deferred();
        }
        match event {
            Event::Assigned { partitions, now_ms } => {
                self.now_ms = now_ms;
                for (t, p) in &partitions {
                    let id = self.partitions.assign(t, *p);
                    self.tracker.assign(id);
                    match self.route(t) {
                        Route::Direct => self.stages.assembler.assign(id, now_ms),
                        Route::Hop => {
                            let inputs = self.repartition.as_ref().map(|r| &r.input_ids[..]);
                            let inputs = inputs.unwrap_or_default();
                            self.stages.assembler.assign_hop(id, inputs, now_ms);
                        }
                        Route::Split => {
                            if let Some(rp) = &mut self.repartition {
                                rp.inputs.assign(id, now_ms);
                            }
                        }
                        // partials go to partition 0 only (a broker may create the
                        // topic with more)
                        Route::Merge if *p != 0 => {}
                        Route::Merge => {
                            let inputs = self.merge.as_ref().map(|m| &m.input_ids[..]);
                            let inputs = inputs.unwrap_or_default();
                            self.stages.assign_partials(id, inputs, now_ms);
                        }
                    }
                }
            }
            Event::TransactionRefused => {
                // what was left to carry out belongs to the aborted transaction
                self.effects.clear();
                if let Some(cp) = &mut self.checkpoints {
                    cp.refused();
                }
                let live: Vec<(String, i32)> = self
                    .partitions
                    .live_ids()
                    .map(|id| {
                        let (t, p) = self.partitions.name(id);
                        (t.to_string(), p)
                    })
                    .collect();
                return self.handle(Event::Revoked(live));
            }
            Event::Revoked(partitions) => {
                let ids: Vec<u32> = partitions
                    .iter()
                    .filter_map(|(t, p)| self.partitions.revoke(t, *p))
                    .collect();
                for id in &ids {
                    self.tracker.revoke(*id);
                    if let Some(rp) = &mut self.repartition {
                        rp.revoke(*id);
                    }
                    self.stages.revoke_partials(*id);
                    self.restored_from.remove(id);
                }
                if let Some(cp) = &mut self.checkpoints {
                    // the state was checkpointed: the next owner restores it, and so
                    // does this instance if the partitions come back
                    cp.forget_written();
                    self.stages.clear_state();
                    self.stages.track_changes();
                } else {
                    self.stages.assembler.revoke(&ids);
                }
                // records read before the revocation and not processed yet belong to
                // the next owner now
                self.pending
                    .retain(|r| self.partitions.live(&r.topic, r.partition).is_some());
            }
            Event::Records { records, now_ms } => {
                self.now_ms = now_ms;
                self.pending.extend(records);
                self.pump();
            }
            Event::Schema { source, id, schema } => {
                if self.blocked == Some((source, id)) {
                    self.blocked = None;
                    let error = match schema {
                        Ok(s) => self.sources[source].decoder.avro().add_schema(id, &s).err(),
                        Err(message) => {
                            tracing::warn!(%message, schema_id = id, "schema lookup failed");
                            None
                        }
                    };
                    self.fetched = Some((source, id, error));
                    self.pump();
                }
            }
            Event::Acked {
                topic,
                holds,
                epoch,
                error,
            } => {
                let aborted = self
                    .checkpoints
                    .as_ref()
                    .is_some_and(|cp| cp.was_refused(epoch));
                if error.is_some() && aborted {
                    // purged by the abort of a refused transaction
                    return Ok(());
                }
                if let Some(message) = error {
                    metrics::PRODUCE_ERRORS.with_label_values(&[&topic]).inc();
                    return Err(DriverError::Delivery {
                        topic: topic.to_string(),
                        message,
                    });
                }
                metrics::PRODUCED.with_label_values(&[&topic]).inc();
                for (p, o) in holds {
                    self.tracker.release(p, o);
                }
                if let Some(cp) = &mut self.checkpoints {
                    cp.acked(epoch);
                    self.advance_checkpoint();
                }
            }
            Event::Restore { store, records } => self.restore(store, records)?,
            Event::ResetState { store, records } => self.reset_state(store, records),
            Event::Repair { store, records } => self.repair(store, records),
            Event::SeedTraceModels(records) => self.seed_trace_models(records),
            Event::Trained(model) => self.stages.install(model),
            Event::Committed(commits) => {
                metrics::COMMITS.inc();
                for c in commits {
                    self.tracker.committed(c.id, c.offset);
                }
                if let Some(cp) = &mut self.checkpoints {
                    for alert in cp.committed() {
                        self.effects.push(Effect::Notify(alert));
                    }
                }
            }
            Event::Tick { now_ms } => {
                self.now_ms = now_ms;
                if self.blocked.is_none() {
                    self.advance();
                }
                if let Some(s) = &mut self.spanmetrics {
                    s.expire(self.stages.assembler.watermarks().current());
                }
                self.report_progress();
                let due = self
                    .last_commit_ms
                    .is_none_or(|last| now_ms - last >= self.settings.commit_interval_ms);
                if due {
                    self.last_commit_ms = Some(now_ms);
                    self.commit();
                }
            }
            Event::CommitNow => self.commit(),
            Event::Flush => {
                self.stages
                    .assembler
                    .flush(CloseReason::Shutdown, &mut self.out);
                self.step();
            }
            Event::EndOfInput => {
                self.stages.assembler.advance_to(i64::MAX, &mut self.out);
                self.step();
            }
        }
        Ok(())
    }

    /// Feeds the spans of one input record at `offset` of the partition read as
    /// (`topic`, `partition`), already decoded: for tests and benchmarks that generate
    /// spans. The partition must be assigned.
    pub fn push_spans(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        spans: impl IntoIterator<Item = Span>,
        now_ms: i64,
    ) {
        self.now_ms = now_ms;
        let Some(part) = self.partitions.live(topic, partition) else {
            return;
        };
        self.tracker.consumed(part, offset);
        let origin = crate::model::Origin {
            partition: part,
            offset,
        };
        for span in spans {
            self.spans_read += 1;
            self.stages
                .assembler
                .push(span, origin, now_ms, &mut self.tracker, &mut self.out);
        }
        self.advance();
    }

    /// The effects of the events handled so far, in the order they are to be carried
    /// out.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Whether the driver has effects waiting.
    pub fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }

    /// Commits what is safe: at a checkpoint when state is kept in changelogs, else
    /// below every held offset.
    fn commit(&mut self) {
        if self.checkpoints.is_some() {
            self.begin_checkpoint();
            return;
        }
        let due = self.commits(self.tracker.to_commit());
        if !due.is_empty() {
            self.effects.push(Effect::Commit(due));
        }
    }

    /// `offsets` (partition id, next offset to read) as commits by partition name.
    fn commits(&self, offsets: Vec<(u32, i64)>) -> Vec<Commit> {
        offsets
            .into_iter()
            .map(|(id, offset)| {
                let (topic, partition) = self.partitions.name(id);
                Commit {
                    topic: topic.clone(),
                    partition,
                    offset,
                    id,
                }
            })
            .collect()
    }

    /// Processes waiting records until they run out or one waits for a schema (beside
    /// a deferred step's stages), then steps.
    fn pump(&mut self) {
        if self.blocked.is_none() {
            self.read_beside_deferred();
        }
        self.finish_deferred();
        self.read_pending();
        if self.blocked.is_none() {
            self.advance_assembly();
            self.step_deferring();
        }
    }

    /// Processes waiting records until they run out or one waits for a schema.
    fn read_pending(&mut self) {
        while self.blocked.is_none() {
            let Some(record) = self.pending.pop_front() else {
                break;
            };
            self.record(record);
        }
    }

    fn advance(&mut self) {
        self.advance_assembly();
        self.step();
    }

    /// Moves processing time on in the assembler (and the partials' watermark).
    fn advance_assembly(&mut self) {
        self.stages.advance_partials(self.now_ms);
        self.stages.assembler.advance(self.now_ms, &mut self.out);
    }
}
