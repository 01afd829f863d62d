//! The whole sans-IO engine on arbitrary input: datagrams (split at 0xff bytes) from a few
//! sources, with time moving on between them. Exercises validation, transactions, digest
//! authentication, the failure guard, the registrar, the B2BUA, pickup and SDP handling.
//! Nothing may panic, and everything sent must parse.
#![no_main]

use gateway::config::Config;
use gateway::engine::{Engine, Now};
use gateway::sip::message::SipMessage;
use gateway::transport::{Peer, Protocol};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[sip]
listen = "127.0.0.1:5060"
[auth]
realm = "office"
algorithms = ["SHA-256", "MD5"]
[database]
path = "unused.db"
[media]
anchor = "always"
port_min = 30000
port_max = 30100
[[extension]]
number = "201"
password = "pw201"
call_groups = ["sales"]
pickup_groups = ["sales"]
[[extension]]
number = "202"
password = "pw202"
call_groups = ["sales"]
pickup_groups = ["sales"]
"#;

static CONFIG_PARSED: LazyLock<Config> =
    LazyLock::new(|| Config::from_toml(CONFIG, Path::new("fuzz.toml")).expect("fuzz config"));

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = Now {
        mono: start,
        unix_ms: 1_700_000_000_000,
    };
    let mut engine = Engine::new(CONFIG_PARSED.clone(), Default::default(), [9; 32], now);
    for (i, datagram) in data.split(|&b| b == 0xff).enumerate() {
        let peer = Peer {
            protocol: if i % 3 == 2 { Protocol::Tcp } else { Protocol::Udp },
            addr: format!("127.0.0.{}:50{:02}", 1 + i % 3, i % 7).parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        };
        engine.handle_datagram(now, peer, datagram);
        now.mono += Duration::from_millis(700);
        now.unix_ms += 700;
        engine.handle_timeout(now);
        while let Some(out) = engine.poll_transmit() {
            assert!(
                SipMessage::parse_datagram(&out.bytes).is_ok(),
                "the engine sent something that does not parse: {:?}",
                out.bytes
            );
        }
        while engine.poll_store_command().is_some() {}
        while engine.poll_media_command().is_some() {}
    }
});
