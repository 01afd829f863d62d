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
//!   caller reached keeps those (one CDR per call).
//! - Pickup across nodes: the claim is made in the store among the calls of every live
//!   node (exactly one winner). When the call rings on another node, the picker's node
//!   forwards the picker's INVITE there, signed, with the claim in [`PICKUP_HEADER`]; the
//!   owner runs the pickup as for a picker of its own (dummy dialog, CANCEL with Reason,
//!   fallback, ringing again on failure, CDR billing the picker) with the picker's node as
//!   the picker's side. The owner's INVITE with Replaces comes back to the picker's node,
//!   which sends the picker an INVITE with Replaces naming the picker's own dialog with it
//!   and relays the answer. A BLF key's Replaces that reaches the wrong node is claimed the
//!   same way (the store knows every ringing leg).
//! - Trust: a signature counts only from a configured node address (`node.peers`; over TCP,
//!   a node's IP), with the shared secret, within the allowed clock skew; any other request,
//!   signed or not, is outside traffic and authenticated with digest as usual.

use super::call::{RelayLeg, Relayed, Side};
use super::{Engine, Now};
use crate::auth::node as node_auth;
use crate::config::{Config, NodeConfig, NodeTransport};
use crate::registrar::Binding;
use crate::sip::message::SipMessage;
use crate::sip::transaction::ServerTxId;
use crate::store::{CallContext, Heartbeat, PickupMethod, RemoteBinding, StoreCommand};
use crate::transport::{Peer, Protocol};
use ezk_sip_types::Name;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// The header of a pickup forwarded to the call's owner node:
/// `<call key>;method=<group|directed|replaces>;mode=<replaces|bridge>`.
pub(super) use crate::auth::node::PICKUP_HEADER;

/// A pickup's claim as one node forwards it to the call's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PickupClaim {
    /// The claimed call.
    pub(super) call_key: String,
    /// How the picker asked.
    pub(super) method: PickupMethod,
    /// Whether the picker gets an INVITE with Replaces (else its own INVITE is bridged).
    pub(super) use_replaces: bool,
}

impl PickupClaim {
    /// Reads a [`PICKUP_HEADER`] value.
    pub(super) fn parse(value: &str) -> Option<PickupClaim> {
        let mut parts = value.trim().split(';');
        let call_key = parts.next().filter(|key| !key.is_empty())?.to_string();
        let (mut method, mut use_replaces) = (None, None);
        for part in parts {
            match part.trim().split_once('=')? {
                ("method", word) => method = PickupMethod::parse(word),
                ("mode", "replaces") => use_replaces = Some(true),
                ("mode", "bridge") => use_replaces = Some(false),
                _ => return None,
            }
        }
        Some(PickupClaim {
            call_key,
            method: method?,
            use_replaces: use_replaces?,
        })
    }
}

impl std::fmt::Display for PickupClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{};method={};mode={}",
            self.call_key,
            self.method.as_str(),
            if self.use_replaces {
                "replaces"
            } else {
                "bridge"
            }
        )
    }
}

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
    /// Lookup numbers (store answers name them, and so the shard).
    lookup_numbers: super::shard::Numbers,
    /// The other live nodes as the last heartbeat saw them, by id.
    others: HashMap<String, SocketAddr>,
}

