//! The io_uring backend: one ring per worker (single issuer, deferred task running, no
//! SQPOLL: no core burns while idle), a multishot recvmsg per socket drawing from a
//! ring-mapped provided-buffer pool, sends as sendmsg operations from a fixed slab of send
//! slots, and a multishot poll on the worker's eventfd for sends from other threads. One
//! `submit_and_wait` per loop turn submits everything queued and reaps a batch, its wait
//! bounded by the handler's next tick or deadline.
#![allow(unsafe_code)]

use super::cmsg::{self, ControlBuffer};
use super::failure::{is_fatal_receive_error, FailureCause};
use super::sockaddr::{self, RawAddr};
use super::{Handler, Io, LoopContext, WorkerStats, INTAKE_ROUNDS};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use nix::errno::Errno;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

/// Submission queue entries.
const ENTRIES: u32 = 1024;
/// The provided-buffer group.
const GROUP: u16 = 0;
/// Send slots made at start: sends in flight before any more are made.
const SEND_SLOTS: usize = 512;
/// Sends in flight at most: past [`SEND_SLOTS`], slots are made as sends need them (a
/// worker starved of CPU reaps completions late), up to this many (about 16 MiB of
/// buffers); past it sends are dropped and counted.
const MAX_SEND_SLOTS: usize = 8192;
/// user_data: operation in the top byte, socket or slot index below.
const TAG_SHIFT: u32 = 56;
const RECV: u64 = 1;
const SEND: u64 = 2;
const WAKE: u64 = 3;
const CANCEL: u64 = 4;
const FILE_READ: u64 = 6;
const FILE_WRITE: u64 = 7;
const HANGUP: u64 = 8;

/// A removed socket whose receive and hang-up poll are being cancelled.
struct Closing {
    /// Open until then: its number is not reused while completions may still name it.
    _socket: std::net::UdpSocket,
    /// Operations not yet over.
    pending: u8,
}

/// Page-aligned memory the kernel shares with us.
struct Shared {
    ptr: *mut u8,
    layout: Layout,
}

