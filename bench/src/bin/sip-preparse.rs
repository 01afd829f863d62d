//! SIP parsing throughput, side by side on the same messages: the fast path's zero-copy
//! pre-parser (routing keys only), the gateway's full parser (ezk-sip-types with our
//! tolerance layer) and rsip 0.4. Prints a table with the ratios and writes
//! `target/bench-results/sip-preparse.{md,svg}`.
//!
//! Run: `cargo run --release -p bench --bin sip-preparse`

use bench::report::{self, BarChart, Table};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SDP: &str =
    "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n\
t=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let invite = format!(
        "INVITE sip:201@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK74bf9;rport\r\n\
Max-Forwards: 70\r\nFrom: \"Alice\" <sip:202@192.0.2.1>;tag=9fxced76sl\r\nTo: <sip:201@192.0.2.1>\r\n\
Call-ID: 3848276298220188511@192.0.2.10\r\nCSeq: 2 INVITE\r\nContact: <sip:202@192.0.2.10:5062;transport=udp>\r\n\
Proxy-Authorization: Digest username=\"202\", realm=\"office\", nonce=\"ea9c8e88df84f1cec4341ae6cbe5a359\", uri=\"sip:201@192.0.2.1:5060\", response=\"dfe56131d1958046689d83306477ecc\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"0a4f113b\"\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\nSupported: replaces, timer\r\nUser-Agent: bench/1.0\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKgw1a2b3c;received=192.0.2.1\r\n\
From: \"Alice\" <sip:202@192.0.2.1>;tag=gw77\r\nTo: <sip:201@192.0.2.1>;tag=314159\r\n\
Call-ID: gw-82734-192.0.2.1\r\nCSeq: 1 INVITE\r\nContact: <sip:201@192.0.2.20:5060>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    let ack = "ACK sip:201@192.0.2.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKack1\r\n\
Max-Forwards: 70\r\nFrom: <sip:202@192.0.2.1>;tag=gw77\r\nTo: <sip:201@192.0.2.1>;tag=314159\r\n\
Call-ID: gw-82734-192.0.2.1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        .to_string();
    let register = "REGISTER sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKreg77;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:201@192.0.2.1>;tag=reg1\r\nTo: <sip:201@192.0.2.1>\r\n\
Call-ID: reg-201-5060@192.0.2.20\r\nCSeq: 7 REGISTER\r\nContact: <sip:201@192.0.2.20:5060>;expires=3600\r\n\
User-Agent: bench/1.0\r\nContent-Length: 0\r\n\r\n"
        .to_string();
    vec![
        ("INVITE+SDP", invite.into_bytes()),
        ("200+SDP", ok.into_bytes()),
        ("ACK", ack.into_bytes()),
        ("REGISTER", register.into_bytes()),
    ]
}

/// A parser under test: accepts the message or not.
type Parser<'a> = &'a dyn Fn(&[u8]) -> bool;

/// Messages per second `parse` manages on `message` (median of 5 runs of ~300 ms).
fn throughput(message: &[u8], parse: Parser<'_>) -> f64 {
    assert!(
        parse(message),
        "every parser must accept the benchmark messages"
    );
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut count = 0u64;
            while start.elapsed() < Duration::from_millis(300) {
                for _ in 0..256 {
                    black_box(parse(black_box(message)));
                }
                count += 256;
            }
            count as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[2]
}

fn main() {
    let parsers: [(&str, Parser<'_>); 3] = [
        ("fast path pre-parser", &|m| {
            fastpath::preparse::preparse(m).is_ok()
        }),
        ("full parser (ezk)", &|m| {
            gateway::sip::message::SipMessage::parse_datagram(m).is_ok()
        }),
        ("rsip 0.4", &|m| rsip::SipMessage::try_from(m).is_ok()),
    ];
    let messages = messages();
    let mut table = Table::new(&[
        "message",
        "pre-parser msgs/s",
        "full parser msgs/s",
        "rsip msgs/s",
        "pre / rsip",
        "pre / full",
    ]);
    let mut series: Vec<(String, Vec<f64>)> = parsers
        .iter()
        .map(|(name, _)| (name.to_string(), Vec::new()))
        .collect();
    for (i, (name, bytes)) in messages.iter().enumerate() {
        eprintln!(
            "[{}/{}] {name} ({} bytes)...",
            i + 1,
            messages.len(),
            bytes.len()
        );
        let rates: Vec<f64> = parsers
            .iter()
            .map(|(_, parse)| throughput(bytes, *parse))
            .collect();
        for (serie, rate) in series.iter_mut().zip(&rates) {
            serie.1.push(*rate);
        }
        table.row(vec![
            name.to_string(),
            report::short(rates[0]),
            report::short(rates[1]),
            report::short(rates[2]),
            format!("{:.1}x", rates[0] / rates[2]),
            format!("{:.1}x", rates[0] / rates[1]),
        ]);
    }
    let chart = BarChart {
        title: "SIP parsing throughput, one core".into(),
        unit: "messages per second".into(),
        categories: messages.iter().map(|(n, _)| n.to_string()).collect(),
        series,
    };
    print!("{}", table.render());
    match report::write("sip-preparse", &table, &chart) {
        Ok((md, svg)) => eprintln!("written: {} {}", md.display(), svg.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
}
