//! UDP workers: one thread owning a set of sockets, receiving datagrams in batches and
//! handing each to a handler on the same thread (which may queue sends without a thread
//! hop), and sending what other threads queue through a [`SendHandle`]. Two backends with
//! the same interface: io_uring (multishot recvmsg into a ring-mapped provided-buffer pool,
//! batched submissions, single issuer with deferred task running) and, where io_uring is
//! unavailable, epoll with recvmmsg/sendmmsg.
//!
//! A socket bound to the unspecified address (`0.0.0.0`, `[::]`) reports each datagram's
//! destination to [`Handler::datagram_to`] (`IP_PKTINFO`, `IPV6_RECVPKTINFO`), and a send
//! may name its source address ([`Io::send_from`]), so that a reply leaves from the address
//! the request arrived on. On a dual-stack IPv6 socket, IPv4 addresses are plain IPv4 for
//! handlers both ways (the worker maps them).

mod cmsg;
mod epoll;
mod failure;
mod single;
mod sockaddr;
mod steer;
mod uring;

pub use failure::{FailureCause, WorkerFailure};
pub use single::{bind, bind_shared, recv_from_to, send_from_to};
pub use steer::{steer_by_call_id, SteerError};

use cmsg::Arrival;
use crossbeam_channel::{Receiver, Sender};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Rounds of taking in datagrams per loop turn, at most, before the handler's due work and
/// the sends run (each round takes what one receive batch holds: the io_uring buffer pool,
/// or an epoll recvmmsg per ready socket).
const INTAKE_ROUNDS: usize = 16;

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring when the kernel allows it, else epoll.
    #[default]
    Auto,
    /// io_uring or fail.
    IoUring,
    /// epoll with recvmmsg/sendmmsg.
    Epoll,
}

/// The backend a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring.
    IoUring,
    /// epoll + recvmmsg/sendmmsg.
    Epoll,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::IoUring => "io_uring",
            BackendKind::Epoll => "epoll",
        })
    }
}

/// How a worker is set up.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Thread name.
    pub name: String,
    /// Backend.
    pub backend: BackendChoice,
    /// Pin the thread to this CPU.
    pub core: Option<usize>,
    /// Receive buffer size: larger datagrams are dropped and counted as truncated.
    pub buffer_size: usize,
    /// Receive buffers in the pool (a power of two).
    pub buffers: u16,
    /// Call [`Handler::tick`] this often (e.g. 20 ms for line audio); None: never.
    pub tick: Option<std::time::Duration>,
}

impl WorkerConfig {
    /// A worker for SIP: 64 KiB datagrams.
    pub fn sip(name: &str) -> WorkerConfig {
        WorkerConfig {
            name: name.into(),
            backend: BackendChoice::Auto,
            core: None,
            buffer_size: 65_536 + 256,
            buffers: 64,
            tick: None,
        }
    }
}

/// Counters of one worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Datagrams too large for a buffer (dropped).
    pub truncated: AtomicU64,
    /// Sends that failed or found no free send slot (dropped).
    pub send_dropped: AtomicU64,
}

