//! `spanline replay`: the same stage code over recorded OTLP JSON lines, without Kafka,
//! at full speed in event time.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::codec::otlp::OtlpDecoder;
use crate::config::PipelineConfig;
use crate::kafka::offsets::OffsetTracker;
use crate::output::Encoding;
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

/// Replays `inputs` through the pipeline's stages and writes each output topic to
/// `<out_dir>/<topic>.jsonl`.
pub fn replay(
    config: &PipelineConfig,
    inputs: &[PathBuf],
    out_dir: &Path,
) -> Result<ReplaySummary, String> {
    if config.assemble().is_none() {
        return Err("the pipeline has no assemble stage".into());
    }
    std::fs::create_dir_all(out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let late_topic = config.outputs.late.as_ref().map(|l| l.topic.clone());
    let dead_letter = config.sources.first().and_then(|s| s.dead_letter_topic.clone());
    let mut stages = Stages::new(config);
    let mut tracker = OffsetTracker::default();
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
    let mut out = Vec::new();
    let io = |e: std::io::Error| format!("writing replay output: {e}");
    tracker.assign(0);
    stages.assembler.assign(0, 0);
    for input in inputs {
        let reader = open(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
        for (lineno, line) in reader.lines().enumerate() {
            let line =
                line.map_err(|e| format!("{}: line {}: {e}", input.display(), lineno + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            summary.lines += 1;
            let offset = summary.lines as i64;
            tracker.consumed(0, offset);
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
            for span in spans.drain(..) {
                // processing time is irrelevant here: one input, never idle
                if stages.assembler.push(
                    span,
                    Origin {
                        partition: 0,
                        offset,
                    },
                    0,
                    &mut tracker,
                    &mut out,
                ) == Pushed::Late
                {
                    summary.late += 1;
                }
            }
            stages.assembler.advance(0, &mut out);
            write_outputs(
                &mut stages,
                config,
                late_topic.as_deref(),
                &mut out,
                &mut writers,
                &mut summary,
            )
            .map_err(io)?;
        }
    }
    // end of input: event time runs out, every trace closes for its own reason
    stages.assembler.advance_to(i64::MAX, &mut out);
    write_outputs(
        &mut stages,
        config,
        late_topic.as_deref(),
        &mut out,
        &mut writers,
        &mut summary,
    )
    .map_err(io)?;
    for (_, w) in &mut writers.files {
        w.flush().map_err(io)?;
    }
    Ok(summary)
}

fn write_outputs(
    stages: &mut Stages,
    config: &PipelineConfig,
    late_topic: Option<&str>,
    out: &mut Vec<Output>,
    writers: &mut Writers,
    summary: &mut ReplaySummary,
) -> std::io::Result<()> {
    let mut emits = Vec::new();
    stages.process(out, &mut emits);
    for emit in emits {
        match emit {
            Emit::Trace {
                trace, analysis, ..
            } => {
                summary.traces += 1;
                let (_, value) = Encoding::Json.trace(&trace, analysis.as_deref());
                writers.line(&config.outputs.traces.topic, &value)?;
            }
            Emit::Late { span, .. } => {
                if let Some(t) = late_topic {
                    writers.line(t, &Encoding::Json.span(&span).1)?;
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
