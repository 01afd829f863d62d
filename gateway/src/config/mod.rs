//! Gateway configuration: TOML file, validated at start-up.
//!
//! Every error names the file, the key and what is wrong, so an operator can fix it without
//! reading code. Unknown keys are rejected (a typo must not silently fall back to a default).

pub mod address;
mod directory;
mod node;
pub mod reload;
mod subscriptions;

use address::HostPort;
use directory::Directory;
pub use node::{NodeConfig, NodeTransport};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use subscriptions::{BlfOthers, SubscriptionsConfig};

/// A configuration problem, with enough context to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML is malformed or a key has the wrong type / is unknown.
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A key has a value that is well-typed but not acceptable.
    #[error("config file {path}: key `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// Digest algorithms the registrar can offer (RFC 8760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    /// SHA-256, preferred by RFC 8760.
    #[serde(rename = "SHA-256")]
    Sha256,
    /// MD5, for older user agents.
    #[serde(rename = "MD5")]
    Md5,
}

impl DigestAlgorithm {
    /// The token used in `algorithm=` parameters.
    pub fn token(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "SHA-256",
            DigestAlgorithm::Md5 => "MD5",
        }
    }
}

/// How a picker is connected to the call it picks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PickupMode {
    /// INVITE with Replaces when the phone advertises `Supported: replaces`, else bridge.
    #[default]
    Auto,
    /// Always send the INVITE with Replaces (falls back on 420/481/488 or silence).
    Replaces,
    /// Never: answer the picker's own INVITE and bridge it (phones without Replaces).
    Bridge,
}

/// SIP transports the gateway can listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TransportName {
    /// UDP datagrams.
    Udp,
    /// TCP streams.
    Tcp,
    /// TLS over TCP (`[tls]`: certificate, key, port 5061 by default).
    Tls,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node.
    #[serde(default)]
    pub node: NodeConfig,
    /// SIP listening and identity.
    pub sip: SipConfig,
    /// Digest authentication.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Registrar limits.
    #[serde(default)]
    pub registrar: RegistrarConfig,
    /// Call handling.
    #[serde(default)]
    pub calls: CallsConfig,
    /// Feature codes.
    #[serde(default)]
    pub features: FeaturesConfig,
    /// Where state is kept.
    pub database: DatabaseConfig,
    /// The extensions (SIP phones) served: read through [`Config::extensions`] and the
    /// lookups, which [`Config::from_toml`] indexes.
    #[serde(default, rename = "extension")]
    extensions: Vec<ExtensionConfig>,
    /// The index of `extensions`.
    #[serde(skip)]
    directory: Directory,
    /// Analog ports (DAHDI), if this gateway has any.
    #[serde(default)]
    pub analog: Option<AnalogConfig>,
    /// The fast path for UDP.
    #[serde(default)]
    pub fastpath: FastpathConfig,
    /// Media anchoring.
    #[serde(default)]
    pub media: MediaConfig,
    /// Overload control.
    #[serde(default)]
    pub overload: OverloadConfig,
    /// Defences of the TCP transport: timeouts and connection caps.
    #[serde(default)]
    pub tcp: TcpConfig,
    /// SIP over TLS: the listener, its certificate and client verification.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Dialog event subscriptions (BLF keys).
    #[serde(default)]
    pub subscriptions: SubscriptionsConfig,
    /// The operator's views: the control socket, metrics and the status page.
    #[serde(default)]
    pub status: StatusConfig,
    /// SIP capture to a pcap file or a HEP collector.
    #[serde(default)]
    pub trace: TraceConfig,
    /// The file it was loaded from (what a reload reads again).
    #[serde(skip)]
    source: Option<PathBuf>,
}

/// `[trace]`: SIP capture (see [`crate::trace`]); off when neither `pcap` nor `hep` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// The pcap file SIP messages are written to (Wireshark, tshark).
    #[serde(default)]
    pub pcap: Option<PathBuf>,
    /// A pcap file is rotated once it passes this size (MB).
    #[serde(default = "default_pcap_max_megabytes")]
    pub pcap_max_megabytes: u64,
    /// How many pcap files are kept (the current one and `.1`, `.2`...).
    #[serde(default = "default_pcap_files")]
    pub pcap_files: u32,
    /// The Homer (HEP3) collector SIP messages are sent to, e.g. `192.0.2.50:9060`.
    #[serde(default)]
    pub hep: Option<SocketAddr>,
    /// The capture agent id HEP packets carry.
    #[serde(default = "default_hep_capture_id")]
    pub hep_capture_id: u32,
    /// The collector's password, when it wants one.
    #[serde(default)]
    pub hep_password: Option<String>,
}

fn default_pcap_max_megabytes() -> u64 {
    10
}

fn default_pcap_files() -> u32 {
    5
}

fn default_hep_capture_id() -> u32 {
    2001
}

impl Default for TraceConfig {
    fn default() -> TraceConfig {
        TraceConfig {
            pcap: None,
            pcap_max_megabytes: default_pcap_max_megabytes(),
            pcap_files: default_pcap_files(),
            hep: None,
            hep_capture_id: default_hep_capture_id(),
            hep_password: None,
        }
    }
}

/// `[status]`: how operators look at the running gateway.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// The control socket `gateway status` talks to (owner and group only); default
    /// `control.sock` beside the SQLite database (in the working directory with
    /// PostgreSQL).
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Where the HTTP listener serves `/metrics` (Prometheus) and the status page; off
    /// when absent. Meant for loopback (`127.0.0.1:9099`): it shows every call to whoever
    /// reaches it.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
}

impl StatusConfig {
    /// The control socket's path.
    pub fn control_socket_path(&self, database: &DatabaseConfig) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| beside_database(database, "control.sock"))
    }
}

/// A file named `name` in the SQLite database's directory (the working directory with
/// PostgreSQL).
fn beside_database(database: &DatabaseConfig, name: &str) -> PathBuf {
    beside(database.path.as_deref(), name)
}

fn beside(database_path: Option<&Path>, name: &str) -> PathBuf {
    database_path.unwrap_or(Path::new(".")).with_file_name(name)
}

/// The control socket the config file at `path` names, read leniently (any valid TOML):
/// `gateway status reload` must reach the running gateway, and hear why it refuses, even
/// when the edited file does not load.
pub fn control_socket_of_file(path: &Path) -> Option<PathBuf> {
    let table: toml::Table = std::fs::read_to_string(path).ok()?.parse().ok()?;
    let named =
        |section: &str, key: &str| table.get(section)?.get(key)?.as_str().map(PathBuf::from);
    named("status", "control_socket")
        .or_else(|| Some(beside(named("database", "path").as_deref(), "control.sock")))
}

/// `[overload]`: what happens when SIP arrives faster than the control plane serves it
/// (see [`crate::overload`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadConfig {
    /// Datagrams queued from the fast path per class (priority, new) at most; more are
    /// dropped and counted.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// A new request (INVITE, REGISTER...) that waited longer than this is answered
    /// 503 instead of being served late (milliseconds).
    #[serde(default = "default_max_queue_delay_ms")]
    pub max_queue_delay_ms: u64,
    /// The `Retry-After` of those 503s (seconds).
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u32,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            queue_capacity: default_queue_capacity(),
            max_queue_delay_ms: default_max_queue_delay_ms(),
            retry_after_secs: default_retry_after(),
        }
    }
}

