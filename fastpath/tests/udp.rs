//! The UDP workers on both backends: echo, relay between sockets, sends from other threads,
//! oversized datagrams, backend choice and shutdown.

use fastpath::udp::{BackendChoice, BackendKind, Io, Worker, WorkerConfig, WorkerStats};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const BACKENDS: [BackendChoice; 2] = [BackendChoice::IoUring, BackendChoice::Epoll];

fn config(backend: BackendChoice) -> WorkerConfig {
    WorkerConfig {
        name: "test-worker".into(),
        backend,
        core: Some(0),
        buffer_size: 2048,
        buffers: 256,
        tick: None,
    }
}

fn bound() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

fn client() -> UdpSocket {
    let socket = bound();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
}

fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buffer = [0u8; 4096];
    let (n, from) = socket
        .recv_from(&mut buffer)
        .expect("a datagram within 5 s");
    (buffer[..n].to_vec(), from)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn each_backend_echoes_every_datagram_on_every_socket() {
    for backend in BACKENDS {
        let worker = Worker::spawn(
            config(backend),
            vec![bound(), bound()],
            |out: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]| {
                let mut reply = vec![b'0' + socket as u8];
                reply.extend_from_slice(bytes);
                out.send(socket, from, &reply);
            },
        )
        .unwrap();
        let expected = match backend {
            BackendChoice::Epoll => BackendKind::Epoll,
            _ => BackendKind::IoUring,
        };
        assert_eq!(worker.backend(), expected);
        let client = client();
        for (socket, &addr) in worker.local_addrs().iter().enumerate() {
            for i in 0..300u32 {
                client.send_to(&i.to_be_bytes(), addr).unwrap();
                let (reply, from) = receive(&client);
                assert_eq!(from, addr, "answered from the socket it came to");
                assert_eq!(reply[0], b'0' + socket as u8);
                assert_eq!(&reply[1..], i.to_be_bytes());
            }
        }
        let stats = worker.stats();
        assert_eq!(WorkerStats::get(&stats.received), 600, "{backend:?}");
        wait_for("all sent", || WorkerStats::get(&stats.sent) == 600);
    }
}

#[test]
fn a_relay_forwards_from_one_socket_out_of_another_in_bursts() {
    for backend in BACKENDS {
        let far_end = client();
        let target = far_end.local_addr().unwrap();
        let worker = Worker::spawn(
            config(backend),
            vec![bound(), bound()],
            move |out: &mut Io, socket: usize, _from: SocketAddr, bytes: &[u8]| {
                if socket == 0 {
                    out.send(1, target, bytes);
                }
            },
        )
        .unwrap();
        let (entry, exit) = (worker.local_addrs()[0], worker.local_addrs()[1]);
        let sender = client();
        let mut seen = vec![false; 2000];
        for burst in 0..20u16 {
            for i in 0..100u16 {
                sender
                    .send_to(&(burst * 100 + i).to_be_bytes(), entry)
                    .unwrap();
            }
            for _ in 0..100 {
                let (bytes, from) = receive(&far_end);
                assert_eq!(from, exit);
                seen[usize::from(u16::from_be_bytes([bytes[0], bytes[1]]))] = true;
            }
        }
        assert!(
            seen.iter().all(|&s| s),
            "{backend:?}: every packet relayed once"
        );
    }
}

#[test]
fn other_threads_send_through_the_worker() {
    for backend in BACKENDS {
        let worker = Worker::spawn(
            config(backend),
            vec![bound()],
            |_: &mut Io, _: usize, _: SocketAddr, _: &[u8]| {},
        )
        .unwrap();
        let far_end = client();
        let to = far_end.local_addr().unwrap();
        let handle = worker.sender();
        let thread = std::thread::spawn(move || {
            for i in 0..200u32 {
                assert!(handle.send(0, to, i.to_be_bytes().to_vec()));
            }
        });
        thread.join().unwrap();
        let mut got: Vec<u32> = (0..200)
            .map(|_| {
                let (bytes, from) = receive(&far_end);
                assert_eq!(from, worker.local_addrs()[0]);
                u32::from_be_bytes(bytes[..4].try_into().unwrap())
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..200).collect::<Vec<_>>(), "{backend:?}");
    }
}

#[test]
fn oversized_datagrams_are_dropped_and_counted() {
    for backend in BACKENDS {
        let mut small = config(backend);
        small.buffer_size = 512;
        let worker = Worker::spawn(
            small,
            vec![bound()],
            |out: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]| {
                out.send(socket, from, bytes)
            },
        )
        .unwrap();
        let client = client();
        let addr = worker.local_addrs()[0];
        client.send_to(&[7u8; 2000], addr).unwrap();
        client.send_to(b"small", addr).unwrap();
        assert_eq!(receive(&client).0, b"small");
        assert_eq!(
            WorkerStats::get(&worker.stats().truncated),
            1,
            "{backend:?}"
        );
    }
}

