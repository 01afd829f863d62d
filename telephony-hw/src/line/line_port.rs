//! The line-port state machine (a PSTN line on an FXO port), sans-IO.
//!
//! Incoming: ring detection -> caller ID captured between the first and second ring ->
//! the call is offered after N rings -> answer -> disconnect supervision (battery drop,
//! polarity reversal, busy tone) -> on hook. A line that stops ringing for 8 s was abandoned.
//! Outgoing: seize -> wait for dial tone -> dial DTMF -> answer supervision by polarity
//! reversal where the line provides it.

use crate::dahdi::abi::event;
use crate::dsp::callerid::{decode_spill, demodulate, CallerId, Modem};
use crate::dsp::tones::{Progress, ProgressDetector, Zone, FRAME};
use std::collections::VecDeque;

/// Without a new ring for this long, the caller has given up (ms).
pub const RING_GONE_MS: u64 = 8000;
/// How long to wait for dial tone after seizing (ms).
pub const DIAL_TONE_TIMEOUT_MS: u64 = 3000;

/// Why the far end is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// Battery dropped (kewlstart disconnect).
    BatteryDrop,
    /// Polarity reversed during the call.
    PolarityReversal,
    /// Busy or congestion tone: the office gave no other signal.
    BusyTone,
}

/// What the driver or the control plane must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineAction {
    /// Close (true) or open (false) the loop.
    Hook(bool),
    /// Play these DTMF digits down the line.
    SendDigits(String),
    /// Control plane: an incoming call, with caller ID if the line sent one.
    Offer(Option<CallerId>),
    /// Control plane: the caller gave up before the call was answered.
    Abandoned,
    /// Control plane: the outgoing call was answered (polarity reversal).
    RemoteAnswered,
    /// Control plane: the far end is gone; the line was hung up.
    Disconnected(Disconnect),
    /// Control plane: no dial tone after seizing; the line was released.
    NoDialTone,
    /// Control plane: red alarm (true) or cleared (false).
    Alarm(bool),
}

/// What the control plane tells the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineCommand {
    /// Answer the offered call.
    Answer,
    /// Call this number.
    Dial(String),
    /// Hang up.
    HangUp,
}

#[derive(Debug)]
enum State {
    Idle,
    Ringing {
        rings: u32,
        last_ring_end: Option<u64>,
        spill: Vec<i16>,
        caller_id: Option<CallerId>,
        offered: bool,
    },
    Seizing {
        since: u64,
        number: String,
    },
    Dialing,
    Connected {
        outgoing: bool,
        answered: bool,
    },
}

/// The line port's state machine.
#[derive(Debug)]
pub struct LinePort {
    rings_before_offer: u32,
    state: State,
    progress: ProgressDetector,
    frame: Vec<i16>,
    actions: VecDeque<LineAction>,
    /// Whether the card reports a red alarm (no battery from the office).
    alarm: bool,
}

impl LinePort {
    /// An idle line that offers calls after `rings_before_offer` rings (tones of `zone`).
    pub fn new(zone: &Zone, rings_before_offer: u32) -> LinePort {
        LinePort {
            rings_before_offer: rings_before_offer.max(1),
            state: State::Idle,
            progress: ProgressDetector::new(zone),
            frame: Vec::with_capacity(FRAME),
            actions: VecDeque::new(),
            alarm: false,
        }
    }

    /// Next thing to do.
    pub fn poll_action(&mut self) -> Option<LineAction> {
        self.actions.pop_front()
    }

