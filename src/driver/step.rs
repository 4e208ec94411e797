//! One step of the driver: a record decoded and assembled, then what the stages emit
//! turned into effects, each output holding the input offsets it depends on.

use std::sync::Arc;

use crate::codec::{self, DecodeError, Format};
use crate::model::{Analysis, Trace, WindowAggregate};
use crate::model::{Holds, LiveEvent, LiveWindow, Origin, Record};
use crate::stage::assemble::Pushed;
use crate::stage::pipeline::{Emit, Encode, Encoded};
use crate::telemetry::metrics;

use super::windows::{lowest_per_partition, release_at};
use super::{Driver, Effect, OutputKind, Outputs, Produce};

/// The records of closed traces and windows in the driver's output encodings.
impl Encode for Outputs {
    fn trace(&self, trace: &Trace, analysis: Option<&Analysis>) -> Encoded {
        self.traces.encoding.trace(trace, analysis)
    }

    fn window(&self, window: &WindowAggregate) -> Option<Encoded> {
        self.aggregates
            .as_ref()
            .map(|o| o.encoding.aggregate(window))
    }
}

impl Driver {
    /// Decodes one record and pushes its spans; bad records go to the dead-letter topic.
    pub(super) fn record(&mut self, rec: Record) {
        let Some(part) = self.partitions.live(&rec.topic, rec.partition) else {
            // read before its partition was revoked: the next owner reads it again
            return;
        };
        if self
            .restored_from
            .get(&part)
            .is_some_and(|&from| rec.offset < from)
        {
            // in the restored state already: the consumer started below its checkpoint
            self.tracker.consumed(part, rec.offset);
            metrics::RECORDS_SKIPPED_RESTORED.inc();
            return;
        }
        if self.is_hop(&rec.topic) {
            self.hop_record(rec, part);
            return;
        }
        if self.is_merge(&rec.topic) {
            self.merge_record(rec, part);
            return;
        }
        let Some(&si) = self.topic_source.get(&*rec.topic) else {
            self.tracker.consumed(part, rec.offset);
            return;
        };
        let payload = rec.payload.as_deref().unwrap_or_default();
        self.spans.clear();
        let mut decoded = self.sources[si].decoder.decode(payload, &mut self.spans);
        if let Err(DecodeError::UnknownSchemaId(id)) = decoded {
            match self.fetched.take() {
                Some((s, fetched, Some(e))) if s == si && fetched == id => decoded = Err(e),
                Some((s, fetched, None)) if s == si && fetched == id => {}
                _ if self.settings.schema_registry => {
                    // wait for the registry; this record is processed again then
                    self.blocked = Some((si, id));
                    self.effects.push(Effect::FetchSchema { source: si, id });
                    self.pending.push_front(rec);
                    return;
                }
                _ => {}
            }
        }
        self.fetched = None;
        self.tracker.consumed(part, rec.offset);
        let source = &self.sources[si].spec.name;
        metrics::RECORDS_IN.with_label_values(&[source]).inc();
        if let Err(e) = decoded {
            metrics::DECODE_ERRORS
                .with_label_values(&[source, e.reason()])
                .inc();
            let (reason, message) = (e.reason(), e.to_string());
            self.dead_letter(si, rec, part, reason, message);
            return;
        }
        metrics::SPANS_IN
            .with_label_values(&[source])
            .inc_by(self.spans.len() as u64);
        self.spans_read += self.spans.len() as u64;
        if self.splits(si) {
            self.split(si, rec, part);
            return;
        }
        let origin = Origin {
            partition: part,
            offset: rec.offset,
        };
        let mut too_large = false;
        for span in self.spans.drain(..) {
            too_large |= self.stages.assembler.push(
                span,
                origin,
                self.now_ms,
                &mut self.tracker,
                &mut self.out,
            ) == Pushed::TooLarge;
        }
        if too_large {
            let limit = self.stages.assembler.settings().max_span_bytes;
            let message = format!("a span is larger than max_span_bytes ({limit})");
            self.dead_letter(si, rec, part, "span_too_large", message);
        }
    }

