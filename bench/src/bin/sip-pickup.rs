//! Pickup latency of the gateway: with N calls ringing in a pickup group (10, 100, 1,000), a
//! picker dials `*8` and the time from its first INVITE (the one the 407 challenges) to the
//! 200 OK reaching the caller goes into an hdrhistogram. After each pickup the caller hangs
//! up and a new call to the same callee keeps N ringing. Three ways the picker is connected:
//! its phone accepts the INVITE with Replaces; its phone rejects it with 488 and the gateway
//! falls back to answering the picker's own INVITE; its phone does not support Replaces and
//! is bridged at once. Then across nodes, side by side at 100 ringing: one node on SQLite,
//! one node on PostgreSQL, and two nodes sharing one PostgreSQL (a throwaway cluster, as the
//! tests start it) with the calls ringing on node a and the pickers registered on node b,
//! whose pickups node a runs. Prints p50/p99/p99.9 per case, writes
//! `target/bench-results/sip-pickup.{md,svg}` and `sip-pickup-nodes.{md,svg}`.
//!
//! Run: `scripts/bench.sh` or `cargo run --release -p bench --bin sip-pickup -- [--quick]
//! [--nodes]` after `cargo build --release -p gateway` (`--nodes`: only the part across
//! nodes).

use bench::phones::{CalleeBehaviour, Event, Phones, ReplacesAnswer};
use bench::report::{self, BarChart, Table};
use bench::servers::{extension_blocks, free_port, start_gateway, start_node, Server};
use gateway::store::test_cluster::TestCluster;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const CALLERS: u32 = 20_000;
const CALLEES: u32 = 30_000;
const PICKERS: u32 = 40_000;
/// Callers and pickers take turns; several calls per caller ring at once.
const CALLER_COUNT: u32 = 50;
const PICKER_COUNT: u32 = 20;
const STEP: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
enum Connection {
    Replaces,
    ReplacesRejected,
    Bridge,
}

impl Connection {
    fn label(self) -> &'static str {
        match self {
            Connection::Replaces => "INVITE with Replaces",
            Connection::ReplacesRejected => "Replaces rejected (488), fallback",
            Connection::Bridge => "no Replaces support, bridged",
        }
    }
}

fn password(number: u32) -> String {
    format!("pw{number}")
}

/// Where the calls ring and the pickers are.
#[derive(Clone, Copy)]
enum Topology {
    /// One gateway on its embedded SQLite store.
    OneNode,
    /// One gateway on PostgreSQL.
    OneNodePostgres,
    /// Two gateways on one PostgreSQL: calls on node a, pickers registered on node b.
    TwoNodes,
}

impl Topology {
    fn label(self) -> &'static str {
        match self {
            Topology::OneNode => "one node, SQLite",
            Topology::OneNodePostgres => "one node, PostgreSQL",
            Topology::TwoNodes => "two nodes, PostgreSQL, picker on the other node",
        }
    }

    /// The gateways with `body`: the one the calls ring on first, the pickers' last.
    fn start(self, body: &str) -> Result<Vec<Server>, Box<dyn std::error::Error>> {
        match self {
            Topology::OneNode => Ok(vec![start_gateway(body)?]),
            Topology::OneNodePostgres => {
                let url = TestCluster::shared().create_database();
                Ok(vec![start_node(&url, "a", free_port()?, &[], body)?])
            }
            Topology::TwoNodes => {
                let url = TestCluster::shared().create_database();
                let (a, b) = (free_port()?, free_port()?);
                Ok(vec![
                    start_node(&url, "a", a, &[b], body)?,
                    start_node(&url, "b", b, &[a], body)?,
                ])
            }
        }
    }
}

