//! The phone-port line state machine (an analog phone on an FXS port), sans-IO.
//!
//! Outgoing: off hook -> dial tone -> digit collection (DTMF and pulse; the dial plan or the
//! inter-digit timeout ends it) -> the control plane places the call -> ringback / busy /
//! congestion -> connected -> on hook. Incoming: ring with the zone's cadence, caller ID after
//! the first ring, answer on off hook. Hook flash is reported. Inputs carry an explicit `now`
//! (ms); outputs are [`PhoneAction`]s for the driver to perform on the channel.

use super::dial_plan::{DialPlan, PlanMatch};
use crate::dahdi::abi::event;
use crate::dsp::callerid::CallerId;
use std::collections::VecDeque;

/// How long after the last digit the number is taken as complete (or wrong).
pub const INTER_DIGIT_TIMEOUT_MS: u64 = 4000;
/// How long dial tone plays before the line gives up (off hook, nothing dialled).
pub const FIRST_DIGIT_TIMEOUT_MS: u64 = 15_000;

/// Tones the line plays to the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToneKind {
    /// Dial tone.
    Dial,
    /// Ringback.
    Ringback,
    /// Busy.
    Busy,
    /// Congestion.
    Congestion,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneAction {
    /// Play a tone (replacing any other).
    PlayTone(ToneKind),
    /// Stop the tone.
    StopTone,
    /// Ring the phone with the zone's cadence.
    Ring,
    /// Stop ringing.
    StopRing,
    /// Send caller ID (between the first and second ring).
    SendCallerId(CallerId),
    /// Tell the control plane: the phone dialled this number.
    Dialed(String),
    /// Tell the control plane: the phone answered the incoming call.
    Answered,
    /// Tell the control plane: hook flash.
    Flash,
    /// Tell the control plane: the phone hung up.
    HungUp,
    /// Audio path to the call is connected.
    Connect,
}

/// What the control plane tells the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneCommand {
    /// A call for this phone: ring it.
    Incoming(CallerId),
    /// The outgoing call rings at the far end.
    FarEndRinging,
    /// The far end answered.
    FarEndAnswered,
    /// The far end is busy.
    FarEndBusy,
    /// The call failed (no route, error).
    Failed,
    /// The far end hung up (or the caller gave up before answer).
    FarEndHungUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    DialTone {
        since: u64,
    },
    Collecting {
        digits: String,
        last_digit_at: u64,
    },
    Calling,
    Connected,
    /// A tone until the phone hangs up (busy, congestion, or after the far end left).
    Announcing,
    Ringing {
        caller_id: Option<CallerId>,
    },
}

/// The phone port's state machine.
#[derive(Debug)]
pub struct PhonePort {
    plan: DialPlan,
    state: State,
    actions: VecDeque<PhoneAction>,
}

impl PhonePort {
    /// An idle line with this dial plan.
    pub fn new(plan: DialPlan) -> PhonePort {
        PhonePort {
            plan,
            state: State::Idle,
            actions: VecDeque::new(),
        }
    }

    /// Next thing to do.
    pub fn poll_action(&mut self) -> Option<PhoneAction> {
        self.actions.pop_front()
    }

