//! The async shell around the [`Driver`]: one `select!` over consumer events, delivery
//! reports, trained models, ticks and shutdown. Every decision is the driver's; this
//! file turns Kafka into events and carries out the effects.

mod effects;
mod rejoin;
mod setup;
mod state;
mod txn;

pub use setup::MERGE_PARTITIONS;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::mpsc;

use crate::config::{Delivery, PipelineConfig};
use crate::driver::{ChangelogSettings, Driver, DriverError, DriverSettings, Event};
use rdkafka::error::KafkaError;
use rejoin::Unassigned;

use crate::kafka::admin::AdminError;
use crate::kafka::registry_client::{RegistryClient, RegistryError};
use crate::kafka::sink::{Ack, Sink};
use crate::kafka::source::{Source, SourceEvent};
use crate::kafka::state::{StateTopic, StateTopicError};
use crate::sinks::AlertSinks;
use crate::snapshots;
use crate::stage::detect::TrainedModel;
use crate::stage::pipeline::TraceDigest;
use crate::telemetry::http::Readiness;

/// Why a pipeline stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("pipeline {pipeline}: kafka: {doing}: {source}")]
    Kafka {
        pipeline: String,
        doing: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("pipeline {pipeline}: kafka: {problem}")]
    Consumer {
        pipeline: String,
        problem: &'static str,
    },
    #[error("pipeline {pipeline}: {doing}: the task stopped")]
    Task {
        pipeline: String,
        doing: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("pipeline {pipeline}: {source}")]
    Registry {
        pipeline: String,
        #[source]
        source: RegistryError,
    },
    #[error("pipeline {pipeline}: {message}")]
    Config { pipeline: String, message: String },
    #[error("pipeline {pipeline}: state: {source}")]
    Changelogs {
        pipeline: String,
        #[source]
        source: Box<AdminError>,
    },
    #[error("pipeline {pipeline}: state: {source}")]
    Restore {
        pipeline: String,
        #[source]
        source: Box<StateTopicError>,
    },
    #[error("pipeline {pipeline}: {source}")]
    Driver {
        pipeline: String,
        #[source]
        source: DriverError,
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

/// How often the driver is ticked (idle partitions, timeouts, the commit interval).
const TICK: Duration = Duration::from_millis(200);

/// Carries out the driver's effects.
struct Shell {
    pipeline: String,
    driver: Driver,
    sink: std::sync::Arc<Sink>,
    /// With exactly-once: whether a transaction is open.
    txn_open: bool,
    /// What the producer was started from: after a refused transaction the
    /// transactional one starts again, in a new epoch.
    producer_start: ProducerStart,
    /// With exactly-once: the transaction being committed, and what was produced since
    /// (it goes in the next one).
    committing: Option<txn::Committing>,
    held: Vec<crate::driver::Produce>,
    /// A refused transaction dropped every partition's state; the rebalance that moved
    /// them is expected to follow (see `rejoin.rs`).
    dropped: bool,
    source: Source,
    registry: Option<RegistryClient>,
    notify: Option<AlertSinks>,
    /// Trained models come back here from the blocking pool.
    trained: mpsc::UnboundedSender<TrainedModel>,
    /// Commit synchronously (the last commit, at shutdown).
    sync_commits: bool,
    acks: mpsc::UnboundedReceiver<Ack>,
    /// Where the changelogs are read from, when state is kept in them.
    state: Option<state::Restorer>,
    /// Live clients of closed windows and alert events (the web UI).
    live: crate::telemetry::live::Live,
}

/// Runs `config` until `shutdown` completes or an unrecoverable error happens.
pub async fn run(
    config: PipelineConfig,
    endpoints: Endpoints,
    ready: Readiness,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, RunError> {
    let pipeline = config.name.clone();
    crate::telemetry::init();
    let kafka_err = |doing: &'static str| {
        let pipeline = pipeline.clone();
        move |source: KafkaError| RunError::Kafka {
            pipeline,
            doing: doing.to_string(),
            source: Box::new(source),
        }
    };
    let assemble = config
        .assemble()
        .ok_or_else(|| RunError::Config {
            pipeline: pipeline.clone(),
            message: "no assemble stage".into(),
        })?
        .clone();
    let exactly_once = config.delivery == Delivery::ExactlyOnce;
    let registry = setup::registry(&config, endpoints.registry.as_deref())?;
    let outputs = setup::outputs(&config, registry.as_ref()).await?;
    setup::metric_series(&config, &outputs);
    let repartition = setup::repartition(&config, &endpoints).await?;
    let merge = setup::merge(&config, &endpoints, repartition.as_ref()).await?;
    let mut driver = Driver::new(
        &config,
        Driver::sources_of(&config),
        outputs,
        DriverSettings {
            commit_interval_ms: i64::try_from(config.kafka.commit_interval.as_millis())
                .unwrap_or(i64::MAX),
            schema_registry: registry.is_some(),
            span_metrics: true,
            changelog: config.kafka.changelogs.then(|| ChangelogSettings {
                group_id: config.kafka.group_id.clone(),
                exactly_once,
            }),
            repartition,
            merge,
        },
    );
    // the detectors continue from their snapshot, if there is one (never fatal), read
    // before joining the consumer group
    let snapshot_store = config.detect().and_then(|d| {
        if config.kafka.changelogs {
            if d.snapshot_dir.is_some() || d.snapshot_topic.is_some() {
                tracing::info!(
                    "the detectors' state is kept in the detect changelog; snapshot_dir and snapshot_topic serve replay only"
                );
            }
            return None;
        }
        let store = match (&d.snapshot_dir, &d.snapshot_topic) {
            (Some(dir), _) => snapshots::Store::Dir(dir.clone()),
            (None, Some(topic)) => snapshots::Store::topic(StateTopic {
                brokers: endpoints.brokers.clone(),
                properties: config.kafka.common(),
                topic: topic.clone(),
            }),
            (None, None) => return None,
        };
        Some((store, d.snapshot_every))
    });
    let mut saver = None;
    if let (Some((store, every)), Some(detector)) =
        (&snapshot_store, driver.stages_mut().detector_mut())
    {
        let s = store.clone();
        let loaded = tokio::task::spawn_blocking(move || snapshots::read(&s))
            .await
            .map_err(|source| RunError::Task {
                pipeline: pipeline.clone(),
                doing: "reading the detect snapshot",
                source,
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
    // with transactions, before the changelogs are read: initialising them aborts what a
    // crashed predecessor of this instance left open, which readers would wait for
    let transactional_id = exactly_once.then(|| config.kafka.transactional_id());
    let producer_start = ProducerStart {
        brokers: endpoints.brokers.clone(),
        properties: config.kafka.producer(),
        transactional_id: transactional_id.clone(),
    };
    let (sink, acks) = producer_start.start(&pipeline).await?;
    if let Some(id) = &transactional_id {
        tracing::info!(transactional_id = %id, "exactly-once: transactions initialised");
    }
    let restorer = if config.kafka.changelogs {
        Some(state::Restorer::prepare(&config, &endpoints, &driver).await?)
    } else {
        None
    };
    let all_topics: Vec<String> = config
        .sources
        .iter()
        .flat_map(|s| s.topics.clone())
        .chain(repartition_topic_of(&driver))
        .collect();
    let mut consumer = config.kafka.consumer();
    if exactly_once {
        // input written in transactions upstream: only what committed
        consumer
            .entry("isolation.level".into())
            .or_insert_with(|| "read_committed".into());
    }
    let (source, mut events) = Source::start(
        &endpoints.brokers,
        &config.kafka.group_id,
        &consumer,
        &all_topics,
    )
    .map_err(kafka_err("starting the consumer"))?;
    let mut shell = Shell {
        pipeline: pipeline.clone(),
        driver,
        sink: std::sync::Arc::new(sink),
        txn_open: false,
        producer_start,
        committing: None,
        held: Vec::new(),
        dropped: false,
        source,
        registry,
        notify,
        trained: trained_tx,
        sync_commits: false,
        acks,
        state: restorer,
        live: ready.live().clone(),
    };
    shell.driver.push_live(true);
    tracing::info!(pipeline = %pipeline, brokers = %endpoints.brokers, topics = ?all_topics, "pipeline started");

    let mut unassigned = Unassigned::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let result = loop {
        let step = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            event = events.recv() => match event {
                Some(SourceEvent::Records(records)) => {
                    shell.handle(Event::Records { records, now_ms: wall_ms() }).await
                }
                Some(SourceEvent::Assigned(partitions)) => {
                    tracing::info!(partitions = ?partitions, "partitions assigned");
                    unassigned.assigned(partitions.len(), std::time::Instant::now());
                    shell.assigned(partitions).await
                }
                Some(SourceEvent::Revoked(partitions, done)) => {
                    let revoked = shell.revoked(partitions).await;
                    drop(done);
                    revoked
                }
                Some(SourceEvent::Error(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    Ok(())
                }
                None => break Err(RunError::Consumer { pipeline: pipeline.clone(), problem: "the consumer stopped" }),
            },
            Some(ack) = shell.acks.recv() => shell.acked(ack).await,
            result = txn::outcome(&mut shell.committing) => shell.commit_ended(result).await,
            Some(model) = trained_rx.recv() => shell.handle(Event::Trained(model)).await,
            _ = tick.tick() => {
                let step = shell.handle(Event::Tick { now_ms: wall_ms() }).await;
                if unassigned.due(std::time::Instant::now()) {
                    tracing::warn!("no partitions assigned for a while; joining the consumer group again");
                    // on a thread of its own: leaving revokes the partitions, and the
                    // revocation waits for this loop to release them
                    let rejoin = shell.source.rejoin();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = rejoin.run() {
                            tracing::warn!(error = %e, "rejoining the consumer group failed");
                        }
                    });
                }
                if let Some(q) = ready.executions().wanted() {
                    let limit = q.limit.min(crate::telemetry::executions::MAX_LIMIT);
                    let asm = &shell.driver.stages().assembler;
                    ready.executions().publish(asm.running(limit, q.service.as_deref(), wall_ms()));
                }
                if let (Some(s), Some(d)) = (&mut saver, shell.driver.stages().detector()) {
                    let now = std::time::Instant::now();
                    if s.due(now) {
                        s.start(now, d.snapshot());
                    }
                }
                step
            }
        };
        if let Err(e) = step {
            break Err(e);
        }
        if std::mem::take(&mut shell.dropped) {
            // if no rebalance follows, the group is joined again soon
            unassigned.refused(std::time::Instant::now());
        }
        ready.set(shell.driver.owns_partitions());
    };
    ready.set(false);
    // Shutdown: optionally flush open traces, wait for Kafka to take what was sent,
    // commit what is safe, leave the group.
    if result.is_ok() && assemble.flush_on_shutdown {
        let _ = shell.handle(Event::Flush).await;
    }
    shell.sync_commits = true;
    let _ = shell.settle(Duration::from_secs(10)).await;
    if let (Some(n), Some(task)) = (&shell.notify, notify_task) {
        n.shutdown(Duration::from_secs(5));
        let _ = task.await;
    }
    shell.driver.publish_metrics();
    let Shell { driver, source, .. } = shell;
    // leaving the group revokes the partitions: nobody waits for that any more
    drop(events);
    tokio::task::spawn_blocking(move || source.stop())
        .await
        .ok();
    // after leaving the group, so partitions move on while it is written; the learnt
    // state is sound after an error too
    if let (Some(s), Some(d)) = (saver, driver.stages().detector()) {
        s.finish(d.snapshot()).await;
    }
    tracing::info!(pipeline = %pipeline, "pipeline stopped");
    result.map(|()| RunSummary {
        slowest: driver.slowest().to_vec(),
    })
}

/// What a pipeline's producer is started from.
struct ProducerStart {
    brokers: String,
    properties: std::collections::BTreeMap<String, String>,
    transactional_id: Option<String>,
}

impl ProducerStart {
    /// Starts the producer (with a transactional id: initialises its transactions, which
    /// aborts what an earlier producer of that id left open).
    async fn start(
        &self,
        pipeline: &str,
    ) -> Result<(Sink, mpsc::UnboundedReceiver<Ack>), RunError> {
        const DOING: &str = "starting the producers";
        let (brokers, properties) = (self.brokers.clone(), self.properties.clone());
        let id = self.transactional_id.clone();
        tokio::task::spawn_blocking(move || Sink::start(&brokers, &properties, id.as_deref()))
            .await
            .map_err(|source| RunError::Task {
                pipeline: pipeline.to_string(),
                doing: DOING,
                source,
            })?
            .map_err(|source| RunError::Kafka {
                pipeline: pipeline.to_string(),
                doing: DOING.to_string(),
                source: Box::new(source),
            })
    }
}

/// The internal topics the consumer reads besides the sources.
fn repartition_topic_of(driver: &Driver) -> Vec<String> {
    [driver.repartition_topic(), driver.merge_topic()]
        .into_iter()
        .flatten()
        .map(str::to_string)
        .collect()
}
