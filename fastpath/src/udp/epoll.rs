//! The portable backend: epoll for readiness, recvmmsg to read up to [`BATCH`] datagrams per
//! system call, sendmmsg to send the outbox in batches. Used where io_uring is unavailable
//! (old kernels, `kernel.io_uring_disabled`, seccomp profiles such as Docker's default).
//!
//! Sockets are served round-robin: one batch per ready socket per loop turn, so a flood on
//! one (a relay port under attack) delays the others by one batch, never starves them (the
//! epoll set is level-triggered, and the kernel reports a socket still readable after the
//! sockets that became ready meanwhile).
#![allow(unsafe_code)]

use super::cmsg::{self, Arrival, ControlBuffer};
use super::failure::{is_fatal_receive_error, FailureCause};
use super::sockaddr::{self, RawAddr};
use super::{Handler, Io, LoopContext, WorkerStats, INTAKE_ROUNDS};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::os::fd::{AsFd, RawFd};

/// Datagrams per recvmmsg/sendmmsg call.
const BATCH: usize = 32;
/// The epoll key of the wake-up eventfd.
const WAKE: u64 = u64::MAX;
/// Bytes reserved for a source address (`sockaddr_storage`).
const NAME: usize = 128;

fn zeroed<T>() -> T {
    // SAFETY: used only for libc's plain C structs (mmsghdr, iovec), valid when all-zero.
    unsafe { std::mem::zeroed() }
}

/// The receive side's buffers and headers for one recvmmsg call.
struct ReceiveBatch {
    data: Vec<u8>,
    names: Vec<[u8; NAME]>,
    /// Where the kernel reports each datagram's destination (sockets bound to the
    /// unspecified address).
    controls: Vec<ControlBuffer>,
    iovs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    size: usize,
}

impl ReceiveBatch {
    fn new(size: usize) -> ReceiveBatch {
        ReceiveBatch {
            data: vec![0; size * BATCH],
            names: vec![[0; NAME]; BATCH],
            controls: vec![ControlBuffer::default(); BATCH],
            iovs: (0..BATCH).map(|_| zeroed()).collect(),
            headers: (0..BATCH).map(|_| zeroed()).collect(),
            size,
        }
    }

    /// Reads up to BATCH datagrams from `fd`; returns how many (0 when none are waiting,
    /// or on an error that passes, such as an ICMP error reported on the socket).
    fn receive(&mut self, fd: RawFd) -> Result<usize, Errno> {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.data[i * self.size..].as_mut_ptr().cast(),
                iov_len: self.size,
            };
            let header = &mut self.headers[i];
            *header = zeroed();
            header.msg_hdr.msg_name = self.names[i].as_mut_ptr().cast();
            header.msg_hdr.msg_namelen = NAME as libc::socklen_t;
            header.msg_hdr.msg_iov = &mut self.iovs[i];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = self.controls[i].0.as_mut_ptr().cast();
            header.msg_hdr.msg_controllen = cmsg::SPACE;
        }
        // SAFETY: every header points at its own name buffer, control buffer and iovec,
        // which points into `self.data`; all outlive the call, and the lengths given match
        // the buffers.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        match usize::try_from(received) {
            Ok(count) => Ok(count),
            Err(_) => match Errno::last() {
                errno if is_fatal_receive_error(errno) => Err(errno),
                _ => Ok(0),
            },
        }
    }

    /// Datagram `i` of the last receive: source, destination and receive time (when
    /// reported) and bytes,
    /// or None when truncated.
    fn datagram(&self, i: usize) -> Option<Received<'_>> {
        let header = &self.headers[i];
        if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let name_len = (header.msg_hdr.msg_namelen as usize).min(NAME);
        let from = sockaddr::parse(&self.names[i][..name_len])?;
        let arrival = match header.msg_hdr.msg_flags & libc::MSG_CTRUNC {
            0 => {
                let control_len = header.msg_hdr.msg_controllen.min(cmsg::SPACE);
                cmsg::arrival(&self.controls[i].0[..control_len])
            }
            _ => Arrival::default(),
        };
        let len = (header.msg_len as usize).min(self.size);
        Some((
            from,
            arrival,
            &self.data[i * self.size..i * self.size + len],
        ))
    }
}

/// A received datagram: source, what its control data tells, bytes.
type Received<'a> = (std::net::SocketAddr, Arrival, &'a [u8]);

