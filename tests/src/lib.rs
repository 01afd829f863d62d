//! Harness for the end-to-end tests: start the real `gateway` binary on free ports with a
//! config in a temporary directory, drive it with SIPp scenarios from `tests/scenarios/`,
//! and talk raw UDP/TCP to it for the bad-input tests.

pub mod analog;
pub mod baresip;
pub mod blf;
pub mod linphone;
pub mod operations;
pub mod pickup;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The gateway binary: `$GATEWAY_BIN`, else `$CARGO_TARGET_DIR/debug/gateway`, else
/// `<workspace>/target/debug/gateway`. Panics with instructions when it is missing.
pub fn gateway_binary() -> PathBuf {
    if let Ok(path) = std::env::var("GATEWAY_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let binary = target.join("debug").join("gateway");
    assert!(
        binary.exists(),
        "gateway binary not found at {}: build it with `cargo build -p gateway` (scripts/test.sh does)",
        binary.display()
    );
    binary
}

/// Hands out ports from a per-process offset in 10000-19999 and checks that UDP and TCP are
/// both free. The range lies below the kernel's ephemeral ports (32768-60999 on Debian), so a
/// socket another process binds to port 0 cannot take a port between this check and the
/// gateway's bind.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = (std::process::id() % 500) as u16 * 20;
    loop {
        let port = 10_000 + (base + NEXT.fetch_add(1, Ordering::Relaxed)) % 10_000;
        let udp = UdpSocket::bind(("127.0.0.1", port));
        let tcp = TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
}

/// Settings a test may change in the generated config.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// `registrar.min_expires_secs`.
    pub min_expires_secs: u32,
    /// `calls.ring_timeout_secs`.
    pub ring_timeout_secs: u64,
    /// `calls.billing_mark_secs`.
    pub billing_mark_secs: u64,
    /// `sip.max_message_size`.
    pub max_message_size: usize,
    /// TOML appended to the config (extra sections).
    pub extra: String,
    /// Replaces the quick-start config's `[analog]` section and its `[[analog.port]]`s.
    pub analog: Option<String>,
    /// `fastpath.backend` (the quick-start config says `auto`).
    pub fastpath_backend: Option<&'static str>,
    /// `media.anchor` (the quick-start config says `analog`).
    pub media_anchor: Option<&'static str>,
    /// SIP over UDP only, and no analog ports (the quick-start config's last part).
    pub udp_only_without_analog: bool,
    /// Replaces the keys of the quick-start config's `[tcp]` section.
    pub tcp: Option<String>,
    /// The soft and hard descriptor limits the gateway is started with (`ulimit -n`).
    pub nofile: Option<(u64, u64)>,
    /// Environment variables the gateway is started with (e.g. systemd's `NOTIFY_SOCKET`).
    pub env: Vec<(&'static str, String)>,
    /// The address `sip.listen` names instead of `127.0.0.1` (e.g. `0.0.0.0`, `[::]`); the
    /// harness still reaches the gateway at 127.0.0.1.
    pub listen_ip: Option<&'static str>,
    /// Keys added to sections of the quick-start config: `(section, lines)`, e.g.
    /// `("media", "advertise = \"203.0.113.5\"")`.
    pub keys: Vec<(&'static str, String)>,
    /// `database.url` instead of the SQLite file (e.g. a database of
    /// `gateway::store::test_cluster::TestCluster`); the analog operator socket is then
    /// named in `[analog]`, where the SQLite file would have put it, and the CDR spool
    /// (`database.spool`) is in the gateway's directory.
    pub database_url: Option<String>,
    /// The SIP port instead of a free one (nodes of a cluster name each other's).
    pub port: Option<u16>,
    /// Replaces the `[node]` section's `id = "gw1"` line (e.g. a cluster node's id, peers,
    /// secret and timings).
    pub node: Option<String>,
    /// SIP over TLS as well, with these lines as the `[tls]` section (see [`tls`]).
    pub tls: Option<String>,
}

impl GatewayOptions {
    /// The defaults with two engine shards, for tests that choose the shard a call lands
    /// on (`pickup::call_id_on_shard`).
    pub fn two_shards() -> GatewayOptions {
        GatewayOptions {
            keys: vec![("fastpath", "shards = 2".to_string())],
            ..GatewayOptions::default()
        }
    }
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            min_expires_secs: 1,
            ring_timeout_secs: 30,
            billing_mark_secs: 15,
            max_message_size: 65_535,
            extra: String::new(),
            analog: None,
            fastpath_backend: None,
            media_anchor: None,
            udp_only_without_analog: false,
            tcp: None,
            nofile: None,
            env: Vec::new(),
            listen_ip: None,
            keys: Vec::new(),
            database_url: None,
            port: None,
            node: None,
            tls: None,
        }
    }
}

