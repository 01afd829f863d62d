//! An emulated analog card with the DAHDI kernel's semantics at the [`Channel`] boundary,
//! in virtual time (`advance(ms)`), and the far ends it is wired to.
//!
//! Phone ports (FXS hardware, FXO signalling) carry a virtual analog phone: it lifts and
//! hangs up its handset, flashes, dials pulses or DTMF, and hears what the gateway writes.
//! The kernel rules copied from dahdi-base.c / wctdm (DESIGN.md §5): exclusive open, ENOSYS
//! before SPECIFY, ENXIO for unconfigured channels, reads and writes refused while an event
//! is queued, whole-block reads, a 64-entry event queue, ring needs a tone zone and an
//! on-hook phone, on-hook debouncing (< 15 ms ignored, 15-200 ms a dial pulse, 200-1250 ms a
//! flash, longer an ONHOOK reported when the 1250 ms timer ends), kewlstart battery drop on
//! hangup. Line ports (FXO hardware) come next.

mod line;
mod phone;

use super::abi::{event, flush, hook, DahdiParams};
use super::channel::{Channel, ChannelError, BLOCK_SIZE};
use super::system_conf::{Signalling, SystemConf};
use crate::dsp::callerid::{modulate, CallerId, Modem};
use crate::dsp::dtmf::DtmfGenerator;
use crate::dsp::g711::Law;
use crate::dsp::tones::{self, TonePlayer, Zone};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

/// Events the kernel keeps per channel before dropping new ones.
pub const EVENT_QUEUE: usize = 64;
/// On-hook shorter than this is contact bounce (ms).
const DEBOUNCE_MS: u64 = 15;
/// On-hook up to this long is a dial pulse (ms).
const PULSE_MAX_MS: u64 = 200;
/// On-hook up to this long is a flash; longer is a hangup (rxflashtime, ms).
const FLASH_MAX_MS: u64 = 1250;
/// Off-hook this long after the last pulse ends a pulse-dialled digit (ms).
const PULSE_DIGIT_GAP_MS: u64 = 250;
/// Kewlstart: battery removed this long when the gateway hangs up (ms).
const KEWLSTART_DROP_MS: u64 = 500;
/// Audio blocks buffered toward the gateway before the oldest is dropped.
const RX_BLOCKS: usize = 16;
/// How much of what a far end heard is kept (the newest two minutes of samples).
const HEARD_LIMIT: usize = 8000 * 120;
/// Audio blocks the gateway may queue toward the phone.
const TX_BLOCKS: usize = 8;

/// A scripted action of a virtual phone.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PhoneAction {
    Handset(bool),
    Dtmf(char, u32),
}

/// A virtual analog phone on a phone port.
#[derive(Debug, Default)]
struct Phone {
    off_hook: bool,
    script: VecDeque<(u64, PhoneAction)>,
    /// DTMF being sent: digit and remaining ms.
    sending: Option<(char, u32)>,
    generator: Option<DtmfGenerator>,
    /// What the phone's earpiece played (linear), bounded.
    heard: Vec<i16>,
    /// What the phone's user says into the handset next (linear).
    speech: VecDeque<i16>,
}

/// One channel of the card.
#[derive(Debug)]
struct Port {
    signalling: Signalling,
    open: bool,
    blocksize: usize,
    law: Law,
    events: VecDeque<i32>,
    rx: VecDeque<u8>,
    tx: VecDeque<u8>,
    // What the kernel believes about the hook (after debouncing).
    kernel_off_hook: bool,
    on_hook_since: Option<u64>,
    pulses: u8,
    last_pulse_end: Option<u64>,
    cadence: Vec<u32>,
    ringing_since: Option<u64>,
    ringer_on: bool,
    battery_until: Option<u64>,
    polarity_reversed: bool,
    phone: Phone,
    co: line::CentralOffice,
}

