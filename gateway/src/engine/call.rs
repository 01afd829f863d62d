//! The B2BUA's data model: a call (leg A and its forks), the in-dialog relays, the pickups in
//! progress, and the indexes that map transactions and dialogs back to them.

use super::dialog::Dialog;
use super::metrics::PickupPath;
use crate::sip::message::SipMessage;
use crate::sip::transaction::{ClientTxId, ServerTxId};
use crate::store::{Answer, CallContext, Cdr, FailedPickup, PickupMethod, StoreCommand};
use crate::transport::Peer;
use bytes::Bytes;
use ezk_sip_types::Method;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// Which leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// The caller.
    A,
    /// The answering callee (or the picker who took the call).
    B,
}

impl Side {
    /// Where this side's entry is in a per-side array (A: 0, B: 1).
    pub(super) fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    pub(super) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// What a client transaction belongs to.
#[derive(Debug, Clone, Copy)]
pub(super) enum ClientRole {
    /// The INVITE of fork number N.
    Fork(usize),
    /// A relayed in-dialog request.
    Relay(u64),
    /// Our own re-INVITE to a side (`reoffer.rs`).
    Reoffer(Side),
    /// A request whose answer nobody waits for (BYE at teardown).
    Detached,
}

/// What a server transaction belongs to.
#[derive(Debug, Clone, Copy)]
pub(super) enum ServerRole {
    /// The caller's initial INVITE.
    Invite,
    /// An in-dialog request being relayed.
    Relay(u64),
    /// A bridged picker's own INVITE, answered by us (its ACK may let a re-INVITE go).
    Bridged,
}

/// One dialog toward the B side: an INVITE to a registered contact of the callee, the
/// Replaces INVITE to a picker, or (fallback) the picker's own INVITE answered by us.
#[derive(Debug)]
pub(super) struct Fork {
    /// Our INVITE's transaction (None for the picker's own INVITE, which we answered).
    pub(super) tx: Option<ClientTxId>,
    pub(super) dialog: Dialog,
    /// Final status received (or 408 on timeout); None while pending.
    pub(super) final_status: Option<(u16, String)>,
    /// The pickup this fork belongs to, if it reaches a picker.
    pub(super) pickup: Option<u64>,
    /// The extension whose phone this fork reaches (a group's member, the picker); None
    /// for a line port dialled out by prefix.
    pub(super) extension: Option<String>,
}

/// An in-dialog request relayed from one leg to the other.
#[derive(Debug)]
pub(super) struct Relay {
    pub(super) from: Side,
    pub(super) server_tx: ServerTxId,
    pub(super) client_tx: ClientTxId,
    pub(super) method: Method,
    /// CSeq number used toward the other leg (the ACK for a 2xx reuses it).
    pub(super) cseq: u32,
    /// The ACK sent for the other leg's 2xx, resent when that 2xx is retransmitted.
    pub(super) ack_sent: Option<SipMessage>,
    pub(super) cancelled: bool,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub(super) struct Party {
    pub(super) number: String,
    pub(super) display: Option<String>,
    pub(super) uri: String,
}

/// The claim a pickup holds on a call while it tries to take it.
#[derive(Debug, Clone)]
pub(super) struct PickupRecord {
    /// The pickup's number.
    pub(super) id: u64,
    pub(super) picker: String,
    pub(super) method: PickupMethod,
    pub(super) at_ms: u64,
}

/// One B2BUA call.
#[derive(Debug)]
pub(super) struct Call {
    /// Key of the call's context in the store.
    pub(super) key: String,
    pub(super) a_tx: ServerTxId,
    pub(super) a: Dialog,
    /// The caller's offer (empty when the INVITE had none).
    pub(super) offer: Bytes,
    pub(super) offer_type: Option<String>,
    pub(super) caller: Party,
    pub(super) called: String,
    pub(super) forks: Vec<Fork>,
    /// Index of the fork that answered.
    pub(super) answered: Option<usize>,
    /// The ACK sent for the answering fork's 2xx (resent on retransmissions).
    pub(super) b_ack: Option<SipMessage>,
    pub(super) deadline: Option<Instant>,
    pub(super) relays: HashMap<u64, Relay>,
    pub(super) ring_started_ms: u64,
    /// Whether the caller got its first ringing or final response (the setup latency
    /// is measured then).
    pub(super) set_up: bool,
    /// Who answered and who pays, once answered.
    pub(super) answer: Option<Answer>,
    /// The pickup in progress, if any (the call is claimed and not ringing the callee).
    pub(super) picking: Option<u64>,
    /// The claim of the pickup in progress, until it takes the call or fails.
    pub(super) claim: Option<PickupRecord>,
    /// The call's media relay, when anchored.
    pub(super) anchor: Option<super::media::Anchor>,
    /// The last session description the gateway sent to each side (by [`Side::index`]),
    /// whose o= line a re-offer of its own continues.
    pub(super) sent_sdp: [Option<Bytes>; 2],
    /// Whether the INVITE transaction that set up each side is over (it ACKed our 2xx, or
    /// we ACKed its 2xx): a re-INVITE of ours may go.
    pub(super) settled: [bool; 2],
    /// Re-offers owed to each side.
    pub(super) reoffers: [Option<super::reoffer::Reoffer>; 2],
    /// Phones of the callee registered through other nodes, reached through them (found in
    /// the store when the call came in; rung again with the local ones after a failed
    /// pickup).
    pub(super) remote: Vec<(Option<String>, crate::registrar::Binding)>,
    /// Set when this node only carries the call for another node, which keeps its context
    /// and bills it (so this one writes neither; see `engine/nodes.rs`).
    pub(super) relayed: Option<Relayed>,
}

/// A call this node carries for another node of the cluster.
#[derive(Debug, Clone)]
pub(super) struct Relayed {
    /// The node that keeps the call's context and writes its CDR.
    pub(super) recorded_by: String,
    /// What the call is for.
    pub(super) leg: RelayLeg,
}

/// Why a call is carried for another node.
#[derive(Debug, Clone)]
pub(super) enum RelayLeg {
    /// The other node routed a call here for a phone registered through this one.
    Call,
    /// A picker of this node claimed a call ringing on the other node: the one fork goes
    /// there with the claim (`X-Gateway-Pickup`), and the owner runs the pickup.
    PickupToOwner {
        /// The `X-Gateway-Pickup` value.
        claim: String,
    },
    /// The owner's INVITE with Replaces for a picker of this node: the one fork goes to the
    /// picker over its flow, with these headers (the Replaces translated to the picker's
    /// dialog with this node, the auto-answer hints and identity copied).
    ReplacesToPicker {
        /// Header fields for the fork's INVITE.
        headers: Vec<(ezk_sip_types::Name, String)>,
    },
}

impl Relayed {
    /// Whether the fork goes only where the relay says (not to the callee's phones).
    pub(super) fn rings_only_remote(&self) -> bool {
        !matches!(self.leg, RelayLeg::Call)
    }

