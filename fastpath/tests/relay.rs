//! The RTP relay on both backends: media both ways with RTCP on port+1, per-leg counters,
//! removal and idle timeout (ports released), and the strict source rules against RTP Bleed:
//! an attacker sending before the caller, a racing burst mid-call, RTCP injection, foreign
//! packets keeping a relay alive, a NAT'd phone learned by probation while garbage is not,
//! and a leg moved by new SDP.
//!
//! Nothing here waits a fixed time for the worker: a packet the relay forwards proves it
//! handled everything sent to that socket before it (one thread, sockets read in order), a
//! relay removed on demand ([`barrier`]) proves the commands before it were carried out, and
//! a packet through a second relay ([`Probe::settle`]) proves the datagrams sent before it to
//! other sockets were handled (the worker reads ready sockets in the order they became
//! ready; a command, though, may be taken before datagrams that arrived earlier).

use crossbeam_channel::Receiver;
use fastpath::relay::{EndReason, LegSockets, RelayCommand, RelayConfig, RelayEvent, RelayHandler};
use fastpath::udp::{BackendChoice, SendHandle, Worker, WorkerConfig};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BACKENDS: [BackendChoice; 2] = [BackendChoice::IoUring, BackendChoice::Epoll];

/// SSRCs naming who sent a packet.
const CALLER: u32 = 0xca11;
const CALLEE: u32 = 0xca1e;
const ATTACKER: u32 = 0xbad;

struct Bench {
    worker: Worker<RelayCommand>,
    events: Receiver<RelayEvent>,
    control: SendHandle<RelayCommand>,
}

fn bench(backend: BackendChoice, config: RelayConfig) -> Bench {
    let (tx, events) = crossbeam_channel::unbounded();
    let worker_config = WorkerConfig {
        name: "relay-test".into(),
        backend,
        core: None,
        buffer_size: 2048,
        buffers: 256,
        tick: None,
    };
    let worker = Worker::spawn(worker_config, Vec::new(), RelayHandler::new(config, tx)).unwrap();
    Bench {
        control: worker.sender(),
        worker,
        events,
    }
}

/// An even/odd port pair on loopback.
fn port_pair() -> (UdpSocket, UdpSocket) {
    loop {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rtp.local_addr().unwrap().port();
        if port % 2 == 0 {
            if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
                return (rtp, rtcp);
            }
        }
    }
}

/// A phone's media end: RTP and RTCP sockets.
struct Phone {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

impl Phone {
    fn new() -> Phone {
        let (rtp, rtcp) = port_pair();
        for s in [&rtp, &rtcp] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        Phone { rtp, rtcp }
    }

    fn addr(&self) -> SocketAddr {
        self.rtp.local_addr().unwrap()
    }

    fn receive(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buffer = [0u8; 1500];
        socket
            .recv_from(&mut buffer)
            .ok()
            .map(|(n, from)| (buffer[..n].to_vec(), from))
    }

    /// Sends a [`voice`] packet to `to`.
    fn talk(&self, to: SocketAddr, ssrc: u32, sequence: u16) {
        self.rtp.send_to(&voice(ssrc, sequence), to).unwrap();
    }

    /// The next RTP packet on the RTP socket, as (SSRC, sequence number).
    fn hear(&self) -> (u32, u16) {
        let (packet, _) = Phone::receive(&self.rtp).expect("a packet within 5 s");
        (ssrc_of(&packet), sequence_of(&packet))
    }

    /// What is waiting on `socket` now, without waiting for more.
    fn pending(socket: &UdpSocket) -> Vec<Vec<u8>> {
        socket.set_nonblocking(true).unwrap();
        let mut waiting = Vec::new();
        while let Some((packet, _)) = Phone::receive(socket) {
            waiting.push(packet);
        }
        socket.set_nonblocking(false).unwrap();
        waiting
    }
}

fn rtp(sequence: u16, timestamp: u32) -> Vec<u8> {
    let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    packet[2..4].copy_from_slice(&sequence.to_be_bytes());
    packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&[0xd5; 160]);
    packet
}

/// A 20 ms PCMU packet of `ssrc`'s stream.
fn voice(ssrc: u32, sequence: u16) -> Vec<u8> {
    let mut packet = rtp(sequence, u32::from(sequence) * 160);
    packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
    packet
}

