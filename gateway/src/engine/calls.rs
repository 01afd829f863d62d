//! The B2BUA: a caller's INVITE (leg A) forks to every registered contact of the callee
//! (legs B), each leg a dialog of its own with its own Call-ID and tags. Provisional and
//! final responses, ACK, BYE, CANCEL and in-dialog requests (re-INVITE, UPDATE, INFO...) are
//! relayed between the legs; SDP passes through unchanged (anchored calls: pointed at the
//! relay), except that a caller's 2xx repeats the early answer it already holds
//! ([`Engine::answer_body`]). Pickups (`pickup.rs`) hook in where a call rings.

use super::call::{Call, ClientRole, Fork, Party, Relay, RelayLeg, Relayed, ServerRole, Side};
use super::dialog::{copy_body, Dialog};
use super::nodes::{Invite, PICKUP_HEADER};
use super::registration::ChallengeKind;
use super::{add_capabilities, Engine, Now};
use crate::registrar::Binding;
use crate::sip::ids;
use crate::sip::message::{NameAddrValue, SipMessage, StartLine};
use crate::sip::target::UriTarget;
use crate::sip::transaction::{ClientTxId, ServerTxId};
use crate::srtp::policy::{self, Security};
use crate::store::{CallContext, LegIds, StoreCommand};
use crate::transport::{Peer, Protocol};
use ezk_sip_types::{Method, Name};
use std::collections::HashMap;

/// Where requests for a registered contact go. Over UDP: the address the REGISTER came
/// from (what phones behind NAT need). Over TCP: the Contact's address when it is an IP
/// address and port, because the registering connection may be gone (the transport reuses a
/// live connection to that address, or opens one).
fn route_to(binding: &Binding) -> Peer {
    if binding.source.protocol == Protocol::Tcp {
        let contact = UriTarget::parse(&binding.contact).and_then(|t| t.explicit_addr());
        if let Some(addr) = contact {
            return Peer {
                protocol: Protocol::Tcp,
                addr,
                local: binding.source.local,
            };
        }
    }
    binding.source
}

/// The reason phrase of a response.
pub(super) fn reason_of(msg: &SipMessage) -> String {
    match &msg.start {
        StartLine::Response(line) => line.reason.clone(),
        StartLine::Request(_) => String::new(),
    }
}

/// Picks the response the caller gets when every fork failed (RFC 3261 §16.7 in spirit:
/// a 6xx wins, then busy, then the lowest class; auth and redirects become 480).
fn best_failure(finals: &[(u16, String)]) -> (u16, String) {
    let pick = finals
        .iter()
        .find(|(code, _)| *code >= 600)
        .or_else(|| finals.iter().find(|(code, _)| *code == 486))
        .or_else(|| finals.iter().min_by_key(|(code, _)| *code))
        .cloned()
        .unwrap_or((480, "Temporarily Unavailable".into()));
    match pick.0 {
        300..=399 | 401 | 407 => (480, "Temporarily Unavailable".into()),
        _ => pick,
    }
}

/// The CDR disposition for a failed call's final status.
fn disposition_of(code: u16) -> &'static str {
    match code {
        486 | 600 => "busy",
        408 | 480 => "no-answer",
        487 => "cancelled",
        _ => "failed",
    }
}

impl Engine {
    pub(super) fn on_invite(&mut self, now: Now, tx: ServerTxId, msg: SipMessage, peer: Peer) {
        let Some(from) = msg.from_header() else {
            self.reply(now, tx, 400, "Bad Request (malformed From)");
            return;
        };
        let claimed = from.user();
        let from_node = self.trusted_node(now, &msg, peer);
        let user = if peer.protocol == Protocol::Internal || from_node.is_some() {
            // The analog ports' own user agent: it speaks for its port (an extension, or
            // the PSTN caller on a line). Another node: it authenticated its caller.
            claimed.clone().unwrap_or_default()
        } else {
            let Some(user) = self.authenticate(
                now,
                tx,
                &msg,
                (claimed.as_deref(), peer),
                ChallengeKind::Proxy,
            ) else {
                return;
            };
            user
        };
        if claimed.as_deref() != Some(user.as_str()) {
            self.reply(
                now,
                tx,
                403,
                "Forbidden (From does not match the authenticated user)",
            );
            return;
        }
        // SDES keys only over TLS, and the caller's SRTP policy (analog ports have none).
        let caller_policy = match peer.protocol {
            Protocol::Internal => None,
            _ => self.config.srtp_policy_of(&user),
        };
        if let Err(refusal) =
            policy::check_arrival(Security::of(&msg.body), peer.protocol, caller_policy)
        {
            tracing::info!("INVITE from {user} refused: {refusal}");
            self.reply(now, tx, 488, &format!("Not Acceptable Here ({refusal})"));
            return;
        }
        let target = msg
            .request_line()
            .and_then(|line| line.uri.user())
            .map(str::to_string)
            .unwrap_or_default();
        if let Some(node) = &from_node {
            // Pickups across nodes: the claim a node made on a call of ours, or the owner's
            // INVITE with Replaces for a picker of ours.
            if let Some(claim) = msg.header(&Name::from(PICKUP_HEADER)).map(str::to_string) {
                self.start_forwarded_pickup(now, tx, peer, user, node, &claim);
                return;
            }
            if msg.header(&Name::REPLACES).is_some() {
                self.replaces_from_owner(now, tx, msg, peer, node.clone());
                return;
            }
        }
        // A call another node routed here is for a phone here, never a pickup.
        let pickup = match from_node {
            Some(_) => None,
            None => self.pickup_target(&msg, &target),
        };
        match pickup {
            Some(Ok(pickup_target)) => {
                self.start_pickup(now, tx, msg, peer, user, pickup_target);
                return;
            }
            Some(Err((code, reason))) => {
                self.reply(now, tx, code, reason);
                return;
            }
            None => {}
        }
        if !self.is_routable(&target) {
            self.reply(now, tx, 404, "Not Found");
            return;
        }
        let invite = Invite {
            tx,
            msg,
            peer,
            user,
            target,
        };
        // A call another node routed here rings this node's phones only (no loops).
        if from_node.is_none() {
            if let Some(invite) = self.look_up_other_nodes(now, invite) {
                self.route_invite(now, invite, Vec::new(), None);
            }
            return;
        }
        let relayed = from_node.map(|node| Relayed {
            recorded_by: node,
            leg: RelayLeg::Call,
        });
        self.route_invite(now, invite, Vec::new(), relayed);
    }

