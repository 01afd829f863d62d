//! Several gateway nodes on one database, the engine's part (sans-IO; the database work is
//! behind [`StoreCommand::Heartbeat`] and [`StoreCommand::LookupRegistrations`]):
//!
//! - Heartbeat: every `node.heartbeat_secs` the node records that it is alive; the store
//!   answers with the nodes it took over (logged) and whether this node had been taken over
//!   itself while silent (its registrations are then written again).
//! - Routing through the owner (RFC 3327's Path idea): a call for an extension is looked up
//!   in the store first; each other live node holding a registration of it becomes one more
//!   fork of the call, an INVITE to that node's advertised address, signed
//!   ([`crate::auth::node`]). The owner holds the phone's flow and NAT binding and forwards
//!   the call to it as a call of its own, without writing a context or a CDR: the node the
//!   caller reached keeps those (one CDR per call). Pickup and BLF across nodes would hook
//!   in where [`Call::from_node`](super::call::Call) is set; they are not built.
//! - Trust: a signature counts only from a configured node address (`node.peers`; over TCP,
//!   a node's IP), with the shared secret, within the allowed clock skew; any other request,
//!   signed or not, is outside traffic and authenticated with digest as usual.

use super::{Engine, Now};
use crate::auth::node as node_auth;
use crate::config::NodeConfig;
use crate::registrar::Binding;
use crate::sip::message::SipMessage;
use crate::sip::transaction::ServerTxId;
use crate::store::{Heartbeat, RemoteBinding, StoreCommand};
use crate::transport::{Peer, Protocol};
use std::collections::HashMap;
use std::time::Instant;

/// An authenticated INVITE on its way to the callee (waiting, perhaps, for the store to say
/// which other nodes hold the callee's registrations).
#[derive(Debug)]
pub(super) struct Invite {
    pub(super) tx: ServerTxId,
    pub(super) msg: SipMessage,
    pub(super) peer: Peer,
    /// The authenticated caller.
    pub(super) user: String,
    /// The called number.
    pub(super) target: String,
}

/// The engine's node state.
#[derive(Debug, Default)]
pub(super) struct Nodes {
    /// When the next heartbeat is due (None: not clustered).
    pub(super) next_heartbeat: Option<Instant>,
    /// INVITEs waiting for [`StoreResult::Registrations`](crate::store::StoreResult), by
    /// lookup number.
    lookups: HashMap<u64, Invite>,
    next_lookup: u64,
}

impl Nodes {
    /// The node state of an engine started at `now` with `config`.
    pub(super) fn new(config: &crate::config::NodeConfig, now: Instant) -> Nodes {
        Nodes {
            next_heartbeat: config.is_clustered().then(|| now + config.heartbeat()),
            ..Nodes::default()
        }
    }
}

impl Engine {
    /// The node that sent `msg`, when it is a request signed by a configured node; None
    /// for everything else (a signature that does not hold is logged, rate-limited, and the
    /// request is treated as outside traffic).
    pub(super) fn trusted_node(
        &mut self,
        now: Now,
        msg: &SipMessage,
        peer: Peer,
    ) -> Option<String> {
        if !node_auth::is_signed(msg) {
            return None;
        }
        let secret = self
            .config
            .node
            .secret
            .as_deref()
            .filter(|_| self.config.node.is_clustered());
        let verdict = match secret {
            None => Err("this gateway is not part of a cluster (node.peers)".to_string()),
            Some(_) if !is_node_source(&self.config.node, peer) => {
                Err("it does not come from a node address (node.peers)".to_string())
            }
            Some(secret) => {
                node_auth::verify(msg, secret.as_bytes(), now.unix()).map_err(|e| e.to_string())
            }
        };
        match verdict {
            Ok(node) => Some(node),
            Err(why) => {
                self.stats.forged_node_requests += 1;
                if self.stats.should_log(now.mono) {
                    tracing::warn!(
                        "a request from {} claims to be a gateway node, not trusted: {why}; \
                         authenticated as outside traffic ({} so far)",
                        peer.addr,
                        self.stats.forged_node_requests
                    );
                }
                None
            }
        }
    }

    /// The SIP extensions a call to `target` rings (whose phones may be registered through
    /// other nodes): the extension, or a group's members; analog ports and lines are local.
    fn sip_extensions_of(&self, target: &str) -> Vec<String> {
        let sip = |e: &&crate::config::ExtensionConfig| e.analog_channel.is_none();
        if let Some(extension) = self.config.extension(target) {
            return std::iter::once(extension)
                .filter(sip)
                .map(|e| e.number.clone())
                .collect();
        }
        self.config
            .call_group_members(target)
            .filter(sip)
            .map(|e| e.number.clone())
            .collect()
    }

