//! The I/O edge of the line state machines: moves events, audio and actions between a
//! [`Channel`] and a [`PhonePort`] or [`LinePort`], 20 ms at a time.

use super::dial_plan::DialPlan;
use super::line_port::{LineAction, LineCommand, LinePort};
use super::phone_port::{PhoneAction, PhoneCommand, PhonePort, ToneKind};
use crate::dahdi::abi::{event, hook};
use crate::dahdi::channel::{Channel, ChannelError, BLOCK_SIZE};
use crate::dsp::callerid::{modulate, Modem};
use crate::dsp::dtmf::{DtmfDetector, DtmfEvent, DtmfGenerator};
use crate::dsp::g711::Law;
use crate::dsp::tones::{TonePlayer, Zone};
use std::collections::VecDeque;

/// The call's audio as a driver sees it: what the line hears goes in, what the line plays
/// comes out. The gateway's RTP session implements it while a call is connected.
pub trait CallAudio {
    /// Audio the line heard (one block, usually 20 ms).
    fn heard_on_line(&mut self, samples: &[i16]);
    /// A DTMF key heard on the line went down or up.
    fn digit(&mut self, event: DtmfEvent);
    /// Fills the next block the line plays when no tone or signal takes precedence.
    fn play_to_line(&mut self, out: &mut [i16; BLOCK_SIZE]);
}

/// A port driver as its caller sees it: 20 ms steps and commands in, notices for the
/// control plane out. [`PhonePortDriver`] and [`LinePortDriver`] implement it.
pub trait PortDriver {
    /// What the driver reports.
    type Notice;
    /// What the control plane tells it.
    type Command;
    /// One step at `now` (ms), exchanging the call's audio with `audio`.
    fn step(
        &mut self,
        now: u64,
        audio: &mut impl CallAudio,
    ) -> Result<Vec<Self::Notice>, ChannelError>;
    /// A command from the control plane.
    fn command(
        &mut self,
        now: u64,
        command: Self::Command,
    ) -> Result<Vec<Self::Notice>, ChannelError>;
}

/// No call audio: the line hears silence and what it says goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCallAudio;

impl CallAudio for NoCallAudio {
    fn heard_on_line(&mut self, _samples: &[i16]) {}
    fn digit(&mut self, _event: DtmfEvent) {}
    fn play_to_line(&mut self, out: &mut [i16; BLOCK_SIZE]) {
        out.fill(0);
    }
}

/// What a channel delivered.
enum Input<'a> {
    /// One block of decoded audio.
    Audio(&'a [i16]),
    /// A DAHDI event.
    Event(i32),
}

/// Reads every block and event the channel has ready, in order; returns how many audio
/// blocks came. The driver writes as many: the card's clock paces both directions.
fn drain(
    channel: &mut impl Channel,
    law: Law,
    mut on_input: impl FnMut(Input<'_>),
) -> Result<usize, ChannelError> {
    let mut block = [0u8; BLOCK_SIZE];
    let mut pcm = [0i16; BLOCK_SIZE];
    let mut blocks = 0;
    loop {
        match channel.read(&mut block) {
            Ok(n) => {
                law.decode(&block[..n], &mut pcm[..n]);
                on_input(Input::Audio(&pcm[..n]));
                blocks += 1;
            }
            Err(ChannelError::EventPending) => on_input(Input::Event(channel.get_event()?)),
            Err(ChannelError::WouldBlock) => return Ok(blocks),
            Err(other) => return Err(other),
        }
    }
}

/// Writes one block; a full buffer or a pending event just drops it (the next comes in 20 ms).
fn write_block(
    channel: &mut impl Channel,
    law: Law,
    samples: &[i16; BLOCK_SIZE],
) -> Result<(), ChannelError> {
    let mut block = [0u8; BLOCK_SIZE];
    law.encode(samples, &mut block);
    match channel.write(&block) {
        Ok(_) | Err(ChannelError::WouldBlock) | Err(ChannelError::EventPending) => Ok(()),
        Err(other) => Err(other),
    }
}

/// Drives one phone port.
pub struct PhonePortDriver<C: Channel> {
    channel: C,
    line: PhonePort,
    zone: &'static Zone,
    law: Law,
    detector: DtmfDetector,
    tone: Option<TonePlayer>,
    /// Audio queued for the phone (caller ID spills).
    outgoing: VecDeque<i16>,
    rings_ended: u32,
}

impl<C: Channel> PhonePortDriver<C> {
    /// Takes an opened channel; sets 20 ms blocks.
    pub fn new(mut channel: C, plan: DialPlan, zone: &'static Zone) -> Result<Self, ChannelError> {
        channel.set_blocksize(BLOCK_SIZE)?;
        Ok(PhonePortDriver {
            channel,
            line: PhonePort::new(plan),
            zone,
            law: Law::Ulaw,
            detector: DtmfDetector::default(),
            tone: None,
            outgoing: VecDeque::new(),
            rings_ended: 0,
        })
    }

    /// The channel (e.g. to feed a queued channel the blocks its ring read).
    pub fn channel_mut(&mut self) -> &mut C {
        &mut self.channel
    }

    /// True while the line is idle: on hook (a hang-up is one once the card has reported
    /// it, after the flash time) and not ringing.
    pub fn is_idle(&self) -> bool {
        self.line.is_idle()
    }

    /// The phone port state machine's state, for the operator.
    pub fn state_name(&self) -> &'static str {
        self.line.state_name()
    }

    /// Performs the state machine's actions; returns those meant for the control plane.
    fn perform(&mut self) -> Result<Vec<PhoneAction>, ChannelError> {
        let mut notices = Vec::new();
        while let Some(action) = self.line.poll_action() {
            self.perform_one(action, &mut notices)?;
        }
        Ok(notices)
    }
}