    /// The header fields each fork's INVITE carries.
    pub(super) fn fork_headers(&self) -> Vec<(ezk_sip_types::Name, String)> {
        match &self.leg {
            RelayLeg::Call => Vec::new(),
            RelayLeg::PickupToOwner { claim } => {
                vec![(
                    ezk_sip_types::Name::from(super::nodes::PICKUP_HEADER),
                    claim.clone(),
                )]
            }
            RelayLeg::ReplacesToPicker { headers } => headers.clone(),
        }
    }
}

impl Call {
    /// The dialog toward `side` (B only once answered).
    pub(super) fn dialog(&mut self, side: Side) -> Option<&mut Dialog> {
        match side {
            Side::A => Some(&mut self.a),
            Side::B => self.answered.map(|i| &mut self.forks[i].dialog),
        }
    }

    /// Forks still waiting for a final response, with their INVITE transactions.
    pub(super) fn pending_forks(&self) -> impl Iterator<Item = ClientTxId> + '_ {
        self.forks
            .iter()
            .filter(|f| f.final_status.is_none())
            .filter_map(|f| f.tx)
    }

    /// Accepts fork `index`'s answer: the callee answered, or the picker whose fork it is
    /// (its claim becomes the answer). Returns what the store records.
    pub(super) fn accept_answer(&mut self, index: usize, now_ms: u64) -> Answer {
        let pickup = self.forks[index].pickup;
        let answer = match self.claim.take_if(|claim| pickup == Some(claim.id)) {
            Some(claim) => Answer {
                answer_ms: now_ms,
                answered_by: claim.picker.clone(),
                billed: claim.picker,
                pickup_method: claim.method,
                pickup_ms: Some(claim.at_ms),
            },
            None => Answer {
                answer_ms: now_ms,
                answered_by: self.called.clone(),
                billed: self.caller.number.clone(),
                pickup_method: PickupMethod::None,
                pickup_ms: None,
            },
        };
        self.answered = Some(index);
        self.answer = Some(answer.clone());
        answer
    }

