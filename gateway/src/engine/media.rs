//! Media anchoring, sans-IO: for an anchored call the engine takes two port pairs from the
//! configured range (one each side sends to), rewrites every SDP body crossing the call so
//! each side sends its RTP to the gateway, and tells the runtime to install a relay on the
//! fast path (`MediaCommand`). The relay's counters come back when it ends and go into the
//! call's CDR.

use super::call::Side;
use super::local::LocalIdentity;
use super::{Engine, Now};
use crate::config::AnchorMode;
use crate::store::StoreCommand;
use crate::transport::{Peer, Protocol};
use bytes::Bytes;
use fastpath::relay::LegReport;
use rand::rngs::StdRng;
use rand::RngExt;
use sdp_types::{Connection, Session};
use std::net::{IpAddr, SocketAddr};

/// The caller's offer as sent to `peer` on side B: when the call is anchored, it names
/// the relay at the address SDP names for `peer` (the caller's copy was named for the
/// caller's local address, and a fork may leave from another).
pub(super) fn offer_for(
    local: &LocalIdentity,
    anchor: Option<Anchor>,
    offer: &Bytes,
    peer: Peer,
) -> Bytes {
    anchor
        .and_then(|anchor| rewrite(offer, local.media_ip(peer), anchor.b_port))
        .unwrap_or_else(|| offer.clone())
}

/// What the runtime must do on the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// Bind the two port pairs and relay between them.
    Install {
        /// The relay's number.
        relay: u64,
        /// The port side A (the caller) sends to; RTCP on the next.
        a_port: u16,
        /// The port side B (callee or picker) sends to.
        b_port: u16,
    },
    /// SDP named a side's media address (leg 0: A, leg 1: B).
    SetPeer {
        /// The relay.
        relay: u64,
        /// 0 or 1.
        leg: usize,
        /// Its RTP address.
        peer: SocketAddr,
    },
    /// The call ended: stop relaying (the counters come back through
    /// [`Engine::handle_media_ended`]).
    Remove {
        /// The relay.
        relay: u64,
    },
}

/// A call's anchoring.
#[derive(Debug, Clone, Copy)]
pub(super) struct Anchor {
    pub(super) relay: u64,
    pub(super) a_port: u16,
    pub(super) b_port: u16,
}

/// The relay's port pairs (RTP on an even port, RTCP on the next) in the configured range,
/// handed out at random so that the port of a call cannot be guessed from an earlier one
/// (RTP Bleed scanners start next to a port they know), and taken back when the call ends.
/// The draw comes from a seeded generator: the same seed replays the same ports.
#[derive(Debug)]
pub(super) struct PortPool {
    /// The first pair's RTP port (even).
    first: u16,
    /// Whether each pair is handed out, by index from `first` (pair `i` is `first + 2i`).
    taken: Vec<bool>,
    /// Pairs not handed out.
    free: usize,
    rng: StdRng,
}

/// Shard `shard`'s part of the media port range `min..=max`: the range cut into equal runs
/// of whole pairs, one per shard (the relay is shared, so no two shards may hand out the
/// same pair). A range too small for every shard to have a pair leaves the last ones none.
pub(super) fn shard_ports(min: u16, max: u16, shard: super::shard::ShardId) -> (u16, u16) {
    let first = u32::from(min) + u32::from(min) % 2;
    let pairs = (u32::from(max) + 1).saturating_sub(first) / 2;
    let count = shard.count() as u32;
    let each = pairs / count;
    let extra = pairs % count;
    let index = shard.index() as u32;
    let start = index * each + index.min(extra);
    let mine = each + u32::from(index < extra);
    let low = first + 2 * start;
    let high = (low + 2 * mine).saturating_sub(1);
    let clamp = |port: u32| u16::try_from(port).unwrap_or(u16::MAX);
    if mine == 0 {
        return (clamp(low), clamp(low).saturating_sub(1));
    }
    (clamp(low), clamp(high))
}

