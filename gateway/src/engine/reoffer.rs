//! Re-INVITEs of the gateway's own, sans-IO: when a side of a call must learn new media, the
//! gateway offers them in that side's dialog (RFC 3261 §14.1, RFC 3264 §8).
//!
//! A side must learn new media when its INVITE was answered before the call's media were
//! known, and RFC 3261 §13.2.1 fixes that answer: the UAC takes the first SDP it receives
//! and ignores SDP in later responses to the same INVITE, so the 2xx repeats it (RFC 6337
//! §3.1). That is the picker held in the dummy early dialog (183, inactive) whose Replaces
//! INVITE failed, and a caller whose early answer (a ringing callee's 183) named media the
//! call does not use. The re-INVITE goes once that side ACKed its 2xx and no other INVITE
//! is in progress on the call; its offer continues the o= line the side last got from us.
//!
//! Outcomes: a 2xx is ACKed (again for each retransmission) and may in turn move the other
//! side's media (only after the picker's answer: the caller's answer is not chased further,
//! so two re-INVITEs at most); 491 (glare) retries after a random delay from the seeded
//! generator, 2.1 to 4 s when we own the dialog's Call-ID, else up to 2 s (§14.1); 408, 481
//! or no final response within [`REOFFER_TIMEOUT`] end the call (§12.2.1.2: the dialog is
//! gone); any other failure keeps the call up with its media unchanged, logged.

use super::call::{ClientRole, Side};
use super::{sdp, Engine, Now};
use crate::sip::message::SipMessage;
use crate::sip::transaction::ClientTxId;
use bytes::Bytes;
use ezk_sip_types::{Method, Name};
use rand::RngExt;
use std::time::{Duration, Instant};

/// How long our re-INVITE may go without a final response (64 x T1, Timer B's value, which
/// a transaction that got a provisional no longer runs).
pub const REOFFER_TIMEOUT: Duration = Duration::from_secs(32);

/// How many 491s (or INVITEs in progress) a re-offer waits out before it gives up.
const GLARE_RETRIES: u8 = 4;

/// A re-offer owed to one side of a call.
#[derive(Debug)]
pub(super) struct Reoffer {
    /// The media the side must learn (the o= line is the dialog's, set when sent).
    media: Bytes,
    state: ReofferState,
    /// 491s and postponements so far.
    waits: u8,
    /// Newer media arrived while a re-INVITE was in flight: offer them once it is answered.
    again: bool,
    /// The deadline filed in `Calls::reoffer_deadlines`, if any.
    deadline: Option<Instant>,
}

/// Where a re-offer stands.
#[derive(Debug)]
enum ReofferState {
    /// The side has not ACKed the 2xx that answered its INVITE yet.
    AwaitingAck,
    /// Waiting out glare until the deadline.
    Backoff,
    /// Our re-INVITE (CSeq `cseq`) is in flight.
    Sent { tx: ClientTxId, cseq: u32 },
    /// Answered and ACKed: `ack` is sent again for each retransmitted 2xx.
    Done {
        tx: ClientTxId,
        ack: Box<SipMessage>,
    },
}

impl Engine {
    /// Side `side` of call `id` must learn `media`: offer them in a re-INVITE as soon as
    /// its INVITE transaction is over. A re-offer already owed to that side is replaced.
    pub(super) fn owe_reoffer(&mut self, now: Now, id: u64, side: Side, media: Bytes) {
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        if let Some(in_flight) = call.reoffers[side.index()]
            .as_mut()
            .filter(|r| matches!(r.state, ReofferState::Sent { .. }))
        {
            // One INVITE at a time in a dialog: these media go once that one is answered.
            in_flight.media = media;
            in_flight.again = true;
            return;
        }
        let settled = call.settled[side.index()];
        let old = call.reoffers[side.index()].replace(Reoffer {
            media,
            state: ReofferState::AwaitingAck,
            waits: 0,
            again: false,
            deadline: None,
        });
        if let Some(old) = old {
            self.forget_reoffer_keys(id, side, old);
        }
        if settled {
            self.send_reoffer(now, id, side);
        }
    }

