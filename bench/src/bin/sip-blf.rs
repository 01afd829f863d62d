//! BLF keys at scale: 200 phones each watch the same 50 extensions (10,000 dialog
//! subscriptions, RFC 6665/4235). Each extension in turn is called and rings; the time from
//! its phone's 180 to each watcher's NOTIFY showing it ringing (`early`), as the
//! watcher's kernel received it, goes into an hdrhistogram, then the caller cancels. Also the gateway's resident memory per
//! subscription (RSS with all subscriptions up, less RSS before, divided by their number),
//! and its CPU time per NOTIFY while the extensions ring and stop.
//! Prints p50/p99/p99.9/max, writes `target/bench-results/sip-blf.{md,svg}`. Goal (issue
//! 15): p99 under 5 ms on this machine.
//!
//! Run: `scripts/bench.sh` or `cargo run --release -p bench --bin sip-blf -- [--quick]`
//! after `cargo build --release -p gateway`.

use bench::phones::{CalleeBehaviour, Event, Phones};
use bench::report::{self, BarChart, Table};
use bench::servers::{extension_blocks, start_gateway};
use bench::watchers::{WatcherEvent, Watchers};
use hdrhistogram::Histogram;
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

const CALLER: u32 = 20_000;
const TARGETS: u32 = 30_000;
const WATCHERS: u32 = 40_000;
const STEP: Duration = Duration::from_secs(10);

struct Outcome {
    latency: Histogram<u64>,
    subscriptions: u32,
    bytes_per_subscription: f64,
    /// The gateway's CPU time in the ringing rounds per NOTIFY it sent (all states).
    cpu_us_per_notify: f64,
}