impl Port {
    fn new(signalling: Signalling) -> Port {
        Port {
            signalling,
            open: false,
            blocksize: 1024,
            law: Law::Ulaw,
            events: VecDeque::new(),
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            kernel_off_hook: false,
            on_hook_since: None,
            pulses: 0,
            last_pulse_end: None,
            cadence: vec![2000, 4000],
            ringing_since: None,
            ringer_on: false,
            battery_until: None,
            polarity_reversed: false,
            phone: Phone::default(),
            co: line::CentralOffice::default(),
        }
    }

    /// Keeps what a far end heard bounded, dropping the oldest second when full.
    fn keep_heard(heard: &mut Vec<i16>, samples: &[i16]) {
        if heard.len() + samples.len() > HEARD_LIMIT {
            heard.drain(..8000.min(heard.len()));
        }
        heard.extend_from_slice(samples);
    }

    fn queue_event(&mut self, event: i32) {
        if self.events.len() < EVENT_QUEUE {
            self.events.push_back(event);
        }
    }
}

#[derive(Debug)]
struct CardState {
    now_ms: u64,
    ports: BTreeMap<u32, Port>,
    zone_loaded: bool,
    /// The zone whose tones the central office plays.
    zone: &'static Zone,
}

/// The emulated card: configure it from a [`SystemConf`], open channels on it, act as the
/// far ends, and advance time.
#[derive(Debug, Clone)]
pub struct EmulatedCard {
    state: Rc<RefCell<CardState>>,
}

/// A channel opened on the emulated card (what `open("/dev/dahdi/channel")` gives).
#[derive(Debug)]
pub struct EmulatedChannel {
    state: Rc<RefCell<CardState>>,
    number: Option<u32>,
}

impl EmulatedCard {
    /// A card with the channels `conf` configures; ringing works only if it loads a zone.
    pub fn new(conf: &SystemConf) -> EmulatedCard {
        let ports = conf
            .channels
            .iter()
            .map(|(&number, &signalling)| (number, Port::new(signalling)))
            .collect();
        EmulatedCard {
            state: Rc::new(RefCell::new(CardState {
                now_ms: 0,
                ports,
                zone_loaded: conf.zone().is_some(),
                zone: conf
                    .zone()
                    .and_then(tones::zone)
                    .or_else(|| tones::zone("us"))
                    .expect("the us zone is built in"),
            })),
        }
    }

    /// Opens `/dev/dahdi/channel` without SPECIFY yet.
    pub fn open_unspecified(&self) -> EmulatedChannel {
        EmulatedChannel {
            state: self.state.clone(),
            number: None,
        }
    }

    /// Opens and SPECIFYs channel `number`, as [`super::channel::DahdiChannel::open`] does.
    pub fn open(&self, number: u32) -> Result<EmulatedChannel, ChannelError> {
        let mut channel = self.open_unspecified();
        channel.specify(number)?;
        Ok(channel)
    }

    /// Milliseconds since the card started.
    pub fn now_ms(&self) -> u64 {
        self.state.borrow().now_ms
    }

    /// Runs the card for `ms` milliseconds, one millisecond at a time.
    pub fn advance(&self, ms: u64) {
        let mut state = self.state.borrow_mut();
        for _ in 0..ms {
            state.now_ms += 1;
            let now = state.now_ms;
            for port in state.ports.values_mut() {
                if port.signalling.is_phone_port() {
                    phone::tick(port, now);
                } else {
                    line::tick(port, now);
                }
            }
        }
    }

    fn with_port<T>(&self, number: u32, f: impl FnOnce(&mut Port, u64) -> T) -> T {
        let mut state = self.state.borrow_mut();
        let now = state.now_ms;
        let port = state
            .ports
            .get_mut(&number)
            .unwrap_or_else(|| panic!("channel {number} is not on the emulated card"));
        f(port, now)
    }

    /// The phone on `number` lifts its handset now.
    pub fn lift(&self, number: u32) {
        self.with_port(number, |port, now| {
            port.phone
                .script
                .push_back((now, PhoneAction::Handset(true)))
        });
    }

    /// The phone hangs up now.
    pub fn hang_up(&self, number: u32) {
        self.with_port(number, |port, now| {
            port.phone
                .script
                .push_back((now, PhoneAction::Handset(false)))
        });
    }