    /// The pickup holding the claim failed at `now_ms` for `reason`: the record the store
    /// keeps of it (None without a claim).
    pub(super) fn fail_claim(&mut self, now_ms: u64, reason: &str) -> Option<StoreCommand> {
        let claim = self.claim.take()?;
        Some(StoreCommand::RecordFailedPickup {
            call_key: self.key.clone(),
            failed: FailedPickup {
                picker: claim.picker,
                method: claim.method.as_str().into(),
                claimed_ms: claim.at_ms,
                failed_ms: now_ms,
                reason: reason.into(),
            },
        })
    }

    /// The CDR for this call, ending at `end_ms`.
    pub(super) fn cdr(&self, node: &str, end_ms: u64, disposition: &str, cause: &str) -> Cdr {
        let answer = self.answer.as_ref();
        Cdr {
            call_key: self.key.clone(),
            caller: self.caller.number.clone(),
            called: self.called.clone(),
            answered_by: answer.map(|a| a.answered_by.clone()),
            pickup_method: answer
                .map_or(PickupMethod::None, |a| a.pickup_method)
                .as_str()
                .into(),
            billed: Some(answer.map_or_else(|| self.caller.number.clone(), |a| a.billed.clone())),
            ring_start_ms: self.ring_started_ms,
            pickup_ms: answer.and_then(|a| a.pickup_ms),
            answer_ms: answer.map(|a| a.answer_ms),
            end_ms,
            duration_ms: answer.map_or(0, |a| end_ms.saturating_sub(a.answer_ms)),
            disposition: disposition.into(),
            hangup_cause: cause.into(),
            node: node.into(),
            media: None,
        }
    }
}

/// A pickup in progress: the picker's INVITE and what became of it.
#[derive(Debug)]
pub(super) struct Pickup {
    pub(super) picker: String,
    pub(super) method: PickupMethod,
    /// The picker's INVITE.
    pub(super) tx: ServerTxId,
    pub(super) peer: Peer,
    /// Our To-tag in the dummy early dialog.
    pub(super) dummy_tag: String,
    /// Whether the picker's INVITE is still unanswered (the dummy early dialog is open).
    pub(super) dummy_open: bool,
    /// Whether to send an INVITE with Replaces (else bridge the picker's own INVITE).
    pub(super) use_replaces: bool,
    /// The claimed call, once the store answered.
    pub(super) call: Option<u64>,
    /// The claimed call's context, as read from the store.
    pub(super) context: Option<Box<CallContext>>,
    /// The SDP answer of the dummy dialog's 183, which the picker holds to (RFC 3261
    /// §13.2.1): a 200 to its INVITE repeats it.
    pub(super) early_answer: Option<Bytes>,
    /// The dummy early dialog's key in `Calls::pickup_by_dialog`, once it has one.
    pub(super) dummy_dialog: Option<(String, String)>,
    /// When the pickup falls back if its Replaces INVITE hears nothing (its entry in
    /// `Calls::silence_deadlines`).
    pub(super) silence_at: Option<Instant>,
    /// Whether the metrics counted how it ended (or another shard or node took it over
    /// and counts it there).
    pub(super) counted: bool,
}

impl Pickup {
    /// The way this pickup hands the call over when it succeeds without falling back.
    pub(super) fn path(&self) -> PickupPath {
        match (self.method, self.use_replaces) {
            (PickupMethod::Replaces, _) => PickupPath::Blf,
            (_, true) => PickupPath::Replaces,
            (_, false) => PickupPath::Bridged,
        }
    }
}

/// Which call a transaction or dialog belongs to, with each call's own keys so forgetting
/// a call touches only its entries (not every entry of every call).
#[derive(Debug, Default)]
pub(super) struct CallIndex {
    pub(super) by_server_tx: HashMap<ServerTxId, (u64, ServerRole)>,
    pub(super) by_client_tx: HashMap<ClientTxId, (u64, ClientRole)>,
    pub(super) by_dialog: HashMap<(String, String), (u64, Side)>,
    /// Every leg a call rang or came in on, answered or not, by (Call-ID, our tag): what an
    /// INVITE with Replaces may name.
    by_leg: HashMap<(String, String), u64>,
    keys: HashMap<u64, CallKeys>,
}

/// The index keys one call added.
#[derive(Debug, Default)]
struct CallKeys {
    server_txs: Vec<ServerTxId>,
    client_txs: Vec<ClientTxId>,
    dialogs: Vec<(String, String)>,
    legs: Vec<(String, String)>,
}

impl CallIndex {
    /// Files server transaction `tx` under call `id`.
    pub(super) fn add_server_tx(&mut self, tx: ServerTxId, id: u64, role: ServerRole) {
        self.by_server_tx.insert(tx, (id, role));
        self.keys.entry(id).or_default().server_txs.push(tx);
    }

