//! A switchboard of scripted SIP phones on one UDP socket, for benchmarks and tests that need
//! exact control of each call rather than a rate: pickups (callers, ringing callees, pickers
//! and the pickers' phones answering the gateway's INVITE with Replaces), memory per
//! registration and per call. Every extension registers with the same contact (this
//! socket); requests are told apart by their Request-URI user and headers. The phones may
//! talk to several gateways (nodes of a cluster): a call goes to the gateway it was dialled
//! through ([`Phones::dial_via`]), an answer to where its request came from.
//!
//! Driven from one thread, without sleeping: [`Phones::next_event`] reads, answers and runs
//! the retransmission timers until an [`Event`] or a deadline. The phones behave as RFC 3261
//! asks of a UA on a lossy network ([`uac`], [`uas`]): their requests are retransmitted on
//! Timer A/E until answered (given up at Timer B/F, 64·T1: [`Event::TimedOut`]), a
//! retransmitted 2xx is ACKed again, a retransmitted request is answered again with the same
//! response, and their final responses to INVITEs are retransmitted until ACKed. Registration
//! ([`Phones::register`]) blocks until done (retransmitted too), so it comes before the calls.

mod uac;
mod uas;

use crate::retransmit::{Due, Retransmit};
use crate::sipload::register;
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use uac::Placed;
use uas::{Served, Unacked};

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
    /// As RFC 3891 §3 asks, and at once (auto-answer, as a desk phone with intercom enabled
    /// does): an early dialog of its own is CANCELled and the INVITE answered 200; a
    /// confirmed one with `early-only` gets 486; anything else 481.
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
    /// Our INVITE or BYE of a call went unanswered until Timer B/F (64·T1, seven INVITEs or
    /// eleven BYEs lost or unanswered in a row): the call is over for us.
    TimedOut {
        /// Its Call-ID.
        call_id: String,
        /// "INVITE" or "BYE".
        method: String,
    },
    /// A phone received a new INVITE (not one with Replaces) and rings or answers.
    Incoming {
        /// The INVITE's Call-ID.
        call_id: String,
        /// The Request-URI user: the extension rung.
        user: String,
    },
    /// A ringing INVITE was CANCELled (and got its 487).
    Cancelled {
        /// The INVITE's Call-ID.
        call_id: String,
        /// The extension that was ringing.
        user: String,
    },
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

/// How often ended calls and answered requests are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// A request we sent, awaiting its response (a client transaction).
struct Pending {
    call_id: String,
    /// Where the request went.
    to: SocketAddr,
    retransmit: Retransmit,
}