impl Nodes {
    /// The node state of an engine started at `now` with `config`.
    pub(super) fn new(
        config: &crate::config::NodeConfig,
        shard: super::shard::ShardId,
        now: Instant,
    ) -> Nodes {
        Nodes {
            // The first shard heartbeats for the node.
            next_heartbeat: (config.is_clustered() && shard.is_first())
                .then(|| now + config.heartbeat()),
            lookup_numbers: shard.numbers(0),
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
        let lookup = self.nodes.lookup_numbers.take();
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
            let binding = node_binding(&found.aor, found.peer.addr, &self.config);
            remote.push((Some(found.aor.clone()), binding));
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

    /// A picker of this node won a call ringing on another node (reached at `owner`): its
    /// INVITE goes there with the claim, as a call this node only carries.
    pub(super) fn forward_pickup(
        &mut self,
        now: Now,
        id: u64,
        context: &CallContext,
        owner: SocketAddr,
    ) {
        let Some(pickup) = self.calls.pickups.get(&id) else {
            return;
        };
        let (tx, peer, picker) = (pickup.tx, pickup.peer, pickup.picker.clone());
        let claim = PickupClaim {
            call_key: context.call_key.clone(),
            method: pickup.method,
            use_replaces: pickup.use_replaces,
        };
        let Some(msg) = self.tx.request(tx).cloned() else {
            return;
        };
        self.pickup_handed_on(id);
        self.finish_pickup(now, id, None);
        tracing::info!(
            "pickup {id}: {picker} claimed call {} ringing on node {}: forwarded to {owner}",
            context.call_key,
            context.node
        );
        let target = msg
            .request_line()
            .and_then(|line| line.uri.user())
            .unwrap_or_default()
            .to_string();
        let owner_binding = node_binding(&target, owner, &self.config);
        let invite = Invite {
            tx,
            msg,
            peer,
            user: picker,
            target,
        };
        let relayed = Relayed {
            recorded_by: context.node.clone(),
            leg: RelayLeg::PickupToOwner {
                claim: claim.to_string(),
            },
        };
        self.route_invite(now, invite, vec![(None, owner_binding)], Some(relayed));
    }

    /// Another node claimed a call of this node for its picker and forwarded the pickup
    /// (`claim`, the [`PICKUP_HEADER`] value): the pickup runs here once the store confirms
    /// the claim, with the picker's side reached through that node.
    pub(super) fn start_forwarded_pickup(
        &mut self,
        now: Now,
        tx: ServerTxId,
        peer: Peer,
        picker: String,
        node: &str,
        claim: &str,
    ) {
        let Some(claim) = PickupClaim::parse(claim) else {
            self.reply(now, tx, 400, "Bad Request (malformed X-Gateway-Pickup)");
            return;
        };
        let id = self.open_pickup(tx, peer, &picker, claim.method, claim.use_replaces);
        tracing::info!(
            "pickup {id}: node {node} claimed call {} for its picker {picker}",
            claim.call_key
        );
        self.store_commands.push_back(StoreCommand::LoadClaim {
            pickup: id,
            call_key: claim.call_key,
            picker,
            node: self.config.node.id.clone(),
        });
    }

    /// The owner node's INVITE with Replaces for a picker of this node, naming this node's
    /// dialog with it: the picker gets an INVITE with Replaces naming its own dialog with
    /// this node (the early one it holds for the pickup), and its answer goes back.
    pub(super) fn replaces_from_owner(
        &mut self,
        now: Now,
        tx: ServerTxId,
        msg: SipMessage,
        peer: Peer,
        node: String,
    ) {
        let header = msg.header(&Name::REPLACES).unwrap_or_default();
        let relay = super::blf::pickup_relay_named(&self.calls, header)
            .and_then(|id| self.calls.calls.get(&id));
        let Some((relay, picker_tag)) =
            relay.and_then(|call| Some((call, call.a.remote_tag.clone()?)))
        else {
            // The dialog it names is this node's leg to the owner, whose Call-ID this node
            // drew to hash to the shard holding the pickup: that shard takes the INVITE.
            let named = self.shard.of_call_id(super::blf::replaced_call_id(header));
            if named != self.shard.index() {
                self.hand_over_request(now, tx, peer, named);
                return;
            }
            self.reply(now, tx, 481, "Call/Transaction Does Not Exist");
            return;
        };
        let picker_dialog = &relay.a;
        let mut headers = vec![(
            Name::REPLACES,
            format!(
                "{};to-tag={picker_tag};from-tag={};early-only",
                picker_dialog.call_id, picker_dialog.local_tag
            ),
        )];
        for name in [
            Name::CALL_INFO,
            Name::ALERT_INFO,
            Name::from("P-Asserted-Identity"),
        ] {
            if let Some(value) = msg.header(&name) {
                headers.push((name, value.to_string()));
            }
        }
        let picker = relay.caller.number.clone();
        let to_picker = Binding {
            contact: picker_dialog.remote_target.clone(),
            expires_at: u64::MAX,
            call_id: String::new(),
            cseq: 0,
            source: picker_dialog.peer,
            q: None,
            user_agent: None,
        };
        let caller = msg
            .from_header()
            .and_then(|from| from.user())
            .unwrap_or_default();
        let invite = Invite {
            tx,
            msg,
            peer,
            user: caller,
            target: picker.clone(),
        };
        let relayed = Relayed {
            recorded_by: node,
            leg: RelayLeg::ReplacesToPicker { headers },
        };
        self.route_invite(now, invite, vec![(Some(picker), to_picker)], Some(relayed));
    }

    /// Node `node` (at `addr`) was taken over: nothing through it answers any more. Calls
    /// ringing through it fail (480, unless other phones still ring), calls up through it
    /// are hung up on this node's side, calls and pickups it had sent here end.
    fn node_gone(&mut self, now: Now, node: &str, addr: SocketAddr) {
        let through: Vec<u64> = self
            .calls
            .calls
            .iter()
            .filter(|(_, call)| {
                call.relayed.as_ref().is_some_and(|r| r.recorded_by == node)
                    || call.a.peer.addr == addr
                    || call.forks.iter().any(|fork| fork.dialog.peer.addr == addr)
            })
            .map(|(id, _)| *id)
            .collect();
        let pickers: Vec<u64> = self
            .calls
            .pickups
            .iter()
            .filter(|(_, pickup)| pickup.peer.addr == addr)
            .map(|(id, _)| *id)
            .collect();
        if !through.is_empty() || !pickers.is_empty() {
            tracing::warn!(
                "node {node} is gone: ending {} call(s) and {} pickup(s) through it",
                through.len(),
                pickers.len()
            );
        }
        for id in pickers {
            self.picker_gave_up(now, id);
        }
        let cause = format!("node {node} stopped");
        for id in through {
            let Some(call) = self.calls.calls.get_mut(&id) else {
                continue;
            };
            if call.answered.is_some() {
                let sides: Vec<Side> = [Side::A, Side::B]
                    .into_iter()
                    .filter(|&side| call.dialog(side).is_some_and(|d| d.peer.addr != addr))
                    .collect();
                self.hang_up_sides(now, id, &sides, &cause);
                continue;
            }
            if call.a.peer.addr == addr
                || call.relayed.as_ref().is_some_and(|r| r.recorded_by == node)
            {
                // The caller's side is gone: nobody waits for an answer.
                let pending: Vec<_> = call.pending_forks().collect();
                for tx in pending {
                    self.tx.cancel(now.mono, tx);
                }
                self.end_call(now, id, "failed", &cause);
                continue;
            }
            for fork in call
                .forks
                .iter_mut()
                .filter(|fork| fork.dialog.peer.addr == addr && fork.final_status.is_none())
            {
                fork.final_status = Some((480, format!("Temporarily Unavailable ({cause})")));
                if let Some(tx) = fork.tx {
                    self.tx.cancel(now.mono, tx);
                }
            }
            self.finish_if_all_forks_failed(now, id);
        }
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
            address: self.config.node_advertised(),
            now_ms: now.unix_ms,
            takeover_ms: millis(self.config.node.takeover()),
        });
    }