fn ssrc_of(packet: &[u8]) -> u32 {
    u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]])
}

fn sequence_of(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[2], packet[3]])
}

/// Relay ids for relays the tests install only to synchronise.
static SCRATCH_IDS: AtomicU64 = AtomicU64::new(1_000_000);

/// Installs relay `id` with the far ends SDP gave (None: not known yet); returns the relay's
/// two RTP addresses. The sockets are bound before the command, so packets sent to them
/// right away wait there until the worker takes them.
fn install_with(
    bench: &Bench,
    id: u64,
    peers: [Option<SocketAddr>; 2],
) -> (SocketAddr, SocketAddr) {
    let (leg_a, leg_b) = (port_pair(), port_pair());
    let addrs = (leg_a.0.local_addr().unwrap(), leg_b.0.local_addr().unwrap());
    assert!(bench.control.command(RelayCommand::Install {
        id,
        legs: [
            LegSockets {
                rtp: leg_a.0,
                rtcp: leg_a.1,
                peer: peers[0],
            },
            LegSockets {
                rtp: leg_b.0,
                rtcp: leg_b.1,
                peer: peers[1],
            },
        ],
    }));
    addrs
}

/// Installs relay `id` between phones `a` and `b`; returns the relay's two RTP addresses.
fn install(bench: &Bench, id: u64, a: &Phone, b: &Phone) -> (SocketAddr, SocketAddr) {
    install_with(bench, id, [Some(a.addr()), Some(b.addr())])
}

/// Returns once the worker has carried out every command sent before (it handles commands
/// in order, and a relay installed and removed here reports its end), with the events that
/// came before that end.
fn barrier(bench: &Bench) -> Vec<RelayEvent> {
    let id = SCRATCH_IDS.fetch_add(1, Ordering::Relaxed);
    install_with(bench, id, [None, None]);
    bench.control.command(RelayCommand::Remove { id });
    let mut before = Vec::new();
    loop {
        match next_event(bench) {
            RelayEvent::Ended { id: ended, .. } if ended == id => return before,
            other => before.push(other),
        }
    }
}

/// A second relay on the worker, whose packets show how far the worker has read. Its
/// packets are its sign of life: clock ticks go through [`Probe::tick`], which settles
/// first, so that it never goes idle itself.
struct Probe {
    from: Phone,
    to: Phone,
    relay_in: SocketAddr,
    sequence: u16,
}

impl Probe {
    /// A probe on `bench`; once it returns, the sockets of every relay installed before are
    /// in the worker's hands (the probe's own, installed after them, carried a packet).
    fn new(bench: &Bench) -> Probe {
        let (from, to) = (Phone::new(), Phone::new());
        let id = SCRATCH_IDS.fetch_add(1, Ordering::Relaxed);
        let (relay_in, _) = install(bench, id, &from, &to);
        let mut probe = Probe {
            from,
            to,
            relay_in,
            sequence: 0,
        };
        probe.settle();
        probe
    }

    /// Returns once the worker has handled the datagrams sent to it before: the sockets
    /// became readable earlier than the probe's, and the worker reads ready sockets in
    /// that order.
    fn settle(&mut self) {
        self.from.talk(self.relay_in, 0x9e, self.sequence);
        assert_eq!(
            self.to.hear(),
            (0x9e, self.sequence),
            "the probe came through"
        );
        self.sequence += 1;
    }

    /// Settles, then sets the relay's clock to `secs` after `start` and waits until the
    /// worker has taken the tick (a command may overtake datagrams sent before it, so the
    /// next packets must not be sent before the tick is done).
    /// Returns the events the tick caused.
    fn tick(&mut self, bench: &Bench, start: Instant, secs: u64) -> Vec<RelayEvent> {
        self.settle();
        bench.control.command(RelayCommand::Tick {
            now: start + Duration::from_secs(secs),
        });
        barrier(bench)
    }
}

/// The relay's counters, as the operator's status asks for them.
fn report(bench: &Bench) -> fastpath::relay::RelayReport {
    let (reply, report) = crossbeam_channel::bounded(1);
    assert!(bench.control.command(RelayCommand::Report { reply }));
    report
        .recv_timeout(Duration::from_secs(5))
        .expect("the relay answers")
}

