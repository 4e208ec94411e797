//! Checkpoints with changelogs, without a broker: state is written only after the
//! outputs it depends on, offsets are committed only after the state, and a driver
//! restored from the records continues where the first left off.

use std::sync::Arc;

use super::changelog::open_trace_of;
use super::tests::{ack, driver_with, pipeline, produced, root, S};
use super::*;
use crate::state::Store;

fn driver_with_changelogs(config: &PipelineConfig) -> Driver {
    let changelog = ChangelogSettings {
        group_id: "g".into(),
        exactly_once: false,
    };
    driver_with(config, false, Some(changelog))
}

fn transactional_driver(config: &PipelineConfig) -> Driver {
    let changelog = ChangelogSettings {
        group_id: "g".into(),
        exactly_once: true,
    };
    driver_with(config, false, Some(changelog))
}

#[test]
fn exactly_once_commits_outputs_state_and_position_in_one_transaction() {
    let config = pipeline(true, "otlp_json");
    let mut d = transactional_driver(&config);
    d.push_spans("spans", 0, 0, [root(1, 0)], 0);
    d.push_spans("spans", 0, 1, [root(2, S)], 0);
    let mut effects = d.take_effects();
    d.handle(Event::Tick { now_ms: 10_000 }).unwrap();
    effects.extend(d.take_effects());
    let last = effects.last().expect("effects");
    let Effect::CommitTransaction(position) = last else {
        panic!("the checkpoint ends with the transaction's commit: {last:?}");
    };
    let position = position.clone();
    assert_eq!(position.len(), 1);
    assert_eq!(position[0].offset, 2, "at the consumer's position");
    let kinds: Vec<OutputKind> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Produce(p) => Some(p.kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds[0],
        OutputKind::Trace,
        "trace 1, then its state: {kinds:?}"
    );
    assert!(kinds[1..].iter().all(|k| *k == OutputKind::Changelog));
    assert!(
        commits(&effects).is_empty(),
        "no commit outside the transaction"
    );

    // nothing waits for acknowledgements, only for the commit: one at a time
    ack(&mut d, produced(effects));
    assert!(
        d.take_effects().is_empty(),
        "acknowledgements change nothing"
    );
    assert!(d.checkpoint_in_progress(), "until the commit is heard of");
    // input read while the transaction commits waits for the next one
    d.push_spans("spans", 0, 2, [], 0);
    d.handle(Event::Tick { now_ms: 20_000 }).unwrap();
    d.handle(Event::CommitNow).unwrap();
    assert!(
        commits_in_transactions(&d.take_effects()).is_empty(),
        "no second commit while the first is under way"
    );
    d.handle(Event::Committed(position)).unwrap();
    assert!(!d.checkpoint_in_progress());
    d.handle(Event::Tick { now_ms: 30_000 }).unwrap();
    let effects = d.take_effects();
    assert!(
        matches!(effects.last(), Some(Effect::CommitTransaction(p)) if p[0].offset == 3),
        "input that only moves the position is a transaction of its own: {effects:?}"
    );
    d.handle(Event::Committed(
        commits_in_transactions(&effects)[0].clone(),
    ))
    .unwrap();
    // nothing new: no empty transaction every interval
    d.handle(Event::Tick { now_ms: 40_000 }).unwrap();
    let effects = d.take_effects();
    assert!(effects.is_empty(), "{effects:?}");
}

