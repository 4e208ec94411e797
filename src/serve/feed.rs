//! The repository feeder's core, without Kafka: records of the pipeline's output topics
//! in, batches stored, offsets to commit and counted drops out.
//!
//! Records are decoded as they arrive ([`Feeder::offer`]) and stored in batches
//! ([`Feeder::flush`]): one transaction per record type and batch. After a flush every
//! record offered so far is stored or dropped, so the next offset of each partition may
//! be committed (at least once: the store is idempotent, a record read twice after a
//! crash is stored once).

use std::collections::BTreeMap;

use crate::codec::records::{self, RecordReader};
use crate::codec::DecodeError;
use crate::config::{OutputFormat, PipelineConfig};
use crate::model::{Alert, WindowAggregate};
use crate::repository::{Repository, RepositoryError, TraceRecord};
use crate::stage::analyze::{analyze, AnalyzeSettings};

/// The kind of records on a topic the feeder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Traces,
    Aggregates,
    Alerts,
}

impl Kind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Traces => "traces",
            Kind::Aggregates => "aggregates",
            Kind::Alerts => "alerts",
        }
    }

    /// Every kind, for pre-registering metrics.
    pub const ALL: [Kind; 3] = [Kind::Traces, Kind::Aggregates, Kind::Alerts];
}

/// A topic the feeder reads: what it holds and how it is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedTopic {
    pub topic: String,
    pub kind: Kind,
    pub format: OutputFormat,
}

/// The pipeline's traces, aggregates and alerts topics (as its `outputs:` names them).
pub fn topics_of(config: &PipelineConfig) -> Vec<FeedTopic> {
    let o = &config.outputs;
    let mut out = vec![FeedTopic {
        topic: o.traces.topic.clone(),
        kind: Kind::Traces,
        format: o.traces.format,
    }];
    for (kind, t) in [(Kind::Aggregates, &o.aggregates), (Kind::Alerts, &o.alerts)] {
        if let Some(t) = t {
            out.push(FeedTopic {
                topic: t.topic.clone(),
                kind,
                format: t.format,
            });
        }
    }
    out
}

/// Where records are stored; [`Repository`] in production, a fake in tests.
pub trait Store {
    fn store_traces(&mut self, records: &[TraceRecord]) -> Result<(), RepositoryError>;
    fn store_windows(&mut self, windows: &[WindowAggregate]) -> Result<(), RepositoryError>;
    fn store_alerts(&mut self, alerts: &[Alert]) -> Result<(), RepositoryError>;
}

impl Store for Repository {
    fn store_traces(&mut self, records: &[TraceRecord]) -> Result<(), RepositoryError> {
        Repository::store_traces(self, records).map(drop)
    }
    fn store_windows(&mut self, windows: &[WindowAggregate]) -> Result<(), RepositoryError> {
        Repository::store_windows(self, windows)
    }
    fn store_alerts(&mut self, alerts: &[Alert]) -> Result<(), RepositoryError> {
        Repository::store_alerts(self, alerts)
    }
}

/// Records that were not stored: one undecodable record, or a whole batch the store
/// refused. The caller counts them and logs `message` with the position.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    pub kind: Kind,
    /// A metric label: a decode reason (`avro`, `json`, `empty`, ...) or a repository
    /// error reason (`full`, `corrupt`, ...).
    pub reason: &'static str,
    pub records: usize,
    /// Topic, partition and the first and last offset of the dropped records there.
    pub positions: Vec<(String, i32, i64, i64)>,
    pub message: String,
}

/// What a flush did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flushed {
    /// Records stored, by kind.
    pub stored: BTreeMap<Kind, usize>,
    pub dropped: Vec<Dropped>,
    /// (topic, partition, next offset) safe to commit.
    pub commit: Vec<(String, i32, i64)>,
}

/// Decoded records waiting for a flush, with where they came from.
struct Pending<T> {
    items: Vec<T>,
    /// (topic, partition) → (first, last) offset of the items.
    from: BTreeMap<(String, i32), (i64, i64)>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            from: BTreeMap::new(),
        }
    }
}

impl<T> Pending<T> {
    fn push(&mut self, item: T, topic: &str, partition: i32, offset: i64) {
        self.items.push(item);
        let e = self
            .from
            .entry((topic.to_string(), partition))
            .or_insert((offset, offset));
        e.0 = e.0.min(offset);
        e.1 = e.1.max(offset);
    }

