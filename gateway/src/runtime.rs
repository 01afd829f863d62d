//! The tokio glue: binds the transports, restores registrations, and drives the sans-IO
//! [`Engine`] with real time. The only place where the SIP core meets sockets and clocks.

use crate::analog::service::{AnalogService, ServiceError};
use crate::config::AnchorMode;
use crate::config::{AnalogConfig, Config, ConfigError, FastpathBackend, PortKind, TransportName};
use crate::descriptors::{tcp_cap, Reserve};
use crate::engine::{Engine, Now};
use crate::overload::{Class, Shedder};
use crate::queue_wait::QueueWaits;
use crate::registrar::Binding;
use crate::relay::MediaRelay;
use crate::store::{
    BlfListener, CallStore, Interrupted, PgPool, Spool, Store, StoreError, StoreWriter,
    StoredSubscription,
};
use crate::transport::bind::{
    bind_waiting, is_addr_in_use, retry_while_port_in_use, PORT_RELEASE_WAIT,
};
use crate::transport::fastpath::{FastpathBindError, FastpathUdpTransport, ShardReceivers};
use crate::transport::tcp::policy::TcpLimits;
use crate::transport::tcp::{TcpSettings, TcpTransport};
use crate::transport::udp::UdpTransport;
use crate::transport::{Inbound, Protocol, Transport};
use fastpath::udp::WorkerFailure;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use telephony_hw::dahdi::ports::PortPlan;
use tokio::sync::mpsc;

