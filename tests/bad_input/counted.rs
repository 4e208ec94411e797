//! The traces of tests/bad_input.rs whose trouble is counted rather than dead-lettered:
//! a parent cycle, a span ending before it starts, an orphan, duplicate span ids with
//! different content, attributes of every type, and a trace of 1,000,000 spans.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PbSpan};
use prost::Message;

use spanline::testkit;

use crate::corpus::{four_spans, json_with, proto_with, records, Ids, Record, Source, S};

// Traces whose trouble is counted, not dead-lettered (asserted one by one).
pub const CYCLE: u128 = 0x5001;
pub const BACKWARDS: u128 = 0x5002;
pub const ORPHAN: u128 = 0x5003;
pub const DUP_AVRO: u128 = 0x5004;
pub const DUP_JSON: u128 = 0x5005;
pub const ATTRS_PROTO: u128 = 0x5006;
pub const ATTRS_JSON: u128 = 0x5007;
pub const BIG: u128 = 0x5008;
pub const GIANT: u128 = 0x5009;
/// Partition of the BIG trace: its 10 MB span must follow its first spans there.
pub const BIG_PARTITION: i32 = 1;

/// Spans of the giant trace, and how many go in one OTLP message.
pub const GIANT_SPANS: u64 = 1_000_000;
pub const GIANT_SPANS_PER_MESSAGE: u64 = 10_000;

/// Attributes of every OTLP type (the empty one too, which is skipped).
fn every_type() -> Vec<KeyValue> {
    let kv = |key: &str, value: Option<Any>| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value }),
    };
    let nested = AnyValue {
        value: Some(Any::IntValue(1)),
    };
    vec![
        kv("s", Some(Any::StringValue("text".into()))),
        kv("b", Some(Any::BoolValue(true))),
        kv("i", Some(Any::IntValue(i64::MIN))),
        kv("d", Some(Any::DoubleValue(f64::NAN))),
        kv("by", Some(Any::BytesValue(vec![1, 2, 255]))),
        kv(
            "arr",
            Some(Any::ArrayValue(ArrayValue {
                values: vec![nested],
            })),
        ),
        kv(
            "kv",
            Some(Any::KvlistValue(KeyValueList {
                values: vec![kv("k", Some(Any::BoolValue(false)))],
            })),
        ),
        kv("empty", None),
    ]
}

/// The same attributes in OTLP/JSON as a person would write them (ints as strings and
/// as numbers, bytes in base64, an attribute without a value).
const EVERY_TYPE_JSON: &str = r#"[
    {"key": "s", "value": {"stringValue": "text"}},
    {"key": "b", "value": {"boolValue": true}},
    {"key": "i", "value": {"intValue": "-9223372036854775808"}},
    {"key": "n", "value": {"intValue": 7}},
    {"key": "d", "value": {"doubleValue": 2.5}},
    {"key": "by", "value": {"bytesValue": "AQL/"}},
    {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": "1"}]}}},
    {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": false}}]}}},
    {"key": "empty"}
]"#;

/// Records of the traces whose trouble is counted: a parent cycle, a span ending before
/// it starts, an orphan, duplicate span ids with different content (across records and
/// within one message), attributes of every type, and the first spans of BIG.
pub fn counted_records(ids: &Ids, base: i64) -> Vec<Record> {
    let span = testkit::span;
    let mut out = Vec::new();
    let cycle = [
        span(CYCLE, 1, 0, base, base + S / 2, "gateway"),
        span(CYCLE, 2, 3, base + 1, base + S / 4, "a"),
        span(CYCLE, 3, 2, base + 2, base + S / 5, "b"),
    ];
    out.extend(records(Source::Proto, &cycle, 0, "proto/parent-cycle", ids));
    let backwards = [
        span(BACKWARDS, 1, 0, base, base + S / 2, "gateway"),
        span(BACKWARDS, 2, 1, base + S / 4, base + S / 8, "clock"),
    ];
    out.extend(records(
        Source::Json,
        &backwards,
        1,
        "json/end-before-start",
        ids,
    ));
    let orphan = [
        span(ORPHAN, 1, 0, base, base + S / 2, "gateway"),
        span(ORPHAN, 2, 1, base + 1, base + S / 4, "orders"),
        span(ORPHAN, 3, 99, base + 2, base + S / 5, "lost"),
    ];
    out.extend(records(Source::Avro, &orphan, 2, "avro/orphan", ids));
    // the copy with different content comes after the original on the same partition
    let mut dup = four_spans(DUP_AVRO, base);
    dup.push(span(DUP_AVRO, 2, 1, base + 5, base + S / 3, "changed"));
    out.extend(records(
        Source::Avro,
        &dup,
        0,
        "avro/duplicate-span-id",
        ids,
    ));
    let dup = [
        span(DUP_JSON, 1, 0, base, base + S / 2, "gateway"),
        span(DUP_JSON, 2, 1, base + 1, base + S / 4, "orders"),
        span(DUP_JSON, 2, 1, base + 1, base + S / 3, "changed"),
    ];
    out.extend(records(
        Source::Json,
        &dup,
        2,
        "json/duplicate-span-id",
        ids,
    ));
    let attrs = proto_with(
        &[span(ATTRS_PROTO, 1, 0, base, base + S / 2, "attrs")],
        |s| s.attributes = every_type(),
    );
    out.push(Record {
        source: Source::Proto,
        partition: 1,
        key: "proto/attributes-of-every-type".into(),
        value: Some(attrs),
    });
    let attrs = json_with(
        &[span(ATTRS_JSON, 1, 0, base, base + S / 2, "attrs")],
        |s| s["attributes"] = serde_json::from_str(EVERY_TYPE_JSON).unwrap(),
    );
    out.push(Record {
        source: Source::Json,
        partition: 0,
        key: "json/attributes-of-every-type".into(),
        value: Some(attrs),
    });
    let big = &four_spans(BIG, base)[..2];
    out.extend(records(Source::Avro, big, BIG_PARTITION, "avro/big", ids));
    out
}

/// The giant trace as OTLP messages of [`GIANT_SPANS_PER_MESSAGE`] spans: a root (in
/// the first message) with 999,999 CLIENT children inside its interval. Built lazily.
pub fn giant_messages(base: i64) -> impl Iterator<Item = Vec<u8>> {
    let trace_id = GIANT.to_be_bytes().to_vec();
    let base = base as u64;
    (0..GIANT_SPANS / GIANT_SPANS_PER_MESSAGE).map(move |m| {
        let first = m * GIANT_SPANS_PER_MESSAGE;
        let spans = (first..first + GIANT_SPANS_PER_MESSAGE)
            .map(|i| PbSpan {
                trace_id: trace_id.clone(),
                span_id: (i + 1).to_be_bytes().to_vec(),
                parent_span_id: if i == 0 {
                    Vec::new()
                } else {
                    1u64.to_be_bytes().to_vec()
                },
                name: if i == 0 { "fan-out" } else { "call" }.into(),
                kind: if i == 0 { 2 } else { 3 },
                start_time_unix_nano: if i == 0 { base } else { base + i },
                end_time_unix_nano: if i == 0 {
                    base + 2 * GIANT_SPANS
                } else {
                    base + i + 1000
                },
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    })
}