/// A running gateway process, killed on drop.
pub struct Gateway {
    child: Child,
    /// Its SIP port (UDP and TCP).
    pub port: u16,
    dir: tempfile::TempDir,
    config: PathBuf,
    launch: Launch,
    _relay_range: RelayRange,
}

/// A range of 200 relay ports (20000-31999 in 60 ranges, below the kernel's ephemeral ports)
/// reserved for one gateway across every test process of the machine: an exclusive lock on a file named after the range,
/// held until dropped.
struct RelayRange {
    slot: u16,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl RelayRange {
    const SLOTS: u16 = 60;

    /// The first free range, searching from a per-process offset.
    fn reserve() -> RelayRange {
        let offset = (std::process::id() % u32::from(Self::SLOTS)) as u16;
        for step in 0..Self::SLOTS {
            let slot = (offset + step) % Self::SLOTS;
            let path = std::env::temp_dir().join(format!("e2e-relay-ports-{slot}.lock"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("lock file {}: {e}", path.display()));
            if let Ok(lock) =
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            {
                return RelayRange { slot, _lock: lock };
            }
        }
        panic!(
            "all {} relay port ranges are held by running gateways",
            Self::SLOTS
        )
    }

    /// The range's first port.
    fn port_min(&self) -> u16 {
        20_000 + self.slot * 200
    }
}

impl Gateway {
    /// Writes the quick-start config with `options` into a new temporary directory.
    fn configure(options: &GatewayOptions) -> (tempfile::TempDir, u16, PathBuf, RelayRange) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = options.port.unwrap_or_else(free_port);
        let config = dir.path().join("gateway.toml");
        let office = std::fs::read_to_string(workspace_root().join("examples/office.toml"))
            .expect("examples/office.toml");
        let text = office
            .replace("127.0.0.1:5060", &format!("127.0.0.1:{port}"))
            .replace(
                "./data/gateway.db",
                &dir.path().join("gateway.db").display().to_string(),
            )
            .replace(
                "min_expires_secs = 60",
                &format!("min_expires_secs = {}", options.min_expires_secs),
            )
            .replace(
                "ring_timeout_secs = 60",
                &format!("ring_timeout_secs = {}", options.ring_timeout_secs),
            )
            .replace(
                "billing_mark_secs = 15",
                &format!("billing_mark_secs = {}", options.billing_mark_secs),
            )
            .replace(
                "transports = [\"udp\", \"tcp\"]",
                &format!(
                    "transports = [\"udp\", \"tcp\"]\nmax_message_size = {}",
                    options.max_message_size
                ),
            );
        let text = if options.udp_only_without_analog {
            let cut = text.find("\n# Analog ports.").unwrap_or(text.len());
            text[..cut].replace("transports = [\"udp\", \"tcp\"]", "transports = [\"udp\"]")
        } else {
            text
        };
        let text = match options.fastpath_backend {
            Some(backend) => {
                text.replace("backend = \"auto\"", &format!("backend = \"{backend}\""))
            }
            None => text,
        };
        let text = match &options.analog {
            Some(analog) => {
                let start = text.find("\n[analog]").expect("office.toml has [analog]");
                let end = start
                    + text[start..]
                        .find("\n[[extension]]")
                        .expect("extensions follow [analog]");
                format!("{}\n{analog}\n{}", &text[..start], &text[end..])
            }
            None => text,
        };
        // Gateways of parallel tests (and of a second copy of the suite) must not share relay
        // ports: each holds a lock on its range for as long as it lives.
        let relay_range = RelayRange::reserve();
        let port_min = relay_range.port_min();
        let text = text.replace(
            "port_min = 30000\nport_max = 39999",
            &format!("port_min = {port_min}\nport_max = {}", port_min + 199),
        );
        let text = match options.media_anchor {
            Some(mode) => text.replace("anchor = \"analog\"", &format!("anchor = \"{mode}\"")),
            None => text,
        };
        let text = match &options.tcp {
            Some(tcp) => {
                let start = text.find("\n[tcp]\n").expect("office.toml has [tcp]") + 7;
                let end = start + text[start..].find("\n\n").expect("a blank line ends [tcp]");
                format!("{}{tcp}{}", &text[..start], &text[end..])
            }
            None => text,
        };
        let text = match options.listen_ip {
            Some(ip) => text.replace(
                &format!("listen = \"127.0.0.1:{port}\""),
                &format!("listen = \"{ip}:{port}\""),
            ),
            None => text,
        };
        let text = options.keys.iter().fold(text, |text, (section, lines)| {
            let header = format!("\n[{section}]\n");
            assert!(text.contains(&header), "office.toml has no [{section}]");
            text.replacen(&header, &format!("{header}{lines}\n"), 1)
        });
        let text = match &options.database_url {
            Some(url) => {
                let path = format!("path = \"{}\"", dir.path().join("gateway.db").display());
                assert!(text.contains(&path), "office.toml has [database] path");
                let socket = dir.path().join("analog.sock");
                // Each gateway its own CDR spool and control socket (the defaults are
                // relative to the cwd).
                let spool = dir.path().join("cdr-spool.db");
                let database = format!("url = \"{url}\"\nspool = \"{}\"", spool.display());
                let control = dir.path().join("control.sock");
                text.replace(&path, &database)
                    .replacen(
                        "\n[analog]\n",
                        &format!("\n[analog]\ncontrol_socket = \"{}\"\n", socket.display()),
                        1,
                    )
                    .replacen(
                        "\n[status]\n",
                        &format!("\n[status]\ncontrol_socket = \"{}\"\n", control.display()),
                        1,
                    )
            }
            None => text,
        };
        let text = match &options.node {
            Some(node) => {
                assert!(
                    text.contains("\n[node]\nid = \"gw1\"\n"),
                    "office.toml has [node]"
                );
                text.replacen(
                    "\n[node]\nid = \"gw1\"\n",
                    &format!("\n[node]\n{node}\n"),
                    1,
                )
            }
            None => text,
        };
        let text = match &options.tls {
            Some(tls) => format!(
                "{}\n[tls]\n{tls}\n",
                text.replacen(
                    "transports = [\"udp\", \"tcp\"]",
                    "transports = [\"udp\", \"tcp\", \"tls\"]",
                    1
                )
            ),
            None => text,
        };
        let text = format!("{text}\n{}\n", options.extra);
        std::fs::write(&config, text).expect("write config");
        (dir, port, config, relay_range)
    }

    /// Runs the binary on a config that must be refused; returns what it printed.
    pub fn start_failing(options: GatewayOptions) -> String {
        let (dir, _, config, _relay_range) = Gateway::configure(&options);
        let mut child = spawn_gateway(&config, dir.path(), &Launch::of(&options));
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the gateway") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the gateway did not refuse the config within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
        assert!(!status.success(), "the gateway accepted the config:\n{log}");
        log
    }

    /// Starts a gateway with the quick-start extensions 201-204 on a free port.
    pub fn start(options: GatewayOptions) -> Gateway {
        let (dir, port, config, relay_range) = Gateway::configure(&options);
        let mut gateway = Gateway {
            child: spawn_gateway(&config, dir.path(), &Launch::of(&options)),
            port,
            dir,
            config,
            launch: Launch::of(&options),
            _relay_range: relay_range,
        };
        gateway.wait_until_listening(0);
        gateway
    }

    /// Stops the process and starts it again on the same config and database.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts the stopped process (after [`Gateway::kill`]) again on the same config and
    /// database, and waits until it listens.
    pub fn start_again(&mut self) {
        let log_start = self.log().len();
        self.child = spawn_gateway(&self.config, self.dir.path(), &self.launch);
        self.wait_until_listening(log_start);
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(&mut self) {
        if self.terminate().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// SIGTERM, as in production (the store writer flushes, the analog thread stops); the
    /// exit status if the process ended within 5 s.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for the process to end by itself; its exit status.
    pub fn wait_for_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the gateway") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not exit within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the `listening` lines the process started at log offset `log_start` prints.
    fn wait_until_listening(&mut self, log_start: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log().get(log_start..).unwrap_or_default().to_string();
            let config = self.config_text();
            let tcp_expected = config.contains("\"tcp\"");
            let tls_expected = config.contains("\"tls\"]");
            // The analog operator socket exists once the analog service says it serves.
            let analog_expected = config.contains("[[analog.port]]");
            if log.contains("listening on udp")
                && (!tcp_expected || log.contains("listening on tcp"))
                && (!tls_expected || log.contains("listening on tls"))
                && (!analog_expected || log.contains("analog ports served by the fast path"))
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gateway exited with {status} before listening:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start listening within 15 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The file the gateway logs to (its stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The `gateway cdr` table and the fields of its newest row, waiting up to 5 s for a
    /// row (a call that just ended may not be committed yet).
    pub fn last_cdr(&self) -> (String, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let cdrs = self.cdrs();
            let fields: Vec<String> = cdrs
                .lines()
                .nth(1)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !fields.is_empty() || Instant::now() > deadline {
                return (cdrs, fields);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The CDR table the `gateway cdr` subcommand prints for this gateway's database.
    pub fn cdrs(&self) -> String {
        self.recent_cdrs(20)
    }

    /// Runs `gateway <args> --config <this gateway's config>`: its output.
    pub fn subcommand(&self, args: &[&str]) -> std::process::Output {
        Command::new(gateway_binary())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run the gateway binary")
    }

    /// The newest `limit` CDRs as `gateway cdr --limit` prints them.
    pub fn recent_cdrs(&self, limit: usize) -> String {
        let output = self.subcommand(&["cdr", "--limit", &limit.to_string()]);
        assert!(
            output.status.success(),
            "gateway cdr failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// Sends SIGHUP: the gateway reloads its config and TLS files.
    pub fn hang_up(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -HUP {}", self.pid());
    }

    /// Waits until the log contains `text` (panics after 10 s).
    pub fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "gateway never logged {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The generated config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap_or_default()
    }

    /// A scratch directory for SIPp logs and generated scenarios.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

/// Starts the binary; with `nofile`, through `sh` setting the soft and hard descriptor
/// limits first (`exec` keeps the process id, so the child is the gateway itself).
/// How the binary is started, besides its config.
#[derive(Debug, Clone)]
struct Launch {
    nofile: Option<(u64, u64)>,
    env: Vec<(&'static str, String)>,
}

impl Launch {
    fn of(options: &GatewayOptions) -> Launch {
        Launch {
            nofile: options.nofile,
            env: options.env.clone(),
        }
    }
}

fn spawn_gateway(config: &Path, dir: &Path, launch: &Launch) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))
        .expect("gateway log file");
    let mut command = match launch.nofile {
        Some((soft, hard)) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!(
                    "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
                ))
                .arg(gateway_binary());
            sh
        }
        None => Command::new(gateway_binary()),
    };
    command
        .arg("--config")
        .arg(config)
        .arg("--log")
        .arg("debug")
        .envs(launch.env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the gateway binary")
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- gateway log ----\n{}", self.log());
        }
    }
}

/// The SIP transport a SIPp run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `-t u1`
    Udp,
    /// `-t t1`
    Tcp,
}

/// One SIPp run: scenario, local port, credentials and keys.
#[derive(Debug, Clone)]
pub struct Sipp {
    scenario: String,
    local_ip: String,
    /// The gateway's address SIPp sends to (None: [`Gateway::addr`]).
    gateway_ip: Option<std::net::IpAddr>,
    local_port: u16,
    transport: Transport,
    args: Vec<String>,
    substitutions: Vec<(String, String)>,
    out_of_call: Option<String>,
    calls: u32,
    time_limit: Duration,
}

fn sipp_binary() -> &'static str {
    let found = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "sipp not found: install the sip-tester package or run scripts/test.sh"
    );
    "sipp"
}

impl Sipp {
    /// A run of `tests/scenarios/<scenario>` from `local_port` over UDP.
    pub fn new(scenario: &str, local_port: u16) -> Sipp {
        Sipp {
            scenario: scenario.into(),
            local_ip: "127.0.0.1".into(),
            gateway_ip: None,
            local_port,
            transport: Transport::Udp,
            args: Vec::new(),
            substitutions: Vec::new(),
            out_of_call: None,
            calls: 1,
            time_limit: Duration::from_secs(30),
        }
    }

