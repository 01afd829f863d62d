//! Overload (security issue, finding 4): with calls already up, new calls arrive at three
//! times the rate the gateway sustains (full calls from the load generator: INVITE with
//! digest, 180, 200, ACK, BYE). Measured meanwhile: an OPTIONS probe every 20 ms (its
//! answer time, p50/p99/max) and, halfway through the flood, the established calls hung up
//! (how many end cleanly: 200 to the BYE). Also reported: what happened to the flood's calls
//! (completed, refused with 503 + Retry-After, other failures). Writes
//! `target/bench-results/sip-overload.{md,svg}`.
//!
//! Run: `scripts/bench.sh --sip` or
//! `cargo run --release -p bench --bin sip-overload -- [--quick] [--sustainable R]` after
//! `cargo build --release -p gateway`. R defaults to 2,500 calls/s (the zero-failure rate
//! sip-load measured on these 2-core machines; see README).

use bench::phones::{CalleeBehaviour, Event, Phones};
use bench::report::{self, BarChart, Table};
use bench::servers::{credentials, extension_blocks, start_gateway};
use bench::sipload::{run, LoadConfig};
use hdrhistogram::Histogram;
use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLERS: u32 = 20_000;
const CALLEES: u32 = 30_000;
const PHONES: u32 = 100;
/// The established calls: callers from here, callees right after them.
const ESTABLISHED_FIRST: u32 = 40_000;