    /// Writes `rec` unchanged to its source's dead-letter topic, with headers naming why
    /// and where from; without one, counts it as undeliverable.
    pub(super) fn dead_letter(
        &mut self,
        si: usize,
        rec: Record,
        part: u32,
        reason: &str,
        error: String,
    ) {
        let Some(topic) = self.topics.dead_letters[si].clone() else {
            metrics::UNDELIVERABLE.with_label_values(&[reason]).inc();
            tracing::warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, reason, %error, "bad record skipped (no dead_letter_topic)");
            return;
        };
        let payload = rec.payload.unwrap_or_default();
        let mut headers = vec![
            ("spanline.error.reason", reason.to_string()),
            ("spanline.error.message", error),
            ("spanline.source.topic", rec.topic.to_string()),
            ("spanline.source.partition", rec.partition.to_string()),
            ("spanline.source.offset", rec.offset.to_string()),
        ];
        if self.sources[si].decoder.format() == Format::Avro {
            if let Some(id) = codec::schema_id_of(&payload) {
                headers.push(("spanline.source.schema_id", id.to_string()));
            }
        }
        self.tracker.hold(part, rec.offset);
        metrics::DEAD_LETTERED.with_label_values(&[reason]).inc();
        let mut holds = Holds::new();
        holds.push((part, rec.offset));
        self.produce_output(Produce {
            kind: OutputKind::DeadLetter,
            topic,
            partition: None,
            key: rec.key.unwrap_or_default(),
            value: payload,
            tombstone: false,
            headers,
            holds,
            epoch: 0,
        });
    }

    /// Also pushes each closed aggregate window and each alert event as
    /// [`Effect::Live`], as they are emitted (for the web UI).
    pub fn push_live(&mut self, on: bool) {
        self.live = on;
    }

    /// Runs the stages after assembly over what the assembler closed and turns what
    /// they emit into effects (after those of a deferred step).
    pub(super) fn step(&mut self) {
        self.finish_deferred();
        self.stages
            .process(&mut self.out, &mut self.emits, &*self.outputs);
        self.write_step();
    }

    /// Turns what the stages emitted in a step into effects.
    pub(super) fn write_step(&mut self) {
        // alerts first, on their own producer: they never wait for the traces' queue (a
        // stable sort, and only in the rare steps that have alerts)
        if self.emits.iter().any(|e| matches!(e, Emit::Alert(_))) {
            self.emits.sort_by_key(|e| !matches!(e, Emit::Alert(_)));
        }
        // A trace counted in aggregate windows keeps its offsets held until those
        // windows close; the aggregates and alerts of the step that closes them hold
        // them on until they are written.
        // (with changelogs, the windows' state is safe at each checkpoint instead)
        if let (Some(agg), None) = (self.stages.aggregator(), &self.checkpoints) {
            let horizon = agg.horizon_ns();
            for e in &self.emits {
                if let Emit::Trace { trace, holds, .. } = e {
                    for &(p, o) in holds {
                        self.tracker.hold(p, o);
                    }
                    self.window_holds.add(release_at(trace, horizon), holds);
                }
            }
            self.window_holds
                .take_due(agg.closed_through_ns(), &mut self.due);
        }
        let step_holds = lowest_per_partition(&self.due);
        for emit in std::mem::take(&mut self.emits) {
            let produce = self.produce(emit, &step_holds);
            if let Some(p) = produce {
                self.produce_output(p);
            }
        }
        for (p, o) in self.due.drain(..) {
            self.tracker.release(p, o);
        }
        for job in self.stages.take_training_jobs() {
            self.effects.push(Effect::Train(job));
        }
    }

    fn produce(&mut self, emit: Emit, step_holds: &Holds) -> Option<Produce> {
        let hold_step = |tracker: &mut super::OffsetTracker| {
            for &(p, o) in step_holds {
                tracker.hold(p, o);
            }
            step_holds.clone()
        };
        let (kind, topic, (key, value), holds): (_, Arc<str>, _, _) = match emit {
            Emit::Trace {
                trace,
                analysis,
                holds,
                encoded,
            } => {
                if let Some(s) = &mut self.spanmetrics {
                    let edges = analysis.as_ref().map_or(&[][..], |a| &a.edges[..]);
                    s.observe(&trace, edges);
                }
                let record = encoded.unwrap_or_else(|| {
                    self.outputs
                        .traces
                        .encoding
                        .trace(&trace, analysis.as_deref())
                });
                (OutputKind::Trace, self.topics.traces.clone(), record, holds)
            }
            Emit::Aggregate { window, encoded } => {
                if self.live {
                    let brief = LiveEvent::Window(LiveWindow::of(&window));
                    self.effects.push(Effect::Live(brief));
                }
                if let Some(s) = &mut self.spanmetrics {
                    s.observe_window(&window);
                }
                let out = self.outputs.aggregates.as_ref()?;
                let record = encoded.unwrap_or_else(|| out.encoding.aggregate(&window));
                let topic = self.topics.aggregates.clone()?;
                let holds = hold_step(&mut self.tracker);
                (OutputKind::Aggregate, topic, record, holds)
            }
            Emit::Alert(alert) => {
                metrics::ALERTS
                    .with_label_values(&[&alert.rule, &alert.severity, alert.status.as_str()])
                    .inc();
                if self.live {
                    let event = LiveEvent::Alert(Box::new(alert.clone()));
                    self.effects.push(Effect::Live(event));
                }
                let record = self
                    .outputs
                    .alerts
                    .as_ref()
                    .map(|o| o.encoding.alert(&alert));
                let topic = self.topics.alerts.clone();
                let notify = match &mut self.checkpoints {
                    Some(cp) => cp.defer_notification(alert),
                    None => Some(alert),
                };
                if let Some(alert) = notify {
                    self.effects.push(Effect::Notify(alert));
                }
                let topic = topic?;
                let holds = hold_step(&mut self.tracker);
                (OutputKind::Alert, topic, record?, holds)
            }
            Emit::Score(score) => {
                if let Some(s) = &mut self.spanmetrics {
                    s.observe_score(&score);
                }
                return None;
            }
            Emit::Late { span, origin } => {
                let out = self.outputs.late.as_ref()?;
                let record = out.encoding.span(&span);
                let topic = self.topics.late.clone()?;
                let mut holds = Holds::new();
                holds.push((origin.partition, origin.offset));
                (OutputKind::Late, topic, record, holds)
            }
        };
        Some(Produce {
            kind,
            topic,
            partition: None,
            key,
            value,
            tombstone: false,
            headers: Vec::new(),
            holds,
            epoch: 0,
        })
    }

    /// Writes an output in the current epoch.
    pub(super) fn produce_output(&mut self, mut p: Produce) {
        if let Some(cp) = &mut self.checkpoints {
            p.epoch = cp.written();
        }
        self.effects.push(Effect::Produce(p));
    }
}