    /// Binds SIPp to `ip` (`-i`, default 127.0.0.1).
    pub fn local_ip(mut self, ip: &str) -> Sipp {
        self.local_ip = ip.into();
        self
    }

    /// Sends to the gateway at `ip` (with its port) instead of 127.0.0.1.
    pub fn gateway_ip(mut self, ip: &str) -> Sipp {
        self.gateway_ip = Some(ip.parse().expect("an IP address"));
        self
    }

    /// The address the gateway must name in the Via and Contact it sends this phone
    /// (`host:port`) and in its SDP (`media`): the scenarios check them.
    pub fn expect_gateway_at(self, host_port: &str, media: &str) -> Sipp {
        self.fill("@GATEWAY_HOST@", &regex_escape(host_port))
            .fill("@GATEWAY_MEDIA@", &regex_escape(media))
    }

    /// The gateway's address as SIPp reaches it.
    fn target(&self, gateway: &Gateway) -> SocketAddr {
        match self.gateway_ip {
            Some(ip) => SocketAddr::new(ip, gateway.port),
            None => gateway.addr(),
        }
    }

    /// How many calls the scenario handles before SIPp exits (`-m`, default 1).
    pub fn calls(mut self, calls: u32) -> Sipp {
        self.calls = calls;
        self
    }

