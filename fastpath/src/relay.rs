//! The RTP relay: a [`Handler`] for a UDP worker that forwards each call's media between its
//! two legs. The control plane installs a relay (two port pairs: RTP on an even port, RTCP on
//! the next) with commands; the table lives on the worker thread only, so the packet path
//! takes no lock.
//!
//! Each leg takes packets only from its far end, by the strict source rules of
//! [`strict_source`] (the RTP Bleed defence): the address SDP gave (`LegSockets::peer`,
//! `RelayCommand::SetPeer`) latches on its first packet; another source is learned only while
//! nothing is latched and after a probation of consecutive in-sequence packets with one SSRC
//! (a phone behind a NAT); a latched leg moves only with new SDP; RTCP is accepted only from
//! the latched source (its port + 1, or rtcp-mux). Packets from anyone else are dropped,
//! counted (`foreign_dropped`) and are no sign of life for the idle timeout.
//!
//! Per-leg counters (packets, bytes, loss, jitter, foreign packets dropped) are reported when
//! a relay ends, by removal or after an idle timeout.

pub mod strict_source;

use crate::udp::{Handler, Io};
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use strict_source::{RtpHeader, StrictSource, DEFAULT_PROBATION_PACKETS};

/// How the relay behaves.
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// Consecutive in-sequence RTP packets (one SSRC) a source other than the one SDP gave
    /// must send before a leg with nothing latched learns it (NAT traversal).
    pub probation_packets: u32,
    /// A relay with no packet from its far ends for this long ends (foreign packets do not
    /// count).
    pub idle_timeout: Duration,
    /// RTP clock rate for jitter (8000 for G.711 and telephone-event).
    pub clock_rate: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            probation_packets: DEFAULT_PROBATION_PACKETS,
            idle_timeout: Duration::from_secs(60),
            clock_rate: 8000,
        }
    }
}

/// One leg's sockets and where SDP says its far end is.
#[derive(Debug)]
pub struct LegSockets {
    /// RTP socket (an even port).
    pub rtp: UdpSocket,
    /// RTCP socket (the next port).
    pub rtcp: UdpSocket,
    /// The far end's RTP address from SDP (its RTCP is taken to be the next port): packets
    /// from it latch the leg at once.
    pub peer: Option<SocketAddr>,
}

/// What the control plane tells the relay.
#[derive(Debug)]
pub enum RelayCommand {
    /// Start relaying between two legs.
    Install {
        /// The control plane's name for it (e.g. a call number).
        id: u64,
        /// Leg 0 and leg 1.
        legs: [LegSockets; 2],
    },
    /// SDP gave a leg's far end address (the answer arrived, or a re-INVITE or UPDATE): a
    /// new address re-latches the leg there; the same one changes nothing.
    SetPeer {
        /// The relay.
        id: u64,
        /// 0 or 1.
        leg: usize,
        /// Its RTP address.
        peer: SocketAddr,
    },
    /// Stop relaying and report.
    Remove {
        /// The relay.
        id: u64,
    },
    /// The clock, for idle timeouts (the control plane sends it every second or so).
    Tick {
        /// Now.
        now: Instant,
    },
    /// The operator asks for the counters (status view, metrics): answered on `reply`.
    Report {
        /// Where the [`RelayReport`] goes.
        reply: Sender<RelayReport>,
    },
}

/// The relay's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelayReport {
    /// Every live relay's legs, by relay number.
    pub live: Vec<(u64, [LegReport; 2])>,
    /// The sums over every leg of the relays that ended (jitter is not summed: 0).
    pub ended: LegReport,
    /// Relays ended so far.
    pub ended_relays: u64,
}

impl RelayReport {
    /// The sums over every leg, live and ended: counters that only ever grow.
    pub fn totals(&self) -> LegReport {
        self.live
            .iter()
            .flat_map(|(_, legs)| legs)
            .fold(self.ended, |sum, leg| sum.plus(leg))
    }

