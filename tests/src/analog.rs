//! Demo-mode helpers: the operator interface of a running gateway (`gateway analog ...`),
//! and an RTP peer standing in for a SIP phone's media (SIPp does the signalling, pointing
//! its SDP at this socket).

use crate::{gateway_binary, Gateway};
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use telephony_hw::dsp::analysis::dominant_frequency;
use telephony_hw::dsp::g711::Law;
use telephony_hw::dsp::telephone_event::TelephoneEvent;

impl Gateway {
    fn run_analog(&self, command: &str) -> std::process::Output {
        Command::new(gateway_binary())
            .arg("analog")
            .arg("--config")
            .arg(self.config_path())
            .args(command.split_whitespace())
            .output()
            .expect("run gateway analog")
    }

    /// Runs `gateway analog <command>` against this gateway; returns its `key=value` answer
    /// (panics when the command fails).
    pub fn analog(&self, command: &str) -> HashMap<String, String> {
        let output = self.run_analog(command);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "gateway analog {command} failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Runs `gateway analog <command>` expecting a refusal; returns the error text.
    pub fn analog_refused(&self, command: &str) -> String {
        let output = self.run_analog(command);
        assert!(
            !output.status.success(),
            "gateway analog {command} was accepted"
        );
        String::from_utf8_lossy(&output.stderr).to_string()
    }

    /// Polls `listen <port>` until what its far end heard passes `check` (panics after 15 s:
    /// a debug build on a loaded 2-core machine once took longer than 5 s to set up the call).
    pub fn hears(&self, port: u32, what: &str, check: impl Fn(&HashMap<String, String>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if check(&self.analog(&format!("listen {port}"))) {
                return;
            }
            assert!(Instant::now() < deadline, "port {port} never heard {what}");
            std::thread::sleep(Duration::from_millis(20)); // polling interval
        }
    }

    /// Polls `listen <port>` until its far end hears a tone within 5 Hz of one of `hz`.
    pub fn hears_tone(&self, port: u32, what: &str, hz: &[f32]) {
        self.hears(port, what, |heard| {
            heard
                .get("tone_hz")
                .and_then(|t| t.parse::<f32>().ok())
                .is_some_and(|heard| hz.iter().any(|hz| (heard - hz).abs() < 5.0))
        });
    }

    /// Polls `status <port>` until `key` has `value` (panics after `within`).
    pub fn wait_for_analog(&self, port: u32, key: &str, value: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let status = self.analog(&format!("status {port}"));
            if status.get(key).map(String::as_str) == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "analog port {port}: {key} never became {value}: {status:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What an [`RtpPeer`] received.
#[derive(Debug, Default)]
pub struct Received {
    /// The decoded audio of the audio packets, in arrival order.
    pub audio: Vec<i16>,
    /// Telephone events: (RTP timestamp, key, end bit).
    pub events: Vec<(u32, char, bool)>,
    /// Audio packets whose sequence number or timestamp did not follow the previous one.
    pub discontinuities: usize,
    /// SSRCs seen.
    pub ssrcs: Vec<u32>,
    /// Where the packets came from.
    pub source: Option<SocketAddr>,
}

/// A SIP phone's media end: receives and sends G.711 RTP.
pub struct RtpPeer {
    socket: UdpSocket,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    /// Samples per audio packet.
    packet_samples: u32,
}

impl RtpPeer {
    /// A peer on a free loopback port.
    pub fn new() -> RtpPeer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind rtp");
        RtpPeer {
            socket,
            ssrc: 0x5eed,
            sequence: 1000,
            timestamp: 50_000,
            packet_samples: 160,
        }
    }

    /// From now on its media comes from another source, as after a pickup or a transfer:
    /// SSRC `ssrc`, sequence numbers from `sequence`, timestamps moved by `timestamp_shift`
    /// (wrapping), audio packets of `ptime_ms`.
    pub fn switch_source(&mut self, ssrc: u32, sequence: u16, timestamp_shift: i32, ptime_ms: u32) {
        self.ssrc = ssrc;
        self.sequence = sequence;
        self.timestamp = self.timestamp.wrapping_add_signed(timestamp_shift);
        self.packet_samples = ptime_ms * 8;
    }

    /// Its port, for the SDP SIPp sends.
    pub fn port(&self) -> u16 {
        self.socket.local_addr().expect("local addr").port()
    }

    /// Collects packets for `duration` (PCMU payload 0; events on `event_pt`).
    pub fn receive(&self, duration: Duration, law: Law, event_pt: u8) -> Received {
        self.receive_until(duration, law, event_pt, |_| false)
    }

    /// Like [`RtpPeer::receive`], but stops as soon as `done` holds for what came (a
    /// loaded machine may be slow to start sending: wait for the event, not a fixed time).
    pub fn receive_until(
        &self,
        limit: Duration,
        law: Law,
        event_pt: u8,
        done: impl Fn(&Received) -> bool,
    ) -> Received {
        let mut received = Received::default();
        let deadline = Instant::now() + limit;
        let mut buffer = [0u8; 1500];
        let mut last: Option<(u16, u32)> = None;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if done(&received) {
                break;
            }
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            let Ok((n, from)) = self.socket.recv_from(&mut buffer) else {
                continue;
            };
            received.source = Some(from);
            let Ok(rtp) = RtpReader::new(&buffer[..n]) else {
                continue;
            };
            if !received.ssrcs.contains(&rtp.ssrc()) {
                received.ssrcs.push(rtp.ssrc());
            }
            let (sequence, timestamp) = (u16::from(rtp.sequence_number()), rtp.timestamp());
            if rtp.payload_type() == event_pt {
                if let Ok(event) = TelephoneEvent::decode(rtp.payload()) {
                    if let Some(key) = event.digit() {
                        received.events.push((timestamp, key, event.end));
                    }
                }
                last = Some((sequence, timestamp));
                continue;
            }
            if let Some((last_sequence, last_timestamp)) = last {
                let in_order = sequence == last_sequence.wrapping_add(1);
                let advanced = timestamp.wrapping_sub(last_timestamp) % 160 == 0
                    && timestamp != last_timestamp;
                if !in_order || !advanced {
                    received.discontinuities += 1;
                }
            }
            last = Some((sequence, timestamp));
            let mut samples = vec![0i16; rtp.payload().len()];
            law.decode(rtp.payload(), &mut samples);
            received.audio.extend(samples);
        }
        received
    }

    fn send(
        &mut self,
        to: SocketAddr,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
    ) {
        let packet = RtpPacketBuilder::new()
            .payload_type(payload_type)
            .ssrc(self.ssrc)
            .sequence(Seq::from(self.sequence))
            .timestamp(timestamp)
            .marked(marker)
            .payload(payload)
            .build()
            .expect("rtp packet");
        self.sequence = self.sequence.wrapping_add(1);
        self.socket.send_to(&packet, to).expect("send rtp");
    }

    /// Sends `ms` of a `hz` tone (G.711 `law`, payload type `pt`) to `to`, paced in real
    /// time, in packets of the source's ptime (20 ms unless switched).
    pub fn send_tone(&mut self, to: SocketAddr, law: Law, pt: u8, hz: f32, ms: u32) {
        self.send_tone_losing(to, law, pt, hz, ms, None);
    }

    /// Like [`RtpPeer::send_tone`], but every `lose_every`-th packet is lost on the way.
    pub fn send_tone_losing(
        &mut self,
        to: SocketAddr,
        law: Law,
        pt: u8,
        hz: f32,
        ms: u32,
        lose_every: Option<u32>,
    ) {
        let start = Instant::now();
        let size = self.packet_samples;
        let ptime_ms = size / 8;
        for packet in 0..ms / ptime_ms {
            if lose_every.is_some_and(|n| packet % n == n - 1) {
                self.sequence = self.sequence.wrapping_add(1);
                self.timestamp = self.timestamp.wrapping_add(size);
                pace(start, (packet + 1) * ptime_ms);
                continue;
            }
            let samples: Vec<i16> = (0..size)
                .map(|n| {
                    let t = (packet * size + n) as f32 / 8000.0;
                    (6000.0 * (std::f32::consts::TAU * hz * t).sin()) as i16
                })
                .collect();
            let mut codes = vec![0u8; samples.len()];
            law.encode(&samples, &mut codes);
            self.send(to, pt, packet == 0, self.timestamp, &codes);
            self.timestamp = self.timestamp.wrapping_add(size);
            pace(start, (packet + 1) * ptime_ms);
        }
    }

    /// Sends DTMF `key` as RFC 4733 events (`ms` long, three end packets), paced at 20 ms.
    pub fn send_event(&mut self, to: SocketAddr, event_pt: u8, key: char, ms: u32) {
        let start = Instant::now();
        let code = TelephoneEvent::code_for_digit(key).expect("a DTMF key");
        let frames = ms / 20;
        for frame in 0..frames + 3 {
            let end = frame >= frames;
            let duration = (frame.min(frames) + 1) * 160;
            let payload = TelephoneEvent {
                event: code,
                end,
                volume: 10,
                duration: duration as u16,
            }
            .encode();
            self.send(to, event_pt, frame == 0, self.timestamp, &payload);
            pace(start, (frame + 1) * 20);
        }
        self.timestamp = self.timestamp.wrapping_add((frames + 1) * 160);
    }
}

impl Default for RtpPeer {
    fn default() -> Self {
        RtpPeer::new()
    }
}

/// Waits until `ms` after `start`.
fn pace(start: Instant, ms: u32) {
    let due = start + Duration::from_millis(u64::from(ms));
    if let Some(wait) = due.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

/// The RTP payload type of telephone events (RFC 4733) in the test phones' SDP.
pub const EVENT_PT: u8 = 101;

fn assert_near(measured: f32, expected: f32, what: &str) {
    assert!(
        (measured - expected).abs() < 5.0,
        "{what}: measured {measured} Hz, expected {expected} Hz"
    );
}

/// The analog side says a 1004 Hz tone; the SIP side's RTP carries it, continuously;
/// returns where that RTP came from.
pub fn analog_to_sip_audio(gateway: &Gateway, port: u32, peer: &RtpPeer) -> SocketAddr {
    gateway.analog(&format!("say {port} 1004 1500"));
    // The last 800 ms carry the tone, however late it starts (up to 15 s on a loaded
    // machine).
    let last_800_ms = |r: &Received| r.audio[r.audio.len().saturating_sub(8 * 800)..].to_vec();
    let received = peer.receive_until(Duration::from_secs(15), Law::Ulaw, EVENT_PT, |r| {
        r.audio.len() >= 8 * 800
            && dominant_frequency(&last_800_ms(r))
                .is_some_and(|tone| (tone.frequency_hz - 1004.0).abs() < 5.0)
    });
    let tone = dominant_frequency(&last_800_ms(&received)).expect("the SIP side received silence");
    assert_near(tone.frequency_hz, 1004.0, "analog -> RTP");
    assert_eq!(received.discontinuities, 0, "sequence/timestamp gaps");
    assert_eq!(received.ssrcs.len(), 1, "one SSRC: {:?}", received.ssrcs);
    received.source.expect("RTP came from somewhere")
}

/// The SIP side sends a 1400 Hz tone; the analog side hears it.
pub fn sip_to_analog_audio(gateway: &Gateway, port: u32, peer: &mut RtpPeer, to: SocketAddr) {
    gateway.analog(&format!("listen {port}")); // forget what came before
    peer.send_tone(to, Law::Ulaw, 0, 1400.0, 800);
    gateway.hears_tone(port, "RTP -> analog: 1400 Hz", &[1400.0]);
}