    /// Forgets a re-offer's deadline and its transaction's index entry.
    fn forget_reoffer_keys(&mut self, id: u64, side: Side, old: Reoffer) {
        if let Some(at) = old.deadline {
            self.calls.reoffer_deadlines.remove(&(at, id, side.index()));
        }
        if let ReofferState::Sent { tx, .. } | ReofferState::Done { tx, .. } = old.state {
            self.calls.index.remove_client_tx(&tx);
        }
    }

    /// Side `side` of call `id` finished its INVITE transaction (it ACKed our 2xx): a
    /// re-offer waiting for that goes now.
    pub(super) fn side_settled(&mut self, now: Now, id: u64, side: Side) {
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        call.settled[side.index()] = true;
        let waiting = call.reoffers[side.index()]
            .as_ref()
            .is_some_and(|r| matches!(r.state, ReofferState::AwaitingAck));
        if waiting {
            self.send_reoffer(now, id, side);
        }
    }

    /// Whether one of our re-INVITEs is in flight on call `id` (an INVITE arriving on either
    /// of its dialogs meanwhile gets 491, RFC 3261 §14.2).
    pub(super) fn reoffer_in_flight(&self, id: u64) -> bool {
        self.calls.calls.get(&id).is_some_and(|call| {
            call.reoffers
                .iter()
                .flatten()
                .any(|r| matches!(r.state, ReofferState::Sent { .. }))
        })
    }

    /// Sends the re-INVITE owed to `side`, or waits when another INVITE is in progress on
    /// the call (RFC 3261 §14.1: one at a time in each dialog, and a relayed one uses both).
    fn send_reoffer(&mut self, now: Now, id: u64, side: Side) {
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        let busy = call
            .relays
            .values()
            .any(|r| r.method == Method::INVITE && r.ack_sent.is_none());
        if busy {
            self.back_off(now, id, side, "an INVITE is in progress on the call");
            return;
        }
        let tcp_served = self.serves_tcp();
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        let Some(media) = call.reoffers[side.index()]
            .as_ref()
            .map(|r| r.media.clone())
        else {
            return;
        };
        let body = call.sent_sdp[side.index()]
            .as_ref()
            .and_then(|previous| sdp::next_offer(previous, &media))
            .unwrap_or(media);
        let Some(dialog) = call.dialog(side) else {
            return;
        };
        let mut invite = dialog.request(Method::INVITE, None, &self.local);
        let cseq = dialog.local_cseq;
        invite.set_header(Name::CONTENT_TYPE, "application/sdp");
        invite.body = body.clone();
        if let Err(error) = dialog.fit_transport(&mut invite, &self.local, tcp_served) {
            tracing::warn!("call {id}: re-INVITE to {side:?} not sent: {error}");
            call.reoffers[side.index()] = None;
            return;
        }
        let peer = dialog.peer;
        call.sent_sdp[side.index()] = Some(body);
        let tx = self.tx.send_request(now.mono, invite, peer);
        self.calls
            .index
            .add_client_tx(tx, id, ClientRole::Reoffer(side));
        tracing::info!("call {id}: re-INVITE to {side:?} (CSeq {cseq}) with the call's media");
        self.set_reoffer(
            id,
            side,
            ReofferState::Sent { tx, cseq },
            Some(now.mono + REOFFER_TIMEOUT),
        );
    }

    /// Moves `side`'s re-offer to `state`, with a new deadline (or none).
    fn set_reoffer(&mut self, id: u64, side: Side, state: ReofferState, at: Option<Instant>) {
        let Some(reoffer) = self
            .calls
            .calls
            .get_mut(&id)
            .and_then(|call| call.reoffers[side.index()].as_mut())
        else {
            return;
        };
        if let Some(old) = reoffer.deadline.take() {
            self.calls
                .reoffer_deadlines
                .remove(&(old, id, side.index()));
        }
        reoffer.state = state;
        reoffer.deadline = at;
        if let Some(at) = at {
            self.calls.reoffer_deadlines.insert((at, id, side.index()));
        }
    }