    /// How long SIPp may run before it gives up with an error (`-timeout`, default 30 s).
    pub fn time_limit(mut self, limit: Duration) -> Sipp {
        self.time_limit = limit;
        self
    }

    /// How many times SIPp retransmits an INVITE and a non-INVITE request over UDP before
    /// it abandons the call (`-max_invite_retrans`, `-max_non_invite_retrans`; SIPp's
    /// defaults are 5 and 5, fewer than RFC 3261's timers send: 7 and 11).
    pub fn retransmissions(self, invite: u32, non_invite: u32) -> Sipp {
        self.arg("-max_invite_retrans")
            .arg(&invite.to_string())
            .arg("-max_non_invite_retrans")
            .arg(&non_invite.to_string())
    }

    /// Handles requests with a new Call-ID (the gateway's INVITE with Replaces) with
    /// `tests/scenarios/<scenario>` (SIPp's `-oocsf`).
    pub fn out_of_call(mut self, scenario: &str) -> Sipp {
        self.out_of_call = Some(scenario.into());
        self
    }

    /// Places calls at `cps` per second (`-r`).
    pub fn rate(self, cps: u32) -> Sipp {
        self.arg("-r").arg(&cps.to_string())
    }

    /// Uses TCP instead of UDP.
    pub fn tcp(mut self) -> Sipp {
        self.transport = Transport::Tcp;
        self
    }

