//! The DAHDI ioctls as functions (nix). Every argument goes by pointer, as the kernel
//! expects (never `ioctl_write_int!`). Calling them is unsafe: the caller passes an open
//! DAHDI file descriptor, and for `SPECIFY` first on `/dev/dahdi/channel`.
#![allow(unsafe_code)]

use super::abi::{
    DahdiBufferInfo, DahdiDialOperation, DahdiEchoCanParams, DahdiGains, DahdiParams,
    DahdiRingCadence, DahdiSpanInfo, DahdiVmwiInfo, DAHDI_CODE,
};
use nix::{ioctl_read, ioctl_readwrite, ioctl_write_ptr};
use std::os::raw::c_int;

ioctl_read!(
    /// DAHDI_GET_BLOCKSIZE: samples per read/write block.
    get_blocksize, DAHDI_CODE, 1, c_int);
ioctl_write_ptr!(
    /// DAHDI_SET_BLOCKSIZE (16..8192; 160 = 20 ms).
    set_blocksize, DAHDI_CODE, 1, c_int);
ioctl_write_ptr!(
    /// DAHDI_FLUSH with READ/WRITE/EVENT flags.
    flush, DAHDI_CODE, 3, c_int);
ioctl_readwrite!(
    /// DAHDI_GET_PARAMS (zero the struct first).
    get_params, DAHDI_CODE, 5, DahdiParams);
ioctl_write_ptr!(
    /// DAHDI_SET_PARAMS.
    set_params, DAHDI_CODE, 5, DahdiParams);
ioctl_write_ptr!(
    /// DAHDI_HOOK: ONHOOK, OFFHOOK, WINK, FLASH, START, RING, RINGOFF.
    hook, DAHDI_CODE, 7, c_int);
ioctl_read!(
    /// DAHDI_GETEVENT: the next queued event.
    get_event, DAHDI_CODE, 8, c_int);
ioctl_readwrite!(
    /// DAHDI_IOMUX: wait for READ/WRITE/SIGEVENT.
    iomux, DAHDI_CODE, 9, c_int);
ioctl_readwrite!(
    /// DAHDI_SPANSTAT: span status and alarms.
    span_stat, DAHDI_CODE, 10, DahdiSpanInfo);
ioctl_readwrite!(
    /// DAHDI_GETGAINS.
    get_gains, DAHDI_CODE, 16, DahdiGains);
ioctl_write_ptr!(
    /// DAHDI_SETGAINS.
    set_gains, DAHDI_CODE, 16, DahdiGains);
ioctl_write_ptr!(
    /// DAHDI_SENDTONE (tone id, -1 stops).
    send_tone, DAHDI_CODE, 21, c_int);
ioctl_write_ptr!(
    /// DAHDI_SETTONEZONE.
    set_tone_zone, DAHDI_CODE, 22, c_int);
ioctl_read!(
    /// DAHDI_GET_BUFINFO.
    get_bufinfo, DAHDI_CODE, 27, DahdiBufferInfo);
ioctl_write_ptr!(
    /// DAHDI_SET_BUFINFO.
    set_bufinfo, DAHDI_CODE, 27, DahdiBufferInfo);
ioctl_write_ptr!(
    /// DAHDI_DIAL ('T' DTMF, 'P' pulse, 'W' pause).
    dial, DAHDI_CODE, 31, DahdiDialOperation);
ioctl_write_ptr!(
    /// DAHDI_ECHOCANCEL_PARAMS.
    echocancel_params, DAHDI_CODE, 33, DahdiEchoCanParams);
ioctl_read!(
    /// DAHDI_DIALING: non-zero while dialling.
    dialing, DAHDI_CODE, 35, c_int);
ioctl_write_ptr!(
    /// DAHDI_SPECIFY: bind /dev/dahdi/channel to a channel number.
    specify, DAHDI_CODE, 38, c_int);
ioctl_write_ptr!(
    /// DAHDI_SETLAW.
    set_law, DAHDI_CODE, 39, c_int);
ioctl_write_ptr!(
    /// DAHDI_SETLINEAR: 16-bit linear audio instead of G.711.
    set_linear, DAHDI_CODE, 40, c_int);
ioctl_write_ptr!(
    /// DAHDI_SETCADENCE: the ring cadence.
    set_cadence, DAHDI_CODE, 42, DahdiRingCadence);
ioctl_write_ptr!(
    /// DAHDI_CHANDIAG.
    chan_diag, DAHDI_CODE, 44, c_int);
ioctl_write_ptr!(
    /// DAHDI_ECHOTRAIN.
    echo_train, DAHDI_CODE, 50, c_int);
ioctl_write_ptr!(
    /// DAHDI_ONHOOKTRANSFER: on-hook transmission for ms (caller ID between rings).
    onhook_transfer, DAHDI_CODE, 51, c_int);
ioctl_write_ptr!(
    /// DAHDI_SETPOLARITY: line polarity (answer supervision, ETSI caller ID).
    set_polarity, DAHDI_CODE, 92, c_int);
ioctl_readwrite!(
    /// DAHDI_VMWI: message waiting count.
    vmwi, DAHDI_CODE, 94, c_int);
ioctl_write_ptr!(
    /// DAHDI_VMWI_CONFIG.
    vmwi_config, DAHDI_CODE, 95, DahdiVmwiInfo);
