//! The snapshot as Prometheus metrics, in the text exposition format (version 0.0.4):
//! one family per name with its HELP and TYPE, counters ending in `_total`, latencies as
//! histograms in seconds. Labels take only fixed words (and the analog channel numbers,
//! which the card fixes), never a number, name or address from the network.

use super::histogram::LatencyHistogram;
use super::Snapshot;
use crate::engine::metrics::{PickupPath, CALL_ENDS};
use crate::engine::observe::{EngineCounts, CALL_STATES};
use std::fmt::Write as _;

/// The Content-Type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What every metric name starts with.
const PREFIX: &str = "potsgw_";

/// Writes metric families one after another.
struct Families {
    text: String,
}

impl Families {
    /// Starts family `name` of `kind` (`counter`, `gauge`, `histogram`).
    fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.text, "# HELP {PREFIX}{name} {help}");
        let _ = writeln!(self.text, "# TYPE {PREFIX}{name} {kind}");
        self
    }

    /// One sample of the family just started; `labels` as `name="value"` pairs.
    fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) -> &mut Self {
        let _ = write!(self.text, "{PREFIX}{name}");
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(label, value)| format!("{label}=\"{value}\""))
                .collect();
            let _ = write!(self.text, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.text, " {value}");
        self
    }

    /// A family of one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help).sample(name, &[], value);
    }

    /// A histogram family of microsecond latencies, exposed in seconds.
    fn histogram(&mut self, name: &str, help: &str, histogram: &LatencyHistogram) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (bound_us, count) in histogram.cumulative() {
            let le = seconds(bound_us);
            self.sample(&bucket, &[("le", &le)], count);
        }
        self.sample(&bucket, &[("le", "+Inf")], histogram.count());
        self.sample(&format!("{name}_sum"), &[], seconds(histogram.sum_us()));
        self.sample(&format!("{name}_count"), &[], histogram.count());
    }
}