impl<C: Channel> PortDriver for PhonePortDriver<C> {
    type Notice = PhoneAction;
    type Command = PhoneCommand;

    fn command(
        &mut self,
        now: u64,
        command: PhoneCommand,
    ) -> Result<Vec<PhoneAction>, ChannelError> {
        if matches!(command, PhoneCommand::Incoming(_)) {
            self.rings_ended = 0;
        }
        self.line.command(now, command);
        self.perform()
    }

    fn step(
        &mut self,
        now: u64,
        audio: &mut impl CallAudio,
    ) -> Result<Vec<PhoneAction>, ChannelError> {
        let (line, detector, rings_ended) =
            (&mut self.line, &mut self.detector, &mut self.rings_ended);
        let blocks = drain(&mut self.channel, self.law, |input| match input {
            Input::Audio(pcm) => {
                audio.heard_on_line(pcm);
                detector.process(pcm, |e| {
                    audio.digit(e);
                    if let DtmfEvent::Down(digit) = e {
                        line.handle_dtmf(now, digit);
                    }
                })
            }
            Input::Event(e) => {
                if e == event::RINGEROFF {
                    *rings_ended += 1;
                    if *rings_ended == 1 {
                        line.handle_first_ring_end();
                    }
                }
                line.handle_event(now, e);
            }
        })?;
        self.line.handle_timeout(now);
        let notices = self.perform()?;
        for _ in 0..blocks {
            let mut out = [0i16; BLOCK_SIZE];
            if self.outgoing.is_empty() {
                match self.tone.as_mut() {
                    Some(tone) => tone.fill(&mut out),
                    None => audio.play_to_line(&mut out),
                }
            } else {
                for sample in out.iter_mut() {
                    *sample = self.outgoing.pop_front().unwrap_or(0);
                }
            }
            write_block(&mut self.channel, self.law, &out)?;
        }
        Ok(notices)
    }
}

impl<C: Channel> PhonePortDriver<C> {
    /// Performs one action of the state machine; those meant for the control plane go to
    /// `notices`.
    fn perform_one(
        &mut self,
        action: PhoneAction,
        notices: &mut Vec<PhoneAction>,
    ) -> Result<(), ChannelError> {
        match action {
            PhoneAction::PlayTone(kind) => {
                let tone = match kind {
                    ToneKind::Dial => &self.zone.dial,
                    ToneKind::Ringback => &self.zone.ringback,
                    ToneKind::Busy => &self.zone.busy,
                    ToneKind::Congestion => &self.zone.congestion,
                };
                self.tone = Some(TonePlayer::new(tone.clone(), -13.0));
            }
            PhoneAction::StopTone | PhoneAction::Connect => self.tone = None,
            PhoneAction::Ring => {
                self.channel.set_cadence(&self.zone.ring_cadence)?;
                self.channel.hook(hook::RING)?;
            }
            PhoneAction::StopRing => self.channel.hook(hook::RINGOFF)?,
            PhoneAction::SendCallerId(id) => {
                // GR-30: the spill goes on-hook between the first and second ring.
                self.channel.onhook_transfer(4000)?;
                self.outgoing
                    .extend(modulate(Modem::Bell202, &id.encode_mdmf(), -13.0));
            }
            notice => notices.push(notice),
        }
        Ok(())
    }
}

/// How a line port dials out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialMode {
    /// Touch tones.
    Dtmf,
    /// Rotary pulses: 60 ms break, 40 ms make per pulse, 700 ms between digits.
    Pulse,
}

/// Drives one line port.
pub struct LinePortDriver<C: Channel> {
    channel: C,
    line: LinePort,
    law: Law,
    dial_mode: DialMode,
    detector: DtmfDetector,
    /// DTMF audio being dialled.
    outgoing: VecDeque<i16>,
    /// Pulse dialling: when to open (false) or close (true) the loop.
    pulses: VecDeque<(u64, bool)>,
    dialling: bool,
    /// When the loop was last opened (a hangup).
    released_at: Option<u64>,
}

