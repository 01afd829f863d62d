//! The DAHDI user-space ABI (`dahdi/user.h`, dahdi-linux 2.11 / 3.x): constants, the
//! `#[repr(C)]` structures the ioctls exchange, and the ioctl request numbers.
//!
//! Every number, size and field offset here is compared with the real header by
//! `tests/dahdi_abi.rs`, which compiles a C program against Debian's `dahdi-source` header.

use std::mem::{offset_of, size_of};
use std::os::raw::{c_char, c_int, c_uint};

/// The DAHDI ioctl magic.
pub const DAHDI_CODE: u8 = 0xDA;

/// Longest dial string (`DAHDI_MAX_DTMF_BUF`).
pub const MAX_DTMF_BUF: usize = 256;
/// Ring cadence entries (`DAHDI_MAX_CADENCE`).
pub const MAX_CADENCE: usize = 16;

/// Hook states and operations for `DAHDI_HOOK`.
pub mod hook {
    /// Hang up.
    pub const ONHOOK: i32 = 0;
    /// Go off hook.
    pub const OFFHOOK: i32 = 1;
    /// Wink.
    pub const WINK: i32 = 2;
    /// Hook flash.
    pub const FLASH: i32 = 3;
    /// Start (ground start).
    pub const START: i32 = 4;
    /// Ring the phone (FXS port, FXO signalling).
    pub const RING: i32 = 5;
    /// Stop ringing.
    pub const RINGOFF: i32 = 6;
}

/// Flags for `DAHDI_FLUSH`.
pub mod flush {
    /// Read buffers.
    pub const READ: i32 = 1;
    /// Write buffers.
    pub const WRITE: i32 = 2;
    /// Queued events.
    pub const EVENT: i32 = 4;
}

/// Flags for `DAHDI_IOMUX`.
pub mod iomux {
    /// Readable.
    pub const READ: i32 = 1;
    /// Writable.
    pub const WRITE: i32 = 2;
    /// Write buffer empty.
    pub const WRITEEMPTY: i32 = 4;
    /// Signalling event.
    pub const SIGEVENT: i32 = 8;
    /// Do not wait.
    pub const NOWAIT: i32 = 0x100;
}

/// Events `DAHDI_GETEVENT` returns.
pub mod event {
    /// Line went on hook.
    pub const ONHOOK: i32 = 1;
    /// Ring detected / phone went off hook.
    pub const RINGOFFHOOK: i32 = 2;
    /// Wink or flash.
    pub const WINKFLASH: i32 = 3;
    /// Alarm.
    pub const ALARM: i32 = 4;
    /// Alarm cleared.
    pub const NOALARM: i32 = 5;
    /// DAHDI_DIAL finished.
    pub const DIALCOMPLETE: i32 = 9;
    /// Ringer on.
    pub const RINGERON: i32 = 10;
    /// Ringer off.
    pub const RINGEROFF: i32 = 11;
    /// Hook operation complete.
    pub const HOOKCOMPLETE: i32 = 12;
    /// CAS bits changed.
    pub const BITSCHANGED: i32 = 13;
    /// Start of a dial pulse.
    pub const PULSE_START: i32 = 14;
    /// Polarity reversal.
    pub const POLARITY: i32 = 17;
    /// Ring started (FXO port).
    pub const RINGBEGIN: i32 = 18;
    /// Device removed.
    pub const REMOVED: i32 = 20;
    /// Read overrun.
    pub const READ_OVERRUN: i32 = 29;
    /// Write underrun.
    pub const WRITE_UNDERRUN: i32 = 30;
    /// OR'd with a pulse-dialled digit.
    pub const PULSEDIGIT: i32 = 1 << 16;
    /// OR'd with a DTMF digit going down.
    pub const DTMFDOWN: i32 = 1 << 17;
    /// OR'd with a DTMF digit going up.
    pub const DTMFUP: i32 = 1 << 18;
}

