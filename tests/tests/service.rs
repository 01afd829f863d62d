//! The gateway as a systemd service: the unit file passes `systemd-analyze verify`, and the
//! real binary speaks the `sd_notify` protocol to a notify socket the test holds as systemd
//! would (`READY=1` once listening, the watchdog fed, `RELOADING=1` then `READY=1` around a
//! reload, `STOPPING=1` on SIGTERM), and under systemd logs to journald with fields (a
//! journal socket of the test's own, bound over /run/systemd/journal in a private mount
//! namespace).

use e2e_tests::{free_port, gateway_binary, Gateway, GatewayOptions};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

/// The unit file of the package.
const UNIT: &str = "../contrib/systemd/pots-gateway.service";

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(UNIT).expect("the unit file");
    assert!(
        unit.contains("ExecStart=/usr/bin/pots-gateway --config /etc/pots-gateway/gateway.toml")
    );
    // verify checks that ExecStart's binary exists: point it at the one built here.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pots-gateway.service");
    let binary = gateway_binary();
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/pots-gateway", &binary.display().to_string()),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    for hardening in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=pots-gateway",
        "SupplementaryGroups=dialout",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_BPF",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }
}

/// A notify socket as systemd holds one.
struct NotifySocket {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> (NotifySocket, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let path = path.display().to_string();
        (NotifySocket { socket, _dir: dir }, path)
    }

    /// The next notice's assignments, one per line.
    fn next(&self) -> Vec<String> {
        let mut buffer = [0u8; 4096];
        let length = self
            .socket
            .recv(&mut buffer)
            .expect("a notice from the gateway within 15 s");
        String::from_utf8_lossy(&buffer[..length])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Reads notices until one holds `assignment`; returns it.
    fn until(&self, assignment: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let notice = self.next();
            if notice.iter().any(|line| line == assignment) {
                return notice;
            }
            assert!(Instant::now() < deadline, "no {assignment} came");
        }
    }
}

#[test]
fn the_gateway_notifies_readiness_feeds_the_watchdog_and_says_when_it_reloads_and_stops() {
    let (notify, path) = NotifySocket::new();
    let mut gateway = Gateway::start(GatewayOptions {
        env: vec![("NOTIFY_SOCKET", path), ("WATCHDOG_USEC", "1000000".into())],
        ..GatewayOptions::default()
    });
    let ready = notify.until("READY=1");
    assert!(
        ready
            .iter()
            .any(|l| l.starts_with("STATUS=serving SIP on ")),
        "{ready:?}"
    );
    // Ready means serving: the log already says it listens.
    assert!(
        gateway.log().contains("listening on udp"),
        "{}",
        gateway.log()
    );
    notify.until("WATCHDOG=1");
    notify.until("WATCHDOG=1");
    gateway.wait_for_log("systemd watchdog: 1000 ms, fed every 500 ms");

    let reloaded = gateway.subcommand(&["status", "reload"]);
    assert!(reloaded.status.success());
    let reloading = notify.until("RELOADING=1");
    assert!(
        reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "Type=notify-reload wants the time: {reloading:?}"
    );
    notify.until("READY=1");

    assert!(gateway.terminate().is_some_and(|status| status.success()));
    notify.until("STOPPING=1");
}

/// The fields of one journal entry in the native protocol (`KEY=value` lines, or a key,
/// a newline, a 64-bit little-endian length and the value for values with newlines).
fn journal_fields(mut datagram: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while !datagram.is_empty() {
        let Some(end) = datagram.iter().position(|&b| b == b'\n' || b == b'=') else {
            break;
        };
        let key = String::from_utf8_lossy(&datagram[..end]).to_string();
        if datagram[end] == b'=' {
            let rest = &datagram[end + 1..];
            let line = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            fields.push((key, String::from_utf8_lossy(&rest[..line]).to_string()));
            datagram = &rest[(line + 1).min(rest.len())..];
        } else {
            let rest = &datagram[end + 1..];
            let length = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = &rest[8..8 + length];
            fields.push((key, String::from_utf8_lossy(value).to_string()));
            datagram = &rest[(8 + length + 1).min(rest.len())..];
        }
    }
    fields
}

#[test]
fn under_systemd_the_log_goes_to_journald_with_fields() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let journal = UnixDatagram::bind(journal_dir.join("socket")).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = \"127.0.0.1:{}\"\ntransports = [\"udp\"]\n[database]\npath = \"{}\"\n",
            free_port(),
            dir.path().join("gateway.db").display()
        ),
    )
    .unwrap();
    // systemd sets JOURNAL_STREAM when stderr is the journal; the journal's socket is the
    // test's, bound over /run/systemd/journal for the gateway alone.
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mkdir -p /run/systemd/journal && mount --bind \"$0\" /run/systemd/journal && exec \"$@\"")
        .arg(&journal_dir)
        .arg(gateway_binary())
        .arg("--config")
        .arg(&config)
        .env("JOURNAL_STREAM", "8:1234")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("unshare (util-linux) starts the gateway in a mount namespace");
    let mut buffer = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(15);
    let entry = loop {
        assert!(
            Instant::now() < deadline,
            "no journal entry about listening"
        );
        let length = journal
            .recv(&mut buffer)
            .expect("a journal entry within 15 s");
        let fields = journal_fields(&buffer[..length]);
        if fields
            .iter()
            .any(|(k, v)| k == "MESSAGE" && v.starts_with("listening on udp"))
        {
            break fields;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let field = |name: &str| {
        entry
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {entry:?}"))
    };
    assert_eq!(field("PRIORITY"), "6", "info");
    assert_eq!(field("SYSLOG_IDENTIFIER"), "pots-gateway");
    assert_eq!(field("TARGET"), "gateway::runtime");
    assert!(field("CODE_FILE").ends_with("runtime.rs"), "{entry:?}");
    assert!(field("CODE_LINE").parse::<u32>().is_ok(), "{entry:?}");
}
