//! `spanline replay`: the same driver as live over recorded OTLP JSON lines, without
//! Kafka, at full speed in event time.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::Format;
use crate::config::PipelineConfig;
use crate::driver::{
    Driver, DriverError, DriverSettings, Effect, Event, OutputKind, OutputSpec, Outputs, Produce,
    SourceSpec,
};
use crate::model::{Alert, Record, Span};
use crate::output::Encoding;
use crate::snapshots;
use crate::stage::detect::SnapshotError;
use crate::stage::pipeline::Stages;

mod training;
use training::TrainingPool;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub lines: u64,
    pub spans: u64,
    pub traces: u64,
    pub late: u64,
    pub aggregates: u64,
    pub alerts: u64,
    pub bad_lines: u64,
}

fn open(path: &Path) -> std::io::Result<Box<dyn BufRead>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    drop(file);
    let file = File::open(path)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        ))))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

struct Writers {
    dir: PathBuf,
    files: Vec<(String, BufWriter<File>)>,
}

impl Writers {
    fn writer(&mut self, topic: &str) -> std::io::Result<&mut BufWriter<File>> {
        let idx = match self.files.iter().position(|(t, _)| t == topic) {
            Some(i) => i,
            None => {
                let f = File::create(self.dir.join(format!("{topic}.jsonl")))?;
                self.files.push((topic.to_string(), BufWriter::new(f)));
                self.files.len() - 1
            }
        };
        Ok(&mut self.files[idx].1)
    }

    fn line(&mut self, topic: &str, bytes: &[u8]) -> std::io::Result<()> {
        let w = self.writer(topic)?;
        w.write_all(bytes)?;
        w.write_all(b"\n")
    }
}

/// The name of replay's one input topic (a single partition, never idle).
const INPUT: &str = "replay";

/// What one step of a replay wrote: records in the order produced, and alert events.
#[derive(Debug, Default)]
pub struct Written {
    pub records: Vec<Produce>,
    pub alerts: Vec<Alert>,
}

impl Written {
    /// Forgets what was written.
    pub fn clear(&mut self) {
        self.records.clear();
        self.alerts.clear();
    }
}

/// A pipeline's [`Driver`] fed from recorded spans in event time, without Kafka: one
/// input partition, never idle, every record acknowledged at once, models trained on
/// worker threads, in the order asked. `replay` feeds it from files; tests feed it
/// generated spans.
pub struct Replayer {
    driver: Driver,
    offset: i64,
    /// Models training on worker threads. Those asked for while an input was handled
    /// go in, in the order asked, before the input [`TRAINING_LAG`] inputs later is
    /// handled: the models the stages use are the same on every run, and training
    /// overlaps the inputs in between.
    training: TrainingPool,
    /// The pool's [`TrainingPool::asked`] after each of the last inputs, oldest first.
    marks: VecDeque<u64>,
}

/// Inputs handled while a model trains: its job was asked for while one input was
/// handled, and the model goes in before the input this many inputs later. Larger
/// overlaps more of the training with the driver's work; the models land later in the
/// stream (in live runs they land when ready).
pub const TRAINING_LAG: usize = 4;

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the pipeline has no assemble stage")]
    NoAssemble,
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("{}: {source}", path.display())]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: line {line}: {source}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("writing replay output to {}: {source}", dir.display())]
    Output {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("saving the detect snapshot: {0}")]
    Snapshot(#[source] SnapshotError),
}

impl Replayer {
    /// The stages `config` declares, reading OTLP JSON lines, writing JSON records.
    pub fn new(config: &PipelineConfig) -> Result<Self, ReplayError> {
        if config.assemble().is_none() {
            return Err(ReplayError::NoAssemble);
        }
        let json = |topic: &str| OutputSpec {
            topic: topic.to_string(),
            encoding: Encoding::Json,
        };
        let outs = &config.outputs;
        let outputs = Outputs {
            traces: json(&outs.traces.topic),
            late: outs.late.as_ref().map(|o| json(&o.topic)),
            aggregates: outs.aggregates.as_ref().map(|o| json(&o.topic)),
            alerts: outs.alerts.as_ref().map(|o| json(&o.topic)),
        };
        let source = SourceSpec {
            name: config
                .sources
                .first()
                .map_or_else(|| INPUT.to_string(), |s| s.name.clone()),
            topics: vec![INPUT.to_string()],
            format: Format::OtlpJson,
            dead_letter_topic: config
                .sources
                .first()
                .and_then(|s| s.dead_letter_topic.clone()),
            // one process reads everything: no hop
            keyed_by_trace: true,
        };
        let settings = DriverSettings {
            commit_interval_ms: i64::MAX,
            schema_registry: false,
            span_metrics: false,
            repartition: None,
            merge: None,
            changelog: None,
        };
        let mut driver = Driver::new(config, vec![source], outputs, settings);
        // processing time is irrelevant here: one input, never idle
        let assigned = Event::Assigned {
            partitions: vec![(INPUT.to_string(), 0)],
            now_ms: 0,
        };
        driver.handle(assigned)?;
        // a step's aggregation, detection and alerting run beside the next record's
        // decoding and assembly
        driver.overlap_steps(true);
        Ok(Self {
            driver,
            offset: 0,
            training: TrainingPool::per_core(),
            marks: VecDeque::with_capacity(TRAINING_LAG + 1),
        })
    }

