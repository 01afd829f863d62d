//! One DAHDI channel, as the gateway uses it: open + SPECIFY, 20 ms blocks of audio, hook
//! operations, ring cadence, events. Two backends implement [`Channel`]: real DAHDI file
//! descriptors ([`DahdiChannel`]) and the emulated card (`super::emulator`), which
//! reproduces the kernel's behaviour at this same boundary.
//!
//! The real backend calls the ioctls, hence the unsafe blocks below (each with its SAFETY).
#![allow(unsafe_code)]

use super::abi::{flush, hook, DahdiParams, DahdiRingCadence, MAX_CADENCE};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// 20 ms at 8 kHz: the block size the gateway uses (Asterisk's too).
pub const BLOCK_SIZE: usize = 160;

/// A channel operation failed; messages say what an operator should check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// `/dev/dahdi` does not exist.
    #[error("no /dev/dahdi: the DAHDI kernel modules are not loaded (modprobe dahdi and the card driver, e.g. wctdm24xxp)")]
    NoDahdi,
    /// Another process has the channel open (EBUSY on open/SPECIFY).
    #[error("channel {0} is in use by another process (is Asterisk or another gateway running?)")]
    InUse(u32),
    /// The channel exists but has no signalling configured (ENXIO).
    #[error(
        "channel {0} is not configured: run dahdi_cfg after listing it in /etc/dahdi/system.conf"
    )]
    NotConfigured(u32),
    /// An ioctl other than SPECIFY was used before SPECIFY (ENOSYS).
    #[error("channel not specified yet (DAHDI_SPECIFY must come first)")]
    NotSpecified,
    /// Read or write refused because an event is waiting (ELAST): fetch it with get_event.
    #[error("an event is pending on the channel (read it with DAHDI_GETEVENT)")]
    EventPending,
    /// Ringing needs a tone zone (ENODATA).
    #[error("no tone zone loaded: add loadzone=/defaultzone= to /etc/dahdi/system.conf and run dahdi_cfg")]
    NoToneZone,
    /// Ringing a phone that is off hook (EBUSY on HOOK RING).
    #[error("cannot ring: the phone is off hook")]
    OffHook,
    /// Nothing to read or no room to write now (EAGAIN).
    #[error("would block")]
    WouldBlock,
    /// An argument the driver refuses (EINVAL), e.g. a block size outside 16..8192.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// Any other OS error.
    #[error("DAHDI error: {0}")]
    Os(Errno),
}

/// What the gateway needs from a DAHDI channel.
pub trait Channel {
    /// Sets the block size in samples (16..=8192).
    fn set_blocksize(&mut self, samples: usize) -> Result<(), ChannelError>;
    /// Reads one whole block of G.711 audio.
    fn read(&mut self, block: &mut [u8]) -> Result<usize, ChannelError>;
    /// Writes one block of G.711 audio.
    fn write(&mut self, block: &[u8]) -> Result<usize, ChannelError>;
    /// The next queued event (0 when none).
    fn get_event(&mut self) -> Result<i32, ChannelError>;
    /// A hook operation (`abi::hook`); ring/flash/wink in progress count as success.
    fn hook(&mut self, operation: i32) -> Result<(), ChannelError>;
    /// The ringing cadence, on/off pairs in ms.
    fn set_cadence(&mut self, cadence_ms: &[u32]) -> Result<(), ChannelError>;
    /// Flushes read/write buffers and/or the event queue (`abi::flush`).
    fn flush(&mut self, what: i32) -> Result<(), ChannelError>;
    /// The channel's parameters (signalling, hook state, timings).
    fn params(&mut self) -> Result<DahdiParams, ChannelError>;
    /// Reverses (1) or restores (0) line polarity.
    fn set_polarity(&mut self, reversed: bool) -> Result<(), ChannelError>;
    /// Keeps audio flowing on hook for `ms` (caller ID between rings).
    fn onhook_transfer(&mut self, ms: u32) -> Result<(), ChannelError>;
}

/// The cadence as DAHDI takes it (at most 16 entries).
pub fn ring_cadence(cadence_ms: &[u32]) -> Result<DahdiRingCadence, ChannelError> {
    if cadence_ms.is_empty() || cadence_ms.len() > MAX_CADENCE || cadence_ms.len() % 2 != 0 {
        return Err(ChannelError::Invalid("a cadence is 1 to 8 on/off pairs"));
    }
    let mut cadence = DahdiRingCadence::default();
    for (slot, ms) in cadence.ringcadence.iter_mut().zip(cadence_ms) {
        *slot = i32::try_from(*ms).map_err(|_| ChannelError::Invalid("cadence entry too long"))?;
    }
    Ok(cadence)
}

/// A real DAHDI channel file descriptor.
#[derive(Debug)]
pub struct DahdiChannel {
    fd: OwnedFd,
    number: u32,
}

/// DAHDI's "event pending" errno (ELAST, 500), unknown to nix's Errno enum.
pub const ELAST: i32 = 500;