    /// A hook flash: `ms` on hook, then off hook again.
    pub fn flash(&self, number: u32, ms: u64) {
        self.with_port(number, |port, now| {
            port.phone
                .script
                .push_back((now, PhoneAction::Handset(false)));
            port.phone
                .script
                .push_back((now + ms, PhoneAction::Handset(true)));
        });
    }

    /// Rotary dialling of `digit` (10 pulses for '0'): 60 ms break, 40 ms make per pulse.
    pub fn dial_pulse(&self, number: u32, digit: char) {
        let pulses = match digit.to_digit(10) {
            Some(0) => 10,
            Some(n) => n as u64,
            None => return,
        };
        self.with_port(number, |port, now| {
            // Rotary dials pause ~700 ms between digits (the dial returning to rest).
            let start = port
                .phone
                .script
                .back()
                .map_or(now + 40, |(at, _)| (*at).max(now) + 700);
            for i in 0..pulses {
                let at = start + i * 100;
                port.phone
                    .script
                    .push_back((at, PhoneAction::Handset(false)));
                port.phone
                    .script
                    .push_back((at + 60, PhoneAction::Handset(true)));
            }
        });
    }

    /// Touch-tone dialling of `digit`: `ms` of tone into the line.
    pub fn dial_dtmf(&self, number: u32, digit: char, ms: u32) {
        self.with_port(number, |port, now| {
            let at = port
                .phone
                .script
                .back()
                .map_or(now, |(at, _)| (*at).max(now));
            port.phone
                .script
                .push_back((at, PhoneAction::Dtmf(digit, ms)));
        });
    }

    /// Touch-tone dialling of a string: each key `on_ms` long, `gap_ms` apart.
    pub fn dial_dtmf_digits(&self, number: u32, digits: &str, on_ms: u32, gap_ms: u32) {
        self.with_port(number, |port, now| {
            let mut at = port
                .phone
                .script
                .back()
                .map_or(now, |(at, _)| (*at).max(now));
            for digit in digits.chars() {
                port.phone
                    .script
                    .push_back((at, PhoneAction::Dtmf(digit, on_ms)));
                at += u64::from(on_ms + gap_ms);
            }
        });
    }

    /// Whether the phone's line has battery (loop current possible).
    pub fn battery(&self, number: u32) -> bool {
        self.with_port(number, |port, now| {
            port.battery_until.is_none_or(|until| now >= until)
        })
    }

    /// Whether the phone's ringer is sounding.
    pub fn ringing(&self, number: u32) -> bool {
        self.with_port(number, |port, _| port.ringer_on)
    }

    /// The central office rings line `number` with the zone's cadence, sending caller ID
    /// (Bell 202 MDMF) between the first and second ring when given.
    pub fn co_ring(&self, number: u32, caller_id: Option<&CallerId>) {
        let zone = self.state.borrow().zone;
        let cadence = [
            u64::from(zone.ring_cadence[0]),
            zone.ring_cadence[1..].iter().map(|&ms| u64::from(ms)).sum(),
        ];
        let spill = caller_id.map(|id| modulate(Modem::Bell202, &id.encode_mdmf(), -13.0));
        self.with_port(number, |port, now| port.co.ring(now, cadence, spill));
    }

    /// The caller gives up before the gateway answers.
    pub fn co_stop_ringing(&self, number: u32) {
        self.with_port(number, |port, _| port.co.stop_ringing());
    }

    /// The office removes battery for `ms` (a disconnect signal) and restores it.
    pub fn co_battery_drop(&self, number: u32, ms: u64) {
        self.with_port(number, |port, now| port.co.set_battery(now, false));
        self.advance(ms);
        self.with_port(number, |port, now| port.co.set_battery(now, true));
    }

    /// The office reverses line polarity (answer supervision, or a disconnect signal).
    pub fn co_reverse_polarity(&self, number: u32) {
        self.with_port(number, |port, now| port.co.reverse_polarity(now));
    }

    /// The office plays the zone's busy tone (the far end hung up; no disconnect signal).
    pub fn co_busy_tone(&self, number: u32) {
        let busy = self.state.borrow().zone.busy.clone();
        self.with_port(number, |port, _| {
            port.co.tone = Some(TonePlayer::new(busy, -13.0))
        });
    }