    /// `-s user`: the Request-URI user (the callee, or the registering extension).
    pub fn service(self, user: &str) -> Sipp {
        self.arg("-s").arg(user)
    }

    /// `-au user -ap password`: digest credentials.
    pub fn credentials(self, user: &str, password: &str) -> Sipp {
        self.arg("-au").arg(user).arg("-ap").arg(password)
    }

    /// Records every message SIPp sends and receives (`-trace_msg`), in
    /// [`SippRun::messages_path`].
    pub fn trace_messages(self) -> Sipp {
        self.arg("-trace_msg")
    }

    /// The Call-ID of SIPp's calls (`-cid_str`, SIPp's `%u` keywords allowed): a test
    /// chooses which engine shard a call lands on.
    pub fn call_id(self, call_id: &str) -> Sipp {
        self.arg("-cid_str").arg(call_id)
    }

    /// `-key name value`: a scenario keyword.
    pub fn key(self, name: &str, value: &str) -> Sipp {
        self.arg("-key").arg(name).arg(value)
    }

    /// Replaces `@EXPECT@` in the scenario (expected status codes).
    pub fn expect(self, code: u16) -> Sipp {
        self.fill("@EXPECT@", &code.to_string())
    }

    /// The caller identity the picker's phone must see in the INVITE with Replaces: the
    /// start of its From header, e.g. `"Analog 101" <sip:101@` (default: the quick-start 204).
    pub fn caller_id(self, from: &str) -> Sipp {
        self.fill("@CALLER_ID@", &xml_escape(from))
    }