    /// Whether a record's step runs its aggregation, detection and alerting beside the
    /// next record's decoding and assembly (the default; the outputs are the same).
    pub fn overlap_steps(&mut self, on: bool) {
        self.driver.finish_deferred();
        self.driver.overlap_steps(on);
    }

    /// Feeds the spans of one input record.
    pub fn push(&mut self, spans: impl IntoIterator<Item = Span>, written: &mut Written) {
        self.land_training(written);
        self.offset += 1;
        self.driver.push_spans(INPUT, 0, self.offset, spans, 0);
        self.settle(written);
        self.marks.push_back(self.training.asked());
    }

    /// Feeds one input record (an OTLP JSON line); a bad one is written to the
    /// dead-letter topic, if there is one.
    pub fn push_record(&mut self, payload: Vec<u8>, written: &mut Written) {
        self.offset += 1;
        let record = Record {
            topic: Arc::from(INPUT),
            partition: 0,
            offset: self.offset,
            key: None,
            payload: Some(payload),
        };
        let records = Event::Records {
            records: vec![record],
            now_ms: 0,
        };
        self.land_training(written);
        self.handle(records, written);
        self.marks.push_back(self.training.asked());
    }

    /// End of input: event time runs out and every trace and window closes.
    pub fn finish(&mut self, written: &mut Written) {
        // the last record's step first: the models it asks for land with the rest
        self.driver.finish_deferred();
        self.settle(written);
        self.marks.clear();
        self.land(self.training.asked(), written);
        self.handle(Event::EndOfInput, written);
        while self.training.in_flight() > 0 {
            self.land(self.training.asked(), written);
        }
    }

    /// Before an input: hands the driver the models asked for [`TRAINING_LAG`] inputs
    /// ago, in the order asked.
    fn land_training(&mut self, written: &mut Written) {
        if self.marks.len() >= TRAINING_LAG {
            if let Some(mark) = self.marks.pop_front() {
                self.land(mark, written);
            }
        }
    }

    /// Hands the driver the models asked for before `mark` and not landed yet.
    fn land(&mut self, mark: u64, written: &mut Written) {
        // a training that panicked fails the replay as it would inline
        let models = self.training.drain_until(mark);
        if models.is_empty() {
            return;
        }
        for model in models {
            let _ = self.driver.handle(Event::Trained(model));
        }
        self.settle(written);
    }

    /// The driver's stages, for their statistics and state.
    pub fn stages(&self) -> &Stages {
        self.driver.stages()
    }

    /// The driver's stages, to restore state into.
    pub fn stages_mut(&mut self) -> &mut Stages {
        self.driver.stages_mut()
    }

    fn handle(&mut self, event: Event, written: &mut Written) {
        // nothing here fails: deliveries never do
        let _ = self.driver.handle(event);
        self.settle(written);
    }

    /// Carries out the driver's effects: records are taken at once, models train on
    /// worker threads (see `training`).
    fn settle(&mut self, written: &mut Written) {
        while self.driver.has_effects() {
            for effect in self.driver.take_effects() {
                let event = match effect {
                    Effect::Produce(p) => {
                        let acked = Event::Acked {
                            topic: p.topic.clone(),
                            holds: p.holds.clone(),
                            epoch: p.epoch,
                            error: None,
                        };
                        written.records.push(p);
                        acked
                    }
                    Effect::Notify(alert) => {
                        written.alerts.push(alert);
                        continue;
                    }
                    Effect::Train(job) => {
                        self.training.submit(move || job.run());
                        continue;
                    }
                    Effect::Commit(commits) | Effect::CommitTransaction(commits) => {
                        Event::Committed(commits)
                    }
                    Effect::FetchSchema { .. } | Effect::Live(_) => continue,
                };
                let _ = self.driver.handle(event);
            }
        }
    }
}

