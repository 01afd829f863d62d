//! Analog telephony support: DSP today (G.711, DTMF, call-progress tones, caller ID);
//! DAHDI bindings, the emulated analog card and the FXS/FXO line state machines next.
//!
//! Everything in [`dsp`] is pure code with no I/O and no allocation on the per-frame path
//! (detectors and generators keep their state in fixed-size fields), so one core can serve
//! thousands of 20 ms channel frames.
#![forbid(unsafe_code)]

pub mod dsp;
