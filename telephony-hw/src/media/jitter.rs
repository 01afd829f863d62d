//! Adaptive jitter buffer for the RTP -> analog line direction, with packet loss
//! concealment. Packets of 1 to 480 samples (ptime 10 to 60 ms, or any other size) go in as
//! they arrive, with the arrival time; their samples are placed by timestamp, and every
//! 20 ms the line takes one frame out. [`StreamTracker`] decides which packets belong to the
//! stream being played; when another takes over (a new SSRC, a sequence or timestamp jump)
//! the buffer starts again on it.
//!
//! The playout delay follows the RFC 3550 interarrival jitter estimate (twice the jitter
//! plus one frame, 1 to 10 frames), built up front when a stream starts. When more is
//! buffered than needed the excess is dropped at once; when the next frame is missing while
//! less than the target is buffered, the buffer waits a frame (growing the delay); otherwise
//! it is lost and concealed. Waits and losses play the last frame again, halved each time,
//! silence after three; samples missing from a frame otherwise played are the last frame's
//! at half level. Fixed size, no allocation.

use super::stream::{Admission, PacketHeader, StreamTracker, WINDOW};
use super::PACKET_SAMPLES;
use crate::dsp::g711::Law;
use rtp_rs::RtpReader;

/// One frame for the line, in samples (timestamp units).
const FRAME: u32 = PACKET_SAMPLES as u32;
/// Sample positions kept: the playout window.
const RING: usize = WINDOW as usize;
/// The largest payload taken, in samples: 60 ms of G.711.
const MAX_PAYLOAD: usize = 480;
const MAX_TARGET_FRAMES: u32 = 10;
const MAX_CONCEALED_REPEATS: u32 = 3;

/// What the buffer did, for the CDR and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted.
    pub received: u64,
    /// Frames played entirely from packets.
    pub played: u64,
    /// Frames concealed wholly or in part (lost or too late).
    pub concealed: u64,
    /// Packets that came after their playout time.
    pub late: u64,
    /// Packets seen twice.
    pub duplicates: u64,
    /// Packets not of this payload type, without audio, or longer than 60 ms.
    pub rejected: u64,
    /// Frames dropped to shrink the delay.
    pub dropped: u64,
    /// Frames inserted (a copy of the last one, fading) to grow the delay.
    pub stretched: u64,
    /// Times another stream took over (a new SSRC, a sequence or timestamp jump).
    pub resyncs: u64,
    /// Packets that fitted neither the stream nor a new one (dropped).
    pub strays: u64,
}

/// One leg's jitter buffer.
///
/// Samples are kept by timestamp in a ring of [`WINDOW`] positions, only for timestamps
/// from `next` (the playout point) up to `end` (one past the latest sample buffered), with
/// `end - next` at most [`WINDOW`].
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    law: Law,
    payload_type: u8,
    stream: StreamTracker,
    codes: [u8; RING],
    present: [bool; RING],
    next: u32,
    end: u32,
    /// Frames still to wait before a new stream plays (its playout delay).
    preroll: u32,
    /// Samples in the latest packet buffered.
    last_samples: u32,
    /// The payload of the packet [`StreamTracker`] holds, if any.
    held_codes: [u8; MAX_PAYLOAD],
    target_frames: u32,
    jitter: f32,
    last_transit: Option<i64>,
    last_frame: [i16; PACKET_SAMPLES],
    concealed_run: u32,
    stats: JitterStats,
}

/// Where the sample of timestamp `timestamp` is kept.
fn index(timestamp: u32) -> usize {
    timestamp as usize % RING
}

