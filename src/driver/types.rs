//! What goes in and out of the driver: its inputs and outputs, events, effects and
//! errors.

use std::sync::Arc;

use thiserror::Error;

use crate::codec::Format;
use crate::model::{Alert, Holds, LiveEvent, Record};
use crate::output::Encoding;
use crate::stage::detect::{TrainedModel, TrainingJob};

use super::{ChangelogSettings, StateRecord};

/// An input the driver reads: the records of `topics`, in `format`.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub topics: Vec<String>,
    pub format: Format,
    pub dead_letter_topic: Option<String>,
    /// The records are keyed by trace id; when not, and the driver repartitions, their
    /// spans are re-keyed through the repartition topic before they are assembled.
    pub keyed_by_trace: bool,
}

/// The pipeline's repartition topic: spans of sources not keyed by trace id are written
/// there by trace id, with the progress of the partitions they were read from.
#[derive(Debug, Clone)]
pub struct RepartitionSettings {
    pub topic: String,
    /// Its partition count: a trace's spans go to partition `hash(trace id) % partitions`.
    pub partitions: i32,
    /// Every partition of the source topics that are split onto it: a reader of a
    /// partition of the topic waits for each to report (or fall silent).
    pub inputs: Vec<(String, i32)>,
    /// The allowed out-of-orderness and idle timeout of the inputs, as the assembler's.
    pub out_of_orderness_ns: i64,
    pub idle_timeout_ms: i64,
    /// How often each input's progress is reported when it moved (and at least every
    /// quarter of the idle timeout, so readers know its writer is alive).
    pub progress_interval_ms: i64,
}

/// One output topic and how its records are encoded.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub topic: String,
    pub encoding: Encoding,
}

/// The output topics of a pipeline.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub traces: OutputSpec,
    pub late: Option<OutputSpec>,
    pub aggregates: Option<OutputSpec>,
    pub alerts: Option<OutputSpec>,
}

/// What kind of record a [`Produce`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Trace,
    Late,
    Aggregate,
    Alert,
    DeadLetter,
    /// A stage's state, on its changelog topic.
    Changelog,
    /// Spans re-keyed by trace id, or input progress, on the repartition topic.
    Repartition,
}

/// A record to write, holding the input offsets it depends on until Kafka has it.
#[derive(Debug)]
pub struct Produce {
    pub kind: OutputKind,
    pub topic: Arc<str>,
    /// The partition to write to; `None`: by the key's hash.
    pub partition: Option<i32>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Write no value: the key is deleted (changelog records).
    pub tombstone: bool,
    /// Dead letters say why and where from.
    pub headers: Vec<(&'static str, String)>,
    /// Report these back in [`Event::Acked`] once the record is written.
    pub holds: Holds,
    /// Report this back in [`Event::Acked`] too.
    pub epoch: u64,
}

/// Offsets to commit: the next offset to read per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub(super) id: u32,
}

/// What the driver asks its runner to do, in order.
#[derive(Debug)]
pub enum Effect {
    /// Write a record; report [`Event::Acked`] when Kafka took it (or did not).
    Produce(Produce),
    /// Send an alert event to the notification sinks (Alertmanager, webhooks).
    Notify(Alert),
    /// Look up a writer schema in the registry and report [`Event::Schema`]; records
    /// wait until then.
    FetchSchema { source: usize, id: u32 },
    /// Train a model off the hot path and report [`Event::Trained`].
    Train(TrainingJob),
    /// Commit these offsets and report [`Event::Committed`] when the broker took them.
    Commit(Vec<Commit>),
    /// Exactly-once: add these offsets to the open transaction (with the consumer's
    /// group metadata) and commit it; every record produced since the last one is in
    /// it. Report [`Event::Committed`] when it committed; a failed commit ends the run
    /// (the transaction is aborted, and a restart resumes from the last committed one).
    CommitTransaction(Vec<Commit>),
    /// Push a closed window or an alert event to live clients (only once
    /// [`super::Driver::push_live`] is on); nothing to report back.
    Live(LiveEvent),
}

