//! The broker the exactly-once tests run on (tansu-eos, ci/tansu-eos) answers group
//! offsets the way KIP-447 needs: a `read_committed` consumer asking for the committed
//! offset of a partition whose next offset is part of a transaction still in flight is
//! told UNSTABLE_OFFSET_COMMIT (librdkafka retries) instead of the offset before that
//! transaction. Without this, an instance taking over a partition while the transaction
//! of its previous owner is being committed starts from the old offset and repeats what
//! that transaction wrote, the duplicates the scale-out test once saw after a SIGKILL.
//! And it hides the records of every transaction until it commits (the last stable
//! offset), not only those of a producer's first transaction, and never shows those of
//! an aborted one.

mod support;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use support::Tansu;

const GROUP: &str = "kip447";
const INPUT: &str = "input";
const OUTPUT: &str = "output";
const WAIT: Duration = Duration::from_secs(30);

fn transactional(broker: &Tansu, id: &str) -> BaseProducer {
    let producer: BaseProducer = broker
        .client_config()
        .set("transactional.id", id)
        .create()
        .expect("transactional producer");
    producer.init_transactions(WAIT).expect("init_transactions");
    producer
}

fn consumer(broker: &Tansu, isolation: &str) -> BaseConsumer {
    broker
        .client_config()
        .set("group.id", GROUP)
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

fn partition() -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(INPUT, 0);
    tpl
}

fn at(offset: i64) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(INPUT, 0, Offset::Offset(offset))
        .unwrap();
    tpl
}

/// The group's committed offset of `input` 0 as `reader` is told it, or the error.
fn committed(reader: &BaseConsumer, timeout: Duration) -> Result<Offset, KafkaError> {
    reader
        .committed_offsets(partition(), timeout)
        .map(|tpl| tpl.elements()[0].offset())
}

/// Begins a transaction that writes one record and commits the group's offset `offset`
/// of the input with it, and leaves it open.
fn open_transaction(producer: &BaseProducer, group: &BaseConsumer, offset: i64) {
    producer.begin_transaction().unwrap();
    producer
        .send(BaseRecord::<(), _>::to(OUTPUT).partition(0).payload("x"))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(WAIT).unwrap();
    let metadata = group.group_metadata().expect("group metadata");
    producer
        .send_offsets_to_transaction(&at(offset), &metadata, WAIT)
        .expect("send_offsets_to_transaction");
}

#[test]
fn offsets_of_a_transaction_in_flight_are_unstable_for_read_committed_readers() {
    let Some(broker) = Tansu::start_durable_or_skip() else {
        return;
    };
    broker.create_topics(&[(INPUT, 1), (OUTPUT, 1)]);
    let group = consumer(&broker, "read_committed");
    let stable = consumer(&broker, "read_committed");
    let uncommitted = consumer(&broker, "read_uncommitted");
    assert_eq!(committed(&stable, WAIT).unwrap(), Offset::Invalid);

    // committed: everyone sees 5
    let first = transactional(&broker, "first");
    open_transaction(&first, &group, 5);
    first.commit_transaction(WAIT).unwrap();
    assert_eq!(committed(&stable, WAIT).unwrap(), Offset::Offset(5));

    // in flight: read_committed readers are told to wait (librdkafka retries until its
    // timeout), read_uncommitted ones get the offset committed before it
    open_transaction(&first, &group, 8);
    let waited = committed(&stable, Duration::from_secs(3));
    assert!(
        matches!(waited, Err(KafkaError::MetadataFetch(_))),
        "a read_committed reader got {waited:?} while a transaction held offset 8\n{}",
        broker.log_tail()
    );
    assert_eq!(
        committed(&uncommitted, WAIT).unwrap(),
        Offset::Offset(5),
        "read_uncommitted readers do not ask for stable offsets"
    );
    // aborted: 5 again, at once
    first.abort_transaction(WAIT).unwrap();
    assert_eq!(committed(&stable, WAIT).unwrap(), Offset::Offset(5));

    // a reader that asked while the transaction was in flight gets its offset as soon as
    // the transaction commits
    open_transaction(&first, &group, 9);
    let reader = std::thread::spawn(move || committed(&stable, WAIT));
    std::thread::park_timeout(Duration::from_millis(500));
    assert!(
        !reader.is_finished(),
        "the reader did not wait for the transaction"
    );
    first.commit_transaction(WAIT).unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), Offset::Offset(9));

    // left open by a producer that is gone: its successor (same transactional.id)
    // aborts it, and readers see the offset before it
    let stable = consumer(&broker, "read_committed");
    let gone = transactional(&broker, "second");
    open_transaction(&gone, &group, 12);
    assert!(committed(&stable, Duration::from_secs(3)).is_err());
    let successor = transactional(&broker, "second");
    assert_eq!(committed(&stable, WAIT).unwrap(), Offset::Offset(9));
    drop(successor);
    drop(gone);
}

/// What a `read_committed` reader of `output` 0 gets from `from` on, polling for `wait`.
fn read_output(reader: &BaseConsumer, from: i64, wait: Duration) -> Vec<String> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(OUTPUT, 0, Offset::Offset(from))
        .unwrap();
    reader.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + wait;
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            let payload = rdkafka::Message::payload(&m).unwrap_or_default();
            seen.push(String::from_utf8_lossy(payload).into_owned());
        }
    }
    seen
}

/// Writes `payloads` to `output` 0 in a transaction of `producer` and leaves it open.
fn write_open(producer: &BaseProducer, payloads: &[&str]) {
    producer.begin_transaction().unwrap();
    for payload in payloads {
        send(producer, OUTPUT, payload);
    }
}

