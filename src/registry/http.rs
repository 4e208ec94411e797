//! The Confluent-compatible REST routes over a shared [`SchemaStore`].
//!
//! Every response, errors included, is `application/vnd.schemaregistry.v1+json`; bodies
//! are parsed here rather than by axum's `Json` so malformed ones get Confluent-style
//! errors too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::body::{to_bytes, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::model::{CompatibilityLevel, StoreError, VersionSpec};
use super::store::{RegisteredVersion, SchemaStore};

/// The content type of every response.
pub(crate) const CONTENT_TYPE_V1: &str = "application/vnd.schemaregistry.v1+json";

/// The store as the handlers share it.
pub(crate) type SharedStore = Arc<Mutex<SchemaStore>>;

/// A Confluent-style error response: `{"error_code": ..., "message": ...}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// An error named after its HTTP status, e.g. `HTTP 404 Not Found`.
    fn from_status(status: StatusCode) -> Self {
        let reason = status.canonical_reason().unwrap_or("Error");
        Self::new(
            status,
            u32::from(status.as_u16()),
            format!("HTTP {} {reason}", status.as_u16()),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let code = err.error_code();
        // Confluent's five-digit codes start with the HTTP status.
        let http = if code >= 10_000 { code / 100 } else { code };
        let status = u16::try_from(http)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, code, err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error_code": self.code, "message": self.message });
        reply(self.status, &body)
    }
}

/// A JSON response with the registry content type.
fn reply(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_V1))],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "schema registry could not serialize a response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn ok(body: &impl Serialize) -> Result<Response, ApiError> {
    Ok(reply(StatusCode::OK, body))
}

fn lock(store: &SharedStore) -> MutexGuard<'_, SchemaStore> {
    // The store has no invariants a panicking handler could leave half-updated.
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Parses a JSON request body; any content type is accepted.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            422,
            format!("malformed request body: {e}"),
        )
    })
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The body of register, lookup and compatibility requests.
#[derive(Debug, Deserialize)]
struct SchemaRequest {
    schema: Option<String>,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    references: Option<Vec<Value>>,
}

impl SchemaRequest {
    /// The Avro schema text, or why the request cannot be served.
    fn avro_schema(&self) -> Result<&str, ApiError> {
        let invalid =
            |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, message);
        if let Some(kind) = &self.schema_type {
            if !kind.eq_ignore_ascii_case("AVRO") {
                return Err(invalid(format!(
                    "invalid schema: schema type {kind} is not supported, only AVRO is"
                )));
            }
        }
        if self.references.as_ref().is_some_and(|r| !r.is_empty()) {
            return Err(invalid(
                "invalid schema: schema references are not supported".to_owned(),
            ));
        }
        match self.schema.as_deref() {
            Some(text) if !text.trim().is_empty() => Ok(text),
            _ => Err(invalid(
                "invalid schema: the schema field is missing or empty".to_owned(),
            )),
        }
    }
}

/// The body of `PUT /config`, as `compatibility` or `compatibilityLevel`.
#[derive(Debug, Deserialize)]
struct ConfigRequest {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

impl ConfigRequest {
    fn level(&self) -> Result<CompatibilityLevel, ApiError> {
        let name = self
            .compatibility
            .as_deref()
            .or(self.compatibility_level.as_deref())
            .unwrap_or_default();
        Ok(name.parse()?)
    }
}

fn version_json(v: &RegisteredVersion) -> Value {
    json!({ "subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema })
}

/// Parses an id path segment; anything else is an unknown schema.
fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse::<u32>().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            40403,
            format!("schema {id} not found"),
        )
    })
}

/// The registry's routes over `store`.
pub(crate) fn router(store: SharedStore) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_by_id))
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .fallback(|| async { ApiError::from_status(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async {
            ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED)
        })
        .layer(middleware::from_fn(log_and_normalize))
        .with_state(store)
}

/// Logs each request at debug level and turns axum's plain-text rejections (bad path,
/// query or body size) into Confluent-style JSON errors.
async fn log_and_normalize(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let started = Instant::now();
    let mut response = next.run(req).await;
    let status = response.status();
    let is_v1 = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes() == CONTENT_TYPE_V1.as_bytes());
    if (status.is_client_error() || status.is_server_error()) && !is_v1 {
        let body = to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        let mut err = ApiError::from_status(status);
        if !text.is_empty() {
            err.message = text;
        }
        response = err.into_response();
    }
    tracing::debug!(
        %method,
        %uri,
        status = status.as_u16(),
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "schema registry request"
    );
    response
}

async fn root() -> Result<Response, ApiError> {
    ok(&json!({}))
}

async fn list_subjects(
    State(store): State<SharedStore>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    ok(&lock(&store).subjects(flag(&params, "deleted")))
}

