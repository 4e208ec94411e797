//! The inputs of tests/bad_input.rs: good traces in each source format, and bad records
//! of every kind with the dead-letter reason each must get (the traces whose trouble is
//! counted instead are in `counted.rs`).

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span as PbSpan;
use prost::Message;

use spanline::codec::{avro, otlp};
use spanline::model::{hex_trace_id, AttrValue, AttributesBuilder, Span};
use spanline::testkit;

use crate::counted::{BIG, BIG_PARTITION};

pub const S: i64 = 1_000_000_000;

/// The pipeline's sources, one per format, each with its dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Avro,
    Proto,
    Json,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Avro, Source::Proto, Source::Json];

    pub fn name(self) -> &'static str {
        ["avro", "proto", "json"][self as usize]
    }

    pub fn topic(self) -> &'static str {
        ["spans-avro", "spans-proto", "spans-json"][self as usize]
    }

    pub fn dlq(self) -> &'static str {
        ["dlq-avro", "dlq-proto", "dlq-json"][self as usize]
    }
}

/// One record to produce; its key names it. `None` is a tombstone (no value at all).
#[derive(Clone)]
pub struct Record {
    pub source: Source,
    pub partition: i32,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// A bad record and the `spanline.error.reason` it must be dead-lettered with.
pub struct Bad {
    pub record: Record,
    pub reason: &'static str,
}

/// Schema ids in the registry: spanline's span schema, and a record schema that is not
/// a span.
pub struct Ids {
    pub span: u32,
    pub other: u32,
}

/// A root and three children, all ending by `base + S/2`.
pub fn four_spans(id: u128, base: i64) -> Vec<Span> {
    vec![
        testkit::span(id, 1, 0, base, base + S / 2, "gateway"),
        testkit::span(id, 2, 1, base + 1, base + S / 10, "orders"),
        testkit::span(id, 3, 1, base + 2, base + S / 5, "db"),
        testkit::span(id, 4, 2, base + 3, base + S / 20, "cache"),
    ]
}

fn framed(schema_id: u32, span: &Span) -> Vec<u8> {
    let mut buf = Vec::new();
    avro::put_frame(&mut buf, schema_id);
    avro::write_span(&mut buf, span);
    buf
}

/// `spans` as their source sends them: one Avro record per span, else one OTLP message.
pub fn records(
    source: Source,
    spans: &[Span],
    partition: i32,
    key: &str,
    ids: &Ids,
) -> Vec<Record> {
    let record = |value| Record {
        source,
        partition,
        key: key.to_string(),
        value: Some(value),
    };
    match source {
        Source::Avro => spans.iter().map(|s| record(framed(ids.span, s))).collect(),
        Source::Proto => vec![record(otlp::encode_proto(spans))],
        Source::Json => vec![record(otlp::encode_json(spans))],
    }
}

/// A whole trace of four spans, on the partition its id picks.
pub fn good_trace(source: Source, id: u128, base: i64, ids: &Ids) -> Vec<Record> {
    let key = format!("good/{}", hex_trace_id(id));
    records(source, &four_spans(id, base), (id % 3) as i32, &key, ids)
}

/// Sets the byte `at` bytes after the first occurrence of `marker`.
fn patch(mut bytes: Vec<u8>, marker: &[u8], at: usize, byte: u8) -> Vec<u8> {
    let pos = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker in record");
    bytes[pos + at] = byte;
    bytes
}

/// The first span of an OTLP request built from `spans`, changed by `edit`.
pub fn proto_with(spans: &[Span], edit: impl FnOnce(&mut PbSpan)) -> Vec<u8> {
    let mut req = otlp::to_request(spans);
    edit(&mut req.resource_spans[0].scope_spans[0].spans[0]);
    req.encode_to_vec()
}

/// The first span of an OTLP/JSON request built from `spans`, changed by `edit`.
pub fn json_with(spans: &[Span], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut json: serde_json::Value = serde_json::from_slice(&otlp::encode_json(spans)).unwrap();
    edit(&mut json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]);
    json.to_string().into_bytes()
}

