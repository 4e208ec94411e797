//! Reading a changelog as of its last complete checkpoint, on the embedded broker: what
//! follows the last checkpoint marker of a partition is a checkpoint a crash cut short,
//! returned as the writes that undo it; a partition without markers counts whole.

use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use spanline::kafka::embedded::EmbeddedKafka;
use spanline::kafka::state::StateTopic;
use spanline::state::CHECKPOINT_MARKER;

/// (partition, key, value) of a record read back.
type Read<'a> = (i32, &'a [u8], Option<&'a [u8]>);

#[test]
fn a_checkpoint_cut_short_is_left_out_and_undone() {
    let topic = "g-assemble-changelog".to_string();
    let kafka = EmbeddedKafka::start(2, std::slice::from_ref(&topic)).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .unwrap();
    let send = |p: i32, key: &[u8], value: Option<&[u8]>| {
        let mut r = BaseRecord::<[u8], [u8]>::to(&topic).partition(p).key(key);
        if let Some(v) = value {
            r = r.payload(v);
        }
        producer.send(r).map_err(|(e, _)| e).unwrap();
    };
    // partition 0: a checkpoint, another one, then one cut short
    send(0, b"k1", Some(b"v1"));
    send(0, b"k2", Some(b"v2"));
    send(0, CHECKPOINT_MARKER, Some(&1u64.to_be_bytes()));
    send(0, b"k2", None);
    send(0, CHECKPOINT_MARKER, Some(&2u64.to_be_bytes()));
    send(0, b"k1", Some(b"v1-unfinished"));
    send(0, b"k3", Some(b"v3-unfinished"));
    // partition 1: written before markers existed
    send(1, b"a", Some(b"1"));
    producer.flush(Duration::from_secs(10)).unwrap();

    let reader = StateTopic {
        brokers: kafka.bootstrap().to_string(),
        properties: Default::default(),
        topic: topic.clone(),
    };
    let read = reader
        .read_checkpointed(&[0, 1], Duration::from_secs(30), CHECKPOINT_MARKER)
        .unwrap();
    let records: Vec<Read> = read
        .records
        .iter()
        .map(|(p, _, k, v)| (*p, k.as_slice(), v.as_deref()))
        .collect();
    assert_eq!(
        records,
        [
            (0, &b"k1"[..], Some(&b"v1"[..])),
            (0, &b"k2"[..], None),
            (1, &b"a"[..], Some(&b"1"[..])),
        ]
    );
    let repairs: Vec<Read> = read
        .repairs
        .iter()
        .map(|(p, _, k, v)| (*p, k.as_slice(), v.as_deref()))
        .collect();
    assert_eq!(
        repairs,
        [(0, &b"k1"[..], Some(&b"v1"[..])), (0, &b"k3"[..], None)],
        "written back as of the last marker"
    );
}