    /// Stores the items; on error they become one [`Dropped`].
    fn flush(
        &mut self,
        kind: Kind,
        store: impl FnOnce(&[T]) -> Result<(), RepositoryError>,
        out: &mut Flushed,
    ) {
        if self.items.is_empty() {
            return;
        }
        let n = self.items.len();
        match store(&self.items) {
            Ok(()) => *out.stored.entry(kind).or_default() += n,
            Err(e) => out.dropped.push(Dropped {
                kind,
                reason: e.reason(),
                records: n,
                positions: self
                    .from
                    .iter()
                    .map(|((t, p), (a, b))| (t.clone(), *p, *a, *b))
                    .collect(),
                message: e.to_string(),
            }),
        }
        self.items.clear();
        self.from.clear();
    }
}

/// The feeder's state: decoders, pending batches, offsets read.
pub struct Feeder {
    topics: Vec<FeedTopic>,
    reader: RecordReader,
    analyze: AnalyzeSettings,
    batch_size: usize,
    traces: Pending<TraceRecord>,
    windows: Pending<WindowAggregate>,
    alerts: Pending<Alert>,
    /// (topic, partition) → next offset, for records offered since the last flush.
    next: BTreeMap<(String, i32), i64>,
}

impl Feeder {
    /// A feeder of `topics` that stores `batch_size` records at a time and analyses
    /// traces with `analyze` (the pipeline's analyze stage settings).
    pub fn new(topics: Vec<FeedTopic>, analyze: AnalyzeSettings, batch_size: usize) -> Self {
        Self {
            topics,
            reader: RecordReader::default(),
            analyze,
            batch_size: batch_size.max(1),
            traces: Pending::default(),
            windows: Pending::default(),
            alerts: Pending::default(),
            next: BTreeMap::new(),
        }
    }

    /// The topics to subscribe to.
    pub fn topics(&self) -> &[FeedTopic] {
        &self.topics
    }

    /// Decodes one record; an undecodable one is returned as dropped. Records of topics
    /// the feeder does not read are ignored.
    pub fn offer(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
    ) -> Option<Dropped> {
        let t = self.topics.iter().find(|t| t.topic == topic)?;
        let (kind, format) = (t.kind, t.format);
        let next = self.next.entry((topic.to_string(), partition)).or_insert(0);
        *next = (*next).max(offset + 1);
        let bytes = payload.unwrap_or_default();
        let avro = format == OutputFormat::Avro;
        let result: Result<(), DecodeError> = match kind {
            Kind::Traces => {
                let trace = if avro {
                    self.reader.trace_avro(bytes)
                } else {
                    self.reader.trace_json(bytes)
                };
                trace.map(|trace| {
                    let analysis =
                        (!trace.spans.is_empty()).then(|| analyze(&trace, &self.analyze));
                    self.traces
                        .push(TraceRecord { trace, analysis }, topic, partition, offset)
                })
            }
            Kind::Aggregates => if avro {
                records::aggregate_avro(bytes)
            } else {
                records::aggregate_json(bytes)
            }
            .map(|w| self.windows.push(w, topic, partition, offset)),
            Kind::Alerts => if avro {
                records::alert_avro(bytes)
            } else {
                records::alert_json(bytes)
            }
            .map(|a| self.alerts.push(a, topic, partition, offset)),
        };
        result.err().map(|e| Dropped {
            kind,
            reason: e.reason(),
            records: 1,
            positions: vec![(topic.to_string(), partition, offset, offset)],
            message: format!("cannot decode {} record: {e}", kind.as_str()),
        })
    }

    /// True when a batch is full and should be flushed now.
    pub fn is_full(&self) -> bool {
        self.traces.items.len() >= self.batch_size
            || self.windows.items.len() >= self.batch_size
            || self.alerts.items.len() >= self.batch_size
    }

    /// True when records were offered since the last flush.
    pub fn has_pending(&self) -> bool {
        !self.next.is_empty()
    }

    /// Stores the pending batches and returns the offsets that are now safe to commit.
    pub fn flush(&mut self, store: &mut impl Store) -> Flushed {
        let mut out = Flushed::default();
        self.traces
            .flush(Kind::Traces, |r| store.store_traces(r), &mut out);
        self.windows
            .flush(Kind::Aggregates, |w| store.store_windows(w), &mut out);
        self.alerts
            .flush(Kind::Alerts, |a| store.store_alerts(a), &mut out);
        out.commit = std::mem::take(&mut self.next)
            .into_iter()
            .map(|((t, p), o)| (t, p, o))
            .collect();
        out
    }
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;
