//! spanline seen from third-party clients: Python `confluent-kafka` producing and
//! consuming Avro through the schema registry, and OTLP protobuf bytes written by the
//! OpenTelemetry Python classes. Needs the virtualenv of tests/python/requirements.txt
//! (`bash .ci/run` creates it); skipped without it unless SPANLINE_REQUIRE_EXTERNAL is set.

mod support;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use spanline::codec::otlp::OtlpDecoder;
use spanline::model::{hex_span_id, hex_trace_id, AttrValue, Attributes, Span};

use support::{python, require_or_skip, run_python, Demo};

const PYTHON: &str = "python with the packages of tests/python/requirements.txt (.venv)";

fn python_or_skip() -> Option<PathBuf> {
    let python = python();
    if require_or_skip(PYTHON, python.is_some()) {
        python
    } else {
        None
    }
}

#[test]
fn python_avro_producer_and_consumer_roundtrip() {
    let Some(python) = python_or_skip() else {
        return;
    };
    let demo = Demo::start(env!("CARGO_BIN_EXE_spanline").as_ref());
    let schemas = support::repo_root().join("schemas");
    let run = run_python(
        &python,
        "foreign_avro_roundtrip.py",
        &[
            OsStr::new(demo.kafka()),
            OsStr::new(demo.registry()),
            schemas.as_os_str(),
        ],
        Duration::from_secs(180),
    );
    assert!(
        run.status.success() && run.stdout.contains("ok: 20 traces, aggregates match"),
        "foreign_avro_roundtrip.py failed ({})\n{}\n{}",
        run.status,
        run.output(),
        demo.output_tail(60)
    );
}

/// One attribute as the fixture describes it: {"type": ..., "value": ...}.
fn check_attr(what: &str, expected: &Value, actual: Option<AttrValue<'_>>) -> Result<(), String> {
    let want = &expected["value"];
    let ok = match (expected["type"].as_str(), actual) {
        (Some("string"), Some(AttrValue::Str(s))) => want.as_str() == Some(s),
        (Some("bool"), Some(AttrValue::Bool(b))) => want.as_bool() == Some(b),
        (Some("int"), Some(AttrValue::Int(i))) => want.as_i64() == Some(i),
        (Some("double"), Some(AttrValue::Double(d))) => want.as_f64() == Some(d),
        // arrays are kept as their OTLP/JSON text
        (Some("json"), Some(AttrValue::Str(s))) => {
            serde_json::from_str::<Value>(s).ok().as_ref() == Some(want)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{what}: expected {expected}, decoded {actual:?}"))
    }
}

fn check_attrs(what: &str, expected: &Value, actual: &Attributes) -> Vec<String> {
    let expected = expected.as_object().expect("attributes object");
    let mut errors: Vec<String> = expected
        .iter()
        .filter_map(|(key, want)| check_attr(&format!("{what} {key}"), want, actual.get(key)).err())
        .collect();
    let extra: Vec<&str> = actual
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !expected.contains_key(*k))
        .collect();
    if !extra.is_empty() {
        errors.push(format!("{what}: unexpected keys {extra:?}"));
    }
    errors
}

/// Every difference between a decoded span and the fixture's description of it.
fn span_differences(want: &Value, span: &Span) -> Vec<String> {
    let mut errors = Vec::new();
    let field = |name: &str, expected: Value, actual: Value| {
        if expected != actual {
            Some(format!("{name}: expected {expected}, decoded {actual}"))
        } else {
            None
        }
    };
    errors.extend(field(
        "trace_id",
        want["trace_id"].clone(),
        hex_trace_id(span.trace_id).into(),
    ));
    let parent = (!span.is_root()).then(|| hex_span_id(span.parent_span_id));
    errors.extend(field(
        "parent_span_id",
        want["parent_span_id"].clone(),
        parent.into(),
    ));
    errors.extend(field("name", want["name"].clone(), (*span.name).into()));
    errors.extend(field(
        "kind",
        want["kind"].clone(),
        (span.kind as i32).into(),
    ));
    errors.extend(field(
        "service",
        want["service"].clone(),
        span.service().into(),
    ));
    errors.extend(field(
        "start_time_unix_nano",
        want["start_time_unix_nano"].clone(),
        span.start_ns.into(),
    ));
    errors.extend(field(
        "end_time_unix_nano",
        want["end_time_unix_nano"].clone(),
        span.end_ns.into(),
    ));
    errors.extend(field(
        "status_code",
        want["status_code"].clone(),
        (span.status as i32).into(),
    ));
    errors.extend(field(
        "status_message",
        want["status_message"].clone(),
        span.status_message.as_deref().into(),
    ));
    let events: Vec<_> = span.events.iter().collect();
    let want_events = want["events"].as_array().expect("events array");
    errors.extend(field(
        "event count",
        want_events.len().into(),
        events.len().into(),
    ));
    for (i, (want_event, (time, name, attrs))) in want_events.iter().zip(&events).enumerate() {
        errors.extend(field(
            &format!("events[{i}].time_unix_nano"),
            want_event["time_unix_nano"].clone(),
            (*time).into(),
        ));
        errors.extend(field(
            &format!("events[{i}].name"),
            want_event["name"].clone(),
            (*name).into(),
        ));
        errors.extend(check_attrs(
            &format!("events[{i}] attribute"),
            &want_event["attributes"],
            attrs,
        ));
    }
    errors.extend(check_attrs(
        "attribute",
        &want["attributes"],
        &span.attributes,
    ));
    errors.extend(check_attrs(
        "resource attribute",
        &want["resource_attributes"],
        &span.resource.attributes,
    ));
    errors
}

#[test]
fn python_otlp_proto_bytes_decode() {
    let Some(python) = python_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("request.pb");
    let run = run_python(
        &python,
        "otlp_proto_fixture.py",
        &[out.as_os_str()],
        Duration::from_secs(60),
    );
    assert!(
        run.status.success(),
        "otlp_proto_fixture.py failed ({})\n{}",
        run.status,
        run.output()
    );

    let bytes = std::fs::read(&out).expect("fixture bytes");
    let expected_path = dir.path().join("request.pb.expected.json");
    let expected: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&expected_path).expect("expected spans"))
            .expect("expected json");
    assert!(!expected.is_empty(), "the fixture describes no spans");

    let mut spans = Vec::new();
    OtlpDecoder::default()
        .decode_proto(&bytes, &mut spans)
        .expect("python's request decodes");
    assert_eq!(spans.len(), expected.len(), "decoded span count");

    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex_span_id(s.span_id), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    let mut failures = Vec::new();
    for want in &expected {
        let id = want["span_id"].as_str().expect("span_id");
        match by_id.get(id) {
            None => failures.push(format!("span {id}: not decoded")),
            Some(span) => failures.extend(
                span_differences(want, span)
                    .into_iter()
                    .map(|e| format!("span {id}: {e}")),
            ),
        }
    }
    assert!(
        failures.is_empty(),
        "decoded spans differ from the fixture:\n{}",
        failures.join("\n")
    );
}
