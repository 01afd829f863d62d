//! The analog service: a fast path worker (io_uring or epoll) whose handler owns the
//! channels (real DAHDI, or the emulated card in demo mode), the line drivers, the analog
//! user agent and one RTP socket per port. Its 20 ms tick steps the lines; RTP arrives and
//! leaves on the same thread, in the same ring, so line audio reaches RTP without a thread
//! hop. SIP crosses to the engine as bytes; operator commands (demo mode) arrive from the
//! control socket, both as worker commands.
//!
//! A port's RTP socket takes packets only from the far end of its current call, by the
//! relay's strict source rules ([`StrictSource`]): the address the SDP of the call named
//! latches on its first packet, another source only after probation while nothing is
//! latched, and with no call nothing is taken. Anything else (injected audio or RFC 4733
//! digits) is dropped and counted (`rtp_foreign_dropped` in the operator's `status`).

use super::agent::{AgentAction, AnalogAgent, PortRole, PortSetup};
use super::control::{self, Command, Request};
use crate::srtp::session::SrtpSession;
use crate::status::view::PortView;
use crate::transport::{Inbound, ANALOG_PEER};
use bytes::Bytes;
use fastpath::relay::strict_source::{Admission, StrictSource};
use fastpath::udp::{BackendChoice, Handler, Io, Worker, WorkerConfig, WorkerFailure};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use telephony_hw::dahdi::channel::{Channel, ChannelError, DahdiChannel};
use telephony_hw::dahdi::emulator::EmulatedCard;
use telephony_hw::dahdi::ports::PortPlan;
use telephony_hw::dahdi::queued::QueuedChannel;
use telephony_hw::dahdi::system_conf::{Signalling, SystemConf};
use telephony_hw::dsp::analysis::dominant_frequency;
use telephony_hw::dsp::callerid::{decode_spill, demodulate, CallerId, Modem};
use telephony_hw::dsp::dtmf::{detect_digits, DtmfThresholds};
use telephony_hw::dsp::level::amplitude_for_dbm0;
use telephony_hw::line::dial_plan::DialPlan;
use telephony_hw::line::driver::{
    CallAudio, DialMode, LinePortDriver, NoCallAudio, PhonePortDriver, PortDriver,
};
use telephony_hw::media::rtp_out::MAX_PACKET;
use telephony_hw::media::session::{MediaSession, StreamStart};

/// One driver step.
const TICK: Duration = Duration::from_millis(20);

/// What the service receives.
pub enum ServiceInput {
    /// A SIP message from the engine.
    Sip(Bytes),
    /// An operator command (demo mode).
    Control(Request),
    /// The operator asks for every port's state (`gateway status ports`, the metrics).
    Report(crossbeam_channel::Sender<Vec<PortView>>),
}

/// How a port is set up, from the configuration.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Channel, signalling, tone zone.
    pub plan: PortPlan,
    /// What it is to the control plane.
    pub role: PortRole,
    /// Phone ports: the numbers it can dial.
    pub dial_plan: Vec<String>,
    /// Line ports: rings before an incoming call is offered.
    pub rings_before_offer: u32,
    /// Line ports: how it dials.
    pub dial_mode: DialMode,
}

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The ports.
    pub ports: Vec<PortConfig>,
    /// DAHDI device directory; when it does not exist the emulated card is used.
    pub dahdi_dir: PathBuf,
    /// The IP address RTP sockets bind to (and SDP names).
    pub rtp_ip: std::net::IpAddr,
    /// The engine's host, for URIs.
    pub gateway_host: String,
    /// The operator interface's socket (demo mode).
    pub control_socket: PathBuf,
    /// RTP packets a source other than the address in the call's SDP must send, in
    /// sequence, before a port with nothing latched takes its media (`[media]
    /// probation_packets`).
    pub rtp_probation_packets: u32,
    /// The extensions whose SRTP policy is `required`: the ports offer them SRTP.
    pub srtp_required: std::collections::HashSet<String>,
}

