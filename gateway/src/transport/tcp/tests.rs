//! The TCP transport's defences against a real socket on loopback. Timeouts are set small
//! and every wait is on an event (the gateway closing: a read returns 0 or a reset; a
//! pong arriving); the timeouts around them only bound a failing test.

use super::*;
use std::net::IpAddr;
use tokio::net::TcpSocket;

/// Bounds every wait of these tests.
const GUARD: Duration = Duration::from_secs(10);

fn limits() -> TcpLimits {
    TcpLimits {
        message_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        max_per_source: 32,
        max_total: 64,
    }
}

async fn transport(
    limits: TcpLimits,
    max_message_size: usize,
) -> (TcpTransport, mpsc::Receiver<Inbound>) {
    let (tx, rx) = mpsc::channel(64);
    let settings = TcpSettings {
        limits,
        max_message_size,
    };
    let transport = TcpTransport::bind("127.0.0.1:0".parse().unwrap(), tx, settings)
        .await
        .unwrap();
    (transport, rx)
}

/// A client connection from `source` (any 127/8 address is local on Linux).
async fn connect(transport: &TcpTransport, source: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket
        .connect(transport.local_addr(Protocol::Tcp).unwrap())
        .await
        .unwrap()
}

/// The peer of a TCP connection from `addr`, as the registrar names it.
fn tcp_peer(addr: SocketAddr) -> Peer {
    Peer {
        protocol: Protocol::Tcp,
        addr,
        local: addr,
    }
}

/// Reads until the gateway closes the connection; returns what it sent first.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(GUARD, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .expect("the gateway did not close the connection");
    String::from_utf8_lossy(&received).into_owned()
}

/// True when the connection is open and served: a CRLFCRLF ping gets its CRLF pong.
async fn answers_ping(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"\r\n\r\n").await.is_err() {
        return false;
    }
    let mut pong = [0u8; 2];
    matches!(
        tokio::time::timeout(GUARD, stream.read_exact(&mut pong)).await,
        Ok(Ok(_)) if &pong == b"\r\n"
    )
}

