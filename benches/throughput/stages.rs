//! Figures 5 to 7: the stages after assembly, over the workload's closed traces, and
//! every stage of the default pipeline driven as the runner drives them.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use spanline::config::PipelineConfig;
use spanline::driver::{Driver, DriverSettings, Effect, Event, OutputKind, OutputSpec, Outputs};
use spanline::model::{CloseReason, Edge, Span, Trace, TraceId};
use spanline::output::Encoding;
use spanline::runner::wall_ms;
use spanline::stage::aggregate::{AggregateStats, Aggregator, WindowAggregate};
use spanline::stage::analyze::analyze;

use super::common::{best_of, note, pipeline_config, POLL_BATCH, WARMUP_SPANS};

/// The workload's traces as the assembler closes them: spans grouped by trace id and
/// sorted as `Trace::sort_spans` sorts them; traces in the order of their last span's end.
pub fn workload_traces(spans: &[Span]) -> Vec<Trace> {
    let mut index: HashMap<TraceId, usize> = HashMap::with_capacity(spans.len() / 8);
    let mut traces: Vec<Trace> = Vec::new();
    for span in spans {
        let i = *index.entry(span.trace_id).or_insert_with(|| {
            traces.push(Trace {
                trace_id: span.trace_id,
                spans: Vec::new(),
                amendment: false,
                close_reason: CloseReason::Completed,
                incomplete: false,
            });
            traces.len() - 1
        });
        traces[i].spans.push(span.clone());
    }
    for trace in &mut traces {
        trace.sort_spans();
    }
    traces.sort_by_key(Trace::end_ns);
    traces
}

/// How many of the first traces hold about `spans` spans.
fn traces_holding(traces: &[Trace], spans: usize) -> usize {
    let mut seen = 0;
    traces
        .iter()
        .take_while(|t| {
            seen += t.spans.len();
            seen <= spans
        })
        .count()
        .max(1)
}

/// Figure 5: `analyze` over every trace, with the default pipeline's settings.
pub fn analyze_figure(traces: &[Trace]) -> f64 {
    let settings = pipeline_config()
        .analyze()
        .expect("an analyze stage")
        .settings();
    let warmup = traces_holding(traces, WARMUP_SPANS);
    let mut last = (0usize, 0usize, 0usize);
    let rate = best_of(|warmup_run| {
        let traces = if warmup_run {
            &traces[..warmup]
        } else {
            traces
        };
        let (mut spans, mut edges, mut findings) = (0, 0, 0);
        let started = Instant::now();
        for trace in traces {
            let analysis = analyze(black_box(trace), &settings);
            spans += trace.spans.len();
            edges += analysis.edges.len();
            findings += analysis.findings.len();
            black_box(analysis);
        }
        let secs = started.elapsed().as_secs_f64();
        last = (traces.len(), edges, findings);
        (spans, secs)
    });
    note(format_args!(
        "analyze: {} traces, {:.1} edges and {:.2} findings per trace",
        last.0,
        last.1 as f64 / last.0.max(1) as f64,
        last.2 as f64 / last.0.max(1) as f64
    ));
    rate
}

/// Traces added between two advances of the aggregator's watermark.
const ADVANCE_EVERY: usize = 100;

/// Figure 6: `Aggregator::add_trace` over every trace with its edges, with the default
/// pipeline's settings, advancing every `ADVANCE_EVERY` traces to the earliest start of
/// the traces not yet added (as `Stages` advances to the earliest open start).
pub fn aggregate_figure(traces: &[Trace]) -> f64 {
    let config = pipeline_config();
    let analyze_settings = config.analyze().expect("an analyze stage").settings();
    let settings = config.aggregate().expect("an aggregate stage").settings();
    let edges: Vec<Vec<Edge>> = traces
        .iter()
        .map(|t| analyze(t, &analyze_settings).edges)
        .collect();
    let mut watermarks = vec![i64::MAX; traces.len() + 1];
    for i in (0..traces.len()).rev() {
        watermarks[i] = watermarks[i + 1].min(traces[i].start_ns());
    }
    let warmup = traces_holding(traces, WARMUP_SPANS);
    let mut last = (0usize, AggregateStats::default());
    let rate = best_of(|warmup_run| {
        let n = if warmup_run { warmup } else { traces.len() };
        let mut aggregator = Aggregator::new(settings.clone());
        let mut out: Vec<WindowAggregate> = Vec::new();
        let (mut spans, mut emitted) = (0usize, 0usize);
        let started = Instant::now();
        for (i, trace) in traces[..n].iter().enumerate() {
            aggregator.add_trace(black_box(trace), &edges[i]);
            spans += trace.spans.len();
            if (i + 1) % ADVANCE_EVERY == 0 {
                aggregator.advance(watermarks[i + 1], &mut out);
                emitted += out.len();
                black_box(&out);
                out.clear();
            }
        }
        aggregator.flush(&mut out);
        emitted += out.len();
        black_box(&out);
        out.clear();
        let secs = started.elapsed().as_secs_f64();
        last = (emitted, aggregator.stats().clone());
        (spans, secs)
    });
    let (emitted, stats) = last;
    note(format_args!(
        "aggregate: {} windows of {:?}, {} scopes{}; {} spans and {} edges added ({} late), {} window aggregates emitted, {} calls overflowed",
        settings.windows.len(),
        settings.windows.iter().map(|w| Duration::from_nanos(w.size_ns as u64)).collect::<Vec<_>>(),
        settings.dimension_sets.len(),
        if settings.service_graph { " + service graph" } else { "" },
        stats.spans,
        stats.edges,
        stats.late_spans + stats.late_edges,
        emitted,
        stats.overflowed_calls
    ));
    rate
}