    /// Files client transaction `tx` under call `id`.
    pub(super) fn add_client_tx(&mut self, tx: ClientTxId, id: u64, role: ClientRole) {
        self.by_client_tx.insert(tx, (id, role));
        if !matches!(role, ClientRole::Detached) {
            self.keys.entry(id).or_default().client_txs.push(tx);
        }
    }

    /// Files dialog (Call-ID, our tag) under call `id`.
    pub(super) fn add_dialog(&mut self, dialog: (String, String), id: u64, side: Side) {
        self.keys
            .entry(id)
            .or_default()
            .dialogs
            .push(dialog.clone());
        self.by_dialog.insert(dialog, (id, side));
    }

    /// Files leg (Call-ID, our tag) under call `id`, for INVITEs with Replaces.
    pub(super) fn add_leg(&mut self, leg: (String, String), id: u64) {
        self.keys.entry(id).or_default().legs.push(leg.clone());
        self.by_leg.insert(leg, id);
    }

    /// The call with a leg of Call-ID `call_id` on which our tag is `tag`.
    pub(super) fn call_of_leg(&self, call_id: &str, tag: &str) -> Option<u64> {
        self.by_leg
            .get(&(call_id.to_string(), tag.to_string()))
            .copied()
    }

    /// Drops server transaction `tx` (it ended while its call goes on).
    pub(super) fn remove_server_tx(&mut self, tx: &ServerTxId) {
        if let Some((id, _)) = self.by_server_tx.remove(tx) {
            if let Some(keys) = self.keys.get_mut(&id) {
                keys.server_txs.retain(|t| t != tx);
            }
        }
    }

    /// Drops client transaction `tx` (it ended while its call goes on, or it was detached).
    pub(super) fn remove_client_tx(&mut self, tx: &ClientTxId) {
        if let Some((id, _)) = self.by_client_tx.remove(tx) {
            if let Some(keys) = self.keys.get_mut(&id) {
                keys.client_txs.retain(|t| t != tx);
            }
        }
    }

    /// Drops every entry of call `id`, except detached transactions (a BYE still running
    /// after the call ended finds its way through them).
    fn forget(&mut self, id: u64) {
        let Some(keys) = self.keys.remove(&id) else {
            return;
        };
        drop_owned(&mut self.by_server_tx, keys.server_txs, id, |_| true);
        drop_owned(&mut self.by_client_tx, keys.client_txs, id, |role| {
            !matches!(role, ClientRole::Detached)
        });
        drop_owned(&mut self.by_dialog, keys.dialogs, id, |_| true);
        for leg in keys.legs {
            if self.by_leg.get(&leg) == Some(&id) {
                self.by_leg.remove(&leg);
            }
        }
    }
}

/// Removes the entries under `keys` that still belong to call `id` and that `droppable`
/// accepts (an entry refiled under another call stays).
fn drop_owned<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, (u64, V)>,
    keys: Vec<K>,
    id: u64,
    droppable: impl Fn(&V) -> bool,
) {
    for key in keys {
        if map
            .get(&key)
            .is_some_and(|(call, value)| *call == id && droppable(value))
        {
            map.remove(&key);
        }
    }
}

