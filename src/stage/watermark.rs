//! Event-time watermarks: per partition, the latest event time seen minus the allowed
//! out-of-orderness; combined as the minimum over assigned partitions that are not idle.

use rustc_hash::FxHashMap;

/// Watermark of a partition that has not delivered anything yet.
pub const NO_WATERMARK: i64 = i64::MIN;

/// The watermark a partition implies: its max event time minus out-of-orderness.
pub fn partition_watermark(max_event_ns: i64, out_of_orderness_ns: i64) -> i64 {
    if max_event_ns == NO_WATERMARK {
        NO_WATERMARK
    } else {
        max_event_ns.saturating_sub(out_of_orderness_ns)
    }
}

#[derive(Debug, Clone)]
struct Partition {
    max_event_ns: i64,
    /// Processing time (ms) of the last record, or of the assignment.
    last_seen_ms: i64,
}

/// Tracks the watermark across assigned partitions.
#[derive(Debug, Clone)]
pub struct Watermarks {
    out_of_orderness_ns: i64,
    idle_timeout_ms: i64,
    partitions: FxHashMap<u32, Partition>,
    current: i64,
}

impl Watermarks {
    /// `idle_timeout_ms` is processing time after which a silent partition stops holding
    /// the watermark back.
    pub fn new(out_of_orderness_ns: i64, idle_timeout_ms: i64) -> Self {
        Self {
            out_of_orderness_ns,
            idle_timeout_ms,
            partitions: FxHashMap::default(),
            current: NO_WATERMARK,
        }
    }

    /// A partition was assigned at processing time `now_ms`; until it delivers or goes
    /// idle it holds the watermark back.
    pub fn assign(&mut self, partition: u32, now_ms: i64) {
        self.partitions.entry(partition).or_insert(Partition {
            max_event_ns: NO_WATERMARK,
            last_seen_ms: now_ms,
        });
    }

    /// The latest event time `partition` delivered, if it delivered anything (state kept
    /// across restarts).
    pub fn max_event(&self, partition: u32) -> Option<i64> {
        self.partitions
            .get(&partition)
            .map(|p| p.max_event_ns)
            .filter(|&ns| ns != NO_WATERMARK)
    }

    /// Restores the latest event time of an assigned `partition`; it only moves forward.
    pub fn restore_max_event(&mut self, partition: u32, max_event_ns: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.max_event_ns = p.max_event_ns.max(max_event_ns);
        }
    }

    /// A partition was revoked: it no longer counts.
    pub fn revoke(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }

    /// A record with this event time arrived on `partition`.
    #[inline]
    pub fn observe(&mut self, partition: u32, event_ns: i64, now_ms: i64) {
        let p = self.partitions.entry(partition).or_insert(Partition {
            max_event_ns: NO_WATERMARK,
            last_seen_ms: now_ms,
        });
        p.max_event_ns = p.max_event_ns.max(event_ns);
        p.last_seen_ms = now_ms;
    }

    /// Recomputes the combined watermark at processing time `now_ms` and returns it.
    /// It never goes backwards. When every partition is idle the most advanced one
    /// leads, so a quiet topic still closes its traces.
    pub fn advance(&mut self, now_ms: i64) -> i64 {
        let mut active_min: Option<i64> = None;
        let mut overall_max = NO_WATERMARK;
        for p in self.partitions.values() {
            let wm = partition_watermark(p.max_event_ns, self.out_of_orderness_ns);
            overall_max = overall_max.max(wm);
            let idle = now_ms.saturating_sub(p.last_seen_ms) >= self.idle_timeout_ms;
            if !idle {
                active_min = Some(active_min.map_or(wm, |m: i64| m.min(wm)));
            }
        }
        let candidate = active_min.unwrap_or(overall_max);
        self.current = self.current.max(candidate);
        self.current
    }

    /// Moves the watermark to at least `ns` (end of input, tests).
    pub fn force(&mut self, ns: i64) {
        self.current = self.current.max(ns);
    }

    /// The combined watermark as last computed.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Each partition's own watermark.
    pub fn per_partition(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.partitions.iter().map(|(p, s)| {
            (
                *p,
                partition_watermark(s.max_event_ns, self.out_of_orderness_ns),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_active_partitions() {
        let mut w = Watermarks::new(10, 1_000);
        w.observe(0, 100, 0);
        w.observe(1, 50, 0);
        assert_eq!(w.advance(0), 40);
        w.observe(1, 200, 1);
        assert_eq!(w.advance(1), 90);
    }

    #[test]
    fn idle_partition_stops_holding_back() {
        let mut w = Watermarks::new(0, 1_000);
        w.observe(0, 100, 0);
        w.observe(1, 10, 0);
        assert_eq!(w.advance(500), 10);
        w.observe(0, 300, 1_200);
        // partition 1 silent for 1.2 s: idle
        assert_eq!(w.advance(1_200), 300);
        // it comes back with old data: the watermark does not go backwards
        w.observe(1, 20, 1_300);
        assert_eq!(w.advance(1_300), 300);
    }

    #[test]
    fn assigned_partition_without_data_holds_back_until_idle() {
        let mut w = Watermarks::new(0, 1_000);
        w.assign(1, 0);
        w.observe(0, 100, 0);
        assert_eq!(w.advance(10), NO_WATERMARK);
        assert_eq!(w.advance(1_000), 100);
    }

    #[test]
    fn all_idle_lets_the_leader_through_and_revoke_forgets() {
        let mut w = Watermarks::new(5, 100);
        w.observe(0, 100, 0);
        w.observe(1, 50, 0);
        assert_eq!(w.advance(1_000), 95);
        w.revoke(0);
        assert_eq!(w.per_partition().count(), 1);
    }

    #[test]
    fn partition_watermark_saturates() {
        assert_eq!(partition_watermark(NO_WATERMARK, 5), NO_WATERMARK);
        assert_eq!(partition_watermark(i64::MIN + 1, 5), i64::MIN);
        assert_eq!(partition_watermark(100, 5), 95);
    }
}