    /// Replaces a `@PLACEHOLDER@` of the scenario (and its out-of-call scenario) with `value`.
    pub fn fill(mut self, placeholder: &str, value: &str) -> Sipp {
        self.substitutions.push((placeholder.into(), value.into()));
        self
    }

    fn arg(mut self, value: &str) -> Sipp {
        self.args.push(value.into());
        self
    }

    /// Writes a scenario template into the scratch directory with the substitutions applied.
    fn prepare(&self, gateway: &Gateway, tag: &str, name: &str) -> PathBuf {
        let template = workspace_root().join("tests/scenarios").join(name);
        let mut text = std::fs::read_to_string(&template)
            .unwrap_or_else(|e| panic!("scenario {}: {e}", template.display()));
        for (from, to) in &self.substitutions {
            text = text.replace(from, to);
        }
        // Media goes to SIPp's own port unless a test points it at its RTP peer.
        text = text.replace("@MEDIA_PORT@", "[media_port]");
        text = text.replace("@HOLD_MS@", "300");
        // The picker's dummy dialog stays up this long for the replacing call to run.
        text = text.replace("@PICKED_CALL_MS@", "4000");
        // The caller identity the picker's phone must be shown (the quick-start 204).
        text = text.replace("@CALLER_ID@", &xml_escape("\"Reception 204\" <sip:204@"));
        // Any address, unless a test expects one (`expect_gateway_at`).
        text = text.replace("@GATEWAY_HOST@", "[^;> ]+");
        text = text.replace("@GATEWAY_MEDIA@", "[0-9a-fA-F.:]+");
        let scenario = gateway.scratch().join(format!("{tag}-{name}"));
        std::fs::write(&scenario, text).expect("write scenario");
        scenario
    }

