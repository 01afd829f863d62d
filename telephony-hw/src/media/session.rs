//! One call's media between an analog line and RTP, without sockets: the line's audio
//! becomes 20 ms G.711 packets (DTMF keys become RFC 4733 events instead of audio), and
//! received packets go through the jitter buffer to the line (received events are played
//! to the line as DTMF tones). The gateway moves the packets; this decides their content.

use super::jitter::{JitterBuffer, JitterStats};
use super::rtp_out::{RtpSender, MAX_PACKET};
use super::PACKET_SAMPLES;
use crate::dahdi::channel::BLOCK_SIZE;
use crate::dsp::dtmf::{DtmfEvent, DtmfGenerator};
use crate::dsp::g711::Law;
use crate::dsp::telephone_event::TelephoneEvent;
use crate::line::driver::CallAudio;
use rtp_rs::RtpReader;
use std::collections::VecDeque;

/// Packets queued for sending before the oldest is dropped (the socket is not draining).
const OUTBOX: usize = 16;
/// A received event with no news for this many frames has ended (its end packets lost).
const EVENT_SILENCE_FRAMES: u32 = 10;

/// What SDP negotiated for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaFormat {
    /// G.711 law of the audio.
    pub law: Law,
    /// Its payload type (0 PCMU, 8 PCMA).
    pub payload_type: u8,
    /// RFC 4733 telephone-event payload type, if the far end takes events.
    pub event_payload_type: Option<u8>,
}

/// Random starting values for the RTP stream (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy)]
pub struct StreamStart {
    /// Synchronisation source.
    pub ssrc: u32,
    /// First sequence number.
    pub sequence: u16,
    /// First timestamp.
    pub timestamp: u32,
}

/// A DTMF key being sent as an event.
#[derive(Debug, Clone, Copy)]
struct SendingEvent {
    digit: char,
    duration: u16,
    released: bool,
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// RTP packets produced (audio and events).
    pub sent: u64,
    /// Packets dropped because the outbox was full.
    pub send_overflow: u64,
    /// DTMF events received and played to the line.
    pub events_played: u64,
    /// DTMF keys sent as events.
    pub events_sent: u64,
    /// The receive side's jitter buffer.
    pub jitter: JitterStats,
}

/// One call's media.
#[derive(Debug)]
pub struct MediaSession {
    format: MediaFormat,
    sender: RtpSender,
    jitter: JitterBuffer,
    frame: [i16; PACKET_SAMPLES],
    filled: usize,
    sending: Option<SendingEvent>,
    outbox: VecDeque<([u8; MAX_PACKET], usize)>,
    /// A received event being played: its RTP timestamp, key, frames without news.
    playing: Option<(u32, char, u32)>,
    /// The timestamp of the last event that ended (its repeated end packets are ignored).
    ended_event: Option<u32>,
    generator: DtmfGenerator,
    now_ms: u64,
    stats: SessionStats,
}

impl MediaSession {
    /// A session sending and receiving `format`.
    pub fn new(format: MediaFormat, start: StreamStart) -> MediaSession {
        MediaSession {
            format,
            sender: RtpSender::new(
                start.ssrc,
                start.sequence,
                start.timestamp,
                format.payload_type,
                format.event_payload_type.unwrap_or(101),
            ),
            jitter: JitterBuffer::new(format.law, format.payload_type),
            frame: [0; PACKET_SAMPLES],
            filled: 0,
            sending: None,
            outbox: VecDeque::with_capacity(OUTBOX),
            playing: None,
            ended_event: None,
            generator: DtmfGenerator::new(-10.0, -8.0),
            now_ms: 0,
            stats: SessionStats::default(),
        }
    }

