//! Bad input on the live pipeline (embedded broker and schema registry, three sources:
//! Avro, OTLP protobuf, OTLP JSON): every kind of bad record in `bad_input/corpus.rs`
//! either lands on its source's dead-letter topic with the expected reason and where it
//! came from, or is a counted drop or oddity on its trace; a 1,000,000-span trace is
//! cut by `max_spans_per_trace`; the pipeline keeps running and every good trace,
//! interleaved with all of it, arrives whole.

#[path = "bad_input/corpus.rs"]
mod corpus;
#[path = "bad_input/counted.rs"]
mod counted;
#[path = "bad_input/observe.rs"]
mod observe;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use apache_avro::types::Value;

use spanline::codec::avro;
use spanline::config::load_str;
use spanline::kafka::embedded::EmbeddedKafka;
use spanline::kafka::registry_client::RegistryClient;

use corpus::{Bad, Ids, Record, Source, S};
use counted::{GIANT, GIANT_SPANS, GIANT_SPANS_PER_MESSAGE};
use observe::{counts, trace_full, traces, Counts, Sender, TraceFull, TraceOut};
use support::{Collected, Collector};

const PARTITIONS: i32 = 3;
const MAX_SPANS_PER_TRACE: u64 = 10_000;
/// Good traces per source sent between the bad records, and after all of them.
const GOOD_BEFORE: usize = 12;
const GOOD_AFTER: usize = 3;

const PIPELINE: &str = r#"
name: bad-input
kafka:
  brokers: embedded
  group_id: bad-input
  commit_interval: 500ms
  # the 10 MB record goes to the dead-letter topic unchanged
  producer_properties: {message.max.bytes: "16000000"}
schema_registry: {url: embedded}
sources:
  - {name: avro, topics: [spans-avro], format: avro, dead_letter_topic: dlq-avro}
  - {name: proto, topics: [spans-proto], format: otlp_proto, dead_letter_topic: dlq-proto}
  - {name: json, topics: [spans-json], format: otlp_json, dead_letter_topic: dlq-json}
stages:
  - type: assemble
    out_of_orderness: 1s
    idle_gap: 2s
    max_duration: 60s
    grace: 30s
    idle_partition_timeout: 60s
    max_spans_per_trace: 10000
    max_span_bytes: 65536
  - type: analyze
outputs:
  traces: {topic: traces, format: avro}
  late: {topic: spans-late, format: avro}
"#;

/// What was sent besides the pushers: the good traces, and every bad record.
struct Sent {
    good: Vec<(Source, u128)>,
    bad: Vec<Bad>,
}

/// Sends good traces of every source interleaved with the bad records and the counted
/// traces, then the 10 MB span, then the giant trace (with good traces in between),
/// more good traces, and one span per partition far ahead in event time, so that every
/// partition's watermark passes everything else.
fn send_all(tx: &mut Sender, ids: &Ids, base: i64, before: &Counts) -> Sent {
    let mut bad = corpus::dead_letter_kinds(ids, base);
    let counted_records = counted::counted_records(ids, base);
    let mut good: Vec<(Source, u128)> = Vec::new();
    let mut next_good = |tx: &mut Sender, source: Source| {
        let n = good.iter().filter(|g| g.0 == source).count() as u128;
        let id = 0x1000 * (source as u128 + 1) + n;
        for r in corpus::good_trace(source, id, base, ids) {
            tx.send(&r);
        }
        good.push((source, id));
    };
    let rounds = bad.len().max(counted_records.len());
    for i in 0..rounds {
        if i % (rounds / GOOD_BEFORE) == 0 {
            for s in Source::ALL {
                next_good(tx, s);
            }
        }
        let bad_record = bad.get(i).map(|b| &b.record);
        for r in counted_records.get(i).into_iter().chain(bad_record) {
            tx.send(r);
        }
    }
    tx.flush();
    for s in Source::ALL {
        tx.wait_read(s, 0, before);
    }
    // the 10 MB span once BIG's first spans are in (alone: it is most of a partition)
    bad.push(corpus::ten_mb_span(ids, base));
    tx.send(&bad.last().unwrap().record);
    tx.flush();
    tx.wait_read(Source::Avro, 0, before);

    // the giant trace on one partition, paced so that the broker keeps what is unread
    let messages = (GIANT_SPANS / GIANT_SPANS_PER_MESSAGE) as usize;
    for (i, value) in counted::giant_messages(base).enumerate() {
        let key = format!("proto/giant-{i}");
        let (source, partition, value) = (Source::Proto, 0, Some(value));
        tx.send(&Record {
            source,
            partition,
            key,
            value,
        });
        tx.wait_read(Source::Proto, 4, before);
        if i % (messages / 4) == 0 {
            next_good(tx, Source::Json);
            next_good(tx, Source::Avro);
        }
    }
    for _ in 0..GOOD_AFTER {
        for s in Source::ALL {
            next_good(tx, s);
        }
    }
    let ahead = base + 120 * S;
    for s in Source::ALL {
        for p in 0..PARTITIONS {
            let id = 0x7000 + (s as u128) * 8 + p as u128;
            let span = spanline::testkit::span(id, 1, 0, ahead, ahead + 1, "clock");
            for r in corpus::records(s, &[span], p, "pusher", ids) {
                tx.send(&r);
            }
        }
    }
    tx.flush();
    Sent { good, bad }
}

