//! The subscriptions (RFC 6665 notifier state), sans-IO: who watches which extension, in
//! which dialog, until when; the NOTIFY transactions in flight; the last state each
//! watched extension was notified in. The indexes are kept here and nowhere else.

use super::dialog_info::{DialogView, Document, GatewayName};
use crate::engine::dialog::Dialog;
use crate::sip::transaction::ClientTxId;
use crate::store::StoredSubscription;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;

/// One subscription to an extension's dialog state.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The authenticated extension that subscribed.
    pub subscriber: String,
    /// The watched extension.
    pub target: String,
    /// The subscription's dialog, our side (we are its notifier, the UAS of the SUBSCRIBE).
    pub dialog: Dialog,
    /// The `id` parameter of the SUBSCRIBE's Event header, echoed in every NOTIFY.
    pub event_id: Option<String>,
    /// When it ends unless refreshed.
    pub expires: Instant,
    /// The same moment in Unix seconds (what the store keeps across a restart).
    pub expires_unix: u64,
    /// The `version` the next document gets (RFC 4235 §4.1: 0 first, then +1 per NOTIFY).
    pub next_version: u32,
    /// Whether the subscriber may see identities and dialog ids (privacy, `blf_others`).
    pub identities: bool,
    /// The NOTIFY version and CSeq the store holds for this subscription, above any used
    /// yet (None: nothing stored since it was made, refreshed or restored).
    pub reserved: Option<Reserved>,
}

/// How many NOTIFYs one save of a subscription covers: the store keeps its version and
/// CSeq this far ahead, so a restart continues above anything sent before without a write
/// per NOTIFY (both only need to rise; the documents are full state, so a gap in the
/// versions loses nothing).
pub const RESERVED_NOTIFYS: u32 = 64;

/// The counters a subscription's stored copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// The version a restarted gateway continues from.
    pub version: u32,
    /// The CSeq a restarted gateway continues from.
    pub cseq: u32,
}

impl Subscription {
    /// What the store must be given now, if anything: the subscription (held by `node`)
    /// with its counters reserved [`RESERVED_NOTIFYS`] ahead, when it was never stored since
    /// it changed or its reservation is used up.
    pub fn save_due(&mut self, node: &str) -> Option<StoredSubscription> {
        let covered = self
            .reserved
            .is_some_and(|r| self.next_version < r.version && self.dialog.local_cseq < r.cseq);
        if covered {
            return None;
        }
        let reserved = Reserved {
            version: self.next_version.saturating_add(RESERVED_NOTIFYS),
            cseq: self.dialog.local_cseq.saturating_add(RESERVED_NOTIFYS),
        };
        self.reserved = Some(reserved);
        Some(StoredSubscription {
            node: node.to_string(),
            subscriber: self.subscriber.clone(),
            target: self.target.clone(),
            call_id: self.dialog.call_id.clone(),
            local_tag: self.dialog.local_tag.clone(),
            remote_tag: self.dialog.remote_tag.clone().unwrap_or_default(),
            local_uri: self.dialog.local_uri.clone(),
            remote_uri: self.dialog.remote_uri.clone(),
            remote_target: self.dialog.remote_target.clone(),
            peer: self.dialog.peer,
            cseq: reserved.cseq,
            version: reserved.version,
            event_id: self.event_id.clone(),
            expires_at: self.expires_unix,
        })
    }
}

/// Why a new subscription cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The subscriber holds `max_per_subscriber` already.
    SubscriberFull,
    /// The gateway holds `max_total` already.
    TotalFull,
}

/// The notifier's table.
#[derive(Debug, Default)]
pub struct Subscriptions {
    subs: HashMap<u64, Subscription>,
    next_id: u64,
    /// (Call-ID, our tag) -> subscription.
    by_dialog: HashMap<(String, String), u64>,
    /// A NOTIFY in flight -> its subscription.
    by_tx: HashMap<ClientTxId, u64>,
    /// A subscription -> its NOTIFYs in flight (the other way round).
    notifies: HashMap<u64, Vec<ClientTxId>>,
    by_target: HashMap<String, BTreeSet<u64>>,
    per_subscriber: HashMap<String, usize>,
    expiries: BTreeSet<(Instant, u64)>,
    /// The dialogs each watched extension was last notified with (full, unfiltered).
    last: HashMap<String, Vec<DialogView>>,
    /// The documents rendered from `last`, per watched extension, one per way of seeing it
    /// (identities or not, the gateway's name toward the subscriber).
    documents: HashMap<String, Vec<(bool, GatewayName, Document)>>,
    /// Subscriptions whose extension changed while a NOTIFY of theirs was in flight: they
    /// get the state then current once it is answered.
    owed: HashSet<u64>,
    /// Subscriptions whose extension changed, waiting for their turn to be notified (a
    /// fan-out goes out in batches, so other work and the sends come in between).
    queue: VecDeque<u64>,
    /// The members of `queue` (a subscription is queued once, whatever changes meanwhile:
    /// its NOTIFY carries the state when it is sent).
    queued: HashSet<u64>,
    /// When the oldest queued subscription was queued.
    queued_since: Option<Instant>,
    /// Extensions that got their first watcher (true) or lost their last (false), in
    /// order, not yet taken ([`Subscriptions::take_watch_changes`]).
    watch_changes: Vec<(String, bool)>,
}

