//! A switchboard of scripted SIP phones on one UDP socket, for benchmarks that need exact
//! control of each call rather than a rate: pickup latency (callers, ringing callees,
//! pickers and the pickers' phones answering the gateway's INVITE with Replaces) and memory
//! per registration and per call. Every extension registers with the same contact (this
//! socket); requests are told apart by their Request-URI user and headers.
//!
//! Driven from one thread: [`Phones::pump`] reads and answers until an [`Event`] the caller
//! waits for arrives. No retransmissions (loopback, one step at a time); a lost datagram
//! shows up as a timeout error, never as a wrong measurement.

use crate::sipload::{authorization, register, SDP};
use ezk_sip_types::Name;
use gateway::sip::ids::{branch, tag};
use gateway::sip::message::SipMessage;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How a registered phone answers an INVITE that does not replace a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalleeBehaviour {
    /// 180 and keep ringing (until CANCELled or picked up).
    Ring,
    /// 180 then 200 at once.
    Answer,
}

/// How a picker's phone answers the gateway's INVITE with Replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplacesAnswer {
    /// 200 OK at once (auto-answer), as a desk phone with intercom enabled does.
    Accept,
    /// 488, as a phone that cannot replace an early dialog does: the gateway falls back.
    Reject,
}

/// Something the benchmark waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A call we placed got 180/183.
    Ringing {
        /// Its Call-ID.
        call_id: String,
    },
    /// A call we placed got its 200 (and was ACKed).
    Answered {
        /// Its Call-ID.
        call_id: String,
        /// When the 200 arrived.
        at: Instant,
    },
    /// A call we placed got a final failure (and was ACKed).
    Failed {
        /// Its Call-ID.
        call_id: String,
        /// The status code.
        code: u16,
    },
    /// A call we hung up got the final response to its BYE.
    HungUp {
        /// Its Call-ID.
        call_id: String,
        /// The status code (200: ended cleanly).
        code: u16,
    },
}

/// A call this switchboard placed.
struct Placed {
    user: String,
    password: String,
    target: String,
    from_tag: String,
    cseq: u32,
    branch: String,
    supports_replaces: bool,
    to: Option<String>,
    remote_target: Option<String>,
}

/// Errors of the switchboard, naming what did not happen.
#[derive(Debug)]
pub enum PhonesError {
    /// A socket call failed.
    Io(std::io::Error),
    /// The awaited event did not come in time.
    Timeout(String),
}

impl std::fmt::Display for PhonesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PhonesError::Io(e) => write!(f, "socket error: {e}"),
            PhonesError::Timeout(what) => write!(
                f,
                "timed out waiting for {what} (is the gateway running and configured for it?)"
            ),
        }
    }
}

impl std::error::Error for PhonesError {}

impl From<std::io::Error> for PhonesError {
    fn from(e: std::io::Error) -> Self {
        PhonesError::Io(e)
    }
}

/// The phones: one socket, the calls they placed, how they answer.
pub struct Phones {
    socket: UdpSocket,
    server: SocketAddr,
    local: SocketAddr,
    buffer: Vec<u8>,
    placed: HashMap<String, Placed>,
    /// How callees answer.
    pub callee_behaviour: CalleeBehaviour,
    /// How pickers' phones answer INVITEs with Replaces.
    pub replaces_answer: ReplacesAnswer,
    /// Ringing INVITEs we received, by Call-ID, to answer a CANCEL with 487.
    ringing: HashMap<String, SipMessage>,
    /// INVITEs with Replaces received so far (how a benchmark proves which path it measured).
    pub replaces_received: u64,
    /// Calls hung up whose BYE is not answered yet.
    hanging_up: std::collections::HashSet<String>,
}