/// Replays `inputs` through the pipeline's stages and writes each output topic to
/// `<out_dir>/<topic>.jsonl`.
pub fn replay(
    config: &PipelineConfig,
    inputs: &[PathBuf],
    out_dir: &Path,
) -> Result<ReplaySummary, ReplayError> {
    // on one of rayon's threads, so that a step waiting for the stages' work on its
    // traces and windows (see `stage::pipeline`) runs some of it instead of sleeping
    rayon::scope(|_| replay_here(config, inputs, out_dir))
}

fn replay_here(
    config: &PipelineConfig,
    inputs: &[PathBuf],
    out_dir: &Path,
) -> Result<ReplaySummary, ReplayError> {
    let mut replayer = Replayer::new(config)?;
    // the detectors continue from their snapshot, if there is one (never fatal)
    if let Some(topic) = config.detect().and_then(|d| d.snapshot_topic.as_ref()) {
        tracing::warn!(%topic, "replay does not read or write detect.snapshot_topic (it has no Kafka): the detectors start from warm-up");
    }
    let snapshot_dir = config
        .detect()
        .and_then(|d| d.snapshot_dir.clone())
        .map(snapshots::Store::Dir);
    if let (Some(store), Some(detector)) = (&snapshot_dir, replayer.stages_mut().detector_mut()) {
        snapshots::apply(detector, store, snapshots::read(store));
    }
    let io = |source: std::io::Error| ReplayError::Output {
        dir: out_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(out_dir).map_err(io)?;
    let mut writers = Writers {
        dir: out_dir.to_path_buf(),
        files: Vec::new(),
    };
    // the traces file exists even when nothing closes
    writers.writer(&config.outputs.traces.topic).map_err(io)?;
    let mut summary = ReplaySummary::default();
    let mut written = Written::default();
    for input in inputs {
        let reader = open(input).map_err(|source| ReplayError::Input {
            path: input.clone(),
            source,
        })?;
        for (lineno, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| ReplayError::Line {
                path: input.clone(),
                line: lineno + 1,
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            summary.lines += 1;
            replayer.push_record(line.into_bytes(), &mut written);
            let at = (input.as_path(), lineno + 1);
            write(&mut written, &mut writers, &mut summary, Some(at)).map_err(io)?;
        }
    }
    replayer.finish(&mut written);
    write(&mut written, &mut writers, &mut summary, None).map_err(io)?;
    summary.late = replayer.stages().assembler.stats().late_routed;
    summary.spans = replayer.driver.spans_read();
    for (_, w) in &mut writers.files {
        w.flush().map_err(io)?;
    }
    // saved once, at the end: the replay asked for it, so failing to write it is an error
    if let (Some(dir), Some(detector)) = (&snapshot_dir, replayer.stages().detector()) {
        let snapshot = detector.snapshot();
        let counts = snapshot.counts();
        let bytes = snapshots::save(snapshot, dir).map_err(ReplayError::Snapshot)?;
        tracing::info!(
            dir = %dir,
            bytes,
            series = counts.series,
            root_operations = counts.root_operations,
            models = counts.models,
            "detect snapshot saved"
        );
    }
    Ok(summary)
}

/// Writes what a step wrote to the topic files; a dead letter (from the input line at
/// `at`) becomes a JSON line naming its reason, file and line.
fn write(
    written: &mut Written,
    writers: &mut Writers,
    summary: &mut ReplaySummary,
    at: Option<(&Path, usize)>,
) -> std::io::Result<()> {
    summary.alerts += written.alerts.len() as u64;
    for p in written.records.drain(..) {
        match p.kind {
            OutputKind::Trace => summary.traces += 1,
            OutputKind::Aggregate => summary.aggregates += 1,
            OutputKind::DeadLetter => {
                summary.bad_lines += 1;
                let header = |name: &str| {
                    p.headers
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| v.clone())
                };
                let record = serde_json::json!({
                    "reason": header("spanline.error.reason"),
                    "error": header("spanline.error.message"),
                    "file": at.map(|(f, _)| f.display().to_string()),
                    "line": at.map(|(_, l)| l),
                    "record": String::from_utf8_lossy(&p.value),
                });
                writers.line(&p.topic, record.to_string().as_bytes())?;
                continue;
            }
            OutputKind::Late | OutputKind::Alert => {}
            // replay keeps no changelog
            OutputKind::Changelog | OutputKind::Repartition => continue,
        }
        writers.line(&p.topic, &p.value)?;
    }
    written.clear();
    Ok(())
}