/// The phones: one socket, the calls they placed, the requests they answered.
pub struct Phones {
    socket: UdpSocket,
    server: SocketAddr,
    local: SocketAddr,
    buffer: Vec<u8>,
    /// Datagrams and where they go, sent by the next [`Phones::flush`].
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    placed: HashMap<String, Placed>,
    /// Our requests awaiting an answer, by (branch, method).
    pending: HashMap<(String, String), Pending>,
    /// Requests we received, by (Call-ID, branch, method), with the response they got.
    served: HashMap<(String, String, String), Served>,
    /// Our final responses to INVITEs awaiting the ACK, by (Call-ID, CSeq number).
    unacked: HashMap<(String, u32), Unacked>,
    /// Ringing INVITEs, by (Call-ID, branch): what a CANCEL ends.
    ringing: HashMap<(String, String), uas::Ringing>,
    next_prune: Instant,
    /// How callees answer.
    pub callee_behaviour: CalleeBehaviour,
    /// How pickers' phones answer INVITEs with Replaces.
    pub replaces_answer: ReplacesAnswer,
    /// INVITEs with Replaces received so far, retransmissions not counted (how a benchmark
    /// proves which path it measured).
    pub replaces_received: u64,
    /// Of those, the ones that matched an early dialog of ours and were accepted.
    pub replaces_accepted: u64,
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
            outbox: Vec::new(),
            events: VecDeque::new(),
            placed: HashMap::new(),
            pending: HashMap::new(),
            served: HashMap::new(),
            unacked: HashMap::new(),
            ringing: HashMap::new(),
            next_prune: Instant::now() + PRUNE_EVERY,
            callee_behaviour: CalleeBehaviour::Ring,
            replaces_answer: ReplacesAnswer::Accept,
            replaces_received: 0,
            replaces_accepted: 0,
        })
    }

    /// Registers extension `user` with this switchboard as its contact (blocking, the
    /// REGISTER retransmitted until answered).
    pub fn register(&self, user: &str, password: &str) -> Result<(), PhonesError> {
        self.register_via(self.server, user, password)
    }

    /// [`Phones::register`] with gateway `server` (another node of a cluster).
    pub fn register_via(
        &self,
        server: SocketAddr,
        user: &str,
        password: &str,
    ) -> Result<(), PhonesError> {
        register(&self.socket, server, user, password)?;
        Ok(())
    }

    /// Reads and answers messages until `wanted` accepts an event (returned) or `timeout`;
    /// events not wanted are dropped.
    pub fn pump(
        &mut self,
        timeout: Duration,
        what: &str,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Result<Event, PhonesError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_event(deadline)? {
                Some(event) if wanted(&event) => return Ok(event),
                Some(_) => {}
                None => return Err(PhonesError::Timeout(what.to_string())),
            }
        }
    }

    /// Reads, answers and retransmits until the next event (returned) or `deadline` (None).
    pub fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>, PhonesError> {
        loop {
            self.flush()?;
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let timers = self.next_timer();
            if timers <= now {
                self.on_timers(now);
                continue;
            }
            let wait = (timers.min(deadline) - now).max(Duration::from_micros(100));
            self.socket.set_read_timeout(Some(wait))?;
            match self.socket.recv_from(&mut self.buffer) {
                Ok((n, from)) => {
                    let datagram = self.buffer[..n].to_vec();
                    self.handle(Instant::now(), &datagram, from);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Handles one datagram from gateway `from` at `now`.
    fn handle(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) {
        let Ok(message) = gateway::sip::message::SipMessage::parse_datagram(datagram) else {
            return;
        };
        if message.is_request() {
            self.on_request(now, &message, from);
        } else {
            self.on_response(now, &message);
        }
    }

    /// Sends what is queued.
    fn flush(&mut self) -> Result<(), PhonesError> {
        for (to, datagram) in self.outbox.drain(..) {
            self.socket.send_to(&datagram, to)?;
        }
        Ok(())
    }

    /// Sends `bytes` (a request) to `to` now and again until answered.
    fn send_request(
        &mut self,
        now: Instant,
        (call_id, to): (&str, SocketAddr),
        key: (String, String),
        bytes: String,
    ) {
        let invite = key.1 == "INVITE";
        let bytes = bytes.into_bytes();
        self.outbox.push((to, bytes.clone()));
        self.pending.insert(
            key,
            Pending {
                call_id: call_id.to_string(),
                to,
                retransmit: Retransmit::request(bytes, invite, now),
            },
        );
    }

    /// When [`Phones::on_timers`] must next run.
    fn next_timer(&self) -> Instant {
        self.pending
            .values()
            .map(|p| p.retransmit.deadline())
            .chain(self.unacked.values().map(|u| u.retransmit.deadline()))
            .fold(self.next_prune, Instant::min)
    }

    /// Retransmits what is due, gives up on what went unanswered for 64·T1, forgets what
    /// is over.
    fn on_timers(&mut self, now: Instant) {
        let mut gave_up = Vec::new();
        for (key, pending) in &mut self.pending {
            match pending.retransmit.poll(now) {
                Due::Wait => {}
                Due::Send(bytes) => self.outbox.push((pending.to, bytes.to_vec())),
                Due::GiveUp => gave_up.push(key.clone()),
            }
        }
        for key in gave_up {
            if let Some(pending) = self.pending.remove(&key) {
                self.request_timed_out(now, &pending.call_id, &key.1);
            }
        }
        let mut unanswered = Vec::new();
        for (key, unacked) in &mut self.unacked {
            match unacked.retransmit.poll(now) {
                Due::Wait => {}
                Due::Send(bytes) => self.outbox.push((unacked.to, bytes.to_vec())),
                Due::GiveUp => unanswered.push(key.clone()),
            }
        }
        for key in unanswered {
            self.unacked.remove(&key);
        }
        if now >= self.next_prune {
            self.next_prune = now + PRUNE_EVERY;
            self.placed.retain(|_, call| !call.forgotten(now));
            self.served.retain(|_, served| !served.forgotten(now));
        }
    }
}

#[cfg(test)]
mod tests;
