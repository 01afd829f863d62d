//! The calls the phones place (the UAC side): INVITE (answering the 407), ACK, CANCEL and
//! BYE, each request retransmitted until answered, every final response to an INVITE ACKed
//! again when it comes again.

use super::{Event, Phones};
use crate::sipload::{authorization, SDP};
use ezk_sip_types::Name;
use gateway::sip::ids::{branch, tag};
use gateway::sip::message::SipMessage;
use gateway::sip::transaction::TimerConfig;
use std::time::Instant;

/// Where a placed call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// The INVITE has no final response yet.
    Inviting,
    /// Answered and ACKed.
    Up,
    /// Our BYE awaits its final response.
    HangingUp,
    /// Over; kept until this instant (Timer D) to ACK retransmitted final responses.
    Ended(Instant),
}

/// A call this switchboard placed.
pub(super) struct Placed {
    /// The gateway the call was dialled through.
    server: std::net::SocketAddr,
    user: String,
    password: String,
    target: String,
    pub(super) from_tag: String,
    cseq: u32,
    branch: String,
    supports_replaces: bool,
    pub(super) stage: Stage,
    /// Any provisional came (a CANCEL may be sent).
    provisional: bool,
    ringing_reported: bool,
    /// The To tag of the first provisional that had one: the early dialog.
    pub(super) early_tag: Option<String>,
    /// [`Phones::cancel`] was asked before any provisional came.
    cancel_wanted: bool,
    to: Option<String>,
    remote_target: Option<String>,
    /// Our ACK of the 2xx, sent again for every retransmission of that 2xx.
    ack: Option<Vec<u8>>,
}

impl Placed {
    /// Whether the call ended long enough ago to be forgotten.
    pub(super) fn forgotten(&self, now: Instant) -> bool {
        matches!(self.stage, Stage::Ended(until) if until <= now)
    }
}

/// When an ended call is forgotten: after Timer D (32 s), the longest a final response may
/// still be retransmitted.
fn ended(now: Instant) -> Stage {
    Stage::Ended(now + TimerConfig::default().timer_d(false))
}

impl Phones {
    /// `user` dials `number` (sending `Supported: replaces` when asked); returns the Call-ID.
    /// The INVITE goes out with the next [`Phones::next_event`], the 407 is answered there.
    pub fn dial(
        &mut self,
        user: &str,
        password: &str,
        number: &str,
        supports_replaces: bool,
    ) -> String {
        self.dial_via(self.server, user, password, number, supports_replaces)
    }

    /// [`Phones::dial`] through gateway `server` (another node of a cluster).
    pub fn dial_via(
        &mut self,
        server: std::net::SocketAddr,
        user: &str,
        password: &str,
        number: &str,
        supports_replaces: bool,
    ) -> String {
        let call_id = format!("ph-{}", tag());
        let call = Placed {
            server,
            user: user.into(),
            password: password.into(),
            target: format!("sip:{number}@{server}"),
            from_tag: tag(),
            cseq: 1,
            branch: branch(),
            supports_replaces,
            stage: Stage::Inviting,
            provisional: false,
            ringing_reported: false,
            early_tag: None,
            cancel_wanted: false,
            to: None,
            remote_target: None,
            ack: None,
        };
        self.placed.insert(call_id.clone(), call);
        self.send_invite(Instant::now(), &call_id, None);
        call_id
    }

    /// Hangs up an answered call we placed (BYE, sent with the next [`Phones::next_event`];
    /// its final response comes as [`Event::HungUp`]).
    pub fn hang_up(&mut self, call_id: &str) {
        let Some(call) = self.placed.get_mut(call_id) else {
            return;
        };
        if call.stage != Stage::Up {
            return;
        }
        call.stage = Stage::HangingUp;
        call.cseq += 1;
        let bye_branch = branch();
        let call = &self.placed[call_id];
        let bye = self.in_dialog(call_id, call, "BYE", &bye_branch);
        let to = call.server;
        self.send_request(
            Instant::now(),
            (call_id, to),
            (bye_branch, "BYE".into()),
            bye,
        );
    }