/// Why the analog service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A channel could not be opened or set up.
    #[error("analog port {channel}: {source}")]
    Channel {
        /// The port.
        channel: u32,
        /// What DAHDI (or the emulated card) said.
        source: ChannelError,
    },
    /// An RTP socket could not be bound.
    #[error("analog port {channel}: cannot bind an RTP socket on {ip}: {source}")]
    Rtp {
        /// The port.
        channel: u32,
        /// The address.
        ip: std::net::IpAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The operator socket could not be created.
    #[error("operator interface {path}: {source}")]
    Control {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The thread could not be spawned.
    #[error("cannot start the analog thread: {0}")]
    Thread(std::io::Error),
}

/// How a channel's audio meets the ring: DAHDI channels are read and written by the ring
/// (through a [`QueuedChannel`]); the emulated card's channels have no descriptor and are
/// read in the tick.
trait RingAudio {
    /// A second descriptor for the ring, if the channel has one.
    fn ring_fd(&self) -> Option<std::os::fd::OwnedFd>;
    /// The ring read a block (or failed with an errno).
    fn ring_read(&mut self, data: Result<&[u8], i32>);
    /// Blocks the driver wrote, for the ring to write.
    fn ring_writes(&mut self) -> Vec<Vec<u8>>;
}

impl RingAudio for telephony_hw::dahdi::emulator::EmulatedChannel {
    fn ring_fd(&self) -> Option<std::os::fd::OwnedFd> {
        None
    }
    fn ring_read(&mut self, _data: Result<&[u8], i32>) {}
    fn ring_writes(&mut self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

impl RingAudio for QueuedChannel<DahdiChannel> {
    fn ring_fd(&self) -> Option<std::os::fd::OwnedFd> {
        self.inner().duplicate_fd().ok()
    }
    fn ring_read(&mut self, data: Result<&[u8], i32>) {
        match data {
            Ok(block) if !block.is_empty() => self.push_read(block),
            Ok(_) => {}
            Err(errno) => self.push_error(errno),
        }
    }
    fn ring_writes(&mut self) -> Vec<Vec<u8>> {
        self.take_writes().collect()
    }
}

/// The runtime's handle on the service; dropping it stops the worker.
pub struct AnalogService {
    worker: Worker<ServiceInput>,
}

/// Binds one RTP socket per port on `ip`.
fn rtp_sockets(config: &ServiceConfig) -> Result<Vec<UdpSocket>, ServiceError> {
    config
        .ports
        .iter()
        .map(|port| {
            UdpSocket::bind((config.rtp_ip, 0)).map_err(|source| ServiceError::Rtp {
                channel: port.plan.channel,
                ip: config.rtp_ip,
                source,
            })
        })
        .collect()
}

type Started = mpsc::Sender<Result<(), ServiceError>>;

impl AnalogService {
    /// Starts the service; messages for the engine go into `to_engine`. Returns once every
    /// port is open (or with the first error).
    pub fn start(
        config: ServiceConfig,
        backend: BackendChoice,
        to_engine: tokio::sync::mpsc::Sender<Inbound>,
    ) -> Result<AnalogService, ServiceError> {
        let sockets = rtp_sockets(&config)?;
        let rtp: Vec<SocketAddr> = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<Result<_, _>>()
            .map_err(|source| ServiceError::Rtp {
                channel: 0,
                ip: config.rtp_ip,
                source,
            })?;
        let emulated = !config.dahdi_dir.exists();
        let (started_tx, started) = mpsc::channel();
        let worker_config = WorkerConfig {
            name: "analog".into(),
            backend,
            core: None,
            buffer_size: 2048,
            buffers: 256,
            tick: Some(TICK),
        };
        let service_config = config.clone();
        let worker = if emulated {
            Worker::spawn_with(worker_config, sockets, move || {
                emulated_service(service_config, rtp, to_engine, &started_tx)
            })
        } else {
            Worker::spawn_with(worker_config, sockets, move || {
                dahdi_service(service_config, rtp, to_engine, &started_tx)
            })
        }
        .map_err(|e| ServiceError::Thread(std::io::Error::other(e.to_string())))?;
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(ServiceError::Thread(std::io::Error::other(
                    "the analog worker stopped while starting",
                )))
            }
        }
        if emulated {
            let control = worker.sender();
            let path = config.control_socket.clone();
            control::serve(&path, move |request| {
                control.command(ServiceInput::Control(request))
            })
            .map_err(|source| ServiceError::Control { path, source })?;
        }
        tracing::info!(
            "analog ports served by the fast path on {}",
            worker.backend()
        );
        Ok(AnalogService { worker })
    }

    /// Calls `report` if the service's worker stops by itself (the ports are dead).
    pub fn on_failure(&self, report: impl FnOnce(WorkerFailure) + Send + 'static) {
        self.worker.on_failure(report);
    }

    /// Asks for every port's state: it arrives on the receiver.
    pub fn report(&self) -> crossbeam_channel::Receiver<Vec<PortView>> {
        let (reply, report) = crossbeam_channel::bounded(1);
        self.worker.sender().command(ServiceInput::Report(reply));
        report
    }

    /// Hands a SIP message from the engine to the analog ports.
    pub fn send_sip(&self, bytes: Bytes) {
        if !self.worker.sender().command(ServiceInput::Sip(bytes)) {
            tracing::warn!("the analog service has stopped; message dropped");
        }
    }
}

fn emulated_service(
    config: ServiceConfig,
    rtp: Vec<SocketAddr>,
    to_engine: tokio::sync::mpsc::Sender<Inbound>,
    started: &Started,
) -> Service<telephony_hw::dahdi::emulator::EmulatedChannel> {
    let conf = SystemConf {
        channels: config
            .ports
            .iter()
            .map(|p| (p.plan.channel, p.plan.signalling))
            .collect(),
        load_zones: config
            .ports
            .iter()
            .map(|p| p.plan.zone.name.to_string())
            .collect(),
        default_zone: config.ports.first().map(|p| p.plan.zone.name.to_string()),
    };
    let card = EmulatedCard::new(&conf);
    tracing::info!(
        "no DAHDI at {}: running on the emulated analog card (demo mode); operator interface: gateway analog --config <file> ... (socket {})",
        config.dahdi_dir.display(),
        config.control_socket.display()
    );
    let mut service = Service::open(
        &config,
        rtp,
        |channel| card.open(channel),
        Some(card.clone()),
        to_engine,
    );
    let _ = started.send(service.failure.take().map_or(Ok(()), Err));
    service
}

fn dahdi_service(
    config: ServiceConfig,
    rtp: Vec<SocketAddr>,
    to_engine: tokio::sync::mpsc::Sender<Inbound>,
    started: &Started,
) -> Service<QueuedChannel<DahdiChannel>> {
    let dir = config.dahdi_dir.clone();
    let mut service = Service::open(
        &config,
        rtp,
        |channel| DahdiChannel::open(&dir, channel).map(QueuedChannel::new),
        None,
        to_engine,
    );
    if service.failure.is_none() {
        tracing::info!("analog ports open on DAHDI ({})", dir.display());
    }
    let _ = started.send(service.failure.take().map_or(Ok(()), Err));
    service
}

enum Driver<C: Channel> {
    Phone(Box<PhonePortDriver<C>>),
    Line(Box<LinePortDriver<C>>),
}

struct Port<C: Channel> {
    driver: Driver<C>,
    /// Its signalling (system.conf), for the operator.
    signalling: Signalling,
    /// Its RTP socket's number in the worker.
    socket: usize,
    /// Its RTP socket's address (what its SDP names).
    rtp: SocketAddr,
    /// Its channel's descriptor in the ring (DAHDI), once attached.
    file: Option<usize>,
    media: Option<CallMedia>,
    /// RTP packets dropped since the port opened: from anyone but the far end of the call,
    /// or with no call at all.
    foreign_dropped: u64,
    /// SRTP packets of the far end refused since the port opened: failed authentication,
    /// replays, plain RTP in a secure call.
    srtp_refused: u64,
    /// Datagrams of the far end that are no RTP (RFC 7983: STUN keep-alives, which
    /// linphone sends on its RTP port, DTLS), dropped since the port opened.
    non_rtp_dropped: u64,
}

/// The media of a port's call.
struct CallMedia {
    session: MediaSession,
    /// Whose packets the port takes, and where its own go.
    far_end: StrictSource,
    /// The call's SRTP contexts, when its media is secure (keys erased when it ends).
    srtp: Option<SrtpSession>,
}

/// Whether a datagram on an RTP port is RTP (or RTCP) by its first byte, as RFC 7983
/// demultiplexes: 128-191; STUN is 0-3, DTLS 20-63.
fn is_rtp(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (128..=191).contains(b))
}

