//! Client transactions (RFC 3261 §17.1, RFC 6026): INVITE (timers A, B, D, M) and
//! non-INVITE (timers E, F, K), as state machines that return actions.

use super::requests;
use super::timers::TimerConfig;
use crate::sip::ids;
use crate::sip::message::SipMessage;
use bytes::Bytes;
use ezk_sip_types::Method;
use std::time::{Duration, Instant};

/// What a client transaction asks its layer to do.
#[derive(Debug)]
pub(super) enum ClientAction {
    /// (Re)send the request bytes.
    Retransmit(Bytes),
    /// Give a response to the TU.
    Deliver(SipMessage),
    /// Timer B/F: tell the TU.
    Timeout,
    /// Send a message outside any transaction (ACK).
    SendStateless(SipMessage),
    /// Start a non-INVITE client transaction whose responses nobody needs (CANCEL, BYE).
    StartInternal(SipMessage),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// INVITE: Calling; non-INVITE: Trying.
    Initial,
    Proceeding,
    Completed,
    /// RFC 6026: an INVITE got a 2xx; more 2xx may follow.
    Accepted,
    Terminated,
}

/// One client transaction.
#[derive(Debug)]
pub(super) struct ClientTx {
    invite: bool,
    reliable: bool,
    state: State,
    request: SipMessage,
    bytes: Bytes,
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer B or F while in the initial state (F also in Proceeding).
    timeout_at: Option<Instant>,
    /// Timer D, K or M: when the transaction ends.
    end_at: Option<Instant>,
    ack: Option<SipMessage>,
    cancel_requested: bool,
    cancel_sent: bool,
    /// Reason header value for the CANCEL (RFC 3326).
    cancel_reason: Option<String>,
    /// To-tags of 2xx that crossed our CANCEL and were already BYEd.
    byed_tags: Vec<String>,
    /// Responses are swallowed (CANCEL and BYE the layer sent itself).
    internal: bool,
}

impl ClientTx {
    /// A new transaction; the caller sends `bytes` once right away.
    pub(super) fn new(
        now: Instant,
        request: SipMessage,
        reliable: bool,
        internal: bool,
        timers: &TimerConfig,
    ) -> ClientTx {
        let invite = request.method() == Some(&Method::INVITE);
        let bytes = request.to_bytes();
        ClientTx {
            invite,
            reliable,
            state: State::Initial,
            request,
            bytes,
            retransmit_at: (!reliable).then_some(now + timers.t1),
            interval: timers.t1,
            timeout_at: Some(now + timers.transaction_timeout()),
            end_at: None,
            ack: None,
            cancel_requested: false,
            cancel_sent: false,
            cancel_reason: None,
            byed_tags: Vec::new(),
            internal,
        }
    }

    /// The serialised request.
    pub(super) fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Whether the TU should not see this transaction's responses.
    pub(super) fn is_internal(&self) -> bool {
        self.internal
    }

    /// True once the transaction can be forgotten.
    pub(super) fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// The earliest pending timer.
    pub(super) fn deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn enter_end_state(&mut self, state: State, now: Instant, wait: Duration) {
        self.state = state;
        self.retransmit_at = None;
        self.timeout_at = None;
        if wait.is_zero() {
            self.state = State::Terminated;
            self.end_at = None;
        } else {
            self.end_at = Some(now + wait);
        }
    }

    /// Runs the timers due at `now`.
    pub(super) fn on_timer(&mut self, now: Instant, timers: &TimerConfig) -> Vec<ClientAction> {
        let mut actions = Vec::new();
        if self.end_at.is_some_and(|at| at <= now) {
            self.state = State::Terminated;
            self.end_at = None;
            return actions;
        }
        if self.timeout_at.is_some_and(|at| at <= now) {
            self.state = State::Terminated;
            self.retransmit_at = None;
            self.timeout_at = None;
            if !self.internal {
                actions.push(ClientAction::Timeout);
            }
            return actions;
        }
        if let Some(at) = self.retransmit_at.filter(|at| *at <= now) {
            actions.push(ClientAction::Retransmit(self.bytes.clone()));
            if self.state == State::Proceeding {
                // Non-INVITE in Proceeding: every T2 (RFC 3261 §17.1.2.2).
                self.interval = timers.t2;
            } else {
                self.interval = timers.back_off(self.interval, !self.invite);
            }
            self.retransmit_at = Some(at + self.interval);
        }
        actions
    }

