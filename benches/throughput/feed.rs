//! The end-to-end figure's input, and the thread producing it while the pipeline
//! consumes it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use spanline::codec::avro;
use spanline::model::{hex_trace_id, EventsBuilder, Span, TraceId};
use spanline::workload::partition_for_trace;

use super::common::E2E_PARTITIONS;
use super::e2e::E2E_LAG;

/// The end-to-end input, Avro-encoded before any run: the workload's spans over and over,
/// each repetition later in event time than the one before and with trace ids of its own.
pub struct E2eInput {
    pub bytes: Vec<u8>,
    /// End of each record in `bytes`.
    ends: Vec<usize>,
    trace_ids: Vec<TraceId>,
}

impl E2eInput {
    pub fn new(spans: &[Span], total: usize, schema_id: u32) -> Self {
        let first = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let last = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
        // a gap of 10 s between repetitions closes every trace of the one before
        let period = last - first + 10_000_000_000;
        let mut input = Self {
            bytes: Vec::with_capacity(total * 340),
            ends: Vec::with_capacity(total),
            trace_ids: Vec::with_capacity(total),
        };
        for i in 0..total {
            let cycle = i / spans.len();
            let span = &spans[i % spans.len()];
            if cycle == 0 {
                input.push(span, schema_id);
            } else {
                input.push(&shifted(span, cycle, period), schema_id);
            }
        }
        input
    }

    fn push(&mut self, span: &Span, schema_id: u32) {
        avro::put_frame(&mut self.bytes, schema_id);
        avro::write_span(&mut self.bytes, span);
        self.ends.push(self.bytes.len());
        self.trace_ids.push(span.trace_id);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// `span` of repetition `cycle`: `cycle * period` later, its trace id changed.
fn shifted(span: &Span, cycle: usize, period: i64) -> Span {
    let shift = cycle as i64 * period;
    let mut s = span.clone();
    s.trace_id ^= (cycle as u128) << 100;
    s.start_ns += shift;
    s.end_ns += shift;
    if !s.events.is_empty() {
        let mut events = EventsBuilder::default();
        for (time, name, attributes) in span.events.iter() {
            events.push(time + shift, name, &attributes);
        }
        s.events = events.build();
    }
    s
}

/// Shared between the feeding thread and the run's shutdown future.
#[derive(Default)]
pub struct FeedState {
    /// Records handed to the producer so far.
    pub sent: AtomicU64,
    /// Set once the feeder stopped and flushed: `sent` is final.
    pub done: AtomicBool,
    /// Asks the feeder to stop.
    pub stop: AtomicBool,
}

/// What the feeding thread did in one run.
#[derive(Default)]
pub struct Feed {
    pub sent: u64,
    /// Time spent waiting on the lag bound once the pipeline was consuming.
    pub waited: Duration,
    /// Every prepared record was sent before the window ended.
    pub exhausted: bool,
}

/// Produces the records of `input` in order until asked to stop, keeping at most
/// `E2E_LAG` records produced and not yet consumed (`consumed()` counts the spans the
/// pipeline decoded): the rate follows the pipeline's, just above it.
pub fn feed(
    bootstrap: &str,
    input: &E2eInput,
    consumed: impl Fn() -> u64,
    state: &FeedState,
) -> Result<Feed, String> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    let mut fed = Feed::default();
    'records: for i in 0..input.len() {
        loop {
            if state.stop.load(Ordering::Relaxed) {
                break 'records;
            }
            let seen = consumed();
            if fed.sent < seen + E2E_LAG {
                break;
            }
            let waiting = Instant::now();
            std::thread::sleep(Duration::from_micros(500));
            if seen > 0 {
                fed.waited += waiting.elapsed();
            }
        }
        let trace_id = input.trace_ids[i];
        let key = hex_trace_id(trace_id);
        let partition = partition_for_trace(trace_id, E2E_PARTITIONS as u32) as i32;
        let mut record = BaseRecord::to("spans")
            .partition(partition)
            .key(key.as_bytes())
            .payload(input.record(i));
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    state.done.store(true, Ordering::Release);
                    return Err(format!("produce: {e}"));
                }
            }
        }
        fed.sent += 1;
        state.sent.store(fed.sent, Ordering::Release);
        fed.exhausted = i + 1 == input.len();
    }
    let flushed = producer
        .flush(Duration::from_secs(30))
        .map_err(|e| format!("flush: {e}"));
    state.done.store(true, Ordering::Release);
    flushed.map(|()| fed)
}