    /// Audio the far end sends down the line.
    pub fn co_send_audio(&self, number: u32, samples: &[i16]) {
        self.with_port(number, |port, _| port.co.outgoing.extend(samples));
    }

    /// Digits the office collected from the gateway's dialling.
    pub fn co_digits(&self, number: u32) -> String {
        self.with_port(number, |port, _| port.co.digits.clone())
    }

    /// Whether the gateway holds the line (loop closed).
    pub fn co_loop_closed(&self, number: u32) -> bool {
        self.with_port(number, |port, _| port.co.loop_closed)
    }

    /// Pulls the line cable out (true) or plugs it back in (false).
    pub fn unplug_line(&self, number: u32, unplugged: bool) {
        self.with_port(number, |port, now| {
            port.co.plugged = !unplugged;
            port.co.battery_changed(now);
        });
    }

    /// Everything the phone's earpiece played so far (linear samples), then forgets it.
    pub fn take_heard(&self, number: u32) -> Vec<i16> {
        self.with_port(number, |port, _| std::mem::take(&mut port.phone.heard))
    }

    /// The phone's user speaks these samples into the handset (after any DTMF being sent).
    pub fn speak(&self, number: u32, samples: &[i16]) {
        self.with_port(number, |port, _| port.phone.speech.extend(samples));
    }

    /// Whether the phone's handset is off hook.
    pub fn off_hook(&self, number: u32) -> bool {
        self.with_port(number, |port, _| port.phone.off_hook)
    }

    /// Everything the central office heard from the gateway on line `number` (linear
    /// samples, while the loop was closed), then forgets it.
    pub fn co_take_heard(&self, number: u32) -> Vec<i16> {
        self.with_port(number, |port, _| std::mem::take(&mut port.co.heard))
    }

    /// The channels on the card: number and whether it is a phone port (else a line port).
    pub fn channels(&self) -> Vec<(u32, bool)> {
        self.state
            .borrow()
            .ports
            .iter()
            .map(|(&number, port)| (number, port.signalling.is_phone_port()))
            .collect()
    }
}

impl EmulatedChannel {
    fn specify(&mut self, number: u32) -> Result<(), ChannelError> {
        let mut state = self.state.borrow_mut();
        let port = state
            .ports
            .get_mut(&number)
            .ok_or(ChannelError::NotConfigured(number))?;
        if port.open {
            return Err(ChannelError::InUse(number));
        }
        port.open = true;
        self.number = Some(number);
        Ok(())
    }

    fn port<T>(
        &self,
        f: impl FnOnce(&mut Port, u64, bool) -> Result<T, ChannelError>,
    ) -> Result<T, ChannelError> {
        let number = self.number.ok_or(ChannelError::NotSpecified)?;
        let mut state = self.state.borrow_mut();
        let (now, zone) = (state.now_ms, state.zone_loaded);
        let port = state
            .ports
            .get_mut(&number)
            .ok_or(ChannelError::NotConfigured(number))?;
        f(port, now, zone)
    }

    /// HOOK on a line port: the gateway closes or opens the loop.
    fn line_hook(&mut self, operation: i32) -> Result<(), ChannelError> {
        let dial_tone = self.state.borrow().zone.dial.clone();
        self.port(|port, now, _| {
            let closed = match operation {
                hook::OFFHOOK => true,
                hook::ONHOOK => false,
                _ => return Err(ChannelError::Invalid("line ports take OFFHOOK and ONHOOK")),
            };
            port.co.set_loop(now, closed, &dial_tone);
            port.kernel_off_hook = closed;
            Ok(())
        })
    }
}

impl Drop for EmulatedChannel {
    fn drop(&mut self) {
        if let Some(number) = self.number {
            if let Some(port) = self.state.borrow_mut().ports.get_mut(&number) {
                port.open = false;
            }
        }
    }
}

impl Channel for EmulatedChannel {
    fn set_blocksize(&mut self, samples: usize) -> Result<(), ChannelError> {
        self.port(|port, _, _| {
            if !(16..=8192).contains(&samples) {
                return Err(ChannelError::Invalid("block size must be 16..=8192"));
            }
            port.blocksize = samples;
            Ok(())
        })
    }