#[test]
fn auto_takes_io_uring_here_and_workers_stop_when_dropped() {
    let worker = Worker::spawn(
        config(BackendChoice::Auto),
        vec![bound()],
        |_: &mut Io, _: usize, _: SocketAddr, _: &[u8]| {},
    )
    .unwrap();
    assert_eq!(worker.backend(), BackendKind::IoUring);
    assert_eq!(worker.fallback_reason(), None);
    // Returns once the worker thread has ended (it is joined).
    drop(worker);
}

#[test]
fn a_flood_on_one_socket_does_not_starve_another() {
    for backend in BACKENDS {
        let (flooded, quiet) = (bound(), bound());
        fastpath::udp::enlarge_buffers(&flooded, 1 << 20).unwrap();
        let sender = bound();
        for i in 0..FLOOD {
            sender
                .send_to(&i.to_be_bytes(), flooded.local_addr().unwrap())
                .unwrap();
        }
        sender
            .send_to(b"quiet", quiet.local_addr().unwrap())
            .unwrap();
        // Both are waiting before the worker takes the sockets.
        for socket in [&flooded, &quiet] {
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            socket.peek_from(&mut [0u8; 8]).unwrap();
        }
        let (tx, order) = crossbeam_channel::unbounded();
        let _worker = Worker::spawn(
            config(backend),
            vec![flooded, quiet],
            move |_: &mut Io, socket: usize, _: SocketAddr, _: &[u8]| {
                let _ = tx.send(socket);
            },
        )
        .unwrap();
        let before_quiet = (0..=FLOOD)
            .position(|_| {
                order
                    .recv_timeout(Duration::from_secs(5))
                    .expect("a datagram within 5 s")
                    == 1
            })
            .unwrap();
        assert!(
            before_quiet <= 64,
            "{backend:?}: the quiet socket's datagram came after {before_quiet} of the flood's"
        );
    }
}

/// Datagrams waiting on the flooded socket.
const FLOOD: u16 = 300;

/// Reports each tick (its number and `now`); built on the worker thread (an `Rc` cannot
/// cross threads).
struct Ticker {
    ticks: std::rc::Rc<std::cell::Cell<u32>>,
    reports: crossbeam_channel::Sender<(u32, Instant)>,
}

impl fastpath::udp::Handler for Ticker {
    type Command = std::convert::Infallible;

    fn datagram(&mut self, _: &mut Io, _: usize, _: SocketAddr, _: &[u8]) {}

    fn command(&mut self, _: &mut Io, command: std::convert::Infallible) {
        match command {}
    }

    fn tick(&mut self, _: &mut Io, now: Instant) {
        self.ticks.set(self.ticks.get() + 1);
        let _ = self.reports.send((self.ticks.get(), now));
    }
}

#[test]
fn handlers_built_on_the_worker_thread_tick_every_period_never_early() {
    let period = Duration::from_millis(20);
    for backend in BACKENDS {
        let mut ticking = config(backend);
        ticking.tick = Some(period);
        let (reports, ticks) = crossbeam_channel::unbounded();
        let before = Instant::now();
        let _worker = Worker::spawn_with(ticking, vec![bound()], move || Ticker {
            ticks: std::rc::Rc::new(std::cell::Cell::new(0)),
            reports,
        })
        .unwrap();
        // However late a loaded machine runs them, tick n is never due before n periods.
        for n in 1..=10 {
            let (number, now) = ticks
                .recv_timeout(Duration::from_secs(5))
                .expect("a tick within 5 s");
            assert_eq!(number, n, "{backend:?}");
            assert!(
                now >= before + period * n,
                "{backend:?}: tick {n} came {:?} after the start",
                now - before
            );
        }
    }
}

/// Sends a tagged datagram when each scheduled time comes: its own timers, through
/// [`fastpath::udp::Handler::deadline`].
struct Alarms {
    pending: Vec<(Instant, u8, SocketAddr)>,
}

/// Schedules a datagram carrying the tag to the address at the time.
struct Alarm(Instant, u8, SocketAddr);

impl fastpath::udp::Handler for Alarms {
    type Command = Alarm;

    fn datagram(&mut self, _: &mut Io, _: usize, _: SocketAddr, _: &[u8]) {}

    fn command(&mut self, _: &mut Io, Alarm(at, tag, to): Alarm) {
        self.pending.push((at, tag, to));
    }

    fn deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|&(at, ..)| at).min()
    }

    fn timeout(&mut self, io: &mut Io, now: Instant) {
        for &(_, tag, to) in self.pending.iter().filter(|&&(at, ..)| at <= now) {
            io.send(0, to, &[tag]);
        }
        self.pending.retain(|&(at, ..)| at > now);
    }
}