    /// Handles a response matched to this transaction.
    pub(super) fn on_response(
        &mut self,
        now: Instant,
        response: SipMessage,
        timers: &TimerConfig,
    ) -> Vec<ClientAction> {
        let Some(code) = response.status() else {
            return Vec::new();
        };
        if self.invite {
            self.on_invite_response(now, code, response, timers)
        } else {
            self.on_non_invite_response(now, code, response, timers)
        }
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        code: u16,
        response: SipMessage,
        timers: &TimerConfig,
    ) -> Vec<ClientAction> {
        let mut actions = Vec::new();
        match (self.state, code) {
            (State::Initial | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                self.retransmit_at = None;
                // Timer B only guards the Calling state; the TU's ring timer takes over.
                self.timeout_at = None;
                if self.cancel_requested && !self.cancel_sent {
                    actions.extend(self.send_cancel(now, timers));
                }
                actions.push(ClientAction::Deliver(response));
            }
            (State::Initial | State::Proceeding | State::Accepted, 200..=299) => {
                if self.state != State::Accepted {
                    self.enter_end_state(State::Accepted, now, timers.transaction_timeout());
                }
                if self.cancel_requested {
                    actions.extend(self.end_crossed_dialog(&response));
                } else {
                    actions.push(ClientAction::Deliver(response));
                }
            }
            (State::Initial | State::Proceeding, 300..=699) => {
                let ack = requests::ack_for_failure(&self.request, &response);
                actions.push(ClientAction::SendStateless(ack.clone()));
                self.ack = Some(ack);
                self.enter_end_state(State::Completed, now, timers.timer_d(self.reliable));
                actions.push(ClientAction::Deliver(response));
            }
            (State::Completed, 300..=699) => {
                // A retransmitted final: our ACK was lost.
                if let Some(ack) = &self.ack {
                    actions.push(ClientAction::SendStateless(ack.clone()));
                }
            }
            _ => {}
        }
        actions
    }

    /// RFC 5407 §3.1.2: a 2xx that crossed our CANCEL is ACKed, then the dialog is ended.
    fn end_crossed_dialog(&mut self, ok: &SipMessage) -> Vec<ClientAction> {
        let ack = requests::in_answered_dialog(&self.request, ok, Method::ACK, &ids::branch());
        let mut actions = vec![ClientAction::SendStateless(ack)];
        let tag = ok.to_tag().map(str::to_string).unwrap_or_default();
        if !self.byed_tags.contains(&tag) {
            self.byed_tags.push(tag);
            let bye = requests::in_answered_dialog(&self.request, ok, Method::BYE, &ids::branch());
            actions.push(ClientAction::StartInternal(bye));
        }
        actions
    }

    fn on_non_invite_response(
        &mut self,
        now: Instant,
        code: u16,
        response: SipMessage,
        timers: &TimerConfig,
    ) -> Vec<ClientAction> {
        let mut actions = Vec::new();
        match (self.state, code) {
            (State::Initial | State::Proceeding, 100..=199) => {
                if self.state == State::Initial && !self.reliable {
                    self.retransmit_at = Some(now + timers.t2);
                }
                self.state = State::Proceeding;
                actions.push(ClientAction::Deliver(response));
            }
            (State::Initial | State::Proceeding, 200..=699) => {
                self.enter_end_state(State::Completed, now, timers.wait_t4(self.reliable));
                actions.push(ClientAction::Deliver(response));
            }
            _ => {} // Completed: retransmitted finals are absorbed.
        }
        actions
    }

    /// Asks for the INVITE to be cancelled: at once if a provisional came, else when one does.
    pub(super) fn cancel(
        &mut self,
        now: Instant,
        timers: &TimerConfig,
        reason: Option<&str>,
    ) -> Vec<ClientAction> {
        if !self.invite || self.cancel_requested {
            return Vec::new();
        }
        self.cancel_requested = true;
        self.cancel_reason = reason.map(str::to_string);
        if self.state == State::Proceeding {
            return self.send_cancel(now, timers);
        }
        Vec::new()
    }

    /// Sends the CANCEL; if no final answer follows within 64·T1 the transaction is
    /// destroyed (RFC 3261 §9.1).
    fn send_cancel(&mut self, now: Instant, timers: &TimerConfig) -> Vec<ClientAction> {
        self.cancel_sent = true;
        self.end_at = Some(now + timers.transaction_timeout());
        vec![ClientAction::StartInternal(requests::cancel(
            &self.request,
            self.cancel_reason.as_deref(),
        ))]
    }
}