/// Signalling types (`sigtype` of `dahdi_params`).
pub mod sig {
    /// FXS signalling, loop start (an FXO port, line side).
    pub const FXSLS: i32 = 0x2001;
    /// FXS signalling, ground start.
    pub const FXSGS: i32 = 0x2002;
    /// FXS signalling, kewl start.
    pub const FXSKS: i32 = 0x2004;
    /// FXO signalling, loop start (an FXS port, phone side).
    pub const FXOLS: i32 = 0x1008;
    /// FXO signalling, ground start.
    pub const FXOGS: i32 = 0x1010;
    /// FXO signalling, kewl start.
    pub const FXOKS: i32 = 0x1020;
}

/// Tones for `DAHDI_SENDTONE`.
pub mod tone {
    /// Stop the tone.
    pub const STOP: i32 = -1;
    /// Dial tone.
    pub const DIALTONE: i32 = 0;
    /// Busy.
    pub const BUSY: i32 = 1;
    /// Ringback.
    pub const RINGTONE: i32 = 2;
    /// Congestion.
    pub const CONGESTION: i32 = 3;
    /// Call waiting.
    pub const CALLWAIT: i32 = 4;
    /// Dial recall.
    pub const DIALRECALL: i32 = 5;
    /// Stutter dial tone.
    pub const STUTTER: i32 = 10;
}

/// Companding laws for `DAHDI_SETLAW`.
pub mod law {
    /// The span's default.
    pub const DEFAULT: i32 = 0;
    /// µ-law.
    pub const MULAW: i32 = 1;
    /// A-law.
    pub const ALAW: i32 = 2;
}

/// Operations of `dahdi_dialoperation`.
pub mod dial_op {
    /// Append to the dial string.
    pub const APPEND: i32 = 1;
    /// Replace it.
    pub const REPLACE: i32 = 2;
    /// Cancel dialling.
    pub const CANCEL: i32 = 3;
}

/// `struct dahdi_params` (136 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DahdiParams {
    pub channo: c_int,
    pub spanno: c_int,
    pub chanpos: c_int,
    pub sigtype: c_int,
    pub sigcap: c_int,
    pub rxisoffhook: c_int,
    pub rxbits: c_int,
    pub txbits: c_int,
    pub txhooksig: c_int,
    pub rxhooksig: c_int,
    pub curlaw: c_int,
    pub idlebits: c_int,
    pub name: [c_char; 40],
    pub prewinktime: c_int,
    pub preflashtime: c_int,
    pub winktime: c_int,
    pub flashtime: c_int,
    pub starttime: c_int,
    pub rxwinktime: c_int,
    pub rxflashtime: c_int,
    pub debouncetime: c_int,
    pub pulsebreaktime: c_int,
    pub pulsemaketime: c_int,
    pub pulseaftertime: c_int,
    pub chan_alarms: u32,
}

impl Default for DahdiParams {
    /// All zeros, as the kernel expects before DAHDI_GET_PARAMS.
    fn default() -> Self {
        DahdiParams {
            channo: 0,
            spanno: 0,
            chanpos: 0,
            sigtype: 0,
            sigcap: 0,
            rxisoffhook: 0,
            rxbits: 0,
            txbits: 0,
            txhooksig: 0,
            rxhooksig: 0,
            curlaw: 0,
            idlebits: 0,
            name: [0; 40],
            prewinktime: 0,
            preflashtime: 0,
            winktime: 0,
            flashtime: 0,
            starttime: 0,
            rxwinktime: 0,
            rxflashtime: 0,
            debouncetime: 0,
            pulsebreaktime: 0,
            pulsemaketime: 0,
            pulseaftertime: 0,
            chan_alarms: 0,
        }
    }
}

/// `struct dahdi_spaninfo` (packed, 314 bytes).
#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct DahdiSpanInfo {
    pub spanno: c_int,
    pub name: [c_char; 20],
    pub desc: [c_char; 40],
    pub alarms: c_int,
    pub txlevel: c_int,
    pub rxlevel: c_int,
    pub bpvcount: c_int,
    pub crc4count: c_int,
    pub ebitcount: c_int,
    pub fascount: c_int,
    pub fecount: u32,
    pub cvcount: u32,
    pub becount: u32,
    pub prbs: u32,
    pub errsec: u32,
    pub irqmisses: c_int,
    pub syncsrc: c_int,
    pub numchans: c_int,
    pub totalchans: c_int,
    pub totalspans: c_int,
    pub lbo: c_int,
    pub lineconfig: c_int,
    pub lboname: [c_char; 40],
    pub location: [c_char; 40],
    pub manufacturer: [c_char; 40],
    pub devicetype: [c_char; 40],
    pub irq: c_int,
    pub linecompat: c_int,
    pub spantype: [c_char; 6],
}

