//! The engine on the fast path: a shard is an [`Engine`] run by a fast path worker that
//! owns a SIP UDP socket (one of `fastpath.shards` bound to the same port with
//! `SO_REUSEPORT`), so a datagram is pre-parsed, queued by class and handled on the thread
//! that received it, and its answers leave through the same ring, without a thread hop
//! either way. A datagram whose Call-ID hashes to another shard is handed to that shard's
//! queue (see [`crate::engine::shard`] for what keeps a call's messages on one shard). TCP,
//! the analog ports and the store hand their input to the shard it belongs to as worker
//! commands ([`peers`]); the engine's timers are the worker's deadline; the media relay's
//! once-a-second sweep is the first shard's tick. The engine stays sans-IO: the shard is
//! the edge that gives it clocks and bytes.

pub mod outputs;
pub mod peers;
pub mod queues;
pub mod routes;

use crate::auth::guard::SharedGuard;
use crate::config::Config;
use crate::engine::observe::{Detail, EngineReport};
use crate::engine::shard::{ShardId, ShardMessage, ShardNotice};
use crate::engine::{Engine, Now};
use crate::overload::Shedder;
use crate::queue_wait::QueueWaits;
use crate::registrar::RestoredBindings;
use crate::store::{StoreResult, StoredSubscription};
use crate::transport::fastpath::{triage, Triage};
use crate::transport::Inbound;
use bytes::Bytes;
use fastpath::relay::LegReport;
use fastpath::udp::{FastpathError, Handler, Io, Mailbox, Worker, WorkerConfig};
use outputs::{Outputs, UdpOut};
use queues::{ClassQueues, QueueDrops, Queued};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Malformed datagrams logged one by one before only every thousandth is.
const LOGGED_MALFORMED: u64 = 10;

/// How often the media relay's idle and ended legs are swept.
const MEDIA_SWEEP: Duration = Duration::from_secs(1);

/// What other threads hand a shard.
pub enum ShardCommand {
    /// A message from TCP, the analog ports or the tokio UDP socket; the permit, released
    /// when the message has been handled, bounds how many wait.
    Inbound(Inbound, tokio::sync::OwnedSemaphorePermit),
    /// An answer of the store thread, or another node's notification.
    Store(StoreResult),
    /// A datagram another shard's socket received for a call of this one.
    Datagram(Queued),
    /// What another shard tells every other.
    Notice(ShardNotice),
    /// What another shard hands this one.
    Message(ShardMessage),
    /// A media relay of this shard's call ended (the first shard sweeps the relay).
    MediaEnded {
        /// The relay's number.
        relay: u64,
        /// Whether it ended by idle timeout.
        idle: bool,
        /// Its counters.
        legs: [LegReport; 2],
    },
    /// The operator asks what the shard holds and did (`gateway status`, the metrics), in
    /// this detail.
    Report(crossbeam_channel::Sender<ShardReport>, Detail),
    /// The config was reloaded: new calls follow it.
    Reconfigure(Box<Config>),
    /// The watchdog asks whether the shard still serves: it answers at once.
    Ping(crossbeam_channel::Sender<()>),
}

/// A shard's answer to [`ShardCommand::Report`].
#[derive(Debug, Clone)]
pub struct ShardReport {
    /// The engine's calls, registrations, subscriptions and counters.
    pub engine: EngineReport,
    /// Datagrams waiting in its queues.
    pub queued: usize,
    /// Datagrams dropped on its full queues.
    pub queue_drops: QueueDrops,
    /// Datagrams dropped as malformed before the engine saw them.
    pub malformed: u64,
    /// Datagrams for it that other shards dropped because too many waited already.
    pub forward_drops: u64,
    /// Datagrams for it that other shards' sockets received and handed to it.
    pub handed_over: u64,
}

/// What a shard reports when it stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardSummary {
    /// New requests answered 503 because they waited too long.
    pub overload_rejected: u64,
    /// Datagrams dropped as malformed before the engine saw them.
    pub malformed: u64,
    /// Datagrams dropped on full queues.
    pub queue_drops: QueueDrops,
    /// Datagrams for this shard that other shards received and dropped because too many
    /// waited already.
    pub forward_drops: u64,
}

impl ShardSummary {
    /// The sum of two shards' counters.
    pub fn plus(self, other: ShardSummary) -> ShardSummary {
        ShardSummary {
            overload_rejected: self.overload_rejected + other.overload_rejected,
            malformed: self.malformed + other.malformed,
            queue_drops: QueueDrops {
                priority: self.queue_drops.priority + other.queue_drops.priority,
                new: self.queue_drops.new + other.queue_drops.new,
            },
            forward_drops: self.forward_drops + other.forward_drops,
        }
    }
}