    /// The negotiated format.
    pub fn format(&self) -> MediaFormat {
        self.format
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            jitter: self.jitter.stats(),
            ..self.stats
        }
    }

    /// Sets the clock used to time received packets (ms, monotonic).
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// An RTP packet from the far end.
    pub fn receive(&mut self, packet: &[u8]) {
        let Ok(rtp) = RtpReader::new(packet) else {
            self.jitter.insert(self.now_ms, packet); // counted as rejected there
            return;
        };
        if Some(rtp.payload_type()) != self.format.event_payload_type {
            self.jitter.insert(self.now_ms, packet);
            return;
        }
        let Ok(event) = TelephoneEvent::decode(rtp.payload()) else {
            return;
        };
        let timestamp = rtp.timestamp();
        if event.end {
            if self.playing.is_some_and(|(at, _, _)| at == timestamp) {
                self.playing = None;
            }
            self.ended_event = Some(timestamp);
            return;
        }
        if self.ended_event == Some(timestamp) {
            return;
        }
        let Some(digit) = event.digit() else {
            return;
        };
        match &mut self.playing {
            Some((at, _, quiet)) if *at == timestamp => *quiet = 0,
            _ => {
                self.playing = Some((timestamp, digit, 0));
                self.stats.events_played += 1;
            }
        }
    }

    /// Takes the next packet to send into `out`; returns its length.
    pub fn pop_packet(&mut self, out: &mut [u8; MAX_PACKET]) -> Option<usize> {
        let (packet, length) = self.outbox.pop_front()?;
        out[..length].copy_from_slice(&packet[..length]);
        Some(length)
    }

    fn queue(&mut self, packet: [u8; MAX_PACKET], length: usize) {
        if self.outbox.len() == OUTBOX {
            self.outbox.pop_front();
            self.stats.send_overflow += 1;
        }
        self.outbox.push_back((packet, length));
        self.stats.sent += 1;
    }

    /// One full 20 ms frame from the line: an audio packet, or an event packet while a key
    /// is held (and its end packets once released).
    fn send_frame(&mut self) {
        let mut packet = [0u8; MAX_PACKET];
        match self.sending {
            Some(mut event) if self.format.event_payload_type.is_some() => {
                event.duration = event.duration.saturating_add(PACKET_SAMPLES as u16);
                let Some(length) =
                    self.sender
                        .event(event.digit, event.duration, event.released, &mut packet)
                else {
                    self.sending = None;
                    return;
                };
                self.queue(packet, length);
                if event.released {
                    self.sending = None;
                    for _ in 1..self.sender.end_repeats() {
                        if let Some(length) = self.sender.repeat_end(&mut packet) {
                            self.queue(packet, length);
                        }
                    }
                } else {
                    self.sending = Some(event);
                }
            }
            _ => {
                let mut codes = [0u8; PACKET_SAMPLES];
                self.format.law.encode(&self.frame, &mut codes);
                let length = self.sender.audio(&codes, &mut packet);
                self.queue(packet, length);
            }
        }
    }
}

impl CallAudio for MediaSession {
    fn heard_on_line(&mut self, samples: &[i16]) {
        for &sample in samples {
            self.frame[self.filled] = sample;
            self.filled += 1;
            if self.filled == PACKET_SAMPLES {
                self.filled = 0;
                self.send_frame();
            }
        }
    }

    fn digit(&mut self, event: DtmfEvent) {
        if self.format.event_payload_type.is_none() {
            return; // the far end hears the tones in band
        }
        match event {
            DtmfEvent::Down(digit) => {
                self.stats.events_sent += 1;
                self.sending = Some(SendingEvent {
                    digit,
                    duration: 0,
                    released: false,
                });
            }
            DtmfEvent::Up(_) => {
                if let Some(sending) = &mut self.sending {
                    sending.released = true;
                }
            }
        }
    }

