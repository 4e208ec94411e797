//! The broker the exactly-once tests run on (tansu-eos, ci/tansu-eos) answers group
//! offsets the way KIP-447 needs: a `read_committed` consumer asking for the committed
//! offset of a partition whose next offset is part of a transaction still in flight is
//! told UNSTABLE_OFFSET_COMMIT (librdkafka retries) instead of the offset before that
//! transaction. Without this, an instance taking over a partition while the transaction
//! of its previous owner is being committed starts from the old offset and repeats what
//! that transaction wrote, the duplicates the scale-out test once saw after a SIGKILL.

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
