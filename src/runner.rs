//! The async driver: one `select!` over consumer events, delivery reports, ticks and
//! shutdown. Stage logic stays in [`crate::stage`]; this file moves data and offsets.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::codec::{self, DecodeError, Format, SpanDecoder};
use crate::config::{OutputFormat, PipelineConfig, TopicOutput};
use crate::kafka::offsets::OffsetTracker;
use crate::kafka::registry_client::RegistryClient;
use crate::kafka::sink::{dead_letter_headers, Ack, Lane, Sink, Token};
use crate::kafka::source::{Record, Source, SourceEvent};
use crate::kafka::state::StateTopic;
use crate::model::CloseReason;
use crate::output::Encoding;
use crate::sinks::AlertSinks;
use crate::snapshots;
use crate::stage::aggregate::AggregateStats;
use crate::stage::assemble::{Holds, Origin, Output, Pushed, Stats};
use crate::stage::detect::TrainedModel;
use crate::stage::pipeline::{Emit, StageStats, Stages, TraceDigest};
use crate::telemetry::http::Readiness;
use crate::telemetry::metrics;
use crate::telemetry::spanmetrics::SpanMetrics;
use tokio::sync::mpsc;

/// Why a pipeline stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("pipeline {pipeline}: kafka: {message}")]
    Kafka { pipeline: String, message: String },
    #[error("pipeline {pipeline}: {message}")]
    Registry { pipeline: String, message: String },
    #[error("pipeline {pipeline}: {message}")]
    Config { pipeline: String, message: String },
    #[error("pipeline {pipeline}: kafka did not take a record for {topic}: {message}; offsets were not committed past it, restart to re-read")]
    Delivery {
        pipeline: String,
        topic: String,
        message: String,
    },
}

/// Where the pipeline connects, after `embedded` was resolved.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub brokers: String,
    pub registry: Option<String>,
}

/// What a pipeline run reports when it stops.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The slowest analysed traces, slowest first.
    pub slowest: Vec<TraceDigest>,
}

/// Processing time in milliseconds since the epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct SourceInfo {
    name: String,
    dead_letter_topic: Option<String>,
    decoder: SpanDecoder,
}

/// Output topics, indexed by [`Token::topic`].
struct Outputs {
    topics: Vec<String>,
    traces: Encoding,
    late: Option<Encoding>,
    aggregates: Option<Encoding>,
    alerts: Option<Encoding>,
}

const TRACES: usize = 0;
const LATE: usize = 1;
const AGGREGATES: usize = 2;
const ALERTS: usize = 3;
const DEAD_LETTER: usize = 4; // and up: one per dead-letter topic

/// Maps (topic, partition) to the small integer the stages use.
#[derive(Default)]
struct Partitions {
    ids: HashMap<(Arc<str>, i32), u32>,
    names: Vec<(String, i32)>,
}

impl Partitions {
    fn id(&mut self, topic: &str, partition: i32) -> u32 {
        if let Some(id) = self.ids.get(&(Arc::from(topic), partition)) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push((topic.to_string(), partition));
        self.ids.insert((Arc::from(topic), partition), id);
        id
    }

    fn name(&self, id: u32) -> &(String, i32) {
        &self.names[id as usize]
    }
}

struct Runner {
    pipeline: String,
    sources: Vec<SourceInfo>,
    topic_source: HashMap<String, usize>,
    outputs: Outputs,
    registry: Option<RegistryClient>,
    stages: Stages,
    notify: Option<AlertSinks>,
    /// Trained models come back here from the blocking pool.
    trained: mpsc::UnboundedSender<TrainedModel>,
    spanmetrics: SpanMetrics,
    tracker: OffsetTracker,
    partitions: Partitions,
    sink: Sink,
    published: Stats,
    published_stages: StageStats,
    published_aggregates: AggregateStats,
    out: Vec<Output>,
    emits: Vec<Emit>,
    spans: Vec<crate::model::Span>,
}

