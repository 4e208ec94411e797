//! `spanline generate`: the synthetic multi-agent workload, produced to Kafka in event
//! time that follows the wall clock, with the disorder real span topics have.

use std::future::Future;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::codec::{avro, otlp, Format};
use crate::kafka::registry_client::{RegistryClient, RegistryError};
use crate::model::{hex_trace_id, Span};
use crate::runner::wall_ms;
use crate::workload::{Delivered, Delivery, DeliveryConfig, Fault, Workload, WorkloadConfig};

/// What to produce.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub brokers: String,
    pub topic: String,
    pub format: Format,
    /// Schema registry URL (Avro only).
    pub registry: Option<String>,
    /// Traces per second.
    pub rate: f64,
    pub faults: Vec<Fault>,
    pub seed: u64,
    /// Out-of-order, late, duplicate and malformed records, as real topics have.
    pub disorder: bool,
    /// Spans per OTLP message at most.
    pub batch: usize,
}

/// What was produced.
#[derive(Debug, Default, Clone)]
pub struct GenerateSummary {
    pub traces: u64,
    pub spans: u64,
    pub malformed: u64,
}

/// Why `generate` stopped early.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("kafka producer: {0}")]
    Producer(#[source] KafkaError),
    #[error("cannot reach kafka brokers {brokers}: {source}")]
    Unreachable {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic {topic} does not exist on {brokers}")]
    NoTopic { topic: String, brokers: String },
    #[error("--format avro needs --schema-registry")]
    NoRegistry,
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("kafka producer flush: {0}")]
    Flush(#[source] KafkaError),
}

/// Produces until `stop` completes.
pub async fn generate(
    opts: GenerateOptions,
    stop: impl Future<Output = ()>,
) -> Result<GenerateSummary, GenerateError> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &opts.brokers)
        .set("linger.ms", "10")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .map_err(GenerateError::Producer)?;
    let metadata = tokio::task::block_in_place(|| {
        producer
            .client()
            .fetch_metadata(Some(&opts.topic), Duration::from_secs(10))
    })
    .map_err(|source| GenerateError::Unreachable {
        brokers: opts.brokers.clone(),
        source,
    })?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()) as u32;
    if partitions == 0 {
        return Err(GenerateError::NoTopic {
            topic: opts.topic.clone(),
            brokers: opts.brokers.clone(),
        });
    }
    let schema_id = match opts.format {
        Format::Avro => {
            let url = opts.registry.as_deref().ok_or(GenerateError::NoRegistry)?;
            let client = RegistryClient::new(url, None, None)?;
            Some(
                client
                    .register(&format!("{}-value", opts.topic), avro::SPAN_SCHEMA)
                    .await?,
            )
        }
        _ => None,
    };
    let start_ns = wall_ms() * 1_000_000;
    let mut workload = Workload::new(WorkloadConfig {
        seed: opts.seed,
        traces_per_second: opts.rate,
        start_ns,
        faults: opts.faults.clone(),
    });
    let mut delivery = Delivery::new(DeliveryConfig {
        seed: opts.seed ^ 0x5eed,
        partitions,
        key_by_trace: !opts.disorder,
        shuffle_window: if opts.disorder { 64 } else { 0 },
        late_fraction: if opts.disorder { 0.001 } else { 0.0 },
        late_delay: 50_000,
        duplicate_fraction: if opts.disorder { 0.002 } else { 0.0 },
        malformed_fraction: if opts.disorder { 0.0005 } else { 0.0 },
    });
    let mut summary = GenerateSummary::default();
    // spans wait here until their end time has passed, as an exporter would send them
    let mut unfinished: Vec<Span> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let now_ns = wall_ms() * 1_000_000;
                let before = workload.traces_generated();
                workload.generate_until_into(now_ns, &mut unfinished);
                summary.traces += workload.traces_generated() - before;
                let (mut ended, rest): (Vec<Span>, Vec<Span>) = unfinished.drain(..).partition(|s| s.end_ns <= now_ns);
                unfinished = rest;
                ended.sort_by_key(|s| s.end_ns);
                let delivered = delivery.deliver(ended);
                produce(&producer, &opts, schema_id, delivered, &mut summary).await;
            }
        }
    }
    unfinished.sort_by_key(|s| s.end_ns);
    let mut rest = delivery.deliver(unfinished);
    rest.extend(delivery.drain());
    produce(&producer, &opts, schema_id, rest, &mut summary).await;
    let flushed =
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    if let Ok(Err(e)) = flushed {
        return Err(GenerateError::Flush(e));
    }
    Ok(summary)
}

async fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: u32,
    key: &[u8],
    value: &[u8],
) {
    let mut record = BaseRecord::to(topic)
        .partition(partition as i32)
        .key(key)
        .payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => {
                tracing::warn!(error = %e, "generator could not produce a record");
                return;
            }
        }
    }
}

async fn produce(
    producer: &ThreadedProducer<DefaultProducerContext>,
    opts: &GenerateOptions,
    schema_id: Option<u32>,
    delivered: Vec<Delivered>,
    summary: &mut GenerateSummary,
) {
    // OTLP messages carry many spans: group consecutive spans per partition
    let mut pending: Vec<(u32, Vec<Span>)> = Vec::new();
    let mut buf = Vec::new();
    for d in delivered {
        match d {
            Delivered::Malformed {
                partition, bytes, ..
            } => {
                summary.malformed += 1;
                send(producer, &opts.topic, partition, b"", &bytes).await;
            }
            Delivered::Span { partition, span } => {
                summary.spans += 1;
                let key = hex_trace_id(span.trace_id);
                match (opts.format, schema_id) {
                    (Format::Avro, Some(id)) => {
                        buf.clear();
                        avro::put_frame(&mut buf, id);
                        avro::write_span(&mut buf, &span);
                        send(producer, &opts.topic, partition, key.as_bytes(), &buf).await;
                    }
                    _ => match pending.iter_mut().find(|(p, _)| *p == partition) {
                        Some((_, v)) => v.push(span),
                        None => pending.push((partition, vec![span])),
                    },
                }
            }
        }
    }
    for (partition, spans) in pending {
        for chunk in spans.chunks(opts.batch.max(1)) {
            let bytes = match opts.format {
                Format::OtlpJson => otlp::encode_json(chunk),
                _ => otlp::encode_proto(chunk),
            };
            send(producer, &opts.topic, partition, b"", &bytes).await;
        }
    }
}