/// The analog ports as a fast path handler.
struct Service<C: Channel> {
    ports: BTreeMap<u32, Port<C>>,
    /// Port (channel) by RTP socket number.
    socket_channels: Vec<u32>,
    agent: AnalogAgent,
    card: Option<EmulatedCard>,
    started: Instant,
    to_engine: tokio::sync::mpsc::Sender<Inbound>,
    /// Why the ports could not be opened (reported to `AnalogService::start`).
    failure: Option<ServiceError>,
    /// Whether the channels' descriptors were handed to the ring (done on the first tick).
    files_attached: bool,
    /// Port (channel) by ring file number.
    file_channels: Vec<u32>,
    /// `[media] probation_packets`, for each call's [`StrictSource`].
    rtp_probation_packets: u32,
}

impl<C: Channel + RingAudio + 'static> Service<C> {
    /// Opens every port; `rtp` are the RTP sockets' addresses (worker sockets 0, 1, ...).
    fn open(
        config: &ServiceConfig,
        rtp: Vec<SocketAddr>,
        mut open: impl FnMut(u32) -> Result<C, ChannelError>,
        card: Option<EmulatedCard>,
        to_engine: tokio::sync::mpsc::Sender<Inbound>,
    ) -> Self {
        let mut service = Service {
            ports: BTreeMap::new(),
            socket_channels: Vec::new(),
            agent: AnalogAgent::new(Vec::new(), config.gateway_host.clone()),
            card,
            started: Instant::now(),
            to_engine,
            failure: None,
            files_attached: false,
            file_channels: Vec::new(),
            rtp_probation_packets: config.rtp_probation_packets,
        };
        let mut setups = Vec::new();
        for (socket, (port, &rtp)) in config.ports.iter().zip(&rtp).enumerate() {
            let channel = port.plan.channel;
            let failed = |source| ServiceError::Channel { channel, source };
            let driver = open(channel).and_then(|opened| {
                Ok(match port.role {
                    PortRole::Phone { .. } => Driver::Phone(Box::new(PhonePortDriver::new(
                        opened,
                        DialPlan::new(port.dial_plan.iter().cloned()),
                        port.plan.zone,
                    )?)),
                    PortRole::Line { .. } => Driver::Line(Box::new(LinePortDriver::new(
                        opened,
                        port.plan.zone,
                        port.rings_before_offer,
                        port.dial_mode,
                    )?)),
                })
            });
            let driver = match driver {
                Ok(driver) => driver,
                Err(e) => {
                    service.failure = Some(failed(e));
                    return service;
                }
            };
            setups.push(PortSetup {
                channel,
                role: port.role.clone(),
                rtp,
            });
            service.socket_channels.push(channel);
            service.ports.insert(
                channel,
                Port {
                    driver,
                    signalling: port.plan.signalling,
                    socket,
                    rtp,
                    file: None,
                    media: None,
                    foreign_dropped: 0,
                    srtp_refused: 0,
                    non_rtp_dropped: 0,
                },
            );
        }
        service.agent = AnalogAgent::new(setups, config.gateway_host.clone())
            .offering_srtp_to(config.srtp_required.clone());
        service
    }

    /// Hands the DAHDI channels' descriptors to the ring: their 20 ms blocks are read and
    /// written there from now on (the emulated card's channels have none).
    fn attach_files(&mut self, io: &mut Io) {
        for (&channel, port) in self.ports.iter_mut() {
            let Some(fd) = port.driver.channel_mut().ring_fd() else {
                continue;
            };
            match io.add_file(fd, telephony_hw::dahdi::channel::BLOCK_SIZE) {
                Ok(file) => {
                    port.file = Some(file);
                    if self.file_channels.len() <= file {
                        self.file_channels.resize(file + 1, 0);
                    }
                    self.file_channels[file] = channel;
                }
                Err(e) => tracing::warn!("analog port {channel}: the ring cannot serve it: {e}"),
            }
        }
    }

    /// Line time in ms: the emulated card's clock, or real time on DAHDI.
    fn now_ms(&self) -> u64 {
        match &self.card {
            Some(card) => card.now_ms(),
            None => self.started.elapsed().as_millis() as u64,
        }
    }

    /// One 20 ms step of every port: the line, then its RTP out through the ring.
    fn step_ports(&mut self, io: &mut Io, now: Instant) {
        let line_now = self.now_ms();
        let mut notices = Vec::new();
        for (&channel, port) in self.ports.iter_mut() {
            let result = match port.media.as_mut() {
                Some(media) => port.driver.step(line_now, &mut media.session),
                None => port.driver.step(line_now, &mut NoCallAudio),
            };
            notices.push((channel, result));
            if let Some(media) = port.media.as_mut() {
                let mut packet = [0u8; MAX_PACKET];
                while let Some(n) = media.session.pop_packet(&mut packet) {
                    let Some(remote) = media.far_end.destination() else {
                        continue;
                    };
                    match media.srtp.as_mut().map(|srtp| srtp.protect(&packet[..n])) {
                        None => io.send(port.socket, remote, &packet[..n]),
                        Some(Ok(protected)) => io.send(port.socket, remote, &protected),
                        Some(Err(e)) => tracing::warn!("analog port {channel}: {e}"),
                    }
                }
            }
        }
        for (channel, result) in notices {
            self.deliver_or_warn(now, channel, result);
        }
    }

    fn deliver_or_warn(
        &mut self,
        now: Instant,
        channel: u32,
        result: Result<Vec<Notice>, ChannelError>,
    ) {
        match result {
            Ok(notices) => self.deliver(now, channel, notices),
            Err(e) => tracing::warn!("analog port {channel}: {e}"),
        }
    }

    /// Sends the agent's messages to the engine and carries out its actions.
    fn flush(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(bytes) = self.agent.poll_transmit() {
                progressed = true;
                let inbound = Inbound::Datagram {
                    peer: ANALOG_PEER,
                    bytes,
                };
                // Never block the ring's thread: a full engine queue drops (SIP retries).
                match self.to_engine.try_send(inbound) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!("engine queue full: an analog port's message was dropped")
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            while let Some(action) = self.agent.poll_action() {
                progressed = true;
                self.perform(now, action);
            }
            if !progressed {
                return;
            }
        }
    }

    /// Hands the agent what a port's state machine reported.
    fn deliver(&mut self, now: Instant, channel: u32, notices: Vec<Notice>) {
        for notice in notices {
            match notice {
                Notice::Phone(n) => self.agent.phone_notice(now, channel, n),
                Notice::Line(n) => self.agent.line_notice(now, channel, n),
            }
        }
    }

    fn perform(&mut self, now: Instant, action: AgentAction) {
        let line_now = self.now_ms();
        match action {
            AgentAction::Phone(channel, command) => {
                let result = match self.ports.get_mut(&channel).map(|p| &mut p.driver) {
                    Some(Driver::Phone(driver)) => {
                        notices(driver.command(line_now, command), Notice::Phone)
                    }
                    _ => Ok(Vec::new()),
                };
                self.deliver_or_warn(now, channel, result);
            }
            AgentAction::Line(channel, command) => {
                let result = match self.ports.get_mut(&channel).map(|p| &mut p.driver) {
                    Some(Driver::Line(driver)) => {
                        notices(driver.command(line_now, command), Notice::Line)
                    }
                    _ => Ok(Vec::new()),
                };
                self.deliver_or_warn(now, channel, result);
            }
            AgentAction::StartMedia {
                channel,
                remote,
                local_crypto,
            } => {
                if let Some(port) = self.ports.get_mut(&channel) {
                    let srtp = match (&local_crypto, &remote.crypto) {
                        (Some(ours), Some(theirs)) => {
                            match SrtpSession::new(ours.suite, &ours.key, &theirs.key) {
                                Ok(session) => Some(session),
                                Err(e) => {
                                    tracing::warn!("analog port {channel}: {e}; no media");
                                    return;
                                }
                            }
                        }
                        _ => None,
                    };
                    let start = StreamStart {
                        ssrc: rand::random(),
                        sequence: rand::random(),
                        timestamp: rand::random(),
                    };
                    tracing::info!(
                        "analog port {channel}: RTP {:?} to {}{}",
                        remote.format.law,
                        remote.addr,
                        srtp.as_ref().map_or(String::new(), |s| format!(
                            " as SRTP ({})",
                            s.suite().name()
                        ))
                    );
                    // New SDP in the same call (a re-INVITE) keeps what was latched unless
                    // it names another address.
                    let mut far_end = port.media.take().map_or_else(
                        || StrictSource::new(self.rtp_probation_packets),
                        |media| media.far_end,
                    );
                    far_end.signal(remote.addr);
                    port.media = Some(CallMedia {
                        session: MediaSession::new(remote.format, start),
                        far_end,
                        srtp,
                    });
                }
            }
            AgentAction::StopMedia(channel) => {
                if let Some(port) = self.ports.get_mut(&channel) {
                    if let Some(media) = port.media.take() {
                        tracing::info!(
                            "analog port {channel}: RTP stopped: {:?}; {} foreign packet(s) dropped since the port opened",
                            media.session.stats(),
                            port.foreign_dropped
                        );
                    }
                }
            }
        }
    }

    /// Every port's state, by channel.
    fn port_views(&self) -> Vec<PortView> {
        self.ports
            .iter()
            .map(|(&channel, port)| {
                let (kind, line_state, alarm) = match &port.driver {
                    Driver::Phone(driver) => ("phone", driver.state_name(), false),
                    Driver::Line(driver) => ("line", driver.state_name(), driver.in_alarm()),
                };
                PortView {
                    channel,
                    kind: kind.into(),
                    signalling: format!("{:?}", port.signalling).to_ascii_lowercase(),
                    line_state: line_state.into(),
                    alarm,
                    call: self.agent.call_state(channel).into(),
                    media_peer: port
                        .media
                        .as_ref()
                        .and_then(|m| m.far_end.destination())
                        .map(|addr| addr.to_string()),
                    srtp: port.media.as_ref().is_some_and(|m| m.srtp.is_some()),
                    foreign_dropped: port.foreign_dropped,
                }
            })
            .collect()
    }

    /// Carries out an operator command; returns the answer text.
    fn operate(&mut self, command: &Command) -> String {
        let Some(card) = self.card.clone() else {
            return "error: the operator interface acts on the emulated card only (this gateway runs on DAHDI)\n".into();
        };
        let channels: BTreeMap<u32, bool> = card.channels().into_iter().collect();
        let port = match command {
            Command::Ports => None,
            Command::Lift(p)
            | Command::HangUp(p)
            | Command::Flash(p)
            | Command::Dial(p, _)
            | Command::Pulse(p, _)
            | Command::Say(p, ..)
            | Command::Ring(p, ..)
            | Command::StopRing(p)
            | Command::BatteryDrop(p)
            | Command::Reverse(p)
            | Command::Busy(p)
            | Command::Status(p)
            | Command::Listen(p) => Some(*p),
        };
        let is_phone = match port.map(|p| (p, channels.get(&p))) {
            None => false,
            Some((p, None)) => return format!("error: no analog port {p}\n"),
            Some((_, Some(&phone))) => phone,
        };
        let needs_phone = matches!(
            command,
            Command::Lift(_)
                | Command::HangUp(_)
                | Command::Flash(_)
                | Command::Dial(..)
                | Command::Pulse(..)
        );
        let needs_line = matches!(
            command,
            Command::Ring(..)
                | Command::StopRing(_)
                | Command::BatteryDrop(_)
                | Command::Reverse(_)
                | Command::Busy(_)
        );
        if needs_phone && !is_phone {
            return "error: that is a line port; phone commands act on phone ports\n".into();
        }
        if needs_line && is_phone {
            return "error: that is a phone port; central office commands act on line ports\n"
                .into();
        }
        let mut answer = String::from("ok\n");
        match command {
            Command::Ports => {
                for (channel, phone) in channels {
                    let _ = writeln!(
                        answer,
                        "port{channel}={} {}",
                        if phone { "phone" } else { "line" },
                        if self.agent.is_busy(channel) {
                            "busy"
                        } else {
                            "idle"
                        }
                    );
                }
            }
            Command::Lift(p) => card.lift(*p),
            Command::HangUp(p) => card.hang_up(*p),
            Command::Flash(p) => card.flash(*p, 500),
            Command::Dial(p, digits) => card.dial_dtmf_digits(*p, digits, 80, 80),
            Command::Pulse(p, digits) => {
                for digit in digits.chars() {
                    card.dial_pulse(*p, digit);
                }
            }
            Command::Say(p, hz, ms) => {
                let amplitude = amplitude_for_dbm0(-10.0);
                let samples: Vec<i16> = (0..(*ms as usize * 8))
                    .map(|n| {
                        let t = n as f32 / 8000.0;
                        (amplitude * (std::f32::consts::TAU * hz * t).sin()) as i16
                    })
                    .collect();
                if is_phone {
                    card.speak(*p, &samples);
                } else {
                    card.co_send_audio(*p, &samples);
                }
            }
            Command::Ring(p, number, name) => {
                let id = CallerId {
                    number: number.clone(),
                    name: name.clone(),
                    ..CallerId::default()
                };
                card.co_ring(*p, (number.is_some() || name.is_some()).then_some(&id));
            }
            Command::StopRing(p) => card.co_stop_ringing(*p),
            Command::BatteryDrop(p) => {
                // Drop for 600 ms (kewlstart disconnect), restored later by the card.
                card.co_battery_drop(*p, 600);
            }
            Command::Reverse(p) => card.co_reverse_polarity(*p),
            Command::Busy(p) => card.co_busy_tone(*p),
            Command::Status(p) => {
                let call = if self.agent.is_busy(*p) {
                    "busy"
                } else {
                    "idle"
                };
                if is_phone {
                    let _ = write!(
                        answer,
                        "kind=phone\noff_hook={}\nringing={}\nbattery={}\ncall={call}\n",
                        card.off_hook(*p),
                        card.ringing(*p),
                        card.battery(*p)
                    );
                } else {
                    let _ = write!(
                        answer,
                        "kind=line\nloop_closed={}\ndigits={}\ncall={call}\n",
                        card.co_loop_closed(*p),
                        card.co_digits(*p)
                    );
                }
                if let Some(port) = self.ports.get(p) {
                    if let Driver::Phone(phone) = &port.driver {
                        let _ = writeln!(answer, "line_idle={}", phone.is_idle());
                    }
                    let _ = write!(
                        answer,
                        "rtp_local={}\nrtp_foreign_dropped={}\nsrtp_refused={}\nnon_rtp_dropped={}\n",
                        port.rtp, port.foreign_dropped, port.srtp_refused, port.non_rtp_dropped
                    );
                }
                if let Some(media) = self.ports.get(p).and_then(|port| port.media.as_ref()) {
                    let stats = media.session.stats();
                    if let Some(remote) = media.far_end.destination() {
                        let _ = writeln!(answer, "rtp_remote={remote}");
                    }
                    let _ = write!(
                        answer,
                        "rtp_sent={}\nrtp_received={}\nrtp_concealed={}\nrtp_resyncs={}\n",
                        stats.sent,
                        stats.jitter.received,
                        stats.jitter.concealed,
                        stats.jitter.resyncs
                    );
                }
            }
            Command::Listen(p) => {
                let heard = if is_phone {
                    card.take_heard(*p)
                } else {
                    card.co_take_heard(*p)
                };
                describe_heard(&heard, &mut answer);
            }
        }
        answer
    }
}