    /// The highest jitter of a live leg (ms).
    pub fn worst_jitter_ms(&self) -> f32 {
        self.live
            .iter()
            .flat_map(|(_, legs)| legs)
            .map(|leg| leg.jitter_ms)
            .fold(0.0, f32::max)
    }
}

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The control plane removed it.
    Removed,
    /// No packets for the idle timeout.
    Idle,
}

/// One leg's counters: what it received from its far end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegReport {
    /// RTP packets received and forwarded.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// RTP packets lost on the way in (RFC 3550 A.3: expected minus received).
    pub lost: u64,
    /// Interarrival jitter (RFC 3550 A.8), in milliseconds.
    pub jitter_ms: f32,
    /// RTCP packets forwarded.
    pub rtcp_packets: u64,
    /// Packets (RTP and RTCP) dropped because they did not come from the leg's far end: any
    /// source but the latched one, and a source still on probation.
    pub foreign_dropped: u64,
    /// Packets dropped because the other leg's address is not known yet.
    pub unroutable: u64,
}

impl LegReport {
    /// The counters of two legs added (jitter is not a sum: 0).
    pub fn plus(self, other: &LegReport) -> LegReport {
        LegReport {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
            lost: self.lost + other.lost,
            jitter_ms: 0.0,
            rtcp_packets: self.rtcp_packets + other.rtcp_packets,
            foreign_dropped: self.foreign_dropped + other.foreign_dropped,
            unroutable: self.unroutable + other.unroutable,
        }
    }
}

/// What the relay tells the control plane.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayEvent {
    /// A relay ended.
    Ended {
        /// The relay.
        id: u64,
        /// Why.
        reason: EndReason,
        /// Leg 0 and leg 1.
        legs: [LegReport; 2],
    },
    /// A command could not be carried out.
    Failed {
        /// The relay.
        id: u64,
        /// What went wrong.
        problem: String,
    },
}

/// RFC 3550 receive statistics of one leg.
#[derive(Debug, Clone, Copy, Default)]
struct Reception {
    started: bool,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u64,
    last_transit: Option<i64>,
    jitter: f64,
}

impl Reception {
    fn packet(&mut self, sequence: u16, timestamp: u32, arrival: i64) {
        if !self.started {
            self.started = true;
            self.base_seq = u32::from(sequence);
            self.max_seq = sequence;
        } else {
            let delta = sequence.wrapping_sub(self.max_seq);
            if delta != 0 && delta < 0x8000 {
                if sequence < self.max_seq {
                    self.cycles += 1 << 16;
                }
                self.max_seq = sequence;
            }
        }
        self.received += 1;
        let transit = arrival - i64::from(timestamp);
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as f64;
            // Timestamp jumps (a new talk spurt's wrap, a marker) are not jitter.
            if d < 1_000_000.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
    }

    fn lost(&self) -> u64 {
        if !self.started {
            return 0;
        }
        let extended_max = u64::from(self.cycles) + u64::from(self.max_seq);
        let expected = extended_max + 1 - u64::from(self.base_seq);
        expected.saturating_sub(self.received)
    }
}

#[derive(Debug)]
struct Leg {
    rtp_socket: usize,
    rtcp_socket: usize,
    /// Which source the leg takes packets from, and where the other leg's go.
    source: StrictSource,
    reception: Reception,
    report: LegReport,
}

impl Leg {
    fn report(&self, clock_rate: u32) -> LegReport {
        LegReport {
            lost: self.reception.lost(),
            jitter_ms: (self.reception.jitter * 1000.0 / f64::from(clock_rate.max(1))) as f32,
            ..self.report
        }
    }
}

#[derive(Debug)]
struct Relay {
    legs: [Leg; 2],
    /// Packets seen at the last tick, and when that count last changed.
    activity: (u64, Instant),
}

impl Relay {
    /// Both legs' counters.
    fn reports(&self, clock_rate: u32) -> [LegReport; 2] {
        [
            self.legs[0].report(clock_rate),
            self.legs[1].report(clock_rate),
        ]
    }

