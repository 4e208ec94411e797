//! The stages after assembly, run in order over every closed trace: the same code for
//! the Kafka runner and for `replay`, so both produce the same records.

use crate::config::PipelineConfig;
use crate::model::{Span, Trace, TraceId};
use crate::stage::aggregate::{Aggregator, WindowAggregate};
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
    /// A closed aggregate window.
    Aggregate(WindowAggregate),
}

/// What the demo's summary says about one slow trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceDigest {
    pub trace_id: TraceId,
    pub root: String,
    pub duration_ns: i64,
    /// `service operation (share of the critical path)`.
    pub bottleneck: Option<String>,
    pub findings: Vec<String>,
}

/// How many of the slowest traces are kept.
const SLOWEST: usize = 5;

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
    aggregator: Option<Aggregator>,
    stats: StageStats,
    slowest: Vec<TraceDigest>,
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
            aggregator: config.aggregate().map(|a| Aggregator::new(a.settings())),
            stats: StageStats::default(),
            slowest: Vec::new(),
        }
    }

    /// What the stages after assembly did so far.
    pub fn stats(&self) -> &StageStats {
        &self.stats
    }

    /// The slowest analysed traces so far, slowest first.
    pub fn slowest(&self) -> &[TraceDigest] {
        &self.slowest
    }

    /// The aggregator, when the pipeline aggregates.
    pub fn aggregator(&self) -> Option<&Aggregator> {
        self.aggregator.as_ref()
    }

    /// Runs the later stages over the assembler's `outputs` (drained) and appends the
    /// records to write to `emits`, closing the aggregate windows no open trace can
    /// still reach.
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
                        self.keep_if_slow(&trace, a);
                    }
                    if let Some(agg) = &mut self.aggregator {
                        agg.add_trace(&trace, analysis.as_ref().map_or(&[], |a| &a.edges));
                    }
                    emits.push(Emit::Trace { trace, analysis, holds });
                }
            }
        }
        if let Some(agg) = &mut self.aggregator {
            // spans of open traces all start at or after their earliest start, so windows
            // ending by then are complete (amendments arriving later are counted late)
            let asm = &self.assembler;
            let watermark = asm.watermarks().current().min(asm.earliest_open_start().unwrap_or(i64::MAX));
            let mut windows = Vec::new();
            agg.advance(watermark, &mut windows);
            emits.extend(windows.into_iter().map(Emit::Aggregate));
        }
    }

    /// Closes every aggregate window (end of input).
    pub fn flush_aggregates(&mut self, emits: &mut Vec<Emit>) {
        if let Some(agg) = &mut self.aggregator {
            let mut windows = Vec::new();
            agg.flush(&mut windows);
            emits.extend(windows.into_iter().map(Emit::Aggregate));
        }
    }

    fn keep_if_slow(&mut self, trace: &Trace, a: &Analysis) {
        if trace.amendment {
            return;
        }
        let full = self.slowest.len() >= SLOWEST;
        if full && self.slowest.last().is_some_and(|d| d.duration_ns >= a.duration_ns) {
            return;
        }
        let root = match (&a.root_service, &a.root_name) {
            (Some(s), Some(n)) => format!("{s} {n}"),
            _ => "(no root)".to_string(),
        };
        let bottleneck = a
            .bottleneck
            .as_ref()
            .map(|b| format!("{} {} ({:.0}% of the critical path)", b.service, b.name, b.share * 100.0));
        let findings = a.findings.iter().map(|f| f.message.clone()).collect();
        self.slowest.push(TraceDigest { trace_id: trace.trace_id, root, duration_ns: a.duration_ns, bottleneck, findings });
        self.slowest.sort_by(|x, y| y.duration_ns.cmp(&x.duration_ns));
        self.slowest.truncate(SLOWEST);
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
