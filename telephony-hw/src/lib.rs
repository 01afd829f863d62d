//! Analog telephony support: DSP (G.711, DTMF, call-progress tones, caller ID) and the DAHDI
//! ABI; the channel abstraction, the emulated analog card and the FXS/FXO line state
//! machines next.
//!
//! Everything in [`dsp`] is pure code with no I/O and no allocation on the per-frame path
//! (detectors and generators keep their state in fixed-size fields), so one core can serve
//! thousands of 20 ms channel frames.
// Unsafe code only where the kernel ABI needs it (dahdi::ioctl), each use with a SAFETY note.
#![deny(unsafe_code)]

pub mod dahdi;
pub mod dsp;
pub mod line;
pub mod media;