fn commits_in_transactions(effects: &[Effect]) -> Vec<&Vec<Commit>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CommitTransaction(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn commits(effects: &[Effect]) -> Vec<&Vec<Commit>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Commit(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// The latest record of each key, as a restore reads them.
fn latest(records: &[Produce]) -> Vec<(Store, StateRecord)> {
    let mut by_key: Vec<(Store, StateRecord)> = Vec::new();
    for (offset, p) in records.iter().enumerate() {
        let store = if p.topic.contains("assemble") {
            Store::Assemble
        } else {
            Store::Aggregate
        };
        by_key.retain(|(s, r)| !(*s == store && r.key == p.key));
        by_key.push((
            store,
            StateRecord {
                partition: p.partition.unwrap(),
                offset: offset as i64,
                key: p.key.clone(),
                value: (!p.tombstone).then(|| p.value.clone()),
            },
        ));
    }
    by_key
}

/// Record `offset` of `spans` partition 0: one span as OTLP JSON.
fn record(offset: i64, span: Span) -> Record {
    Record {
        topic: Arc::from("spans"),
        partition: 0,
        offset,
        key: None,
        payload: Some(crate::codec::otlp::encode_json([&span])),
    }
}

/// Restores the open traces and windows of `records` into `d`.
fn restore(d: &mut Driver, records: &[(Store, StateRecord)]) {
    for store in [Store::Assemble, Store::Aggregate] {
        let records = records
            .iter()
            .filter(|(s, _)| *s == store)
            .map(|(_, r)| r.clone())
            .collect();
        d.handle(Event::Restore { store, records }).unwrap();
    }
}

#[test]
fn state_follows_the_outputs_and_the_commit_follows_the_state() {
    let config = pipeline(true, "otlp_json");
    let mut d = driver_with_changelogs(&config);
    d.push_spans("spans", 0, 0, [root(1, 0)], 0);
    d.push_spans("spans", 0, 1, [root(2, S)], 0);
    let traces = produced(d.take_effects());
    assert_eq!(traces.len(), 1, "trace 1 closed");
    d.handle(Event::Tick { now_ms: 10_000 }).unwrap();
    assert!(
        d.take_effects().is_empty(),
        "state waits for trace 1's record"
    );
    assert!(d.checkpoint_in_progress());
    ack(&mut d, traces);
    let effects = d.take_effects();
    assert!(
        commits(&effects).is_empty(),
        "the commit waits for the state"
    );
    let state = produced(effects);
    assert!(state.iter().all(|p| p.kind == OutputKind::Changelog));
    let open: Vec<(u128, bool)> = state
        .iter()
        .filter_map(|p| open_trace_of(&p.key).map(|id| (id, p.tombstone)))
        .collect();
    assert!(open.contains(&(2, false)), "trace 2 is open: {open:?}");
    assert!(
        open.contains(&(1, true)),
        "trace 1's open record is deleted"
    );
    assert!(
        state
            .iter()
            .any(|p| p.topic.as_ref() == "g-aggregate-changelog"),
        "the open window of trace 1"
    );
    let records = latest(&state);
    ack(&mut d, state);
    let effects = d.take_effects();
    let c = commits(&effects);
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0][0].offset, 2,
        "committed at the consumer's position: trace 2 is in the state"
    );
    assert!(!d.checkpoint_in_progress());

    // a restart: the state comes back, the input resumes at offset 2
    let mut restarted = driver_with_changelogs(&config);
    restore(&mut restarted, &records);
    assert_eq!(restarted.stages().assembler.open_traces(), 1);
    restarted.push_spans("spans", 0, 2, [root(3, 20 * S)], 0);
    let out = produced(restarted.take_effects());
    let traces: Vec<&Produce> = out.iter().filter(|p| p.kind == OutputKind::Trace).collect();
    assert_eq!(
        traces.len(),
        1,
        "trace 2, restored, closes; trace 1 is not written again"
    );
    assert!(String::from_utf8_lossy(&traces[0].key).ends_with('2'));
    let windows: Vec<serde_json::Value> = out
        .iter()
        .filter(|p| p.kind == OutputKind::Aggregate)
        .map(|p| serde_json::from_slice(&p.value).unwrap())
        .collect();
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(
        windows[0]["count"], 2,
        "both traces counted in [T0, T0+10s)"
    );

    // the consumer starts below the checkpoint (an offset commit not visible yet, or
    // lost after the state was written): what the state reflects is skipped
    let mut again = driver_with_changelogs(&config);
    restore(&mut again, &records);
    let records = vec![
        record(0, root(1, 0)),
        record(1, root(2, S)),
        record(2, root(3, 20 * S)),
    ];
    again.handle(Event::Records { records, now_ms: 0 }).unwrap();
    assert_eq!(
        again.stages().assembler.stats().duplicates,
        0,
        "0 and 1 skipped"
    );
    let out = produced(again.take_effects());
    let traces = out.iter().filter(|p| p.kind == OutputKind::Trace).count();
    assert_eq!(traces, 1, "trace 2 closes once");
    assert_eq!(again.committable("spans", 0), Some(2), "trace 3 is open");
}

