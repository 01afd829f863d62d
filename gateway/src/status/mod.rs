//! The operator's view of the running gateway: a snapshot gathered from every engine
//! shard, the media relay, the analog ports, the stream transports and the store
//! ([`Sources::snapshot`]), shown as Prometheus metrics ([`prometheus`]), over the local
//! control socket for `gateway status` ([`control`], [`table`]) and on the read-only
//! status page ([`http`]). Each part answers for its own state on its own thread; a part
//! that does not answer in time is left out of the snapshot rather than waited for.

pub mod control;
pub mod histogram;
pub mod http;
pub mod prometheus;
pub mod table;
pub mod view;

use crate::analog::service::AnalogService;
pub use crate::engine::observe::Detail;
use crate::relay::MediaRelay;
use crate::shard::peers::Peers;
use crate::shard::{ShardCommand, ShardReport};
use crate::store::StoreWriter;
use crate::transport::tcp::TcpTransport;
use fastpath::relay::RelayReport;
use histogram::LatencyHistogram;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use view::{
    CallView, MediaView, PickupView, PortView, RecentPickupView, RegistrationView, SubscriptionView,
};

/// How long a snapshot waits for all parts to answer.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the snapshot asks: the running gateway's parts.
#[derive(Clone)]
pub struct Sources {
    /// This node's id.
    pub node: String,
    /// The engine shards' queues.
    pub peers: Peers,
    /// The media relay, when calls are anchored.
    pub relay: Option<Arc<MediaRelay>>,
    /// The analog ports, when configured.
    pub analog: Option<Arc<AnalogService>>,
    /// The TCP and TLS transport, when served.
    pub tcp: Option<Arc<TcpTransport>>,
    /// The store thread.
    pub writer: Arc<StoreWriter>,
    /// The SIP capture.
    pub tracer: crate::trace::Tracer,
}

/// Everything the parts reported at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// This node's id.
    pub node: String,
    /// When it was taken (Unix ms).
    pub at_ms: u64,
    /// Engine shards configured.
    pub shard_count: usize,
    /// The shards that answered, by index.
    pub shards: Vec<ShardReport>,
    /// The relay's counters, when it runs and answered.
    pub relay: Option<RelayReport>,
    /// The analog ports, when configured and they answered.
    pub ports: Option<Vec<PortView>>,
    /// Open (TCP, TLS) connections, when stream transports are served.
    pub connections: Option<(usize, usize)>,
    /// How long store batches took to commit.
    pub store_commits: LatencyHistogram,
    /// Messages left out of the SIP capture (its queue was full), when capturing.
    pub capture_dropped: Option<u64>,
}

impl Sources {
    /// Asks every part for its state in `detail` and waits (blocking, at most
    /// [`REPORT_TIMEOUT`] in all) for the answers.
    pub fn snapshot(&self, detail: Detail) -> Snapshot {
        let deadline = Instant::now() + REPORT_TIMEOUT;
        let shard_count = self.peers.count();
        let answers = self
            .peers
            .ask_every(|reply| ShardCommand::Report(reply, detail));
        let relay = self.relay.as_ref().map(|relay| relay.report());
        let ports = self.analog.as_ref().map(|analog| analog.report());
        let mut shards: Vec<ShardReport> = answers.until(deadline);
        shards.sort_by_key(|report| report.engine.shard);
        Snapshot {
            node: self.node.clone(),
            at_ms: crate::engine::Now::system().unix_ms,
            shard_count,
            shards,
            relay: relay.and_then(|report| report.recv_deadline(deadline).ok()),
            ports: ports.and_then(|report| report.recv_deadline(deadline).ok()),
            connections: self.tcp.as_ref().map(|tcp| tcp.connections()),
            store_commits: self.writer.commit_latency(),
            capture_dropped: self.tracer.is_on().then(|| self.tracer.dropped()),
        }
    }
}

/// What `gateway status` and the status page show: the snapshot's lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// This node's id.
    pub node: String,
    /// When it was taken (Unix ms).
    pub at_ms: u64,
    /// The calls up and ringing, oldest first.
    pub calls: Vec<CallView>,
    /// Every registered contact.
    pub registrations: Vec<RegistrationView>,
    /// The analog ports (empty without `[analog]`).
    pub ports: Vec<PortView>,
    /// Pickups in flight.
    pub pickups: Vec<PickupView>,
    /// Pickups that ended last, newest last.
    pub recent_pickups: Vec<RecentPickupView>,
    /// Dialog event subscriptions (BLF keys).
    pub subscriptions: Vec<SubscriptionView>,
}

impl Snapshot {
    /// The lists of every shard together, calls with the relay's media counters.
    pub fn view(&self) -> StatusView {
        let live: std::collections::HashMap<u64, &[fastpath::relay::LegReport; 2]> = self
            .relay
            .iter()
            .flat_map(|relay| relay.live.iter().map(|(id, legs)| (*id, legs)))
            .collect();
        let media_of = |relay: u64| {
            let legs = live.get(&relay)?;
            Some(legs.map(|leg| MediaView {
                packets: leg.packets,
                lost: leg.lost,
                jitter_ms: leg.jitter_ms,
                foreign_dropped: leg.foreign_dropped,
            }))
        };
        let mut view = StatusView {
            node: self.node.clone(),
            at_ms: self.at_ms,
            ports: self.ports.clone().unwrap_or_default(),
            recent_pickups: self.metrics().recent_pickups.into_iter().collect(),
            ..StatusView::default()
        };
        for shard in &self.shards {
            let engine = &shard.engine;
            view.calls
                .extend(engine.calls.iter().cloned().map(|mut call| {
                    call.media = call.relay.and_then(media_of);
                    call
                }));
            view.registrations
                .extend(engine.registrations.iter().cloned());
            view.pickups.extend(engine.pickups.iter().cloned());
            view.subscriptions
                .extend(engine.subscriptions.iter().cloned());
        }
        view.calls.sort_by_key(|call| call.started_ms);
        view.subscriptions
            .sort_by(|a, b| (&a.watched, &a.subscriber).cmp(&(&b.watched, &b.subscriber)));
        view
    }

    /// The engine counters of every shard summed.
    pub fn metrics(&self) -> crate::engine::metrics::EngineMetrics {
        self.shards.iter().fold(Default::default(), |sum, shard| {
            sum.plus(&shard.engine.metrics)
        })
    }
}
