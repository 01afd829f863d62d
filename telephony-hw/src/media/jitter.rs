//! Adaptive jitter buffer for the RTP -> analog line direction, with packet loss
//! concealment. Packets go in as they arrive (with the arrival time); every 20 ms the line
//! takes one frame out. The playout delay follows the RFC 3550 interarrival jitter estimate
//! (twice the jitter plus one frame, 1 to 10 frames); when more is buffered than needed a
//! frame is dropped; when the next packet is missing while less than the target is buffered,
//! the buffer waits a frame (growing the delay); otherwise the packet is lost and concealed.
//! Both waits and losses play the last frame again, halved each time, silence after three.

use super::PACKET_SAMPLES;
use crate::dsp::g711::Law;
use rtp_rs::RtpReader;

const SLOTS: usize = 64;
const MAX_TARGET_FRAMES: u32 = 10;
const MAX_CONCEALED_REPEATS: u32 = 3;

/// What the buffer did, for the CDR and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted.
    pub received: u64,
    /// Frames played from packets.
    pub played: u64,
    /// Frames concealed (lost or too late).
    pub concealed: u64,
    /// Packets that came after their playout time.
    pub late: u64,
    /// Packets seen twice.
    pub duplicates: u64,
    /// Packets that were not 20 ms of this payload type.
    pub rejected: u64,
    /// Frames dropped to shrink the delay.
    pub dropped: u64,
    /// Frames inserted (a copy of the last one, fading) to grow the delay.
    pub stretched: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    used: bool,
    sequence: u16,
    timestamp: u32,
    codes: [u8; PACKET_SAMPLES],
}

/// One leg's jitter buffer.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    law: Law,
    payload_type: u8,
    slots: [Slot; SLOTS],
    next_timestamp: Option<u32>,
    target_frames: u32,
    jitter: f32,
    last_transit: Option<i64>,
    last_frame: [i16; PACKET_SAMPLES],
    concealed_run: u32,
    stats: JitterStats,
}

/// `a` comes before `b` in RTP timestamp order (with wraparound).
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl JitterBuffer {
    /// A buffer for G.711 `law` packets of `payload_type`.
    pub fn new(law: Law, payload_type: u8) -> JitterBuffer {
        JitterBuffer {
            law,
            payload_type,
            slots: [Slot {
                used: false,
                sequence: 0,
                timestamp: 0,
                codes: [0; PACKET_SAMPLES],
            }; SLOTS],
            next_timestamp: None,
            target_frames: 2,
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
        if rtp.payload_type() != self.payload_type || rtp.payload().len() != PACKET_SAMPLES {
            self.stats.rejected += 1;
            return;
        }
        let (sequence, timestamp) = (u16::from(rtp.sequence_number()), rtp.timestamp());
        // RFC 3550 §6.4.1 interarrival jitter, in samples.
        let transit = (now_ms as i64) * 8 - i64::from(timestamp);
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as f32;
            // A timestamp wrap shows as a huge jump: ignore it.
            if d < 8000.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
        let frames = ((2.0 * self.jitter) / PACKET_SAMPLES as f32).ceil() as u32 + 1;
        self.target_frames = frames.clamp(1, MAX_TARGET_FRAMES);
        let next = *self.next_timestamp.get_or_insert_with(|| {
            timestamp.wrapping_sub((self.target_frames - 1) * PACKET_SAMPLES as u32)
        });
        if before(timestamp, next) {
            self.stats.late += 1;
            return;
        }
        let slot = &mut self.slots[sequence as usize % SLOTS];
        if slot.used && slot.sequence == sequence {
            self.stats.duplicates += 1;
            return;
        }
        slot.used = true;
        slot.sequence = sequence;
        slot.timestamp = timestamp;
        slot.codes.copy_from_slice(rtp.payload());
        self.stats.received += 1;
    }

    fn take(&mut self, timestamp: u32) -> Option<[u8; PACKET_SAMPLES]> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.used && s.timestamp == timestamp)?;
        slot.used = false;
        Some(slot.codes)
    }

    fn buffered_after(&self, timestamp: u32) -> u32 {
        self.slots
            .iter()
            .filter(|s| s.used && !before(s.timestamp, timestamp))
            .count() as u32
    }

    /// The next 20 ms frame for the line (linear samples). Call every 20 ms.
    pub fn pop(&mut self, out: &mut [i16; PACKET_SAMPLES]) {
        let Some(next) = self.next_timestamp else {
            out.fill(0);
            return;
        };
        // Too much buffered: drop the oldest frame to bring the delay down.
        if self.buffered_after(next) > self.target_frames + 2 {
            self.take(next);
            self.stats.dropped += 1;
            self.next_timestamp = Some(next.wrapping_add(PACKET_SAMPLES as u32));
            return self.pop(out);
        }
        if let Some(codes) = self.take(next) {
            self.law.decode(&codes, out);
            self.last_frame = *out;
            self.concealed_run = 0;
            self.stats.played += 1;
            self.next_timestamp = Some(next.wrapping_add(PACKET_SAMPLES as u32));
            return;
        }
        self.fill_gap(out);
        if self.buffered_after(next) < self.target_frames {
            // Probably late, not lost: wait for it, one frame more delay.
            self.stats.stretched += 1;
        } else {
            self.stats.concealed += 1;
            self.next_timestamp = Some(next.wrapping_add(PACKET_SAMPLES as u32));
        }
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
}