/// Runs `config` until `shutdown` completes or an unrecoverable error happens.
pub async fn run(
    config: PipelineConfig,
    endpoints: Endpoints,
    ready: Readiness,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, RunError> {
    let pipeline = config.name.clone();
    metrics::init();
    let kafka_err = |e: rdkafka::error::KafkaError| RunError::Kafka {
        pipeline: pipeline.clone(),
        message: e.to_string(),
    };
    let assemble = config
        .assemble()
        .ok_or_else(|| RunError::Config {
            pipeline: pipeline.clone(),
            message: "no assemble stage".into(),
        })?
        .clone();
    let registry = match &endpoints.registry {
        Some(url) => {
            let sr = config.schema_registry.as_ref();
            let client = RegistryClient::new(
                url,
                sr.and_then(|s| s.username.as_deref()),
                sr.and_then(|s| s.password.as_deref()),
            )
            .map_err(|message| RunError::Registry {
                pipeline: pipeline.clone(),
                message,
            })?;
            Some(client)
        }
        None => None,
    };
    let register = |topic: String, key_schema: &'static str, value_schema: &'static str| {
        let registry = registry.clone();
        let pipeline = pipeline.clone();
        async move {
            let Some(r) = registry else {
                return Err(RunError::Config {
                    pipeline,
                    message: "avro outputs need schema_registry".into(),
                });
            };
            let key = r.register(&format!("{topic}-key"), key_schema).await;
            let value = r.register(&format!("{topic}-value"), value_schema).await;
            match (key, value) {
                (Ok(k), Ok(v)) => Ok(Some((k, v))),
                (Err(message), _) | (_, Err(message)) => {
                    Err(RunError::Registry { pipeline, message })
                }
            }
        }
    };
    // each output topic's encoding; Avro schemas are registered under <topic>-key/-value
    let encoding = |output: Option<TopicOutput>,
                    key_schema: &'static str,
                    value_schema: &'static str| {
        let register = &register;
        async move {
            let Some(o) = output else { return Ok(None) };
            let ids = match o.format {
                OutputFormat::Avro => register(o.topic.clone(), key_schema, value_schema).await?,
                OutputFormat::Json => None,
            };
            Ok::<_, RunError>(Some(Encoding::new(o.format, ids)))
        }
    };
    let outs = &config.outputs;
    let traces = encoding(
        Some(outs.traces.clone()),
        codec::avro::TRACE_KEY_SCHEMA,
        codec::avro::TRACE_SCHEMA,
    )
    .await?
    .expect("traces output is required");
    let late = encoding(
        outs.late.clone(),
        codec::avro::SPAN_KEY_SCHEMA,
        codec::avro::SPAN_SCHEMA,
    )
    .await?;
    let aggregates = encoding(
        outs.aggregates.clone(),
        codec::avro::AGGREGATE_KEY_SCHEMA,
        codec::avro::AGGREGATE_SCHEMA,
    )
    .await?;
    let topic_of =
        |o: &Option<TopicOutput>| o.as_ref().map(|o| o.topic.clone()).unwrap_or_default();
    let alerts = encoding(
        outs.alerts.clone(),
        codec::avro::ALERT_KEY_SCHEMA,
        codec::avro::ALERT_SCHEMA,
    )
    .await?;
    let mut topics = vec![
        outs.traces.topic.clone(),
        topic_of(&outs.late),
        topic_of(&outs.aggregates),
        topic_of(&outs.alerts),
    ];
    let mut sources = Vec::new();
    let mut topic_source = HashMap::new();
    for (i, s) in config.sources.iter().enumerate() {
        for t in &s.topics {
            topic_source.insert(t.clone(), i);
        }
        if let Some(d) = &s.dead_letter_topic {
            if !topics.contains(d) {
                topics.push(d.clone());
            }
        }
        metrics::RECORDS_IN.with_label_values(&[&s.name]);
        metrics::SPANS_IN.with_label_values(&[&s.name]);
        for reason in DecodeError::REASONS {
            metrics::DECODE_ERRORS.with_label_values(&[&s.name, reason]);
        }
        sources.push(SourceInfo {
            name: s.name.clone(),
            dead_letter_topic: s.dead_letter_topic.clone(),
            decoder: SpanDecoder::new(s.format),
        });
    }
    for t in &topics {
        if !t.is_empty() {
            metrics::PRODUCED.with_label_values(&[t]);
            metrics::PRODUCE_ERRORS.with_label_values(&[t]);
        }
    }
    let mut stages = Stages::new(&config);
    // the detectors continue from their snapshot, if there is one (never fatal), read
    // before joining the consumer group
    let snapshot_store = config.detect().and_then(|d| {
        let store = match (&d.snapshot_dir, &d.snapshot_topic) {
            (Some(dir), _) => snapshots::Store::Dir(dir.clone()),
            (None, Some(topic)) => snapshots::Store::topic(StateTopic {
                brokers: endpoints.brokers.clone(),
                properties: config.kafka.properties.clone(),
                topic: topic.clone(),
            }),
            (None, None) => return None,
        };
        Some((store, d.snapshot_every))
    });
    let mut saver = None;
    if let (Some((store, every)), Some(detector)) = (&snapshot_store, stages.detector_mut()) {
        let s = store.clone();
        let loaded = tokio::task::spawn_blocking(move || snapshots::read(&s))
            .await
            .map_err(|e| RunError::Config {
                pipeline: pipeline.clone(),
                message: format!("reading the detect snapshot: {e}"),
            })?;
        snapshots::apply(detector, store, loaded);
        saver = Some(snapshots::Saver::new(
            store.clone(),
            *every,
            std::time::Instant::now(),
        ));
    }
    let (notify, notify_task) = match &config.outputs.notify {
        Some(c) => {
            let (sinks, task) = AlertSinks::start(c.clone());
            (Some(sinks), Some(task))
        }
        None => (None, None),
    };
    let (trained_tx, mut trained_rx) = mpsc::unbounded_channel::<TrainedModel>();
    let (sink, mut acks) =
        Sink::start(&endpoints.brokers, &config.kafka.properties).map_err(kafka_err)?;
    let all_topics: Vec<String> = config
        .sources
        .iter()
        .flat_map(|s| s.topics.clone())
        .collect();
    let (source, mut events) = Source::start(
        &endpoints.brokers,
        &config.kafka.group_id,
        &config.kafka.properties,
        &all_topics,
    )
    .map_err(kafka_err)?;
    metrics::OPEN_TRACES_LIMIT.set(assemble.max_open_traces as i64);
    if let Some(alert) = config.alert() {
        // every rule's series from the start, at its first severity
        for rule in &alert.rules {
            for status in ["firing", "resolved"] {
                metrics::ALERTS.with_label_values(&[&rule.name, &rule.severity, status]);
            }
        }
    }
    let mut runner = Runner {
        pipeline: pipeline.clone(),
        sources,
        topic_source,
        outputs: Outputs {
            topics,
            traces,
            late,
            aggregates,
            alerts,
        },
        notify,
        trained: trained_tx,
        registry,
        stages,
        spanmetrics: SpanMetrics::new(
            config.aggregate().map_or(10_000, |a| a.max_series),
            config.aggregate().map_or(600_000_000_000, |a| {
                i64::try_from(a.idle_series_expiry.as_nanos()).unwrap_or(i64::MAX)
            }),
        ),
        tracker: OffsetTracker::default(),
        partitions: Partitions::default(),
        sink,
        published: Stats::default(),
        published_stages: StageStats::default(),
        published_aggregates: AggregateStats::default(),
        out: Vec::new(),
        emits: Vec::new(),
        spans: Vec::new(),
    };
    tracing::info!(pipeline = %pipeline, brokers = %endpoints.brokers, topics = ?all_topics, "pipeline started");

    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let commit_every = config.kafka.commit_interval;
    let mut last_commit = Instant::now();
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            event = events.recv() => match event {
                Some(SourceEvent::Records(records)) => {
                    if let Err(e) = runner.records(records).await { break Err(e) }
                }
                Some(SourceEvent::Assigned(parts)) => {
                    let now = wall_ms();
                    for (t, p) in &parts {
                        let id = runner.partitions.id(t, *p);
                        runner.tracker.assign(id);
                        runner.stages.assembler.assign(id, now);
                    }
                    ready.set(true);
                    tracing::info!(partitions = ?parts, "partitions assigned");
                }
                Some(SourceEvent::Revoked(parts)) => runner.revoke(&parts),
                Some(SourceEvent::Error(e)) => tracing::warn!(error = %e, "consumer error"),
                None => break Err(RunError::Kafka { pipeline: pipeline.clone(), message: "consumer stopped".into() }),
            },
            Some(ack) = acks.recv() => {
                if let Err(e) = runner.ack(ack) { break Err(e) }
            }
            Some(model) = trained_rx.recv() => runner.stages.install(model),
            _ = tick.tick() => {
                if let Err(e) = runner.advance().await { break Err(e) }
                runner.publish_gauges();
                runner.spanmetrics.expire(runner.stages.assembler.watermarks().current());
                if let (Some(s), Some(d)) = (&mut saver, runner.stages.detector()) {
                    let now = std::time::Instant::now();
                    if s.due(now) {
                        s.start(now, d.snapshot());
                    }
                }
                if last_commit.elapsed() >= commit_every {
                    runner.commit(&source, false);
                    last_commit = Instant::now();
                }
            }
        }
    };
    ready.set(false);
    // Shutdown: optionally flush open traces, wait for Kafka to take what was sent,
    // commit what is safe, leave the group.
    if result.is_ok() && assemble.flush_on_shutdown {
        runner
            .stages
            .assembler
            .flush(CloseReason::Shutdown, &mut runner.out);
        let _ = runner.emit().await;
    }
    let sink_flush = runner.sink.flush(Duration::from_secs(10));
    if let Err(e) = sink_flush {
        tracing::warn!(error = %e, "producer flush incomplete");
    }
    while let Ok(ack) = acks.try_recv() {
        let _ = runner.ack(ack);
    }
    runner.commit(&source, true);
    if let (Some(n), Some(task)) = (&runner.notify, notify_task) {
        n.shutdown(Duration::from_secs(5));
        let _ = task.await;
    }
    runner.publish_gauges();
    tokio::task::spawn_blocking(move || source.stop())
        .await
        .ok();
    // after leaving the group, so partitions move on while it is written; the learnt
    // state is sound after an error too
    if let (Some(s), Some(d)) = (saver, runner.stages.detector()) {
        s.finish(d.snapshot()).await;
    }
    tracing::info!(pipeline = %pipeline, "pipeline stopped");
    result.map(|()| RunSummary {
        slowest: runner.stages.slowest().to_vec(),
    })
}

