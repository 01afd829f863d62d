//! The gateway's SIP engine, sans-IO: bytes and messages in with an explicit `now`,
//! transmissions, store commands and a next-timeout out.
//!
//! It owns the transaction layer, the digest authenticator, the registrar and the B2BUA call
//! table, and routes each transaction event to the handler that owns it. The tokio runtime
//! (`crate::runtime`) drives it; tests drive it in virtual time.

pub mod answer;
mod blf;
mod call;
mod calls;
pub mod dialog;
pub mod handover;
pub mod local;
pub mod media;
pub mod metrics;
mod nodes;
pub mod observe;
mod pickup;
mod registration;
mod reoffer;
pub mod routing;
pub mod sdp;
pub mod shard;
mod stats;

pub use blf::wire as blf_wire;
pub use stats::Stats;

use crate::auth::guard::SharedGuard;
use crate::auth::DigestAuthenticator;
use crate::config::Config;
use crate::registrar::{Registrar, RestoredBindings, SourceChange};
use crate::sip::framing::FrameError;
use crate::sip::ids;
use crate::sip::message::{list_items, ParseError, SipMessage};
use crate::sip::transaction::{ServerTxId, TimerConfig, TxEvent, TxLayer};
use crate::sip::validate::{self, Capabilities};
use crate::store::{StoreCommand, StoreResult};
use crate::transport::{Outgoing, Peer, Protocol};
use call::Calls;
use dialog::LocalIdentity;
use ezk_sip_types::{Method, Name};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How often registrations are expired and nonces purged.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// The current time, in both clocks the engine needs: monotonic for timers, wall-clock
/// Unix time for registration expiry (which must survive a restart) and CDRs.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for transaction and call timers.
    pub mono: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// Reads both system clocks (used by the runtime only; tests build `Now` by hand).
    pub fn system() -> Now {
        Now {
            mono: Instant::now(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        }
    }

    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> u64 {
        self.unix_ms / 1000
    }
}

/// What the gateway supports, for validation and for Allow/Supported headers.
pub const CAPABILITIES: Capabilities = validate::DEFAULT_CAPABILITIES;

/// The sans-IO gateway.
pub struct Engine {
    config: Config,
    /// Which shard this engine is (see [`shard`]).
    shard: shard::ShardId,
    /// What the other shards must learn or take, oldest first.
    shard_outputs: VecDeque<shard::ShardOutput>,
    /// Pickups handed between shards, by Call-ID.
    handovers: handover::Handovers,
    local: LocalIdentity,
    tx: TxLayer,
    auth: DigestAuthenticator,
    guard: SharedGuard,
    registrar: Registrar,
    calls: Calls,
    store_commands: VecDeque<StoreCommand>,
    /// Responses held until the store confirms a CDR (by call key).
    cdr_waiters: HashMap<String, (ServerTxId, SipMessage)>,
    stats: Stats,
    /// What it did, for the operator's metrics.
    metrics: metrics::EngineMetrics,
    next_maintenance: Instant,
    /// When the calls up are next marked durably (`calls.billing_mark_secs`).
    next_billing_mark: Instant,
    media_ports: media::PortPool,
    media_commands: VecDeque<media::MediaCommand>,
    /// Media relay numbers (the relay is shared by every shard).
    relays: shard::Numbers,
    /// Relays removed, waiting for their counters: relay -> (call key, anchor).
    anchored: HashMap<u64, (String, media::Anchor)>,
    /// Draws the wait before a re-INVITE that met glare is retried (RFC 3261 §14.1).
    glare_rng: rand::rngs::StdRng,
    /// Dialog event subscriptions (BLF keys), see [`blf`].
    subscriptions: blf::Subscriptions,
    /// BLF across nodes: other nodes' dialogs, what this node wrote for them.
    shared: blf::Shared,
    /// BLF across shards: other shards' dialogs, what this shard told them.
    shard_dialogs: blf::ShardDialogs,
    /// Heartbeats and calls routed through other nodes, see [`nodes`].
    nodes: nodes::Nodes,
}

