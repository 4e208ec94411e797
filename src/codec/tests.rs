use apache_avro::types::Value;
use apache_avro::Schema;

use super::avro::{self, read_span, write_span, write_trace, AvroSpanDecoder, ResourceCache};
use super::avro_bin::Reader;
use super::otlp::{self, encode_json, encode_proto, OtlpDecoder};
use super::*;
use crate::model::{
    AttrValue, AttributesBuilder, CloseReason, EventsBuilder, Interner, StatusCode, Trace,
};
use crate::testkit;

fn rich_span() -> Span {
    let mut s = testkit::span(
        0x0102030405060708090a0b0c0d0e0f10,
        0x1112131415161718,
        0x2122232425262728,
        1_000,
        5_000,
        "checkout",
    );
    s.status = StatusCode::Error;
    s.status_message = Some("boom".into());
    let mut ev_attrs = AttributesBuilder::default();
    ev_attrs
        .push("exception.type", AttrValue::Str("Timeout"))
        .push("ratio", AttrValue::Double(0.5));
    let mut ev = EventsBuilder::default();
    ev.push(2_000, "exception", &ev_attrs.build());
    s.events = ev.build();
    s
}

fn framed(id: u32, span: &Span) -> Vec<u8> {
    let mut buf = Vec::new();
    avro::put_frame(&mut buf, id);
    write_span(&mut buf, span);
    buf
}

#[test]
fn span_datum_round_trips() {
    let span = rich_span();
    let mut buf = Vec::new();
    write_span(&mut buf, &span);
    let back = read_span(
        &mut Reader::new(&buf),
        &mut Interner::default(),
        &mut ResourceCache::default(),
    )
    .unwrap();
    assert_eq!(back, span);
}

#[test]
fn our_span_bytes_are_avro_that_apache_avro_reads() {
    let schema = avro::span_schema();
    let span = rich_span();
    let mut buf = Vec::new();
    write_span(&mut buf, &span);
    let value = avro::read_value(&schema, None, &buf).unwrap();
    let Value::Record(fields) = value else {
        panic!("not a record")
    };
    let get = |n: &str| {
        fields
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("name"), Value::String("checkout op".into()));
    assert_eq!(get("status_code"), Value::Enum(2, "ERROR".into()));
    assert_eq!(get("start_time_unix_nano"), Value::Long(1_000));
    // and apache-avro's own encoding of that value is byte-identical to ours
    let again = avro::write_value(&schema, Value::Record(fields)).unwrap();
    assert_eq!(again, buf);
}

#[test]
fn trace_bytes_are_avro_of_the_trace_schema() {
    let schema = Schema::parse_str(avro::TRACE_SCHEMA).unwrap();
    let root = testkit::span(7, 1, 0, 0, 100, "gateway");
    let child = testkit::span(7, 2, 1, 10, 90, "db");
    let trace = Trace {
        trace_id: 7,
        spans: vec![root, child],
        amendment: false,
        close_reason: CloseReason::MaxDuration,
        incomplete: true,
    };
    let mut buf = Vec::new();
    write_trace(&mut buf, &trace, None);
    let Value::Record(fields) = avro::read_value(&schema, None, &buf).unwrap() else {
        panic!()
    };
    let get = |n: &str| {
        fields
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("close_reason"), Value::Enum(1, "max_duration".into()));
    assert_eq!(get("span_count"), Value::Int(2));
    assert_eq!(get("duration_ns"), Value::Long(100));
    assert_eq!(
        get("root_service"),
        Value::Union(1, Box::new(Value::String("gateway".into())))
    );
    assert_eq!(
        get("services"),
        Value::Array(vec![
            Value::String("db".into()),
            Value::String("gateway".into())
        ])
    );
    let Value::Array(spans) = get("spans") else {
        panic!()
    };
    assert_eq!(spans.len(), 2);
}

