//! Attacks on the real binary: a pipelined password guesser is blocked after the
//! configured failures and the block line is what the fail2ban filter in `contrib/`
//! matches (checked with Debian's `fail2ban-regex`); credentials computed for one
//! Request-URI cannot place a call to another (toll fraud).

use e2e_tests::{status_of, workspace_root, Gateway, GatewayOptions};
use gateway::auth::{digest_response, DigestInput};
use gateway::config::DigestAlgorithm;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

/// A raw SIP client on its own UDP socket.
struct Client {
    socket: UdpSocket,
    port: u16,
}

impl Client {
    fn new() -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = socket.local_addr().unwrap().port();
        Client { socket, port }
    }

    fn send(&self, gateway: &Gateway, text: &str) {
        self.socket
            .send_to(text.as_bytes(), gateway.addr())
            .expect("send udp");
    }

    /// The next response other than 100 Trying, waiting up to `wait`.
    fn response(&self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        let mut buffer = vec![0u8; 65_536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let (n, _) = self.socket.recv_from(&mut buffer).ok()?;
            let text = String::from_utf8_lossy(&buffer[..n]).to_string();
            if !text.starts_with("SIP/2.0 100 ") {
                return Some(text);
            }
        }
    }

    /// Every response already waiting on the socket.
    fn drain(&self) -> Vec<String> {
        std::iter::from_fn(|| self.response(Duration::from_millis(1))).collect()
    }

    fn request(
        &self,
        method: &str,
        to: &str,
        branch: &str,
        cseq: u32,
        auth: Option<&str>,
    ) -> String {
        let port = self.port;
        let auth = auth.map(|line| format!("{line}\r\n")).unwrap_or_default();
        let user = if method == "REGISTER" {
            to.trim_start_matches("sip:")
                .split('@')
                .next()
                .unwrap_or("")
        } else {
            "202"
        };
        let uri = if method == "REGISTER" {
            "sip:127.0.0.1".to_string()
        } else {
            to.to_string()
        };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=t{port}\r\nTo: <{to}>\r\n\
Call-ID: sec-{port}@127.0.0.1\r\nCSeq: {cseq} {method}\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\n\
{auth}Content-Length: 0\r\n\r\n"
        )
    }
}

fn nonce_of(response: &str) -> String {
    let start = response.find("nonce=\"").expect("a challenge") + 7;
    response[start..start + response[start..].find('"').unwrap()].to_string()
}

fn md5_credentials(
    header: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
) -> String {
    let response = digest_response(&DigestInput {
        algorithm: DigestAlgorithm::Md5,
        username: user,
        realm: "office",
        password,
        method,
        uri,
        nonce,
        nc: "00000001",
        cnonce: "e2e",
        qop: "auth",
    });
    format!(
        "{header}: Digest username=\"{user}\", realm=\"office\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"e2e\""
    )
}

fn fail2ban_regex() -> &'static str {
    let found = Command::new("fail2ban-regex").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "fail2ban-regex is missing: install Debian's fail2ban (scripts/test.sh does)"
    );
    "fail2ban-regex"
}

