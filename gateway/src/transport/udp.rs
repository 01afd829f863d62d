//! UDP transport on tokio: one socket, a receive task, and sends straight on the socket.
//! Like the fast path, a socket bound to every address learns each datagram's destination
//! and answers from it ([`super::addressing`]).

use super::addressing::Addressing;
use super::{Inbound, Peer, Transport, TransportError};
use bytes::Bytes;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Largest datagram read; bigger ones are truncated by the kernel and then fail to parse.
const RECV_BUFFER: usize = 65_536;

/// A bound UDP socket serving SIP.
pub struct UdpTransport {
    socket: Arc<UdpSocket>,
    addressing: Addressing,
    /// The runtime the socket is registered with: sends come from the engine's thread.
    runtime: tokio::runtime::Handle,
}

impl UdpTransport {
    /// Binds `addr` (every address of both families for `[::]`, see
    /// [`fastpath::udp::bind`]) and starts the receive task, which pushes datagrams into
    /// `inbound`.
    pub async fn bind(addr: SocketAddr, inbound: mpsc::Sender<Inbound>) -> std::io::Result<Self> {
        let std_socket = fastpath::udp::bind(addr)?;
        std_socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        super::enlarge_sip_buffers(&*socket, addr);
        let addressing = Addressing::new(socket.local_addr()?);
        let receiver = socket.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; RECV_BUFFER];
            loop {
                let received = receiver
                    .async_io(Interest::READABLE, || {
                        fastpath::udp::recv_from_to(&*receiver, &mut buffer)
                    })
                    .await;
                match received {
                    Ok((len, from, to)) => {
                        let datagram = Inbound::Datagram {
                            peer: addressing.peer(from, to),
                            bytes: Bytes::copy_from_slice(&buffer[..len]),
                        };
                        if inbound.send(datagram).await.is_err() {
                            return;
                        }
                    }
                    // ICMP port-unreachable from an earlier send surfaces here on Linux; ignore.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => {
                        tracing::error!("udp receive failed: {e}; udp transport stops");
                        return;
                    }
                }
            }
        });
        Ok(UdpTransport {
            socket,
            addressing,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The bound address (useful when binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Sends one datagram from `from` (None: the kernel's choice) without waiting.
fn try_send(
    socket: &UdpSocket,
    from: Option<IpAddr>,
    to: SocketAddr,
    bytes: &[u8],
) -> std::io::Result<usize> {
    socket.try_io(Interest::WRITABLE, || {
        fastpath::udp::send_from_to(socket, from, to, bytes)
    })
}

impl Transport for UdpTransport {
    fn send(&self, peer: Peer, bytes: Bytes) -> Result<(), TransportError> {
        let (from, to) = (self.addressing.source(&peer), peer.addr);
        match try_send(&self.socket, from, to, &bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // The socket buffer is full: hand the datagram to a task instead of blocking.
                let socket = self.socket.clone();
                self.runtime.spawn(async move {
                    let sent = socket
                        .async_io(Interest::WRITABLE, || {
                            fastpath::udp::send_from_to(&*socket, from, to, &bytes)
                        })
                        .await;
                    if let Err(e) = sent {
                        tracing::warn!("udp send to {to} failed: {e}");
                    }
                });
                Ok(())
            }
            Err(e) => {
                // A lost datagram is what UDP does; the transaction layer retransmits.
                tracing::debug!("udp send to {to} failed: {e}");
                Ok(())
            }
        }
    }
}
