//! A budget of log lines per second, so input an attacker controls cannot flood the log
//! (a line per bad request would write megabytes a second under a flood).

use std::time::{Duration, Instant};

/// Allows at most `limit` lines in each one-second window.
#[derive(Debug, Clone, Default)]
pub struct LogLimiter {
    window: Option<Instant>,
    lines: u32,
    limit: u32,
}

impl LogLimiter {
    /// At most `limit` lines per second (0: none).
    pub fn new(limit: u32) -> Self {
        LogLimiter {
            limit,
            ..LogLimiter::default()
        }
    }

    /// True when another line may be written at `now`.
    pub fn allows(&mut self, now: Instant) -> bool {
        match self.window {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {
                self.lines += 1;
                self.lines <= self.limit
            }
            _ => {
                self.window = Some(now);
                self.lines = 1;
                self.limit > 0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_per_second() {
        let start = Instant::now();
        let mut log = LogLimiter::new(3);
        let allowed = (0..10).filter(|_| log.allows(start)).count();
        assert_eq!(allowed, 3);
        assert!(log.allows(start + Duration::from_secs(1)));
    }
}
