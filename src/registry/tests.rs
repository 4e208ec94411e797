//! End-to-end tests of the REST API: a real server on 127.0.0.1:0, real HTTP.

use std::net::SocketAddr;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

use super::http::CONTENT_TYPE_V1;
use super::*;

pub(super) const SPAN_V1: &str = r#"{"type":"record","name":"Span","namespace":"spanline","fields":[{"name":"trace_id","type":"string"},{"name":"duration_us","type":"long"}]}"#;
pub(super) const SPAN_V2_OPTIONAL: &str = r#"{"type":"record","name":"Span","namespace":"spanline","fields":[{"name":"trace_id","type":"string"},{"name":"duration_us","type":"long"},{"name":"service","type":["null","string"],"default":null}]}"#;
pub(super) const SPAN_V2_REQUIRED: &str = r#"{"type":"record","name":"Span","namespace":"spanline","fields":[{"name":"trace_id","type":"string"},{"name":"duration_us","type":"long"},{"name":"service","type":"string"}]}"#;

/// A registry on an ephemeral loopback port.
pub(super) async fn registry() -> RegistryHandle {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    start(addr).await.expect("registry starts")
}

/// A test client: sends `body` (if any) as Confluent's content type, returns status and
/// JSON body, and checks every response is Confluent-typed JSON.
struct Api {
    base: String,
    client: Client,
}

impl Api {
    fn new(handle: &RegistryHandle) -> Self {
        Self {
            base: handle.url().to_owned(),
            client: Client::new(),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", CONTENT_TYPE_V1)
                .body(body.to_owned());
        }
        let response = request.send().await.expect("request is answered");
        let status = response.status();
        let content_type = response.headers().get("content-type").cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some(CONTENT_TYPE_V1),
            "{path}"
        );
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(&body.to_string())).await
    }

    async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(Method::PUT, path, Some(&body.to_string())).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, None).await
    }

    /// Registers `schema` under `subject` and returns its id.
    async fn register(&self, subject: &str, schema: &str) -> u64 {
        let (status, body) = self
            .post(
                &format!("/subjects/{subject}/versions"),
                &json!({ "schema": schema }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_u64().unwrap()
    }
}

/// Asserts a Confluent error body with `status` and `error_code`.
fn assert_error((status, body): (StatusCode, Value), expected: StatusCode, code: u64) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error_code"], json!(code), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn register_lookup_and_fetch_round_trip() {
    let handle = registry().await;
    let api = Api::new(&handle);
    assert!(handle.url().starts_with("http://127.0.0.1:") && !handle.url().ends_with('/'));

    let (status, body) = api
        .post(
            "/subjects/spans-value/versions?normalize=false",
            &json!({ "schema": SPAN_V1, "schemaType": "AVRO", "references": [] }),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "id": 1 })));

    // Idempotent: same schema, other formatting, no new version.
    let reformatted =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(SPAN_V1).unwrap()).unwrap();
    assert_eq!(api.register("spans-value", &reformatted).await, 1);
    // Shared across subjects.
    assert_eq!(api.register("copy-value", SPAN_V1).await, 1);
    assert_eq!(api.register("spans-value", SPAN_V2_OPTIONAL).await, 2);

    let expected_v1 = json!({ "subject": "spans-value", "version": 1, "id": 1, "schema": SPAN_V1 });
    let (_, found) = api
        .post(
            "/subjects/spans-value?normalize=false&deleted=false",
            &json!({ "schema": reformatted }),
        )
        .await;
    assert_eq!(found, expected_v1);
    assert_eq!(
        api.get("/schemas/ids/1?fetchMaxId=false&subject=spans-value")
            .await,
        (StatusCode::OK, json!({ "schema": SPAN_V1 }))
    );
    assert_eq!(
        api.get("/schemas/ids/2?deleted=true").await.1,
        json!({ "schema": SPAN_V2_OPTIONAL })
    );
    assert_eq!(
        api.get("/schemas/ids/1/versions").await.1,
        json!([{ "subject": "copy-value", "version": 1 }, { "subject": "spans-value", "version": 1 }])
    );
    assert_eq!(
        api.get("/subjects").await.1,
        json!(["copy-value", "spans-value"])
    );
    assert_eq!(
        api.get("/subjects/spans-value/versions").await.1,
        json!([1, 2])
    );
    assert_eq!(
        api.get("/subjects/spans-value/versions/1").await.1,
        expected_v1
    );
    let latest =
        json!({ "subject": "spans-value", "version": 2, "id": 2, "schema": SPAN_V2_OPTIONAL });
    assert_eq!(
        api.get("/subjects/spans-value/versions/latest").await.1,
        latest
    );
    assert_eq!(api.get("/subjects/spans-value/versions/-1").await.1, latest);
    let (_, raw) = api.get("/subjects/spans-value/versions/1/schema").await;
    assert_eq!(raw, serde_json::from_str::<Value>(SPAN_V1).unwrap());
    assert_eq!(api.get("/schemas/types").await.1, json!(["AVRO"]));

    // Subjects with a slash travel percent-encoded.
    assert_eq!(api.register("team%2Fspans-value", SPAN_V1).await, 1);
    assert_eq!(
        api.get("/schemas/ids/1/subjects").await.1,
        json!(["copy-value", "spans-value", "team/spans-value"])
    );
    handle.shutdown();
}