#[test]
fn a_pipelined_guesser_is_blocked_and_fail2ban_finds_its_address() {
    let mut gateway = Gateway::start(GatewayOptions::default());
    let guesser = Client::new();
    guesser.send(
        &gateway,
        &guesser.request("REGISTER", "sip:201@127.0.0.1", "g0", 1, None),
    );
    let challenge = guesser.response(Duration::from_secs(5)).expect("a 401");
    assert_eq!(status_of(&challenge), Some(401), "{challenge}");
    let nonce = nonce_of(&challenge);
    // svcrack-style: every guess on the same nonce, sent without waiting for answers.
    for guess in 1..=50u32 {
        let auth = md5_credentials(
            "Authorization",
            "201",
            &format!("pw{guess}"),
            "REGISTER",
            "sip:127.0.0.1",
            &nonce,
        );
        guesser.send(
            &gateway,
            &guesser.request(
                "REGISTER",
                "sip:201@127.0.0.1",
                &format!("g{guess}"),
                guess + 1,
                Some(&auth),
            ),
        );
    }
    gateway.wait_for_log("auth: blocked 127.0.0.1:");
    // The real password from the blocked address is not even looked at.
    let right = md5_credentials(
        "Authorization",
        "201",
        "pw201",
        "REGISTER",
        "sip:127.0.0.1",
        &nonce,
    );
    guesser.send(
        &gateway,
        &guesser.request("REGISTER", "sip:201@127.0.0.1", "g99", 99, Some(&right)),
    );

    let filter = workspace_root().join("contrib/fail2ban/filter.d/pots-gateway.conf");
    let output = Command::new(fail2ban_regex())
        .arg("--out")
        .arg("ip")
        .arg(gateway.log_path())
        .arg(&filter)
        .output()
        .expect("run fail2ban-regex");
    let ips = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "fail2ban-regex failed: {ips}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        ips.lines().collect::<Vec<_>>(),
        ["127.0.0.1"],
        "one block, one address:\n{}",
        gateway.log()
    );

    assert!(
        gateway.terminate().is_some_and(|s| s.success()),
        "clean exit"
    );
    let log = gateway.log();
    assert!(
        log.contains("auth: 5 failed authentication(s), 1 source(s) blocked, 46 request(s) from blocked sources dropped"),
        "{log}"
    );
    let answers = guesser.drain();
    let statuses: Vec<_> = answers.iter().filter_map(|r| status_of(r)).collect();
    assert_eq!(statuses, [403; 5], "five refusals, then silence");
}

/// Finding 1: a Proxy-Authorization for `INVITE sip:203@...` was accepted on
/// `INVITE sip:9555123@...` (9 + a PSTN number: the analog line).
#[test]
fn a_digest_for_one_target_cannot_dial_the_pstn() {
    let gateway = Gateway::start(GatewayOptions::default());
    let phone = Client::new();
    phone.send(
        &gateway,
        &phone.request("INVITE", "sip:203@127.0.0.1", "t0", 1, None),
    );
    let challenge = phone.response(Duration::from_secs(5)).expect("a 407");
    assert_eq!(status_of(&challenge), Some(407), "{challenge}");
    let for_203 = md5_credentials(
        "Proxy-Authorization",
        "202",
        "pw202",
        "INVITE",
        "sip:203@127.0.0.1",
        &nonce_of(&challenge),
    );
    phone.send(
        &gateway,
        &phone.request("INVITE", "sip:9555123@127.0.0.1", "t1", 2, Some(&for_203)),
    );
    let answer = phone.response(Duration::from_secs(5)).expect("an answer");
    assert_eq!(status_of(&answer), Some(400), "{answer}");
    assert!(
        answer.contains("digest uri does not match the Request-URI"),
        "{answer}"
    );
    gateway.wait_for_log("digest uri \"sip:203@127.0.0.1\" does not match the Request-URI");
}

/// Finding 4: fast path -> engine queues were unbounded and served in arrival order, so a
/// flood of new INVITEs delayed everything by seconds. A backlog of new requests now gets
/// 503 with Retry-After once they waited too long, and an OPTIONS probe sent behind the
/// flood is answered at once.
#[test]
fn a_flood_of_new_invites_is_shed_with_503_while_a_probe_is_answered() {
    let gateway = Gateway::start(GatewayOptions {
        extra: "[overload]\nmax_queue_delay_ms = 1\nretry_after_secs = 9\n".into(),
        ..GatewayOptions::default()
    });
    let flood = Client::new();
    for n in 0..5_000 {
        flood.send(
            &gateway,
            &flood.request("INVITE", "sip:201@127.0.0.1", &format!("f{n}"), 1, None),
        );
    }
    let probe = Client::new();
    probe.send(
        &gateway,
        &e2e_tests::options_request(gateway.port, "probe")
            .replace(&format!("sip:{}@", gateway.port), "sip:"),
    );
    let answer = probe
        .response(Duration::from_secs(5))
        .expect("the probe is answered");
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    gateway.wait_for_log("overload: answered 503");
    let mut shed = None;
    while shed.is_none() {
        let Some(response) = flood.response(Duration::from_secs(5)) else {
            break;
        };
        shed = Some(response).filter(|r| status_of(r) == Some(503));
    }
    let shed = shed.expect("a 503 reached the flooder");
    assert!(shed.contains("Retry-After: 9"), "{shed}");
}