/// The calls in progress by id, with what BLF needs to find what changed without looking
/// at every call: the calls touched (handed out for change, started or ended) since BLF last
/// asked, and the extensions each call involves as BLF last derived them, indexed both
/// ways. Every change to a call goes through [`CallTable::get_mut`], so a call changed is a
/// call touched.
#[derive(Debug, Default)]
pub(super) struct CallTable {
    calls: HashMap<u64, Call>,
    involved: HashMap<u64, Vec<String>>,
    by_extension: HashMap<String, BTreeSet<u64>>,
    touched: BTreeSet<u64>,
    /// The extensions of calls removed since BLF last asked.
    ended: BTreeSet<String>,
}

impl CallTable {
    /// Call `id`, to read.
    pub(super) fn get(&self, id: &u64) -> Option<&Call> {
        self.calls.get(id)
    }

    /// Call `id`, to change (noted as touched).
    pub(super) fn get_mut(&mut self, id: &u64) -> Option<&mut Call> {
        let call = self.calls.get_mut(id)?;
        self.touched.insert(*id);
        Some(call)
    }

    /// Adds call `id` (noted as touched).
    pub(super) fn insert(&mut self, id: u64, call: Call) {
        self.touched.insert(id);
        self.calls.insert(id, call);
    }

    /// Removes call `id`; the extensions it involved are noted as changed.
    pub(super) fn remove(&mut self, id: &u64) -> Option<Call> {
        let call = self.calls.remove(id)?;
        self.touched.remove(id);
        let involved = self.involved.remove(id).unwrap_or_default();
        self.unindex(*id, &involved);
        self.ended.extend(involved);
        Some(call)
    }

    /// Every call, for what looks at all of them (a node gone, the periodic billing mark).
    pub(super) fn values(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    /// Every call with its id.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&u64, &Call)> {
        self.calls.iter()
    }

    /// The calls that involved `extension` when BLF last derived it.
    pub(super) fn of_extension<'a>(&'a self, extension: &str) -> impl Iterator<Item = &'a Call> {
        self.by_extension
            .get(extension)
            .into_iter()
            .flatten()
            .filter_map(|id| self.calls.get(id))
    }

    /// The calls touched since the last time (still in the table), and the extensions of
    /// the calls removed meanwhile.
    pub(super) fn take_touched(&mut self) -> (Vec<u64>, BTreeSet<String>) {
        let touched = std::mem::take(&mut self.touched).into_iter().collect();
        (touched, std::mem::take(&mut self.ended))
    }

    /// Call `id` now involves `extensions`; returns those it involved before and no longer
    /// does.
    pub(super) fn set_involved(&mut self, id: u64, extensions: Vec<String>) -> Vec<String> {
        let before = self.involved.remove(&id).unwrap_or_default();
        let dropped: Vec<String> = before
            .into_iter()
            .filter(|e| !extensions.contains(e))
            .collect();
        self.unindex(id, &dropped);
        for extension in &extensions {
            self.by_extension
                .entry(extension.clone())
                .or_default()
                .insert(id);
        }
        self.involved.insert(id, extensions);
        dropped
    }

    fn unindex(&mut self, id: u64, extensions: &[String]) {
        for extension in extensions {
            if let Some(ids) = self.by_extension.get_mut(extension) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_extension.remove(extension);
                }
            }
        }
    }
}

