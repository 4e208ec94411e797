use super::*;

const V1: &str = r#"{"type":"record","name":"Span","namespace":"spanline","fields":[
    {"name":"trace_id","type":"string"}]}"#;
/// V1 plus an optional field with a default: backward and forward compatible.
const V2_OPTIONAL: &str = r#"{"type":"record","name":"Span","namespace":"spanline","fields":[
    {"name":"trace_id","type":"string"},
    {"name":"service","type":["null","string"],"default":null}]}"#;
/// V1 plus a required field: not backward compatible.
const V2_REQUIRED: &str = r#"{"type":"record","name":"Span","namespace":"spanline","fields":[
    {"name":"trace_id","type":"string"},
    {"name":"duration_us","type":"long"}]}"#;
/// V2_OPTIONAL with the optional field made required.
const V3_REQUIRED: &str = r#"{"type":"record","name":"Span","namespace":"spanline","fields":[
    {"name":"trace_id","type":"string"},
    {"name":"service","type":["null","string"]}]}"#;
const OTHER: &str =
    r#"{"type":"record","name":"Alert","fields":[{"name":"rule","type":"string"}]}"#;

#[test]
fn ids_start_at_one_and_are_shared_across_subjects() {
    let mut store = SchemaStore::new();
    let a = store.register("spans-value", V1).unwrap();
    assert_eq!((a.id, a.version), (1, 1));
    let b = store.register("alerts-value", OTHER).unwrap();
    assert_eq!((b.id, b.version), (2, 1));
    let c = store.register("copy-value", V1).unwrap();
    assert_eq!((c.id, c.version), (1, 1));
    assert_eq!(
        store.versions_by_id(1, false).unwrap(),
        vec![("copy-value".to_owned(), 1), ("spans-value".to_owned(), 1)]
    );
    assert_eq!(
        store.subjects(false),
        vec!["alerts-value", "copy-value", "spans-value"]
    );
}

#[test]
fn identical_schema_returns_the_existing_version() {
    let mut store = SchemaStore::new();
    store.register("s", V1).unwrap();
    store.register("s", V2_OPTIONAL).unwrap();
    // Same schema, other whitespace and key order.
    let again = r#"{"name":"Span","type":"record","namespace":"spanline",
        "fields":[{"type":"string","name":"trace_id"}]}"#;
    let found = store.register("s", again).unwrap();
    assert_eq!((found.id, found.version), (1, 1));
    assert_eq!(store.versions("s", false).unwrap(), vec![1, 2]);
    assert_eq!(store.lookup("s", again, false).unwrap().version, 1);
}

