//! BLF keys at scale: 200 phones each watch the same 50 extensions (10,000 dialog
//! subscriptions, RFC 6665/4235). Each extension in turn is called and rings; the time from
//! its phone's 180 to each watcher's NOTIFY showing it ringing (`early`) goes into an
//! hdrhistogram, then the caller cancels. Also the gateway's resident memory per
//! subscription (RSS with all subscriptions up, less RSS before, divided by their number).
//! Prints p50/p99/p99.9/max, writes `target/bench-results/sip-blf.{md,svg}`. Goal (issue
//! 15): p99 under 5 ms on this machine.
//!
//! Run: `scripts/bench.sh` or `cargo run --release -p bench --bin sip-blf -- [--quick]`
//! after `cargo build --release -p gateway`.

use bench::phones::{CalleeBehaviour, Event, Phones};
use bench::report::{self, BarChart, Table};
use bench::servers::{extension_blocks, start_gateway};
use bench::watchers::Watchers;
use hdrhistogram::Histogram;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const CALLER: u32 = 20_000;
const TARGETS: u32 = 30_000;
const WATCHERS: u32 = 40_000;
const STEP: Duration = Duration::from_secs(10);

struct Outcome {
    latency: Histogram<u64>,
    subscriptions: u32,
    bytes_per_subscription: f64,
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
    let mut keys = Watchers::new(gateway.addr)?;
    for w in WATCHERS..WATCHERS + watchers {
        for t in TARGETS..TARGETS + targets {
            keys.subscribe(&w.to_string(), &t.to_string())?;
        }
        // Keep the SUBSCRIBEs of one phone in flight at a time, NOTIFYs answered meanwhile.
        let deadline = Instant::now() + STEP;
        while keys.subscribed() < ((w - WATCHERS + 1) * targets) as usize {
            if Instant::now() > deadline {
                return Err(format!("only {} subscriptions accepted", keys.subscribed()).into());
            }
            keys.poll(deadline, true)?;
        }
    }
    // The first NOTIFYs of every subscription, answered.
    while !keys
        .poll(Instant::now() + Duration::from_millis(500), false)?
        .is_empty()
    {}
    let after = gateway.settled_rss_kib();
    let bytes_per_subscription =
        (after.saturating_sub(before) * 1024) as f64 / subscriptions as f64;
    eprintln!("  {subscriptions} subscriptions: RSS {before} -> {after} KiB");

    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for round in 0..rounds {
        for t in TARGETS..TARGETS + targets {
            let target = t.to_string();
            let call = phones.dial(&CALLER.to_string(), &format!("pw{CALLER}"), &target, false);
            let deadline = Instant::now() + STEP;
            let rang_at = loop {
                match phones.next_event(deadline)? {
                    Some(Event::Incoming { user, .. }) if user == target => break Instant::now(),
                    Some(_) => {}
                    None => return Err(format!("{target} never rang (round {round})").into()),
                }
            };
            let mut waiting: u32 = watchers;
            while waiting > 0 {
                if Instant::now() > deadline {
                    return Err(format!("{waiting} watchers of {target} never saw it ring").into());
                }
                for seen in keys.poll(deadline, true)? {
                    if seen.ringing && seen.target == target {
                        latency
                            .record(seen.at.saturating_duration_since(rang_at).as_micros() as u64)?;
                        waiting -= 1;
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
                keys.poll(Instant::now(), false)?;
            }
            // The watchers see the key go dark.
            while !keys
                .poll(Instant::now() + Duration::from_millis(20), false)?
                .is_empty()
            {}
        }
    }
    Ok(Outcome {
        latency,
        subscriptions,
        bytes_per_subscription,
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
        "{} NOTIFYs: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms ({:.1} s)",
        latency.len(),
        ms(latency, 0.5),
        ms(latency, 0.99),
        ms(latency, 0.999),
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