/// The call table, pickups, and their indexes.
#[derive(Debug, Default)]
pub(super) struct Calls {
    pub(super) calls: CallTable,
    /// Call numbers (they end call keys, which name the shard).
    pub(super) numbers: super::shard::Numbers,
    pub(super) next_relay: u64,
    pub(super) index: CallIndex,
    pub(super) by_key: HashMap<String, u64>,
    pub(super) deadlines: BTreeSet<(Instant, u64)>,
    pub(super) pickups: HashMap<u64, Pickup>,
    /// Pickup numbers (store answers name them, and so the shard).
    pub(super) pickup_numbers: super::shard::Numbers,
    /// The picker's INVITE transaction -> pickup.
    pub(super) pickup_by_tx: HashMap<ServerTxId, u64>,
    /// The dummy early dialog (picker's Call-ID, our tag) -> pickup.
    pub(super) pickup_by_dialog: HashMap<(String, String), u64>,
    /// Pickups whose Replaces INVITE got no answer at all yet: when to fall back.
    pub(super) silence_deadlines: BTreeSet<(Instant, u64)>,
    /// Re-offer deadlines (glare waits, unanswered re-INVITEs): (when, call, side index).
    pub(super) reoffer_deadlines: BTreeSet<(Instant, u64, usize)>,
}

impl Calls {
    /// The empty call table of shard `shard`.
    pub(super) fn on_shard(shard: super::shard::ShardId) -> Calls {
        Calls {
            numbers: shard.numbers(0),
            pickup_numbers: shard.numbers(0),
            ..Calls::default()
        }
    }

    /// Pickup `id` falls back at `at` unless its Replaces INVITE hears something first.
    pub(super) fn set_silence_deadline(&mut self, id: u64, at: Instant) {
        self.clear_silence_deadline(id);
        if let Some(pickup) = self.pickups.get_mut(&id) {
            pickup.silence_at = Some(at);
            self.silence_deadlines.insert((at, id));
        }
    }

    /// Pickup `id` no longer waits for its Replaces INVITE's first answer.
    pub(super) fn clear_silence_deadline(&mut self, id: u64) {
        if let Some(at) = self.pickups.get_mut(&id).and_then(|p| p.silence_at.take()) {
            self.silence_deadlines.remove(&(at, id));
        }
    }

    /// The next pickup whose Replaces INVITE heard nothing by `now`, taken off the queue.
    pub(super) fn pop_silent_pickup(&mut self, now: Instant) -> Option<u64> {
        let &(at, id) = self
            .silence_deadlines
            .first()
            .filter(|(at, _)| *at <= now)?;
        self.silence_deadlines.remove(&(at, id));
        if let Some(pickup) = self.pickups.get_mut(&id) {
            pickup.silence_at = None;
        }
        Some(id)
    }

    /// Forgets pickup `id` and its index entries.
    pub(super) fn remove_pickup(&mut self, id: u64) -> Option<Pickup> {
        self.clear_silence_deadline(id);
        let pickup = self.pickups.remove(&id)?;
        if self.pickup_by_tx.get(&pickup.tx) == Some(&id) {
            self.pickup_by_tx.remove(&pickup.tx);
        }
        if let Some(key) = &pickup.dummy_dialog {
            if self.pickup_by_dialog.get(key) == Some(&id) {
                self.pickup_by_dialog.remove(key);
            }
        }
        Some(pickup)
    }