impl DahdiChannel {
    /// A second descriptor of the same open channel, for reads and writes done elsewhere
    /// (the fast path's ring) while ioctls stay on this one.
    pub fn duplicate_fd(&self) -> std::io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

fn os_error(errno: Errno, number: u32) -> ChannelError {
    if errno == Errno::UnknownErrno && Errno::last_raw() == ELAST {
        return ChannelError::EventPending;
    }
    match errno {
        Errno::EBUSY => ChannelError::InUse(number),
        Errno::ENXIO => ChannelError::NotConfigured(number),
        Errno::ENOSYS => ChannelError::NotSpecified,
        Errno::ENODATA => ChannelError::NoToneZone,
        Errno::EAGAIN => ChannelError::WouldBlock,
        Errno::EINVAL => ChannelError::Invalid("refused by the driver"),
        other => ChannelError::Os(other),
    }
}

impl DahdiChannel {
    /// Opens `/dev/dahdi/channel` non-blocking and binds it to channel `number`.
    pub fn open(dev: &Path, number: u32) -> Result<DahdiChannel, ChannelError> {
        use nix::fcntl::{open, OFlag};
        use nix::sys::stat::Mode;
        if !dev.exists() {
            return Err(ChannelError::NoDahdi);
        }
        let fd = open(
            &dev.join("channel"),
            OFlag::O_RDWR | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| os_error(e, number))?;
        let channel = DahdiChannel { fd, number };
        let value = i32::try_from(number).map_err(|_| ChannelError::Invalid("channel number"))?;
        // SAFETY: the fd is an open DAHDI channel device and `value` lives across the call.
        unsafe { super::ioctl::specify(channel.fd.as_raw_fd(), &value) }
            .map_err(|e| os_error(e, number))?;
        Ok(channel)
    }

    fn check(&self, result: nix::Result<i32>) -> Result<(), ChannelError> {
        match result {
            Ok(_) | Err(Errno::EINPROGRESS) => Ok(()),
            Err(e) => Err(os_error(e, self.number)),
        }
    }
}

impl Channel for DahdiChannel {
    fn set_blocksize(&mut self, samples: usize) -> Result<(), ChannelError> {
        let value = i32::try_from(samples).map_err(|_| ChannelError::Invalid("block size"))?;
        // SAFETY: valid fd; the pointer refers to a live i32.
        self.check(unsafe { super::ioctl::set_blocksize(self.fd.as_raw_fd(), &value) })
    }

    fn read(&mut self, block: &mut [u8]) -> Result<usize, ChannelError> {
        nix::unistd::read(&self.fd, block).map_err(|e| os_error(e, self.number))
    }

    fn write(&mut self, block: &[u8]) -> Result<usize, ChannelError> {
        nix::unistd::write(&self.fd, block).map_err(|e| os_error(e, self.number))
    }

    fn get_event(&mut self) -> Result<i32, ChannelError> {
        let mut event = 0;
        // SAFETY: valid fd; the kernel writes one int into `event`.
        self.check(unsafe { super::ioctl::get_event(self.fd.as_raw_fd(), &mut event) })?;
        Ok(event)
    }

    fn hook(&mut self, operation: i32) -> Result<(), ChannelError> {
        // SAFETY: valid fd; the pointer refers to a live i32.
        self.check(unsafe { super::ioctl::hook(self.fd.as_raw_fd(), &operation) })
    }

    fn set_cadence(&mut self, cadence_ms: &[u32]) -> Result<(), ChannelError> {
        let cadence = ring_cadence(cadence_ms)?;
        // SAFETY: valid fd; `cadence` is a live dahdi_ring_cadence.
        self.check(unsafe { super::ioctl::set_cadence(self.fd.as_raw_fd(), &cadence) })
    }

    fn flush(&mut self, what: i32) -> Result<(), ChannelError> {
        // SAFETY: valid fd; the pointer refers to a live i32.
        self.check(unsafe { super::ioctl::flush(self.fd.as_raw_fd(), &what) })
    }

    fn params(&mut self) -> Result<DahdiParams, ChannelError> {
        let mut params = DahdiParams::default();
        // SAFETY: valid fd; `params` is zeroed as GET_PARAMS requires and outlives the call.
        self.check(unsafe { super::ioctl::get_params(self.fd.as_raw_fd(), &mut params) })?;
        Ok(params)
    }

    fn set_polarity(&mut self, reversed: bool) -> Result<(), ChannelError> {
        let value = i32::from(reversed);
        // SAFETY: valid fd; the pointer refers to a live i32.
        self.check(unsafe { super::ioctl::set_polarity(self.fd.as_raw_fd(), &value) })
    }

    fn onhook_transfer(&mut self, ms: u32) -> Result<(), ChannelError> {
        let value = i32::try_from(ms).map_err(|_| ChannelError::Invalid("duration"))?;
        // SAFETY: valid fd; the pointer refers to a live i32.
        self.check(unsafe { super::ioctl::onhook_transfer(self.fd.as_raw_fd(), &value) })
    }
}

/// Hook operations that DAHDI starts and finishes later (EINPROGRESS on non-blocking fds).
pub fn completes_later(operation: i32) -> bool {
    matches!(
        operation,
        hook::RING | hook::START | hook::WINK | hook::FLASH
    )
}

/// All of read, write and event buffers.
pub const FLUSH_ALL: i32 = flush::READ | flush::WRITE | flush::EVENT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_dev_dahdi_is_a_clear_error() {
        let error = DahdiChannel::open(Path::new("/nonexistent/dahdi"), 1).unwrap_err();
        assert_eq!(error, ChannelError::NoDahdi);
        assert!(error.to_string().contains("modprobe"));
    }

    #[test]
    fn errnos_map_to_operator_messages() {
        assert_eq!(os_error(Errno::EBUSY, 3), ChannelError::InUse(3));
        assert!(os_error(Errno::ENXIO, 3).to_string().contains("dahdi_cfg"));
        Errno::set_raw(ELAST);
        assert_eq!(os_error(Errno::UnknownErrno, 3), ChannelError::EventPending);
        assert!(ring_cadence(&[2000]).is_err());
        assert_eq!(
            ring_cadence(&[400, 200, 400, 2000]).unwrap().ringcadence[3],
            2000
        );
    }
}