/// A send waiting for sendmmsg: descriptor, destination, source control message and its
/// length (0: none), bytes.
struct Pending {
    fd: RawFd,
    addr: RawAddr,
    control: ControlBuffer,
    control_len: usize,
    bytes: *const u8,
    len: usize,
}

/// Sends the queued datagrams, BATCH per sendmmsg call, socket by socket, and writes the
/// queued file writes.
fn send_all(io: &mut Io, stats: &WorkerStats) {
    io.drain_file_writes(|_, fd, bytes| match fd {
        Some(fd) => {
            if nix::unistd::write(fd, bytes).is_err() {
                WorkerStats::add(&stats.send_dropped, 1);
            }
        }
        None => WorkerStats::add(&stats.send_dropped, 1),
    });
    send_datagrams(io, stats);
    io.clear_data();
}

fn send_datagrams(io: &mut Io, stats: &WorkerStats) {
    // The datagrams stay in the Io's buffer (untouched until `clear_data` after this
    // function): the iovecs point into it, nothing is copied per packet.
    let mut pending: Vec<Pending> = Vec::new();
    io.drain_sends(|fd, from, to, bytes| match fd {
        Some(fd) => {
            let mut control = ControlBuffer::default();
            let control_len = from.map_or(0, |from| cmsg::source(from, &mut control));
            pending.push(Pending {
                fd,
                addr: RawAddr::new(to),
                control,
                control_len,
                bytes: bytes.as_ptr(),
                len: bytes.len(),
            });
        }
        None => WorkerStats::add(&stats.send_dropped, 1),
    });
    pending.sort_by_key(|send| send.fd);
    for group in pending.chunk_by_mut(|a, b| a.fd == b.fd) {
        let fd = group[0].fd;
        for chunk in group.chunks_mut(BATCH) {
            let mut iovs: Vec<libc::iovec> = chunk
                .iter()
                .map(|send| libc::iovec {
                    iov_base: send.bytes.cast_mut().cast(),
                    iov_len: send.len,
                })
                .collect();
            let mut headers: Vec<libc::mmsghdr> = chunk
                .iter_mut()
                .zip(iovs.iter_mut())
                .map(|(send, iov)| {
                    let mut header: libc::mmsghdr = zeroed();
                    header.msg_hdr.msg_name = send.addr.as_ptr();
                    header.msg_hdr.msg_namelen = send.addr.len();
                    header.msg_hdr.msg_iov = iov;
                    header.msg_hdr.msg_iovlen = 1;
                    if send.control_len > 0 {
                        header.msg_hdr.msg_control = send.control.0.as_mut_ptr().cast();
                        header.msg_hdr.msg_controllen = send.control_len;
                    }
                    header
                })
                .collect();
            let mut done = 0;
            while done < headers.len() {
                // SAFETY: the headers point at addresses and control buffers in `chunk` and
                // iovecs in `iovs`, which point into the Io's buffer; all live, unmoved,
                // until after the call (the kernel only reads the bytes).
                let sent = unsafe {
                    libc::sendmmsg(
                        fd,
                        headers[done..].as_mut_ptr(),
                        (headers.len() - done) as libc::c_uint,
                        0,
                    )
                };
                match usize::try_from(sent) {
                    Ok(n) if n > 0 => {
                        WorkerStats::add(&stats.sent, n as u64);
                        done += n;
                    }
                    _ => {
                        // The first unsent datagram failed (e.g. unreachable): skip it.
                        WorkerStats::add(&stats.send_dropped, 1);
                        done += 1;
                    }
                }
            }
        }
    }
}

/// The epoll key of file `index` (sockets use their number, the waker u64::MAX).
const FILE_KEY: u64 = 1 << 62;

/// Reads file `file` until it would block, handing each read to the handler.
fn read_file<H: Handler>(
    context: &mut LoopContext<H>,
    epoll: &Epoll,
    file: usize,
    buffer: &mut Vec<u8>,
) {
    loop {
        let Some((fd, block)) = context.io.file(file) else {
            return;
        };
        buffer.resize(block, 0);
        // SAFETY: `fd` is open (the Io owns it) and `buffer` holds `block` writable bytes.
        let read = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), block) };
        match read {
            0 => {
                context.deliver_file(file, Ok(&[]));
                if let Some((fd, _)) = context.io.files.get(file).and_then(Option::as_ref) {
                    let _ = epoll.delete(fd);
                }
                return;
            }
            n if n > 0 => context.deliver_file(file, Ok(&buffer[..n as usize])),
            _ => {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if errno != libc::EAGAIN {
                    context.deliver_file(file, Err(errno));
                }
                return;
            }
        }
    }
}

