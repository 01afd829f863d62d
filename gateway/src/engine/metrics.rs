//! What the engine did since start, for the operator's metrics: calls by how they ended,
//! the setup latency, pickups by path and outcome. Low cardinality by construction: every
//! label is one of a fixed set of words, never a number or a name from the network.

use crate::status::histogram::{LatencyHistogram, SETUP_BOUNDS_US};
use crate::status::view::RecentPickupView;
use std::collections::VecDeque;

/// How many ended pickups `gateway status pickups` lists.
pub const RECENT_PICKUPS: usize = 32;

/// How a call ended: its CDR disposition.
pub const CALL_ENDS: [&str; 6] = [
    "answered",
    "busy",
    "no-answer",
    "cancelled",
    "failed",
    "other",
];

/// The way a pickup handed the call over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickupPath {
    /// The gateway sent the picker an INVITE with Replaces for its dummy dialog.
    Replaces,
    /// The gateway answered the picker's own INVITE and bridged it (`pickup_mode`, or a
    /// phone that does not advertise Replaces).
    Bridged,
    /// The picker's BLF key sent an INVITE with Replaces naming the ringing leg.
    Blf,
    /// The INVITE with Replaces failed or went unanswered: the picker's INVITE was
    /// bridged instead.
    Fallback,
}

impl PickupPath {
    /// Every path, in the order of the counters.
    pub const ALL: [PickupPath; 4] = [
        PickupPath::Replaces,
        PickupPath::Bridged,
        PickupPath::Blf,
        PickupPath::Fallback,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PickupPath::Replaces => "replaces",
            PickupPath::Bridged => "bridged",
            PickupPath::Blf => "blf",
            PickupPath::Fallback => "fallback",
        }
    }
}

/// The engine's counters (one shard's; [`EngineMetrics::plus`] sums shards).
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// Calls that came in (INVITEs that became calls).
    pub calls_started: u64,
    /// Calls ended, by [`CALL_ENDS`].
    pub calls_ended: [u64; CALL_ENDS.len()],
    /// Setup latency: from the caller's INVITE to the first ringing or final response
    /// it got.
    pub setup: LatencyHistogram,
    /// Pickups that connected, by [`PickupPath::ALL`].
    pub pickups_connected: [u64; 4],
    /// Pickups that failed, by [`PickupPath::ALL`].
    pub pickups_failed: [u64; 4],
    /// The pickups that ended last, newest last.
    pub recent_pickups: VecDeque<RecentPickupView>,
}

impl Default for EngineMetrics {
    fn default() -> EngineMetrics {
        EngineMetrics {
            calls_started: 0,
            calls_ended: [0; CALL_ENDS.len()],
            setup: LatencyHistogram::new(SETUP_BOUNDS_US),
            pickups_connected: [0; 4],
            pickups_failed: [0; 4],
            recent_pickups: VecDeque::new(),
        }
    }
}

impl EngineMetrics {
    /// A call ended with CDR disposition `disposition`.
    pub fn call_ended(&mut self, disposition: &str) {
        let index = CALL_ENDS
            .iter()
            .position(|&known| known == disposition)
            .unwrap_or(CALL_ENDS.len() - 1);
        self.calls_ended[index] += 1;
    }

    /// A call's caller got its first ringing or final response `ms` after its INVITE.
    pub fn call_set_up(&mut self, ms: u64) {
        self.setup.record(ms.saturating_mul(1000));
    }

    /// A pickup ended: `connected` or not, along `path`.
    pub fn pickup_ended(&mut self, path: PickupPath, connected: bool, recent: RecentPickupView) {
        let index = PickupPath::ALL.iter().position(|&p| p == path).unwrap_or(0);
        match connected {
            true => self.pickups_connected[index] += 1,
            false => self.pickups_failed[index] += 1,
        }
        if self.recent_pickups.len() == RECENT_PICKUPS {
            self.recent_pickups.pop_front();
        }
        self.recent_pickups.push_back(recent);
    }

    /// The sum of two shards' counters; the recent pickups of both, newest last, at most
    /// [`RECENT_PICKUPS`].
    pub fn plus(mut self, other: &EngineMetrics) -> EngineMetrics {
        self.calls_started += other.calls_started;
        add(&mut self.calls_ended, &other.calls_ended);
        self.setup.add(&other.setup);
        add(&mut self.pickups_connected, &other.pickups_connected);
        add(&mut self.pickups_failed, &other.pickups_failed);
        let mut recent: Vec<RecentPickupView> = self
            .recent_pickups
            .drain(..)
            .chain(other.recent_pickups.iter().cloned())
            .collect();
        recent.sort_by_key(|p| p.at_ms);
        let skip = recent.len().saturating_sub(RECENT_PICKUPS);
        self.recent_pickups = recent.into_iter().skip(skip).collect();
        self
    }
}

fn add<const N: usize>(sum: &mut [u64; N], other: &[u64; N]) {
    for (total, more) in sum.iter_mut().zip(other) {
        *total += more;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recent(at_ms: u64) -> RecentPickupView {
        RecentPickupView {
            picker: "202".into(),
            method: "group".into(),
            path: "replaces".into(),
            outcome: "connected".into(),
            at_ms,
        }
    }

    #[test]
    fn setup_latencies_are_counted_in_microseconds() {
        let mut metrics = EngineMetrics::default();
        metrics.call_set_up(5);
        metrics.call_set_up(6);
        assert_eq!(metrics.setup.count(), 2);
        assert_eq!(metrics.setup.cumulative().next(), Some((5_000, 1)));
        assert_eq!(metrics.setup.sum_us(), 11_000);
    }

    #[test]
    fn an_unknown_disposition_counts_as_other() {
        let mut metrics = EngineMetrics::default();
        metrics.call_ended("busy");
        metrics.call_ended("x-made-up");
        assert_eq!(metrics.calls_ended[1], 1);
        assert_eq!(metrics.calls_ended[CALL_ENDS.len() - 1], 1);
    }

    #[test]
    fn shards_sum_and_keep_only_the_newest_recent_pickups() {
        let mut a = EngineMetrics::default();
        let mut b = EngineMetrics::default();
        for at in 0..RECENT_PICKUPS as u64 {
            a.pickup_ended(PickupPath::Replaces, true, recent(at * 2));
            b.pickup_ended(PickupPath::Fallback, false, recent(at * 2 + 1));
        }
        assert_eq!(a.recent_pickups.len(), RECENT_PICKUPS);
        let sum = a.plus(&b);
        assert_eq!(sum.pickups_connected[0], RECENT_PICKUPS as u64);
        assert_eq!(sum.pickups_failed[3], RECENT_PICKUPS as u64);
        assert_eq!(sum.recent_pickups.len(), RECENT_PICKUPS);
        let times: Vec<u64> = sum.recent_pickups.iter().map(|p| p.at_ms).collect();
        let newest: Vec<u64> = (RECENT_PICKUPS as u64..2 * RECENT_PICKUPS as u64).collect();
        assert_eq!(times, newest);
    }
}
