//! The TCP defences against the real binary: slow senders cut off by the message timeout,
//! endless heads answered 513 at the configured size, a flood from one address held to the
//! per-source cap while another address registers, idle connections closed unless their
//! address is registered, and the total cap fitted to the descriptor limit.
//!
//! Timeouts are configured small and the tests wait on events (the gateway closing a
//! connection: a read returns 0 or a reset; an answer arriving); the time limits around
//! those waits only stop a failing test.

use bench::sipload::authorization;
use e2e_tests::{
    answers_options, free_port, status_of, tcp_connect_from, Gateway, GatewayOptions, Sipp,
};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bounds every wait.
const GUARD: Duration = Duration::from_secs(15);

fn gateway(tcp: &str) -> Gateway {
    Gateway::start(GatewayOptions {
        tcp: Some(tcp.into()),
        ..GatewayOptions::default()
    })
}

/// A TCP connection to the gateway from `source` (the whole of 127/8 is local on Linux).
fn connect_from(gateway: &Gateway, source: &str) -> TcpStream {
    tcp_connect_from(gateway, source.parse().unwrap())
}

/// Reads until the gateway closes the connection (EOF or reset); returns what came first.
/// Panics if it stays open for [`GUARD`].
fn read_until_closed(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(GUARD)).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the gateway kept the connection open for {GUARD:?}")
            }
            Err(_) => break, // reset
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// One SIP message read from a stream (head + Content-Length body).
fn read_message(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(GUARD)).unwrap();
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        stream
            .read_exact(&mut byte)
            .expect("a message from the gateway");
        received.push(byte[0]);
        if received.ends_with(b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body).unwrap();
            return head + &String::from_utf8_lossy(&body);
        }
    }
}

/// True when the connection is open and served: a CRLFCRLF ping gets a CRLF pong (RFC 5626).
fn answers_ping(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"\r\n\r\n").is_err() {
        return false;
    }
    stream.set_read_timeout(Some(GUARD)).unwrap();
    let mut pong = [0u8; 2];
    stream.read_exact(&mut pong).is_ok() && &pong == b"\r\n"
}

fn options(gateway: &Gateway, local: SocketAddr, branch: &str) -> String {
    format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK{branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{branch}\r\nTo: <sip:gw@127.0.0.1>\r\n\
Call-ID: {branch}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        gateway.addr()
    )
}

/// The status of the answer to an OPTIONS sent on `stream`.
fn options_status(gateway: &Gateway, stream: &mut TcpStream, branch: &str) -> Option<u16> {
    let probe = options(gateway, stream.local_addr().unwrap(), branch);
    stream.write_all(probe.as_bytes()).unwrap();
    status_of(&read_message(stream))
}

/// Slowloris: connections sending one byte every 200 ms are closed once the message
/// timeout (1 s) has passed since their first byte, although each byte is input; the
/// gateway serves normally meanwhile.
#[test]
fn slow_senders_are_cut_off_by_the_message_timeout() {
    let gateway = gateway("message_timeout_secs = 1");
    let trickles: Vec<_> = (0..5)
        .map(|i| {
            let mut stream = connect_from(&gateway, "127.0.0.1");
            let text = options(&gateway, stream.local_addr().unwrap(), &format!("slow{i}"));
            let reader = stream.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                for byte in text.as_bytes() {
                    if stream.write_all(std::slice::from_ref(byte)).is_err() {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                true // the whole message went out: never closed
            });
            (reader, writer)
        })
        .collect();
    for (mut reader, _writer) in trickles {
        assert_eq!(
            read_until_closed(&mut reader),
            "",
            "a slow message was answered"
        );
    }
    gateway.wait_for_log("no complete message within 1s of its first byte");
    assert!(answers_options(&gateway));
    let mut fresh = connect_from(&gateway, "127.0.0.1");
    assert_eq!(options_status(&gateway, &mut fresh, "fresh"), Some(200));
}

/// Heads of 60 KB that never end are cut at `sip.max_message_size` (4 KB here), each
/// answered 513 before its connection closes.
#[test]
fn endless_heads_are_answered_513_at_the_configured_size() {
    let gateway = Gateway::start(GatewayOptions {
        max_message_size: 4096,
        ..GatewayOptions::default()
    });
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let mut stream = connect_from(&gateway, "127.0.0.1");
            let head = options(&gateway, stream.local_addr().unwrap(), &format!("big{i}"))
                .replace("Content-Length: 0\r\n\r\n", "");
            let reader = stream.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                let filler = format!("X-Filler: {}\r\n", "x".repeat(1000));
                let _ = stream.write_all(head.as_bytes());
                for _ in 0..60 {
                    if stream.write_all(filler.as_bytes()).is_err() {
                        break;
                    }
                }
            });
            (reader, writer, i)
        })
        .collect();
    for (mut reader, writer, i) in clients {
        let answer = read_until_closed(&mut reader);
        assert!(
            answer.starts_with("SIP/2.0 513 Message Too Large\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains(&format!("Call-ID: big{i}@probe")),
            "{answer}"
        );
        writer.join().unwrap();
    }
    gateway.wait_for_log("exceeds the 4096-byte limit (sip.max_message_size)");
}

/// Content-Length -1 and a garbled one get 400 with a reason before the close.
#[test]
fn bad_content_lengths_are_answered_400() {
    let gateway = gateway("");
    for value in ["-1", "abc"] {
        let mut stream = connect_from(&gateway, "127.0.0.1");
        let request = options(&gateway, stream.local_addr().unwrap(), "cl")
            .replace("Content-Length: 0", &format!("Content-Length: {value}"));
        stream.write_all(request.as_bytes()).unwrap();
        let answer = read_until_closed(&mut stream);
        assert!(
            answer.starts_with(&format!(
                "SIP/2.0 400 Bad Request (invalid Content-Length \"{value}\")\r\n"
            )),
            "{answer}"
        );
    }
}

