//! The RTP sender of one leg: 20 ms G.711 packets with continuous sequence numbers and
//! timestamps, and DTMF as RFC 4733 telephone events.

use super::PACKET_SAMPLES;
use crate::dsp::telephone_event::TelephoneEvent;
use rtp_rs::{RtpPacketBuilder, Seq};

/// Largest packet built here: 12-byte header + 160 bytes of G.711.
pub const MAX_PACKET: usize = 12 + PACKET_SAMPLES;

/// How many copies of an event's final packet are sent (RFC 4733 §2.5.1.4).
const END_REPEATS: usize = 3;

/// An RTP sender.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    payload_type: u8,
    event_payload_type: u8,
    started: bool,
    /// Event in progress: (timestamp of its start, whether its first packet went out).
    event: Option<(u32, bool)>,
    /// The last event's final packet (start timestamp, payload), for its repeats.
    last_end: Option<(u32, [u8; 4])>,
}

impl RtpSender {
    /// A sender with this SSRC and initial sequence/timestamp (random in production).
    pub fn new(
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        payload_type: u8,
        event_payload_type: u8,
    ) -> Self {
        RtpSender {
            ssrc,
            sequence,
            timestamp,
            payload_type,
            event_payload_type,
            started: false,
            event: None,
            last_end: None,
        }
    }

    fn build(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
        out: &mut [u8; MAX_PACKET],
    ) -> usize {
        let length = RtpPacketBuilder::new()
            .payload_type(payload_type)
            .ssrc(self.ssrc)
            .sequence(Seq::from(self.sequence))
            .timestamp(timestamp)
            .marked(marker)
            .payload(payload)
            .build_into(out)
            .expect("a 12-byte header and at most 160 bytes fit MAX_PACKET");
        self.sequence = self.sequence.wrapping_add(1);
        length
    }

    /// One 20 ms frame of G.711 codes; returns the packet length written into `out`.
    pub fn audio(&mut self, codes: &[u8; PACKET_SAMPLES], out: &mut [u8; MAX_PACKET]) -> usize {
        let marker = !self.started;
        self.started = true;
        let timestamp = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(PACKET_SAMPLES as u32);
        self.build(self.payload_type, marker, timestamp, codes, out)
    }

    /// One 20 ms step of a DTMF event (in place of audio): `duration` is the event's length
    /// so far in samples; with `end`, the final packet is written `END_REPEATS` times into
    /// `out` (call [`RtpSender::end_repeats`] for how many). Returns the packet length.
    pub fn event(
        &mut self,
        digit: char,
        duration: u16,
        end: bool,
        out: &mut [u8; MAX_PACKET],
    ) -> Option<usize> {
        let code = TelephoneEvent::code_for_digit(digit)?;
        let (start, marker) = match self.event {
            Some((start, _)) => (start, false),
            None => (self.timestamp, true),
        };
        self.event = if end { None } else { Some((start, true)) };
        // Audio time keeps running while the event plays.
        self.timestamp = self.timestamp.wrapping_add(PACKET_SAMPLES as u32);
        let payload = TelephoneEvent {
            event: code,
            end,
            volume: 10,
            duration,
        }
        .encode();
        if end {
            self.last_end = Some((start, payload));
        }
        Some(self.build(self.event_payload_type, marker, start, &payload, out))
    }

    /// A repeat of the last event's final packet (RFC 4733 §2.5.1.4), with its own
    /// sequence number; None when no event ended.
    pub fn repeat_end(&mut self, out: &mut [u8; MAX_PACKET]) -> Option<usize> {
        let (start, payload) = self.last_end?;
        Some(self.build(self.event_payload_type, false, start, &payload, out))
    }

    /// How many times the caller should send an event's end packet in all.
    pub fn end_repeats(&self) -> usize {
        END_REPEATS
    }

    /// The SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp_rs::RtpReader;

    #[test]
    fn audio_packets_count_up_and_wrap() {
        let mut sender = RtpSender::new(0x1234_5678, 65_534, u32::MAX - 159, 0, 101);
        let mut out = [0u8; MAX_PACKET];
        let mut seen = Vec::new();
        for _ in 0..3 {
            let n = sender.audio(&[0xFF; PACKET_SAMPLES], &mut out);
            let packet = RtpReader::new(&out[..n]).unwrap();
            assert_eq!(packet.ssrc(), 0x1234_5678);
            assert_eq!(packet.payload().len(), PACKET_SAMPLES);
            seen.push((
                u16::from(packet.sequence_number()),
                packet.timestamp(),
                packet.mark(),
            ));
        }
        assert_eq!(
            seen,
            [
                (65_534, u32::MAX - 159, true),
                (65_535, 0, false),
                (0, 160, false)
            ]
        );
    }

    #[test]
    fn dtmf_events_keep_their_start_timestamp_and_end_with_the_e_bit() {
        let mut sender = RtpSender::new(7, 100, 8000, 0, 101);
        let mut out = [0u8; MAX_PACKET];
        sender.audio(&[0xFF; PACKET_SAMPLES], &mut out);
        let mut packets = Vec::new();
        for (i, end) in [false, false, true].into_iter().enumerate() {
            let n = sender
                .event('5', (i as u16 + 1) * 160, end, &mut out)
                .unwrap();
            let packet = RtpReader::new(&out[..n]).unwrap();
            let event = TelephoneEvent::decode(packet.payload()).unwrap();
            packets.push((
                packet.payload_type(),
                packet.timestamp(),
                packet.mark(),
                event.end,
                event.duration,
                event.digit(),
            ));
        }
        assert_eq!(
            packets,
            [
                (101, 8160, true, false, 160, Some('5')),
                (101, 8160, false, false, 320, Some('5')),
                (101, 8160, false, true, 480, Some('5')),
            ]
        );
        let n = sender.audio(&[0xFF; PACKET_SAMPLES], &mut out);
        assert_eq!(
            RtpReader::new(&out[..n]).unwrap().timestamp(),
            8640,
            "audio time ran on"
        );
        assert_eq!(sender.end_repeats(), 3);
        let before = RtpReader::new(&out[..n]).unwrap().sequence_number();
        let n = sender.repeat_end(&mut out).unwrap();
        let repeat = RtpReader::new(&out[..n]).unwrap();
        assert_eq!(
            u16::from(repeat.sequence_number()),
            u16::from(before) + 1,
            "own number"
        );
        assert_eq!(
            (repeat.timestamp(), repeat.payload()[1] >> 7),
            (8160, 1),
            "same end packet"
        );
        assert!(sender.event('x', 160, true, &mut out).is_none());
    }
}