impl Phones {
    /// A switchboard talking to `server`.
    pub fn new(server: SocketAddr) -> Result<Phones, PhonesError> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // Room for 1,000 calls' worth of messages while the benchmark is busy elsewhere.
        let _ =
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &(8 << 20));
        Ok(Phones {
            local: socket.local_addr()?,
            socket,
            server,
            buffer: vec![0; 65_536],
            placed: HashMap::new(),
            callee_behaviour: CalleeBehaviour::Ring,
            replaces_answer: ReplacesAnswer::Accept,
            ringing: HashMap::new(),
            replaces_received: 0,
            hanging_up: std::collections::HashSet::new(),
        })
    }

    /// Registers extension `user` with this switchboard as its contact.
    pub fn register(&self, user: &str, password: &str) -> Result<(), PhonesError> {
        register(&self.socket, self.server, user, password)?;
        Ok(())
    }

    /// `user` dials `number` (sending `Supported: replaces` when asked); returns the Call-ID.
    /// The 407 is answered by [`Phones::pump`].
    pub fn dial(
        &mut self,
        user: &str,
        password: &str,
        number: &str,
        supports_replaces: bool,
    ) -> Result<String, PhonesError> {
        let call_id = format!("ph-{}", tag());
        let call = Placed {
            user: user.into(),
            password: password.into(),
            target: format!("sip:{number}@{}", self.server),
            from_tag: tag(),
            cseq: 1,
            branch: branch(),
            supports_replaces,
            to: None,
            remote_target: None,
        };
        self.send_invite(&call_id, &call, None)?;
        self.placed.insert(call_id.clone(), call);
        Ok(call_id)
    }

    /// Hangs up an answered call we placed (BYE; [`Phones::pump`] reports its final
    /// response as [`Event::HungUp`]).
    pub fn hang_up(&mut self, call_id: &str) -> Result<(), PhonesError> {
        if let Some(call) = self.placed.remove(call_id) {
            let bye = self.request_text(call_id, &call, "BYE", None);
            self.socket.send_to(bye.as_bytes(), self.server)?;
            self.hanging_up.insert(call_id.to_string());
        }
        Ok(())
    }

    /// Reads and answers messages until `wanted` accepts an event (returned) or `timeout`.
    pub fn pump(
        &mut self,
        timeout: Duration,
        what: &str,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Result<Event, PhonesError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| PhonesError::Timeout(what.to_string()))?;
            self.socket.set_read_timeout(Some(left))?;
            let n = match self.socket.recv_from(&mut self.buffer) {
                Ok((n, _)) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            let at = Instant::now();
            let Ok(message) = SipMessage::parse_datagram(&self.buffer[..n]) else {
                continue;
            };
            let event = if message.is_request() {
                self.request(&message)?;
                None
            } else {
                self.response(&message, at)?
            };
            if let Some(event) = event.filter(|e| wanted(e)) {
                return Ok(event);
            }
        }
    }

    fn send(&self, message: &SipMessage) -> Result<(), PhonesError> {
        self.socket.send_to(&message.to_bytes(), self.server)?;
        Ok(())
    }

    fn send_invite(
        &self,
        call_id: &str,
        call: &Placed,
        auth: Option<&str>,
    ) -> Result<(), PhonesError> {
        let (local, target) = (self.local, &call.target);
        let authorization = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        let supported = if call.supports_replaces {
            "Supported: replaces\r\n"
        } else {
            ""
        };
        let text = format!(
            "INVITE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={};rport\r\nMax-Forwards: 70\r\n\
From: <sip:{}@{}>;tag={}\r\nTo: <{target}>\r\nCall-ID: {call_id}\r\nCSeq: {} INVITE\r\n\
Contact: <sip:{}@{local}>\r\n{supported}{authorization}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            call.branch, call.user, self.server, call.from_tag, call.cseq, call.user, SDP.len()
        );
        self.socket.send_to(text.as_bytes(), self.server)?;
        Ok(())
    }

    /// An ACK or BYE of call `call_id`: in the dialog (To with the remote tag, sent to the
    /// remote target on a new branch) or, for the ACK of a `failure` response, on the branch
    /// and CSeq of the INVITE it answers (taken from the response: it may answer an earlier,
    /// challenged INVITE of the call).
    fn request_text(
        &self,
        call_id: &str,
        call: &Placed,
        method: &str,
        failure: Option<&SipMessage>,
    ) -> String {
        let local = self.local;
        let (target, via_branch, to, cseq) = match failure {
            Some(response) => (
                call.target.clone(),
                response.top_branch().unwrap_or(call.branch.clone()),
                response.header(&Name::TO).unwrap_or_default().to_string(),
                response.cseq().map_or(call.cseq, |c| c.cseq),
            ),
            None => (
                call.remote_target.clone().unwrap_or(call.target.clone()),
                branch(),
                call.to.clone().unwrap_or_default(),
                if method == "BYE" {
                    call.cseq + 1
                } else {
                    call.cseq
                },
            ),
        };
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={via_branch};rport\r\nMax-Forwards: 70\r\n\
From: <sip:{}@{}>;tag={}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            call.user, self.server, call.from_tag,
        )
    }

    fn response(
        &mut self,
        response: &SipMessage,
        at: Instant,
    ) -> Result<Option<Event>, PhonesError> {
        let (Some(call_id), Some(code), Some(cseq)) =
            (response.call_id(), response.status(), response.cseq())
        else {
            return Ok(None);
        };
        if cseq.method.to_string() == "BYE" && code >= 200 && self.hanging_up.remove(call_id) {
            return Ok(Some(Event::HungUp {
                call_id: call_id.to_string(),
                code,
            }));
        }
        if cseq.method.to_string() != "INVITE" {
            return Ok(None);
        }
        let call_id = call_id.to_string();
        let Some(mut call) = self.placed.remove(&call_id) else {
            return Ok(None);
        };
        if code >= 300 {
            let ack = self.request_text(&call_id, &call, "ACK", Some(response));
            self.socket.send_to(ack.as_bytes(), self.server)?;
        }
        let event = if cseq.cseq != call.cseq {
            // A retransmission answering the earlier (challenged) INVITE: ACKed above.
            None
        } else {
            match code {
                407 if call.cseq == 1 => {
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
                    self.send_invite(&call_id, &call, Some(&auth))?;
                    None
                }
                100 => None,
                101..=199 => Some(Event::Ringing {
                    call_id: call_id.clone(),
                }),
                200..=299 => {
                    call.to = response.header(&Name::TO).map(str::to_string);
                    call.remote_target = response.remote_target();
                    let ack = self.request_text(&call_id, &call, "ACK", None);
                    self.socket.send_to(ack.as_bytes(), self.server)?;
                    Some(Event::Answered {
                        call_id: call_id.clone(),
                        at,
                    })
                }
                _ => {
                    // The call is over: not put back.
                    return Ok(Some(Event::Failed { call_id, code }));
                }
            }
        };
        self.placed.insert(call_id, call);
        Ok(event)
    }

    fn request(&mut self, request: &SipMessage) -> Result<(), PhonesError> {
        let (Some(method), Some(call_id)) = (request.method(), request.call_id()) else {
            return Ok(());
        };
        let (method, call_id) = (method.to_string(), call_id.to_string());
        let to_tag = format!("ph{}", call_id.len());
        let answer = |code: u16, reason: &str, body: bool| {
            let mut response = request.response(code, reason, Some(&to_tag));
            response.set_header(Name::CONTACT, format!("<sip:phone@{}>", self.local));
            if body {
                response.set_header(Name::CONTENT_TYPE, "application/sdp");
                response.body = bytes::Bytes::from_static(SDP.as_bytes());
            }
            response
        };
        match method.as_str() {
            "INVITE" if request.header(&Name::REPLACES).is_some() => {
                self.replaces_received += 1;
                match self.replaces_answer {
                    ReplacesAnswer::Accept => self.send(&answer(200, "OK", true))?,
                    ReplacesAnswer::Reject => {
                        self.send(&answer(488, "Not Acceptable Here", false))?
                    }
                }
            }
            "INVITE" => {
                self.send(&answer(180, "Ringing", false))?;
                match self.callee_behaviour {
                    CalleeBehaviour::Answer => self.send(&answer(200, "OK", true))?,
                    CalleeBehaviour::Ring => {
                        self.ringing.insert(call_id, request.clone());
                    }
                }
            }
            "CANCEL" => {
                self.send(&answer(200, "OK", false))?;
                if let Some(invite) = self.ringing.remove(&call_id) {
                    self.send(&invite.response(487, "Request Terminated", Some(&to_tag)))?;
                }
            }
            "BYE" | "OPTIONS" | "INFO" | "UPDATE" | "NOTIFY" => {
                self.send(&answer(200, "OK", false))?
            }
            _ => {}
        }
        Ok(())
    }
}