/// Twenty connections from 127.0.0.2 with a cap of 4 per address: 16 are closed at once,
/// 4 stay open, and a phone on 127.0.0.1 registers over TCP meanwhile.
#[test]
fn a_flood_from_one_address_does_not_lock_out_another() {
    let gateway = gateway("max_connections_per_source = 4");
    let flood: Vec<TcpStream> = (0..20)
        .map(|_| connect_from(&gateway, "127.0.0.2"))
        .collect();
    let (mut held, refused) = held_and_refused(flood);
    assert_eq!((held.len(), refused), (4, 16));
    gateway.wait_for_log("connections already open from that address");
    register_over_tcp(&gateway, "203");
    for stream in &mut held {
        assert!(answers_ping(stream), "a held connection was dropped");
    }
}

/// The connections the gateway kept, and how many it refused: a refused connection was
/// closed at once (its ping gets EOF or a reset), a held one answers it.
fn held_and_refused(streams: Vec<TcpStream>) -> (Vec<TcpStream>, usize) {
    let (held, refused): (Vec<_>, Vec<_>) = streams
        .into_iter()
        .map(|mut stream| (answers_ping(&mut stream), stream))
        .partition(|(answered, _)| *answered);
    (held.into_iter().map(|(_, s)| s).collect(), refused.len())
}

/// Registers `ext` (password `pw<ext>`) over TCP with SIPp and expects 200.
fn register_over_tcp(gateway: &Gateway, ext: &str) {
    Sipp::new("register.xml", free_port())
        .tcp()
        .service(ext)
        .credentials(ext, &format!("pw{ext}"))
        .key("expires", "600")
        .expect(200)
        .run(gateway);
}

/// Registers 201 over `stream` (answering the digest challenge).
fn register_over(gateway: &Gateway, stream: &mut TcpStream) {
    let local = stream.local_addr().unwrap();
    let server = gateway.addr();
    let request = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKreg{cseq}\r\n\
Max-Forwards: 70\r\nFrom: <sip:201@{server}>;tag=r1\r\nTo: <sip:201@{server}>\r\nCall-ID: idle-reg\r\n\
CSeq: {cseq} REGISTER\r\nContact: <sip:201@{local};transport=tcp>\r\nExpires: 600\r\n{auth}\
Content-Length: 0\r\n\r\n"
        )
    };
    stream.write_all(request(1, "").as_bytes()).unwrap();
    let challenge = read_message(stream);
    assert_eq!(status_of(&challenge), Some(401), "{challenge}");
    let www = challenge
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate:"))
        .expect("a challenge")
        .trim()
        .to_string();
    let auth = authorization(&www, "201", "pw201", "REGISTER", &format!("sip:{server}"));
    stream
        .write_all(request(2, &format!("Authorization: {auth}\r\n")).as_bytes())
        .unwrap();
    let ok = read_message(stream);
    assert_eq!(status_of(&ok), Some(200), "{ok}");
}

/// With a 1 s idle timeout, connections without a registration are closed, while the
/// registered phone's connection (idle for longer) stays open and still works.
#[test]
fn a_registered_phones_idle_connection_survives_the_idle_timeout() {
    let gateway = gateway("idle_timeout_secs = 1");
    let mut phone = connect_from(&gateway, "127.0.0.1");
    register_over(&gateway, &mut phone);
    // Two strangers in turn: each is closed after 1 s of silence, so when the second is,
    // the phone has been silent for more than the timeout twice over.
    for _ in 0..2 {
        let mut stranger = connect_from(&gateway, "127.0.0.3");
        assert_eq!(read_until_closed(&mut stranger), "");
    }
    gateway.wait_for_log("idle for 1s without a registration");
    assert!(
        answers_ping(&mut phone),
        "the registered phone's connection was closed"
    );
    assert_eq!(options_status(&gateway, &mut phone, "still"), Some(200));
}

/// Started with a soft descriptor limit of 128 under a hard one of 256, the gateway raises
/// it to 256 and caps TCP below it: of 200 connections from one address (the per-source
/// cap is not the limit here) the 48 over the cap are closed at once, accept never fails
/// (before, the descriptors ran out and every TCP client was locked out), and once the
/// idle ones time out a phone registers over TCP.
#[test]
fn the_total_cap_fits_the_descriptor_limit_and_never_locks_tcp_out() {
    let gateway = Gateway::start(GatewayOptions {
        tcp: Some("idle_timeout_secs = 2\nmax_connections_per_source = 4096".into()),
        nofile: Some((128, 256)),
        ..GatewayOptions::default()
    });
    gateway.wait_for_log("descriptor limit raised from 128 to the hard limit 256");
    // 256 minus the reserve: other 64, store 16, 3 analog ports (12) and their relays (12).
    gateway.wait_for_log("tcp: at most 152 connection(s)");
    let flood: Vec<TcpStream> = (0..200)
        .map(|_| connect_from(&gateway, "127.0.0.2"))
        .collect();
    let (held, refused) = held_and_refused(flood);
    assert_eq!((held.len(), refused), (152, 48));
    gateway.wait_for_log("connections already open in total");
    for mut stream in held {
        assert_eq!(read_until_closed(&mut stream), "");
    }
    register_over_tcp(&gateway, "203");
    assert!(
        !gateway.log().contains("tcp accept failed"),
        "{}",
        gateway.log()
    );
}