/// Adds new sockets to the epoll set and closes removed ones.
fn apply_socket_changes(epoll: &Epoll, io: &mut Io) {
    for index in std::mem::take(&mut io.files_added) {
        if let Some((fd, _)) = io.files[index].as_ref() {
            let _ = epoll.add(
                fd,
                EpollEvent::new(EpollFlags::EPOLLIN, FILE_KEY | index as u64),
            );
        }
    }
    for (_, fd) in std::mem::take(&mut io.files_removed) {
        let _ = epoll.delete(&fd);
    }
    for index in std::mem::take(&mut io.added) {
        if let Some(socket) = io.sockets[index].as_ref() {
            // Cannot fail for a fresh UDP socket; if it did, the socket would not be served.
            let _ = epoll.add(
                socket.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, index as u64),
            );
        }
    }
    for (index, socket) in std::mem::take(&mut io.removed) {
        let _ = epoll.delete(socket.as_fd());
        drop(socket);
        io.release(index);
    }
}

/// The epoll backend of one worker.
pub(super) struct Poller {
    epoll: Epoll,
}

impl Poller {
    /// Sets up the epoll set with the worker's waker.
    pub(super) fn new<H: Handler>(context: &LoopContext<H>) -> std::io::Result<Poller> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            &context.waker.fd,
            EpollEvent::new(EpollFlags::EPOLLIN, WAKE),
        )?;
        Ok(Poller { epoll })
    }

    /// Runs until the worker is stopped, or fails.
    pub(super) fn run<H: Handler>(self, mut context: LoopContext<H>) -> Result<(), FailureCause> {
        let epoll = self.epoll;
        apply_socket_changes(&epoll, &mut context.io);
        let mut batch = ReceiveBatch::new(context.config.buffer_size);
        let mut file_buffer = Vec::new();
        let mut events = vec![EpollEvent::empty(); 64];
        let shared = context.shared.clone();
        loop {
            // Waits once (until the handler's next tick or deadline at most), then takes in
            // what else has arrived in rounds that do not wait, while datagrams keep coming
            // (see the io_uring backend's turn).
            let mut timeout = match context.until_wake() {
                // Rounded up: waking a little late beats spinning until the tick.
                Some(wait) => EpollTimeout::try_from(wait + std::time::Duration::from_micros(999))
                    .unwrap_or(EpollTimeout::MAX),
                None => EpollTimeout::NONE,
            };
            for _ in 0..INTAKE_ROUNDS {
                let ready = match epoll.wait(&mut events, timeout) {
                    Ok(n) => n,
                    Err(Errno::EINTR) => break,
                    Err(errno) => return Err(FailureCause::Wait(errno)),
                };
                let mut received = 0;
                for event in &events[..ready] {
                    let key = event.data();
                    if key == WAKE {
                        context.take_queued();
                        continue;
                    }
                    if key & FILE_KEY != 0 {
                        read_file(
                            &mut context,
                            &epoll,
                            (key & !FILE_KEY) as usize,
                            &mut file_buffer,
                        );
                        continue;
                    }
                    let socket = key as usize;
                    // The socket may have been removed by a handler earlier in this turn.
                    let Some(fd) = context.io.fd(socket) else {
                        continue;
                    };
                    // One batch per round: a socket with more waiting is reported again.
                    let count = batch
                        .receive(fd)
                        .map_err(|errno| context.socket_failure(socket, Some(errno)))?;
                    if count == 0 && event.events().contains(EpollFlags::EPOLLRDHUP) {
                        return Err(context.socket_failure(socket, None));
                    }
                    received += count;
                    for i in 0..count {
                        match batch.datagram(i) {
                            Some((from, arrival, bytes)) => {
                                context.deliver(socket, from, arrival, bytes)
                            }
                            None => WorkerStats::add(&shared.stats.truncated, 1),
                        }
                    }
                }
                // What the datagrams caused (a relay's forwards) leaves before the next round.
                if context.io.has_sends() {
                    send_all(&mut context.io, &shared.stats);
                }
                if received == 0 || context.stopping() {
                    break;
                }
                timeout = EpollTimeout::ZERO;
            }
            if context.stopping() {
                return Ok(());
            }
            context.run_due();
            apply_socket_changes(&epoll, &mut context.io);
            if context.io.has_sends() {
                send_all(&mut context.io, &shared.stats);
            }
        }
    }
}