impl Engine {
    /// A new engine; `bindings` are the registrations restored from the store, `secret`
    /// keys the digest nonces and seeds the draws of media relay ports and glare waits (the
    /// same secret replays the same draws).
    pub fn new(config: Config, bindings: RestoredBindings, secret: [u8; 32], now: Now) -> Self {
        let guard = SharedGuard::new(config.auth.guard());
        Engine::new_shard(config, bindings, secret, now, shard::ShardId::SOLE, guard)
    }

    /// Engine shard `shard` of a gateway (each shard owns the calls whose Call-IDs hash to
    /// it; every shard holds every registration); `guard` is shared by all of them, and
    /// each draws its media ports from its own part of the range.
    pub fn new_shard(
        config: Config,
        bindings: RestoredBindings,
        secret: [u8; 32],
        now: Now,
        shard: shard::ShardId,
        guard: SharedGuard,
    ) -> Self {
        let listen = config.listen_addr();
        let local = LocalIdentity::new(listen, config.sip_advertised(), config.media_advertised());
        let auth = DigestAuthenticator::new(
            config.auth.realm.clone(),
            Duration::from_secs(config.auth.nonce_lifetime_secs),
            secret,
            now.mono,
        )
        .on_shard(shard);
        let registrar = Registrar::from_bindings(config.registrar.clone(), listen, bindings);
        let (port_min, port_max) =
            media::shard_ports(config.media.port_min, config.media.port_max, shard);
        Engine {
            shard,
            shard_outputs: VecDeque::new(),
            handovers: handover::Handovers::default(),
            local,
            tx: TxLayer::new(TimerConfig::default()),
            auth,
            guard,
            registrar,
            calls: Calls::on_shard(shard),
            store_commands: VecDeque::new(),
            cdr_waiters: HashMap::new(),
            stats: Stats::new(config.sip.bad_message_log_per_second),
            metrics: metrics::EngineMetrics::default(),
            next_maintenance: now.mono + MAINTENANCE_INTERVAL,
            next_billing_mark: now.mono + config.billing_mark(),
            media_ports: media::PortPool::new(
                port_min,
                port_max,
                seeded_rng(b"media port pool", &secret),
            ),
            media_commands: VecDeque::new(),
            relays: shard.numbers(1),
            anchored: HashMap::new(),
            glare_rng: seeded_rng(b"re-INVITE glare", &secret),
            subscriptions: blf::Subscriptions::default(),
            shared: blf::Shared::new(&config.node, shard, now.mono),
            shard_dialogs: blf::ShardDialogs::default(),
            nodes: nodes::Nodes::new(&config.node, shard, now.mono),
            config,
        }
    }

    /// Whether the gateway runs a TCP transport (requests too large for UDP may use it).
    fn serves_tcp(&self) -> bool {
        self.config
            .sip
            .transports
            .contains(&crate::config::TransportName::Tcp)
    }

    /// Takes a reloaded config ([`Config::reload`]): new calls and requests follow its
    /// extensions and `[calls]`; the calls up go on.
    pub fn reconfigure(&mut self, config: Config) {
        self.config = config;
    }

    /// Counters of what was dropped or rejected.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Failed-authentication counters (failures, blocks, dropped requests, locks).
    pub fn guard_stats(&self) -> crate::auth::guard::GuardStats {
        self.guard.lock().stats()
    }

    /// False for a request from a blocked source: it is dropped (and counted) unread.
    /// Responses are let through (they answer our own requests), and so is the analog
    /// ports' internal peer.
    fn admits(&mut self, now: Now, peer: Peer, is_response: bool) -> bool {
        is_response
            || peer.protocol == Protocol::Internal
            || self.guard.lock().admits(now.mono, peer.addr.ip())
    }

