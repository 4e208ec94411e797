//! End to end against a real broker process: the tansu Kafka-compatible broker.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use apache_avro::Schema;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use spanline::codec::avro;
use spanline::config::load_str;
use spanline::kafka::registry_client::RegistryClient;
use spanline::runner::{self, Endpoints};
use spanline::telemetry::http::Readiness;
use spanline::testkit;

const S: i64 = 1_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_spans_to_traces_through_a_tansu_broker() {
    let Some(broker) = support::Tansu::start_or_skip() else {
        return;
    };
    broker.create_topics(&[("spans", 2), ("traces", 2), ("spans-late", 1)]);
    let registry = spanline::registry::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sr = RegistryClient::new(registry.url(), None, None).unwrap();
    let id = sr.register("spans-value", avro::SPAN_SCHEMA).await.unwrap();

    // spans first, then the pipeline: it reads them from the earliest offset
    let producer: BaseProducer = broker.client_config().create().unwrap();
    let base = runner::wall_ms() * 1_000_000;
    let mut expected = BTreeSet::new();
    for t in 0..20u128 {
        let trace = 7000 + t;
        expected.insert(trace);
        let spans = [
            testkit::span(trace, 1, 0, base, base + S / 2, "gateway"),
            testkit::span(trace, 2, 1, base + 1, base + S / 4, "orders"),
            testkit::span(trace, 3, 2, base + 2, base + S / 8, "db"),
        ];
        for (i, s) in spans.iter().enumerate() {
            let mut buf = Vec::new();
            avro::put_frame(&mut buf, id);
            avro::write_span(&mut buf, s);
            producer
                .send(
                    BaseRecord::to("spans")
                        .partition(((t as usize + i) % 2) as i32)
                        .key("k")
                        .payload(&buf),
                )
                .unwrap();
        }
    }
    for p in 0..2 {
        let clock = testkit::span(
            9000 + p as u128,
            1,
            0,
            base + 60 * S,
            base + 60 * S + 1,
            "clock",
        );
        let mut buf = Vec::new();
        avro::put_frame(&mut buf, id);
        avro::write_span(&mut buf, &clock);
        producer
            .send(BaseRecord::to("spans").partition(p).key("k").payload(&buf))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let group = format!("tansu-e2e-{}", std::process::id());
    let text = format!(
        "name: tansu\nkafka: {{brokers: '{}', group_id: {group}, commit_interval: 500ms}}\nschema_registry: {{url: '{}'}}\n\
         sources: [{{name: spans, topics: [spans], format: avro}}]\n\
         stages: [{{type: assemble, out_of_orderness: 1s, idle_gap: 2s, idle_partition_timeout: 60s}}]\n\
         outputs: {{traces: {{topic: traces}}, late: {{topic: spans-late}}}}\n",
        broker.bootstrap(),
        registry.url()
    );
    let config = load_str(&text, |_| None).unwrap_or_else(|e| panic!("{e}"));
    let endpoints = Endpoints {
        brokers: broker.bootstrap(),
        registry: Some(registry.url().to_string()),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner::run(
        config,
        endpoints,
        Readiness::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", format!("{group}-reader"))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset("traces", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let schema = Schema::parse_str(avro::TRACE_SCHEMA).unwrap();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && seen != expected {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let (_, datum) = avro::unframe(m.payload().unwrap()).unwrap();
        let Value::Record(fields) = avro::read_value(&schema, None, datum).unwrap() else {
            panic!()
        };
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let Value::Fixed(16, bytes) = get("trace_id") else {
            panic!()
        };
        let trace = u128::from_be_bytes(bytes.try_into().unwrap());
        assert_eq!(get("span_count"), Value::Int(3), "trace {trace}");
        assert_eq!(get("close_reason"), Value::Enum(0, "completed".into()));
        seen.insert(trace);
    }
    assert_eq!(
        seen,
        expected,
        "traces through tansu\nbroker log:\n{}",
        broker.log_tail()
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
