//! How tests/bad_input.rs sends records and reads what the pipeline did: a producer
//! that remembers where each record went, the pipeline's counters of bad input, and
//! trace records decoded.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use apache_avro::Schema;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

use spanline::codec::avro_bin::Reader;
use spanline::codec::{avro, DecodeError};
use spanline::model::CloseReason;
use spanline::stage::analyze::Oddities;
use spanline::telemetry::metrics;

use crate::corpus::{Record, Source};
use crate::support::Collected;

/// Where a record was written (partition, offset), or why it was not.
pub type Delivery = Result<(i32, i64), String>;

/// Where each keyed record was written, by key.
#[derive(Clone, Default)]
pub struct Delivered(pub Arc<Mutex<HashMap<String, Delivery>>>);

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let (key, outcome) = match result {
            Ok(m) => (m.key(), Ok((m.partition(), m.offset()))),
            Err((e, m)) => (m.key(), Err(e.to_string())),
        };
        let key = String::from_utf8_lossy(key.unwrap_or_default()).into_owned();
        self.0.lock().unwrap().insert(key, outcome);
    }
}

/// The test's producer; it counts what it sent to each source.
pub struct Sender {
    producer: BaseProducer<Delivered>,
    pub delivered: Delivered,
    pub sent: BTreeMap<Source, u64>,
}

impl Sender {
    pub fn new(bootstrap: &str) -> Self {
        let delivered = Delivered::default();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("message.max.bytes", "16000000")
            .set("compression.type", "lz4")
            .create_with_context(delivered.clone())
            .unwrap();
        Sender {
            producer,
            delivered,
            sent: BTreeMap::new(),
        }
    }

    pub fn send(&mut self, r: &Record) {
        let mut record = BaseRecord::to(r.source.topic())
            .partition(r.partition)
            .key(&r.key);
        if let Some(v) = &r.value {
            record = record.payload(v);
        }
        self.producer.send(record).map_err(|(e, _)| e).unwrap();
        self.producer.poll(Duration::ZERO);
        *self.sent.entry(r.source).or_default() += 1;
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).unwrap();
    }

    /// Flushes, then waits until the pipeline has read every record sent to `source`
    /// but `lag` (the embedded broker drops a partition's oldest records past 5 MB).
    pub fn wait_read(&self, source: Source, lag: u64, before: &Counts) {
        self.producer.poll(Duration::ZERO);
        let want = self
            .sent
            .get(&source)
            .copied()
            .unwrap_or(0)
            .saturating_sub(lag);
        let key = format!("records_in/{}", source.name());
        let deadline = Instant::now() + Duration::from_secs(60);
        while counts().delta(before, &key) < want {
            assert!(
                Instant::now() < deadline,
                "the pipeline stopped reading {key}"
            );
            self.producer.poll(Duration::from_millis(5));
        }
    }
}

/// The pipeline's counters of bad input, by name, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts(pub BTreeMap<String, u64>);

pub fn counts() -> Counts {
    let mut c = BTreeMap::new();
    for r in DecodeError::REASONS.iter().chain(["span_too_large"].iter()) {
        c.insert(
            format!("dead_lettered/{r}"),
            metrics::DEAD_LETTERED.with_label_values(&[r]).get(),
        );
        c.insert(
            format!("skipped/{r}"),
            metrics::UNDELIVERABLE.with_label_values(&[r]).get(),
        );
        for s in Source::ALL {
            let n = metrics::DECODE_ERRORS
                .with_label_values(&[s.name(), r])
                .get();
            c.insert(format!("decode_errors/{}/{r}", s.name()), n);
        }
    }
    for s in Source::ALL {
        let n = metrics::RECORDS_IN.with_label_values(&[s.name()]).get();
        c.insert(format!("records_in/{}", s.name()), n);
    }
    for r in CloseReason::ALL {
        let n = metrics::TRACES_CLOSED
            .with_label_values(&[r.as_str()])
            .get();
        c.insert(format!("closed/{}", r.as_str()), n);
    }
    for o in ["amended", "late_topic", "dropped"] {
        c.insert(
            format!("late/{o}"),
            metrics::LATE_SPANS.with_label_values(&[o]).get(),
        );
    }
    for r in ["too_large", "revoked"] {
        c.insert(
            format!("dropped/{r}"),
            metrics::SPANS_DROPPED.with_label_values(&[r]).get(),
        );
    }
    for k in Oddities::REASONS {
        c.insert(
            format!("oddities/{k}"),
            metrics::ODDITIES.with_label_values(&[k]).get(),
        );
    }
    c.insert("duplicates".into(), metrics::DUPLICATES.get());
    c.insert("amendments".into(), metrics::AMENDMENTS.get());
    Counts(c)
}