    fn read(&mut self, block: &mut [u8]) -> Result<usize, ChannelError> {
        self.port(|port, _, _| {
            if !port.events.is_empty() {
                return Err(ChannelError::EventPending);
            }
            let size = port.blocksize.min(block.len());
            if port.rx.len() < size {
                return Err(ChannelError::WouldBlock);
            }
            for slot in block.iter_mut().take(size) {
                *slot = port.rx.pop_front().unwrap_or(0xFF);
            }
            Ok(size)
        })
    }

    fn write(&mut self, block: &[u8]) -> Result<usize, ChannelError> {
        self.port(|port, _, _| {
            if !port.events.is_empty() {
                return Err(ChannelError::EventPending);
            }
            if port.tx.len() + block.len() > TX_BLOCKS * BLOCK_SIZE {
                return Err(ChannelError::WouldBlock);
            }
            port.tx.extend(block);
            Ok(block.len())
        })
    }

    fn get_event(&mut self) -> Result<i32, ChannelError> {
        self.port(|port, _, _| Ok(port.events.pop_front().unwrap_or(0)))
    }

    fn hook(&mut self, operation: i32) -> Result<(), ChannelError> {
        let phone_port = self.port(|port, _, _| Ok(port.signalling.is_phone_port()))?;
        if !phone_port {
            return self.line_hook(operation);
        }
        self.port(|port, now, zone| {
            match operation {
                hook::RING => {
                    if !zone {
                        return Err(ChannelError::NoToneZone);
                    }
                    if port.phone.off_hook {
                        return Err(ChannelError::OffHook);
                    }
                    // EINPROGRESS on a non-blocking fd: the ring runs on.
                    port.ringing_since = Some(now);
                    Ok(())
                }
                hook::RINGOFF => {
                    port.ringing_since = None;
                    if port.ringer_on {
                        port.ringer_on = false;
                        port.queue_event(event::RINGEROFF);
                    }
                    Ok(())
                }
                hook::ONHOOK => {
                    // Kewlstart: the phone loses battery for a moment (disconnect signal).
                    port.ringing_since = None;
                    port.ringer_on = false;
                    port.battery_until = Some(now + KEWLSTART_DROP_MS);
                    Ok(())
                }
                hook::OFFHOOK => Ok(()),
                _ => Err(ChannelError::Invalid(
                    "hook operation not supported on a phone port",
                )),
            }
        })
    }

    fn set_cadence(&mut self, cadence_ms: &[u32]) -> Result<(), ChannelError> {
        super::channel::ring_cadence(cadence_ms)?;
        self.port(|port, _, _| {
            port.cadence = cadence_ms.to_vec();
            Ok(())
        })
    }

    fn flush(&mut self, what: i32) -> Result<(), ChannelError> {
        self.port(|port, _, _| {
            if what & flush::READ != 0 {
                port.rx.clear();
            }
            if what & flush::WRITE != 0 {
                port.tx.clear();
            }
            if what & flush::EVENT != 0 {
                port.events.clear();
            }
            Ok(())
        })
    }

    fn params(&mut self) -> Result<DahdiParams, ChannelError> {
        let number = self.number;
        self.port(|port, _, _| {
            Ok(DahdiParams {
                channo: number.unwrap_or(0) as i32,
                sigtype: port.signalling.sigtype(),
                rxisoffhook: i32::from(port.kernel_off_hook),
                curlaw: 1,
                rxflashtime: FLASH_MAX_MS as i32,
                debouncetime: DEBOUNCE_MS as i32,
                ..DahdiParams::default()
            })
        })
    }

    fn set_polarity(&mut self, reversed: bool) -> Result<(), ChannelError> {
        self.port(|port, _, _| {
            port.polarity_reversed = reversed;
            Ok(())
        })
    }

    fn onhook_transfer(&mut self, _ms: u32) -> Result<(), ChannelError> {
        self.port(|_, _, _| Ok(()))
    }
}
