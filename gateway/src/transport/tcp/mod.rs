//! The stream transports on tokio, TCP and TLS: accepted and outgoing connections,
//! Content-Length framing, one writer task per connection. A TLS connection is a TCP one
//! with a handshake first (settings from [`super::tls::TlsServer`], current at each
//! handshake); from then on both are served alike, and share the connection caps.
//!
//! Defences ([`policy`] decides, this module acts): a connection over the per-source or
//! total cap is accepted and closed at once (so the backlog never fills and locks everyone
//! out); a message must be complete within the message timeout of its first byte; a
//! connection whose remote address holds no registration is closed when idle; a TLS
//! handshake must end within the message timeout; accept errors (EMFILE) back off
//! instead of spinning; a stream that cannot be framed gets its
//! 513 or 400 before it is closed; RFC 5626 CRLFCRLF pings get a CRLF pong. Repeated
//! events are logged at most once a second, with their count.

pub mod policy;

use super::addressing::canonical;
use super::tls::TlsServer;
use super::{Inbound, Peer, Protocol, Transport, TransportError};
use crate::sip::framing::{Framed, StreamFramer};
use bytes::Bytes;
use policy::{Admission, ConnectionTimers, Expiry, RateLimitedLog, TcpLimits};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Queued writes per connection before further sends are dropped.
const WRITE_QUEUE: usize = 256;
/// Bytes read from a socket at once. Each open connection holds a buffer this size for
/// its whole life (a registered phone's stays open while idle), so it is kept small: a SIP
/// message is a few hundred bytes to a few KB, and a larger one takes a few reads
/// (bench `tls-memory`: 16 KB made a TCP connection cost 19.9 KB, a TLS one 27.6 KB).
const READ_SIZE: usize = 4 * 1024;
/// First pause after a failed accept; doubled on each further failure up to the maximum.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accepts while they fail.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a rejected stream's input is still read (and discarded) after its answer, so
/// the close is a FIN after the answer rather than a reset that could destroy it.
const LINGER: Duration = Duration::from_secs(2);
/// Repeated events (refusals, accept failures, timeouts) are logged at most this often.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How the TCP transport is run.
#[derive(Debug, Clone, Copy)]
pub struct TcpSettings {
    /// Timeouts and caps.
    pub limits: TcpLimits,
    /// Largest message accepted (`sip.max_message_size`).
    pub max_message_size: usize,
}

/// The TCP and TLS listeners serving SIP, plus the table of open connections by protocol
/// and remote address.
pub struct TcpTransport {
    shared: Arc<Shared>,
}

/// A connection's key in the table: TCP and TLS connections are told apart.
type ConnectionKey = (Protocol, SocketAddr);

/// The listeners the transport serves: TCP, TLS or both.
#[derive(Default)]
pub struct Listeners {
    /// The TCP listener.
    pub tcp: Option<TcpListener>,
    /// The TLS listener and its settings.
    pub tls: Option<(TcpListener, Arc<TlsServer>)>,
    /// The other nodes' TLS addresses (`[node] transport = "tls"`): the only ones the
    /// gateway opens TLS connections to (mutual TLS). Phones are reached over their own.
    pub tls_peers: HashSet<SocketAddr>,
}

/// What the accept loop, the connection tasks and [`TcpTransport`] share.
struct Shared {
    settings: TcpSettings,
    /// The listening addresses: a connection's local address, as the core names it, has
    /// its listener's port (an outgoing connection's own port is ephemeral, and Via must
    /// name the listener).
    tcp_local: Option<SocketAddr>,
    tls_local: Option<SocketAddr>,
    /// The TLS settings, when TLS is served.
    tls: Option<Arc<TlsServer>>,
    /// Where TLS connections may be opened to ([`Listeners::tls_peers`]).
    tls_peers: HashSet<SocketAddr>,
    inbound: mpsc::Sender<Inbound>,
    state: Mutex<State>,
    /// The runtime the connections run on: sends come from the engine's thread, outside it.
    runtime: tokio::runtime::Handle,
}

