//! Resident memory of the gateway per registration and per active call, and how it scales:
//! the gateway starts with 10,000 extensions configured; its RSS is read idle, after all
//! 10,000 have registered, and with 5,000 answered calls up at once (caller and callee
//! legs, dialogs, CDR context), every extension in a call. The differences divided by the
//! counts are the costs. Each reading is taken twice: at once (the REGISTER and INVITE
//! transactions still kept for retransmissions, RFC 3261 Timer J and RFC 6026 Timer L,
//! 32 s over UDP) and after they have expired (the lasting cost). Between the two steps the
//! gateway is restarted on its database: the time from the new process's start to its
//! first answer is the time to restore the registrations (the calls that follow reach their
//! callees only through the restored bindings). The gateway's CPU per call set up is
//! measured for the first and the last tenth of the calls: work per message that grew with
//! the calls already up would show as a ratio above 1. Writes
//! `target/bench-results/sip-memory.{md,svg}`.
//!
//! Run: `scripts/bench.sh` or `cargo run --release -p bench --bin sip-memory -- [--quick]`
//! after `cargo build --release -p gateway`.

use bench::phones::{CalleeBehaviour, Event, Phones};
use bench::report::{self, BarChart, Table};
use bench::servers::{extension_blocks, start_gateway, Server};
use std::collections::HashSet;
use std::time::Duration;

const FIRST: u32 = 50_000;
const STEP: Duration = Duration::from_secs(10);
/// 64·T1 plus a margin: every finished transaction is gone after this.
const TRANSACTIONS_EXPIRED: Duration = Duration::from_secs(34);

/// Readings: idle, registered (at once, later), calls up (at once, later), KiB; the restart;
/// the gateway's CPU seconds per call for the first and the last tenth of the calls.
struct Readings {
    idle: u64,
    registered: (u64, u64),
    in_calls: (u64, u64),
    restore: Duration,
    restarted: u64,
    cpu_per_call: (f64, f64),
}

/// RSS at once and after the transactions expired.
fn now_and_later(server: &Server) -> (u64, u64) {
    let now = server.settled_rss_kib();
    eprintln!(
        "  RSS {now} KiB; waiting {TRANSACTIONS_EXPIRED:?} for finished transactions to expire"
    );
    std::thread::sleep(TRANSACTIONS_EXPIRED);
    (now, server.settled_rss_kib())
}

