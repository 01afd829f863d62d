//! The shards' queues to one another: a datagram one shard's socket received for another
//! shard's call, what a shard tells all the others (bindings), and where input from
//! outside the workers (TCP, the analog ports, the store) goes: each message to the shard
//! its Call-ID, or the number in a store answer, names.

use super::queues::Queued;
use super::routes::CallRoutes;
use super::ShardCommand;
use crate::engine::shard::{ResultFor, ShardId};
use crate::store::StoreResult;
use crate::transport::Inbound;
use crossbeam_channel::{Receiver, Sender};
use fastpath::udp::SendHandle;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The answers of the shards [`Peers::ask_every`] asked.
pub struct Answers<T> {
    replies: Receiver<T>,
    asked: usize,
    shards: usize,
}

impl<T> Answers<T> {
    /// The answers that came by `deadline` (a shard that stopped was not asked).
    pub fn until(self, deadline: Instant) -> Vec<T> {
        (0..self.asked)
            .map_while(|_| self.replies.recv_deadline(deadline).ok())
            .collect()
    }

    /// Whether every shard was asked and answered by `deadline`.
    pub fn all_by(self, deadline: Instant) -> bool {
        let shards = self.shards;
        self.asked == shards && self.until(deadline).len() == shards
    }
}

/// Every shard's queue, shared by the shards and the threads that feed them.
#[derive(Clone)]
pub struct Peers {
    shards: Arc<[Peer]>,
    /// Forwarded datagrams that may wait for one shard.
    capacity: usize,
    /// Call-IDs routed to a shard other than their hash's.
    routes: CallRoutes,
}

struct Peer {
    queue: SendHandle<ShardCommand>,
    /// Datagrams handed to this shard by the others and not yet taken in: bounded, so a
    /// flood one shard receives cannot pile up unbounded on its way to another.
    in_flight: AtomicUsize,
    dropped: AtomicU64,
    /// Datagrams handed to this shard by the others (received on their sockets).
    handed: AtomicU64,
}

impl Peers {
    /// The shards behind these queues (shard `i` is `queues[i]`); at most `capacity`
    /// forwarded datagrams wait for each.
    pub fn new(queues: Vec<SendHandle<ShardCommand>>, capacity: usize) -> Peers {
        let shards = queues
            .into_iter()
            .map(|queue| Peer {
                queue,
                in_flight: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                handed: AtomicU64::new(0),
            })
            .collect::<Vec<_>>();
        Peers {
            shards: shards.into(),
            capacity,
            routes: CallRoutes::default(),
        }
    }

    /// The Call-IDs routed to a shard other than their hash's.
    pub fn routes(&self) -> &CallRoutes {
        &self.routes
    }

    /// How many shards there are.
    pub fn count(&self) -> usize {
        self.shards.len()
    }

    /// Asks every shard with the command `ask` makes around a reply handle (the operator's
    /// status, the watchdog's ping); the answers come in on the returned [`Answers`].
    pub fn ask_every<T>(&self, ask: impl Fn(Sender<T>) -> ShardCommand) -> Answers<T> {
        let (reply, replies) = crossbeam_channel::bounded(self.count().max(1));
        let asked = (0..self.count())
            .filter(|&shard| self.send(shard, ask(reply.clone())))
            .count();
        Answers {
            replies,
            asked,
            shards: self.count(),
        }
    }

    /// Hands `command` to shard `shard`; false when it has stopped.
    pub fn send(&self, shard: usize, command: ShardCommand) -> bool {
        self.shards
            .get(shard)
            .is_some_and(|peer| peer.queue.command(command))
    }

    /// Hands shard `shard` a datagram received elsewhere; false (and counted) when too
    /// many wait for it already.
    pub fn forward(&self, shard: usize, datagram: Queued) -> bool {
        let Some(peer) = self.shards.get(shard) else {
            return false;
        };
        if peer.in_flight.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            peer.in_flight.fetch_sub(1, Ordering::Relaxed);
            peer.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        peer.handed.fetch_add(1, Ordering::Relaxed);
        peer.queue.command(ShardCommand::Datagram(datagram))
    }

    /// Shard `shard` took in a forwarded datagram.
    pub fn took_forwarded(&self, shard: usize) {
        if let Some(peer) = self.shards.get(shard) {
            peer.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Forwarded datagrams dropped on their way to shard `shard`.
    pub fn forward_drops(&self, shard: usize) -> u64 {
        self.shards
            .get(shard)
            .map_or(0, |peer| peer.dropped.load(Ordering::Relaxed))
    }

    /// Datagrams other shards received for shard `shard` and handed to it.
    pub fn handed_to(&self, shard: usize) -> u64 {
        self.shards
            .get(shard)
            .map_or(0, |peer| peer.handed.load(Ordering::Relaxed))
    }

    /// Hands every shard but `from` a copy of `command`.
    pub fn broadcast(&self, from: usize, command: impl Fn() -> ShardCommand) {
        for (at, peer) in self.shards.iter().enumerate() {
            if at != from {
                peer.queue.command(command());
            }
        }
    }

    /// The shard a message from outside the workers goes to: its Call-ID's (a stream that
    /// cannot be framed has none: the first shard counts it).
    pub fn shard_of_inbound(&self, message: &Inbound) -> usize {
        let shard = self.any();
        match message {
            Inbound::Datagram { bytes, .. } => {
                match crate::transport::fastpath::triage(bytes, self.count(), &self.routes) {
                    crate::transport::fastpath::Triage::Queue { shard, .. } => shard,
                    _ => 0,
                }
            }
            Inbound::Message { message, .. } => message.call_id().map_or(0, |call_id| {
                self.routes
                    .route(call_id)
                    .unwrap_or_else(|| shard.of_call_id(call_id))
            }),
            Inbound::StreamGarbage { .. } => 0,
        }
    }

    /// Hands a store answer to the shard waiting for it, or a copy to each shard
    /// ([`ShardId::of_result`]).
    pub fn deliver_result(&self, result: StoreResult) {
        match self.any().of_result(&result) {
            ResultFor::Shard(shard) => {
                let _ = self.send(shard, ShardCommand::Store(result));
            }
            ResultFor::Every => {
                for shard in 1..self.count() {
                    let _ = self.send(shard, ShardCommand::Store(result.clone()));
                }
                let _ = self.send(0, ShardCommand::Store(result));
            }
        }
    }

    /// A shard of this many (for the numbering rules, which depend on the count only).
    fn any(&self) -> ShardId {
        ShardId::new(0, self.count().max(1)).unwrap_or_default()
    }
}
