//! The kernel steers each datagram to the socket of its Call-ID's shard: the BPF program on
//! a reuse-port group agrees with `preparse::shard_of`, whatever the sender's address, and
//! what it cannot read still arrives (spread by the kernel's hash).

use fastpath::preparse::shard_of;
use fastpath::udp::{bind_shared, steer_by_call_id, SteerError};
use std::net::UdpSocket;
use std::time::Duration;

const SHARDS: usize = 3;

/// A request with `call_id_line` among realistic headers.
fn request(call_id_line: &str) -> String {
    format!(
        "INVITE sip:201@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK74bf9;rport\r\n\
Max-Forwards: 70\r\nFrom: \"Alice\" <sip:202@192.0.2.1>;tag=9fxced76sl\r\n\
To: <sip:201@192.0.2.1>\r\n{call_id_line}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:202@192.0.2.10:5062>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The group's sockets (steered) and senders on ports of their own.
fn group() -> (Vec<UdpSocket>, Vec<UdpSocket>) {
    let sockets = bind_shared("127.0.0.1:0".parse().unwrap(), SHARDS).unwrap();
    steer_by_call_id(&sockets[0], SHARDS)
        .expect("the steering program must load and attach (the tests run as root on Linux 6.x)");
    for socket in &sockets {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }
    let senders = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    (sockets, senders)
}

/// What each socket of the group holds, in order, once `expected` datagrams arrived in
/// all (each socket read until it would block, after a first wait for the total).
fn received(sockets: &[UdpSocket], expected: usize) -> Vec<Vec<String>> {
    let mut got: Vec<Vec<String>> = vec![Vec::new(); sockets.len()];
    let mut total = 0;
    let mut buffer = [0u8; 2048];
    // Loopback delivers within the sender's call; the wait is only a bound.
    for _ in 0..50 {
        for (socket, got) in sockets.iter().zip(&mut got) {
            socket.set_nonblocking(true).unwrap();
            while let Ok(length) = socket.recv(&mut buffer) {
                got.push(String::from_utf8_lossy(&buffer[..length]).into_owned());
                total += 1;
            }
        }
        if total >= expected {
            break;
        }
        // Nothing more queued yet: block on the first socket for a while.
        sockets[0].set_nonblocking(false).unwrap();
        sockets[0]
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(length) = sockets[0].recv(&mut buffer) {
            got[0].push(String::from_utf8_lossy(&buffer[..length]).into_owned());
            total += 1;
        }
    }
    assert_eq!(total, expected, "every datagram arrives once");
    got
}

#[test]
fn each_datagram_reaches_the_socket_of_its_call_id_s_shard() {
    let (sockets, senders) = group();
    let port = sockets[0].local_addr().unwrap().port();
    let mut sent = Vec::new();
    for i in 0..90 {
        let call_id = format!("{i:04x}-a84b4c76e66710@pc33.example.com");
        let line = match i % 5 {
            0 => format!("Call-ID: {call_id}"),
            1 => format!("call-id: {call_id}"),
            2 => format!("CALL-ID:{call_id}"),
            3 => format!("i: {call_id}"),
            _ => format!("I:   {call_id}"),
        };
        senders[i % senders.len()]
            .send_to(request(&line).as_bytes(), ("127.0.0.1", port))
            .unwrap();
        sent.push(call_id);
    }
    let got = received(&sockets, sent.len());
    for (index, messages) in got.iter().enumerate() {
        for message in messages {
            let call_id = sent
                .iter()
                .find(|id| message.contains(id.as_str()))
                .unwrap();
            assert_eq!(
                shard_of(call_id, SHARDS),
                index,
                "{call_id} arrived on socket {index}"
            );
        }
    }
    assert!(got.iter().all(|m| !m.is_empty()), "every shard has calls");
}

#[test]
fn a_response_is_steered_by_its_call_id_too() {
    let (sockets, senders) = group();
    let port = sockets[0].local_addr().unwrap().port();
    let call_ids: Vec<String> = (0..30).map(|i| format!("gw-{i}-192.0.2.1")).collect();
    for (i, call_id) in call_ids.iter().enumerate() {
        let response = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKgw{i}\r\n\
From: <sip:202@192.0.2.1>;tag=gw77\r\nTo: <sip:201@192.0.2.1>;tag=314159\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        senders[0]
            .send_to(response.as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }
    let got = received(&sockets, call_ids.len());
    for (index, messages) in got.iter().enumerate() {
        for message in messages {
            let call_id = call_ids
                .iter()
                .find(|id| message.contains(&format!("Call-ID: {id}\r")))
                .unwrap();
            assert_eq!(shard_of(call_id, SHARDS), index, "{call_id}");
        }
    }
}

#[test]
fn what_the_program_cannot_read_still_arrives() {
    let (sockets, senders) = group();
    let port = sockets[0].local_addr().unwrap().port();
    let long = "x".repeat(300);
    let far = format!("X-Padding: {}\r\nCall-ID: far", "p".repeat(1100));
    let odd = [
        "Call-ID : spaced-before-the-colon".to_string(),
        "Call-ID: trailing-space ".to_string(),
        format!("Call-ID: {long}"),
        far,
        "Subject: no call id at all".to_string(),
    ];
    for (i, line) in odd.iter().enumerate() {
        senders[i % senders.len()]
            .send_to(request(line).as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }
    for short in [&b"\r\n\r\n"[..], b"", b"x\ni:"] {
        senders[0].send_to(short, ("127.0.0.1", port)).unwrap();
    }
    let got = received(&sockets, odd.len() + 3);
    assert_eq!(got.iter().map(Vec::len).sum::<usize>(), odd.len() + 3);
}

#[test]
fn one_socket_needs_no_steering() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(matches!(
        steer_by_call_id(&socket, 1),
        Err(SteerError::Shards(1))
    ));
}