    /// True while the phone is idle (on hook, not ringing).
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// The state's name for the operator (`idle`, `dialtone`, `collecting`, `calling`,
    /// `connected`, `announcing`, `ringing`).
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Idle => "idle",
            State::DialTone { .. } => "dialtone",
            State::Collecting { .. } => "collecting",
            State::Calling => "calling",
            State::Connected => "connected",
            State::Announcing => "announcing",
            State::Ringing { .. } => "ringing",
        }
    }

    /// When [`PhonePort::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.state {
            State::DialTone { since } => Some(since + FIRST_DIGIT_TIMEOUT_MS),
            State::Collecting { last_digit_at, .. } => Some(last_digit_at + INTER_DIGIT_TIMEOUT_MS),
            _ => None,
        }
    }

    /// A DAHDI event from the channel.
    pub fn handle_event(&mut self, now: u64, dahdi_event: i32) {
        match dahdi_event {
            event::RINGOFFHOOK => self.off_hook(now),
            event::ONHOOK => self.on_hook(),
            event::WINKFLASH => {
                if matches!(self.state, State::Connected) {
                    self.actions.push_back(PhoneAction::Flash);
                }
            }
            e if e & event::PULSEDIGIT != 0 => {
                if let Some(digit) = char::from_u32((e & 0xFF) as u32) {
                    self.digit(now, digit);
                }
            }
            _ => {}
        }
    }

    /// A DTMF digit detected in the phone's audio.
    pub fn handle_dtmf(&mut self, now: u64, digit: char) {
        self.digit(now, digit);
    }

    /// The first ring burst ended: the moment for caller ID.
    pub fn handle_first_ring_end(&mut self) {
        if let State::Ringing { caller_id } = &mut self.state {
            if let Some(id) = caller_id.take() {
                self.actions.push_back(PhoneAction::SendCallerId(id));
            }
        }
    }

    /// A command from the control plane.
    pub fn command(&mut self, _now: u64, command: PhoneCommand) {
        match (&self.state, command) {
            (State::Idle, PhoneCommand::Incoming(caller_id)) => {
                self.state = State::Ringing {
                    caller_id: Some(caller_id),
                };
                self.actions.push_back(PhoneAction::Ring);
            }
            (State::Ringing { .. }, PhoneCommand::FarEndHungUp) => {
                self.state = State::Idle;
                self.actions.push_back(PhoneAction::StopRing);
            }
            (State::Calling, PhoneCommand::FarEndRinging) => {
                self.actions
                    .push_back(PhoneAction::PlayTone(ToneKind::Ringback));
            }
            (State::Calling, PhoneCommand::FarEndAnswered) => {
                self.state = State::Connected;
                self.actions.push_back(PhoneAction::StopTone);
                self.actions.push_back(PhoneAction::Connect);
            }
            (State::Calling, PhoneCommand::FarEndBusy) => self.announce(ToneKind::Busy),
            (State::Calling, PhoneCommand::Failed) => self.announce(ToneKind::Congestion),
            (State::Calling | State::Connected, PhoneCommand::FarEndHungUp) => {
                self.announce(ToneKind::Busy)
            }
            _ => {}
        }
    }

    /// Timers: first-digit and inter-digit timeouts.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.poll_timeout().is_none_or(|at| now < at) {
            return;
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::DialTone { .. } => self.announce(ToneKind::Congestion),
            State::Collecting { digits, .. } => match self.plan.classify(&digits) {
                PlanMatch::Complete | PlanMatch::CompleteOrLonger => self.place(digits),
                _ => self.announce(ToneKind::Congestion),
            },
            other => self.state = other,
        }
    }

    fn off_hook(&mut self, now: u64) {
        match self.state {
            State::Idle => {
                self.state = State::DialTone { since: now };
                self.actions
                    .push_back(PhoneAction::PlayTone(ToneKind::Dial));
            }
            State::Ringing { .. } => {
                self.state = State::Connected;
                self.actions.push_back(PhoneAction::StopRing);
                self.actions.push_back(PhoneAction::Answered);
                self.actions.push_back(PhoneAction::Connect);
            }
            _ => {}
        }
    }

    fn on_hook(&mut self) {
        let was = std::mem::replace(&mut self.state, State::Idle);
        if !matches!(was, State::Idle | State::Ringing { .. }) {
            self.actions.push_back(PhoneAction::StopTone);
            self.actions.push_back(PhoneAction::HungUp);
        }
    }

    fn digit(&mut self, now: u64, digit: char) {
        let digits = match &mut self.state {
            State::DialTone { .. } => {
                self.actions.push_back(PhoneAction::StopTone);
                digit.to_string()
            }
            State::Collecting { digits, .. } => {
                digits.push(digit);
                digits.clone()
            }
            _ => return, // digits during a call go to the far end as audio / RFC 4733
        };
        match self.plan.classify(&digits) {
            PlanMatch::Complete => self.place(digits),
            PlanMatch::Invalid => self.announce(ToneKind::Congestion),
            PlanMatch::Incomplete | PlanMatch::CompleteOrLonger => {
                self.state = State::Collecting {
                    digits,
                    last_digit_at: now,
                };
            }
        }
    }

    fn place(&mut self, digits: String) {
        self.state = State::Calling;
        self.actions.push_back(PhoneAction::Dialed(digits));
    }

    fn announce(&mut self, tone: ToneKind) {
        self.state = State::Announcing;
        self.actions.push_back(PhoneAction::PlayTone(tone));
    }
}