    /// Cancels a call we placed that is not answered yet: at once if a provisional came,
    /// else as soon as one does (RFC 3261 §9.1). Its 487 comes as [`Event::Failed`].
    pub fn cancel(&mut self, call_id: &str) {
        let Some(call) = self.placed.get_mut(call_id) else {
            return;
        };
        if call.stage != Stage::Inviting {
            return;
        }
        if call.provisional {
            self.send_cancel(Instant::now(), call_id);
        } else {
            call.cancel_wanted = true;
        }
    }

    fn send_cancel(&mut self, now: Instant, call_id: &str) {
        let Some(call) = self.placed.get_mut(call_id) else {
            return;
        };
        call.cancel_wanted = false;
        let call = &self.placed[call_id];
        // Request-URI, Call-ID, From, To (without a tag), Via branch and CSeq number of the
        // INVITE (RFC 3261 §9.1).
        let to = format!("<{}>", call.target);
        let cancel = self.request(
            call_id,
            call,
            ("CANCEL", &call.target),
            (&call.branch, &to, call.cseq),
            "",
        );
        let key = (call.branch.clone(), "CANCEL".to_string());
        let to = call.server;
        self.send_request(now, (call_id, to), key, cancel);
    }

    fn send_invite(&mut self, now: Instant, call_id: &str, auth: Option<&str>) {
        let Some(call) = self.placed.get(call_id) else {
            return;
        };
        let local = self.local;
        let authorization = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        let supported = if call.supports_replaces {
            "Supported: replaces\r\n"
        } else {
            ""
        };
        let extra = format!(
            "Contact: <sip:{}@{local}>\r\n{supported}{authorization}Content-Type: application/sdp\r\n",
            call.user
        );
        let to = format!("<{}>", call.target);
        let mut invite = self.request(
            call_id,
            call,
            ("INVITE", &call.target),
            (&call.branch, &to, call.cseq),
            &extra,
        );
        invite.push_str(SDP);
        let key = (call.branch.clone(), "INVITE".to_string());
        let to = call.server;
        self.send_request(now, (call_id, to), key, invite);
    }

