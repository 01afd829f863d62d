//! Server-side call pickup, the flow of DESIGN.md §2.
//!
//! The picker's INVITE (`*8`, `**<ext>`, or an INVITE with Replaces from a BLF key) is
//! authenticated, then the store claims a ringing call atomically (one picker wins). The
//! picker is held in a dummy early dialog (183 with an inactive SDP answer), the ringing legs
//! are cancelled with `Reason: SIP;cause=200;text="Call completed elsewhere"`, and the picker
//! gets an INVITE with `Replaces` carrying the caller's identity and offer from the stored
//! context. That INVITE is one more fork of the call, so its 2xx connects the caller exactly
//! like a callee's answer would. Fallback: a picker that cannot do Replaces (none advertised,
//! 420/481/488, or no answer at all within [`REPLACES_SILENCE`]) has its own INVITE answered
//! 200 and bridged; held in the dummy dialog, it is then re-INVITEd to the call's media
//! (`reoffer.rs`). A pickup that fails after the legs were cancelled rings them again.

use super::blf::Replaced;
use super::call::{ClientRole, Fork, Pickup, PickupRecord, ServerRole, Side};
use super::dialog::Dialog;
use super::metrics::PickupPath;
use super::{add_capabilities, answer, media, sdp, Engine, Now};
use crate::config::PickupMode;
use crate::sip::ids;
use crate::sip::message::{NameAddrValue, SipMessage};
use crate::sip::transaction::{ClientTxId, ServerTxId};
use crate::srtp::policy::{self, Security};
use crate::status::view::RecentPickupView;
use crate::store::{
    CallContext, ClaimOutcome, ClaimRequest, PickupMethod, PickupTarget, StoreCommand,
};
use crate::transport::Peer;
use bytes::Bytes;
use ezk_sip_types::{Method, Name};
use std::time::Duration;

/// How long a Replaces INVITE may go without any response before we fall back to bridging.
/// A 100 or 180 stops this clock: a ringing phone has a person to wait for (DESIGN.md §2).
pub const REPLACES_SILENCE: Duration = Duration::from_secs(3);

/// The Reason header on the CANCELs of the ringing legs (RFC 3326), so phones log no missed call.
const COMPLETED_ELSEWHERE: &str = "SIP;cause=200;text=\"Call completed elsewhere\"";

impl Engine {
    /// Whether an INVITE asks for a pickup, and of what; Err is the answer to send instead
    /// (an INVITE with Replaces naming an answered call, RFC 3891 §3).
    pub(super) fn pickup_target(
        &self,
        msg: &SipMessage,
        target: &str,
    ) -> Option<Result<PickupTarget, (u16, &'static str)>> {
        if let Some(replaces) = msg.header(&Name::REPLACES) {
            // Either leg of a ringing call, tags in either order (BLF keys differ).
            return Some(match super::blf::replaced_dialog(&self.calls, replaces) {
                Replaced::Ringing(leg) => Ok(PickupTarget::Leg(leg)),
                // Not here: the store knows whether another node's call has that leg (481
                // when none has).
                Replaced::Nothing => Ok(PickupTarget::Leg(super::blf::named_leg(replaces))),
                Replaced::Answered { early_only: true } => {
                    Err((486, "Busy Here (the call is answered: early-only)"))
                }
                Replaced::Answered { early_only: false } => Err((
                    403,
                    "Forbidden (the call is answered; taking over answered calls is not offered)",
                )),
            });
        }
        let features = &self.config.features;
        if target == features.group_pickup {
            return Some(Ok(PickupTarget::Group));
        }
        target
            .strip_prefix(features.directed_pickup_prefix.as_str())
            .filter(|ext| !ext.is_empty())
            .map(|ext| Ok(PickupTarget::Directed(ext.to_string())))
    }

