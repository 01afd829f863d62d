//! What a flood of unauthenticated requests costs the gateway (security issue, finding 3):
//! resident memory through 60 s of 4,000 REGISTERs/s without credentials (each answered
//! with a challenge), then 20 s of 4,000/s with a wrong password from a trusted network
//! (never blocked, so every one is checked and refused: the worst case), and how many
//! reply bytes each request byte draws (amplification). A phone that was challenged
//! before the flood answers its challenge after it, and re-registers every second during
//! it: a flood must not push its nonce out or starve it. Writes
//! `target/bench-results/sip-flood.{md,svg}`.
//!
//! Run: `scripts/bench.sh --sip` or `cargo run --release -p bench --bin sip-flood -- [--quick]`
//! after `cargo build --release -p gateway`.

use bench::report::{self, BarChart, Table};
use bench::servers::{extension_blocks, start_gateway_with, Server};
use bench::sipload::{authorization, register};
use gateway::sip::message::SipMessage;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sockets the flood is sent from (source ports), round robin.
const SOCKETS: usize = 64;
/// The bound the issue sets: RSS within this much of idle through the flood.
const BOUND_MIB: f64 = 25.0;

/// One phase's figures.
struct Phase {
    name: &'static str,
    sent: u64,
    seconds: f64,
    replies: u64,
    request_bytes: u64,
    reply_bytes: u64,
    peak_rss_kib: u64,
    end_rss_kib: u64,
    phone_ok: u64,
    phone_tries: u64,
}

