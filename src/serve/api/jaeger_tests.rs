use serde_json::Value;

use super::*;
use crate::model::{AttrValue, AttributesBuilder, CloseReason, EventsBuilder};
use crate::repository::TraceSummary;
use crate::testkit;

const TRACE_FIXTURE: &str = include_str!("../../../tests/fixtures/jaeger/trace-response.json");
const OTHER_FIXTURES: &str = include_str!("../../../tests/fixtures/jaeger/other-responses.json");

/// Checks that `ours` has the JSON shape of `fixture`: the same keys with the same
/// types (null stays null), array items shaped like the fixture's first item, maps of
/// processes by any id, and a tag's `value` of the type its `type` names.
fn same_shape(path: &str, fixture: &Value, ours: &Value) -> Result<(), String> {
    match (fixture, ours) {
        (Value::Object(f), Value::Object(o)) if path.ends_with("processes") => {
            let template = f.values().next().ok_or("empty fixture map")?;
            for (k, v) in o {
                if !k.starts_with('p') {
                    return Err(format!("{path}: process id {k}"));
                }
                same_shape(&format!("{path}.{k}"), template, v)?;
            }
            Ok(())
        }
        (Value::Object(f), Value::Object(o)) => {
            let mut fk: Vec<_> = f.keys().collect();
            let mut ok: Vec<_> = o.keys().collect();
            fk.sort();
            ok.sort();
            if fk != ok {
                return Err(format!("{path}: keys {ok:?}, Jaeger has {fk:?}"));
            }
            if let (Some(Value::String(t)), Some(v)) = (o.get("type"), o.get("value")) {
                let fits = match t.as_str() {
                    "string" => v.is_string(),
                    "bool" => v.is_boolean(),
                    "int64" => v.is_i64(),
                    "float64" => v.is_number(),
                    _ => false,
                };
                if !fits {
                    return Err(format!("{path}: value {v} is not of type {t}"));
                }
            }
            for (k, fv) in f {
                if k == "value" && o.contains_key("type") {
                    continue;
                }
                same_shape(&format!("{path}.{k}"), fv, &o[k])?;
            }
            Ok(())
        }
        (Value::Array(f), Value::Array(o)) => {
            let Some(template) = f.first() else {
                return Ok(());
            };
            for (i, v) in o.iter().enumerate() {
                same_shape(&format!("{path}[{i}]"), template, v)?;
            }
            Ok(())
        }
        // `warnings` is a nullable list of strings in Jaeger's model
        (Value::Null, Value::Array(a)) if path.ends_with("warnings") => {
            match a.iter().all(Value::is_string) {
                true => Ok(()),
                false => Err(format!("{path}: warnings must be strings")),
            }
        }
        (Value::Null, Value::Null)
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => Ok(()),
        (Value::Number(f), Value::Number(o)) if f.is_u64() == o.is_u64() || f.is_f64() => Ok(()),
        _ => Err(format!("{path}: {ours} where Jaeger has {fixture}")),
    }
}

fn stored() -> StoredTrace {
    let mut spans = vec![
        testkit::span(
            0xabc,
            1,
            0,
            1_700_000_000_000_000_000,
            1_700_000_000_009_000_000,
            "gateway",
        ),
        testkit::span(
            0xabc,
            2,
            1,
            1_700_000_000_001_000_000,
            1_700_000_000_002_500_000,
            "orders",
        ),
        testkit::span(
            0xabc,
            3,
            2,
            1_700_000_000_001_100_000,
            1_700_000_000_001_200_000,
            "orders",
        ),
    ];
    let mut attrs = AttributesBuilder::default();
    attrs
        .push("attempt", AttrValue::Int(2))
        .push("ratio", AttrValue::Double(0.5));
    let mut events = EventsBuilder::default();
    events.push(1_700_000_000_001_500_000, "retry", &attrs.build());
    spans[1].events = events.build();
    spans[1].status = StatusCode::Error;
    spans[1].status_message = Some("timeout".into());
    let mut a = AttributesBuilder::default();
    a.push("cached", AttrValue::Bool(true));
    spans[2].attributes = a.build();
    spans[2].resource = spans[1].resource.clone();
    StoredTrace {
        summary: TraceSummary {
            trace_id: 0xabc,
            start_ns: spans[0].start_ns,
            duration_ns: 9_000_000,
            span_count: 3,
            error_count: 1,
            root_service: Some("gateway".into()),
            root_name: Some("gateway op".into()),
            services: vec!["gateway".into(), "orders".into()],
            incomplete: true,
            close_reason: CloseReason::MaxDuration,
        },
        spans,
        analysis: None,
    }
}