fn options(call_id: &str, extra: &str) -> String {
    format!(
        "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK{call_id}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:gw@127.0.0.1>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn messages_are_delivered_and_pings_answered() {
    let (transport, mut inbound) = transport(limits(), 65_535).await;
    let mut client = connect(&transport, "127.0.0.1").await;
    client
        .write_all(options("one", "").as_bytes())
        .await
        .unwrap();
    match tokio::time::timeout(GUARD, inbound.recv()).await.unwrap() {
        Some(Inbound::Message { message, .. }) => assert_eq!(message.call_id(), Some("one")),
        other => panic!("expected the message, got {other:?}"),
    }
    assert!(answers_ping(&mut client).await);
}

/// An idle connection without a registration is closed after the idle timeout, while a
/// registered phone's connection, opened earlier (so idle for longer), stays open.
#[tokio::test]
async fn idle_connections_close_unless_their_address_is_registered() {
    let (transport, _inbound) = transport(
        TcpLimits {
            idle_timeout: Duration::from_millis(300),
            ..limits()
        },
        65_535,
    )
    .await;
    let mut phone = connect(&transport, "127.0.0.1").await;
    transport.set_registered(tcp_peer(phone.local_addr().unwrap()), true);
    // Two strangers in turn, so the phone has certainly been idle for the timeout.
    for _ in 0..2 {
        let mut stranger = connect(&transport, "127.0.0.1").await;
        read_until_closed(&mut stranger).await;
    }
    assert!(
        answers_ping(&mut phone).await,
        "the registered phone's connection was closed"
    );
    // Once its registration is gone, the phone's connection is closed too.
    transport.set_registered(tcp_peer(phone.local_addr().unwrap()), false);
    read_until_closed(&mut phone).await;
}

/// Slowloris: a message trickling in one byte every 50 ms is cut off by the message
/// timeout although every byte is activity for the idle timeout; nothing is delivered.
#[tokio::test]
async fn a_message_trickling_in_is_closed_by_the_message_timeout() {
    let (transport, mut inbound) = transport(
        TcpLimits {
            message_timeout: Duration::from_millis(500),
            ..limits()
        },
        65_535,
    )
    .await;
    let client = connect(&transport, "127.0.0.1").await;
    let (mut read, mut write) = client.into_split();
    let text = options("slow", "");
    let trickle = tokio::spawn(async move {
        for byte in text.as_bytes() {
            if write.write_all(std::slice::from_ref(byte)).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true // the whole message went out: the connection was never closed
    });
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(GUARD, async {
        while matches!(read.read(&mut buffer).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "the slow connection was not closed");
    trickle.abort();
    assert!(
        inbound.try_recv().is_err(),
        "a partial message was delivered"
    );
}

/// More connections from one address than the cap: the extra one is accepted and closed
/// at once; the others and another address's connection are served.
#[tokio::test]
async fn connections_over_the_per_source_cap_are_closed_at_once() {
    let (transport, _inbound) = transport(
        TcpLimits {
            max_per_source: 2,
            ..limits()
        },
        65_535,
    )
    .await;
    let mut first = connect(&transport, "127.0.0.2").await;
    let mut second = connect(&transport, "127.0.0.2").await;
    assert!(answers_ping(&mut first).await && answers_ping(&mut second).await);
    let mut third = connect(&transport, "127.0.0.2").await;
    assert_eq!(read_until_closed(&mut third).await, "");
    let mut other = connect(&transport, "127.0.0.3").await;
    assert!(
        answers_ping(&mut other).await,
        "another address is locked out"
    );
    // A closed connection frees its place.
    drop(first);
    let deadline = Instant::now() + GUARD;
    loop {
        let mut again = connect(&transport, "127.0.0.2").await;
        if answers_ping(&mut again).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was never given back"
        );
    }
}

/// The total cap holds whatever the sources.
#[tokio::test]
async fn connections_over_the_total_cap_are_closed_at_once() {
    let (transport, _inbound) = transport(
        TcpLimits {
            max_per_source: 2,
            max_total: 3,
            ..limits()
        },
        65_535,
    )
    .await;
    let mut open = Vec::new();
    for source in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let mut client = connect(&transport, source).await;
        assert!(answers_ping(&mut client).await);
        open.push(client);
    }
    let mut extra = connect(&transport, "127.0.0.5").await;
    assert_eq!(read_until_closed(&mut extra).await, "");
    for client in &mut open {
        assert!(answers_ping(client).await);
    }
}

/// A 60 KB head that never ends is cut at the configured size with a 513 the client reads
/// before the connection closes.
#[tokio::test]
async fn an_oversized_head_gets_513_before_the_close() {
    let (transport, mut inbound) = transport(limits(), 4096).await;
    let client = connect(&transport, "127.0.0.1").await;
    let (mut read, mut write) = client.into_split();
    let head = options("big", "").replace("Content-Length: 0\r\n\r\n", "");
    tokio::spawn(async move {
        let _ = write.write_all(head.as_bytes()).await;
        let filler = format!("X-Filler: {}\r\n", "x".repeat(1000));
        for _ in 0..60 {
            if write.write_all(filler.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let mut received = Vec::new();
    tokio::time::timeout(GUARD, read.read_to_end(&mut received))
        .await
        .expect("the connection was not closed")
        .expect("the connection was reset before the answer");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("SIP/2.0 513 Message Too Large\r\n"),
        "{text}"
    );
    assert!(text.contains("Call-ID: big\r\n"), "{text}");
    match inbound.recv().await {
        Some(Inbound::StreamGarbage { error, .. }) => {
            assert!(error.to_string().contains("4096"), "{error}")
        }
        other => panic!("expected the rejection, got {other:?}"),
    }
}

/// A Content-Length over the limit gets 513, a negative or garbled one 400 with a reason.
#[tokio::test]
async fn bad_content_lengths_are_answered_before_the_close() {
    let (transport, _inbound) = transport(limits(), 4096).await;
    for (length, expected) in [
        ("100000", "SIP/2.0 513 Message Too Large\r\n"),
        (
            "-1",
            "SIP/2.0 400 Bad Request (invalid Content-Length \"-1\")\r\n",
        ),
        (
            "abc",
            "SIP/2.0 400 Bad Request (invalid Content-Length \"abc\")\r\n",
        ),
    ] {
        let mut client = connect(&transport, "127.0.0.1").await;
        let request =
            options(length, "").replace("Content-Length: 0", &format!("Content-Length: {length}"));
        client.write_all(request.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut client).await;
        assert!(
            answer.starts_with(expected),
            "Content-Length {length}: {answer}"
        );
    }
}

#[tokio::test]
async fn messages_name_the_listening_address_as_their_local_one_both_ways() {
    let (transport, mut inbound) = transport(limits(), 65_535).await;
    let listen = transport.local_addr(Protocol::Tcp).unwrap();
    // Accepted: the connection's local address is the listener's.
    let mut accepted = connect(&transport, "127.0.0.2").await;
    accepted
        .write_all(options("in", "").as_bytes())
        .await
        .unwrap();
    let Some(Inbound::Message { peer, .. }) =
        tokio::time::timeout(GUARD, inbound.recv()).await.unwrap()
    else {
        panic!("a message");
    };
    assert_eq!(peer.local, listen);
    // Opened by the gateway: its own port is ephemeral, but the core must name the
    // listener (Via, Contact).
    let phone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = Peer {
        protocol: Protocol::Tcp,
        addr: phone.local_addr().unwrap(),
        local: listen,
    };
    transport.send(to, Bytes::from(options("out", ""))).unwrap();
    let (mut stream, _) = tokio::time::timeout(GUARD, phone.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buffer = [0u8; 4096];
    let _ = stream.read(&mut buffer).await.unwrap();
    stream
        .write_all(options("back", "").as_bytes())
        .await
        .unwrap();
    let Some(Inbound::Message { peer, .. }) =
        tokio::time::timeout(GUARD, inbound.recv()).await.unwrap()
    else {
        panic!("a message");
    };
    assert_eq!(peer.addr, to.addr);
    assert_eq!(
        peer.local, listen,
        "the listening port, not the ephemeral one"
    );
}

mod tls;
