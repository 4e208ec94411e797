//! Property tests: every decoder takes arbitrary bytes, and arbitrary mutations of valid
//! records, without panicking; what it accepts is a valid span that writes and reads
//! back the same, and what it rejects leaves the output untouched.

use std::cell::RefCell;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{self as pb, ResourceSpans, ScopeSpans};
use proptest::prelude::*;
use prost::Message;

use super::avro::{self, read_span, write_span, ResourceCache};
use super::avro_bin::Reader;
use super::otlp::{encode_json, encode_proto};
use super::*;
use crate::model::{
    AttrValue, AttributesBuilder, EventsBuilder, Interner, Resource, SpanKind, StatusCode,
};

/// Schema ids the Avro decoders know: spanline's own schema (the fast path) and a
/// producer's variant with an added optional field (resolved by apache-avro).
const NATIVE_ID: u32 = 1;
const EVOLVED_ID: u32 = 2;

fn evolved_schema() -> String {
    let mut json: serde_json::Value = serde_json::from_str(avro::SPAN_SCHEMA).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "tenant", "type": ["null", "string"], "default": null}));
    json.to_string()
}

thread_local! {
    /// One long-lived decoder per format, as a pipeline has: its name and resource
    /// caches carry over from record to record.
    static DECODERS: RefCell<Vec<SpanDecoder>> = RefCell::new(
        [Format::Avro, Format::OtlpProto, Format::OtlpJson]
            .into_iter()
            .map(|format| {
                let mut d = SpanDecoder::new(format);
                d.avro().add_schema(NATIVE_ID, avro::SPAN_SCHEMA).unwrap();
                d.avro().add_schema(EVOLVED_ID, &evolved_schema()).unwrap();
                d
            })
            .collect(),
    );
}

