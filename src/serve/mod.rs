//! The trace repository as a service: the feeder that consumes the pipeline's traces,
//! aggregates and alerts topics into the repository, and the query API that reads it.
//! `run` and `demo` start it beside the pipeline ([`RepositoryService::start`], then
//! [`RepositoryService::router`] merged into the HTTP listener); `spanline serve` runs
//! only it.

pub mod api;
pub mod compare;
mod consumer;
pub mod events;
pub mod executions;
pub mod feed;
pub mod stats;
pub mod status;
pub mod trend;
pub mod ui;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdkafka::consumer::Consumer;
use thiserror::Error;

use crate::config::{Delivery, PipelineConfig};
use crate::repository::{Repository, RepositoryError, RetentionSettings};

/// Why the repository service could not start.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("pipeline {pipeline}: repository is disabled (repository.enabled: false)")]
    Disabled { pipeline: String },
    #[error("pipeline {pipeline}: cannot create the repository directory {path}: {source}")]
    CreateDir {
        pipeline: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pipeline {pipeline}: {source}")]
    Repository {
        pipeline: String,
        #[source]
        source: Box<RepositoryError>,
    },
    #[error("cannot start the trace repository feeder thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("pipeline {pipeline}: trace repository consumer: {doing}: {source} (check kafka.brokers and kafka.properties)")]
    Kafka {
        pipeline: String,
        doing: &'static str,
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
}

/// The running feeder and what the query API needs.
pub struct RepositoryService {
    path: PathBuf,
    analyze: crate::stage::analyze::AnalyzeSettings,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RepositoryService {
    /// Opens (or creates) the pipeline's repository and starts feeding it from the
    /// pipeline's output topics on `brokers`.
    pub fn start(config: &PipelineConfig, brokers: &str) -> Result<Self, ServeError> {
        let pipeline = config.name.clone();
        let rc = &config.repository;
        if !rc.enabled {
            return Err(ServeError::Disabled { pipeline });
        }
        let path = rc.path_for(&config.name);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ServeError::CreateDir {
                pipeline: pipeline.clone(),
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let retention = RetentionSettings {
            max_age_ns: (!rc.max_age.is_zero())
                .then(|| i64::try_from(rc.max_age.as_nanos()).unwrap_or(i64::MAX)),
            max_bytes: (rc.max_bytes > 0).then_some(rc.max_bytes),
        };
        let repo = Repository::open(&path, retention).map_err(|source| ServeError::Repository {
            pipeline: pipeline.clone(),
            source: Box::new(source),
        })?;
        let kafka_err = |doing| {
            let pipeline = pipeline.clone();
            move |source| ServeError::Kafka {
                pipeline,
                doing,
                source: Box::new(source),
            }
        };
        let mut properties = config.kafka.common();
        properties.extend(config.kafka.consumer());
        let consumer = consumer::consumer(
            brokers,
            &config.kafka.repository_group(),
            &properties,
            config.delivery == Delivery::ExactlyOnce,
        )
        .map_err(kafka_err("creating the consumer"))?;
        let analyze = config.analyze().map(|a| a.settings()).unwrap_or_default();
        let feeder = feed::Feeder::new(feed::topics_of(config), analyze.clone(), rc.batch_size);
        let topics: Vec<&str> = feeder.topics().iter().map(|t| t.topic.as_str()).collect();
        consumer
            .subscribe(&topics)
            .map_err(kafka_err("subscribing"))?;
        crate::telemetry::init();
        let stop = Arc::new(AtomicBool::new(false));
        let feed_loop = consumer::FeedLoop {
            consumer,
            feeder,
            repo,
            retention_interval: rc.retention_interval,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("repository-feed".into())
            .spawn(move || feed_loop.run())
            .map_err(ServeError::Thread)?;
        tracing::info!(path = %path.display(), "trace repository started");
        Ok(Self {
            path,
            analyze,
            stop,
            thread: Some(thread),
        })
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The query API's routes, with the bearer token from `SPANLINE_API_TOKEN`.
    pub fn router(&self) -> axum::Router {
        api::router(api::ApiState::from_env(self.path.clone()).with_analyze(self.analyze.clone()))
    }

    /// Stores and commits what was read, then stops the feeder.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for RepositoryService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