impl JitterBuffer {
    /// A buffer for G.711 `law` packets of `payload_type`.
    pub fn new(law: Law, payload_type: u8) -> JitterBuffer {
        JitterBuffer {
            law,
            payload_type,
            stream: StreamTracker::default(),
            codes: [0; RING],
            present: [false; RING],
            next: 0,
            end: 0,
            preroll: 0,
            last_samples: FRAME,
            held_codes: [0; MAX_PAYLOAD],
            target_frames: 1,
            jitter: 0.0,
            last_transit: None,
            last_frame: [0; PACKET_SAMPLES],
            concealed_run: 0,
            stats: JitterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Current playout delay target, in 20 ms frames.
    pub fn target_frames(&self) -> u32 {
        self.target_frames
    }

    /// Takes an RTP packet that arrived at `now_ms`.
    pub fn insert(&mut self, now_ms: u64, packet: &[u8]) {
        let Ok(rtp) = RtpReader::new(packet) else {
            self.stats.rejected += 1;
            return;
        };
        let payload = rtp.payload();
        if rtp.payload_type() != self.payload_type
            || payload.is_empty()
            || payload.len() > MAX_PAYLOAD
        {
            self.stats.rejected += 1;
            return;
        }
        let header = PacketHeader {
            ssrc: rtp.ssrc(),
            sequence: u16::from(rtp.sequence_number()),
            timestamp: rtp.timestamp(),
            samples: payload.len() as u32,
        };
        match self.stream.admit(header, self.next) {
            Admission::Starts => {
                self.restart(header, payload);
                self.follow_jitter(now_ms, header.timestamp);
            }
            Admission::Continues => {
                self.follow_jitter(now_ms, header.timestamp);
                self.place(header, payload);
            }
            Admission::Held { dropped_stray } => {
                self.stats.strays += u64::from(dropped_stray);
                self.held_codes[..payload.len()].copy_from_slice(payload);
            }
            Admission::TakesOver(held) => {
                self.stats.resyncs += 1;
                let codes = self.held_codes;
                self.restart(held, &codes[..held.samples as usize]);
                self.follow_jitter(now_ms, header.timestamp);
                self.place(header, payload);
            }
        }
    }

    /// Updates the RFC 3550 §6.4.1 interarrival jitter (in samples) and the delay target.
    fn follow_jitter(&mut self, now_ms: u64, timestamp: u32) {
        let transit = (now_ms as i64) * 8 - i64::from(timestamp);
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as f32;
            // A timestamp wrap shows as a huge jump: ignore it.
            if d < 8000.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
        let frames = ((2.0 * self.jitter) / FRAME as f32).ceil() as u32 + 1;
        self.target_frames = frames.clamp(1, MAX_TARGET_FRAMES);
    }

    /// Starts playout again on a new stream whose first packet is `header`: what was
    /// buffered of the old one is dropped, and the new one waits for the playout delay.
    fn restart(&mut self, header: PacketHeader, payload: &[u8]) {
        self.present.fill(false);
        self.next = header.timestamp;
        self.end = header.timestamp;
        self.last_transit = None;
        self.preroll = self.target_frames - 1;
        self.place(header, payload);
    }

    /// Buffers the samples of a packet of the stream (within the window by
    /// [`StreamTracker`]'s word) that are not played yet.
    fn place(&mut self, header: PacketHeader, payload: &[u8]) {
        let played = (self.next.wrapping_sub(header.timestamp) as i32).max(0) as u32;
        if played >= header.samples {
            self.stats.late += 1;
            return;
        }
        let mut new = false;
        for (n, &code) in payload.iter().enumerate().skip(played as usize) {
            let at = index(header.timestamp.wrapping_add(n as u32));
            if !self.present[at] {
                self.present[at] = true;
                self.codes[at] = code;
                new = true;
            }
        }
        if !new {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.received += 1;
        self.last_samples = header.samples;
        let packet_end = header.timestamp.wrapping_add(header.samples);
        if packet_end.wrapping_sub(self.next) > self.span() {
            self.end = packet_end;
        }
    }

    /// Samples from the playout point to the end of the latest buffered: the delay.
    fn span(&self) -> u32 {
        self.end.wrapping_sub(self.next)
    }

    /// Moves the playout point on by `samples` (at most [`WINDOW`]), forgetting them.
    fn advance(&mut self, samples: u32) {
        let span = self.span();
        for n in 0..samples {
            self.present[index(self.next.wrapping_add(n))] = false;
        }
        self.next = self.next.wrapping_add(samples);
        if samples >= span {
            self.end = self.next;
        }
    }

    /// Drops what is buffered beyond the target (plus a frame of slack and the packet
    /// size, which arrives at once), in whole frames.
    fn shrink(&mut self) {
        let limit = (self.target_frames + 1) * FRAME + self.last_samples;
        let excess = self.span().saturating_sub(limit);
        if excess > 0 {
            let frames = excess.div_ceil(FRAME);
            self.advance((frames * FRAME).min(self.span()));
            self.stats.dropped += u64::from(frames);
        }
    }

    /// The next 20 ms frame for the line (linear samples). Call every 20 ms.
    pub fn pop(&mut self, out: &mut [i16; PACKET_SAMPLES]) {
        if !self.stream.started() {
            out.fill(0);
            return;
        }
        if self.preroll > 0 {
            self.preroll -= 1;
            self.stats.stretched += 1;
            self.fill_gap(out);
            return;
        }
        self.shrink();
        let present = (0..FRAME)
            .filter(|&n| self.present[index(self.next.wrapping_add(n))])
            .count() as u32;
        if present == 0 {
            self.fill_gap(out);
            if self.span() < self.target_frames * FRAME {
                // Probably late, not lost: wait for it, one frame more delay.
                self.stats.stretched += 1;
            } else {
                self.stats.concealed += 1;
                self.advance(FRAME);
            }
            return;
        }
        for (n, sample) in out.iter_mut().enumerate() {
            let at = index(self.next.wrapping_add(n as u32));
            *sample = if self.present[at] {
                self.law.decode_sample(self.codes[at])
            } else {
                self.last_frame[n] >> 1
            };
        }
        if present == FRAME {
            self.stats.played += 1;
        } else {
            self.stats.concealed += 1;
        }
        self.last_frame = *out;
        self.concealed_run = 0;
        self.advance(FRAME);
    }

    /// A frame with no packet: the last one again, halved each time; silence after three.
    fn fill_gap(&mut self, out: &mut [i16; PACKET_SAMPLES]) {
        self.concealed_run += 1;
        if self.concealed_run <= MAX_CONCEALED_REPEATS {
            let shift = self.concealed_run;
            for (o, s) in out.iter_mut().zip(self.last_frame.iter()) {
                *o = s >> shift;
            }
        } else {
            out.fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp_out::{RtpSender, MAX_PACKET};

    /// 20 ms frames of a recognisable ramp: frame i holds the value i in every sample.
    fn frame(i: u32) -> [u8; PACKET_SAMPLES] {
        [Law::Ulaw.encode_sample((i as i16 % 100) * 200 + 400); PACKET_SAMPLES]
    }

    fn packets(count: u32, sequence: u16, timestamp: u32) -> Vec<Vec<u8>> {
        let mut sender = RtpSender::new(1, sequence, timestamp, 0, 101);
        let mut out = [0u8; MAX_PACKET];
        (0..count)
            .map(|i| {
                let n = sender.audio(&frame(i), &mut out);
                out[..n].to_vec()
            })
            .collect()
    }

    fn level(frame: &[i16; PACKET_SAMPLES]) -> i16 {
        frame[0]
    }

    /// Feeds packets with the given arrival times and plays one frame every 20 ms.
    fn play(buffer: &mut JitterBuffer, arrivals: &[(u64, Vec<u8>)], frames: usize) -> Vec<i16> {
        let mut out = Vec::new();
        let mut frame_out = [0i16; PACKET_SAMPLES];
        for tick in 0..frames as u64 {
            let now = tick * 20;
            for (at, packet) in arrivals
                .iter()
                .filter(|(at, _)| (now..now + 20).contains(at))
            {
                buffer.insert(*at, packet);
            }
            buffer.pop(&mut frame_out);
            out.push(level(&frame_out));
        }
        out
    }

    /// `wanted` appears in `played` in order (other frames, e.g. waits, may sit between).
    fn is_subsequence(wanted: &[i16], played: &[i16]) -> bool {
        let mut rest = played.iter();
        wanted.iter().all(|w| rest.any(|p| p == w))
    }

    fn expected_levels(count: u32) -> Vec<i16> {
        (0..count)
            .map(|i| Law::Ulaw.decode_sample(frame(i)[0]))
            .collect()
    }

    #[test]
    fn an_in_order_stream_plays_every_frame() {
        let mut buffer = JitterBuffer::new(Law::Ulaw, 0);
        let arrivals: Vec<_> = packets(50, 65_500, u32::MAX - 2000)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (i as u64 * 20, p))
            .collect();
        let played = play(&mut buffer, &arrivals, 60);
        let start = played.iter().position(|&l| l != 0).unwrap();
        assert_eq!(
            &played[start..start + 50],
            &expected_levels(50)[..],
            "across seq and timestamp wrap"
        );
        let stats = buffer.stats();
        assert_eq!((stats.played, stats.late, stats.duplicates), (50, 0, 0));
    }

    #[test]
    fn reordering_and_duplicates_are_absorbed() {
        let mut buffer = JitterBuffer::new(Law::Ulaw, 0);
        let stream = packets(40, 10, 1000);
        let mut arrivals: Vec<(u64, Vec<u8>)> = Vec::new();
        for (i, packet) in stream.iter().enumerate() {
            // Swap neighbours: odd packets arrive 25 ms late (after the next one).
            let at = i as u64 * 20 + if i % 2 == 1 { 25 } else { 0 };
            arrivals.push((at, packet.clone()));
            if i == 7 {
                arrivals.push((at + 3, packet.clone()));
            }
        }
        let played = play(&mut buffer, &arrivals, 70);
        assert!(is_subsequence(&expected_levels(40), &played), "{played:?}");
        let stats = buffer.stats();
        assert_eq!(
            (stats.played, stats.duplicates, stats.concealed, stats.late),
            (40, 1, 0, 0),
            "{stats:?}"
        );
        assert!(
            stats.stretched >= 1,
            "the delay grew to absorb the reordering"
        );
    }

    #[test]
    fn a_lost_packet_is_concealed_and_late_ones_dropped() {
        let mut buffer = JitterBuffer::new(Law::Ulaw, 0);
        let stream = packets(30, 0, 0);
        let mut arrivals: Vec<(u64, Vec<u8>)> = stream
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 10)
            .map(|(i, p)| (i as u64 * 20, p.clone()))
            .collect();
        arrivals.push((560, stream[10].clone())); // far too late
        let played = play(&mut buffer, &arrivals, 40);
        let levels = expected_levels(30);
        let after_nine = played.iter().position(|&l| l == levels[9]).unwrap() + 1;
        let eleven = played.iter().position(|&l| l == levels[11]).unwrap();
        assert!(
            eleven > after_nine,
            "a gap sits where packet 10 was: {played:?}"
        );
        assert_eq!(
            played[after_nine],
            levels[9] >> 1,
            "the previous frame at half level"
        );
        assert!(played[after_nine..eleven]
            .iter()
            .all(|&l| l.abs() <= levels[9].abs() / 2));
        assert!(
            !played.contains(&levels[10]),
            "packet 10 arrived too late to play"
        );
        let stats = buffer.stats();
        assert_eq!(
            (stats.late, stats.concealed, stats.played),
            (1, 1, 29),
            "{stats:?}"
        );
        let mut rejected = packets(1, 0, 0)[0].clone();
        rejected[1] = 8; // PCMA into a PCMU buffer
        buffer.insert(900, &rejected);
        buffer.insert(900, b"garbage");
        assert_eq!(buffer.stats().rejected, 2);
    }

    #[test]
    fn the_delay_follows_the_network_jitter() {
        let mut steady = JitterBuffer::new(Law::Ulaw, 0);
        let calm: Vec<_> = packets(100, 0, 0)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (i as u64 * 20, p))
            .collect();
        play(&mut steady, &calm, 110);
        assert!(
            steady.target_frames() <= 2,
            "calm network: {}",
            steady.target_frames()
        );

        let mut jittery = JitterBuffer::new(Law::Ulaw, 0);
        let mut state = 12345u64;
        let rough: Vec<_> = packets(200, 0, 0)
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (i as u64 * 20 + state % 60, p)
            })
            .collect();
        play(&mut jittery, &rough, 230);
        assert!(
            jittery.target_frames() >= 3,
            "60 ms of jitter: {}",
            jittery.target_frames()
        );
        let stats = jittery.stats();
        assert!(
            stats.played >= 190,
            "nearly every frame survives the jitter: {stats:?}"
        );
    }