    /// Packets accepted from the far ends so far: the relay's sign of life (foreign packets
    /// are not, or an attacker could keep a dead call's relay up).
    fn packets(&self) -> u64 {
        self.legs
            .iter()
            .map(|l| l.report.packets + l.report.rtcp_packets)
            .sum()
    }
}

/// Which relay, leg and stream a socket serves.
#[derive(Debug, Clone, Copy)]
struct Route {
    id: u64,
    leg: usize,
    rtcp: bool,
}

/// The relay's state on its worker thread.
pub struct RelayHandler {
    config: RelayConfig,
    relays: HashMap<u64, Relay>,
    routes: Vec<Option<Route>>,
    events: Sender<RelayEvent>,
    started: Instant,
    /// The sums of the relays that ended, and their number.
    ended: (LegReport, u64),
}

impl RelayHandler {
    /// A relay reporting on `events`.
    pub fn new(config: RelayConfig, events: Sender<RelayEvent>) -> RelayHandler {
        RelayHandler {
            config,
            relays: HashMap::new(),
            routes: Vec::new(),
            events,
            started: Instant::now(),
            ended: (LegReport::default(), 0),
        }
    }

    fn route(&mut self, socket: usize, route: Route) {
        if self.routes.len() <= socket {
            self.routes.resize(socket + 1, None);
        }
        self.routes[socket] = Some(route);
    }

    fn install(&mut self, io: &mut Io, id: u64, legs: [LegSockets; 2]) {
        if self.relays.contains_key(&id) {
            let _ = self.events.send(RelayEvent::Failed {
                id,
                problem: "a relay with this id exists".into(),
            });
            return;
        }
        let mut built = Vec::with_capacity(2);
        for (index, sockets) in legs.into_iter().enumerate() {
            let added = io.add_socket(sockets.rtp).and_then(|rtp| {
                io.add_socket(sockets.rtcp)
                    .inspect_err(|_| io.remove_socket(rtp))
                    .map(|rtcp| (rtp, rtcp))
            });
            let (rtp_socket, rtcp_socket) = match added {
                Ok(pair) => pair,
                Err(e) => {
                    for leg in &built {
                        let leg: &Leg = leg;
                        io.remove_socket(leg.rtp_socket);
                        io.remove_socket(leg.rtcp_socket);
                    }
                    let _ = self.events.send(RelayEvent::Failed {
                        id,
                        problem: e.to_string(),
                    });
                    return;
                }
            };
            self.route(
                rtp_socket,
                Route {
                    id,
                    leg: index,
                    rtcp: false,
                },
            );
            self.route(
                rtcp_socket,
                Route {
                    id,
                    leg: index,
                    rtcp: true,
                },
            );
            let mut source = StrictSource::new(self.config.probation_packets);
            if let Some(peer) = sockets.peer {
                source.signal(peer);
            }
            built.push(Leg {
                rtp_socket,
                rtcp_socket,
                source,
                reception: Reception::default(),
                report: LegReport::default(),
            });
        }
        let Ok(legs) = <[Leg; 2]>::try_from(built) else {
            return;
        };
        self.relays.insert(
            id,
            Relay {
                legs,
                activity: (0, Instant::now()),
            },
        );
    }

    fn end(&mut self, io: &mut Io, id: u64, reason: EndReason) {
        let Some(relay) = self.relays.remove(&id) else {
            return;
        };
        for leg in &relay.legs {
            for socket in [leg.rtp_socket, leg.rtcp_socket] {
                io.remove_socket(socket);
                if let Some(route) = self.routes.get_mut(socket) {
                    *route = None;
                }
            }
        }
        let legs = relay.reports(self.config.clock_rate);
        self.ended = (self.ended.0.plus(&legs[0]).plus(&legs[1]), self.ended.1 + 1);
        let _ = self.events.send(RelayEvent::Ended { id, reason, legs });
    }

