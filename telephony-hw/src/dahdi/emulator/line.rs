//! Line ports (FXO hardware, FXS signalling) and the virtual central office behind them.
//!
//! Kernel rules copied (DESIGN.md §5): a ring burst starts with RINGBEGIN and its end, after
//! a 50 ms trailer, gives RINGOFFHOOK; rings within 2 s of the gateway hanging up are
//! ignored; battery and polarity changes are debounced 64 ms; battery lost while the loop is
//! closed is ONHOOK (kewlstart disconnect); battery lost for over 1000 ms is a red alarm.
//! The office sends caller ID FSK between the first and second ring, dial tone on seizure,
//! collects DTMF digits, answers with a polarity reversal, and can play busy tone.

use super::{Port, RX_BLOCKS};
use crate::dahdi::abi::event;
use crate::dahdi::channel::BLOCK_SIZE;
use crate::dsp::dtmf::{DtmfDetector, DtmfEvent};
use crate::dsp::tones::{Tone, TonePlayer};
use std::collections::VecDeque;

/// Ring burst trailer before RINGOFFHOOK (ms).
const RING_TRAILER_MS: u64 = 50;
/// Rings this soon after the gateway hangs up are ignored (ms).
const RING_DEBOUNCE_AFTER_HANGUP_MS: u64 = 2000;
/// Battery and polarity debounce (ms).
const LINE_DEBOUNCE_MS: u64 = 64;
/// Battery missing this long is a red alarm (ms).
const RED_ALARM_MS: u64 = 1000;
/// Caller ID starts this long after the first ring ends (GR-30: at least 500 ms).
const CALLER_ID_DELAY_MS: u64 = 600;
/// A loop break shorter than this is a dial pulse; longer is a hangup (ms).
const PULSE_BREAK_MAX_MS: u64 = 300;
/// The loop closed this long after the last pulse ends a pulse-dialled digit (ms).
const PULSE_DIGIT_GAP_MS: u64 = 300;

/// The central office side of one line.
#[derive(Debug)]
pub(super) struct CentralOffice {
    /// A line is plugged into the port.
    pub(super) plugged: bool,
    /// Office battery on the line (false during a disconnect drop).
    pub(super) battery: bool,
    battery_changed_at: u64,
    battery_reported: bool,
    alarm: bool,
    pub(super) polarity: bool,
    polarity_changed_at: Option<u64>,
    /// Ringing: when it started, cadence (ms on/off), caller ID samples to send.
    ringing: Option<(u64, [u64; 2])>,
    ring_voltage: bool,
    ring_ended_at: Option<u64>,
    first_ring_done: bool,
    pub(super) caller_id: Option<Vec<i16>>,
    caller_id_at: Option<u64>,
    /// The gateway's loop is closed (off hook).
    pub(super) loop_closed: bool,
    last_hangup: Option<u64>,
    /// The loop opened at this time while seized: a dial pulse, or a hangup once it lasts.
    open_since: Option<u64>,
    pulses: u8,
    last_make: Option<u64>,
    /// Audio the office sends toward the gateway.
    pub(super) outgoing: VecDeque<i16>,
    /// A tone the office plays continuously (dial tone, busy).
    pub(super) tone: Option<TonePlayer>,
    /// Digits the office heard from the gateway.
    pub(super) digits: String,
    /// What the office heard from the gateway while the loop was closed (linear), bounded.
    pub(super) heard: Vec<i16>,
    detector: DtmfDetector,
}

impl Default for CentralOffice {
    fn default() -> Self {
        CentralOffice {
            plugged: true,
            battery: true,
            battery_changed_at: 0,
            battery_reported: true,
            alarm: false,
            polarity: false,
            polarity_changed_at: None,
            ringing: None,
            ring_voltage: false,
            ring_ended_at: None,
            first_ring_done: false,
            caller_id: None,
            caller_id_at: None,
            loop_closed: false,
            last_hangup: None,
            open_since: None,
            pulses: 0,
            last_make: None,
            outgoing: VecDeque::new(),
            tone: None,
            digits: String::new(),
            heard: Vec::new(),
            detector: DtmfDetector::default(),
        }
    }
}

impl CentralOffice {
    /// Starts ringing the line with this cadence; `caller_id` is an FSK spill.
    pub(super) fn ring(&mut self, now: u64, cadence: [u64; 2], caller_id: Option<Vec<i16>>) {
        self.ringing = Some((now, cadence));
        self.first_ring_done = false;
        self.caller_id = caller_id;
    }

    /// Stops ringing (the caller gave up, or the line was answered).
    pub(super) fn stop_ringing(&mut self) {
        self.ringing = None;
    }

    /// Drops (false) or restores (true) battery.
    pub(super) fn set_battery(&mut self, now: u64, on: bool) {
        if self.battery != on {
            self.battery = on;
            self.battery_changed(now);
        }
    }

    /// Battery (or the cable carrying it) changed at `now`: restart the debounce.
    pub(super) fn battery_changed(&mut self, now: u64) {
        self.battery_changed_at = now;
    }

    /// Reverses the line polarity.
    pub(super) fn reverse_polarity(&mut self, now: u64) {
        self.polarity = !self.polarity;
        self.polarity_changed_at = Some(now);
    }

