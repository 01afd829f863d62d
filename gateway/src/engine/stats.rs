//! Counters of dropped and rejected input, with a rate limit for the log lines they cause.

use crate::log_limit::LogLimiter;
use std::time::Instant;

/// What the engine dropped or rejected since start.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Datagrams that were not SIP at all and could not be answered.
    pub undecodable_dropped: u64,
    /// Requests answered with an error status by validation (400, 416, 420, 483, 501, 505...).
    pub rejected_requests: u64,
    /// Responses dropped (malformed, or not addressed to us).
    pub responses_dropped: u64,
    /// Stream connections closed because the peer sent garbage.
    pub stream_garbage: u64,
    /// New requests answered 503 because they waited too long (overload).
    pub overload_rejected: u64,
    /// Requests signed as from a gateway node that were not trusted (not from a node
    /// address, bad or old signature): treated as outside traffic.
    pub forged_node_requests: u64,
    log: LogLimiter,
}

impl Stats {
    /// Counters at zero; at most `log_limit` warnings per second about bad input.
    pub fn new(log_limit: u32) -> Stats {
        Stats {
            log: LogLimiter::new(log_limit),
            ..Stats::default()
        }
    }

    /// True when another warning line may be written now.
    pub fn should_log(&mut self, now: Instant) -> bool {
        self.log.allows(now)
    }
}