    /// An authenticated picker asks for a call: claim one in the store.
    pub(super) fn start_pickup(
        &mut self,
        now: Now,
        tx: ServerTxId,
        msg: SipMessage,
        peer: Peer,
        picker: String,
        target: PickupTarget,
    ) {
        let extension = self.config.extension(&picker);
        let pickup_groups = extension
            .map(|e| e.pickup_groups.clone())
            .unwrap_or_default();
        let mode = extension.map_or(PickupMode::Auto, |e| e.pickup_mode);
        let advertises_replaces = msg
            .option_tags(&Name::SUPPORTED)
            .iter()
            .chain(msg.option_tags(&Name::REQUIRE).iter())
            .any(|tag| tag == "replaces");
        let method = target.method();
        // A BLF INVITE with Replaces is itself the picker's new dialog: answer it directly.
        let use_replaces = method != PickupMethod::Replaces
            && match mode {
                PickupMode::Auto => advertises_replaces,
                PickupMode::Replaces => true,
                PickupMode::Bridge => false,
            };
        tracing::info!(
            "pickup {}: {picker} asks for {target:?} ({})",
            self.calls.pickup_numbers.peek(),
            if use_replaces { "Replaces" } else { "bridge" }
        );
        let id = self.open_pickup(tx, peer, &picker, method, use_replaces);
        let node = &self.config.node;
        let other_nodes_seen_since_ms = node.is_clustered().then(|| {
            now.unix_ms
                .saturating_sub(super::nodes::millis(node.takeover()))
        });
        self.store_commands.push_back(StoreCommand::Claim {
            pickup: id,
            request: ClaimRequest {
                picker,
                pickup_groups,
                target,
                node: node.id.clone(),
                now_ms: now.unix_ms,
                other_nodes_seen_since_ms,
            },
        });
    }

    /// Files a pickup of `picker` whose INVITE is `tx`; returns its number.
    pub(super) fn open_pickup(
        &mut self,
        tx: ServerTxId,
        peer: Peer,
        picker: &str,
        method: PickupMethod,
        use_replaces: bool,
    ) -> u64 {
        let id = self.calls.pickup_numbers.take();
        self.calls.pickup_by_tx.insert(tx, id);
        self.calls.pickups.insert(
            id,
            Pickup {
                picker: picker.to_string(),
                method,
                tx,
                peer,
                dummy_tag: ids::tag(),
                dummy_open: true,
                use_replaces,
                call: None,
                context: None,
                early_answer: None,
                dummy_dialog: None,
                silence_at: None,
                counted: false,
            },
        );
        id
    }

    /// The store answered a claim.
    pub(super) fn on_claim(&mut self, now: Now, id: u64, outcome: ClaimOutcome) {
        let Some(pickup) = self.calls.pickups.get(&id) else {
            // The picker gave up before the store answered: give the call back.
            if let ClaimOutcome::Claimed(context) | ClaimOutcome::Elsewhere { context, .. } =
                outcome
            {
                self.store_commands.push_back(StoreCommand::Release {
                    call_key: context.call_key,
                });
            }
            return;
        };
        let context = match outcome {
            ClaimOutcome::Claimed(context) => match self.claimed_elsewhere(&context) {
                Some(owner) => {
                    self.hand_over_pickup(now, id, context, owner);
                    return;
                }
                None => context,
            },
            ClaimOutcome::Elsewhere { context, owner } => {
                self.forward_pickup(now, id, &context, owner);
                return;
            }
            ClaimOutcome::NotAllowed => {
                tracing::info!(
                    "pickup {id}: {} is not in a pickup group of that call",
                    pickup.picker
                );
                self.finish_pickup(
                    now,
                    id,
                    Some((403, "Forbidden (not in a pickup group of that call)")),
                );
                return;
            }
            ClaimOutcome::NothingRinging if pickup.method == PickupMethod::Replaces => {
                self.finish_pickup(now, id, Some((481, "Call/Transaction Does Not Exist")));
                return;
            }
            ClaimOutcome::StoreFailed => {
                self.finish_pickup(
                    now,
                    id,
                    Some((
                        503,
                        "Service Unavailable (the call database did not answer)",
                    )),
                );
                return;
            }
            ClaimOutcome::NothingRinging => {
                tracing::info!("pickup {id}: nothing to pick up for {}", pickup.picker);
                self.finish_pickup(
                    now,
                    id,
                    Some((480, "Temporarily Unavailable (nothing to pick up)")),
                );
                return;
            }
        };
        let call_id = self.calls.by_key.get(&context.call_key).copied();
        let ringing = call_id
            .and_then(|c| self.calls.calls.get(&c))
            .is_some_and(|call| call.answered.is_none() && call.picking.is_none());
        let Some(call_id) = call_id.filter(|_| ringing) else {
            // Answered (or ended) between the claim and now: the callee won.
            self.finish_pickup(
                now,
                id,
                Some((480, "Temporarily Unavailable (the call was answered)")),
            );
            return;
        };
        // The call's offer (as the call holds it: the store keeps no keys) goes to the
        // picker: its keys only over TLS, the picker's SRTP policy honoured.
        let offer = self
            .calls
            .calls
            .get(&call_id)
            .map(|call| Security::of(&call.offer));
        let delivery = policy::check_delivery(
            offer.unwrap_or_default(),
            pickup.peer.protocol,
            self.config.srtp_policy_of(&pickup.picker),
        );
        if let Err(refusal) = delivery {
            tracing::info!("pickup {id}: {} refused: {refusal}", pickup.picker);
            self.store_commands.push_back(StoreCommand::Release {
                call_key: context.call_key,
            });
            let reason = format!("Not Acceptable Here ({refusal})");
            self.finish_pickup(now, id, Some((488, &reason)));
            return;
        }
        let (picker, method, use_replaces) =
            (pickup.picker.clone(), pickup.method, pickup.use_replaces);
        if let Some(pickup) = self.calls.pickups.get_mut(&id) {
            pickup.call = Some(call_id);
            pickup.context = Some(context);
        }
        let Some(call) = self.calls.calls.get_mut(&call_id) else {
            return;
        };
        call.picking = Some(id);
        call.claim = Some(PickupRecord {
            id,
            picker: picker.clone(),
            method,
            at_ms: now.unix_ms,
        });
        tracing::info!("pickup {id}: {picker} claimed call {call_id}");
        let pending: Vec<ClientTxId> = call.pending_forks().collect();
        for tx in pending {
            self.tx
                .cancel_with_reason(now.mono, tx, Some(COMPLETED_ELSEWHERE));
        }
        if use_replaces {
            self.send_dummy_progress(now, id);
            self.send_replaces_invite(now, id, call_id);
        } else {
            self.bridge_picker(now, id);
        }
    }