    /// The gateway closes (seizes/answers) or opens (hangs up) the loop.
    pub(super) fn set_loop(&mut self, now: u64, closed: bool, dial_tone: &Tone) {
        if self.loop_closed == closed {
            return;
        }
        self.loop_closed = closed;
        if closed {
            if let Some(opened) = self.open_since.take() {
                if now - opened < PULSE_BREAK_MAX_MS {
                    // A short break on a seized line: one rotary dial pulse.
                    self.pulses = (self.pulses + 1).min(10);
                    self.last_make = Some(now);
                    return;
                }
                self.hang_up(opened);
            }
            if self.ringing.take().is_some() {
                self.ring_voltage = false;
                self.caller_id = None;
            } else {
                // Seizure for an outgoing call: dial tone until the first digit.
                self.tone = Some(TonePlayer::new(dial_tone.clone(), -13.0));
                self.digits.clear();
            }
        } else {
            // A hangup, unless the loop closes again soon (a dial pulse).
            self.open_since = Some(now);
        }
    }

    /// The loop has been open long enough to be a hangup.
    fn hang_up(&mut self, opened: u64) {
        self.last_hangup = Some(opened);
        self.tone = None;
        self.outgoing.clear();
        self.pulses = 0;
        self.last_make = None;
    }
}

/// One millisecond of a line port.
pub(super) fn tick(port: &mut Port, now: u64) {
    let co = &mut port.co;
    let mut events: Vec<i32> = Vec::new();
    // Battery: debounced; lost with the loop closed is a disconnect; long loss a red alarm.
    let battery = co.battery && co.plugged;
    if battery != co.battery_reported && now - co.battery_changed_at >= LINE_DEBOUNCE_MS {
        co.battery_reported = battery;
        if !battery && co.loop_closed {
            events.push(event::ONHOOK);
        }
    }
    let no_battery_for = if battery {
        0
    } else {
        now - co.battery_changed_at
    };
    if !co.alarm && no_battery_for >= RED_ALARM_MS {
        co.alarm = true;
        events.push(event::ALARM);
    } else if co.alarm && battery {
        co.alarm = false;
        events.push(event::NOALARM);
    }
    if let Some(at) = co.polarity_changed_at {
        if now - at >= LINE_DEBOUNCE_MS {
            co.polarity_changed_at = None;
            events.push(event::POLARITY);
        }
    }
    // A loop left open is a hangup; a pause after pulses ends a digit.
    if let Some(opened) = co.open_since {
        if now - opened >= PULSE_BREAK_MAX_MS {
            co.open_since = None;
            co.hang_up(opened);
        }
    }
    if let Some(made) = co.last_make {
        if co.loop_closed && now - made >= PULSE_DIGIT_GAP_MS && co.pulses > 0 {
            let digit = if co.pulses == 10 {
                '0'
            } else {
                (b'0' + co.pulses) as char
            };
            co.digits.push(digit);
            co.pulses = 0;
            co.last_make = None;
            co.tone = None;
        }
    }
    // Ringing voltage, burst by burst.
    if let Some((since, [on_ms, off_ms])) = co.ringing {
        let voltage = (now - since) % (on_ms + off_ms) < on_ms;
        let debounced = co
            .last_hangup
            .or(co.open_since)
            .is_some_and(|at| now - at < RING_DEBOUNCE_AFTER_HANGUP_MS);
        if voltage != co.ring_voltage {
            co.ring_voltage = voltage;
            if voltage && !debounced {
                events.push(event::RINGBEGIN);
            } else if !voltage {
                co.ring_ended_at = (!debounced).then_some(now);
                if !co.first_ring_done {
                    co.first_ring_done = true;
                    co.caller_id_at = Some(now + CALLER_ID_DELAY_MS);
                }
            }
        }
    }
    if let Some(at) = co.ring_ended_at {
        if now - at >= RING_TRAILER_MS {
            co.ring_ended_at = None;
            events.push(event::RINGOFFHOOK);
        }
    }
    if co.caller_id_at.is_some_and(|at| now >= at) {
        co.caller_id_at = None;
        if let Some(spill) = co.caller_id.take() {
            co.outgoing.extend(spill);
        }
    }
    // Audio toward the gateway: queued audio first, else the office's tone, else silence.
    let mut samples = [0i16; 8];
    for sample in samples.iter_mut() {
        if let Some(s) = co.outgoing.pop_front() {
            *sample = s;
        }
    }
    if co.outgoing.is_empty() {
        if let Some(tone) = co.tone.as_mut() {
            tone.fill(&mut samples);
        }
    }
    if !co.plugged {
        samples = [0; 8]; // no line, no sound
    }
    // Audio from the gateway: the office listens for digits while the loop is closed.
    let mut heard = [0i16; 8];
    for slot in heard.iter_mut() {
        if let Some(code) = port.tx.pop_front() {
            *slot = port.law.decode_sample(code);
        }
    }
    if co.loop_closed {
        Port::keep_heard(&mut co.heard, &heard);
        let (detector, digits, tone) = (&mut co.detector, &mut co.digits, &mut co.tone);
        detector.process(&heard, |e| {
            if let DtmfEvent::Down(d) = e {
                digits.push(d);
                *tone = None; // dial tone stops at the first digit
            }
        });
    }
    for sample in samples {
        if port.rx.len() >= RX_BLOCKS * BLOCK_SIZE {
            port.rx.pop_front();
        }
        port.rx.push_back(port.law.encode_sample(sample));
    }
    for e in events {
        port.queue_event(e);
    }
}