#[test]
fn a_damaged_state_record_names_where_it_was_read() {
    let mut d = driver_with_changelogs(&pipeline(false, "otlp_json"));
    let bad = StateRecord {
        partition: 0,
        offset: 41,
        key: crate::state::assemble::open_key(7),
        value: Some(vec![1, 200, 200, 200]),
    };
    let err = d
        .handle(Event::Restore {
            store: Store::Assemble,
            records: vec![bad.clone()],
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("g-assemble-changelog partition 0 offset 41") && err.contains("--reset-state"),
        "{err}"
    );
    let newer = StateRecord {
        value: Some(vec![99]),
        ..bad
    };
    let err = d
        .handle(Event::Restore {
            store: Store::Assemble,
            records: vec![newer.clone()],
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("version 99"), "{err}");
    // --reset-state deletes the key instead
    d.handle(Event::ResetState {
        store: Store::Assemble,
        records: vec![newer],
    })
    .unwrap();
    let tombstones = produced(d.take_effects());
    assert_eq!(tombstones.len(), 1);
    assert!(tombstones[0].tombstone && tombstones[0].kind == OutputKind::Changelog);
}

/// Input positions of a checkpoint marker: (topic, partition, offset).
type Positions = Vec<(String, i32, i64)>;

/// The positions of the checkpoint markers among `records`, per changelog topic.
fn marker_positions(records: &[Produce]) -> Vec<(String, Positions)> {
    records
        .iter()
        .filter(|p| p.key == crate::state::CHECKPOINT_MARKER)
        .map(|p| (p.topic.to_string(), crate::state::decode_marker(&p.value)))
        .collect()
}

#[test]
fn a_checkpoint_before_anything_is_read_keeps_the_restored_position() {
    let config = pipeline(true, "otlp_json");
    let mut d = driver_with_changelogs(&config);
    d.push_spans("spans", 0, 0, [root(1, 0)], 0);
    d.push_spans("spans", 0, 1, [root(2, S)], 0);
    let traces = produced(d.take_effects());
    d.handle(Event::Tick { now_ms: 10_000 }).unwrap();
    ack(&mut d, traces);
    let state = produced(d.take_effects());
    let first = latest(&state);
    ack(&mut d, state);

    // restored, then checkpointed before it reads a record (its partitions revoked at
    // once, as in a rebalance right after another): its markers still say that the
    // state reflects the input up to offset 2
    let mut restored = driver_with_changelogs(&config);
    restore(&mut restored, &first);
    restored.handle(Event::CommitNow).unwrap();
    let state = produced(restored.take_effects());
    // (the assemble changelog's markers name the input partitions; the aggregate one's
    // only the aggregate repartition topic's, with two-phase aggregation)
    let markers = marker_positions(&state);
    let assemble: Vec<_> = markers
        .iter()
        .filter(|(topic, _)| topic == "g-assemble-changelog")
        .collect();
    assert_eq!(
        assemble.len(),
        1,
        "the checkpoint wrote open traces: {markers:?}"
    );
    assert_eq!(assemble[0].1, vec![("spans".to_string(), 0, 2)]);

    // so the next owner, whose consumer starts below it, skips what the state has
    let second = latest(&state);
    let mut next = driver_with_changelogs(&config);
    restore(&mut next, &second);
    let records = vec![record(0, root(1, 0)), record(1, root(2, S))];
    next.handle(Event::Records { records, now_ms: 0 }).unwrap();
    let out = produced(next.take_effects());
    assert_eq!(
        out.iter().filter(|p| p.kind == OutputKind::Trace).count(),
        0,
        "trace 1 is not written again"
    );
    assert_eq!(
        next.stages().assembler.stats().duplicates,
        0,
        "0 and 1 skipped"
    );
}

#[test]
fn a_refused_transaction_drops_the_state_and_the_partitions_come_back_clean() {
    let config = pipeline(true, "otlp_json");
    let mut d = transactional_driver(&config);
    d.push_spans("spans", 0, 0, [root(1, 0)], 0);
    d.push_spans("spans", 0, 1, [root(2, 100 * S)], 0);
    d.handle(Event::Tick { now_ms: 10_000 }).unwrap();
    let effects = d.take_effects();
    assert!(matches!(effects.last(), Some(Effect::CommitTransaction(_))));
    assert!(d.checkpoint_in_progress());
    assert_eq!(d.stages().assembler.open_traces(), 1, "trace 2 is open");

    // the coordinator refused the transaction (a rebalance moved the partition on): the
    // runner aborted it, so nothing of it is anywhere and the state goes with it
    d.handle(Event::TransactionRefused).unwrap();
    assert!(!d.owns_partitions(), "the partitions are the next owner's");
    assert!(!d.checkpoint_in_progress(), "no commit is awaited");
    assert_eq!(d.stages().assembler.open_traces(), 0);
    assert!(
        d.take_effects().is_empty(),
        "nothing of the aborted epoch is carried out"
    );
    // its records come back purged: not a failure
    for p in produced(effects) {
        d.handle(Event::Acked {
            topic: p.topic,
            holds: p.holds,
            epoch: p.epoch,
            error: Some("Local: Purged in queue".into()),
        })
        .expect("a purged record of the refused transaction");
    }
    // read before the rebalance took the partition: not this instance's now
    d.push_spans("spans", 0, 2, [root(3, 200 * S)], 0);
    d.handle(Event::Tick { now_ms: 20_000 }).unwrap();
    let effects = d.take_effects();
    assert!(
        commits_in_transactions(&effects).is_empty(),
        "nothing to commit without partitions: {effects:?}"
    );

    // assigned again, from the last committed transaction: a clean start
    d.handle(Event::Assigned {
        partitions: vec![("spans".into(), 0)],
        now_ms: 30_000,
    })
    .unwrap();
    d.push_spans("spans", 0, 0, [root(1, 0)], 30_000);
    d.push_spans("spans", 0, 1, [root(2, 100 * S)], 30_000);
    d.handle(Event::Tick { now_ms: 40_000 }).unwrap();
    let effects = d.take_effects();
    let traces = effects
        .iter()
        .filter(|e| matches!(e, Effect::Produce(p) if p.kind == OutputKind::Trace))
        .count();
    assert_eq!(traces, 1, "trace 1 again, in the new transaction");
    assert!(
        matches!(effects.last(), Some(Effect::CommitTransaction(p)) if p[0].offset == 2),
        "{effects:?}"
    );
    // a later delivery failure is a failure again
    let failed = d.handle(Event::Acked {
        topic: Arc::from("traces"),
        holds: crate::model::Holds::new(),
        epoch: u64::MAX >> 1,
        error: Some("broker down".into()),
    });
    assert!(failed.is_err());
}