#[test]
fn records_of_an_open_transaction_are_hidden_from_read_committed_readers() {
    let Some(broker) = Tansu::start_durable_or_skip() else {
        return;
    };
    broker.create_topics(&[(INPUT, 1), (OUTPUT, 1)]);
    let producer = transactional(&broker, "writer");
    let reader = consumer(&broker, "read_committed");
    // written, not committed: a read_committed reader stops before them (the last stable
    // offset) until the commit; for every transaction of the producer, not only its first
    // (tansu 0.6 marked only the first transaction of a producer epoch as begun, so the
    // records of the later ones were visible before their commit)
    let mut committed = Vec::new();
    for (n, payloads) in [["a", "b"], ["c", "d"], ["e", "f"]].iter().enumerate() {
        write_open(&producer, payloads);
        let early = read_output(&reader, 0, Duration::from_secs(2));
        assert_eq!(early, committed, "transaction {n} read before its commit");
        producer.commit_transaction(WAIT).unwrap();
        committed.extend(payloads.iter().map(|p| p.to_string()));
        let after = read_output(&reader, 0, Duration::from_secs(3));
        assert_eq!(after, committed, "transaction {n} read after its commit");
    }
    // an aborted one is never seen
    write_open(&producer, &["x"]);
    assert_eq!(read_output(&reader, 0, Duration::from_secs(2)), committed);
    producer.abort_transaction(WAIT).unwrap();
    assert_eq!(read_output(&reader, 0, Duration::from_secs(2)), committed);
}

/// Sends `payload` to partition 0 of `topic` in `producer`'s open transaction and waits
/// for it.
fn send(producer: &BaseProducer, topic: &str, payload: &str) {
    producer
        .send(BaseRecord::<(), _>::to(topic).partition(0).payload(payload))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(WAIT).unwrap();
}

#[test]
fn an_aborted_transaction_overlapping_an_open_one_stays_aborted() {
    // stock tansu deferred the end of a transaction whose records interleave with those
    // of another producer's open transaction, keeping its outcome under the producer's
    // transactional id and epoch, which the producer's next transaction shares: the next
    // transaction's commit then committed the aborted records too (records written twice
    // by the scale-out test's instances)
    let Some(broker) = Tansu::start_durable_or_skip() else {
        return;
    };
    broker.create_topics(&[(INPUT, 1), (OUTPUT, 1)]);
    let first = transactional(&broker, "first");
    let other = transactional(&broker, "other");
    first.begin_transaction().unwrap();
    send(&first, OUTPUT, "aborted-1");
    other.begin_transaction().unwrap();
    send(&other, OUTPUT, "other");
    send(&first, OUTPUT, "aborted-2");
    first.abort_transaction(WAIT).unwrap();
    // the producer's next transaction, on another topic, committed while the other
    // producer's transaction is still open
    first.begin_transaction().unwrap();
    send(&first, INPUT, "next");
    first.commit_transaction(WAIT).unwrap();
    other.commit_transaction(WAIT).unwrap();
    let reader = consumer(&broker, "read_committed");
    assert_eq!(
        read_output(&reader, 0, Duration::from_secs(3)),
        ["other"],
        "aborted records were read"
    );
}

/// A consumer of `input` in the group, polled (with the `others` already in it, whose
/// leader assigns the partitions) until the group gives it a partition.
fn member(broker: &Tansu, others: &[&BaseConsumer]) -> BaseConsumer {
    let c = consumer(broker, "read_committed");
    c.subscribe(&[INPUT]).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while c.assignment().map_or(0, |a| a.count()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "never joined the group"
        );
        let _ = c.poll(Duration::from_millis(50));
        for o in others {
            let _ = o.poll(Duration::from_millis(50));
        }
    }
    c
}

#[test]
fn offsets_of_a_member_whose_generation_has_passed_are_refused() {
    // KIP-447: a consumer that lost its partitions in a rebalance (a new member joined)
    // cannot commit their offsets in its transaction any more; it must abort
    let Some(broker) = Tansu::start_durable_or_skip() else {
        return;
    };
    // two partitions: each member of the group gets one
    broker.create_topics(&[(INPUT, 2), (OUTPUT, 1)]);
    let first = member(&broker, &[]);
    let old = first.group_metadata().unwrap();
    let producer = transactional(&broker, "fenced");
    producer.begin_transaction().unwrap();
    producer
        .send_offsets_to_transaction(&at(3), &old, WAIT)
        .expect("the current generation commits");
    producer.commit_transaction(WAIT).unwrap();

    let second = member(&broker, &[&first]);
    producer.begin_transaction().unwrap();
    let refused = producer
        .send_offsets_to_transaction(&at(7), &old, WAIT)
        .and_then(|()| producer.commit_transaction(WAIT));
    match refused {
        Err(KafkaError::Transaction(e)) => {
            assert!(e.txn_requires_abort(), "abortable: {e}");
            assert!(!e.is_fatal(), "not fatal: {e}");
        }
        other => panic!("a past generation's offsets were taken: {other:?}"),
    }
    producer.abort_transaction(WAIT).unwrap();
    let stable = consumer(&broker, "read_committed");
    assert_eq!(committed(&stable, WAIT).unwrap(), Offset::Offset(3));

    // the member of the new generation commits
    let now = second.group_metadata().unwrap();
    producer.begin_transaction().unwrap();
    producer
        .send_offsets_to_transaction(&at(7), &now, WAIT)
        .expect("the new generation commits");
    producer.commit_transaction(WAIT).unwrap();
    assert_eq!(committed(&stable, WAIT).unwrap(), Offset::Offset(7));
    drop(first);
}