impl Shared {
    fn new(size: usize) -> std::io::Result<Shared> {
        let layout = Layout::from_size_align(size.max(1), 4096)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(std::io::Error::other("out of memory for io_uring buffers"));
        }
        Ok(Shared { ptr, layout })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring using it is already gone
        // (fields drop after `Ring::ring`, see the field order there).
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// The provided-buffer ring and its buffers.
struct BufferRing {
    entries: Shared,
    buffers: Shared,
    size: usize,
    mask: u16,
    tail: u16,
}

impl BufferRing {
    fn new(count: u16, size: usize) -> std::io::Result<BufferRing> {
        let entry_size = std::mem::size_of::<types::BufRingEntry>();
        let mut ring = BufferRing {
            entries: Shared::new(usize::from(count) * entry_size)?,
            buffers: Shared::new(usize::from(count) * size)?,
            size,
            mask: count - 1,
            tail: 0,
        };
        for bid in 0..count {
            ring.provide(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Hands buffer `bid` (back) to the kernel; visible after [`BufferRing::publish`].
    fn provide(&mut self, bid: u16) {
        let index = usize::from(self.tail & self.mask);
        // SAFETY: `index` < count, so the entry lies inside the entries allocation; the kernel
        // reads entries only up to the published tail, which does not include this one yet.
        let entry = unsafe { &mut *self.entries.ptr.cast::<types::BufRingEntry>().add(index) };
        entry.set_addr(self.buffers.ptr as u64 + u64::from(bid) * self.size as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the provided buffers visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of our page-aligned ring, and the
        // kernel reads it atomically; Release orders the entry writes before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries.ptr.cast()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The first `len` bytes of buffer `bid`, which the kernel has filled and will not touch
    /// again until it is provided back.
    fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let offset = usize::from(bid & self.mask) * self.size;
        // SAFETY: the range lies inside the buffers allocation, and the kernel gave this
        // buffer to us with this completion: nothing writes it while the slice lives.
        unsafe { std::slice::from_raw_parts(self.buffers.ptr.add(offset), len.min(self.size)) }
    }
}

/// One send in flight: its bytes, address, source control message and message header
/// must stay put until the completion comes back.
struct SendSlot {
    data: Vec<u8>,
    addr: RawAddr,
    control: ControlBuffer,
    iov: libc::iovec,
    msg: libc::msghdr,
}

impl SendSlot {
    fn new() -> Box<SendSlot> {
        Box::new(SendSlot {
            data: Vec::with_capacity(2048),
            addr: RawAddr::new(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            control: ControlBuffer::default(),
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            msg: zeroed_msghdr(),
        })
    }
}

fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: an all-zero msghdr is valid: null pointers with zero lengths.
    unsafe { std::mem::zeroed() }
}

/// The io_uring state of one worker.
pub(super) struct Ring {
    // Field order matters: the ring is dropped (and the kernel lets go of the buffers and
    // the send slots) before the memory it points into.
    ring: IoUring,
    buffers: BufferRing,
    recv_msg: Box<libc::msghdr>,
    /// Each slot boxed: its address stays put while the kernel holds pointers into it,
    /// even as more slots are made (never more than [`MAX_SEND_SLOTS`]; none is freed).
    #[allow(clippy::vec_box)] // the box is what keeps a slot's address when the Vec grows
    slots: Vec<Box<SendSlot>>,
    free: Vec<usize>,
    /// Each served file's read buffer, in flight while its read is.
    file_buffers: HashMap<usize, Vec<u8>>,
    /// Removed files, kept open until their cancelled read completes.
    closing_files: HashMap<usize, std::os::fd::OwnedFd>,
    /// Removed sockets, kept open until their cancelled operations complete.
    closing: HashMap<usize, Closing>,
    /// Operations queued while the submission queue was full, oldest first.
    backlog: VecDeque<squeue::Entry>,
    /// Submissions still to refuse with EBUSY (tests only).
    #[cfg(test)]
    refusals: u32,
}

impl Ring {
    /// Sets up the ring and registers the buffer pool; fails where io_uring is unavailable.
    pub(super) fn new<H: Handler>(context: &LoopContext<H>) -> std::io::Result<Ring> {
        Ring::with_entries(context, ENTRIES)
    }

    /// [`Ring::new`] with `entries` submission queue entries.
    fn with_entries<H: Handler>(context: &LoopContext<H>, entries: u32) -> std::io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            // Flags deferred work (received datagrams) in the submission ring, so an enter
            // that does not wait still runs it.
            .setup_taskrun_flag()
            .build(entries)?;
        let count = context.config.buffers.next_power_of_two().clamp(1, 32_768);
        let buffers = BufferRing::new(count, context.config.buffer_size)?;
        // SAFETY: the entries stay allocated (and unmoved) as long as the ring: both are
        // fields of `Ring`, and the ring is dropped first.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buffers.entries.ptr as u64,
                count,
                GROUP,
                0,
            )?;
        }
        let mut recv_msg = Box::new(zeroed_msghdr());
        recv_msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // Room for the destination a socket bound to the unspecified address reports, and the
        // receive time.
        recv_msg.msg_controllen = cmsg::SPACE;
        let slots = (0..SEND_SLOTS).map(|_| SendSlot::new()).collect();
        Ok(Ring {
            ring,
            buffers,
            recv_msg,
            slots,
            free: (0..SEND_SLOTS).rev().collect(),
            file_buffers: HashMap::new(),
            closing_files: HashMap::new(),
            closing: HashMap::new(),
            backlog: VecDeque::new(),
            #[cfg(test)]
            refusals: 0,
        })
    }

    /// Queues `entry` for the next submission; past what the submission queue holds, in the
    /// backlog, which goes in as completions make room: nothing queued is lost (a send
    /// keeps its slot until its completion).
    fn push(&mut self, entry: squeue::Entry) {
        if self.backlog.is_empty() {
            // SAFETY: every entry points into memory owned by `self` (the receive msghdr,
            // the send slots, the file buffers, the tick's timespec) or the kernel's provided
            // buffers, all alive and unmoved until the completion.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(entry);
    }

    /// Moves what the backlog holds into the submission queue, as far as it has room.
    fn refill(&mut self) {
        let mut queue = self.ring.submission();
        while let Some(entry) = self.backlog.front() {
            // SAFETY: as in `push`: the entry's memory lives until its completion.
            if unsafe { queue.push(entry) }.is_err() {
                return;
            }
            self.backlog.pop_front();
        }
    }

    fn arm_recv(&mut self, index: usize, fd: RawFd) {
        let entry = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.recv_msg, GROUP)
            .build()
            .user_data((RECV << TAG_SHIFT) | index as u64);
        self.push(entry);
    }

    /// Waits for socket `index` to be shut down (or to report an error): a receive does not
    /// complete then.
    fn arm_hangup(&mut self, index: usize, fd: RawFd) {
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLRDHUP as u32)
            .build()
            .user_data((HANGUP << TAG_SHIFT) | index as u64);
        self.push(entry);
    }

