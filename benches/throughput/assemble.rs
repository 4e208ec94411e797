//! Figures 1 to 3: the assembly stage as the runner drives it, over pre-decoded spans
//! and over records of one format, decoded on the way.

use std::hint::black_box;
use std::time::Instant;

use spanline::codec::SpanDecoder;
use spanline::driver::offsets::OffsetTracker;
use spanline::model::Span;
use spanline::runner::wall_ms;
use spanline::stage::assemble::{Assembler, Origin, Output, Settings};

use super::common::{best_of, note, OTLP_BATCH, PIPELINE, POLL_BATCH, WARMUP_SPANS};

// ---------------------------------------------------------------------------------------
// The assembly stage as the runner drives it.

pub struct Stage {
    pub assembler: Assembler,
    tracker: OffsetTracker,
    out: Vec<Output>,
    pub traces: usize,
    spans_out: usize,
}

impl Stage {
    pub fn new(settings: Settings) -> Self {
        let mut assembler = Assembler::new(settings);
        let mut tracker = OffsetTracker::default();
        tracker.assign(0);
        assembler.assign(0, wall_ms());
        Self {
            assembler,
            tracker,
            out: Vec::new(),
            traces: 0,
            spans_out: 0,
        }
    }

    #[inline]
    pub fn consumed(&mut self, offset: i64) {
        self.tracker.consumed(0, offset);
    }

    #[inline]
    pub fn push(&mut self, span: Span, offset: i64, now_ms: i64) {
        let pushed = self.assembler.push(
            span,
            Origin {
                partition: 0,
                offset,
            },
            now_ms,
            &mut self.tracker,
            &mut self.out,
        );
        black_box(pushed);
    }

    /// End of a poll batch: advance, emit, and release the holds as the acks would.
    pub fn advance(&mut self) {
        self.assembler.advance(wall_ms(), &mut self.out);
        for output in self.out.drain(..) {
            match output {
                Output::Trace { trace, holds } => {
                    for (p, o) in holds {
                        self.tracker.release(p, o);
                    }
                    self.traces += 1;
                    self.spans_out += trace.spans.len();
                    black_box(&trace);
                }
                Output::Late { span, origin } => {
                    self.tracker.release(origin.partition, origin.offset);
                    black_box(&span);
                }
            }
        }
    }
}

fn pipeline_settings() -> Settings {
    let config = spanline::config::load_str(PIPELINE, |_| None)
        .expect("pipelines/trace-analytics.yaml is valid");
    config
        .assemble()
        .expect("an assemble stage")
        .settings(config.outputs.late.is_some())
}

/// Settings under which nothing closes: every pushed span stays buffered.
pub fn keep_open_settings() -> Settings {
    const DAY: i64 = 86_400 * 1_000_000_000;
    Settings {
        idle_gap_ns: 10_000 * DAY,
        max_duration_ns: 20_000 * DAY,
        grace_ns: DAY,
        max_open_traces: usize::MAX,
        max_spans_per_trace: usize::MAX,
        ..pipeline_settings()
    }
}

/// Figure 1: push + advance over pre-decoded spans.
pub fn assemble_core(spans: &[Span]) -> f64 {
    let settings = pipeline_settings();
    let mut last = (0, 0, 0);
    let rate = best_of(|warmup| {
        let n = if warmup {
            WARMUP_SPANS.min(spans.len())
        } else {
            spans.len()
        };
        let input: Vec<Span> = spans[..n].to_vec();
        let mut stage = Stage::new(settings.clone());
        let mut offset = 0i64;
        let mut input = input.into_iter();
        let started = Instant::now();
        loop {
            let now = wall_ms();
            let mut any = false;
            for span in input.by_ref().take(POLL_BATCH) {
                stage.consumed(offset);
                stage.push(span, offset, now);
                offset += 1;
                any = true;
            }
            stage.advance();
            if !any {
                break;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        last = (stage.traces, stage.spans_out, stage.assembler.open_traces());
        drop(stage);
        (n, secs)
    });
    note(format_args!(
        "assemble_core: {} spans, {} traces emitted ({} spans), {} traces still open at the end",
        spans.len(),
        last.0,
        last.1,
        last.2
    ));
    rate
}

/// Figures 2 and 3: decode records of one format and assemble their spans.
pub fn decode_assemble(
    records: &[Vec<u8>],
    spans_total: usize,
    spans_warmup: usize,
    make: impl Fn() -> SpanDecoder,
) -> f64 {
    let settings = pipeline_settings();
    let per_record = spans_total.div_ceil(records.len()).max(1);
    let warmup_records = spans_warmup.div_ceil(per_record).min(records.len());
    best_of(|warmup| {
        let records = if warmup {
            &records[..warmup_records]
        } else {
            records
        };
        let mut decoder = make();
        let mut stage = Stage::new(settings.clone());
        let mut spans: Vec<Span> = Vec::with_capacity(OTLP_BATCH);
        let mut decoded = 0usize;
        let started = Instant::now();
        for (b, batch) in records.chunks(POLL_BATCH).enumerate() {
            let now = wall_ms();
            for (i, record) in batch.iter().enumerate() {
                let offset = (b * POLL_BATCH + i) as i64;
                stage.consumed(offset);
                spans.clear();
                decoder
                    .decode(black_box(record), &mut spans)
                    .expect("record decodes");
                decoded += spans.len();
                for span in spans.drain(..) {
                    stage.push(span, offset, now);
                }
            }
            stage.advance();
        }
        let secs = started.elapsed().as_secs_f64();
        drop(stage);
        (decoded, secs)
    })
}