impl Subscriptions {
    /// Whether there is no subscription at all.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// How many subscriptions there are.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Every subscription, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.subs.values()
    }

    /// Whether one more subscription for `subscriber` fits the limits.
    pub fn admits(
        &self,
        subscriber: &str,
        per_subscriber: usize,
        total: usize,
    ) -> Result<(), Refusal> {
        if self.subs.len() >= total {
            Err(Refusal::TotalFull)
        } else if self.per_subscriber.get(subscriber).copied().unwrap_or(0) >= per_subscriber {
            Err(Refusal::SubscriberFull)
        } else {
            Ok(())
        }
    }

    /// Adds a subscription; returns its number.
    pub fn insert(&mut self, sub: Subscription) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.by_dialog.insert(
            (sub.dialog.call_id.clone(), sub.dialog.local_tag.clone()),
            id,
        );
        let watchers = self.by_target.entry(sub.target.clone()).or_default();
        if watchers.is_empty() {
            self.watch_changes.push((sub.target.clone(), true));
        }
        watchers.insert(id);
        *self
            .per_subscriber
            .entry(sub.subscriber.clone())
            .or_default() += 1;
        self.expiries.insert((sub.expires, id));
        self.subs.insert(id, sub);
        id
    }

    /// Removes a subscription and every index entry of it.
    pub fn remove(&mut self, id: u64) -> Option<Subscription> {
        let sub = self.subs.remove(&id)?;
        self.by_dialog
            .remove(&(sub.dialog.call_id.clone(), sub.dialog.local_tag.clone()));
        for tx in self.notifies.remove(&id).unwrap_or_default() {
            self.by_tx.remove(&tx);
        }
        if let Some(ids) = self.by_target.get_mut(&sub.target) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_target.remove(&sub.target);
                self.watch_changes.push((sub.target.clone(), false));
                self.last.remove(&sub.target);
                self.documents.remove(&sub.target);
            }
        }
        if let Some(count) = self.per_subscriber.get_mut(&sub.subscriber) {
            *count -= 1;
            if *count == 0 {
                self.per_subscriber.remove(&sub.subscriber);
            }
        }
        self.expiries.remove(&(sub.expires, id));
        self.owed.remove(&id);
        self.queued.remove(&id);
        Some(sub)
    }

    /// A subscription by number.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Subscription> {
        self.subs.get_mut(&id)
    }

    /// The subscription whose dialog is (Call-ID, our tag).
    pub fn by_dialog(&self, call_id: &str, local_tag: &str) -> Option<u64> {
        self.by_dialog
            .get(&(call_id.to_string(), local_tag.to_string()))
            .copied()
    }

    /// Moves a subscription's end to `expires` (`expires_unix` in Unix seconds).
    pub fn refresh(&mut self, id: u64, expires: Instant, expires_unix: u64) {
        if let Some(sub) = self.subs.get_mut(&id) {
            self.expiries.remove(&(sub.expires, id));
            sub.expires = expires;
            sub.expires_unix = expires_unix;
            // The stored copy has the old expiry (and maybe the old target).
            sub.reserved = None;
            self.expiries.insert((expires, id));
        }
    }

    /// Files a NOTIFY transaction under its subscription.
    pub fn add_notify(&mut self, tx: ClientTxId, id: u64) {
        self.by_tx.insert(tx, id);
        self.notifies.entry(id).or_default().push(tx);
    }

    /// Whether subscription `id` has a NOTIFY in flight.
    pub fn notify_in_flight(&self, id: u64) -> bool {
        self.notifies.contains_key(&id)
    }

    /// Subscription `id` is owed a NOTIFY once the one in flight is answered.
    pub fn owe_notify(&mut self, id: u64) {
        self.owed.insert(id);
    }

    /// Queues subscription `id` for a NOTIFY (once, until it is taken).
    pub fn enqueue(&mut self, id: u64, now: Instant) {
        if self.subs.contains_key(&id) && self.queued.insert(id) {
            self.queue.push_back(id);
            self.queued_since.get_or_insert(now);
        }
    }

    /// The next queued subscription (that still exists).
    pub fn next_queued(&mut self) -> Option<u64> {
        while let Some(id) = self.queue.pop_front() {
            if self.queued.remove(&id) {
                if self.queued.is_empty() {
                    self.queued_since = None;
                }
                return Some(id);
            }
        }
        self.queued_since = None;
        None
    }

    /// When the queued NOTIFYs are due (at once: since the first was queued), if any.
    pub fn notify_due(&self) -> Option<Instant> {
        self.queued_since.filter(|_| !self.queued.is_empty())
    }

    /// Whether subscription `id` was owed a NOTIFY (and is no longer).
    pub fn take_owed(&mut self, id: u64) -> bool {
        self.owed.remove(&id)
    }

    /// Whether `tx` is one of our NOTIFYs (in flight or of a subscription already ended).
    pub fn owns_notify(&self, tx: ClientTxId) -> bool {
        self.by_tx.contains_key(&tx)
    }

    /// A NOTIFY transaction ended: its subscription, if that still exists.
    pub fn take_notify(&mut self, tx: ClientTxId) -> Option<u64> {
        let id = self.by_tx.remove(&tx)?;
        if let Some(txs) = self.notifies.get_mut(&id) {
            txs.retain(|t| *t != tx);
            if txs.is_empty() {
                self.notifies.remove(&id);
            }
        }
        Some(id).filter(|id| self.subs.contains_key(id))
    }

    /// The earliest expiry.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// The next subscription expired at `now`, if any.
    pub fn pop_expired(&mut self, now: Instant) -> Option<u64> {
        let &(at, id) = self.expiries.first()?;
        (at <= now).then_some(id)
    }

    /// The extensions that got their first watcher (true) or lost their last (false)
    /// since the last call, in order.
    pub fn take_watch_changes(&mut self) -> Vec<(String, bool)> {
        std::mem::take(&mut self.watch_changes)
    }

    /// The watched extensions.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.by_target.keys().map(String::as_str)
    }

    /// Whether anyone watches `target`.
    pub fn is_watched(&self, target: &str) -> bool {
        self.by_target.contains_key(target)
    }

    /// The subscriptions watching `target`.
    pub fn watching(&self, target: &str) -> Vec<u64> {
        self.by_target
            .get(target)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The dialogs `target` was last notified with.
    pub fn last(&self, target: &str) -> &[DialogView] {
        self.last.get(target).map_or(&[], Vec::as_slice)
    }

    /// Records what `target`'s watchers are notified with from now on.
    pub fn set_last(&mut self, target: &str, dialogs: Vec<DialogView>) {
        if !self.by_target.contains_key(target) {
            return;
        }
        self.last.insert(target.to_string(), dialogs);
        self.documents.remove(target);
    }

    /// The document of `target`'s last state as a subscriber seeing it with `identities`
    /// and naming the gateway `gateway` gets it: rendered by `render` once, and kept until
    /// the state changes.
    pub fn document(
        &mut self,
        target: &str,
        identities: bool,
        gateway: GatewayName,
        render: impl FnOnce(&[DialogView]) -> Document,
    ) -> &Document {
        let last = self.last.get(target).map_or(&[][..], Vec::as_slice);
        let kept = self.documents.entry(target.to_string()).or_default();
        let index = match kept
            .iter()
            .position(|(i, g, _)| *i == identities && *g == gateway)
        {
            Some(index) => index,
            None => {
                kept.push((identities, gateway, render(last)));
                kept.len() - 1
            }
        };
        &kept[index].2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Peer, Protocol};
    use std::time::Duration;

    fn sub(subscriber: &str, target: &str, call_id: &str, expires: Instant) -> Subscription {
        Subscription {
            subscriber: subscriber.into(),
            target: target.into(),
            dialog: Dialog {
                call_id: call_id.into(),
                local_tag: "ours".into(),
                remote_tag: Some("theirs".into()),
                local_uri: "<sip:201@gw>".into(),
                remote_uri: "<sip:202@gw>".into(),
                remote_target: "sip:202@127.0.0.1:5072".into(),
                local_cseq: 0,
                peer: Peer {
                    protocol: Protocol::Udp,
                    addr: "127.0.0.1:5072".parse().unwrap(),
                    local: "127.0.0.1:5060".parse().unwrap(),
                },
            },
            event_id: None,
            expires,
            expires_unix: 0,
            next_version: 0,
            identities: true,
            reserved: None,
        }
    }

    #[test]
    fn a_save_reserves_counters_ahead_and_the_next_comes_when_they_are_used_up() {
        let mut sub = sub("202", "201", "s1", Instant::now());
        let first = sub.save_due("gw1").expect("never stored");
        assert_eq!(
            (first.version, first.cseq),
            (RESERVED_NOTIFYS, RESERVED_NOTIFYS)
        );
        for _ in 0..RESERVED_NOTIFYS - 1 {
            sub.next_version += 1;
            sub.dialog.local_cseq += 1;
            assert_eq!(sub.save_due("gw1"), None, "covered by the reservation");
        }
        sub.next_version += 1;
        sub.dialog.local_cseq += 1;
        let next = sub.save_due("gw1").expect("the reservation is used up");
        assert_eq!(next.version, 2 * RESERVED_NOTIFYS);
        assert!(
            next.cseq > sub.dialog.local_cseq,
            "a restart continues above"
        );
    }

    #[test]
    fn a_refresh_is_saved_at_once() {
        let now = Instant::now();
        let mut table = Subscriptions::default();
        let id = table.insert(sub("202", "201", "s1", now));
        assert!(table.get_mut(id).unwrap().save_due("gw1").is_some());
        assert_eq!(table.get_mut(id).unwrap().save_due("gw1"), None);
        table.refresh(id, now + std::time::Duration::from_secs(60), 60);
        let saved = table
            .get_mut(id)
            .unwrap()
            .save_due("gw1")
            .expect("the new expiry");
        assert_eq!(saved.expires_at, 60);
    }

    #[test]
    fn a_subscription_is_queued_once_and_a_removed_one_is_skipped() {
        let now = Instant::now();
        let mut table = Subscriptions::default();
        let a = table.insert(sub("202", "201", "s1", now));
        let b = table.insert(sub("203", "201", "s2", now));
        table.enqueue(a, now);
        table.enqueue(b, now);
        table.enqueue(a, now);
        table.remove(a);
        assert_eq!(table.notify_due(), Some(now));
        assert_eq!(table.next_queued(), Some(b));
        assert_eq!(table.next_queued(), None);
        assert_eq!(table.notify_due(), None);
    }

    #[test]
    fn limits_count_per_subscriber_and_in_total_and_removal_frees_them() {
        let now = Instant::now();
        let mut table = Subscriptions::default();
        let first = table.insert(sub("202", "201", "s1", now));
        table.insert(sub("202", "203", "s2", now));
        assert_eq!(table.admits("202", 2, 10), Err(Refusal::SubscriberFull));
        assert_eq!(table.admits("203", 2, 2), Err(Refusal::TotalFull));
        assert_eq!(table.admits("203", 2, 10), Ok(()));
        table.remove(first);
        assert_eq!(table.admits("202", 2, 10), Ok(()));
        assert_eq!(table.targets().collect::<Vec<_>>(), ["203"]);
    }

    #[test]
    fn expiries_come_in_order_and_a_refresh_moves_one() {
        let now = Instant::now();
        let mut table = Subscriptions::default();
        let early = table.insert(sub("202", "201", "s1", now + Duration::from_secs(10)));
        let late = table.insert(sub("203", "201", "s2", now + Duration::from_secs(20)));
        assert_eq!(table.pop_expired(now), None);
        assert_eq!(table.next_expiry(), Some(now + Duration::from_secs(10)));
        table.refresh(early, now + Duration::from_secs(30), 30);
        assert_eq!(table.pop_expired(now + Duration::from_secs(25)), Some(late));
        table.remove(late);
        assert_eq!(table.pop_expired(now + Duration::from_secs(25)), None);
        assert_eq!(
            table.pop_expired(now + Duration::from_secs(30)),
            Some(early)
        );
    }

    #[test]
    fn removing_a_subscription_forgets_its_dialog_and_notifies() {
        let now = Instant::now();
        let mut table = Subscriptions::default();
        let id = table.insert(sub("202", "201", "s1", now));
        table.add_notify(ClientTxId(7), id);
        table.add_notify(ClientTxId(8), id);
        assert_eq!(table.take_notify(ClientTxId(7)), Some(id));
        assert_eq!(table.by_dialog("s1", "ours"), Some(id));
        table.remove(id);
        assert!(
            !table.owns_notify(ClientTxId(8)),
            "removal drops its transactions"
        );
        assert_eq!(table.by_dialog("s1", "ours"), None);
    }
}