#[test]
fn a_changed_default_or_logical_type_is_a_new_schema() {
    let mut store = SchemaStore::new();
    store.set_global_level(CompatibilityLevel::None);
    let field =
        |spec: &str| format!(r#"{{"type":"record","name":"R","fields":[{{"name":"f",{spec}}}]}}"#);
    let a = store
        .register("s", &field(r#""type":"string","default":"a""#))
        .unwrap();
    let b = store
        .register("s", &field(r#""type":"string","default":"b""#))
        .unwrap();
    let c = store.register("s", &field(r#""type":"long""#)).unwrap();
    let d = store
        .register(
            "s",
            &field(r#""type":{"type":"long","logicalType":"timestamp-millis"}"#),
        )
        .unwrap();
    assert_eq!([a.id, b.id, c.id, d.id], [1, 2, 3, 4]);
    assert_eq!(d.version, 4);
}

#[test]
fn backward_accepts_an_optional_field_and_rejects_a_required_one() {
    let mut store = SchemaStore::new();
    store.register("s", V1).unwrap();
    let err = store.register("s", V2_REQUIRED).unwrap_err();
    assert_eq!(err.error_code(), 409);
    let message = err.to_string();
    assert!(
        message.starts_with(
            r#"Schema being registered is incompatible with an earlier schema for subject "s""#
        ),
        "{message}"
    );
    assert!(message.contains("duration_us"), "{message}");
    assert_eq!(store.register("s", V2_OPTIONAL).unwrap().version, 2);
}

#[test]
fn none_accepts_anything() {
    let mut store = SchemaStore::new();
    store.register("s", V1).unwrap();
    store.set_subject_level("s", CompatibilityLevel::None);
    assert_eq!(store.register("s", V2_REQUIRED).unwrap().version, 2);
    assert_eq!(store.register("s", OTHER).unwrap().version, 3);
}

#[test]
fn transitive_levels_check_every_version() {
    let mut store = SchemaStore::new();
    store.register("s", V1).unwrap();
    store.register("s", V2_OPTIONAL).unwrap();
    // V3 reads V2 data, but not V1 data which lacks `service`.
    assert!(store
        .check_compatibility("s", V3_REQUIRED, None)
        .unwrap()
        .is_empty());
    store.set_subject_level("s", CompatibilityLevel::BackwardTransitive);
    let problems = store.check_compatibility("s", V3_REQUIRED, None).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("oldSchemaVersion: 1"), "{problems:?}");
    assert_eq!(
        store.register("s", V3_REQUIRED).unwrap_err().error_code(),
        409
    );
    store.set_subject_level("s", CompatibilityLevel::Backward);
    assert_eq!(store.register("s", V3_REQUIRED).unwrap().version, 3);
}

#[test]
fn forward_and_full_check_the_other_direction() {
    let mut store = SchemaStore::new();
    store.register("s", V2_REQUIRED).unwrap();
    store.set_subject_level("s", CompatibilityLevel::Forward);
    // Dropping a required field: the old schema cannot read new data.
    assert_eq!(store.check_compatibility("s", V1, None).unwrap().len(), 1);
    store.set_subject_level("s", CompatibilityLevel::Backward);
    assert!(store.check_compatibility("s", V1, None).unwrap().is_empty());
    store.set_subject_level("s", CompatibilityLevel::Full);
    assert_eq!(store.check_compatibility("s", V1, None).unwrap().len(), 1);

    let mut store = SchemaStore::new();
    store.set_global_level(CompatibilityLevel::Full);
    store.register("s", V1).unwrap();
    assert!(store
        .check_compatibility("s", V2_OPTIONAL, None)
        .unwrap()
        .is_empty());
    assert!(!store
        .check_compatibility("s", V2_REQUIRED, None)
        .unwrap()
        .is_empty());
}

#[test]
fn enum_with_fewer_symbols_is_not_backward_compatible() {
    let old = r#"{"type":"enum","name":"Kind","symbols":["CLIENT","SERVER"]}"#;
    let new = r#"{"type":"enum","name":"Kind","symbols":["CLIENT"]}"#;
    let mut store = SchemaStore::new();
    store.register("k", old).unwrap();
    assert_eq!(store.register("k", new).unwrap_err().error_code(), 409);
}

#[test]
fn compatibility_against_one_version() {
    let mut store = SchemaStore::new();
    store.set_global_level(CompatibilityLevel::None);
    store.register("s", V1).unwrap();
    store.register("s", V2_OPTIONAL).unwrap();
    store.set_global_level(CompatibilityLevel::Backward);
    let v1 = Some(VersionSpec::Number(1));
    assert!(!store
        .check_compatibility("s", V3_REQUIRED, v1)
        .unwrap()
        .is_empty());
    assert!(store
        .check_compatibility("s", V3_REQUIRED, Some(VersionSpec::Latest))
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .check_compatibility("s", V1, Some(VersionSpec::Number(9)))
            .unwrap_err()
            .error_code(),
        40402
    );
    assert_eq!(
        store
            .check_compatibility("nope", V1, v1)
            .unwrap_err()
            .error_code(),
        40401
    );
    assert!(store
        .check_compatibility("nope", V1, None)
        .unwrap()
        .is_empty());
}

#[test]
fn not_found_errors_carry_confluent_codes() {
    let mut store = SchemaStore::new();
    store.register("s", V1).unwrap();
    assert_eq!(store.versions("x", false).unwrap_err().error_code(), 40401);
    assert_eq!(
        store.lookup("x", V1, false).unwrap_err().error_code(),
        40401
    );
    assert_eq!(
        store.lookup("s", OTHER, false).unwrap_err().error_code(),
        40403
    );
    assert_eq!(
        store
            .version("s", VersionSpec::Number(2), false)
            .unwrap_err()
            .error_code(),
        40402
    );
    assert_eq!(store.schema_by_id(0).unwrap_err().error_code(), 40403);
    assert_eq!(store.schema_by_id(2).unwrap_err().error_code(), 40403);
    assert_eq!(
        store.delete_subject_level("s").unwrap_err().error_code(),
        40408
    );
    assert_eq!(
        store.register("s", "{not json").unwrap_err().error_code(),
        42201
    );
    assert_eq!(
        store
            .register("s", r#"{"type":"record"}"#)
            .unwrap_err()
            .error_code(),
        42201
    );
}

#[test]
fn versions_and_levels_parse() {
    assert_eq!(
        "latest".parse::<VersionSpec>().unwrap(),
        VersionSpec::Latest
    );
    assert_eq!("-1".parse::<VersionSpec>().unwrap(), VersionSpec::Latest);
    assert_eq!("7".parse::<VersionSpec>().unwrap(), VersionSpec::Number(7));
    for bad in ["0", "-2", "x", "2147483648", ""] {
        assert_eq!(
            bad.parse::<VersionSpec>().unwrap_err().error_code(),
            42202,
            "{bad}"
        );
    }
    assert_eq!(
        "full_transitive".parse::<CompatibilityLevel>().unwrap(),
        CompatibilityLevel::FullTransitive
    );
    assert_eq!(CompatibilityLevel::default().as_str(), "BACKWARD");
    assert_eq!(
        "SOMETIMES"
            .parse::<CompatibilityLevel>()
            .unwrap_err()
            .error_code(),
        42203
    );
}

#[test]
fn soft_deletes_hide_and_permanent_deletes_remove() {
    let mut store = SchemaStore::new();
    store.register("s", V1).unwrap();
    store.register("s", V2_OPTIONAL).unwrap();
    store.set_subject_level("s", CompatibilityLevel::None);
    let code = |r: Result<u32, StoreError>| r.unwrap_err().error_code();

    // Versions: soft, then permanent; each in the wrong order says so.
    assert_eq!(
        code(store.delete_version("s", VersionSpec::Number(2), true)),
        40407
    );
    assert_eq!(
        store
            .delete_version("s", VersionSpec::Latest, false)
            .unwrap(),
        2
    );
    assert_eq!(
        code(store.delete_version("s", VersionSpec::Number(2), false)),
        40406
    );
    assert_eq!(store.versions("s", false).unwrap(), vec![1]);
    assert_eq!(store.versions("s", true).unwrap(), vec![1, 2]);
    assert_eq!(
        store.version("s", VersionSpec::Number(2), true).unwrap().id,
        2
    );
    assert_eq!(
        store
            .version("s", VersionSpec::Number(2), false)
            .unwrap_err()
            .error_code(),
        40402
    );
    assert_eq!(
        store
            .delete_version("s", VersionSpec::Number(2), true)
            .unwrap(),
        2
    );
    assert_eq!(store.versions("s", true).unwrap(), vec![1]);

    // Subjects likewise; the level goes with the permanent delete.
    assert_eq!(
        store.delete_subject("s", true).unwrap_err().error_code(),
        40405
    );
    assert_eq!(store.delete_subject("s", false).unwrap(), vec![1]);
    assert_eq!(
        store.delete_subject("s", false).unwrap_err().error_code(),
        40404
    );
    assert!(store.subjects(false).is_empty());
    assert_eq!(store.subjects(true), vec!["s"]);
    assert_eq!(store.versions("s", false).unwrap_err().error_code(), 40401);
    assert_eq!(store.lookup("s", V1, true).unwrap().version, 1);
    assert_eq!(store.subject_level("s"), Some(CompatibilityLevel::None));
    assert_eq!(store.delete_subject("s", true).unwrap(), vec![1]);
    assert_eq!(store.subject_level("s"), None);
    assert!(store.subjects(true).is_empty());
    assert_eq!(
        store.delete_subject("s", true).unwrap_err().error_code(),
        40401
    );

    // Ids outlive their versions; a subject deleted for good starts again at 1.
    assert_eq!(store.schema_by_id(2).unwrap(), V2_OPTIONAL);
    let again = store.register("s", V2_OPTIONAL).unwrap();
    assert_eq!((again.id, again.version), (2, 1));
}

#[test]
fn registering_after_a_soft_delete_adds_a_version() {
    let mut store = SchemaStore::new();
    store.register("s", V1).unwrap();
    store.register("s", V2_OPTIONAL).unwrap();
    store.delete_subject("s", false).unwrap();
    // Deleted versions no longer constrain nor match the subject.
    let again = store.register("s", V2_REQUIRED).unwrap();
    assert_eq!((again.id, again.version), (3, 3));
    assert_eq!(store.register("s", OTHER).unwrap_err().error_code(), 409);
}