    /// Rings the callee of an authenticated INVITE: its phones registered here, and
    /// `remote`, the ones registered through other nodes (reached through those nodes).
    /// `relayed`: set when the call is carried for another node (which records it).
    pub(super) fn route_invite(
        &mut self,
        now: Now,
        invite: Invite,
        remote: Vec<(Option<String>, Binding)>,
        relayed: Option<Relayed>,
    ) {
        let Invite {
            tx,
            msg,
            peer,
            user,
            target,
        } = invite;
        if self.contacts_for(now, &target).is_empty() && remote.is_empty() {
            self.reply(now, tx, 480, "Temporarily Unavailable");
            return;
        }
        let from_display = msg.from_header().and_then(|from| from.display);
        let Some(a) = Dialog::answering(&msg, ids::tag(), peer) else {
            self.reply(now, tx, 400, "Bad Request (malformed From or To)");
            return;
        };
        let anchor = if !msg.body.is_empty()
            && self.wants_anchor(now, peer.protocol == Protocol::Internal, &target)
        {
            self.start_anchor()
        } else {
            None
        };
        let offer = match anchor {
            // Named for the caller's local address; each fork's copy is re-addressed.
            Some(anchor) => self.anchor_body(anchor, Side::A, &msg.body, peer),
            None => msg.body.clone(),
        };
        let caller = Party {
            display: self
                .config
                .extension(&user)
                .and_then(|e| e.display_name.clone())
                .or(from_display),
            uri: self.local.uri_for(&user, peer),
            number: user,
        };
        let id = self.calls.numbers.take();
        let key = format!("{}-{}-{id}", self.config.node.id, now.unix_ms);
        self.calls.index.add_server_tx(tx, id, ServerRole::Invite);
        let leg_a = (a.call_id.clone(), a.local_tag.clone());
        self.calls.index.add_leg(leg_a.clone(), id);
        self.calls.index.add_dialog(leg_a, id, Side::A);
        self.calls.by_key.insert(key.clone(), id);
        let call = Call {
            key,
            a_tx: tx,
            a,
            offer,
            offer_type: msg.header(&Name::CONTENT_TYPE).map(str::to_string),
            caller,
            called: target,
            forks: Vec::new(),
            answered: None,
            b_ack: None,
            deadline: None,
            relays: HashMap::new(),
            ring_started_ms: now.unix_ms,
            set_up: false,
            answer: None,
            picking: None,
            claim: None,
            anchor,
            sent_sdp: [None, None],
            settled: [false, false],
            reoffers: [None, None],
            remote,
            relayed: relayed.clone(),
        };
        self.calls.calls.insert(id, call);
        self.metrics.calls_started += 1;
        if let Some(Relayed { recorded_by, leg }) = relayed {
            match leg {
                RelayLeg::Call => {
                    tracing::info!("call {id}: routed here by node {recorded_by} for its caller")
                }
                RelayLeg::PickupToOwner { .. } => tracing::info!(
                    "call {id}: the pickup goes to node {recorded_by}, where the call rings"
                ),
                RelayLeg::ReplacesToPicker { .. } => tracing::info!(
                    "call {id}: node {recorded_by} hands the call to its picker here (Replaces)"
                ),
            }
        }
        self.ring_callee(now, id);
    }