/// `[tcp]`: how long a TCP peer may take and how many connections it may hold, so that
/// idle, slow or numerous connections cannot exhaust memory or descriptors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// A message must be complete this many seconds after its first byte (slowloris).
    #[serde(default = "default_tcp_message_timeout")]
    pub message_timeout_secs: u64,
    /// A connection whose remote address holds no registration is closed after this many
    /// seconds without receiving anything (a message or an RFC 5626 CRLF keep-alive).
    /// Connections of registered phones stay open.
    #[serde(default = "default_tcp_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Open connections allowed from one IP address; more are accepted and closed at once.
    #[serde(default = "default_tcp_max_per_source")]
    pub max_connections_per_source: usize,
    /// Open connections allowed in total; lowered at start to what the descriptor limit
    /// leaves after the store, the media relay and the analog ports.
    #[serde(default = "default_tcp_max_connections")]
    pub max_connections: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            message_timeout_secs: default_tcp_message_timeout(),
            idle_timeout_secs: default_tcp_idle_timeout(),
            max_connections_per_source: default_tcp_max_per_source(),
            max_connections: default_tcp_max_connections(),
        }
    }
}

/// `[tls]`: SIP over TLS (RFC 3261 §26, RFC 5630), served when `sip.transports` names
/// `"tls"`. The `[tcp]` timeouts and connection caps cover TLS connections too (one count).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Where the TLS listener binds; by default `sip.listen`'s address with port 5061.
    pub listen: Option<String>,
    /// The gateway's certificate chain (PEM, its own certificate first, then the
    /// intermediates). Re-read on SIGHUP.
    pub certificate: Option<PathBuf>,
    /// The private key of that certificate (PEM: PKCS#8, RSA or EC). Re-read on SIGHUP.
    pub private_key: Option<PathBuf>,
    /// CA certificates (PEM) a client certificate must chain to. When set, a client that
    /// presents a certificate is verified against them (mutual TLS for trunks and nodes).
    pub client_ca: Option<PathBuf>,
    /// Refuse the handshake of a client without a certificate that chains to `client_ca`.
    #[serde(default)]
    pub require_client_certificate: bool,
}

/// The TLS port of RFC 3261 §26.2 (`sips:`), used when `tls.listen` is not given.
pub const TLS_PORT: u16 = 5061;

fn default_queue_capacity() -> usize {
    10_000
}
fn default_max_queue_delay_ms() -> u64 {
    100
}
fn default_retry_after() -> u32 {
    5
}
fn default_tcp_message_timeout() -> u64 {
    10
}
fn default_tcp_idle_timeout() -> u64 {
    60
}
fn default_tcp_max_per_source() -> usize {
    32
}
fn default_tcp_max_connections() -> usize {
    4096
}

/// `[media]`: whether calls' RTP goes through the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// `always`, `analog` (calls with an analog leg) or `never`.
    #[serde(default)]
    pub anchor: AnchorMode,
    /// First port of the relay's range (RTP on even ports, RTCP on the next).
    #[serde(default = "default_port_min")]
    pub port_min: u16,
    /// Last port of the range.
    #[serde(default = "default_port_max")]
    pub port_max: u16,
    /// The address the relay binds and anchored SDP names (default: the SIP listen
    /// address). Unspecified (`0.0.0.0`, `::`, or a wildcard listen address): the relay
    /// binds every address and SDP names the address each phone reached the gateway at.
    #[serde(default)]
    pub address: Option<std::net::IpAddr>,
    /// The address SDP names instead (a public address of a gateway behind NAT whose
    /// relay ports are forwarded to it); an IP address.
    #[serde(default)]
    pub advertise: Option<String>,
    /// A relay with no packets for this long ends (seconds).
    #[serde(default = "default_media_idle")]
    pub idle_timeout_secs: u64,
    /// RTP packets (consecutive, in sequence, one SSRC) a source other than the address SDP
    /// gave must send before a relay leg or an analog port with nothing latched takes its
    /// media (a phone behind NAT); the signalled address needs none.
    #[serde(default = "default_probation_packets")]
    pub probation_packets: u32,
    /// SRTP for SIP phones' calls, unless an extension says otherwise (`[[extension]]
    /// srtp`): `off`, `optional` or `required` (see [`SrtpPolicy`]).
    #[serde(default)]
    pub srtp: SrtpPolicy,
}

/// Whether a SIP phone's calls use SRTP (SDES keys, RFC 4568). Keys are only ever sent
/// over TLS, whatever the policy: an offer with keys that arrives in clear is refused, and
/// is never passed to a phone reached in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SrtpPolicy {
    /// Never: an SRTP offer from or to the phone is refused (488).
    Off,
    /// As the phones offer: SRTP when the offer is SRTP, plain RTP when it is not.
    #[default]
    Optional,
    /// Always: a plain RTP offer from or to the phone is refused (488).
    Required,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            anchor: AnchorMode::default(),
            port_min: default_port_min(),
            port_max: default_port_max(),
            address: None,
            advertise: None,
            idle_timeout_secs: default_media_idle(),
            probation_packets: default_probation_packets(),
            srtp: SrtpPolicy::default(),
        }
    }
}

fn default_port_min() -> u16 {
    30_000
}
fn default_port_max() -> u16 {
    39_999
}
fn default_media_idle() -> u64 {
    60
}
fn default_probation_packets() -> u32 {
    fastpath::relay::strict_source::DEFAULT_PROBATION_PACKETS
}

/// `[media] anchor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorMode {
    /// Every call's media goes through the relay.
    Always,
    /// Calls with an analog leg only.
    #[default]
    Analog,
    /// Never: phones send RTP to each other (or to the analog ports) directly.
    Never,
}

/// `[fastpath]`: who serves the UDP SIP socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastpathConfig {
    /// `auto` (io_uring where the kernel allows it, else epoll), `io_uring`, `epoll`, or
    /// `off` (the control plane's own tokio socket).
    #[serde(default)]
    pub backend: FastpathBackend,
    /// CPUs the engine shards' workers are pinned to (shard `i` on the `i`-th); none: not
    /// pinned.
    #[serde(default)]
    pub cores: Vec<usize>,
    /// How many engine shards handle SIP, each on a worker thread of its own with its own
    /// socket (default: one per core in `cores`; without `cores`, one per CPU the gateway
    /// may run on).
    #[serde(default)]
    pub shards: Option<usize>,
}

/// Engine shards at most (`fastpath.shards`).
pub const MAX_SHARDS: usize = 64;

impl Default for FastpathConfig {
    fn default() -> Self {
        FastpathConfig {
            backend: FastpathBackend::Auto,
            cores: Vec::new(),
            shards: None,
        }
    }
}