/// `struct dahdi_gains` (516 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DahdiGains {
    pub chan: c_int,
    pub rxgain: [u8; 256],
    pub txgain: [u8; 256],
}

/// `struct dahdi_bufferinfo` (24 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DahdiBufferInfo {
    pub txbufpolicy: c_int,
    pub rxbufpolicy: c_int,
    pub numbufs: c_int,
    pub bufsize: c_int,
    pub readbufs: c_int,
    pub writebufs: c_int,
}

/// `struct dahdi_dialoperation` (260 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DahdiDialOperation {
    pub op: c_int,
    pub dialstr: [c_char; MAX_DTMF_BUF],
}

/// `struct dahdi_echocanparams` (8 bytes; parameters follow it in memory).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DahdiEchoCanParams {
    pub tap_length: u32,
    pub param_count: u32,
}

/// `struct dahdi_ring_cadence` (64 bytes): on/off times in ms.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DahdiRingCadence {
    pub ringcadence: [c_int; MAX_CADENCE],
}

/// `struct dahdi_vmwi_info` (4 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DahdiVmwiInfo {
    pub vmwi_type: c_uint,
}

/// ioctl request numbers, as `_IOR/_IOW/_IOWR(DAHDI_CODE, nr, type)` compute them.
// The request type is `c_ulong` on glibc and `c_int` on musl: the casts are portable.
#[allow(clippy::unnecessary_cast)]
pub mod request {
    use super::*;
    use nix::{request_code_read, request_code_readwrite, request_code_write};

    const INT: usize = size_of::<c_int>();

