//! Transports: how SIP bytes enter and leave the gateway.
//!
//! The SIP core never touches sockets. It sees [`Peer`]s (protocol, remote address, and the
//! local address the peer reaches the gateway at) and hands [`Outgoing`] bytes to whatever
//! implements the transport: UDP on a fast path worker (or a tokio socket when the fast
//! path is off), a TCP listener. On a socket bound to every address (`0.0.0.0`, `[::]`) the
//! local address is each datagram's destination, and replies leave from it
//! ([`addressing`]).

use bytes::Bytes;
use std::net::SocketAddr;

/// Kernel buffer asked for on the SIP UDP socket: all SIP traffic arrives on one socket,
/// and at thousands of calls per second a few milliseconds without its thread overflow the
/// default 208 KiB. Kamailio raises its buffer the same way.
const SIP_UDP_BUFFER: usize = 4 << 20;

/// Enlarges the SIP UDP socket's buffers, saying so when the kernel grants less.
fn enlarge_sip_buffers(socket: &impl std::os::fd::AsFd, addr: SocketAddr) {
    match ::fastpath::udp::enlarge_buffers(socket, SIP_UDP_BUFFER) {
        Ok(granted) if granted < SIP_UDP_BUFFER => tracing::info!(
            "udp {addr}: receive buffer {granted} bytes (asked {SIP_UDP_BUFFER}); raise \
             net.core.rmem_max for bursts of thousands of calls per second"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("udp {addr}: receive buffer not enlarged: {e}"),
    }
}

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// UDP: unreliable, the transaction layer retransmits.
    Udp,
    /// TCP: reliable stream, no retransmissions, Content-Length framing.
    Tcp,
    /// TLS over TCP: framed like TCP; a peer that reached the gateway over TLS is only
    /// ever answered and reached over its own TLS connection, never in clear.
    Tls,
    /// The in-process link to the analog ports' user agent (`crate::analog`): messages
    /// pass as values over a channel, reliably and in order.
    Internal,
}

impl Protocol {
    /// Reliable transports switch off retransmission timers (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Tls | Protocol::Internal)
    }

    /// Stream transports: connections, framing, the `[tcp]` caps.
    pub fn is_stream(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Tls)
    }

    /// The transport token in a Via header.
    pub fn via_token(self) -> &'static str {
        match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Internal => "INTERNAL",
        }
    }

    /// The `transport=` URI parameter value.
    pub fn uri_param(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::Internal => "internal",
        }
    }
}

/// The far end of a message: protocol and address (for TCP and TLS, the connection's
/// remote address), and the gateway's address it talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Remote address (IPv4 peers of a dual-stack socket as IPv4, never v4-mapped).
    pub addr: SocketAddr,
    /// The gateway's address this peer reaches: where its datagram arrived (the
    /// destination, on a socket bound to every address) or its connection's local address.
    /// Messages to the peer leave from it, and the Via, Contact and SDP the gateway writes
    /// for it name it (unless `sip.advertise` / `media.advertise` say otherwise).
    /// Unspecified when not known (then the listen address is named, and the kernel
    /// chooses the source).
    pub local: SocketAddr,
}

/// The analog ports' user agent as the SIP core sees it (the addresses are not used).
pub const ANALOG_PEER: Peer = Peer {
    protocol: Protocol::Internal,
    addr: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0),
    local: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0),
};

/// Bytes the SIP core wants sent.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where to.
    pub peer: Peer,
    /// A whole serialised message.
    pub bytes: Bytes,
}

pub mod addressing;
pub mod bind;
pub mod fastpath;
pub mod mtu;
pub mod tcp;
pub mod tls;
pub mod udp;

/// What a transport delivers to the SIP core.
#[derive(Debug)]
pub enum Inbound {
    /// A datagram, not yet parsed (UDP).
    Datagram {
        /// Sender.
        peer: Peer,
        /// The datagram's bytes.
        bytes: Bytes,
    },
    /// A message already framed out of a stream (TCP, TLS).
    Message {
        /// Sender (the connection's remote address).
        peer: Peer,
        /// The framed message (boxed: messages are large, datagrams are not).
        message: Box<crate::sip::message::SipMessage>,
    },
    /// A stream sent bytes that cannot be framed; the transport wrote the error's answer,
    /// if any, and closed the connection.
    StreamGarbage {
        /// The offending peer.
        peer: Peer,
        /// What was wrong.
        error: crate::sip::framing::FrameError,
    },
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The transport's worker has stopped (shutdown or a fatal socket error).
    #[error("{0} transport is not running")]
    Closed(&'static str),
}

/// A SIP transport as the core's runtime sees it: a non-blocking send, and inbound messages
/// pushed into the [`Inbound`] channel given at start. The UDP path of the io_uring fastpath
/// will implement this trait too, so the SIP core does not change when it arrives.
pub trait Transport: Send + Sync {
    /// Queues bytes for `peer` (its address, from its local address where the transport
    /// can choose). Never blocks the caller.
    fn send(&self, peer: Peer, bytes: Bytes) -> Result<(), TransportError>;
    /// Starts sending what [`Transport::send`] queued, for transports that hand datagrams
    /// to another thread in batches (one wake-up per batch, not per datagram).
    fn flush(&self) {}
}

/// A shared transport is a transport (the runtime keeps the fast path's for its counters).
impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn send(&self, peer: Peer, bytes: Bytes) -> Result<(), TransportError> {
        self.as_ref().send(peer, bytes)
    }

    fn flush(&self) {
        self.as_ref().flush()
    }
}