/// The transport's mutable state; it owns the connection table and the admission counts.
struct State {
    connections: HashMap<ConnectionKey, Connection>,
    /// Peers holding a registration (told by the runtime from the registrar).
    registered: HashSet<ConnectionKey>,
    admission: Admission,
    /// Connections closed by a timeout, for the rate-limited log line.
    expired: RateLimitedLog,
    /// Failed TLS handshakes, for the rate-limited log line.
    handshakes_failed: RateLimitedLog,
    /// Messages for a TLS peer without a connection (dropped), for the log line.
    unreachable: RateLimitedLog,
    next_id: u64,
}

/// An open connection as the table holds it.
struct Connection {
    /// Distinguishes it from a later connection with the same remote address.
    id: u64,
    writer: mpsc::Sender<Bytes>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("tcp state lock poisoned")
    }
}

impl TcpTransport {
    /// Listens for TCP on `addr` and starts accepting connections.
    pub async fn bind(
        addr: SocketAddr,
        inbound: mpsc::Sender<Inbound>,
        settings: TcpSettings,
    ) -> std::io::Result<Self> {
        let listeners = Listeners {
            tcp: Some(listen(addr)?),
            ..Listeners::default()
        };
        Self::start(listeners, inbound, settings)
    }

    /// Starts accepting connections on the listeners.
    pub fn start(
        listeners: Listeners,
        inbound: mpsc::Sender<Inbound>,
        settings: TcpSettings,
    ) -> std::io::Result<Self> {
        let tcp_local = listeners
            .tcp
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let tls_local = match &listeners.tls {
            Some((listener, _)) => Some(listener.local_addr()?),
            None => None,
        };
        let shared = Arc::new(Shared {
            settings,
            tcp_local,
            tls_local,
            tls: listeners.tls.as_ref().map(|(_, tls)| tls.clone()),
            tls_peers: listeners.tls_peers,
            inbound,
            runtime: tokio::runtime::Handle::current(),
            state: Mutex::new(State {
                connections: HashMap::new(),
                registered: HashSet::new(),
                admission: Admission::new(&settings.limits),
                expired: RateLimitedLog::new(LOG_INTERVAL),
                handshakes_failed: RateLimitedLog::new(LOG_INTERVAL),
                unreachable: RateLimitedLog::new(LOG_INTERVAL),
                next_id: 0,
            }),
        });
        if let Some(listener) = listeners.tcp {
            tokio::spawn(accept_loop(listener, Protocol::Tcp, shared.clone()));
        }
        if let Some((listener, _)) = listeners.tls {
            tokio::spawn(accept_loop(listener, Protocol::Tls, shared.clone()));
        }
        Ok(TcpTransport { shared })
    }

    /// The address the listener of `protocol` (TCP or TLS) listens on, if it is served.
    pub fn local_addr(&self, protocol: Protocol) -> Option<SocketAddr> {
        self.shared.listener(protocol)
    }

    /// Open connections: (TCP, TLS).
    pub fn connections(&self) -> (usize, usize) {
        let state = self.shared.state();
        let tls = state
            .connections
            .keys()
            .filter(|(protocol, _)| *protocol == Protocol::Tls)
            .count();
        (state.connections.len() - tls, tls)
    }

    /// Records whether `peer` holds a registration: an idle connection from a registered
    /// phone stays open, the others are closed after the idle timeout.
    pub fn set_registered(&self, peer: Peer, registered: bool) {
        let key = (peer.protocol, peer.addr);
        let mut state = self.shared.state();
        if registered {
            state.registered.insert(key);
        } else {
            state.registered.remove(&key);
        }
    }
}

impl Shared {
    /// The listening address of `protocol`'s listener.
    fn listener(&self, protocol: Protocol) -> Option<SocketAddr> {
        match protocol {
            Protocol::Tcp => self.tcp_local,
            Protocol::Tls => self.tls_local,
            Protocol::Udp | Protocol::Internal => None,
        }
    }
}

/// Connections waiting to be accepted, at most.
const BACKLOG: usize = 1024;