impl Runner {
    async fn records(&mut self, records: Vec<Record>) -> Result<(), RunError> {
        let now = wall_ms();
        for rec in records {
            let part = self.partitions.id(&rec.topic, rec.partition);
            if !self.tracker.is_assigned(part) {
                // assignment events precede records; a record without one is stale
                continue;
            }
            self.tracker.consumed(part, rec.offset);
            let Some(&si) = self.topic_source.get(&*rec.topic) else {
                continue;
            };
            metrics::RECORDS_IN
                .with_label_values(&[&self.sources[si].name])
                .inc();
            let payload = rec.payload.as_deref().unwrap_or_default();
            self.spans.clear();
            let mut decoded = self.sources[si].decoder.decode(payload, &mut self.spans);
            if let Err(DecodeError::UnknownSchemaId(id)) = decoded {
                if let Some(registry) = &self.registry {
                    match registry.schema(id).await {
                        Ok(schema) => {
                            if let Err(e) = self.sources[si].decoder.avro().add_schema(id, &schema)
                            {
                                decoded = Err(e);
                            } else {
                                decoded = self.sources[si].decoder.decode(payload, &mut self.spans);
                            }
                        }
                        Err(message) => tracing::warn!(%message, "schema lookup failed"),
                    }
                }
            }
            if let Err(e) = decoded {
                metrics::DECODE_ERRORS
                    .with_label_values(&[&self.sources[si].name, e.reason()])
                    .inc();
                self.dead_letter(si, &rec, part, e.reason(), &e.to_string())
                    .await?;
                continue;
            }
            metrics::SPANS_IN
                .with_label_values(&[&self.sources[si].name])
                .inc_by(self.spans.len() as u64);
            let origin = Origin {
                partition: part,
                offset: rec.offset,
            };
            let mut too_large = false;
            for span in self.spans.drain(..) {
                too_large |=
                    self.stages
                        .assembler
                        .push(span, origin, now, &mut self.tracker, &mut self.out)
                        == Pushed::TooLarge;
            }
            if too_large {
                let limit = self.stages.assembler.settings().max_span_bytes;
                self.dead_letter(
                    si,
                    &rec,
                    part,
                    "span_too_large",
                    &format!("a span is larger than max_span_bytes ({limit})"),
                )
                .await?;
            }
        }
        self.advance().await
    }

