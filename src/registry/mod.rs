//! An embedded, in-memory schema registry that speaks the Confluent Schema Registry REST
//! API for Avro schemas, enough for the Rust `schema_registry_converter` crate and
//! Python `confluent-kafka`'s `SchemaRegistryClient`, `AvroSerializer` and
//! `AvroDeserializer`.
//!
//! [`start`] serves it on a tokio runtime; [`SchemaStore`] is the pure state behind it.
//! Nothing is persisted: the registry lives as long as its [`RegistryHandle`].

mod http;
mod model;
mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use model::{CompatibilityLevel, StoreError, VersionSpec};
pub use store::{RegisteredVersion, SchemaStore};

/// An error starting the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The listen address could not be bound.
    #[error("schema registry could not listen on {addr}: {source} (is the port in use?)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The bound socket did not report its address.
    #[error("schema registry could not read its listen address: {0}")]
    LocalAddr(#[source] std::io::Error),
}

/// A running embedded registry.
///
/// Dropping it stops the server, as [`RegistryHandle::shutdown`] does.
#[derive(Debug)]
pub struct RegistryHandle {
    url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl RegistryHandle {
    /// Base URL, e.g. `"http://127.0.0.1:41234"` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server (also on Drop).
    ///
    /// It stops accepting at once; requests in flight finish first.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for RegistryHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server task may already be gone; nothing is left to stop then.
            let _ = stop.send(());
        }
    }
}

/// Starts the registry on `addr` (use 127.0.0.1:0 for an ephemeral port) on the current
/// tokio runtime.
pub async fn start(addr: SocketAddr) -> Result<RegistryHandle, RegistryError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RegistryError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(RegistryError::LocalAddr)?;
    let app = http::router(Arc::new(Mutex::new(SchemaStore::new())));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let signal = async {
            // A dropped sender means the handle is gone: stop as well.
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::warn!(error = %e, %local, "schema registry server stopped with an error");
        }
        tracing::debug!(%local, "schema registry stopped");
    });
    let url = format!("http://{local}");
    tracing::debug!(%url, "schema registry listening");
    Ok(RegistryHandle {
        url,
        stop: Some(stop),
    })
}

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod tests;