    /// Sends an INVITE to every registered contact of the called extension (again, after a
    /// failed pickup), files the call's context in the store and arms the ring timeout.
    pub(super) fn ring_callee(&mut self, now: Now, id: u64) {
        let Some((called, remote, relayed)) = self
            .calls
            .calls
            .get(&id)
            .map(|c| (c.called.clone(), c.remote.clone(), c.relayed.clone()))
        else {
            return;
        };
        let mut bindings = if relayed.as_ref().is_some_and(Relayed::rings_only_remote) {
            Vec::new()
        } else {
            self.contacts_for(now, &called)
        };
        let fork_headers = relayed.map(|r| r.fork_headers()).unwrap_or_default();
        let through_nodes = remote.len();
        bindings.extend(remote);
        let call_groups = self.call_groups_of(&called);
        let tcp_served = self.serves_tcp();
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        let security = Security::of(&call.offer);
        let caller_uri = NameAddrValue {
            display: call.caller.display.clone(),
            uri: call.caller.uri.clone(),
            params: Vec::new(),
        }
        .to_string();
        // The caller's leg too: a BLF key may name it (and reach another node).
        let mut legs = vec![LegIds {
            call_id: call.a.call_id.clone(),
            local_tag: call.a.local_tag.clone(),
            remote_tag: call.a.remote_tag.clone(),
        }];
        for (extension, binding) in bindings {
            let peer = route_to(&binding);
            let mut dialog = Dialog {
                call_id: self.shard.draw_call_id(&self.local.host(peer)),
                local_tag: ids::tag(),
                remote_tag: None,
                local_uri: caller_uri.clone(),
                remote_uri: format!("<{}>", self.local.uri_for(&call.called, peer)),
                remote_target: binding.contact.clone(),
                local_cseq: 0,
                peer,
            };
            let callee_policy = extension
                .as_deref()
                .and_then(|number| self.config.srtp_policy_of(number));
            if let Err(refusal) = policy::check_delivery(security, peer.protocol, callee_policy) {
                tracing::info!(
                    "call {id}: INVITE to {} not sent: {refusal}",
                    binding.contact
                );
                call.forks.push(Fork {
                    tx: None,
                    dialog,
                    final_status: Some((488, format!("Not Acceptable Here ({refusal})"))),
                    pickup: None,
                    extension,
                });
                continue;
            }
            let mut invite = dialog.request(Method::INVITE, None, &self.local);
            add_capabilities(&mut invite);
            invite.remove_header(&Name::ACCEPT);
            for (name, value) in &fork_headers {
                invite.set_header(name.clone(), value.clone());
            }
            if !call.offer.is_empty() {
                let content_type = call.offer_type.as_deref().unwrap_or("application/sdp");
                invite.set_header(Name::CONTENT_TYPE, content_type);
                invite.body = super::media::offer_for(&self.local, call.anchor, &call.offer, peer);
            }
            self.calls
                .index
                .add_leg((dialog.call_id.clone(), dialog.local_tag.clone()), id);
            let fitted = dialog.fit_transport(&mut invite, &self.local, tcp_served);
            if fitted.is_ok() {
                super::nodes::sign_for_node(&self.config.node, now, &mut invite, dialog.peer);
            }
            if let Err(error) = fitted {
                tracing::warn!("call {id}: INVITE to {} not sent: {error}", binding.contact);
                call.forks.push(Fork {
                    tx: None,
                    dialog,
                    final_status: Some((513, "Message Too Large".into())),
                    pickup: None,
                    extension,
                });
                continue;
            }
            let peer = dialog.peer;
            let fork_tx = self.tx.send_request(now.mono, invite, peer);
            self.calls
                .index
                .add_client_tx(fork_tx, id, ClientRole::Fork(call.forks.len()));
            legs.push(LegIds {
                call_id: dialog.call_id.clone(),
                local_tag: dialog.local_tag.clone(),
                remote_tag: None,
            });
            call.forks.push(Fork {
                tx: Some(fork_tx),
                dialog,
                final_status: None,
                pickup: None,
                extension,
            });
        }
        tracing::info!(
            "call {id}: {} -> {}, ringing {} contact(s){}",
            call.caller.number,
            call.called,
            legs.len() - 1,
            match through_nodes {
                0 => String::new(),
                n => format!(" ({n} through other nodes)"),
            }
        );
        if call.deadline.is_none() {
            let deadline = now.mono + self.config.ring_timeout();
            call.deadline = Some(deadline);
            self.calls.deadlines.insert((deadline, id));
        }
        let context = CallContext {
            call_key: call.key.clone(),
            node: self.config.node.id.clone(),
            caller_display: call.caller.display.clone(),
            caller_number: call.caller.number.clone(),
            caller_uri: call.caller.uri.clone(),
            // Without its SDES keys: no key material at rest in the database.
            caller_offer: crate::srtp::sdes::without_keys(&call.offer),
            called: call.called.clone(),
            call_groups,
            legs,
            ring_started_ms: call.ring_started_ms,
        };
        if call.relayed.is_none() {
            self.store_commands
                .push_back(StoreCommand::InsertRinging(Box::new(context)));
        }
        if call.forks.iter().all(|f| f.final_status.is_some()) {
            // Every contact vanished meanwhile: nothing rings.
            self.finish_if_all_forks_failed(now, id);
        }
    }