impl<C: Channel + RingAudio + 'static> Handler for Service<C> {
    type Command = ServiceInput;

    fn datagram(&mut self, _io: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]) {
        let line_now = self.now_ms();
        let Some(&channel) = self.socket_channels.get(socket) else {
            return;
        };
        let Some(port) = self.ports.get_mut(&channel) else {
            return;
        };
        let Some(media) = port.media.as_mut() else {
            port.foreign_dropped += 1; // no call: nobody may send
            return;
        };
        match media.far_end.admit(from, bytes) {
            Admission::Foreign => {
                port.foreign_dropped += 1;
                return;
            }
            Admission::Latched => {
                tracing::info!("analog port {channel}: RTP from {from} taken as the far end's")
            }
            Admission::Accepted => {}
        }
        if !is_rtp(bytes) {
            port.non_rtp_dropped += 1;
            return;
        }
        media.session.set_now(line_now);
        match media.srtp.as_mut().map(|srtp| srtp.unprotect(bytes)) {
            None => media.session.receive(bytes),
            Some(Ok(plain)) => media.session.receive(&plain),
            Some(Err(_)) => port.srtp_refused += 1,
        }
    }

    fn command(&mut self, _io: &mut Io, input: ServiceInput) {
        match input {
            ServiceInput::Sip(bytes) => self.agent.handle_datagram(Instant::now(), &bytes),
            ServiceInput::Control(request) => {
                let answer = self.operate(&request.command);
                let _ = request.answer.send(answer);
            }
            ServiceInput::Report(reply) => {
                let _ = reply.send(self.port_views());
            }
        }
        self.flush(Instant::now());
    }

    fn file_read(&mut self, _io: &mut Io, file: usize, data: Result<&[u8], i32>) {
        let Some(channel) = self.file_channels.get(file) else {
            return;
        };
        if let Some(port) = self.ports.get_mut(channel) {
            port.driver.channel_mut().ring_read(data);
        }
    }

    fn tick(&mut self, io: &mut Io, now: Instant) {
        if !self.files_attached {
            self.files_attached = true;
            self.attach_files(io);
        }
        if let Some(card) = &self.card {
            // Emulated time follows the wall clock, 1 ms steps.
            let behind = (self.started.elapsed().as_millis() as u64).saturating_sub(card.now_ms());
            card.advance(behind.min(1000));
        }
        self.step_ports(io, now);
        for port in self.ports.values_mut() {
            if let Some(file) = port.file {
                for block in port.driver.channel_mut().ring_writes() {
                    io.write_file(file, &block);
                }
            }
        }
        if self.agent.poll_timeout().is_some_and(|at| at <= now) {
            self.agent.handle_timeout(now);
        }
        self.flush(now);
    }
}

