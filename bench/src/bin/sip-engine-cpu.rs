//! The SIP engine's CPU cost per call, without sockets: the sans-IO `Engine` is fed a full
//! call flow N times in virtual time (INVITE, 407, ACK, INVITE with digest credentials,
//! 100, forked INVITE, 180, 200, ACK both sides, BYE, 200 both sides), with its timers run
//! as the virtual clock passes. Only the engine's own work is timed; the scripted phones
//! and the store (SQLite, applied as the store thread would) run between the timed parts.
//!
//! Prints wall time per call. For repeatable figures run it under callgrind and count only
//! the engine (the functions named `engine_*` here):
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='sip_engine_cpu::engine_*' \
//!     target/release/sip-engine-cpu --calls 2000
//! ```
//!
//! and divide the instructions by the calls (instructions per call).
//!
//! Run: `cargo run --release -p bench --bin sip-engine-cpu -- [--calls N] [--step-ms MS]`

use bench::sipload::{authorization, SDP};
use ezk_sip_types::Name;
use gateway::config::Config;
use gateway::engine::{Engine, Now};
use gateway::sip::message::SipMessage;
use gateway::store::{execute, Store};
use gateway::transport::{Outgoing, Peer, Protocol};
use std::path::Path;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[sip]
listen = "127.0.0.1:5060"
[auth]
realm = "office"
algorithms = ["MD5"]
[database]
path = "unused.db"
[[extension]]
number = "201"
password = "pw201"
[[extension]]
number = "202"
password = "pw202"
display_name = "Bob"
"#;

/// The caller (202) and callee (201) phones' addresses.
const CALLER_PORT: u16 = 5072;
const CALLEE_PORT: u16 = 5071;

fn udp(port: u16) -> Peer {
    Peer {
        protocol: Protocol::Udp,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        local: std::net::SocketAddr::from(([127, 0, 0, 1], 5060)),
    }
}

/// The engine in virtual time, with the wall time spent inside it.
struct Driver {
    engine: Engine,
    store: Store,
    now: Now,
    start: Instant,
    inside: Duration,
}

#[inline(never)]
fn engine_datagram(engine: &mut Engine, now: Now, peer: Peer, bytes: &[u8]) -> Vec<Outgoing> {
    engine.handle_datagram(now, peer, bytes);
    std::iter::from_fn(|| engine.poll_transmit()).collect()
}

#[inline(never)]
fn engine_store_command(engine: &mut Engine) -> Option<gateway::store::StoreCommand> {
    engine.poll_store_command()
}

#[inline(never)]
fn engine_store_result(
    engine: &mut Engine,
    now: Now,
    result: gateway::store::StoreResult,
) -> Vec<Outgoing> {
    engine.handle_store_result(now, result);
    std::iter::from_fn(|| engine.poll_transmit()).collect()
}

#[inline(never)]
fn engine_timers(engine: &mut Engine, now: Now, until: Instant) -> Vec<Outgoing> {
    let mut sent = Vec::new();
    while engine.poll_timeout().is_some_and(|at| at <= until) {
        engine.handle_timeout(now);
        sent.extend(std::iter::from_fn(|| engine.poll_transmit()));
    }
    sent
}

impl Driver {
    fn new() -> Driver {
        let config = Config::from_toml(CONFIG, Path::new("bench.toml")).expect("bench config");
        let now = Now {
            mono: Instant::now(),
            unix_ms: 1_700_000_000_000,
        };
        let store = Store::open(Path::new(":memory:")).expect("an in-memory SQLite store");
        Driver {
            engine: Engine::new(config, Default::default(), [7; 32], now),
            store,
            now,
            start: now.mono,
            inside: Duration::ZERO,
        }
    }

    /// Applies the engine's store commands and feeds the answers back, until quiet;
    /// returns what the engine sent meanwhile.
    fn run_store(&mut self) -> Vec<Outgoing> {
        let mut sent = Vec::new();
        loop {
            let t = Instant::now();
            let command = engine_store_command(&mut self.engine);
            self.inside += t.elapsed();
            let Some(command) = command else { return sent };
            if let Some(result) = execute(&mut self.store, command) {
                let t = Instant::now();
                sent.extend(engine_store_result(&mut self.engine, self.now, result));
                self.inside += t.elapsed();
            }
        }
    }

