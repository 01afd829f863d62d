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

mod dialog_info;
mod replaces;
mod table;
mod view;

pub use replaces::replaced_leg;
pub use table::Subscriptions;

use super::{Engine, Now};
use crate::config::BlfOthers;
use crate::engine::dialog::Dialog;
use crate::sip::ids;
use crate::sip::message::SipMessage;
use crate::sip::transaction::{ClientTxId, ServerTxId};
use crate::store::{StoreCommand, StoredSubscription};
use crate::transport::{Peer, Protocol};
use dialog_info::{DialogState, DialogView};
use ezk_sip_types::{Method, Name};
use std::collections::HashSet;
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

/// The dialogs to notify now: those going on, and those that ended since `last` was sent
/// (once, as terminated, with the event that ended them).
fn merge(last: &[DialogView], current: Vec<DialogView>) -> Vec<DialogView> {
    let is_live = |d: &DialogView| !matches!(d.state, DialogState::Terminated(_));
    let was_live = |id: &str| last.iter().any(|d| d.id == id && is_live(d));
    let mut merged: Vec<DialogView> = current
        .into_iter()
        .filter(|d| is_live(d) || was_live(&d.id))
        .collect();
    for gone in last.iter().filter(|d| is_live(d)) {
        if !merged.iter().any(|d| d.id == gone.id) {
            let event = (gone.state != DialogState::Confirmed).then_some("cancelled");
            merged.push(DialogView {
                state: DialogState::Terminated(event),
                ..gone.clone()
            });
        }
    }
    merged
}