/// Every kind of record that must be dead-lettered (but the 10 MB span, see
/// [`ten_mb_span`]), spread over partitions; trace ids from 0x9000 never reach a trace.
pub fn dead_letter_kinds(ids: &Ids, base: i64) -> Vec<Bad> {
    let mut n = 0;
    let mut next = || {
        n += 1;
        (0x9000 + n as u128, n % 3)
    };
    let mut out = Vec::new();
    let mut bad = |source, kind: &str, value: Option<Vec<u8>>, reason, partition| {
        out.push(Bad {
            record: Record {
                source,
                partition,
                key: format!("{}/{kind}", Source::name(source)),
                value,
            },
            reason,
        })
    };
    let span = |id, service| testkit::span(id, 1, 0, base, base + S / 10, service);
    use Source::{Avro, Json, Proto};

    let (t, p) = next();
    bad(Avro, "tombstone", None, "empty", p);
    bad(
        Avro,
        "wrong-magic-byte",
        Some(br#"{"not": "avro"}"#.to_vec()),
        "bad_magic_byte",
        p,
    );
    bad(
        Avro,
        "frame-shorter-than-5-bytes",
        Some(vec![0, 0, 0]),
        "avro",
        p,
    );
    bad(
        Avro,
        "unknown-schema-id",
        Some(framed(999_999, &span(t, "x"))),
        "unknown_schema_id",
        p,
    );
    let (t, p) = next();
    let whole = framed(ids.span, &span(t, "truncated"));
    bad(
        Avro,
        "truncated",
        Some(whole[..whole.len() / 2].to_vec()),
        "avro",
        p,
    );
    let mut trailing = framed(ids.span, &span(t, "trailing"));
    trailing.extend_from_slice(b"extra");
    bad(Avro, "trailing-bytes", Some(trailing), "invalid_span", p);
    let (t, p) = next();
    let utf8 = patch(framed(ids.span, &span(t, "UTF8")), b"UTF8 op", 0, 0xff);
    bad(Avro, "invalid-utf8-name", Some(utf8), "avro", p);
    // kind is the enum right after the name: index 9 of 6 symbols (zig-zag 18)
    let kind = patch(framed(ids.span, &span(t, "KIND")), b"KIND op", 7, 18);
    bad(Avro, "enum-index-out-of-range", Some(kind), "avro", p);
    // the first attribute's value: union branch 7 of 4 (zig-zag 14)
    let union = patch(
        framed(ids.span, &span(t, "x")),
        b"http.request.method",
        19,
        14,
    );
    bad(Avro, "union-branch-out-of-range", Some(union), "avro", p);
    let (_, p) = next();
    bad(
        Avro,
        "zero-trace-id",
        Some(framed(ids.span, &span(0, "x"))),
        "invalid_span",
        p,
    );
    let (t, p) = next();
    let own = testkit::span(t, 5, 5, base, base + 1, "x");
    bad(
        Avro,
        "own-parent",
        Some(framed(ids.span, &own)),
        "invalid_span",
        p,
    );
    let (t, p) = next();
    let old = testkit::span(t, 1, 0, -S, base, "x");
    bad(
        Avro,
        "start-before-1970",
        Some(framed(ids.span, &old)),
        "time_out_of_range",
        p,
    );
    // 2200-01-01
    let future = testkit::span(t, 1, 0, base, 7_258_118_400 * S, "x");
    bad(
        Avro,
        "end-in-2200",
        Some(framed(ids.span, &future)),
        "time_out_of_range",
        p,
    );
    let mut other = Vec::new();
    avro::put_frame(&mut other, ids.other);
    spanline::codec::avro_bin::put_long(&mut other, 5);
    bad(Avro, "writer-schema-not-a-span", Some(other), "schema", p);

    let (t, p) = next();
    bad(Proto, "garbage", Some(vec![0xff; 16]), "protobuf", p);
    let whole = otlp::encode_proto(&four_spans(t, base));
    bad(
        Proto,
        "truncated",
        Some(whole[..whole.len() - 7].to_vec()),
        "protobuf",
        p,
    );
    // field 2 of the request does not exist: valid protobuf, no spans
    bad(
        Proto,
        "not-a-trace-request",
        Some(b"\x12\x03abc".to_vec()),
        "invalid_span",
        p,
    );
    let (t, p) = next();
    let short_trace = proto_with(&[span(t, "x")], |s| s.trace_id.truncate(15));
    bad(
        Proto,
        "trace-id-of-15-bytes",
        Some(short_trace),
        "invalid_span",
        p,
    );
    let short_span = proto_with(&[span(t, "x")], |s| s.span_id.truncate(4));
    bad(
        Proto,
        "span-id-of-4-bytes",
        Some(short_span),
        "invalid_span",
        p,
    );
    let long_parent = proto_with(&[span(t, "x")], |s| s.parent_span_id = vec![1; 9]);
    bad(
        Proto,
        "parent-id-of-9-bytes",
        Some(long_parent),
        "invalid_span",
        p,
    );
    let (t, p) = next();
    let utf8 = patch(otlp::encode_proto([&span(t, "UTF8")]), b"UTF8 op", 0, 0xff);
    bad(Proto, "invalid-utf8-name", Some(utf8), "protobuf", p);
    let past_2262 = proto_with(&[span(t, "x")], |s| s.end_time_unix_nano = u64::MAX);
    bad(
        Proto,
        "end-after-2262",
        Some(past_2262),
        "time_out_of_range",
        p,
    );
    let (t, p) = next();
    // three valid spans and one with a zero span id: the message is rejected whole
    let mut spans = four_spans(t, base);
    spans[3].span_id = 0;
    bad(
        Proto,
        "one-invalid-span-among-valid-ones",
        Some(otlp::encode_proto(&spans)),
        "invalid_span",
        p,
    );
    // an attribute nested 200 deep: past protobuf's recursion limit, no stack overflow
    let mut deep = AnyValue {
        value: Some(Any::StringValue("bottom".into())),
    };
    for _ in 0..200 {
        deep = AnyValue {
            value: Some(Any::ArrayValue(ArrayValue { values: vec![deep] })),
        };
    }
    let nested = proto_with(&[span(t, "x")], |s| {
        s.attributes.push(KeyValue {
            key: "deep".into(),
            value: Some(deep),
        })
    });
    bad(
        Proto,
        "attribute-nested-200-deep",
        Some(nested),
        "protobuf",
        p,
    );

    let (t, p) = next();
    bad(Json, "empty-value", Some(Vec::new()), "empty", p);
    bad(Json, "not-json", Some(b"hello, world".to_vec()), "json", p);
    bad(
        Json,
        "json-that-is-not-otlp",
        Some(br#"{"hello": "world"}"#.to_vec()),
        "json",
        p,
    );
    let mut utf8 = otlp::encode_json([&span(t, "UTF8")]);
    let at = utf8.windows(4).position(|w| w == b"UTF8").unwrap();
    utf8[at] = 0xff;
    bad(Json, "invalid-utf8", Some(utf8), "json", p);
    let (t, p) = next();
    let odd = json_with(&[span(t, "x")], |s| s["traceId"] = "abc".into());
    bad(Json, "trace-id-of-odd-length", Some(odd), "json", p);
    let short = json_with(&[span(t, "x")], |s| {
        s["traceId"] = "0102030405060708".into()
    });
    bad(Json, "trace-id-of-8-bytes", Some(short), "invalid_span", p);
    let not_hex = json_with(&[span(t, "x")], |s| s["spanId"] = "zzzzzzzzzzzzzzzz".into());
    bad(Json, "span-id-not-hex", Some(not_hex), "json", p);
    let (t, p) = next();
    let negative = json_with(&[span(t, "x")], |s| s["startTimeUnixNano"] = "-5".into());
    bad(Json, "negative-time", Some(negative), "json", p);
    // 2500-01-01: a valid u64, far in the future
    let year_2500 = json_with(&[span(t, "x")], |s| {
        s["endTimeUnixNano"] = "16725225600000000000".into()
    });
    bad(Json, "end-in-2500", Some(year_2500), "time_out_of_range", p);
    bad(
        Json,
        "no-spans",
        Some(br#"{"resourceSpans": []}"#.to_vec()),
        "invalid_span",
        p,
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    bad(
        Json,
        "nested-10000-deep",
        Some(deep.into_bytes()),
        "json",
        p,
    );
    // OTLP/JSON allows an empty AnyValue; opentelemetry-proto's mapping does not
    let empty_any = json_with(&[span(t, "x")], |s| {
        s["attributes"] = serde_json::json!([{"key": "empty", "value": {}}])
    });
    bad(
        Json,
        "attribute-with-empty-any-value",
        Some(empty_any),
        "json",
        p,
    );
    out
}

/// A 10 MB span (a huge stack trace attribute) for the BIG trace, whose first two spans
/// are among [`counted_records`]: dead-lettered as `span_too_large`.
pub fn ten_mb_span(ids: &Ids, base: i64) -> Bad {
    let mut text = String::with_capacity(10 * 1024 * 1024 + 64);
    let mut line = 0;
    while text.len() < 10 * 1024 * 1024 {
        line += 1;
        text.push_str(&format!(
            "    at com.example.Orders.step{line}(Orders.java:{line})\n"
        ));
    }
    let mut span = testkit::span(BIG, 3, 1, base + 2, base + S / 5, "db");
    let mut attrs = AttributesBuilder::default();
    attrs.push("exception.stacktrace", AttrValue::Str(&text));
    span.attributes = attrs.build();
    Bad {
        record: Record {
            source: Source::Avro,
            partition: BIG_PARTITION,
            key: "avro/span-of-10-mb".into(),
            value: Some(framed(ids.span, &span)),
        },
        reason: "span_too_large",
    }
}
