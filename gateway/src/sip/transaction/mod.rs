//! The transaction layer (RFC 3261 §17, RFC 6026), sans-IO.
//!
//! Messages and an explicit `now` go in; [`TxEvent`]s for the transaction user (the engine)
//! and [`Outgoing`] bytes come out, and [`TxLayer::poll_timeout`] says when to call
//! [`TxLayer::handle_timeout`]. Retransmissions, absorption of retransmitted requests, the ACK
//! for non-2xx finals, CANCEL matching and the 2xx-until-ACK retransmission all live here, so
//! the engine only sees each request and response once.

mod client;
mod requests;
mod server;
mod timer_queue;
mod timers;

#[cfg(test)]
mod tests;

pub use timers::TimerConfig;

use crate::hashing::{IdMap, KeyHasher, Prehashed, PrehashedMap};
use crate::sip::message::SipMessage;
use crate::sip::response_route::response_destination;
use crate::transport::{Outgoing, Peer};
use client::{ClientAction, ClientTx};
use ezk_sip_types::Method;
use server::{ServerAction, ServerTx};
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;
use timer_queue::TimerQueue;

/// Identifies a server transaction (a request we received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(pub u64);

/// Identifies a client transaction (a request we sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(pub u64);

/// What the transaction layer tells its user.
#[derive(Debug)]
pub enum TxEvent {
    /// A new request (never a retransmission). INVITEs have already been answered 100 Trying.
    Request {
        /// Answer it with [`TxLayer::send_response`].
        tx: ServerTxId,
        /// The request, with `received`/`rport` as the engine stamped them.
        msg: SipMessage,
        /// Where it came from.
        peer: Peer,
    },
    /// A CANCEL matched a pending INVITE and was answered 200 OK; answer the INVITE 487.
    Cancel {
        /// The INVITE's server transaction.
        invite: ServerTxId,
        /// The CANCEL.
        msg: SipMessage,
        /// Where it came from.
        peer: Peer,
    },
    /// An ACK for a 2xx. `invite` names the Accepted INVITE transaction it acknowledges, if any.
    Ack {
        /// The INVITE transaction acknowledged, None when it matched nothing.
        invite: Option<ServerTxId>,
        /// The ACK (it may carry the SDP answer).
        msg: SipMessage,
        /// Where it came from.
        peer: Peer,
    },
    /// A response to one of our requests: provisional, final, and retransmitted 2xx for INVITE.
    Response {
        /// The client transaction.
        tx: ClientTxId,
        /// The response.
        msg: SipMessage,
    },
    /// Timer B or F fired: treat as 408 Request Timeout.
    Timeout {
        /// The client transaction that got no answer.
        tx: ClientTxId,
    },
    /// Our 2xx to an INVITE was not ACKed within 64·T1: the dialog should be ended with BYE.
    AckTimeout {
        /// The INVITE's server transaction.
        invite: ServerTxId,
    },
}

/// Server transaction matching key (RFC 3261 §17.2.3, with the RFC 2543 fallback).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ServerKey {
    /// Branch with the magic cookie + sent-by + method (ACK counts as INVITE).
    Branch {
        branch: String,
        sent_by: String,
        method: String,
    },
    /// Pre-RFC 3261 peers: Request-URI, From tag, Call-ID, CSeq, top Via, method.
    Legacy {
        request_uri: String,
        from_tag: String,
        call_id: String,
        cseq: u32,
        via: String,
        method: String,
    },
}