    /// One of a removed socket's operations is over: true when the socket is closing (once
    /// both are over, it closes and its slot may be reused).
    fn closed<H: Handler>(&mut self, context: &mut LoopContext<H>, index: usize) -> bool {
        let Some(closing) = self.closing.get_mut(&index) else {
            return false;
        };
        closing.pending -= 1;
        if closing.pending == 0 {
            self.closing.remove(&index);
            context.io.release(index);
        }
        true
    }

    fn arm_wake(&mut self, fd: RawFd) {
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(WAKE << TAG_SHIFT);
        self.push(entry);
    }

    /// Cancels the operation tagged `user_data` (its completion still comes, cancelled).
    fn cancel(&mut self, user_data: u64) {
        let entry = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(CANCEL << TAG_SHIFT);
        self.push(entry);
    }

    /// Keeps one read in flight on file `file`.
    fn arm_file_read(&mut self, file: usize, fd: RawFd, block: usize) {
        let buffer = self.file_buffers.entry(file).or_default();
        buffer.resize(block, 0);
        let entry = opcode::Read::new(types::Fd(fd), buffer.as_mut_ptr(), block as u32)
            .build()
            .user_data((FILE_READ << TAG_SHIFT) | file as u64);
        self.push(entry);
    }

    /// A file read completed: hand it over, keep reading (until end of file or a fatal
    /// error), or finish closing a removed file.
    fn file_read_done<H: Handler>(
        &mut self,
        context: &mut LoopContext<H>,
        file: usize,
        result: i32,
    ) {
        if self.closing_files.remove(&file).is_some() {
            self.file_buffers.remove(&file);
            return;
        }
        let Some(buffer) = self.file_buffers.remove(&file) else {
            return;
        };
        let keep_reading = match result {
            n if n > 0 => {
                context.deliver_file(file, Ok(&buffer[..n as usize]));
                true
            }
            0 => {
                context.deliver_file(file, Ok(&[]));
                false
            }
            error => {
                context.deliver_file(file, Err(-error));
                !matches!(-error, libc::EBADF | libc::EINVAL | libc::ECANCELED)
            }
        };
        self.file_buffers.insert(file, buffer);
        if keep_reading {
            if let Some((fd, block)) = context.io.file(file) {
                self.arm_file_read(file, fd, block);
            }
        }
    }

    /// Hands one received datagram to the handler.
    fn deliver<H: Handler>(
        &self,
        context: &mut LoopContext<H>,
        socket: usize,
        bid: u16,
        len: usize,
    ) {
        let Ok(message) = types::RecvMsgOut::parse(self.buffers.filled(bid, len), &self.recv_msg)
        else {
            WorkerStats::add(&context.shared.stats.truncated, 1);
            return;
        };
        if message.is_payload_truncated() || message.is_name_data_truncated() {
            WorkerStats::add(&context.shared.stats.truncated, 1);
            return;
        }
        let arrival = match message.is_control_data_truncated() {
            true => cmsg::Arrival::default(),
            false => cmsg::arrival(message.control_data()),
        };
        if let Some(from) = sockaddr::parse(message.name_data()) {
            context.deliver(socket, from, arrival, message.payload_data());
        }
    }

    /// A free send slot: one whose send completed, else a new one while fewer than
    /// [`MAX_SEND_SLOTS`] exist.
    fn free_slot(&mut self) -> Option<usize> {
        self.free.pop().or_else(|| {
            (self.slots.len() < MAX_SEND_SLOTS).then(|| {
                self.slots.push(SendSlot::new());
                self.slots.len() - 1
            })
        })
    }