    /// Waits a random while before trying again (RFC 3261 §14.1), or gives up after
    /// [`GLARE_RETRIES`].
    fn back_off(&mut self, now: Now, id: u64, side: Side, why: &str) {
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        // We own the Call-ID of a dialog we started: a fork's (our INVITE), not the
        // caller's nor a bridged picker's (their INVITE, which we answered).
        let owner = side == Side::B && call.answered.is_some_and(|i| call.forks[i].tx.is_some());
        let Some(reoffer) = call.reoffers[side.index()].as_mut() else {
            return;
        };
        reoffer.waits += 1;
        if reoffer.waits > GLARE_RETRIES {
            tracing::warn!(
                "call {id}: gave up the re-INVITE to {side:?} ({why}, {GLARE_RETRIES} times); \
                 its media stay as they are"
            );
            self.end_reoffer(id, side);
            return;
        }
        let units = if owner {
            self.glare_rng.random_range(210..=400)
        } else {
            self.glare_rng.random_range(0..=200)
        };
        let delay = Duration::from_millis(10 * units);
        tracing::info!("call {id}: re-INVITE to {side:?} again in {delay:?} ({why})");
        self.set_reoffer(id, side, ReofferState::Backoff, Some(now.mono + delay));
    }

    /// A response to our re-INVITE `tx` to `side`.
    pub(super) fn on_reoffer_response(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        tx: ClientTxId,
        msg: SipMessage,
    ) {
        let Some(code) = msg.status().filter(|&code| code >= 200) else {
            return;
        };
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        let Some(reoffer) = call.reoffers[side.index()].as_ref() else {
            return;
        };
        match &reoffer.state {
            ReofferState::Done { tx: done, ack } if *done == tx && code < 300 => {
                let ack = SipMessage::clone(ack);
                if let Some(dialog) = call.dialog(side) {
                    self.tx.send_stateless(ack, dialog.peer);
                }
            }
            ReofferState::Sent { tx: sent, cseq } if *sent == tx => {
                let cseq = *cseq;
                match code {
                    200..=299 => self.reoffer_answered(now, id, side, tx, cseq, &msg),
                    491 => self.back_off(now, id, side, "491 Request Pending"),
                    408 | 481 => self.reoffer_lost_dialog(now, id, side, code),
                    _ => {
                        tracing::warn!(
                            "call {id}: {side:?} refused the re-INVITE with {code}; the call \
                             stays up with its media unchanged"
                        );
                        self.end_reoffer(id, side);
                    }
                }
            }
            _ => {}
        }
    }

    /// Our re-INVITE to `side` got no final response (Timer B or [`REOFFER_TIMEOUT`]).
    pub(super) fn on_reoffer_timeout(&mut self, now: Now, id: u64, side: Side, tx: ClientTxId) {
        let sent = self
            .calls
            .calls
            .get(&id)
            .and_then(|call| call.reoffers[side.index()].as_ref())
            .is_some_and(|r| matches!(r.state, ReofferState::Sent { tx: sent, .. } if sent == tx));
        if sent {
            self.tx.cancel(now.mono, tx);
            self.reoffer_lost_dialog(now, id, side, 408);
        }
    }

    /// Forgets `side`'s re-offer (refused, or given up).
    fn end_reoffer(&mut self, id: u64, side: Side) {
        let old = self
            .calls
            .calls
            .get_mut(&id)
            .and_then(|call| call.reoffers[side.index()].take());
        if let Some(old) = old {
            self.forget_reoffer_keys(id, side, old);
        }
    }

    /// RFC 3261 §12.2.1.2: a 408 or 481 (or no answer) to a request in a dialog means the
    /// dialog is gone, and with it the call.
    fn reoffer_lost_dialog(&mut self, now: Now, id: u64, side: Side, code: u16) {
        tracing::warn!(
            "call {id}: {side:?} answered our re-INVITE {code} (or not at all); hanging up"
        );
        self.end_reoffer(id, side);
        let cause = if code == 408 {
            "no answer to re-INVITE".to_string()
        } else {
            format!("{code} to re-INVITE")
        };
        self.hang_up_sides(now, id, &[Side::A, Side::B], &cause);
    }

