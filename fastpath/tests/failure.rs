//! A worker that stops by itself after it started tells its owner why: a socket shut down
//! underneath it (by another holder of the socket), a handler that panics. Sends through
//! it then fail instead of vanishing.

use fastpath::udp::{BackendChoice, FailureCause, Io, Worker, WorkerConfig, WorkerFailure};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const BACKENDS: [BackendChoice; 2] = [BackendChoice::IoUring, BackendChoice::Epoll];

fn config(backend: BackendChoice) -> WorkerConfig {
    WorkerConfig {
        name: "failing-worker".into(),
        backend,
        core: None,
        buffer_size: 2048,
        buffers: 64,
        tick: None,
    }
}

/// The failure `worker` reports through [`Worker::on_failure`] (within 5 s).
fn reported(worker: &Worker<std::convert::Infallible>) -> WorkerFailure {
    let (tx, reports) = crossbeam_channel::bounded(1);
    worker.on_failure(move |failure| {
        let _ = tx.send(failure);
    });
    reports
        .recv_timeout(Duration::from_secs(5))
        .expect("a failure report within 5 s")
}

fn echo(out: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]) {
    out.send(socket, from, bytes);
}

#[test]
fn a_socket_shut_down_by_another_holder_is_reported_with_its_address() {
    for backend in BACKENDS {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = socket.local_addr().unwrap();
        // Another holder of the same socket (a process it was passed to).
        let other_holder = socket.try_clone().unwrap();
        let worker = Worker::spawn(config(backend), vec![socket], echo).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"ping", local).unwrap();
        let mut buffer = [0u8; 16];
        assert_eq!(client.recv(&mut buffer).unwrap(), 4, "{backend:?}: served");
        assert_eq!(worker.failure(), None);
        // Unconnected UDP answers ENOTCONN, and shuts down all the same.
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&other_holder),
            nix::sys::socket::Shutdown::Read,
        );
        let failure = reported(&worker);
        assert_eq!(
            failure,
            WorkerFailure {
                worker: "failing-worker".into(),
                cause: FailureCause::SocketShutDown {
                    socket: 0,
                    local: local.to_string(),
                },
            },
            "{backend:?}"
        );
        assert!(
            failure.to_string().contains("restart the process"),
            "what to do: {failure}"
        );
        assert_eq!(worker.failure(), Some(failure), "{backend:?}");
        assert!(
            !worker.sender().send(0, local, b"x".to_vec()),
            "{backend:?}"
        );
    }
}

#[test]
fn a_panicking_handler_is_reported_to_every_watcher_even_a_late_one() {
    for backend in BACKENDS {
        let worker = Worker::spawn(
            config(backend),
            vec![UdpSocket::bind("127.0.0.1:0").unwrap()],
            |_: &mut Io, _: usize, _: SocketAddr, bytes: &[u8]| {
                assert_ne!(bytes, b"crash", "the handler's bug");
            },
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"crash", worker.local_addrs()[0]).unwrap();
        let failure = reported(&worker);
        assert!(
            matches!(&failure.cause, FailureCause::Panicked(message) if message.contains("the handler's bug")),
            "{backend:?}: {failure}"
        );
        assert_eq!(
            reported(&worker),
            failure,
            "a watcher set after the failure"
        );
    }
}