/// The loop stays open at least this long between calls (ms): a shorter break is a dial
/// pulse to the office.
pub const RELEASE_GUARD_MS: u64 = 1000;

impl<C: Channel> LinePortDriver<C> {
    /// Takes an opened channel; offers calls after `rings_before_offer` rings.
    pub fn new(
        mut channel: C,
        zone: &'static Zone,
        rings_before_offer: u32,
        dial_mode: DialMode,
    ) -> Result<Self, ChannelError> {
        channel.set_blocksize(BLOCK_SIZE)?;
        Ok(LinePortDriver {
            channel,
            line: LinePort::new(zone, rings_before_offer),
            law: Law::Ulaw,
            dial_mode,
            detector: DtmfDetector::default(),
            outgoing: VecDeque::new(),
            pulses: VecDeque::new(),
            dialling: false,
            released_at: None,
        })
    }

    /// The channel (e.g. to feed a queued channel the blocks its ring read).
    pub fn channel_mut(&mut self) -> &mut C {
        &mut self.channel
    }

    /// The line port state machine's state, for the operator.
    pub fn state_name(&self) -> &'static str {
        self.line.state_name()
    }

    /// Whether the card reports a red alarm on the line.
    pub fn in_alarm(&self) -> bool {
        self.line.in_alarm()
    }
}

impl<C: Channel> PortDriver for LinePortDriver<C> {
    type Notice = LineAction;
    type Command = LineCommand;

    fn command(&mut self, now: u64, command: LineCommand) -> Result<Vec<LineAction>, ChannelError> {
        self.line.command(now, command);
        self.perform(now)
    }

    fn step(
        &mut self,
        now: u64,
        audio: &mut impl CallAudio,
    ) -> Result<Vec<LineAction>, ChannelError> {
        let (line, detector) = (&mut self.line, &mut self.detector);
        let blocks = drain(&mut self.channel, self.law, |input| match input {
            Input::Audio(pcm) => {
                line.handle_audio(pcm);
                audio.heard_on_line(pcm);
                detector.process(pcm, |e| audio.digit(e));
            }
            Input::Event(e) => line.handle_event(now, e),
        })?;
        self.line.handle_timeout(now);
        let notices = self.perform(now)?;
        while let Some(&(at, closed)) = self.pulses.front() {
            if at > now {
                break;
            }
            self.pulses.pop_front();
            self.channel
                .hook(if closed { hook::OFFHOOK } else { hook::ONHOOK })?;
        }
        for _ in 0..blocks {
            let mut out = [0i16; BLOCK_SIZE];
            if self.outgoing.is_empty() && self.pulses.is_empty() {
                audio.play_to_line(&mut out);
            } else {
                for sample in out.iter_mut() {
                    *sample = self.outgoing.pop_front().unwrap_or(0);
                }
            }
            write_block(&mut self.channel, self.law, &out)?;
        }
        if self.dialling && self.outgoing.is_empty() && self.pulses.is_empty() {
            self.dialling = false;
            self.line.digits_sent();
        }
        Ok(notices)
    }
}

impl<C: Channel> LinePortDriver<C> {
    fn perform(&mut self, now: u64) -> Result<Vec<LineAction>, ChannelError> {
        let mut notices = Vec::new();
        while let Some(action) = self.line.poll_action() {
            match action {
                LineAction::Hook(true) => match self.released_at {
                    // Too soon after a release the office would count a dial pulse.
                    Some(at) if now < at + RELEASE_GUARD_MS => {
                        self.pulses.push_back((at + RELEASE_GUARD_MS, true));
                    }
                    _ => self.channel.hook(hook::OFFHOOK)?,
                },
                LineAction::Hook(false) => {
                    self.channel.hook(hook::ONHOOK)?;
                    self.released_at = Some(now);
                    self.outgoing.clear();
                    self.pulses.clear();
                    self.dialling = false;
                }
                LineAction::SendDigits(digits) => {
                    match self.dial_mode {
                        DialMode::Dtmf => self
                            .outgoing
                            .extend(DtmfGenerator::new(-8.0, -6.0).dial(&digits, 80, 80)),
                        DialMode::Pulse => self.schedule_pulses(now, &digits),
                    }
                    self.dialling = true;
                }
                notice => notices.push(notice),
            }
        }
        Ok(notices)
    }

    /// Rotary dialling as hook operations: 60 ms break, 40 ms make, 700 ms between digits.
    fn schedule_pulses(&mut self, now: u64, digits: &str) {
        let mut at = now + 100;
        for digit in digits.chars() {
            let count = match digit.to_digit(10) {
                Some(0) => 10,
                Some(n) => u64::from(n),
                None => continue, // * and # cannot be pulse-dialled
            };
            for _ in 0..count {
                self.pulses.push_back((at, false));
                self.pulses.push_back((at + 60, true));
                at += 100;
            }
            at += 700;
        }
    }
}