impl Counts {
    pub fn delta(&self, before: &Counts, key: &str) -> u64 {
        self.0[key] - before.0[key]
    }

    /// Every counter's change since `before`, zeros included.
    pub fn since(&self, before: &Counts) -> BTreeMap<String, u64> {
        self.0
            .keys()
            .map(|k| (k.clone(), self.delta(before, k)))
            .collect()
    }
}

/// The fields of a trace record that the test looks at.
#[derive(Debug)]
pub struct TraceOut {
    pub id: u128,
    pub amendment: bool,
    pub reason: String,
    pub incomplete: bool,
    pub span_count: i64,
}

/// Reads the leading fields of a trace record without decoding its spans (the giant
/// trace's records hold 10,000 each).
pub fn trace_head(value: &[u8]) -> TraceOut {
    let (_, datum) = avro::unframe(value).unwrap();
    let mut r = Reader::new(datum);
    let id = u128::from_be_bytes(r.fixed(16).unwrap().try_into().unwrap());
    let amendment = r.bool().unwrap();
    let reason = CloseReason::ALL[r.long().unwrap() as usize]
        .as_str()
        .to_string();
    let incomplete = r.bool().unwrap();
    let span_count = r.long().unwrap();
    TraceOut {
        id,
        amendment,
        reason,
        incomplete,
        span_count,
    }
}

fn field<'a>(fields: &'a [(String, Value)], name: &str) -> &'a Value {
    &fields.iter().find(|(n, _)| n == name).unwrap().1
}

/// A small trace record decoded whole: oddities, and per span id its name and
/// attributes.
pub struct TraceFull {
    pub oddities: BTreeMap<String, i32>,
    pub spans: BTreeMap<u64, (String, BTreeMap<String, Value>)>,
}

pub fn trace_full(value: &[u8]) -> TraceFull {
    let schema = Schema::parse_str(avro::TRACE_SCHEMA).unwrap();
    let (_, datum) = avro::unframe(value).unwrap();
    let Value::Record(f) = avro::read_value(&schema, None, datum).unwrap() else {
        panic!()
    };
    let Value::Map(odd) = field(&f, "oddities") else {
        panic!()
    };
    let oddities = odd
        .iter()
        .map(|(k, v)| (k.clone(), if let Value::Int(n) = v { *n } else { -1 }))
        .collect();
    let Value::Array(spans) = field(&f, "spans") else {
        panic!()
    };
    let spans = spans
        .iter()
        .map(|s| {
            let Value::Record(sf) = s else { panic!() };
            let Value::Fixed(8, id) = field(sf, "span_id") else {
                panic!()
            };
            let Value::String(name) = field(sf, "name") else {
                panic!()
            };
            let Value::Array(attrs) = field(sf, "attributes") else {
                panic!()
            };
            let attrs = attrs
                .iter()
                .map(|a| {
                    let Value::Record(af) = a else { panic!() };
                    let Value::String(k) = field(af, "key") else {
                        panic!()
                    };
                    let Value::Union(_, v) = field(af, "value") else {
                        panic!()
                    };
                    (k.clone(), (**v).clone())
                })
                .collect();
            (
                u64::from_be_bytes(id.as_slice().try_into().unwrap()),
                (name.clone(), attrs),
            )
        })
        .collect();
    TraceFull { oddities, spans }
}

/// The trace records among `records`, with their leading fields.
pub fn traces(records: &[Collected]) -> Vec<(&Collected, TraceOut)> {
    records
        .iter()
        .filter(|r| r.topic == "traces")
        .map(|r| (r, trace_head(&r.value)))
        .collect()
}