    /// One RTP packet of PCMU `payload` with this SSRC, sequence number and timestamp.
    fn rtp(ssrc: u32, sequence: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        rtp_rs::RtpPacketBuilder::new()
            .payload_type(0)
            .ssrc(ssrc)
            .sequence(rtp_rs::Seq::from(sequence))
            .timestamp(timestamp)
            .payload(payload)
            .build()
            .unwrap()
    }

    /// The code of a stream's sample `n`: noise, so that no run of it repeats elsewhere.
    fn code_at(n: u32) -> u8 {
        (n.wrapping_mul(2_654_435_761) >> 24) as u8
    }

    /// What the line hears of a stream's samples `from..from + count`.
    fn samples_of(from: u32, count: u32) -> Vec<i16> {
        (from..from + count)
            .map(|n| Law::Ulaw.decode_sample(code_at(n)))
            .collect()
    }

    /// A far end's stream: SSRC, first sequence number and timestamp, samples per packet,
    /// and the number of its first sample in [`code_at`]'s noise.
    #[derive(Clone, Copy)]
    struct Source {
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        samples: u32,
        content: u32,
    }

    impl Source {
        /// `count` packets sent in real time from `start_ms`, with their arrival times.
        fn send(&mut self, start_ms: u64, count: u32) -> Vec<(u64, Vec<u8>)> {
            (0..count)
                .map(|i| {
                    let payload: Vec<u8> = (0..self.samples)
                        .map(|n| code_at(self.content + n))
                        .collect();
                    let packet = rtp(self.ssrc, self.sequence, self.timestamp, &payload);
                    let at = start_ms + u64::from(i * self.samples / 8);
                    self.sequence = self.sequence.wrapping_add(1);
                    self.timestamp = self.timestamp.wrapping_add(self.samples);
                    self.content += self.samples;
                    (at, packet)
                })
                .collect()
        }
    }