    /// Turns the queued sends into sendmsg operations and file writes into write operations.
    fn flush(&mut self, io: &mut Io, stats: &WorkerStats) {
        let mut entries = Vec::new();
        io.drain_file_writes(|_, fd, bytes| {
            let Some(fd) = fd else {
                WorkerStats::add(&stats.send_dropped, 1);
                return;
            };
            let Some(index) = self.free_slot() else {
                WorkerStats::add(&stats.send_dropped, 1);
                return;
            };
            let slot = &mut self.slots[index];
            slot.data.clear();
            slot.data.extend_from_slice(bytes);
            entries.push(
                opcode::Write::new(
                    types::Fd(fd.as_raw_fd()),
                    slot.data.as_ptr(),
                    slot.data.len() as u32,
                )
                .build()
                .user_data((FILE_WRITE << TAG_SHIFT) | index as u64),
            );
        });
        io.drain_sends(|fd, from, to, bytes| {
            let Some(fd) = fd else {
                WorkerStats::add(&stats.send_dropped, 1);
                return;
            };
            let Some(index) = self.free_slot() else {
                WorkerStats::add(&stats.send_dropped, 1);
                return;
            };
            let slot = &mut self.slots[index];
            slot.data.clear();
            slot.data.extend_from_slice(bytes);
            slot.addr = RawAddr::new(to);
            slot.iov = libc::iovec {
                iov_base: slot.data.as_mut_ptr().cast(),
                iov_len: slot.data.len(),
            };
            slot.msg = zeroed_msghdr();
            slot.msg.msg_name = slot.addr.as_ptr();
            slot.msg.msg_namelen = slot.addr.len();
            slot.msg.msg_iov = &mut slot.iov;
            slot.msg.msg_iovlen = 1;
            if let Some(from) = from {
                slot.msg.msg_controllen = cmsg::source(from, &mut slot.control);
                slot.msg.msg_control = slot.control.0.as_mut_ptr().cast();
            }
            entries.push(
                opcode::SendMsg::new(types::Fd(fd), &slot.msg)
                    .build()
                    .user_data((SEND << TAG_SHIFT) | index as u64),
            );
        });
        io.clear_data();
        for entry in entries {
            self.push(entry);
        }
    }

    /// Arms receives on new sockets and cancels those of removed ones (which stay open until
    /// the kernel confirms: their slots are reused only then).
    fn apply_socket_changes(&mut self, io: &mut Io) {
        for index in std::mem::take(&mut io.added) {
            if let Some(fd) = io.fd(index) {
                self.arm_recv(index, fd);
                self.arm_hangup(index, fd);
            }
        }
        for (index, socket) in std::mem::take(&mut io.removed) {
            self.cancel((RECV << TAG_SHIFT) | index as u64);
            self.cancel((HANGUP << TAG_SHIFT) | index as u64);
            self.closing.insert(
                index,
                Closing {
                    _socket: socket,
                    pending: 2,
                },
            );
        }
        for file in std::mem::take(&mut io.files_added) {
            if let Some((fd, block)) = io.file(file) {
                self.arm_file_read(file, fd, block);
            }
        }
        for (file, fd) in std::mem::take(&mut io.files_removed) {
            self.cancel((FILE_READ << TAG_SHIFT) | file as u64);
            self.closing_files.insert(file, fd);
        }
    }

    /// Runs until the worker is stopped, or fails.
    pub(super) fn run<H: Handler>(
        mut self,
        mut context: LoopContext<H>,
    ) -> Result<(), FailureCause> {
        let wake_fd = context.waker.fd.as_raw_fd();
        self.apply_socket_changes(&mut context.io);
        self.arm_wake(wake_fd);
        let mut completions = Vec::with_capacity(ENTRIES as usize);
        loop {
            if self.turn(&mut context, &mut completions)? {
                return Ok(());
            }
        }
    }

    /// One loop turn: waits for completions (until the handler's next tick or deadline at
    /// most) and handles them, then takes in what else has arrived, in rounds that do not
    /// wait, while datagrams keep coming (at most [`INTAKE_ROUNDS`]), each round's sends
    /// submitted with the next; then the handler's due work, then its sends. Taking in before serving keeps the kernel's socket queue short,
    /// so a handler that queues by priority sees an urgent datagram behind a flood. True
    /// when the worker is to stop.
    fn turn<H: Handler>(
        &mut self,
        context: &mut LoopContext<H>,
        completions: &mut Vec<(u64, i32, u32)>,
    ) -> Result<bool, FailureCause> {
        // With a backlog, no waiting: it goes in as soon as completions make room; nor
        // when the handler's deadline has come.
        let wait = context.until_wake();
        let mut want =
            usize::from(self.backlog.is_empty() && wait != Some(std::time::Duration::ZERO));
        for _ in 0..INTAKE_ROUNDS {
            self.refill();
            match self.submit_and_wait(want, wait) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(false),
                // The wait reached the tick or the handler's deadline.
                Err(e) if errno_of(&e) == Errno::ETIME => {}
                // The completion queue is full (EBUSY) or the kernel is short of memory
                // (EAGAIN): the queue stays as it is, and goes in after these completions.
                Err(e) if matches!(errno_of(&e), Errno::EBUSY | Errno::EAGAIN) => {}
                Err(e) => return Err(FailureCause::Ring(errno_of(&e))),
            }
            completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            let received = self.handle_completions(context, completions)?;
            // What the datagrams caused (a relay's forwards) goes in with the next round.
            if context.io.has_sends() {
                self.flush(&mut context.io, &context.shared.stats);
            }
            if received == 0 || context.stopping() {
                break;
            }
            want = 0;
        }
        if context.stopping() {
            return Ok(true);
        }
        context.run_due();
        self.apply_socket_changes(&mut context.io);
        if context.io.has_sends() {
            self.flush(&mut context.io, &context.shared.stats);
        }
        Ok(false)
    }

