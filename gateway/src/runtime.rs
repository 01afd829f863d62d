//! The tokio glue: binds the transports, opens the store, restores registrations and
//! starts the engine shard ([`crate::shard`]) that drives the sans-IO engine with real time;
//! then waits for shutdown or a failed worker.

use crate::analog::service::{AnalogService, ServiceError};
use crate::config::AnchorMode;
use crate::config::{
    AnalogConfig, Config, ConfigError, FastpathBackend, NodeTransport, PortKind, TransportName,
};
use crate::descriptors::{tcp_cap, Reserve};
use crate::engine::shard::ShardId;
use crate::engine::Now;
use crate::registrar::RestoredBindings;
use crate::relay::MediaRelay;
use crate::shard::outputs::{Outputs, UdpOut};
use crate::shard::peers::Peers;
use crate::shard::{EngineShard, ShardCommand, ShardSetup, ShardSummary};
use crate::status::Sources;
use crate::store::{
    BlfListener, CallStore, Interrupted, PgPool, Spool, Store, StoreError, StoreWriter,
    StoredSubscription,
};
use crate::transport::addressing::Addressing;
use crate::transport::bind::bind_waiting;
use crate::transport::tcp::policy::TcpLimits;
use crate::transport::tcp::{self, Listeners, TcpSettings, TcpTransport};
use crate::transport::tls::TlsServer;
use crate::transport::udp::UdpTransport;
use fastpath::udp::{Mailbox, WorkerConfig, WorkerFailure};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
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
    /// The SIP capture cannot start.
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
    /// The TLS certificate, key or client CA is unusable.
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsError),
    /// The status control socket could not be made.
    #[error("cannot make the status control socket {path}: {source} (set [status] control_socket to a writable place)")]
    ControlSocket {
        /// The socket path.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen on {protocol} {addr}: {source} (is another process using the port, or is the address not local?)")]
    Bind {
        /// udp, tcp or tls.
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

/// What SIGHUP and `gateway status reload` do: the config file read again (its
/// extensions and `[calls]` for new calls, see [`crate::config::reload`]) and the TLS
/// certificate, key and client CA (new connections get them, connections up keep
/// theirs). A failed reload keeps what runs and says why.
struct Reloader {
    running: std::sync::Mutex<Config>,
    tls: Option<Arc<TlsServer>>,
    peers: Peers,
}

impl Reloader {
    /// Reloads; the lines saying what happened (logged too), as an error when the config
    /// or the TLS files were refused.
    fn reload(&self) -> Result<String, String> {
        crate::service_manager::reloading();
        let said = self.reload_files();
        crate::service_manager::ready("serving (reloaded)");
        said
    }

    fn reload_files(&self) -> Result<String, String> {
        let mut said = Vec::new();
        let mut refused = false;
        match self.running.lock() {
            Ok(mut running) => {
                let file = running
                    .source()
                    .map_or("config".to_string(), |p| p.display().to_string());
                match running.reload() {
                    Ok(reloaded) => {
                        for shard in 0..self.peers.count() {
                            let config = Box::new(reloaded.config.clone());
                            self.peers.send(shard, ShardCommand::Reconfigure(config));
                        }
                        let changes = match reloaded.changed.is_empty() {
                            true => "nothing changed for calls".to_string(),
                            false => reloaded.changed.join(", "),
                        };
                        said.push(format!("{file} reloaded: {changes}"));
                        if !reloaded.kept.is_empty() {
                            said.push(format!(
                                "{file}: {} changed but take(s) effect at a restart only; the running values are kept",
                                reloaded.kept.join(", ")
                            ));
                        }
                        *running = reloaded.config;
                    }
                    Err(e) => {
                        refused = true;
                        said.push(format!(
                            "{file} not reloaded, the running config is kept: {e}"
                        ));
                    }
                }
            }
            Err(_) => {
                refused = true;
                said.push("config not reloaded: an earlier reload failed midway".into());
            }
        }
        if let Some(tls) = &self.tls {
            match tls.reload(SystemTime::now()) {
                Ok(expiry) => said.push(format!(
                    "TLS certificate {} reloaded (valid until {}); new connections get it",
                    tls.certificate_path().display(),
                    expiry.not_after
                )),
                Err(e) => {
                    refused = true;
                    said.push(format!(
                        "TLS files not reloaded, new connections keep the previous certificate: {e}"
                    ));
                }
            }
        }
        for line in &said {
            match refused {
                true => tracing::warn!("reload: {line}"),
                false => tracing::info!("reload: {line}"),
            }
        }
        let text = said.join("\n");
        match refused {
            true => Err(text),
            false => Ok(text),
        }
    }
}

/// Reloads each time SIGHUP comes.
async fn reload_on_hangup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(
                "SIGHUP cannot be caught ({e}): do not send it, it would stop the gateway"
            );
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading");
        let _ = reloader.reload();
    }
}