fn run(registrations: u32, calls: u32) -> Result<Readings, Box<dyn std::error::Error>> {
    let mut gateway = start_gateway(&format!(
        "[calls]\nring_timeout_secs = 60\n{}",
        extension_blocks(FIRST, registrations, "")
    ))?;
    let idle = gateway.settled_rss_kib();
    let mut phones = Phones::new(gateway.addr)?;
    phones.callee_behaviour = CalleeBehaviour::Answer;
    for (done, n) in (FIRST..FIRST + registrations).enumerate() {
        phones.register(&n.to_string(), &format!("pw{n}"))?;
        if (done + 1) % 2000 == 0 {
            eprintln!("  {} registered", done + 1);
        }
    }
    let registered = now_and_later(&gateway);
    let restore = gateway.restart_gateway()?;
    let restarted = gateway.settled_rss_kib();
    eprintln!("  restarted: answering after {restore:?}, RSS {restarted} KiB");
    // Callers are the first `calls` extensions, callees the next `calls`.
    let mut up = 0;
    let all: Vec<u32> = (0..calls).collect();
    let tenth = (calls / 10).max(1) as usize;
    let (mut first_cpu, mut last_cpu) = (0.0, 0.0);
    for (n, batch) in all.chunks(50).enumerate() {
        let cpu_before = gateway.cpu_seconds();
        let mut waiting = HashSet::new();
        for &i in batch {
            let (caller, callee) = (FIRST + i, FIRST + calls + i);
            waiting.insert(phones.dial(
                &caller.to_string(),
                &format!("pw{caller}"),
                &callee.to_string(),
                false,
            ));
        }
        while !waiting.is_empty() {
            match phones.pump(STEP, "calls answered", |e| match e {
                Event::Answered { call_id, .. } | Event::Failed { call_id, .. } => {
                    waiting.contains(call_id)
                }
                _ => false,
            })? {
                Event::Answered { call_id, .. } => {
                    waiting.remove(&call_id);
                    up += 1;
                }
                Event::Failed { call_id, code } => {
                    return Err(format!("call {call_id} failed with {code}").into())
                }
                _ => {}
            }
        }
        let spent = gateway.cpu_seconds() - cpu_before;
        let start = n * 50;
        if start < tenth {
            first_cpu += spent;
        }
        if start + batch.len() > all.len() - tenth {
            last_cpu += spent;
        }
    }
    eprintln!("  {up} calls up");
    let in_calls = now_and_later(&gateway);
    let batches = tenth.div_ceil(50) * 50;
    Ok(Readings {
        idle,
        registered,
        in_calls,
        restore,
        restarted,
        cpu_per_call: (first_cpu / batches as f64, last_cpu / batches as f64),
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (registrations, calls) = if quick {
        (2_000, 1_000)
    } else {
        (10_000, 5_000)
    };
    let readings = run(registrations, calls).unwrap_or_else(|e| panic!("memory benchmark: {e}"));
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let per =
        |more: u64, less: u64, count: u32| more.saturating_sub(less) as f64 * 1024.0 / count as f64;
    let mut table = Table::new(&[
        "state",
        "RSS MiB right after",
        "RSS MiB 34 s later (transactions expired)",
        "bytes per item (right after / later)",
    ]);
    table.row(vec![
        format!("idle, {registrations} extensions configured"),
        mib(readings.idle),
        mib(readings.idle),
        String::new(),
    ]);
    let (registered, in_calls) = (readings.registered, readings.in_calls);
    table.row(vec![
        format!("{registrations} registered"),
        mib(registered.0),
        mib(registered.1),
        format!(
            "{:.0} / {:.0} per registration",
            per(registered.0, readings.idle, registrations),
            per(registered.1, readings.idle, registrations)
        ),
    ]);
    table.row(vec![
        format!(
            "restarted, {registrations} registrations restored (answering after {} ms)",
            readings.restore.as_millis()
        ),
        mib(readings.restarted),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        format!("+ {calls} answered calls up"),
        mib(in_calls.0),
        mib(in_calls.1),
        format!(
            "{:.0} / {:.0} per call",
            per(in_calls.0, readings.restarted, calls),
            per(in_calls.1, readings.restarted, calls)
        ),
    ]);
    let (first, last) = readings.cpu_per_call;
    table.row(vec![
        format!("CPU per call set up, first / last {} calls", calls / 10),
        format!("{:.0} / {:.0} µs", first * 1e6, last * 1e6),
        String::new(),
        format!("last / first {:.2}", last / first.max(f64::MIN_POSITIVE)),
    ]);
    print!("{}", table.render());
    let chart = BarChart {
        title: "Gateway resident memory".into(),
        unit: "MiB".into(),
        categories: vec![
            "idle".into(),
            format!("{registrations} registered"),
            format!("+{calls} calls"),
        ],
        series: vec![
            (
                "right after".into(),
                [readings.idle, registered.0, in_calls.0]
                    .iter()
                    .map(|&k| k as f64 / 1024.0)
                    .collect(),
            ),
            (
                "34 s later".into(),
                [readings.idle, registered.1, in_calls.1]
                    .iter()
                    .map(|&k| k as f64 / 1024.0)
                    .collect(),
            ),
        ],
    };
    match report::write("sip-memory", &table, &chart) {
        Ok((md, svg)) => eprintln!("written: {} {}", md.display(), svg.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
}
