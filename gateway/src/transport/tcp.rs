//! TCP transport on tokio: accepted and outgoing connections, Content-Length framing,
//! one writer task per connection. A peer that sends garbage is disconnected.

use super::{Inbound, Peer, Protocol, Transport, TransportError};
use crate::sip::framing::{Framed, StreamFramer};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Queued writes per connection before further sends are dropped.
const WRITE_QUEUE: usize = 256;

type Writers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>;

/// A TCP listener serving SIP, plus the table of open connections by remote address.
pub struct TcpTransport {
    writers: Writers,
    inbound: mpsc::Sender<Inbound>,
    local: SocketAddr,
}

impl TcpTransport {
    /// Listens on `addr` and starts accepting connections.
    pub async fn bind(addr: SocketAddr, inbound: mpsc::Sender<Inbound>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let writers: Writers = Arc::default();
        let (accept_writers, accept_inbound) = (writers.clone(), inbound.clone());
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, remote)) => {
                        start_connection(stream, remote, &accept_writers, &accept_inbound);
                    }
                    Err(e) => {
                        tracing::warn!("tcp accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(TcpTransport {
            writers,
            inbound,
            local,
        })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

fn start_connection(
    stream: TcpStream,
    remote: SocketAddr,
    writers: &Writers,
    inbound: &mpsc::Sender<Inbound>,
) -> mpsc::Sender<Bytes> {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    writers
        .lock()
        .expect("writers lock poisoned")
        .insert(remote, tx.clone());
    let peer = Peer {
        protocol: Protocol::Tcp,
        addr: remote,
    };
    let (reader_writers, inbound) = (writers.clone(), inbound.clone());
    tokio::spawn(async move {
        let mut framer = StreamFramer::new();
        let mut buffer = vec![0u8; 16 * 1024];
        'read: loop {
            let n = match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            framer.push(&buffer[..n]);
            loop {
                match framer.next_message() {
                    Ok(Framed::NeedMore) => break,
                    Ok(Framed::Message(message)) => {
                        if inbound
                            .send(Inbound::Message { peer, message })
                            .await
                            .is_err()
                        {
                            break 'read;
                        }
                    }
                    Err(error) => {
                        let _ = inbound.send(Inbound::StreamGarbage { peer, error }).await;
                        break 'read;
                    }
                }
            }
        }
        // Dropping the sender ends the writer task, which closes the socket.
        reader_writers
            .lock()
            .expect("writers lock poisoned")
            .remove(&remote);
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

impl Transport for TcpTransport {
    fn protocol(&self) -> Protocol {
        Protocol::Tcp
    }

    fn send(&self, addr: SocketAddr, bytes: Bytes) -> Result<(), TransportError> {
        let existing = self
            .writers
            .lock()
            .expect("writers lock poisoned")
            .get(&addr)
            .cloned();
        match existing {
            Some(writer) => {
                if writer.try_send(bytes).is_err() {
                    tracing::warn!("tcp write queue to {addr} full or closed; message dropped");
                }
            }
            None => {
                // No connection (e.g. the phone reconnected): open one, as RFC 3261 §18.1.1 says.
                let (writers, inbound) = (self.writers.clone(), self.inbound.clone());
                tokio::spawn(async move {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            let writer = start_connection(stream, addr, &writers, &inbound);
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
