//! The stages after assembly, run in order over every closed trace: the same code for
//! the Kafka runner and for `replay`, so both produce the same records.

use crate::config::PipelineConfig;
use crate::model::{Span, Trace};
use crate::stage::analyze::{analyze, Analysis, AnalyzeSettings, FindingKind, Oddities};
use crate::stage::assemble::{Assembler, Holds, Origin, Output};

/// A record for an output topic.
#[derive(Debug)]
pub enum Emit {
    /// A closed trace, with its analysis when the pipeline analyses.
    Trace {
        trace: Trace,
        analysis: Option<Box<Analysis>>,
        holds: Holds,
    },
    /// A span later than `grace`.
    Late { span: Span, origin: Origin },
}

/// Counters of the stages after assembly.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StageStats {
    pub analyzed: u64,
    /// Broken-trace oddities, indexed like [`Oddities::REASONS`].
    pub oddities: [u64; Oddities::REASONS.len()],
    /// Findings, indexed like [`FindingKind::ALL`].
    pub findings: [u64; FindingKind::ALL.len()],
}

/// Assembly and the stages after it.
pub struct Stages {
    pub assembler: Assembler,
    analyze: Option<AnalyzeSettings>,
    stats: StageStats,
}

impl Stages {
    /// The stages `config` declares.
    pub fn new(config: &PipelineConfig) -> Self {
        let assemble = config
            .assemble()
            .expect("validated pipelines have an assemble stage");
        Self {
            assembler: Assembler::new(assemble.settings(config.outputs.late.is_some())),
            analyze: config.analyze().map(|a| a.settings()),
            stats: StageStats::default(),
        }
    }

    /// What the stages after assembly did so far.
    pub fn stats(&self) -> &StageStats {
        &self.stats
    }

    /// Runs the later stages over the assembler's `outputs` (drained) and appends the
    /// records to write to `emits`.
    pub fn process(&mut self, outputs: &mut Vec<Output>, emits: &mut Vec<Emit>) {
        for output in outputs.drain(..) {
            match output {
                Output::Late { span, origin } => emits.push(Emit::Late { span, origin }),
                Output::Trace { trace, holds } => {
                    let analysis = self
                        .analyze
                        .as_ref()
                        .map(|settings| Box::new(analyze(&trace, settings)));
                    if let Some(a) = &analysis {
                        self.count(a);
                    }
                    emits.push(Emit::Trace {
                        trace,
                        analysis,
                        holds,
                    });
                }
            }
        }
    }

    fn count(&mut self, a: &Analysis) {
        self.stats.analyzed += 1;
        for (i, (_, n)) in a.oddities.labels().enumerate() {
            self.stats.oddities[i] += u64::from(n);
        }
        for f in &a.findings {
            let i = FindingKind::ALL
                .iter()
                .position(|k| *k == f.kind)
                .expect("listed");
            self.stats.findings[i] += 1;
        }
    }
}
