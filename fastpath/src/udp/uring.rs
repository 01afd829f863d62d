//! The io_uring backend: one ring per worker (single issuer, deferred task running, no
//! SQPOLL: no core burns while idle), a multishot recvmsg per socket drawing from a
//! ring-mapped provided-buffer pool, sends as sendmsg operations from a fixed slab of send
//! slots, and a multishot poll on the worker's eventfd for sends from other threads. One
//! `submit_and_wait` per loop turn submits everything queued and reaps a batch.
#![allow(unsafe_code)]

use super::sockaddr::{self, RawAddr};
use super::{Handler, Io, LoopContext, WorkerStats};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

/// Submission queue entries.
const ENTRIES: u32 = 1024;
/// The provided-buffer group.
const GROUP: u16 = 0;
/// Sends in flight at most (more are dropped and counted).
const SEND_SLOTS: usize = 512;
/// user_data: operation in the top byte, socket or slot index below.
const TAG_SHIFT: u32 = 56;
const RECV: u64 = 1;
const SEND: u64 = 2;
const WAKE: u64 = 3;
const CANCEL: u64 = 4;
const TICK: u64 = 5;
const FILE_READ: u64 = 6;
const FILE_WRITE: u64 = 7;

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

/// One send in flight: its bytes, address and message header must stay put until the
/// completion comes back.
struct SendSlot {
    data: Vec<u8>,
    addr: RawAddr,
    iov: libc::iovec,
    msg: libc::msghdr,
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
    /// Fixed at creation and never resized: the slots' addresses stay put while the kernel
    /// holds pointers into them.
    slots: Vec<SendSlot>,
    free: Vec<usize>,
    /// The pending tick timeout's duration (the kernel reads it while the timeout waits).
    tick_spec: Box<types::Timespec>,
    tick_armed: bool,
    /// Each served file's read buffer, in flight while its read is.
    file_buffers: HashMap<usize, Vec<u8>>,
    /// Removed files, kept open until their cancelled read completes.
    closing_files: HashMap<usize, std::os::fd::OwnedFd>,
}

impl Ring {
    /// Sets up the ring and registers the buffer pool; fails where io_uring is unavailable.
    pub(super) fn new<H: Handler>(context: &LoopContext<H>) -> std::io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(ENTRIES)?;
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
        let slots = (0..SEND_SLOTS)
            .map(|_| SendSlot {
                data: Vec::with_capacity(2048),
                addr: RawAddr::new(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                msg: zeroed_msghdr(),
            })
            .collect();
        Ok(Ring {
            ring,
            buffers,
            recv_msg,
            slots,
            free: (0..SEND_SLOTS).rev().collect(),
            tick_spec: Box::new(types::Timespec::new()),
            tick_armed: false,
            file_buffers: HashMap::new(),
            closing_files: HashMap::new(),
        })
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry points into memory owned by `self` (the receive msghdr, the
            // send slots) or the kernel's provided buffers, all alive until the completion.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            if self.ring.submit().is_err() {
                return;
            }
        }
    }

    fn arm_recv(&mut self, index: usize, fd: RawFd) {
        let entry = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.recv_msg, GROUP)
            .build()
            .user_data((RECV << TAG_SHIFT) | index as u64);
        self.push(entry);
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

    /// Arms a timeout that completes when the handler's next tick is due.
    fn arm_tick(&mut self, wait: std::time::Duration) {
        *self.tick_spec = types::Timespec::new()
            .sec(wait.as_secs())
            .nsec(wait.subsec_nanos());
        let entry = opcode::Timeout::new(&*self.tick_spec)
            .build()
            .user_data(TICK << TAG_SHIFT);
        self.push(entry);
        self.tick_armed = true;
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
        if let Some(from) = sockaddr::parse(message.name_data()) {
            context.deliver(socket, from, message.payload_data());
        }
    }

    /// Turns the queued sends into sendmsg operations and file writes into write operations.
    fn flush(&mut self, io: &mut Io, stats: &WorkerStats) {
        let mut entries = Vec::new();
        io.drain_file_writes(|_, fd, bytes| {
            let (Some(fd), Some(index)) = (fd, self.free.pop()) else {
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
        io.drain_sends(|_, fd, to, bytes| {
            let (Some(fd), Some(index)) = (fd, self.free.pop()) else {
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
    fn apply_socket_changes(
        &mut self,
        io: &mut Io,
        closing: &mut HashMap<usize, std::net::UdpSocket>,
    ) {
        for index in std::mem::take(&mut io.added) {
            if let Some(fd) = io.fd(index) {
                self.arm_recv(index, fd);
            }
        }
        for (index, socket) in std::mem::take(&mut io.removed) {
            self.cancel((RECV << TAG_SHIFT) | index as u64);
            closing.insert(index, socket);
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

    /// Runs until the worker is stopped.
    pub(super) fn run<H: Handler>(mut self, mut context: LoopContext<H>) {
        let wake_fd = context.waker.fd.as_raw_fd();
        let mut closing = HashMap::new();
        self.apply_socket_changes(&mut context.io, &mut closing);
        self.arm_wake(wake_fd);
        if let Some(wait) = context.until_tick() {
            self.arm_tick(wait);
        }
        let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(ENTRIES as usize);
        let shared = context.shared.clone();
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
            completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            let mut rearm_wake = false;
            for (data, result, flags) in completions.drain(..) {
                let index = (data & ((1 << TAG_SHIFT) - 1)) as usize;
                match data >> TAG_SHIFT {
                    RECV => {
                        if let (true, Some(bid)) = (result >= 0, cqueue::buffer_select(flags)) {
                            if !closing.contains_key(&index) {
                                self.deliver(&mut context, index, bid, result as usize);
                            }
                            self.buffers.provide(bid);
                        }
                        if !cqueue::more(flags) {
                            if closing.remove(&index).is_some() {
                                // Cancelled: the socket closes, its slot may be reused.
                                context.io.release(index);
                            } else if let Some(fd) = context.io.fd(index) {
                                // Out of buffers (ENOBUFS) or an error ended the multishot:
                                // the buffers are handed back below, then it is armed again.
                                self.arm_recv(index, fd);
                            }
                        }
                    }
                    FILE_READ => self.file_read_done(&mut context, index, result),
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
                    TICK => self.tick_armed = false,
                    _ => {}
                }
            }
            self.buffers.publish();
            if rearm_wake {
                self.arm_wake(wake_fd);
            }
            if context.stopping() {
                return;
            }
            context.run_tick();
            if let (false, Some(wait)) = (self.tick_armed, context.until_tick()) {
                self.arm_tick(wait);
            }
            self.apply_socket_changes(&mut context.io, &mut closing);
            if context.io.has_sends() {
                self.flush(&mut context.io, &shared.stats);
            }
        }
    }
}
