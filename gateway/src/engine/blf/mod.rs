//! BLF keys: the dialog event package (RFC 4235) over SIP-specific event notification
//! (RFC 6665). The gateway is the notifier for every extension, SIP or analog.
//!
//! A SUBSCRIBE (`Event: dialog`) is authenticated like an INVITE (digest, 407), its From
//! must be the authenticated extension, and it names the watched extension by its
//! Request-URI. Privacy: a subscriber whose pickup groups meet the watched extension's
//! call groups (or the extension itself) sees identities and dialog ids; others get 403, or
//! the bare states when the extension says `blf_others = "state-only"`. The expiry is
//! negotiated within `[subscriptions]` (423 below the minimum, longer ones shortened),
//! refreshed in the dialog, ended by `Expires: 0` (a final NOTIFY, `terminated`) or by
//! time (`terminated;reason=timeout`). Each NOTIFY is a client transaction to the
//! subscriber's Contact over the transport its SUBSCRIBE came in on; a 481, a timeout or
//! another failure without Retry-After ends the subscription (RFC 6665 §4.2.2).
//!
//! The state comes from the call table: after every event the engine handles, the dialogs
//! of each watched extension are derived again (`view.rs`) and, where they differ from
//! what its watchers were last told, every watcher gets a NOTIFY with the full state and
//! the next `version`. Subscriptions are kept in the store and restored at start, each
//! getting a fresh full-state NOTIFY (so no key stays lit by a call the restart ended); the
//! CSeq and version stored with them keep rising across the restart.
//!
//! In a cluster a key sees the calls of every node: each node writes its dialogs of the
//! extensions watched elsewhere to the shared database and reads the others'
//! (`cluster.rs`, in the text format of `wire.rs`); the engine shards of one gateway tell
//! each other theirs through their queues (`shards.rs`).

mod cluster;
mod dialog_info;
mod notify;
mod replaces;
mod shards;
mod table;
mod view;
pub mod wire;

pub use cluster::Shared;
pub use dialog_info::DialogView;
#[cfg(test)]
pub use notify::NOTIFY_BATCH;
pub use replaces::{named_leg, pickup_relay_named, replaced_call_id, replaced_dialog, Replaced};
pub use shards::ShardDialogs;
pub use table::Subscriptions;

use super::{Engine, Now};
use crate::config::BlfOthers;
use crate::engine::dialog::Dialog;
use crate::sip::ids;
use crate::sip::message::SipMessage;
use crate::sip::transaction::ServerTxId;
use crate::transport::{Peer, Protocol};
use ezk_sip_types::Name;
use std::time::Duration;
use table::{Refusal, Subscription};

/// The one event package served.
pub const EVENT_PACKAGE: &str = "dialog";

/// How a NOTIFY describes the subscription.
#[derive(Debug, Clone, Copy)]
enum SubState {
    /// Going on.
    Active,
    /// Over; `Some(reason)` says why (`timeout`, `rejected`).
    Terminated(Option<&'static str>),
}

/// The package and the `id` parameter of an Event header.
fn event_of(msg: &SipMessage) -> Option<(String, Option<String>)> {
    let value = msg.header(&Name::EVENT)?;
    let mut parts = value.split(';').map(str::trim);
    let package = parts.next()?.to_ascii_lowercase();
    let id = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("id")
            .then(|| value.trim().to_string())
    });
    Some((package, id))
}

/// Whether the request's Accept (if any) takes dialog-info documents.
fn accepts_dialog_info(msg: &SipMessage) -> bool {
    let accepted = msg.header_list(&Name::ACCEPT);
    accepted.is_empty()
        || accepted.iter().any(|item| {
            let media = item.split(';').next().unwrap_or_default().trim();
            [dialog_info::CONTENT_TYPE, "application/*", "*/*"]
                .iter()
                .any(|ok| media.eq_ignore_ascii_case(ok))
        })
}

impl Engine {
    /// What `subscriber` may learn of `target`'s dialogs: Some(true) everything, Some(false)
    /// the states only, None nothing (403).
    fn visibility(&self, subscriber: &str, target: &str) -> Option<bool> {
        let watched = self.config.extension(target)?;
        let picker = self.config.extension(subscriber)?;
        let related = subscriber == target
            || picker
                .pickup_groups
                .iter()
                .any(|g| watched.call_groups.contains(g));
        match (related, watched.blf_others) {
            (true, _) => Some(true),
            (false, BlfOthers::StateOnly) => Some(false),
            (false, BlfOthers::Forbidden) => None,
        }
    }

