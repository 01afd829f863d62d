//! baresip (Debian `baresip-core`) as a SIP phone in the end-to-end tests: it registers an
//! extension with the gateway, answers calls itself, places the calls its start commands
//! name, and sends a 440 Hz tone as its audio. Its SIP trace (`-s`) and its console (the
//! stdio module: call states, `audio=<sent>/<received> (bit/s)`) go to a file the tests
//! read: the trace names the transport and the addresses of every message.

use crate::{free_port, Gateway};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// What the phone sends as audio, Hz.
pub const TONE_HZ: f32 = 440.0;

/// A running baresip.
pub struct Baresip {
    /// The extension it registers.
    ext: String,
    child: Child,
    /// Held open: the stdio module reads its console from it (a pipe, which epoll takes).
    _console: Option<ChildStdin>,
    output: PathBuf,
    _dir: tempfile::TempDir,
}

impl Baresip {
    /// baresip as extension `ext` (password `pw<ext>`), registering over TLS to the
    /// gateway's TLS port `tls_port` and trusting the CA certificate `ca`.
    pub fn over_tls(ext: &str, tls_port: u16, ca: &str) -> Baresip {
        Baresip::over_tls_with(ext, tls_port, ca, "", &[])
    }

    /// [`Baresip::over_tls`] with more account parameters (`account_params`, e.g.
    /// `;mediaenc=srtp-mand`, or `;answermode=manual` for a phone that only rings) and
    /// console commands run at start (`commands`, e.g. `/dial 101`).
    pub fn over_tls_with(
        ext: &str,
        tls_port: u16,
        ca: &str,
        account_params: &str,
        commands: &[&str],
    ) -> Baresip {
        // It answers calls itself unless the parameters say otherwise.
        let answer = match account_params.contains("answermode=") {
            true => "",
            false => ";answermode=auto",
        };
        let account = format!(
            "<sip:{ext}@127.0.0.1;transport=tls>;outbound=\"sip:127.0.0.1:{tls_port};transport=tls\";\
             auth_pass=pw{ext};regint=600{answer}{account_params}"
        );
        Baresip::start(ext, &account, &format!("sip_cafile {ca}\n"), commands)
    }

    fn start(ext: &str, account: &str, extra_config: &str, commands: &[&str]) -> Baresip {
        let dir = tempfile::tempdir().expect("temporary directory");
        let tone = dir.path().join("tone.wav");
        let made = Command::new("sox")
            .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
            .arg(&tone)
            .args(["synth", "120", "sine", &TONE_HZ.to_string()])
            .output()
            .expect("sox runs (Debian package sox; scripts/test.sh installs it)");
        assert!(
            made.status.success(),
            "sox: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        // baresip listens for TLS on the port after its SIP port: two free ones in a row.
        let sip_port = loop {
            let port = free_port();
            if free_port() == port + 1 {
                break port;
            }
        };
        // RTP above the kernel's ephemeral ports and the gateway tests' ranges.
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\n{extra_config}\
             audio_source aufile,{}\naudio_player aufile,{}\naudio_alert aufile,/dev/null\n\
             rtp_ports 61000-61999\nmodule_path /usr/lib/baresip/modules\n\
             module stdio.so\nmodule menu.so\nmodule g711.so\nmodule aufile.so\n\
             module srtp.so\nmodule account.so\n",
            tone.display(),
            dir.path().join("heard.wav").display()
        );
        std::fs::write(dir.path().join("config"), config).expect("write baresip's config");
        std::fs::write(dir.path().join("accounts"), format!("{account}\n"))
            .expect("write baresip's accounts");
        let output = dir.path().join("baresip.log");
        let log = std::fs::File::create(&output).expect("baresip's log");
        let mut command = Command::new("baresip");
        command.arg("-f").arg(dir.path()).arg("-s");
        for line in commands {
            command.arg("-e").arg(line);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("baresip runs (Debian package baresip-core; scripts/test.sh installs it)");
        Baresip {
            ext: ext.to_string(),
            _console: child.stdin.take(),
            child,
            output,
            _dir: dir,
        }
    }

    /// Everything baresip printed so far (its SIP trace included).
    pub fn output(&self) -> String {
        read(&self.output)
    }

    /// Waits until baresip has printed `text`; panics after 15 s or when it exits.
    pub fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.output().contains(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("baresip exited with {status}:\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "baresip never printed {text:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until baresip has registered over TLS and the gateway holds its contact.
    pub fn wait_registered(&mut self, gateway: &Gateway) {
        self.wait_for("{0/TLS/v4} 200 OK");
        gateway.wait_for_log(&format!("{} now has 1 contact(s)", self.ext));
    }

    /// Waits until baresip decodes at least 32 kbit/s of the far end's audio (half of
    /// G.711's 64); panics after 15 s.
    pub fn wait_for_audio_received(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.received_audio_bits_per_second() < 32_000 {
            assert!(
                Instant::now() < deadline,
                "baresip {} decoded no audio:\n{}",
                self.ext,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The bit rate of the audio baresip received and decoded, from the newest status line
    /// of its console (`audio=<sent>/<received> (bit/s)`); 0 before there is one.
    pub fn received_audio_bits_per_second(&self) -> u64 {
        let output = self.output();
        output
            .rsplit("audio=")
            .next()
            .filter(|_| output.contains("audio="))
            .and_then(|rates| rates.split_whitespace().next())
            .and_then(|rates| rates.split_once('/'))
            .and_then(|(_, received)| received.parse().ok())
            .unwrap_or(0)
    }

    /// The SIP messages baresip sent and received, as its trace shows them: a line of
    /// transport and addresses (`TLS 127.0.0.1:5061 -> 127.0.0.1:40000`), then the message.
    pub fn trace(&self) -> Vec<Traced> {
        let output = self.output();
        let mut traced = Vec::new();
        let mut lines = output.lines();
        while let Some(line) = lines.next() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [transport, from, "->", to] = words[..] {
                traced.push(Traced {
                    transport: transport.to_string(),
                    from: from.to_string(),
                    to: to.to_string(),
                    start_line: lines.next().unwrap_or_default().to_string(),
                });
            }
        }
        traced
    }
}

/// A SIP message in baresip's trace.
#[derive(Debug, Clone)]
pub struct Traced {
    /// `UDP`, `TCP` or `TLS`.
    pub transport: String,
    /// The sender's address.
    pub from: String,
    /// The receiver's address.
    pub to: String,
    /// The request or status line.
    pub start_line: String,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}
