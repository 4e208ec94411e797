//! The registry as clients and callers see it: the `schema_registry_converter` crate
//! against a real server, and the handle's lifecycle.

use std::net::SocketAddr;

use apache_avro::types::Value as AvroValue;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{
    get_all_subjects, get_all_versions, get_schema_by_id, is_compatible_schema, post_schema,
    SrSettings,
};
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use super::tests::{registry, SPAN_V1, SPAN_V2_REQUIRED};
use super::*;

#[tokio::test]
async fn schema_registry_converter_works_against_it() {
    let handle = registry().await;
    let settings = SrSettings::new(handle.url().to_owned());
    let supplied = || {
        SuppliedSchema::new(
            Some("spanline.Span".to_owned()),
            SchemaType::Avro,
            SPAN_V1.to_owned(),
        )
    };

    let registered = post_schema(&settings, "spans-value".to_owned(), supplied())
        .await
        .unwrap();
    assert_eq!(registered.id, 1);
    let fetched = get_schema_by_id(1, &settings).await.unwrap();
    assert_eq!(
        (fetched.schema.as_str(), fetched.schema_type),
        (SPAN_V1, SchemaType::Avro)
    );
    assert!(get_schema_by_id(42, &settings).await.is_err());
    assert_eq!(
        get_all_subjects(&settings).await.unwrap(),
        vec!["spans-value"]
    );
    assert_eq!(
        get_all_versions(&settings, "spans-value".to_owned())
            .await
            .unwrap(),
        vec![1]
    );
    let required = SuppliedSchema::new(None, SchemaType::Avro, SPAN_V2_REQUIRED.to_owned());
    assert!(
        !is_compatible_schema(&settings, "spans-value".to_owned(), required.clone())
            .await
            .unwrap()
    );
    assert!(post_schema(&settings, "spans-value".to_owned(), required)
        .await
        .is_err());

    // Encode with a supplied schema (registers it), then with the latest of the subject.
    let encoder = AvroEncoder::new(settings.clone());
    let record = || {
        vec![
            ("trace_id", AvroValue::String("4bf92f3577b34da6".to_owned())),
            ("duration_us", AvroValue::Long(1234)),
        ]
    };
    let with_schema =
        SubjectNameStrategy::TopicNameStrategyWithSchema("traces".to_owned(), false, supplied());
    let bytes = encoder.encode(record(), with_schema).await.unwrap();
    // Same schema as spans-value: the shared id 1.
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 1], "magic byte and schema id");
    let latest = SubjectNameStrategy::TopicNameStrategy("traces".to_owned(), false);
    assert_eq!(
        AvroEncoder::new(settings.clone())
            .encode(record(), latest)
            .await
            .unwrap(),
        bytes
    );
    assert_eq!(
        get_all_subjects(&settings).await.unwrap(),
        vec!["spans-value", "traces-value"]
    );

    let decoded = AvroDecoder::new(settings)
        .decode(Some(&bytes))
        .await
        .unwrap();
    let expected: Vec<(String, AvroValue)> = record()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(decoded.value, AvroValue::Record(expected));
    handle.shutdown();
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let handle = registry().await;
    let addr = handle.url().trim_start_matches("http://").to_owned();
    assert!(tokio::net::TcpStream::connect(&addr).await.is_ok());
    handle.shutdown();
    // The server task needs a few turns of the runtime to drop its listener.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "registry still accepts connections after shutdown");
}

#[tokio::test]
async fn start_reports_a_busy_port() {
    let first = registry().await;
    let addr: SocketAddr = first.url().trim_start_matches("http://").parse().unwrap();
    let err = start(addr).await.unwrap_err();
    assert!(matches!(err, RegistryError::Bind { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("schema registry could not listen on"),
        "{err}"
    );
}
