//! What the engine shows the operator: its calls, pickups, subscriptions and (from the
//! first shard, since every shard holds every registration) registrations, with its
//! counters. Read-only: a report changes nothing in the engine.

use super::metrics::EngineMetrics;
use super::{Engine, Now, Stats};
use crate::auth::guard::GuardStats;
use crate::status::view::{CallView, PickupView, RegistrationView, SubscriptionView};

/// One engine shard's report.
#[derive(Debug, Clone, Default)]
pub struct EngineReport {
    /// Which shard.
    pub shard: usize,
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
    /// Media relays its calls hold.
    pub relays: usize,
}

impl Engine {
    /// What this shard holds and did, at `now`.
    pub fn report(&self, now: Now) -> EngineReport {
        let shard = self.shard.index();
        let first = self.shard.is_first();
        EngineReport {
            shard,
            calls: self.call_views(),
            pickups: self.pickup_views(),
            subscriptions: self
                .subscriptions
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
                .collect(),
            registrations: match first {
                true => self.registration_views(now),
                false => Vec::new(),
            },
            metrics: self.metrics.clone(),
            stats: self.stats.clone(),
            guard: first.then(|| self.guard_stats()),
            transactions: self.tx.len(),
            relays: self
                .calls
                .calls
                .values()
                .filter(|c| c.anchor.is_some())
                .count(),
        }
    }

    fn call_views(&self) -> Vec<CallView> {
        let mut calls: Vec<CallView> = self
            .calls
            .calls
            .values()
            .map(|call| {
                let state = match (&call.answer, &call.claim) {
                    (Some(_), _) => "answered",
                    (None, Some(_)) => "picking",
                    (None, None) => "ringing",
                };
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
