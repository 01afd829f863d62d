//! The SIP servers under test, started fresh for each trial: the gateway's release binary
//! with a generated config, and Kamailio with `bench/kamailio/kamailio.cfg`. Each runs in its
//! own process group (killed as a whole on drop) and is ready once it answers OPTIONS.
//! With `BENCH_KEEP_LOGS` set, each server's directory (config, stderr log) is kept.

use crate::procfs;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's kamailio package keeps its modules.
const KAMAILIO_MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";

/// A running SIP server.
pub struct Server {
    /// What it is, for tables ("gateway (ours)", "kamailio 5.6.3").
    pub name: String,
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
    /// The gateway's config file, for [`Server::restart_gateway`].
    config: Option<PathBuf>,
}

impl Server {
    /// Its main process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds it (all threads and child processes) has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        procfs::process_tree_cpu_seconds(self.pid())
    }

    /// Its resident memory, KiB (main process).
    pub fn rss_kib(&self) -> u64 {
        procfs::rss_kib(self.pid())
    }

    /// Its resident memory once it has stopped moving (the allocator and the store writer
    /// settle; at most 5 s), KiB.
    pub fn settled_rss_kib(&self) -> u64 {
        settled(|| self.rss_kib())
    }

    /// The proportional set size of the process and its children once it has stopped
    /// moving (at most 5 s), KiB: what a forking server (Kamailio's shared memory) and a
    /// threaded one use, measured alike.
    pub fn settled_pss_kib(&self) -> u64 {
        settled(|| procfs::process_tree_pss_kib(self.pid()))
    }

    /// Stops the gateway and starts it again on the same config and database; returns how
    /// long the new process took from its start to answering OPTIONS (it opens the
    /// database and restores the registrations before it listens).
    pub fn restart_gateway(&mut self) -> std::io::Result<Duration> {
        let Some(config) = self.config.clone() else {
            return Err(std::io::Error::other(format!(
                "{} is not a gateway: it cannot be restarted",
                self.name
            )));
        };
        self.stop();
        let started = Instant::now();
        self.child = gateway_command(&config)?
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(
                self.dir.join("stderr-restarted.log"),
            )?)
            .process_group(0)
            .spawn()?;
        wait_until_answering(self.addr)?;
        Ok(started.elapsed())
    }

    /// SIGTERM first (the gateway logs its fast path counters on the way out), then the
    /// whole process group (Kamailio's children too) after 3 s.
    fn stop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = kill(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A memory reading taken every 250 ms until two agree (at most 5 s).
fn settled(read: impl Fn() -> u64) -> u64 {
    let mut last = read();
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let now = read();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("BENCH_KEEP_LOGS").is_some() {
            eprintln!("  {} log kept in {}", self.name, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The cores every server started from now on may run on (a `taskset -c` list), so that
/// the servers compared get the same cores; unset, they may run on any.
static SERVER_CORES: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Pins every server started from now on to `cores` (a `taskset -c` list such as "1" or
/// "0,1"); only the first call counts.
pub fn pin_servers(cores: &str) {
    let _ = SERVER_CORES.set(cores.to_string());
}

/// The cores servers are pinned to, if they are.
pub fn server_cores() -> Option<&'static str> {
    SERVER_CORES.get().map(String::as_str)
}

/// A command running `program`, under `taskset` when servers are pinned.
fn server_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match server_cores() {
        Some(cores) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cores).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// The workspace root (bench/..).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A UDP port nobody uses right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `[[extension]]` blocks for `first..first+count`, password "pw" + number (Kamailio's
/// config computes the same), each with `extra` TOML lines.
pub fn extension_blocks(first: u32, count: u32, extra: &str) -> String {
    (first..first + count)
        .map(|n| format!("[[extension]]\nnumber = \"{n}\"\npassword = \"pw{n}\"\n{extra}"))
        .collect()
}

/// Extension numbers and passwords as the load generator takes them.
pub fn credentials(first: u32, count: u32) -> Vec<(String, String)> {
    (first..first + count)
        .map(|n| (n.to_string(), format!("pw{n}")))
        .collect()
}

fn scratch_dir(tag: &str) -> std::io::Result<PathBuf> {
    static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("bench-{tag}-{}-{serial}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn spawn(
    mut command: Command,
    name: String,
    addr: SocketAddr,
    dir: PathBuf,
    config: Option<PathBuf>,
) -> std::io::Result<Server> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log"))?)
        .process_group(0)
        .spawn()?;
    let server = Server {
        name,
        addr,
        child,
        dir,
        config,
    };
    wait_until_answering(addr).map_err(|e| {
        let log = std::fs::read_to_string(server.dir.join("stderr.log")).unwrap_or_default();
        std::io::Error::other(format!("{}: {e}\n{log}", server.name))
    })?;
    Ok(server)
}

/// Sends OPTIONS every 100 ms until any response comes back (10 s at most).
fn wait_until_answering(server: SocketAddr) -> std::io::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let local = socket.local_addr()?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        let options = format!(
            "OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n\
From: <sip:probe@{local}>;tag=probe\r\nTo: <sip:{server}>\r\nCall-ID: probe-{}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            gateway::sip::ids::tag(),
            gateway::sip::ids::tag()
        );
        socket.send_to(options.as_bytes(), server)?;
        if let Ok((n, _)) = socket.recv_from(&mut buffer) {
            if buffer[..n].starts_with(b"SIP/2.0 ") {
                return Ok(());
            }
        }
    }
    Err(std::io::Error::other("did not answer OPTIONS within 10 s"))
}

/// The gateway's release binary with `[sip]` on a free UDP port, MD5 digest (what the load
/// generator answers), no media anchoring, and `body` (extensions and further sections).
/// The load generator is one address placing thousands of calls a second (as an SBC in
/// front of the gateway would be), so the per-source challenge limit is lifted.
pub fn start_gateway(body: &str) -> std::io::Result<Server> {
    start_gateway_with("max_challenges_per_source = 1000000", body)
}

/// [`start_gateway`] with more `[auth]` keys (`auth`, lines such as `trusted_networks = [...]`).
pub fn start_gateway_with(auth: &str, body: &str) -> std::io::Result<Server> {
    let dir = scratch_dir("gateway")?;
    let database = format!("path = \"{}\"", dir.join("gateway.db").display());
    start_configured(dir, free_port()?, auth, &database, "\"udp\"", body)
}

/// [`start_gateway`] serving TCP and TLS as well, with `tls` as its `[tls]` section; TCP
/// on the UDP port.
pub fn start_gateway_with_tls(tls: &str, body: &str) -> std::io::Result<Server> {
    let dir = scratch_dir("gateway")?;
    let database = format!("path = \"{}\"", dir.join("gateway.db").display());
    let auth = "max_challenges_per_source = 1000000";
    let transports = "\"udp\", \"tcp\", \"tls\"";
    let body = format!("[tls]\n{tls}\n{body}");
    start_configured(dir, free_port()?, auth, &database, transports, &body)
}

/// One node of a cluster on the PostgreSQL database `url`: [`start_gateway`] listening on
/// `port`, node `id`, with the nodes listening on `peers` as its peers (one shared
/// secret) and a CDR spool of its own.
pub fn start_node(
    url: &str,
    id: &str,
    port: u16,
    peers: &[u16],
    body: &str,
) -> std::io::Result<Server> {
    let dir = scratch_dir(&format!("node-{id}"))?;
    let database = format!(
        "url = \"{url}\"\nspool = \"{}\"",
        dir.join("cdr-spool.db").display()
    );
    let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let node = format!(
        "[node]\nid = \"{id}\"\npeers = [{}]\nsecret = \"bench-cluster-secret-0123\"\n",
        peers.join(", ")
    );
    let auth = "max_challenges_per_source = 1000000";
    let body = format!("{node}{body}");
    start_configured(dir, port, auth, &database, "\"udp\"", &body)
}

/// The gateway in `dir` on UDP `port` with `[auth]` keys `auth`, `[database]` keys
/// `database`, `transports` (a TOML list's items), and `body`.
fn start_configured(
    dir: PathBuf,
    port: u16,
    auth: &str,
    database: &str,
    transports: &str,
    body: &str,
) -> std::io::Result<Server> {
    let config = format!(
        "[sip]\nlisten = \"127.0.0.1:{port}\"\ntransports = [{transports}]\n[auth]\nrealm = \"load\"\nalgorithms = [\"MD5\"]\n{auth}\n\
[database]\n{database}\n[media]\nanchor = \"never\"\n{}{body}",
        shards_section()
    );
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, config)?;
    spawn(
        gateway_command(&config_path)?,
        "gateway (ours)".into(),
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
        Some(config_path),
    )
}

/// `--shards N` on any benchmark's command line: the gateway runs N engine shards (its own
/// default, one per CPU it may use, otherwise), as a `[fastpath]` section.
fn shards_section() -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == "--shards")
        .and_then(|at| args.get(at + 1))
        .map_or(String::new(), |n| format!("[fastpath]\nshards = {n}\n"))
}

