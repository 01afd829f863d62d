//! The runtime's side of media anchoring: a fast path worker running the RTP relay, the
//! engine's [`MediaCommand`]s turned into bound port pairs and relay commands, and the
//! relay's reports handed back to the engine.

use crate::config::Config;
use crate::engine::media::MediaCommand;
use crossbeam_channel::Receiver;
use fastpath::relay::{
    LegReport, LegSockets, RelayCommand, RelayConfig, RelayEvent, RelayHandler, RelayReport,
};
use fastpath::udp::{BackendKind, FastpathError, SendHandle, Worker, WorkerConfig, WorkerFailure};
use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

/// The media relay of a running gateway.
pub struct MediaRelay {
    worker: Worker<RelayCommand>,
    control: SendHandle<RelayCommand>,
    events: Receiver<RelayEvent>,
    ip: IpAddr,
}

impl MediaRelay {
    /// Starts the relay worker on the configured fast path backend.
    pub fn start(config: &Config) -> Result<MediaRelay, FastpathError> {
        let (events_tx, events) = crossbeam_channel::unbounded();
        let relay_config = RelayConfig {
            idle_timeout: Duration::from_secs(config.media.idle_timeout_secs),
            probation_packets: config.media.probation_packets,
            ..RelayConfig::default()
        };
        let worker_config = WorkerConfig {
            name: "rtp-relay".into(),
            backend: config.fastpath.backend.worker_backend(),
            core: config
                .fastpath
                .cores
                .get(1)
                .or(config.fastpath.cores.first())
                .copied(),
            buffer_size: 2048,
            buffers: 1024,
            tick: None,
        };
        let worker = Worker::spawn(
            worker_config,
            Vec::new(),
            RelayHandler::new(relay_config, events_tx),
        )?;
        Ok(MediaRelay {
            control: worker.sender(),
            worker,
            events,
            ip: config.media_bind_ip(),
        })
    }

    /// The backend the relay runs on.
    pub fn backend(&self) -> BackendKind {
        self.worker.backend()
    }

    /// Calls `report` if the relay's worker stops by itself (no media is relayed any more).
    pub fn on_failure(&self, report: impl FnOnce(WorkerFailure) + Send + 'static) {
        self.worker.on_failure(report);
    }

    /// The RTP and RTCP sockets of one side (on `[::]`, dual stack).
    fn bind_pair(&self, port: u16) -> std::io::Result<(UdpSocket, UdpSocket)> {
        Ok((
            fastpath::udp::bind((self.ip, port).into())?,
            fastpath::udp::bind((self.ip, port + 1).into())?,
        ))
    }

    /// Carries out one of the engine's media commands.
    pub fn apply(&self, command: MediaCommand) {
        let relay_command = match command {
            MediaCommand::Install {
                relay,
                a_port,
                b_port,
            } => match (self.bind_pair(a_port), self.bind_pair(b_port)) {
                (Ok(a), Ok(b)) => RelayCommand::Install {
                    id: relay,
                    legs: [
                        LegSockets {
                            rtp: a.0,
                            rtcp: a.1,
                            peer: None,
                        },
                        LegSockets {
                            rtp: b.0,
                            rtcp: b.1,
                            peer: None,
                        },
                    ],
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(
                        "media relay {relay}: cannot bind ports {a_port}/{b_port} on {}: {e} (is another program using the [media] port range?)",
                        self.ip
                    );
                    return;
                }
            },
            MediaCommand::SetPeer { relay, leg, peer } => RelayCommand::SetPeer {
                id: relay,
                leg,
                peer,
            },
            MediaCommand::Remove { relay } => RelayCommand::Remove { id: relay },
        };
        self.control.command(relay_command);
    }

    /// The clock, for idle relays.
    pub fn tick(&self, now: Instant) {
        self.control.command(RelayCommand::Tick { now });
    }

    /// Asks the relay for its counters: they arrive on the receiver.
    pub fn report(&self) -> Receiver<RelayReport> {
        let (reply, report) = crossbeam_channel::bounded(1);
        self.control.command(RelayCommand::Report { reply });
        report
    }

    /// Relays that ended since the last call: number, whether by idle timeout, counters.
    pub fn ended(&self) -> Vec<(u64, bool, [LegReport; 2])> {
        let mut ended = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            match event {
                RelayEvent::Ended { id, reason, legs } => {
                    tracing::info!("media relay {id} ended ({reason:?})");
                    let idle = reason == fastpath::relay::EndReason::Idle;
                    ended.push((id, idle, legs));
                }
                RelayEvent::Failed { id, problem } => {
                    tracing::error!("media relay {id}: {problem}")
                }
            }
        }
        ended
    }
}
