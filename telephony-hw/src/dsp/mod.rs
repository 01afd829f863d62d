//! Digital signal processing for analog lines, at 8 kHz.

pub mod analysis;
pub mod callerid;
pub mod dtmf;
pub mod g711;
pub mod level;
pub mod telephone_event;
pub mod tones;

/// The sample rate of every analog channel (Hz).
pub const SAMPLE_RATE: u32 = 8000;