    /// Handles reaped completions; returns how many were received datagrams.
    fn handle_completions<H: Handler>(
        &mut self,
        context: &mut LoopContext<H>,
        completions: &mut Vec<(u64, i32, u32)>,
    ) -> Result<usize, FailureCause> {
        let wake_fd = context.waker.fd.as_raw_fd();
        let mut received = 0;
        let shared = context.shared.clone();
        let mut rearm_wake = false;
        for (data, result, flags) in completions.drain(..) {
            let index = (data & ((1 << TAG_SHIFT) - 1)) as usize;
            match data >> TAG_SHIFT {
                RECV => {
                    received += 1;
                    if let (true, Some(bid)) = (result >= 0, cqueue::buffer_select(flags)) {
                        if !self.closing.contains_key(&index) {
                            self.deliver(context, index, bid, result as usize);
                        }
                        self.buffers.provide(bid);
                    }
                    if !cqueue::more(flags) && !self.closed(context, index) {
                        if let Some(fd) = context.io.fd(index) {
                            match Errno::from_raw(-result) {
                                errno if result < 0 && is_fatal_receive_error(errno) => {
                                    return Err(context.socket_failure(index, Some(errno)));
                                }
                                // Out of buffers (ENOBUFS) or an error that passes ended the
                                // multishot: the buffers are handed back below, then it is
                                // armed again.
                                _ => self.arm_recv(index, fd),
                            }
                        }
                    }
                }
                HANGUP => {
                    if self.closed(context, index) {
                        continue;
                    }
                    let hung_up = (libc::POLLRDHUP | libc::POLLHUP) as i32;
                    if result >= 0 && result & hung_up != 0 {
                        return Err(context.socket_failure(index, None));
                    }
                    // A socket error (the receive consumes it) or a cancellation.
                    if let Some(fd) = context.io.fd(index) {
                        self.arm_hangup(index, fd);
                    }
                }
                FILE_READ => self.file_read_done(context, index, result),
                SEND | FILE_WRITE => {
                    self.free.push(index);
                    let counter = if result >= 0 {
                        &shared.stats.sent
                    } else {
                        &shared.stats.send_dropped
                    };
                    WorkerStats::add(counter, 1);
                }
                WAKE => {
                    context.take_queued();
                    rearm_wake |= !cqueue::more(flags);
                }
                _ => {}
            }
        }
        self.buffers.publish();
        if rearm_wake {
            self.arm_wake(wake_fd);
        }
        Ok(received)
    }

    /// Submits the queue and waits for `want` completions, or `wait` at most (ETIME); the
    /// seam where tests make io_uring refuse.
    fn submit_and_wait(
        &mut self,
        want: usize,
        wait: Option<std::time::Duration>,
    ) -> std::io::Result<usize> {
        #[cfg(test)]
        if self.refusals > 0 {
            self.refusals -= 1;
            return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
        }
        match wait {
            Some(wait) if want > 0 => {
                let limit = types::Timespec::from(wait);
                let args = types::SubmitArgs::new().timespec(&limit);
                self.ring.submitter().submit_with_args(want, &args)
            }
            _ => self.ring.submit_and_wait(want),
        }
    }
}