    /// The earliest ring timeout, pickup fallback or re-offer deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let ring = self.deadlines.first().map(|(at, _)| *at);
        let silence = self.silence_deadlines.first().map(|(at, _)| *at);
        let reoffer = self.reoffer_deadlines.first().map(|(at, ..)| *at);
        ring.into_iter().chain(silence).chain(reoffer).min()
    }

    /// Forgets a call and every index entry pointing at it.
    pub(super) fn remove(&mut self, id: u64) -> Option<Call> {
        let call = self.calls.remove(&id)?;
        self.index.forget(id);
        self.by_key.remove(&call.key);
        if let Some(at) = call.deadline {
            self.deadlines.remove(&(at, id));
        }
        Some(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(key: &str) -> Call {
        let peer = Peer {
            protocol: crate::transport::Protocol::Udp,
            addr: "127.0.0.1:5072".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        };
        Call {
            key: key.into(),
            a_tx: ServerTxId(1),
            a: Dialog {
                call_id: key.into(),
                local_tag: "gw".into(),
                remote_tag: Some("ph".into()),
                local_uri: "<sip:201@gw>".into(),
                remote_uri: "<sip:202@gw>".into(),
                remote_target: "sip:202@127.0.0.1:5072".into(),
                local_cseq: 1,
                peer,
            },
            offer: Bytes::new(),
            offer_type: None,
            caller: Party {
                number: "202".into(),
                display: None,
                uri: "sip:202@gw".into(),
            },
            called: "201".into(),
            forks: Vec::new(),
            answered: None,
            b_ack: None,
            deadline: None,
            relays: HashMap::new(),
            ring_started_ms: 0,
            set_up: false,
            answer: None,
            picking: None,
            claim: None,
            anchor: None,
            sent_sdp: [None, None],
            settled: [false, false],
            reoffers: [None, None],
            remote: Vec::new(),
            relayed: None,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// BLF derives again only what a call changed, started or ended since it last asked,
    /// whatever else is in progress (no work per call up).
    #[test]
    fn the_table_hands_out_only_the_calls_touched_since_it_was_last_asked() {
        let mut table = CallTable::default();
        for id in 0..1000 {
            table.insert(id, call(&format!("c{id}")));
            assert!(table
                .set_involved(id, strings(&[&format!("{id}"), "201"]))
                .is_empty());
        }
        let (touched, ended) = table.take_touched();
        assert_eq!(touched.len(), 1000, "new calls are touched");
        assert!(ended.is_empty());
        assert_eq!(table.of_extension("201").count(), 1000);
        assert_eq!(table.of_extension("7").count(), 1);

        assert!(table.get(&7).is_some());
        assert_eq!(
            table.take_touched().0,
            Vec::<u64>::new(),
            "a read is no change"
        );
        table.get_mut(&7).unwrap().picking = Some(1);
        assert_eq!(table.take_touched().0, [7]);
        assert_eq!(
            table.set_involved(7, strings(&["7", "205"])),
            ["201"],
            "an extension no longer involved is handed back"
        );
        assert_eq!(table.of_extension("201").count(), 999);

        table.remove(&9).unwrap();
        let (touched, ended) = table.take_touched();
        assert!(touched.is_empty(), "a removed call is not handed out");
        assert_eq!(ended, ["201", "9"].iter().map(|s| s.to_string()).collect());
        assert_eq!(table.of_extension("9").count(), 0);
        assert_eq!(table.take_touched(), (Vec::new(), BTreeSet::new()));
    }

    #[test]
    fn forgetting_a_call_drops_only_its_own_entries_and_keeps_detached_byes() {
        let mut index = CallIndex::default();
        for id in [1, 2] {
            index.add_server_tx(ServerTxId(id), id, ServerRole::Invite);
            index.add_client_tx(ClientTxId(id), id, ClientRole::Fork(0));
            index.add_dialog((format!("call-{id}"), "tag".into()), id, Side::A);
        }
        index.add_client_tx(ClientTxId(10), 1, ClientRole::Detached);
        // An entry refiled under another call stays with that call.
        index.add_dialog(("call-1".into(), "tag".into()), 2, Side::B);
        // A transaction that ends while its call goes on leaves no key behind.
        index.add_client_tx(ClientTxId(20), 2, ClientRole::Relay(1));
        index.remove_client_tx(&ClientTxId(20));
        assert_eq!(index.keys[&2].client_txs, [ClientTxId(2)]);
        index.forget(1);
        assert!(!index.by_server_tx.contains_key(&ServerTxId(1)));
        assert!(!index.by_client_tx.contains_key(&ClientTxId(1)));
        assert!(index.by_client_tx.contains_key(&ClientTxId(10)));
        assert!(index
            .by_dialog
            .contains_key(&("call-1".to_string(), "tag".to_string())));
        index.forget(2);
        assert_eq!(index.by_server_tx.len(), 0);
        assert_eq!(index.by_dialog.len(), 0);
        assert_eq!(index.by_client_tx.len(), 1, "only the detached BYE is left");
        assert!(index.keys.is_empty());
    }
}