/// Decodes `bytes` and checks what any outcome must satisfy.
fn check(format: Format, bytes: &[u8]) -> Result<Vec<Span>, TestCaseError> {
    let mut out = vec![crate::testkit::span(1, 1, 0, 0, 1, "before")];
    let result = DECODERS.with_borrow_mut(|d| {
        let i = d.iter().position(|d| d.format() == format).unwrap();
        d[i].decode(bytes, &mut out)
    });
    let before = out.remove(0);
    prop_assert_eq!(before.service(), "before", "spans already in `out` stay");
    match result {
        Err(e) => {
            prop_assert!(out.is_empty(), "{} left spans behind", e.reason());
            prop_assert!(DecodeError::REASONS.contains(&e.reason()));
            prop_assert!(!e.to_string().is_empty());
        }
        Ok(()) => {
            prop_assert!(!out.is_empty(), "a decoded record holds a span");
            for span in &out {
                prop_assert!(validate_span(span).is_ok(), "{span:?}");
                // attributes and events are decoded lazily: they must read, and the
                // span must write and read back the same
                let _ = span.attributes.iter().count() + span.events.iter().count();
                let mut buf = Vec::new();
                write_span(&mut buf, span);
                let back = read_span(
                    &mut Reader::new(&buf),
                    &mut Interner::default(),
                    &mut ResourceCache::default(),
                )
                .ok();
                prop_assert_eq!(back.as_ref(), Some(span));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
}

fn arb_value(finite: bool) -> impl Strategy<Value = Value> {
    let double = if finite {
        (-1e300..1e300f64).boxed()
    } else {
        any::<f64>().boxed()
    };
    prop_oneof![
        ".{0,8}".prop_map(Value::Str),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        double.prop_map(Value::Double),
    ]
}

fn attributes(kvs: &[(String, Value)]) -> crate::model::Attributes {
    let mut b = AttributesBuilder::default();
    for (k, v) in kvs {
        b.push(
            k,
            match v {
                Value::Str(s) => AttrValue::Str(s),
                Value::Bool(x) => AttrValue::Bool(*x),
                Value::Int(x) => AttrValue::Int(*x),
                Value::Double(x) => AttrValue::Double(*x),
            },
        );
    }
    b.build()
}

/// A valid span: non-zero ids, times in range, any names, attributes of every type.
/// `finite` keeps doubles finite (OTLP/JSON has no NaN).
fn arb_span(finite: bool) -> impl Strategy<Value = Span> {
    let attrs = || prop::collection::vec(("[a-z.]{1,6}", arb_value(finite)), 0..4);
    (
        (1..=u128::MAX, 1..=u64::MAX, any::<u64>()),
        (0..MAX_TIME_NS, 0..MAX_TIME_NS),
        (
            ".{0,10}",
            "[a-z-]{1,8}",
            0..6i64,
            0..3i64,
            proptest::option::of(".{1,8}"),
        ),
        (attrs(), attrs()),
        prop::collection::vec((0..MAX_TIME_NS, ".{0,6}", attrs()), 0..3),
    )
        .prop_map(
            |(
                (trace, id, parent),
                (start, end),
                (name, service, kind, status, message),
                (a, r),
                ev,
            )| {
                let mut events = EventsBuilder::default();
                for (t, name, attrs) in &ev {
                    events.push(*t, name, &attributes(attrs));
                }
                Span {
                    trace_id: trace,
                    span_id: id,
                    parent_span_id: if parent == id { 0 } else { parent },
                    start_ns: start,
                    end_ns: end,
                    name: Arc::from(name.as_str()),
                    kind: SpanKind::from_index(kind).unwrap(),
                    status: StatusCode::from_index(status).unwrap(),
                    status_message: message.map(Into::into),
                    resource: Arc::new(Resource {
                        service_name: Arc::from(service.as_str()),
                        attributes: attributes(&r),
                    }),
                    attributes: attributes(&a),
                    events: events.build(),
                }
            },
        )
}

fn framed(id: u32, span: &Span) -> Vec<u8> {
    let mut buf = Vec::new();
    avro::put_frame(&mut buf, id);
    write_span(&mut buf, span);
    buf
}

/// The same span written with the evolved schema (by apache-avro, the extra field set).
fn framed_evolved(span: &Span) -> Vec<u8> {
    let datum = framed(NATIVE_ID, span).split_off(5);
    let apache_avro::types::Value::Record(mut fields) =
        avro::read_value(&avro::span_schema(), None, &datum).unwrap()
    else {
        unreachable!("a span is a record")
    };
    fields.push((
        "tenant".into(),
        apache_avro::types::Value::Union(
            1,
            Box::new(apache_avro::types::Value::String("acme".into())),
        ),
    ));
    let writer = apache_avro::Schema::parse_str(&evolved_schema()).unwrap();
    let mut buf = Vec::new();
    avro::put_frame(&mut buf, EVOLVED_ID);
    buf.extend(avro::write_value(&writer, apache_avro::types::Value::Record(fields)).unwrap());
    buf
}

/// Byte edits: (position, operation, byte); positions wrap around the record.
fn arb_edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), 0..4u8, any::<u8>()), 1..6)
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, op, b) in edits {
        if bytes.is_empty() {
            bytes.push(b);
            continue;
        }
        let i = pos % bytes.len();
        match op {
            0 => bytes[i] ^= b.max(1),
            1 => bytes.insert(i, b),
            2 => {
                bytes.remove(i);
            }
            _ => bytes.truncate(i),
        }
    }
    bytes
}

/// Any JSON value, nested a little.
fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(|n| serde_json::Value::from(n.to_string())),
        (-1e10..1e10f64).prop_map(serde_json::Value::from),
        "[0-9a-fA-F]{0,34}".prop_map(serde_json::Value::from),
        ".{0,6}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Mostly ids of the right length (so that the other checks are reached), sometimes
/// of any length, and sometimes all zeroes.
fn arb_id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), len),
        1 => prop::collection::vec(any::<u8>(), 0..len + 3),
        1 => Just(vec![0; len]),
    ]
}

/// Times in range, past it, and at its edges.
fn arb_otlp_time() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..MAX_TIME_NS as u64,
        any::<u64>(),
        Just(MAX_TIME_NS as u64),
        Just(i64::MAX as u64 + 1),
    ]
}

