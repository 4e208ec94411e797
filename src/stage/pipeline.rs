//! The stages after assembly, run in order over every closed trace: the same code for
//! the Kafka runner and for `replay`, so both produce the same records.

use crate::model::{Alert, AnomalyScore, Span, Subject, Trace, TraceId};
use crate::stage::aggregate::WindowState;
use crate::stage::aggregate::{AggregateSettings, Aggregator, WindowAggregate};
use crate::stage::alert::{AlertEngine, AlertSettings};
use crate::stage::analyze::{analyze, Analysis, AnalyzeSettings, FindingKind, Oddities};
use crate::stage::assemble::{self, Assembler, Holds, Origin, Output};
use crate::stage::detect::{DetectSettings, Detector, TrainedModel, TrainingJob};
use crate::stage::watermark::{HopWatermarks, NO_WATERMARK};

mod beside;
pub use beside::{Encode, Encoded};

/// A record for an output topic.
#[derive(Debug)]
pub enum Emit {
    /// A closed trace, with its analysis when the pipeline analyses.
    Trace {
        trace: Trace,
        analysis: Option<Box<Analysis>>,
        holds: Holds,
        /// Its record, encoded beside the stages that read it ([`Encode`]).
        encoded: Option<Encoded>,
    },
    /// A span later than `grace`.
    Late { span: Span, origin: Origin },
    /// A closed aggregate window (boxed: it is the largest by far), with its record
    /// when it was encoded beside the stages that read it.
    Aggregate {
        window: Box<WindowAggregate>,
        encoded: Option<Encoded>,
    },
    /// An alert event.
    Alert(Alert),
    /// The anomaly score of an aggregate series' closed window.
    Score(AnomalyScore),
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

/// The settings of each stage a pipeline has; the assembler is always there.
#[derive(Debug, Clone)]
pub struct StageSettings {
    pub assemble: assemble::Settings,
    pub analyze: Option<AnalyzeSettings>,
    pub aggregate: Option<AggregateSettings>,
    pub detect: Option<DetectSettings>,
    pub alert: Option<AlertSettings>,
}

/// Assembly and the stages after it.
pub struct Stages {
    pub assembler: Assembler,
    analyze: Option<AnalyzeSettings>,
    aggregator: Option<Aggregator>,
    detector: Option<Detector>,
    alerts: Option<AlertEngine>,
    scores: Vec<AnomalyScore>,
    stats: StageStats,
    slowest: Vec<TraceDigest>,
    /// Two-phase aggregation, when several instances may count the same windows.
    two_phase: Option<TwoPhase>,
    /// How far the windows this instance counts are complete: no trace closing later
    /// has a span before it.
    bound_ns: i64,
}

/// Two-phase aggregation: the traces this instance closes are counted in `combiner`,
/// whose windows leave as partials ([`Stages::take_partials`]); the aggregator is then
/// the owner's, fed the partials of every instance ([`Stages::merge_partial`]) and
/// closing a window when every assembling partition has reported it complete.
struct TwoPhase {
    combiner: Aggregator,
    inputs: HopWatermarks,
    idle_timeout_ms: i64,
}

impl Stages {
    /// The stages `settings` names.
    pub fn new(settings: StageSettings) -> Self {
        Self {
            assembler: Assembler::new(settings.assemble),
            analyze: settings.analyze,
            aggregator: settings.aggregate.map(Aggregator::new),
            detector: settings.detect.map(Detector::new),
            alerts: settings.alert.map(AlertEngine::new),
            scores: Vec::new(),
            stats: StageStats::default(),
            slowest: Vec::new(),
            two_phase: None,
            bound_ns: NO_WATERMARK,
        }
    }

    /// Counts windows in two phases from now on (when the pipeline aggregates): see
    /// [`TwoPhase`]. `idle_timeout_ms`: how long an assembling partition may stay silent
    /// before it no longer holds the owner's windows open.
    pub fn aggregate_in_two_phases(&mut self, idle_timeout_ms: i64) {
        if let Some(agg) = &self.aggregator {
            self.two_phase = Some(TwoPhase {
                combiner: Aggregator::new(agg.settings().clone()),
                inputs: HopWatermarks::new(idle_timeout_ms),
                idle_timeout_ms,
            });
        }
    }

    /// Whether windows are counted in two phases.
    pub fn two_phase(&self) -> bool {
        self.two_phase.is_some()
    }

    /// How far the windows counted here are complete (see [`Stages::take_partials`]).
    pub fn bound_ns(&self) -> i64 {
        self.bound_ns
    }

    /// Two-phase: what this instance counted since the last call, as partial windows,
    /// each complete below [`Stages::bound_ns`].
    pub fn take_partials(&mut self) -> Vec<WindowState> {
        let bound = self.bound_ns;
        self.two_phase
            .as_mut()
            .map(|t| t.combiner.take_partials(bound))
            .unwrap_or_default()
    }

    /// Two-phase: a partial window from an assembling instance; returns the series that
    /// could not be merged (late ones included).
    pub fn merge_partial(&mut self, window: WindowState) -> usize {
        match &mut self.aggregator {
            Some(agg) => agg.merge_window(window),
            None => window.scopes.iter().map(|(_, s)| s.len()).sum(),
        }
    }

