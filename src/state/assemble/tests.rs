//! The assembler's state survives its changelog: an assembler restored from the records
//! of another behaves as the other does from then on.

use proptest::prelude::*;

use super::*;
use crate::model::{NoHolds, Origin};
use crate::stage::assemble::{Assembler, Output, Settings};
use crate::testkit;

const MS: i64 = 1_000_000;

fn settings() -> Settings {
    Settings {
        out_of_orderness_ns: 0,
        idle_gap_ns: 100 * MS,
        max_duration_ns: 10_000 * MS,
        grace_ns: 1_000 * MS,
        idle_partition_timeout_ms: 60_000,
        max_open_traces: 1_000,
        max_spans_per_trace: 1_000,
        max_span_bytes: 64 * 1024,
        late_output: true,
    }
}

const NAMES: [(&str, i32); 2] = [("spans", 0), ("spans", 1)];

/// Writes the changes of `from` as records and applies them to `to`, as a restart
/// restores the changelog.
fn restore(from: &mut Assembler, to: &mut Assembler) -> usize {
    let (mut open, mut closed) = (Vec::new(), Vec::new());
    from.take_changes(&mut open, &mut closed);
    let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    for (id, _) in open {
        let value = from.open_trace(id).map(|mut t| {
            if from.closed_trace(id).is_some() {
                t.prior = None;
            }
            encode_open(&t, |p| NAMES[p as usize])
        });
        records.push((open_key(id), value));
    }
    for (id, _) in closed {
        let value = from.closed_trace(id).map(|c| encode_closed(&c));
        records.push((closed_key(id), value));
    }
    for (p, (topic, partition)) in NAMES.iter().enumerate() {
        if let Some(ns) = from.watermarks().max_event(p as u32) {
            records.push((watermark_key(topic, *partition), Some(encode_watermark(ns))));
        }
    }
    // a restore reads the latest record of each key in key order: closed before open
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let (mut interner, mut resources) = (Interner::default(), ResourceCache::default());
    let mut out = Vec::new();
    for (key, value) in &records {
        match (parse_key(key).unwrap(), value) {
            (Key::Open(id), Some(v)) => {
                let mut t = decode_open(v, &mut interner, &mut resources).unwrap();
                if t.amendment && t.prior.as_ref().is_none_or(|p| p.is_empty()) {
                    t.prior = to.closed_trace(id).map(|c| c.span_ids.into());
                }
                let parts = t
                    .partitions
                    .iter()
                    .map(|n| {
                        NAMES
                            .iter()
                            .position(|m| (m.0, m.1) == (n.0.as_str(), n.1))
                            .unwrap() as u32
                    })
                    .collect();
                to.restore_open(
                    id,
                    t.spans,
                    parts,
                    t.prior,
                    t.amendment,
                    t.incomplete,
                    &mut out,
                );
            }
            (Key::Open(id), None) => to.forget_open(id),
            (Key::Closed(id), Some(v)) => {
                let (ids, expires) = decode_closed(v).unwrap();
                to.restore_closed(id, ids, expires, 0);
            }
            (Key::Closed(id), None) => to.forget_closed(id),
            (Key::Watermark(topic, partition), Some(v)) => {
                let p = NAMES
                    .iter()
                    .position(|m| (m.0, m.1) == (topic.as_str(), partition))
                    .unwrap();
                to.restore_max_event(p as u32, decode_watermark(v).unwrap());
            }
            (Key::Watermark(..), None) => {}
        }
    }
    to.finish_restore();
    assert!(out.is_empty(), "nothing closes on restore here");
    records.len()
}

/// Every (trace, span) written, sorted: where a trace is split into amendments depends
/// on the watermark, which a restart learns again from the spans it reads.
fn written_spans(out: Vec<Output>) -> Vec<(u128, u64)> {
    let mut v: Vec<(u128, u64)> = out
        .into_iter()
        .flat_map(|o| match o {
            Output::Trace { trace, .. } => trace
                .spans
                .iter()
                .map(|s| (s.trace_id, s.span_id))
                .collect::<Vec<_>>(),
            Output::Late { span, .. } => vec![(span.trace_id, span.span_id)],
        })
        .collect();
    v.sort_unstable();
    v
}

type Step = (u128, u64, u64, i64, u32);

