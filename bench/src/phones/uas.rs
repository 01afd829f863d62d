//! The requests the phones answer (the UAS side): INVITEs ring or are answered, a CANCEL
//! ends a ringing INVITE with 487, an INVITE with Replaces is accepted or refused as
//! RFC 3891 §3 says, BYE and the like get 200. A retransmitted request gets the response it
//! got before; a final response to an INVITE is retransmitted until its ACK.

use super::uac::Stage;
use super::{CalleeBehaviour, Event, Phones, ReplacesAnswer};
use crate::retransmit::Retransmit;
use crate::sipload::SDP;
use ezk_sip_types::Name;
use gateway::sip::ids::tag;
use gateway::sip::message::SipMessage;
use gateway::sip::transaction::TimerConfig;
use std::net::SocketAddr;
use std::time::Instant;

/// A request we received: the last response it got, and when to forget it.
pub(super) struct Served {
    /// Where the request came from (and its answers go).
    from: SocketAddr,
    response: Option<Vec<u8>>,
    /// 128·T1 after the final response: past Timer J, and past Timer H of an INVITE.
    forget_at: Option<Instant>,
}

impl Served {
    /// Whether a retransmission of the request can no longer come.
    pub(super) fn forgotten(&self, now: Instant) -> bool {
        self.forget_at.is_some_and(|at| at <= now)
    }
}

/// A final response to an INVITE awaiting the ACK.
pub(super) struct Unacked {
    /// Where it goes.
    pub(super) to: SocketAddr,
    pub(super) retransmit: Retransmit,
}

/// A ringing INVITE: what its CANCEL needs.
pub(super) struct Ringing {
    request: SipMessage,
    to_tag: String,
    user: String,
}

/// The parts of a Replaces header (RFC 3891 §6.1).
struct Replaces<'a> {
    call_id: &'a str,
    to_tag: &'a str,
    from_tag: &'a str,
    early_only: bool,
}

impl<'a> Replaces<'a> {
    fn parse(value: &'a str) -> Option<Replaces<'a>> {
        let mut parts = value.split(';').map(str::trim);
        let call_id = parts.next().filter(|c| !c.is_empty())?;
        let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
        for part in parts {
            match part.split_once('=').map(|(n, v)| (n.trim(), v.trim())) {
                Some((name, value)) if name.eq_ignore_ascii_case("to-tag") => to_tag = Some(value),
                Some((name, value)) if name.eq_ignore_ascii_case("from-tag") => {
                    from_tag = Some(value)
                }
                None if part.eq_ignore_ascii_case("early-only") => early_only = true,
                _ => {}
            }
        }
        Some(Replaces {
            call_id,
            to_tag: to_tag?,
            from_tag: from_tag?,
            early_only,
        })
    }
}

impl Phones {
    /// A request from gateway `from`.
    pub(super) fn on_request(&mut self, now: Instant, request: &SipMessage, from: SocketAddr) {
        let (Some(method), Some(call_id), Some(cseq), Some(via_branch)) = (
            request.method().map(|m| m.to_string()),
            request.call_id().map(str::to_string),
            request.cseq(),
            request.top_branch(),
        ) else {
            return;
        };
        if method == "ACK" {
            // Matches our final response by dialog and CSeq number (RFC 3261 §13.3.1.4,
            // §17.2.1): the ACK of a 2xx has a branch of its own.
            self.unacked.remove(&(call_id, cseq.cseq));
            return;
        }
        let key = (call_id.clone(), via_branch.clone(), method.clone());
        if let Some(served) = self.served.get(&key) {
            // A retransmission: the same answer again (none yet: still thinking).
            if let Some(response) = &served.response {
                self.outbox.push((served.from, response.clone()));
            }
            return;
        }
        self.served.insert(
            key,
            Served {
                from,
                response: None,
                forget_at: None,
            },
        );
        match method.as_str() {
            // A re-INVITE in a dialog (the gateway telling a bridged picker the call's
            // media) is accepted at once, as a phone in a call does.
            "INVITE" if request.to_header().is_some_and(|to| to.tag().is_some()) => {
                self.respond(now, request, 200, "OK", None)
            }
            "INVITE" => match request.header(&Name::REPLACES) {
                Some(replaces) => self.on_replaces(now, request, replaces),
                None => self.on_invite(now, request, call_id, via_branch),
            },
            "CANCEL" => self.on_cancel(now, request, call_id, via_branch),
            "BYE" => {
                self.ended_by_server(now, &call_id);
                self.respond(now, request, 200, "OK", None);
            }
            "OPTIONS" | "INFO" | "UPDATE" | "NOTIFY" => self.respond(now, request, 200, "OK", None),
            _ => self.respond(now, request, 405, "Method Not Allowed", None),
        }
    }