#[tokio::test]
async fn backward_compatibility_is_enforced_per_subject_level() {
    let handle = registry().await;
    let api = Api::new(&handle);
    api.register("spans-value", SPAN_V1).await;

    let rejected = api
        .post(
            "/subjects/spans-value/versions",
            &json!({ "schema": SPAN_V2_REQUIRED }),
        )
        .await;
    let message = rejected.1["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_error(rejected, StatusCode::CONFLICT, 409);
    assert!(
        message.starts_with(r#"Schema being registered is incompatible with an earlier schema for subject "spans-value", details: ["#),
        "{message}"
    );
    let check = |version: &'static str, schema: &'static str| {
        let api = &api;
        async move {
            let path = format!("/compatibility/subjects/spans-value/versions/{version}");
            api.post(&path, &json!({ "schema": schema })).await.1["is_compatible"].clone()
        }
    };
    assert_eq!(check("latest", SPAN_V2_REQUIRED).await, json!(false));
    assert_eq!(check("1", SPAN_V2_OPTIONAL).await, json!(true));

    // An optional field with a default is fine.
    assert_eq!(api.register("spans-value", SPAN_V2_OPTIONAL).await, 2);

    // NONE on the subject lets anything in; the global level is unchanged.
    assert_error(
        api.get("/config/spans-value").await,
        StatusCode::NOT_FOUND,
        40408,
    );
    assert_eq!(
        api.get("/config/spans-value?defaultToGlobal=true").await.1,
        json!({ "compatibilityLevel": "BACKWARD" })
    );
    let (status, body) = api
        .put("/config/spans-value", &json!({ "compatibility": "NONE" }))
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "compatibility": "NONE" }))
    );
    assert_eq!(
        api.get("/config/spans-value").await.1,
        json!({ "compatibilityLevel": "NONE" })
    );
    assert_eq!(
        api.get("/config").await.1,
        json!({ "compatibilityLevel": "BACKWARD" })
    );
    assert_eq!(check("latest", SPAN_V2_REQUIRED).await, json!(true));
    assert_eq!(api.register("spans-value", SPAN_V2_REQUIRED).await, 3);

    // The global level applies to subjects without their own.
    assert_eq!(
        api.put("/config", &json!({ "compatibility": "FULL" }))
            .await
            .1,
        json!({ "compatibility": "FULL" })
    );
    assert_eq!(
        api.get("/config").await.1,
        json!({ "compatibilityLevel": "FULL" })
    );
    api.register("other-value", SPAN_V1).await;
    let drop_field = r#"{"type":"record","name":"Span","namespace":"spanline","fields":[{"name":"trace_id","type":"string"}]}"#;
    assert_error(
        api.post(
            "/subjects/other-value/versions",
            &json!({ "schema": drop_field }),
        )
        .await,
        StatusCode::CONFLICT,
        409,
    );
    handle.shutdown();
}