/// `calls_ringing` calls ringing, `samples` pickups; the latency histogram (µs).
fn measure(
    topology: Topology,
    calls_ringing: u32,
    connection: Connection,
    samples: u32,
) -> Result<Histogram<u64>, Box<dyn std::error::Error>> {
    let pickup_mode = match connection {
        Connection::Bridge => "bridge",
        _ => "replaces",
    };
    let gateways = topology.start(&format!(
        "[calls]\nring_timeout_secs = 3600\n{}{}{}",
        extension_blocks(CALLERS, CALLER_COUNT, ""),
        extension_blocks(CALLEES, calls_ringing, "call_groups = [\"bench\"]\n"),
        extension_blocks(
            PICKERS,
            PICKER_COUNT,
            &format!("pickup_groups = [\"bench\"]\npickup_mode = \"{pickup_mode}\"\n")
        ),
    ))?;
    let (owner, pickers_node) = (gateways[0].addr, gateways[gateways.len() - 1].addr);
    let mut phones = Phones::new(owner)?;
    phones.callee_behaviour = CalleeBehaviour::Ring;
    phones.replaces_answer = match connection {
        Connection::ReplacesRejected => ReplacesAnswer::Reject,
        _ => ReplacesAnswer::Accept,
    };
    for n in CALLEES..CALLEES + calls_ringing {
        phones.register(&n.to_string(), &password(n))?;
    }
    for n in PICKERS..PICKERS + PICKER_COUNT {
        phones.register_via(pickers_node, &n.to_string(), &password(n))?;
    }
    // Which callee each caller's call rings.
    let mut callee_of: HashMap<String, u32> = HashMap::new();
    let place = |phones: &mut Phones, n: u32, callee: u32| {
        let caller = CALLERS + n % CALLER_COUNT;
        let call_id = phones.dial(
            &caller.to_string(),
            &password(caller),
            &callee.to_string(),
            true,
        );
        (call_id, callee)
    };
    // Ring them all, 50 at a time.
    for batch in (0..calls_ringing).collect::<Vec<_>>().chunks(50) {
        let mut waiting = HashMap::new();
        for &n in batch {
            let (call_id, callee) = place(&mut phones, n, CALLEES + n);
            waiting.insert(call_id.clone(), ());
            callee_of.insert(call_id, callee);
        }
        while !waiting.is_empty() {
            if let Event::Ringing { call_id } = phones.pump(
                STEP,
                "callees ringing",
                |e| matches!(e, Event::Ringing { call_id } if waiting.contains_key(call_id)),
            )? {
                waiting.remove(&call_id);
            }
        }
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for sample in 0..samples {
        let picker = PICKERS + sample % PICKER_COUNT;
        let started = Instant::now();
        phones.dial_via(
            pickers_node,
            &picker.to_string(),
            &password(picker),
            "*8",
            !matches!(connection, Connection::Bridge),
        );
        let Event::Answered { call_id, at } = phones.pump(
            STEP,
            "the caller's 200 OK",
            |e| matches!(e, Event::Answered { call_id, .. } if callee_of.contains_key(call_id)),
        )?
        else {
            unreachable!("pump returns only the events asked for");
        };
        latency.record(at.duration_since(started).as_micros().max(1) as u64)?;
        phones.hang_up(&call_id);
        let callee = callee_of.remove(&call_id).unwrap_or(CALLEES);
        let (new_call, callee) = place(&mut phones, sample + calls_ringing, callee);
        callee_of.insert(new_call.clone(), callee);
        phones.pump(
            STEP,
            "the new call ringing",
            |e| matches!(e, Event::Ringing { call_id } if *call_id == new_call),
        )?;
    }
    // Prove the path measured: every pickup went through an INVITE with Replaces, or none did.
    let expected = match connection {
        Connection::Bridge => 0,
        _ => u64::from(samples),
    };
    if phones.replaces_received != expected {
        return Err(format!(
            "{} INVITEs with Replaces reached the pickers' phones, expected {expected}",
            phones.replaces_received
        )
        .into());
    }
    Ok(latency)
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let samples = if quick { 200 } else { 2000 };
    if std::env::args().any(|a| a == "--nodes") {
        across_nodes(samples);
        return;
    }
    let connections = [
        Connection::Replaces,
        Connection::ReplacesRejected,
        Connection::Bridge,
    ];
    let mut table = Table::new(&[
        "ringing calls",
        "picker connected by",
        "pickups",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
    ]);
    let mut series: Vec<(String, Vec<f64>)> = connections
        .iter()
        .map(|c| (c.label().to_string(), Vec::new()))
        .collect();
    let sizes = [10, 100, 1000];
    for &ringing in &sizes {
        for (i, &connection) in connections.iter().enumerate() {
            let started = Instant::now();
            let latency =
                measure(Topology::OneNode, ringing, connection, samples).unwrap_or_else(|e| {
                    panic!(
                        "pickup benchmark ({ringing} ringing, {}): {e}",
                        connection.label()
                    )
                });
            eprintln!(
                "[{ringing} ringing, {}] {} pickups: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms ({:.1} s)",
                connection.label(),
                latency.len(),
                ms(&latency, 0.5),
                ms(&latency, 0.99),
                ms(&latency, 0.999),
                started.elapsed().as_secs_f64()
            );
            table.row(vec![
                ringing.to_string(),
                connection.label().into(),
                latency.len().to_string(),
                format!("{:.2}", ms(&latency, 0.5)),
                format!("{:.2}", ms(&latency, 0.99)),
                format!("{:.2}", ms(&latency, 0.999)),
                format!("{:.2}", latency.max() as f64 / 1000.0),
            ]);
            series[i].1.push(ms(&latency, 0.99));
        }
    }
    println!(
        "Pickup latency: picker's first INVITE (*8, 407-challenged) to the caller's 200 OK; \
target p99 < 5 ms at 100 ringing"
    );
    print!("{}", table.render());
    let chart = BarChart {
        title: "Pickup latency p99 (picker's INVITE to caller's 200 OK)".into(),
        unit: "milliseconds".into(),
        categories: sizes.iter().map(|n| format!("{n} ringing")).collect(),
        series,
    };
    match report::write("sip-pickup", &table, &chart) {
        Ok((md, svg)) => eprintln!("written: {} {}", md.display(), svg.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
    across_nodes(samples);
}

/// Pickup latency at 100 ringing (INVITE with Replaces), side by side: one node on SQLite,
/// one on PostgreSQL, two nodes on PostgreSQL with the picker on the other node.
fn across_nodes(samples: u32) {
    const RINGING: u32 = 100;
    let mut table = Table::new(&[
        "gateways",
        "pickups",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "p99 / one node",
    ]);
    let mut p99s = Vec::new();
    for topology in [
        Topology::OneNode,
        Topology::OneNodePostgres,
        Topology::TwoNodes,
    ] {
        let latency = measure(topology, RINGING, Connection::Replaces, samples)
            .unwrap_or_else(|e| panic!("pickup benchmark ({}): {e}", topology.label()));
        let p99 = ms(&latency, 0.99);
        let base = *p99s.first().unwrap_or(&p99);
        eprintln!(
            "[{}] {} pickups: p50 {:.2} ms, p99 {p99:.2} ms",
            topology.label(),
            latency.len(),
            ms(&latency, 0.5)
        );
        table.row(vec![
            topology.label().into(),
            latency.len().to_string(),
            format!("{:.2}", ms(&latency, 0.5)),
            format!("{p99:.2}"),
            format!("{:.2}", ms(&latency, 0.999)),
            format!("{:.2}", latency.max() as f64 / 1000.0),
            format!("{:.2}", p99 / base),
        ]);
        p99s.push(p99);
    }
    println!(
        "Pickup latency across nodes ({RINGING} ringing, INVITE with Replaces): picker's first \
INVITE to the caller's 200 OK; goal p99 < 10 ms with the picker on another node"
    );
    print!("{}", table.render());
    let chart = BarChart {
        title: format!("Pickup latency p99 across nodes ({RINGING} ringing)"),
        unit: "milliseconds".into(),
        categories: vec!["p99".into()],
        series: [
            Topology::OneNode,
            Topology::OneNodePostgres,
            Topology::TwoNodes,
        ]
        .iter()
        .zip(&p99s)
        .map(|(t, p99)| (t.label().to_string(), vec![*p99]))
        .collect(),
    };
    match report::write("sip-pickup-nodes", &table, &chart) {
        Ok((md, svg)) => eprintln!("written: {} {}", md.display(), svg.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
}
