//! The retry schedule: exponential backoff with deterministic jitter, as plain functions.

use std::time::Duration;

/// Exponential backoff between `initial` and `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait before the first retry (before jitter).
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of the wait before retry number `retry` (0 for the first retry):
    /// `initial · 2^retry`, capped at `max`. Saturates instead of overflowing.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max)
    }

    /// The wait before retry number `retry` ("equal jitter"): the ceiling less a share of
    /// up to half of it chosen by `jitter`, so it lies in `[ceiling / 2, ceiling]` and
    /// never exceeds `max`. The same inputs always give the same wait.
    pub fn delay(&self, retry: u32, jitter: u64) -> Duration {
        let ceiling = self.ceiling(retry);
        let half = ceiling / 2;
        // `jitter / 2^64` is a fraction in [0, 1); scale the half by it in integer nanos.
        let half_ns = half.as_nanos();
        let off = (half_ns * u128::from(jitter)) >> 64;
        ceiling - Duration::from_nanos(u64::try_from(off).unwrap_or(u64::MAX))
    }

    /// The wait before retry number `retry` when the server asked for `retry_after`:
    /// at least the backoff, at most `max`.
    pub fn delay_with_hint(
        &self,
        retry: u32,
        jitter: u64,
        retry_after: Option<Duration>,
    ) -> Duration {
        let delay = self.delay(retry, jitter);
        match retry_after {
            Some(hint) => delay.max(hint.min(self.max)),
            None => delay,
        }
    }
}

/// A cheap, well-mixed 64-bit value from `seed`, `request` and `retry` (splitmix64 of
/// their combination): the jitter source, deterministic so schedules are reproducible.
pub fn jitter(seed: u64, request: u64, retry: u32) -> u64 {
    let mut z = seed
        ^ request.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(retry).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable seed for a destination (FNV-1a of its name), so two destinations that fail
/// together do not retry in lockstep.
pub fn seed(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff() -> Backoff {
        Backoff {
            initial: 100 * MS,
            max: 2000 * MS,
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = backoff();
        let got: Vec<_> = (0..8).map(|r| b.ceiling(r)).collect();
        let want: Vec<_> = [100, 200, 400, 800, 1600, 2000, 2000, 2000]
            .iter()
            .map(|&ms| ms * MS)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn huge_retry_numbers_saturate_at_max() {
        let b = backoff();
        for r in [31, 32, 63, 64, 1000, u32::MAX] {
            assert_eq!(b.ceiling(r), b.max, "retry {r}");
            assert!(b.delay(r, u64::MAX) >= b.max / 2);
        }
        let wide = Backoff {
            initial: Duration::from_secs(u64::MAX / 4),
            max: Duration::MAX,
        };
        assert_eq!(wide.ceiling(10), Duration::MAX);
    }

    #[test]
    fn delay_stays_between_half_ceiling_and_ceiling() {
        let b = backoff();
        for r in 0..10 {
            let c = b.ceiling(r);
            assert_eq!(b.delay(r, 0), c, "no jitter is the ceiling");
            assert!(b.delay(r, u64::MAX) >= c / 2);
            for request in 0..200 {
                let d = b.delay(r, jitter(7, request, r));
                assert!(
                    d >= c / 2 && d <= c,
                    "retry {r}: {d:?} outside [{:?}, {c:?}]",
                    c / 2
                );
            }
        }
    }

    #[test]
    fn same_inputs_same_schedule() {
        let b = backoff();
        let schedule = |seed: u64| -> Vec<Duration> {
            (0..6).map(|r| b.delay(r, jitter(seed, 3, r))).collect()
        };
        assert_eq!(schedule(1), schedule(1));
        assert_ne!(schedule(1), schedule(2));
    }

    #[test]
    fn jitter_spreads_over_the_range() {
        let b = backoff();
        let delays: Vec<Duration> = (0..1000).map(|i| b.delay(0, jitter(42, i, 0))).collect();
        let low = delays.iter().filter(|d| **d < 75 * MS).count();
        let high = delays.len() - low;
        assert!(low > 400 && high > 400, "low {low} high {high}");
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 900);
    }

    #[test]
    fn retry_after_raises_the_wait_up_to_max() {
        let b = backoff();
        assert_eq!(b.delay_with_hint(0, 0, Some(MS)), 100 * MS);
        assert_eq!(b.delay_with_hint(0, 0, Some(1500 * MS)), 1500 * MS);
        assert_eq!(
            b.delay_with_hint(0, 0, Some(Duration::from_secs(3600))),
            b.max
        );
        assert_eq!(b.delay_with_hint(2, 0, None), 400 * MS);
    }

    #[test]
    fn seeds_differ_by_name() {
        assert_ne!(seed("webhook[0]"), seed("webhook[1]"));
        assert_eq!(seed("alertmanager"), seed("alertmanager"));
    }
}
