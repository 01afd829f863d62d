//! SIP capture (`[trace]`): every SIP message the gateway receives or sends over UDP, TCP
//! or TLS (as its clear text), written to a rotating pcap file ([`pcap`], [`packet`]) and
//! or sent as HEP3 to a Homer collector ([`hep`]). The engine shards hand each message to
//! a bounded queue and go on; one thread writes. When the queue is full the message is
//! dropped from the capture and counted, never waited for: capture must not slow calls.

pub mod hep;
pub mod packet;
pub mod pcap;

use crate::config::TraceConfig;
use crate::transport::{Peer, Protocol};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

/// Messages waiting for the capture thread, at most.
const QUEUE: usize = 8192;
/// TCP flows whose sequence numbers are followed, at most (then they start again).
const FLOWS: usize = 65_536;

/// Why the capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The pcap file cannot be written.
    #[error("trace.pcap {path}: {source} (is the directory writable by the gateway?)")]
    Pcap {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No socket for HEP.
    #[error("trace.hep {collector}: cannot open a UDP socket: {source}")]
    Hep {
        /// The collector.
        collector: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One message seen.
struct Captured {
    at: SystemTime,
    protocol: Protocol,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Bytes,
}

/// Where the shards hand what they see (cheap to clone; off: does nothing).
#[derive(Clone, Default)]
pub struct Tracer {
    queue: Option<Sender<Captured>>,
    dropped: Arc<AtomicU64>,
    listen: Option<SocketAddr>,
}

impl Tracer {
    /// A tracer that captures nothing.
    pub fn off() -> Tracer {
        Tracer::default()
    }

    /// Whether messages are captured.
    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    /// Messages dropped from the capture because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The gateway's side of `peer` (its listen address when the local one is unknown).
    fn local(&self, peer: &Peer) -> SocketAddr {
        match (peer.local.ip().is_unspecified(), self.listen) {
            (true, Some(listen)) => listen,
            _ => peer.local,
        }
    }

    fn capture(&self, protocol: Protocol, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let Some(queue) = &self.queue else {
            return;
        };
        if protocol == Protocol::Internal {
            return;
        }
        let captured = Captured {
            at: SystemTime::now(),
            protocol,
            from,
            to,
            bytes: Bytes::copy_from_slice(bytes),
        };
        if let Err(TrySendError::Full(_)) = queue.try_send(captured) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped == 1 || dropped % 10_000 == 0 {
                tracing::warn!(
                    "SIP capture: queue full, {dropped} message(s) left out of the capture so far"
                );
            }
        }
    }

    /// A message `peer` sent the gateway.
    pub fn received(&self, peer: &Peer, bytes: &[u8]) {
        self.capture(peer.protocol, peer.addr, self.local(peer), bytes);
    }

    /// A message the gateway sent `peer`.
    pub fn sent(&self, peer: &Peer, bytes: &[u8]) {
        self.capture(peer.protocol, self.local(peer), peer.addr, bytes);
    }
}

/// The running capture: its tracer and the thread that writes.
pub struct Capture {
    tracer: Tracer,
    thread: Option<JoinHandle<()>>,
}

/// Where the capture thread writes.
struct Sinks {
    pcap: Option<pcap::RotatingPcap>,
    hep: Option<(UdpSocket, SocketAddr, hep::Agent)>,
    /// The next sequence number of each TCP direction.
    flows: HashMap<(SocketAddr, SocketAddr), u32>,
}

impl Sinks {
    fn write(&mut self, message: &Captured) {
        if let Some(file) = &mut self.pcap {
            let carrier = match message.protocol {
                Protocol::Udp => packet::Carrier::Udp,
                _ => {
                    if self.flows.len() >= FLOWS {
                        self.flows.clear();
                    }
                    let next = self.flows.entry((message.from, message.to)).or_insert(1);
                    let sequence = *next;
                    *next = next.wrapping_add(message.bytes.len() as u32);
                    packet::Carrier::Tcp { sequence }
                }
            };
            if let Some(ip) = packet::ip_packet(carrier, message.from, message.to, &message.bytes) {
                if let Err(e) = file.write(message.at, &ip) {
                    tracing::error!(
                        "SIP capture: writing the pcap file failed ({e}); pcap capture stops"
                    );
                    self.pcap = None;
                }
            }
        }
        if let Some((socket, collector, agent)) = &self.hep {
            let protocol = match message.protocol {
                Protocol::Udp => 17,
                _ => 6,
            };
            if let Some(hep) = hep::encode(
                agent,
                message.at,
                protocol,
                message.from,
                message.to,
                &message.bytes,
            ) {
                let _ = socket.send_to(&hep, *collector);
            }
        }
    }

    fn run(mut self, queue: Receiver<Captured>) {
        while let Ok(first) = queue.recv() {
            self.write(&first);
            for message in queue.try_iter() {
                self.write(&message);
            }
            if let Some(file) = &mut self.pcap {
                let _ = file.flush();
            }
        }
    }
}

impl Capture {
    /// Starts the capture `[trace]` asks for (a tracer that does nothing when it asks for
    /// none); `listen` names the gateway's side when a message's local address is unknown.
    pub fn start(config: &TraceConfig, listen: SocketAddr) -> Result<Capture, TraceError> {
        if config.pcap.is_none() && config.hep.is_none() {
            return Ok(Capture {
                tracer: Tracer::off(),
                thread: None,
            });
        }
        let pcap = match &config.pcap {
            Some(path) => Some(
                pcap::RotatingPcap::open(
                    path,
                    config.pcap_max_megabytes.saturating_mul(1_000_000),
                    config.pcap_files,
                )
                .map_err(|source| TraceError::Pcap {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let hep = match config.hep {
            Some(collector) => {
                let bind: SocketAddr = match collector {
                    SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
                    SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let socket = UdpSocket::bind(bind)
                    .map_err(|source| TraceError::Hep { collector, source })?;
                let agent = hep::Agent {
                    id: config.hep_capture_id,
                    password: config.hep_password.clone(),
                };
                Some((socket, collector, agent))
            }
            None => None,
        };
        let (queue, messages) = crossbeam_channel::bounded(QUEUE);
        let sinks = Sinks {
            pcap,
            hep,
            flows: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("sip-capture".into())
            .spawn(move || sinks.run(messages))
            .map_err(|source| TraceError::Pcap {
                path: config.pcap.clone().unwrap_or_default(),
                source,
            })?;
        Ok(Capture {
            tracer: Tracer {
                queue: Some(queue),
                dropped: Arc::default(),
                listen: Some(listen),
            },
            thread: Some(thread),
        })
    }

    /// The tracer the shards get.
    pub fn tracer(&self) -> Tracer {
        self.tracer.clone()
    }
}

impl Drop for Capture {
    /// Waits for the thread to write what is queued (once every tracer is gone).
    fn drop(&mut self) {
        self.tracer = Tracer::off();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