    /// A request of call `call_id`; `line` is (method, Request-URI), `ids` (Via branch, To,
    /// CSeq number); `extra` holds more header lines; the body (SDP for an INVITE) follows.
    fn request(
        &self,
        call_id: &str,
        call: &Placed,
        (method, uri): (&str, &str),
        (via_branch, to, cseq): (&str, &str, u32),
        extra: &str,
    ) -> String {
        let (local, server) = (self.local, call.server);
        let length = if method == "INVITE" { SDP.len() } else { 0 };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={via_branch};rport\r\nMax-Forwards: 70\r\n\
From: <sip:{}@{server}>;tag={}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: {length}\r\n\r\n",
            call.user, call.from_tag,
        )
    }

    /// An ACK or BYE in the call's dialog: To with the remote tag, to the remote target, on
    /// branch `via_branch`.
    fn in_dialog(&self, call_id: &str, call: &Placed, method: &str, via_branch: &str) -> String {
        let target = call.remote_target.clone().unwrap_or(call.target.clone());
        let to = call.to.clone().unwrap_or_default();
        self.request(
            call_id,
            call,
            (method, &target),
            (via_branch, &to, call.cseq),
            "",
        )
    }

    /// The ACK of a non-2xx final response, on the branch and CSeq number of the INVITE it
    /// answers (taken from the response: it may answer an earlier, challenged INVITE).
    fn ack_failure(&mut self, call_id: &str, response: &SipMessage) {
        let Some(call) = self.placed.get(call_id) else {
            return;
        };
        let ack = self.request(
            call_id,
            call,
            ("ACK", &call.target),
            (
                &response.top_branch().unwrap_or(call.branch.clone()),
                response.header(&Name::TO).unwrap_or_default(),
                response.cseq().map_or(call.cseq, |c| c.cseq),
            ),
            "",
        );
        self.outbox.push((call.server, ack.into_bytes()));
    }

    /// A response from the server.
    pub(super) fn on_response(&mut self, now: Instant, response: &SipMessage) {
        let (Some(call_id), Some(code), Some(cseq), Some(via_branch)) = (
            response.call_id().map(str::to_string),
            response.status(),
            response.cseq(),
            response.top_branch(),
        ) else {
            return;
        };
        let method = cseq.method.to_string();
        let key = (via_branch, method.clone());
        if let Some(pending) = self.pending.get_mut(&key) {
            // An INVITE stops on any response (Timer A), the others on a final one (Timer E).
            if method == "INVITE" || code >= 200 {
                self.pending.remove(&key);
            } else {
                pending.retransmit.proceeding(now);
            }
        }
        match method.as_str() {
            "INVITE" => self.on_invite_response(now, &call_id, code, cseq.cseq, response),
            "BYE" if code >= 200 => {
                if let Some(call) = self.placed.get_mut(&call_id) {
                    if call.stage == Stage::HangingUp {
                        call.stage = ended(now);
                        self.events.push_back(Event::HungUp { call_id, code });
                    }
                }
            }
            _ => {}
        }
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        call_id: &str,
        code: u16,
        cseq: u32,
        response: &SipMessage,
    ) {
        if code >= 300 {
            // Every final failure, first or retransmitted, gets its ACK.
            self.ack_failure(call_id, response);
        }
        let Some(call) = self.placed.get_mut(call_id) else {
            return;
        };
        if cseq != call.cseq && call.stage == Stage::Inviting {
            // Answering the earlier (challenged) INVITE: ACKed above.
            return;
        }
        let call_id = call_id.to_string();
        match (call.stage, code) {
            (Stage::Inviting, 100..=199) => {
                call.provisional = true;
                if call.early_tag.is_none() {
                    call.early_tag = response.to_header().and_then(|to| to.tag().map(Into::into));
                }
                if code > 100 && !call.ringing_reported {
                    call.ringing_reported = true;
                    self.events.push_back(Event::Ringing {
                        call_id: call_id.clone(),
                    });
                }
                if call.cancel_wanted {
                    self.send_cancel(now, &call_id);
                }
            }
            (Stage::Inviting, 407) if call.cseq == 1 => {
                let challenge = response
                    .header(&Name::PROXY_AUTHENTICATE)
                    .unwrap_or_default();
                let auth = authorization(
                    challenge,
                    &call.user,
                    &call.password,
                    "INVITE",
                    &call.target,
                );
                call.cseq = 2;
                call.branch = branch();
                call.provisional = false;
                self.send_invite(now, &call_id, Some(&auth));
            }
            (Stage::Inviting, 200..=299) => {
                call.to = response.header(&Name::TO).map(str::to_string);
                call.remote_target = response.remote_target();
                call.stage = Stage::Up;
                let call = &self.placed[&call_id];
                let ack = self
                    .in_dialog(&call_id, call, "ACK", &branch())
                    .into_bytes();
                self.outbox.push((call.server, ack.clone()));
                if let Some(call) = self.placed.get_mut(&call_id) {
                    call.ack = Some(ack);
                }
                self.events.push_back(Event::Answered { call_id, at: now });
            }
            // The 2xx again: our ACK was lost.
            (Stage::Up | Stage::HangingUp | Stage::Ended(_), 200..=299) => {
                if let Some(ack) = call.ack.clone() {
                    self.outbox.push((call.server, ack));
                }
            }
            (Stage::Inviting, 300..) => {
                call.stage = ended(now);
                self.events.push_back(Event::Failed { call_id, code });
            }
            _ => {}
        }
    }

    /// Our request `method` of call `call_id` went unanswered until Timer B/F.
    pub(super) fn request_timed_out(&mut self, now: Instant, call_id: &str, method: &str) {
        let Some(call) = self.placed.get_mut(call_id) else {
            return;
        };
        if matches!(
            (method, call.stage),
            ("INVITE", Stage::Inviting) | ("BYE", Stage::HangingUp)
        ) {
            call.stage = ended(now);
            self.events.push_back(Event::TimedOut {
                call_id: call_id.to_string(),
                method: method.to_string(),
            });
        }
    }

    /// The server ended the dialog of a call we placed (its BYE).
    pub(super) fn ended_by_server(&mut self, now: Instant, call_id: &str) {
        if let Some(call) = self.placed.get_mut(call_id) {
            if call.stage == Stage::Up {
                call.stage = ended(now);
            }
        }
    }
}