#[test]
fn evolved_writer_schema_with_an_added_optional_field_still_decodes() {
    let mut json: serde_json::Value = serde_json::from_str(avro::SPAN_SCHEMA).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"name": "tenant", "type": ["null", "string"], "default": null}
        ));
    let writer = Schema::parse(&json).unwrap();
    // encode with the writer schema: our datum plus the new field
    let span = rich_span();
    let mut datum = Vec::new();
    write_span(&mut datum, &span);
    let Value::Record(mut fields) = avro::read_value(&avro::span_schema(), None, &datum).unwrap()
    else {
        panic!()
    };
    fields.push((
        "tenant".into(),
        Value::Union(1, Box::new(Value::String("acme".into()))),
    ));
    let mut record = Vec::new();
    avro::put_frame(&mut record, 42);
    record.extend(avro::write_value(&writer, Value::Record(fields)).unwrap());

    let mut dec = AvroSpanDecoder::default();
    assert!(matches!(
        dec.decode(&record),
        Err(DecodeError::UnknownSchemaId(42))
    ));
    dec.add_schema(42, &json.to_string()).unwrap();
    assert_eq!(dec.decode(&record).unwrap(), span);
}

#[test]
fn native_schema_takes_the_fast_path_and_rejects_trailing_garbage() {
    let span = rich_span();
    let mut dec = AvroSpanDecoder::default();
    dec.add_schema(1, avro::SPAN_SCHEMA).unwrap();
    let mut rec = framed(1, &span);
    assert_eq!(dec.decode(&rec).unwrap(), span);
    rec.push(7);
    assert!(matches!(dec.decode(&rec), Err(DecodeError::Invalid(_))));
}

#[test]
fn malformed_avro_records_are_errors_with_reasons() {
    let mut dec = AvroSpanDecoder::default();
    dec.add_schema(1, avro::SPAN_SCHEMA).unwrap();
    let good = framed(1, &rich_span());
    assert_eq!(dec.decode(&[]).unwrap_err().reason(), "empty");
    assert_eq!(
        dec.decode(b"{\"x\":1}").unwrap_err().reason(),
        "bad_magic_byte"
    );
    assert_eq!(dec.decode(&good[..3]).unwrap_err().reason(), "avro");
    for cut in 5..good.len() {
        assert!(
            dec.decode(&good[..cut]).is_err(),
            "prefix of {cut} bytes decoded"
        );
    }
    let zero_trace = framed(1, &testkit::span(0, 1, 0, 0, 1, "x"));
    assert_eq!(
        dec.decode(&zero_trace).unwrap_err().reason(),
        "invalid_span"
    );
}

#[test]
fn otlp_proto_round_trips_many_spans_in_one_message() {
    let spans = vec![
        rich_span(),
        testkit::span(9, 1, 0, 0, 10, "gateway"),
        testkit::span(9, 2, 1, 1, 9, "db"),
    ];
    let bytes = encode_proto(&spans);
    let mut out = Vec::new();
    OtlpDecoder::default()
        .decode_proto(&bytes, &mut out)
        .unwrap();
    assert_eq!(out, spans);
}

#[test]
fn otlp_json_as_the_collector_writes_it() {
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"frontend"}},
        {"key":"host.name","value":{"stringValue":"h1"}}]},
      "scopeSpans":[{"scope":{"name":"io.opentelemetry"},"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
         "parentSpanId":"eee19b7ec3c1b173","name":"GET /api","kind":2,
         "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
         "attributes":[{"key":"http.status_code","value":{"intValue":"500"}},
                       {"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"}]}}}],
         "events":[{"timeUnixNano":"1544712660500000000","name":"retry","attributes":[]}],
         "status":{"code":2,"message":"oops"}}]}]}]}"#;
    let mut out = Vec::new();
    OtlpDecoder::default()
        .decode_json(json.as_bytes(), &mut out)
        .unwrap();
    let s = &out[0];
    assert_eq!(
        crate::model::hex_trace_id(s.trace_id),
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(crate::model::hex_span_id(s.span_id), "eee19b7ec3c1b174");
    assert_eq!(s.service(), "frontend");
    assert_eq!(
        s.resource.attributes.get("host.name"),
        Some(AttrValue::Str("h1"))
    );
    assert_eq!(
        s.attributes.get("http.status_code"),
        Some(AttrValue::Int(500))
    );
    assert!(matches!(s.attributes.get("tags"), Some(AttrValue::Str(t)) if t.contains('a')));
    assert_eq!(s.status, StatusCode::Error);
    assert_eq!(s.end_ns - s.start_ns, 1_000_000_000);
    assert_eq!(s.events.iter().count(), 1);
    // our own JSON encoding reads back the same
    let mut again = Vec::new();
    OtlpDecoder::default()
        .decode_json(&encode_json(&out), &mut again)
        .unwrap();
    assert_eq!(again, out);
}