    /// The store recorded a heartbeat (every engine shard hears it): the calls of this
    /// shard through nodes gone end, and BLF learns which nodes are alive and what they
    /// watch; the first shard logs the nodes it took over and, when this node had been taken
    /// over itself (silent too long), writes its registrations again.
    pub(super) fn on_heartbeat(&mut self, now: Now, beat: Heartbeat) {
        let first = self.shard.is_first();
        for dead in beat.taken_over.iter().filter(|_| first) {
            tracing::warn!(
                "node {} stopped heartbeating for over {} s: took over, {} registration(s) removed, {} call(s) up and {} ringing closed with interrupted CDRs",
                dead.node,
                self.config.node.takeover_secs,
                dead.registrations,
                dead.interrupted.answered,
                dead.interrupted.unanswered
            );
        }
        let live: Option<HashMap<String, SocketAddr>> =
            beat.others.map(|others| others.into_iter().collect());
        self.blf_heartbeat(live.as_ref(), beat.watched, beat.revived);
        if let Some(others) = live {
            let gone: Vec<(String, SocketAddr)> = self
                .nodes
                .others
                .iter()
                .filter(|(id, _)| !others.contains_key(*id))
                .map(|(id, addr)| (id.clone(), *addr))
                .collect();
            self.nodes.others = others;
            for (node, addr) in gone {
                self.node_gone(now, &node, addr);
            }
        }
        if beat.revived && first {
            tracing::warn!(
                "node {}: another node took this one over while it was silent; writing its registered extensions again",
                self.config.node.id,
            );
            self.write_registrations_again(now);
        }
    }

    /// Writes every registration this node holds to the store again: after it was taken
    /// over, or after the database was unreachable (phones that registered meanwhile are
    /// then found by the other nodes again).
    pub(super) fn write_registrations_again(&mut self, now: Now) {
        let aors = self.registrar.aors();
        tracing::info!(
            "writing {} registered extension(s) to the store",
            aors.len()
        );
        for aor in aors {
            self.persist_bindings(now, &aor);
        }
    }
}

/// Whether `peer` is one of the configured nodes: over UDP its exact address (nodes send
/// from their listening socket), over TCP or TLS its IP (connections come from any port).
fn is_node_source(config: &NodeConfig, peer: Peer) -> bool {
    match peer.protocol {
        Protocol::Udp => config.is_peer(peer.addr),
        Protocol::Tcp | Protocol::Tls => {
            config.peer_addrs().any(|node| node.ip() == peer.addr.ip())
        }
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

/// How a node is reached for `user` (an extension, or what a picker dialled): at its
/// advertised address, over UDP from this node's listening address, or over TLS (`[node]
/// transport`).
fn node_binding(user: &str, node: SocketAddr, config: &Config) -> Binding {
    let protocol = match config.node.transport {
        NodeTransport::Udp => Protocol::Udp,
        NodeTransport::Tls => Protocol::Tls,
    };
    let mut source = Peer {
        protocol,
        addr: node,
        local: SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
    };
    crate::transport::addressing::fill_local(&mut source, config.node_listen_addr());
    Binding {
        contact: format!("sip:{user}@{node}"),
        expires_at: u64::MAX,
        call_id: String::new(),
        cseq: 0,
        source,
        q: None,
        user_agent: None,
    }
}

/// A duration in whole milliseconds (saturating).
pub(super) fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