impl FastpathBackend {
    /// The fast path workers' backend (`off` concerns the SIP socket only: the relay and
    /// the analog ports still run on workers, on epoll).
    pub fn worker_backend(self) -> fastpath::udp::BackendChoice {
        use fastpath::udp::BackendChoice;
        match self {
            FastpathBackend::Auto => BackendChoice::Auto,
            FastpathBackend::IoUring => BackendChoice::IoUring,
            FastpathBackend::Epoll | FastpathBackend::Off => BackendChoice::Epoll,
        }
    }
}

/// `[fastpath] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FastpathBackend {
    /// io_uring, else epoll.
    #[default]
    Auto,
    /// io_uring only (fail to start without it).
    IoUring,
    /// epoll + recvmmsg/sendmmsg.
    Epoll,
    /// No fast path: tokio serves UDP.
    Off,
}

/// `[analog]`: the DAHDI ports, as /etc/dahdi/system.conf configures them, with overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalogConfig {
    /// DAHDI's port configuration file.
    #[serde(default = "default_system_conf")]
    pub system_conf: PathBuf,
    /// Where DAHDI's device nodes live.
    #[serde(default = "default_dahdi_dir")]
    pub dahdi_dir: PathBuf,
    /// Tone zone for every port, instead of system.conf's loadzone/defaultzone.
    #[serde(default)]
    pub zone: Option<String>,
    /// Per-port overrides.
    #[serde(default, rename = "port")]
    pub ports: Vec<AnalogPortConfig>,
    /// The operator interface's Unix socket (demo mode: `gateway analog ...` talks to it);
    /// default `analog.sock` next to the database.
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
}

impl AnalogConfig {
    /// The operator interface's socket path for a gateway whose database is `database`
    /// (next to the SQLite file unless configured; validation requires `control_socket`
    /// with PostgreSQL).
    pub fn control_socket_path(&self, database: &DatabaseConfig) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| beside_database(database, "analog.sock"))
    }
}

/// `[[analog.port]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalogPortConfig {
    /// DAHDI channel number.
    pub channel: u32,
    /// `phone` (FXS port, fxoks signalling) or `line` (FXO port, fxsks signalling).
    #[serde(default)]
    pub kind: Option<PortKind>,
    /// Tone zone for this port.
    #[serde(default)]
    pub zone: Option<String>,
    /// Line ports: the extension or call group that incoming calls ring.
    #[serde(default)]
    pub target: Option<String>,
    /// Line ports: SIP calls to this prefix followed by a number go out on this line.
    #[serde(default)]
    pub dial_prefix: Option<String>,
    /// Line ports: rings before an incoming call is offered (caller ID arrives after the
    /// first).
    #[serde(default = "default_rings_before_offer")]
    pub rings_before_offer: u32,
    /// Line ports: `dtmf` or `pulse` dialling.
    #[serde(default)]
    pub dial_mode: DialModeName,
    /// Line ports: the line reverses polarity when the called party answers, so SIP gets
    /// its 200 OK then (otherwise as soon as the number is dialled).
    #[serde(default)]
    pub answer_supervision: bool,
}

/// How a line port dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialModeName {
    /// Touch tones.
    #[default]
    Dtmf,
    /// Rotary pulses.
    Pulse,
}

fn default_rings_before_offer() -> u32 {
    2
}

/// What is plugged into an analog port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// An analog phone (FXS hardware, FXO kewlstart signalling).
    Phone,
    /// A PSTN line (FXO hardware, FXS kewlstart signalling).
    Line,
}

fn default_system_conf() -> PathBuf {
    PathBuf::from("/etc/dahdi/system.conf")
}

fn default_dahdi_dir() -> PathBuf {
    PathBuf::from("/dev/dahdi")
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// Address and port to listen on, e.g. `192.168.1.10:5060`; `0.0.0.0:5060` listens on
    /// every IPv4 address, `[::]:5060` on every address of both families.
    pub listen: String,
    /// The host (and port) Via, Contact and the gateway's URIs name instead of the address
    /// each peer reached: a public address or name of a gateway behind NAT.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Transports to serve on that address.
    #[serde(default = "default_transports")]
    pub transports: Vec<TransportName>,
    /// Largest accepted message, in bytes.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Dropped-datagram log lines per second, at most.
    #[serde(default = "default_log_rate")]
    pub bad_message_log_per_second: u32,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Digest realm.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Challenge algorithms, in the order offered.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<DigestAlgorithm>,
    /// Seconds a nonce stays valid; older ones get `stale=true`.
    #[serde(default = "default_nonce_lifetime")]
    pub nonce_lifetime_secs: u64,
    /// Failed authentications from one source address, within `failure_window_secs`,
    /// that block the address for `block_secs` (its requests are dropped).
    #[serde(default = "default_max_failures_per_source")]
    pub max_failures_per_source: u32,
    /// Failed authentications against one extension, from any source, within the window,
    /// that lock it for `block_secs`: only trusted networks and the addresses it is
    /// registered from may then authenticate as it (a guesser spread over many addresses).
    #[serde(default = "default_max_failures_per_extension")]
    pub max_failures_per_extension: u32,
    /// The window in which failures are counted.
    #[serde(default = "default_failure_window")]
    pub failure_window_secs: u64,
    /// How long a block or a lock lasts.
    #[serde(default = "default_block")]
    pub block_secs: u64,
    /// Networks (CIDR, e.g. "10.0.0.0/8", "2001:db8::/32", or a single address) never
    /// blocked, e.g. the office LAN or a trusted proxy.
    #[serde(default)]
    pub trusted_networks: Vec<String>,
    /// Log lines about failed authentications and blocks per second, at most.
    #[serde(default = "default_auth_log_per_second")]
    pub log_per_second: u32,
    /// Challenges (401/407) sent to one source address per second, at most; requests
    /// beyond are left unanswered (a phone retransmits), so a spoofed source cannot turn
    /// the gateway into a reflector. Trusted networks are not limited.
    #[serde(default = "default_max_challenges_per_source")]
    pub max_challenges_per_source: u32,
}

impl AuthConfig {
    /// The failure limits for the guard; `trusted_networks` must have been validated.
    pub fn guard(&self) -> crate::auth::guard::GuardConfig {
        crate::auth::guard::GuardConfig {
            max_failures_per_source: self.max_failures_per_source,
            max_failures_per_extension: self.max_failures_per_extension,
            failure_window: Duration::from_secs(self.failure_window_secs),
            block: Duration::from_secs(self.block_secs),
            trusted_networks: self
                .trusted_networks
                .iter()
                .filter_map(|net| parse_network(net).ok())
                .collect(),
            log_per_second: self.log_per_second,
            max_challenges_per_source: self.max_challenges_per_source,
        }
    }
}

/// A CIDR network or a single address (as a /32 or /128).
fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not a network such as \"10.0.0.0/8\" or an address"))
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            realm: default_realm(),
            algorithms: default_algorithms(),
            nonce_lifetime_secs: default_nonce_lifetime(),
            max_failures_per_source: default_max_failures_per_source(),
            max_failures_per_extension: default_max_failures_per_extension(),
            failure_window_secs: default_failure_window(),
            block_secs: default_block(),
            trusted_networks: Vec::new(),
            log_per_second: default_auth_log_per_second(),
            max_challenges_per_source: default_max_challenges_per_source(),
        }
    }
}