/// The errno of an I/O error from io_uring.
fn errno_of(error: &std::io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::{Message, Shared as WorkerShared, Waker, WorkerConfig};
    use std::net::{SocketAddr, UdpSocket};
    use std::sync::Arc;

    /// A worker's loop state serving `sockets`, ignoring what they receive.
    fn context(
        sockets: Vec<UdpSocket>,
    ) -> LoopContext<impl FnMut(&mut Io, usize, SocketAddr, &[u8]) + Send + 'static> {
        let (_, queue) = crossbeam_channel::unbounded::<Message<std::convert::Infallible>>();
        LoopContext {
            io: Io::with_sockets(sockets),
            handler: |_: &mut Io, _: usize, _: SocketAddr, _: &[u8]| {},
            queue,
            waker: Arc::new(Waker::new().unwrap()),
            shared: Arc::new(WorkerShared {
                stop: Default::default(),
                stats: WorkerStats::default(),
                failure: Default::default(),
            }),
            // Ticks wake every turn: a completion that never comes fails the test, not hangs it.
            config: WorkerConfig {
                buffer_size: 2048,
                buffers: 16,
                tick: Some(std::time::Duration::from_millis(10)),
                ..WorkerConfig::sip("ring-test")
            },
            next_tick: Some(std::time::Instant::now()),
        }
    }

    #[test]
    fn sends_beyond_a_full_submission_queue_survive_io_uring_refusing_a_submission() {
        let far_end = UdpSocket::bind("127.0.0.1:0").unwrap();
        far_end
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut context = context(vec![socket]);
        let mut ring = Ring::with_entries(&context, 8).unwrap();
        let mut completions = Vec::new();
        ring.apply_socket_changes(&mut context.io);
        // Three times what the submission queue holds, queued in one turn, while io_uring
        // refuses the next submission (EBUSY: its completion queue is overflowing).
        let to = far_end.local_addr().unwrap();
        for i in 0..24u8 {
            context.io.send(0, to, &[i]);
        }
        ring.refusals = 1;
        let stats = context.shared.clone();
        ring.flush(&mut context.io, &stats.stats);
        let mut turns = 0;
        while WorkerStats::get(&stats.stats.sent) + WorkerStats::get(&stats.stats.send_dropped) < 24
        {
            turns += 1;
            assert!(turns < 1000, "every send completes");
            assert_eq!(ring.turn(&mut context, &mut completions), Ok(false));
        }
        assert_eq!(WorkerStats::get(&stats.stats.sent), 24);
        assert_eq!(ring.free.len(), SEND_SLOTS, "every send slot came back");
        let mut received: Vec<u8> = (0..24)
            .map(|_| {
                let mut byte = [0u8; 1];
                far_end.recv_from(&mut byte).unwrap();
                byte[0]
            })
            .collect();
        received.sort_unstable();
        assert_eq!(received, (0..24).collect::<Vec<_>>());
    }

    /// More sends at once than the slots made at start (a worker that reaps its
    /// completions late): slots are made for them, none is dropped, up to the cap.
    #[test]
    fn sends_beyond_the_first_slots_get_slots_of_their_own() {
        let far_end = UdpSocket::bind("127.0.0.1:0").unwrap();
        crate::udp::enlarge_buffers(&far_end, 4 << 20).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut context = context(vec![socket]);
        let mut ring = Ring::with_entries(&context, 256).unwrap();
        let mut completions = Vec::new();
        ring.apply_socket_changes(&mut context.io);
        let to = far_end.local_addr().unwrap();
        let count = 3 * SEND_SLOTS as u64;
        for i in 0..count {
            context.io.send(0, to, &i.to_be_bytes());
        }
        let stats = context.shared.clone();
        ring.flush(&mut context.io, &stats.stats);
        assert_eq!(
            ring.slots.len(),
            count as usize,
            "a slot for each send in flight"
        );
        let mut turns = 0;
        while WorkerStats::get(&stats.stats.sent) + WorkerStats::get(&stats.stats.send_dropped)
            < count
        {
            turns += 1;
            assert!(turns < 10_000, "every send completes");
            assert_eq!(ring.turn(&mut context, &mut completions), Ok(false));
        }
        assert_eq!(WorkerStats::get(&stats.stats.send_dropped), 0);
        assert_eq!(ring.free.len(), ring.slots.len(), "every slot came back");

        // Past the cap, sends are dropped and counted.
        for i in 0..(MAX_SEND_SLOTS as u64 + 10) {
            context.io.send(0, to, &i.to_be_bytes());
        }
        ring.flush(&mut context.io, &stats.stats);
        assert_eq!(ring.slots.len(), MAX_SEND_SLOTS);
        assert_eq!(WorkerStats::get(&stats.stats.send_dropped), 10);
        let all = count + MAX_SEND_SLOTS as u64 + 10;
        while WorkerStats::get(&stats.stats.sent) + WorkerStats::get(&stats.stats.send_dropped)
            < all
        {
            turns += 1;
            assert!(turns < 100_000, "every send completes");
            assert_eq!(ring.turn(&mut context, &mut completions), Ok(false));
        }
    }
}