const SPAN_FIELDS: [&str; 10] = [
    "traceId",
    "spanId",
    "parentSpanId",
    "name",
    "kind",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "attributes",
    "events",
    "status",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        for format in [Format::Avro, Format::OtlpProto, Format::OtlpJson] {
            check(format, &bytes)?;
        }
        // past the frame, into the fast path and into apache-avro's resolution
        for id in [NATIVE_ID, EVOLVED_ID] {
            let mut framed = Vec::new();
            avro::put_frame(&mut framed, id);
            framed.extend_from_slice(&bytes);
            check(Format::Avro, &framed)?;
        }
    }

    #[test]
    fn valid_records_decode_to_the_span_they_hold(span in arb_span(false)) {
        for bytes in [framed(NATIVE_ID, &span), framed_evolved(&span)] {
            prop_assert_eq!(check(Format::Avro, &bytes)?, vec![span.clone()]);
        }
        prop_assert_eq!(check(Format::OtlpProto, &encode_proto([&span]))?, vec![span]);
    }

    #[test]
    fn valid_json_records_decode_to_the_span_they_hold(span in arb_span(true)) {
        prop_assert_eq!(check(Format::OtlpJson, &encode_json([&span]))?, vec![span]);
    }

    #[test]
    fn mutated_records_never_panic(span in arb_span(false), edits in arb_edits()) {
        check(Format::Avro, &mutate(framed(NATIVE_ID, &span), &edits))?;
        check(Format::Avro, &mutate(framed_evolved(&span), &edits))?;
        check(Format::OtlpProto, &mutate(encode_proto([&span]), &edits))?;
        check(Format::OtlpJson, &mutate(encode_json([&span]), &edits))?;
    }

    #[test]
    fn json_fields_replaced_by_any_value_never_panic(
        span in arb_span(true),
        replaced in prop::collection::vec((0..SPAN_FIELDS.len(), arb_json()), 1..4),
    ) {
        let mut json: serde_json::Value = serde_json::from_slice(&encode_json([&span])).unwrap();
        let target = &mut json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        for (field, value) in replaced {
            target[SPAN_FIELDS[field]] = value;
        }
        check(Format::OtlpJson, json.to_string().as_bytes())?;
    }

    /// OTLP protobuf spans with any field values: accepted exactly when ids have their
    /// lengths and are not zero, the span is not its own parent and times are in range.
    #[test]
    fn otlp_fields_of_any_value_are_accepted_exactly_when_valid(
        trace_id in arb_id(16),
        span_id in arb_id(8),
        parent in prop_oneof![Just(Vec::new()), arb_id(8)],
        times in (arb_otlp_time(), arb_otlp_time()),
        kind in any::<i32>(),
        status in any::<i32>(),
    ) {
        let mut span = pb::Span {
            trace_id: trace_id.clone(),
            span_id: span_id.clone(),
            parent_span_id: parent.clone(),
            start_time_unix_nano: times.0,
            end_time_unix_nano: times.1,
            kind,
            ..Default::default()
        };
        span.status = Some(pb::Status { code: status, message: String::new() });
        let bytes = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let zero = |b: &[u8]| b.iter().all(|x| *x == 0);
        let in_range = |t: u64| t < MAX_TIME_NS as u64;
        let valid = trace_id.len() == 16 && !zero(&trace_id)
            && span_id.len() == 8 && !zero(&span_id)
            && (parent.is_empty() || parent.len() == 8) && parent != span_id
            && in_range(times.0) && in_range(times.1);
        let out = check(Format::OtlpProto, &bytes)?;
        prop_assert_eq!(out.len() == 1, valid, "{:?}", out);
    }

    /// Avro spans with any ids and times: accepted exactly when valid.
    #[test]
    fn avro_ids_and_times_of_any_value_are_accepted_exactly_when_valid(
        span in arb_span(false),
        ids in (0..3u128, 0..3u64, 0..3u64),
        times in (any::<i64>(), any::<i64>()),
    ) {
        let mut span = span;
        (span.trace_id, span.span_id, span.parent_span_id) = ids;
        (span.start_ns, span.end_ns) = times;
        let in_range = |t: i64| (0..MAX_TIME_NS).contains(&t);
        let valid = ids.0 != 0 && ids.1 != 0 && ids.2 != ids.1
            && in_range(times.0) && in_range(times.1);
        for bytes in [framed(NATIVE_ID, &span), framed_evolved(&span)] {
            let out = check(Format::Avro, &bytes)?;
            prop_assert_eq!(out.len() == 1, valid, "{:?}", out);
        }
    }
}
