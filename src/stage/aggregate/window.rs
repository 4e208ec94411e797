//! Window maths: which event-time windows hold a timestamp, and where they end.
//!
//! Windows are aligned to the unix epoch: a window of size `size` hopping by `hop`
//! starts at every multiple of `hop` and covers `[start, start + size)`. Tumbling windows
//! are the case `hop == size`. All functions take positive steps and sizes.

use crate::model::PROFILE_SLOTS;

/// The largest multiple of `step_ns` that is not after `ts_ns` (floor, also for negative
/// timestamps); `None` when that multiple is below `i64::MIN`.
pub fn window_start(ts_ns: i64, step_ns: i64) -> Option<i64> {
    debug_assert!(step_ns > 0);
    ts_ns.checked_sub(ts_ns.rem_euclid(step_ns))
}

/// The end (exclusive) of the window starting at `start_ns`; saturates at `i64::MAX`,
/// so a window reaching past representable time closes only at a flush.
pub fn window_end(start_ns: i64, size_ns: i64) -> i64 {
    start_ns.saturating_add(size_ns)
}

/// Starts of every window of `size_ns` hopping by `hop_ns` that contains `ts_ns`, latest
/// first: `size / hop` of them when `hop` divides `size`, one for tumbling windows.
pub fn window_starts(ts_ns: i64, size_ns: i64, hop_ns: i64) -> WindowStarts {
    debug_assert!(size_ns > 0 && hop_ns > 0);
    WindowStarts {
        next: window_start(ts_ns, hop_ns),
        ts_ns,
        size_ns,
        hop_ns,
    }
}

/// Iterator returned by [`window_starts`].
#[derive(Debug, Clone)]
pub struct WindowStarts {
    next: Option<i64>,
    ts_ns: i64,
    size_ns: i64,
    hop_ns: i64,
}

impl Iterator for WindowStarts {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        let start = self.next?;
        // start <= ts always; the window holds ts when ts - start < size (in i128: the
        // difference of two i64 can exceed i64)
        if i128::from(self.ts_ns) - i128::from(start) >= i128::from(self.size_ns) {
            self.next = None;
            return None;
        }
        self.next = start.checked_sub(self.hop_ns);
        Some(start)
    }
}

/// Profile slot of an instant `offset_ns` after the window start (`0 <= offset < size`).
pub fn profile_slot(offset_ns: u64, size_ns: u64) -> usize {
    let slot = match offset_ns.checked_mul(PROFILE_SLOTS as u64) {
        Some(scaled) => scaled / size_ns,
        None => (u128::from(offset_ns) * PROFILE_SLOTS as u128 / u128::from(size_ns)) as u64,
    };
    (slot as usize).min(PROFILE_SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn start_is_the_floor_for_positive_and_negative_times() {
        assert_eq!(window_start(0, 10), Some(0));
        assert_eq!(window_start(9, 10), Some(0));
        assert_eq!(window_start(10, 10), Some(10));
        assert_eq!(window_start(-1, 10), Some(-10));
        assert_eq!(window_start(-10, 10), Some(-10));
        assert_eq!(window_start(-11, 10), Some(-20));
    }

    #[test]
    fn start_of_extreme_times() {
        assert_eq!(window_start(i64::MAX, 10), Some(i64::MAX - 7));
        assert_eq!(window_start(i64::MIN, 1), Some(i64::MIN));
        assert_eq!(window_start(i64::MIN, 1 << 32), Some(i64::MIN));
        // -9223372036854775808 floors to -9223372036854775810: not representable
        assert_eq!(window_start(i64::MIN, 10), None);
        assert_eq!(window_start(i64::MIN + 8, 10), Some(i64::MIN + 8));
        assert_eq!(
            window_start(1_700_000_000_123_456_789, 10_000_000_000),
            Some(1_700_000_000_000_000_000)
        );
    }

    #[test]
    fn end_saturates() {
        assert_eq!(window_end(10, 10), 20);
        assert_eq!(window_end(-10, 10), 0);
        assert_eq!(window_end(i64::MAX - 7, 10), i64::MAX);
    }

    #[test]
    fn tumbling_gives_one_window() {
        let starts: Vec<i64> = window_starts(15, 10, 10).collect();
        assert_eq!(starts, vec![10]);
        let starts: Vec<i64> = window_starts(-5, 10, 10).collect();
        assert_eq!(starts, vec![-10]);
    }

    #[test]
    fn hopping_gives_size_over_hop_windows() {
        let starts: Vec<i64> = window_starts(65, 60, 10).collect();
        assert_eq!(starts, vec![60, 50, 40, 30, 20, 10]);
        let starts: Vec<i64> = window_starts(60, 60, 10).collect();
        assert_eq!(starts, vec![60, 50, 40, 30, 20, 10]);
        // a hop that does not divide the size: 2 or 3 windows
        assert_eq!(window_starts(25, 25, 10).collect::<Vec<_>>(), vec![20, 10]);
        assert_eq!(
            window_starts(24, 25, 10).collect::<Vec<_>>(),
            vec![20, 10, 0]
        );
    }

    #[test]
    fn hopping_near_the_edges_of_time_does_not_overflow() {
        // the window of MIN + 5 would start at MIN - 2: none is representable
        assert_eq!(window_starts(i64::MIN + 5, 30, 10).count(), 0);
        let bottom: Vec<i64> = window_starts(i64::MIN + 9, 30, 10).collect();
        assert_eq!(bottom, vec![i64::MIN + 8]);
        let top: Vec<i64> = window_starts(i64::MAX, 30, 10).collect();
        assert_eq!(top, vec![i64::MAX - 7, i64::MAX - 17, i64::MAX - 27]);
    }

    #[test]
    fn profile_slots_cover_the_window() {
        assert_eq!(profile_slot(0, 1000), 0);
        assert_eq!(profile_slot(9, 1000), 0);
        assert_eq!(profile_slot(10, 1000), 1);
        assert_eq!(profile_slot(999, 1000), 99);
        assert_eq!(profile_slot(u64::MAX / 2, u64::MAX / 2 + 1), 99);
    }

    proptest! {
        #[test]
        fn starts_hold_the_timestamp(ts in any::<i64>(), size in 1i64..1_000_000_000_000, hops in 1i64..20) {
            let hop = (size / hops).max(1);
            let starts: Vec<i64> = window_starts(ts, size, hop).collect();
            for &s in &starts {
                prop_assert!(s <= ts);
                prop_assert!(i128::from(ts) < i128::from(s) + i128::from(size));
                prop_assert_eq!(s.rem_euclid(hop), 0);
            }
            // every representable multiple of hop in (ts - size, ts] is listed
            let expected = (0..=size / hop + 1)
                .filter_map(|k| {
                    let s = i128::from(ts) - i128::from(ts.rem_euclid(hop)) - i128::from(k) * i128::from(hop);
                    (s > i128::from(ts) - i128::from(size) && s >= i128::from(i64::MIN)).then_some(s as i64)
                })
                .collect::<Vec<_>>();
            prop_assert_eq!(starts, expected);
        }
    }
}