impl WorkerStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A queued send: socket, source address (None: the kernel's choice), destination, bytes
/// (a range of [`Io::data`]).
type QueuedSend = (usize, Option<IpAddr>, SocketAddr, std::ops::Range<usize>);

/// Whether `socket` is an IPv6 socket.
fn is_v6(socket: &UdpSocket) -> bool {
    socket.local_addr().is_ok_and(|addr| addr.is_ipv6())
}

/// Makes `socket` report when the kernel received each datagram ([`Io::received_at`]).
pub fn report_receive_times(socket: &UdpSocket) -> std::io::Result<()> {
    cmsg::report_receive_times(socket)
}

/// Makes a socket bound to the unspecified address report each datagram's destination.
fn watch_destinations(socket: &UdpSocket) -> std::io::Result<()> {
    let ip = socket.local_addr()?.ip();
    if ip.is_unspecified() {
        cmsg::report_destinations(socket, ip)?;
    }
    Ok(())
}

/// What a handler may do on its worker's thread: queue sends (sent after the batch), and add
/// or remove sockets (served from the next loop turn on).
#[derive(Debug, Default)]
pub struct Io {
    /// When the kernel received the datagram being handled (sockets asked to report it).
    received_at: Option<std::time::SystemTime>,
    sends: Vec<QueuedSend>,
    data: Vec<u8>,
    sockets: Vec<Option<UdpSocket>>,
    /// Whether each socket is IPv6 (its IPv4 addresses are v4-mapped), by number.
    v6: Vec<bool>,
    /// Slots that may not be reused yet (open, or closing in the kernel).
    reserved: Vec<bool>,
    added: Vec<usize>,
    removed: Vec<(usize, UdpSocket)>,
    /// Other file descriptors served (e.g. DAHDI channels), with their read block sizes.
    files: Vec<Option<(OwnedFd, usize)>>,
    files_added: Vec<usize>,
    files_removed: Vec<(usize, OwnedFd)>,
    file_writes: Vec<(usize, std::ops::Range<usize>)>,
}

impl Io {
    fn with_sockets(sockets: Vec<UdpSocket>) -> Io {
        Io {
            reserved: vec![true; sockets.len()],
            added: (0..sockets.len()).collect(),
            v6: sockets.iter().map(is_v6).collect(),
            sockets: sockets.into_iter().map(Some).collect(),
            ..Io::default()
        }
    }

    /// When the kernel received the datagram the handler is handling, on a socket made to
    /// report it ([`report_receive_times`]): the start of the time a datagram spends in this
    /// process, socket queue included.
    pub fn received_at(&self) -> Option<std::time::SystemTime> {
        self.received_at
    }

    /// Queues `bytes` to `to` from socket `socket`.
    pub fn send(&mut self, socket: usize, to: SocketAddr, bytes: &[u8]) {
        self.send_from(socket, None, to, bytes);
    }

    /// Queues `bytes` to `to` from socket `socket` with source address `from` (one of the
    /// host's addresses, for a socket bound to the unspecified address); None: the kernel
    /// chooses.
    pub fn send_from(&mut self, socket: usize, from: Option<IpAddr>, to: SocketAddr, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.sends.push((socket, from, to, start..self.data.len()));
    }

    /// Serves one more socket; returns its number. Bound to the unspecified address, it
    /// reports each datagram's destination.
    pub fn add_socket(&mut self, socket: UdpSocket) -> std::io::Result<usize> {
        socket.set_nonblocking(true)?;
        watch_destinations(&socket)?;
        let index = match self.reserved.iter().position(|&r| !r) {
            Some(free) => free,
            None => {
                self.sockets.push(None);
                self.reserved.push(false);
                self.v6.push(false);
                self.sockets.len() - 1
            }
        };
        self.v6[index] = is_v6(&socket);
        self.sockets[index] = Some(socket);
        self.reserved[index] = true;
        self.added.push(index);
        Ok(index)
    }

    /// Stops serving a socket and closes it.
    pub fn remove_socket(&mut self, socket: usize) {
        if let Some(taken) = self.sockets.get_mut(socket).and_then(Option::take) {
            self.added.retain(|&a| a != socket);
            self.removed.push((socket, taken));
        }
    }

    /// A socket's local address.
    pub fn local_addr(&self, socket: usize) -> Option<SocketAddr> {
        self.sockets.get(socket)?.as_ref()?.local_addr().ok()
    }

    /// The descriptor of an open socket.
    fn fd(&self, socket: usize) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.sockets.get(socket)?.as_ref()?.as_raw_fd())
    }

    /// Serves a file descriptor (a DAHDI channel, a pipe): a read of up to `block` bytes is
    /// kept in flight and each result handed to [`Handler::file_read`]. Returns its number.
    pub fn add_file(&mut self, fd: OwnedFd, block: usize) -> std::io::Result<usize> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // Numbers are never reused: a removed file's cancelled read may still complete
        // under its number (files are few: a card's channels).
        self.files.push(Some((fd, block.max(1))));
        let index = self.files.len() - 1;
        self.files_added.push(index);
        Ok(index)
    }

    /// Queues `bytes` to be written to file `file`.
    pub fn write_file(&mut self, file: usize, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.file_writes.push((file, start..self.data.len()));
    }

    /// Stops serving a file descriptor and closes it.
    pub fn remove_file(&mut self, file: usize) {
        if let Some((fd, _)) = self.files.get_mut(file).and_then(Option::take) {
            self.files_added.retain(|&a| a != file);
            self.files_removed.push((file, fd));
        }
    }

    /// A served file's descriptor and read block size.
    fn file(&self, file: usize) -> Option<(std::os::fd::RawFd, usize)> {
        use std::os::fd::AsRawFd;
        let (fd, block) = self.files.get(file)?.as_ref()?;
        Some((fd.as_raw_fd(), *block))
    }

    /// Hands each queued file write to `each` with the file's descriptor.
    fn drain_file_writes(
        &mut self,
        mut each: impl FnMut(usize, Option<std::os::fd::BorrowedFd<'_>>, &[u8]),
    ) {
        use std::os::fd::AsFd;
        for (file, range) in std::mem::take(&mut self.file_writes) {
            let fd = self
                .files
                .get(file)
                .and_then(Option::as_ref)
                .map(|(fd, _)| fd.as_fd());
            each(file, fd, &self.data[range]);
        }
    }

    /// The kernel is done with a removed socket's slot: it may be reused.
    fn release(&mut self, socket: usize) {
        if let Some(reserved) = self.reserved.get_mut(socket) {
            *reserved = self.sockets[socket].is_some();
        }
    }

    /// Hands each queued send to `each` with its socket's descriptor (None: no such socket),
    /// its source address (None: the kernel's choice), destination and bytes.
    fn drain_sends(
        &mut self,
        mut each: impl FnMut(Option<std::os::fd::RawFd>, Option<IpAddr>, SocketAddr, &[u8]),
    ) {
        use std::os::fd::AsRawFd;
        for (socket, from, to, range) in self.sends.drain(..) {
            let fd = self
                .sockets
                .get(socket)
                .and_then(Option::as_ref)
                .map(|s| s.as_raw_fd());
            let v6 = self.v6.get(socket).copied().unwrap_or(false);
            let to = SocketAddr::new(sockaddr::in_family(v6, to.ip()), to.port());
            let from = from.map(|ip| sockaddr::in_family(v6, ip));
            each(fd, from, to, &self.data[range]);
        }
    }

    fn has_sends(&self) -> bool {
        !self.sends.is_empty() || !self.file_writes.is_empty()
    }

    /// Forgets the queued bytes once sends and file writes are all handed over.
    fn clear_data(&mut self) {
        if self.sends.is_empty() && self.file_writes.is_empty() {
            self.data.clear();
        }
    }
}