    /// A stateless final response with an optional extra header.
    fn refuse_subscribe(
        &mut self,
        tx: ServerTxId,
        msg: &SipMessage,
        (code, reason): (u16, &str),
        header: Option<(Name, String)>,
    ) {
        let mut response = msg.response(code, reason, Some(&ids::tag()));
        if let Some((name, value)) = header {
            response.set_header(name, value);
        }
        self.tx.respond_statelessly(tx, response);
    }

    /// The granted expiry for a requested one (None: the default); Err is the 423 minimum.
    fn grant_expires(&self, requested: Option<u32>) -> Result<u32, u32> {
        let limits = &self.config.subscriptions;
        match requested {
            None => Ok(limits.default_expires_secs),
            Some(0) => Ok(0),
            Some(secs) if secs < limits.min_expires_secs => Err(limits.min_expires_secs),
            Some(secs) => Ok(secs.min(limits.max_expires_secs)),
        }
    }

    /// A SUBSCRIBE, new (`in_dialog` false) or a refresh in its subscription's dialog.
    pub(super) fn on_subscribe(
        &mut self,
        now: Now,
        tx: ServerTxId,
        msg: SipMessage,
        peer: Peer,
        in_dialog: bool,
    ) {
        let event = event_of(&msg);
        if event
            .as_ref()
            .is_none_or(|(package, _)| package != EVENT_PACKAGE)
        {
            self.refuse_subscribe(
                tx,
                &msg,
                (489, "Bad Event"),
                Some((Name::ALLOW_EVENTS, EVENT_PACKAGE.into())),
            );
            return;
        }
        if !accepts_dialog_info(&msg) {
            self.refuse_subscribe(
                tx,
                &msg,
                (406, "Not Acceptable"),
                Some((Name::ACCEPT, dialog_info::CONTENT_TYPE.into())),
            );
            return;
        }
        let requested = match msg.header(&Name::EXPIRES).map(|v| v.trim().parse::<u32>()) {
            None => None,
            Some(Ok(secs)) => Some(secs),
            Some(Err(_)) => {
                self.refuse_subscribe(tx, &msg, (400, "Bad Request (malformed Expires)"), None);
                return;
            }
        };
        let granted = match self.grant_expires(requested) {
            Ok(granted) => granted,
            Err(min) => {
                self.refuse_subscribe(
                    tx,
                    &msg,
                    (423, "Interval Too Brief"),
                    Some((Name::MIN_EXPIRES, min.to_string())),
                );
                return;
            }
        };
        let event_id = event.and_then(|(_, id)| id);
        if in_dialog {
            self.on_refresh(now, tx, &msg, granted);
        } else {
            self.on_new_subscribe(now, tx, msg, peer, granted, event_id);
        }
    }

