//! SIP over UDP on the fast path: a `fastpath` worker owns the socket, pre-parses each
//! datagram on its own thread (malformed ones are dropped and counted there, never reaching
//! the control plane, except broken requests it can still answer with 400), and hands
//! bytes, keys and source to the control plane through a crossbeam queue per shard, chosen
//! by Call-ID. The control plane's sends go back through the worker's ring.

use super::addressing::Addressing;
use super::{Peer, Protocol, Transport, TransportError};
use crate::config::FastpathConfig;
use crate::overload::{class_of, Class};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use fastpath::preparse::{preparse, shard_of, PreParseError};
use fastpath::udp::{BackendKind, Handler, Io, SendHandle, Worker, WorkerConfig, WorkerFailure};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

/// Drops logged one by one before only every thousandth is.
const LOGGED_DROPS: u64 = 10;

/// A datagram waiting for the control plane.
#[derive(Debug)]
pub struct Queued {
    /// Its sender.
    pub peer: Peer,
    /// Its bytes.
    pub bytes: Bytes,
    /// When the fast path received it (how long it waited decides whether it is served).
    pub received: Instant,
    /// How urgent it is.
    pub class: Class,
}

/// The control plane's end of the shard queues.
pub struct ShardReceivers {
    priority: Vec<Receiver<Queued>>,
    answering: Vec<Receiver<Queued>>,
    new: Vec<Receiver<Queued>>,
    notify: Arc<Notify>,
}

impl ShardReceivers {
    /// Waits until some shard may have messages.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Takes the next message of any shard: priority messages first, then requests
    /// answering a challenge, then new ones.
    pub fn try_recv(&self) -> Option<Queued> {
        self.all().find_map(|r| r.try_recv().ok())
    }

    fn all(&self) -> impl Iterator<Item = &Receiver<Queued>> {
        self.priority.iter().chain(&self.answering).chain(&self.new)
    }

    /// Makes the next [`ShardReceivers::ready`] return at once (messages were left queued
    /// so that sends and timers could run in between).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.all().all(Receiver::is_empty)
    }
}

/// The worker's end: per control-plane shard, a queue per class.
pub(crate) struct ShardSenders {
    priority: Vec<Sender<Queued>>,
    answering: Vec<Sender<Queued>>,
    new: Vec<Sender<Queued>>,
    notify: Arc<Notify>,
}

impl ShardSenders {
    /// Queues a datagram for `shard` in its class's queue; a full queue drops it and
    /// counts it in `drops` (logged one by one at first, then every thousandth).
    pub(crate) fn push(&self, shard: usize, queued: Queued, drops: &QueueDrops) {
        let (queues, dropped) = match queued.class {
            Class::Priority => (&self.priority, &drops.priority),
            Class::Answering => (&self.answering, &drops.new),
            Class::New => (&self.new, &drops.new),
        };
        let queue = &queues[shard % queues.len()];
        let (class, from) = (queued.class, queued.peer.addr);
        match queue.try_send(queued) {
            Ok(()) => self.notify.notify_one(),
            Err(_) => {
                let dropped = dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped <= LOGGED_DROPS || dropped % 1000 == 0 {
                    tracing::warn!(
                        "fast path queue to the control plane full: {class:?} datagram from {from} dropped ({dropped} so far)"
                    );
                }
            }
        }
    }
}

/// `shards` sets of queues (one per class) of `capacity` each from the fast path to the
/// control plane.
pub(crate) fn shard_queues(shards: usize, capacity: usize) -> (ShardSenders, ShardReceivers) {
    let notify = Arc::new(Notify::new());
    let queues = |_| crossbeam_channel::bounded(capacity.max(1));
    let (priority, priority_rx) = (0..shards.max(1)).map(queues).unzip();
    let (answering, answering_rx) = (0..shards.max(1)).map(queues).unzip();
    let (new, new_rx) = (0..shards.max(1)).map(queues).unzip();
    (
        ShardSenders {
            priority,
            answering,
            new,
            notify: notify.clone(),
        },
        ShardReceivers {
            priority: priority_rx,
            answering: answering_rx,
            new: new_rx,
            notify,
        },
    )
}

/// What the fast path does with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Triage {
    /// CRLFs or NULs only (RFC 5626 / NAT keep-alive): nothing to do.
    KeepAlive,
    /// Hand it to the control plane: `shard`'s queue for `class`.
    Queue {
        /// The control-plane shard (by Call-ID).
        shard: usize,
        /// Its overload class.
        class: Class,
    },
    /// Not SIP the control plane could act on: dropped and counted.
    Drop(PreParseError),
}