/// What a worker does with each datagram and each command, on its own thread.
pub trait Handler: 'static {
    /// Commands other threads send it (through [`SendHandle::command`]).
    type Command: Send + 'static;
    /// `bytes` arrived on socket `socket` from `from`.
    fn datagram(&mut self, io: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]);
    /// `bytes` arrived on socket `socket` from `from`, sent to `to`: the local address,
    /// reported for sockets bound to the unspecified address (None for the others, whose
    /// local address is their own). Workers call this; by default it calls
    /// [`Handler::datagram`].
    fn datagram_to(
        &mut self,
        io: &mut Io,
        socket: usize,
        from: SocketAddr,
        to: Option<IpAddr>,
        bytes: &[u8],
    ) {
        let _ = to;
        self.datagram(io, socket, from, bytes);
    }
    /// A command from another thread.
    fn command(&mut self, io: &mut Io, command: Self::Command);
    /// A read on a file added with [`Io::add_file`] completed: data (empty at end of file)
    /// or an errno.
    fn file_read(&mut self, io: &mut Io, file: usize, data: Result<&[u8], i32>) {
        let _ = (io, file, data);
    }
    /// The worker's periodic tick ([`WorkerConfig::tick`]).
    fn tick(&mut self, io: &mut Io, now: std::time::Instant) {
        let _ = (io, now);
    }
    /// When the handler wants [`Handler::timeout`] called (its own timers, or work it left
    /// for later: a time already past makes the worker poll instead of wait). Asked once
    /// per loop turn, after the turn's datagrams and commands.
    fn deadline(&self) -> Option<std::time::Instant> {
        None
    }
    /// [`Handler::deadline`] has come.
    fn timeout(&mut self, io: &mut Io, now: std::time::Instant) {
        let _ = (io, now);
    }
}