fn next_event(bench: &Bench) -> RelayEvent {
    bench
        .events
        .recv_timeout(Duration::from_secs(5))
        .expect("an event within 5 s")
}

/// The next event, which must be relay `id`'s end: its reason and leg reports.
fn ended(bench: &Bench, id: u64) -> (EndReason, [fastpath::relay::LegReport; 2]) {
    only_end(vec![next_event(bench)], id)
}

/// `events` must be relay `id`'s end and nothing else: its reason and leg reports.
fn only_end(events: Vec<RelayEvent>, id: u64) -> (EndReason, [fastpath::relay::LegReport; 2]) {
    match <[RelayEvent; 1]>::try_from(events) {
        Ok(
            [RelayEvent::Ended {
                id: ended,
                reason,
                legs,
            }],
        ) if ended == id => (reason, legs),
        other => panic!("expected relay {id} to end, got {other:?}"),
    }
}

fn with_rtcp(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + 1)
}

#[test]
fn media_and_rtcp_cross_both_ways_and_counters_are_reported() {
    for backend in BACKENDS {
        let bench = bench(backend, RelayConfig::default());
        let (a, b) = (Phone::new(), Phone::new());
        let (relay_a, relay_b) = install(&bench, 1, &a, &b);
        // A -> B, with packets 10..=14 lost before the relay.
        for sequence in (0..100u16).filter(|s| !(10..15).contains(s)) {
            a.rtp
                .send_to(&rtp(sequence, u32::from(sequence) * 160), relay_a)
                .unwrap();
            let (packet, from) = Phone::receive(&b.rtp).expect("relayed to B");
            assert_eq!(
                (from, packet),
                (relay_b, rtp(sequence, u32::from(sequence) * 160))
            );
        }
        // B -> A, and RTCP both ways on port + 1.
        b.rtp.send_to(&rtp(7, 0), relay_b).unwrap();
        assert_eq!(Phone::receive(&a.rtp).map(|(_, f)| f), Some(relay_a));
        a.rtcp.send_to(b"rtcp from a", with_rtcp(relay_a)).unwrap();
        assert_eq!(
            Phone::receive(&b.rtcp),
            Some((b"rtcp from a".to_vec(), with_rtcp(relay_b)))
        );
        b.rtcp.send_to(b"rtcp from b", with_rtcp(relay_b)).unwrap();
        assert_eq!(
            Phone::receive(&a.rtcp).map(|(p, _)| p),
            Some(b"rtcp from b".to_vec())
        );
        // The operator's report while it runs: the live counters.
        let live = report(&bench);
        assert_eq!(live.live.len(), 1);
        assert_eq!((live.live[0].0, live.live[0].1[0].packets), (1, 95));
        assert_eq!((live.ended_relays, live.totals().packets), (0, 96));
        assert!(bench.control.command(RelayCommand::Remove { id: 1 }));
        let RelayEvent::Ended { id, reason, legs } = next_event(&bench) else {
            panic!("ended");
        };
        assert_eq!((id, reason), (1, EndReason::Removed));
        // Once ended, its counters stay in the totals.
        let after = report(&bench);
        assert!(after.live.is_empty());
        assert_eq!((after.ended_relays, after.totals().packets), (1, 96));
        assert_eq!(after.totals().lost, 5);
        assert_eq!(
            (legs[0].packets, legs[0].lost, legs[0].rtcp_packets),
            (95, 5, 1),
            "{backend:?}"
        );
        assert_eq!(legs[0].bytes, 95 * 172);
        assert_eq!((legs[1].packets, legs[1].rtcp_packets), (1, 1));
        // The ports close (once the kernel lets go of them): they can be bound again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while UdpSocket::bind(relay_a).is_err() {
            assert!(Instant::now() < deadline, "{backend:?}: port released");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            bench.worker.backend().to_string(),
            if backend == BackendChoice::Epoll {
                "epoll"
            } else {
                "io_uring"
            }
        );
    }
}

