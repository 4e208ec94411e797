//! A broker's worth of internal topics between driver instances, for the tests of the
//! repartition hop and of two-phase aggregation: the test carries each instance's
//! records to the owner of their partition, acknowledges everything and commits.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::tests::{json_outputs, S};
use super::*;
use crate::codec::otlp;
use crate::config::load_str;

pub(super) const MS: i64 = 1_000_000;
pub(super) const T0: i64 = 1_700_000_000 * S;
pub(super) const HOP: &str = "hop-test-repartition";
pub(super) const MERGE: &str = "hop-test-aggregate-repartition";
pub(super) const PARTITIONS: usize = 2;

/// The test pipeline: OTLP protobuf spans (`keyed` adds source keys), assembly, and
/// `extra` stages.
pub(super) fn pipeline(keyed: &str, extra: &str) -> PipelineConfig {
    let aggregates = if extra.contains("aggregate") {
        "  aggregates:\n    topic: aggregates\n    format: json\n"
    } else {
        ""
    };
    let yaml = format!(
        "name: hop-test
kafka:
  brokers: localhost:9092
  group_id: hop-test
sources:
  - name: spans
    topics: [spans]
    format: otlp_proto
    dead_letter_topic: spans-dlq
{keyed}stages:
  - type: assemble
    out_of_orderness: 0s
    idle_gap: 100ms
    max_duration: 1m
    grace: 1s
    idle_partition_timeout: 10s
{extra}outputs:
  traces:
    topic: traces
    format: json
{aggregates}"
    );
    load_str(&yaml, |_| None).expect("valid test pipeline")
}

/// An instance; with `changelog`, state is checkpointed and windows (when `config`
/// aggregates) are counted in two phases.
pub(super) fn instance(config: &PipelineConfig, changelog: bool) -> Driver {
    let hop: Vec<(String, i32)> = (0..PARTITIONS as i32).map(|p| (HOP.into(), p)).collect();
    let settings = DriverSettings {
        commit_interval_ms: 1000,
        schema_registry: false,
        span_metrics: false,
        changelog: changelog.then(|| ChangelogSettings {
            group_id: "hop-test".into(),
            exactly_once: false,
        }),
        merge: changelog.then(|| MergeSettings {
            topic: MERGE.into(),
            inputs: hop,
            idle_timeout_ms: 10_000,
        }),
        repartition: Some(RepartitionSettings {
            topic: HOP.into(),
            partitions: PARTITIONS as i32,
            inputs: vec![("spans".into(), 0), ("spans".into(), 1)],
            out_of_orderness_ns: 0,
            idle_timeout_ms: 10_000,
            progress_interval_ms: 200,
        }),
    };
    Driver::new(
        config,
        Driver::sources_of(config),
        json_outputs(config),
        settings,
    )
}

/// The latest value of each key of a changelog partition (`None`: a tombstone).
pub(super) type Compacted = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Instances and the internal topics between them.
pub(super) struct Cluster {
    pub drivers: Vec<Driver>,
    /// Which instance reads each partition of an internal topic.
    pub owner: BTreeMap<(String, i32), usize>,
    log: BTreeMap<(String, i32), Vec<Vec<u8>>>,
    read: BTreeMap<(String, i32), usize>,
    /// Trace id → the span ids of each trace record written, in order.
    pub traces: BTreeMap<String, Vec<Vec<String>>>,
    /// Every aggregate record: (instance, record).
    pub aggregates: Vec<(usize, serde_json::Value)>,
    /// Every alert record: (instance, record).
    pub alerts: Vec<(usize, serde_json::Value)>,
    /// The latest changelog record of each key, per topic and partition, as compaction
    /// keeps it.
    pub changelogs: BTreeMap<(String, i32), Compacted>,
    pub now_ms: i64,
    offsets: BTreeMap<i32, i64>,
}

impl Cluster {
    /// `n` instances of `config`: instance `i` reads source partition `i` and the
    /// partitions `r` of the repartition topic with `r % n == i`; instance 0 owns the
    /// aggregate repartition topic.
    pub fn new(config: &PipelineConfig, n: usize, changelog: bool) -> Self {
        let mut drivers: Vec<Driver> = (0..n).map(|_| instance(config, changelog)).collect();
        let mut owner = BTreeMap::new();
        for r in 0..PARTITIONS {
            owner.insert((HOP.to_string(), r as i32), r % n);
        }
        if changelog {
            owner.insert((MERGE.to_string(), 0), 0);
        }
        for (i, d) in drivers.iter_mut().enumerate() {
            let mut partitions = vec![("spans".to_string(), i as i32)];
            for ((t, p), _) in owner.iter().filter(|(_, o)| **o == i) {
                partitions.push((t.clone(), *p));
            }
            d.handle(Event::Assigned {
                partitions,
                now_ms: 0,
            })
            .unwrap();
        }
        Self {
            drivers,
            owner,
            log: BTreeMap::new(),
            read: BTreeMap::new(),
            traces: BTreeMap::new(),
            aggregates: Vec::new(),
            alerts: Vec::new(),
            changelogs: BTreeMap::new(),
            now_ms: 0,
            offsets: BTreeMap::new(),
        }
    }