/// How an ACK for a 2xx finds its INVITE: Call-ID, From tag, To tag, CSeq number (in this
/// order, so the INVITEs of one dialog are neighbours in the index).
type AckKey = (String, String, String, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum TxRef {
    Client(ClientTxId),
    Server(ServerTxId),
}

struct ClientEntry {
    tx: ClientTx,
    key: Prehashed<(String, String)>,
    peer: Peer,
}

struct ServerEntry {
    tx: ServerTx,
    key: Prehashed<ServerKey>,
    /// Where the request came from.
    peer: Peer,
    /// Where its responses go (RFC 3261 §18.2.2, RFC 3581).
    reply_to: Peer,
    ack_key: Option<AckKey>,
    /// An INVITE owed its 100 Trying: sent at the next transmit unless the transaction
    /// user answered first (RFC 3261 §17.2.1), so a request answered at once (a stateless
    /// challenge) gets one response, not two.
    trying_owed: bool,
}

/// The most timers [`TxLayer::handle_timeout`] runs in one call.
pub const TIMER_BATCH: usize = 256;

/// All transactions of one engine.
pub struct TxLayer {
    timers: TimerConfig,
    next_id: u64,
    /// Boxed, like `servers`: tens of thousands of transactions live at once (Timer K keeps
    /// a NOTIFY's for 5 s, Timers J, L and M a call's for 32 s), and a map growing must
    /// move pointers, not whole entries (a resize of inline entries stalled the engine for
    /// 20-40 ms), nor hash strings again (see [`crate::hashing`]).
    clients: IdMap<ClientTxId, Box<ClientEntry>>,
    client_index: PrehashedMap<(String, String), ClientTxId>,
    servers: IdMap<ServerTxId, Box<ServerEntry>>,
    server_index: PrehashedMap<ServerKey, ServerTxId>,
    /// The hash of the network-chosen keys of both indexes.
    keys: KeyHasher,
    ack_index: BTreeMap<AckKey, ServerTxId>,
    /// Each transaction's next timer.
    deadlines: TimerQueue<TxRef>,
    events: VecDeque<TxEvent>,
    transmits: VecDeque<Outgoing>,
    /// INVITE transactions that may still owe a 100 Trying, with their arrival time.
    owed_trying: Vec<(ServerTxId, Instant)>,
    stray_responses: u64,
}

fn method_key(method: &Method) -> String {
    if *method == Method::ACK {
        "INVITE".to_string()
    } else {
        method.to_string()
    }
}

fn top_sent_by(msg: &SipMessage) -> String {
    msg.header_list(&ezk_sip_types::Name::VIA)
        .first()
        .and_then(|via| via.split_whitespace().nth(1))
        .map(|s| s.split(';').next().unwrap_or(s).to_ascii_lowercase())
        .unwrap_or_default()
}

/// The key of a request, looked up as if its method were `method`.
fn server_key(msg: &SipMessage, method: &Method) -> ServerKey {
    let method = method_key(method);
    match msg.top_branch().filter(|b| b.starts_with("z9hG4bK")) {
        Some(branch) => ServerKey::Branch {
            branch,
            sent_by: top_sent_by(msg),
            method,
        },
        None => ServerKey::Legacy {
            request_uri: msg
                .request_line()
                .map(|line| line.uri.to_string())
                .unwrap_or_default(),
            from_tag: msg.from_tag().map(str::to_string).unwrap_or_default(),
            call_id: msg.call_id().unwrap_or_default().to_string(),
            cseq: msg.cseq().map(|c| c.cseq).unwrap_or(0),
            via: msg
                .header_list(&ezk_sip_types::Name::VIA)
                .first()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            method,
        },
    }
}

fn ack_key(msg: &SipMessage, to_tag: Option<&str>) -> Option<AckKey> {
    Some((
        msg.call_id()?.to_string(),
        msg.from_tag()?.to_string(),
        match to_tag {
            Some(tag) => tag.to_string(),
            None => msg.to_tag()?.to_string(),
        },
        msg.cseq()?.cseq,
    ))
}

impl TxLayer {
    /// An empty layer with these timer values.
    pub fn new(timers: TimerConfig) -> Self {
        TxLayer {
            timers,
            next_id: 1,
            clients: IdMap::default(),
            client_index: PrehashedMap::default(),
            servers: IdMap::default(),
            server_index: PrehashedMap::default(),
            keys: KeyHasher::default(),
            ack_index: BTreeMap::new(),
            deadlines: TimerQueue::default(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            owed_trying: Vec::new(),
            stray_responses: 0,
        }
    }

    /// Responses that matched no client transaction (dropped).
    pub fn stray_responses(&self) -> u64 {
        self.stray_responses
    }

    /// Transactions alive (client + server), for tests and metrics.
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    /// True when no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn transmit(&mut self, peer: Peer, bytes: bytes::Bytes) {
        self.transmits.push_back(Outgoing { peer, bytes });
    }

    /// Feeds a parsed message received from `peer`.
    pub fn handle_message(&mut self, now: Instant, msg: SipMessage, peer: Peer) {
        if msg.is_request() {
            self.handle_request(now, msg, peer);
        } else {
            self.handle_response(now, msg);
        }
    }

    fn handle_request(&mut self, now: Instant, msg: SipMessage, peer: Peer) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        if method == Method::ACK {
            self.handle_ack(now, msg, peer);
            return;
        }
        let key = self.keys.key(server_key(&msg, &method));
        if let Some(&id) = self.server_index.get(&key) {
            let actions = self
                .servers
                .get_mut(&id)
                .map(|entry| entry.tx.on_retransmission())
                .unwrap_or_default();
            self.apply_server_actions(id, actions);
            return;
        }
        let id = self.open_server(now, key, &msg, peer);
        if method == Method::BYE {
            self.stop_2xx_retransmissions_before(&msg);
        }
        if method == Method::INVITE {
            self.events
                .push_back(TxEvent::Request { tx: id, msg, peer });
        } else if method == Method::CANCEL {
            self.handle_cancel(now, id, msg, peer);
        } else {
            self.events
                .push_back(TxEvent::Request { tx: id, msg, peer });
        }
    }

    /// A new server transaction for `msg` (a request other than ACK) under `key`; an
    /// INVITE is owed its 100 Trying.
    fn open_server(
        &mut self,
        now: Instant,
        key: Prehashed<ServerKey>,
        msg: &SipMessage,
        peer: Peer,
    ) -> ServerTxId {
        let id = ServerTxId(self.next_id);
        self.next_id += 1;
        let invite = msg.method() == Some(&Method::INVITE);
        let tx = ServerTx::new(msg.clone(), peer.protocol.is_reliable(), &self.timers);
        self.server_index.insert(key.clone(), id);
        self.servers.insert(
            id,
            Box::new(ServerEntry {
                tx,
                key,
                peer,
                reply_to: response_destination(msg, peer),
                ack_key: None,
                trying_owed: invite,
            }),
        );
        if invite {
            self.owed_trying.push((id, now));
        }
        id
    }

    /// Takes over a request another transaction layer received and handed on unanswered
    /// (another engine shard's pickup of a call of this one): a server transaction for it
    /// as if it had arrived here, without a [`TxEvent::Request`] (the caller acts on it);
    /// its retransmissions are absorbed here from now on. None for an ACK or a request
    /// without the keys of a transaction.
    pub fn adopt_request(
        &mut self,
        now: Instant,
        msg: SipMessage,
        peer: Peer,
    ) -> Option<ServerTxId> {
        let method = msg.method().cloned().filter(|m| *m != Method::ACK)?;
        let key = self.keys.key(server_key(&msg, &method));
        if let Some(&id) = self.server_index.get(&key) {
            return Some(id);
        }
        Some(self.open_server(now, key, &msg, peer))
    }

    /// A BYE proves its sender got our 2xx for every earlier INVITE of the dialog: their
    /// retransmissions stop, as if the lost ACK had come (a UA that lost the ACK and hung up
    /// would otherwise be sent the 2xx until Timer L, 32 s after the call ended).
    fn stop_2xx_retransmissions_before(&mut self, bye: &SipMessage) {
        let Some((call_id, from_tag, to_tag, cseq)) = ack_key(bye, None) else {
            return;
        };
        let first = (call_id, from_tag, to_tag, 0);
        let last = (first.0.clone(), first.1.clone(), first.2.clone(), cseq);
        let invites: Vec<ServerTxId> = self
            .ack_index
            .range(first..last)
            .map(|(_, &id)| id)
            .collect();
        for id in invites {
            if let Some(entry) = self.servers.get_mut(&id) {
                entry.tx.stop_2xx_retransmissions();
            }
            self.reschedule(TxRef::Server(id));
        }
    }

    fn handle_cancel(&mut self, now: Instant, id: ServerTxId, msg: SipMessage, peer: Peer) {
        let invite = self
            .server_index
            .get(&self.keys.key(server_key(&msg, &Method::INVITE)))
            .copied()
            .filter(|invite| self.servers.get(invite).is_some_and(|e| e.tx.is_invite()));
        match invite {
            Some(invite) => {
                let ok = msg.response(200, "OK", None);
                self.send_response(now, id, ok);
                if self.servers.get(&invite).is_some_and(|e| e.tx.is_pending()) {
                    self.events.push_back(TxEvent::Cancel { invite, msg, peer });
                }
            }
            None => {
                // A CANCEL for nothing we know (anyone can send one): answered once, no state.
                let response = msg.response(481, "Call/Transaction Does Not Exist", None);
                self.respond_statelessly(id, response);
            }
        }
    }

    fn handle_ack(&mut self, now: Instant, msg: SipMessage, peer: Peer) {
        // An ACK for a non-2xx final is part of its INVITE transaction: matched by branch,
        // and only with the INVITE's CSeq number. An ACK for a 2xx is a transaction of its
        // own, matched by dialog and CSeq number only (RFC 3261 §17.2.1, §13.2.2.4): a UA
        // re-ACKing an earlier INVITE's 407 with the later INVITE's branch (SIPp under loss
        // does) must not stop the 2xx retransmissions.
        let cseq = msg.cseq().map(|c| c.cseq);
        let by_branch = self
            .server_index
            .get(&self.keys.key(server_key(&msg, &Method::ACK)))
            .copied()
            .filter(|id| {
                self.servers.get(id).is_some_and(|entry| {
                    !entry.tx.is_accepted() && entry.tx.request().cseq().map(|c| c.cseq) == cseq
                })
            });
        let by_dialog = ack_key(&msg, None).and_then(|key| self.ack_index.get(&key).copied());
        let Some(id) = by_branch.or(by_dialog) else {
            self.events.push_back(TxEvent::Ack {
                invite: None,
                msg,
                peer,
            });
            return;
        };
        let timers = self.timers;
        let first_ack_of_2xx = self
            .servers
            .get_mut(&id)
            .is_some_and(|entry| entry.tx.on_ack(now, &timers));
        if first_ack_of_2xx {
            self.events.push_back(TxEvent::Ack {
                invite: Some(id),
                msg,
                peer,
            });
        }
        self.reschedule(TxRef::Server(id));
    }

    fn handle_response(&mut self, now: Instant, msg: SipMessage) {
        let key = self.keys.key((
            msg.top_branch().unwrap_or_default(),
            msg.cseq().map(|c| c.method.to_string()).unwrap_or_default(),
        ));
        let Some(&id) = self.client_index.get(&key) else {
            self.stray_responses += 1;
            return;
        };
        let timers = self.timers;
        let Some(entry) = self.clients.get_mut(&id) else {
            return;
        };
        let actions = entry.tx.on_response(now, msg, &timers);
        self.apply_client_actions(now, id, actions);
    }

    /// Starts a client transaction for `msg` (INVITE or non-INVITE) toward `peer`. The
    /// request must carry a top Via with a fresh branch.
    pub fn send_request(&mut self, now: Instant, msg: SipMessage, peer: Peer) -> ClientTxId {
        self.start_client(now, msg, peer, false)
    }

    fn start_client(
        &mut self,
        now: Instant,
        msg: SipMessage,
        peer: Peer,
        internal: bool,
    ) -> ClientTxId {
        let id = ClientTxId(self.next_id);
        self.next_id += 1;
        let key = self.keys.key((
            msg.top_branch().unwrap_or_default(),
            msg.method().map(|m| m.to_string()).unwrap_or_default(),
        ));
        let tx = ClientTx::new(
            now,
            msg,
            peer.protocol.is_reliable(),
            internal,
            &self.timers,
        );
        self.transmit(peer, tx.bytes().clone());
        self.client_index.insert(key.clone(), id);
        self.clients
            .insert(id, Box::new(ClientEntry { tx, key, peer }));
        self.reschedule(TxRef::Client(id));
        id
    }

    /// Sends a response through a server transaction (provisional or final).
    pub fn send_response(&mut self, now: Instant, tx: ServerTxId, msg: SipMessage) {
        let timers = self.timers;
        let Some(entry) = self.servers.get_mut(&tx) else {
            return;
        };
        entry.trying_owed = false;
        let actions = entry.tx.send_response(now, &msg, &timers);
        if entry.tx.is_accepted() && entry.ack_key.is_none() {
            let to_tag = msg.to_tag().map(str::to_string);
            if let Some(key) = ack_key(entry.tx.request(), to_tag.as_deref()) {
                entry.ack_key = Some(key.clone());
                self.ack_index.insert(key, tx);
            }
        }
        self.apply_server_actions(tx, actions);
    }

    /// Sends a message outside any transaction (ACK for a 2xx, stateless answers): a
    /// request to `peer`, a response to a request received from `peer` where RFC 3261
    /// §18.2.2 says.
    pub fn send_stateless(&mut self, msg: SipMessage, peer: Peer) {
        let to = if msg.is_request() {
            peer
        } else {
            response_destination(&msg, peer)
        };
        self.transmit(to, msg.to_bytes());
    }

    /// Where a server transaction's request came from.
    pub fn peer(&self, tx: ServerTxId) -> Option<Peer> {
        self.servers.get(&tx).map(|entry| entry.peer)
    }

    /// Forgets a server transaction without answering (a request deliberately left
    /// unanswered, e.g. over a rate limit): its retransmission is a new request.
    pub fn forget_server(&mut self, tx: ServerTxId) {
        self.deadlines.cancel(TxRef::Server(tx));
        self.forget(TxRef::Server(tx));
    }

    /// Answers a server transaction's request once and forgets the transaction: nothing
    /// is retransmitted and nothing is kept (a retransmitted request is a new request).
    /// For answers to unauthenticated requests (challenges, refusals), which must cost
    /// no memory and never more than one response per request (as Kamailio's stateless
    /// replies).
    pub fn respond_statelessly(&mut self, tx: ServerTxId, msg: SipMessage) {
        let Some(to) = self.servers.get(&tx).map(|entry| entry.reply_to) else {
            return;
        };
        self.transmit(to, msg.to_bytes());
        self.forget_server(tx);
    }

    /// Cancels a client INVITE transaction: CANCEL goes out once a provisional has arrived
    /// (never if a final arrived first). A 2xx that still arrives is ACKed and BYEd here and
    /// not passed up (RFC 5407 §3.1.2); other finals (487) are passed up.
    pub fn cancel(&mut self, now: Instant, tx: ClientTxId) {
        self.cancel_with_reason(now, tx, None);
    }

    /// [`TxLayer::cancel`] with a `Reason` header on the CANCEL (RFC 3326), e.g.
    /// `SIP;cause=200;text="Call completed elsewhere"` so the phone logs no missed call.
    pub fn cancel_with_reason(&mut self, now: Instant, tx: ClientTxId, reason: Option<&str>) {
        let timers = self.timers;
        let Some(entry) = self.clients.get_mut(&tx) else {
            return;
        };
        let actions = entry.tx.cancel(now, &timers, reason);
        self.apply_client_actions(now, tx, actions);
    }

    /// The request that created a server transaction.
    pub fn request(&self, tx: ServerTxId) -> Option<&SipMessage> {
        self.servers.get(&tx).map(|entry| entry.tx.request())
    }

    /// Runs the timers due at `now`.
    ///
    /// At most [`TIMER_BATCH`] timers per call: a mass expiry (the transactions of a
    /// thousand SUBSCRIBEs answered in the same second end together) must not hold up the
    /// datagrams waiting meanwhile; [`TxLayer::poll_timeout`] is then still due, and the
    /// caller comes back after handling them.
    pub fn handle_timeout(&mut self, now: Instant) {
        for _ in 0..TIMER_BATCH {
            let Some(tx_ref) = self.deadlines.pop_due(now) else {
                break;
            };
            let timers = self.timers;
            match tx_ref {
                TxRef::Client(id) => {
                    let Some(entry) = self.clients.get_mut(&id) else {
                        continue;
                    };
                    let actions = entry.tx.on_timer(now, &timers);
                    self.apply_client_actions(now, id, actions);
                }
                TxRef::Server(id) => {
                    let Some(entry) = self.servers.get_mut(&id) else {
                        continue;
                    };
                    let actions = entry.tx.on_timer(now, &timers);
                    self.apply_server_actions(id, actions);
                }
            }
        }
    }

    /// When [`TxLayer::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.next_deadline()
    }

    /// The next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// The next message to put on the wire.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        if !self.owed_trying.is_empty() {
            self.send_owed_tryings();
        }
        self.transmits.pop_front()
    }

    fn send_owed_tryings(&mut self) {
        for (id, arrived) in std::mem::take(&mut self.owed_trying) {
            let trying = match self.servers.get(&id) {
                Some(entry) if entry.trying_owed => {
                    entry.tx.request().response(100, "Trying", None)
                }
                _ => continue,
            };
            self.send_response(arrived, id, trying);
        }
    }

    fn apply_client_actions(&mut self, now: Instant, id: ClientTxId, actions: Vec<ClientAction>) {
        let Some(entry) = self.clients.get(&id) else {
            return;
        };
        let (peer, internal) = (entry.peer, entry.tx.is_internal());
        for action in actions {
            match action {
                ClientAction::Retransmit(bytes) => self.transmit(peer, bytes),
                ClientAction::Deliver(msg) if !internal => {
                    self.events.push_back(TxEvent::Response { tx: id, msg });
                }
                ClientAction::Deliver(_) => {}
                ClientAction::Timeout => self.events.push_back(TxEvent::Timeout { tx: id }),
                ClientAction::SendStateless(msg) => self.transmit(peer, msg.to_bytes()),
                ClientAction::StartInternal(msg) => {
                    self.start_client(now, msg, peer, true);
                }
            }
        }
        self.reschedule(TxRef::Client(id));
    }

    fn apply_server_actions(&mut self, id: ServerTxId, actions: Vec<ServerAction>) {
        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        let to = entry.reply_to;
        for action in actions {
            match action {
                ServerAction::Transmit(bytes) => self.transmit(to, bytes),
                ServerAction::AckTimeout => {
                    self.events.push_back(TxEvent::AckTimeout { invite: id });
                }
            }
        }
        self.reschedule(TxRef::Server(id));
    }

    /// Re-files a transaction's timer after it changed, or forgets it if it terminated.
    fn reschedule(&mut self, tx_ref: TxRef) {
        let (deadline, terminated) = match tx_ref {
            TxRef::Client(id) => match self.clients.get(&id) {
                Some(entry) => (entry.tx.deadline(), entry.tx.is_terminated()),
                None => return self.deadlines.cancel(tx_ref),
            },
            TxRef::Server(id) => match self.servers.get(&id) {
                Some(entry) => (entry.tx.deadline(), entry.tx.is_terminated()),
                None => return self.deadlines.cancel(tx_ref),
            },
        };
        match deadline {
            Some(at) if !terminated => self.deadlines.schedule(tx_ref, at),
            _ => self.deadlines.cancel(tx_ref),
        }
        if terminated {
            self.forget(tx_ref);
        }
    }

    fn forget(&mut self, tx_ref: TxRef) {
        match tx_ref {
            TxRef::Client(id) => {
                if let Some(entry) = self.clients.remove(&id) {
                    if self.client_index.get(&entry.key) == Some(&id) {
                        self.client_index.remove(&entry.key);
                    }
                }
            }
            TxRef::Server(id) => {
                if let Some(entry) = self.servers.remove(&id) {
                    if self.server_index.get(&entry.key) == Some(&id) {
                        self.server_index.remove(&entry.key);
                    }
                    if let Some(key) = entry.ack_key {
                        self.ack_index.remove(&key);
                    }
                }
            }
        }
    }
}
