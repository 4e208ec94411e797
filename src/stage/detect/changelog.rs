//! The detectors' learnt state as changelog records: after each checkpoint only the
//! subjects that learnt something (a window, a value or a trace observed, a model
//! installed) are written, in the snapshot topic's record format, with the meta record
//! (smallest window, counters). A restore reads them back with
//! [`Snapshot::from_records`](super::Snapshot::from_records).

use serde::Serialize;

use super::core::Core;
use super::snapshot_records::{record_key, META_KEY};
use super::{DetectStats, Detector, SeriesKey, Target, TraceKey, TraceState, SNAPSHOT_VERSION};

/// A snapshot record, borrowed: serialises exactly as the snapshot's own envelope.
#[derive(Serialize)]
struct Envelope<'a> {
    version: u32,
    entry: Entry<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Entry<'a> {
    Meta {
        smallest_window_ns: Option<i64>,
        stats: &'a DetectStats,
    },
    Series(&'a SeriesKey, &'a Core),
    Value(&'a SeriesKey, &'a Core),
    Trace(&'a TraceKey, &'a TraceState),
}

fn encode(entry: Entry<'_>) -> Vec<u8> {
    serde_json::to_vec(&Envelope {
        version: SNAPSHOT_VERSION,
        entry,
    })
    .expect("detector state serializes")
}

impl Detector {
    /// Notes from now on which subjects change, for [`Detector::take_changes`].
    pub fn track_changes(&mut self) {
        self.changed = Some(Default::default());
    }

    /// The records of the subjects that changed since the last call: (key, value), or
    /// (key, `None`) for a subject that is gone; the meta record first, when anything
    /// changed.
    pub fn take_changes(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let Some(changed) = self.changed.as_mut() else {
            return Vec::new();
        };
        if changed.is_empty() {
            return Vec::new();
        }
        let mut targets: Vec<Target> = changed.drain().collect();
        targets.sort_by_cached_key(|t| format!("{t:?}"));
        let mut out = Vec::with_capacity(targets.len() + 1);
        out.push((
            META_KEY.to_string(),
            Some(encode(Entry::Meta {
                smallest_window_ns: self.smallest_window_ns,
                stats: &self.stats,
            })),
        ));
        for t in &targets {
            let record = match t {
                Target::Series(k) => (
                    record_key("series", k),
                    self.series.get(k).map(|c| encode(Entry::Series(k, c))),
                ),
                Target::Value(k) => (
                    record_key("value", k),
                    self.values.get(k).map(|c| encode(Entry::Value(k, c))),
                ),
                Target::Trace(k) => (
                    record_key("trace", k),
                    self.traces.get(k).map(|s| encode(Entry::Trace(k, s))),
                ),
            };
            out.push(record);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::snapshot_restore::tests::{feed, settings};
    use super::super::{Detector, Snapshot};

    /// The latest record of each key, as a changelog's restore reads them.
    fn apply(log: &mut BTreeMap<String, Vec<u8>>, changes: Vec<(String, Option<Vec<u8>>)>) {
        for (k, v) in changes {
            match v {
                Some(v) => log.insert(k, v),
                None => log.remove(&k),
            };
        }
    }

    #[test]
    fn only_changed_subjects_are_written_and_the_log_restores_the_detector() {
        let mut a = Detector::new(settings());
        a.track_changes();
        let mut log = BTreeMap::new();
        feed(&mut a, "service", 0..60);
        let first = a.take_changes();
        assert_eq!(first.len(), 2, "meta and the one series");
        apply(&mut log, first);
        assert!(a.take_changes().is_empty(), "nothing learnt since");
        feed(&mut a, "service", 60..120);
        apply(&mut log, a.take_changes());

        let mut b = Detector::new(settings());
        let snapshot = Snapshot::from_records(log).unwrap().expect("a meta record");
        b.restore(snapshot).unwrap();
        assert_eq!(
            b.snapshot(),
            a.snapshot(),
            "the changelog holds all it learnt"
        );
        let (sa, sb) = (
            feed(&mut a, "service", 120..130),
            feed(&mut b, "service", 120..130),
        );
        for (x, y) in sa.iter().zip(&sb) {
            assert!(x.warm && y.warm);
            assert!((x.score - y.score).abs() < 1e-9, "{x:?} {y:?}");
        }
    }
}