/// Random draws before an allocation looks for a free pair by counting: with few pairs
/// taken the first draw nearly always hits one.
const DRAWS_BEFORE_COUNTING: usize = 16;

impl PortPool {
    /// The pairs whose two ports lie in `min..=max`, drawn with `rng`.
    pub(super) fn new(min: u16, max: u16, rng: StdRng) -> PortPool {
        let first = u32::from(min) + u32::from(min) % 2;
        let pairs = (u32::from(max) + 1).saturating_sub(first) / 2;
        PortPool {
            first: u16::try_from(first).unwrap_or(u16::MAX),
            taken: vec![false; pairs as usize],
            free: pairs as usize,
            rng,
        }
    }

    /// A free pair's RTP port, chosen uniformly among the free pairs; None when every pair
    /// is handed out.
    pub(super) fn allocate(&mut self) -> Option<u16> {
        if self.free == 0 {
            return None;
        }
        let pairs = self.taken.len();
        let drawn = (0..DRAWS_BEFORE_COUNTING)
            .map(|_| self.rng.random_range(0..pairs))
            .find(|&pair| !self.taken[pair]);
        let pair = drawn.or_else(|| {
            let nth = self.rng.random_range(0..self.free);
            (0..pairs).filter(|&pair| !self.taken[pair]).nth(nth)
        })?;
        self.taken[pair] = true;
        self.free -= 1;
        Some(self.port_of(pair))
    }

    /// `port`'s pair may be handed out again (a port not handed out is ignored).
    pub(super) fn release(&mut self, port: u16) {
        let Some(pair) = port
            .checked_sub(self.first)
            .filter(|offset| offset % 2 == 0)
            .map(|offset| usize::from(offset / 2))
        else {
            return;
        };
        if let Some(taken) = self.taken.get_mut(pair).filter(|taken| **taken) {
            *taken = false;
            self.free += 1;
        }
    }

    fn port_of(&self, pair: usize) -> u16 {
        // Pairs lie below the configured maximum, a u16.
        self.first + 2 * pair as u16
    }
}

/// The first audio stream's address in an SDP body.
pub fn audio_address(body: &[u8]) -> Option<SocketAddr> {
    let session = Session::parse(body).ok()?;
    let audio = session
        .medias
        .iter()
        .find(|m| m.media == "audio" && m.port != 0)?;
    let ip = audio
        .connections
        .first()
        .or(session.connection.as_ref())?
        .try_address()
        .ok()?
        .ip;
    Some(SocketAddr::new(ip, audio.port))
}