/// Pre-parses a datagram and decides where it goes. A request the pre-parser cannot key
/// but the control plane can still answer (a malformed request line, Call-ID or CSeq:
/// [`PreParseError::answerable`]) goes to shard 0 as a new request, so it gets its 400
/// (stateless, never larger than the request) instead of silence; it belongs to no call.
fn triage(bytes: &[u8], shards: usize) -> Triage {
    if bytes.iter().all(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Triage::KeepAlive;
    }
    match preparse(bytes) {
        Ok(keys) => Triage::Queue {
            shard: shard_of(keys.call_id, shards),
            class: class_of(&keys),
        },
        Err(error) if error.answerable() && !bytes.starts_with(b"SIP/") => Triage::Queue {
            shard: 0,
            class: Class::New,
        },
        Err(error) => Triage::Drop(error),
    }
}

/// Datagrams the fast path dropped because a queue to the control plane was full.
#[derive(Debug, Default)]
pub struct QueueDrops {
    /// Priority messages dropped.
    pub priority: AtomicU64,
    /// New requests (answering a challenge or not) dropped.
    pub new: AtomicU64,
}

/// The worker's handler: triage, then the shard queue.
struct SipHandler {
    queues: ShardSenders,
    addressing: Addressing,
    malformed: Arc<AtomicU64>,
    drops: Arc<QueueDrops>,
}

impl Handler for SipHandler {
    type Command = std::convert::Infallible;

    fn datagram(&mut self, io: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]) {
        self.datagram_to(io, socket, from, None, bytes);
    }

    fn datagram_to(
        &mut self,
        _: &mut Io,
        _: usize,
        from: SocketAddr,
        to: Option<IpAddr>,
        bytes: &[u8],
    ) {
        let (shard, class) = match triage(bytes, self.queues.priority.len()) {
            Triage::KeepAlive => return,
            Triage::Queue { shard, class } => (shard, class),
            Triage::Drop(error) => {
                let dropped = self.malformed.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped <= LOGGED_DROPS || dropped % 1000 == 0 {
                    tracing::warn!(
                        "fast path dropped a malformed datagram from {from} ({error}; {dropped} so far)"
                    );
                }
                return;
            }
        };
        let queued = Queued {
            peer: self.addressing.peer(from, to),
            bytes: Bytes::copy_from_slice(bytes),
            received: Instant::now(),
            class,
        };
        self.queues.push(shard, queued, &self.drops);
    }

    fn command(&mut self, _: &mut Io, command: Self::Command) {
        match command {}
    }
}

/// UDP SIP served by a fast path worker.
pub struct FastpathUdpTransport {
    worker: Worker<std::convert::Infallible>,
    sender: SendHandle<std::convert::Infallible>,
    addressing: Addressing,
    malformed: Arc<AtomicU64>,
    queue_drops: Arc<QueueDrops>,
}

impl FastpathUdpTransport {
    /// Binds `addr` (every address of both families for `[::]`, see
    /// [`fastpath::udp::bind`]) and starts the worker; messages come out of the returned
    /// receivers, whose queues hold `queue_capacity` datagrams per class and shard.
    pub fn bind(
        addr: SocketAddr,
        config: &FastpathConfig,
        (shards, queue_capacity): (usize, usize),
    ) -> Result<(FastpathUdpTransport, ShardReceivers), FastpathBindError> {
        let socket = fastpath::udp::bind(addr).map_err(FastpathBindError::Bind)?;
        super::enlarge_sip_buffers(&socket, addr);
        let bound = socket.local_addr().map_err(FastpathBindError::Bind)?;
        let addressing = Addressing::new(bound);
        let (queues, receivers) = shard_queues(shards, queue_capacity);
        let malformed = Arc::new(AtomicU64::new(0));
        let queue_drops = Arc::new(QueueDrops::default());
        let handler = SipHandler {
            queues,
            addressing,
            malformed: malformed.clone(),
            drops: queue_drops.clone(),
        };
        let mut worker_config = WorkerConfig::sip("sip-fastpath");
        worker_config.core = config.cores.first().copied();
        worker_config.backend = config.backend.worker_backend();
        let worker = Worker::spawn(worker_config, vec![socket], handler)
            .map_err(FastpathBindError::Worker)?;
        Ok((
            FastpathUdpTransport {
                sender: worker.sender(),
                worker,
                addressing,
                malformed,
                queue_drops,
            },
            receivers,
        ))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.worker.local_addrs()[0]
    }

