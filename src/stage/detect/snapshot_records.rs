//! A snapshot as the records of a compacted topic: the meta record (version, smallest
//! window, counters) and one record per subject, keyed by its kind and subject; and a
//! snapshot read back from the latest record of each key.

use serde::{Deserialize, Serialize};

use super::core::Core;
use super::snapshot::{Snapshot, SnapshotError, SNAPSHOT_VERSION};
use super::{DetectStats, SeriesKey, TraceKey, TraceState};

/// The key of a subject's record on a snapshot topic or changelog.
pub(super) fn record_key(kind: &str, subject: &impl Serialize) -> String {
    format!(
        "{kind}/{}",
        serde_json::to_string(subject).expect("subject keys serialize")
    )
}

/// Key of a snapshot topic's record holding the version, the smallest window and the
/// counters; the other records hold one subject each, keyed by kind and subject.
pub const META_KEY: &str = "meta";

/// One record of a snapshot on a topic.
#[derive(Serialize, Deserialize)]
struct Envelope {
    version: u32,
    entry: Entry,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Meta {
        smallest_window_ns: Option<i64>,
        stats: DetectStats,
    },
    Series(SeriesKey, Core),
    Value(SeriesKey, Core),
    Trace(TraceKey, TraceState),
}

impl Snapshot {
    /// The snapshot as records for a compacted topic: (key, JSON value), the meta record
    /// ([`META_KEY`]) first, then one per subject, keyed by its kind and subject (a
    /// subject's record replaces its previous one on compaction). Each record carries the
    /// version.
    pub fn into_records(self) -> Vec<(String, Vec<u8>)> {
        let version = self.version;
        let json = |entry: Entry| {
            serde_json::to_vec(&Envelope { version, entry }).expect("snapshot state serializes")
        };
        let mut out =
            Vec::with_capacity(1 + self.series.len() + self.values.len() + self.traces.len());
        out.push((
            META_KEY.to_string(),
            json(Entry::Meta {
                smallest_window_ns: self.smallest_window_ns,
                stats: self.stats,
            }),
        ));
        for (k, c) in self.series {
            out.push((record_key("series", &k), json(Entry::Series(k, c))));
        }
        for (k, c) in self.values {
            out.push((record_key("value", &k), json(Entry::Value(k, c))));
        }
        for (k, t) in self.traces {
            out.push((record_key("trace", &k), json(Entry::Trace(k, t))));
        }
        out
    }

    /// A snapshot from the latest record of each key of a snapshot topic; `Ok(None)`
    /// when there is no meta record (nothing was saved). A record of another version is
    /// [`SnapshotError::Version`].
    pub fn from_records(
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let mut snap = Snapshot {
            version: SNAPSHOT_VERSION,
            series: Vec::new(),
            values: Vec::new(),
            traces: Vec::new(),
            smallest_window_ns: None,
            stats: DetectStats::default(),
        };
        let mut meta = false;
        for (key, value) in records {
            let invalid = |source| SnapshotError::Record {
                key: key.clone(),
                source,
            };
            let v: Version = serde_json::from_slice(&value).map_err(invalid)?;
            if v.version != SNAPSHOT_VERSION {
                return Err(SnapshotError::Version {
                    found: v.version,
                    supported: SNAPSHOT_VERSION,
                });
            }
            let envelope: Envelope = serde_json::from_slice(&value).map_err(invalid)?;
            match envelope.entry {
                Entry::Meta {
                    smallest_window_ns,
                    stats,
                } => {
                    meta = true;
                    snap.smallest_window_ns = smallest_window_ns;
                    snap.stats = stats;
                }
                Entry::Series(k, c) => snap.series.push((k, c)),
                Entry::Value(k, c) => snap.values.push((k, c)),
                Entry::Trace(k, t) => snap.traces.push((k, t)),
            }
        }
        snap.sort();
        Ok(meta.then_some(snap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::detect::snapshot_restore::tests::{feed, settings};
    use crate::stage::detect::Detector;

    #[test]
    fn as_topic_records_a_snapshot_is_one_record_per_subject_and_reads_back_whole() {
        let mut a = Detector::new(settings());
        feed(&mut a, "service", 0..40);
        feed(&mut a, "operation", 0..40);
        a.train_inline();
        let snap = a.snapshot();
        let records = snap.clone().into_records();
        let keys: Vec<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys[0], META_KEY);
        assert_eq!(keys.len(), 1 + 2, "{keys:?}");
        assert!(
            keys[1..].iter().all(|k| k.starts_with("series/")),
            "{keys:?}"
        );
        // in any order (a compacted topic keeps the latest per key, not their order)
        let mut shuffled = records.clone();
        shuffled.reverse();
        assert!(
            Snapshot::from_records(shuffled).unwrap() == Some(snap),
            "read back as written"
        );
        // without the meta record nothing was saved
        assert!(Snapshot::from_records(records[1..].to_vec())
            .unwrap()
            .is_none());
        // a record of another version, or a damaged one, is an error
        let mut other = records.clone();
        other[1].1 = format!(
            r#"{{"version": {}, "entry": "from the future"}}"#,
            SNAPSHOT_VERSION + 1
        )
        .into_bytes();
        let e = Snapshot::from_records(other).unwrap_err();
        assert!(matches!(e, SnapshotError::Version { .. }), "{e}");
        let mut damaged = records;
        damaged[2].1.truncate(10);
        let e = Snapshot::from_records(damaged).unwrap_err();
        assert!(
            matches!(&e, SnapshotError::Record { key, .. } if key.starts_with("series/")),
            "{e}"
        );
    }
}
