//! The transactions' deadlines: one per transaction, moved often (each retransmission,
//! each response), mostly never reached. A binary heap with lazy deletion: moving or
//! cancelling a deadline only records the new one, and the heap's stale entries are
//! dropped when they reach its top (or all at once when they outnumber the live ones), so
//! the top is always a live deadline and every operation is O(log n) on contiguous memory
//! (a `BTreeSet` of tens of thousands of entries cost more per NOTIFY than building it).

use crate::hashing::IdMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hash;
use std::time::Instant;

/// Deadlines by key, earliest first.
#[derive(Debug)]
pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    /// The live deadline of each key (a heap entry that differs is stale). Keys are ids the
    /// owner assigns (see [`crate::hashing`]).
    live: IdMap<K, Instant>,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            live: IdMap::default(),
        }
    }
}

impl<K: Copy + Ord + Hash> TimerQueue<K> {
    /// Sets `key`'s deadline to `at` (replacing any earlier one).
    pub fn schedule(&mut self, key: K, at: Instant) {
        self.live.insert(key, at);
        self.heap.push(Reverse((at, key)));
        self.tidy();
    }

    /// Removes `key`'s deadline, if it has one.
    pub fn cancel(&mut self, key: K) {
        if self.live.remove(&key).is_some() {
            self.tidy();
        }
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the earliest key whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &Reverse((at, key)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.live.remove(&key);
        self.tidy();
        Some(key)
    }

    /// Drops stale entries from the top, and rebuilds the heap from the live deadlines
    /// when stale entries outnumber them (so memory stays proportional to the live ones).
    fn tidy(&mut self) {
        if self.heap.len() > 2 * self.live.len() + 64 {
            self.heap = self
                .live
                .iter()
                .map(|(&key, &at)| Reverse((at, key)))
                .collect();
        }
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if self.live.get(&key) == Some(&at) {
                break;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_come_earliest_first_and_moved_or_cancelled_ones_never_fire() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut queue = TimerQueue::default();
        queue.schedule(1u32, at(500));
        queue.schedule(2, at(100));
        queue.schedule(3, at(300));
        queue.schedule(2, at(5_000));
        queue.cancel(3);
        assert_eq!(
            queue.next_deadline(),
            Some(at(500)),
            "the top is always live"
        );
        assert_eq!(queue.pop_due(at(400)), None);
        assert_eq!(queue.pop_due(at(600)), Some(1));
        assert_eq!(queue.pop_due(at(600)), None, "2 was moved to 5 s");
        assert_eq!(queue.pop_due(at(5_000)), Some(2));
        assert!(queue.live.is_empty() && queue.next_deadline().is_none());
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let start = Instant::now();
        let mut queue = TimerQueue::default();
        for round in 0..1_000u64 {
            for key in 0..10u32 {
                // Each move leaves the old entry behind in the heap.
                queue.schedule(key, start + Duration::from_secs(1_000 - round));
            }
        }
        assert_eq!(queue.live.len(), 10);
        assert!(queue.heap.len() <= 2 * 10 + 64 + 1, "{}", queue.heap.len());
    }
}
