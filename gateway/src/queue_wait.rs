//! How long messages waited between the fast path receiving them and the engine handling
//! them, per [`Class`]: where call setup time goes when the engine cannot keep up (a wait
//! that grows with load is queueing in the control plane, not the network or the peer).
//! The runtime records every message it takes from the fast path and logs the summary at
//! shutdown, with each message's whole time in the gateway: from the kernel's receipt
//! (`SO_TIMESTAMPNS`) to the end of the turn that handled it, when its answers go out (the
//! socket's queue before the read, the queue wait, the turn's work after).

use crate::overload::Class;
use hdrhistogram::Histogram;
use std::time::{Duration, SystemTime};

/// The longest wait recorded as itself; longer ones count as this.
const LONGEST_US: u64 = 60_000_000;

/// Queue waits per class, microseconds.
#[derive(Debug)]
pub struct QueueWaits {
    by_class: [Histogram<u64>; 3],
    /// From the kernel's receipt to the end of the turn that handled it (its answers then
    /// go out), per class: the queue wait plus the socket's queue before it and the turn's
    /// work after.
    in_gateway: [Histogram<u64>; 3],
    /// The kernel's receipt of each message handled in this turn so far.
    this_turn: Vec<(Class, SystemTime)>,
}

impl Default for QueueWaits {
    fn default() -> Self {
        let histogram = || {
            Histogram::new_with_bounds(1, LONGEST_US, 2)
                .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
        };
        QueueWaits {
            by_class: [histogram(), histogram(), histogram()],
            in_gateway: [histogram(), histogram(), histogram()],
            this_turn: Vec::new(),
        }
    }
}

impl QueueWaits {
    /// A message of `class` waited `waited`.
    pub fn record(&mut self, class: Class, waited: Duration) {
        self.by_class[index(class)].saturating_record(micros(waited));
    }

    /// A message of `class` that the kernel received at `arrived` (where the socket
    /// reports it) is being handled in this turn.
    pub fn handling(&mut self, class: Class, arrived: Option<SystemTime>) {
        if let Some(at) = arrived {
            self.this_turn.push((class, at));
        }
    }

    /// The turn ended at `now`: the time in the gateway of each message it handled.
    pub fn turn_ended(&mut self, now: SystemTime) {
        for (class, at) in self.this_turn.drain(..) {
            // A clock stepped back counts as the shortest time.
            let spent = now.duration_since(at).unwrap_or_default();
            self.in_gateway[index(class)].saturating_record(micros(spent));
        }
    }

    /// One line for the log: count, p50, p99, p99.9 and the longest time in the gateway of
    /// each class that saw messages.
    pub fn in_gateway_summary(&self) -> String {
        summarise(&self.in_gateway, true)
    }

    /// One line for the log: count, p50, p99 and the longest wait of each class that
    /// saw messages.
    pub fn summary(&self) -> String {
        summarise(&self.by_class, false)
    }
}

/// A duration as whole microseconds within the histograms' bounds.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(LONGEST_US)
        .clamp(1, LONGEST_US)
}

/// Count, p50, p99 (and p99.9 if `tail`) and the longest value of each class that saw
/// messages, in ms.
fn summarise(by_class: &[Histogram<u64>; 3], tail: bool) -> String {
    let parts: Vec<String> = [Class::Priority, Class::Answering, Class::New]
        .into_iter()
        .filter_map(|class| {
            let values = &by_class[index(class)];
            let ms = |us: u64| us as f64 / 1000.0;
            (!values.is_empty()).then(|| {
                let p999 = match tail {
                    true => format!(", p99.9 {:.2} ms", ms(values.value_at_quantile(0.999))),
                    false => String::new(),
                };
                format!(
                    "{} {}: p50 {:.2} ms, p99 {:.2} ms{p999}, max {:.2} ms",
                    values.len(),
                    name(class),
                    ms(values.value_at_quantile(0.5)),
                    ms(values.value_at_quantile(0.99)),
                    ms(values.max())
                )
            })
        })
        .collect();
    match parts.is_empty() {
        true => "no messages".into(),
        false => parts.join("; "),
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

    #[test]
    fn time_in_the_gateway_runs_from_the_kernel_s_receipt_to_the_end_of_the_turn() {
        let mut waits = QueueWaits::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for ms in 1..=100 {
            waits.handling(
                Class::Priority,
                Some(start + Duration::from_millis(100 - ms)),
            );
        }
        // A message from a socket that reports no receipt time is not counted.
        waits.handling(Class::New, None);
        assert_eq!(
            waits.in_gateway_summary(),
            "no messages",
            "nothing before the turn ends"
        );
        waits.turn_ended(start + Duration::from_millis(100));
        let summary = waits.in_gateway_summary();
        assert!(
            summary.starts_with("100 priority: p50 50.") && summary.contains("p99.9 100."),
            "{summary}"
        );
        assert!(!summary.contains("new"), "{summary}");
        // The next turn starts empty; a receipt after the turn's end (a clock step) counts
        // as the shortest time.
        waits.handling(Class::New, Some(start + Duration::from_secs(5)));
        waits.turn_ended(start);
        assert!(waits.in_gateway_summary().contains("1 new: p50 0.00 ms"));
    }
}