    /// Delivers `text` from the phone on `port`; returns what the engine sent, parsed.
    fn send(&mut self, port: u16, text: &str) -> Vec<(u16, SipMessage)> {
        let t = Instant::now();
        let mut out = engine_datagram(&mut self.engine, self.now, udp(port), text.as_bytes());
        self.inside += t.elapsed();
        out.extend(self.run_store());
        parsed(out)
    }

    /// Moves the virtual clock on by `by`, running the timers due on the way.
    fn advance(&mut self, by: Duration) {
        let end = self.now.mono + by;
        while let Some(at) = self.engine.poll_timeout().filter(|at| *at <= end) {
            self.set_clock(at.max(self.now.mono));
            let t = Instant::now();
            let mut out = engine_timers(&mut self.engine, self.now, self.now.mono);
            self.inside += t.elapsed();
            out.extend(self.run_store());
            assert!(
                parsed(out)
                    .iter()
                    .all(|(_, m)| m.status().is_none_or(|code| code >= 200)),
                "no retransmissions: every message was answered at once"
            );
        }
        self.set_clock(end);
    }

    fn set_clock(&mut self, mono: Instant) {
        let elapsed = u64::try_from((mono - self.start).as_millis()).unwrap_or(u64::MAX);
        self.now = Now {
            mono,
            unix_ms: 1_700_000_000_000 + elapsed,
        };
    }
}

fn parsed(out: Vec<Outgoing>) -> Vec<(u16, SipMessage)> {
    out.into_iter()
        .map(|o| {
            let msg = SipMessage::parse_datagram(&o.bytes).expect("the engine sends valid SIP");
            (o.peer.addr.port(), msg)
        })
        .collect()
}

fn find<'a>(out: &'a [(u16, SipMessage)], what: &str) -> &'a SipMessage {
    out.iter()
        .map(|(_, m)| m)
        .find(|m| match m.status() {
            Some(code) => code.to_string() == what,
            None => m.method().is_some_and(|x| x.to_string() == what),
        })
        .unwrap_or_else(|| panic!("the engine sent {what}: {out:?}"))
}

/// The callee's answer to the gateway's INVITE or BYE.
fn answer(request: &SipMessage, code: u16, reason: &str, body: &str) -> String {
    let mut response = request.response(code, reason, Some("b1"));
    response.set_header(Name::CONTACT, format!("<sip:201@127.0.0.1:{CALLEE_PORT}>"));
    if !body.is_empty() {
        response.set_header(Name::CONTENT_TYPE, "application/sdp");
        response.body = bytes::Bytes::copy_from_slice(body.as_bytes());
    }
    String::from_utf8(response.to_bytes().to_vec()).expect("UTF-8")
}

fn register_callee(driver: &mut Driver) {
    let request = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{CALLEE_PORT};branch=z9hG4bKreg{cseq};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:201@127.0.0.1>;tag=r1\r\nTo: <sip:201@127.0.0.1>\r\n\
Call-ID: reg-201\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:201@127.0.0.1:{CALLEE_PORT}>\r\nExpires: 3600\r\n\
{auth}Content-Length: 0\r\n\r\n"
        )
    };
    let out = driver.send(CALLEE_PORT, &request(1, ""));
    let challenge = find(&out, "401")
        .header(&Name::WWW_AUTHENTICATE)
        .expect("a challenge")
        .to_string();
    let auth = authorization(&challenge, "201", "pw201", "REGISTER", "sip:127.0.0.1");
    let out = driver.send(
        CALLEE_PORT,
        &request(2, &format!("Authorization: {auth}\r\n")),
    );
    find(&out, "200");
}

