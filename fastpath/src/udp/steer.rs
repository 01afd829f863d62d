//! Steering each datagram to the socket of its call's shard, in the kernel: a BPF program
//! on the SIP port's `SO_REUSEPORT` group reads the datagram's Call-ID, hashes it as
//! [`crate::preparse::shard_of`] does and picks socket `shard_of(call_id, shards)` of the
//! group, so the datagram is received by the worker whose engine shard owns the call and is
//! handled there, without a hand-over between workers.
//!
//! The program only saves work; it never decides where a message is handled. A datagram it
//! cannot read in its simple way (no `Call-ID:` or `i:` line within the first
//! [`SCAN`] bytes, white space before the colon or after the value, a value longer than
//! [`MAX_CALL_ID`] bytes, a routed Call-ID) is spread by the kernel's own hash of the
//! addresses, as without the program, and the worker that receives it hands it to its
//! shard. Without the program (no `CAP_BPF`, an older kernel) the gateway works the same,
//! with more hand-overs.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// Bytes of a datagram the program searches for the Call-ID header.
pub const SCAN: u32 = 1024;
/// The longest Call-ID value the program hashes.
pub const MAX_CALL_ID: i32 = 256;

/// Why the steering program could not be attached (the gateway then runs without it).
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// `bpf(BPF_MAP_CREATE)` failed.
    #[error("cannot create the steering program's scratch map: {0} (BPF needs CAP_BPF or root, and kernel.unprivileged_bpf_disabled blocks it for others)")]
    Map(std::io::Error),
    /// The kernel refused the program; the verifier's last words are kept.
    #[error(
        "the kernel refused the Call-ID steering program: {error} (BPF needs CAP_BPF or root){log}"
    )]
    Load {
        /// What `bpf(BPF_PROG_LOAD)` said.
        error: std::io::Error,
        /// The end of the verifier's log, if it wrote one.
        log: String,
    },
    /// `setsockopt(SO_ATTACH_REUSEPORT_EBPF)` failed.
    #[error("cannot attach the Call-ID steering program to the SIP sockets: {0}")]
    Attach(std::io::Error),
    /// One socket needs no steering, and the program's divisor is a 32-bit immediate.
    #[error("steering needs 2 sockets or more (up to 2^31), not {0}")]
    Shards(usize),
}

/// Attaches the steering program to the reuse-port group `socket` belongs to: datagrams
/// for its port then go to socket `shard_of(Call-ID, shards)` of the group, counted in the
/// order the sockets were bound (as [`super::bind_shared`] binds them).
pub fn steer_by_call_id(socket: &impl AsFd, shards: usize) -> Result<(), SteerError> {
    let shards = i32::try_from(shards)
        .ok()
        .filter(|&n| n > 1)
        .ok_or(SteerError::Shards(shards))?;
    let map = scratch_map().map_err(SteerError::Map)?;
    let program = load(&program(map.as_raw_fd(), shards))?;
    let fd = program.as_raw_fd();
    // SAFETY: the option value is a valid c_int of the size given, read by the kernel only
    // during the call; the socket is a live descriptor borrowed for the call.
    let attached = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_EBPF,
            std::ptr::from_ref(&fd).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if attached != 0 {
        return Err(SteerError::Attach(std::io::Error::last_os_error()));
    }
    // The group holds the program, the program its map: both descriptors may close.
    Ok(())
}

/// Offsets in the scratch map's value: the copied datagram, then where the Call-ID value
/// starts and how many bytes were copied, kept there so that every path through the
/// header search reaches the hashing as one state for the verifier.
const VALUE_START: i16 = SCAN as i16;
const COPIED: i16 = SCAN as i16 + 8;
const VALUE_SIZE: u32 = SCAN + 16;

/// A per-CPU array of one value: the program's scratch (the datagram's first bytes). The
/// program runs with bottom halves off, so nothing else on the CPU uses it meanwhile.
fn scratch_map() -> std::io::Result<OwnedFd> {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        rest: [u8; 112],
    }
    const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
    let attr = MapCreate {
        map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
        key_size: 4,
        value_size: VALUE_SIZE,
        max_entries: 1,
        rest: [0; 112],
    };
    bpf(
        BPF_MAP_CREATE,
        std::ptr::from_ref(&attr).cast(),
        std::mem::size_of_val(&attr),
    )
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;