    pub(super) fn on_response(&mut self, now: Now, tx: ClientTxId, msg: SipMessage) {
        let Some(&(id, role)) = self.calls.index.by_client_tx.get(&tx) else {
            return;
        };
        match role {
            ClientRole::Fork(index) => self.on_fork_response(now, id, index, msg),
            ClientRole::Relay(relay) => self.on_relay_response(now, id, relay, msg),
            ClientRole::Reoffer(side) => self.on_reoffer_response(now, id, side, tx, msg),
            ClientRole::Detached => {
                if msg.status().is_some_and(|code| code >= 200) {
                    self.calls.index.remove_client_tx(&tx);
                }
            }
        }
    }

    fn on_fork_response(&mut self, now: Now, id: u64, index: usize, msg: SipMessage) {
        let Some(code) = msg.status() else { return };
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        if code == 100 || call.answered.is_some_and(|winner| winner != index) {
            return;
        }
        let fork = &mut call.forks[index];
        if let Some(tag) = msg.to_tag().map(str::to_string) {
            if fork.dialog.remote_tag.is_none() && fork.pickup.is_none() && call.relayed.is_none() {
                self.store_commands
                    .push_back(StoreCommand::SetLegRemoteTag {
                        call_id: fork.dialog.call_id.clone(),
                        remote_tag: tag.clone(),
                    });
            }
            fork.dialog.remote_tag = Some(tag);
        }
        if let Some(contact) = msg.contacts().and_then(|c| c.into_iter().next()) {
            fork.dialog.remote_target = contact.uri;
        }
        let pickup = fork.pickup;
        let reason = reason_of(&msg);
        match code {
            101..=199 => match pickup {
                Some(pickup) => self.replaces_progress(pickup),
                None => {
                    let (a_tx, a_tag, peer) = (call.a_tx, call.a.local_tag.clone(), call.a.peer);
                    self.relay_to_caller(now, a_tx, &a_tag, peer, code, &reason, &msg);
                }
            },
            200..=299 => self.fork_answered(now, id, index, code, &reason, &msg),
            _ => {
                let why = format!("{code} {reason}");
                fork.final_status = Some((code, reason));
                match pickup {
                    Some(pickup) => self.replaces_failed(now, pickup, code, &why),
                    None => self.finish_if_all_forks_failed(now, id),
                }
            }
        }
    }

    /// A 2xx from fork `index`: the first one wins the call, the other forks are cancelled.
    fn fork_answered(
        &mut self,
        now: Now,
        id: u64,
        index: usize,
        code: u16,
        reason: &str,
        msg: &SipMessage,
    ) {
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        if call.answered == Some(index) {
            // A retransmitted 2xx: our ACK got lost.
            if let Some(ack) = call.b_ack.clone() {
                self.tx.send_stateless(ack, call.forks[index].dialog.peer);
            }
            return;
        }
        let answer = call.accept_answer(index, now.unix_ms);
        if let Some(at) = call.deadline.take() {
            self.calls.deadlines.remove(&(at, id));
        }
        let fork = &mut call.forks[index];
        self.calls.index.add_dialog(
            (fork.dialog.call_id.clone(), fork.dialog.local_tag.clone()),
            id,
            Side::B,
        );
        if !call.offer.is_empty() {
            let ack = fork.dialog.request(Method::ACK, Some(1), &self.local);
            self.tx.send_stateless(ack.clone(), fork.dialog.peer);
            call.b_ack = Some(ack);
            call.sent_sdp[Side::B.index()] = Some(call.offer.clone());
        }
        call.settled[Side::B.index()] = true;
        let pickup = fork.pickup;
        let pending: Vec<ClientTxId> = call
            .pending_forks()
            .filter(|tx| Some(*tx) != call.forks[index].tx)
            .collect();
        for tx in pending {
            self.tx.cancel(now.mono, tx);
        }
        tracing::info!("call {id}: answered by {}", answer.answered_by);
        if call.relayed.is_none() {
            self.store_commands.push_back(StoreCommand::MarkAnswered {
                call_key: call.key.clone(),
                answer,
            });
        }
        let (a_tx, a_tag, peer) = (call.a_tx, call.a.local_tag.clone(), call.a.peer);
        self.relay_to_caller(now, a_tx, &a_tag, peer, code, reason, msg);
        if let Some(pickup) = pickup {
            self.pickup_connected(now, pickup);
        }
    }

    pub(super) fn finish_if_all_forks_failed(&mut self, now: Now, id: u64) {
        let Some(call) = self.calls.calls.get(&id) else {
            return;
        };
        if call.answered.is_some() || call.picking.is_some() {
            return;
        }
        let finals: Option<Vec<(u16, String)>> =
            call.forks.iter().map(|f| f.final_status.clone()).collect();
        let Some(finals) = finals else { return };
        let (code, reason) = best_failure(&finals);
        let (a_tx, a_tag) = (call.a_tx, call.a.local_tag.clone());
        tracing::info!("call {id}: failed with {code} {reason}");
        self.answer_caller(now, a_tx, &a_tag, code, &reason);
        self.end_call(now, id, disposition_of(code), &format!("{code} {reason}"));
    }