/// Whether two notified states differ in what is going on.
fn live_differs(a: &[DialogView], b: &[DialogView]) -> bool {
    let live = |v: &[DialogView]| -> Vec<DialogView> {
        v.iter()
            .filter(|d| !matches!(d.state, DialogState::Terminated(_)))
            .cloned()
            .collect()
    };
    live(a) != live(b)
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
        let id = self.subscriptions.insert(Subscription {
            subscriber,
            target,
            dialog,
            event_id,
            expires,
            expires_unix: now.unix() + u64::from(granted),
            next_version: 0,
            identities,
        });
        self.seed_last(seed.as_slice());
        if granted == 0 {
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
            if let Some(contact) = msg.remote_target() {
                sub.dialog.remote_target = contact; // target refresh (RFC 6665 §4.1.2.1)
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

    /// Ends a subscription: a last NOTIFY with `notify` (None: the subscriber is gone, send
    /// nothing), and the store forgets it.
    fn end_subscription(&mut self, now: Now, id: u64, notify: Option<SubState>) {
        if let Some(state) = notify {
            self.send_notify(now, id, state);
        }
        if let Some(sub) = self.subscriptions.remove(id) {
            tracing::info!(
                "the subscription of {} to {} ended",
                sub.subscriber,
                sub.target
            );
            self.store_commands
                .push_back(StoreCommand::DeleteSubscription {
                    call_id: sub.dialog.call_id,
                    local_tag: sub.dialog.local_tag,
                });
        }
    }

    /// Takes the current dialogs of `targets` as what their watchers know: for an extension
    /// that just got its first watcher (or every one after a restart), whose first NOTIFY
    /// follows at once.
    fn seed_last(&mut self, targets: &[String]) {
        if targets.is_empty() {
            return;
        }
        let watched: HashSet<&str> = targets.iter().map(String::as_str).collect();
        let mut current = view::dialogs_of(&self.calls, &self.config, &self.local, &watched);
        for target in targets {
            let dialogs = merge(&[], current.remove(target).unwrap_or_default());
            self.subscriptions.set_last(target, dialogs);
        }
    }

    /// Sends subscription `id` a NOTIFY with its extension's full state.
    fn send_notify(&mut self, now: Now, id: u64, state: SubState) {
        let tcp_served = self.serves_tcp();
        let Some(sub) = self.subscriptions.get_mut(id) else {
            return;
        };
        let target = sub.target.clone();
        let identities = sub.identities;
        let dialogs: Vec<DialogView> = self
            .subscriptions
            .last(&target)
            .iter()
            .map(|d| match identities {
                true => d.clone(),
                false => DialogView {
                    ids: None,
                    parties: None,
                    ..d.clone()
                },
            })
            .collect();
        let Some(sub) = self.subscriptions.get_mut(id) else {
            return;
        };
        let version = sub.next_version;
        sub.next_version += 1;
        let body = dialog_info::render(&self.local.uri_for(&target), version, &dialogs);
        let mut notify = sub.dialog.request(Method::NOTIFY, None, &self.local);
        notify.set_header(
            Name::EVENT,
            match &sub.event_id {
                Some(event_id) => format!("{EVENT_PACKAGE};id={event_id}"),
                None => EVENT_PACKAGE.to_string(),
            },
        );
        let remaining = sub.expires.saturating_duration_since(now.mono).as_secs();
        notify.set_header(
            Name::SUBSCRIPTION_STATE,
            match state {
                SubState::Active => format!("active;expires={remaining}"),
                SubState::Terminated(Some(reason)) => format!("terminated;reason={reason}"),
                SubState::Terminated(None) => "terminated".to_string(),
            },
        );
        notify.set_header(Name::CONTACT, self.local.contact(sub.dialog.peer));
        notify.set_header(Name::CONTENT_TYPE, dialog_info::CONTENT_TYPE);
        notify.body = body.into();
        if let Err(error) = sub
            .dialog
            .fit_transport(&mut notify, &self.local, tcp_served)
        {
            tracing::warn!("NOTIFY to {} not sent: {error}", sub.subscriber);
            return;
        }
        let peer = sub.dialog.peer;
        let stored = stored(sub);
        let tx = self.tx.send_request(now.mono, notify, peer);
        self.subscriptions.add_notify(tx, id);
        self.store_commands
            .push_back(StoreCommand::SaveSubscription(Box::new(stored)));
    }

    /// A response to one of our NOTIFYs (false: not ours). A failure ends the subscription.
    pub(super) fn on_notify_response(
        &mut self,
        now: Now,
        tx: ClientTxId,
        msg: &SipMessage,
    ) -> bool {
        if !self.subscriptions.owns_notify(tx) {
            return false;
        }
        let Some(code) = msg.status().filter(|&code| code >= 200) else {
            return true;
        };
        if let Some(id) = self.subscriptions.take_notify(tx) {
            let retry_later = msg.header(&Name::RETRY_AFTER).is_some() && code != 481;
            if code >= 300 && !retry_later {
                tracing::info!("NOTIFY answered {code}: ending the subscription");
                self.end_subscription(now, id, None);
            }
        }
        true
    }

    /// One of our NOTIFYs timed out (false: not ours): the subscriber is gone.
    pub(super) fn on_notify_timeout(&mut self, now: Now, tx: ClientTxId) -> bool {
        if !self.subscriptions.owns_notify(tx) {
            return false;
        }
        if let Some(id) = self.subscriptions.take_notify(tx) {
            tracing::info!("NOTIFY timed out: ending the subscription");
            self.end_subscription(now, id, None);
        }
        true
    }

    /// Ends the subscriptions whose time is up.
    pub(super) fn expire_subscriptions(&mut self, now: Now) {
        while let Some(id) = self.subscriptions.pop_expired(now.mono) {
            self.end_subscription(now, id, Some(SubState::Terminated(Some("timeout"))));
        }
    }

    /// Notifies the watchers of every extension whose dialogs changed.
    pub(super) fn publish_dialog_states(&mut self, now: Now) {
        if self.subscriptions.is_empty() {
            return;
        }
        let targets = self.subscriptions.targets();
        let mut current = view::dialogs_of(&self.calls, &self.config, &self.local, &targets);
        let changed: Vec<(String, Vec<DialogView>)> = targets
            .iter()
            .filter_map(|&target| {
                let last = self.subscriptions.last(target);
                let now_views = current.remove(target).unwrap_or_default();
                live_differs(last, &now_views).then(|| (target.to_string(), merge(last, now_views)))
            })
            .collect();
        for (target, dialogs) in changed {
            self.subscriptions.set_last(&target, dialogs);
            for id in self.subscriptions.watching(&target) {
                self.send_notify(now, id, SubState::Active);
            }
        }
    }

    /// Takes back the subscriptions the store kept (at start): each gets a full-state
    /// NOTIFY; one the configuration no longer allows is ended (`reason=rejected`).
    pub fn restore_subscriptions(&mut self, now: Now, stored: Vec<StoredSubscription>) {
        let mut restored = Vec::new();
        for sub in stored {
            let identities = self.visibility(&sub.subscriber, &sub.target);
            let remaining = sub.expires_at.saturating_sub(now.unix());
            let id = self.subscriptions.insert(Subscription {
                dialog: Dialog {
                    call_id: sub.call_id,
                    local_tag: sub.local_tag,
                    remote_tag: Some(sub.remote_tag),
                    local_uri: sub.local_uri,
                    remote_uri: sub.remote_uri,
                    remote_target: sub.remote_target,
                    local_cseq: sub.cseq,
                    peer: sub.peer,
                },
                subscriber: sub.subscriber,
                target: sub.target,
                event_id: sub.event_id,
                expires: now.mono + Duration::from_secs(remaining),
                expires_unix: sub.expires_at,
                next_version: sub.version,
                identities: identities.unwrap_or(false),
            });
            match identities {
                Some(_) => restored.push(id),
                None => {
                    self.end_subscription(now, id, Some(SubState::Terminated(Some("rejected"))))
                }
            }
        }
        if restored.is_empty() {
            return;
        }
        tracing::info!("{} dialog subscription(s) restored", restored.len());
        let targets: Vec<String> = self
            .subscriptions
            .targets()
            .into_iter()
            .map(str::to_string)
            .collect();
        self.seed_last(&targets);
        for id in restored {
            self.send_notify(now, id, SubState::Active);
        }
    }
}

/// What the store keeps of a subscription.
fn stored(sub: &Subscription) -> StoredSubscription {
    StoredSubscription {
        subscriber: sub.subscriber.clone(),
        target: sub.target.clone(),
        call_id: sub.dialog.call_id.clone(),
        local_tag: sub.dialog.local_tag.clone(),
        remote_tag: sub.dialog.remote_tag.clone().unwrap_or_default(),
        local_uri: sub.dialog.local_uri.clone(),
        remote_uri: sub.dialog.remote_uri.clone(),
        remote_target: sub.dialog.remote_target.clone(),
        peer: sub.dialog.peer,
        cseq: sub.dialog.local_cseq,
        version: sub.next_version,
        event_id: sub.event_id.clone(),
        expires_at: sub.expires_unix,
    }
}