    fn command(&self, gateway: &Gateway, tag: &str) -> (Command, PathBuf, PathBuf, PathBuf) {
        let scenario = self.prepare(gateway, tag, &self.scenario);
        let errors = gateway
            .scratch()
            .join(format!("{tag}-{}.errors", self.scenario));
        let log = gateway
            .scratch()
            .join(format!("{tag}-{}.log", self.scenario));
        let messages = gateway
            .scratch()
            .join(format!("{tag}-{}.messages", self.scenario));
        let mut command = Command::new(sipp_binary());
        command
            .args(["-trace_logs", "-log_file"])
            .arg(&log)
            .arg("-message_file")
            .arg(&messages)
            .arg("-sf")
            .arg(&scenario)
            .arg("-i")
            .arg(&self.local_ip)
            .arg("-p")
            .arg(self.local_port.to_string())
            .arg("-timeout")
            .arg(format!("{}s", self.time_limit.as_secs()))
            .args(["-timeout_error", "-recv_timeout", "20000"])
            .args(["-nostdin", "-trace_err", "-error_file"])
            .arg(&errors)
            .args([
                "-t",
                if self.transport == Transport::Tcp {
                    "t1"
                } else {
                    "u1"
                },
            ])
            .arg("-m")
            .arg(self.calls.to_string())
            .args(&self.args);
        // SIPp computes a digest over `sip:<remote_ip>:<remote_port>` unless told otherwise;
        // the gateway requires the digest uri to be the Request-URI (RFC 3261 §22.4).
        let service = self
            .args
            .iter()
            .position(|arg| arg == "-s")
            .and_then(|at| self.args.get(at + 1));
        let scenario_text = std::fs::read_to_string(&scenario).unwrap_or_default();
        if let Some(service) = service {
            let names_service = ["INVITE", "SUBSCRIBE"].iter().any(|method| {
                scenario_text.contains(&format!("{method} sip:[service]@[remote_ip]:[remote_port]"))
            });
            if names_service {
                command
                    .arg("-auth_uri")
                    .arg(format!("{service}@{}", self.target(gateway)));
            }
        }
        // SIPp's own digest uri leaves an IPv6 address out of its brackets.
        if scenario_text.contains("REGISTER sip:[remote_ip]:[remote_port]") {
            command
                .arg("-auth_uri")
                .arg(self.target(gateway).to_string());
        }
        if let Some(name) = &self.out_of_call {
            command
                .arg("-oocsf")
                .arg(self.prepare(gateway, tag, name))
                .arg("-callid_slash_ign");
        }
        command
            .arg(self.target(gateway).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        (command, errors, log, messages)
    }

    /// Runs to completion; panics with SIPp's error log unless the call succeeded.
    pub fn run(&self, gateway: &Gateway) {
        self.spawn(gateway).wait();
    }

    /// Starts in the background (a callee waiting for the gateway's INVITE).
    pub fn spawn(&self, gateway: &Gateway) -> SippRun {
        static RUN: AtomicU16 = AtomicU16::new(0);
        let tag = format!("run{}", RUN.fetch_add(1, Ordering::Relaxed));
        let (mut command, errors, log, messages) = self.command(gateway, &tag);
        let child = command.spawn().expect("start sipp");
        SippRun {
            child,
            errors,
            log,
            messages,
            scenario: self.scenario.clone(),
            time_limit: self.time_limit,
        }
    }
}

/// A SIPp process started with [`Sipp::spawn`].
pub struct SippRun {
    child: Child,
    errors: PathBuf,
    log: PathBuf,
    messages: PathBuf,
    scenario: String,
    time_limit: Duration,
}

impl SippRun {
    /// Waits until the scenario's `<log>` output has a line containing `prefix`, and
    /// returns the rest of that line (panics after 10 s).
    pub fn wait_for_log_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(rest) = text
                .lines()
                .find_map(|l| l.split_once(prefix).map(|(_, r)| r))
            {
                return rest.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "sipp {} never logged {prefix:?}; its messages (with -trace_msg):\n{}",
                self.scenario,
                std::fs::read_to_string(&self.messages).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The file of the messages SIPp sends and receives, when started with
    /// [`Sipp::trace_messages`] (complete once SIPp ended: read it after [`SippRun::wait`]).
    pub fn messages_path(&self) -> PathBuf {
        self.messages.clone()
    }

    /// Ends the SIPp process at once and reaps it, without judging it (its peer is gone, or
    /// it serves calls until told to stop and the test judges by the other side and CDRs).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for SIPp to end; panics with its error log unless it reported success.
    pub fn wait(self) {
        self.wait_allowing(&[]);
    }

    /// Waits for SIPp to end; panics with its error log unless every failure it logged
    /// contains one of `allowed` (failures a test attributes to the peer and states).
    /// Returns those failures.
    pub fn wait_allowing(mut self, allowed: &[&str]) -> Vec<String> {
        let limit = self.time_limit + Duration::from_secs(10);
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for sipp") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sipp {} did not finish within {limit:?}", self.scenario);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let errors = std::fs::read_to_string(&self.errors).unwrap_or_default();
        // SIPp 3.6 logs these harmless events (exit, -oocsf dispatch, a retransmission that
        // arrives after its call ended well, a scenario's own `ontimeout` jump, its own
        // scheduler running late); anything else fails.
        let harmless = [
            "The following events occurred",
            "Failed to delete FD from epoll",
            "Received out-of-call INVITE message, using the out-of-call scenario",
            "Resolving remote host",
            "(successful), received",
            "jumping to label",
            // SIPp's own scheduler running late on a loaded machine (it still judges every
            // call: its exit status says whether they all succeeded).
            "the minor watchdog timer",
        ];
        let (stated, real): (Vec<&str>, Vec<&str>) = sipp_events(&errors)
            .into_iter()
            .filter(|event| !harmless.iter().any(|h| event.contains(h)))
            .partition(|event| allowed.iter().any(|a| event.contains(a)));
        assert!(
            (status.success() || !stated.is_empty()) && real.is_empty(),
            "sipp {} failed ({status}):\n{}\n{stderr}",
            self.scenario,
            errors
        );
        stated.into_iter().map(str::to_string).collect()
    }
}

/// `text` escaped for an XML attribute of a SIPp scenario.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` as a POSIX extended regular expression matching it literally (SIPp's `ereg`).
fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '.' | '[' | ']' | '(' | ')' | '*' | '+' | '?' | '{' | '}' | '|' | '^' | '$' | '\\' => {
                vec!['\\', c]
            }
            c => vec![c],
        })
        .collect()
}