/// A listener on `addr`; on `[::]` dual stack (`IPV6_V6ONLY` off: IPv4 clients connect
/// too, as v4-mapped addresses), like the UDP socket.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let fd = socket::socket(family, SockType::Stream, flags, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    }
    use std::os::fd::AsRawFd;
    socket::bind(fd.as_raw_fd(), &socket::SockaddrStorage::from(addr))?;
    socket::listen(
        &fd,
        Backlog::new(BACKLOG as i32).unwrap_or(Backlog::MAXCONN),
    )?;
    TcpListener::from_std(std::net::TcpListener::from(fd))
}

/// Accepts connections until the process ends: admitted ones get their tasks (after a
/// handshake, for TLS), refused ones are closed at once, failures back off.
async fn accept_loop(listener: TcpListener, protocol: Protocol, shared: Arc<Shared>) {
    let name = protocol.uri_param();
    let mut refused = RateLimitedLog::new(LOG_INTERVAL);
    let mut failed = RateLimitedLog::new(LOG_INTERVAL);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let remote = canonical(remote);
                backoff = ACCEPT_BACKOFF_MIN;
                let (admitted, open) = {
                    let mut state = shared.state();
                    (state.admission.admit(remote.ip()), state.admission.open())
                };
                match (admitted, protocol) {
                    (Ok(()), Protocol::Tls) => {
                        tokio::spawn(handshake(stream, remote, shared.clone()));
                    }
                    (Ok(()), _) => {
                        start_connection(stream, remote, protocol, &shared);
                    }
                    (Err(refusal), _) => {
                        drop(stream); // closed at once: the client sees EOF, not a hang
                        if let Some(count) = refused.record(Instant::now()) {
                            tracing::warn!(
                                "{name}: refused {} connection(s) since the last report ({} in \
                                 all, {open} open), the last from {remote}: {refusal}",
                                count.since_last,
                                count.total
                            );
                        }
                    }
                }
            }
            Err(e) => {
                if let Some(count) = failed.record(Instant::now()) {
                    tracing::warn!(
                        "{name} accept failed {} time(s) since the last report ({} in all): {e}; \
                         pausing accepts for {backoff:?} (if out of descriptors: lower \
                         tcp.max_connections or raise the hard descriptor limit)",
                        count.since_last,
                        count.total
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Runs the TLS handshake of an admitted connection, within the message timeout, then
/// serves it; a failed one gives its admission back and is logged at most once a second.
async fn handshake(stream: TcpStream, remote: SocketAddr, shared: Arc<Shared>) {
    let settings = shared
        .tls
        .as_ref()
        .expect("a TLS listener has settings")
        .current();
    let acceptor = tokio_rustls::TlsAcceptor::from(settings);
    let local = local_of(&stream, Protocol::Tls, &shared);
    let timeout = shared.settings.limits.message_timeout;
    let failure = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            start_connection_at(stream, remote, local, Protocol::Tls, &shared);
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no handshake within {timeout:?} (tcp.message_timeout_secs)"),
    };
    let mut state = shared.state();
    state.admission.release(remote.ip());
    if let Some(count) = state.handshakes_failed.record(Instant::now()) {
        tracing::info!(
            "tls: {} handshake(s) failed since the last report ({} in all), the last from \
             {remote}: {failure}",
            count.since_last,
            count.total
        );
    }
}

/// Opens a TLS connection to another node (its certificate checked against `tls.client_ca`
/// for its IP address, ours presented), within the message timeout, and sends `bytes`.
async fn connect_tls(shared: Arc<Shared>, addr: SocketAddr, bytes: Bytes) {
    let Some(client) = shared.tls.as_ref().and_then(|tls| tls.client()) else {
        tracing::warn!("tls: no tls.client_ca to check node {addr} against; message dropped");
        return;
    };
    let timeout = shared.settings.limits.message_timeout;
    let connected = tokio::time::timeout(timeout, async {
        let stream = TcpStream::connect(addr).await?;
        let local = local_of(&stream, Protocol::Tls, &shared);
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let stream = tokio_rustls::TlsConnector::from(client)
            .connect(name, stream)
            .await?;
        Ok::<_, std::io::Error>((stream, local))
    })
    .await;
    match connected {
        Ok(Ok((stream, local))) => {
            tracing::info!("tls: connected to node {addr} (its certificate checked)");
            shared.state().admission.add(addr.ip());
            let writer = start_connection_at(stream, addr, local, Protocol::Tls, &shared);
            let _ = writer.send(bytes).await;
        }
        Ok(Err(e)) => tracing::warn!("tls connect to node {addr} failed: {e}"),
        Err(_) => tracing::warn!("tls connect to node {addr}: no handshake within {timeout:?}"),
    }
}

/// Holds a connection's place in the table and in the admission counts; gives both back
/// when dropped.
struct Slot {
    shared: Arc<Shared>,
    protocol: Protocol,
    remote: SocketAddr,
    /// The connection's local address (the gateway's address the peer reaches).
    local: SocketAddr,
    id: u64,
}

impl Slot {
    /// Takes the connection out of the table, so no more sends are queued for it.
    fn detach(&self) {
        let key = (self.protocol, self.remote);
        let mut state = self.shared.state();
        if state.connections.get(&key).is_some_and(|c| c.id == self.id) {
            state.connections.remove(&key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.detach();
        self.shared.state().admission.release(self.remote.ip());
    }
}

/// The gateway's address a connection reaches as the core names it: the connection's
/// local IP with its listener's port. Switches Nagle off on the way.
fn local_of(stream: &TcpStream, protocol: Protocol, shared: &Shared) -> SocketAddr {
    let _ = stream.set_nodelay(true);
    let local_ip = stream
        .local_addr()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |addr| {
            canonical(addr).ip()
        });
    let port = shared.listener(protocol).map_or(0, |addr| addr.port());
    SocketAddr::new(local_ip, port)
}

/// Starts the reader and writer tasks of a TCP connection already counted in the
/// admission.
fn start_connection(
    stream: TcpStream,
    remote: SocketAddr,
    protocol: Protocol,
    shared: &Arc<Shared>,
) -> mpsc::Sender<Bytes> {
    let local = local_of(&stream, protocol, shared);
    start_connection_at(stream, remote, local, protocol, shared)
}

/// Starts the reader and writer tasks of a connection (TCP, or TLS after its handshake)
/// already counted in the admission; `local` is the gateway's address it reaches.
fn start_connection_at<S>(
    stream: S,
    remote: SocketAddr,
    local: SocketAddr,
    protocol: Protocol,
    shared: &Arc<Shared>,
) -> mpsc::Sender<Bytes>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let id = {
        let mut state = shared.state();
        state.next_id += 1;
        let id = state.next_id;
        state.connections.insert(
            (protocol, remote),
            Connection {
                id,
                writer: tx.clone(),
            },
        );
        id
    };
    let slot = Slot {
        shared: shared.clone(),
        protocol,
        remote,
        local,
        id,
    };
    let reader_tx = tx.clone();
    tokio::spawn(async move {
        let mut reader = reader;
        let end = read_loop(&mut reader, &reader_tx, &slot).await;
        // Dropping the last sender ends the writer task once it has written what is
        // queued (a 513/400 included), which then closes the socket.
        slot.detach();
        drop(reader_tx);
        match end {
            End::Rejected { answered: true } => linger(&mut reader).await,
            End::Rejected { answered: false } => {}
            End::Expired(expiry) => {
                let count = slot.shared.state().expired.record(Instant::now());
                if let Some(count) = count {
                    tracing::info!(
                        "{}: closed {} connection(s) for timeouts since the last report \
                         ({} in all), the last from {remote}: {expiry}",
                        protocol.uri_param(),
                        count.since_last,
                        count.total
                    );
                }
            }
            End::Closed => {}
        }
    });
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    tx
}

/// How a connection's reading ended.
enum End {
    /// The peer closed it, it failed, or the gateway is stopping.
    Closed,
    /// It could not be framed; `answered` if its 513/400 is queued.
    Rejected {
        /// Whether an answer was queued (then the peer is given time to read it).
        answered: bool,
    },
    /// A timeout of the policy.
    Expired(Expiry),
}

/// Reads, frames and delivers messages until the connection ends.
async fn read_loop(
    reader: &mut (impl AsyncRead + Unpin),
    writer: &mpsc::Sender<Bytes>,
    slot: &Slot,
) -> End {
    let shared = &slot.shared;
    let peer = Peer {
        protocol: slot.protocol,
        addr: slot.remote,
        local: slot.local,
    };
    let mut framer = StreamFramer::new(shared.settings.max_message_size);
    let mut timers = ConnectionTimers::new(Instant::now(), &shared.settings.limits);
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        let deadline = tokio::time::Instant::from_std(timers.deadline());
        let n = tokio::select! {
            read = reader.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return End::Closed,
                Ok(n) => n,
            },
            () = tokio::time::sleep_until(deadline) => {
                let registered = shared.state().registered.contains(&(peer.protocol, peer.addr));
                if let Some(expiry) = timers.on_deadline(Instant::now(), registered) {
                    return End::Expired(expiry);
                }
                continue;
            }
        };
        framer.push(&buffer[..n]);
        let mut completed = false;
        loop {
            match framer.next_message() {
                Ok(Framed::NeedMore) => break,
                Ok(Framed::Ping) => {
                    let _ = writer.try_send(Bytes::from_static(b"\r\n"));
                }
                Ok(Framed::Message(message)) => {
                    completed = true;
                    let delivered = shared.inbound.send(Inbound::Message { peer, message });
                    if delivered.await.is_err() {
                        return End::Closed;
                    }
                }
                Err(error) => {
                    let answered = match error.answer() {
                        Some(answer) => writer.try_send(answer.to_bytes()).is_ok(),
                        None => false,
                    };
                    let _ = shared
                        .inbound
                        .send(Inbound::StreamGarbage { peer, error })
                        .await;
                    return End::Rejected { answered };
                }
            }
        }
        timers.on_read(Instant::now(), completed, framer.in_message());
    }
}