    /// Carries out every effect until nothing moves: internal records to their log and
    /// on to their partition's owner, outputs collected, everything acknowledged and
    /// committed.
    pub fn settle(&mut self) {
        loop {
            for i in 0..self.drivers.len() {
                while self.drivers[i].has_effects() {
                    for e in self.drivers[i].take_effects() {
                        let d = &mut self.drivers[i];
                        match e {
                            Effect::Produce(p) => {
                                let acked = Event::Acked {
                                    topic: p.topic.clone(),
                                    holds: p.holds.clone(),
                                    epoch: p.epoch,
                                    error: None,
                                };
                                d.handle(acked).unwrap();
                                self.collect(i, &p);
                            }
                            Effect::Commit(c) => d.handle(Event::Committed(c)).unwrap(),
                            Effect::Train(job) => d.handle(Event::Trained(job.run())).unwrap(),
                            Effect::Notify(_) => {}
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
            }
            let mut moved = false;
            for (key, records) in &self.log {
                let from = self.read.get(key).copied().unwrap_or(0);
                if from == records.len() {
                    continue;
                }
                let batch: Vec<Record> = (from..records.len())
                    .map(|o| Record {
                        topic: Arc::from(key.0.as_str()),
                        partition: key.1,
                        offset: o as i64,
                        key: None,
                        payload: Some(records[o].clone()),
                    })
                    .collect();
                self.read.insert(key.clone(), records.len());
                moved = true;
                let now_ms = self.now_ms;
                self.drivers[self.owner[key]]
                    .handle(Event::Records {
                        records: batch,
                        now_ms,
                    })
                    .unwrap();
            }
            if !moved {
                break;
            }
        }
    }

    /// The latest records of a changelog partition, as a restore reads them.
    pub fn changelog(&self, topic: &str, partition: i32) -> Vec<StateRecord> {
        self.changelogs
            .get(&(topic.to_string(), partition))
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(offset, (key, value))| StateRecord {
                partition,
                offset: offset as i64,
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }

    /// One OTLP message of `spans` on source partition `partition`, read by `instance`.
    pub fn send(&mut self, instance: usize, partition: i32, spans: &[Span]) {
        let offset = self.offsets.entry(partition).or_insert(0);
        let record = Record {
            topic: Arc::from("spans"),
            partition,
            offset: *offset,
            key: None,
            payload: Some(otlp::encode_proto(spans)),
        };
        *offset += 1;
        let now_ms = self.now_ms;
        self.drivers[instance]
            .handle(Event::Records {
                records: vec![record],
                now_ms,
            })
            .unwrap();
        self.settle();
    }

    pub fn tick(&mut self, ms: i64) {
        self.now_ms += ms;
        for d in &mut self.drivers {
            d.handle(Event::Tick {
                now_ms: self.now_ms,
            })
            .unwrap();
        }
        self.settle();
    }
}

impl Cluster {
    /// Files one record `instance` produced: internal ones in their log, outputs by kind.
    fn collect(&mut self, instance: usize, p: &Produce) {
        let json = || serde_json::from_slice::<serde_json::Value>(&p.value).unwrap();
        match p.kind {
            OutputKind::Repartition => {
                let r = p.partition.expect("an internal record names its partition");
                self.log
                    .entry((p.topic.to_string(), r))
                    .or_default()
                    .push(p.value.clone());
            }
            OutputKind::Trace => {
                let ids = json()["spans"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["span_id"].as_str().unwrap().to_string())
                    .collect();
                let key = String::from_utf8(p.key.clone()).unwrap();
                self.traces.entry(key).or_default().push(ids);
            }
            OutputKind::Aggregate => self.aggregates.push((instance, json())),
            OutputKind::Alert => self.alerts.push((instance, json())),
            OutputKind::Changelog => {
                let partition = p.partition.unwrap_or(0);
                let value = (!p.tombstone).then(|| p.value.clone());
                self.changelogs
                    .entry((p.topic.to_string(), partition))
                    .or_default()
                    .insert(p.key.clone(), value);
            }
            other => panic!("unexpected {other:?} record: {:?}", p.headers),
        }
    }
}