    /// Feeds packets with the given arrival times and plays one frame every 20 ms; returns
    /// every sample played.
    fn play_samples(
        buffer: &mut JitterBuffer,
        arrivals: &[(u64, Vec<u8>)],
        frames: usize,
    ) -> Vec<i16> {
        play_samples_from(buffer, 0, arrivals, frames)
    }

    /// [`play_samples`] with the clock starting at `start_ms`.
    fn play_samples_from(
        buffer: &mut JitterBuffer,
        start_ms: u64,
        arrivals: &[(u64, Vec<u8>)],
        frames: usize,
    ) -> Vec<i16> {
        let mut out = Vec::new();
        let mut frame_out = [0i16; PACKET_SAMPLES];
        for tick in 0..frames as u64 {
            let now = start_ms + tick * 20;
            for (at, packet) in arrivals
                .iter()
                .filter(|(at, _)| (now..now + 20).contains(at))
            {
                buffer.insert(*at, packet);
            }
            buffer.pop(&mut frame_out);
            out.extend_from_slice(&frame_out);
        }
        out
    }

    /// `run` was played, sample for sample, somewhere in `played`.
    fn contains_run(played: &[i16], run: &[i16]) -> bool {
        played.windows(run.len()).any(|w| w == run)
    }

    #[test]
    fn a_new_ssrc_with_an_earlier_timestamp_base_is_played() {
        let mut buffer = JitterBuffer::new(Law::Ulaw, 0);
        let mut callee = Source {
            ssrc: 1,
            sequence: 100,
            timestamp: 1_000_000,
            samples: 160,
            content: 0,
        };
        // The picker's phone replaces the callee's: its own SSRC, sequence and timestamps.
        let mut picker = Source {
            ssrc: 2,
            sequence: 40_000,
            timestamp: 3_000,
            samples: 160,
            content: 50_000,
        };
        let mut arrivals = callee.send(0, 50);
        arrivals.extend(picker.send(1000, 50));
        let played = play_samples(&mut buffer, &arrivals, 110);
        assert!(
            contains_run(&played, &samples_of(0, 40 * 160)),
            "the callee"
        );
        assert!(
            contains_run(&played, &samples_of(50_000 + 2 * 160, 45 * 160)),
            "the picker is heard after the change"
        );
        let stats = buffer.stats();
        assert_eq!((stats.resyncs, stats.late), (1, 0), "{stats:?}");
    }

