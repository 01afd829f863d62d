//! File descriptors: the process limit (RLIMIT_NOFILE) raised to its hard limit at start,
//! and the share of it the TCP transport may use once the store, the media relay and the
//! analog ports have theirs. Without a cap below the limit, a flood of idle connections
//! takes every descriptor and `accept` fails for everyone.

use crate::config::{AnchorMode, Config};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors for everything that is neither a connection nor counted below: standard
/// streams, the log, listening sockets, the fast path workers' rings and eventfds, tokio's
/// own, the analog control socket.
const BASE_RESERVE: u64 = 64;
/// SQLite: the database, its WAL and shared memory, a journal, the sync thread's WAL handle.
const STORE_RESERVE: u64 = 16;
/// Per analog port: the channel, its duplicate in the ring, its RTP socket, one spare.
const PER_ANALOG_PORT: u64 = 4;
/// An anchored call binds two port pairs: four sockets.
const PER_ANCHORED_CALL: u64 = 4;

/// The descriptor limit after [`raise_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now (the hard limit, unless raising it failed).
    pub now: u64,
}

/// Why the limit could not be read or raised.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// getrlimit failed (should not happen).
    #[error("cannot read the descriptor limit (RLIMIT_NOFILE): {0}")]
    Read(nix::Error),
    /// setrlimit refused the hard limit.
    #[error(
        "cannot raise the descriptor limit from {soft} to the hard limit {hard}: {source}; \
         the gateway runs with {soft} (raise it with `ulimit -n` or systemd's LimitNOFILE=)"
    )]
    Raise {
        /// The soft limit kept.
        soft: u64,
        /// The hard limit asked for.
        hard: u64,
        /// The OS error.
        source: nix::Error,
    },
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (a process may always do so), so the
/// gateway is not held to the 1,024 most shells and services start with.
pub fn raise_limit() -> Result<NofileLimit, LimitError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(LimitError::Read)?;
    if soft >= hard {
        return Ok(NofileLimit {
            before: soft,
            now: soft,
        });
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|source| LimitError::Raise {
        soft,
        hard,
        source,
    })?;
    Ok(NofileLimit {
        before: soft,
        now: hard,
    })
}

/// What the descriptor limit must leave for other than TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserve {
    /// Standard streams, sockets, rings (see `BASE_RESERVE`).
    pub base: u64,
    /// The SQLite store.
    pub store: u64,
    /// The media relay's sockets: the whole port range when every call is anchored, four
    /// per analog port when only calls with an analog leg are, none when none is.
    pub media: u64,
    /// The analog ports.
    pub analog: u64,
}

impl Reserve {
    /// The reserve of a gateway with `config` and `analog_ports` analog ports.
    pub fn for_gateway(config: &Config, analog_ports: usize) -> Reserve {
        let ports = analog_ports as u64;
        let range = u64::from(config.media.port_max) - u64::from(config.media.port_min) + 1;
        let media = match config.media.anchor {
            AnchorMode::Never => 0,
            AnchorMode::Always => range,
            AnchorMode::Analog => range.min(PER_ANCHORED_CALL * ports),
        };
        Reserve {
            base: BASE_RESERVE,
            store: STORE_RESERVE,
            media,
            analog: PER_ANALOG_PORT * ports,
        }
    }

    /// All of it.
    pub fn total(&self) -> u64 {
        self.base + self.store + self.media + self.analog
    }
}

/// The TCP connection cap for a descriptor `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpCap {
    /// Connections allowed: `tcp.max_connections`, lowered to what the limit leaves.
    pub connections: usize,
    /// True when the reserve left less than a quarter of the limit and TCP was given that
    /// quarter anyway (the media range cannot then be used in full).
    pub short: bool,
}

/// `min(configured, limit - reserve)`; when that leaves TCP less than a quarter of the
/// limit, a quarter (a gateway whose media range alone exceeds the limit still serves
/// TCP), and never less than one.
pub fn tcp_cap(configured: usize, limit: u64, reserve: &Reserve) -> TcpCap {
    let left = limit.saturating_sub(reserve.total());
    let quarter = limit / 4;
    let (available, short) = if left < quarter {
        (quarter, true)
    } else {
        (left, false)
    };
    let available = usize::try_from(available).unwrap_or(usize::MAX);
    TcpCap {
        connections: configured.min(available).max(1),
        short,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(anchor: &str) -> Config {
        let text = format!(
            "[sip]\nlisten = \"127.0.0.1:5060\"\n[database]\npath = \"gw.db\"\n\
[media]\nanchor = \"{anchor}\"\nport_min = 30000\nport_max = 30999\n"
        );
        Config::from_toml(&text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn the_reserve_covers_store_relay_and_analog_ports() {
        let always = Reserve::for_gateway(&config("always"), 2);
        assert_eq!(always.media, 1000);
        assert_eq!(always.analog, 8);
        assert_eq!(always.total(), 64 + 16 + 1000 + 8);
        assert_eq!(Reserve::for_gateway(&config("analog"), 2).media, 8);
        assert_eq!(Reserve::for_gateway(&config("never"), 0).total(), 80);
    }

    #[test]
    fn the_tcp_cap_fits_the_descriptor_limit() {
        let reserve = Reserve::for_gateway(&config("analog"), 3);
        // 1,024 descriptors: 1024 - (64 + 16 + 12 + 12) = 920.
        assert_eq!(
            tcp_cap(4096, 1024, &reserve),
            TcpCap {
                connections: 920,
                short: false
            }
        );
        assert_eq!(tcp_cap(100, 1024, &reserve).connections, 100);
        assert_eq!(tcp_cap(4096, 1 << 20, &reserve).connections, 4096);
        // A media range larger than the limit still leaves TCP a quarter.
        let always = Reserve::for_gateway(&config("always"), 0);
        assert_eq!(
            tcp_cap(4096, 1024, &always),
            TcpCap {
                connections: 256,
                short: true
            }
        );
        assert_eq!(tcp_cap(4096, 2, &always).connections, 1);
    }
}
