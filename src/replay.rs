//! `spanline replay`: the same stage code over recorded OTLP JSON lines, without Kafka,
//! at full speed in event time.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::codec::otlp::OtlpDecoder;
use crate::config::PipelineConfig;
use crate::kafka::offsets::OffsetTracker;
use crate::model::Span;
use crate::output::Encoding;
use crate::snapshots;
use crate::stage::assemble::{Origin, Output, Pushed};
use crate::stage::pipeline::{Emit, Stages};

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

/// The stages of a pipeline driven by recorded spans in event time, without Kafka: one
/// input partition, never idle, holds released at once. `replay` feeds it from files;
/// tests feed it generated spans.
pub struct Replayer {
    stages: Stages,
    tracker: OffsetTracker,
    out: Vec<Output>,
    offset: i64,
    late: u64,
}

impl Replayer {
    /// The stages `config` declares.
    pub fn new(config: &PipelineConfig) -> Result<Self, String> {
        if config.assemble().is_none() {
            return Err("the pipeline has no assemble stage".into());
        }
        let mut stages = Stages::new(config);
        let mut tracker = OffsetTracker::default();
        tracker.assign(0);
        stages.assembler.assign(0, 0);
        Ok(Self {
            stages,
            tracker,
            out: Vec::new(),
            offset: 0,
            late: 0,
        })
    }

    /// Feeds the spans of one input record; what the stages emit goes to `emits`.
    pub fn push(&mut self, spans: impl IntoIterator<Item = Span>, emits: &mut Vec<Emit>) {
        self.offset += 1;
        self.tracker.consumed(0, self.offset);
        let origin = Origin {
            partition: 0,
            offset: self.offset,
        };
        for span in spans {
            // processing time is irrelevant here: one input, never idle
            if self
                .stages
                .assembler
                .push(span, origin, 0, &mut self.tracker, &mut self.out)
                == Pushed::Late
            {
                self.late += 1;
            }
        }
        self.stages.assembler.advance(0, &mut self.out);
        self.process(emits);
    }

    /// End of input: event time runs out and every trace and window closes.
    pub fn finish(&mut self, emits: &mut Vec<Emit>) {
        self.stages.assembler.advance_to(i64::MAX, &mut self.out);
        self.process(emits);
    }

    /// Spans later than grace so far.
    pub fn late_spans(&self) -> u64 {
        self.late
    }

    /// The stages, for their statistics.
    pub fn stages(&self) -> &Stages {
        &self.stages
    }

    fn process(&mut self, emits: &mut Vec<Emit>) {
        let first = emits.len();
        self.stages.process(&mut self.out, emits);
        // replay trains inline: deterministic, and nothing else waits
        for job in self.stages.take_training_jobs() {
            self.stages.install(job.run());
        }
        // nothing waits for Kafka here: every output is acknowledged at once
        for e in &emits[first..] {
            if let Emit::Trace { holds, .. } = e {
                for (p, o) in holds {
                    self.tracker.release(*p, *o);
                }
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
) -> Result<ReplaySummary, String> {
    let mut replayer = Replayer::new(config)?;
    // the detectors continue from their snapshot, if there is one (never fatal)
    if let Some(topic) = config.detect().and_then(|d| d.snapshot_topic.as_ref()) {
        tracing::warn!(%topic, "replay does not read or write detect.snapshot_topic (it has no Kafka): the detectors start from warm-up");
    }
    let snapshot_dir = config
        .detect()
        .and_then(|d| d.snapshot_dir.clone())
        .map(snapshots::Store::Dir);
    if let (Some(store), Some(detector)) = (&snapshot_dir, replayer.stages.detector_mut()) {
        snapshots::apply(detector, store, snapshots::read(store));
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let dead_letter = config
        .sources
        .first()
        .and_then(|s| s.dead_letter_topic.clone());
    let mut writers = Writers {
        dir: out_dir.to_path_buf(),
        files: Vec::new(),
    };
    // the traces file exists even when nothing closes
    writers
        .writer(&config.outputs.traces.topic)
        .map_err(|e| e.to_string())?;
    let mut decoder = OtlpDecoder::default();
    let mut summary = ReplaySummary::default();
    let mut spans = Vec::new();
    let mut emits = Vec::new();
    let io = |e: std::io::Error| format!("writing replay output: {e}");
    for input in inputs {
        let reader = open(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
        for (lineno, line) in reader.lines().enumerate() {
            let line =
                line.map_err(|e| format!("{}: line {}: {e}", input.display(), lineno + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            summary.lines += 1;
            spans.clear();
            if let Err(e) = decoder.decode_json(line.as_bytes(), &mut spans) {
                summary.bad_lines += 1;
                if let Some(topic) = &dead_letter {
                    let record = serde_json::json!({
                        "reason": e.reason(), "error": e.to_string(),
                        "file": input.display().to_string(), "line": lineno + 1, "record": line,
                    });
                    writers
                        .line(topic, record.to_string().as_bytes())
                        .map_err(io)?;
                }
                continue;
            }
            summary.spans += spans.len() as u64;
            replayer.push(spans.drain(..), &mut emits);
            write_emits(config, &mut emits, &mut writers, &mut summary).map_err(io)?;
        }
    }
    replayer.finish(&mut emits);
    write_emits(config, &mut emits, &mut writers, &mut summary).map_err(io)?;
    summary.late = replayer.late_spans();
    for (_, w) in &mut writers.files {
        w.flush().map_err(io)?;
    }
    // saved once, at the end: the replay asked for it, so failing to write it is an error
    if let (Some(dir), Some(detector)) = (&snapshot_dir, replayer.stages.detector()) {
        let snapshot = detector.snapshot();
        let counts = snapshot.counts();
        let bytes = snapshots::save(snapshot, dir).map_err(|e| e.to_string())?;
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

fn write_emits(
    config: &PipelineConfig,
    emits: &mut Vec<Emit>,
    writers: &mut Writers,
    summary: &mut ReplaySummary,
) -> std::io::Result<()> {
    for emit in emits.drain(..) {
        match emit {
            Emit::Trace {
                trace, analysis, ..
            } => {
                summary.traces += 1;
                let (_, value) = Encoding::Json.trace(&trace, analysis.as_deref());
                writers.line(&config.outputs.traces.topic, &value)?;
            }
            Emit::Late { span, .. } => {
                if let Some(late) = &config.outputs.late {
                    writers.line(&late.topic, &Encoding::Json.span(&span).1)?;
                }
            }
            Emit::Alert(a) => {
                summary.alerts += 1;
                if let Some(out) = &config.outputs.alerts {
                    writers.line(&out.topic, &Encoding::Json.alert(&a).1)?;
                }
            }
            Emit::Aggregate(w) => {
                summary.aggregates += 1;
                if let Some(out) = &config.outputs.aggregates {
                    writers.line(&out.topic, &Encoding::Json.aggregate(&w).1)?;
                }
            }
        }
    }
    Ok(())
}