    fn play_to_line(&mut self, out: &mut [i16; BLOCK_SIZE]) {
        if let Some((_, digit, quiet)) = &mut self.playing {
            self.generator.render(*digit, out);
            *quiet += 1;
            if *quiet > EVENT_SILENCE_FRAMES {
                self.playing = None;
            }
            // Keep the jitter buffer's clock running under the tone.
            let mut discard = [0i16; BLOCK_SIZE];
            self.jitter.pop(&mut discard);
            return;
        }
        self.jitter.pop(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::analysis::dominant_frequency;
    use crate::dsp::dtmf::{detect_digits, DtmfThresholds};

    const FORMAT: MediaFormat = MediaFormat {
        law: Law::Alaw,
        payload_type: 8,
        event_payload_type: Some(101),
    };
    const START: StreamStart = StreamStart {
        ssrc: 7,
        sequence: 100,
        timestamp: 5000,
    };

    fn tone(frequency: f32, count: usize) -> Vec<i16> {
        (0..count)
            .map(|n| {
                (8000.0 * (std::f32::consts::TAU * frequency * n as f32 / 8000.0).sin()) as i16
            })
            .collect()
    }

    fn drain(session: &mut MediaSession) -> Vec<Vec<u8>> {
        let mut out = [0u8; MAX_PACKET];
        std::iter::from_fn(|| session.pop_packet(&mut out).map(|n| out[..n].to_vec())).collect()
    }

    #[test]
    fn line_audio_crosses_two_sessions_and_comes_out_as_the_same_tone() {
        let mut near = MediaSession::new(FORMAT, START);
        let mut far = MediaSession::new(FORMAT, START);
        let mut heard = Vec::new();
        let spoken = tone(1004.0, 8000);
        for (tick, block) in spoken.chunks(BLOCK_SIZE).enumerate() {
            near.heard_on_line(block);
            far.set_now(tick as u64 * 20);
            for packet in drain(&mut near) {
                let rtp = RtpReader::new(&packet).unwrap();
                assert_eq!(rtp.payload_type(), 8);
                far.receive(&packet);
            }
            let mut out = [0i16; BLOCK_SIZE];
            far.play_to_line(&mut out);
            heard.extend_from_slice(&out);
        }
        let measured = dominant_frequency(&heard).unwrap();
        assert!((measured.frequency_hz - 1004.0).abs() < 3.0, "{measured:?}");
        assert_eq!(near.stats().sent, 50);
        assert_eq!(
            far.stats().jitter.played,
            50 - u64::from(far.jitter.target_frames()) + 1
        );
    }

    #[test]
    fn a_key_on_the_line_becomes_events_and_events_become_tones() {
        let mut near = MediaSession::new(FORMAT, START);
        let mut far = MediaSession::new(FORMAT, START);
        near.digit(DtmfEvent::Down('7'));
        let mut heard = Vec::new();
        for tick in 0..30u64 {
            if tick == 5 {
                near.digit(DtmfEvent::Up('7'));
            }
            near.heard_on_line(&[0; BLOCK_SIZE]);
            far.set_now(tick * 20);
            for packet in drain(&mut near) {
                far.receive(&packet);
            }
            let mut out = [0i16; BLOCK_SIZE];
            far.play_to_line(&mut out);
            heard.extend_from_slice(&out);
        }
        assert_eq!(detect_digits(&heard, DtmfThresholds::default()), "7");
        let stats = far.stats();
        assert_eq!((stats.events_played, near.stats().events_sent), (1, 1));
        // 5 event packets, 3 end packets, then audio again.
        assert_eq!(near.stats().sent, 5 + 3 + 24);
    }

    #[test]
    fn without_telephone_event_keys_stay_in_band() {
        let format = MediaFormat {
            event_payload_type: None,
            ..FORMAT
        };
        let mut session = MediaSession::new(format, START);
        session.digit(DtmfEvent::Down('1'));
        session.heard_on_line(&[100; BLOCK_SIZE]);
        let packets = drain(&mut session);
        assert_eq!(RtpReader::new(&packets[0]).unwrap().payload_type(), 8);
        assert_eq!(session.stats().events_sent, 0);
    }

    #[test]
    fn garbage_and_foreign_payloads_are_counted_not_played() {
        let mut session = MediaSession::new(FORMAT, START);
        session.receive(b"not rtp");
        let mut pcmu = MediaSession::new(
            MediaFormat {
                law: Law::Ulaw,
                payload_type: 0,
                event_payload_type: None,
            },
            START,
        );
        pcmu.heard_on_line(&[0; BLOCK_SIZE]);
        for packet in drain(&mut pcmu) {
            session.receive(&packet);
        }
        assert_eq!(session.stats().jitter.rejected, 2);
        let mut out = [1i16; BLOCK_SIZE];
        session.play_to_line(&mut out);
        assert!(out.iter().all(|&s| s == 0));
    }
}