fn request(server: SocketAddr, local: SocketAddr, n: u64, auth: &str) -> String {
    format!(
        "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKflood{n};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:201@{server}>;tag=f{n}\r\nTo: <sip:201@{server}>\r\n\
Call-ID: flood-{n}@{local}\r\nCSeq: 1 REGISTER\r\nContact: <sip:201@{local}>\r\nExpires: 3600\r\n\
User-Agent: flood\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

/// Sends `rate` requests per second for `length`, counting replies; the phone thread
/// re-registers meanwhile; RSS is sampled every 100 ms.
fn flood(
    name: &'static str,
    gateway: &Server,
    rate: u64,
    length: Duration,
    auth: &str,
) -> std::io::Result<Phase> {
    let server = gateway.addr;
    let sockets: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        })
        .collect::<std::io::Result<_>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (phone_ok, phone_tries) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let phone = {
        let (stop, ok, tries) = (stop.clone(), phone_ok.clone(), phone_tries.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            while !stop.load(Ordering::Relaxed) {
                tries.fetch_add(1, Ordering::Relaxed);
                if register(&socket, server, "202", "pw202").is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(())
        })
    };
    let (mut sent, mut replies, mut request_bytes, mut reply_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut peak = gateway.rss_kib();
    let mut buffer = vec![0u8; 65_536];
    let start = Instant::now();
    let mut next_sample = start;
    while start.elapsed() < length {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let socket = &sockets[sent as usize % SOCKETS];
            let text = request(server, socket.local_addr()?, sent, auth);
            if socket.send_to(text.as_bytes(), server).is_ok() {
                request_bytes += text.len() as u64;
            }
            sent += 1;
        }
        for socket in &sockets {
            while let Ok((n, _)) = socket.recv_from(&mut buffer) {
                replies += 1;
                reply_bytes += n as u64;
            }
        }
        if Instant::now() >= next_sample {
            peak = peak.max(gateway.rss_kib());
            next_sample += Duration::from_millis(100);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let seconds = start.elapsed().as_secs_f64();
    // Replies still in flight.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        for socket in &sockets {
            while let Ok((n, _)) = socket.recv_from(&mut buffer) {
                replies += 1;
                reply_bytes += n as u64;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    phone
        .join()
        .map_err(|_| std::io::Error::other("phone thread panicked"))??;
    Ok(Phase {
        name,
        sent,
        seconds,
        replies,
        request_bytes,
        reply_bytes,
        peak_rss_kib: peak.max(gateway.rss_kib()),
        end_rss_kib: gateway.rss_kib(),
        phone_ok: phone_ok.load(Ordering::Relaxed),
        phone_tries: phone_tries.load(Ordering::Relaxed),
    })
}

/// A REGISTER for 203 challenged now, answered after the floods: true if it then succeeds.
struct PendingChallenge {
    socket: UdpSocket,
    challenge: String,
}

fn challenge_phone(server: SocketAddr) -> std::io::Result<PendingChallenge> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let local = socket.local_addr()?;
    socket.send_to(
        request(server, local, 0, "")
            .replace("201", "203")
            .as_bytes(),
        server,
    )?;
    let mut buffer = vec![0u8; 65_536];
    let (n, _) = socket.recv_from(&mut buffer)?;
    let response = SipMessage::parse_datagram(&buffer[..n])
        .map_err(|e| std::io::Error::other(format!("challenge: {e}")))?;
    let challenge = response
        .header(&ezk_sip_types::Name::WWW_AUTHENTICATE)
        .ok_or_else(|| std::io::Error::other("no challenge for the phone"))?
        .to_string();
    Ok(PendingChallenge { socket, challenge })
}

fn answer_late(server: SocketAddr, pending: &PendingChallenge) -> std::io::Result<Option<u16>> {
    let local = pending.socket.local_addr()?;
    let auth = authorization(
        &pending.challenge,
        "203",
        "pw203",
        "REGISTER",
        &format!("sip:{server}"),
    );
    let text = request(server, local, 1, &format!("Authorization: {auth}\r\n"))
        .replace("201", "203")
        .replace("CSeq: 1 ", "CSeq: 2 ");
    pending.socket.send_to(text.as_bytes(), server)?;
    let mut buffer = vec![0u8; 65_536];
    let (n, _) = pending.socket.recv_from(&mut buffer)?;
    Ok(SipMessage::parse_datagram(&buffer[..n])
        .ok()
        .and_then(|m| m.status()))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (challenge_secs, wrong_secs) = if quick { (10, 5) } else { (60, 20) };
    let rate = 4_000;
    let gateway = start_gateway_with(
        "trusted_networks = [\"127.0.0.0/8\"]",
        &extension_blocks(201, 3, ""),
    )
    .unwrap_or_else(|e| panic!("gateway: {e}"));
    std::thread::sleep(Duration::from_secs(1));
    let idle = gateway.rss_kib();
    let pending = challenge_phone(gateway.addr).unwrap_or_else(|e| panic!("phone: {e}"));
    eprintln!("==> {challenge_secs} s of {rate} unauthenticated REGISTERs/s");
    let challenged = flood(
        "no credentials (challenged)",
        &gateway,
        rate,
        Duration::from_secs(challenge_secs),
        "",
    )
    .unwrap_or_else(|e| panic!("flood: {e}"));
    // Wrong passwords on one nonce, from a trusted network (never blocked).
    let probe = challenge_phone(gateway.addr).unwrap_or_else(|e| panic!("phone: {e}"));
    let wrong_auth = format!(
        "Authorization: {}\r\n",
        authorization(
            &probe.challenge,
            "201",
            "wrong",
            "REGISTER",
            &format!("sip:{}", gateway.addr)
        )
    );
    eprintln!("==> {wrong_secs} s of {rate} wrong-password REGISTERs/s");
    let refused = flood(
        "wrong password (refused)",
        &gateway,
        rate,
        Duration::from_secs(wrong_secs),
        &wrong_auth,
    )
    .unwrap_or_else(|e| panic!("flood: {e}"));
    let late = answer_late(gateway.addr, &pending).unwrap_or_else(|e| panic!("phone: {e}"));
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut table = Table::new(&[
        "flood",
        "requests/s sent",
        "replies per request",
        "reply bytes per request byte",
        "RSS MiB idle / peak / end",
        "peak above idle (bound 25 MiB)",
        "phone re-registrations ok",
    ]);
    for phase in [&challenged, &refused] {
        let above = mib(phase.peak_rss_kib.saturating_sub(idle));
        table.row(vec![
            phase.name.to_string(),
            format!("{:.0}", phase.sent as f64 / phase.seconds),
            format!("{:.3}", phase.replies as f64 / phase.sent.max(1) as f64),
            format!(
                "{:.2}",
                phase.reply_bytes as f64 / phase.request_bytes.max(1) as f64
            ),
            format!(
                "{:.1} / {:.1} / {:.1}",
                mib(idle),
                mib(phase.peak_rss_kib),
                mib(phase.end_rss_kib)
            ),
            format!(
                "{above:.1} MiB ({})",
                if above <= BOUND_MIB { "within" } else { "OVER" }
            ),
            format!("{}/{}", phase.phone_ok, phase.phone_tries),
        ]);
    }
    print!("{}", table.render());
    println!(
        "A phone challenged before the floods answered after {} requests: {}",
        challenged.sent + refused.sent,
        match late {
            Some(200) => "200 OK (its nonce survived)".to_string(),
            other => format!("{other:?} (its nonce was lost)"),
        }
    );
    let chart = BarChart {
        title: format!("Gateway RSS under {rate} unauthenticated requests/s"),
        unit: "MiB".into(),
        categories: vec![challenged.name.into(), refused.name.into()],
        series: vec![
            ("idle".into(), vec![mib(idle), mib(idle)]),
            (
                "peak".into(),
                vec![mib(challenged.peak_rss_kib), mib(refused.peak_rss_kib)],
            ),
            (
                "end".into(),
                vec![mib(challenged.end_rss_kib), mib(refused.end_rss_kib)],
            ),
        ],
    };
    match report::write("sip-flood", &table, &chart) {
        Ok((md, svg)) => eprintln!("written: {} {}", md.display(), svg.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
}