    /// DAHDI_GET_BLOCKSIZE
    pub const GET_BLOCKSIZE: u64 = request_code_read!(DAHDI_CODE, 1, INT) as u64;
    /// DAHDI_SET_BLOCKSIZE
    pub const SET_BLOCKSIZE: u64 = request_code_write!(DAHDI_CODE, 1, INT) as u64;
    /// DAHDI_FLUSH
    pub const FLUSH: u64 = request_code_write!(DAHDI_CODE, 3, INT) as u64;
    /// DAHDI_GET_PARAMS
    pub const GET_PARAMS: u64 =
        request_code_readwrite!(DAHDI_CODE, 5, size_of::<DahdiParams>()) as u64;
    /// DAHDI_GET_PARAMS_V1 (old _IOR form)
    pub const GET_PARAMS_V1: u64 =
        request_code_read!(DAHDI_CODE, 5, size_of::<DahdiParams>()) as u64;
    /// DAHDI_SET_PARAMS
    pub const SET_PARAMS: u64 = request_code_write!(DAHDI_CODE, 5, size_of::<DahdiParams>()) as u64;
    /// DAHDI_HOOK
    pub const HOOK: u64 = request_code_write!(DAHDI_CODE, 7, INT) as u64;
    /// DAHDI_GETEVENT
    pub const GETEVENT: u64 = request_code_read!(DAHDI_CODE, 8, INT) as u64;
    /// DAHDI_IOMUX
    pub const IOMUX: u64 = request_code_readwrite!(DAHDI_CODE, 9, INT) as u64;
    /// DAHDI_SPANSTAT
    pub const SPANSTAT: u64 =
        request_code_readwrite!(DAHDI_CODE, 10, size_of::<DahdiSpanInfo>()) as u64;
    /// DAHDI_GETGAINS
    pub const GETGAINS: u64 =
        request_code_readwrite!(DAHDI_CODE, 16, size_of::<DahdiGains>()) as u64;
    /// DAHDI_SETGAINS
    pub const SETGAINS: u64 = request_code_write!(DAHDI_CODE, 16, size_of::<DahdiGains>()) as u64;
    /// DAHDI_SENDTONE
    pub const SENDTONE: u64 = request_code_write!(DAHDI_CODE, 21, INT) as u64;
    /// DAHDI_SETTONEZONE
    pub const SETTONEZONE: u64 = request_code_write!(DAHDI_CODE, 22, INT) as u64;
    /// DAHDI_GET_BUFINFO
    pub const GET_BUFINFO: u64 =
        request_code_read!(DAHDI_CODE, 27, size_of::<DahdiBufferInfo>()) as u64;
    /// DAHDI_SET_BUFINFO
    pub const SET_BUFINFO: u64 =
        request_code_write!(DAHDI_CODE, 27, size_of::<DahdiBufferInfo>()) as u64;
    /// DAHDI_DIAL
    pub const DIAL: u64 =
        request_code_write!(DAHDI_CODE, 31, size_of::<DahdiDialOperation>()) as u64;
    /// DAHDI_ECHOCANCEL_PARAMS
    pub const ECHOCANCEL_PARAMS: u64 =
        request_code_write!(DAHDI_CODE, 33, size_of::<DahdiEchoCanParams>()) as u64;
    /// DAHDI_DIALING
    pub const DIALING: u64 = request_code_read!(DAHDI_CODE, 35, INT) as u64;
    /// DAHDI_SPECIFY
    pub const SPECIFY: u64 = request_code_write!(DAHDI_CODE, 38, INT) as u64;
    /// DAHDI_SETLAW
    pub const SETLAW: u64 = request_code_write!(DAHDI_CODE, 39, INT) as u64;
    /// DAHDI_SETLINEAR
    pub const SETLINEAR: u64 = request_code_write!(DAHDI_CODE, 40, INT) as u64;
    /// DAHDI_SETCADENCE
    pub const SETCADENCE: u64 =
        request_code_write!(DAHDI_CODE, 42, size_of::<DahdiRingCadence>()) as u64;
    /// DAHDI_CHANDIAG
    pub const CHANDIAG: u64 = request_code_write!(DAHDI_CODE, 44, INT) as u64;
    /// DAHDI_ECHOTRAIN
    pub const ECHOTRAIN: u64 = request_code_write!(DAHDI_CODE, 50, INT) as u64;
    /// DAHDI_ONHOOKTRANSFER
    pub const ONHOOKTRANSFER: u64 = request_code_write!(DAHDI_CODE, 51, INT) as u64;
    /// DAHDI_SETPOLARITY
    pub const SETPOLARITY: u64 = request_code_write!(DAHDI_CODE, 92, INT) as u64;
    /// DAHDI_VMWI
    pub const VMWI: u64 = request_code_readwrite!(DAHDI_CODE, 94, INT) as u64;
    /// DAHDI_VMWI_CONFIG
    pub const VMWI_CONFIG: u64 =
        request_code_write!(DAHDI_CODE, 95, size_of::<DahdiVmwiInfo>()) as u64;
}