/// Dead letters are exactly the bad records, unchanged, each once, with its reason and
/// origin. Returns how many each reason has.
fn check_dead_letters(dead: &[Collected], sent: &Sent, tx: &Sender) -> BTreeMap<String, u64> {
    let delivered = tx.delivered.0.lock().unwrap().clone();
    let key_of = |d: &Collected| String::from_utf8_lossy(&d.key).into_owned();
    let dead_keys: BTreeSet<String> = dead.iter().map(key_of).collect();
    let bad_keys: BTreeSet<String> = sent.bad.iter().map(|b| b.record.key.clone()).collect();
    assert_eq!(
        dead_keys, bad_keys,
        "dead letters are exactly the bad records"
    );
    assert_eq!(dead.len(), sent.bad.len(), "each dead-lettered once");
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for b in &sent.bad {
        let key = &b.record.key;
        let d = dead.iter().find(|d| d.key == key.as_bytes()).unwrap();
        let (partition, offset) = delivered[key].clone().unwrap();
        let h = &d.headers;
        let message = &h["spanline.error.message"];
        assert_eq!(h["spanline.error.reason"], b.reason, "{key}: {message}");
        assert!(!message.is_empty(), "{key}");
        assert_eq!(d.topic, b.record.source.dlq(), "{key}");
        assert_eq!(h["spanline.source.topic"], b.record.source.topic(), "{key}");
        assert_eq!(
            h["spanline.source.partition"],
            partition.to_string(),
            "{key}"
        );
        assert_eq!(h["spanline.source.offset"], offset.to_string(), "{key}");
        let original = b.record.value.as_deref().unwrap_or_default();
        assert!(d.value == original, "{key}: value changed");
        *reasons.entry(b.reason.to_string()).or_default() += 1;
    }
    let unknown = dead.iter().find(|d| d.key == b"avro/unknown-schema-id");
    assert_eq!(
        unknown.unwrap().headers["spanline.source.schema_id"],
        "999999"
    );
    reasons
}

type ById<'a> = BTreeMap<u128, Vec<&'a (Collected, TraceOut)>>;

/// The one record of trace `id`, decoded.
fn one<'a>(by_id: &'a ById<'_>, id: u128) -> (TraceFull, &'a TraceOut) {
    let recs = &by_id[&id];
    assert_eq!(recs.len(), 1, "trace {id:#x} in one record");
    (trace_full(&recs[0].0.value), &recs[0].1)
}

fn span_ids(t: &TraceFull) -> Vec<u64> {
    t.spans.keys().copied().collect()
}

