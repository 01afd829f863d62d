//! `[node]`: this gateway node, and the other nodes sharing its PostgreSQL database.

use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// `[node]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Identifier of this gateway node (stored with call contexts and registrations).
    pub id: String,
    /// The SIP address (IP and port) other nodes send this node's calls to, advertised in
    /// the database with each heartbeat; default `sip.listen`. Requests from this node to
    /// the others leave from `sip.listen`, which is what their `peers` must name.
    #[serde(default)]
    pub address: Option<String>,
    /// The SIP addresses of the other nodes (what they listen on). Requests from them that
    /// carry a valid node signature are trusted (no digest challenge); a signature from
    /// anywhere else counts for nothing. Non-empty: this node is part of a cluster.
    #[serde(default)]
    pub peers: Vec<String>,
    /// The secret shared by every node of the cluster, keying the signatures of
    /// node-to-node requests (at least 16 characters).
    #[serde(default)]
    pub secret: Option<String>,
    /// How often this node records in the database that it is alive (seconds).
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// A node whose last heartbeat is older than this (seconds) is dead: one survivor
    /// removes its registrations and closes its calls' CDRs as interrupted.
    #[serde(default = "default_takeover_secs")]
    pub takeover_secs: u64,
    /// How often (milliseconds) this node reads the BLF dialogs other nodes changed: what
    /// keys here see of calls elsewhere when the database cannot notify (no LISTEN, as on
    /// CockroachDB), and a safety net where it can.
    #[serde(default = "default_blf_poll_ms")]
    pub blf_poll_ms: u64,
    /// How the nodes' SIP to each other travels: `udp`, or `tls` (mutual TLS: `peers` name
    /// the other nodes' TLS listeners, this node advertises its own, each side presents
    /// `tls.certificate` and checks the other's against `tls.client_ca`). With `tls`, a
    /// call whose SRTP keys must cross to another node can.
    #[serde(default)]
    pub transport: NodeTransport,
}

/// `[node] transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeTransport {
    /// UDP from and to the SIP listen addresses.
    #[default]
    Udp,
    /// Mutual TLS between the nodes' TLS listeners.
    Tls,
}

fn default_blf_poll_ms() -> u64 {
    1000
}

/// The shortest BLF poll interval (a database read per node this often).
const MIN_BLF_POLL_MS: u64 = 50;
/// The longest: well within the time BLF tombstones are kept
/// ([`crate::store::TOMBSTONE_KEEP_MS`]), so each poll reads only what changed.
const MAX_BLF_POLL_MS: u64 = 10_000;

fn default_heartbeat_secs() -> u64 {
    2
}

fn default_takeover_secs() -> u64 {
    10
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: "gw1".into(),
            address: None,
            peers: Vec::new(),
            secret: None,
            heartbeat_secs: default_heartbeat_secs(),
            takeover_secs: default_takeover_secs(),
            blf_poll_ms: default_blf_poll_ms(),
            transport: NodeTransport::default(),
        }
    }
}

impl NodeConfig {
    /// Whether this node shares its database with other nodes (`peers` set).
    pub fn is_clustered(&self) -> bool {
        !self.peers.is_empty()
    }