/// OPTIONS probes every 20 ms until `stop`; answer times in microseconds and unanswered.
fn probe(server: std::net::SocketAddr, stop: Arc<AtomicBool>) -> (Histogram<u64>, u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let local = socket.local_addr().expect("local");
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram");
    let (mut lost, mut n) = (0, 0u64);
    let mut buffer = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let branch = format!("z9hG4bKprobe{n}");
        let text = format!(
            "OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p{n}\r\nTo: <sip:{server}>\r\n\
Call-ID: probe{n}@{local}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let sent = Instant::now();
        let _ = socket.send_to(text.as_bytes(), server);
        let answered = loop {
            match socket.recv_from(&mut buffer) {
                Ok((len, _)) if String::from_utf8_lossy(&buffer[..len]).contains(&branch) => {
                    break true
                }
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        if answered {
            let _ = histogram.record(sent.elapsed().as_micros() as u64);
        } else {
            lost += 1;
        }
        std::thread::sleep(Duration::from_millis(20).saturating_sub(sent.elapsed()));
    }
    (histogram, lost)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let sustainable: f64 = args
        .iter()
        .position(|a| a == "--sustainable")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(2_500.0);
    let (established, seconds) = if quick { (50, 6.0) } else { (200, 20.0) };
    let flood_rate = 3.0 * sustainable;
    let gateway = start_gateway(&format!(
        "[calls]\nring_timeout_secs = 30\n{}{}{}",
        extension_blocks(CALLERS, PHONES, ""),
        extension_blocks(CALLEES, PHONES, ""),
        extension_blocks(ESTABLISHED_FIRST, 2 * established, "")
    ))
    .unwrap_or_else(|e| panic!("gateway: {e}"));
    let mut phones = Phones::new(gateway.addr).unwrap_or_else(|e| panic!("phones: {e}"));
    phones.callee_behaviour = CalleeBehaviour::Answer;
    let number = |i: u32| (ESTABLISHED_FIRST + i).to_string();
    for i in 0..2 * established {
        phones
            .register(&number(i), &format!("pw{}", number(i)))
            .unwrap_or_else(|e| panic!("register: {e}"));
    }
    let mut up = Vec::new();
    for i in 0..established {
        let (caller, callee) = (number(i), number(established + i));
        let call_id = phones.dial(&caller, &format!("pw{caller}"), &callee, false);
        match phones.pump(Duration::from_secs(10), "call answered", |e| {
            matches!(e, Event::Answered { call_id: c, .. } | Event::Failed { call_id: c, .. } if *c == call_id)
        }) {
            Ok(Event::Answered { .. }) => up.push(call_id),
            other => panic!("established call {i} did not come up: {other:?}"),
        }
    }
    eprintln!(
        "==> {} calls up; flooding with {flood_rate:.0} calls/s for {seconds} s",
        up.len()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (server, stop) = (gateway.addr, stop.clone());
        std::thread::spawn(move || probe(server, stop))
    };
    let flood = {
        let server = gateway.addr;
        std::thread::spawn(move || {
            run(&LoadConfig {
                server,
                callers: credentials(CALLERS, PHONES),
                callees: credentials(CALLEES, PHONES),
                rate: flood_rate,
                calls: (flood_rate * seconds) as u64,
                hold: Duration::from_millis(500),
                timeout: Duration::from_secs(5),
            })
        })
    };
    std::thread::sleep(Duration::from_secs_f64(seconds / 2.0));
    eprintln!("==> hanging up the established calls in the middle of the flood");
    let mut waiting: HashSet<String> = up.iter().cloned().collect();
    for call_id in &up {
        phones.hang_up(call_id);
    }
    let (mut clean, mut unclean) = (0, 0);
    while !waiting.is_empty() {
        match phones.pump(
            Duration::from_secs(35),
            "BYE answered",
            |e| matches!(e, Event::HungUp { call_id, .. } | Event::TimedOut { call_id, .. } if waiting.contains(call_id)),
        ) {
            Ok(Event::HungUp { call_id, code }) => {
                waiting.remove(&call_id);
                if code == 200 {
                    clean += 1;
                } else {
                    unclean += 1;
                }
            }
            Ok(Event::TimedOut { call_id, .. }) => {
                waiting.remove(&call_id);
                unclean += 1;
            }
            Ok(other) => unreachable!("pump returned an unwanted event {other:?}"),
            Err(e) => {
                eprintln!("  waiting for BYE answers: {e}");
                break;
            }
        }
    }
    let lost_byes = waiting.len();
    let report = flood
        .join()
        .expect("flood thread")
        .unwrap_or_else(|e| panic!("load generator: {e}"));
    stop.store(true, Ordering::Relaxed);
    let (probes, probes_lost) = prober.join().expect("probe thread");
    let ms = |us: u64| us as f64 / 1000.0;
    let mut table = Table::new(&["measure", "value"]);
    let rows: Vec<(String, String)> = vec![
        (
            "new calls offered (3x the sustainable rate)".into(),
            format!(
                "{} at {:.0}/s (asked {flood_rate:.0}/s)",
                report.attempted,
                report.attempted as f64 / report.elapsed.as_secs_f64()
            ),
        ),
        (
            "new calls completed / failed".into(),
            format!("{} / {}", report.completed, report.failed),
        ),
        (
            "why new calls failed".into(),
            format!("{:?}", report.failures),
        ),
        (
            "established calls ended cleanly (200 to BYE)".into(),
            format!(
                "{clean} of {} ({unclean} other answers, {lost_byes} unanswered)",
                up.len()
            ),
        ),
        (
            "OPTIONS probe answer time p50 / p99 / max".into(),
            format!(
                "{:.2} / {:.2} / {:.2} ms ({} probes, {probes_lost} unanswered in 500 ms)",
                ms(probes.value_at_quantile(0.5)),
                ms(probes.value_at_quantile(0.99)),
                ms(probes.max()),
                probes.len()
            ),
        ),
    ];
    for (measure, value) in rows {
        table.row(vec![measure, value]);
    }
    print!("{}", table.render());
    let chart = BarChart {
        title: format!("OPTIONS probe under {flood_rate:.0} new calls/s"),
        unit: "ms".into(),
        categories: vec!["p50".into(), "p99".into(), "max".into()],
        series: vec![(
            "answer time".into(),
            vec![
                ms(probes.value_at_quantile(0.5)),
                ms(probes.value_at_quantile(0.99)),
                ms(probes.max()),
            ],
        )],
    };
    match report::write("sip-overload", &table, &chart) {
        Ok((md, svg)) => eprintln!("written: {} {}", md.display(), svg.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
}