    /// Handles one UDP datagram.
    pub fn handle_datagram(&mut self, now: Now, peer: Peer, bytes: &[u8]) {
        if bytes.iter().all(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return; // keep-alive (RFC 5626 CRLF or NAT pings)
        }
        if !self.admits(now, peer, bytes.starts_with(b"SIP/")) {
            return;
        }
        if bytes.len() > self.config.sip.max_message_size {
            self.reject_oversized(peer, bytes);
            return;
        }
        match SipMessage::parse_datagram(bytes) {
            Ok(msg) => self.handle_admitted(now, peer, msg),
            Err(error) => self.reject_unparseable(peer, bytes, &error),
        }
    }

    /// Answers a new request that waited too long in the queue (overload, see
    /// [`crate::overload`]) with `503 Service Unavailable` and `Retry-After`, statelessly:
    /// parsing it is all it costs.
    pub fn reject_overloaded(&mut self, now: Now, peer: Peer, bytes: &[u8]) {
        if !self.admits(now, peer, false) {
            return;
        }
        let Ok(msg) = SipMessage::parse_datagram(bytes) else {
            self.stats.undecodable_dropped += 1;
            return;
        };
        if !msg.is_request() || msg.method() == Some(&Method::ACK) {
            return;
        }
        let mut response = msg.response(503, "Service Unavailable", Some(&ids::tag()));
        response.set_header(
            Name::RETRY_AFTER,
            self.config.overload.retry_after_secs.to_string(),
        );
        self.stats.overload_rejected += 1;
        if self.stats.should_log(now.mono) {
            tracing::warn!(
                "overload: answered 503 to a request from {} that waited too long ({} so far)",
                peer.addr,
                self.stats.overload_rejected
            );
        }
        self.tx.send_stateless(response, peer);
    }

    /// A stream peer sent bytes that cannot be framed; the transport has written the
    /// error's answer (513 or 400, when there is one) and closed the connection.
    pub fn handle_stream_garbage(&mut self, peer: Peer, error: &FrameError) {
        self.stats.stream_garbage += 1;
        let answered = match error.answer().and_then(SipMessage::status) {
            Some(code) => {
                self.stats.rejected_requests += 1;
                format!(" after answering {code}")
            }
            None => String::new(),
        };
        if self.stats.should_log(Instant::now()) {
            tracing::warn!(
                "closed {} connection from {}{answered}: {error}",
                peer.protocol.via_token(),
                peer.addr
            );
        }
    }

    /// Next change in which connection-oriented remote addresses hold a registration: the
    /// runtime tells the TCP transport, which keeps those connections open while idle.
    pub fn poll_source_change(&mut self) -> Option<SourceChange> {
        self.registrar.poll_source_change()
    }

    /// RFC 3261 §21.5.14: a request over the size limit gets 513 when it can be answered.
    fn reject_oversized(&mut self, peer: Peer, bytes: &[u8]) {
        let request = SipMessage::parse_with(bytes, crate::sip::message::Framing::Datagram)
            .ok()
            .map(|(msg, _)| msg)
            .filter(|msg| msg.is_request() && msg.method() != Some(&Method::ACK));
        match request {
            Some(msg) => {
                self.stats.rejected_requests += 1;
                self.tx
                    .send_stateless(msg.response(513, "Message Too Large", None), peer);
            }
            None => self.stats.undecodable_dropped += 1,
        }
    }

    fn reject_unparseable(&mut self, peer: Peer, bytes: &[u8], error: &ParseError) {
        match validate::reject_unparseable_datagram(bytes, error) {
            Some(response) => {
                self.stats.rejected_requests += 1;
                self.tx.send_stateless(response, peer);
            }
            None => {
                self.stats.undecodable_dropped += 1;
                if self.stats.should_log(Instant::now()) {
                    tracing::warn!(
                        "dropped undecodable datagram of {} bytes from {}: {error} ({} dropped so far)",
                        bytes.len(),
                        peer.addr,
                        self.stats.undecodable_dropped
                    );
                }
            }
        }
    }

