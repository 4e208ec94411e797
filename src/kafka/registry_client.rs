//! Talking to the schema registry through `schema_registry_converter`: registering the
//! output schemas and fetching writer schemas by id (each id fetched once, then cached
//! by the decoders).

use schema_registry_converter::async_impl::schema_registry::{
    get_schema_by_id, post_schema, SrSettings,
};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

/// A registry connection.
#[derive(Clone)]
pub struct RegistryClient {
    settings: SrSettings,
    url: String,
}

impl RegistryClient {
    /// Connects (lazily) to `url`, with basic auth when given.
    pub fn new(url: &str, username: Option<&str>, password: Option<&str>) -> Result<Self, String> {
        let mut builder = SrSettings::new_builder(url.to_string());
        builder.set_timeout(std::time::Duration::from_secs(10));
        if let Some(user) = username {
            builder.set_basic_authorization(user, password);
        }
        let settings = builder
            .build()
            .map_err(|e| format!("schema registry {url}: {e}"))?;
        Ok(Self {
            settings,
            url: url.to_string(),
        })
    }

    /// Registers an Avro schema under `subject` and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, String> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_string());
        post_schema(&self.settings, subject.to_string(), supplied)
            .await
            .map(|r| r.id)
            .map_err(|e| {
                format!(
                    "cannot register {subject} at schema registry {}: {e}",
                    self.url
                )
            })
    }

    /// The schema text registered under `id`.
    pub async fn schema(&self, id: u32) -> Result<String, String> {
        get_schema_by_id(id, &self.settings)
            .await
            .map(|r| r.schema)
            .map_err(|e| {
                format!(
                    "cannot fetch schema id {id} from schema registry {}: {e}",
                    self.url
                )
            })
    }
}