    #[test]
    fn a_timestamp_jump_in_the_same_stream_is_followed_both_ways() {
        for jump in [-1600i32, -160_000, 1 << 30, i32::MAX] {
            let mut buffer = JitterBuffer::new(Law::Ulaw, 0);
            let mut far = Source {
                ssrc: 9,
                sequence: 65_000,
                timestamp: u32::MAX - 4000,
                samples: 160,
                content: 0,
            };
            let mut arrivals = far.send(0, 50);
            // Same SSRC, the sequence numbers go on: only the timestamp base moves.
            far.timestamp = far.timestamp.wrapping_add_signed(jump);
            arrivals.extend(far.send(1000, 50));
            let played = play_samples(&mut buffer, &arrivals, 110);
            assert!(
                contains_run(&played, &samples_of(50 * 160 + 2 * 160, 45 * 160)),
                "after a jump of {jump}"
            );
            assert_eq!(buffer.stats().resyncs, 1, "{jump}");
        }
    }

    #[test]
    fn a_single_odd_packet_does_not_disturb_playout() {
        let mut buffer = JitterBuffer::new(Law::Ulaw, 0);
        let mut far = Source {
            ssrc: 5,
            sequence: 0,
            timestamp: 0,
            samples: 160,
            content: 0,
        };
        let mut arrivals = far.send(0, 60);
        // Far off in SSRC, in sequence number, in timestamp (both ways).
        for (i, (ssrc, sequence, timestamp)) in [
            (6, 20, 3200),
            (5, 30_000, 4800),
            (5, 40, 100_000),
            (5, 50, u32::MAX - 1000),
        ]
        .into_iter()
        .enumerate()
        {
            let at = 200 + i as u64 * 200;
            arrivals.push((at + 5, rtp(ssrc, sequence, timestamp, &[0x42; 160])));
        }
        arrivals.sort_by_key(|(at, _)| *at);
        let played = play_samples(&mut buffer, &arrivals, 70);
        assert!(contains_run(&played, &samples_of(0, 60 * 160)));
        let stats = buffer.stats();
        assert_eq!((stats.resyncs, stats.strays), (0, 3), "{stats:?}");
    }