fn run(watchers: u32, targets: u32, rounds: u32) -> Result<Outcome, Box<dyn std::error::Error>> {
    let groups = "call_groups = [\"office\"]\npickup_groups = [\"office\"]\n";
    let subscriptions = watchers * targets;
    let gateway = start_gateway(&format!(
        "[calls]\nring_timeout_secs = 3600\n\
         [subscriptions]\nmax_per_subscriber = {targets}\nmax_total = {subscriptions}\n{}{}{}",
        extension_blocks(CALLER, 1, groups),
        extension_blocks(TARGETS, targets, groups),
        extension_blocks(WATCHERS, watchers, groups),
    ))?;
    let mut phones = Phones::new(gateway.addr)?;
    phones.callee_behaviour = CalleeBehaviour::Ring;
    for n in TARGETS..TARGETS + targets {
        phones.register(&n.to_string(), &format!("pw{n}"))?;
    }
    let before = gateway.settled_rss_kib();
    let keys = Watchers::new(gateway.addr)?;
    let mut subscribed = 0;
    for w in WATCHERS..WATCHERS + watchers {
        for t in TARGETS..TARGETS + targets {
            keys.subscribe(&w.to_string(), &t.to_string());
        }
        // One phone's SUBSCRIBEs in flight at a time.
        let deadline = Instant::now() + STEP;
        while subscribed < (w - WATCHERS + 1) * targets {
            match keys.next(deadline) {
                Some(WatcherEvent::Subscribed) => subscribed += 1,
                Some(WatcherEvent::Refused(code)) => {
                    return Err(format!("a subscription was refused: {code}").into())
                }
                Some(WatcherEvent::Notified(_)) => {}
                None => return Err(format!("only {subscribed} subscriptions accepted").into()),
            }
        }
    }
    // The first NOTIFYs of every subscription, answered.
    while keys
        .next(Instant::now() + Duration::from_millis(500))
        .is_some()
    {}
    let after = gateway.settled_rss_kib();
    let bytes_per_subscription =
        (after.saturating_sub(before) * 1024) as f64 / subscriptions as f64;
    eprintln!("  {subscriptions} subscriptions: RSS {before} -> {after} KiB");

    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut notifies: u64 = 0;
    let cpu_before = gateway.cpu_seconds();
    for round in 0..rounds {
        for t in TARGETS..TARGETS + targets {
            let target = t.to_string();
            let call = phones.dial(&CALLER.to_string(), &format!("pw{CALLER}"), &target, false);
            let deadline = Instant::now() + STEP;
            let rang_at = loop {
                match phones.next_event(deadline)? {
                    Some(Event::Incoming { user, .. }) if user == target => {
                        break SystemTime::now()
                    }
                    Some(_) => {}
                    None => return Err(format!("{target} never rang (round {round})").into()),
                }
            };
            let mut waiting: u32 = watchers;
            while waiting > 0 {
                match keys.next(deadline) {
                    Some(WatcherEvent::Notified(seen)) => {
                        notifies += 1;
                        if seen.ringing && seen.target == target {
                            let waited = seen.at.duration_since(rang_at).unwrap_or_default();
                            latency.record(waited.as_micros() as u64)?;
                            waiting -= 1;
                        }
                    }
                    Some(_) => {}
                    None => {
                        return Err(
                            format!("{waiting} watchers of {target} never saw it ring").into()
                        )
                    }
                }
            }
            phones.cancel(&call);
            let mut ended: HashSet<&str> = HashSet::new();
            while ended.len() < 2 {
                match phones.next_event(deadline)? {
                    Some(Event::Failed { call_id, .. }) if call_id == call => {
                        ended.insert("caller")
                    }
                    Some(Event::Cancelled { user, .. }) if user == target => ended.insert("callee"),
                    Some(_) => false,
                    None => return Err(format!("the call to {target} did not end").into()),
                };
            }
            // The watchers see the key go dark.
            while let Some(event) = keys.next(Instant::now() + Duration::from_millis(20)) {
                notifies += u64::from(matches!(event, WatcherEvent::Notified(_)));
            }
        }
    }
    let cpu_us_per_notify = (gateway.cpu_seconds() - cpu_before) * 1e6 / notifies.max(1) as f64;
    Ok(Outcome {
        latency,
        subscriptions,
        bytes_per_subscription,
        cpu_us_per_notify,
    })
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (watchers, targets, rounds) = if quick { (20, 10, 2) } else { (200, 50, 2) };
    let started = Instant::now();
    let outcome = run(watchers, targets, rounds).unwrap_or_else(|e| panic!("BLF benchmark: {e}"));
    let latency = &outcome.latency;
    eprintln!(
        "{} NOTIFYs: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {:.1} µs CPU per NOTIFY ({:.1} s)",
        latency.len(),
        ms(latency, 0.5),
        ms(latency, 0.99),
        ms(latency, 0.999),
        outcome.cpu_us_per_notify,
        started.elapsed().as_secs_f64()
    );
    let mut table = Table::new(&[
        "watchers x extensions",
        "subscriptions",
        "early NOTIFYs",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "bytes per subscription",
        "gateway CPU µs per NOTIFY",
    ]);
    table.row(vec![
        format!("{watchers} x {targets}"),
        outcome.subscriptions.to_string(),
        latency.len().to_string(),
        format!("{:.2}", ms(latency, 0.5)),
        format!("{:.2}", ms(latency, 0.99)),
        format!("{:.2}", ms(latency, 0.999)),
        format!("{:.2}", latency.max() as f64 / 1000.0),
        format!("{:.0}", outcome.bytes_per_subscription),
        format!("{:.1}", outcome.cpu_us_per_notify),
    ]);
    println!("BLF: a callee's 180 to each watcher's NOTIFY showing it ringing; target p99 < 5 ms");
    print!("{}", table.render());
    let chart = BarChart {
        title: "BLF: callee's 180 to the watchers' early NOTIFY".into(),
        unit: "milliseconds".into(),
        categories: vec!["p50".into(), "p99".into(), "p99.9".into()],
        series: vec![(
            format!("{watchers} watchers x {targets} extensions"),
            vec![ms(latency, 0.5), ms(latency, 0.99), ms(latency, 0.999)],
        )],
    };
    match report::write("sip-blf", &table, &chart) {
        Ok((md, svg)) => eprintln!("written: {} {}", md.display(), svg.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
}