    /// Two-phase: a partition of the aggregate repartition topic was assigned at
    /// `now_ms`; `inputs` are the ids of every assembling partition that reports on it.
    pub fn assign_partials(&mut self, partition: u32, inputs: &[u64], now_ms: i64) {
        if let Some(t) = &mut self.two_phase {
            t.inputs.assign(partition, now_ms);
            for &input in inputs {
                t.inputs.expect(partition, input, now_ms);
            }
        }
    }

    /// Two-phase: a partition of the aggregate repartition topic was revoked.
    pub fn revoke_partials(&mut self, partition: u32) {
        if let Some(t) = &mut self.two_phase {
            t.inputs.revoke(partition);
        }
    }

    /// Two-phase: read on `partition` at `now_ms`, the assembling partition `input` has
    /// counted every window ending by `bound_ns`.
    pub fn partials_progress(&mut self, partition: u32, input: u64, bound_ns: i64, now_ms: i64) {
        if let Some(t) = &mut self.two_phase {
            t.inputs.progress(partition, input, bound_ns, false, now_ms);
        }
    }

    /// Two-phase: moves the owner's window watermark on at processing time `now_ms`.
    pub fn advance_partials(&mut self, now_ms: i64) {
        if let Some(t) = &mut self.two_phase {
            t.inputs.advance(now_ms);
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

    /// Forgets the open traces, windows, alert lifecycles and learnt detector state
    /// (their state is kept elsewhere).
    pub fn clear_state(&mut self) {
        self.assembler = Assembler::new(self.assembler.settings().clone());
        if let Some(agg) = &mut self.aggregator {
            *agg = Aggregator::new(agg.settings().clone());
        }
        if let Some(e) = &mut self.alerts {
            e.clear_lifecycle();
        }
        if let Some(d) = &mut self.detector {
            *d = Detector::new(d.settings().clone());
        }
        if let Some(t) = &mut self.two_phase {
            t.combiner = Aggregator::new(t.combiner.settings().clone());
            t.inputs = HopWatermarks::new(t.idle_timeout_ms);
        }
        self.bound_ns = NO_WATERMARK;
    }

    /// Notes from now on what state changes, for the changelogs.
    pub fn track_changes(&mut self) {
        self.assembler.track_changes();
        if let Some(agg) = &mut self.aggregator {
            agg.track_changes();
        }
        if let Some(d) = &mut self.detector {
            d.track_changes();
        }
    }

    /// The aggregator, to track or restore its state.
    pub fn aggregator_mut(&mut self) -> Option<&mut Aggregator> {
        self.aggregator.as_mut()
    }

    /// The detector, when the pipeline detects.
    pub fn detector(&self) -> Option<&Detector> {
        self.detector.as_ref()
    }

    /// The detector, to snapshot or restore it.
    pub fn detector_mut(&mut self) -> Option<&mut Detector> {
        self.detector.as_mut()
    }

    /// The alert engine, when the pipeline alerts.
    pub fn alerts(&self) -> Option<&AlertEngine> {
        self.alerts.as_ref()
    }

    /// The alert engine, to restore its lifecycle.
    pub fn alerts_mut(&mut self) -> Option<&mut AlertEngine> {
        self.alerts.as_mut()
    }

    /// Model trainings due: run them off the async threads, then [`Stages::install`].
    pub fn take_training_jobs(&mut self) -> Vec<TrainingJob> {
        self.detector
            .as_mut()
            .map(Detector::take_training_jobs)
            .unwrap_or_default()
    }

    /// Installs a trained model.
    pub fn install(&mut self, model: TrainedModel) {
        if let Some(d) = &mut self.detector {
            d.install(model);
        }
    }

    /// Runs the later stages over the assembler's `outputs` (drained) and appends the
    /// records to write to `emits`, closing the aggregate windows no open trace can
    /// still reach. `encode` encodes the closed traces' and windows' records while the
    /// stages read them on rayon's threads (see [`Encode`]).
    pub fn process(
        &mut self,
        outputs: &mut Vec<Output>,
        emits: &mut Vec<Emit>,
        encode: &dyn Encode,
    ) {
        let first = self.prepare(outputs, emits);
        let assembled = self.assembled_through();
        self.finish(emits, first, assembled, encode);
    }

    /// The first part of [`process`](Self::process): appends the closed traces and late
    /// spans among the assembler's `outputs` (drained) to `emits`; returns where they
    /// start there.
    pub fn prepare(&mut self, outputs: &mut Vec<Output>, emits: &mut Vec<Emit>) -> usize {
        let first = emits.len();
        emits.extend(outputs.drain(..).map(|output| match output {
            Output::Late { span, origin } => Emit::Late { span, origin },
            Output::Trace { trace, holds } => Emit::Trace {
                trace,
                analysis: None,
                holds,
                encoded: None,
            },
        }));
        first
    }

    /// Analyses the closed traces among `emits`, then counts them.
    fn analyze_all(&mut self, emits: &mut [Emit]) {
        let Some(settings) = &self.analyze else {
            return;
        };
        for e in emits.iter_mut() {
            if let Emit::Trace {
                trace, analysis, ..
            } = e
            {
                *analysis = Some(Box::new(analyze(trace, settings)));
            }
        }
        for e in emits.iter() {
            if let Emit::Trace {
                trace,
                analysis: Some(a),
                ..
            } = e
            {
                self.count(a);
                self.keep_if_slow(trace, a);
            }
        }
    }

    /// How far the windows are complete: the assembler's watermark, held back to the
    /// earliest start of an open trace (spans of open traces all start at or after it,
    /// so windows ending by then are complete; amendments arriving later are counted
    /// late).
    pub fn assembled_through(&self) -> i64 {
        let asm = &self.assembler;
        asm.watermarks()
            .current()
            .min(asm.earliest_open_start().unwrap_or(i64::MAX))
    }

    /// The rest of [`process`](Self::process), after [`prepare`](Self::prepare): the
    /// traces of `emits[first..]` are analysed and the stages read them, and the windows
    /// ending by `assembled` (as [`assembled_through`](Self::assembled_through) stood
    /// when the traces were prepared) close. It reads nothing of the assembler, so it can
    /// run on the stages [`split_off`](Self::split_off) while the assembler goes on.
    pub fn finish(
        &mut self,
        emits: &mut Vec<Emit>,
        first: usize,
        assembled: i64,
        encode: &dyn Encode,
    ) {
        self.analyze_all(&mut emits[first..]);
        self.traces_beside(&mut emits[first..], encode);
        self.bound_ns = assembled;
        // two-phase: the owner's windows close when every assembling partition says so
        let watermark = match &self.two_phase {
            Some(t) => t.inputs.current(),
            None => assembled,
        };
        let mut windows = Vec::new();
        if let Some(agg) = &mut self.aggregator {
            agg.advance(watermark, &mut windows);
        }
        self.after_windows(windows, watermark, emits, encode);
    }

    /// Moves the stages after assembly out, leaving the assembler here alone (with
    /// nothing after it); [`rejoin`](Self::rejoin) puts them back. The moved-out stages
    /// hold an empty assembler: only [`finish`](Self::finish) is for them.
    pub fn split_off(&mut self) -> Stages {
        let empty = Stages {
            assembler: Assembler::new(self.assembler.settings().clone()),
            analyze: None,
            aggregator: None,
            detector: None,
            alerts: None,
            scores: Vec::new(),
            stats: StageStats::default(),
            slowest: Vec::new(),
            two_phase: None,
            bound_ns: self.bound_ns,
        };
        let mut rest = std::mem::replace(self, empty);
        std::mem::swap(&mut self.assembler, &mut rest.assembler);
        rest
    }

    /// Puts back the stages [`split_off`](Self::split_off) moved out.
    pub fn rejoin(&mut self, mut rest: Stages) {
        std::mem::swap(&mut self.assembler, &mut rest.assembler);
        *self = rest;
    }

    /// Scores and alerts on closed windows, then emits everything in order.
    fn after_windows(
        &mut self,
        windows: Vec<WindowAggregate>,
        watermark: i64,
        emits: &mut Vec<Emit>,
        encode: &dyn Encode,
    ) {
        let mut alerts = Vec::new();
        let records = self.windows_beside(&windows, &mut alerts, encode);
        emits.extend(
            windows
                .into_iter()
                .zip(records)
                .map(|(w, encoded)| Emit::Aggregate {
                    window: Box::new(w),
                    encoded,
                }),
        );
        // the alert rules read every score; a series' score is also published
        for s in self.scores.drain(..) {
            if let Some(e) = &mut self.alerts {
                e.observe_score(&s);
            }
            if matches!(s.subject, Subject::Series { .. }) {
                emits.push(Emit::Score(s));
            }
        }
        if let Some(e) = &mut self.alerts {
            if watermark != NO_WATERMARK {
                e.advance(watermark, &mut alerts);
            }
        }
        emits.extend(alerts.into_iter().map(Emit::Alert));
    }

    fn keep_if_slow(&mut self, trace: &Trace, a: &Analysis) {
        if trace.amendment {
            return;
        }
        let full = self.slowest.len() >= SLOWEST;
        if full
            && self
                .slowest
                .last()
                .is_some_and(|d| d.duration_ns >= a.duration_ns)
        {
            return;
        }
        let root = match (&a.root_service, &a.root_name) {
            (Some(s), Some(n)) => format!("{s} {n}"),
            _ => "(no root)".to_string(),
        };
        let bottleneck = a.bottleneck.as_ref().map(|b| {
            format!(
                "{} {} ({:.0}% of the critical path)",
                b.service,
                b.name,
                b.share * 100.0
            )
        });
        let findings = a.findings.iter().map(|f| f.message.clone()).collect();
        self.slowest.push(TraceDigest {
            trace_id: trace.trace_id,
            root,
            duration_ns: a.duration_ns,
            bottleneck,
            findings,
        });
        self.slowest
            .sort_by_key(|x| std::cmp::Reverse(x.duration_ns));
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