/// `[registrar]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarConfig {
    /// Shortest registration accepted (423 below it).
    #[serde(default = "default_min_expires")]
    pub min_expires_secs: u32,
    /// Longest registration granted (longer requests are shortened).
    #[serde(default = "default_max_expires")]
    pub max_expires_secs: u32,
    /// Granted when the request names no expiry.
    #[serde(default = "default_default_expires")]
    pub default_expires_secs: u32,
    /// Most contacts kept per extension.
    #[serde(default = "default_max_contacts")]
    pub max_contacts: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires_secs: default_min_expires(),
            max_expires_secs: default_max_expires(),
            default_expires_secs: default_default_expires(),
            max_contacts: default_max_contacts(),
        }
    }
}

/// `[calls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsConfig {
    /// Seconds an unanswered call rings before the caller gets 480.
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_secs: u64,
    /// Seconds between the durable marks of the calls up: a crash loses at most this much of
    /// their talk time (the next start bills them to their last mark).
    #[serde(default = "default_billing_mark")]
    pub billing_mark_secs: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            ring_timeout_secs: default_ring_timeout(),
            billing_mark_secs: default_billing_mark(),
        }
    }
}

/// `[features]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesConfig {
    /// Group pickup code.
    #[serde(default = "default_group_pickup")]
    pub group_pickup: String,
    /// Directed pickup prefix, followed by the extension.
    #[serde(default = "default_directed_pickup")]
    pub directed_pickup_prefix: String,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig {
            group_pickup: default_group_pickup(),
            directed_pickup_prefix: default_directed_pickup(),
        }
    }
}

/// `[database]`: `path` (SQLite, the embedded default) or `url` (PostgreSQL), one of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// SQLite file (created with its directory if missing).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// PostgreSQL instead, e.g. `postgres://gateway@db.example/gateway` (a unix socket's
    /// directory percent-encoded as the host: `postgres://gateway@%2Frun%2Fpostgresql/gateway`).
    /// `?sslmode=require` for TLS to the server (the server's certificate checked against
    /// `tls_ca`, else the system's trusted CAs, and its name against the URL's host); the
    /// default `prefer` and `disable` connect in clear.
    #[serde(default)]
    pub url: Option<String>,
    /// With `url` and `sslmode=require`: a PEM file of the CA certificates the server's
    /// certificate must chain to (a private CA); default: the system's trusted CAs.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// With `url`: the SQLite file where CDRs wait while PostgreSQL is unreachable
    /// (created with its directory if missing; one per gateway). Unused with `path`.
    #[serde(default = "default_spool")]
    pub spool: PathBuf,
}

/// `database.spool`'s default.
pub fn default_spool() -> PathBuf {
    PathBuf::from("./data/cdr-spool.db")
}

impl DatabaseConfig {
    /// The database as messages name it (file path, or URL without password).
    pub fn describe(&self) -> String {
        match (&self.url, &self.path) {
            (Some(url), _) => crate::store::parse_postgres_url(url)
                .map(|(_, name)| name)
                .unwrap_or_else(|_| "database.url".into()),
            (None, Some(path)) => path.display().to_string(),
            (None, None) => "(no database)".into(),
        }
    }
}

/// `[[extension]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionConfig {
    /// The number dialled to reach it, also the digest user name.
    pub number: String,
    /// Digest password (SIP phones; an analog extension has none).
    #[serde(default)]
    pub password: Option<String>,
    /// The analog phone port (DAHDI channel) this extension is, instead of a SIP phone.
    #[serde(default)]
    pub analog_channel: Option<u32>,
    /// Name shown to callees.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Groups whose pickers may pick up calls ringing this extension.
    #[serde(default)]
    pub call_groups: Vec<String>,
    /// Groups whose ringing calls this extension may pick up.
    #[serde(default)]
    pub pickup_groups: Vec<String>,
    /// Overrides `[auth].algorithms` for this extension.
    #[serde(default)]
    pub auth_algorithms: Option<Vec<DigestAlgorithm>>,
    /// How this extension is connected when it picks up a call.
    #[serde(default)]
    pub pickup_mode: PickupMode,
    /// What subscribers outside its call groups learn from its BLF state.
    #[serde(default)]
    pub blf_others: BlfOthers,
    /// SRTP for this phone's calls, instead of `media.srtp`.
    #[serde(default)]
    pub srtp: Option<SrtpPolicy>,
}

