//! UDP transport on tokio: one socket, a receive task, and sends straight on the socket.

use super::{Inbound, Peer, Protocol, Transport, TransportError};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Largest datagram read; bigger ones are truncated by the kernel and then fail to parse.
const RECV_BUFFER: usize = 65_536;

/// A bound UDP socket serving SIP.
pub struct UdpTransport {
    socket: Arc<UdpSocket>,
}

impl UdpTransport {
    /// Binds `addr` and starts the receive task, which pushes datagrams into `inbound`.
    pub async fn bind(addr: SocketAddr, inbound: mpsc::Sender<Inbound>) -> std::io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(addr).await?);
        super::enlarge_sip_buffers(&*socket, addr);
        let receiver = socket.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; RECV_BUFFER];
            loop {
                match receiver.recv_from(&mut buffer).await {
                    Ok((len, from)) => {
                        let datagram = Inbound::Datagram {
                            peer: Peer {
                                protocol: Protocol::Udp,
                                addr: from,
                            },
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
        Ok(UdpTransport { socket })
    }

    /// The bound address (useful when binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl Transport for UdpTransport {
    fn protocol(&self) -> Protocol {
        Protocol::Udp
    }

    fn send(&self, addr: SocketAddr, bytes: Bytes) -> Result<(), TransportError> {
        match self.socket.try_send_to(&bytes, addr) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // The socket buffer is full: hand the datagram to a task instead of blocking.
                let socket = self.socket.clone();
                tokio::spawn(async move {
                    if let Err(e) = socket.send_to(&bytes, addr).await {
                        tracing::warn!("udp send to {addr} failed: {e}");
                    }
                });
                Ok(())
            }
            Err(e) => {
                // A lost datagram is what UDP does; the transaction layer retransmits.
                tracing::debug!("udp send to {addr} failed: {e}");
                Ok(())
            }
        }
    }
}
