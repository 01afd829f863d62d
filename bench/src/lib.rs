//! Benchmark harness: the per-channel DSP cost of an analog line (`cargo bench -p bench
//! --bench dsp`), SIP pre-parsing against full parsers (`sip-preparse`), the RTP relay
//! against rtpengine (`rtp-relay`). Results: tables and SVG charts under
//! `target/bench-results/` ([`report`]).

pub mod netns;
pub mod phones;
pub mod pickups;
pub mod procfs;
pub mod report;
pub mod retransmit;
pub mod servers;
pub mod sipload;
pub mod watchers;

use telephony_hw::dsp::dtmf::DtmfGenerator;
use telephony_hw::dsp::g711::Law;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;

/// One second of G.711 µ-law line audio: DTMF digits, pauses and a speech-like babble, as a
/// line carries it, cut into 20 ms frames.
pub fn line_frames() -> Vec<[u8; FRAME]> {
    let mut pcm = DtmfGenerator::new(-10.0, -8.0).dial("2015550123", 50, 50);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    pcm.extend((0..8000).map(|n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let t = n as f32 / 8000.0;
        (3000.0 * (std::f32::consts::TAU * 180.0 * t).sin()) as i16 + ((state >> 52) as i16 - 2048)
    }));
    pcm.chunks_exact(FRAME)
        .map(|chunk| {
            let mut frame = [0u8; FRAME];
            Law::Ulaw.encode(chunk, &mut frame);
            frame
        })
        .collect()
}
