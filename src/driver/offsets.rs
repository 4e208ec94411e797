//! Which input offsets may be committed.
//!
//! Every open trace, and every output not yet acknowledged by Kafka, holds the lowest
//! offset it came from on each partition. A partition may be committed up to the lowest
//! held offset, or up to the next offset to read when nothing is held: everything below
//! that point has been fully written out.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::model::HoldOffsets;

#[derive(Debug, Default, Clone)]
struct PartitionOffsets {
    /// One past the highest offset consumed.
    next: Option<i64>,
    /// Held offsets with how many holders each.
    held: BTreeMap<i64, u32>,
    /// The last offset committed (the next offset to read after a restart).
    committed: Option<i64>,
}

impl PartitionOffsets {
    fn committable(&self) -> Option<i64> {
        let next = self.next?;
        Some(self.held.keys().next().map_or(next, |&low| low.min(next)))
    }
}

/// Tracks held offsets per partition.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    partitions: FxHashMap<u32, PartitionOffsets>,
}

impl HoldOffsets for OffsetTracker {
    #[inline]
    fn hold(&mut self, partition: u32, offset: i64) {
        OffsetTracker::hold(self, partition, offset);
    }
}

impl OffsetTracker {
    /// Starts tracking a partition.
    pub fn assign(&mut self, partition: u32) {
        self.partitions.entry(partition).or_default();
    }

    /// Stops tracking a partition; later releases for it are ignored.
    pub fn revoke(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }

    /// True when the partition is tracked.
    pub fn is_assigned(&self, partition: u32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// A record at `offset` was read.
    #[inline]
    pub fn consumed(&mut self, partition: u32, offset: i64) {
        let p = self.partitions.entry(partition).or_default();
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Something derived from the record at `offset` is not written out yet.
    #[inline]
    pub fn hold(&mut self, partition: u32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            *p.held.entry(offset).or_insert(0) += 1;
        }
    }

    /// One holder of `offset` is done.
    #[inline]
    pub fn release(&mut self, partition: u32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            if let Some(count) = p.held.get_mut(&offset) {
                *count -= 1;
                if *count == 0 {
                    p.held.remove(&offset);
                }
            }
        }
    }

    /// One past the highest offset read on `partition`, if any was.
    pub fn next(&self, partition: u32) -> Option<i64> {
        self.partitions.get(&partition).and_then(|p| p.next)
    }

    /// The offset that may be committed for `partition` now.
    pub fn committable(&self, partition: u32) -> Option<i64> {
        self.partitions
            .get(&partition)
            .and_then(PartitionOffsets::committable)
    }

    /// Partitions whose committable offset moved past the last commit, with that offset.
    pub fn to_commit(&self) -> Vec<(u32, i64)> {
        let mut out: Vec<(u32, i64)> = self
            .partitions
            .iter()
            .filter_map(|(part, p)| {
                let c = p.committable()?;
                (p.committed.is_none_or(|done| c > done)).then_some((*part, c))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Partitions read past their last commit, with the next offset to read: what a
    /// checkpoint commits, the state being safe.
    pub fn positions(&self) -> Vec<(u32, i64)> {
        let mut out: Vec<(u32, i64)> = self
            .partitions
            .iter()
            .filter_map(|(part, p)| {
                let next = p.next?;
                p.committed
                    .is_none_or(|done| next > done)
                    .then_some((*part, next))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Records that `offset` was committed for `partition`.
    pub fn committed(&mut self, partition: u32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.committed = Some(p.committed.map_or(offset, |c| c.max(offset)));
        }
    }

    /// Number of held offsets over all partitions.
    pub fn held(&self) -> usize {
        self.partitions.values().map(|p| p.held.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_committable_before_a_record_is_read() {
        let mut t = OffsetTracker::default();
        t.assign(0);
        assert_eq!(t.committable(0), None);
        assert!(t.to_commit().is_empty());
    }

    #[test]
    fn commit_stops_below_the_lowest_held_offset() {
        let mut t = OffsetTracker::default();
        t.assign(0);
        for o in 0..10 {
            t.consumed(0, o);
        }
        t.hold(0, 3);
        t.hold(0, 7);
        assert_eq!(t.committable(0), Some(3));
        t.release(0, 3);
        assert_eq!(t.committable(0), Some(7));
        t.release(0, 7);
        assert_eq!(t.committable(0), Some(10));
    }

    #[test]
    fn an_offset_held_twice_needs_two_releases() {
        let mut t = OffsetTracker::default();
        t.consumed(1, 5);
        t.hold(1, 5);
        t.hold(1, 5);
        t.release(1, 5);
        assert_eq!(t.committable(1), Some(5));
        t.release(1, 5);
        assert_eq!(t.committable(1), Some(6));
    }

    #[test]
    fn to_commit_reports_only_progress() {
        let mut t = OffsetTracker::default();
        t.consumed(0, 0);
        assert_eq!(t.to_commit(), vec![(0, 1)]);
        t.committed(0, 1);
        assert!(t.to_commit().is_empty());
        t.consumed(0, 1);
        assert_eq!(t.to_commit(), vec![(0, 2)]);
    }

    #[test]
    fn revoked_partition_ignores_late_releases() {
        let mut t = OffsetTracker::default();
        t.consumed(0, 4);
        t.hold(0, 4);
        t.revoke(0);
        t.release(0, 4);
        assert_eq!(t.committable(0), None);
        assert!(!t.is_assigned(0));
    }
}