    /// The other nodes' SIP addresses (validated at load time).
    pub fn peer_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers.iter().filter_map(|p| p.parse().ok())
    }

    /// Whether `addr` is one of the other nodes.
    pub fn is_peer(&self, addr: SocketAddr) -> bool {
        self.peer_addrs().any(|peer| peer == addr)
    }

    /// The inter-node address this node advertises (`address`, else `listen`: the SIP
    /// listen address, or with `transport = "tls"` the TLS one).
    pub fn advertised(&self, listen: SocketAddr) -> SocketAddr {
        self.address
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(listen)
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// How long a node may stay silent before it is taken over.
    pub fn takeover(&self) -> Duration {
        Duration::from_secs(self.takeover_secs)
    }

    /// How often other nodes' BLF changes are polled.
    pub fn blf_poll(&self) -> Duration {
        Duration::from_millis(self.blf_poll_ms)
    }

    /// What is wrong with the section, as (key, problem), given `sip.listen` and whether the
    /// database is PostgreSQL.
    pub(super) fn problem(
        &self,
        listen: SocketAddr,
        shared_database: bool,
    ) -> Option<(&'static str, String)> {
        if self.id.is_empty() || self.id.len() > 64 || self.id.contains([';', ',', ' ', '"']) {
            return Some((
                "node.id",
                "must be 1 to 64 characters without spaces, ';', ',' or '\"'".into(),
            ));
        }
        for peer in &self.peers {
            match peer.parse::<SocketAddr>() {
                Ok(addr) if !addr.ip().is_unspecified() && addr.port() != 0 => {}
                _ => {
                    return Some((
                        "node.peers",
                        format!("{peer:?} is not a node's SIP address, e.g. \"192.168.1.11:5060\""),
                    ))
                }
            }
        }
        if let Some(address) = &self.address {
            match address.parse::<SocketAddr>() {
                Ok(addr) if !addr.ip().is_unspecified() && addr.port() != 0 => {}
                _ => {
                    return Some((
                        "node.address",
                        format!(
                            "{address:?} is not an address other nodes can reach, e.g. \"192.168.1.10:5060\""
                        ),
                    ))
                }
            }
        }
        if !self.is_clustered() {
            return None;
        }
        if !shared_database {
            return Some((
                "node.peers",
                "nodes share a PostgreSQL database: set database.url".into(),
            ));
        }
        if self.secret.as_ref().is_none_or(|s| s.len() < 16) {
            return Some((
                "node.secret",
                "required with node.peers: the same secret of at least 16 characters on every node"
                    .into(),
            ));
        }
        if self.address.is_none() && listen.ip().is_unspecified() {
            return Some((
                "node.address",
                "required with a wildcard sip.listen: the address other nodes reach this one at"
                    .into(),
            ));
        }
        if self.heartbeat_secs == 0 || self.takeover_secs < 2 * self.heartbeat_secs {
            return Some((
                "node.takeover_secs",
                "need heartbeat_secs >= 1 and takeover_secs >= 2 * heartbeat_secs".into(),
            ));
        }
        if !(MIN_BLF_POLL_MS..=MAX_BLF_POLL_MS).contains(&self.blf_poll_ms) {
            return Some((
                "node.blf_poll_ms",
                format!("must be between {MIN_BLF_POLL_MS} and {MAX_BLF_POLL_MS} (milliseconds)"),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn problem(node: &str, database: &str) -> String {
        let text = format!(
            "[sip]\nlisten = \"127.0.0.1:5060\"\n[database]\n{database}\n[node]\nid = \"a\"\n{node}\n"
        );
        match Config::from_toml(&text, Path::new("gw.toml")) {
            Ok(_) => "accepted".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_cluster_needs_postgres_a_secret_and_node_addresses() {
        let pg = "url = \"postgres://gw@db/gw\"";
        let ok = "peers = [\"10.0.0.2:5060\"]\nsecret = \"0123456789abcdef\"";
        assert_eq!(problem(ok, pg), "accepted");
        assert!(problem(ok, "path = \"gw.db\"")
            .contains("`node.peers`: nodes share a PostgreSQL database"));
        assert!(problem("peers = [\"10.0.0.2:5060\"]", pg).contains("`node.secret`"));
        assert!(
            problem("peers = [\"10.0.0.2\"]\nsecret = \"0123456789abcdef\"", pg)
                .contains("is not a node's SIP address")
        );
        assert!(problem(&format!("{ok}\ntakeover_secs = 3"), pg).contains("takeover_secs >= 2"));
        assert!(problem("address = \"0.0.0.0:5060\"", pg).contains("`node.address`"));
        assert!(problem(&format!("{ok}\nblf_poll_ms = 20"), pg).contains("`node.blf_poll_ms`"));
        assert_eq!(problem(&format!("{ok}\nblf_poll_ms = 250"), pg), "accepted");
        // Alone (no peers) nothing else is needed, on either backend.
        assert_eq!(problem("", "path = \"gw.db\""), "accepted");
    }
}