/// What the pure pipeline emitted in one run.
#[derive(Default)]
struct StagesTally {
    traces: usize,
    spans_out: usize,
    late: usize,
    aggregates: usize,
    /// Records of the stages after aggregate (alerts), if the pipeline has any.
    other: usize,
    analyzed: u64,
    open: usize,
    /// Model trainings of the detect stage asked for, models installed, and the time
    /// the training thread spent.
    trainings: usize,
    installed: usize,
    training: Duration,
    secs: f64,
}

/// The default pipeline's driver as `spanline run` builds it, outputs Avro-encoded (with
/// made-up schema ids), without Kafka: one input partition.
fn bench_driver(config: &PipelineConfig) -> Driver {
    let avro = |o: &spanline::config::TopicOutput| OutputSpec {
        topic: o.topic.clone(),
        encoding: Encoding::Avro {
            key_schema_id: 1,
            value_schema_id: 2,
        },
    };
    let outs = &config.outputs;
    let outputs = Outputs {
        traces: avro(&outs.traces),
        late: outs.late.as_ref().map(avro),
        aggregates: outs.aggregates.as_ref().map(avro),
        alerts: outs.alerts.as_ref().map(avro),
    };
    let settings = DriverSettings {
        commit_interval_ms: 1000,
        schema_registry: false,
        span_metrics: true,
        repartition: None,
        merge: None,
        changelog: None,
    };
    let mut driver = Driver::new(config, Driver::sources_of(config), outputs, settings);
    let assigned = Event::Assigned {
        partitions: vec![("spans".to_string(), 0)],
        now_ms: wall_ms(),
    };
    driver.handle(assigned).expect("assigned");
    driver
}

/// Figure 7: every stage of the default pipeline (assemble, analyze, aggregate and
/// those after them) over pre-decoded spans, driven as `runner::run` drives them,
/// without Kafka.
pub fn all_stages(spans: &[Span]) -> f64 {
    let config = pipeline_config();
    let mut last = StagesTally::default();
    let rate = best_of(|warmup| {
        let n = if warmup {
            WARMUP_SPANS.min(spans.len())
        } else {
            spans.len()
        };
        // cloned before the clock starts
        let input: Vec<Span> = spans[..n].to_vec();
        let mut input = input.into_iter();
        let mut driver = bench_driver(&config);
        let mut tally = StagesTally::default();
        let mut offset = 0i64;
        let (jobs, trainer_jobs) = std::sync::mpsc::channel();
        let (trainer_models, trained) = std::sync::mpsc::channel();
        let trainer = std::thread::spawn(move || {
            let mut busy = Duration::ZERO;
            for job in trainer_jobs {
                let started = Instant::now();
                let model = spanline::stage::detect::TrainingJob::run(job);
                busy += started.elapsed();
                if trainer_models.send(model).is_err() {
                    break;
                }
            }
            busy
        });
        let started = Instant::now();
        loop {
            let now = wall_ms();
            let mut any = false;
            // one record a span, a poll batch at a time, as the runner feeds the driver
            for span in input.by_ref().take(POLL_BATCH) {
                driver.push_spans("spans", 0, offset, [span], now);
                offset += 1;
                any = true;
            }
            driver
                .handle(Event::Tick { now_ms: wall_ms() })
                .expect("no delivery fails here");
            // as the runner does: every record acknowledged, models trained on another
            // thread and installed once trained
            for effect in driver.take_effects() {
                match effect {
                    Effect::Produce(p) => {
                        match p.kind {
                            OutputKind::Trace => tally.traces += 1,
                            OutputKind::Late => tally.late += 1,
                            OutputKind::Aggregate => tally.aggregates += 1,
                            _ => tally.other += 1,
                        }
                        black_box(&p.value);
                        let acked = Event::Acked {
                            topic: p.topic,
                            holds: p.holds,
                            epoch: p.epoch,
                            error: None,
                        };
                        driver.handle(acked).expect("acknowledged");
                    }
                    Effect::Train(job) => {
                        tally.trainings += 1;
                        let _ = jobs.send(job);
                    }
                    Effect::Commit(c) | Effect::CommitTransaction(c) => {
                        driver.handle(Event::Committed(c)).expect("committed")
                    }
                    other => {
                        black_box(&other);
                    }
                }
            }
            while let Ok(model) = trained.try_recv() {
                tally.installed += 1;
                driver.handle(Event::Trained(model)).expect("installed");
            }
            if !any {
                break;
            }
        }
        let asm = &driver.stages().assembler;
        // every span added left in a trace record, but those still buffered
        tally.spans_out = (asm.stats().spans_added as usize).saturating_sub(asm.buffered_spans());
        let secs = started.elapsed().as_secs_f64();
        drop((jobs, trained));
        tally.training = trainer.join().expect("trainer");
        tally.secs = secs;
        tally.analyzed = driver.stages().stats().analyzed;
        tally.open = driver.stages().assembler.open_traces();
        last = tally;
        drop(driver);
        (n, secs)
    });
    let stages: Vec<&str> = config.stages.iter().map(|s| s.type_name()).collect();
    note(format_args!(
        "all_stages ({}): {} spans, {} traces emitted ({} spans, {} analysed), {} late spans, {} window aggregates, {} other records, {} traces still open at the end; the detect stage asked for {} model trainings ({} installed in time), which kept a thread of their own busy {:.2} s of the run's {:.2} s",
        stages.join(" -> "),
        spans.len(),
        last.traces,
        last.spans_out,
        last.analyzed,
        last.late,
        last.aggregates,
        last.other,
        last.open,
        last.trainings,
        last.installed,
        last.training.as_secs_f64(),
        last.secs
    ));
    rate
}