/// Reads and discards what a rejected peer still sends, until it closes or [`LINGER`]
/// passes.
async fn linger(reader: &mut (impl AsyncRead + Unpin)) {
    let mut sink = vec![0u8; READ_SIZE];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

impl Transport for TcpTransport {
    fn send(&self, peer: Peer, bytes: Bytes) -> Result<(), TransportError> {
        let addr = peer.addr;
        let existing = self
            .shared
            .state()
            .connections
            .get(&(peer.protocol, addr))
            .map(|c| c.writer.clone());
        match existing {
            Some(writer) => {
                if writer.try_send(bytes).is_err() {
                    tracing::warn!(
                        "{} write queue to {addr} full or closed; message dropped",
                        peer.protocol.uri_param()
                    );
                }
            }
            None if peer.protocol == Protocol::Tls && self.shared.tls_peers.contains(&addr) => {
                let shared = self.shared.clone();
                self.shared.runtime.spawn(connect_tls(shared, addr, bytes));
            }
            None if peer.protocol == Protocol::Tls => {
                // A phone over TLS is reached over its own connection only: the gateway
                // opens TLS connections to the other nodes alone, and never falls back to a
                // clear transport.
                let mut state = self.shared.state();
                if let Some(count) = state.unreachable.record(Instant::now()) {
                    tracing::warn!(
                        "tls: {} message(s) dropped since the last report ({} in all) for \
                         peers without a TLS connection, the last for {addr} (a phone \
                         registered over TLS is reached over its own connection; it \
                         reconnects and registers again)",
                        count.since_last,
                        count.total
                    );
                }
            }
            None => {
                // No connection (e.g. the phone reconnected): open one, as RFC 3261 §18.1.1 says.
                let shared = self.shared.clone();
                self.shared.runtime.spawn(async move {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            shared.state().admission.add(addr.ip());
                            let writer = start_connection(stream, addr, Protocol::Tcp, &shared);
                            let _ = writer.send(bytes).await;
                        }
                        Err(e) => tracing::warn!("tcp connect to {addr} failed: {e}"),
                    }
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