/// `body` with its connection addresses set to `ip` and its first audio port to `port`.
pub fn rewrite(body: &[u8], ip: IpAddr, port: u16) -> Option<Bytes> {
    let mut session = Session::parse(body).ok()?;
    session.connection = Some(Connection::from_ip_addr(ip));
    let mut done = false;
    for media in &mut session.medias {
        media.connections.clear();
        if !done && media.media == "audio" && media.port != 0 {
            media.port = port;
            done = true;
        }
    }
    if !done {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    session.write(&mut out).ok()?;
    Some(Bytes::from(out))
}

impl Engine {
    /// Whether a new call from `peer` to `target` is anchored.
    pub(super) fn wants_anchor(&self, now: Now, peer_is_analog: bool, target: &str) -> bool {
        match self.config.media.anchor {
            AnchorMode::Never => false,
            AnchorMode::Always => true,
            AnchorMode::Analog => {
                peer_is_analog
                    || self
                        .contacts_for(now, target)
                        .iter()
                        .any(|(_, b)| b.source.protocol == Protocol::Internal)
            }
        }
    }

    /// Takes two port pairs and installs a relay; None when the range is exhausted.
    pub(super) fn start_anchor(&mut self) -> Option<Anchor> {
        let a_port = self.media_ports.allocate()?;
        let Some(b_port) = self.media_ports.allocate() else {
            self.media_ports.release(a_port);
            tracing::warn!("media port range exhausted: this call is not anchored");
            return None;
        };
        let relay = self.relays.take();
        self.media_commands.push_back(MediaCommand::Install {
            relay,
            a_port,
            b_port,
        });
        Some(Anchor {
            relay,
            a_port,
            b_port,
        })
    }

    /// An SDP body travelling from side `from` to the other side (at `toward`): the other
    /// side is told to send to the gateway (at the address SDP names for `toward`), and the
    /// relay learns where `from` receives.
    pub(super) fn anchor_body(
        &mut self,
        anchor: Anchor,
        from: Side,
        body: &Bytes,
        toward: Peer,
    ) -> Bytes {
        if body.is_empty() {
            return body.clone();
        }
        let (leg, facing_port) = match from {
            Side::A => (0, anchor.b_port),
            Side::B => (1, anchor.a_port),
        };
        if let Some(peer) = audio_address(body) {
            self.media_commands.push_back(MediaCommand::SetPeer {
                relay: anchor.relay,
                leg,
                peer,
            });
        }
        rewrite(body, self.local.media_ip(toward), facing_port).unwrap_or_else(|| body.clone())
    }

    /// A call ended: its relay goes.
    pub(super) fn stop_anchor(&mut self, call_key: &str, anchor: Anchor) {
        self.media_commands.push_back(MediaCommand::Remove {
            relay: anchor.relay,
        });
        self.anchored
            .insert(anchor.relay, (call_key.to_string(), anchor));
    }

    /// Next instruction for the relay.
    pub fn poll_media_command(&mut self) -> Option<MediaCommand> {
        self.media_commands.pop_front()
    }

    /// A relay ended with these counters (leg 0: the caller's side, leg 1: the other): the
    /// ports return to the pool and the counters go into the call's CDR. A relay that went
    /// idle under a live, answered call ends that call: no RTP for the idle timeout means
    /// the phones are gone (the usual RTP timeout of a media proxy).
    pub fn handle_media_ended(&mut self, now: Now, relay: u64, idle: bool, legs: [LegReport; 2]) {
        let live = self
            .calls
            .calls
            .iter()
            .find(|(_, call)| call.anchor.is_some_and(|a| a.relay == relay))
            .map(|(&id, call)| (id, call.key.clone(), call.answered.is_some()));
        let (call_key, anchor) = match live {
            Some((id, key, answered)) => {
                let Some(anchor) = self.calls.calls.get_mut(&id).and_then(|c| c.anchor.take())
                else {
                    return;
                };
                if idle && answered {
                    tracing::warn!(
                        "call {id}: no media for {} s: hanging up",
                        self.config.media.idle_timeout_secs
                    );
                    self.hang_up_sides(now, id, &[Side::A, Side::B], "media timeout (no RTP)");
                }
                (key, anchor)
            }
            None => match self.anchored.remove(&relay) {
                Some(ended) => ended,
                None => return,
            },
        };
        self.media_ports.release(anchor.a_port);
        self.media_ports.release(anchor.b_port);
        let describe = |side: &str, leg: &LegReport| {
            format!(
                "{side}:{}p/{}lost/{:.1}ms{}",
                leg.packets,
                leg.lost,
                leg.jitter_ms,
                if leg.foreign_dropped > 0 {
                    format!("/{}foreign", leg.foreign_dropped)
                } else {
                    String::new()
                }
            )
        };
        let media = format!("{} {}", describe("A", &legs[0]), describe("B", &legs[1]));
        self.store_commands
            .push_back(StoreCommand::SetCdrMedia { call_key, media });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &[u8] = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\nm=video 0 RTP/AVP 31\r\n";

    #[test]
    fn the_audio_stream_is_pointed_at_the_gateway() {
        assert_eq!(audio_address(OFFER), Some("10.0.0.9:6000".parse().unwrap()));
        let rewritten = rewrite(OFFER, "192.0.2.1".parse().unwrap(), 30_000).unwrap();
        let text = String::from_utf8(rewritten.to_vec()).unwrap();
        assert!(text.contains("c=IN IP4 192.0.2.1"), "{text}");
        assert!(text.contains("m=audio 30000 RTP/AVP 0 101"), "{text}");
        assert!(text.contains("a=rtpmap:101 telephone-event/8000"), "{text}");
        assert!(
            text.contains("m=video 0 RTP/AVP 31"),
            "a rejected stream stays rejected"
        );
        assert_eq!(
            audio_address(&rewritten),
            Some("192.0.2.1:30000".parse().unwrap())
        );
        assert_eq!(rewrite(b"not sdp", "192.0.2.1".parse().unwrap(), 1), None);
    }

    fn pool(min: u16, max: u16, seed: u64) -> PortPool {
        use rand::SeedableRng;
        PortPool::new(min, max, StdRng::seed_from_u64(seed))
    }

    #[test]
    fn shards_take_disjoint_runs_of_whole_pairs_covering_the_range() {
        use crate::engine::shard::ShardId;
        for (min, max, count) in [(10000, 10099, 3), (10001, 10010, 2), (10000, 10003, 4)] {
            let mut covered = Vec::new();
            for index in 0..count {
                let (low, high) = shard_ports(min, max, ShardId::new(index, count).unwrap());
                let mut pool = pool(low, high, 1);
                while let Some(port) = pool.allocate() {
                    assert!((min..=max).contains(&port) && (min..=max).contains(&(port + 1)));
                    covered.push(port);
                }
            }
            let mut whole = pool(min, max, 1);
            let all: Vec<u16> = std::iter::from_fn(|| whole.allocate()).collect();
            covered.sort();
            let mut all_sorted = all.clone();
            all_sorted.sort();
            assert_eq!(
                covered, all_sorted,
                "{min}..={max} over {count}: each pair once"
            );
        }
    }

    #[test]
    fn ports_come_in_even_pairs_and_run_out() {
        let mut pool = pool(30_001, 30_007, 1);
        let mut ports: Vec<u16> = std::iter::from_fn(|| pool.allocate()).collect();
        ports.sort_unstable();
        assert_eq!(ports, [30_002, 30_004, 30_006], "RTCP on 30_007 still fits");
        assert_eq!(pool.allocate(), None, "exhausted");
        pool.release(30_004);
        pool.release(30_004);
        pool.release(30_005);
        pool.release(29_000);
        assert_eq!(pool.allocate(), Some(30_004), "the released pair, once");
        assert_eq!(pool.allocate(), None);
    }

    #[test]
    fn ports_are_drawn_at_random_and_replay_from_the_seed() {
        let draw = |seed| {
            let mut pool = pool(30_000, 39_999, seed);
            std::iter::from_fn(|| pool.allocate())
                .take(1000)
                .collect::<Vec<u16>>()
        };
        let ports = draw(7);
        assert!(ports
            .iter()
            .all(|&p| (30_000..=39_998).contains(&p) && p % 2 == 0));
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "no pair handed out twice");
        assert_eq!(draw(7), ports, "the same seed, the same ports");
        assert_ne!(draw(8), ports, "another seed, other ports");
        // Not in order: a port does not give away the next call's.
        let steps = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(steps < 10, "{steps} of 999 allocations were the next pair");
        let spread = ports.iter().filter(|&&p| p >= 35_000).count();
        assert!(
            (400..600).contains(&spread),
            "{spread} of 1000 in the upper half"
        );
    }

    #[test]
    fn an_almost_full_pool_still_finds_its_last_pairs() {
        let mut pool = pool(30_000, 30_999, 3);
        let mut ports: Vec<u16> = std::iter::from_fn(|| pool.allocate()).collect();
        assert_eq!(ports.len(), 500);
        ports.sort_unstable();
        assert_eq!(ports, (30_000..31_000).step_by(2).collect::<Vec<u16>>());
        for port in [30_010, 30_500, 30_998] {
            pool.release(port);
        }
        let mut last: Vec<u16> = std::iter::from_fn(|| pool.allocate()).collect();
        last.sort_unstable();
        assert_eq!(last, [30_010, 30_500, 30_998]);
    }
}