#[test]
fn an_idle_relay_ends_by_itself_and_unknown_peers_are_counted() {
    for backend in BACKENDS {
        let config = RelayConfig {
            idle_timeout: Duration::from_secs(30),
            ..RelayConfig::default()
        };
        let bench = bench(backend, config);
        let a = Phone::new();
        let (relay_a, _) = install_with(&bench, 3, [Some(a.addr()), None]);
        let mut probe = Probe::new(&bench);
        a.talk(relay_a, CALLER, 0); // B unknown yet: not relayed
        let start = Instant::now();
        let mut tick = |secs| probe.tick(&bench, start, secs);
        assert_eq!(tick(0), []);
        assert_eq!(
            tick(40),
            [],
            "B unknown (a ringing call): silence is not idleness"
        );
        // The answer names B: from now on silence counts.
        let far_b = Phone::new();
        bench.control.command(RelayCommand::SetPeer {
            id: 3,
            leg: 1,
            peer: far_b.addr(),
        });
        assert_eq!(tick(41), []);
        assert_eq!(tick(51), [], "not idle yet");
        let (reason, legs) = only_end(tick(72), 3);
        assert_eq!(reason, EndReason::Idle, "{backend:?}");
        assert_eq!((legs[0].packets, legs[0].unroutable), (1, 1), "{backend:?}");
        bench.control.command(RelayCommand::Remove { id: 3 });
        assert_eq!(barrier(&bench), [], "ended once: no second report");
    }
}

#[test]
fn an_attacker_sending_before_the_caller_gets_nothing_through_and_nothing_back() {
    for backend in BACKENDS {
        let bench = bench(backend, RelayConfig::default());
        let (caller, callee, attacker) = (Phone::new(), Phone::new(), Phone::new());
        // The offer names the caller; the callee is not known until it answers.
        let (relay_a, relay_b) = install_with(&bench, 10, [Some(caller.addr()), None]);
        let mut probe = Probe::new(&bench);
        // While it rings, the attacker sprays the caller's relay port with a clean stream.
        for sequence in 0..30 {
            attacker.talk(relay_a, ATTACKER, sequence);
        }
        probe.settle();
        // The answer names the callee.
        bench.control.command(RelayCommand::SetPeer {
            id: 10,
            leg: 1,
            peer: callee.addr(),
        });
        assert_eq!(barrier(&bench), []);
        // The caller starts talking; the attacker goes on.
        caller.talk(relay_a, CALLER, 0);
        assert_eq!(callee.hear(), (CALLER, 0), "{backend:?}");
        for sequence in 1..=20 {
            attacker.talk(relay_a, ATTACKER, 29 + sequence);
            caller.talk(relay_a, CALLER, sequence);
        }
        for sequence in 1..=20 {
            assert_eq!(
                callee.hear(),
                (CALLER, sequence),
                "{backend:?}: only the caller"
            );
        }
        for sequence in 0..20 {
            callee.talk(relay_b, CALLEE, sequence);
            assert_eq!(
                caller.hear(),
                (CALLEE, sequence),
                "{backend:?}: to the caller"
            );
        }
        assert!(Phone::pending(&attacker.rtp).is_empty(), "{backend:?}");
        assert!(Phone::pending(&callee.rtp).is_empty(), "{backend:?}");
        bench.control.command(RelayCommand::Remove { id: 10 });
        let (_, legs) = ended(&bench, 10);
        // The attacker's stream passed probation while nothing else came (a NAT'd caller
        // looks the same): its packets had nowhere to go, and the caller's first packet
        // took the leg over.
        assert_eq!(legs[0].unroutable, 27, "{backend:?}");
        assert_eq!(legs[0].foreign_dropped, 3 + 20, "{backend:?}");
        assert_eq!(legs[0].packets, 27 + 21, "{backend:?}");
    }
}