    /// Forgets a call: its context leaves the store, its CDR is written, any pickup of it ends.
    pub(super) fn end_call(&mut self, now: Now, id: u64, disposition: &str, cause: &str) {
        self.end_call_then(now, id, disposition, cause, None);
    }

    /// [`Engine::end_call`], holding back `last_word` (the 200 OK to the BYE that ended the
    /// call) until the store confirms the CDR is on disk: whoever hung up and got the 200 OK
    /// knows the call's record survives a crash. SIP handling does not wait meanwhile.
    fn end_call_then(
        &mut self,
        now: Now,
        id: u64,
        disposition: &str,
        cause: &str,
        last_word: Option<(ServerTxId, SipMessage)>,
    ) {
        let Some(mut call) = self.calls.remove(id) else {
            if let Some((tx, response)) = last_word {
                self.tx.send_response(now.mono, tx, response);
            }
            return;
        };
        self.metrics.call_ended(disposition);
        if let Some(pickup) = call.picking {
            self.abandon_pickup(now, pickup, 480, "Temporarily Unavailable (the call ended)");
        }
        if let Some(failed) = call.fail_claim(now.unix_ms, &format!("the call ended ({cause})")) {
            self.store_commands.push_back(failed);
        }
        if let Some(anchor) = call.anchor {
            self.stop_anchor(&call.key, anchor);
        }
        if call.relayed.is_some() {
            // The node the call is carried for bills it.
            if let Some((tx, response)) = last_word {
                self.tx.send_response(now.mono, tx, response);
            }
            return;
        }
        let cdr = call.cdr(&self.config.node.id, now.unix_ms, disposition, cause);
        let confirm = last_word.is_some();
        if let Some(last_word) = last_word {
            self.cdr_waiters.insert(call.key.clone(), last_word);
        }
        self.store_commands.push_back(StoreCommand::WriteCdr {
            cdr: Box::new(cdr),
            confirm,
        });
    }

    /// The store wrote a CDR: release the response that was waiting for it.
    pub(super) fn on_cdr_written(&mut self, now: Now, call_key: &str) {
        if let Some((tx, response)) = self.cdr_waiters.remove(call_key) {
            self.tx.send_response(now.mono, tx, response);
        }
    }

