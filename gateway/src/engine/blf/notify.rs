//! NOTIFYs: sending them (full state, the next version, over the subscriber's flow), their
//! outcome (a failure ends the subscription), expiry, publishing state changes, and the
//! subscriptions taken back from the store at start.

use super::dialog_info::{self, DialogState, DialogView, Document, GatewayName};
use super::table::Subscription;
use super::{view, SubState, EVENT_PACKAGE};
use crate::engine::dialog::Dialog;
use crate::engine::shard::{ShardNotice, ShardOutput};
use crate::engine::{Engine, Now};
use crate::sip::message::SipMessage;
use crate::sip::transaction::ClientTxId;
use crate::store::{StoreCommand, StoredSubscription};
use ezk_sip_types::{Method, Name};
use std::time::Duration;

/// The most NOTIFYs built per turn of the engine (about 3 ms of work): a fan-out to more
/// keys lets the messages waiting meanwhile in between. Not smaller: the NOTIFYs' own
/// answers would come in between too and hold up the last keys (measured with `sip-blf`:
/// p99 5-6 ms with 32 or 64 per turn, 3.5-3.9 ms with 256).
pub const NOTIFY_BATCH: usize = 256;

/// The dialogs to notify now: those going on, and those that ended since `last` was sent
/// (once, as terminated, with the event that ended them).
fn merge(last: &[DialogView], current: Vec<DialogView>) -> Vec<DialogView> {
    let was_live = |id: &str| last.iter().any(|d| d.id == id && d.is_live());
    let mut merged: Vec<DialogView> = current
        .into_iter()
        .filter(|d| d.is_live() || was_live(&d.id))
        .collect();
    for gone in last.iter().filter(|d| d.is_live()) {
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
    a.iter()
        .filter(|d| d.is_live())
        .ne(b.iter().filter(|d| d.is_live()))
}

impl Engine {
    /// Ends a subscription: a last NOTIFY with `notify` (None: the subscriber is gone, send
    /// nothing), and the store forgets it.
    pub(super) fn end_subscription(&mut self, now: Now, id: u64, notify: Option<SubState>) {
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
    pub(super) fn seed_last(&mut self, targets: &[String]) {
        if targets.is_empty() {
            return;
        }
        let mut current = view::dialogs_of(
            &self.calls,
            &self.config,
            targets.iter().map(String::as_str),
        );
        for target in targets {
            let mut dialogs = current.remove(target).unwrap_or_default();
            dialogs.extend(self.shared.remote_dialogs(target).cloned());
            dialogs.extend(self.shard_dialogs.remote_dialogs(target).cloned());
            self.subscriptions.set_last(target, merge(&[], dialogs));
        }
    }

    /// Sends subscription `id` a NOTIFY with its extension's full state. While one is in
    /// flight, a change waits for its answer and then goes out as the state current then
    /// (one NOTIFY in flight per subscription, so they arrive in order and a subscriber
    /// that answered 481 gets no more); the final NOTIFY of a subscription goes at once.
    pub(super) fn send_notify(&mut self, now: Now, id: u64, state: SubState) {
        if matches!(state, SubState::Active) && self.subscriptions.notify_in_flight(id) {
            self.subscriptions.owe_notify(id);
            return;
        }
        let tcp_served = self.serves_tcp();
        let Some(sub) = self.subscriptions.get_mut(id) else {
            return;
        };
        let (target, identities) = (sub.target.clone(), sub.identities);
        let version = sub.next_version;
        sub.next_version += 1;
        let gateway = GatewayName {
            host: self.local.host(sub.dialog.peer),
            host_port: self.local.host_port(sub.dialog.peer),
        };
        let body = self
            .subscriptions
            .document(&target, identities, gateway.clone(), |last| {
                let shown: Vec<DialogView> = last
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
                Document::new(&gateway, &target, &shown)
            })
            .at(version);
        let Some(sub) = self.subscriptions.get_mut(id) else {
            return;
        };
        let mut notify = sub.dialog.request(Method::NOTIFY, None, &self.local);
        notify.add_header(
            Name::EVENT,
            match &sub.event_id {
                Some(event_id) => format!("{EVENT_PACKAGE};id={event_id}"),
                None => EVENT_PACKAGE.to_string(),
            },
        );
        let remaining = sub.expires.saturating_duration_since(now.mono).as_secs();
        notify.add_header(
            Name::SUBSCRIPTION_STATE,
            match state {
                SubState::Active => format!("active;expires={remaining}"),
                SubState::Terminated(Some(reason)) => format!("terminated;reason={reason}"),
                SubState::Terminated(None) => "terminated".to_string(),
            },
        );
        notify.add_header(Name::CONTACT, self.local.contact(sub.dialog.peer));
        notify.add_header(Name::CONTENT_TYPE, dialog_info::CONTENT_TYPE);
        notify.body = body.into();
        if let Err(error) = sub
            .dialog
            .fit_transport(&mut notify, &self.local, tcp_served)
        {
            tracing::warn!("NOTIFY to {} not sent: {error}", sub.subscriber);
            return;
        }
        let peer = sub.dialog.peer;
        if let Some(stored) = sub.save_due(&self.config.node.id) {
            self.store_commands
                .push_back(StoreCommand::SaveSubscription(Box::new(stored)));
        }
        let tx = self.tx.send_request(now.mono, notify, peer);
        self.subscriptions.add_notify(tx, id);
    }

    /// A response to one of our NOTIFYs (false: not ours). A failure ends the subscription.
    pub(in crate::engine) fn on_notify_response(
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
            } else if self.subscriptions.take_owed(id) {
                self.send_notify(now, id, SubState::Active);
            }
        }
        true
    }

    /// One of our NOTIFYs timed out (false: not ours): the subscriber is gone.
    pub(in crate::engine) fn on_notify_timeout(&mut self, now: Now, tx: ClientTxId) -> bool {
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
    pub(in crate::engine) fn expire_subscriptions(&mut self, now: Now) {
        while let Some(id) = self.subscriptions.pop_expired(now.mono) {
            self.end_subscription(now, id, Some(SubState::Terminated(Some("timeout"))));
        }
    }

    /// Notifies the watchers of every extension whose dialogs changed, and in a cluster
    /// writes this node's dialogs of the extensions watched on other nodes where they
    /// changed (`cluster.rs`). Only extensions of a call touched since the last turn, or
    /// whose dialogs on another node changed, can have changed: the rest are not looked at
    /// (no work per call in progress). Each watched extension's dialogs are this node's
    /// (`view.rs`), then the other nodes' (by node id).
    pub(in crate::engine) fn publish_dialog_states(&mut self, now: Now) {
        // In the order of the extensions, not of a hash map's seed, so a run replays.
        let mut changed = view::refresh(&mut self.calls, &self.config);
        changed.append(&mut self.shared.take_changed());
        changed.append(&mut self.shard_dialogs.take_changed());
        let clustered = self.config.node.is_clustered();
        let sharded = self.shard.count() > 1;
        // Taken whether or not there are other shards to tell: they pile up otherwise.
        let watch_changes = self.subscriptions.take_watch_changes();
        if sharded {
            for (extension, watching) in watch_changes {
                self.shard_outputs
                    .push_back(ShardOutput::Notice(ShardNotice::Watch {
                        shard: self.shard.index(),
                        extension,
                        watching,
                    }));
            }
        }
        if self.subscriptions.is_empty()
            && !(clustered && self.shared.publishes())
            && !(sharded && self.shard_dialogs.publishes())
        {
            return;
        }
        let (subscriptions, shared, shard_dialogs) =
            (&self.subscriptions, &self.shared, &self.shard_dialogs);
        let mut current = view::dialogs_of(
            &self.calls,
            &self.config,
            changed.iter().map(String::as_str).filter(|e| {
                subscriptions.is_watched(e)
                    || shared.watched_elsewhere(e)
                    || shard_dialogs.watched_elsewhere(e)
            }),
        );
        if clustered {
            self.publish_to_cluster(now, &changed, &current);
        }
        if sharded {
            for (extension, dialogs) in self.shard_dialogs.take_news(&changed, &current) {
                self.shard_outputs
                    .push_back(ShardOutput::Notice(ShardNotice::Dialogs {
                        shard: self.shard.index(),
                        extension,
                        dialogs,
                    }));
            }
        }
        if self.subscriptions.is_empty() {
            return;
        }
        let (subscriptions, shared, shard_dialogs) =
            (&self.subscriptions, &self.shared, &self.shard_dialogs);
        let candidates = changed
            .into_iter()
            .filter(|target| subscriptions.is_watched(target) && !shard_dialogs.is_awaited(target));
        let changed: Vec<(String, Vec<DialogView>)> = candidates
            .into_iter()
            .filter_map(|target| {
                let mut now_views = current.remove(&target).unwrap_or_default();
                now_views.extend(shared.remote_dialogs(&target).cloned());
                now_views.extend(shard_dialogs.remote_dialogs(&target).cloned());
                let last = subscriptions.last(&target);
                live_differs(last, &now_views).then(|| {
                    let merged = merge(last, now_views);
                    (target, merged)
                })
            })
            .collect();
        for (target, dialogs) in changed {
            self.subscriptions.set_last(&target, dialogs);
            for id in self.subscriptions.watching(&target) {
                self.subscriptions.enqueue(id, now.mono);
            }
        }
        self.send_queued_notifies(now);
    }

    /// The keys whose first NOTIFY waited for the other shards' dialogs of their
    /// extension (all answered now) get it: the state as it is with those dialogs.
    pub(in crate::engine) fn notify_answered_targets(&mut self, now: Now) {
        let ready = self.shard_dialogs.take_ready();
        if ready.is_empty() {
            return;
        }
        self.seed_last(&ready);
        for target in &ready {
            for id in self.subscriptions.watching(target) {
                let unnotified = self
                    .subscriptions
                    .get_mut(id)
                    .is_some_and(|sub| sub.next_version == 0);
                if !unnotified {
                    continue;
                }
                let fetch = self
                    .subscriptions
                    .get_mut(id)
                    .is_some_and(|sub| sub.expires <= now.mono);
                if fetch {
                    self.end_subscription(now, id, Some(SubState::Terminated(Some("timeout"))));
                } else {
                    self.send_notify(now, id, SubState::Active);
                }
            }
        }
    }

    /// Sends the next [`NOTIFY_BATCH`] queued NOTIFYs; the rest wait for the next turn
    /// ([`Engine::poll_timeout`] is then due at once), so the first ones are on the wire
    /// while the next are built, and a message arriving meanwhile is not held up by a
    /// fan-out to thousands of keys.
    pub(in crate::engine) fn send_queued_notifies(&mut self, now: Now) {
        for _ in 0..NOTIFY_BATCH {
            let Some(id) = self.subscriptions.next_queued() else {
                break;
            };
            self.send_notify(now, id, SubState::Active);
        }
    }

    /// Takes back the subscriptions the store kept (at start): each gets a full-state
    /// NOTIFY; one the configuration no longer allows is ended (`reason=rejected`).
    pub fn restore_subscriptions(&mut self, now: Now, stored: Vec<StoredSubscription>) {
        let mut restored = Vec::new();
        for sub in stored {
            let identities = self.visibility(&sub.subscriber, &sub.target);
            // Never longer than a subscription may be granted (the file may be edited).
            let longest = u64::from(self.config.subscriptions.max_expires_secs);
            let remaining = sub.expires_at.saturating_sub(now.unix()).min(longest);
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
                expires_unix: now.unix() + remaining,
                next_version: sub.version,
                identities: identities.unwrap_or(false),
                reserved: None,
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
        let targets: Vec<String> = self.subscriptions.targets().map(str::to_string).collect();
        self.seed_last(&targets);
        for id in restored {
            self.send_notify(now, id, SubState::Active);
        }
    }
}