impl<F> Handler for F
where
    F: FnMut(&mut Io, usize, SocketAddr, &[u8]) + Send + 'static,
{
    type Command = std::convert::Infallible;

    fn datagram(&mut self, io: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]) {
        self(io, socket, from, bytes)
    }

    fn command(&mut self, _io: &mut Io, command: Self::Command) {
        match command {}
    }
}

/// What other threads hand a worker.
#[derive(Debug)]
enum Message<C> {
    /// A datagram to send.
    Send {
        socket: usize,
        from: Option<IpAddr>,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A command for the handler.
    Command(C),
}

/// Wakes a worker (an eventfd), once per batch: a post while a wake-up is pending (the
/// worker has not yet taken the queue) writes nothing, so a burst of sends costs one system
/// call and one wake-up, not one per datagram.
#[derive(Debug)]
struct Waker {
    fd: OwnedFd,
    /// A wake-up was written and the worker has not taken the queue since.
    pending: AtomicBool,
}

impl Waker {
    fn new() -> std::io::Result<Waker> {
        let fd = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_NONBLOCK | nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
        )?;
        Ok(Waker {
            fd: fd.into(),
            pending: AtomicBool::new(false),
        })
    }

    /// Called after queueing: writes the eventfd unless a wake-up is already pending.
    fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            self.wake_now();
        }
    }

    /// Writes the eventfd whatever is pending (to stop the worker).
    fn wake_now(&self) {
        let _ = nix::unistd::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Resets the counter after a wake-up; the worker takes the queue right after, so a
    /// post from now on wakes it again and one before is taken.
    fn reset(&self) {
        let mut value = [0u8; 8];
        let _ = nix::unistd::read(&self.fd, &mut value);
        self.pending.store(false, Ordering::SeqCst);
    }
}

/// Sends datagrams through a worker's sockets, and commands to its handler, from any thread.
#[derive(Debug)]
pub struct SendHandle<C> {
    queue: Sender<Message<C>>,
    waker: Arc<Waker>,
}

