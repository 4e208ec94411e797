//! The trace repository beside a pipeline (`run`, `demo`) and on its own (`serve`).

use std::path::Path;

use spanline::config::PipelineConfig;
use spanline::serve::status::Status;
use spanline::serve::RepositoryService;
use spanline::telemetry::{self, http::Readiness};

use crate::CliError;

/// Starts the repository and its query API beside the pipeline when the pipeline has
/// it enabled. A repository that cannot start is a warning: the pipeline runs without.
pub fn start_beside(config: &PipelineConfig, brokers: &str) -> Option<RepositoryService> {
    if !config.repository.enabled {
        return None;
    }
    match RepositoryService::start(config, brokers) {
        Ok(service) => Some(service),
        Err(e) => {
            tracing::warn!(error = %e, "running without the trace repository and query api");
            None
        }
    }
}

/// The web UI, the query API's routes (none without a repository), the pipeline's
/// running executions (`/api/spanline/executions`, answered by the pipeline `ready`
/// belongs to) and its live events (`/api/spanline/events`).
pub fn routes(
    service: &Option<RepositoryService>,
    ready: &spanline::telemetry::http::Readiness,
) -> axum::Router {
    service
        .as_ref()
        .map(RepositoryService::router)
        .unwrap_or_default()
        .merge(spanline::serve::executions::router(
            ready.executions().clone(),
        ))
        .merge(spanline::serve::events::router(ready.live().clone()))
        .merge(spanline::serve::status::router(Status {
            repository: service.is_some(),
        }))
        .merge(spanline::serve::ui::router())
}

/// Prints where the query API listens.
pub fn announce(service: &Option<RepositoryService>, addr: std::net::SocketAddr) {
    if let Some(s) = service {
        say!("query api: http://{addr}/api/services");
        say!("repository: {}", s.path().display());
    }
}

/// `spanline serve`: only the feeder and the query API, against the pipeline's brokers.
pub async fn serve(path: &Path) -> Result<(), CliError> {
    let mut config = crate::load(path)?;
    if config.kafka.brokers == "embedded" {
        return Err(
            "serve reads the output topics of a running pipeline: set kafka.brokers \
                    (an embedded broker lives inside run and demo)"
                .into(),
        );
    }
    config.repository.enabled = true;
    crate::check_brokers(&config.kafka.brokers, &config.kafka.common())?;
    telemetry::init();
    let service = RepositoryService::start(&config, &config.kafka.brokers)?;
    let ready = Readiness::default();
    ready.set(true);
    let routes = service
        .router()
        .merge(spanline::serve::ui::router())
        .merge(spanline::serve::events::router(ready.live().clone()))
        .merge(spanline::serve::status::router(Status { repository: true }));
    let (addr, _server) = telemetry::http::serve_with(config.http.listen, ready, routes)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e} (set http.listen)",
                config.http.listen
            )
        })?;
    say!("ui: http://{addr}/");
    say!("query api: http://{addr}/api/services");
    say!("repository: {}", service.path().display());
    say!("metrics: http://{addr}/metrics");
    crate::stop_after(None).await;
    service.stop().await;
    Ok(())
}

/// A demo's broker lives only as long as the demo, so its repository does too: unless
/// the pipeline names a `repository.path`, it goes to a directory of its own under the
/// system's temporary directory, removed when the returned guard drops.
pub fn demo_repository(config: &mut PipelineConfig) -> Option<ScratchDir> {
    if config.repository.path.is_some() || !config.repository.enabled {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("spanline-demo-{}", std::process::id()));
    config.repository.path = Some(dir.join("repository.db"));
    Some(ScratchDir(dir))
}

/// Removes its directory when dropped.
pub struct ScratchDir(std::path::PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
