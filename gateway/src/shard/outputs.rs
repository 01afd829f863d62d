//! Where a shard's engine output goes: relay commands to the media relay, datagrams into
//! the shard's own ring (or the tokio UDP socket when the fast path is off), stream
//! messages to the TCP transport, the analog ports' messages to their service, source
//! changes to the TCP policy, store commands to the store thread, notices to the other
//! shards.

use crate::analog::service::AnalogService;
use crate::engine::shard::ShardOutput;
use crate::engine::Engine;
use crate::relay::MediaRelay;
use crate::store::StoreWriter;
use crate::transport::addressing::Addressing;
use crate::transport::tcp::TcpTransport;
use crate::transport::{Protocol, Transport};
use fastpath::udp::Io;
use std::sync::Arc;

/// How the shard sends UDP.
pub enum UdpOut {
    /// Through the shard worker's own socket (number 0), from the address the peer reached.
    Ring(Addressing),
    /// Through a transport served elsewhere (`fastpath.backend = "off"`).
    Transport(Arc<dyn Transport>),
    /// No UDP transport configured.
    None,
}

/// The shard's outputs.
pub struct Outputs {
    /// The media relay, when media is anchored.
    pub relay: Option<Arc<MediaRelay>>,
    /// UDP.
    pub udp: UdpOut,
    /// TCP, when configured.
    pub tcp: Option<Arc<TcpTransport>>,
    /// The analog ports, when configured.
    pub analog: Option<Arc<AnalogService>>,
    /// The store thread.
    pub writer: Arc<StoreWriter>,
    /// Store commands of this turn, handed over together by [`Outputs::flush_store`].
    pub store_commands: Vec<crate::store::StoreCommand>,
    /// The other shards.
    pub peers: super::peers::Peers,
    /// SIP capture (`[trace]`).
    pub tracer: crate::trace::Tracer,
}

impl Outputs {
    /// Hands on everything the engine has queued; datagrams for the ring go out at the
    /// end of the worker's turn.
    pub fn drain(&mut self, engine: &mut Engine, io: &mut Io) {
        // Relay ports first: the SDP about to be sent names them.
        while let Some(command) = engine.poll_media_command() {
            match &self.relay {
                Some(relay) => relay.apply(command),
                None => tracing::warn!("media command without a relay: {command:?}"),
            }
        }
        while let Some(out) = engine.poll_transmit() {
            self.tracer.sent(&out.peer, &out.bytes);
            let transport: Option<&dyn Transport> = match (out.peer.protocol, &self.udp) {
                (Protocol::Udp, UdpOut::Ring(addressing)) => {
                    io.send_from(0, addressing.source(&out.peer), out.peer.addr, &out.bytes);
                    continue;
                }
                (Protocol::Udp, UdpOut::Transport(udp)) => Some(udp.as_ref()),
                (Protocol::Udp, UdpOut::None) => None,
                (Protocol::Tcp | Protocol::Tls, _) => {
                    self.tcp.as_deref().map(|t| t as &dyn Transport)
                }
                (Protocol::Internal, _) => {
                    match &self.analog {
                        Some(service) => service.send_sip(out.bytes),
                        None => tracing::warn!("no analog ports: message for them dropped"),
                    }
                    continue;
                }
            };
            match transport {
                Some(transport) => {
                    if let Err(e) = transport.send(out.peer, out.bytes) {
                        tracing::warn!("send to {} failed: {e}", out.peer.addr);
                    }
                }
                None => tracing::warn!(
                    "no {} transport configured to reach {}",
                    out.peer.protocol.via_token(),
                    out.peer.addr
                ),
            }
        }
        if let UdpOut::Transport(udp) = &self.udp {
            udp.flush();
        }
        while let Some(change) = engine.poll_source_change() {
            if let Some(tcp) = &self.tcp {
                tcp.set_registered(change.peer, change.registered);
            }
        }
        self.store_commands
            .extend(std::iter::from_fn(|| engine.poll_store_command()));
        let from = engine.shard().index();
        while let Some(output) = engine.poll_shard_output() {
            match output {
                ShardOutput::Notice(notice) => self
                    .peers
                    .broadcast(from, || super::ShardCommand::Notice(notice.clone())),
                ShardOutput::To(shard, message) => {
                    self.peers
                        .send(shard, super::ShardCommand::Message(message));
                }
                ShardOutput::Route { call_id, shard } => self.peers.routes().set(call_id, shard),
            }
        }
    }

    /// Hands the store thread the commands queued since the last call, together (one
    /// wake-up of the store thread per worker turn, not per command).
    pub fn flush_store(&mut self) {
        self.writer
            .send_all(std::mem::take(&mut self.store_commands));
    }
}
