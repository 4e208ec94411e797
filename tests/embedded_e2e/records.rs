//! The records the tests send and read: a producer, traces of four spans and the spans
//! that push every partition's watermark past them, and a reader of output topics that
//! decodes Avro trace records and sees the group's committed offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use apache_avro::Schema;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use spanline::codec::avro;
use spanline::model::{hex_trace_id, Span};
use spanline::testkit;

use super::{Env, PARTITIONS, S};

pub fn producer(env: &Env) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", env.kafka.bootstrap())
        .create()
        .unwrap()
}

pub fn send(p: &BaseProducer, topic: &str, partition: i32, value: &[u8]) {
    p.send(
        BaseRecord::to(topic)
            .partition(partition)
            .key("k")
            .payload(value),
    )
    .unwrap();
    p.poll(Duration::ZERO);
}

pub fn flush(p: &BaseProducer) {
    p.flush(Duration::from_secs(10)).unwrap();
}

/// `traces` traces of a root and three children at event time `base`.
pub fn traces(first_id: u128, n: u128, base: i64) -> Vec<Span> {
    let mut out = Vec::new();
    for t in first_id..first_id + n {
        out.push(testkit::span(t, 1, 0, base, base + S / 2, "gateway"));
        out.push(testkit::span(t, 2, 1, base + 1, base + S / 10, "orders"));
        out.push(testkit::span(t, 3, 1, base + 2, base + S / 5, "db"));
        out.push(testkit::span(t, 4, 2, base + 3, base + S / 20, "cache"));
    }
    out
}

/// One span per partition far ahead in event time, so every partition's watermark passes.
pub fn pushers(id: u128, base: i64) -> Vec<(i32, Span)> {
    (0..PARTITIONS)
        .map(|p| {
            (
                p,
                testkit::span(id + p as u128, 1, 0, base, base + 1, "clock"),
            )
        })
        .collect()
}

pub fn framed(id: u32, span: &Span) -> Vec<u8> {
    let mut buf = Vec::new();
    avro::put_frame(&mut buf, id);
    avro::write_span(&mut buf, span);
    buf
}

pub struct Received {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Reads `topic` from the beginning until `done` holds or the deadline passes.
pub fn read_until(
    env: &Env,
    topic: &str,
    deadline: Duration,
    mut done: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env.kafka.bootstrap())
        .set("group.id", "e2e-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + deadline;
    while Instant::now() < end && !done(&got) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            got.push(Received {
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    got
}

fn field<'a>(fields: &'a [(String, Value)], name: &str) -> &'a Value {
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

/// Decodes Avro trace records: trace id → (span ids, close reason, amendment).
pub fn decode_traces(records: &[Received]) -> Vec<(u128, BTreeSet<u64>, String, bool)> {
    let schema = Schema::parse_str(avro::TRACE_SCHEMA).unwrap();
    records
        .iter()
        .map(|r| {
            let (_, datum) = avro::unframe(&r.value).unwrap();
            let Value::Record(f) = avro::read_value(&schema, None, datum).unwrap() else {
                panic!()
            };
            let Value::Fixed(16, id) = field(&f, "trace_id") else {
                panic!()
            };
            let id = u128::from_be_bytes(id.as_slice().try_into().unwrap());
            let Value::Array(spans) = field(&f, "spans") else {
                panic!()
            };
            let ids = spans
                .iter()
                .map(|s| {
                    let Value::Record(sf) = s else { panic!() };
                    let Value::Fixed(8, b) = field(sf, "span_id") else {
                        panic!()
                    };
                    u64::from_be_bytes(b.as_slice().try_into().unwrap())
                })
                .collect();
            let Value::Enum(_, reason) = field(&f, "close_reason") else {
                panic!()
            };
            let Value::Boolean(amendment) = field(&f, "amendment") else {
                panic!()
            };
            // the key is the Avro TraceKey with the same id
            let (_, key) = avro::unframe(&r.key).unwrap();
            let key_schema = Schema::parse_str(avro::TRACE_KEY_SCHEMA).unwrap();
            let Value::Record(kf) = avro::read_value(&key_schema, None, key).unwrap() else {
                panic!()
            };
            assert_eq!(field(&kf, "trace_id"), &Value::String(hex_trace_id(id)));
            (id, ids, reason.clone(), *amendment)
        })
        .collect()
}

/// True once `group` has a committed offset on some partition of `spans`.
pub fn wait_for_commit(env: &Env, group: &str, deadline: Duration) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env.kafka.bootstrap())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition("spans", p);
    }
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Ok(c) = consumer.committed_offsets(tpl.clone(), Duration::from_secs(2)) {
            if c.elements()
                .iter()
                .any(|e| matches!(e.offset(), Offset::Offset(o) if o > 0))
            {
                return true;
            }
        }
    }
    false
}
