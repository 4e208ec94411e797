//! With two-phase aggregation the detectors' state is the windows' owner's (its detect
//! changelog), but every instance scores the traces it assembles. An instance that
//! starts (or restarts after a crash) without owning the windows takes the owner's trace
//! models instead of learning them from scratch; the owner itself restores everything.

use super::tests_cluster::*;
use super::*;
use crate::state::Store;
use crate::testkit;

const STAGES: &str = "  - type: analyze
  - type: aggregate
    windows: [10s]
    service_graph: false
    dimensions:
      service: [service]
  - type: detect
    window: 10s
    min_samples: 10
    series_scopes: [service]
    traces: true
";

/// Trace `id`: a root on `front` calling `back`, `ms` long, starting at `at_ns`.
fn trace(id: u128, at_ns: i64, ms: i64) -> Vec<Span> {
    let start = T0 + at_ns;
    vec![
        testkit::span(id, 1, 0, start, start + ms * MS, "front"),
        testkit::span(id, 2, 1, start + MS, start + (ms - 1) * MS, "back"),
    ]
}

fn trace_models(d: &Driver) -> usize {
    d.stages().detector().map_or(0, |d| d.trace_models())
}

#[test]
fn an_instance_that_does_not_own_the_windows_starts_from_the_owners_trace_models() {
    let config = pipeline("", STAGES);
    let mut c = Cluster::new(&config, 2, true);
    // whole traces on each source partition: instance 0 (the windows' owner) and
    // instance 1 both assemble and score traces of the same root operation
    for i in 0..400u128 {
        let at = i as i64 * 50 * MS;
        let ms = 20 + (i % 7) as i64;
        c.send(0, 0, &trace(i + 1, at, ms));
        c.send(1, 1, &trace(i + 10_001, at, ms));
        if i % 50 == 49 {
            c.tick(1_000);
        }
    }
    c.tick(1_000);
    c.tick(1_000);
    assert!(
        trace_models(&c.drivers[0]) > 0,
        "the owner learned a trace model"
    );
    assert!(trace_models(&c.drivers[1]) > 0, "so did the other instance");
    let detect = Store::Detect.topic("hop-test");
    let records = c.changelog(&detect, 0);
    assert!(!records.is_empty(), "the owner checkpointed its detectors");

    // instance 1 restarts: the partitions it had, not the windows
    let mut restarted = instance(&config, true);
    let partitions: Vec<(String, i32)> = vec![("spans".into(), 1), (HOP.into(), 1)];
    restarted
        .handle(Event::Assigned {
            partitions,
            now_ms: c.now_ms,
        })
        .unwrap();
    assert!(restarted.wants_trace_models());
    restarted
        .handle(Event::SeedTraceModels(records.clone()))
        .unwrap();
    assert_eq!(
        trace_models(&restarted),
        trace_models(&c.drivers[0]),
        "it took every trace model of the owner"
    );
    assert!(!restarted.wants_trace_models(), "once is enough");

    // the owner restores its whole state instead (and takes no seed)
    let mut owner = instance(&config, true);
    let partitions: Vec<(String, i32)> =
        vec![("spans".into(), 0), (HOP.into(), 0), (MERGE.into(), 0)];
    owner
        .handle(Event::Assigned {
            partitions,
            now_ms: c.now_ms,
        })
        .unwrap();
    assert!(!owner.wants_trace_models());
    owner
        .handle(Event::SeedTraceModels(records.clone()))
        .unwrap();
    assert_eq!(trace_models(&owner), 0, "a seed is not the owner's restore");
    owner
        .handle(Event::Restore {
            store: Store::Detect,
            records,
        })
        .unwrap();
    assert_eq!(trace_models(&owner), trace_models(&c.drivers[0]));
}

#[test]
fn unreadable_records_leave_the_instance_learning_afresh() {
    let config = pipeline("", STAGES);
    let mut d = instance(&config, true);
    d.handle(Event::Assigned {
        partitions: vec![("spans".into(), 1), (HOP.into(), 1)],
        now_ms: 0,
    })
    .unwrap();
    let damaged = vec![StateRecord {
        partition: 0,
        offset: 0,
        key: b"meta".to_vec(),
        value: Some(b"not a detector".to_vec()),
    }];
    d.handle(Event::SeedTraceModels(damaged)).unwrap();
    assert_eq!(trace_models(&d), 0);
    assert!(d.wants_trace_models(), "still wants them");
}