/// One call 202 -> 201, answered and hung up by the caller.
fn call(driver: &mut Driver, n: u64) {
    let call_id = format!("bench-{n}");
    let via = |branch: &str| {
        format!("Via: SIP/2.0/UDP 127.0.0.1:{CALLER_PORT};branch=z9hG4bK{branch}-{n};rport\r\n")
    };
    let dialog = |to_tag: &str| {
        format!(
            "From: \"Caller\" <sip:202@127.0.0.1>;tag=a{n}\r\nTo: <sip:201@127.0.0.1>{to_tag}\r\n\
Call-ID: {call_id}\r\nMax-Forwards: 70\r\n"
        )
    };
    let invite = |branch: &str, cseq: u32, auth: &str| {
        format!(
            "INVITE sip:201@127.0.0.1 SIP/2.0\r\n{}{}CSeq: {cseq} INVITE\r\n\
Contact: <sip:202@127.0.0.1:{CALLER_PORT}>\r\n{auth}Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP}",
            via(branch),
            dialog(""),
            SDP.len()
        )
    };
    let out = driver.send(CALLER_PORT, &invite("i1", 1, ""));
    let challenged = find(&out, "407");
    let challenge = challenged
        .header(&Name::PROXY_AUTHENTICATE)
        .expect("a challenge")
        .to_string();
    let tag_407 = challenged
        .to_header()
        .and_then(|t| t.tag().map(str::to_string));
    let ack_407 = format!(
        "ACK sip:201@127.0.0.1 SIP/2.0\r\n{}{}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        via("i1"),
        dialog(&format!(";tag={}", tag_407.unwrap_or_default()))
    );
    assert!(driver.send(CALLER_PORT, &ack_407).is_empty());

    let auth = authorization(&challenge, "202", "pw202", "INVITE", "sip:201@127.0.0.1");
    let out = driver.send(
        CALLER_PORT,
        &invite("i2", 2, &format!("Proxy-Authorization: {auth}\r\n")),
    );
    let b_invite = find(&out, "INVITE").clone();

    let out = driver.send(CALLEE_PORT, &answer(&b_invite, 100, "Trying", ""));
    assert!(out.is_empty());
    let out = driver.send(CALLEE_PORT, &answer(&b_invite, 180, "Ringing", ""));
    let a_tag = find(&out, "180")
        .to_header()
        .and_then(|t| t.tag().map(str::to_string))
        .expect("a To tag");
    let out = driver.send(CALLEE_PORT, &answer(&b_invite, 200, "OK", SDP));
    find(&out, "ACK");
    find(&out, "200");

    let in_dialog = format!(";tag={a_tag}");
    let ack = format!(
        "ACK sip:gw@127.0.0.1:5060 SIP/2.0\r\n{}{}CSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n",
        via("a2"),
        dialog(&in_dialog)
    );
    assert!(driver.send(CALLER_PORT, &ack).is_empty());
    let bye = format!(
        "BYE sip:gw@127.0.0.1:5060 SIP/2.0\r\n{}{}CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n",
        via("b3"),
        dialog(&in_dialog)
    );
    let out = driver.send(CALLER_PORT, &bye);
    find(&out, "200");
    let b_bye = find(&out, "BYE").clone();
    assert!(driver
        .send(CALLEE_PORT, &answer(&b_bye, 200, "OK", ""))
        .is_empty());
}

fn main() {
    let mut calls = 2000u64;
    let mut step = Duration::from_millis(20);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--calls" => calls = value.parse().expect("--calls N"),
            "--step-ms" => step = Duration::from_millis(value.parse().expect("--step-ms MS")),
            _ => panic!("usage: sip-engine-cpu [--calls N] [--step-ms MS]"),
        }
    }
    let mut driver = Driver::new();
    register_callee(&mut driver);
    driver.inside = Duration::ZERO;
    for n in 0..calls {
        call(&mut driver, n);
        driver.advance(step);
    }
    let per_call = driver.inside / u32::try_from(calls.max(1)).unwrap_or(u32::MAX);
    println!(
        "{calls} calls, one every {} ms of virtual time: {:.1} µs of engine time per call \
         ({:.0} calls/s on one core)",
        step.as_millis(),
        per_call.as_secs_f64() * 1e6,
        1.0 / per_call.as_secs_f64()
    );
}
