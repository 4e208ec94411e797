//! When a member holding no partitions joins its consumer group again.
//!
//! Two ways to hold none while the group goes on without it: a rebalance that gave it
//! nothing (some brokers do that to a member that joined while a crashed predecessor
//! was still registered), and a transaction the coordinator refused because the
//! member's generation had passed (its state was dropped; the rebalance that moved the
//! partitions normally reaches it within a heartbeat or two, but when the member had
//! already joined the newer generation no further rebalance comes, and its partitions
//! would wait for nobody). A join of its own that no rebalance answers is tried again
//! after the backoff (a CI run had the last member left after a scale-down rejoin and
//! hear nothing for minutes).

use std::time::{Duration, Instant};

/// How long a member waits with no partitions before it joins the group again (then
/// twice as long each time, up to [`REJOIN_MAX`]).
const REJOIN_AFTER: Duration = Duration::from_secs(30);
const REJOIN_MAX: Duration = Duration::from_secs(600);
/// After a refused transaction: how long to wait for the rebalance before joining again.
const REFUSED_REJOIN_AFTER: Duration = Duration::from_secs(10);

/// Whether a member holding no partitions should join the group again: only after an
/// assignment that gave it nothing, a refused transaction, or a join of its own that
/// no rebalance answered within the backoff (the first join, still in progress, is
/// left alone).
pub(super) struct Unassigned {
    since: Option<Instant>,
    wait: Duration,
    /// The wait started at a refused transaction, not at an empty assignment.
    refused: bool,
    /// When it last joined again, until a rebalance answers (a join that never brings
    /// an assignment is tried again).
    rejoined: Option<Instant>,
}

impl Unassigned {
    pub(super) fn new() -> Self {
        Self {
            since: None,
            wait: REJOIN_AFTER,
            refused: false,
            rejoined: None,
        }
    }

    /// A rebalance assigned `partitions` partitions at `now`.
    pub(super) fn assigned(&mut self, partitions: usize, now: Instant) {
        self.refused = false;
        self.rejoined = None;
        if partitions == 0 {
            self.since.get_or_insert(now);
        } else {
            self.since = None;
            self.wait = REJOIN_AFTER;
        }
    }

    /// A transaction was refused at `now` and the member's state dropped.
    pub(super) fn refused(&mut self, now: Instant) {
        self.since = Some(now);
        self.refused = true;
    }

    /// Whether to rejoin now.
    pub(super) fn due(&mut self, now: Instant) -> bool {
        let Some(since) = self.since.or(self.rejoined) else {
            return false;
        };
        let wait = if self.refused {
            REFUSED_REJOIN_AFTER
        } else {
            self.wait
        };
        if now.duration_since(since) < wait {
            return false;
        }
        self.since = None;
        self.rejoined = Some(now);
        if !std::mem::take(&mut self.refused) {
            self.wait = (self.wait * 2).min(REJOIN_MAX);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_given_no_partitions_rejoins_with_backoff() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut u = Unassigned::new();
        assert!(!u.due(at(100)), "a join in progress is left alone");
        u.assigned(0, at(100));
        assert!(!u.due(at(129)));
        assert!(u.due(at(130)));
        u.assigned(0, at(131));
        assert!(!u.due(at(190)), "then after 60 s");
        assert!(u.due(at(191)));
        u.assigned(3, at(200));
        assert!(!u.due(at(1000)), "assigned");
        u.assigned(0, at(1000));
        assert!(u.due(at(1030)), "back to 30 s");
    }

    #[test]
    fn a_refused_member_rejoins_soon_unless_a_rebalance_comes() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut u = Unassigned::new();
        // a standing backoff of 60 s does not delay it
        u.assigned(0, at(0));
        assert!(u.due(at(30)));
        u.refused(at(100));
        assert!(!u.due(at(109)));
        assert!(u.due(at(110)), "10 s after the refusal");
        assert!(!u.due(at(160)), "once");
        u.assigned(0, at(200));
        assert!(
            !u.due(at(259)),
            "the backoff of empty assignments is unchanged"
        );
        assert!(u.due(at(260)));
        // a rebalance that follows the refusal ends the wait
        u.refused(at(300));
        u.assigned(2, at(303));
        assert!(!u.due(at(400)));
    }

    #[test]
    fn a_rejoin_that_no_rebalance_answers_is_tried_again() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut u = Unassigned::new();
        u.assigned(0, at(0));
        assert!(u.due(at(30)));
        // the join hangs: no assignment, not even an empty one
        assert!(!u.due(at(89)));
        assert!(u.due(at(90)), "again after the backoff of 60 s");
        assert!(!u.due(at(209)));
        assert!(u.due(at(210)), "then after 120 s");
        u.assigned(3, at(215));
        assert!(!u.due(at(2000)), "assigned");
    }
}
