//! Offsets held for open aggregate windows.
//!
//! A trace fed to the aggregator lives on in the windows it was counted in after the
//! trace record itself is written. Its input offsets stay held until every window that
//! can hold one of its calls has closed, and then pass to the records of that step (the
//! aggregates and alerts), so a commit never passes spans whose windows only exist in
//! memory.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::model::{Holds, Trace};

/// Held offsets keyed by the event time at which the windows holding them have closed.
#[derive(Debug, Default)]
pub struct WindowHolds {
    pending: BTreeMap<i64, Vec<(u32, i64)>>,
    len: usize,
}

/// When every window of size at most `horizon_ns` that holds a call of `trace` has
/// closed: calls are placed by their end, and a window holding time t ends by t + size.
pub fn release_at(trace: &Trace, horizon_ns: i64) -> i64 {
    let last_end = trace
        .spans
        .iter()
        .map(|s| s.end_ns)
        .max()
        .unwrap_or(i64::MIN);
    last_end.saturating_add(horizon_ns)
}

impl WindowHolds {
    /// Holds `holds` until the aggregator has closed every window ending by `release_at`.
    pub fn add(&mut self, release_at: i64, holds: &Holds) {
        if holds.is_empty() {
            return;
        }
        self.len += holds.len();
        self.pending
            .entry(release_at)
            .or_default()
            .extend(holds.iter().copied());
    }

    /// Moves the holds whose windows have all closed (`closed_through` is the
    /// aggregator's) to `due`.
    pub fn take_due(&mut self, closed_through: i64, due: &mut Vec<(u32, i64)>) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > closed_through {
                break;
            }
            let holds = entry.remove();
            self.len -= holds.len();
            due.extend(holds);
        }
    }

    /// Number of offsets held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The lowest offset per partition of `offsets`: what a record written for all of them
/// must hold.
pub fn lowest_per_partition(offsets: &[(u32, i64)]) -> Holds {
    let mut low: FxHashMap<u32, i64> = FxHashMap::default();
    for &(p, o) in offsets {
        low.entry(p).and_modify(|l| *l = (*l).min(o)).or_insert(o);
    }
    let mut holds: Holds = low.into_iter().collect();
    holds.sort_unstable();
    holds
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    #[test]
    fn holds_are_due_once_their_windows_closed() {
        let mut w = WindowHolds::default();
        w.add(100, &smallvec![(0, 5)]);
        w.add(200, &smallvec![(0, 7), (1, 3)]);
        let mut due = Vec::new();
        w.take_due(99, &mut due);
        assert!(due.is_empty());
        assert_eq!(w.len(), 3);
        w.take_due(100, &mut due);
        assert_eq!(due, vec![(0, 5)]);
        w.take_due(500, &mut due);
        assert_eq!(due.len(), 3);
        assert!(w.is_empty());
    }

    #[test]
    fn the_lowest_offset_of_each_partition_is_held() {
        let holds = lowest_per_partition(&[(0, 9), (1, 4), (0, 3), (1, 8)]);
        assert_eq!(&holds[..], &[(0, 3), (1, 4)]);
    }
}
