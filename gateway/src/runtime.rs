//! The tokio glue: binds the transports, opens the store, restores registrations and
//! starts the engine shard ([`crate::shard`]) that drives the sans-IO engine with real time;
//! then waits for shutdown or a failed worker.

use crate::analog::service::{AnalogService, ServiceError};
use crate::config::AnchorMode;
use crate::config::{AnalogConfig, Config, ConfigError, FastpathBackend, PortKind, TransportName};
use crate::descriptors::{tcp_cap, Reserve};
use crate::engine::Now;
use crate::registrar::Binding;
use crate::relay::MediaRelay;
use crate::shard::outputs::{Outputs, UdpOut};
use crate::shard::{EngineShard, ShardCommand, ShardSetup};
use crate::store::{
    BlfListener, CallStore, Interrupted, PgPool, Spool, Store, StoreError, StoreWriter,
    StoredSubscription,
};
use crate::transport::addressing::Addressing;
use crate::transport::bind::bind_waiting;
use crate::transport::tcp::policy::TcpLimits;
use crate::transport::tcp::{TcpSettings, TcpTransport};
use crate::transport::udp::UdpTransport;
use fastpath::udp::{Mailbox, SendHandle, WorkerConfig, WorkerFailure};
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
    // The engine shard's queue exists before the shard: the store thread and the BLF
    // listener answer into it from the start.
    let mailbox = Mailbox::<ShardCommand>::new()
        .map_err(|e| RunError::Fastpath(fastpath::udp::FastpathError::Setup(e)))?;
    let to_shard = |sender: SendHandle<ShardCommand>| {
        move |result| {
            let _ = sender.command(ShardCommand::Store(result));
        }
    };
    // BLF across nodes: other nodes' notifications reach the engine like store answers.
    let listener = match (&config.database.url, config.node.is_clustered()) {
        (Some(_), true) => Some(BlfListener::start(
            PgPool::for_config(&config.database)?,
            config.node.id.clone(),
            to_shard(mailbox.sender()),
        )),
        _ => None,
    };
    let writer = Arc::new(StoreWriter::with_spool(
        store,
        spool,
        to_shard(mailbox.sender()),
    ));

    let (inbound_tx, mut inbound) = mpsc::channel(INBOUND_QUEUE);
    let (failures_tx, mut failures) = mpsc::unbounded_channel();
    let report_to = |failures: &mpsc::UnboundedSender<WorkerFailure>| {
        let failures = failures.clone();
        move |failure| {
            let _ = failures.send(failure);
        }
    };
    let listen = config.listen_addr();
    let mut udp = UdpOut::None;
    let mut fast_socket: Option<std::net::UdpSocket> = None;
    let mut tcp: Option<Arc<TcpTransport>> = None;
    for transport in &config.sip.transports {
        match transport {
            TransportName::Udp if config.fastpath.backend == FastpathBackend::Off => {
                let bound = bind_waiting("udp", || UdpTransport::bind(listen, inbound_tx.clone()))
                    .await
                    .map_err(RunError::bind("udp", listen))?;
                tracing::info!("listening on udp {}", bound.local_addr().unwrap_or(listen));
                udp = UdpOut::Transport(Arc::new(bound));
            }
            TransportName::Udp => {
                let socket =
                    bind_waiting("udp", || async { crate::transport::fastpath::bind(listen) })
                        .await
                        .map_err(RunError::bind("udp", listen))?;
                let bound = socket.local_addr().map_err(RunError::bind("udp", listen))?;
                udp = UdpOut::Ring(Addressing::new(bound));
                fast_socket = Some(socket);
            }
            TransportName::Tcp => {
                let bound = bind_waiting("tcp", || {
                    TcpTransport::bind(listen, inbound_tx.clone(), tcp_settings)
                })
                .await
                .map_err(RunError::bind("tcp", listen))?;
                tracing::info!("listening on tcp {}", bound.local_addr());
                tcp = Some(Arc::new(bound));
            }
        }
    }
    let analog = match (&config.analog, analog_plan) {
        (Some(analog), Some(ports)) => Some(Arc::new(AnalogService::start(
            crate::analog::service_config(&config, analog, ports),
            config.fastpath.backend.worker_backend(),
            inbound_tx.clone(),
        )?)),
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
            Some(Arc::new(relay))
        }
    };
    let mut worker = WorkerConfig::sip("sip-engine");
    worker.core = config.fastpath.cores.first().copied();
    worker.backend = config.fastpath.backend.worker_backend();
    let on_fast_path = fast_socket.is_some();
    let (summary_tx, summary) = tokio::sync::oneshot::channel();
    let setup = ShardSetup {
        config,
        bindings,
        subscriptions,
        secret: rand::random(),
        outputs: Outputs {
            relay: relay.clone(),
            udp,
            tcp: tcp.clone(),
            analog: analog.clone(),
            writer: writer.clone(),
            store_commands: Vec::new(),
        },
        summary: summary_tx,
    };
    let shard =
        EngineShard::spawn(setup, worker, fast_socket, mailbox).map_err(RunError::Fastpath)?;
    if on_fast_path {
        let bound = shard.local_addrs()[0];
        match shard.fallback_reason() {
            Some(reason) => tracing::warn!(
                "listening on udp {bound} (fast path on epoll: io_uring unavailable: {reason})"
            ),
            None => tracing::info!(
                "listening on udp {bound} (fast path on {})",
                shard.backend()
            ),
        }
    }
    shard.on_failure(report_to(&failures_tx));
    // TCP, the analog ports and the tokio UDP socket: at most INBOUND_QUEUE messages wait
    // for the shard.
    let forward = {
        let shard = shard.sender();
        let permits = Arc::new(tokio::sync::Semaphore::new(INBOUND_QUEUE));
        tokio::spawn(async move {
            while let Some(message) = inbound.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                if !shard.command(ShardCommand::Inbound(message, permit)) {
                    return;
                }
            }
        })
    };
    tokio::pin!(shutdown);
    let stopped = tokio::select! {
        Some(failure) = failures.recv() => {
            tracing::error!("{failure}; the gateway stops so that its supervisor restarts it");
            Some(failure)
        }
        _ = &mut shutdown => {
            tracing::info!("shutting down");
            None
        }
    };
    forward.abort();
    let stats = shard.stats();
    let count =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let (received, sent, truncated, send_dropped) = (
        count(&stats.received),
        count(&stats.sent),
        count(&stats.truncated),
        count(&stats.send_dropped),
    );
    // The shard stops: the calls still up are marked, the store has everything.
    drop(shard);
    let summary = summary.await.unwrap_or_default();
    drop(listener);
    drop(analog);
    if on_fast_path {
        let drops = summary.queue_drops;
        let line = format!(
            "fast path: {received} datagram(s) received, {sent} sent, {} malformed dropped, {truncated} too large, {send_dropped} send(s) dropped, {} priority and {} new dropped on full queues; {} new request(s) answered 503 (overload)",
            summary.malformed,
            drops.priority,
            drops.new,
            summary.overload_rejected,
        );
        if send_dropped > 0 {
            tracing::warn!("{line} (no free send slot or a failed send)");
        } else {
            tracing::info!("{line}");
        }
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