impl<C> Clone for SendHandle<C> {
    fn clone(&self) -> Self {
        SendHandle {
            queue: self.queue.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl<C> SendHandle<C> {
    fn post(&self, message: Message<C>) -> bool {
        let queued = self.queue.send(message).is_ok();
        self.waker.wake();
        queued
    }

    /// Queues `bytes` to `to` from socket number `socket`; false when the worker stopped.
    pub fn send(&self, socket: usize, to: SocketAddr, bytes: Vec<u8>) -> bool {
        self.send_from(socket, None, to, bytes)
    }

    /// Like [`SendHandle::send`], from source address `from` (see [`Io::send_from`]).
    pub fn send_from(
        &self,
        socket: usize,
        from: Option<IpAddr>,
        to: SocketAddr,
        bytes: Vec<u8>,
    ) -> bool {
        let queued = self.queue_from(socket, from, to, bytes);
        self.waker.wake();
        queued
    }

    /// Like [`SendHandle::send_from`] without waking the worker: a batch of these is
    /// started by one [`SendHandle::flush`].
    pub fn queue_from(
        &self,
        socket: usize,
        from: Option<IpAddr>,
        to: SocketAddr,
        bytes: Vec<u8>,
    ) -> bool {
        self.queue
            .send(Message::Send {
                socket,
                from,
                to,
                bytes,
            })
            .is_ok()
    }

    /// Wakes the worker for what [`SendHandle::queue_from`] queued.
    pub fn flush(&self) {
        self.waker.wake();
    }

    /// Hands `command` to the worker's handler; false when the worker stopped.
    pub fn command(&self, command: C) -> bool {
        self.post(Message::Command(command))
    }
}

/// A worker's queue of sends and commands, made before the worker so that what feeds it
/// can be set up first (a thread whose answers go to the worker's handler).
pub struct Mailbox<C> {
    handle: SendHandle<C>,
    queue: Receiver<Message<C>>,
}

impl<C> Mailbox<C> {
    /// An empty mailbox.
    pub fn new() -> std::io::Result<Mailbox<C>> {
        let (queue_tx, queue) = crossbeam_channel::unbounded();
        Ok(Mailbox {
            handle: SendHandle {
                queue: queue_tx,
                waker: Arc::new(Waker::new()?),
            },
            queue,
        })
    }

    /// A handle that reaches the worker once it runs (what it queues before waits).
    pub fn sender(&self) -> SendHandle<C> {
        self.handle.clone()
    }
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum FastpathError {
    /// io_uring was required and is not available.
    #[error("io_uring is not available ({0}): the kernel may be older than 6.0, io_uring may be disabled (kernel.io_uring_disabled) or blocked by a seccomp profile; choose the epoll backend")]
    IoUringUnavailable(String),
    /// A system call failed while setting up.
    #[error("fast path set-up failed: {0}")]
    Setup(#[from] std::io::Error),
    /// The worker thread died while starting.
    #[error("the fast path worker stopped while starting")]
    Thread,
}

/// What the worker thread shares with its owner.
struct Shared {
    stop: AtomicBool,
    stats: WorkerStats,
    failure: failure::FailureSlot,
}

/// Everything a backend loop needs.
struct LoopContext<H: Handler> {
    io: Io,
    handler: H,
    queue: Receiver<Message<H::Command>>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    config: WorkerConfig,
    /// When the handler's next tick is due.
    next_tick: Option<std::time::Instant>,
}

impl<H: Handler> LoopContext<H> {
    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Takes what other threads queued: sends into the outbox, commands to the handler.
    fn take_queued(&mut self) {
        self.waker.reset();
        while let Ok(message) = self.queue.try_recv() {
            match message {
                Message::Send {
                    socket,
                    from,
                    to,
                    bytes,
                } => self.io.send_from(socket, from, to, &bytes),
                Message::Command(command) => self.handler.command(&mut self.io, command),
            }
        }
    }

    /// Runs the handler's tick if it is due (never racing to catch up after a stall), then
    /// its timeout if its deadline has come.
    fn run_due(&mut self) {
        let now = std::time::Instant::now();
        if let (Some(at), Some(period)) = (self.next_tick, self.config.tick) {
            if now >= at {
                self.handler.tick(&mut self.io, now);
                let next = at + period;
                self.next_tick = Some(if next <= now { now + period } else { next });
            }
        }
        if self.handler.deadline().is_some_and(|at| at <= now) {
            self.handler.timeout(&mut self.io, now);
        }
    }

    /// How long the worker may wait for I/O: until the next tick or the handler's deadline,
    /// whichever comes first (None: until something arrives).
    fn until_wake(&self) -> Option<std::time::Duration> {
        let at = match (self.next_tick, self.handler.deadline()) {
            (Some(tick), Some(deadline)) => Some(tick.min(deadline)),
            (tick, deadline) => tick.or(deadline),
        };
        at.map(|at| at.saturating_duration_since(std::time::Instant::now()))
    }

    /// Hands one file read's result to the handler.
    fn deliver_file(&mut self, file: usize, data: Result<&[u8], i32>) {
        self.handler.file_read(&mut self.io, file, data);
    }

    /// Socket `socket` can no longer be read: shut down (`errno` None) or failed.
    fn socket_failure(&self, socket: usize, errno: Option<nix::errno::Errno>) -> FailureCause {
        let local = self
            .io
            .local_addr(socket)
            .map_or_else(|| "unknown".into(), |addr| addr.to_string());
        match errno {
            None => FailureCause::SocketShutDown { socket, local },
            Some(errno) => FailureCause::Socket {
                socket,
                local,
                errno,
            },
        }
    }

    /// Hands one datagram (sent to `arrival.to`, when reported) to the handler, which finds
    /// its receive time (when reported) in [`Io::received_at`].
    fn deliver(&mut self, socket: usize, from: SocketAddr, arrival: Arrival, bytes: &[u8]) {
        WorkerStats::add(&self.shared.stats.received, 1);
        let (from, to) = (
            sockaddr::canonical(from),
            arrival.to.map(|ip| ip.to_canonical()),
        );
        self.io.received_at = arrival.at;
        self.handler
            .datagram_to(&mut self.io, socket, from, to, bytes);
    }
}

/// A running worker; stopped and joined on drop.
pub struct Worker<C: Send + 'static> {
    handle: SendHandle<C>,
    backend: BackendKind,
    fallback_reason: Option<String>,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    local_addrs: Vec<SocketAddr>,
}

impl<C: Send + 'static> Worker<C> {
    /// Starts a worker serving `sockets` (numbered by their position) with `handler`.
    /// Returns once the backend is set up.
    pub fn spawn<H: Handler<Command = C> + Send>(
        config: WorkerConfig,
        sockets: Vec<UdpSocket>,
        handler: H,
    ) -> Result<Worker<C>, FastpathError> {
        Worker::spawn_with(config, sockets, move || handler)
    }

    /// Like [`Worker::spawn`], with the handler built by `make` on the worker thread (for
    /// handlers that may not cross threads).
    pub fn spawn_with<H: Handler<Command = C>>(
        config: WorkerConfig,
        sockets: Vec<UdpSocket>,
        make: impl FnOnce() -> H + Send + 'static,
    ) -> Result<Worker<C>, FastpathError> {
        Worker::spawn_with_mailbox(config, sockets, Mailbox::new()?, make)
    }

    /// Like [`Worker::spawn_with`], taking what was queued in `mailbox` before the worker
    /// existed (its [`Mailbox::sender`]s stay valid).
    pub fn spawn_with_mailbox<H: Handler<Command = C>>(
        config: WorkerConfig,
        sockets: Vec<UdpSocket>,
        mailbox: Mailbox<C>,
        make: impl FnOnce() -> H + Send + 'static,
    ) -> Result<Worker<C>, FastpathError> {
        let local_addrs = sockets
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<Result<Vec<_>, _>>()?;
        for socket in &sockets {
            socket.set_nonblocking(true)?;
            watch_destinations(socket)?;
        }
        let Mailbox { handle, queue } = mailbox;
        let waker = handle.waker.clone();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stats: WorkerStats::default(),
            failure: failure::FailureSlot::default(),
        });
        let (started_tx, started) = std::sync::mpsc::channel();
        let (context_waker, context_shared, context_config) =
            (waker.clone(), shared.clone(), config.clone());
        let thread = std::thread::Builder::new()
            .name(config.name.clone())
            .spawn(move || {
                let context = LoopContext {
                    io: Io::with_sockets(sockets),
                    handler: make(),
                    queue,
                    waker: context_waker,
                    shared: context_shared,
                    next_tick: context_config
                        .tick
                        .map(|period| std::time::Instant::now() + period),
                    config: context_config,
                };
                run(context, started_tx)
            })?;
        let (backend, fallback_reason) = started.recv().map_err(|_| FastpathError::Thread)??;
        Ok(Worker {
            handle,
            backend,
            fallback_reason,
            shared,
            thread: Some(thread),
            local_addrs,
        })
    }

    /// Sends and commands from other threads.
    pub fn sender(&self) -> SendHandle<C> {
        self.handle.clone()
    }

    /// The backend running.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Why io_uring was not used, when `Auto` fell back to epoll.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// The sockets' local addresses, by number.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.shared.stats
    }

