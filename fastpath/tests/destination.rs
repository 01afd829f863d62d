//! Sockets bound to the unspecified address, on both backends and one datagram at a time:
//! each datagram's destination is reported, and a reply sent from it leaves from that
//! address (127.0.0.2 is the host's too: all of 127/8 is local).

use fastpath::udp::{BackendChoice, Handler, Io, Worker, WorkerConfig};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

/// Answers each datagram with the destination it was reported sent to, from that address.
struct Echo;

impl Handler for Echo {
    type Command = std::convert::Infallible;

    fn datagram(&mut self, io: &mut Io, socket: usize, from: SocketAddr, _: &[u8]) {
        io.send(socket, from, b"no destination");
    }

    fn datagram_to(
        &mut self,
        io: &mut Io,
        socket: usize,
        from: SocketAddr,
        to: Option<IpAddr>,
        _: &[u8],
    ) {
        let text = to.map_or_else(|| "none".to_string(), |ip| ip.to_string());
        io.send_from(socket, to, from, text.as_bytes());
    }

    fn command(&mut self, _: &mut Io, command: Self::Command) {
        match command {}
    }
}

fn client(addr: &str) -> UdpSocket {
    let socket = UdpSocket::bind(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
}

/// Sends to `server_ip` at `port` from a client bound to `client_ip`; returns the reply's
/// text and source.
fn ask(client_ip: &str, server_ip: &str, port: u16) -> (String, SocketAddr) {
    let socket = client(&format!("{client_ip}:0"));
    let server: IpAddr = server_ip.parse().unwrap();
    socket.send_to(b"hello", (server, port)).unwrap();
    let mut buffer = [0u8; 256];
    let (n, from) = socket.recv_from(&mut buffer).expect("a reply within 5 s");
    (String::from_utf8_lossy(&buffer[..n]).into_owned(), from)
}

fn config(backend: BackendChoice) -> WorkerConfig {
    WorkerConfig {
        backend,
        buffer_size: 2048,
        buffers: 16,
        ..WorkerConfig::sip("destination-test")
    }
}

#[test]
fn a_wildcard_socket_answers_from_the_address_each_datagram_was_sent_to() {
    for backend in [BackendChoice::IoUring, BackendChoice::Epoll] {
        let socket = fastpath::udp::bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let worker = Worker::spawn(config(backend), vec![socket], Echo).unwrap();
        let port = worker.local_addrs()[0].port();
        for server in ["127.0.0.2", "127.0.0.1"] {
            let (text, from) = ask("127.0.0.1", server, port);
            assert_eq!(text, server, "{backend:?}");
            assert_eq!(from, SocketAddr::new(server.parse().unwrap(), port));
        }
    }
}

#[test]
fn a_dual_stack_socket_serves_ipv4_and_ipv6() {
    for backend in [BackendChoice::IoUring, BackendChoice::Epoll] {
        let socket = fastpath::udp::bind("[::]:0".parse().unwrap()).unwrap();
        let worker = Worker::spawn(config(backend), vec![socket], Echo).unwrap();
        let port = worker.local_addrs()[0].port();
        // IPv4 on the dual-stack socket is plain IPv4 for the handler, both ways.
        let (text, from) = ask("127.0.0.1", "127.0.0.2", port);
        assert_eq!(text, "127.0.0.2", "{backend:?}");
        assert_eq!(from, SocketAddr::new("127.0.0.2".parse().unwrap(), port));
        let (text, from) = ask("[::1]", "::1", port);
        assert_eq!(text, "::1", "{backend:?}");
        assert_eq!(from, SocketAddr::new("::1".parse().unwrap(), port));
    }
}

#[test]
fn one_datagram_at_a_time_reports_and_chooses_addresses_too() {
    let server = fastpath::udp::bind("0.0.0.0:0".parse().unwrap()).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let phone = client("127.0.0.1:0");
    phone.send_to(b"hello", ("127.0.0.2", port)).unwrap();
    let mut buffer = [0u8; 64];
    let (n, from, to) = fastpath::udp::recv_from_to(&server, &mut buffer).unwrap();
    assert_eq!(&buffer[..n], b"hello");
    assert_eq!(from, phone.local_addr().unwrap());
    assert_eq!(to, Some("127.0.0.2".parse().unwrap()));
    fastpath::udp::send_from_to(&server, to, from, b"reply").unwrap();
    let (n, source) = phone.recv_from(&mut buffer).unwrap();
    assert_eq!(&buffer[..n], b"reply");
    assert_eq!(source, SocketAddr::new("127.0.0.2".parse().unwrap(), port));

    let dual = fastpath::udp::bind("[::]:0".parse().unwrap()).unwrap();
    dual.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = dual.local_addr().unwrap().port();
    phone.send_to(b"hello", ("127.0.0.2", port)).unwrap();
    let (_, from, to) = fastpath::udp::recv_from_to(&dual, &mut buffer).unwrap();
    assert_eq!(from, phone.local_addr().unwrap(), "IPv4, not v4-mapped");
    assert_eq!(to, Some("127.0.0.2".parse().unwrap()));
    fastpath::udp::send_from_to(&dual, to, from, b"reply").unwrap();
    let (_, source) = phone.recv_from(&mut buffer).unwrap();
    assert_eq!(source, SocketAddr::new("127.0.0.2".parse().unwrap(), port));

    let specific = UdpSocket::bind("127.0.0.1:0").unwrap();
    specific
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    phone
        .send_to(b"hello", specific.local_addr().unwrap())
        .unwrap();
    let (_, _, to) = fastpath::udp::recv_from_to(&specific, &mut buffer).unwrap();
    assert_eq!(to, None, "a socket bound to one address reports nothing");
}

#[test]
fn shared_sockets_take_one_port_and_every_datagram_reaches_one_of_them() {
    let sockets = fastpath::udp::bind_shared("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let port = sockets[0].local_addr().unwrap().port();
    assert_eq!(sockets[1].local_addr().unwrap().port(), port);
    for socket in &sockets {
        socket.set_nonblocking(true).unwrap();
    }
    // The kernel picks a socket per source address and port: several phones, each
    // datagram arriving once, at one of the two.
    let phones: Vec<UdpSocket> = (0..16).map(|_| client("127.0.0.1:0")).collect();
    for phone in &phones {
        phone.send_to(b"hello", ("127.0.0.1", port)).unwrap();
    }
    let mut received = [0usize; 2];
    let mut buffer = [0u8; 64];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while received.iter().sum::<usize>() < phones.len() && std::time::Instant::now() < deadline {
        for (at, socket) in sockets.iter().enumerate() {
            if let Ok((n, _)) = socket.recv_from(&mut buffer) {
                assert_eq!(&buffer[..n], b"hello");
                received[at] += 1;
            }
        }
    }
    assert_eq!(received.iter().sum::<usize>(), phones.len(), "{received:?}");
    let other = fastpath::udp::bind(SocketAddr::new("127.0.0.1".parse().unwrap(), port));
    assert!(other.is_err(), "a socket without SO_REUSEPORT cannot join");
}
