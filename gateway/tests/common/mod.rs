//! Shared helpers for the gateway's integration tests: an engine on the quick-start config,
//! fed raw bytes, reporting what it sent back.

// Each test binary uses a different part of these helpers.
#![allow(dead_code)]

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
        unix_ms: 1_700_000_000_000,
    };
    (Engine::new(config, Default::default(), [9; 32], now), now)
}

/// A UDP peer on loopback.
pub fn udp_peer() -> Peer {
    Peer {
        protocol: Protocol::Udp,
        addr: "127.0.0.1:5099".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
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

/// The bytes of `tests/fixtures/<set>/<name>.dat`.
pub fn fixture(set: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(set)
        .join(format!("{name}.dat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How many `.dat` fixtures a set holds.
pub fn fixture_count(set: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(set);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "dat"))
        })
        .count()
}

/// Checks that each fixture of `set` gets exactly the expected answer (None: nothing sent).
pub fn check_dispositions(set: &str, dispositions: &[(&str, Option<u16>)]) {
    assert_eq!(
        fixture_count(set),
        dispositions.len(),
        "one disposition per fixture"
    );
    let mut wrong = Vec::new();
    for (name, expected) in dispositions {
        let (mut engine, now) = office_engine();
        let codes = answer_codes(&mut engine, now, &fixture(set, name));
        if codes.first().copied() != *expected || codes.len() > 1 {
            wrong.push(format!("{name}: expected {expected:?}, got {codes:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong dispositions:\n{}",
        wrong.join("\n")
    );
}

/// A small deterministic xorshift generator for mutation tests.
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Every fixture of a set, with its name.
pub fn fixtures(set: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(set);
    let mut all: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .map(|p| {
            let name = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            (
                name,
                std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            )
        })
        .collect();
    all.sort();
    all
}