    /// Handles one parsed message (from a datagram or framed out of a stream).
    pub fn handle_message(&mut self, now: Now, peer: Peer, msg: SipMessage) {
        if self.admits(now, peer, !msg.is_request()) {
            self.handle_admitted(now, peer, msg);
        }
    }

    fn handle_admitted(&mut self, now: Now, peer: Peer, mut msg: SipMessage) {
        if self.hands_on(peer, &msg) {
            return;
        }
        if msg.is_request() {
            if let Err(rejection) = validate::validate_request(&msg, &CAPABILITIES) {
                self.stats.rejected_requests += 1;
                tracing::debug!(
                    "rejecting request from {}: {} {}",
                    peer.addr,
                    rejection.code,
                    rejection.reason
                );
                let response = rejection.to_response(&msg);
                if msg.method() != Some(&Method::ACK) {
                    self.tx.send_stateless(response, peer);
                }
                return;
            }
            stamp_received(&mut msg, peer);
        } else if validate::validate_response(&msg).is_err() || !self.is_our_via(&msg, peer) {
            self.stats.responses_dropped += 1;
            return;
        }
        self.tx.handle_message(now.mono, msg, peer);
        self.process_events(now);
    }

    /// A response is ours only if its top Via names us as we name ourselves to the peer
    /// it came from (RFC 3261 §18.1.2).
    fn is_our_via(&self, msg: &SipMessage, peer: Peer) -> bool {
        msg.header_list(&Name::VIA)
            .first()
            .and_then(|via| via.split_whitespace().nth(1))
            .map(|sent_by| sent_by.split(';').next().unwrap_or(sent_by))
            .is_some_and(|sent_by| sent_by.eq_ignore_ascii_case(&self.local.host_port(peer)))
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Now) {
        self.tx.handle_timeout(now.mono);
        if now.mono >= self.next_maintenance {
            self.next_maintenance = now.mono + MAINTENANCE_INTERVAL;
            self.expire_registrations(now);
            self.auth.purge(now.mono);
            self.guard.lock().purge(now.mono);
            self.expire_handovers(now);
        }
        self.heartbeat_if_due(now);
        if now.mono >= self.next_billing_mark {
            self.next_billing_mark = now.mono + self.config.billing_mark();
            // A mark covers every call of the node, on every shard: with several shards
            // only the first marks, whether or not any of its own calls are up (marks
            // from each would come closer together than the interval).
            match self.shard.count() {
                1 => self.mark_calls_up(now),
                _ if self.shard.is_first() => self.push_mark_up(now),
                _ => {}
            }
        }
        self.process_events(now);
        self.ring_timeouts(now);
        self.pickup_timeouts(now);
        self.reoffer_timeouts(now);
        self.expire_subscriptions(now);
        self.poll_shared_dialogs(now);
        self.publish_dialog_states(now);
    }

    /// Records durably that the answered calls are up at `now`: a crash loses no talk time
    /// before it (the next start bills them to here). Runs every `calls.billing_mark_secs`;
    /// the runtime calls it once more at shutdown.
    pub fn mark_calls_up(&mut self, now: Now) {
        if self.calls.calls.values().any(|call| call.answer.is_some()) {
            self.push_mark_up(now);
        }
    }

    fn push_mark_up(&mut self, now: Now) {
        self.store_commands.push_back(StoreCommand::MarkUp {
            node: self.config.node.id.clone(),
            now_ms: now.unix_ms,
        });
    }

