//! Talking to the schema registry through `schema_registry_converter`: registering the
//! output schemas and fetching writer schemas by id (each id fetched once, then cached
//! by the decoders).

use schema_registry_converter::async_impl::schema_registry::{
    get_schema_by_id, post_schema, SrSettings,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use thiserror::Error;

/// A schema registry call that failed.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("schema registry {url}: {source}")]
    Settings {
        url: String,
        #[source]
        source: Box<SRCError>,
    },
    #[error("cannot register {subject} at schema registry {url}: {source}")]
    Register {
        subject: String,
        url: String,
        #[source]
        source: Box<SRCError>,
    },
    #[error("cannot fetch schema id {id} from schema registry {url}: {source}")]
    Fetch {
        id: u32,
        url: String,
        #[source]
        source: Box<SRCError>,
    },
}

/// A registry connection.
#[derive(Clone)]
pub struct RegistryClient {
    settings: SrSettings,
    url: String,
}

impl RegistryClient {
    /// Connects (lazily) to `url`, with basic auth when given.
    pub fn new(
        url: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, RegistryError> {
        let mut builder = SrSettings::new_builder(url.to_string());
        builder.set_timeout(std::time::Duration::from_secs(10));
        if let Some(user) = username {
            builder.set_basic_authorization(user, password);
        }
        let settings = builder.build().map_err(|source| RegistryError::Settings {
            url: url.to_string(),
            source: Box::new(source),
        })?;
        Ok(Self {
            settings,
            url: url.to_string(),
        })
    }

    /// Registers an Avro schema under `subject` and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_string());
        post_schema(&self.settings, subject.to_string(), supplied)
            .await
            .map(|r| r.id)
            .map_err(|e| RegistryError::Register {
                subject: subject.to_string(),
                url: self.url.clone(),
                source: Box::new(e),
            })
    }

    /// The schema text registered under `id`.
    pub async fn schema(&self, id: u32) -> Result<String, RegistryError> {
        get_schema_by_id(id, &self.settings)
            .await
            .map(|r| r.schema)
            .map_err(|e| RegistryError::Fetch {
                id,
                url: self.url.clone(),
                source: Box::new(e),
            })
    }
}
