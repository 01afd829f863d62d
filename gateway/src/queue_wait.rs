//! How long messages waited between the fast path receiving them and the engine handling
//! them, per [`Class`]: where call setup time goes when the engine cannot keep up (a wait
//! that grows with load is queueing in the control plane, not the network or the peer).
//! The runtime records every message it takes from the fast path and logs the summary at
//! shutdown.

use crate::overload::Class;
use hdrhistogram::Histogram;
use std::time::Duration;

/// The longest wait recorded as itself; longer ones count as this.
const LONGEST_US: u64 = 60_000_000;

/// Queue waits per class, microseconds.
#[derive(Debug)]
pub struct QueueWaits {
    by_class: [Histogram<u64>; 3],
}

impl Default for QueueWaits {
    fn default() -> Self {
        let histogram = || {
            Histogram::new_with_bounds(1, LONGEST_US, 2)
                .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
        };
        QueueWaits {
            by_class: [histogram(), histogram(), histogram()],
        }
    }
}

impl QueueWaits {
    /// A message of `class` waited `waited`.
    pub fn record(&mut self, class: Class, waited: Duration) {
        let us = u64::try_from(waited.as_micros())
            .unwrap_or(LONGEST_US)
            .clamp(1, LONGEST_US);
        self.by_class[index(class)].saturating_record(us);
    }

    /// One line for the log: count, p50, p99 and the longest wait of each class that
    /// saw messages.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [Class::Priority, Class::Answering, Class::New]
            .into_iter()
            .filter_map(|class| {
                let waits = &self.by_class[index(class)];
                let ms = |us: u64| us as f64 / 1000.0;
                (!waits.is_empty()).then(|| {
                    format!(
                        "{} {}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                        waits.len(),
                        name(class),
                        ms(waits.value_at_quantile(0.5)),
                        ms(waits.value_at_quantile(0.99)),
                        ms(waits.max())
                    )
                })
            })
            .collect();
        match parts.is_empty() {
            true => "no messages".into(),
            false => parts.join("; "),
        }
    }
}

fn index(class: Class) -> usize {
    match class {
        Class::Priority => 0,
        Class::Answering => 1,
        Class::New => 2,
    }
}

fn name(class: Class) -> &'static str {
    match class {
        Class::Priority => "priority",
        Class::Answering => "answering a challenge",
        Class::New => "new",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_summarised_per_class_and_huge_ones_are_capped() {
        let mut waits = QueueWaits::default();
        assert_eq!(waits.summary(), "no messages");
        for ms in 1..=100 {
            waits.record(Class::New, Duration::from_millis(ms));
        }
        waits.record(Class::Priority, Duration::from_secs(3600));
        let summary = waits.summary();
        assert!(summary.starts_with("1 priority: p50 60"), "{summary}");
        assert!(
            summary.contains("100 new: p50 50.") && summary.contains("p99 99."),
            "{summary}"
        );
        assert!(!summary.contains("answering"), "{summary}");
    }
}