/// Inbound messages buffered between the transports and the engine.
const INBOUND_QUEUE: usize = 8192;

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// /etc/dahdi/system.conf is unreadable or malformed.
    #[error(transparent)]
    SystemConf(#[from] telephony_hw::dahdi::system_conf::SystemConfError),
    /// The analog port configuration is unusable.
    #[error("analog ports: {0}")]
    AnalogPorts(#[from] telephony_hw::dahdi::ports::PlanError),
    /// The fast path could not start.
    #[error(transparent)]
    Fastpath(fastpath::udp::FastpathError),
    /// A fast path worker (SIP over UDP, the media relay, the analog ports) stopped while
    /// the gateway ran: the gateway stops too, so that its supervisor restarts it.
    #[error("{0}; the gateway stopped with it")]
    WorkerStopped(WorkerFailure),
    /// An analog extension names a channel that is not a phone port.
    #[error("extension {number}: analog_channel {channel} {problem}")]
    AnalogExtension {
        /// The extension.
        number: String,
        /// Its channel.
        channel: u32,
        /// What is wrong.
        problem: &'static str,
    },
    /// The analog ports could not be opened.
    #[error(transparent)]
    Analog(#[from] ServiceError),
    /// A listening socket could not be bound.
    #[error("cannot listen on {protocol} {addr}: {source} (is another process using the port, or is the address not local?)")]
    Bind {
        /// udp or tcp.
        protocol: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl RunError {
    /// Turns the OS error of binding `protocol` on `addr` into the operator's error.
    fn bind(protocol: &'static str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> RunError {
        move |source| RunError::Bind {
            protocol,
            addr,
            source,
        }
    }
}

/// Checks and logs the analog ports: system.conf merged with `[analog]` overrides.
fn analog_ports(config: &Config, analog: &AnalogConfig) -> Result<Vec<PortPlan>, RunError> {
    use telephony_hw::dahdi::ports::{plan, PortOverride};
    use telephony_hw::dahdi::system_conf::{Signalling, SystemConf};
    let conf = if analog.system_conf.exists() {
        SystemConf::load(&analog.system_conf)?
    } else {
        tracing::warn!(
            "{} not found: only the [[analog.port]] entries of the config define analog ports",
            analog.system_conf.display()
        );
        SystemConf::default()
    };
    let overrides: Vec<PortOverride> = analog
        .ports
        .iter()
        .map(|port| PortOverride {
            channel: port.channel,
            signalling: port.kind.map(|kind| match kind {
                PortKind::Phone => Signalling::FxoKs,
                PortKind::Line => Signalling::FxsKs,
            }),
            zone: port.zone.clone(),
        })
        .collect();
    let ports = plan(&conf, analog.zone.as_deref(), &overrides)?;
    for extension in config.extensions() {
        let Some(channel) = extension.analog_channel else {
            continue;
        };
        let port = ports.iter().find(|p| p.channel == channel);
        if !port.is_some_and(|p| p.signalling.is_phone_port()) {
            return Err(RunError::AnalogExtension {
                number: extension.number.clone(),
                channel,
                problem: if port.is_some() {
                    "is a line port (FXO); extensions need a phone port (fxoks)"
                } else {
                    "is neither in system.conf nor in [[analog.port]]"
                },
            });
        }
    }
    for port in &ports {
        let kind = if port.signalling.is_phone_port() {
            "phone"
        } else {
            "line"
        };
        tracing::info!(
            "analog port {}: {kind} port ({:?} signalling), tone zone {}",
            port.channel,
            port.signalling,
            port.zone.name
        );
    }
    Ok(ports)
}

/// The TCP transport's settings: `[tcp]`, with the total cap lowered to what the
/// descriptor `limit` leaves after the store, the media relay and `analog_ports`.
fn tcp_settings(config: &Config, limit: u64, analog_ports: usize) -> TcpSettings {
    let reserve = Reserve::for_gateway(config, analog_ports);
    let cap = tcp_cap(config.tcp.max_connections, limit, &reserve);
    let summary = format!(
        "tcp: at most {} connection(s), {} per address (tcp.max_connections = {}; \
         descriptor limit {limit}, {} reserved: store {}, media relay {}, analog ports {}, \
         other {})",
        cap.connections,
        config.tcp.max_connections_per_source.min(cap.connections),
        config.tcp.max_connections,
        reserve.total(),
        reserve.store,
        reserve.media,
        reserve.analog,
        reserve.base
    );
    if cap.short {
        tracing::warn!(
            "{summary}; the reserve leaves less than a quarter of the limit, so TCP gets a \
             quarter and the media range cannot be used in full: raise the hard descriptor \
             limit (LimitNOFILE=) or narrow media.port_min..port_max"
        );
    } else {
        tracing::info!("{summary}");
    }
    TcpSettings {
        limits: TcpLimits::from_config(&config.tcp, cap.connections),
        max_message_size: config.sip.max_message_size,
    }
}

/// Hands one inbound message to the engine.
/// Messages taken from the fast path per turn of the loop, at most, before sends, timers
/// and the other queues run again; of them, new requests served and new requests shed.
const MESSAGES_PER_TURN: usize = 1024;
const NEW_SERVED_PER_TURN: usize = 32;
const NEW_SHED_PER_TURN: usize = 256;

/// Serves the fast path's queues: priority messages first, then new requests, those
/// that waited too long answered 503 (see [`crate::overload`]). What is left for the next
/// turn wakes the loop again at once.
/// `clock` is read per message (the runtime passes [`Now::system`]).
/// `after_each` runs after every message, so what it caused leaves at once instead of after
/// the turn's last message (the runtime passes [`Outputs::drain`]).
fn serve_fast_path(
    engine: &mut Engine,
    receivers: &ShardReceivers,
    shedder: &Shedder,
    waits: &mut QueueWaits,
    clock: impl Fn() -> Now,
    after_each: &mut dyn FnMut(&mut Engine),
) {
    let (mut served, mut shed) = (0, 0);
    for _ in 0..MESSAGES_PER_TURN {
        if served == NEW_SERVED_PER_TURN || shed == NEW_SHED_PER_TURN {
            break;
        }
        let Some(queued) = receivers.try_recv() else {
            break;
        };
        let now = clock();
        waits.record(
            queued.class,
            now.mono.saturating_duration_since(queued.received),
        );
        match queued.class {
            Class::Priority => engine.handle_datagram(now, queued.peer, &queued.bytes),
            Class::Answering | Class::New if shedder.serves(now.mono, queued.received) => {
                served += 1;
                engine.handle_datagram(now, queued.peer, &queued.bytes);
            }
            Class::Answering | Class::New => {
                shed += 1;
                engine.reject_overloaded(now, queued.peer, &queued.bytes);
            }
        }
        after_each(engine);
    }
    if !receivers.is_empty() {
        receivers.wake();
    }
}

/// Where the engine's output goes: relay commands, datagrams and stream messages, source
/// changes for the TCP policy, store commands.
struct Outputs<'a> {
    relay: Option<&'a MediaRelay>,
    udp: Option<&'a dyn Transport>,
    tcp: Option<&'a TcpTransport>,
    analog: Option<&'a AnalogService>,
    writer: &'a StoreWriter,
}

impl Outputs<'_> {
    /// Hands on everything the engine has queued.
    fn drain(&self, engine: &mut Engine) {
        // Relay ports first: the SDP about to be sent names them.
        while let Some(command) = engine.poll_media_command() {
            match self.relay {
                Some(relay) => relay.apply(command),
                None => tracing::warn!("media command without a relay: {command:?}"),
            }
        }
        while let Some(out) = engine.poll_transmit() {
            let transport: Option<&dyn Transport> = match out.peer.protocol {
                Protocol::Udp => self.udp,
                Protocol::Tcp => self.tcp.map(|t| t as &dyn Transport),
                Protocol::Internal => {
                    match self.analog {
                        Some(service) => service.send_sip(out.bytes),
                        None => tracing::warn!("no analog ports: message for them dropped"),
                    }
                    continue;
                }
            };
            match transport {
                Some(transport) => {
                    if let Err(e) = transport.send(out.peer, out.bytes) {
                        tracing::warn!("send to {} failed: {e}", out.peer.addr);
                    }
                }
                None => tracing::warn!(
                    "no {} transport configured to reach {}",
                    out.peer.protocol.via_token(),
                    out.peer.addr
                ),
            }
        }
        if let Some(udp) = self.udp {
            udp.flush();
        }
        while let Some(change) = engine.poll_source_change() {
            if let Some(tcp) = self.tcp {
                tcp.set_registered(change.peer.addr, change.registered);
            }
        }
        while let Some(command) = engine.poll_store_command() {
            self.writer.send(command);
        }
    }
}

fn deliver(engine: &mut Engine, message: Inbound) {
    match message {
        Inbound::Datagram { peer, bytes } => engine.handle_datagram(Now::system(), peer, &bytes),
        Inbound::Message { peer, message } => engine.handle_message(Now::system(), peer, *message),
        Inbound::StreamGarbage { peer, error } => engine.handle_stream_garbage(peer, &error),
    }
}

/// Runs the gateway until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let analog_plan = match &config.analog {
        Some(analog) => Some(analog_ports(&config, analog)?),
        None => None,
    };
    let descriptors = match crate::descriptors::raise_limit() {
        Ok(limit) => {
            if limit.now > limit.before {
                tracing::info!(
                    "descriptor limit raised from {} to the hard limit {}",
                    limit.before,
                    limit.now
                );
            } else {
                tracing::info!("descriptor limit {} (the hard limit)", limit.now);
            }
            limit.now
        }
        Err(e) => {
            tracing::warn!("{e}");
            match e {
                crate::descriptors::LimitError::Raise { soft, .. } => soft,
                crate::descriptors::LimitError::Read(_) => 1024,
            }
        }
    };
    let tcp_settings = tcp_settings(
        &config,
        descriptors,
        analog_plan.as_ref().map_or(0, Vec::len),
    );
    let now = Now::system();
    let (store, spool, bindings, subscriptions) = open_store(&config, now)?;
    let (results_tx, mut results) = mpsc::unbounded_channel();
    // BLF across nodes: other nodes' notifications reach the engine like store answers.
    let listener = match (&config.database.url, config.node.is_clustered()) {
        (Some(_), true) => {
            let notices = results_tx.clone();
            Some(BlfListener::start(
                PgPool::for_config(&config.database)?,
                config.node.id.clone(),
                move |result| {
                    let _ = notices.send(result);
                },
            ))
        }
        _ => None,
    };
    let writer = StoreWriter::with_spool(store, spool, move |result| {
        let _ = results_tx.send(result);
    });

    let (inbound_tx, mut inbound) = mpsc::channel(INBOUND_QUEUE);
    let (failures_tx, mut failures) = mpsc::unbounded_channel();
    let report_to = |failures: &mpsc::UnboundedSender<WorkerFailure>| {
        let failures = failures.clone();
        move |failure| {
            let _ = failures.send(failure);
        }
    };
    let listen = config.listen_addr();
    let mut udp: Option<Box<dyn Transport>> = None;
    let mut tcp: Option<TcpTransport> = None;
    let mut fast: Option<(ShardReceivers, Arc<FastpathUdpTransport>)> = None;
    for transport in &config.sip.transports {
        match transport {
            TransportName::Udp if config.fastpath.backend == FastpathBackend::Off => {
                let bound = bind_waiting("udp", || UdpTransport::bind(listen, inbound_tx.clone()))
                    .await
                    .map_err(RunError::bind("udp", listen))?;
                tracing::info!("listening on udp {}", bound.local_addr().unwrap_or(listen));
                udp = Some(Box::new(bound));
            }
            TransportName::Udp => {
                let (bound, receivers) = retry_while_port_in_use(
                    "udp",
                    PORT_RELEASE_WAIT,
                    || async {
                        FastpathUdpTransport::bind(
                            listen,
                            &config.fastpath,
                            (1, config.overload.queue_capacity),
                        )
                    },
                    |e| matches!(e, FastpathBindError::Bind(source) if is_addr_in_use(source)),
                )
                .await
                .map_err(|e| match e {
                    FastpathBindError::Bind(source) => RunError::bind("udp", listen)(source),
                    FastpathBindError::Worker(e) => RunError::Fastpath(e),
                })?;
                match bound.fallback_reason() {
                    Some(reason) => tracing::warn!(
                        "listening on udp {} (fast path on epoll: io_uring unavailable: {reason})",
                        bound.local_addr()
                    ),
                    None => tracing::info!(
                        "listening on udp {} (fast path on {})",
                        bound.local_addr(),
                        bound.backend()
                    ),
                }
                bound.on_failure(report_to(&failures_tx));
                let bound = Arc::new(bound);
                udp = Some(Box::new(bound.clone()));
                fast = Some((receivers, bound));
            }
            TransportName::Tcp => {
                let bound = bind_waiting("tcp", || {
                    TcpTransport::bind(listen, inbound_tx.clone(), tcp_settings)
                })
                .await
                .map_err(RunError::bind("tcp", listen))?;
                tracing::info!("listening on tcp {}", bound.local_addr());
                tcp = Some(bound);
            }
        }
    }
    let analog = match (&config.analog, analog_plan) {
        (Some(analog), Some(ports)) => Some(AnalogService::start(
            crate::analog::service_config(&config, analog, ports),
            config.fastpath.backend.worker_backend(),
            inbound_tx.clone(),
        )?),
        _ => None,
    };
    drop(inbound_tx);
    if let Some(service) = &analog {
        service.on_failure(report_to(&failures_tx));
    }

    let relay = match config.media.anchor {
        AnchorMode::Never => None,
        _ => {
            let relay = MediaRelay::start(&config).map_err(RunError::Fastpath)?;
            tracing::info!(
                "media anchoring: {:?}, relay on {} (ports {}-{} on {})",
                config.media.anchor,
                relay.backend(),
                config.media.port_min,
                config.media.port_max,
                config.media_bind_ip()
            );
            relay.on_failure(report_to(&failures_tx));
            Some(relay)
        }
    };
    let mut media_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let shedder = Shedder::new(std::time::Duration::from_millis(
        config.overload.max_queue_delay_ms,
    ));
    let mut waits = QueueWaits::default();
    let mut engine = Engine::new(config, bindings, rand::random(), now);
    // Each restored subscription gets a full-state NOTIFY, sent by the loop's first turn.
    engine.restore_subscriptions(now, subscriptions);
    tokio::pin!(shutdown);
    let mut inbound_open = true;
    let mut stopped = None;
    let outputs = Outputs {
        relay: relay.as_ref(),
        udp: udp.as_deref(),
        tcp: tcp.as_ref(),
        analog: analog.as_ref(),
        writer: &writer,
    };
    loop {
        outputs.drain(&mut engine);
        let deadline = engine
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(1));
        // Work due now (the rest of a NOTIFY fan-out, a batch of expired timers) is ready
        // at once: tokio's timer would hold a past deadline until its next 1 ms tick.
        let due = deadline <= tokio::time::Instant::now();
        let timer = async move {
            if !due {
                tokio::time::sleep_until(deadline).await;
            }
        };
        let fast_ready = async {
            match &fast {
                Some((receivers, _)) => receivers.ready().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // The queue closes when no transport task feeds it (UDP on the fast path, no
            // TCP, no analog ports): the fast path's own queue carries on.
            message = inbound.recv(), if inbound_open => match message {
                Some(message) => deliver(&mut engine, message),
                None => inbound_open = false,
            },
            _ = fast_ready => {
                if let Some((receivers, _)) = &fast {
                    serve_fast_path(&mut engine, receivers, &shedder, &mut waits, Now::system, &mut |engine| {
                        outputs.drain(engine)
                    });
                }
            }
            Some(result) = results.recv() => engine.handle_store_result(Now::system(), result),
            _ = timer => engine.handle_timeout(Now::system()),
            _ = media_tick.tick() => {
                if let Some(relay) = &relay {
                    relay.tick(std::time::Instant::now());
                    for (id, idle, legs) in relay.ended() {
                        engine.handle_media_ended(Now::system(), id, idle, legs);
                    }
                }
            }
            Some(failure) = failures.recv() => {
                tracing::error!("{failure}; the gateway stops so that its supervisor restarts it");
                stopped = Some(failure);
                break;
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                break;
            }
        }
    }
    // Calls still up are billed to here when the next start records them as interrupted.
    engine.mark_calls_up(Now::system());
    while let Some(command) = engine.poll_store_command() {
        writer.send(command);
    }
    writer.flush();
    drop(listener);
    drop(analog);
    let guard = engine.guard_stats();
    tracing::info!(
        "auth: {} failed authentication(s), {} source(s) blocked, {} request(s) from blocked sources dropped, {} extension(s) locked, {} challenge(s) over the per-source rate left unanswered",
        guard.failures,
        guard.sources_blocked,
        guard.blocked_requests_dropped,
        guard.extensions_locked,
        guard.challenges_dropped
    );
    if let Some((_, transport)) = &fast {
        let stats = transport.stats();
        let count = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed)
        };
        let drops = transport.queue_drops();
        let summary = format!(
            "fast path: {} datagram(s) received, {} sent, {} malformed dropped, {} too large, {} send(s) dropped, {} priority and {} new dropped on full queues; {} new request(s) answered 503 (overload)",
            count(&stats.received),
            count(&stats.sent),
            transport.malformed(),
            count(&stats.truncated),
            count(&stats.send_dropped),
            count(&drops.priority),
            count(&drops.new),
            engine.stats().overload_rejected,
        );
        if count(&stats.send_dropped) > 0 {
            tracing::warn!("{summary} (no free send slot or a failed send)");
        } else {
            tracing::info!("{summary}");
        }
        tracing::info!("fast path queue waits: {}", waits.summary());
    }
    match stopped {
        Some(failure) => Err(RunError::WorkerStopped(failure)),
        None => Ok(()),
    }
}

