//! The kernel's receive time of each datagram (`SO_TIMESTAMPNS`), on both backends: a
//! socket asked for it hands every datagram to the handler with the time it arrived, also
//! on a wildcard socket that reports the destination in the same control data; a socket
//! not asked hands none.

use fastpath::udp::{report_receive_times, BackendChoice, Handler, Io, Worker, WorkerConfig};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime};

/// Answers each datagram with how long before the handler the kernel received it (µs,
/// "none" if not reported) and its destination.
struct Stamp;

impl Handler for Stamp {
    type Command = std::convert::Infallible;

    fn datagram(&mut self, io: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]) {
        self.datagram_to(io, socket, from, None, bytes);
    }

    fn datagram_to(
        &mut self,
        io: &mut Io,
        socket: usize,
        from: SocketAddr,
        to: Option<IpAddr>,
        _: &[u8],
    ) {
        let age = match io.received_at() {
            None => "none".to_string(),
            Some(at) => match SystemTime::now().duration_since(at) {
                Ok(age) => age.as_micros().to_string(),
                Err(_) => "future".to_string(),
            },
        };
        let to = to.map_or_else(|| "-".to_string(), |ip| ip.to_string());
        io.send(socket, from, format!("{age} {to}").as_bytes());
    }

    fn command(&mut self, _: &mut Io, command: Self::Command) {
        match command {}
    }
}

fn config(backend: BackendChoice) -> WorkerConfig {
    WorkerConfig {
        backend,
        buffer_size: 2048,
        buffers: 16,
        ..WorkerConfig::sip("receive-time-test")
    }
}

/// Sends `count` datagrams to `server` and returns the replies' texts.
fn ask(server: SocketAddr, count: usize) -> Vec<String> {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (0..count)
        .map(|_| {
            client.send_to(b"hello", server).unwrap();
            let mut buffer = [0u8; 128];
            let n = client.recv(&mut buffer).expect("a reply within 5 s");
            String::from_utf8_lossy(&buffer[..n]).into_owned()
        })
        .collect()
}

fn serve(socket: UdpSocket, backend: BackendChoice) -> (Worker<std::convert::Infallible>, u16) {
    let port = socket.local_addr().unwrap().port();
    let worker = Worker::spawn(config(backend), vec![socket], Stamp).unwrap();
    (worker, port)
}

#[test]
fn a_socket_asked_for_receive_times_reports_each_datagram_s() {
    for backend in [BackendChoice::IoUring, BackendChoice::Epoll] {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        report_receive_times(&socket).unwrap();
        let (_worker, port) = serve(socket, backend);
        for reply in ask(SocketAddr::from(([127, 0, 0, 1], port)), 5) {
            let (age, to) = reply.split_once(' ').unwrap();
            let age: u64 = age
                .parse()
                .unwrap_or_else(|_| panic!("{backend:?}: no receive time: {reply}"));
            // Received before the handler ran, within the reply's 5 s bound.
            assert!(age < 5_000_000, "{backend:?}: {reply}");
            assert_eq!(
                to, "-",
                "{backend:?}: a bound socket reports no destination"
            );
        }
    }
}

#[test]
fn a_wildcard_socket_reports_destination_and_receive_time_together() {
    for backend in [BackendChoice::IoUring, BackendChoice::Epoll] {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        report_receive_times(&socket).unwrap();
        let (_worker, port) = serve(socket, backend);
        for reply in ask(SocketAddr::from(([127, 0, 0, 1], port)), 3) {
            let (age, to) = reply.split_once(' ').unwrap();
            assert!(age.parse::<u64>().is_ok(), "{backend:?}: {reply}");
            assert_eq!(to, "127.0.0.1", "{backend:?}: {reply}");
        }
    }
}

#[test]
fn a_socket_not_asked_reports_no_receive_time() {
    for backend in [BackendChoice::IoUring, BackendChoice::Epoll] {
        let (_worker, port) = serve(UdpSocket::bind("127.0.0.1:0").unwrap(), backend);
        assert_eq!(
            ask(SocketAddr::from(([127, 0, 0, 1], port)), 2),
            vec!["none -", "none -"],
            "{backend:?}"
        );
    }
}