async fn register(
    State(store): State<SharedStore>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SchemaRequest = parse_body(&body)?;
    let registered = lock(&store).register(&subject, request.avro_schema()?)?;
    ok(&json!({ "id": registered.id }))
}

async fn lookup(
    State(store): State<SharedStore>,
    Path(subject): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SchemaRequest = parse_body(&body)?;
    let found = lock(&store).lookup(&subject, request.avro_schema()?, flag(&params, "deleted"))?;
    ok(&version_json(&found))
}

async fn delete_subject(
    State(store): State<SharedStore>,
    Path(subject): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    ok(&lock(&store).delete_subject(&subject, flag(&params, "permanent"))?)
}

async fn list_versions(
    State(store): State<SharedStore>,
    Path(subject): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    ok(&lock(&store).versions(&subject, flag(&params, "deleted"))?)
}

async fn get_version(
    State(store): State<SharedStore>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let spec: VersionSpec = version.parse()?;
    ok(&version_json(&lock(&store).version(
        &subject,
        spec,
        flag(&params, "deleted"),
    )?))
}

async fn get_version_schema(
    State(store): State<SharedStore>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let spec: VersionSpec = version.parse()?;
    let found = lock(&store).version(&subject, spec, flag(&params, "deleted"))?;
    Ok(raw_schema(found.schema))
}

async fn referenced_by(
    State(store): State<SharedStore>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let spec: VersionSpec = version.parse()?;
    lock(&store).version(&subject, spec, flag(&params, "deleted"))?;
    // References are not supported, so nothing refers to anything.
    ok(&Vec::<u32>::new())
}

async fn delete_version(
    State(store): State<SharedStore>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let spec: VersionSpec = version.parse()?;
    ok(&lock(&store).delete_version(&subject, spec, flag(&params, "permanent"))?)
}

async fn schema_types() -> Result<Response, ApiError> {
    ok(&["AVRO"])
}

async fn schema_by_id(
    State(store): State<SharedStore>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // schemaType is left out for AVRO, as Confluent does; both clients default to AVRO.
    ok(&json!({ "schema": lock(&store).schema_by_id(id)? }))
}

async fn raw_schema_by_id(
    State(store): State<SharedStore>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let text = lock(&store).schema_by_id(id)?.to_owned();
    Ok(raw_schema(text))
}

/// The schema text itself as the response body.
fn raw_schema(text: String) -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_V1))],
        text,
    )
        .into_response()
}

async fn versions_by_id(
    State(store): State<SharedStore>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let found = lock(&store).versions_by_id(id, flag(&params, "deleted"))?;
    let body: Vec<Value> = found
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    ok(&body)
}

async fn subjects_by_id(
    State(store): State<SharedStore>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let mut subjects: Vec<String> = lock(&store)
        .versions_by_id(id, flag(&params, "deleted"))?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    ok(&subjects)
}

async fn get_global_config(State(store): State<SharedStore>) -> Result<Response, ApiError> {
    ok(&json!({ "compatibilityLevel": lock(&store).global_level().as_str() }))
}

async fn put_global_config(
    State(store): State<SharedStore>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let level = parse_body::<ConfigRequest>(&body)?.level()?;
    lock(&store).set_global_level(level);
    ok(&json!({ "compatibility": level.as_str() }))
}

async fn get_subject_config(
    State(store): State<SharedStore>,
    Path(subject): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let store = lock(&store);
    let level = match store.subject_level(&subject) {
        Some(level) => level,
        None if flag(&params, "defaultToGlobal") => store.global_level(),
        None => return Err(StoreError::SubjectLevelNotConfigured(subject).into()),
    };
    ok(&json!({ "compatibilityLevel": level.as_str() }))
}

async fn put_subject_config(
    State(store): State<SharedStore>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let level = parse_body::<ConfigRequest>(&body)?.level()?;
    lock(&store).set_subject_level(&subject, level);
    ok(&json!({ "compatibility": level.as_str() }))
}

async fn delete_subject_config(
    State(store): State<SharedStore>,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    let removed = lock(&store).delete_subject_level(&subject)?;
    ok(&json!({ "compatibilityLevel": removed.as_str() }))
}

async fn check_all(
    State(store): State<SharedStore>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SchemaRequest = parse_body(&body)?;
    let problems = lock(&store).check_compatibility(&subject, request.avro_schema()?, None)?;
    ok(&json!({ "is_compatible": problems.is_empty(), "messages": problems }))
}

async fn check_version(
    State(store): State<SharedStore>,
    Path((subject, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec: VersionSpec = version.parse()?;
    let request: SchemaRequest = parse_body(&body)?;
    let problems =
        lock(&store).check_compatibility(&subject, request.avro_schema()?, Some(spec))?;
    ok(&json!({ "is_compatible": problems.is_empty(), "messages": problems }))
}
