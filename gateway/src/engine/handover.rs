//! Pickups across engine shards. A picker's INVITE lands on the shard its Call-ID names;
//! the store claim (made there, as for any pickup) may win a call of another shard (its
//! call key names the shard). The picker's shard then hands the pickup over: the INVITE,
//! unanswered, with the claim, to the call's shard, which takes over its transaction
//! ([`crate::sip::transaction::TxLayer::adopt_request`]) and runs the pickup as its own —
//! dummy dialog, INVITE with Replaces or the bridge, CDR — so every call stays whole on one
//! shard. From then on the picker's Call-ID is routed to the call's shard (a route the
//! runtime applies before the handover leaves, so nothing the picker sends later goes
//! astray); a message of it that had already been queued on the picker's shard is handed
//! on too. The route is dropped [`ROUTE_LINGER`] after the last call or pickup with that
//! Call-ID ended (its transactions are over by then).

use super::shard::{ShardMessage, ShardOutput};
use super::{Engine, Now};
use crate::sip::message::SipMessage;
use crate::sip::transaction::ServerTxId;
use crate::store::{CallContext, ClaimOutcome, PickupMethod};
use crate::transport::Peer;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a handed-over Call-ID keeps its route after its last use: Timer H / J (64 x
/// T1, 32 s), the longest a transaction of it lives on.
pub const ROUTE_LINGER: Duration = Duration::from_secs(32);

/// A pickup handed to the shard of the call it claimed.
#[derive(Debug, Clone)]
pub struct HandedPickup {
    /// The picker's INVITE, unanswered.
    pub(super) request: SipMessage,
    /// Where it came from.
    pub(super) peer: Peer,
    /// The authenticated picker.
    pub(super) picker: String,
    /// How the picker asked.
    pub(super) method: PickupMethod,
    /// Whether the picker gets an INVITE with Replaces (else its INVITE is bridged).
    pub(super) use_replaces: bool,
    /// The claimed call, as the store gave it.
    pub(super) context: Box<CallContext>,
}

/// A shard's handed-over Call-IDs, both ways.
#[derive(Debug, Default)]
pub(super) struct Handovers {
    /// Call-IDs this shard handed on: to which shard, until when a straggler of them is
    /// handed on too.
    handed: HashMap<String, (usize, Instant)>,
    /// Call-IDs handed to this shard: None while a call or pickup uses them, then when
    /// their route goes.
    adopted: HashMap<String, Option<Instant>>,
}

impl Handovers {
    /// The shard a message of `call_id` goes on to, if this shard handed it over.
    fn destination(&self, call_id: &str) -> Option<usize> {
        self.handed.get(call_id).map(|(shard, _)| *shard)
    }
}

impl Engine {
    /// The shard a claimed call lives on, when it is not this one.
    pub(super) fn claimed_elsewhere(&self, context: &CallContext) -> Option<usize> {
        self.shard
            .of_call_key(&context.call_key)
            .filter(|&shard| shard != self.shard.index())
    }

    /// Pickup `id` won a call of shard `owner`: its INVITE goes there, unanswered, and the
    /// picker's Call-ID with it.
    pub(super) fn hand_over_pickup(
        &mut self,
        now: Now,
        id: u64,
        context: Box<CallContext>,
        owner: usize,
    ) {
        let Some(pickup) = self.calls.pickups.get(&id) else {
            return;
        };
        let (tx, peer, picker) = (pickup.tx, pickup.peer, pickup.picker.clone());
        let (method, use_replaces) = (pickup.method, pickup.use_replaces);
        let Some(request) = self.tx.request(tx).cloned() else {
            return;
        };
        let Some(call_id) = request.call_id().map(str::to_string) else {
            return;
        };
        self.pickup_handed_on(id);
        self.finish_pickup(now, id, None);
        self.tx.forget_server(tx);
        tracing::info!(
            "pickup {id}: {picker} claimed call {} of engine shard {owner}: handed over",
            context.call_key
        );
        self.route_to(now, call_id, owner);
        self.shard_outputs.push_back(ShardOutput::To(
            owner,
            ShardMessage::Pickup(Box::new(HandedPickup {
                request,
                peer,
                picker,
                method,
                use_replaces,
                context,
            })),
        ));
    }

    /// Request `tx` (from `peer`, unanswered but for a 100) belongs with a dialog of shard
    /// `owner` (an INVITE with Replaces from the node that runs a pickup for a picker of
    /// this node): it goes there to be handled afresh, its Call-ID with it.
    pub(super) fn hand_over_request(&mut self, now: Now, tx: ServerTxId, peer: Peer, owner: usize) {
        let Some(request) = self.tx.request(tx).cloned() else {
            return;
        };
        let Some(call_id) = request.call_id().map(str::to_string) else {
            return;
        };
        self.tx.forget_server(tx);
        tracing::info!(
            "{} of Call-ID {call_id} for a dialog of engine shard {owner}: handed over",
            request
                .method()
                .map_or("a request".to_string(), |m| m.to_string())
        );
        self.route_to(now, call_id, owner);
        self.shard_outputs.push_back(ShardOutput::To(
            owner,
            ShardMessage::Request {
                peer,
                msg: Box::new(request),
            },
        ));
    }

    /// Messages of `call_id` go to shard `owner` from now on (and a straggler queued here,
    /// on to it).
    fn route_to(&mut self, now: Now, call_id: String, owner: usize) {
        self.handovers
            .handed
            .insert(call_id.clone(), (owner, now.mono + ROUTE_LINGER));
        self.shard_outputs.push_back(ShardOutput::Route {
            call_id,
            shard: Some(owner),
        });
    }

    /// Takes a message another shard hands over.
    pub fn handle_shard_message(&mut self, now: Now, message: ShardMessage) {
        match message {
            ShardMessage::Pickup(pickup) => self.adopt_pickup(now, *pickup),
            ShardMessage::Request { peer, msg } => {
                if let Some(call_id) = msg.call_id() {
                    self.handovers.adopted.insert(call_id.to_string(), None);
                }
                self.handle_message(now, peer, *msg);
            }
            ShardMessage::Message { peer, msg } => self.handle_message(now, peer, *msg),
        }
    }

    /// Runs a pickup another shard claimed for a call of this one.
    fn adopt_pickup(&mut self, now: Now, handed: HandedPickup) {
        let HandedPickup {
            request,
            peer,
            picker,
            method,
            use_replaces,
            context,
        } = handed;
        let Some(call_id) = request.call_id().map(str::to_string) else {
            return;
        };
        let Some(tx) = self.tx.adopt_request(now.mono, request, peer) else {
            return;
        };
        self.handovers.adopted.insert(call_id, None);
        let id = self.open_pickup(tx, peer, &picker, method, use_replaces);
        tracing::info!(
            "pickup {id}: {picker}'s claim of call {} taken over from another shard",
            context.call_key
        );
        self.on_claim(now, id, ClaimOutcome::Claimed(context));
        self.process_events(now);
    }

    /// A message of a Call-ID this shard handed over (it was queued here before the route
    /// changed): it goes on to that shard. False for every other message.
    pub(super) fn hands_on(&mut self, peer: Peer, msg: &SipMessage) -> bool {
        if self.handovers.handed.is_empty() {
            return false;
        }
        let Some(shard) = msg.call_id().and_then(|id| self.handovers.destination(id)) else {
            return false;
        };
        self.shard_outputs.push_back(ShardOutput::To(
            shard,
            ShardMessage::Message {
                peer,
                msg: Box::new(msg.clone()),
            },
        ));
        true
    }

    /// Forgets handed-over Call-IDs whose time is up: stragglers are no longer expected
    /// here, and an adopted one no call or pickup has used for [`ROUTE_LINGER`] loses its
    /// route.
    pub(super) fn expire_handovers(&mut self, now: Now) {
        self.handovers
            .handed
            .retain(|_, (_, until)| *until > now.mono);
        if self.handovers.adopted.is_empty() {
            return;
        }
        let ids: Vec<String> = self.handovers.adopted.keys().cloned().collect();
        for call_id in ids {
            let in_use = self.uses_call_id(&call_id);
            let Some(state) = self.handovers.adopted.get_mut(&call_id) else {
                continue;
            };
            match (*state, in_use) {
                (_, true) => *state = None,
                (None, false) => *state = Some(now.mono + ROUTE_LINGER),
                (Some(until), false) if until <= now.mono => {
                    self.handovers.adopted.remove(&call_id);
                    self.shard_outputs.push_back(ShardOutput::Route {
                        call_id,
                        shard: None,
                    });
                }
                (Some(_), false) => {}
            }
        }
    }

    /// Whether a call or pickup of this shard has a dialog or transaction in `call_id`.
    fn uses_call_id(&self, call_id: &str) -> bool {
        let pickups = self.calls.pickups.values().any(|pickup| {
            self.tx
                .request(pickup.tx)
                .and_then(SipMessage::call_id)
                .is_some_and(|id| id == call_id)
        });
        pickups
            || self.calls.calls.values().any(|call| {
                call.a.call_id == call_id
                    || call.forks.iter().any(|fork| fork.dialog.call_id == call_id)
            })
    }
}