    /// Answers `request` with `code`, under our To tag `to_tag` (a new dialog) or its own;
    /// remembers the answer for retransmissions and retransmits a final answer to an INVITE
    /// until its ACK. A 200 to an INVITE carries our SDP.
    fn respond(
        &mut self,
        now: Instant,
        request: &SipMessage,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) {
        let invite = request.method().is_some_and(|m| m.to_string() == "INVITE");
        let mut response = request.response(code, reason, to_tag);
        response.set_header(Name::CONTACT, format!("<sip:phone@{}>", self.local));
        if invite && (200..300).contains(&code) {
            response.set_header(Name::CONTENT_TYPE, "application/sdp");
            response.body = bytes::Bytes::from_static(SDP.as_bytes());
        }
        let bytes = response.to_bytes().to_vec();
        let (Some(call_id), Some(cseq), Some(via_branch)) = (
            request.call_id().map(str::to_string),
            request.cseq(),
            request.top_branch(),
        ) else {
            return;
        };
        let key = (call_id.clone(), via_branch, cseq.method.to_string());
        // Every request answered was filed by `on_request` with its source.
        let Some(served) = self.served.get_mut(&key) else {
            return;
        };
        served.response = Some(bytes.clone());
        let to = served.from;
        if code >= 200 {
            served.forget_at = Some(now + TimerConfig::default().transaction_timeout() * 2);
            if invite {
                self.unacked.insert(
                    (call_id, cseq.cseq),
                    Unacked {
                        to,
                        retransmit: Retransmit::response(bytes.clone(), now),
                    },
                );
            }
        }
        self.outbox.push((to, bytes));
    }

    /// A new INVITE for one of the extensions: 180, then 200 or keep ringing.
    fn on_invite(&mut self, now: Instant, request: &SipMessage, call_id: String, branch: String) {
        let user = request
            .request_line()
            .map(|line| line.uri.to_string())
            .and_then(|uri| {
                let user = uri.split_once(':')?.1.split_once('@')?.0.to_string();
                Some(user)
            })
            .unwrap_or_default();
        let to_tag = tag();
        self.respond(now, request, 180, "Ringing", Some(&to_tag));
        match self.callee_behaviour {
            CalleeBehaviour::Answer => self.respond(now, request, 200, "OK", Some(&to_tag)),
            CalleeBehaviour::Ring => {
                self.ringing.insert(
                    (call_id.clone(), branch),
                    Ringing {
                        request: request.clone(),
                        to_tag,
                        user: user.clone(),
                    },
                );
            }
        }
        self.events.push_back(Event::Incoming { call_id, user });
    }

    /// A CANCEL: 200 and 487 for the INVITE it names if that still rings; 200 alone if the
    /// INVITE already has its final response; 481 if we never saw it (RFC 3261 §9.2).
    fn on_cancel(&mut self, now: Instant, request: &SipMessage, call_id: String, branch: String) {
        let key = (call_id.clone(), branch.clone());
        if let Some(ringing) = self.ringing.remove(&key) {
            self.respond(now, request, 200, "OK", Some(&ringing.to_tag));
            self.respond(
                now,
                &ringing.request,
                487,
                "Request Terminated",
                Some(&ringing.to_tag),
            );
            self.events.push_back(Event::Cancelled {
                call_id,
                user: ringing.user,
            });
        } else if self
            .served
            .contains_key(&(call_id, branch, "INVITE".to_string()))
        {
            self.respond(now, request, 200, "OK", Some(&tag()));
        } else {
            self.respond(
                now,
                request,
                481,
                "Call/Transaction Does Not Exist",
                Some(&tag()),
            );
        }
    }

    /// An INVITE with Replaces for a picker's phone.
    fn on_replaces(&mut self, now: Instant, request: &SipMessage, replaces: &str) {
        self.replaces_received += 1;
        let to_tag = tag();
        if self.replaces_answer == ReplacesAnswer::Reject {
            self.respond(now, request, 488, "Not Acceptable Here", Some(&to_tag));
            return;
        }
        // RFC 3891 §3: the to-tag names our tag, the from-tag the other side's.
        let dialog = Replaces::parse(replaces).and_then(|r| {
            let call = self.placed.get(r.call_id)?;
            let ours = call.from_tag == r.to_tag && call.early_tag.as_deref() == Some(r.from_tag);
            ours.then_some((r.call_id.to_string(), call.stage, r.early_only))
        });
        match dialog {
            Some((replaced, Stage::Inviting, _)) => {
                self.replaces_accepted += 1;
                // As phones do: the early dialog is CANCELled first, then the call answered.
                self.cancel(&replaced);
                self.respond(now, request, 200, "OK", Some(&to_tag));
            }
            Some((_, Stage::Up, true)) => {
                self.respond(now, request, 486, "Busy Here", Some(&to_tag))
            }
            _ => self.respond(
                now,
                request,
                481,
                "Call/Transaction Does Not Exist",
                Some(&to_tag),
            ),
        }
    }
}
