//! SIP over UDP on the fast path: a `fastpath` worker owns the socket, pre-parses each
//! datagram on its own thread (malformed ones are dropped and counted there, never reaching
//! the control plane), and hands bytes, keys and source to the control plane through a
//! crossbeam queue per shard, chosen by Call-ID. The control plane's sends go back through
//! the worker's ring.

use super::{Inbound, Peer, Protocol, Transport, TransportError};
use crate::config::FastpathConfig;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use fastpath::preparse::{preparse, shard_of, PreParseError};
use fastpath::udp::{BackendKind, Io, SendHandle, Worker, WorkerConfig};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Drops logged one by one before only every thousandth is.
const LOGGED_DROPS: u64 = 10;

/// The control plane's end of the shard queues.
pub struct ShardReceivers {
    receivers: Vec<Receiver<Inbound>>,
    notify: Arc<Notify>,
}

impl ShardReceivers {
    /// Waits until some shard may have messages.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Takes the next message of any shard.
    pub fn try_recv(&self) -> Option<Inbound> {
        self.receivers.iter().find_map(|r| r.try_recv().ok())
    }
}

/// The worker's end: one queue per control-plane shard.
struct ShardSenders {
    senders: Vec<Sender<Inbound>>,
    notify: Arc<Notify>,
}

/// `shards` queues from the fast path to the control plane.
fn shard_queues(shards: usize) -> (ShardSenders, ShardReceivers) {
    let notify = Arc::new(Notify::new());
    let (senders, receivers) = (0..shards.max(1))
        .map(|_| crossbeam_channel::unbounded())
        .unzip();
    (
        ShardSenders {
            senders,
            notify: notify.clone(),
        },
        ShardReceivers { receivers, notify },
    )
}

/// UDP SIP served by a fast path worker.
pub struct FastpathUdpTransport {
    worker: Worker<std::convert::Infallible>,
    sender: SendHandle<std::convert::Infallible>,
    malformed: Arc<AtomicU64>,
}

impl FastpathUdpTransport {
    /// Binds `addr` and starts the worker; messages come out of the returned receivers.
    pub fn bind(
        addr: SocketAddr,
        config: &FastpathConfig,
        shards: usize,
    ) -> Result<(FastpathUdpTransport, ShardReceivers), FastpathBindError> {
        let socket = UdpSocket::bind(addr).map_err(FastpathBindError::Bind)?;
        super::enlarge_sip_buffers(&socket, addr);
        let (queues, receivers) = shard_queues(shards);
        let malformed = Arc::new(AtomicU64::new(0));
        let counter = malformed.clone();
        let handler = move |_: &mut Io, _socket: usize, from: SocketAddr, bytes: &[u8]| {
            if bytes.iter().all(|&b| b == b'\r' || b == b'\n' || b == 0) {
                return; // keep-alive
            }
            let shard = match preparse(bytes) {
                Ok(keys) => shard_of(keys.call_id, queues.senders.len()),
                // A request without a usable Call-ID or CSeq still gets its 400 from the
                // control plane (any shard will do: it belongs to no call).
                Err(PreParseError::CallId | PreParseError::CSeq) if !bytes.starts_with(b"SIP/") => {
                    0
                }
                Err(error) => {
                    let dropped = counter.fetch_add(1, Ordering::Relaxed) + 1;
                    if dropped <= LOGGED_DROPS || dropped % 1000 == 0 {
                        tracing::warn!(
                            "fast path dropped a malformed datagram from {from} ({error}; {dropped} so far)"
                        );
                    }
                    return;
                }
            };
            let inbound = Inbound::Datagram {
                peer: Peer {
                    protocol: Protocol::Udp,
                    addr: from,
                },
                bytes: Bytes::copy_from_slice(bytes),
            };
            if queues.senders[shard].send(inbound).is_ok() {
                queues.notify.notify_one();
            }
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
                malformed,
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

    /// The worker's counters (received, sent, dropped sends, truncated datagrams).
    pub fn stats(&self) -> &fastpath::udp::WorkerStats {
        self.worker.stats()
    }
}

impl Transport for FastpathUdpTransport {
    fn protocol(&self) -> Protocol {
        Protocol::Udp
    }

    fn send(&self, addr: SocketAddr, bytes: Bytes) -> Result<(), TransportError> {
        if self.sender.send(0, addr, bytes.to_vec()) {
            Ok(())
        } else {
            Err(TransportError::Closed("udp (fast path)"))
        }
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