#[tokio::test]
async fn errors_are_confluent_json() {
    let handle = registry().await;
    let api = Api::new(&handle);
    api.register("spans-value", SPAN_V1).await;
    let nf = StatusCode::NOT_FOUND;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;

    assert_error(api.get("/subjects/nope/versions").await, nf, 40401);
    assert_error(api.get("/subjects/nope/versions/latest").await, nf, 40401);
    assert_error(api.get("/subjects/spans-value/versions/7").await, nf, 40402);
    assert_error(api.get("/schemas/ids/99").await, nf, 40403);
    assert_error(api.get("/schemas/ids/abc").await, nf, 40403);
    assert_error(
        api.post("/subjects/nope", &json!({ "schema": SPAN_V1 }))
            .await,
        nf,
        40401,
    );
    assert_error(
        api.post(
            "/subjects/spans-value",
            &json!({ "schema": SPAN_V2_OPTIONAL }),
        )
        .await,
        nf,
        40403,
    );
    assert_error(api.delete("/subjects/nope").await, nf, 40401);
    assert_error(api.get("/no/such/route").await, nf, 404);
    assert_eq!(
        api.get("/no/such/route").await.1["message"],
        json!("HTTP 404 Not Found")
    );
    assert_error(
        api.delete("/subjects").await,
        StatusCode::METHOD_NOT_ALLOWED,
        405,
    );

    let invalid = json!({ "schema": r#"{"type":"record","name":"Broken"}"# });
    assert_error(
        api.post("/subjects/spans-value/versions", &invalid).await,
        unprocessable,
        42201,
    );
    let protobuf = json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" });
    let (status, body) = api.post("/subjects/spans-value/versions", &protobuf).await;
    assert!(
        body["message"].as_str().unwrap().contains("only AVRO"),
        "{body}"
    );
    assert_error((status, body), unprocessable, 42201);
    assert_error(
        api.get("/subjects/spans-value/versions/0").await,
        unprocessable,
        42202,
    );
    assert_error(
        api.put("/config", &json!({ "compatibility": "SOMETIMES" }))
            .await,
        unprocessable,
        42203,
    );

    for malformed in ["{\"schema\": ", "", "[1,2]"] {
        let response = api
            .send(
                Method::POST,
                "/subjects/spans-value/versions",
                Some(malformed),
            )
            .await;
        assert_error(response, unprocessable, 422);
    }
    // Plain application/json bodies are accepted as well.
    let response = Client::new()
        .post(format!("{}/subjects/spans-value/versions", handle.url()))
        .json(&json!({ "schema": SPAN_V1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "id": 1 }));
    handle.shutdown();
}

#[tokio::test]
async fn deletes_are_soft_then_permanent() {
    let handle = registry().await;
    let api = Api::new(&handle);
    api.register("spans-value", SPAN_V1).await;
    api.register("spans-value", SPAN_V2_OPTIONAL).await;
    let nf = StatusCode::NOT_FOUND;

    assert_error(
        api.delete("/subjects/spans-value/versions/2?permanent=true")
            .await,
        nf,
        40407,
    );
    assert_eq!(
        api.delete("/subjects/spans-value/versions/latest").await.1,
        json!(2)
    );
    assert_error(
        api.delete("/subjects/spans-value/versions/2").await,
        nf,
        40406,
    );
    assert_eq!(
        api.get("/subjects/spans-value/versions").await.1,
        json!([1])
    );
    assert_eq!(
        api.get("/subjects/spans-value/versions?deleted=true")
            .await
            .1,
        json!([1, 2])
    );
    assert_eq!(
        api.get("/subjects/spans-value/versions/2?deleted=true")
            .await
            .1["id"],
        json!(2)
    );
    assert_eq!(
        api.delete("/subjects/spans-value/versions/2?permanent=true")
            .await
            .1,
        json!(2)
    );

    // What confluent-kafka's delete_subject does: soft, then permanent=true.
    assert_error(
        api.delete("/subjects/spans-value?permanent=true").await,
        nf,
        40405,
    );
    assert_eq!(api.delete("/subjects/spans-value").await.1, json!([1]));
    assert_error(api.delete("/subjects/spans-value").await, nf, 40404);
    assert_eq!(api.get("/subjects").await.1, json!([]));
    assert_eq!(
        api.get("/subjects?deleted=true").await.1,
        json!(["spans-value"])
    );
    assert_error(
        api.get("/subjects/spans-value/versions/latest").await,
        nf,
        40401,
    );
    assert_eq!(
        api.delete("/subjects/spans-value?permanent=true").await.1,
        json!([1])
    );
    assert_eq!(api.get("/subjects?deleted=true").await.1, json!([]));
    // Ids outlive their subjects, so old data stays decodable.
    assert_eq!(
        api.get("/schemas/ids/2?deleted=true").await.1,
        json!({ "schema": SPAN_V2_OPTIONAL })
    );
    handle.shutdown();
}