/// The gateway's release binary on `config`, logging warnings only (or the filter in
/// `BENCH_GATEWAY_LOG`, e.g. `warn,gateway::shard=info` for the queue waits at the end).
fn gateway_command(config: &Path) -> std::io::Result<Command> {
    let binary = workspace_root().join("target/release/gateway");
    if !binary.exists() {
        return Err(std::io::Error::other(format!(
            "{} missing: run cargo build --release -p gateway (scripts/bench.sh does)",
            binary.display()
        )));
    }
    let mut command = server_command(binary);
    let log = std::env::var("BENCH_GATEWAY_LOG").unwrap_or_else(|_| "warn".into());
    command.arg("--config").arg(config).arg("--log").arg(log);
    Ok(command)
}

/// Kamailio (the `kamailio` package) with `bench/kamailio/kamailio.cfg`, `children` UDP
/// worker processes, 2 GB of shared memory (its transaction table fills 256 MB at 2,000
/// calls/s) and 32 MB of private memory per process.
pub fn start_kamailio(children: u32) -> std::io::Result<Server> {
    start_kamailio_with(children, &[])
}

/// [`start_kamailio`] with more `-A NAME=VALUE` defines for the config (`defines`).
pub fn start_kamailio_with(children: u32, defines: &[String]) -> std::io::Result<Server> {
    let version = Command::new("kamailio").arg("-v").output().map_err(|e| {
        std::io::Error::other(format!(
            "kamailio not found ({e}): apt-get install kamailio"
        ))
    })?;
    let version = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap_or("?")
        .to_string();
    let dir = scratch_dir("kamailio")?;
    let port = free_port()?;
    let mut command = server_command("kamailio");
    command
        .arg("-f")
        .arg(workspace_root().join("bench/kamailio/kamailio.cfg"))
        .args([
            "-DD",
            "-E",
            "-L",
            KAMAILIO_MODULES,
            "-m",
            "2048",
            "-M",
            "32",
        ])
        .arg("-A")
        .arg(format!("LISTEN=udp:127.0.0.1:{port}"))
        .arg("-A")
        .arg(format!("CHILDREN={children}"))
        .current_dir(&dir);
    for define in defines {
        command.arg("-A").arg(define);
    }
    spawn(
        command,
        format!("kamailio {version}"),
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
        None,
    )
}
