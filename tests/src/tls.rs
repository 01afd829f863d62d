//! SIP over TLS in the end-to-end tests: the test certificates
//! (`gateway::test_support::pki`), the gateway's `[tls]` section pointing at copies of them
//! that a test may swap, and `openssl s_client` as a TLS client (Debian's OpenSSL, a peer
//! independent of the gateway's rustls).

use crate::{free_port, GatewayOptions};
use gateway::test_support::pki::{TestPki, SERVER_NAME};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bounds each wait for `openssl s_client` output.
const WAIT: Duration = Duration::from_secs(15);

/// Test certificates and the files the gateway's `[tls]` names.
pub struct TlsSetup {
    /// The test CA and its certificates.
    pub pki: TestPki,
    /// The TLS port the gateway listens on.
    pub port: u16,
    /// The certificate file `tls.certificate` names (a copy, so tests can replace it).
    pub certificate: PathBuf,
    /// The key file `tls.private_key` names.
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsSetup {
    /// A PKI, a free port, and the valid server certificate and key in place.
    pub fn new() -> TlsSetup {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pki = TestPki::create(dir.path());
        let setup = TlsSetup {
            port: free_port(),
            certificate: dir.path().join("gateway.crt"),
            key: dir.path().join("gateway.key"),
            pki,
            _dir: dir,
        };
        setup.install(&setup.pki.server_certificate(), &setup.pki.server_key());
        setup
    }

    /// Copies `certificate` and `key` over the files the gateway reads (on start, SIGHUP).
    pub fn install(&self, certificate: &str, key: &str) {
        std::fs::copy(certificate, &self.certificate).expect("copy the certificate");
        std::fs::copy(key, &self.key).expect("copy the key");
    }

    /// The `[tls]` section for the gateway: its port on 127.0.0.1 and the two files.
    pub fn section(&self) -> String {
        format!(
            "listen = \"127.0.0.1:{}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"",
            self.port,
            self.certificate.display(),
            self.key.display()
        )
    }

    /// The gateway's options: the defaults, serving TLS as well.
    pub fn options(&self) -> GatewayOptions {
        GatewayOptions {
            tls: Some(self.section()),
            ..GatewayOptions::default()
        }
    }

    /// `openssl s_client` connecting to the gateway's TLS port with `args` added (e.g.
    /// `-tls1_3`), verifying the server against the test CA when `verify`.
    pub fn s_client(&self, verify: bool, args: &[&str]) -> SClient {
        let mut command = Command::new("openssl");
        command
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", self.port)])
            .args(["-ign_eof", "-servername", SERVER_NAME]);
        if verify {
            let ca = self.pki.ca_certificate();
            command.args(["-CAfile", &ca, "-verify_return_error"]);
            command.args(["-verify_hostname", SERVER_NAME]);
        }
        SClient::spawn(command.args(args))
    }
}

impl Default for TlsSetup {
    fn default() -> Self {
        TlsSetup::new()
    }
}

/// A running `openssl s_client`: what it printed (stdout and stderr), and its stdin for
/// SIP messages to send over the connection.
pub struct SClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: String,
}

impl SClient {
    fn spawn(command: &mut Command) -> SClient {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl runs (Debian package openssl; scripts/test.sh installs it)");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        forward_lines(stdout, tx.clone());
        forward_lines(stderr, tx);
        SClient {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: String::new(),
        }
    }

    /// Sends `text` over the TLS connection.
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).expect("write to s_client");
        stdin.flush().expect("flush s_client's stdin");
    }

    /// Waits until the output holds `text`: true, or false once s_client has ended
    /// without printing it. Panics after 15 s.
    pub fn wait_for(&mut self, text: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        while !self.seen.contains(text) {
            if !self.receive(deadline, text) {
                return false;
            }
        }
        true
    }

    /// Closes s_client's stdin and waits until it has ended; returns everything it
    /// printed.
    pub fn finish(mut self) -> String {
        self.stdin = None;
        let deadline = Instant::now() + WAIT;
        while self.receive(deadline, "its end") {}
        let _ = self.child.wait();
        self.seen.clone()
    }

    /// Takes the next line printed; false once s_client has ended. Panics at `deadline`.
    fn receive(&mut self, deadline: Instant, awaited: &str) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                self.seen.push_str(&line);
                self.seen.push('\n');
                true
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => false,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "s_client printed no {awaited:?} within {WAIT:?}:\n{}",
                    self.seen
                )
            }
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> &str {
        &self.seen
    }
}

impl Drop for SClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends each line `from` prints to `to`, on a thread of its own.
fn forward_lines(from: impl Read + Send + 'static, to: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if to.send(line).is_err() {
                return;
            }
        }
    });
}

/// An OPTIONS request over TLS with `call_id`, for a SIP answer.
pub fn options_over_tls(call_id: &str) -> String {
    format!(
        "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=t{call_id}\r\nTo: <sip:gw@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}
