//! Two-phase aggregation across instances: at every checkpoint each instance writes
//! what it counted since the last one (partial windows) to the pipeline's aggregate
//! repartition topic, then, for every partition it assembles, how far its windows are
//! complete; the owner of the topic merges the partials exactly and closes a window once
//! every assembling partition has passed it, so the group publishes one aggregate per
//! key and window, and detection and alert rules run once, on the merged series.
//!
//! The partials hold no state of their own: they are written in the epoch (with
//! exactly-once, the transaction) of the input offsets of the traces they count, so a
//! crash neither loses nor doubles them.

use std::sync::Arc;

use crate::codec::hop::{self, HopRecord, Progress};
use crate::model::{Holds, Record};
use crate::stage::aggregate::WindowState;
use crate::state::aggregate::{decode_window, encode_window};
use crate::telemetry::metrics;

use super::repartition::{input_id, Route};
use super::{Driver, OutputKind, Produce};

/// The largest number of series in one partial window record (records stay well under
/// the brokers' 1 MB default).
const SERIES_PER_RECORD: usize = 200;

/// The aggregate repartition topic of a pipeline.
#[derive(Debug, Clone)]
pub struct MergeSettings {
    pub topic: String,
    /// Every partition that assembles traces (the span repartition topic's, and those of
    /// sources keyed by trace id): the owner waits for each to report (or fall silent).
    pub inputs: Vec<(String, i32)>,
    /// How long an assembling partition may stay silent before it no longer holds the
    /// owner's windows open.
    pub idle_timeout_ms: i64,
}

/// The driver's side of two-phase aggregation.
pub(super) struct Merge {
    pub(super) topic: Arc<str>,
    pub(super) input_ids: Vec<u64>,
    interner: crate::model::Interner,
    resources: crate::codec::avro::ResourceCache,
}

impl Merge {
    pub(super) fn new(settings: &MergeSettings) -> Self {
        Self {
            topic: Arc::from(settings.topic.as_str()),
            input_ids: settings
                .inputs
                .iter()
                .map(|(t, p)| input_id(t, *p))
                .collect(),
            interner: Default::default(),
            resources: Default::default(),
        }
    }
}

impl Driver {
    /// Whether this instance writes the windows', detectors' and alert rules' state: the
    /// owner of the aggregate repartition topic's partition 0 with two-phase
    /// aggregation, else every instance (the state then lives in changelog partition 0
    /// with the owner of the inputs' partition 0).
    pub(super) fn owns_window_state(&self) -> bool {
        match &self.merge {
            Some(m) => self.partitions.live(&m.topic, 0).is_some(),
            None => true,
        }
    }

    pub(super) fn is_merge(&self, topic: &str) -> bool {
        self.merge.as_ref().is_some_and(|m| &*m.topic == topic)
    }

    /// Writes the partial windows counted since the last call, then how far they are
    /// complete for every partition this instance assembles: at each checkpoint, so they
    /// are in the epoch of the offsets of the traces they count.
    pub(super) fn flush_partials(&mut self) {
        let Some(m) = &self.merge else {
            return;
        };
        let topic = m.topic.clone();
        let assembled: Vec<u32> = self
            .partitions
            .live_ids()
            .filter(|&id| {
                let (t, _) = self.partitions.name(id);
                matches!(self.route(t), Route::Hop | Route::Direct) && !self.is_merge(t)
            })
            .collect();
        for window in self.stages.take_partials() {
            for part in split(window) {
                tracing::debug!(
                    start_ns = part.start_ns,
                    spans = spans_in(&part),
                    "partial window written"
                );
                let mut value = Vec::new();
                hop::write_window(&mut value, &encode_window(&part));
                self.produce_partial(&topic, value);
            }
        }
        if assembled.is_empty() {
            return;
        }
        let bound = self.stages.bound_ns();
        let mut reports: Vec<Progress> = assembled
            .into_iter()
            .map(|id| {
                let (t, partition) = self.partitions.name(id);
                Progress {
                    topic: t.to_string(),
                    partition,
                    watermark_ns: bound,
                    idle: false,
                }
            })
            .collect();
        reports.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let mut value = Vec::new();
        hop::write_progress(&mut value, &reports);
        self.produce_partial(&topic, value);
    }