    /// Takes an answer from the store (a pickup claim's outcome, a CDR committed, a
    /// heartbeat's takeovers, the registrations other nodes hold, other nodes' BLF
    /// dialogs) or a notification from another node (BLF).
    pub fn handle_store_result(&mut self, now: Now, result: StoreResult) {
        match result {
            StoreResult::Claim { pickup, outcome } => self.on_claim(now, pickup, outcome),
            StoreResult::CdrWritten { call_key } => self.on_cdr_written(now, &call_key),
            StoreResult::Heartbeat(beat) => self.on_heartbeat(now, beat),
            StoreResult::DatabaseBack => self.write_registrations_again(now),
            StoreResult::Registrations { lookup, found } => {
                self.on_remote_registrations(now, lookup, found)
            }
            StoreResult::Dialogs { query, rows } => self.on_shared_dialogs(now, query, rows),
            // Nothing changed here yet: no dialogs to derive again.
            StoreResult::DialogsPublished {
                extension, stored, ..
            } => {
                if !stored {
                    self.on_publish_failed(extension);
                }
                return;
            }
            StoreResult::DialogsChanged { node, extension } => {
                self.on_dialogs_changed(node, extension);
                return;
            }
            StoreResult::Watched { extension, .. } => self.on_watched_elsewhere(extension),
        }
        self.publish_dialog_states(now);
    }

    /// When [`Engine::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.tx.poll_timeout(),
            Some(self.next_maintenance),
            Some(self.next_billing_mark),
            self.calls.next_deadline(),
            self.subscriptions.next_expiry(),
            self.subscriptions.notify_due(),
            self.nodes.next_heartbeat,
            self.shared.next_poll(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Next message to put on the wire.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.tx.poll_transmit()
    }

    /// Next thing for the other shards.
    pub fn poll_shard_output(&mut self) -> Option<shard::ShardOutput> {
        self.shard_outputs.pop_front()
    }

    /// Takes what another shard tells.
    pub fn handle_shard_notice(&mut self, now: Now, notice: shard::ShardNotice) {
        match notice {
            shard::ShardNotice::Bindings { aor, bindings } => {
                self.registrar.replace(&aor, bindings)
            }
            shard::ShardNotice::Watch {
                shard,
                extension,
                watching,
            } => {
                self.shard_dialogs.on_watch(shard, extension, watching);
                self.publish_dialog_states(now);
            }
            shard::ShardNotice::Dialogs {
                shard,
                extension,
                dialogs,
            } => {
                self.shard_dialogs.on_dialogs(shard, extension, dialogs);
                self.notify_answered_targets(now);
                self.publish_dialog_states(now);
            }
        }
    }

    /// Which shard this engine is.
    pub fn shard(&self) -> shard::ShardId {
        self.shard
    }

    /// Next write for the persistent store.
    pub fn poll_store_command(&mut self) -> Option<StoreCommand> {
        self.store_commands.pop_front()
    }

    fn process_events(&mut self, now: Now) {
        while let Some(event) = self.tx.poll_event() {
            match event {
                TxEvent::Request { tx, msg, peer } => self.on_request(now, tx, msg, peer),
                TxEvent::Cancel { invite, msg, .. } => {
                    let reason = msg.header(&Name::from("Reason")).map(str::to_string);
                    self.on_cancel(now, invite, reason.as_deref())
                }
                TxEvent::Ack { invite, msg, .. } => self.on_ack(now, invite, msg),
                TxEvent::Response { tx, msg } => {
                    if !self.on_notify_response(now, tx, &msg) {
                        self.on_response(now, tx, msg);
                    }
                }
                TxEvent::Timeout { tx } => {
                    if !self.on_notify_timeout(now, tx) {
                        self.on_client_timeout(now, tx);
                    }
                }
                TxEvent::AckTimeout { invite } => self.on_ack_timeout(now, invite),
            }
        }
        self.publish_dialog_states(now);
    }