    /// The backend serving the socket.
    pub fn backend(&self) -> BackendKind {
        self.worker.backend()
    }

    /// Why io_uring was not used, if `auto` fell back.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.worker.fallback_reason()
    }

    /// Datagrams dropped on the fast path as malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Datagrams dropped because a queue to the control plane was full.
    pub fn queue_drops(&self) -> &QueueDrops {
        &self.queue_drops
    }

    /// The worker's counters (received, sent, dropped sends, truncated datagrams).
    pub fn stats(&self) -> &fastpath::udp::WorkerStats {
        self.worker.stats()
    }

    /// Calls `report` if the worker stops by itself (the socket is no longer served).
    pub fn on_failure(&self, report: impl FnOnce(WorkerFailure) + Send + 'static) {
        self.worker.on_failure(report);
    }
}

impl Transport for FastpathUdpTransport {
    fn protocol(&self) -> Protocol {
        Protocol::Udp
    }

    fn send(&self, peer: Peer, bytes: Bytes) -> Result<(), TransportError> {
        let from = self.addressing.source(&peer);
        if self.sender.queue_from(0, from, peer.addr, bytes.to_vec()) {
            Ok(())
        } else {
            Err(TransportError::Closed("udp (fast path)"))
        }
    }

    fn flush(&self) {
        self.sender.flush();
    }
}

/// Why the fast path could not serve the socket.
#[derive(Debug, thiserror::Error)]
pub enum FastpathBindError {
    /// The socket could not be bound.
    #[error("{0}")]
    Bind(std::io::Error),
    /// The worker could not start.
    #[error("{0}")]
    Worker(fastpath::udp::FastpathError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADERS: &str = "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
To: <sip:b@h>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn broken_requests_reach_the_control_plane_for_their_400() {
        let new_request = Triage::Queue {
            shard: 0,
            class: Class::New,
        };
        let lwsruri = include_bytes!("../../tests/fixtures/rfc4475/lwsruri.dat");
        assert_eq!(triage(lwsruri, 4), new_request, "RFC 4475 §3.1.2.8");
        for line in [" sip:x SIP/2.0", "OPTIONS sip:a b SIP/2.0"] {
            let text = format!("{line}\r\n{HEADERS}");
            assert_eq!(triage(text.as_bytes(), 4), new_request, "{line:?}");
        }
        let no_call_id = format!(
            "OPTIONS sip:x SIP/2.0\r\n{}",
            HEADERS.replace("Call-ID: c1\r\n", "")
        );
        assert_eq!(triage(no_call_id.as_bytes(), 4), new_request);
    }

    /// A request answering its challenge, left for the next turn, keeps the queues
    /// non-empty: the control plane wakes for it at once instead of with the next datagram.
    #[test]
    fn requests_answering_a_challenge_count_as_queued() {
        let (senders, receivers) = shard_queues(1, 8);
        assert!(receivers.is_empty());
        let queued = Queued {
            peer: Peer {
                protocol: Protocol::Udp,
                addr: "192.0.2.1:5060".parse().unwrap(),
                local: "192.0.2.9:5060".parse().unwrap(),
            },
            bytes: Bytes::from_static(HEADERS.as_bytes()),
            received: Instant::now(),
            class: Class::Answering,
        };
        senders.push(0, queued, &QueueDrops::default());
        assert!(!receivers.is_empty(), "an answering request is waiting");
        assert!(receivers.try_recv().is_some());
        assert!(receivers.is_empty());
    }

    #[test]
    fn garbage_responses_and_keep_alives_are_not_queued() {
        assert_eq!(triage(b"\r\n\r\n", 4), Triage::KeepAlive);
        assert_eq!(
            triage(b"hello world\r\n\r\n", 4),
            Triage::Drop(PreParseError::StartLine)
        );
        let response = format!(
            "SIP/2.0 200 OK\r\n{}",
            HEADERS.replace("Call-ID: c1\r\n", "")
        );
        assert_eq!(
            triage(response.as_bytes(), 4),
            Triage::Drop(PreParseError::CallId),
            "a broken response is never answered"
        );
        let ok = format!("OPTIONS sip:x SIP/2.0\r\n{HEADERS}");
        assert!(matches!(
            triage(ok.as_bytes(), 4),
            Triage::Queue {
                class: Class::Priority | Class::New,
                ..
            }
        ));
    }
}
