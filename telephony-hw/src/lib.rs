//! Analog telephony hardware support (not built yet).
//!
//! This crate will own DAHDI ioctl bindings, an emulated analog card with the kernel's
//! semantics, FXS/FXO line state machines and the DSP (G.711, DTMF, tones, caller ID).
//! It holds no code yet, on purpose: nothing here pretends to work.