/// What happened, as the runner saw it. Times are processing time in milliseconds.
#[derive(Debug)]
pub enum Event {
    /// Partitions were assigned to this instance.
    Assigned {
        partitions: Vec<(String, i32)>,
        now_ms: i64,
    },
    /// Partitions are being taken away: their open state is dropped (another instance
    /// reads them again from the committed offsets).
    Revoked(Vec<(String, i32)>),
    /// Records in the order they were read.
    Records { records: Vec<Record>, now_ms: i64 },
    /// The answer to [`Effect::FetchSchema`].
    Schema {
        source: usize,
        id: u32,
        schema: Result<String, String>,
    },
    /// Kafka took (or refused) a record of [`Effect::Produce`].
    Acked {
        topic: Arc<str>,
        holds: Holds,
        epoch: u64,
        error: Option<String>,
    },
    /// The latest records of a changelog's partitions, read before the partitions they
    /// follow are processed.
    Restore {
        store: crate::state::Store,
        records: Vec<StateRecord>,
    },
    /// Write these changelog records back as they were at the last checkpoint (`None`: a
    /// tombstone): they undo a checkpoint that a crash cut short.
    Repair {
        store: crate::state::Store,
        records: Vec<StateRecord>,
    },
    /// Delete every key of these changelog records instead of restoring them
    /// (`--reset-state`).
    ResetState {
        store: crate::state::Store,
        records: Vec<StateRecord>,
    },
    /// The latest records of the detect changelog of the windows' owner, read by an
    /// instance that assembles traces without owning the windows: it takes the trace
    /// models it has none of (see `Driver::wants_trace_models`).
    SeedTraceModels(Vec<StateRecord>),
    /// A model trained for [`Effect::Train`].
    Trained(TrainedModel),
    /// The broker took an [`Effect::Commit`] or committed an
    /// [`Effect::CommitTransaction`].
    Committed(Vec<Commit>),
    /// The broker refused the transaction under way (exactly-once), and it was aborted:
    /// its offsets belong to a consumer group generation that has passed, so a
    /// rebalance gave its partitions to another instance. Nothing of it is visible; the
    /// state is dropped as on a revocation, and the partitions' next owner restores it
    /// from the last committed transaction.
    TransactionRefused,
    /// Processing time passed: idle partitions, timeouts and the commit interval.
    Tick { now_ms: i64 },
    /// Commit whatever is safe now (shutdown).
    CommitNow,
    /// Close every open trace (shutdown with `flush_on_shutdown`).
    Flush,
    /// End of a finite input (replay): event time runs out, every trace and window
    /// closes.
    EndOfInput,
}

/// Why the driver cannot go on.
#[derive(Debug, Error)]
pub enum DriverError {
    #[error("kafka did not take a record for {topic}: {message}; offsets were not committed past it, restart to re-read")]
    Delivery { topic: String, message: String },
    #[error("state record at {topic} partition {partition} offset {offset} cannot be restored: {source}; run with --reset-state to start from empty state")]
    State {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: crate::state::StateError,
    },
}

/// The driver's tunables that are not stage settings.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// How often offsets are committed, in processing-time milliseconds.
    pub commit_interval_ms: i64,
    /// Whether [`Effect::FetchSchema`] can be answered (a registry is configured).
    pub schema_registry: bool,
    /// Whether to feed spanline's span metrics (`/metrics`); off for replay.
    pub span_metrics: bool,
    /// Keep the stages' state in changelog topics and commit at checkpoints.
    pub changelog: Option<ChangelogSettings>,
    /// Re-key the spans of sources not keyed by trace id through this topic (`None`:
    /// every source is assembled where it is read, as in replay).
    pub repartition: Option<RepartitionSettings>,
    /// Count windows in two phases through this topic (with changelogs and an
    /// aggregate stage; `None`: every instance publishes what it counts).
    pub merge: Option<super::MergeSettings>,
}