    /// A 2xx to our re-INVITE: ACK it; the side's answer may move the other side's media.
    fn reoffer_answered(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        tx: ClientTxId,
        cseq: u32,
        msg: &SipMessage,
    ) {
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        let (anchor, again) = (
            call.anchor,
            call.reoffers[side.index()]
                .as_ref()
                .is_some_and(|r| r.again),
        );
        let Some(dialog) = call.dialog(side) else {
            return;
        };
        if let Some(contact) = msg.contacts().and_then(|c| c.into_iter().next()) {
            dialog.remote_target = contact.uri; // target refresh (RFC 3261 §12.2.1.2)
        }
        let ack = dialog.request(Method::ACK, Some(cseq), &self.local);
        self.tx.send_stateless(ack.clone(), dialog.peer);
        self.set_reoffer(
            id,
            side,
            ReofferState::Done {
                tx,
                ack: Box::new(ack),
            },
            None,
        );
        tracing::info!("call {id}: {side:?} took the call's media");
        if again {
            let media = self
                .calls
                .calls
                .get(&id)
                .and_then(|call| call.reoffers[side.index()].as_ref())
                .map(|r| r.media.clone());
            if let Some(media) = media {
                self.owe_reoffer(now, id, side, media);
            }
        }
        if msg.body.is_empty() {
            tracing::warn!("call {id}: {side:?} answered our re-INVITE without SDP");
            return;
        }
        match (side, anchor) {
            (Side::B, _) => self.picker_media_known(now, id, &msg.body),
            // The caller's answer is not chased further; the relay learns where it receives.
            (Side::A, Some(anchor)) => {
                let toward = self
                    .calls
                    .calls
                    .get_mut(&id)
                    .and_then(|call| call.dialog(Side::B))
                    .map(|dialog| dialog.peer);
                if let Some(toward) = toward {
                    self.anchor_body(anchor, Side::A, &msg.body, toward);
                }
            }
            (Side::A, None) => {}
        }
    }

    /// Side B answered our re-offer with `answer`: the caller is told again if what it
    /// should now send (the answer to its offer from `answer`, anchored as the call is)
    /// differs from what it was told.
    fn picker_media_known(&mut self, now: Now, id: u64, answer: &Bytes) {
        let Some(call) = self.calls.calls.get(&id) else {
            return;
        };
        let Some(to_caller) = super::answer::answer(&call.offer, answer) else {
            return;
        };
        let caller_peer = call.a.peer;
        let to_caller = match call.anchor {
            Some(anchor) => self.anchor_body(anchor, Side::B, &to_caller, caller_peer),
            None => to_caller,
        };
        let Some(call) = self.calls.calls.get(&id) else {
            return;
        };
        let told = call.sent_sdp[Side::A.index()]
            .as_ref()
            .is_some_and(|sent| sdp::same_media(sent, &to_caller));
        if !told {
            self.owe_reoffer(now, id, Side::A, to_caller);
        }
    }

    /// Runs the re-offer deadlines that are due: glare waits over, re-INVITEs unanswered.
    pub(super) fn reoffer_timeouts(&mut self, now: Now) {
        while let Some(&(at, id, index)) = self.calls.reoffer_deadlines.first() {
            if at > now.mono {
                break;
            }
            self.calls.reoffer_deadlines.remove(&(at, id, index));
            let side = if index == 0 { Side::A } else { Side::B };
            let state = self
                .calls
                .calls
                .get_mut(&id)
                .and_then(|call| call.reoffers[index].as_mut())
                .filter(|r| r.deadline == Some(at))
                .map(|r| {
                    r.deadline = None;
                    match r.state {
                        ReofferState::Sent { tx, .. } => Some(tx),
                        _ => None,
                    }
                });
            match state {
                Some(Some(tx)) => self.on_reoffer_timeout(now, id, side, tx),
                Some(None) => self.send_reoffer(now, id, side),
                None => {}
            }
        }
    }
}
