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
    /// A partition of the repartition topic: its span times say nothing, the progress
    /// its writers report does (see [`HopWatermarks`]).
    hop: bool,
}

/// Tracks the watermark across assigned partitions: partitions of source topics by the
/// event times they deliver, partitions of the repartition topic by the progress
/// reported on them.
#[derive(Debug, Clone)]
pub struct Watermarks {
    out_of_orderness_ns: i64,
    idle_timeout_ms: i64,
    partitions: FxHashMap<u32, Partition>,
    hop: HopWatermarks,
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
            hop: HopWatermarks::new(idle_timeout_ms),
            current: NO_WATERMARK,
        }
    }

    /// A partition was assigned at processing time `now_ms`; until it delivers or goes
    /// idle it holds the watermark back.
    pub fn assign(&mut self, partition: u32, now_ms: i64) {
        self.partitions.entry(partition).or_insert(Partition {
            max_event_ns: NO_WATERMARK,
            last_seen_ms: now_ms,
            hop: false,
        });
    }

    /// A partition of the repartition topic was assigned at `now_ms`: it is as far as
    /// the progress reported on it ([`Watermarks::progress`]) says. Each of `inputs`
    /// (every input partition that writes to the topic) holds it back until heard from
    /// or silent for the idle timeout, as an assigned source partition does.
    pub fn assign_hop(&mut self, partition: u32, inputs: &[u64], now_ms: i64) {
        self.partitions.insert(
            partition,
            Partition {
                max_event_ns: NO_WATERMARK,
                last_seen_ms: now_ms,
                hop: true,
            },
        );
        self.hop.assign(partition, now_ms);
        for &input in inputs {
            self.hop.expect(partition, input, now_ms);
        }
    }

    /// Read on the repartition partition `partition` at `now_ms`: the writer of `input`
    /// reports it has got to `watermark_ns`, or is idle.
    pub fn progress(
        &mut self,
        partition: u32,
        input: u64,
        watermark_ns: i64,
        idle: bool,
        now_ms: i64,
    ) {
        self.hop
            .progress(partition, input, watermark_ns, idle, now_ms);
    }

    /// Whether `partition` is silent at `now_ms`: nothing read for the idle timeout.
    pub fn is_idle(&self, partition: u32, now_ms: i64) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|p| now_ms.saturating_sub(p.last_seen_ms) >= self.idle_timeout_ms)
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
        if self.partitions.remove(&partition).is_some_and(|p| p.hop) {
            self.hop.revoke(partition);
        }
    }

    /// A record with this event time arrived on `partition`.
    #[inline]
    pub fn observe(&mut self, partition: u32, event_ns: i64, now_ms: i64) {
        let p = self.partitions.entry(partition).or_insert(Partition {
            max_event_ns: NO_WATERMARK,
            last_seen_ms: now_ms,
            hop: false,
        });
        p.last_seen_ms = now_ms;
        if !p.hop {
            p.max_event_ns = p.max_event_ns.max(event_ns);
        }
    }

    /// Recomputes the combined watermark at processing time `now_ms` and returns it.
    /// It never goes backwards. When every partition is idle the most advanced one
    /// leads, so a quiet topic still closes its traces.
    pub fn advance(&mut self, now_ms: i64) -> i64 {
        let (mut active_min, mut overall_max) = self.hop.bounds(now_ms);
        for p in self.partitions.values().filter(|p| !p.hop) {
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

    /// Each source partition's own watermark.
    pub fn per_partition(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.partitions
            .iter()
            .filter(|(_, s)| !s.hop)
            .map(|(p, s)| {
                (
                    *p,
                    partition_watermark(s.max_event_ns, self.out_of_orderness_ns),
                )
            })
    }
}

/// Watermarks of an internal topic that other readers write to (the repartition topic):
/// a span there may come from any input partition, so the topic's own span times say
/// nothing about what is still on its way. Every writer reports, on every partition of
/// the topic and after the spans it covers, how far each input partition it reads has
/// got ([`HopWatermarks::progress`]); a partition of the topic is as far as the least
/// advanced input that reported to it and is neither idle nor gone silent.
#[derive(Debug, Clone)]
pub struct HopWatermarks {
    idle_timeout_ms: i64,
    /// Assigned partitions of the topic, with the processing time they were assigned.
    assigned: FxHashMap<u32, i64>,
    /// (partition of the topic, input) → what the input's reader last reported there.
    inputs: FxHashMap<(u32, u64), Reported>,
    current: i64,
}

#[derive(Debug, Clone, Copy)]
struct Reported {
    watermark_ns: i64,
    idle: bool,
    heard_ms: i64,
}

impl HopWatermarks {
    /// `idle_timeout_ms`: processing time after which an input whose reader went silent
    /// (a stopped instance) stops holding the watermark back, and a partition that heard
    /// from no input stops holding it back.
    pub fn new(idle_timeout_ms: i64) -> Self {
        Self {
            idle_timeout_ms,
            assigned: FxHashMap::default(),
            inputs: FxHashMap::default(),
            current: NO_WATERMARK,
        }
    }

    /// A partition of the topic was assigned at `now_ms`.
    pub fn assign(&mut self, partition: u32, now_ms: i64) {
        self.assigned.entry(partition).or_insert(now_ms);
    }

    /// `input` writes to `partition`: until it reports, it holds the partition at no
    /// watermark, for at most the idle timeout from `now_ms`.
    pub fn expect(&mut self, partition: u32, input: u64, now_ms: i64) {
        self.inputs.entry((partition, input)).or_insert(Reported {
            watermark_ns: NO_WATERMARK,
            idle: false,
            heard_ms: now_ms,
        });
    }

    /// A partition of the topic was revoked: it and what was reported on it no longer
    /// count.
    pub fn revoke(&mut self, partition: u32) {
        self.assigned.remove(&partition);
        self.inputs.retain(|(p, _), _| *p != partition);
    }

    /// Read on `partition` at `now_ms`: `input` (an id of an input topic-partition) has
    /// got to `watermark_ns`, or is idle. A report never moves an input back.
    pub fn progress(
        &mut self,
        partition: u32,
        input: u64,
        watermark_ns: i64,
        idle: bool,
        now_ms: i64,
    ) {
        let r = self.inputs.entry((partition, input)).or_insert(Reported {
            watermark_ns,
            idle,
            heard_ms: now_ms,
        });
        r.watermark_ns = r.watermark_ns.max(watermark_ns);
        r.idle = idle;
        r.heard_ms = now_ms;
    }

    /// Recomputes the watermark at `now_ms` and returns it; it never goes back. Each
    /// assigned partition is as far as its least advanced live input (live: not idle
    /// and heard within the idle timeout); a partition with no live input is as far as
    /// its most advanced one, and one that heard from nobody holds back until the idle
    /// timeout after its assignment. When no partition holds back, the most advanced
    /// report leads.
    pub fn advance(&mut self, now_ms: i64) -> i64 {
        let (min, overall_max) = self.bounds(now_ms);
        self.current = self.current.max(min.unwrap_or(overall_max));
        self.current
    }

    /// At `now_ms`: the least advanced position any assigned partition holds the
    /// watermark at (`None`: none holds it back), and the most advanced report.
    fn bounds(&self, now_ms: i64) -> (Option<i64>, i64) {
        let mut min: Option<i64> = None;
        let mut overall_max = NO_WATERMARK;
        for (&partition, &assigned_ms) in &self.assigned {
            let mut live_min: Option<i64> = None;
            let mut any_max: Option<i64> = None;
            for (_, r) in self.inputs.iter().filter(|((p, _), _)| *p == partition) {
                any_max = Some(any_max.map_or(r.watermark_ns, |m: i64| m.max(r.watermark_ns)));
                let silent = now_ms.saturating_sub(r.heard_ms) >= self.idle_timeout_ms;
                if !r.idle && !silent {
                    live_min =
                        Some(live_min.map_or(r.watermark_ns, |m: i64| m.min(r.watermark_ns)));
                }
            }
            overall_max = overall_max.max(any_max.unwrap_or(NO_WATERMARK));
            let holds = match (live_min, any_max) {
                (Some(live), _) => Some(live),
                (None, Some(_)) => None,
                (None, None) => {
                    let waiting = now_ms.saturating_sub(assigned_ms) < self.idle_timeout_ms;
                    waiting.then_some(NO_WATERMARK)
                }
            };
            if let Some(h) = holds {
                min = Some(min.map_or(h, |m: i64| m.min(h)));
            }
        }
        (min, overall_max)
    }

    /// The watermark as last computed.
    pub fn current(&self) -> i64 {
        self.current
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

    #[test]
    fn a_hop_partition_waits_for_its_least_advanced_input() {
        let mut w = HopWatermarks::new(1_000);
        w.assign(0, 0);
        w.assign(1, 0);
        // input 7 is at 100 on both partitions; input 8 has reported 40 on partition 1 only
        w.progress(0, 7, 100, false, 0);
        w.progress(1, 7, 100, false, 0);
        w.progress(1, 8, 40, false, 0);
        assert_eq!(w.advance(10), 40);
        w.progress(1, 8, 90, false, 20);
        assert_eq!(w.advance(30), 90);
        // a report never moves an input back, nor the watermark
        w.progress(1, 8, 10, false, 40);
        assert_eq!(w.advance(50), 90);
    }

    #[test]
    fn idle_and_silent_inputs_stop_holding_back() {
        let mut w = HopWatermarks::new(1_000);
        w.assign(0, 0);
        w.progress(0, 1, 500, false, 0);
        w.progress(0, 2, 100, false, 0);
        assert_eq!(w.advance(0), 100);
        // input 2 has no data any more: its reader says so
        w.progress(0, 2, 100, true, 100);
        w.progress(0, 1, 600, false, 100);
        assert_eq!(w.advance(100), 600);
        // input 3's reader stopped (a killed instance): after the idle timeout it no
        // longer holds back
        w.progress(0, 3, 200, false, 200);
        w.progress(0, 1, 700, false, 300);
        assert_eq!(w.advance(300), 600);
        w.progress(0, 1, 800, false, 1_250);
        assert_eq!(w.advance(1_250), 800);
    }

    #[test]
    fn a_hop_partition_that_heard_from_nobody_holds_back_until_the_timeout() {
        let mut w = HopWatermarks::new(1_000);
        w.assign(0, 0);
        w.assign(1, 0);
        w.progress(0, 1, 500, false, 0);
        assert_eq!(w.advance(500), NO_WATERMARK);
        assert_eq!(w.advance(1_000), 500);
        // revoking forgets the partition and what was reported on it
        w.revoke(0);
        w.assign(2, 2_000);
        w.progress(2, 1, 900, false, 2_000);
        assert_eq!(w.advance(2_000), 900);
    }

    #[test]
    fn repartition_partitions_follow_reported_progress_not_span_times() {
        let mut w = Watermarks::new(0, 1_000);
        w.assign(0, 0);
        w.assign_hop(5, &[], 0);
        w.observe(0, 300, 0);
        // spans on the repartition partition move nothing: their inputs may lag
        w.observe(5, 900, 0);
        assert_eq!(
            w.advance(10),
            NO_WATERMARK,
            "partition 5 heard no progress yet"
        );
        w.progress(5, 42, 200, false, 20);
        assert_eq!(w.advance(20), 200);
        w.progress(5, 42, 500, false, 30);
        assert_eq!(w.advance(30), 300, "the source partition holds back now");
        assert_eq!(
            w.per_partition().count(),
            1,
            "only source partitions report their own"
        );
        // the writer of input 42 stops: after the idle timeout the source partition leads
        w.observe(0, 800, 1_100);
        assert_eq!(w.advance(1_100), 800);
        w.revoke(5);
        w.assign_hop(6, &[], 1_200);
        assert_eq!(w.advance(1_300), 800, "never backwards");
    }

    #[test]
    fn an_expected_input_holds_a_new_partition_back_until_it_reports_or_falls_silent() {
        let mut w = Watermarks::new(0, 1_000);
        // inputs 1 and 2 write to the topic; only input 1's writer has reported yet
        w.assign_hop(0, &[1, 2], 0);
        w.progress(0, 1, 500, false, 10);
        assert_eq!(
            w.advance(10),
            NO_WATERMARK,
            "input 2 may still send older spans"
        );
        w.progress(0, 2, 300, false, 20);
        assert_eq!(w.advance(20), 300);
        // input 3's writer never reports: after the idle timeout it no longer holds back
        w.assign_hop(1, &[1, 3], 100);
        w.progress(1, 1, 600, false, 100);
        assert_eq!(w.advance(500), 300);
        w.progress(0, 1, 700, false, 1_050);
        w.progress(0, 2, 700, false, 1_050);
        w.progress(1, 1, 700, false, 1_050);
        assert_eq!(w.advance(1_100), 700);
    }
}