    /// Why the worker stopped by itself, if it did (its sockets are no longer served, and
    /// [`SendHandle::send`] returns false).
    pub fn failure(&self) -> Option<WorkerFailure> {
        self.shared.failure.get()
    }

    /// Calls `report` once, on the worker's thread, if the worker stops by itself after it
    /// started (at once, on this thread, if it already has). Replaces an earlier `report`.
    /// A worker stopped by dropping it reports nothing.
    pub fn on_failure(&self, report: impl FnOnce(WorkerFailure) + Send + 'static) {
        self.shared.failure.watch(Box::new(report));
    }
}

impl<C: Send + 'static> Drop for Worker<C> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.handle.waker.wake_now();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type StartResult = Result<(BackendKind, Option<String>), FastpathError>;

/// The worker thread: pin, choose the backend, run until stopped; a failure after the start
/// (an error, or a panic in the handler) is recorded for the owner.
fn run<H: Handler>(context: LoopContext<H>, started: std::sync::mpsc::Sender<StartResult>) {
    let shared = context.shared.clone();
    let worker = context.config.name.clone();
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        start_and_serve(context, started)
    }));
    let cause = match served {
        Ok(Ok(())) => return,
        Ok(Err(cause)) => cause,
        Err(panic) => FailureCause::Panicked(panic_message(panic.as_ref())),
    };
    shared.failure.report(WorkerFailure { worker, cause });
}