    /// 183 with an inactive SDP answer: the dummy early dialog that holds the picker.
    fn send_dummy_progress(&mut self, now: Now, id: u64) {
        let Some(pickup) = self.calls.pickups.get(&id) else {
            return;
        };
        let Some(request) = self.tx.request(pickup.tx) else {
            return;
        };
        let mut progress = request.response(183, "Session Progress", Some(&pickup.dummy_tag));
        progress.set_header(Name::CONTACT, self.local.contact(pickup.peer));
        let early_answer = sdp::inactive_answer(&request.body, self.local.media_ip(pickup.peer));
        if let Some(answer) = &early_answer {
            progress.set_header(Name::CONTENT_TYPE, "application/sdp");
            progress.body = answer.clone();
        }
        let key = (
            request.call_id().unwrap_or_default().to_string(),
            pickup.dummy_tag.clone(),
        );
        self.calls.pickup_by_dialog.insert(key.clone(), id);
        self.tx.send_response(now.mono, pickup.tx, progress);
        if let Some(pickup) = self.calls.pickups.get_mut(&id) {
            pickup.early_answer = early_answer;
            pickup.dummy_dialog = Some(key);
        }
    }

    /// The caller's identity as a name-addr, from the stored context.
    fn caller_name_addr(context: &CallContext) -> String {
        NameAddrValue {
            display: context.caller_display.clone(),
            uri: context.caller_uri.clone(),
            params: Vec::new(),
        }
        .to_string()
    }