    async fn dead_letter(
        &mut self,
        si: usize,
        rec: &Record,
        part: u32,
        reason: &str,
        error: &str,
    ) -> Result<(), RunError> {
        let payload = rec.payload.as_deref().unwrap_or_default();
        let Some(topic) = self.sources[si].dead_letter_topic.clone() else {
            metrics::UNDELIVERABLE.with_label_values(&[reason]).inc();
            tracing::warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, reason, error, "bad record skipped (no dead_letter_topic)");
            return Ok(());
        };
        let format = self.sources[si].decoder.format();
        let schema_id = if format == Format::Avro {
            codec::schema_id_of(payload)
        } else {
            None
        };
        let headers = dead_letter_headers(
            reason,
            error,
            &rec.topic,
            rec.partition,
            rec.offset,
            schema_id,
        );
        let index = self
            .outputs
            .topics
            .iter()
            .position(|t| *t == topic)
            .unwrap_or(DEAD_LETTER);
        self.tracker.hold(part, rec.offset);
        let mut holds = Holds::new();
        holds.push((part, rec.offset));
        metrics::DEAD_LETTERED.with_label_values(&[reason]).inc();
        let key = rec.key.as_deref().unwrap_or_default();
        self.sink
            .send(
                Lane::Bulk,
                &topic,
                key,
                payload,
                Some(headers),
                Token {
                    topic: index,
                    holds,
                    emitted: None,
                },
            )
            .await
            .map_err(|e| RunError::Kafka {
                pipeline: self.pipeline.clone(),
                message: format!("dead-letter to {topic}: {e}"),
            })
    }

    async fn advance(&mut self) -> Result<(), RunError> {
        self.stages.assembler.advance(wall_ms(), &mut self.out);
        self.emit().await
    }

    async fn emit(&mut self) -> Result<(), RunError> {
        // windows close inside `process`: an alert's delivery latency counts from here
        let closing = std::time::Instant::now();
        self.stages.process(&mut self.out, &mut self.emits);
        // alerts first, on their own producer: they never wait for the traces' queue (a
        // stable sort, and only in the rare steps that have alerts)
        if self.emits.iter().any(|e| matches!(e, Emit::Alert(_))) {
            self.emits.sort_by_key(|e| !matches!(e, Emit::Alert(_)));
        }
        for emit in std::mem::take(&mut self.emits) {
            let mut emitted = None;
            let (index, (key, value), holds) = match emit {
                Emit::Trace {
                    trace,
                    analysis,
                    holds,
                } => {
                    let edges = analysis.as_ref().map_or(&[][..], |a| &a.edges[..]);
                    self.spanmetrics.observe(&trace, edges);
                    (
                        TRACES,
                        self.outputs.traces.trace(&trace, analysis.as_deref()),
                        holds,
                    )
                }
                Emit::Aggregate(window) => {
                    self.spanmetrics.observe_window(&window);
                    let Some(enc) = &self.outputs.aggregates else {
                        continue;
                    };
                    // windows hold no input offsets: the traces they came from did
                    (AGGREGATES, enc.aggregate(&window), Holds::new())
                }
                Emit::Alert(alert) => {
                    metrics::ALERTS
                        .with_label_values(&[&alert.rule, &alert.severity, alert.status.as_str()])
                        .inc();
                    if let Some(n) = &self.notify {
                        n.send(std::slice::from_ref(&alert));
                    }
                    let Some(enc) = &self.outputs.alerts else {
                        continue;
                    };
                    emitted = Some(closing);
                    (ALERTS, enc.alert(&alert), Holds::new())
                }
                Emit::Late { span, origin } => {
                    let Some(enc) = &self.outputs.late else {
                        continue;
                    };
                    let mut holds = Holds::new();
                    holds.push((origin.partition, origin.offset));
                    (LATE, enc.span(&span), holds)
                }
            };
            let topic = &self.outputs.topics[index];
            let lane = if index == ALERTS {
                Lane::Urgent
            } else {
                Lane::Bulk
            };
            self.sink
                .send(
                    lane,
                    topic,
                    &key,
                    &value,
                    None,
                    Token {
                        topic: index,
                        holds,
                        emitted,
                    },
                )
                .await
                .map_err(|e| RunError::Kafka {
                    pipeline: self.pipeline.clone(),
                    message: format!("produce to {topic}: {e}"),
                })?;
        }
        for job in self.stages.take_training_jobs() {
            let trained = self.trained.clone();
            // model training is CPU-heavy: off the async threads
            tokio::task::spawn_blocking(move || {
                let _ = trained.send(job.run());
            });
        }
        let now = self.stages.assembler.stats().clone();
        metrics::publish_assembler(&self.published, &now);
        self.published = now;
        let stages = self.stages.stats().clone();
        metrics::publish_stages(&self.published_stages, &stages);
        self.published_stages = stages;
        if let Some(agg) = self.stages.aggregator() {
            let now = agg.stats().clone();
            metrics::publish_aggregates(&self.published_aggregates, &now);
            self.published_aggregates = now;
        }
        Ok(())
    }

    fn ack(&mut self, ack: Ack) -> Result<(), RunError> {
        let topic = self
            .outputs
            .topics
            .get(ack.token.topic)
            .cloned()
            .unwrap_or_default();
        if let Some(message) = ack.error {
            metrics::PRODUCE_ERRORS.with_label_values(&[&topic]).inc();
            return Err(RunError::Delivery {
                pipeline: self.pipeline.clone(),
                topic,
                message,
            });
        }
        metrics::PRODUCED.with_label_values(&[&topic]).inc();
        for (p, o) in ack.token.holds {
            self.tracker.release(p, o);
        }
        Ok(())
    }

    fn revoke(&mut self, parts: &[(String, i32)]) {
        let ids: Vec<u32> = parts
            .iter()
            .map(|(t, p)| self.partitions.id(t, *p))
            .collect();
        for id in &ids {
            self.tracker.revoke(*id);
        }
        self.stages.assembler.revoke(&ids);
        tracing::info!(partitions = ?parts, "partitions revoked; their open traces were dropped");
    }

    fn commit(&mut self, source: &Source, sync: bool) {
        let due = self.tracker.to_commit();
        if due.is_empty() {
            return;
        }
        let offsets: Vec<(String, i32, i64)> = due
            .iter()
            .map(|(id, off)| {
                let (t, p) = self.partitions.name(*id);
                (t.clone(), *p, *off)
            })
            .collect();
        let result = if sync {
            source.commit_sync(&offsets)
        } else {
            source.commit(&offsets)
        };
        match result {
            Ok(()) => {
                metrics::COMMITS.inc();
                for (id, off) in due {
                    self.tracker.committed(id, off);
                }
            }
            Err(e) => tracing::warn!(error = %e, "offset commit failed; will retry"),
        }
    }

    fn publish_gauges(&self) {
        metrics::OPEN_TRACES.set(self.stages.assembler.open_traces() as i64);
        metrics::BUFFERED_SPANS.set(self.stages.assembler.buffered_spans() as i64);
        metrics::BUFFERED_BYTES.set(self.stages.assembler.buffered_bytes() as i64);
        metrics::HELD_OFFSETS.set(self.tracker.held() as i64);
        let now_s = wall_ms() as f64 / 1000.0;
        let wm = self.stages.assembler.watermarks().current();
        if wm != crate::stage::watermark::NO_WATERMARK {
            metrics::WATERMARK.set(wm as f64 / 1e9);
        }
        for (id, pwm) in self.stages.assembler.watermarks().per_partition() {
            if pwm == crate::stage::watermark::NO_WATERMARK {
                continue;
            }
            let (t, p) = self.partitions.name(id);
            metrics::WATERMARK_LAG
                .with_label_values(&[t, &p.to_string()])
                .set(now_s - pwm as f64 / 1e9);
        }
    }
}