/// The text a panic carried.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_string(),
        (_, Some(text)) => text.clone(),
        _ => "no message".into(),
    }
}

fn start_and_serve<H: Handler>(
    context: LoopContext<H>,
    started: std::sync::mpsc::Sender<StartResult>,
) -> Result<(), FailureCause> {
    if let Some(core) = context.config.core {
        let mut set = nix::sched::CpuSet::new();
        if set.set(core).is_ok() {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
        }
    }
    match context.config.backend {
        BackendChoice::Epoll => start_epoll(context, &started, None),
        choice => match uring::Ring::new(&context) {
            Ok(ring) => {
                let _ = started.send(Ok((BackendKind::IoUring, None)));
                ring.run(context)
            }
            Err(e) if choice == BackendChoice::Auto => {
                start_epoll(context, &started, Some(e.to_string()))
            }
            Err(e) => {
                let _ = started.send(Err(FastpathError::IoUringUnavailable(e.to_string())));
                Ok(())
            }
        },
    }
}

/// Sets up the epoll backend (`fallback_reason`: why not io_uring) and serves on it.
fn start_epoll<H: Handler>(
    context: LoopContext<H>,
    started: &std::sync::mpsc::Sender<StartResult>,
    fallback_reason: Option<String>,
) -> Result<(), FailureCause> {
    match epoll::Poller::new(&context) {
        Ok(poller) => {
            let _ = started.send(Ok((BackendKind::Epoll, fallback_reason)));
            poller.run(context)
        }
        Err(e) => {
            let _ = started.send(Err(FastpathError::Setup(e)));
            Ok(())
        }
    }
}

/// Asks the kernel for at least `bytes` of receive and send buffer on `socket` (never less
/// than it already has) and returns the receive buffer granted (capped by
/// `net.core.rmem_max`). A busy SIP or RTP socket whose
/// thread is descheduled for a few milliseconds on a small machine overflows the default
/// 208 KiB (about 150 datagrams) and the kernel drops what does not fit.
pub fn enlarge_buffers(socket: &impl AsFd, bytes: usize) -> std::io::Result<usize> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    // Never shrink what the system default already gives (reported doubled).
    if getsockopt(socket, sockopt::RcvBuf)? / 2 < bytes {
        setsockopt(socket, sockopt::RcvBuf, &bytes)?;
    }
    if getsockopt(socket, sockopt::SndBuf)? / 2 < bytes {
        setsockopt(socket, sockopt::SndBuf, &bytes)?;
    }
    // Linux reports twice what it granted (the other half is its bookkeeping).
    Ok(getsockopt(socket, sockopt::RcvBuf)? / 2)
}

#[cfg(test)]
mod tests {
    use super::Waker;

    /// The eventfd's counter (reading it resets it).
    fn counter(waker: &Waker) -> u64 {
        let mut value = [0u8; 8];
        match nix::unistd::read(&waker.fd, &mut value) {
            Ok(8) => u64::from_ne_bytes(value),
            _ => 0,
        }
    }

    #[test]
    fn a_burst_of_posts_writes_one_wake_up_until_the_worker_takes_the_queue() {
        let waker = Waker::new().unwrap();
        for _ in 0..100 {
            waker.wake();
        }
        assert_eq!(counter(&waker), 1, "one system call for the burst");
        waker.reset();
        waker.wake();
        assert_eq!(
            counter(&waker),
            1,
            "a post after the worker took the queue wakes it"
        );
        waker.wake_now();
        assert_eq!(counter(&waker), 1, "a stop wakes whatever is pending");
    }
}