/// What a shard starts from.
pub struct ShardSetup {
    /// The configuration.
    pub config: Config,
    /// The registrations restored from the store.
    pub bindings: RestoredBindings,
    /// The dialog subscriptions restored from the store (each gets a full-state NOTIFY).
    pub subscriptions: Vec<StoredSubscription>,
    /// The engine's secret (digest nonces, draws; the same for every shard, each drawing
    /// from it apart).
    pub secret: [u8; 32],
    /// Which shard this is.
    pub shard: ShardId,
    /// The failed-authentication guard every shard shares.
    pub guard: SharedGuard,
    /// Where its output goes.
    pub outputs: Outputs,
    /// Where it reports when it stops.
    pub summary: tokio::sync::oneshot::Sender<ShardSummary>,
}

/// The worker's handler: one engine, its queues and outputs.
pub struct EngineShard {
    engine: Engine,
    queues: ClassQueues,
    outputs: Outputs,
    shedder: Shedder,
    waits: QueueWaits,
    malformed: u64,
    /// Set until the first timeout hands on what the engine queued while starting.
    started: Option<Instant>,
    summary: Option<tokio::sync::oneshot::Sender<ShardSummary>>,
}

impl EngineShard {
    /// Starts a shard on a worker of its own serving `udp` (the SIP socket, when UDP is on
    /// the fast path), taking the commands queued in `mailbox` meanwhile.
    pub fn spawn(
        setup: ShardSetup,
        worker: WorkerConfig,
        udp: Option<UdpSocket>,
        mailbox: Mailbox<ShardCommand>,
    ) -> Result<Worker<ShardCommand>, FastpathError> {
        let sockets = udp.into_iter().collect();
        let worker = WorkerConfig {
            tick: (setup.outputs.relay.is_some() && setup.shard.is_first()).then_some(MEDIA_SWEEP),
            ..worker
        };
        Worker::spawn_with_mailbox(worker, sockets, mailbox, move || EngineShard::new(setup))
    }

    fn new(setup: ShardSetup) -> EngineShard {
        let now = Now::system();
        let queues = ClassQueues::new(setup.config.overload.queue_capacity);
        let shedder = Shedder::new(Duration::from_millis(
            setup.config.overload.max_queue_delay_ms,
        ));
        let mut engine = Engine::new_shard(
            setup.config,
            setup.bindings,
            setup.secret,
            now,
            setup.shard,
            setup.guard,
        );
        // Each subscription lives on the shard its dialog's Call-ID names.
        let subscriptions = setup
            .subscriptions
            .into_iter()
            .filter(|sub| setup.shard.owns_call_id(&sub.call_id))
            .collect();
        engine.restore_subscriptions(now, subscriptions);
        EngineShard {
            engine,
            queues,
            outputs: setup.outputs,
            shedder,
            waits: QueueWaits::default(),
            malformed: 0,
            started: Some(now.mono),
            summary: Some(setup.summary),
        }
    }

    fn deliver(&mut self, io: &mut Io, message: Inbound) {
        let now = Now::system();
        let tracer = &self.outputs.tracer;
        match message {
            Inbound::Datagram { peer, bytes } => {
                tracer.received(&peer, &bytes);
                self.engine.handle_datagram(now, peer, &bytes)
            }
            Inbound::Message { peer, message } => {
                if tracer.is_on() {
                    tracer.received(&peer, &message.to_bytes());
                }
                self.engine.handle_message(now, peer, *message)
            }
            Inbound::StreamGarbage { peer, error } => {
                self.engine.handle_stream_garbage(peer, &error)
            }
        }
        self.hand_on(io);
    }

    /// Hands on what the engine queued: its sends into the ring, its store commands to
    /// the store thread, its notices to the other shards.
    fn hand_on(&mut self, io: &mut Io) {
        self.outputs.drain(&mut self.engine, io);
        self.outputs.flush_store();
    }
}

impl Handler for EngineShard {
    type Command = ShardCommand;