/// What the store holds for a starting gateway: the store itself, the CDR spool (with
/// PostgreSQL), the registrations and the subscriptions still running; the calls an earlier
/// run left behind are recorded as interrupted on the way. Runs on a thread of its own: the
/// PostgreSQL client blocks on a runtime of its own, which cannot run inside this async one.
#[allow(clippy::type_complexity)]
fn open_store(
    config: &Config,
    now: Now,
) -> Result<
    (
        Store,
        Option<Spool>,
        Vec<(String, Binding)>,
        Vec<StoredSubscription>,
    ),
    RunError,
> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut store = Store::open_config(&config.database)?;
                let spool = match &config.database.url {
                    Some(_) => Some(Spool::open(&config.database.spool)?),
                    None => None,
                };
                let (from, to) = store.migrated();
                if from != to {
                    tracing::info!(
                        "database {}: schema migrated from version {from} to {to}",
                        store.name()
                    );
                }
                if config.node.is_clustered() {
                    let address = config.node.advertised(config.listen_addr());
                    store.register_node(&config.node.id, address, now.unix_ms)?;
                    // The calls of an earlier run are over: its keys elsewhere go dark.
                    let cleared = store.clear_dialogs(&config.node.id, now.unix_ms)?;
                    if cleared > 0 {
                        tracing::info!(
                            "node {}: the BLF dialogs of {cleared} extension(s) an earlier run left are over",
                            config.node.id
                        );
                    }
                    tracing::info!(
                        "node {}: in a cluster with {}, advertising {address}, heartbeat every {} s, takeover after {} s",
                        config.node.id,
                        config.node.peers.join(", "),
                        config.node.heartbeat_secs,
                        config.node.takeover_secs
                    );
                }
                let mut bindings = store.load_bindings(&config.node.id, now.unix())?;
                for (_, binding) in &mut bindings {
                    crate::transport::addressing::fill_local(
                        &mut binding.source,
                        config.listen_addr(),
                    );
                }
                let mut subscriptions = store.load_subscriptions(&config.node.id, now.unix())?;
                for subscription in &mut subscriptions {
                    crate::transport::addressing::fill_local(
                        &mut subscription.peer,
                        config.listen_addr(),
                    );
                }
                let interrupted = store.recover_interrupted(&config.node.id)?;
                if interrupted != Interrupted::default() {
                    tracing::warn!(
                        "an earlier run stopped with {} call(s) up and {} ringing: their CDRs say interrupted (talk time billed to the last mark)",
                        interrupted.answered,
                        interrupted.unanswered
                    );
                }
                tracing::info!(
                    "node {}: database {} opened, {} registration(s) restored",
                    config.node.id,
                    store.name(),
                    bindings.len()
                );
                Ok::<_, RunError>((store, spool, bindings, subscriptions))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::fastpath::{shard_queues, QueueDrops, Queued};
    use crate::transport::Peer;
    use std::time::{Duration, Instant};

    const CONFIG: &str = "[sip]\nlisten = \"127.0.0.1:5060\"\n[database]\npath = \"unused.db\"\n\
[overload]\nqueue_capacity = 200\nretry_after_secs = 7\n";

    fn request(method: &str, n: usize, to_tag: &str) -> bytes::Bytes {
        bytes::Bytes::from(format!(
            "{method} sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{method}{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:202@127.0.0.1>;tag=f{n}\r\nTo: <sip:201@127.0.0.1>{to_tag}\r\n\
Call-ID: {method}{n}@test\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    fn queued(bytes: bytes::Bytes, received: Instant, class: Class) -> Queued {
        Queued {
            peer: Peer {
                protocol: crate::transport::Protocol::Udp,
                addr: "127.0.0.1:5099".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
            },
            bytes,
            received,
            class,
        }
    }

    /// Under a backlog of new requests, the probe queued last is answered first, late new
    /// requests get 503 with Retry-After, fresh ones are served, and a full queue drops.
    #[test]
    fn priority_first_late_new_requests_shed_full_queues_drop() {
        let config = Config::from_toml(CONFIG, std::path::Path::new("t.toml")).unwrap();
        let mut engine = Engine::new(config, Vec::new(), [7; 32], Now::system());
        let (senders, receivers) = shard_queues(1, 200);
        let drops = QueueDrops::default();
        let clock = Now::system();
        let now = clock.mono;
        let late = now - Duration::from_secs(1);
        for n in 0..210 {
            let received = if n < 50 { late } else { now };
            senders.push(
                0,
                queued(request("INVITE", n, ""), received, Class::New),
                &drops,
            );
        }
        assert_eq!(
            drops.new.load(std::sync::atomic::Ordering::Relaxed),
            10,
            "a full queue drops"
        );
        senders.push(
            0,
            queued(request("OPTIONS", 0, ""), now, Class::Priority),
            &drops,
        );
        // The second INVITE of a call (it answers its 407), queued last.
        let answering = String::from_utf8(request("INVITE", 999, "").to_vec())
            .unwrap()
            .replace(
                "Content-Length",
                "Proxy-Authorization: Digest username=\"202\"\r\nContent-Length",
            );
        senders.push(0, queued(answering.into(), now, Class::Answering), &drops);
        let shedder = Shedder::new(Duration::from_millis(100));
        // What each message causes leaves before the next is handled.
        let mut answers = Vec::new();
        let mut per_message = Vec::new();
        let mut waits = QueueWaits::default();
        serve_fast_path(
            &mut engine,
            &receivers,
            &shedder,
            &mut waits,
            || clock,
            &mut |engine| {
                let before = answers.len();
                answers.extend(std::iter::from_fn(|| engine.poll_transmit()).map(|out| {
                    crate::sip::message::SipMessage::parse_datagram(&out.bytes).unwrap()
                }));
                per_message.push(answers.len() - before);
            },
        );
        assert!(
            per_message.iter().all(|&n| n == 1),
            "one answer after each message: {per_message:?}"
        );
        assert_eq!(answers[0].status(), Some(200), "the probe first");
        let count = |code| answers.iter().filter(|m| m.status() == Some(code)).count();
        assert_eq!(
            count(400) + count(403) + count(407),
            NEW_SERVED_PER_TURN,
            "a turn's worth served"
        );
        assert_eq!(
            answers[1].call_id(),
            Some("INVITE999@test"),
            "the call answering its challenge next, before new ones"
        );
        assert_eq!(count(503), 50, "the late ones are shed");
        assert!(answers
            .iter()
            .filter(|m| m.status() == Some(503))
            .all(|m| m.header(&ezk_sip_types::Name::RETRY_AFTER) == Some("7")));
        assert_eq!(
            count(407),
            NEW_SERVED_PER_TURN - 1,
            "then fresh new ones, to a turn's worth"
        );
        assert!(!receivers.is_empty(), "the rest waits for the next turn");
        while !receivers.is_empty() {
            serve_fast_path(
                &mut engine,
                &receivers,
                &shedder,
                &mut waits,
                || clock,
                &mut |_| {},
            );
        }
        let rest = std::iter::from_fn(|| engine.poll_transmit()).count();
        assert_eq!(rest, 150 - (NEW_SERVED_PER_TURN - 1));
        assert_eq!(engine.stats().overload_rejected, 50);
    }
}