    fn on_new_subscribe(
        &mut self,
        now: Now,
        tx: ServerTxId,
        msg: SipMessage,
        peer: Peer,
        granted: u32,
        event_id: Option<String>,
    ) {
        let claimed = msg.from_header().and_then(|from| from.user());
        let subscriber = if peer.protocol == Protocol::Internal {
            claimed.clone().unwrap_or_default()
        } else {
            let kind = super::registration::ChallengeKind::Proxy;
            let Some(user) = self.authenticate(now, tx, &msg, (claimed.as_deref(), peer), kind)
            else {
                return;
            };
            user
        };
        if claimed.as_deref() != Some(subscriber.as_str()) {
            let reason = "Forbidden (From does not match the authenticated user)";
            self.refuse_subscribe(tx, &msg, (403, reason), None);
            return;
        }
        let target = msg
            .request_line()
            .and_then(|line| line.uri.user())
            .unwrap_or_default()
            .to_string();
        if self.config.extension(&target).is_none() {
            self.refuse_subscribe(tx, &msg, (404, "Not Found"), None);
            return;
        }
        let Some(identities) = self.visibility(&subscriber, &target) else {
            let reason = "Forbidden (not in a pickup group of that extension)";
            self.refuse_subscribe(tx, &msg, (403, reason), None);
            return;
        };
        let limits = &self.config.subscriptions;
        if granted > 0 {
            let refusal =
                self.subscriptions
                    .admits(&subscriber, limits.max_per_subscriber, limits.max_total);
            match refusal {
                Ok(()) => {}
                Err(Refusal::SubscriberFull) => {
                    let reason = "Forbidden (too many subscriptions from this extension)";
                    self.refuse_subscribe(tx, &msg, (403, reason), None);
                    return;
                }
                Err(Refusal::TotalFull) => {
                    let retry = self.config.overload.retry_after_secs.to_string();
                    let reason = "Service Unavailable (too many subscriptions)";
                    self.refuse_subscribe(
                        tx,
                        &msg,
                        (503, reason),
                        Some((Name::RETRY_AFTER, retry)),
                    );
                    return;
                }
            }
        }
        let has_contact = msg.contacts().is_some_and(|c| !c.is_empty());
        let dialog = Dialog::answering(&msg, ids::tag(), peer).filter(|_| has_contact);
        let Some(dialog) = dialog else {
            let reason = "Bad Request (SUBSCRIBE needs From, To and Contact)";
            self.refuse_subscribe(tx, &msg, (400, reason), None);
            return;
        };
        let mut ok = msg.response(200, "OK", Some(&dialog.local_tag));
        ok.set_header(Name::EXPIRES, granted.to_string());
        ok.set_header(Name::CONTACT, self.local.contact(peer));
        self.tx.send_response(now.mono, tx, ok);
        tracing::info!("{subscriber} subscribed to the dialogs of {target} for {granted} s");
        let expires = now.mono + Duration::from_secs(granted.into());
        let first_watcher = self.subscriptions.watching(&target).is_empty();
        let seed = first_watcher.then(|| target.clone());
        // With other shards, the first NOTIFY waits for their dialogs of the target.
        if self.shard.count() > 1 && first_watcher {
            let own = self.shard.index();
            let others = (0..self.shard.count()).filter(|&shard| shard != own);
            self.shard_dialogs.await_answers(&target, others);
        }
        let waits = self.shard_dialogs.is_awaited(&target);
        let id = self.subscriptions.insert(Subscription {
            subscriber,
            target,
            dialog,
            event_id,
            expires,
            expires_unix: now.unix() + u64::from(granted),
            next_version: 0,
            identities,
            reserved: None,
        });
        self.seed_last(seed.as_slice());
        if waits {
            // Sent by `notify_answered_targets` (a fetch ends there too).
        } else if granted == 0 {
            // A fetch (RFC 6665 §4.4.3): the state once, and no subscription.
            self.end_subscription(now, id, Some(SubState::Terminated(Some("timeout"))));
        } else {
            self.send_notify(now, id, SubState::Active);
        }
    }

    /// A refresh or an unsubscribe in an existing subscription's dialog.
    fn on_refresh(&mut self, now: Now, tx: ServerTxId, msg: &SipMessage, granted: u32) {
        let call_id = msg.call_id().unwrap_or_default();
        let our_tag = msg.to_header().and_then(|to| to.tag().map(str::to_string));
        let their_tag = msg.from_header().and_then(|f| f.tag().map(str::to_string));
        let id = our_tag
            .and_then(|tag| self.subscriptions.by_dialog(call_id, &tag))
            .filter(|&id| {
                self.subscriptions
                    .get_mut(id)
                    .is_some_and(|sub| sub.dialog.remote_tag == their_tag)
            });
        let Some(id) = id else {
            let response = msg.response(481, "Call/Transaction Does Not Exist", None);
            self.tx.respond_statelessly(tx, response);
            return;
        };
        let mut ok = msg.response(200, "OK", None);
        ok.set_header(Name::EXPIRES, granted.to_string());
        if let Some(sub) = self.subscriptions.get_mut(id) {
            ok.set_header(Name::CONTACT, self.local.contact(sub.dialog.peer));
            // Target refresh (RFC 6665 §4.1.2.1), only by an explicit Contact.
            if let Some(contact) = msg.contacts().and_then(|c| c.into_iter().next()) {
                sub.dialog.remote_target = contact.uri;
            }
        }
        self.tx.send_response(now.mono, tx, ok);
        if granted == 0 {
            self.end_subscription(now, id, Some(SubState::Terminated(None)));
            return;
        }
        self.subscriptions.refresh(
            id,
            now.mono + Duration::from_secs(granted.into()),
            now.unix() + u64::from(granted),
        );
        self.send_notify(now, id, SubState::Active);
    }
}