#[test]
fn traces_have_jaegers_shape() {
    let fixture: Value = serde_json::from_str(TRACE_FIXTURE).unwrap();
    let ours = serde_json::to_value(Envelope::ok(vec![trace(&stored())], 1, 20)).unwrap();
    same_shape("", &fixture, &ours).unwrap_or_else(|e| panic!("{e}\n{ours:#}"));
}

#[test]
fn traces_carry_ids_times_references_tags_logs_and_processes() {
    let t = serde_json::to_value(trace(&stored())).unwrap();
    let id = format!("{:032x}", 0xabc);
    assert_eq!(t["traceID"], id.as_str());
    let spans = t["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[0]["spanID"], "0000000000000001");
    assert_eq!(spans[0]["references"], serde_json::json!([]));
    assert_eq!(spans[0]["startTime"], 1_700_000_000_000_000i64);
    assert_eq!(spans[0]["duration"], 9_000);
    assert_eq!(spans[0]["operationName"], "gateway op");
    assert_eq!(
        spans[1]["references"][0],
        serde_json::json!({"refType": "CHILD_OF", "traceID": id, "spanID": "0000000000000001"})
    );
    assert_eq!(spans[1]["duration"], 1_500);
    let tag = |span: &Value, key: &str| {
        span["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == key)
            .cloned()
    };
    assert_eq!(tag(&spans[1], "error").unwrap()["value"], true);
    assert_eq!(
        tag(&spans[1], "otel.status_description").unwrap()["value"],
        "timeout"
    );
    assert_eq!(tag(&spans[0], "span.kind").unwrap()["value"], "server");
    assert_eq!(
        tag(&spans[0], "http.response.status_code").unwrap()["type"],
        "int64"
    );
    assert_eq!(tag(&spans[2], "cached").unwrap()["type"], "bool");
    let log = &spans[1]["logs"][0];
    assert_eq!(log["timestamp"], 1_700_000_000_001_500i64);
    assert_eq!(
        log["fields"][0],
        serde_json::json!({"key": "event", "type": "string", "value": "retry"})
    );
    assert_eq!(log["fields"][2]["type"], "float64");
    // two services, the orders spans share one process
    assert_eq!(spans[1]["processID"], spans[2]["processID"]);
    assert_ne!(spans[0]["processID"], spans[1]["processID"]);
    let p = &t["processes"][spans[1]["processID"].as_str().unwrap()];
    assert_eq!(p["serviceName"], "orders");
    assert_eq!(p["tags"][0]["key"], "deployment.environment");
    assert!(t["warnings"][0].as_str().unwrap().contains("incomplete"));
}

#[test]
fn lists_dependencies_and_errors_have_jaegers_shape() {
    let fixtures: Value = serde_json::from_str(OTHER_FIXTURES).unwrap();
    let services = serde_json::to_value(Envelope::ok(vec!["a", "b"], 2, 0)).unwrap();
    same_shape("services", &fixtures["services"], &services).unwrap();
    same_shape("operations", &fixtures["operations"], &services).unwrap();
    let deps = dependencies(&[Dependency {
        parent: "a".into(),
        child: "b".into(),
        call_count: 3,
    }]);
    let deps = serde_json::to_value(Envelope::ok(deps, 1, 0)).unwrap();
    same_shape("dependencies", &fixtures["dependencies"], &deps).unwrap();
    assert_eq!(deps["data"][0]["callCount"], 3);
    let err = serde_json::to_value(error_body(400, "invalid parameter 'limit'")).unwrap();
    same_shape("error", &fixtures["error"], &err).unwrap();
    assert_eq!(err["errors"][0]["code"], 400);
}
