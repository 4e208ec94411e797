//! Spans in by source format: Avro through the schema registry, with bad records sent to
//! the dead-letter topic, and OTLP protobuf and JSON messages of many spans.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use spanline::codec::{avro, otlp};
use spanline::kafka::registry_client::RegistryClient;
use spanline::model::hex_trace_id;

use super::records::{decode_traces, flush, framed, producer, pushers, read_until, send, traces};
use super::{env, now_ns, pipeline, start, S};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_spans_become_traces_and_bad_records_are_dead_lettered() {
    let env = env(&["spans", "spans-dlq", "traces", "spans-late"]).await;
    let sr = RegistryClient::new(env.registry.url(), None, None).unwrap();
    let id = sr.register("spans-value", avro::SPAN_SCHEMA).await.unwrap();
    let config = pipeline(
        "g-avro",
        "  - {name: spans, topics: [spans], format: avro, dead_letter_topic: spans-dlq}",
        "avro",
    );
    let (stop, task) = start(&env, config);

    let base = now_ns();
    let p = producer(&env);
    let spans = traces(100, 30, base);
    // spans of one trace spread over partitions, out of order, one duplicate
    for (i, s) in spans.iter().rev().enumerate() {
        send(&p, "spans", (i % 3) as i32, &framed(id, s));
    }
    send(&p, "spans", 0, &framed(id, &spans[5]));
    send(&p, "spans", 1, b"\x00\x00\x00\x00\x01garbage");
    send(&p, "spans", 2, b"{\"not\": \"avro\"}");
    for (part, s) in pushers(900, base + 30 * S) {
        send(&p, "spans", part, &framed(id, &s));
    }
    flush(&p);

    let got = read_until(&env, "traces", Duration::from_secs(60), |r| r.len() >= 30);
    let decoded = decode_traces(&got);
    let by_id: HashMap<u128, &(u128, BTreeSet<u64>, String, bool)> =
        decoded.iter().map(|t| (t.0, t)).collect();
    for t in 100..130u128 {
        let (_, ids, reason, amendment) = by_id
            .get(&t)
            .unwrap_or_else(|| panic!("trace {t} missing; got {}", decoded.len()));
        assert_eq!(ids, &BTreeSet::from([1, 2, 3, 4]), "trace {t}");
        assert_eq!(reason, "completed");
        assert!(!amendment);
    }
    assert_eq!(
        decoded.iter().filter(|t| (100..130).contains(&t.0)).count(),
        30,
        "one record per trace: the duplicate was dropped"
    );

    let dead = read_until(&env, "spans-dlq", Duration::from_secs(30), |r| r.len() >= 2);
    assert_eq!(dead.len(), 2);
    let garbage = dead
        .iter()
        .find(|d| d.value == b"\x00\x00\x00\x00\x01garbage")
        .expect("record kept unchanged");
    assert_eq!(garbage.headers["spanline.source.topic"], "spans");
    assert_eq!(garbage.headers["spanline.source.schema_id"], "1");
    assert!(garbage.headers.contains_key("spanline.source.offset"));
    assert!(garbage.headers.contains_key("spanline.error.message"));
    let json = dead.iter().find(|d| d.value.starts_with(b"{")).unwrap();
    assert_eq!(json.headers["spanline.error.reason"], "bad_magic_byte");

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_proto_and_json_messages_with_many_spans() {
    let env = env(&["otlp-proto", "otlp-json", "traces", "spans-late"]).await;
    let config = pipeline(
        "g-otlp",
        "  - {name: proto, topics: [otlp-proto], format: otlp_proto}\n  - {name: json, topics: [otlp-json], format: otlp_json}",
        "json",
    );
    let (stop, task) = start(&env, config);
    let base = now_ns();
    let p = producer(&env);
    let proto_spans = traces(200, 10, base);
    let json_spans = traces(300, 10, base);
    for (i, chunk) in proto_spans.chunks(7).enumerate() {
        send(&p, "otlp-proto", (i % 3) as i32, &otlp::encode_proto(chunk));
    }
    for (i, chunk) in json_spans.chunks(9).enumerate() {
        send(&p, "otlp-json", (i % 3) as i32, &otlp::encode_json(chunk));
    }
    for (topic, id) in [("otlp-proto", 910), ("otlp-json", 920)] {
        for (part, s) in pushers(id, base + 30 * S) {
            let bytes = if topic == "otlp-proto" {
                otlp::encode_proto([&s])
            } else {
                otlp::encode_json([&s])
            };
            send(&p, topic, part, &bytes);
        }
    }
    flush(&p);
    let got = read_until(&env, "traces", Duration::from_secs(60), |r| r.len() >= 20);
    let mut seen = BTreeMap::new();
    for r in &got {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(
            std::str::from_utf8(&r.key).unwrap(),
            v["trace_id"].as_str().unwrap()
        );
        seen.insert(v["trace_id"].as_str().unwrap().to_string(), v);
    }
    for t in (200..210u128).chain(300..310) {
        let v = seen
            .get(&hex_trace_id(t))
            .unwrap_or_else(|| panic!("trace {t} missing"));
        assert_eq!(v["span_count"], 4);
        assert_eq!(v["root_service"], "gateway");
        assert_eq!(
            v["services"],
            serde_json::json!(["cache", "db", "gateway", "orders"])
        );
        assert_eq!(v["spans"][0]["span_id"], "0000000000000001");
        assert_eq!(
            v["spans"][0]["attributes"]["http.response.status_code"],
            200
        );
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