    /// Relays a B-leg response to the caller's INVITE, under the caller's dialog tag.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn relay_to_caller(
        &mut self,
        now: Now,
        a_tx: ServerTxId,
        a_tag: &str,
        a_peer: Peer,
        code: u16,
        reason: &str,
        from_b: &SipMessage,
    ) {
        let id = self.calls.index.by_server_tx.get(&a_tx).map(|(id, _)| *id);
        if let Some(id) = id {
            self.note_setup(now, id, code);
        }
        let anchor = id
            .and_then(|id| self.calls.calls.get(&id))
            .and_then(|call| call.anchor);
        let Some(request) = self.tx.request(a_tx) else {
            return;
        };
        let mut response = request.response(code, reason, Some(a_tag));
        response.set_header(Name::CONTACT, self.local.contact(a_peer));
        copy_body(from_b, &mut response);
        if let Some(anchor) = anchor {
            response.body = self.anchor_body(anchor, Side::B, &response.body, a_peer);
        }
        if let Some(id) = id {
            response.body = self.answer_body(now, id, Side::A, code, response.body);
        }
        self.tx.send_response(now.mono, a_tx, response);
    }

    /// The SDP of a response with `code` to `side`'s INVITE, meant to carry `body`: the
    /// first answer the side got is its answer for good (RFC 3261 §13.2.1), so a later
    /// response repeats it (RFC 6337 §3.1) and a 2xx whose media differ owes the side a
    /// re-INVITE with them. Records what the side was sent.
    pub(super) fn answer_body(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        code: u16,
        body: bytes::Bytes,
    ) -> bytes::Bytes {
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return body;
        };
        // Without an offer in the caller's INVITE, a 2xx carries our offer: nothing is fixed.
        let offerless = side == Side::A && call.offer.is_empty();
        if body.is_empty() {
            return body;
        }
        let sent = &mut call.sent_sdp[side.index()];
        let early = match sent {
            Some(early) if !offerless => early.clone(),
            _ => {
                *sent = Some(body.clone());
                return body;
            }
        };
        if (200..300).contains(&code) && !super::sdp::same_media(&early, &body) {
            tracing::info!("call {id}: {side:?} holds to its early answer; re-INVITE to follow");
            self.owe_reoffer(now, id, side, body);
        }
        early
    }

    /// A final response without body to the caller's INVITE.
    pub(super) fn answer_caller(
        &mut self,
        now: Now,
        a_tx: ServerTxId,
        a_tag: &str,
        code: u16,
        reason: &str,
    ) {
        if let Some(&(id, _)) = self.calls.index.by_server_tx.get(&a_tx) {
            self.note_setup(now, id, code);
        }
        let Some(request) = self.tx.request(a_tx) else {
            return;
        };
        let response = request.response(code, reason, Some(a_tag));
        self.tx.send_response(now.mono, a_tx, response);
    }

    /// Call `id`'s caller gets a response with `code` to its INVITE: the first ringing or
    /// final one ends the call's setup, whose latency the metrics count.
    fn note_setup(&mut self, now: Now, id: u64, code: u16) {
        if code < 180 {
            return;
        }
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        if !std::mem::replace(&mut call.set_up, true) {
            let latency = now.unix_ms.saturating_sub(call.ring_started_ms);
            self.metrics.call_set_up(latency);
        }
    }

    pub(super) fn on_client_timeout(&mut self, now: Now, tx: ClientTxId) {
        let Some(&(id, role)) = self.calls.index.by_client_tx.get(&tx) else {
            return;
        };
        match role {
            ClientRole::Fork(index) => {
                let pickup = self.calls.calls.get_mut(&id).and_then(|call| {
                    call.forks[index].final_status = Some((408, "Request Timeout".into()));
                    call.forks[index].pickup
                });
                match pickup {
                    Some(pickup) => self.replaces_failed(now, pickup, 408, "timeout"),
                    None => self.finish_if_all_forks_failed(now, id),
                }
            }
            ClientRole::Relay(relay) => {
                let server_tx = self
                    .calls
                    .calls
                    .get_mut(&id)
                    .and_then(|call| call.relays.remove(&relay))
                    .map(|relay| relay.server_tx);
                self.calls.index.remove_client_tx(&tx);
                if let Some(server_tx) = server_tx {
                    self.calls.index.remove_server_tx(&server_tx);
                    self.reply_in_dialog(now, server_tx, 408, "Request Timeout");
                }
            }
            ClientRole::Reoffer(side) => self.on_reoffer_timeout(now, id, side, tx),
            ClientRole::Detached => {
                self.calls.index.remove_client_tx(&tx);
            }
        }
    }

    /// A final response to an in-dialog request (To already carries our tag).
    pub(super) fn reply_in_dialog(&mut self, now: Now, tx: ServerTxId, code: u16, reason: &str) {
        if let Some(request) = self.tx.request(tx) {
            let response = request.response(code, reason, None);
            self.tx.send_response(now.mono, tx, response);
        }
    }

    /// A CANCEL of `invite`, with its `Reason` header if any.
    pub(super) fn on_cancel(&mut self, now: Now, invite: ServerTxId, reason: Option<&str>) {
        if self.cancel_lookup(now, invite) {
            return;
        }
        if let Some(&pickup) = self.calls.pickup_by_tx.get(&invite) {
            self.picker_gave_up(now, pickup);
            return;
        }
        let Some(&(id, role)) = self.calls.index.by_server_tx.get(&invite) else {
            return;
        };
        match role {
            ServerRole::Invite => {
                let Some(call) = self.calls.calls.get(&id) else {
                    return;
                };
                if call.answered.is_some() {
                    return; // too late: the 2xx is already on its way (RFC 3261 §9.2)
                }
                // A node cancelling the call it routed here says why (a pickup there:
                // "Call completed elsewhere", so the phone logs no missed call); a phone's
                // own Reason is not passed on.
                let reason = reason.filter(|_| call.relayed.is_some());
                let pending: Vec<ClientTxId> = call.pending_forks().collect();
                for tx in pending {
                    self.tx.cancel_with_reason(now.mono, tx, reason);
                }
                let (a_tx, a_tag) = (call.a_tx, call.a.local_tag.clone());
                tracing::info!("call {id}: cancelled by the caller");
                self.answer_caller(now, a_tx, &a_tag, 487, "Request Terminated");
                self.end_call(now, id, "cancelled", "CANCEL from caller");
            }
            ServerRole::Bridged => {} // answered already (RFC 3261 §9.2)
            ServerRole::Relay(relay_id) => {
                let Some(relay) = self
                    .calls
                    .calls
                    .get_mut(&id)
                    .and_then(|call| call.relays.get_mut(&relay_id))
                else {
                    return;
                };
                relay.cancelled = true;
                let (client_tx, server_tx) = (relay.client_tx, relay.server_tx);
                self.tx.cancel(now.mono, client_tx);
                self.reply_in_dialog(now, server_tx, 487, "Request Terminated");
            }
        }
    }

    pub(super) fn on_ack(&mut self, now: Now, invite: Option<ServerTxId>, msg: SipMessage) {
        let Some(invite) = invite else { return };
        let Some(&(id, role)) = self.calls.index.by_server_tx.get(&invite) else {
            return;
        };
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        match role {
            ServerRole::Invite => {
                // Late offer: B's 2xx carried the offer, A's ACK carries the answer. (A
                // bridged picker's INVITE was answered by us: it ACKs us, we ACK nobody.)
                let answered_our_invite = call.answered.filter(|&i| call.forks[i].tx.is_some());
                if let (Some(index), None) = (answered_our_invite, &call.b_ack) {
                    let dialog = &mut call.forks[index].dialog;
                    let mut ack = dialog.request(Method::ACK, Some(1), &self.local);
                    copy_body(&msg, &mut ack);
                    self.tx.send_stateless(ack.clone(), dialog.peer);
                    call.b_ack = Some(ack);
                }
                if call.answered.is_some() {
                    self.side_settled(now, id, Side::A);
                }
            }
            ServerRole::Bridged => {
                self.calls.index.remove_server_tx(&invite);
                self.side_settled(now, id, Side::B);
            }
            ServerRole::Relay(relay_id) => {
                // The relay stays (until the call ends) so a retransmitted 2xx is re-ACKed.
                self.calls.index.remove_server_tx(&invite);
                let Some(relay) = call.relays.get(&relay_id) else {
                    return;
                };
                let (other, cseq) = (relay.from.other(), relay.cseq);
                let Some(dialog) = call.dialog(other) else {
                    return;
                };
                let mut ack = dialog.request(Method::ACK, Some(cseq), &self.local);
                copy_body(&msg, &mut ack);
                self.tx.send_stateless(ack.clone(), dialog.peer);
                if let Some(relay) = call.relays.get_mut(&relay_id) {
                    relay.ack_sent = Some(ack);
                }
            }
        }
    }

    pub(super) fn on_ack_timeout(&mut self, now: Now, invite: ServerTxId) {
        let (id, cause) = match self.calls.index.by_server_tx.get(&invite) {
            Some(&(id, ServerRole::Invite)) => (id, "no ACK from caller"),
            Some(&(id, ServerRole::Bridged)) => (id, "no ACK from picker"),
            _ => return,
        };
        tracing::warn!("call {id}: {cause} for our 200 OK; hanging up");
        self.hang_up(now, id, &[Side::A, Side::B], cause, None);
    }

    /// Sends BYE to the given sides of an answered call and ends it.
    pub(super) fn hang_up_sides(&mut self, now: Now, id: u64, sides: &[Side], cause: &str) {
        self.hang_up(now, id, sides, cause, None);
    }

    /// Sends BYE to the given (established) sides and ends the call; `last_word` is sent
    /// once the CDR is on disk.
    fn hang_up(
        &mut self,
        now: Now,
        id: u64,
        sides: &[Side],
        cause: &str,
        last_word: Option<(ServerTxId, SipMessage)>,
    ) {
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        for &side in sides {
            if let Some(dialog) = call.dialog(side) {
                let bye = dialog.request(Method::BYE, None, &self.local);
                let peer = dialog.peer;
                let tx = self.tx.send_request(now.mono, bye, peer);
                self.calls.index.add_client_tx(tx, id, ClientRole::Detached);
            }
        }
        self.end_call_then(now, id, "answered", cause, last_word);
    }

    pub(super) fn on_in_dialog_request(
        &mut self,
        now: Now,
        tx: ServerTxId,
        msg: SipMessage,
        _peer: Peer,
    ) {
        let key = (
            msg.call_id().unwrap_or_default().to_string(),
            msg.to_tag().map(str::to_string).unwrap_or_default(),
        );
        if let Some(&pickup) = self.calls.pickup_by_dialog.get(&key) {
            // A request in the dummy early dialog: only BYE makes sense there.
            if msg.method() == Some(&Method::BYE) {
                self.reply_in_dialog(now, tx, 200, "OK");
                self.picker_gave_up(now, pickup);
            } else {
                self.reply_in_dialog(
                    now,
                    tx,
                    481,
                    "Call/Transaction Does Not Exist (early pickup dialog)",
                );
            }
            return;
        }
        let Some(&(id, side)) = self.calls.index.by_dialog.get(&key) else {
            // Anyone can make up a dialog: answering it costs no state.
            let response = msg.response(481, "Call/Transaction Does Not Exist", None);
            self.tx.respond_statelessly(tx, response);
            return;
        };
        let method = msg.method().cloned().unwrap_or(Method::OPTIONS);
        let answered = self
            .calls
            .calls
            .get(&id)
            .is_some_and(|c| c.answered.is_some());
        if method == Method::BYE {
            if answered {
                tracing::info!("call {id}: ended by {side:?}");
                let cause = match side {
                    Side::A => "BYE from caller",
                    Side::B => "BYE from callee",
                };
                let ok = msg.response(200, "OK", None);
                self.hang_up(now, id, &[side.other()], cause, Some((tx, ok)));
                return;
            }
            self.reply_in_dialog(now, tx, 200, "OK");
            if let Some(invite) = self.calls.calls.get(&id).map(|c| c.a_tx) {
                // BYE on the caller's early dialog ends the attempt like a CANCEL.
                self.on_cancel(now, invite, None);
            }
            return;
        }
        if !answered {
            self.reply_in_dialog(
                now,
                tx,
                481,
                "Call/Transaction Does Not Exist (dialog not established)",
            );
            return;
        }
        if method == Method::INVITE && self.reoffer_in_flight(id) {
            // Our own re-INVITE is pending (RFC 3261 §14.2): the far end retries later.
            self.reply_in_dialog(now, tx, 491, "Request Pending");
            return;
        }
        self.relay_in_dialog(now, id, side, tx, msg, method);
    }

    fn relay_in_dialog(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        server_tx: ServerTxId,
        msg: SipMessage,
        method: Method,
    ) {
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        if let Some(contact) = msg.contacts().and_then(|c| c.into_iter().next()) {
            if method == Method::INVITE || method == Method::UPDATE {
                if let Some(dialog) = call.dialog(side) {
                    dialog.remote_target = contact.uri; // target refresh (RFC 3261 §12.2.2)
                }
            }
        }
        let anchor = call.anchor;
        let Some(dialog) = call.dialog(side.other()) else {
            return;
        };
        let mut request = dialog.request(method.clone(), None, &self.local);
        copy_body(&msg, &mut request);
        for name in [Name::EVENT, Name::SUBSCRIPTION_STATE] {
            if let Some(value) = msg.header(&name) {
                request.set_header(name, value.to_string());
            }
        }
        let (cseq, toward) = (dialog.local_cseq, dialog.peer);
        if let Some(anchor) = anchor {
            request.body = self.anchor_body(anchor, side, &request.body, toward);
        }
        let tcp_served = self.serves_tcp();
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        if !request.body.is_empty() {
            call.sent_sdp[side.other().index()] = Some(request.body.clone());
        }
        let Some(dialog) = call.dialog(side.other()) else {
            return;
        };
        if let Err(error) = dialog.fit_transport(&mut request, &self.local, tcp_served) {
            tracing::warn!("call {id}: {method} not relayed: {error}");
            self.reply_in_dialog(now, server_tx, 513, "Message Too Large");
            return;
        }
        let peer = dialog.peer;
        let client_tx = self.tx.send_request(now.mono, request, peer);
        let relay_id = self.calls.next_relay;
        self.calls.next_relay += 1;
        call.relays.insert(
            relay_id,
            Relay {
                from: side,
                server_tx,
                client_tx,
                method,
                cseq,
                ack_sent: None,
                cancelled: false,
            },
        );
        self.calls
            .index
            .add_client_tx(client_tx, id, ClientRole::Relay(relay_id));
        self.calls
            .index
            .add_server_tx(server_tx, id, ServerRole::Relay(relay_id));
    }

    fn on_relay_response(&mut self, now: Now, id: u64, relay_id: u64, msg: SipMessage) {
        let Some(code) = msg.status().filter(|&code| code > 100) else {
            return;
        };
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        let Some(relay) = call.relays.get(&relay_id) else {
            return;
        };
        if let Some(ack) = relay.ack_sent.clone() {
            // Retransmitted 2xx of a re-INVITE we already ACKed.
            let other = relay.from.other();
            if let Some(dialog) = call.dialog(other) {
                self.tx.send_stateless(ack, dialog.peer);
            }
            return;
        }
        let (server_tx, client_tx, method, cancelled, from) = (
            relay.server_tx,
            relay.client_tx,
            relay.method.clone(),
            relay.cancelled,
            relay.from,
        );
        let is_final = code >= 200;
        let awaits_ack = method == Method::INVITE && (200..300).contains(&code) && !cancelled;
        if is_final && !awaits_ack {
            call.relays.remove(&relay_id);
            self.calls.index.remove_client_tx(&client_tx);
            self.calls.index.remove_server_tx(&server_tx);
        }
        if cancelled {
            return;
        }
        let Some(request) = self.tx.request(server_tx) else {
            return;
        };
        let reason = match &msg.start {
            crate::sip::message::StartLine::Response(line) => line.reason.clone(),
            crate::sip::message::StartLine::Request(_) => String::new(),
        };
        let mut response = request.response(code, &reason, None);
        copy_body(&msg, &mut response);
        let toward = call.dialog(from).map(|d| d.peer);
        if (method == Method::INVITE || method == Method::UPDATE) && code < 300 {
            if let Some(peer) = toward {
                response.set_header(Name::CONTACT, self.local.contact(peer));
            }
        }
        if let Some(anchor) = call.anchor {
            let toward = toward.unwrap_or(call.a.peer);
            response.body = self.anchor_body(anchor, from.other(), &response.body, toward);
        }
        if let Some(call) = self
            .calls
            .calls
            .get_mut(&id)
            .filter(|_| !response.body.is_empty())
        {
            call.sent_sdp[from.index()] = Some(response.body.clone());
        }
        self.tx.send_response(now.mono, server_tx, response);
    }

    pub(super) fn ring_timeouts(&mut self, now: Now) {
        while let Some(&(at, id)) = self.calls.deadlines.first() {
            if at > now.mono {
                break;
            }
            self.calls.deadlines.remove(&(at, id));
            let Some(call) = self.calls.calls.get_mut(&id) else {
                continue;
            };
            call.deadline = None;
            let pending: Vec<ClientTxId> = call.pending_forks().collect();
            for tx in pending {
                self.tx.cancel(now.mono, tx);
            }
            let (a_tx, a_tag) = (call.a_tx, call.a.local_tag.clone());
            tracing::info!("call {id}: no answer within the ring timeout");
            self.answer_caller(
                now,
                a_tx,
                &a_tag,
                480,
                "Temporarily Unavailable (no answer)",
            );
            self.end_call(now, id, "no-answer", "480 ring timeout");
        }
    }
}
