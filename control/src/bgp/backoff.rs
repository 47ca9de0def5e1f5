//! Jittered exponential back-off for reconnects (STYLE rule 15, after linkerd's `exp-backoff`).
//!
//! Guarantee: every delay lies in `[min/2, max]`; the `n`-th delay after a reset lies in
//! `[d/2, d]` with `d = min(min * 2^n, max)`. The jitter comes from a seeded xorshift, so a
//! given seed always yields the same sequence (no ambient randomness).

use std::time::Duration;

/// Why a back-off could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// `min` must be non-zero and not above `max`.
    #[error("back-off bounds must satisfy 0 < min <= max (min {min:?}, max {max:?})")]
    BadBounds {
        /// The lower bound given.
        min: Duration,
        /// The upper bound given.
        max: Duration,
    },
}

/// Exponential back-off with "equal jitter": each delay is uniform in `[d/2, d]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

// === impl Backoff ===

impl Backoff {
    /// A back-off from `min` doubling up to `max`, jittered by a generator seeded with `seed`.
    ///
    /// # Errors
    /// [`BackoffError::BadBounds`] unless `0 < min <= max`.
    pub fn try_new(min: Duration, max: Duration, seed: u64) -> Result<Self, BackoffError> {
        if min.is_zero() || min > max {
            return Err(BackoffError::BadBounds { min, max });
        }
        Ok(Backoff {
            min,
            max,
            current: min,
            // xorshift must not start at 0; any fixed odd constant will do.
            rng: seed | 1,
        })
    }

    /// The next delay; the one after it is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current.min(self.max);
        self.current = self.current.saturating_mul(2).min(self.max);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        let jitter = if half == 0 {
            0
        } else {
            self.next_random() % (nanos - half + 1)
        };
        Duration::from_nanos(half + jitter)
    }

    /// Back to `min` (after a session came up).
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64 (Marsaglia 2003).
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_bounds_rejected() {
        let s = Duration::from_secs;
        assert!(Backoff::try_new(Duration::ZERO, s(1), 1).is_err());
        assert!(Backoff::try_new(s(2), s(1), 1).is_err());
        assert!(Backoff::try_new(s(1), s(1), 1).is_ok());
    }

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::try_new(Duration::from_secs(5), Duration::from_secs(60), 7).unwrap();
        let caps = [5, 10, 20, 40, 60, 60, 60];
        for cap in caps {
            let d = b.next_delay();
            let cap = Duration::from_secs(cap);
            assert!(
                d >= cap / 2 && d <= cap,
                "{d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(5));
    }

    proptest! {
        #[test]
        fn delays_stay_in_bounds(
            min_ms in 1u64..10_000,
            extra_ms in 0u64..100_000,
            seed in any::<u64>(),
            steps in 1usize..40,
        ) {
            let min = Duration::from_millis(min_ms);
            let max = min + Duration::from_millis(extra_ms);
            let mut b = Backoff::try_new(min, max, seed).unwrap();
            let mut cap = min;
            for _ in 0..steps {
                let d = b.next_delay();
                prop_assert!(d >= cap / 2 && d <= cap);
                cap = (cap * 2).min(max);
            }
        }

        #[test]
        fn same_seed_same_sequence(seed in any::<u64>()) {
            let mk = || Backoff::try_new(Duration::from_secs(1), Duration::from_secs(60), seed).unwrap();
            let (mut a, mut b) = (mk(), mk());
            for _ in 0..10 {
                prop_assert_eq!(a.next_delay(), b.next_delay());
            }
        }
    }
}
