//! The RTP relay on both backends: media both ways with RTCP on port+1, latching and the RTP
//! Bleed defence, per-leg counters, removal and idle timeout (ports released).

use crossbeam_channel::Receiver;
use fastpath::relay::{EndReason, LegSockets, RelayCommand, RelayConfig, RelayEvent, RelayHandler};
use fastpath::udp::{BackendChoice, SendHandle, Worker, WorkerConfig};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const BACKENDS: [BackendChoice; 2] = [BackendChoice::IoUring, BackendChoice::Epoll];

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
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
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
}

fn rtp(sequence: u16, timestamp: u32) -> Vec<u8> {
    let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    packet[2..4].copy_from_slice(&sequence.to_be_bytes());
    packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&[0xd5; 160]);
    packet
}

/// Installs relay `id` between phones `a` and `b`; returns the relay's two RTP addresses.
fn install(bench: &Bench, id: u64, a: &Phone, b: &Phone) -> (SocketAddr, SocketAddr) {
    let (leg_a, leg_b) = (port_pair(), port_pair());
    let addrs = (leg_a.0.local_addr().unwrap(), leg_b.0.local_addr().unwrap());
    assert!(bench.control.command(RelayCommand::Install {
        id,
        legs: [
            LegSockets {
                rtp: leg_a.0,
                rtcp: leg_a.1,
                peer: Some(a.addr())
            },
            LegSockets {
                rtp: leg_b.0,
                rtcp: leg_b.1,
                peer: Some(b.addr())
            },
        ],
    }));
    std::thread::sleep(Duration::from_millis(50)); // the worker takes the command
    addrs
}

fn next_event(bench: &Bench) -> RelayEvent {
    bench
        .events
        .recv_timeout(Duration::from_secs(5))
        .expect("an event within 5 s")
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
        assert!(bench.control.command(RelayCommand::Remove { id: 1 }));
        let RelayEvent::Ended { id, reason, legs } = next_event(&bench) else {
            panic!("ended");
        };
        assert_eq!((id, reason), (1, EndReason::Removed));
        assert_eq!(
            (legs[0].packets, legs[0].lost, legs[0].rtcp_packets),
            (95, 5, 1),
            "{backend:?}"
        );
        assert_eq!(legs[0].bytes, 95 * 172);
        assert_eq!((legs[1].packets, legs[1].rtcp_packets), (1, 1));
        // The ports are closed: they can be bound again.
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            UdpSocket::bind(relay_a).is_ok(),
            "{backend:?}: port released"
        );
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
fn a_latched_leg_drops_packets_from_any_other_source() {
    for backend in BACKENDS {
        let config = RelayConfig {
            latch_packets: 5,
            ..RelayConfig::default()
        };
        let bench = bench(backend, config);
        let (a, b) = (Phone::new(), Phone::new());
        let (relay_a, relay_b) = install(&bench, 2, &a, &b);
        // A's NAT rebinds during the first packets: the relay follows the new address.
        let nat = Phone::new();
        nat.rtp.send_to(&rtp(0, 0), relay_a).unwrap();
        Phone::receive(&b.rtp).expect("first packet relayed");
        for sequence in 1..10 {
            a.rtp.send_to(&rtp(sequence, 0), relay_a).unwrap();
            Phone::receive(&b.rtp).expect("relayed");
        }
        // B's packets go to where A's packets come from.
        for sequence in 0..5 {
            b.rtp.send_to(&rtp(sequence, 0), relay_b).unwrap();
            assert!(Phone::receive(&a.rtp).is_some());
        }
        // An attacker (RTP Bleed) gets nothing through and nothing back.
        let attacker = Phone::new();
        attacker.rtp.send_to(&rtp(99, 0), relay_a).unwrap();
        attacker.rtp.send_to(&rtp(99, 0), relay_b).unwrap();
        assert!(Phone::receive(&b.rtp).is_none(), "{backend:?}");
        assert!(Phone::receive(&attacker.rtp).is_none());
        bench.control.command(RelayCommand::Remove { id: 2 });
        let RelayEvent::Ended { legs, .. } = next_event(&bench) else {
            panic!("ended");
        };
        assert_eq!(legs[0].foreign_dropped, 1, "{backend:?}");
        assert_eq!(legs[1].foreign_dropped, 1, "{backend:?}");
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
        let (leg_a, leg_b) = (port_pair(), port_pair());
        let relay_a = leg_a.0.local_addr().unwrap();
        bench.control.command(RelayCommand::Install {
            id: 3,
            legs: [
                LegSockets {
                    rtp: leg_a.0,
                    rtcp: leg_a.1,
                    peer: None,
                },
                LegSockets {
                    rtp: leg_b.0,
                    rtcp: leg_b.1,
                    peer: None,
                },
            ],
        });
        std::thread::sleep(Duration::from_millis(50));
        let a = Phone::new();
        a.rtp.send_to(&rtp(0, 0), relay_a).unwrap(); // B unknown yet: not relayed
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        let tick = |secs| {
            bench.control.command(RelayCommand::Tick {
                now: start + Duration::from_secs(secs),
            })
        };
        let quiet = || {
            bench
                .events
                .recv_timeout(Duration::from_millis(200))
                .is_err()
        };
        tick(0);
        tick(40);
        assert!(
            quiet(),
            "B unknown (a ringing call): silence is not idleness"
        );
        // The answer names B: from now on silence counts.
        let far_b = Phone::new();
        bench.control.command(RelayCommand::SetPeer {
            id: 3,
            leg: 1,
            peer: far_b.addr(),
        });
        tick(41);
        tick(51);
        assert!(quiet(), "not idle yet");
        tick(72);
        let RelayEvent::Ended { id, reason, legs } = next_event(&bench) else {
            panic!("ended");
        };
        assert_eq!((id, reason), (3, EndReason::Idle));
        assert_eq!((legs[0].packets, legs[0].unroutable), (1, 1), "{backend:?}");
        bench.control.command(RelayCommand::Remove { id: 3 });
        assert!(
            bench
                .events
                .recv_timeout(Duration::from_millis(200))
                .is_err(),
            "ended once"
        );
    }
}