    /// The INVITE with Replaces that moves the picker from the dummy dialog to the call.
    fn send_replaces_invite(&mut self, now: Now, id: u64, call_id: u64) {
        let Some(pickup) = self.calls.pickups.get(&id) else {
            return;
        };
        let (Some(request), Some(context)) = (self.tx.request(pickup.tx), pickup.context.as_ref())
        else {
            return;
        };
        let (Some(from), Some(picker_tag)) = (
            request.from_header(),
            request.from_tag().map(str::to_string),
        ) else {
            return;
        };
        let caller = Self::caller_name_addr(context);
        let mut dialog = Dialog {
            call_id: self.shard.draw_call_id(&self.local.host(pickup.peer)),
            local_tag: ids::tag(),
            remote_tag: None,
            local_uri: caller.clone(),
            remote_uri: from.without_tag(),
            remote_target: request.remote_target().unwrap_or_else(|| from.uri.clone()),
            local_cseq: 0,
            peer: pickup.peer,
        };
        let mut invite = dialog.request(Method::INVITE, None, &self.local);
        add_capabilities(&mut invite);
        invite.remove_header(&Name::ACCEPT);
        invite.set_header(Name::from("P-Asserted-Identity"), caller);
        invite.set_header(
            Name::REPLACES,
            format!(
                "{};to-tag={picker_tag};from-tag={};early-only",
                request.call_id().unwrap_or_default(),
                pickup.dummy_tag
            ),
        );
        invite.set_header(
            Name::CALL_INFO,
            format!(
                "<sip:gw@{}>;answer-after=0",
                self.local.host_port(pickup.peer)
            ),
        );
        invite.set_header(
            Name::ALERT_INFO,
            format!(
                "<sip:gw@{}>;info=alert-autoanswer",
                self.local.host_port(pickup.peer)
            ),
        );
        // The call's own offer (with its SRTP keys, which the store does not keep).
        let held = self.calls.calls.get(&call_id);
        let offer = held.map_or_else(
            || Bytes::from(context.caller_offer.clone()),
            |call| call.offer.clone(),
        );
        if !offer.is_empty() {
            // Anchored, the offer names the relay at the address the picker reached.
            let anchor = held.and_then(|call| call.anchor);
            invite.set_header(Name::CONTENT_TYPE, "application/sdp");
            invite.body = media::offer_for(&self.local, anchor, &offer, pickup.peer);
        }
        if let Err(error) = dialog.fit_transport(&mut invite, &self.local, self.serves_tcp()) {
            tracing::info!("pickup {id}: Replaces INVITE not sent ({error}); bridging instead");
            self.bridge_picker(now, id);
            return;
        }
        let peer = dialog.peer;
        // The picker's node, when the pickup was forwarded from there.
        super::nodes::sign_for_node(&self.config.node, now, &mut invite, peer);
        let picker = pickup.picker.clone();
        let tx = self.tx.send_request(now.mono, invite, peer);
        let Some(call) = self.calls.calls.get_mut(&call_id) else {
            return;
        };
        self.calls
            .index
            .add_client_tx(tx, call_id, ClientRole::Fork(call.forks.len()));
        call.forks.push(Fork {
            tx: Some(tx),
            dialog,
            final_status: None,
            pickup: Some(id),
            extension: Some(picker),
        });
        self.calls
            .set_silence_deadline(id, now.mono + REPLACES_SILENCE);
    }

    /// The Replaces INVITE got a provisional: a phone is there, wait for its user.
    pub(super) fn replaces_progress(&mut self, id: u64) {
        self.calls.clear_silence_deadline(id);
    }

    /// The picker answered the Replaces INVITE and is connected to the caller.
    pub(super) fn pickup_connected(&mut self, now: Now, id: u64) {
        tracing::info!("pickup {id}: connected through Replaces");
        self.count_pickup(now, id, PickupPath::Replaces, true);
        // The picker normally CANCELs the dummy itself; if not, end it for the picker.
        self.finish_pickup(now, id, Some((487, "Request Terminated")));
    }

    /// The Replaces INVITE failed with `code` (408 when nothing came back at all); `why` says
    /// so for the record ("603 Decline", "timeout").
    pub(super) fn replaces_failed(&mut self, now: Now, id: u64, code: u16, why: &str) {
        self.calls.clear_silence_deadline(id);
        let dummy_open = self.calls.pickups.get(&id).is_some_and(|p| p.dummy_open);
        if dummy_open && matches!(code, 408 | 420 | 481 | 488) {
            tracing::info!(
                "pickup {id}: Replaces INVITE failed with {code}; bridging the picker's own INVITE"
            );
            self.bridge_picker(now, id);
        } else {
            tracing::info!("pickup {id}: the picker did not take the call ({why}); ringing again");
            self.pickup_failed(now, id, why);
        }
    }

    /// Replaces INVITEs that got no response at all in time: fall back to bridging.
    pub(super) fn pickup_timeouts(&mut self, now: Now) {
        while let Some(id) = self.calls.pop_silent_pickup(now.mono) {
            let call_id = self.calls.pickups.get(&id).and_then(|p| p.call);
            let silent_fork = call_id
                .and_then(|c| self.calls.calls.get_mut(&c))
                .and_then(|call| {
                    let fork = call
                        .forks
                        .iter_mut()
                        .find(|f| f.pickup == Some(id) && f.final_status.is_none())?;
                    // Detach it: its 487 must not count as the pickup failing.
                    fork.pickup = None;
                    fork.final_status = Some((408, "Request Timeout".into()));
                    fork.tx
                });
            if let Some(tx) = silent_fork {
                self.tx.cancel(now.mono, tx);
                tracing::info!("pickup {id}: no answer to the Replaces INVITE; bridging instead");
                self.bridge_picker(now, id);
            }
        }
    }

