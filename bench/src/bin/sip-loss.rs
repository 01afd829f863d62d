//! Completion rate under packet loss: the gateway's release binary in a private network
//! namespace whose nft rule drops 10% of the UDP datagrams each way at random, driven by our
//! own generators, which retransmit as RFC 3261 asks: full calls from `bench::sipload`
//! (INVITE with digest, 180, 200, ACK, hold, BYE; 200 calls/s) and group pickups from
//! `bench::pickups` (a caller rings a callee, a picker dials `*8`, the callee is cancelled,
//! the caller connected to the picker, the caller hangs up; 20 at a time). Reports calls and
//! pickups attempted and completed, the failures by cause and the setup latency (first
//! INVITE to 200; for a pickup the picker's `*8` INVITE to the caller's 200), writes
//! `target/bench-results/sip-loss.{md,svg}`. Goal: 99.99% completed.
//!
//! Needs root (a network namespace, nft). Run: `scripts/bench.sh`, or
//! `cargo build --release -p gateway -p bench && sudo target/release/sip-loss [--quick]`
//! (`--calls N --pickups N` to choose the counts; the default 10,000 and 1,000, quick
//! 1,000 and 100).

use bench::netns::LossyLoopback;
use bench::phones::Phones;
use bench::pickups::{self, PickupPlan};
use bench::report::{self, BarChart, Table};
use bench::servers::{credentials, extension_blocks, start_gateway};
use bench::sipload::{self, LoadConfig};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// 10% of the datagrams, each way.
const LOSS_PER_MILLE: u32 = 100;
/// Extensions on each side of the calls.
const PHONES: u32 = 100;
const CALLERS: u32 = 20_000;
const CALLEES: u32 = 30_000;
/// Calls offered per second.
const RATE: f64 = 200.0;

/// The value after `--name` on the command line.
fn arg(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// One row of the results table.
struct Outcome {
    what: &'static str,
    attempted: u64,
    completed: u64,
    failures: BTreeMap<String, u64>,
    setup_us: Histogram<u64>,
}

impl Outcome {
    fn percent(&self) -> f64 {
        100.0 * self.completed as f64 / self.attempted.max(1) as f64
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.setup_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn failures(&self) -> String {
        if self.failures.is_empty() {
            return "none".into();
        }
        self.failures
            .iter()
            .map(|(why, n)| format!("{n}: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let calls = arg("--calls").unwrap_or(if quick { 1_000 } else { 10_000 });
    let pickup_count = arg("--pickups").unwrap_or(if quick { 100 } else { 1_000 });
    let network = LossyLoopback::enter();
    let plan = PickupPlan {
        callers: 40_000,
        callees: 41_000,
        pickers: 42_000,
        lanes: 20,
        pickups: pickup_count as u32,
        timeout: Duration::from_secs(90),
    };
    let gateway = start_gateway(&format!(
        "[calls]\nring_timeout_secs = 120\n{}{}{}",
        extension_blocks(CALLERS, PHONES, ""),
        extension_blocks(CALLEES, PHONES, ""),
        plan.extensions()
    ))
    .unwrap_or_else(|e| panic!("could not start the gateway: {e}"));
    network.drop_udp(LOSS_PER_MILLE);
    eprintln!("==> {calls} calls at {RATE:.0} calls/s, 10% of the UDP datagrams dropped each way");
    let started = Instant::now();
    let load = sipload::run(&LoadConfig {
        server: gateway.addr,
        callers: credentials(CALLERS, PHONES),
        callees: credentials(CALLEES, PHONES),
        rate: RATE,
        calls,
        hold: Duration::from_secs(1),
        // Longer than an INVITE and a BYE may take to be answered (Timer B and F, 32 s each).
        timeout: Duration::from_secs(70),
    })
    .unwrap_or_else(|e| panic!("the load generator failed: {e}"));
    eprintln!(
        "    {} of {} completed ({:.1} s)",
        load.completed,
        load.attempted,
        started.elapsed().as_secs_f64()
    );
    eprintln!("==> {pickup_count} group pickups, {} at a time", plan.lanes);
    let started = Instant::now();
    let mut phones =
        Phones::new(gateway.addr).unwrap_or_else(|e| panic!("the phones' socket: {e}"));
    plan.register(&phones)
        .unwrap_or_else(|e| panic!("registering the pickup phones: {e}"));
    let picked = pickups::run(&mut phones, &plan).unwrap_or_else(|e| panic!("pickups: {e}"));
    eprintln!(
        "    {} of {} completed ({:.1} s; {} through Replaces, {} bridged; {} of {} callee INVITEs cancelled)",
        picked.completed,
        picked.attempted,
        started.elapsed().as_secs_f64(),
        phones.replaces_accepted,
        picked.bridged,
        picked.callee_cancels,
        picked.callee_invites
    );
    let dropped = network.dropped();
    let mut pickup_failures = picked.failures.clone();
    for (why, n) in &picked.network_failures {
        *pickup_failures
            .entry(format!("{why} (network)"))
            .or_default() += n;
    }
    let outcomes = [
        Outcome {
            what: "calls (INVITE/407, 180, 200, ACK, 1 s, BYE)",
            attempted: load.attempted,
            completed: load.completed,
            failures: load.failures,
            setup_us: load.setup_us,
        },
        Outcome {
            what: "group pickups (*8, CANCEL, Replaces or bridge, BYE)",
            attempted: picked.attempted,
            completed: picked.completed,
            failures: pickup_failures,
            setup_us: picked.latency_us,
        },
    ];
    let mut table = Table::new(&[
        "10% loss each way",
        "attempted",
        "completed",
        "completion",
        "failures",
        "setup p50 ms",
        "setup p99 ms",
    ]);
    for outcome in &outcomes {
        table.row(vec![
            outcome.what.into(),
            outcome.attempted.to_string(),
            outcome.completed.to_string(),
            format!("{:.2}%", outcome.percent()),
            outcome.failures(),
            format!("{:.1}", outcome.ms(0.5)),
            format!("{:.1}", outcome.ms(0.99)),
        ]);
    }
    println!(
        "Completion at 10% random UDP loss each way ({dropped} datagrams dropped); goal 99.99%"
    );
    print!("{}", table.render());
    let chart = BarChart {
        title: "Setup latency at 10% loss each way".into(),
        unit: "milliseconds".into(),
        categories: vec!["calls".into(), "group pickups".into()],
        series: vec![
            ("p50".into(), outcomes.iter().map(|o| o.ms(0.5)).collect()),
            ("p99".into(), outcomes.iter().map(|o| o.ms(0.99)).collect()),
        ],
    };
    match report::write("sip-loss", &table, &chart) {
        Ok((md, svg)) => eprintln!("written: {} {}", md.display(), svg.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
}
