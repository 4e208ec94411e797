//! spanline's own observability: internal metrics, the HTTP endpoints, logging setup.

pub mod executions;
pub mod http;
pub mod live;
pub mod metrics;
pub mod repository;
pub mod spanmetrics;

/// Registers every metric family, so that `/metrics` lists them from the start.
pub fn init() {
    metrics::init();
    spanmetrics::init();
    repository::init();
}

/// Installs the `tracing` subscriber: human-readable by default, JSON lines when `json`.
/// `RUST_LOG` filters (default `info`).
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,librdkafka=warn,rdkafka=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    let _ = result;
}
