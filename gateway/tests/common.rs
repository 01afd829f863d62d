//! Shared helpers for the gateway's integration tests: an engine on the quick-start config,
//! fed raw bytes, reporting what it sent back.

use gateway::config::Config;
use gateway::engine::{Engine, Now};
use gateway::sip::message::SipMessage;
use gateway::transport::{Peer, Protocol};
use std::path::Path;
use std::time::Instant;

/// An engine on `examples/office.toml` and a fixed clock.
pub fn office_engine() -> (Engine, Now) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml");
    let config = Config::load(&path).expect("office.toml loads");
    let now = Now {
        mono: Instant::now(),
        unix: 1_700_000_000,
    };
    (Engine::new(config, Vec::new(), [9; 32], now), now)
}

/// A UDP peer on loopback.
pub fn udp_peer() -> Peer {
    Peer {
        protocol: Protocol::Udp,
        addr: "127.0.0.1:5099".parse().unwrap(),
    }
}

/// Feeds one datagram and returns the status codes of the responses sent back.
pub fn answer_codes(engine: &mut Engine, now: Now, bytes: &[u8]) -> Vec<u16> {
    engine.handle_datagram(now, udp_peer(), bytes);
    std::iter::from_fn(|| engine.poll_transmit())
        .filter_map(|out| SipMessage::parse_datagram(&out.bytes).ok())
        .filter_map(|msg| msg.status())
        .filter(|&code| code != 100)
        .collect()
}