    fn datagram(&mut self, io: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]) {
        self.datagram_to(io, socket, from, None, bytes);
    }

    fn datagram_to(
        &mut self,
        io: &mut Io,
        _: usize,
        from: SocketAddr,
        to: Option<IpAddr>,
        bytes: &[u8],
    ) {
        let UdpOut::Ring(addressing) = &self.outputs.udp else {
            return;
        };
        let peers = &self.outputs.peers;
        let triaged = triage(bytes, peers.count(), peers.routes());
        let tracer = &self.outputs.tracer;
        if tracer.is_on() && !matches!(triaged, Triage::KeepAlive) {
            tracer.received(&addressing.peer(from, to), bytes);
        }
        match triaged {
            Triage::KeepAlive => {}
            Triage::Queue { shard, class } => {
                let queued = Queued {
                    peer: addressing.peer(from, to),
                    bytes: Bytes::copy_from_slice(bytes),
                    received: Instant::now(),
                    arrived: io.received_at(),
                    class,
                };
                if shard == self.engine.shard().index() {
                    self.queues.push(queued);
                } else {
                    peers.forward(shard, queued);
                }
            }
            Triage::Drop(error) => {
                self.malformed += 1;
                let dropped = self.malformed;
                if dropped <= LOGGED_MALFORMED || dropped % 1000 == 0 {
                    tracing::warn!(
                        "fast path dropped a malformed datagram from {from} ({error}; {dropped} so far)"
                    );
                }
            }
        }
    }

    fn command(&mut self, io: &mut Io, command: ShardCommand) {
        match command {
            ShardCommand::Inbound(message, _permit) => self.deliver(io, message),
            ShardCommand::Store(result) => {
                self.engine.handle_store_result(Now::system(), result);
                self.hand_on(io);
            }
            ShardCommand::Datagram(queued) => {
                self.outputs
                    .peers
                    .took_forwarded(self.engine.shard().index());
                self.queues.push(queued);
            }
            ShardCommand::Message(message) => {
                self.engine.handle_shard_message(Now::system(), message);
                self.hand_on(io);
            }
            ShardCommand::Notice(notice) => {
                self.engine.handle_shard_notice(Now::system(), notice);
                self.hand_on(io);
            }
            ShardCommand::MediaEnded { relay, idle, legs } => {
                self.engine
                    .handle_media_ended(Now::system(), relay, idle, legs);
                self.hand_on(io);
            }
            ShardCommand::Reconfigure(config) => self.engine.reconfigure(*config),
            ShardCommand::Ping(reply) => {
                let _ = reply.send(());
            }
            ShardCommand::Report(reply, detail) => {
                let _ = reply.send(ShardReport {
                    engine: self.engine.report(Now::system(), detail),
                    queued: self.queues.len(),
                    queue_drops: self.queues.drops(),
                    malformed: self.malformed,
                    forward_drops: self
                        .outputs
                        .peers
                        .forward_drops(self.engine.shard().index()),
                    handed_over: self.outputs.peers.handed_to(self.engine.shard().index()),
                });
            }
        }
    }

    fn tick(&mut self, io: &mut Io, now: Instant) {
        if let Some(relay) = &self.outputs.relay {
            relay.tick(now);
            let shard = self.engine.shard();
            for (relay, idle, legs) in relay.ended() {
                match shard.of_number(relay) {
                    owner if owner == shard.index() => {
                        self.engine
                            .handle_media_ended(Now::system(), relay, idle, legs)
                    }
                    owner => {
                        self.outputs
                            .peers
                            .send(owner, ShardCommand::MediaEnded { relay, idle, legs });
                    }
                }
            }
        }
        self.hand_on(io);
    }

    fn deadline(&self) -> Option<Instant> {
        [
            self.started,
            self.queues.oldest(),
            self.engine.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn timeout(&mut self, io: &mut Io, _: Instant) {
        self.started = None;
        let EngineShard {
            engine,
            queues,
            outputs,
            shedder,
            waits,
            ..
        } = self;
        queues.serve(engine, shedder, waits, Now::system, &mut |engine| {
            outputs.drain(engine, io)
        });
        let now = Now::system();
        if engine.poll_timeout().is_some_and(|at| at <= now.mono) {
            engine.handle_timeout(now);
        }
        outputs.drain(engine, io);
        outputs.flush_store();
        // The worker sends what the turn queued as soon as the handler returns.
        waits.turn_ended(std::time::SystemTime::now());
    }
}

impl Drop for EngineShard {
    /// The shard stops (the gateway shuts down, or its worker failed): the calls still up
    /// are billed to here when the next start records them as interrupted, and the store
    /// has everything before the gateway goes on.
    fn drop(&mut self) {
        self.engine.mark_calls_up(Now::system());
        self.outputs
            .store_commands
            .extend(std::iter::from_fn(|| self.engine.poll_store_command()));
        self.outputs.flush_store();
        self.outputs.writer.flush();
        let shard = self.engine.shard();
        let guard = self.engine.guard_stats();
        // The guard is shared: the first shard reports it.
        if shard.is_first() {
            tracing::info!(
                "auth: {} failed authentication(s), {} source(s) blocked, {} request(s) from blocked sources dropped, {} extension(s) locked, {} challenge(s) over the per-source rate left unanswered",
                guard.failures,
                guard.sources_blocked,
                guard.blocked_requests_dropped,
                guard.extensions_locked,
                guard.challenges_dropped
            );
        }
        if let UdpOut::Ring(_) = self.outputs.udp {
            tracing::info!("fast path queue waits: {}", self.waits.summary());
            tracing::info!(
                "fast path time in the gateway (the kernel's receipt to the end of the turn that handled it): {}",
                self.waits.in_gateway_summary()
            );
        }
        if let Some(summary) = self.summary.take() {
            let _ = summary.send(ShardSummary {
                overload_rejected: self.engine.stats().overload_rejected,
                malformed: self.malformed,
                queue_drops: self.queues.drops(),
                forward_drops: self.outputs.peers.forward_drops(shard.index()),
            });
        }
    }
}
