//! linphone (Debian `linphone-cli`, its daemon `linphone-daemon`) as a SIP phone in the
//! end-to-end tests: registered over TLS with the server checked against the test CA,
//! SRTP mandatory, answering calls itself, driven through the daemon's Unix socket
//! (`call`, `call-status`, `incall-player-start` to play a WAV file into the call).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bounds each wait on the daemon.
const WAIT: Duration = Duration::from_secs(15);

/// A running linphone daemon and the connection to its socket.
pub struct Linphone {
    child: Child,
    socket: UnixStream,
    /// Everything the daemon answered or reported so far.
    answers: Arc<Mutex<String>>,
    log: PathBuf,
    pipe: PathBuf,
    dir: tempfile::TempDir,
}

impl Linphone {
    /// linphone as extension `ext` (password `pw<ext>`, realm `office`) registering over
    /// TLS to the gateway's TLS port `tls_port`, trusting the CA certificate `ca`.
    pub fn over_tls(ext: &str, tls_port: u16, ca: &str) -> Linphone {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().expect("temporary directory");
        // Its database lives under $HOME, which must exist.
        std::fs::create_dir_all(dir.path().join(".local/share/linphone")).expect("linphone's home");
        let config = dir.path().join("linphonerc");
        std::fs::write(
            &config,
            format!(
                "[sip]\nsip_port=-1\nsip_tcp_port=-1\nsip_tls_port=-1\ndefault_proxy=0\n\
                 media_encryption=srtp\nmedia_encryption_mandatory=1\nroot_ca={ca}\n\
                 verify_server_certs=1\nverify_server_cn=0\n\
                 [rtp]\naudio_rtp_port=62000-62999\n[sound]\necho_cancellation=0\n\
                 [proxy_0]\nreg_proxy=<sip:127.0.0.1:{tls_port};transport=tls>\n\
                 reg_identity=sip:{ext}@127.0.0.1\nreg_expires=600\nreg_sendregister=1\npublish=0\n\
                 [auth_info_0]\nusername={ext}\nuserid={ext}\npasswd=pw{ext}\nrealm=office\n\
                 domain=127.0.0.1\n"
            ),
        )
        .expect("write linphonerc");
        let name = format!(
            "e2e-linphone-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let pipe = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_file(&pipe);
        let log = dir.path().join("linphone.log");
        let child = Command::new("linphone-daemon")
            .arg("--config")
            .arg(&config)
            .args([
                "--pipe",
                &name,
                "--auto-answer",
                "--disable-stats-events",
                "--log",
            ])
            .arg(&log)
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "linphone-daemon runs (Debian package linphone-cli; scripts/test.sh installs it)",
            );
        let deadline = Instant::now() + WAIT;
        let socket = loop {
            if let Ok(socket) = UnixStream::connect(&pipe) {
                break socket;
            }
            assert!(
                Instant::now() < deadline,
                "linphone-daemon opened no socket at {}",
                pipe.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let answers = Arc::new(Mutex::new(String::new()));
        let mut reader = socket.try_clone().expect("the socket twice");
        let collected = answers.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    return;
                }
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                collected.lock().expect("answers").push_str(&text);
            }
        });
        Linphone {
            child,
            socket,
            answers,
            log,
            pipe,
            dir,
        }
    }

    /// Sends `command` and waits until its answer contains `expected`, sending it again
    /// every 200 ms (for states that come later); returns that answer. Panics after 15 s.
    pub fn until(&mut self, command: &str, expected: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let start = self.answers.lock().expect("answers").len();
            self.socket
                .write_all(format!("{command}\n").as_bytes())
                .expect("write to linphone-daemon");
            let sent = Instant::now();
            while sent.elapsed() < Duration::from_millis(200) {
                let answers = self.answers.lock().expect("answers");
                if answers[start..].contains(expected) {
                    return answers[start..].to_string();
                }
                drop(answers);
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(
                Instant::now() < deadline,
                "linphone never answered {command:?} with {expected:?}:\n{}",
                self.answers.lock().expect("answers")
            );
        }
    }

    /// linphone's own log (its SIP messages included).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The bit rate of the RTP linphone received (kbit/s, SRTP decrypted) in the newest
    /// bandwidth line of its log (`RTP : [d=76.20,u=0.77]`); 0 before there is one.
    pub fn received_kbit_per_second(&self) -> f64 {
        let log = self.log();
        log.rsplit("RTP : [d=")
            .next()
            .filter(|_| log.contains("RTP : [d="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|rate| rate.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Plays a 30 s tone of `hz` into the current call.
    pub fn play_tone(&mut self, hz: f32) {
        let tone = self.dir.path().join("tone.wav");
        let made = Command::new("sox")
            .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
            .arg(&tone)
            .args(["synth", "30", "sine", &hz.to_string()])
            .status()
            .expect("sox runs (Debian package sox)");
        assert!(made.success(), "sox made no tone");
        self.until(
            &format!("incall-player-start {}", tone.display()),
            "Status: Ok",
        );
    }

    /// A scratch directory of this phone's (for the audio files it plays).
    pub fn scratch(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pipe);
    }
}
