//! Server transactions (RFC 3261 §17.2, RFC 6026): INVITE (timers G, H, I, L and the 2xx
//! retransmission until ACK) and non-INVITE (timer J).

use super::timers::TimerConfig;
use crate::sip::message::SipMessage;
use bytes::Bytes;
use ezk_sip_types::Method;
use std::time::{Duration, Instant};

/// What a server transaction asks its layer to do.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ServerAction {
    /// Send these response bytes (again).
    Transmit(Bytes),
    /// Timer L ended without an ACK for our 2xx.
    AckTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Non-INVITE: no response yet.
    Trying,
    /// A provisional was sent (INVITE starts here, with 100 Trying).
    Proceeding,
    /// A non-2xx final (INVITE) or any final (non-INVITE) was sent.
    Completed,
    /// INVITE: the ACK for our non-2xx final arrived.
    Confirmed,
    /// RFC 6026: INVITE answered 2xx; retransmitting it until the ACK.
    Accepted,
    Terminated,
}

/// One server transaction.
#[derive(Debug)]
pub(super) struct ServerTx {
    invite: bool,
    reliable: bool,
    state: State,
    request: SipMessage,
    last_response: Option<Bytes>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer H, J or L.
    end_at: Option<Instant>,
    /// Timer I.
    confirmed_until: Option<Instant>,
    acked: bool,
}

impl ServerTx {
    /// A new transaction for `request`.
    pub(super) fn new(request: SipMessage, reliable: bool, timers: &TimerConfig) -> ServerTx {
        let invite = request.method() == Some(&Method::INVITE);
        ServerTx {
            invite,
            reliable,
            state: if invite {
                State::Proceeding
            } else {
                State::Trying
            },
            request,
            last_response: None,
            retransmit_at: None,
            interval: timers.t1,
            end_at: None,
            confirmed_until: None,
            acked: false,
        }
    }

    /// The request that created the transaction.
    pub(super) fn request(&self) -> &SipMessage {
        &self.request
    }

    /// True for INVITE transactions.
    pub(super) fn is_invite(&self) -> bool {
        self.invite
    }

    /// True until a final response has been sent.
    pub(super) fn is_pending(&self) -> bool {
        matches!(self.state, State::Trying | State::Proceeding)
    }

    /// True in the Accepted state (2xx sent).
    pub(super) fn is_accepted(&self) -> bool {
        self.state == State::Accepted
    }

    /// True once the transaction can be forgotten.
    pub(super) fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// The earliest pending timer.
    pub(super) fn deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.end_at, self.confirmed_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// The request was retransmitted: resend the last response, if any.
    pub(super) fn on_retransmission(&mut self) -> Vec<ServerAction> {
        match (&self.last_response, self.state) {
            (Some(bytes), State::Trying | State::Proceeding | State::Completed) => {
                vec![ServerAction::Transmit(bytes.clone())]
            }
            (Some(bytes), State::Accepted) if !self.acked => {
                vec![ServerAction::Transmit(bytes.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// The TU sends a response.
    pub(super) fn send_response(
        &mut self,
        now: Instant,
        response: &SipMessage,
        timers: &TimerConfig,
    ) -> Vec<ServerAction> {
        let Some(code) = response.status() else {
            return Vec::new();
        };
        if !self.is_pending() {
            return Vec::new(); // a final was already sent
        }
        let bytes = response.to_bytes();
        self.last_response = Some(bytes.clone());
        let unreliable_retransmit = (!self.reliable).then_some(now + timers.t1);
        match (self.invite, code) {
            (_, 100..=199) => self.state = State::Proceeding,
            (true, 200..=299) => {
                self.state = State::Accepted;
                self.retransmit_at = unreliable_retransmit;
                self.end_at = Some(now + timers.transaction_timeout());
            }
            (true, _) => {
                self.state = State::Completed;
                self.retransmit_at = unreliable_retransmit;
                self.end_at = Some(now + timers.transaction_timeout());
            }
            (false, _) => {
                let wait = timers.timer_j(self.reliable);
                if wait.is_zero() {
                    self.state = State::Terminated;
                } else {
                    self.state = State::Completed;
                    self.end_at = Some(now + wait);
                }
            }
        }
        vec![ServerAction::Transmit(bytes)]
    }

    /// An ACK matched this INVITE transaction. Returns true when it acknowledges our 2xx
    /// for the first time (the TU must hear of it).
    pub(super) fn on_ack(&mut self, now: Instant, timers: &TimerConfig) -> bool {
        match self.state {
            State::Completed => {
                self.state = State::Confirmed;
                self.retransmit_at = None;
                self.end_at = None;
                let wait = timers.wait_t4(self.reliable);
                if wait.is_zero() {
                    self.state = State::Terminated;
                } else {
                    self.confirmed_until = Some(now + wait);
                }
                false
            }
            State::Accepted if !self.acked => {
                self.acked = true;
                self.retransmit_at = None;
                true
            }
            _ => false,
        }
    }

    /// A later request of the dialog (a BYE) shows the 2xx arrived although its ACK did not:
    /// no more retransmissions, and no ACK timeout when the transaction ends.
    pub(super) fn stop_2xx_retransmissions(&mut self) {
        if self.state == State::Accepted {
            self.acked = true;
            self.retransmit_at = None;
        }
    }

    /// Runs the timers due at `now`.
    pub(super) fn on_timer(&mut self, now: Instant, timers: &TimerConfig) -> Vec<ServerAction> {
        if self.confirmed_until.is_some_and(|at| at <= now)
            || self.end_at.is_some_and(|at| at <= now)
        {
            let unacknowledged = self.state == State::Accepted && !self.acked;
            self.state = State::Terminated;
            self.retransmit_at = None;
            self.end_at = None;
            self.confirmed_until = None;
            return if unacknowledged {
                vec![ServerAction::AckTimeout]
            } else {
                Vec::new()
            };
        }
        let mut actions = Vec::new();
        if let Some(at) = self.retransmit_at.filter(|at| *at <= now) {
            if let Some(bytes) = &self.last_response {
                actions.push(ServerAction::Transmit(bytes.clone()));
            }
            self.interval = timers.back_off(self.interval, true);
            self.retransmit_at = Some(at + self.interval);
        }
        actions
    }
}
