//! When to try a lost database connection again, and what to tell the operator: sans-IO
//! (explicit `now`), so the backoff and the one-line-per-outage rule are tested in virtual
//! time. While the database is down, writes fail at once instead of each waiting for a
//! connection attempt, the attempts back off (doubling up to [`MAX_BACKOFF`]), and the log
//! gets one line when the outage starts and one when it ends (with how many writes were not
//! applied), not one per write.

use std::time::{Duration, Instant};

/// The wait after the first failed attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An outage in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outage {
    since: Instant,
    next_attempt: Instant,
    backoff: Duration,
    /// Writes refused (or failed) since it began.
    refused: u64,
}

/// The connection's health as the store thread sees it.
#[derive(Debug, Default)]
pub struct Reconnect {
    outage: Option<Outage>,
}

/// What the operator is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The database became unreachable.
    Lost,
    /// It is back, after `down` with `refused` writes not applied meanwhile.
    Back {
        /// How long it was unreachable.
        down: Duration,
        /// Writes that failed meanwhile.
        refused: u64,
    },
}

impl Reconnect {
    /// Whether a connection attempt may be made now (else the write fails at once).
    pub fn may_attempt(&self, now: Instant) -> bool {
        self.outage.is_none_or(|o| now >= o.next_attempt)
    }

    /// A write was refused without an attempt (the database is known to be down).
    pub fn refused(&mut self) {
        if let Some(outage) = &mut self.outage {
            outage.refused += 1;
        }
    }

    /// The connection was lost or an attempt failed at `now`: the next attempt waits,
    /// longer each time. [`Notice::Lost`] when this starts an outage.
    pub fn failed(&mut self, now: Instant) -> Option<Notice> {
        match &mut self.outage {
            Some(outage) => {
                outage.backoff = (outage.backoff * 2).min(MAX_BACKOFF);
                outage.next_attempt = now + outage.backoff;
                outage.refused += 1;
                None
            }
            None => {
                self.outage = Some(Outage {
                    since: now,
                    next_attempt: now + FIRST_BACKOFF,
                    backoff: FIRST_BACKOFF,
                    refused: 1,
                });
                Some(Notice::Lost)
            }
        }
    }

    /// A connection was made at `now`: [`Notice::Back`] when it ends an outage.
    pub fn connected(&mut self, now: Instant) -> Option<Notice> {
        self.outage.take().map(|outage| Notice::Back {
            down: now.saturating_duration_since(outage.since),
            refused: outage.refused,
        })
    }

    /// When the next connection attempt may be made, during an outage.
    pub fn next_attempt(&self) -> Option<Instant> {
        self.outage.map(|o| o.next_attempt)
    }

    /// How long the database has been unreachable at `now`, if it is.
    pub fn down_for(&self, now: Instant) -> Option<Duration> {
        self.outage.map(|o| now.saturating_duration_since(o.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_told_once_attempts_back_off_and_its_end_counts_the_lost_writes() {
        let start = Instant::now();
        let mut health = Reconnect::default();
        assert!(health.may_attempt(start));
        assert_eq!(health.failed(start), Some(Notice::Lost));
        assert!(!health.may_attempt(start + FIRST_BACKOFF / 2));
        assert_eq!(health.next_attempt(), Some(start + FIRST_BACKOFF));
        health.refused();
        assert!(health.may_attempt(start + FIRST_BACKOFF));
        assert_eq!(health.failed(start + FIRST_BACKOFF), None, "still one line");
        let second = start + FIRST_BACKOFF;
        assert!(!health.may_attempt(second + FIRST_BACKOFF));
        assert!(health.may_attempt(second + FIRST_BACKOFF * 2), "doubled");
        let mut now = second;
        for _ in 0..20 {
            now += MAX_BACKOFF;
            health.failed(now);
        }
        assert!(
            health.may_attempt(now + MAX_BACKOFF),
            "never longer than the cap"
        );
        assert_eq!(health.down_for(now), Some(now - start));
        assert_eq!(
            health.connected(now),
            Some(Notice::Back {
                down: now - start,
                refused: 23
            })
        );
        assert_eq!(health.connected(now), None);
        assert_eq!(health.next_attempt(), None);
        assert!(health.may_attempt(now));
    }
}