    /// In a cluster, parks `invite` and asks the store which other nodes hold registrations
    /// of its callee (the answer resumes it: [`Engine::on_remote_registrations`]); else hands
    /// it back to be routed at once.
    pub(super) fn look_up_other_nodes(&mut self, now: Now, invite: Invite) -> Option<Invite> {
        if !self.config.node.is_clustered() {
            return Some(invite);
        }
        let aors = self.sip_extensions_of(&invite.target);
        if aors.is_empty() {
            return Some(invite);
        }
        let lookup = self.nodes.next_lookup;
        self.nodes.next_lookup += 1;
        self.nodes.lookups.insert(lookup, invite);
        self.store_commands
            .push_back(StoreCommand::LookupRegistrations {
                lookup,
                node: self.config.node.id.clone(),
                aors,
                now_ms: now.unix_ms,
                takeover_ms: millis(self.config.node.takeover()),
            });
        None
    }

    /// The store's answer to a lookup: the parked INVITE rings the local phones and, through
    /// their nodes, the remote ones (nodes not in `node.peers` are skipped: they would not
    /// trust this one either).
    pub(super) fn on_remote_registrations(
        &mut self,
        now: Now,
        lookup: u64,
        found: Vec<RemoteBinding>,
    ) {
        let Some(invite) = self.nodes.lookups.remove(&lookup) else {
            return; // cancelled meanwhile
        };
        let mut remote = Vec::new();
        for found in found {
            if !self.config.node.is_peer(found.peer.addr) {
                tracing::warn!(
                    "node {} holds a registration of {} but its address {} is not in node.peers: not routed there",
                    found.node,
                    found.aor,
                    found.peer.addr
                );
                continue;
            }
            let mut peer = found.peer;
            crate::transport::addressing::fill_local(&mut peer, self.config.listen_addr());
            remote.push((
                Some(found.aor.clone()),
                Binding {
                    contact: format!("sip:{}@{}", found.aor, found.peer.addr),
                    expires_at: u64::MAX,
                    call_id: String::new(),
                    cseq: 0,
                    source: peer,
                    q: None,
                },
            ));
        }
        self.route_invite(now, invite, remote, None);
    }

    /// A CANCEL of an INVITE still waiting for its lookup: answered 487, forgotten.
    pub(super) fn cancel_lookup(&mut self, now: Now, tx: ServerTxId) -> bool {
        let Some(lookup) = self
            .nodes
            .lookups
            .iter()
            .find(|(_, invite)| invite.tx == tx)
            .map(|(lookup, _)| *lookup)
        else {
            return false;
        };
        self.nodes.lookups.remove(&lookup);
        self.reply(now, tx, 487, "Request Terminated");
        true
    }

    /// Queues a heartbeat when one is due.
    pub(super) fn heartbeat_if_due(&mut self, now: Now) {
        let Some(due) = self.nodes.next_heartbeat.filter(|due| now.mono >= *due) else {
            return;
        };
        let interval = self.config.node.heartbeat();
        // Late (a stalled loop): the next one an interval from now, not a burst.
        self.nodes.next_heartbeat = Some((due + interval).max(now.mono));
        self.store_commands.push_back(StoreCommand::Heartbeat {
            node: self.config.node.id.clone(),
            address: self.config.node.advertised(self.config.listen_addr()),
            now_ms: now.unix_ms,
            takeover_ms: millis(self.config.node.takeover()),
        });
    }

    /// The store recorded a heartbeat: logs the nodes it took over; when this node had been
    /// taken over itself (silent too long), writes its registrations again.
    pub(super) fn on_heartbeat(&mut self, now: Now, beat: Heartbeat) {
        for dead in &beat.taken_over {
            tracing::warn!(
                "node {} stopped heartbeating for over {} s: took over, {} registration(s) removed, {} call(s) up and {} ringing closed with interrupted CDRs",
                dead.node,
                self.config.node.takeover_secs,
                dead.registrations,
                dead.interrupted.answered,
                dead.interrupted.unanswered
            );
        }
        if beat.revived {
            let aors = self.registrar.aors();
            tracing::warn!(
                "node {}: another node took this one over while it was silent; writing its {} registered extension(s) again",
                self.config.node.id,
                aors.len()
            );
            for aor in aors {
                self.persist_bindings(now, &aor);
            }
        }
    }
}

/// Whether `peer` is one of the configured nodes: over UDP its exact address (nodes send
/// from their listening socket), over TCP its IP (connections come from any port).
fn is_node_source(config: &NodeConfig, peer: Peer) -> bool {
    match peer.protocol {
        Protocol::Udp => config.is_peer(peer.addr),
        Protocol::Tcp => config.peer_addrs().any(|node| node.ip() == peer.addr.ip()),
        Protocol::Internal => false,
    }
}

/// Signs a request about to go to another node (no-op for any other peer).
pub(super) fn sign_for_node(config: &NodeConfig, now: Now, msg: &mut SipMessage, peer: Peer) {
    if let Some(secret) = &config.secret {
        if config.is_clustered() && is_node_source(config, peer) {
            node_auth::sign(msg, secret.as_bytes(), &config.id, now.unix());
        }
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