/// Calls `bpf(cmd, attr, size)` for a command that returns a new descriptor.
fn bpf(cmd: libc::c_long, attr: *const libc::c_void, size: usize) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` points to `size` readable bytes laid out as the command's `bpf_attr`
    // member (zero past the fields used), alive for the call; pointers inside it point
    // to memory alive for the call too.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| std::io::Error::other("bpf: bad descriptor"))?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads `instructions` as a socket filter program; on a refusal, again with the
/// verifier's log, whose end the error carries.
fn load(instructions: &[u64]) -> Result<OwnedFd, SteerError> {
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        rest: [u8; 64],
    }
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    // The program calls no GPL-only helper; the license is the project's.
    const LICENSE: &[u8] = b"MIT\0";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"sip_call_id");
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: instructions.len() as u32,
        insns: instructions.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        rest: [0; 64],
    };
    let size = std::mem::size_of_val(&attr);
    let error = match bpf(BPF_PROG_LOAD, std::ptr::from_ref(&attr).cast(), size) {
        Ok(program) => return Ok(program),
        Err(error) => error,
    };
    if error.raw_os_error() == Some(libc::EPERM) {
        let log = String::new();
        return Err(SteerError::Load { error, log });
    }
    // Refused: again, with the verifier's log.
    let mut log = vec![0u8; 1 << 20];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    let error = match bpf(BPF_PROG_LOAD, std::ptr::from_ref(&attr).cast(), size) {
        Ok(program) => return Ok(program),
        Err(error) => error,
    };
    let text = String::from_utf8_lossy(&log);
    let last: Vec<&str> = text.trim_end_matches('\0').lines().rev().take(6).collect();
    let log = last.into_iter().rev().collect::<Vec<_>>().join("; ");
    let log = if log.is_empty() {
        log
    } else {
        format!("; verifier: {log}")
    };
    Err(SteerError::Load { error, log })
}

/// The program, in eBPF instructions (a socket filter: on a reuse-port group its return
/// value is the index of the socket to receive the datagram, anything too large meaning
/// "spread by the kernel's hash"). Registers: r6 the datagram (`__sk_buff`), r7 the
/// scratch, r8 a position in it, r9 the bytes copied, r3 the hash.
fn program(map_fd: i32, shards: i32) -> Vec<u64> {
    use asm::{Asm, Reg::*};
    let mut a = Asm::default();
    let [scan, short, found, value, hash, end, fallback] = [(); 7].map(|_| a.label());
    a.mov_reg(R6, R1);
    a.load(asm::W, R9, R6, 0); // __sk_buff.len: the payload's length
    a.store_imm(asm::W, R10, -4, 0); // the map key
    a.load_map_fd(R1, map_fd);
    a.mov_reg(R2, R10);
    a.add_imm(R2, -4);
    a.call(asm::MAP_LOOKUP_ELEM);
    a.jump_imm(asm::JEQ, R0, 0, fallback);
    a.mov_reg(R7, R0);
    let copy = a.label();
    a.jump_imm(asm::JLE, R9, SCAN as i32, copy);
    a.mov_imm(R9, SCAN as i32);
    a.bind(copy);
    a.jump_imm(asm::JLT, R9, 16, fallback); // too short to be SIP
    a.store(asm::DW, R7, COPIED, R9);
    a.mov_reg(R1, R6);
    a.mov_imm(R2, 0);
    a.mov_reg(R3, R7);
    a.mov_reg(R4, R9);
    a.call(asm::SKB_LOAD_BYTES);
    a.jump_imm(asm::JNE, R0, 0, fallback);
    // The line feeds: after each, a header line starts.
    a.mov_imm(R8, 0);
    a.bind(scan);
    a.jump_reg(asm::JGE, R8, R9, fallback);
    a.mov_reg(R1, R7);
    a.add_reg(R1, R8);
    a.load(asm::B, R2, R1, 0);
    a.add_imm(R8, 1);
    a.jump_imm(asm::JNE, R2, i32::from(b'\n'), scan);
    a.jump_imm(asm::JGT, R8, SCAN as i32 - 8, fallback);
    a.mov_reg(R1, R7);
    a.add_reg(R1, R8);
    // `call-id:` in any case: the eight bytes with the 0x20 bit set (`-` and `:` have it).
    a.load(asm::DW, R2, R1, 0);
    a.load_imm64(R3, 0x2020_2020_2020_2020);
    a.or_reg(R2, R3);
    a.load_imm64(R3, u64::from_le_bytes(*b"call-id:"));
    a.jump_reg(asm::JNE, R2, R3, short);
    a.add_imm(R8, 8);
    a.jump(found);
    // `i:` in any case.
    a.bind(short);
    a.load(asm::H, R2, R1, 0);
    a.or_imm(R2, 0x20);
    a.jump_imm(asm::JNE, R2, i32::from(u16::from_le_bytes(*b"i:")), scan);
    a.add_imm(R8, 2);
    a.bind(found);
    // Through memory, so that the verifier sees one state whichever line it was.
    a.store(asm::DW, R7, VALUE_START, R8);
    a.load(asm::DW, R8, R7, VALUE_START);
    a.load(asm::DW, R9, R7, COPIED);
    a.jump_imm(asm::JGT, R9, SCAN as i32, fallback);
    // Up to four spaces before the value.
    for _ in 0..4 {
        a.jump_reg(asm::JGE, R8, R9, fallback);
        a.mov_reg(R1, R7);
        a.add_reg(R1, R8);
        a.load(asm::B, R2, R1, 0);
        a.jump_imm(asm::JNE, R2, i32::from(b' '), value);
        a.add_imm(R8, 1);
    }
    a.jump(fallback);
    // FNV-1a over the value, up to the end of its line.
    a.bind(value);
    a.load_imm64(R3, FNV_OFFSET);
    a.load_imm64(R5, FNV_PRIME);
    a.mov_imm(R4, 0);
    a.bind(hash);
    a.jump_imm(asm::JGE, R4, MAX_CALL_ID, fallback);
    a.mov_reg(R1, R8);
    a.add_reg(R1, R4);
    a.jump_reg(asm::JGE, R1, R9, fallback);
    a.add_reg(R1, R7);
    a.load(asm::B, R2, R1, 0);
    a.jump_imm(asm::JEQ, R2, i32::from(b'\r'), end);
    a.jump_imm(asm::JEQ, R2, i32::from(b'\n'), end);
    a.xor_reg(R3, R2);
    a.mul_reg(R3, R5);
    a.add_imm(R4, 1);
    a.jump(hash);
    a.bind(end);
    a.jump_imm(asm::JEQ, R4, 0, fallback);
    a.mov_reg(R0, R3);
    a.mod_imm(R0, shards);
    a.exit();
    a.bind(fallback);
    a.mov32_imm(R0, -1);
    a.exit();
    a.finish()
}

/// FNV-1a's offset basis and prime, as [`crate::preparse::shard_of`] uses them.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Just enough of an eBPF assembler for [`program`]: instructions as the kernel's
/// `struct bpf_insn` (opcode, registers, offset, immediate, little-endian), jumps to labels
/// resolved at the end.
mod asm {
    /// An eBPF register: r0 results, r1-r5 a call's arguments (clobbered by it), r6-r9 kept
    /// across calls, r10 the read-only frame pointer.
    #[derive(Clone, Copy)]
    pub enum Reg {
        R0 = 0,
        R1,
        R2,
        R3,
        R4,
        R5,
        R6,
        R7,
        R8,
        R9,
        R10,
    }

    /// Memory access sizes.
    pub const W: u8 = 0x00;
    pub const H: u8 = 0x08;
    pub const B: u8 = 0x10;
    pub const DW: u8 = 0x18;
    /// Jump conditions (unsigned).
    pub const JEQ: u8 = 0x10;
    pub const JGT: u8 = 0x20;
    pub const JGE: u8 = 0x30;
    pub const JNE: u8 = 0x50;
    pub const JLT: u8 = 0xa0;
    pub const JLE: u8 = 0xb0;
    /// Helper functions.
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const SKB_LOAD_BYTES: i32 = 26;

    const LDX: u8 = 0x01;
    const ST: u8 = 0x02;
    const STX: u8 = 0x03;
    const ALU: u8 = 0x04;
    const JMP: u8 = 0x05;
    const ALU64: u8 = 0x07;
    const MEM: u8 = 0x60;
    const K: u8 = 0x00;
    const X: u8 = 0x08;
    const ADD: u8 = 0x00;
    const MUL: u8 = 0x20;
    const OR: u8 = 0x40;
    const MOD: u8 = 0x90;
    const XOR: u8 = 0xa0;
    const MOV: u8 = 0xb0;
    const JA: u8 = 0x00;
    const CALL: u8 = 0x80;
    const EXIT: u8 = 0x90;
    const LD_IMM64: u8 = 0x18;
    /// `BPF_PSEUDO_MAP_FD` (1) in the source register of a 64-bit load: the immediate is a
    /// map's descriptor.
    const PSEUDO_MAP_FD: Reg = Reg::R1;

    /// A place in the program, bound once.
    #[derive(Clone, Copy)]
    pub struct Label(usize);

    /// The program being written.
    #[derive(Default)]
    pub struct Asm {
        code: Vec<u64>,
        labels: Vec<Option<usize>>,
        /// Jumps and the labels they go to.
        jumps: Vec<(usize, Label)>,
    }

    fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> u64 {
        u64::from(code)
            | u64::from(dst as u8) << 8
            | u64::from(src as u8) << 12
            | u64::from(off as u16) << 16
            | u64::from(imm as u32) << 32
    }

    impl Asm {
        /// A new label, to bind once and jump to from anywhere.
        pub fn label(&mut self) -> Label {
            self.labels.push(None);
            Label(self.labels.len() - 1)
        }
        /// Places `label` at the next instruction.
        pub fn bind(&mut self, label: Label) {
            self.labels[label.0] = Some(self.code.len());
        }
        fn emit(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
            self.code.push(insn(code, dst, src, off, imm));
        }
        /// `dst = src` (64 bits).
        pub fn mov_reg(&mut self, dst: Reg, src: Reg) {
            self.emit(ALU64 | MOV | X, dst, src, 0, 0);
        }
        /// `dst = imm`, sign-extended to 64 bits.
        pub fn mov_imm(&mut self, dst: Reg, imm: i32) {
            self.emit(ALU64 | MOV | K, dst, Reg::R0, 0, imm);
        }
        /// A 32-bit move: the upper half cleared (`-1` is `0xffff_ffff`).
        pub fn mov32_imm(&mut self, dst: Reg, imm: i32) {
            self.emit(ALU | MOV | K, dst, Reg::R0, 0, imm);
        }
        /// `dst += imm`.
        pub fn add_imm(&mut self, dst: Reg, imm: i32) {
            self.emit(ALU64 | ADD | K, dst, Reg::R0, 0, imm);
        }
        /// `dst += src`.
        pub fn add_reg(&mut self, dst: Reg, src: Reg) {
            self.emit(ALU64 | ADD | X, dst, src, 0, 0);
        }
        /// `dst |= imm`.
        pub fn or_imm(&mut self, dst: Reg, imm: i32) {
            self.emit(ALU64 | OR | K, dst, Reg::R0, 0, imm);
        }
        /// `dst |= src`.
        pub fn or_reg(&mut self, dst: Reg, src: Reg) {
            self.emit(ALU64 | OR | X, dst, src, 0, 0);
        }
        /// `dst ^= src`.
        pub fn xor_reg(&mut self, dst: Reg, src: Reg) {
            self.emit(ALU64 | XOR | X, dst, src, 0, 0);
        }
        /// `dst *= src` (wrapping).
        pub fn mul_reg(&mut self, dst: Reg, src: Reg) {
            self.emit(ALU64 | MUL | X, dst, src, 0, 0);
        }
        /// Unsigned remainder by a constant.
        pub fn mod_imm(&mut self, dst: Reg, imm: i32) {
            self.emit(ALU64 | MOD | K, dst, Reg::R0, 0, imm);
        }
        /// `dst = *(size *)(src + off)`.
        pub fn load(&mut self, size: u8, dst: Reg, src: Reg, off: i16) {
            self.emit(LDX | MEM | size, dst, src, off, 0);
        }
        /// `*(size *)(dst + off) = src`.
        pub fn store(&mut self, size: u8, dst: Reg, off: i16, src: Reg) {
            self.emit(STX | MEM | size, dst, src, off, 0);
        }
        /// `*(size *)(dst + off) = imm`.
        pub fn store_imm(&mut self, size: u8, dst: Reg, off: i16, imm: i32) {
            self.emit(ST | MEM | size, dst, Reg::R0, off, imm);
        }
        /// `dst = value`, a 64-bit constant (two instruction slots).
        pub fn load_imm64(&mut self, dst: Reg, value: u64) {
            self.emit(LD_IMM64, dst, Reg::R0, 0, value as u32 as i32);
            self.emit(0, Reg::R0, Reg::R0, 0, (value >> 32) as u32 as i32);
        }
        /// `dst` = the map behind descriptor `fd` (the kernel puts its address there).
        pub fn load_map_fd(&mut self, dst: Reg, fd: i32) {
            self.emit(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd);
            self.emit(0, Reg::R0, Reg::R0, 0, 0);
        }
        /// Calls kernel helper number `helper` (arguments in r1-r5, result in r0).
        pub fn call(&mut self, helper: i32) {
            self.emit(JMP | CALL, Reg::R0, Reg::R0, 0, helper);
        }
        /// Returns r0.
        pub fn exit(&mut self) {
            self.emit(JMP | EXIT, Reg::R0, Reg::R0, 0, 0);
        }
        /// Jumps to `to`.
        pub fn jump(&mut self, to: Label) {
            self.jumps.push((self.code.len(), to));
            self.emit(JMP | JA, Reg::R0, Reg::R0, 0, 0);
        }
        /// Jumps to `to` if `dst op imm` (unsigned).
        pub fn jump_imm(&mut self, op: u8, dst: Reg, imm: i32, to: Label) {
            self.jumps.push((self.code.len(), to));
            self.emit(JMP | op | K, dst, Reg::R0, 0, imm);
        }
        /// Jumps to `to` if `dst op src` (unsigned).
        pub fn jump_reg(&mut self, op: u8, dst: Reg, src: Reg, to: Label) {
            self.jumps.push((self.code.len(), to));
            self.emit(JMP | op | X, dst, src, 0, 0);
        }
        /// The instructions, every jump's offset filled in.
        pub fn finish(mut self) -> Vec<u64> {
            for &(at, label) in &self.jumps {
                let target = self.labels[label.0].expect("every label used is bound");
                let off = target as i64 - at as i64 - 1;
                let off = i16::try_from(off).expect("the program is short");
                self.code[at] = (self.code[at] & !0xffff_0000) | u64::from(off as u16) << 16;
            }
            self.code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_are_resolved_relative_to_the_next_instruction() {
        use asm::{Asm, Reg::*};
        let mut a = Asm::default();
        let [back, ahead] = [(); 2].map(|_| a.label());
        a.bind(back);
        a.mov_imm(R0, 1);
        a.jump_imm(asm::JEQ, R0, 1, ahead);
        a.jump(back);
        a.bind(ahead);
        a.exit();
        let code = a.finish();
        let off = |insn: u64| (insn >> 16) as u16 as i16;
        assert_eq!(off(code[1]), 1, "over the jump back");
        assert_eq!(off(code[2]), -3, "back to the first");
        assert_eq!(code[1] & 0xff, 0x15, "BPF_JMP | BPF_JEQ | BPF_K");
    }
}