/// Microseconds as seconds, without trailing zeros.
fn seconds(us: u64) -> String {
    let text = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The snapshot in the text format.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = Families {
        text: String::with_capacity(8192),
    };
    let metrics = snapshot.metrics();
    let engines = || snapshot.shards.iter().map(|shard| &shard.engine);
    out.family("build_info", "gauge", "The gateway's version (always 1).")
        .sample("build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    out.single(
        "engine_shards",
        "gauge",
        "Engine shards configured.",
        snapshot.shard_count,
    );
    out.single(
        "engine_shards_answering",
        "gauge",
        "Engine shards that answered this scrape in time (fewer than configured: one is stuck).",
        snapshot.shards.len(),
    );

    let counts =
        |count: fn(&EngineCounts) -> usize| engines().map(|e| count(&e.counts)).sum::<usize>();
    out.single(
        "registrations",
        "gauge",
        "Registered contacts.",
        counts(|c| c.registrations),
    );
    out.single(
        "registered_extensions",
        "gauge",
        "Extensions with at least one registered contact.",
        counts(|c| c.registered_extensions),
    );
    out.family(
        "calls_active",
        "gauge",
        "Calls the gateway carries, by state.",
    );
    for (index, state) in CALL_STATES.iter().enumerate() {
        let count: usize = engines().map(|e| e.counts.calls[index]).sum();
        out.sample("calls_active", &[("state", state)], count);
    }
    out.single(
        "calls_started_total",
        "counter",
        "Calls that came in.",
        metrics.calls_started,
    );
    out.family(
        "calls_ended_total",
        "counter",
        "Calls ended, by CDR disposition.",
    );
    for (disposition, count) in CALL_ENDS.iter().zip(metrics.calls_ended) {
        out.sample("calls_ended_total", &[("disposition", disposition)], count);
    }
    out.histogram(
        "call_setup_seconds",
        "From a caller's INVITE to the first ringing or final response it got.",
        &metrics.setup,
    );

    out.family(
        "pickups_total",
        "counter",
        "Pickups ended, by how the call was handed over (replaces: INVITE with Replaces to the picker; bridged: the picker's INVITE answered; blf: a BLF key's INVITE with Replaces; fallback: bridged after the Replaces INVITE failed) and outcome.",
    );
    for (index, path) in PickupPath::ALL.iter().enumerate() {
        for (outcome, counts) in [
            ("connected", &metrics.pickups_connected),
            ("failed", &metrics.pickups_failed),
        ] {
            out.sample(
                "pickups_total",
                &[("path", path.as_str()), ("outcome", outcome)],
                counts[index],
            );
        }
    }
    out.single(
        "pickups_active",
        "gauge",
        "Pickups in flight.",
        counts(|c| c.pickups),
    );
    out.single(
        "subscriptions",
        "gauge",
        "Dialog event subscriptions (BLF keys).",
        counts(|c| c.subscriptions),
    );

    if let Some(guard) = engines().find_map(|e| e.guard) {
        for (name, help, value) in [
            (
                "auth_failures_total",
                "Failed digest authentications.",
                guard.failures,
            ),
            (
                "auth_sources_blocked_total",
                "Sources blocked after failed authentications.",
                guard.sources_blocked,
            ),
            (
                "auth_blocked_requests_dropped_total",
                "Requests from blocked sources dropped unread.",
                guard.blocked_requests_dropped,
            ),
            (
                "auth_extensions_locked_total",
                "Extensions locked after failed authentications.",
                guard.extensions_locked,
            ),
            (
                "auth_challenges_dropped_total",
                "Requests left unanswered over the per-source challenge rate.",
                guard.challenges_dropped,
            ),
        ] {
            out.single(name, "counter", help, value);
        }
    }
    let sum =
        |value: fn(&crate::engine::Stats) -> u64| engines().map(|e| value(&e.stats)).sum::<u64>();
    for (name, help, value) in [
        (
            "sip_rejected_requests_total",
            "Requests answered with an error by validation (400, 416, 420, 483, 501, 505...).",
            sum(|s| s.rejected_requests),
        ),
        (
            "sip_undecodable_dropped_total",
            "Datagrams that were no SIP at all, dropped.",
            sum(|s| s.undecodable_dropped),
        ),
        (
            "sip_responses_dropped_total",
            "Responses dropped (malformed, or not ours).",
            sum(|s| s.responses_dropped),
        ),
        (
            "sip_stream_garbage_total",
            "TCP/TLS connections closed for garbage.",
            sum(|s| s.stream_garbage),
        ),
        (
            "sip_overload_rejected_total",
            "New requests answered 503 because they waited too long (overload).",
            sum(|s| s.overload_rejected),
        ),
        (
            "sip_forged_node_requests_total",
            "Requests signed as from a node that were not trusted.",
            sum(|s| s.forged_node_requests),
        ),
    ] {
        out.single(name, "counter", help, value);
    }
    out.single(
        "transactions",
        "gauge",
        "SIP transactions alive.",
        engines().map(|e| e.transactions).sum::<usize>(),
    );
    out.single(
        "engine_queue_depth",
        "gauge",
        "Datagrams waiting in the engine shards' queues.",
        snapshot.shards.iter().map(|s| s.queued).sum::<usize>(),
    );
    out.family(
        "engine_queue_dropped_total",
        "counter",
        "Datagrams dropped on full engine queues, by class.",
    );
    let drops = snapshot.shards.iter().fold((0, 0), |(priority, new), s| {
        (priority + s.queue_drops.priority, new + s.queue_drops.new)
    });
    out.sample(
        "engine_queue_dropped_total",
        &[("class", "priority")],
        drops.0,
    )
    .sample("engine_queue_dropped_total", &[("class", "new")], drops.1);
    out.single(
        "engine_forward_dropped_total",
        "counter",
        "Datagrams for another shard dropped because its queue was full.",
        snapshot.shards.iter().map(|s| s.forward_drops).sum::<u64>(),
    );
    out.single(
        "engine_handed_over_total",
        "counter",
        "Datagrams one shard's socket received for another shard's call and handed to it (few when the kernel steers by Call-ID).",
        snapshot.shards.iter().map(|s| s.handed_over).sum::<u64>(),
    );
    out.single(
        "fastpath_malformed_dropped_total",
        "counter",
        "Datagrams the fast path's pre-parser dropped as malformed.",
        snapshot.shards.iter().map(|s| s.malformed).sum::<u64>(),
    );
    out.histogram(
        "store_commit_seconds",
        "How long a store batch took to apply and commit.",
        &snapshot.store_commits,
    );

    if let Some(dropped) = snapshot.capture_dropped {
        out.single(
            "capture_dropped_total",
            "counter",
            "SIP messages left out of the capture ([trace]) because its queue was full.",
            dropped,
        );
    }
    if let Some((tcp, tls)) = snapshot.connections {
        out.family(
            "connections",
            "gauge",
            "Open SIP connections, by transport.",
        )
        .sample("connections", &[("transport", "tcp")], tcp)
        .sample("connections", &[("transport", "tls")], tls);
    }

    if let Some(relay) = &snapshot.relay {
        let totals = relay.totals();
        out.single(
            "relay_sessions",
            "gauge",
            "Media relays up (anchored calls).",
            relay.live.len(),
        );
        out.single(
            "relay_sessions_ended_total",
            "counter",
            "Media relays ended.",
            relay.ended_relays,
        );
        for (name, help, value) in [
            ("relay_packets_total", "RTP packets the relay forwarded.", totals.packets),
            ("relay_bytes_total", "Bytes of the RTP packets the relay forwarded.", totals.bytes),
            ("relay_lost_packets_total", "RTP packets lost on the way to the relay (RFC 3550 A.3).", totals.lost),
            ("relay_rtcp_packets_total", "RTCP packets the relay forwarded.", totals.rtcp_packets),
            ("relay_foreign_dropped_total", "Packets dropped because they did not come from the party that signalled the media.", totals.foreign_dropped),
            ("relay_unroutable_total", "Packets dropped because the other side's address was not known yet.", totals.unroutable),
        ] {
            out.single(name, "counter", help, value);
        }
        out.single(
            "relay_worst_jitter_seconds",
            "gauge",
            "The highest interarrival jitter of a live relay leg (RFC 3550 A.8).",
            seconds((f64::from(relay.worst_jitter_ms()) * 1000.0) as u64),
        );
    }

    if let Some(ports) = &snapshot.ports {
        out.family(
            "analog_port_in_call",
            "gauge",
            "1 while an analog port has a call (ringing, dialling or connected).",
        );
        for port in ports {
            let channel = port.channel.to_string();
            let labels = [("channel", channel.as_str()), ("kind", port.kind.as_str())];
            out.sample(
                "analog_port_in_call",
                &labels,
                u8::from(port.call != "idle"),
            );
        }
        out.family(
            "analog_port_alarm",
            "gauge",
            "1 while an analog line port reports a red alarm (no battery from the office).",
        );
        for port in ports {
            let channel = port.channel.to_string();
            let labels = [("channel", channel.as_str()), ("kind", port.kind.as_str())];
            out.sample("analog_port_alarm", &labels, u8::from(port.alarm));
        }
        out.family(
            "analog_port_foreign_dropped_total",
            "counter",
            "RTP packets an analog port dropped from anyone but the far end of its call.",
        );
        for port in ports {
            let channel = port.channel.to_string();
            let labels = [("channel", channel.as_str()), ("kind", port.kind.as_str())];
            out.sample(
                "analog_port_foreign_dropped_total",
                &labels,
                port.foreign_dropped,
            );
        }
    }
    out.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_without_trailing_zeros() {
        assert_eq!(seconds(5_000), "0.005");
        assert_eq!(seconds(1_000_000), "1");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(123), "0.000123");
    }

    #[test]
    fn an_empty_snapshot_renders_every_family_once() {
        let snapshot = Snapshot {
            node: "gw1".into(),
            at_ms: 0,
            shard_count: 1,
            shards: Vec::new(),
            relay: None,
            ports: None,
            connections: Some((0, 0)),
            store_commits: LatencyHistogram::new(super::super::histogram::COMMIT_BOUNDS_US),
            capture_dropped: Some(0),
        };
        let text = render(&snapshot);
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|rest| rest.split(' ').next().unwrap_or_default())
            .collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "a family twice:\n{text}");
        assert!(text.contains("potsgw_calls_ended_total{disposition=\"busy\"} 0\n"));
        assert!(text.contains("potsgw_call_setup_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("potsgw_connections{transport=\"tls\"} 0\n"));
        assert!(text.contains("potsgw_capture_dropped_total 0\n"));
        assert!(text.ends_with('\n'));
    }
}
