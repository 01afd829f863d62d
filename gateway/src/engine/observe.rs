//! What the engine shows the operator: its calls, pickups, subscriptions and (from the
//! first shard, since every shard holds every registration) registrations, with its
//! counters. Read-only: a report changes nothing in the engine.

use super::metrics::EngineMetrics;
use super::{Engine, Now, Stats};
use crate::auth::guard::GuardStats;
use crate::status::view::{CallView, PickupView, RegistrationView, SubscriptionView};

/// How much a report holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The counters and counts only (the metrics, scraped often).
    Counts,
    /// The lists of calls, pickups, subscriptions and registrations too.
    Lists,
}

/// How many of each the shard holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounts {
    /// Unexpired registered contacts (the first shard's report only).
    pub registrations: usize,
    /// Extensions holding one (the first shard's report only).
    pub registered_extensions: usize,
    /// Calls ringing, picking (a pickup holds its claim) and answered.
    pub calls: [usize; 3],
    /// Pickups in flight.
    pub pickups: usize,
    /// Dialog subscriptions.
    pub subscriptions: usize,
}

/// The states of [`EngineCounts::calls`], in order.
pub const CALL_STATES: [&str; 3] = ["ringing", "picking", "answered"];

/// One engine shard's report.
#[derive(Debug, Clone, Default)]
pub struct EngineReport {
    /// Which shard.
    pub shard: usize,
    /// How many of each it holds.
    pub counts: EngineCounts,
    /// Its calls (media counters are the relay's to fill in).
    pub calls: Vec<CallView>,
    /// Its pickups in flight.
    pub pickups: Vec<PickupView>,
    /// Its dialog subscriptions.
    pub subscriptions: Vec<SubscriptionView>,
    /// Every registered contact (the first shard's report only).
    pub registrations: Vec<RegistrationView>,
    /// What it did.
    pub metrics: EngineMetrics,
    /// What it dropped or rejected.
    pub stats: Stats,
    /// The failed-authentication guard's counters (shared: the first shard's report only).
    pub guard: Option<GuardStats>,
    /// Transactions alive.
    pub transactions: usize,
}

/// The index in [`CALL_STATES`] of `call`'s state.
fn call_state(call: &super::call::Call) -> usize {
    match (&call.answer, &call.claim) {
        (Some(_), _) => 2,
        (None, Some(_)) => 1,
        (None, None) => 0,
    }
}

impl Engine {
    /// What this shard holds and did, at `now`; the lists only with [`Detail::Lists`].
    pub fn report(&self, now: Now, detail: Detail) -> EngineReport {
        let shard = self.shard.index();
        let first = self.shard.is_first();
        let lists = detail == Detail::Lists;
        let (registrations, registered_extensions) = match first {
            true => self.registrar.counts(now.unix()),
            false => (0, 0),
        };
        let mut calls = [0; 3];
        for call in self.calls.calls.values() {
            calls[call_state(call)] += 1;
        }
        EngineReport {
            shard,
            counts: EngineCounts {
                registrations,
                registered_extensions,
                calls,
                pickups: self.calls.pickups.len(),
                subscriptions: self.subscriptions.len(),
            },
            calls: match lists {
                true => self.call_views(),
                false => Vec::new(),
            },
            pickups: match lists {
                true => self.pickup_views(),
                false => Vec::new(),
            },
            subscriptions: match lists {
                true => self.subscription_views(),
                false => Vec::new(),
            },
            registrations: match first && lists {
                true => self.registration_views(now),
                false => Vec::new(),
            },
            metrics: self.metrics.clone(),
            stats: self.stats.clone(),
            guard: first.then(|| self.guard_stats()),
            transactions: self.tx.len(),
        }
    }

    fn subscription_views(&self) -> Vec<SubscriptionView> {
        self.subscriptions
            .iter()
            .map(|sub| SubscriptionView {
                subscriber: sub.subscriber.clone(),
                watched: sub.target.clone(),
                peer: format!(
                    "{} {}",
                    sub.dialog.peer.protocol.uri_param(),
                    sub.dialog.peer.addr
                ),
                expires_at: sub.expires_unix,
            })
            .collect()
    }

    fn call_views(&self) -> Vec<CallView> {
        let mut calls: Vec<CallView> = self
            .calls
            .calls
            .values()
            .map(|call| {
                let state = CALL_STATES[call_state(call)];
                let pickup = call
                    .answer
                    .as_ref()
                    .map(|a| a.pickup_method)
                    .filter(|&m| m != crate::store::PickupMethod::None)
                    .map(|m| m.as_str().to_string());
                CallView {
                    key: call.key.clone(),
                    caller: call.caller.number.clone(),
                    called: call.called.clone(),
                    state: state.into(),
                    answered_by: call.answer.as_ref().map(|a| a.answered_by.clone()),
                    pickup,
                    started_ms: call.ring_started_ms,
                    answered_ms: call.answer.as_ref().map(|a| a.answer_ms),
                    node: self.config.node.id.clone(),
                    shard: self.shard.index(),
                    relay: call.anchor.map(|a| a.relay),
                    media: None,
                }
            })
            .collect();
        calls.sort_by(|a, b| (a.started_ms, &a.key).cmp(&(b.started_ms, &b.key)));
        calls
    }

    fn pickup_views(&self) -> Vec<PickupView> {
        let mut pickups: Vec<PickupView> = self
            .calls
            .pickups
            .iter()
            .map(|(&id, pickup)| PickupView {
                id,
                picker: pickup.picker.clone(),
                method: pickup.method.as_str().into(),
                call: pickup
                    .call
                    .and_then(|c| self.calls.calls.get(&c))
                    .map(|call| call.key.clone()),
                replaces: pickup.use_replaces,
                dummy_open: pickup.dummy_open,
            })
            .collect();
        pickups.sort_by_key(|p| p.id);
        pickups
    }

    fn registration_views(&self, now: Now) -> Vec<RegistrationView> {
        let mut views = Vec::new();
        for aor in self.registrar.aors() {
            for binding in self.registrar.lookup(now.unix(), &aor) {
                views.push(RegistrationView {
                    extension: aor.clone(),
                    contact: binding.contact,
                    transport: binding.source.protocol.uri_param().into(),
                    source: binding.source.addr.to_string(),
                    expires_at: binding.expires_at,
                    user_agent: binding.user_agent,
                });
            }
        }
        views
    }
}