/// What a far end heard, as `key=value` lines: the strongest tone, DTMF digits, caller ID.
fn describe_heard(heard: &[i16], answer: &mut String) {
    let _ = writeln!(answer, "seconds={:.2}", heard.len() as f32 / 8000.0);
    // The tone measured is the last one heard: trailing silence is left out.
    let sounding = heard
        .iter()
        .rposition(|s| s.unsigned_abs() > 200)
        .map_or(0, |last| last + 1);
    if let Some(tone) = dominant_frequency(&heard[..sounding]) {
        let _ = write!(
            answer,
            "tone_hz={:.1}\ntone_dbm0={:.1}\n",
            tone.frequency_hz, tone.level_dbm0
        );
    }
    let digits = detect_digits(heard, DtmfThresholds::default());
    if !digits.is_empty() {
        let _ = writeln!(answer, "dtmf={digits}");
    }
    if let Ok(id) = decode_spill(&demodulate(Modem::Bell202, heard)) {
        let _ = write!(
            answer,
            "callerid_number={}\ncallerid_name={}\n",
            id.number.unwrap_or_default(),
            id.name.unwrap_or_default()
        );
    }
}

enum Notice {
    Phone(telephony_hw::line::phone_port::PhoneAction),
    Line(telephony_hw::line::line_port::LineAction),
}

/// Wraps a driver's notices for the agent.
fn notices<N>(
    result: Result<Vec<N>, ChannelError>,
    wrap: fn(N) -> Notice,
) -> Result<Vec<Notice>, ChannelError> {
    result.map(|list| list.into_iter().map(wrap).collect())
}

impl<C: Channel> Driver<C> {
    fn channel_mut(&mut self) -> &mut C {
        match self {
            Driver::Phone(driver) => driver.channel_mut(),
            Driver::Line(driver) => driver.channel_mut(),
        }
    }

    fn step(&mut self, now: u64, audio: &mut impl CallAudio) -> Result<Vec<Notice>, ChannelError> {
        match self {
            Driver::Phone(driver) => notices(driver.step(now, audio), Notice::Phone),
            Driver::Line(driver) => notices(driver.step(now, audio), Notice::Line),
        }
    }
}