    /// The state's name for the operator (`idle`, `ringing`, `seizing`, `dialing`,
    /// `connected`, `answered`).
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Idle => "idle",
            State::Ringing { .. } => "ringing",
            State::Seizing { .. } => "seizing",
            State::Dialing => "dialing",
            State::Connected {
                answered: false, ..
            } => "connected",
            State::Connected { answered: true, .. } => "answered",
        }
    }

    /// Whether the card reports a red alarm on the line (the office's battery is gone).
    pub fn in_alarm(&self) -> bool {
        self.alarm
    }

    /// A DAHDI event from the channel.
    pub fn handle_event(&mut self, now: u64, dahdi_event: i32) {
        match dahdi_event {
            event::ALARM => {
                self.alarm = true;
                self.actions.push_back(LineAction::Alarm(true));
            }
            event::NOALARM => {
                self.alarm = false;
                self.actions.push_back(LineAction::Alarm(false));
            }
            event::RINGBEGIN => self.ring_begins(),
            event::RINGOFFHOOK => self.ring_ends(now),
            event::ONHOOK => self.far_end_gone(Disconnect::BatteryDrop),
            event::POLARITY => match self.state {
                State::Connected {
                    outgoing: true,
                    answered: false,
                } => {
                    self.state = State::Connected {
                        outgoing: true,
                        answered: true,
                    };
                    self.actions.push_back(LineAction::RemoteAnswered);
                }
                _ => self.far_end_gone(Disconnect::PolarityReversal),
            },
            _ => {}
        }
    }

    /// Audio from the line (linear samples, any length).
    pub fn handle_audio(&mut self, samples: &[i16]) {
        if let State::Ringing {
            last_ring_end: Some(_),
            spill,
            ..
        } = &mut self.state
        {
            // Between the first and second ring: capture the caller ID spill (≤ 3 s).
            if spill.len() < 8000 * 3 {
                spill.extend_from_slice(samples);
            }
        }
        for &sample in samples {
            self.frame.push(sample);
            if self.frame.len() == FRAME {
                let heard = self.progress.process_frame(&self.frame);
                self.frame.clear();
                match (heard, &self.state) {
                    (Some(Progress::DialTone), State::Seizing { number, .. }) => {
                        let number = number.clone();
                        self.state = State::Dialing;
                        self.actions.push_back(LineAction::SendDigits(number));
                    }
                    (Some(Progress::Busy | Progress::Congestion), State::Connected { .. }) => {
                        self.far_end_gone(Disconnect::BusyTone)
                    }
                    _ => {}
                }
            }
        }
    }

    /// The driver finished playing the digits.
    pub fn digits_sent(&mut self) {
        if matches!(self.state, State::Dialing) {
            self.state = State::Connected {
                outgoing: true,
                answered: false,
            };
        }
    }

    /// A command from the control plane.
    pub fn command(&mut self, now: u64, command: LineCommand) {
        match (&self.state, command) {
            (State::Ringing { .. }, LineCommand::Answer) => {
                self.state = State::Connected {
                    outgoing: false,
                    answered: true,
                };
                self.actions.push_back(LineAction::Hook(true));
            }
            (State::Idle, LineCommand::Dial(number)) => {
                self.state = State::Seizing { since: now, number };
                self.actions.push_back(LineAction::Hook(true));
            }
            (State::Idle, LineCommand::HangUp) => {}
            (_, LineCommand::HangUp) => {
                self.state = State::Idle;
                self.actions.push_back(LineAction::Hook(false));
            }
            _ => {}
        }
    }

    /// When [`LinePort::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.state {
            State::Ringing {
                last_ring_end: Some(at),
                ..
            } => Some(at + RING_GONE_MS),
            State::Seizing { since, .. } => Some(since + DIAL_TONE_TIMEOUT_MS),
            _ => None,
        }
    }

    /// Runs timers: abandoned ringing, missing dial tone.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.poll_timeout().is_none_or(|at| now < at) {
            return;
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Ringing { .. } => self.actions.push_back(LineAction::Abandoned),
            State::Seizing { .. } => {
                self.actions.push_back(LineAction::Hook(false));
                self.actions.push_back(LineAction::NoDialTone);
            }
            other => self.state = other,
        }
    }

    fn ring_begins(&mut self) {
        match &mut self.state {
            State::Idle => {
                self.state = State::Ringing {
                    rings: 0,
                    last_ring_end: None,
                    spill: Vec::new(),
                    caller_id: None,
                    offered: false,
                };
            }
            State::Ringing {
                spill, caller_id, ..
            } if !spill.is_empty() && caller_id.is_none() => {
                *caller_id = decode_spill(&demodulate(Modem::Bell202, spill))
                    .or_else(|_| decode_spill(&demodulate(Modem::V23, spill)))
                    .ok();
                spill.clear();
            }
            _ => {}
        }
    }

    fn ring_ends(&mut self, now: u64) {
        let State::Ringing {
            rings,
            last_ring_end,
            caller_id,
            offered,
            ..
        } = &mut self.state
        else {
            return;
        };
        *rings += 1;
        *last_ring_end = Some(now);
        if !*offered && *rings >= self.rings_before_offer {
            *offered = true;
            self.actions.push_back(LineAction::Offer(caller_id.clone()));
        }
    }

    fn far_end_gone(&mut self, how: Disconnect) {
        if matches!(self.state, State::Connected { .. } | State::Dialing) {
            self.state = State::Idle;
            self.actions.push_back(LineAction::Hook(false));
            self.actions.push_back(LineAction::Disconnected(how));
        }
    }
}