#[test]
fn a_burst_from_an_attacker_mid_call_does_not_take_a_leg_over() {
    for backend in BACKENDS {
        let bench = bench(backend, RelayConfig::default());
        let (caller, callee, attacker) = (Phone::new(), Phone::new(), Phone::new());
        let (relay_a, relay_b) = install(&bench, 11, &caller, &callee);
        // 100 ms into the call...
        for sequence in 0..5 {
            caller.talk(relay_a, CALLER, sequence);
            assert_eq!(callee.hear(), (CALLER, sequence));
            callee.talk(relay_b, CALLEE, sequence);
            assert_eq!(caller.hear(), (CALLEE, sequence));
        }
        // ...25 clean in-sequence packets from the attacker at both legs.
        for sequence in 0..25 {
            attacker.talk(relay_a, ATTACKER, sequence);
            attacker.talk(relay_b, ATTACKER, 1000 + sequence);
        }
        for sequence in 5..25 {
            caller.talk(relay_a, CALLER, sequence);
            callee.talk(relay_b, CALLEE, sequence);
        }
        for sequence in 5..25 {
            assert_eq!(callee.hear(), (CALLER, sequence), "{backend:?}");
            assert_eq!(caller.hear(), (CALLEE, sequence), "{backend:?}");
        }
        assert!(Phone::pending(&attacker.rtp).is_empty(), "{backend:?}");
        bench.control.command(RelayCommand::Remove { id: 11 });
        let (_, legs) = ended(&bench, 11);
        assert_eq!(
            (legs[0].foreign_dropped, legs[1].foreign_dropped),
            (25, 25),
            "{backend:?}"
        );
        assert_eq!((legs[0].packets, legs[1].packets), (25, 25), "{backend:?}");
    }
}

#[test]
fn rtcp_from_anyone_but_the_latched_source_is_dropped_even_when_the_phones_send_none() {
    for backend in BACKENDS {
        let bench = bench(backend, RelayConfig::default());
        let (caller, callee, attacker) = (Phone::new(), Phone::new(), Phone::new());
        let (relay_a, relay_b) = install(&bench, 12, &caller, &callee);
        caller.talk(relay_a, CALLER, 0);
        assert_eq!(callee.hear(), (CALLER, 0));
        callee.talk(relay_b, CALLEE, 0);
        assert_eq!(caller.hear(), (CALLEE, 0));
        // Mid-call, with no RTCP from the phones yet, the attacker sends RTCP to both legs.
        for n in 0..100 {
            let report = format!("injected rtcp {n}");
            attacker
                .rtcp
                .send_to(report.as_bytes(), with_rtcp(relay_a))
                .unwrap();
            attacker
                .rtcp
                .send_to(report.as_bytes(), with_rtcp(relay_b))
                .unwrap();
        }
        // The phones' own RTCP, from their RTP port + 1, comes through, and comes first.
        caller
            .rtcp
            .send_to(b"rtcp from the caller", with_rtcp(relay_a))
            .unwrap();
        callee
            .rtcp
            .send_to(b"rtcp from the callee", with_rtcp(relay_b))
            .unwrap();
        assert_eq!(
            Phone::receive(&callee.rtcp).map(|(p, _)| p),
            Some(b"rtcp from the caller".to_vec()),
            "{backend:?}"
        );
        assert_eq!(
            Phone::receive(&caller.rtcp).map(|(p, _)| p),
            Some(b"rtcp from the callee".to_vec()),
            "{backend:?}"
        );
        assert!(Phone::pending(&attacker.rtcp).is_empty(), "{backend:?}");
        bench.control.command(RelayCommand::Remove { id: 12 });
        let (_, legs) = ended(&bench, 12);
        for leg in legs {
            assert_eq!(
                (leg.foreign_dropped, leg.rtcp_packets),
                (100, 1),
                "{backend:?}"
            );
        }
    }
}

#[test]
fn foreign_packets_do_not_keep_an_idle_relay_alive() {
    for backend in BACKENDS {
        let bench = bench(backend, RelayConfig::default()); // idle after 60 s
        let (caller, callee, attacker) = (Phone::new(), Phone::new(), Phone::new());
        let (relay_a, relay_b) = install(&bench, 13, &caller, &callee);
        let mut probe = Probe::new(&bench);
        caller.talk(relay_a, CALLER, 0);
        assert_eq!(callee.hear(), (CALLER, 0));
        callee.talk(relay_b, CALLEE, 0);
        assert_eq!(caller.hear(), (CALLEE, 0));
        let start = Instant::now();
        assert_eq!(probe.tick(&bench, start, 0), []);
        // The phones are gone; an attacker keeps sending RTP and RTCP at the relay.
        let attack = || {
            for sequence in 0..20 {
                attacker.talk(relay_a, ATTACKER, sequence);
                attacker.talk(relay_b, ATTACKER, sequence);
                attacker
                    .rtcp
                    .send_to(b"injected rtcp", with_rtcp(relay_a))
                    .unwrap();
            }
        };
        attack();
        assert_eq!(probe.tick(&bench, start, 30), [], "{backend:?}");
        attack();
        let (reason, legs) = only_end(probe.tick(&bench, start, 61), 13);
        assert_eq!(reason, EndReason::Idle, "{backend:?}");
        assert_eq!(
            (legs[0].foreign_dropped, legs[1].foreign_dropped),
            (80, 40),
            "{backend:?}: every foreign packet was seen before the relay went idle"
        );
    }
}