fn default_transports() -> Vec<TransportName> {
    vec![TransportName::Udp, TransportName::Tcp]
}
fn default_max_message_size() -> usize {
    crate::sip::message::MAX_MESSAGE_SIZE
}
fn default_log_rate() -> u32 {
    5
}
fn default_realm() -> String {
    "gateway".into()
}
fn default_algorithms() -> Vec<DigestAlgorithm> {
    vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
}
fn default_nonce_lifetime() -> u64 {
    300
}
fn default_max_failures_per_source() -> u32 {
    5
}
fn default_max_failures_per_extension() -> u32 {
    20
}
fn default_failure_window() -> u64 {
    60
}
fn default_block() -> u64 {
    900
}
fn default_max_challenges_per_source() -> u32 {
    200
}
fn default_auth_log_per_second() -> u32 {
    20
}
fn default_min_expires() -> u32 {
    60
}
fn default_max_expires() -> u32 {
    3600
}
fn default_default_expires() -> u32 {
    3600
}
fn default_max_contacts() -> usize {
    10
}
fn default_ring_timeout() -> u64 {
    60
}
fn default_billing_mark() -> u64 {
    15
}
fn default_group_pickup() -> String {
    "*8".into()
}
fn default_directed_pickup() -> String {
    "**".into()
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_toml(&text, path)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The file the config was loaded from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Parses and validates config text; `path` is used in messages and to resolve the database path.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        config.directory = Directory::new(&config.extensions);
        config.validate(path)?;
        Ok(config)
    }

    /// How many engine shards run: `fastpath.shards`; else one per `fastpath.cores` entry,
    /// or one per CPU the gateway may run on.
    pub fn shard_count(&self) -> usize {
        let cpus = || std::thread::available_parallelism().map_or(1, usize::from);
        let default = match self.fastpath.cores.len() {
            0 => cpus(),
            cores => cores,
        };
        self.fastpath.shards.unwrap_or(default).clamp(1, MAX_SHARDS)
    }

    /// The listening address (validated at load time).
    pub fn listen_addr(&self) -> SocketAddr {
        self.sip
            .listen
            .parse()
            .expect("validated when the config was loaded")
    }

    /// The address this node's SIP reaches the other nodes from and is reached at: the SIP
    /// listen address, or the TLS one when the nodes talk TLS.
    pub fn node_listen_addr(&self) -> SocketAddr {
        match self.node.transport {
            node::NodeTransport::Udp => self.listen_addr(),
            node::NodeTransport::Tls => self.tls_listen_addr(),
        }
    }

    /// The inter-node address this node advertises in the database.
    pub fn node_advertised(&self) -> SocketAddr {
        self.node.advertised(self.node_listen_addr())
    }

    /// Whether SIP over TLS is served (`sip.transports` names `"tls"`).
    pub fn serves_tls(&self) -> bool {
        self.sip.transports.contains(&TransportName::Tls)
    }

    /// The TLS listener's address: `tls.listen`, else `sip.listen`'s address with port
    /// [`TLS_PORT`].
    pub fn tls_listen_addr(&self) -> SocketAddr {
        match &self.tls.listen {
            Some(listen) => listen
                .parse()
                .expect("validated when the config was loaded"),
            None => SocketAddr::new(self.listen_addr().ip(), TLS_PORT),
        }
    }

    /// Ring timeout as a duration.
    pub fn ring_timeout(&self) -> Duration {
        Duration::from_secs(self.calls.ring_timeout_secs)
    }

    /// The interval of the durable marks of the calls up, as a duration.
    pub fn billing_mark(&self) -> Duration {
        Duration::from_secs(self.calls.billing_mark_secs)
    }

    /// The address the media relay binds (unspecified: every address).
    pub fn media_bind_ip(&self) -> std::net::IpAddr {
        self.media
            .address
            .unwrap_or_else(|| self.listen_addr().ip())
    }

    /// The address every SDP the gateway writes names, when one is fixed: `media.advertise`,
    /// else a specified media bind address. None: the address each phone reached.
    pub fn media_advertised(&self) -> Option<std::net::IpAddr> {
        match &self.media.advertise {
            Some(text) => address::parse_media_advertise(text).ok(),
            None => Some(self.media_bind_ip()).filter(|ip| !ip.is_unspecified()),
        }
    }

    /// `sip.advertise`, read (validated at load time).
    pub fn sip_advertised(&self) -> Option<HostPort> {
        self.sip
            .advertise
            .as_deref()
            .and_then(|text| HostPort::parse(text).ok())
    }

    /// The extension bound to analog phone port `channel`, if any.
    pub fn analog_extension(&self, channel: u32) -> Option<&ExtensionConfig> {
        self.directory
            .analog_channel(channel)
            .map(|index| &self.extensions[index])
    }

    /// The analog ports that are trunks (line ports with a target or a dial prefix).
    pub fn trunks(&self) -> impl Iterator<Item = &AnalogPortConfig> {
        self.analog
            .iter()
            .flat_map(|a| a.ports.iter())
            .filter(|p| p.target.is_some() || p.dial_prefix.is_some())
    }

    /// Whether some extension rings for calls to this call group.
    pub fn is_call_group(&self, name: &str) -> bool {
        !self.directory.members(name).is_empty()
    }

    /// The members of call group `name`, in the order of the file (none: no such group).
    pub fn call_group_members(&self, name: &str) -> impl Iterator<Item = &ExtensionConfig> {
        self.directory
            .members(name)
            .iter()
            .map(|&index| &self.extensions[index])
    }

    /// The extension with this number, if configured.
    pub fn extension(&self, number: &str) -> Option<&ExtensionConfig> {
        self.directory
            .number(number)
            .map(|index| &self.extensions[index])
    }

    /// The SRTP policy of SIP extension `number` (its own, else `media.srtp`); None for
    /// analog extensions and unknown numbers (their ports take what is offered).
    pub fn srtp_policy_of(&self, number: &str) -> Option<SrtpPolicy> {
        let extension = self.extension(number)?;
        match extension.analog_channel {
            Some(_) => None,
            None => Some(extension.srtp.unwrap_or(self.media.srtp)),
        }
    }

    /// Every extension, in the order of the file.
    pub fn extensions(&self) -> &[ExtensionConfig] {
        &self.extensions
    }

    /// Challenge algorithms for an extension (its override, else the global list).
    pub fn algorithms_for(&self, number: Option<&str>) -> &[DigestAlgorithm] {
        number
            .and_then(|n| self.extension(n))
            .and_then(|e| e.auth_algorithms.as_deref())
            .unwrap_or(&self.auth.algorithms)
    }

    /// `[tls]`: a listener that parses, a certificate and key that exist when TLS is
    /// served, and a CA for required client certificates. Their content is checked when
    /// the gateway starts ([`crate::transport::tls`]), which names the file at fault.
    fn validate_tls(
        &self,
        invalid: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let tls = &self.tls;
        if let Some(listen) = &tls.listen {
            if listen.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    "tls.listen",
                    format!("{listen:?} is not an address and port, e.g. \"0.0.0.0:5061\""),
                ));
            }
        }
        if self.node.transport == node::NodeTransport::Tls
            && (!self.serves_tls() || tls.client_ca.is_none())
        {
            return Err(invalid(
                "node.transport",
                "\"tls\" needs \"tls\" in sip.transports and tls.client_ca (the CA the \
                 nodes' certificates chain to: they check each other's)"
                    .into(),
            ));
        }
        if tls.require_client_certificate && tls.client_ca.is_none() {
            return Err(invalid(
                "tls.require_client_certificate",
                "needs tls.client_ca, the CA certificates (PEM) client certificates must \
                 chain to"
                    .into(),
            ));
        }
        if !self.serves_tls() {
            return Ok(());
        }
        let required = |key: &str, file: &Option<PathBuf>, what: &str| match file {
            Some(file) => Ok(Some((file.clone(), what.to_string()))),
            None => Err(invalid(
                key,
                format!("required when sip.transports names \"tls\": {what}"),
            )),
        };
        let files = [
            (
                "tls.certificate",
                required(
                    "tls.certificate",
                    &tls.certificate,
                    "the certificate chain (PEM)",
                )?,
            ),
            (
                "tls.private_key",
                required("tls.private_key", &tls.private_key, "its private key (PEM)")?,
            ),
            (
                "tls.client_ca",
                tls.client_ca
                    .clone()
                    .map(|ca| (ca, "CA certificates (PEM)".to_string())),
            ),
        ];
        for (key, (file, what)) in files.iter().filter_map(|(key, f)| Some((key, f.as_ref()?))) {
            if let Err(e) = std::fs::metadata(file) {
                return Err(invalid(key, format!("{}: {e} ({what})", file.display())));
            }
        }
        if self.sip.transports.contains(&TransportName::Tcp)
            && self.tls_listen_addr() == self.listen_addr()
        {
            return Err(invalid(
                "tls.listen",
                "the same address and port as the TCP listener (sip.listen): give TLS its \
                 own port (5061 by default)"
                    .into(),
            ));
        }
        Ok(())
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            problem,
        };
        match self.fastpath.shards {
            Some(shards) if shards == 0 || shards > MAX_SHARDS => {
                return Err(invalid(
                    "fastpath.shards",
                    format!("{shards} is out of range: 1 to {MAX_SHARDS} engine shards"),
                ))
            }
            _ => {}
        }
        match (&self.database.path, &self.database.url) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "database",
                    "set `path` (SQLite) or `url` (PostgreSQL), not both".into(),
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "database",
                    "set `path` (a SQLite file, e.g. \"./data/gw.db\") or `url` (PostgreSQL, \
                     e.g. \"postgres://gateway@db.example/gateway\")"
                        .into(),
                ))
            }
            (None, Some(url)) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(invalid(
                        "database.url",
                        "expected a postgres:// URL, e.g. \"postgres://gateway@db.example/gateway\""
                            .into(),
                    ));
                }
                if let Err(problem) = crate::store::parse_postgres_url(url) {
                    return Err(invalid("database.url", problem));
                }
                if let Some(ca) = &self.database.tls_ca {
                    if let Err(e) = std::fs::metadata(ca) {
                        return Err(invalid(
                            "database.tls_ca",
                            format!("{}: {e} (a PEM file of CA certificates)", ca.display()),
                        ));
                    }
                }
                if self
                    .analog
                    .as_ref()
                    .is_some_and(|a| a.control_socket.is_none())
                {
                    return Err(invalid(
                        "analog.control_socket",
                        "required with database.url (the default is next to the SQLite file), \
                         e.g. \"/run/pots-gateway/analog.sock\""
                            .into(),
                    ));
                }
            }
            (Some(_), None) => {}
        }
        if self.sip.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "sip.listen",
                format!(
                    "{:?} is not an IP address with a port, e.g. \"127.0.0.1:5060\" or \"[::1]:5060\"",
                    self.sip.listen
                ),
            ));
        }
        if let Some(Err(problem)) = self.sip.advertise.as_deref().map(HostPort::parse) {
            return Err(invalid("sip.advertise", problem));
        }
        if let Some(Err(problem)) = self
            .media
            .advertise
            .as_deref()
            .map(address::parse_media_advertise)
        {
            return Err(invalid("media.advertise", problem));
        }
        let analog_ports = self.analog.as_ref().is_some_and(|a| !a.ports.is_empty());
        if analog_ports
            && self.media.anchor == AnchorMode::Never
            && self.media_bind_ip().is_unspecified()
        {
            // Unanchored, the analog ports' own SDP goes to the phones, and it names the
            // address their RTP sockets are bound to.
            return Err(invalid(
                "media.address",
                "the analog ports' RTP needs an address phones can send to: with a wildcard \
                 sip.listen and anchor = \"never\", name it here, e.g. \"192.168.1.10\""
                    .into(),
            ));
        }
        if self.sip.transports.is_empty() {
            return Err(invalid(
                "sip.transports",
                "name at least one of \"udp\", \"tcp\", \"tls\"".into(),
            ));
        }
        self.validate_tls(&invalid)?;
        if !(1024..=crate::sip::message::MAX_MESSAGE_SIZE).contains(&self.sip.max_message_size) {
            return Err(invalid(
                "sip.max_message_size",
                format!(
                    "must be between 1024 and {}",
                    crate::sip::message::MAX_MESSAGE_SIZE
                ),
            ));
        }
        if self.auth.algorithms.is_empty() {
            return Err(invalid(
                "auth.algorithms",
                "offer at least one of \"SHA-256\", \"MD5\"".into(),
            ));
        }
        if self.auth.realm.is_empty() || self.auth.realm.contains('"') {
            return Err(invalid(
                "auth.realm",
                "must be non-empty and contain no double quote".into(),
            ));
        }
        if self.auth.nonce_lifetime_secs == 0 {
            return Err(invalid(
                "auth.nonce_lifetime_secs",
                "must be positive".into(),
            ));
        }
        for (key, value) in [
            (
                "auth.max_failures_per_source",
                self.auth.max_failures_per_source,
            ),
            (
                "auth.max_failures_per_extension",
                self.auth.max_failures_per_extension,
            ),
            (
                "auth.max_challenges_per_source",
                self.auth.max_challenges_per_source,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.overload.queue_capacity == 0 || self.overload.max_queue_delay_ms == 0 {
            return Err(invalid(
                "overload",
                "queue_capacity and max_queue_delay_ms must be positive".into(),
            ));
        }
        for (key, value) in [
            ("auth.failure_window_secs", self.auth.failure_window_secs),
            ("auth.block_secs", self.auth.block_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive".into()));
            }
        }
        if let Some(problem) = self
            .auth
            .trusted_networks
            .iter()
            .find_map(|net| parse_network(net).err())
        {
            return Err(invalid("auth.trusted_networks", problem));
        }
        if let Some((key, problem)) = self
            .node
            .problem(self.listen_addr(), self.database.url.is_some())
        {
            return Err(invalid(key, problem));
        }
        if let Some(problem) = self.subscriptions.problem() {
            return Err(invalid("subscriptions", problem.into()));
        }
        let r = &self.registrar;
        if r.min_expires_secs == 0
            || r.min_expires_secs > r.max_expires_secs
            || !(r.min_expires_secs..=r.max_expires_secs).contains(&r.default_expires_secs)
        {
            return Err(invalid(
                "registrar",
                "need 0 < min_expires_secs <= default_expires_secs <= max_expires_secs".into(),
            ));
        }
        if r.max_contacts == 0 {
            return Err(invalid(
                "registrar.max_contacts",
                "must be at least 1".into(),
            ));
        }
        if self.calls.ring_timeout_secs == 0 {
            return Err(invalid(
                "calls.ring_timeout_secs",
                "must be positive".into(),
            ));
        }
        if self.calls.billing_mark_secs == 0 {
            return Err(invalid(
                "calls.billing_mark_secs",
                "must be positive".into(),
            ));
        }
        for (key, code) in [
            ("features.group_pickup", &self.features.group_pickup),
            (
                "features.directed_pickup_prefix",
                &self.features.directed_pickup_prefix,
            ),
        ] {
            if code.is_empty()
                || !code
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
            {
                return Err(invalid(
                    key,
                    format!("{code:?} must be digits, '*' and '#' only"),
                ));
            }
        }
        if let Some(analog) = &self.analog {
            let zone_problem = |name: &str| {
                let known: Vec<&str> = telephony_hw::dsp::tones::zones()
                    .iter()
                    .map(|z| z.name)
                    .collect();
                format!("unknown tone zone {name:?} (known: {})", known.join(", "))
            };
            if let Some(zone) = analog
                .zone
                .as_deref()
                .filter(|z| telephony_hw::dsp::tones::zone(z).is_none())
            {
                return Err(invalid("analog.zone", zone_problem(zone)));
            }
            let mut channels = BTreeSet::new();
            for (i, port) in analog.ports.iter().enumerate() {
                if port.channel == 0 || !channels.insert(port.channel) {
                    return Err(invalid(
                        &format!("analog.port[{i}].channel"),
                        format!(
                            "{} must be a positive channel number, listed once",
                            port.channel
                        ),
                    ));
                }
                if let Some(zone) = port
                    .zone
                    .as_deref()
                    .filter(|z| telephony_hw::dsp::tones::zone(z).is_none())
                {
                    return Err(invalid(
                        &format!("analog.port[{i}].zone"),
                        zone_problem(zone),
                    ));
                }
                if let Some(prefix) = port.dial_prefix.as_deref() {
                    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(invalid(
                            &format!("analog.port[{i}].dial_prefix"),
                            format!("{prefix:?} must be digits only"),
                        ));
                    }
                }
                let for_lines = port.target.is_some() || port.dial_prefix.is_some();
                if for_lines && port.kind == Some(PortKind::Phone) {
                    return Err(invalid(
                        &format!("analog.port[{i}]"),
                        "target and dial_prefix belong to line ports, not phone ports".into(),
                    ));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for (i, ext) in self.extensions.iter().enumerate() {
            let key = |field: &str| format!("extension[{i}].{field}");
            if ext.number.is_empty() || !ext.number.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    &key("number"),
                    format!("{:?} must be digits only", ext.number),
                ));
            }
            if !seen.insert(ext.number.as_str()) {
                return Err(invalid(
                    &key("number"),
                    format!("extension {} is defined twice", ext.number),
                ));
            }
            match (&ext.password, ext.analog_channel) {
                (Some(password), None) if !password.is_empty() => {}
                (None, Some(channel)) => {
                    // Whether the channel is a phone port is known once system.conf is read.
                    if self.analog.is_none() {
                        return Err(invalid(
                            &key("analog_channel"),
                            format!("channel {channel} needs an [analog] section"),
                        ));
                    }
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        &key("password"),
                        "an analog extension (analog_channel) takes no password".into(),
                    ))
                }
                _ => {
                    return Err(invalid(
                        &key("password"),
                        "must be set and non-empty for a SIP extension".into(),
                    ))
                }
            }
            if ext.auth_algorithms.as_ref().is_some_and(|a| a.is_empty()) {
                return Err(invalid(
                    &key("auth_algorithms"),
                    "offer at least one algorithm, or remove the key to use [auth].algorithms"
                        .into(),
                ));
            }
            let features = &self.features;
            if ext.number.starts_with(&features.group_pickup) {
                return Err(invalid(
                    &key("number"),
                    format!("{} clashes with the group pickup code", ext.number),
                ));
            }
        }
        let tcp = &self.tcp;
        for (key, secs) in [
            ("tcp.message_timeout_secs", tcp.message_timeout_secs),
            ("tcp.idle_timeout_secs", tcp.idle_timeout_secs),
        ] {
            if !(1..=86_400).contains(&secs) {
                return Err(invalid(
                    key,
                    format!("{secs} must be between 1 and 86400 seconds"),
                ));
            }
        }
        if tcp.max_connections == 0 {
            return Err(invalid("tcp.max_connections", "must be at least 1".into()));
        }
        if tcp.max_connections_per_source == 0
            || tcp.max_connections_per_source > tcp.max_connections
        {
            return Err(invalid(
                "tcp.max_connections_per_source",
                format!(
                    "{} must be at least 1 and at most tcp.max_connections ({})",
                    tcp.max_connections_per_source, tcp.max_connections
                ),
            ));
        }
        let media = &self.media;
        if media.port_min < 1024 || u32::from(media.port_min) + 3 > u32::from(media.port_max) {
            return Err(invalid(
                "media",
                format!(
                    "port_min ({}) must be at least 1024 and leave room for two port pairs below port_max ({})",
                    media.port_min, media.port_max
                ),
            ));
        }
        if media.probation_packets == 0 {
            return Err(invalid(
                "media.probation_packets",
                "must be at least 1 (packets a source not named in SDP sends before its media is taken)".to_string(),
            ));
        }
        for (i, port) in self.analog.iter().flat_map(|a| a.ports.iter()).enumerate() {
            if let Some(target) = port.target.as_deref() {
                if self.extension(target).is_none() && !self.is_call_group(target) {
                    return Err(invalid(
                        &format!("analog.port[{i}].target"),
                        format!("{target:?} is neither an extension nor a call group"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[sip]
listen = "127.0.0.1:5060"
[database]
path = "./data/gw.db"
[[extension]]
number = "201"
password = "pw201"
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    /// MINIMAL serving UDP, TCP and TLS, with `tls` as the `[tls]` section.
    fn with_tls(tls: &str) -> String {
        let sip = "listen = \"127.0.0.1:5060\"\ntransports = [\"udp\", \"tcp\", \"tls\"]";
        format!(
            "{}[tls]\n{tls}\n",
            MINIMAL.replace("listen = \"127.0.0.1:5060\"", sip)
        )
    }

    #[test]
    fn tls_needs_a_certificate_and_key_that_exist_and_a_port_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.pem");
        std::fs::write(&file, "").unwrap();
        let file = file.display().to_string();
        let both = format!("certificate = {file:?}\nprivate_key = {file:?}");
        let config = load(&with_tls(&both)).unwrap();
        assert!(config.serves_tls());
        assert_eq!(config.tls_listen_addr(), "127.0.0.1:5061".parse().unwrap());
        let cases = [
            (
                format!("private_key = {file:?}"),
                "tls.certificate",
                "required",
            ),
            (
                format!("certificate = {file:?}"),
                "tls.private_key",
                "required",
            ),
            (
                format!("certificate = \"/nonexistent/gw.crt\"\nprivate_key = {file:?}"),
                "tls.certificate",
                "/nonexistent/gw.crt",
            ),
            (
                format!("{both}\nclient_ca = \"/nonexistent/ca.pem\""),
                "tls.client_ca",
                "/nonexistent/ca.pem",
            ),
            (
                format!("{both}\nrequire_client_certificate = true"),
                "tls.require_client_certificate",
                "tls.client_ca",
            ),
            (
                format!("{both}\nlisten = \"127.0.0.1:5060\""),
                "tls.listen",
                "own port",
            ),
            (
                format!("{both}\nlisten = \"5061\""),
                "tls.listen",
                "not an address",
            ),
        ];
        for (tls, key, problem) in cases {
            let err = load(&with_tls(&tls)).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{key}`")) && err.contains(problem),
                "{tls}: {err}"
            );
        }
        // Nodes over TLS check each other's certificates: a CA is needed, and TLS served.
        let nodes = "[node]\nid = \"a\"\ntransport = \"tls\"\n";
        let err = load(&format!("{nodes}{}", with_tls(&both)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`node.transport`") && err.contains("tls.client_ca"),
            "{err}"
        );
        let mutual = format!("{both}\nclient_ca = {file:?}");
        let config = load(&format!("{nodes}{}", with_tls(&mutual))).unwrap();
        assert_eq!(config.node_listen_addr(), config.tls_listen_addr());
        assert!(load(&format!("{nodes}{MINIMAL}")).is_err(), "no TLS served");
        // Not served: the files are not needed.
        let plain = load(&format!("{MINIMAL}[tls]\nlisten = \"127.0.0.1:5071\"\n")).unwrap();
        assert!(!plain.serves_tls());
    }

    #[test]
    fn the_control_socket_is_found_in_a_file_that_does_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        // Valid TOML, but no config: number 206 is no string.
        std::fs::write(&path, format!("{MINIMAL}[[extension]]\nnumber = 206\n")).unwrap();
        assert!(Config::load(&path).is_err());
        assert_eq!(
            control_socket_of_file(&path),
            Some(PathBuf::from("./data/control.sock"))
        );
        std::fs::write(&path, "[status]\ncontrol_socket = \"/run/gw.sock\"\n").unwrap();
        assert_eq!(
            control_socket_of_file(&path),
            Some(PathBuf::from("/run/gw.sock"))
        );
        std::fs::write(&path, "not toml [").unwrap();
        assert_eq!(control_socket_of_file(&path), None);
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = load(MINIMAL).unwrap();
        assert_eq!(config.features.group_pickup, "*8");
        assert_eq!(
            config.algorithms_for(Some("201")),
            &[DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
        );
        assert_eq!(config.listen_addr().port(), 5060);
        assert_eq!(config.media.probation_packets, 4);
        assert_eq!(config.tcp.message_timeout_secs, 10);
        assert_eq!(config.tcp.idle_timeout_secs, 60);
        assert_eq!(config.tcp.max_connections_per_source, 32);
        assert_eq!(config.tcp.max_connections, 4096);
    }

    #[test]
    fn wildcard_listening_names_the_address_each_peer_reached() {
        for wildcard in ["0.0.0.0:5060", "[::]:5060"] {
            let config = load(&MINIMAL.replace("127.0.0.1:5060", wildcard)).unwrap();
            assert!(config.listen_addr().ip().is_unspecified());
            assert!(config.media_bind_ip().is_unspecified());
            assert_eq!(config.media_advertised(), None, "{wildcard}");
            assert_eq!(config.sip_advertised(), None);
        }
        let behind_nat = format!(
            "{}[media]\nadvertise = \"203.0.113.5\"\n",
            MINIMAL.replace(
                "listen = \"127.0.0.1:5060\"",
                "listen = \"0.0.0.0:5060\"\nadvertise = \"pbx.example.com:5080\""
            )
        );
        let config = load(&behind_nat).unwrap();
        assert_eq!(
            config.sip_advertised(),
            Some(HostPort {
                host: "pbx.example.com".into(),
                port: Some(5080)
            })
        );
        assert_eq!(
            config.media_advertised(),
            Some("203.0.113.5".parse().unwrap())
        );
        let specific = load(MINIMAL).unwrap();
        assert_eq!(
            specific.media_advertised(),
            Some("127.0.0.1".parse().unwrap()),
            "a specific listen address is the media address too"
        );
    }

    #[test]
    fn example_office_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml");
        let config = Config::load(&path).unwrap();
        for n in ["201", "202", "203", "204"] {
            let ext = config.extension(n).unwrap();
            assert_eq!(ext.password.as_deref(), Some(format!("pw{n}").as_str()));
        }
        assert!(config.extension("204").unwrap().call_groups.is_empty());
        assert_eq!(config.extension("201").unwrap().pickup_groups, ["sales"]);
    }

    #[test]
    fn the_database_is_a_sqlite_file_or_a_postgres_url() {
        let url = "url = \"postgres://gw:secret@db.example/calls\"";
        let postgres = load(&MINIMAL.replace("path = \"./data/gw.db\"", url)).unwrap();
        assert_eq!(postgres.database.path, None);
        assert_eq!(
            postgres.database.describe(),
            "postgres://gw@db.example:5432/calls",
            "no password in messages"
        );
        let both = MINIMAL.replace("[database]", &format!("[database]\n{url}"));
        let err = load(&both).unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
        let neither = MINIMAL.replace("path = \"./data/gw.db\"", "");
        let err = load(&neither).unwrap_err().to_string();
        assert!(err.contains("`database`"), "{err}");
        let missing_ca = MINIMAL.replace(
            "path = \"./data/gw.db\"",
            "url = \"postgres://db/calls?sslmode=require\"\ntls_ca = \"/nonexistent/ca.pem\"",
        );
        let err = load(&missing_ca).unwrap_err().to_string();
        assert!(
            err.contains("database.tls_ca") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        for (bad, expected) in [
            ("mysql://db/calls", "postgres:// URL"),
            ("postgres://db/calls?sslmode=bogus", "database.url"),
        ] {
            let text = MINIMAL.replace("path = \"./data/gw.db\"", &format!("url = \"{bad}\""));
            let err = load(&text).unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains("database.url"),
                "{err}"
            );
        }
        let analog = format!(
            "{}[analog]\n",
            MINIMAL.replace("path = \"./data/gw.db\"", url)
        );
        let err = load(&analog).unwrap_err().to_string();
        assert!(err.contains("analog.control_socket"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let bad_listen = MINIMAL.replace("127.0.0.1:5060", "localhost");
        let err = load(&bad_listen).unwrap_err().to_string();
        assert!(err.contains("sip.listen"), "{err}");
        let advertise = MINIMAL.replace("[sip]", "[sip]\nadvertise = \"pbx example\"");
        let err = load(&advertise).unwrap_err().to_string();
        assert!(
            err.contains("sip.advertise") && err.contains("not a valid host name"),
            "{err}"
        );
        let media_advertise = format!("{MINIMAL}[media]\nadvertise = \"media.example.com\"\n");
        let err = load(&media_advertise).unwrap_err().to_string();
        assert!(
            err.contains("media.advertise") && err.contains("not an IP address"),
            "{err}"
        );
        let analog_unanchored = format!(
            "{}[media]\nanchor = \"never\"\n[[analog.port]]\nchannel = 1\n",
            MINIMAL.replace("127.0.0.1:5060", "0.0.0.0:5060")
        );
        let err = load(&analog_unanchored).unwrap_err().to_string();
        assert!(err.contains("media.address"), "{err}");

        let typo = MINIMAL.replace("password", "pasword");
        let err = load(&typo).unwrap_err().to_string();
        assert!(err.contains("pasword"), "{err}");

        let twice = format!("{MINIMAL}[[extension]]\nnumber = \"201\"\npassword = \"x\"\n");
        let err = load(&twice).unwrap_err().to_string();
        assert!(
            err.contains("extension[1].number") && err.contains("twice"),
            "{err}"
        );

        let zone = format!("{MINIMAL}[analog]\nzone = \"atlantis\"\n");
        let err = load(&zone).unwrap_err().to_string();
        assert!(
            err.contains("analog.zone") && err.contains("atlantis"),
            "{err}"
        );
        let twice =
            format!("{MINIMAL}[[analog.port]]\nchannel = 1\n[[analog.port]]\nchannel = 1\n");
        let err = load(&twice).unwrap_err().to_string();
        assert!(err.contains("analog.port[1].channel"), "{err}");
        let kind = format!("{MINIMAL}[[analog.port]]\nchannel = 1\nkind = \"modem\"\n");
        assert!(load(&kind).unwrap_err().to_string().contains("modem"));

        let no_probation = format!("{MINIMAL}[media]\nprobation_packets = 0\n");
        let err = load(&no_probation).unwrap_err().to_string();
        assert!(err.contains("media.probation_packets"), "{err}");
        for (tcp, key) in [
            ("message_timeout_secs = 0", "tcp.message_timeout_secs"),
            ("idle_timeout_secs = 0", "tcp.idle_timeout_secs"),
            ("max_connections = 0", "tcp.max_connections"),
            (
                "max_connections = 8\nmax_connections_per_source = 9",
                "tcp.max_connections_per_source",
            ),
        ] {
            let err = load(&format!("{MINIMAL}[tcp]\n{tcp}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{tcp}: {err}");
        }

        let bad_alg = MINIMAL.replace("[sip]", "[auth]\nalgorithms = [\"SHA-1\"]\n[sip]");
        let err = load(&bad_alg).unwrap_err().to_string();
        assert!(err.contains("SHA-1"), "{err}");
    }
}