#[test]
fn otlp_message_with_one_invalid_span_is_rejected_whole() {
    let spans = vec![
        testkit::span(9, 1, 0, 0, 10, "gateway"),
        testkit::span(9, 0, 1, 1, 9, "db"),
    ];
    let mut out = Vec::new();
    let err = OtlpDecoder::default()
        .decode_proto(&encode_proto(&spans), &mut out)
        .unwrap_err();
    assert_eq!(err.reason(), "invalid_span");
    assert!(out.is_empty());
    assert_eq!(
        OtlpDecoder::default()
            .decode_proto(b"\xff\xff\xff", &mut out)
            .unwrap_err()
            .reason(),
        "protobuf"
    );
    assert_eq!(
        OtlpDecoder::default()
            .decode_json(b"not json", &mut out)
            .unwrap_err()
            .reason(),
        "json"
    );
}

#[test]
fn resources_are_shared_between_spans() {
    let spans = vec![
        testkit::span(9, 1, 0, 0, 10, "gateway"),
        testkit::span(9, 2, 1, 1, 9, "gateway"),
    ];
    let mut dec = SpanDecoder::new(Format::Avro);
    dec.avro().add_schema(3, avro::SPAN_SCHEMA).unwrap();
    let mut out = Vec::new();
    for s in &spans {
        dec.decode(&framed(3, s), &mut out).unwrap();
    }
    assert!(std::sync::Arc::ptr_eq(&out[0].resource, &out[1].resource));
}

#[test]
fn times_before_1970_or_from_2100_on_are_rejected_with_their_own_reason() {
    let mut dec = AvroSpanDecoder::default();
    dec.add_schema(1, avro::SPAN_SCHEMA).unwrap();
    let before_1970 = framed(1, &testkit::span(9, 1, 0, -1_000_000_000, 5, "x"));
    let err = dec.decode(&before_1970).unwrap_err();
    assert_eq!(err.reason(), "time_out_of_range");
    assert!(err.to_string().contains("before 1970"), "{err}");
    let after_2100 = framed(1, &testkit::span(9, 1, 0, 5, MAX_TIME_NS, "x"));
    assert_eq!(
        dec.decode(&after_2100).unwrap_err().reason(),
        "time_out_of_range"
    );
    let last_good = framed(1, &testkit::span(9, 1, 0, 0, MAX_TIME_NS - 1, "x"));
    assert!(dec.decode(&last_good).is_ok());

    // OTLP times are unsigned: past i64::MAX they are checked before they could wrap
    let mut req = otlp::to_request([&testkit::span(9, 1, 0, 5, 6, "x")]);
    req.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano = u64::MAX;
    let bytes = prost::Message::encode_to_vec(&req);
    let err = OtlpDecoder::default()
        .decode_proto(&bytes, &mut Vec::new())
        .unwrap_err();
    assert_eq!(err.reason(), "time_out_of_range");
    assert!(err.to_string().contains("18446744073709551615"), "{err}");
    // the year 2500 in OTLP/JSON
    let json = String::from_utf8(encode_json([&testkit::span(9, 1, 0, 5, 6, "x")]))
        .unwrap()
        .replace("\"6\"", "\"16725225600000000000\"");
    let err = OtlpDecoder::default()
        .decode_json(json.as_bytes(), &mut Vec::new())
        .unwrap_err();
    assert_eq!(err.reason(), "time_out_of_range", "{json}");
}

#[test]
fn empty_records_are_empty_in_every_format() {
    for format in [Format::Avro, Format::OtlpProto, Format::OtlpJson] {
        let err = SpanDecoder::new(format)
            .decode(&[], &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.reason(), "empty", "{format:?}");
    }
}
