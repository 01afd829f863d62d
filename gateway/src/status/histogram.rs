//! A latency histogram with fixed bucket bounds, the shape Prometheus exposes
//! (`_bucket{le=...}`, `_sum`, `_count`): counting costs a comparison per bound, and
//! histograms of several threads add up bucket by bucket.

/// Bucket bounds of call setup latency, in microseconds (5 ms to 10 s).
pub const SETUP_BOUNDS_US: &[u64] = &[
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// Bucket bounds of store commit latency, in microseconds (0.25 ms to 1 s).
pub const COMMIT_BOUNDS_US: &[u64] = &[
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Counts of latencies per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    bounds: &'static [u64],
    /// Per bucket, not cumulative; the last one counts what is over every bound.
    counts: Vec<u64>,
    sum_us: u64,
}

impl LatencyHistogram {
    /// An empty histogram with these (ascending) bounds.
    pub fn new(bounds: &'static [u64]) -> LatencyHistogram {
        LatencyHistogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum_us: 0,
        }
    }

    /// Counts one latency.
    pub fn record(&mut self, latency_us: u64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| latency_us <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(latency_us);
    }

    /// Adds `other`'s counts (histograms with other bounds are left out).
    pub fn add(&mut self, other: &LatencyHistogram) {
        if other.bounds != self.bounds {
            return;
        }
        for (total, more) in self.counts.iter_mut().zip(&other.counts) {
            *total += more;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Latencies counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// Each bound with the count of latencies at or below it (cumulative, as Prometheus
    /// `le` buckets are); `+Inf` is [`LatencyHistogram::count`].
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.bounds
            .iter()
            .zip(&self.counts)
            .scan(0, |seen, (&bound, &count)| {
                *seen += count;
                Some((bound, *seen))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_the_first_bucket_that_holds_them() {
        let mut histogram = LatencyHistogram::new(SETUP_BOUNDS_US);
        for us in [0, 5_000, 5_001, 10_000_000, 10_000_001] {
            histogram.record(us);
        }
        let cumulative: Vec<(u64, u64)> = histogram.cumulative().collect();
        assert_eq!(cumulative[0], (5_000, 2), "0 and 5 ms are <= 5 ms");
        assert_eq!(cumulative[1], (10_000, 3), "5.001 ms is <= 10 ms");
        assert_eq!(cumulative[10], (10_000_000, 4), "10 s is <= 10 s");
        assert_eq!(histogram.count(), 5, "one is over every bound");
        assert_eq!(histogram.sum_us(), 20_010_002);
    }

    #[test]
    fn histograms_add_bucket_by_bucket_and_only_with_the_same_bounds() {
        let mut a = LatencyHistogram::new(COMMIT_BOUNDS_US);
        let mut b = LatencyHistogram::new(COMMIT_BOUNDS_US);
        a.record(100);
        b.record(100);
        b.record(2_000_000);
        a.add(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.cumulative().next(), Some((250, 2)));
        let mut setup = LatencyHistogram::new(SETUP_BOUNDS_US);
        setup.add(&a);
        assert_eq!(setup.count(), 0);
    }
}