/// SIPp's error file split into its events: each starts with a `YYYY-MM-DD<tab>` stamp
/// (SIPp does not always end an event with a newline).
fn sipp_events(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let starts_event = |at: usize| {
        bytes.len() >= at + 11
            && bytes[at..at + 4].iter().all(u8::is_ascii_digit)
            && bytes[at + 4] == b'-'
            && bytes[at + 7] == b'-'
            && bytes[at + 10] == b'\t'
    };
    let mut events = Vec::new();
    let mut start = 0;
    for at in 1..bytes.len() {
        if starts_event(at) && text.is_char_boundary(at) {
            events.push(text[start..at].trim());
            start = at;
        }
    }
    events.push(text[start..].trim());
    events.into_iter().filter(|e| !e.is_empty()).collect()
}

/// Sends one UDP datagram to the gateway from a fresh socket and returns the first answer
/// (None if nothing comes within `wait`). 100 Trying is skipped.
pub fn udp_exchange(gateway: &Gateway, bytes: &[u8], wait: Duration) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    socket.send_to(bytes, gateway.addr()).expect("send udp");
    let deadline = Instant::now() + wait;
    let mut buffer = vec![0u8; 65_536];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let (n, _) = socket.recv_from(&mut buffer).ok()?;
        let text = String::from_utf8_lossy(&buffer[..n]).to_string();
        if !text.starts_with("SIP/2.0 100 ") {
            return Some(text);
        }
    }
}

/// The port in a scenario's logged "m=audio PORT" line (panics without one).
pub fn logged_port(line: &str) -> u16 {
    line.rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// The status code of a response text.
pub fn status_of(response: &str) -> Option<u16> {
    response.split_whitespace().nth(1)?.parse().ok()
}

/// A minimal, valid request for raw tests; `{port}` and `{branch}` are filled in.
pub fn options_request(port: u16, branch: &str) -> String {
    format!(
        "OPTIONS sip:{port}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{branch}\r\nTo: <sip:gw@127.0.0.1>\r\n\
Call-ID: {branch}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// True when the gateway answers an OPTIONS with 200 (it is alive and serving).
pub fn answers_options(gateway: &Gateway) -> bool {
    let branch = format!("alive{}", free_port());
    let request =
        options_request(gateway.port, &branch).replace(&format!("sip:{}@", gateway.port), "sip:");
    udp_exchange(gateway, request.as_bytes(), Duration::from_secs(2)).and_then(|r| status_of(&r))
        == Some(200)
}

/// Connects over TCP, writes `bytes`, and reports whether the gateway closed the
/// connection within `wait` (reading whatever it sent first).
pub fn tcp_closed_after(gateway: &Gateway, bytes: &[u8], wait: Duration) -> bool {
    let mut stream = TcpStream::connect(gateway.addr()).expect("tcp connect");
    stream.write_all(bytes).expect("tcp write");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

/// A TCP connection to the gateway from address `source` (any of 127/8 is local on
/// Linux, so tests can play several client addresses).
pub fn tcp_connect_from(gateway: &Gateway, source: std::net::IpAddr) -> TcpStream {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("tcp socket");
    socket
        .bind(&SockAddr::from(SocketAddr::new(source, 0)))
        .expect("bind the client address");
    socket
        .connect(&SockAddr::from(gateway.addr()))
        .expect("tcp connect");
    socket.into()
}

/// 201 registers (a SIPp phone answering every call) and 202 calls it `calls` times at
/// `rate` calls/s with SIPp; returns when both SIPp runs have ended well.
pub fn sipp_calls(gateway: &Gateway, calls: u32, rate: u32) {
    let phone = free_port();
    register(gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_answer.xml", phone)
        .calls(calls)
        .spawn(gateway);
    Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("202", "pw202")
        .key("caller", "202")
        .rate(rate)
        .calls(calls)
        .run(gateway);
    callee.wait();
}

/// Registers `ext` (password `pw<ext>`) from `port` and expects `code`.
pub fn register(gateway: &Gateway, ext: &str, port: u16, expires: u32, code: u16) {
    Sipp::new("register.xml", port)
        .service(ext)
        .credentials(ext, &format!("pw{ext}"))
        .key("expires", &expires.to_string())
        .expect(code)
        .run(gateway);
}