    /// xorshift64: reproducible noise for the property test.
    fn next_random(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// The invariants: samples kept only from the playout point to the end, at most the
    /// window; every frame played once stream started is played, concealed or stretched.
    fn check_invariants(buffer: &JitterBuffer, pops: u64) {
        let span = buffer.span();
        assert!(span <= WINDOW, "span {span}");
        for (i, &present) in buffer.present.iter().enumerate() {
            let offset = (i as u32).wrapping_sub(buffer.next) % WINDOW;
            assert!(!present || offset < span, "sample {i} outside the buffer");
        }
        let stats = buffer.stats;
        assert_eq!(stats.played + stats.concealed + stats.stretched, pops);
    }

    #[test]
    fn hostile_packets_keep_the_buffer_bounded_and_a_real_stream_still_plays() {
        let mut buffer = JitterBuffer::new(Law::Ulaw, 0);
        assert!(
            std::mem::size_of::<JitterBuffer>() < 16 * 1024,
            "no heap, fixed size"
        );
        let mut state = 0x5eed_1234_abcd_0001u64;
        let mut frame = [0i16; PACKET_SAMPLES];
        let (mut now, mut pops) = (0u64, 0u64);
        let (mut sequence, mut timestamp) = (0u16, 0u32);
        for step in 0..20_000 {
            let r = next_random(&mut state);
            // Mostly near the last packet (to reach every path), sometimes anywhere.
            if r % 4 == 0 {
                (sequence, timestamp) = (next_random(&mut state) as u16, r as u32);
            } else {
                sequence = sequence.wrapping_add((r >> 8) as u16 % 8).wrapping_sub(2);
                timestamp = timestamp
                    .wrapping_add((r >> 16) as u32 % 1200)
                    .wrapping_sub(400);
            }
            let ssrc = [1, 1, 1, 1, 1, 1, 2, (r >> 40) as u32][(r >> 24) as usize % 8];
            let samples = (r >> 32) as usize % 700;
            let mut packet = rtp(ssrc, sequence, timestamp, &vec![(r >> 48) as u8; samples]);
            if r % 17 == 0 {
                packet[1] = 8; // another payload type
            }
            buffer.insert(now, &packet[..packet.len() - (r as usize >> 56) % 3]);
            if (r >> 20) % 2 == 0 {
                now += 20;
                buffer.pop(&mut frame);
                pops += u64::from(buffer.stream.started());
            }
            if step % 500 == 0 {
                check_invariants(&buffer, pops);
            }
        }
        check_invariants(&buffer, pops);
        let stats = buffer.stats();
        assert!(
            [
                stats.played,
                stats.concealed,
                stats.late,
                stats.duplicates,
                stats.rejected,
                stats.dropped,
                stats.stretched,
                stats.resyncs,
                stats.strays
            ]
            .iter()
            .all(|&n| n > 0),
            "every path taken: {stats:?}"
        );
        // A real stream takes over; once the delay has settled from the noise's jitter
        // estimate, it plays sample for sample.
        let mut far = Source {
            ssrc: 77,
            sequence: 1,
            timestamp: 1,
            samples: 160,
            content: 0,
        };
        let start = now.div_ceil(20) * 20;
        let played = play_samples_from(&mut buffer, start, &far.send(start, 100), 120);
        assert!(
            contains_run(&played, &samples_of(60 * 160, 40 * 160)),
            "{:?}",
            buffer.stats()
        );
    }

    #[test]
    fn packets_of_10_to_60_ms_and_odd_sizes_are_played_to_the_line_in_20_ms_frames() {
        for samples in [80, 240, 480, 100, 1] {
            let mut buffer = JitterBuffer::new(Law::Ulaw, 0);
            let mut far = Source {
                ssrc: 3,
                sequence: 0,
                timestamp: 0,
                samples,
                content: 0,
            };
            let count = 8000 / samples;
            let played = play_samples(&mut buffer, &far.send(0, count), 60);
            assert!(
                contains_run(&played, &samples_of(0, count * samples)),
                "{samples}-sample packets"
            );
            assert_eq!(buffer.stats().rejected, 0);
        }
    }

    #[test]
    fn the_ptime_may_change_mid_call_with_the_ssrc() {
        let mut buffer = JitterBuffer::new(Law::Ulaw, 0);
        let mut far = Source {
            ssrc: 1,
            sequence: 7,
            timestamp: 5_000_000,
            samples: 160,
            content: 0,
        };
        let mut arrivals = far.send(0, 50);
        far = Source {
            ssrc: 2,
            sequence: 9,
            timestamp: 200,
            samples: 480,
            content: 20_000,
        };
        arrivals.extend(far.send(1000, 10));
        // The same stream goes on in 10 ms packets.
        far.samples = 80;
        far.content = 40_000;
        arrivals.extend(far.send(1600, 100));
        let played = play_samples(&mut buffer, &arrivals, 140);
        assert!(contains_run(&played, &samples_of(0, 45 * 160)));
        assert!(contains_run(&played, &samples_of(20_000 + 480, 8 * 480)));
        assert!(contains_run(&played, &samples_of(40_000 + 4 * 80, 90 * 80)));
        let stats = buffer.stats();
        assert_eq!((stats.resyncs, stats.rejected), (1, 0), "{stats:?}");
    }
}