    fn produce_partial(&mut self, topic: &Arc<str>, value: Vec<u8>) {
        self.produce_output(Produce {
            kind: OutputKind::Repartition,
            topic: topic.clone(),
            partition: Some(0),
            key: b"windows".to_vec(),
            value,
            tombstone: false,
            headers: Vec::new(),
            holds: Holds::new(),
            epoch: 0,
        });
    }

    /// Reads a record of the aggregate repartition topic: a partial window is merged, a
    /// report moves the owner's window watermark. A record that cannot be read is
    /// counted and skipped with a warning.
    pub(super) fn merge_record(&mut self, rec: Record, part: u32) {
        self.tracker.consumed(part, rec.offset);
        let Some(m) = &mut self.merge else {
            return;
        };
        let payload = rec.payload.as_deref().unwrap_or_default();
        let decoded = hop::read(payload, &mut m.interner, &mut m.resources);
        let problem = match decoded {
            Ok(HopRecord::Window(bytes)) => match decode_window(&bytes) {
                Ok(window) => {
                    tracing::debug!(
                        offset = rec.offset,
                        start_ns = window.start_ns,
                        spans = spans_in(&window),
                        "partial window merged"
                    );
                    let dropped = self.stages.merge_partial(window);
                    if dropped > 0 {
                        tracing::warn!(series = dropped, topic = %rec.topic, offset = rec.offset, "partial window series not merged (late: the window was emitted, or a scope or size this pipeline no longer has)");
                    }
                    None
                }
                Err(e) => Some(("invalid_span", e.to_string())),
            },
            Ok(HopRecord::Progress(reports)) => {
                for p in reports {
                    let input = input_id(&p.topic, p.partition);
                    self.stages
                        .partials_progress(part, input, p.watermark_ns, self.now_ms);
                }
                None
            }
            Ok(HopRecord::Spans(_)) => Some((
                "invalid_span",
                "spans on the aggregate repartition topic".into(),
            )),
            Err(e) => Some((e.reason(), e.to_string())),
        };
        if let Some((reason, error)) = problem {
            metrics::DECODE_ERRORS
                .with_label_values(&["aggregate-repartition", reason])
                .inc();
            tracing::warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, %error, "aggregate repartition record skipped");
        }
    }
}

/// The spans counted in `window` over every scope's series (for debug logs).
pub(super) fn spans_in(window: &WindowState) -> u64 {
    window
        .scopes
        .iter()
        .flat_map(|(_, series)| series.iter().map(|s| s.accum.count))
        .sum()
}

/// `window` in parts of at most [`SERIES_PER_RECORD`] series.
fn split(window: WindowState) -> Vec<WindowState> {
    let total: usize = window.scopes.iter().map(|(_, s)| s.len()).sum();
    if total <= SERIES_PER_RECORD {
        return vec![window];
    }
    let mut parts = Vec::new();
    let mut current = WindowState {
        size_ns: window.size_ns,
        start_ns: window.start_ns,
        scopes: Vec::new(),
    };
    let mut n = 0;
    for (scope, series) in window.scopes {
        for s in series {
            if n == SERIES_PER_RECORD {
                let next = WindowState {
                    size_ns: window.size_ns,
                    start_ns: window.start_ns,
                    scopes: Vec::new(),
                };
                parts.push(std::mem::replace(&mut current, next));
                n = 0;
            }
            match current.scopes.last_mut() {
                Some((name, list)) if *name == scope => list.push(s),
                _ => current.scopes.push((scope.clone(), vec![s])),
            }
            n += 1;
        }
    }
    parts.push(current);
    parts
}
