//! A throwaway PostgreSQL cluster for tests (the store's own and the end-to-end tests in
//! `tests/`, through the `test-support` feature): `initdb` into a temporary directory,
//! `postgres` listening only on a unix socket in it, torn down (server stopped, directory
//! removed) when the cluster is dropped or the test process ends, however it ends.
//!
//! Needs the PostgreSQL server binaries (Debian's `postgresql` package); panics with what
//! to install when they are missing. PostgreSQL refuses to run as root: as root, the
//! cluster runs as the `postgres` user (created by the Debian package), else `nobody`.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The database user the cluster is created with (trusted on its socket).
pub const USER: &str = "gateway";

/// A running throwaway cluster.
pub struct TestCluster {
    dir: PathBuf,
    socket_dir: PathBuf,
    /// The keeper shell's stdin: when it closes (drop, or the process ends) the shell stops
    /// the server and removes the directory.
    keeper: Option<ChildStdin>,
    shell: Child,
    next_database: AtomicU32,
    /// With [`TestCluster::start_tls`]: the TCP port it serves TLS on, and the PEM file of
    /// the test CA that signed its certificate (for `localhost`), which a client trusts.
    tls: Option<(u16, PathBuf)>,
}

/// Where the server binaries are: `$PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian), else `initdb` on the PATH.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, no \
             initdb on the PATH, no $PG_BINDIR): install Debian's postgresql package \
             (apt-get install postgresql; scripts/test.sh does)"
        )
    })
}

/// The user and group to run the server as: None to stay who we are (not root).
fn server_user() -> Option<(u32, u32)> {
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .expect("/proc/self is readable");
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd is readable");
    for name in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3 && fields[0] == name {
                if let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) {
                    return Some((uid, gid));
                }
            }
        }
    }
    panic!("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as (PostgreSQL refuses root)");
}