#[test]
fn a_phone_behind_nat_is_learned_by_probation_and_garbage_never_is() {
    for backend in BACKENDS {
        let bench = bench(backend, RelayConfig::default());
        // SDP names the phone's private address; nothing ever comes from it.
        let (private, nat, callee, scanner) =
            (Phone::new(), Phone::new(), Phone::new(), Phone::new());
        let (relay_a, relay_b) = install(&bench, 14, &private, &callee);
        // Random bytes that are not RTP (version bits other than 2) from a scanner.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..50 {
            let mut junk = vec![0u8; 20 + (state % 180) as usize];
            for byte in &mut junk {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            if junk[0] >> 6 == 2 {
                junk[0] ^= 0x40;
            }
            scanner.rtp.send_to(&junk, relay_a).unwrap();
        }
        // The phone's packets come from its NAT: the first ones are on probation, then the
        // source is learned.
        for sequence in 0..4 {
            nat.talk(relay_a, CALLER, sequence);
        }
        assert_eq!(
            callee.hear(),
            (CALLER, 3),
            "{backend:?}: learned on the 4th"
        );
        for sequence in 4..10 {
            nat.talk(relay_a, CALLER, sequence);
            assert_eq!(callee.hear(), (CALLER, sequence), "{backend:?}");
        }
        // The callee's audio goes back where the phone's comes from (symmetric RTP).
        for sequence in 0..10 {
            callee.talk(relay_b, CALLEE, sequence);
            assert_eq!(nat.hear(), (CALLEE, sequence), "{backend:?}");
        }
        assert!(Phone::pending(&private.rtp).is_empty(), "{backend:?}");
        assert!(Phone::pending(&scanner.rtp).is_empty(), "{backend:?}");
        bench.control.command(RelayCommand::Remove { id: 14 });
        let (_, legs) = ended(&bench, 14);
        assert_eq!(
            (legs[0].foreign_dropped, legs[0].packets, legs[0].unroutable),
            (50 + 3, 7, 0),
            "{backend:?}"
        );
    }
}

#[test]
fn new_sdp_moves_a_latched_leg_to_the_new_address() {
    for backend in BACKENDS {
        let bench = bench(backend, RelayConfig::default());
        let (caller, callee, moved) = (Phone::new(), Phone::new(), Phone::new());
        let (relay_a, relay_b) = install(&bench, 15, &caller, &callee);
        for sequence in 0..25 {
            caller.talk(relay_a, CALLER, sequence);
            assert_eq!(callee.hear(), (CALLER, sequence));
        }
        callee.talk(relay_b, CALLEE, 0);
        assert_eq!(caller.hear(), (CALLEE, 0));
        // A re-INVITE moves the caller's media to another address.
        bench.control.command(RelayCommand::SetPeer {
            id: 15,
            leg: 0,
            peer: moved.addr(),
        });
        assert_eq!(barrier(&bench), []);
        for sequence in 25..30 {
            caller.talk(relay_a, CALLER, sequence);
        }
        for sequence in 0..5 {
            moved.talk(relay_a, CALLER, 1000 + sequence);
        }
        for sequence in 0..5 {
            assert_eq!(
                callee.hear(),
                (CALLER, 1000 + sequence),
                "{backend:?}: only the new address, at once"
            );
        }
        for sequence in 1..6 {
            callee.talk(relay_b, CALLEE, sequence);
            assert_eq!(moved.hear(), (CALLEE, sequence), "{backend:?}");
        }
        assert!(Phone::pending(&caller.rtp).is_empty(), "{backend:?}");
        bench.control.command(RelayCommand::Remove { id: 15 });
        let (_, legs) = ended(&bench, 15);
        assert_eq!(legs[0].foreign_dropped, 5, "{backend:?}");
    }
}
