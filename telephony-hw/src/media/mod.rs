//! Analog line audio <-> RTP: the sender (sequence numbers, timestamps, SSRC, RFC 4733
//! events) and the receiver with an adaptive jitter buffer and packet loss concealment.
//! Pure code, fixed-size state, no allocation per packet.

pub mod jitter;
pub mod rtp_out;
pub mod session;
pub mod stream;

/// Samples (and RTP timestamp units) in one 20 ms G.711 packet.
pub const PACKET_SAMPLES: usize = 160;