    fn on_request(&mut self, now: Now, tx: ServerTxId, msg: SipMessage, peer: Peer) {
        let method = msg.method().cloned().unwrap_or(Method::OPTIONS);
        let in_dialog = msg.to_tag().is_some();
        if method == Method::SUBSCRIBE {
            self.on_subscribe(now, tx, msg, peer, in_dialog);
        } else if in_dialog {
            self.on_in_dialog_request(now, tx, msg, peer);
        } else if method == Method::REGISTER {
            self.on_register(now, tx, msg, peer);
        } else if method == Method::INVITE {
            self.on_invite(now, tx, msg, peer);
        } else if method == Method::OPTIONS {
            // Out-of-dialog answers that start nothing are stateless (a flood of them
            // costs no memory): the request's retransmission is simply answered again.
            let mut response = msg.response(200, "OK", Some(&ids::tag()));
            add_capabilities(&mut response);
            self.tx.respond_statelessly(tx, response);
        } else if method == Method::BYE {
            let response = msg.response(481, "Call/Transaction Does Not Exist", Some(&ids::tag()));
            self.tx.respond_statelessly(tx, response);
        } else {
            let mut response = msg.response(405, "Method Not Allowed", Some(&ids::tag()));
            add_capabilities(&mut response);
            self.tx.respond_statelessly(tx, response);
        }
    }

    /// Sends a final response to a server transaction with a fresh To tag.
    fn reply(&mut self, now: Now, tx: ServerTxId, code: u16, reason: &str) {
        if let Some(request) = self.tx.request(tx) {
            let response = request.response(code, reason, Some(&ids::tag()));
            self.tx.send_response(now.mono, tx, response);
        }
    }
}

/// A generator seeded from the engine's secret hashed with `label`, one per use, so that
/// what one draws tells nothing about the secret nor about the others' draws.
fn seeded_rng(label: &[u8], secret: &[u8; 32]) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    use sha2::{Digest, Sha256};
    let seed = Sha256::new()
        .chain_update(label)
        .chain_update(secret)
        .finalize();
    rand::rngs::StdRng::from_seed(seed.into())
}

/// Adds Allow, Allow-Events, Accept and Supported headers describing what the gateway does.
fn add_capabilities(response: &mut SipMessage) {
    response.set_header(Name::ALLOW, CAPABILITIES.methods.join(", "));
    response.set_header(Name::ALLOW_EVENTS, blf::EVENT_PACKAGE);
    response.set_header(Name::ACCEPT, CAPABILITIES.content_types.join(", "));
    if !CAPABILITIES.extensions.is_empty() {
        response.set_header(Name::SUPPORTED, CAPABILITIES.extensions.join(", "));
    }
}

/// RFC 3261 §18.2.1 and RFC 3581: record where a request really came from in its top Via
/// (`received`, and `rport` when the request asked for it), which decides where its
/// responses go ([`crate::sip::response_route`]).
fn stamp_received(msg: &mut SipMessage, peer: Peer) {
    // Every Via item as a value of its own, sharing the request's bytes.
    let vias: Vec<bytesstr::BytesStr> = msg
        .raw_values(&Name::VIA)
        .flat_map(|raw| list_items(raw.as_str()).map(move |item| raw.slice_ref(item)))
        .collect();
    let Some((top, below)) = vias.split_first() else {
        return;
    };
    let source_ip = peer.addr.ip().to_string();
    let mut stamped = String::with_capacity(top.len() + source_ip.len() + 16);
    let mut has_received = false;
    for (at, param) in top.split(';').enumerate() {
        if at > 0 {
            stamped.push(';');
        }
        let name = param.split('=').next().unwrap_or("");
        if at > 0 && name.eq_ignore_ascii_case("rport") {
            stamped.push_str("rport=");
            stamped.push_str(&peer.addr.port().to_string());
        } else if at > 0 && name.eq_ignore_ascii_case("received") {
            stamped.push_str("received=");
            stamped.push_str(&source_ip);
            has_received = true;
        } else {
            stamped.push_str(param);
        }
    }
    if !has_received {
        stamped.push_str(";received=");
        stamped.push_str(&source_ip);
    }
    msg.remove_header(&Name::VIA);
    msg.headers.insert(Name::VIA, stamped);
    for via in below {
        msg.headers.insert(Name::VIA, via.clone());
    }
}

#[cfg(test)]
mod tests;