/// A deadline set while the worker already waits for a later one wakes it in time; each
/// comes in order and never early.
#[test]
fn handlers_deadlines_wake_the_worker_in_order_never_early() {
    for backend in BACKENDS {
        let worker =
            Worker::spawn(config(backend), vec![bound()], Alarms { pending: vec![] }).unwrap();
        let client = client();
        let to = client.local_addr().unwrap();
        let start = Instant::now();
        let (late, soon) = (
            start + Duration::from_millis(300),
            start + Duration::from_millis(30),
        );
        assert!(worker.sender().command(Alarm(late, 1, to)));
        assert!(worker.sender().command(Alarm(soon, 2, to)));
        assert_eq!(
            receive(&client).0,
            [2],
            "{backend:?}: the earlier deadline first"
        );
        assert!(Instant::now() >= soon, "{backend:?}: not early");
        assert_eq!(receive(&client).0, [1], "{backend:?}");
        assert!(Instant::now() >= late, "{backend:?}: not early");
        // A deadline already past is served at once, without waiting for I/O.
        assert!(worker.sender().command(Alarm(start, 3, to)));
        assert_eq!(receive(&client).0, [3], "{backend:?}");
    }
}

/// Always has work left (its deadline is always past, as a handler's whose queues are not
/// empty), and echoes what arrives.
struct AlwaysBusy {
    since: Instant,
}

impl fastpath::udp::Handler for AlwaysBusy {
    type Command = std::convert::Infallible;

    fn datagram(&mut self, io: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]) {
        io.send(socket, from, bytes);
    }

    fn command(&mut self, _: &mut Io, command: Self::Command) {
        match command {}
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.since)
    }
}

/// A handler that never lets the worker wait still gets what arrives: the turns that do
/// not wait take in datagrams too (with io_uring's deferred task running, only an enter
/// that asks for events does).
#[test]
fn datagrams_are_taken_in_while_the_handler_has_work_left() {
    for backend in BACKENDS {
        let worker = Worker::spawn(
            config(backend),
            vec![bound()],
            AlwaysBusy {
                since: Instant::now(),
            },
        )
        .unwrap();
        let client = client();
        for i in 0..50u32 {
            client
                .send_to(&i.to_be_bytes(), worker.local_addrs()[0])
                .unwrap();
            assert_eq!(receive(&client).0, i.to_be_bytes(), "{backend:?}");
        }
    }
}

/// Copies what it reads from one file to another, in blocks; reports end of file.
struct Pump {
    files: Option<(usize, usize)>,
    eof: Option<crossbeam_channel::Sender<()>>,
}

enum PumpCommand {
    Serve {
        from: std::os::fd::OwnedFd,
        to: std::os::fd::OwnedFd,
        eof: crossbeam_channel::Sender<()>,
    },
}

impl fastpath::udp::Handler for Pump {
    type Command = PumpCommand;

    fn datagram(&mut self, _: &mut Io, _: usize, _: SocketAddr, _: &[u8]) {}

    fn command(&mut self, io: &mut Io, command: PumpCommand) {
        let PumpCommand::Serve { from, to, eof } = command;
        let reader = io.add_file(from, 160).unwrap();
        let writer = io.add_file(to, 160).unwrap();
        self.files = Some((reader, writer));
        self.eof = Some(eof);
    }

    fn file_read(&mut self, io: &mut Io, file: usize, data: Result<&[u8], i32>) {
        let Some((reader, writer)) = self.files else {
            return;
        };
        match data {
            Ok([]) if file == reader => {
                if let Some(eof) = self.eof.take() {
                    let _ = eof.send(());
                }
                io.remove_file(reader);
            }
            Ok(bytes) if file == reader => io.write_file(writer, bytes),
            _ => {}
        }
    }
}

#[test]
fn files_such_as_dahdi_channels_are_read_and_written_in_the_ring() {
    use std::io::{Read, Write};
    for backend in BACKENDS {
        let worker = Worker::spawn(
            config(backend),
            Vec::new(),
            Pump {
                files: None,
                eof: None,
            },
        )
        .unwrap();
        let (line_in_read, line_in_write) = nix::unistd::pipe().unwrap();
        let (line_out_read, line_out_write) = nix::unistd::pipe().unwrap();
        let (eof_tx, eof) = crossbeam_channel::bounded(1);
        worker.sender().command(PumpCommand::Serve {
            from: line_in_read,
            to: line_out_write,
            eof: eof_tx,
        });
        let mut card_side = std::fs::File::from(line_in_write);
        let mut far_side = std::fs::File::from(line_out_read);
        let blocks: Vec<u8> = (0..50 * 160).map(|i| (i % 251) as u8).collect();
        for block in blocks.chunks(160) {
            card_side.write_all(block).unwrap();
        }
        let mut copied = vec![0u8; blocks.len()];
        far_side.read_exact(&mut copied).unwrap();
        assert_eq!(
            copied, blocks,
            "{backend:?}: every 20 ms block crossed the ring in order"
        );
        drop(card_side);
        eof.recv_timeout(Duration::from_secs(5))
            .expect("end of file reported");
    }
}

#[test]
fn socket_buffers_are_enlarged_up_to_what_the_kernel_allows() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let asked = 1 << 20;
    let granted = fastpath::udp::enlarge_buffers(&socket, asked).unwrap();
    assert_eq!(granted, asked.min(rmem_max), "rmem_max {rmem_max}");
}
