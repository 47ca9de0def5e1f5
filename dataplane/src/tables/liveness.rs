//! Control's judgement of worker heartbeats, with time passed in (STYLE rule 18).
//!
//! A worker's heartbeat is a counter it bumps; a restarted worker gets a new owner word. The
//! writer remembers, per block, the last (owner, heartbeat) pair it saw and the [`Tick`] when
//! that pair last changed. A live block whose pair has not changed for longer than the
//! configured timeout is stale. The first observation of a block (including every block after a
//! writer re-attaches) counts as a change, so a restarted control gives every worker one full
//! timeout before judging it.

use std::time::Duration;

use super::Tick;

#[derive(Debug, Clone, Copy)]
struct Obs {
    owner: u64,
    heartbeat: u64,
    changed_at: Tick,
}

/// The verdict on one live worker block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its heartbeat moved within the timeout; `age` since it last moved.
    Fresh {
        /// Time since the heartbeat last moved.
        age: Duration,
    },
    /// Its heartbeat has not moved for `age`, beyond the timeout.
    Stale {
        /// Time since the heartbeat last moved.
        age: Duration,
    },
}

/// Per-block heartbeat history; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    dead_after: Duration,
    obs: Vec<Option<Obs>>,
}

impl Liveness {
    /// History for `workers` blocks with the given timeout.
    pub(crate) fn new(workers: u32, dead_after: Duration) -> Self {
        Self {
            dead_after,
            obs: vec![None; usize::try_from(workers).unwrap_or(0)],
        }
    }

    /// Records an observation of live block `i` at `now` and judges it.
    pub(crate) fn observe(&mut self, i: usize, owner: u64, heartbeat: u64, now: Tick) -> Verdict {
        let Some(slot) = self.obs.get_mut(i) else {
            return Verdict::Fresh {
                age: Duration::ZERO,
            };
        };
        match slot {
            Some(o) if o.owner == owner && o.heartbeat == heartbeat => {
                let age = now.saturating_since(o.changed_at);
                if age > self.dead_after {
                    Verdict::Stale { age }
                } else {
                    Verdict::Fresh { age }
                }
            }
            _ => {
                *slot = Some(Obs {
                    owner,
                    heartbeat,
                    changed_at: now,
                });
                Verdict::Fresh {
                    age: Duration::ZERO,
                }
            }
        }
    }

    /// Forgets block `i` (it is free or dead).
    pub(crate) fn forget(&mut self, i: usize) {
        if let Some(slot) = self.obs.get_mut(i) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn stale_only_after_the_timeout_without_change() {
        let mut l = Liveness::new(2, Duration::from_secs(2));
        let fresh0 = Verdict::Fresh {
            age: Duration::ZERO,
        };
        assert_eq!(l.observe(0, 5, 1, Tick::from_nanos(10 * S)), fresh0);
        assert_eq!(
            l.observe(0, 5, 1, Tick::from_nanos(12 * S)),
            Verdict::Fresh {
                age: Duration::from_secs(2)
            }
        );
        assert_eq!(
            l.observe(0, 5, 1, Tick::from_nanos(12 * S + 1)),
            Verdict::Stale {
                age: Duration::from_nanos(2 * S + 1)
            }
        );
        // A beat resets it; so does a new owner word.
        assert_eq!(l.observe(0, 5, 2, Tick::from_nanos(13 * S)), fresh0);
        assert_eq!(l.observe(0, 9, 2, Tick::from_nanos(20 * S)), fresh0);
        // Time going backwards never makes a worker stale.
        assert!(matches!(
            l.observe(0, 9, 2, Tick::from_nanos(S)),
            Verdict::Fresh { .. }
        ));
        l.forget(0);
        assert_eq!(l.observe(0, 9, 2, Tick::from_nanos(100 * S)), fresh0);
        // Out-of-range blocks are never judged stale.
        assert_eq!(l.observe(7, 0, 0, Tick::from_nanos(0)), fresh0);
    }
}