/// The traces whose trouble is counted, one by one.
fn check_counted(by_id: &ById<'_>) {
    let (t, _) = one(by_id, counted::CYCLE);
    let got = (span_ids(&t), t.oddities.get("cycles"));
    assert_eq!(got, (vec![1, 2, 3], Some(&1)), "parent cycle");
    let (t, _) = one(by_id, counted::BACKWARDS);
    let got = (span_ids(&t), t.oddities.get("negative_durations"));
    assert_eq!(got, (vec![1, 2], Some(&1)), "end before start");
    let (t, _) = one(by_id, counted::ORPHAN);
    let got = (span_ids(&t), t.oddities.get("orphans"));
    assert_eq!(got, (vec![1, 2, 3], Some(&1)), "orphan");
    let (t, _) = one(by_id, counted::DUP_AVRO);
    let got = (span_ids(&t), t.spans[&2].0.as_str());
    assert_eq!(got, (vec![1, 2, 3, 4], "orders op"), "the first copy stays");
    let (t, _) = one(by_id, counted::DUP_JSON);
    let got = (span_ids(&t), t.spans[&2].0.as_str());
    assert_eq!(got, (vec![1, 2], "orders op"), "the first copy stays");
    let (t, head) = one(by_id, counted::BIG);
    let got = (span_ids(&t), head.reason.as_str(), head.incomplete);
    assert_eq!(
        got,
        (vec![1, 2], "completed", true),
        "BIG, without its 10 MB span"
    );

    let text = |s: &str| Value::String(s.into());
    let (t, _) = one(by_id, counted::ATTRS_PROTO);
    let mut attrs = t.spans[&1].1.clone();
    // NaN is not equal to itself
    let nan = attrs.remove("d");
    assert!(
        matches!(nan, Some(Value::Double(d)) if d.is_nan()),
        "{nan:?}"
    );
    // arrays, maps and bytes as their JSON text; the empty value skipped
    let mut want = BTreeMap::from([
        ("s".to_string(), text("text")),
        ("b".into(), Value::Boolean(true)),
        ("i".into(), Value::Long(i64::MIN)),
        ("by".into(), text(r#"{"bytesValue":[1,2,255]}"#)),
        (
            "arr".into(),
            text(r#"{"arrayValue":{"values":[{"intValue":"1"}]}}"#),
        ),
        (
            "kv".into(),
            text(r#"{"kvlistValue":{"values":[{"key":"k","value":{"boolValue":false}}]}}"#),
        ),
    ]);
    assert_eq!(attrs, want, "every OTLP attribute type");
    let (t, _) = one(by_id, counted::ATTRS_JSON);
    want.insert("d".into(), Value::Double(2.5));
    want.insert("n".into(), Value::Long(7));
    assert_eq!(t.spans[&1].1, want, "every OTLP/JSON attribute type");

    // the giant trace, cut every 10,000 spans: the first record closed early as
    // incomplete, the rest amendments; no span lost
    let giant = &by_id[&GIANT];
    assert_eq!(giant.len(), GIANT_RECORDS);
    let spans: u64 = giant.iter().map(|t| t.1.span_count as u64).sum();
    assert_eq!(spans, GIANT_SPANS);
    assert_eq!(giant.iter().filter(|t| !t.1.amendment).count(), 1);
    for (_, t) in giant.iter().copied() {
        let got = (t.reason.as_str(), t.incomplete, t.span_count as u64);
        assert_eq!(got, ("evicted_max_spans", true, MAX_SPANS_PER_TRACE));
    }
}

/// Every counter of bad input as it must have moved, zeros included.
fn expected_counts(before: &Counts, tx: &Sender, sent: &Sent) -> BTreeMap<String, u64> {
    let mut want: BTreeMap<String, u64> = before.0.keys().map(|k| (k.clone(), 0)).collect();
    let mut add = |key: String, n: u64| *want.get_mut(&key).expect("a known counter") += n;
    for (source, n) in &tx.sent {
        add(format!("records_in/{}", source.name()), *n);
    }
    for b in &sent.bad {
        add(format!("dead_lettered/{}", b.reason), 1);
        if b.reason != "span_too_large" {
            add(
                format!("decode_errors/{}/{}", b.record.source.name(), b.reason),
                1,
            );
        }
    }
    let amendments = GIANT_RECORDS as u64 - 1;
    // the giant's amendments hold children without their root: each span an orphan
    // under a synthetic root; the cycle and the orphan trace have one too
    let orphans = GIANT_SPANS - MAX_SPANS_PER_TRACE + 1;
    for (k, n) in [
        ("closed/completed", (sent.good.len() + SPECIAL.len()) as u64),
        ("closed/evicted_max_spans", GIANT_RECORDS as u64),
        ("amendments", amendments),
        // spans for a trace already closed (here: by the bound) count as amending it
        ("late/amended", GIANT_SPANS - MAX_SPANS_PER_TRACE),
        ("duplicates", 2),
        ("dropped/too_large", 1),
        ("oddities/cycles", 1),
        ("oddities/negative_durations", 1),
        ("oddities/orphans", orphans),
        ("oddities/synthetic_root", amendments + 2),
    ] {
        add(k.to_string(), n);
    }
    want
}

/// The traces whose trouble is counted, but the giant one.
const SPECIAL: [u128; 8] = [
    counted::CYCLE,
    counted::BACKWARDS,
    counted::ORPHAN,
    counted::DUP_AVRO,
    counted::DUP_JSON,
    counted::ATTRS_PROTO,
    counted::ATTRS_JSON,
    counted::BIG,
];
const GIANT_RECORDS: usize = (GIANT_SPANS / MAX_SPANS_PER_TRACE) as usize;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dead_lettered_or_counted_and_nothing_else_is_lost() {
    let started = Instant::now();
    let mut topics: Vec<String> = ["traces", "spans-late"].map(String::from).to_vec();
    for s in Source::ALL {
        topics.extend([s.topic().to_string(), s.dlq().to_string()]);
    }
    let kafka = EmbeddedKafka::start(PARTITIONS, &topics).unwrap();
    let registry = spanline::registry::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sr = RegistryClient::new(registry.url(), None, None).unwrap();
    let other = r#"{"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}"#;
    let span_schema = sr.register("spans-avro-value", avro::SPAN_SCHEMA).await;
    let ids = Ids {
        span: span_schema.unwrap(),
        other: sr.register("other-value", other).await.unwrap(),
    };
    let outputs = ["traces", "spans-late", "dlq-avro", "dlq-proto", "dlq-json"];
    let collector = Collector::start(kafka.bootstrap(), &outputs, PARTITIONS);
    let before = counts();
    let config = load_str(PIPELINE, |_| None).unwrap_or_else(|e| panic!("{e}"));
    let endpoints = spanline::runner::Endpoints {
        brokers: kafka.bootstrap().to_string(),
        registry: Some(registry.url().to_string()),
    };
    let (stop, task) = support::spawn_pipeline(config, endpoints);

    let base = spanline::runner::wall_ms() * 1_000_000;
    let mut tx = Sender::new(kafka.bootstrap());
    let sent = send_all(&mut tx, &ids, base, &before);
    let sent_in = started.elapsed();

    // every trace that can close has, every bad record is dead-lettered
    let want_traces = sent.good.len() + SPECIAL.len() + GIANT_RECORDS;
    let is_dead = |r: &&Collected| r.topic.starts_with("dlq-");
    let arrived = collector.wait_until(Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.topic == "traces").count() >= want_traces
            && r.iter().filter(is_dead).count() >= sent.bad.len()
    });
    let (traces_out, dead): (Vec<(Collected, TraceOut)>, Vec<Collected>) = collector.with(|r| {
        let t = traces(r).into_iter().map(|(c, t)| (c.clone(), t)).collect();
        (t, r.iter().filter(is_dead).cloned().collect())
    });
    let (t, d) = (traces_out.len(), dead.len());
    assert!(
        arrived,
        "{t} of {want_traces} traces and {d} dead letters arrived"
    );
    check_dead_letters(&dead, &sent, &tx);

    // every good trace whole, once; no trace of a dead-lettered record, no late span
    let mut by_id: ById<'_> = BTreeMap::new();
    for t in &traces_out {
        by_id.entry(t.1.id).or_default().push(t);
    }
    for (source, id) in &sent.good {
        assert!(by_id.contains_key(id), "good {source:?} trace {id:#x} lost");
        let (t, head) = one(&by_id, *id);
        let got = (head.reason.as_str(), head.amendment, head.incomplete);
        assert_eq!(got, ("completed", false, false), "{id:#x}");
        assert_eq!(span_ids(&t), [1, 2, 3, 4], "{id:#x}");
    }
    let good = sent.good.iter().map(|g| g.1);
    let known: BTreeSet<u128> = good.chain(SPECIAL).chain([GIANT]).collect();
    let unknown: Vec<_> = by_id.keys().filter(|id| !known.contains(id)).collect();
    assert!(unknown.is_empty(), "traces of bad records: {unknown:x?}");
    let late = collector.with(|r| r.iter().filter(|r| r.topic == "spans-late").count());
    assert_eq!(late, 0, "no span was late");
    check_counted(&by_id);

    // the counters: every reason, drop and oddity exactly as above, nothing else
    let want = expected_counts(&before, &tx, &sent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts().since(&before) != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(counts().since(&before), want);

    assert!(!task.is_finished(), "the pipeline is still running");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    eprintln!(
        "bad input: {} records dead-lettered, sent in {sent_in:?}, checked in {:?}",
        sent.bad.len(),
        started.elapsed()
    );
}