    /// Fallback: answer the picker's own INVITE and the caller's, each from the other's
    /// offer, and connect them (through the relay when the call is anchored). A picker held
    /// in the dummy dialog keeps the 183's inactive answer and learns the call's media in a
    /// re-INVITE (`reoffer.rs`).
    fn bridge_picker(&mut self, now: Now, id: u64) {
        let Some(pickup) = self.calls.pickups.get(&id) else {
            return;
        };
        let (Some(call_id), Some(request)) = (pickup.call, self.tx.request(pickup.tx)) else {
            return;
        };
        let Some(dialog) = Dialog::answering(request, pickup.dummy_tag.clone(), pickup.peer) else {
            return;
        };
        let (picker_tx, picker_peer, picker) = (pickup.tx, pickup.peer, pickup.picker.clone());
        let early_answer = pickup.early_answer.clone();
        let mut ok = request.response(200, "OK", Some(&pickup.dummy_tag));
        let picker_offer = request.body.clone();
        let Some(call) = self.calls.calls.get_mut(&call_id) else {
            return;
        };
        // Each offer is answered from the other one (RFC 3264). The caller's offer names the
        // relay, at the address the picker reached, when the call is anchored; the answer to
        // the caller is anchored below. A picker INVITE without an offer gets the caller's offer in our 200.
        let caller_offer = media::offer_for(&self.local, call.anchor, &call.offer, picker_peer);
        let to_picker = answer::answer(&picker_offer, &caller_offer).unwrap_or(caller_offer);
        let to_caller = answer::answer(&call.offer, &picker_offer).unwrap_or(picker_offer);
        let index = call.forks.len();
        self.calls.index.add_dialog(
            (dialog.call_id.clone(), dialog.local_tag.clone()),
            call_id,
            Side::B,
        );
        self.calls
            .index
            .add_server_tx(picker_tx, call_id, ServerRole::Bridged);
        call.forks.push(Fork {
            tx: None,
            dialog,
            final_status: None,
            pickup: Some(id),
            extension: Some(picker),
        });
        let answer = call.accept_answer(index, now.unix_ms);
        call.sent_sdp[Side::B.index()] = early_answer;
        if let Some(at) = call.deadline.take() {
            self.calls.deadlines.remove(&(at, call_id));
        }
        let pending: Vec<ClientTxId> = call.pending_forks().collect();
        for tx in pending {
            self.tx.cancel(now.mono, tx);
        }
        self.store_commands.push_back(StoreCommand::MarkAnswered {
            call_key: call.key.clone(),
            answer,
        });
        let (a_tx, a_tag, a_peer, anchor) = (
            call.a_tx,
            call.a.local_tag.clone(),
            call.a.peer,
            call.anchor,
        );
        ok.set_header(Name::CONTACT, self.local.contact(picker_peer));
        let to_picker = self.answer_body(now, call_id, Side::B, 200, to_picker);
        set_sdp(&mut ok, to_picker);
        self.tx.send_response(now.mono, picker_tx, ok);
        if let Some(pickup) = self.calls.pickups.get_mut(&id) {
            pickup.dummy_open = false;
        }
        let to_caller = match anchor {
            Some(anchor) => self.anchor_body(anchor, Side::B, &to_caller, a_peer),
            None => to_caller,
        };
        let to_caller = self.answer_body(now, call_id, Side::A, 200, to_caller);
        let Some(a_request) = self.tx.request(a_tx) else {
            return;
        };
        let mut answer = a_request.response(200, "OK", Some(&a_tag));
        answer.set_header(Name::CONTACT, self.local.contact(a_peer));
        set_sdp(&mut answer, to_caller);
        self.tx.send_response(now.mono, a_tx, answer);
        tracing::info!("pickup {id}: call {call_id} bridged to the picker");
        let path = match self.calls.pickups.get(&id).map(Pickup::path) {
            Some(PickupPath::Replaces) => PickupPath::Fallback,
            path => path.unwrap_or(PickupPath::Bridged),
        };
        self.count_pickup(now, id, path, true);
        self.finish_pickup(now, id, None);
    }