/// Every ABI fact as (C expression, value): ioctl numbers, struct sizes, field offsets and
/// constants. The ABI test prints the same expressions from C and compares.
pub fn abi_facts() -> Vec<(&'static str, u64)> {
    use request as r;
    macro_rules! offsets {
        ($ty:ty, $c:literal: $($field:ident),+) => {
            vec![$((concat!("offsetof(struct ", $c, ", ", stringify!($field), ")"), offset_of!($ty, $field) as u64)),+]
        };
    }
    let mut facts: Vec<(&'static str, u64)> = vec![
        ("DAHDI_GET_BLOCKSIZE", r::GET_BLOCKSIZE),
        ("DAHDI_SET_BLOCKSIZE", r::SET_BLOCKSIZE),
        ("DAHDI_FLUSH", r::FLUSH),
        ("DAHDI_GET_PARAMS", r::GET_PARAMS),
        ("DAHDI_GET_PARAMS_V1", r::GET_PARAMS_V1),
        ("DAHDI_SET_PARAMS", r::SET_PARAMS),
        ("DAHDI_HOOK", r::HOOK),
        ("DAHDI_GETEVENT", r::GETEVENT),
        ("DAHDI_IOMUX", r::IOMUX),
        ("DAHDI_SPANSTAT", r::SPANSTAT),
        ("DAHDI_GETGAINS", r::GETGAINS),
        ("DAHDI_SETGAINS", r::SETGAINS),
        ("DAHDI_SENDTONE", r::SENDTONE),
        ("DAHDI_SETTONEZONE", r::SETTONEZONE),
        ("DAHDI_GET_BUFINFO", r::GET_BUFINFO),
        ("DAHDI_SET_BUFINFO", r::SET_BUFINFO),
        ("DAHDI_DIAL", r::DIAL),
        ("DAHDI_ECHOCANCEL_PARAMS", r::ECHOCANCEL_PARAMS),
        ("DAHDI_DIALING", r::DIALING),
        ("DAHDI_SPECIFY", r::SPECIFY),
        ("DAHDI_SETLAW", r::SETLAW),
        ("DAHDI_SETLINEAR", r::SETLINEAR),
        ("DAHDI_SETCADENCE", r::SETCADENCE),
        ("DAHDI_CHANDIAG", r::CHANDIAG),
        ("DAHDI_ECHOTRAIN", r::ECHOTRAIN),
        ("DAHDI_ONHOOKTRANSFER", r::ONHOOKTRANSFER),
        ("DAHDI_SETPOLARITY", r::SETPOLARITY),
        ("DAHDI_VMWI", r::VMWI),
        ("DAHDI_VMWI_CONFIG", r::VMWI_CONFIG),
        (
            "sizeof(struct dahdi_params)",
            size_of::<DahdiParams>() as u64,
        ),
        (
            "sizeof(struct dahdi_spaninfo)",
            size_of::<DahdiSpanInfo>() as u64,
        ),
        ("sizeof(struct dahdi_gains)", size_of::<DahdiGains>() as u64),
        (
            "sizeof(struct dahdi_bufferinfo)",
            size_of::<DahdiBufferInfo>() as u64,
        ),
        (
            "sizeof(struct dahdi_dialoperation)",
            size_of::<DahdiDialOperation>() as u64,
        ),
        (
            "sizeof(struct dahdi_echocanparams)",
            size_of::<DahdiEchoCanParams>() as u64,
        ),
        (
            "sizeof(struct dahdi_ring_cadence)",
            size_of::<DahdiRingCadence>() as u64,
        ),
        (
            "sizeof(struct dahdi_vmwi_info)",
            size_of::<DahdiVmwiInfo>() as u64,
        ),
        ("DAHDI_MAX_DTMF_BUF", MAX_DTMF_BUF as u64),
        ("DAHDI_MAX_CADENCE", MAX_CADENCE as u64),
    ];
    let constants: [(&'static str, i32); 55] = [
        ("DAHDI_ONHOOK", hook::ONHOOK),
        ("DAHDI_OFFHOOK", hook::OFFHOOK),
        ("DAHDI_WINK", hook::WINK),
        ("DAHDI_FLASH", hook::FLASH),
        ("DAHDI_START", hook::START),
        ("DAHDI_RING", hook::RING),
        ("DAHDI_RINGOFF", hook::RINGOFF),
        ("DAHDI_FLUSH_READ", flush::READ),
        ("DAHDI_FLUSH_WRITE", flush::WRITE),
        ("DAHDI_FLUSH_EVENT", flush::EVENT),
        ("DAHDI_IOMUX_READ", iomux::READ),
        ("DAHDI_IOMUX_WRITE", iomux::WRITE),
        ("DAHDI_IOMUX_WRITEEMPTY", iomux::WRITEEMPTY),
        ("DAHDI_IOMUX_SIGEVENT", iomux::SIGEVENT),
        ("DAHDI_IOMUX_NOWAIT", iomux::NOWAIT),
        ("DAHDI_EVENT_ONHOOK", event::ONHOOK),
        ("DAHDI_EVENT_RINGOFFHOOK", event::RINGOFFHOOK),
        ("DAHDI_EVENT_WINKFLASH", event::WINKFLASH),
        ("DAHDI_EVENT_ALARM", event::ALARM),
        ("DAHDI_EVENT_NOALARM", event::NOALARM),
        ("DAHDI_EVENT_DIALCOMPLETE", event::DIALCOMPLETE),
        ("DAHDI_EVENT_RINGERON", event::RINGERON),
        ("DAHDI_EVENT_RINGEROFF", event::RINGEROFF),
        ("DAHDI_EVENT_HOOKCOMPLETE", event::HOOKCOMPLETE),
        ("DAHDI_EVENT_BITSCHANGED", event::BITSCHANGED),
        ("DAHDI_EVENT_PULSE_START", event::PULSE_START),
        ("DAHDI_EVENT_POLARITY", event::POLARITY),
        ("DAHDI_EVENT_RINGBEGIN", event::RINGBEGIN),
        ("DAHDI_EVENT_REMOVED", event::REMOVED),
        ("DAHDI_EVENT_READ_OVERRUN", event::READ_OVERRUN),
        ("DAHDI_EVENT_WRITE_UNDERRUN", event::WRITE_UNDERRUN),
        ("DAHDI_EVENT_PULSEDIGIT", event::PULSEDIGIT),
        ("DAHDI_EVENT_DTMFDOWN", event::DTMFDOWN),
        ("DAHDI_EVENT_DTMFUP", event::DTMFUP),
        ("DAHDI_SIG_FXSLS", sig::FXSLS),
        ("DAHDI_SIG_FXSGS", sig::FXSGS),
        ("DAHDI_SIG_FXSKS", sig::FXSKS),
        ("DAHDI_SIG_FXOLS", sig::FXOLS),
        ("DAHDI_SIG_FXOGS", sig::FXOGS),
        ("DAHDI_SIG_FXOKS", sig::FXOKS),
        ("DAHDI_TONE_STOP", tone::STOP),
        ("DAHDI_TONE_DIALTONE", tone::DIALTONE),
        ("DAHDI_TONE_BUSY", tone::BUSY),
        ("DAHDI_TONE_RINGTONE", tone::RINGTONE),
        ("DAHDI_TONE_CONGESTION", tone::CONGESTION),
        ("DAHDI_TONE_CALLWAIT", tone::CALLWAIT),
        ("DAHDI_TONE_DIALRECALL", tone::DIALRECALL),
        ("DAHDI_TONE_STUTTER", tone::STUTTER),
        ("DAHDI_LAW_DEFAULT", law::DEFAULT),
        ("DAHDI_LAW_MULAW", law::MULAW),
        ("DAHDI_LAW_ALAW", law::ALAW),
        ("DAHDI_DIAL_OP_APPEND", dial_op::APPEND),
        ("DAHDI_DIAL_OP_REPLACE", dial_op::REPLACE),
        ("DAHDI_DIAL_OP_CANCEL", dial_op::CANCEL),
        ("DAHDI_CODE", DAHDI_CODE as i32),
    ];
    facts.extend(
        constants
            .iter()
            .map(|(name, value)| (*name, *value as i64 as u64)),
    );
    facts.extend(
        offsets!(DahdiParams, "dahdi_params": channo, spanno, chanpos, sigtype, sigcap,
        rxisoffhook, rxbits, txbits, txhooksig, rxhooksig, curlaw, idlebits, name, prewinktime,
        preflashtime, winktime, flashtime, starttime, rxwinktime, rxflashtime, debouncetime,
        pulsebreaktime, pulsemaketime, pulseaftertime, chan_alarms),
    );
    facts.extend(
        offsets!(DahdiSpanInfo, "dahdi_spaninfo": spanno, name, desc, alarms, txlevel,
        rxlevel, bpvcount, crc4count, ebitcount, fascount, fecount, cvcount, becount, prbs, errsec,
        irqmisses, syncsrc, numchans, totalchans, totalspans, lbo, lineconfig, lboname, location,
        manufacturer, devicetype, irq, linecompat, spantype),
    );
    facts.extend(offsets!(DahdiGains, "dahdi_gains": chan, rxgain, txgain));
    facts.extend(
        offsets!(DahdiBufferInfo, "dahdi_bufferinfo": txbufpolicy, rxbufpolicy, numbufs,
        bufsize, readbufs, writebufs),
    );
    facts.extend(offsets!(DahdiDialOperation, "dahdi_dialoperation": op, dialstr));
    facts.extend(offsets!(DahdiEchoCanParams, "dahdi_echocanparams": tap_length, param_count));
    facts.extend(offsets!(DahdiRingCadence, "dahdi_ring_cadence": ringcadence));
    facts.extend(offsets!(DahdiVmwiInfo, "dahdi_vmwi_info": vmwi_type));
    facts
}