    fn tick(&mut self, io: &mut Io, now: Instant) {
        let mut idle = Vec::new();
        for (&id, relay) in &mut self.relays {
            let packets = relay.packets();
            // Until both sides are known (a ringing call has no answer yet), silence is
            // normal: the idle clock starts once media can flow both ways.
            let established = relay
                .legs
                .iter()
                .all(|leg| leg.source.destination().is_some());
            if packets != relay.activity.0 || !established {
                relay.activity = (packets, now);
            } else if now.saturating_duration_since(relay.activity.1) >= self.config.idle_timeout {
                idle.push(id);
            }
        }
        for id in idle {
            self.end(io, id, EndReason::Idle);
        }
    }

    /// Arrival time in RTP clock units.
    fn arrival(&self) -> i64 {
        let elapsed = self.started.elapsed();
        (elapsed.as_micros() as i64) * i64::from(self.config.clock_rate) / 1_000_000
    }
}

impl Handler for RelayHandler {
    type Command = RelayCommand;

    fn datagram(&mut self, io: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]) {
        let Some(route) = self.routes.get(socket).copied().flatten() else {
            return;
        };
        let arrival = if route.rtcp { 0 } else { self.arrival() };
        let Some(relay) = self.relays.get_mut(&route.id) else {
            return;
        };
        let (first, second) = relay.legs.split_at_mut(1);
        let (this, other) = if route.leg == 0 {
            (&mut first[0], &mut second[0])
        } else {
            (&mut second[0], &mut first[0])
        };
        let (destination, out_socket) = if route.rtcp {
            if !this.source.admits_rtcp(from) {
                this.report.foreign_dropped += 1;
                return;
            }
            this.report.rtcp_packets += 1;
            (other.source.rtcp_destination(), other.rtcp_socket)
        } else {
            if !this.source.admit(from, bytes).is_accepted() {
                this.report.foreign_dropped += 1;
                return;
            }
            this.report.packets += 1;
            this.report.bytes += bytes.len() as u64;
            if let Some(header) = RtpHeader::parse(bytes) {
                this.reception
                    .packet(header.sequence, header.timestamp, arrival);
            }
            (other.source.destination(), other.rtp_socket)
        };
        match destination {
            Some(to) => io.send(out_socket, to, bytes),
            None => this.report.unroutable += 1,
        }
    }

    fn command(&mut self, io: &mut Io, command: RelayCommand) {
        match command {
            RelayCommand::Install { id, legs } => self.install(io, id, legs),
            RelayCommand::SetPeer { id, leg, peer } => {
                if let Some(leg) = self.relays.get_mut(&id).and_then(|r| r.legs.get_mut(leg)) {
                    leg.source.signal(peer);
                }
            }
            RelayCommand::Remove { id } => self.end(io, id, EndReason::Removed),
            RelayCommand::Tick { now } => self.tick(io, now),
            RelayCommand::Report { reply } => {
                let clock_rate = self.config.clock_rate;
                let mut live: Vec<(u64, [LegReport; 2])> = self
                    .relays
                    .iter()
                    .map(|(&id, relay)| (id, relay.reports(clock_rate)))
                    .collect();
                live.sort_by_key(|(id, _)| *id);
                let _ = reply.send(RelayReport {
                    live,
                    ended: self.ended.0,
                    ended_relays: self.ended.1,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_counts_gaps_across_the_sequence_wrap() {
        let mut reception = Reception::default();
        for sequence in (65_500u16..=65_535).chain(0..100) {
            if sequence % 10 != 3 {
                reception.packet(
                    sequence,
                    u32::from(sequence) * 160,
                    i64::from(sequence) * 160,
                );
            }
        }
        let expected = 36 + 100;
        let missing = (65_500u32..=65_535)
            .chain(0..100)
            .filter(|s| s % 10 == 3)
            .count();
        assert_eq!(reception.received, (expected - missing) as u64);
        assert_eq!(reception.lost(), missing as u64);
    }
}