/// Starts the operator's views: the control socket and, when configured, the HTTP
/// listener for metrics and the status page.
async fn serve_status(
    config: &Config,
    sources: Sources,
    reloader: Arc<Reloader>,
) -> Result<Option<tokio::task::JoinHandle<()>>, RunError> {
    let path = config.status.control_socket_path(&config.database);
    crate::status::control::serve(&path, sources.clone(), Box::new(move || reloader.reload()))
        .map_err(|source| RunError::ControlSocket {
            path: path.clone(),
            source,
        })?;
    tracing::info!("status control socket {} (gateway status)", path.display());
    let Some(addr) = config.status.http_listen else {
        return Ok(None);
    };
    let listener = bind_waiting("http", || tokio::net::TcpListener::bind(addr))
        .await
        .map_err(RunError::bind("http", addr))?;
    let bound = listener.local_addr().unwrap_or(addr);
    if bound.ip().is_loopback() {
        tracing::info!("status page and metrics on http://{bound}/ (/metrics)");
    } else {
        tracing::warn!(
            "status page and metrics on http://{bound}/ (/metrics): not loopback, so whoever reaches it sees every call; keep it behind a firewall"
        );
    }
    Ok(Some(tokio::spawn(crate::status::http::serve(
        listener, sources,
    ))))
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
    // The engine shards' queues exist before the shards: the store thread and the BLF
    // listener answer into them from the start.
    let shard_count = config.shard_count();
    let mailboxes = (0..shard_count)
        .map(|_| Mailbox::<ShardCommand>::new())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RunError::Fastpath(fastpath::udp::FastpathError::Setup(e)))?;
    let peers = Peers::new(
        mailboxes.iter().map(Mailbox::sender).collect(),
        config.overload.queue_capacity,
    );
    let to_shard = |peers: Peers| move |result| peers.deliver_result(result);
    // BLF across nodes: other nodes' notifications reach the engine like store answers.
    let listener = match (&config.database.url, config.node.is_clustered()) {
        (Some(_), true) => Some(BlfListener::start(
            PgPool::for_config(&config.database)?,
            config.node.id.clone(),
            to_shard(peers.clone()),
        )),
        _ => None,
    };
    let writer = Arc::new(StoreWriter::with_spool(
        store,
        spool,
        to_shard(peers.clone()),
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
    let mut udp = None;
    let mut fast_sockets: Vec<std::net::UdpSocket> = Vec::new();
    let mut streams = Listeners::default();
    let tls_server = match config.serves_tls() {
        true => Some(Arc::new(TlsServer::load(&config.tls, SystemTime::now())?)),
        false => None,
    };
    for transport in &config.sip.transports {
        match transport {
            TransportName::Udp if config.fastpath.backend == FastpathBackend::Off => {
                let bound = bind_waiting("udp", || UdpTransport::bind(listen, inbound_tx.clone()))
                    .await
                    .map_err(RunError::bind("udp", listen))?;
                tracing::info!("listening on udp {}", bound.local_addr().unwrap_or(listen));
                udp = Some(Arc::new(bound));
            }
            TransportName::Udp => {
                fast_sockets = bind_waiting("udp", || async {
                    crate::transport::fastpath::bind(listen, shard_count)
                })
                .await
                .map_err(RunError::bind("udp", listen))?;
            }
            TransportName::Tcp => {
                let bound = bind_waiting("tcp", || async { tcp::listen(listen) })
                    .await
                    .map_err(RunError::bind("tcp", listen))?;
                tracing::info!("listening on tcp {}", bound.local_addr().unwrap_or(listen));
                streams.tcp = Some(bound);
            }
            TransportName::Tls => {
                let addr = config.tls_listen_addr();
                let bound = bind_waiting("tls", || async { tcp::listen(addr) })
                    .await
                    .map_err(RunError::bind("tls", addr))?;
                tracing::info!(
                    "listening on tls {} (certificate {})",
                    bound.local_addr().unwrap_or(addr),
                    config
                        .tls
                        .certificate
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                );
                let server = tls_server.clone().expect("loaded above when TLS is served");
                streams.tls = Some((bound, server));
            }
        }
    }
    if config.node.transport == NodeTransport::Tls {
        streams.tls_peers = config.node.peer_addrs().collect();
    }
    let tcp = match (&streams.tcp, &streams.tls) {
        (None, None) => None,
        _ => Some(Arc::new(
            TcpTransport::start(streams, inbound_tx.clone(), tcp_settings)
                .map_err(RunError::bind("tcp", listen))?,
        )),
    };
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
    let capture = crate::trace::Capture::start(&config.trace, listen)?;
    if let Some(path) = &config.trace.pcap {
        tracing::info!(
            "SIP capture to {} ({} files of {} MB at most)",
            path.display(),
            config.trace.pcap_files,
            config.trace.pcap_max_megabytes
        );
    }
    if let Some(collector) = config.trace.hep {
        tracing::info!("SIP capture to the HEP3 collector {collector}");
    }
    let on_fast_path = !fast_sockets.is_empty();
    let guard = crate::auth::guard::SharedGuard::new(config.auth.guard());
    let secret: [u8; 32] = rand::random();
    let mut sockets = fast_sockets.into_iter();
    let mut shards = Vec::with_capacity(shard_count);
    let mut summaries = Vec::with_capacity(shard_count);
    for (index, mailbox) in mailboxes.into_iter().enumerate() {
        let mut worker = WorkerConfig::sip(&match shard_count {
            1 => "sip-engine".to_string(),
            _ => format!("sip-engine-{index}"),
        });
        worker.core = config.fastpath.cores.get(index).copied();
        worker.backend = config.fastpath.backend.worker_backend();
        let socket = sockets.next();
        let udp = match (&socket, &udp) {
            (Some(socket), _) => UdpOut::Ring(Addressing::new(
                socket.local_addr().map_err(RunError::bind("udp", listen))?,
            )),
            (None, Some(transport)) => UdpOut::Transport(transport.clone()),
            (None, None) => UdpOut::None,
        };
        let (summary_tx, summary) = tokio::sync::oneshot::channel();
        summaries.push(summary);
        let setup = ShardSetup {
            config: config.clone(),
            bindings: bindings.clone(),
            subscriptions: subscriptions.clone(),
            secret,
            shard: ShardId::new(index, shard_count).unwrap_or_default(),
            guard: guard.clone(),
            outputs: Outputs {
                relay: relay.clone(),
                udp,
                tcp: tcp.clone(),
                analog: analog.clone(),
                writer: writer.clone(),
                store_commands: Vec::new(),
                peers: peers.clone(),
                tracer: capture.tracer(),
            },
            summary: summary_tx,
        };
        let shard =
            EngineShard::spawn(setup, worker, socket, mailbox).map_err(RunError::Fastpath)?;
        shard.on_failure(report_to(&failures_tx));
        shards.push(shard);
    }
    drop((bindings, subscriptions));
    if on_fast_path {
        let bound = shards[0].local_addrs()[0];
        let engines = match shard_count {
            1 => "; 1 engine shard".to_string(),
            n => format!("; {n} engine shards on SO_REUSEPORT sockets"),
        };
        match shards[0].fallback_reason() {
            Some(reason) => tracing::warn!(
                "listening on udp {bound} (fast path on epoll: io_uring unavailable: {reason}){engines}"
            ),
            None => tracing::info!(
                "listening on udp {bound} (fast path on {}){engines}",
                shards[0].backend()
            ),
        }
    }
    // TCP, the analog ports and the tokio UDP socket: at most INBOUND_QUEUE messages wait
    // for the shards.
    let forward = {
        let peers = peers.clone();
        let permits = Arc::new(tokio::sync::Semaphore::new(INBOUND_QUEUE));
        tokio::spawn(async move {
            while let Some(message) = inbound.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let shard = peers.shard_of_inbound(&message);
                if !peers.send(shard, ShardCommand::Inbound(message, permit)) {
                    return;
                }
            }
        })
    };
    let reloader = Arc::new(Reloader {
        running: std::sync::Mutex::new(config.clone()),
        tls: tls_server,
        peers: peers.clone(),
    });
    let sources = Sources {
        node: config.node.id.clone(),
        peers: peers.clone(),
        relay: relay.clone(),
        analog: analog.clone(),
        tcp: tcp.clone(),
        writer: writer.clone(),
        tracer: capture.tracer(),
    };
    let http = serve_status(&config, sources, reloader.clone()).await?;
    let reload = tokio::spawn(reload_on_hangup(reloader));
    let watchdog = tokio::spawn(crate::service_manager::watchdog(peers.clone()));
    crate::service_manager::ready(&format!(
        "serving SIP on {listen} with {shard_count} engine shard(s)"
    ));
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
    crate::service_manager::stopping();
    forward.abort();
    reload.abort();
    watchdog.abort();
    if let Some(http) = http {
        http.abort();
    }
    let count =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let (mut received, mut sent, mut truncated, mut send_dropped) = (0, 0, 0, 0);
    for shard in &shards {
        let stats = shard.stats();
        received += count(&stats.received);
        sent += count(&stats.sent);
        truncated += count(&stats.truncated);
        send_dropped += count(&stats.send_dropped);
    }
    // The shards stop: the calls still up are marked, the store has everything.
    drop(shards);
    drop(peers);
    let mut summary = ShardSummary::default();
    for shard in summaries {
        summary = summary.plus(shard.await.unwrap_or_default());
    }
    drop(listener);
    drop(analog);
    drop(capture);
    if on_fast_path {
        let drops = summary.queue_drops;
        let line = format!(
            "fast path: {received} datagram(s) received, {sent} sent, {} malformed dropped, {truncated} too large, {send_dropped} send(s) dropped, {} priority and {} new dropped on full queues, {} on their way to another shard; {} new request(s) answered 503 (overload)",
            summary.malformed,
            drops.priority,
            drops.new,
            summary.forward_drops,
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
        RestoredBindings,
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
                    let address = config.node_advertised();
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
                Ok::<_, RunError>((store, spool, RestoredBindings::new(bindings), subscriptions))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