    /// The picker CANCELled (or BYEd) its INVITE: while a Replaces INVITE is pending this is
    /// the replacement itself; otherwise the picker gave up and the call rings again.
    pub(super) fn picker_gave_up(&mut self, now: Now, id: u64) {
        let Some(pickup) = self.calls.pickups.get_mut(&id) else {
            return;
        };
        if pickup.dummy_open {
            pickup.dummy_open = false;
            let (tx, tag) = (pickup.tx, pickup.dummy_tag.clone());
            self.answer_picker(now, tx, &tag, 487, "Request Terminated");
        }
        let Some(pickup) = self.calls.pickups.get(&id) else {
            return;
        };
        let replaces_pending = pickup
            .call
            .and_then(|c| self.calls.calls.get(&c))
            .is_some_and(|call| {
                call.forks
                    .iter()
                    .any(|f| f.pickup == Some(id) && f.final_status.is_none())
            });
        if replaces_pending {
            tracing::info!("pickup {id}: the picker ended the dummy dialog; waiting for the Replaces INVITE's answer");
        } else if pickup.call.is_some() {
            tracing::info!("pickup {id}: the picker hung up before being connected");
            self.pickup_failed(now, id, "the picker hung up before being connected");
        } else {
            // Still claiming: the claim's answer finds no pickup and releases the call.
            self.finish_pickup(now, id, None);
        }
    }

    /// The pickup failed (for `why`) after the ringing legs were cancelled: the attempt is
    /// recorded and they ring again.
    fn pickup_failed(&mut self, now: Now, id: u64, why: &str) {
        let call_id = self.calls.pickups.get(&id).and_then(|p| p.call);
        self.finish_pickup(
            now,
            id,
            Some((480, "Temporarily Unavailable (pickup failed)")),
        );
        if let Some(call) = call_id.and_then(|c| self.calls.calls.get_mut(&c)) {
            if let Some(failed) = call.fail_claim(now.unix_ms, why) {
                self.store_commands.push_back(failed);
            }
            if call.answered.is_none() {
                if let Some(call_id) = call_id {
                    self.ring_callee(now, call_id);
                }
            }
        }
    }

    /// The call a pickup was for ended: end the picker's side too.
    pub(super) fn abandon_pickup(&mut self, now: Now, id: u64, code: u16, reason: &str) {
        self.finish_pickup(now, id, Some((code, reason)));
    }

    /// Forgets a pickup; answers the picker's INVITE with `answer` if it is still open.
    pub(super) fn finish_pickup(&mut self, now: Now, id: u64, answer: Option<(u16, &str)>) {
        if let Some(path) = self.calls.pickups.get(&id).map(Pickup::path) {
            self.count_pickup(now, id, path, false);
        }
        let Some(pickup) = self.calls.remove_pickup(id) else {
            return;
        };
        if let Some(call) = pickup.call.and_then(|c| self.calls.calls.get_mut(&c)) {
            if call.picking == Some(id) {
                call.picking = None;
            }
        }
        if let (true, Some((code, reason))) = (pickup.dummy_open, answer) {
            self.answer_picker(now, pickup.tx, &pickup.dummy_tag, code, reason);
        }
    }

    /// Counts how pickup `id` ended, along `path`, `connected` or not; only its first
    /// ending counts (a failure after it connected is its cleanup).
    fn count_pickup(&mut self, now: Now, id: u64, path: PickupPath, connected: bool) {
        let Some(pickup) = self.calls.pickups.get_mut(&id) else {
            return;
        };
        if std::mem::replace(&mut pickup.counted, true) {
            return;
        }
        let recent = RecentPickupView {
            picker: pickup.picker.clone(),
            method: pickup.method.as_str().into(),
            path: path.as_str().into(),
            outcome: if connected { "connected" } else { "failed" }.into(),
            at_ms: now.unix_ms,
        };
        self.metrics.pickup_ended(path, connected, recent);
    }

    /// Pickup `id` goes on on another shard or node, which counts how it ends.
    pub(super) fn pickup_handed_on(&mut self, id: u64) {
        if let Some(pickup) = self.calls.pickups.get_mut(&id) {
            pickup.counted = true;
        }
    }

    /// A final response to a picker's INVITE, in the dummy dialog (our tag `tag`).
    fn answer_picker(&mut self, now: Now, tx: ServerTxId, tag: &str, code: u16, reason: &str) {
        if let Some(request) = self.tx.request(tx) {
            let mut response = request.response(code, reason, Some(tag));
            if code == 503 {
                let retry = self.config.overload.retry_after_secs.to_string();
                response.set_header(Name::RETRY_AFTER, retry);
            }
            self.tx.send_response(now.mono, tx, response);
        }
    }
}

/// `body` as the SDP of `message` (nothing when empty).
fn set_sdp(message: &mut SipMessage, body: Bytes) {
    if !body.is_empty() {
        message.set_header(Name::CONTENT_TYPE, "application/sdp");
        message.body = body;
    }
}