fn push(a: &mut Assembler, steps: &[Step], out: &mut Vec<Output>) {
    for &(trace, span, parent, at_ms, partition) in steps {
        let s = testkit::span(trace, span, parent, at_ms * MS, at_ms * MS + 5 * MS, "svc");
        let origin = Origin {
            partition,
            offset: 0,
        };
        a.push(s, origin, 0, &mut NoHolds, out);
        a.advance(0, out);
    }
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((1u128..6, 1u64..6, 0u64..3, 0i64..3_000, 0u32..2), 1..60).prop_map(
        |mut v| {
            // a span is never its own parent (decoders reject it)
            for s in &mut v {
                if s.2 == s.1 {
                    s.2 = 0;
                }
            }
            v.sort_by_key(|s| s.3);
            v
        },
    )
}

proptest! {
    /// Whatever the history, an assembler restored from the changelog of another writes
    /// the same spans as the other on the same later spans: none lost, none added.
    #[test]
    fn a_restored_assembler_continues_as_the_original(before in steps(), after in steps()) {
        let mut original = Assembler::new(settings());
        original.track_changes();
        for p in 0..2 {
            original.assign(p, 0);
        }
        let mut out = Vec::new();
        push(&mut original, &before, &mut out);
        let mut restored = Assembler::new(settings());
        for p in 0..2 {
            restored.assign(p, 0);
        }
        restore(&mut original, &mut restored);
        // the combined watermark follows from the partitions' restored event times
        let mut nothing = Vec::new();
        restored.advance(0, &mut nothing);
        prop_assert!(nothing.is_empty());
        prop_assert_eq!(original.watermarks().current(), restored.watermarks().current());
        prop_assert_eq!(original.open_traces(), restored.open_traces());
        prop_assert_eq!(original.buffered_spans(), restored.buffered_spans());
        prop_assert_eq!(original.remembered_closed(), restored.remembered_closed());
        let shift = |s: &[Step]| -> Vec<Step> {
            s.iter().map(|&(t, sp, p, at, part)| (t, sp, p, at + 3_000, part)).collect()
        };
        let later = shift(&after);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        push(&mut original, &later, &mut a);
        push(&mut restored, &later, &mut b);
        original.advance_to(i64::MAX, &mut a);
        restored.advance_to(i64::MAX, &mut b);
        prop_assert_eq!(written_spans(a), written_spans(b));
    }
}

#[test]
fn changes_are_taken_once_and_closing_deletes_the_open_record() {
    let mut a = Assembler::new(settings());
    a.track_changes();
    a.assign(0, 0);
    let mut out = Vec::new();
    push(&mut a, &[(1, 1, 0, 0, 0), (1, 2, 1, 1, 0)], &mut out);
    let (mut open, mut closed) = (Vec::new(), Vec::new());
    a.take_changes(&mut open, &mut closed);
    assert_eq!((open.as_slice(), closed.len()), (&[(1u128, 0)][..], 0));
    a.take_changes(&mut open, &mut closed);
    assert_eq!(open.len(), 1, "nothing new");
    open.clear();
    // event time moves on: trace 1 closes
    push(&mut a, &[(2, 1, 0, 1_000, 0)], &mut out);
    a.take_changes(&mut open, &mut closed);
    assert_eq!(open, [(1, 0), (2, 0)]);
    assert!(a.open_trace(1).is_none(), "its open record is deleted");
    assert_eq!(closed, [(1, 0)]);
    assert_eq!(a.closed_trace(1).unwrap().span_ids, &[1, 2]);
}

#[test]
fn unknown_versions_and_damaged_records_are_errors() {
    let (mut i, mut r) = (Interner::default(), ResourceCache::default());
    let err = decode_open(&[9, 0, 0], &mut i, &mut r).unwrap_err();
    assert!(err.to_string().contains("version 9"), "{err}");
    assert!(matches!(
        decode_open(&[], &mut i, &mut r),
        Err(StateError::Empty)
    ));
    assert!(matches!(
        decode_closed(&[VERSION, 2, 200]),
        Err(StateError::Damaged(_))
    ));
    assert!(matches!(parse_key(b"x123"), Err(StateError::Key(_))));
    let ok = encode_closed(&ClosedTraceState {
        span_ids: &[3, 4],
        expires: 7,
    });
    assert_eq!(
        decode_closed(&ok).unwrap(),
        (vec![3, 4].into_boxed_slice(), 7)
    );
    let mut longer = ok.clone();
    longer.push(0);
    assert!(matches!(
        decode_closed(&longer),
        Err(StateError::Damaged(_))
    ));
}

proptest! {
    /// Arbitrary bytes never panic the state decoders.
    #[test]
    fn arbitrary_bytes_are_errors_not_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let (mut i, mut r) = (Interner::default(), ResourceCache::default());
        let mut versioned = vec![VERSION];
        versioned.extend_from_slice(&bytes);
        let _ = decode_open(&versioned, &mut i, &mut r);
        let _ = decode_closed(&versioned);
        let _ = parse_key(&bytes);
    }
}
