//! The gateway as a systemd service: the unit file passes `systemd-analyze verify`, and the
//! real binary speaks the `sd_notify` protocol to a notify socket the test holds as systemd
//! would (`READY=1` once listening, the watchdog fed, `RELOADING=1` then `READY=1` around a
//! reload, `STOPPING=1` on SIGTERM).

use e2e_tests::{gateway_binary, Gateway, GatewayOptions};
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
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
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