fn as_server_user(command: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

/// `%2F...`: a socket directory as the host part of a URL.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl TestCluster {
    /// The cluster this test process shares (started on first use, stopped when the
    /// process ends). Tests isolate themselves with [`TestCluster::create_database`].
    pub fn shared() -> &'static TestCluster {
        static SHARED: OnceLock<TestCluster> = OnceLock::new();
        SHARED.get_or_init(TestCluster::start)
    }

    /// Starts a cluster of its own (stopped and removed when dropped).
    pub fn start() -> TestCluster {
        TestCluster::start_with(false)
    }

    /// A cluster of its own that also serves TLS on a TCP port of 127.0.0.1, with a
    /// certificate for `localhost` from a test CA made with Debian's `openssl`.
    pub fn start_tls() -> TestCluster {
        TestCluster::start_with(true)
    }

    fn start_with(tls: bool) -> TestCluster {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir();
        let user = server_user();
        let dir = std::env::temp_dir().join(format!(
            "gateway-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let socket_dir = dir.join("socket");
        std::fs::create_dir_all(&socket_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", socket_dir.display()));
        if let Some((uid, gid)) = user {
            for path in [&dir, &socket_dir] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
            }
        }
        let data = dir.join("data");
        let initdb = as_server_user(&mut Command::new(bin.join("initdb")), user)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin.join("initdb").display()));
        assert!(
            initdb.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        let (server_options, tls) = if tls {
            let (port, certificate, key, ca) = test_certificates(&dir, user);
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -c ssl=on -c ssl_cert_file={} \
                 -c ssl_key_file={}",
                certificate.display(),
                key.display()
            );
            (options, Some((port, ca)))
        } else {
            ("-c listen_addresses=".to_string(), None)
        };
        let log = std::fs::File::create(dir.join("postgres.log")).expect("postgres log file");
        // The keeper: runs the server until its stdin says `stop` or closes, then stops it
        // (fast shutdown) and removes the directory; any other line restarts the server
        // (stopped, started again, "keeper: restarted" in the log). A `stop` taken for a
        // restart would signal the new server before it handles SIGINT (a background job
        // of `sh` starts with SIGINT ignored): the keeper would wait for it for ever.
        let script = r#"
            postgres=$0 data=$1 sockets=$2 dir=$3 options=$4
            serve() {
                # $options unquoted: one word per option.
                "$postgres" -D "$data" -k "$sockets" $options -c fsync=off \
                    -c full_page_writes=off -c max_connections=200 &
                pg=$!
            }
            serve
            while read line && [ "$line" != stop ]; do
                kill -INT "$pg"
                wait "$pg"
                serve
                echo "keeper: restarted" >&2
            done
            kill -INT "$pg"
            wait "$pg"
            rm -rf "$dir"
        "#;
        let mut shell = as_server_user(&mut Command::new("sh"), user)
            .arg("-c")
            .arg(script)
            .arg(bin.join("postgres"))
            .arg(&data)
            .arg(&socket_dir)
            .arg(&dir)
            .arg(&server_options)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawning sh for postgres");
        let keeper = shell.stdin.take();
        let cluster = TestCluster {
            dir,
            socket_dir,
            keeper,
            shell,
            next_database: AtomicU32::new(0),
            tls,
        };
        cluster.wait_until_ready();
        cluster
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.admin() {
                Ok(_) => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "PostgreSQL did not accept connections within 30 s ({e}):\n{}",
                    self.log()
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (fast shutdown: every connection dropped) and starts it again, as
    /// an operator's restart does; returns once it accepts connections again.
    pub fn restart(&self) {
        let restarts = || self.log().matches("keeper: restarted").count();
        let before = restarts();
        let mut keeper = self.keeper.as_ref().expect("the keeper runs");
        keeper
            .write_all(b"restart\n")
            .and_then(|()| keeper.flush())
            .expect("asking the keeper to restart PostgreSQL");
        let deadline = Instant::now() + Duration::from_secs(30);
        while restarts() == before {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL was not restarted within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_until_ready();
    }

    /// A connection to the `postgres` database, as the cluster's superuser.
    fn admin(&self) -> Result<postgres::Client, postgres::Error> {
        let mut config = postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port())
            .user(USER)
            .dbname("postgres");
        config.connect(postgres::NoTls)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// The directory of the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The `postgres://` URL of database `name` in this cluster (as the gateway's
    /// `database.url` names it).
    pub fn url(&self, name: &str) -> String {
        let port = match self.port() {
            5432 => String::new(),
            // The unix socket's name has the port in it.
            port => format!(":{port}"),
        };
        format!(
            "postgres://{USER}@{}{port}/{name}",
            percent_encode(&self.socket_dir.to_string_lossy())
        )
    }

    /// The server's port (its unix socket is named after it): 5432 unless it serves TLS.
    fn port(&self) -> u16 {
        self.tls.as_ref().map_or(5432, |(port, _)| *port)
    }

    /// The URL of database `name` over TLS (TCP to `localhost`, `sslmode=require`) and the
    /// CA file a client must trust: a cluster started with [`TestCluster::start_tls`].
    pub fn tls_url(&self, name: &str) -> (String, PathBuf) {
        let (port, ca) = self
            .tls
            .clone()
            .expect("a cluster started with TestCluster::start_tls");
        (
            format!("postgres://{USER}@localhost:{port}/{name}?sslmode=require"),
            ca,
        )
    }

    /// How many connections to database `name` are encrypted (TLS).
    pub fn encrypted_connections(&self, name: &str) -> i64 {
        self.admin()
            .and_then(|mut admin| {
                admin.query_one(
                    "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
                     WHERE s.ssl AND a.datname = $1",
                    &[&name],
                )
            })
            .map(|row| row.get(0))
            .unwrap_or_else(|e| panic!("reading pg_stat_ssl: {e:?}"))
    }

    /// Creates a new empty database; its URL.
    pub fn create_database(&self) -> String {
        let name = format!(
            "test_{}",
            self.next_database.fetch_add(1, Ordering::Relaxed)
        );
        self.admin()
            .and_then(|mut admin| admin.batch_execute(&format!("CREATE DATABASE {name}")))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}\n{}", self.log()));
        self.url(&name)
    }

    /// Makes the database of `url` unreachable for the gateway: new connections refused,
    /// the open ones dropped (as when its server goes away).
    pub fn refuse_connections(&self, url: &str) {
        let name = url.rsplit('/').next().unwrap_or_default();
        self.admin()
            .and_then(|mut admin| {
                admin.batch_execute(&format!(
                    "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
                     SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{name}'"
                ))
            })
            .unwrap_or_else(|e| panic!("refusing connections to {name}: {e:?}"));
        // pg_terminate_backend only signals: wait until the backends are gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left: i64 = self
                .admin()
                .and_then(|mut admin| {
                    admin.query_one(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1",
                        &[&name],
                    )
                })
                .map(|row| row.get(0))
                .unwrap_or_else(|e| panic!("counting the connections to {name}: {e:?}"));
            if left == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{left} connection(s) to {name} still open"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Undoes [`TestCluster::refuse_connections`].
    pub fn allow_connections(&self, url: &str) {
        let name = url.rsplit('/').next().unwrap_or_default();
        self.admin()
            .and_then(|mut admin| {
                admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
            })
            .unwrap_or_else(|e| panic!("allowing connections to {name}: {e:?}"));
    }

    /// A plain client connection to a database of this cluster (for checks and for
    /// tampering in tests).
    pub fn client(&self, url: &str) -> postgres::Client {
        postgres::Client::connect(url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to {url}: {e:?}"))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(mut keeper) = self.keeper.take() {
            let _ = keeper.write_all(b"stop\n");
        }
        let _ = self.shell.wait();
    }
}

/// A test CA, and a certificate for `localhost` it signed with its key, in `dir` (owned
/// by the server's user, the key private as PostgreSQL demands), and a free TCP port to
/// serve on: (port, certificate, key, CA certificate).
fn test_certificates(dir: &Path, user: Option<(u32, u32)>) -> (u16, PathBuf, PathBuf, PathBuf) {
    let pki = crate::test_support::pki::TestPki::create(dir);
    let (certificate, key) = (
        PathBuf::from(pki.server_certificate()),
        PathBuf::from(pki.server_key()),
    );
    for file in [&certificate, &key] {
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(file, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", file.display()));
        }
    }
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", key.display()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free TCP port");
    (port, certificate, key, PathBuf::from(pki.ca_certificate()))
}
