//! The engine driven in virtual time by scripted phones: registration, calls, failures.

mod addresses;
mod blf;
mod blf_nodes;
mod nodes;
mod pickup;
mod security;
mod shards;
mod srtp;

use super::{Engine, Now};
use crate::config::Config;
use crate::sip::message::SipMessage;
use crate::store::{execute, Store};
use crate::transport::{Peer, Protocol};
use ezk_sip_types::Name;
use md5::{Digest, Md5};
use std::path::Path;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[sip]
listen = "127.0.0.1:5060"
[auth]
realm = "office"
algorithms = ["MD5"]
[calls]
ring_timeout_secs = 30
[database]
path = "unused.db"
[[extension]]
number = "201"
password = "pw201"
[[extension]]
number = "202"
password = "pw202"
display_name = "Bob"
[[extension]]
number = "203"
password = "pw203"
"#;

fn udp(port: u16) -> Peer {
    Peer {
        protocol: Protocol::Udp,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
    }
}

struct Harness {
    engine: Engine,
    now: Now,
    /// The store the engine's commands go to, as the runtime's store thread would apply them.
    store: Store,
    /// What PostgreSQL would notify the other nodes of (BLF writes), which SQLite does not:
    /// `blf_nodes.rs` hands them on.
    notices: Vec<crate::store::StoreResult>,
    _dir: tempfile::TempDir,
}

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

fn param(challenge: &str, name: &str) -> String {
    let start = challenge
        .find(&format!("{name}="))
        .expect("parameter present")
        + name.len()
        + 1;
    let rest = &challenge[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted[..quoted.find('"').unwrap()].to_string()
    } else {
        rest.split(',').next().unwrap().trim().to_string()
    }
}

/// An Authorization value answering `challenge` (MD5, qop=auth).
fn credentials(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    let (realm, nonce) = (param(challenge, "realm"), param(challenge, "nonce"));
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:c0ffee:auth:{ha2}"));
    let mut value = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"c0ffee\""
    );
    if challenge.contains("opaque=") {
        value.push_str(&format!(", opaque=\"{}\"", param(challenge, "opaque")));
    }
    value
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(CONFIG)
    }

    /// The quick-start config: 201-203 in `sales`, 204 in no group.
    fn office() -> Harness {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml");
        Harness::with_config(&std::fs::read_to_string(path).unwrap())
    }

    fn with_config(text: &str) -> Harness {
        let config = Config::from_toml(text, Path::new("test.toml")).unwrap();
        let now = Now {
            mono: Instant::now(),
            unix_ms: 1_700_000_000_000,
        };
        let dir = tempfile::tempdir().unwrap();
        Harness {
            engine: Engine::new(config, Default::default(), [7; 32], now),
            now,
            store: Store::open(&dir.path().join("gw.db")).unwrap(),
            notices: Vec::new(),
            _dir: dir,
        }
    }

    /// Applies the engine's store commands and feeds the answers back, until quiet.
    fn run_store(&mut self) {
        while let Some(command) = self.engine.poll_store_command() {
            match &command {
                crate::store::StoreCommand::PublishDialogs {
                    row_owner,
                    extension,
                    ..
                } => self
                    .notices
                    .push(crate::store::StoreResult::DialogsChanged {
                        node: row_owner.clone(),
                        extension: extension.clone(),
                    }),
                crate::store::StoreCommand::SaveSubscription(sub) => {
                    self.notices.push(crate::store::StoreResult::Watched {
                        node: sub.node.clone(),
                        extension: sub.target.clone(),
                    })
                }
                _ => {}
            }
            if let Some(result) = execute(&mut self.store, command) {
                self.engine.handle_store_result(self.now, result);
            }
        }
    }

    fn send(&mut self, from: Peer, text: &str) {
        self.engine.handle_datagram(self.now, from, text.as_bytes());
        self.run_store();
    }

    fn sent(&mut self) -> Vec<(Peer, SipMessage)> {
        std::iter::from_fn(|| self.engine.poll_transmit())
            .map(|out| (out.peer, SipMessage::parse_datagram(&out.bytes).unwrap()))
            .collect()
    }

    /// Runs the timers due within `by`, each at its own time (both clocks in step).
    fn advance(&mut self, by: Duration) {
        let (start, start_unix_ms) = (self.now.mono, self.now.unix_ms);
        let end = start + by;
        let at_time = |mono: Instant| Now {
            mono,
            unix_ms: start_unix_ms + u64::try_from((mono - start).as_millis()).unwrap(),
        };
        while let Some(at) = self.engine.poll_timeout().filter(|at| *at <= end) {
            self.now = at_time(at.max(self.now.mono));
            self.engine.handle_timeout(self.now);
            self.run_store();
        }
        self.now = at_time(end);
        self.run_store();
    }

    /// Sends a request, answers a digest challenge if one comes, returns what followed.
    fn request_with_auth(
        &mut self,
        from: Peer,
        text: &str,
        user: &str,
        password: &str,
    ) -> Vec<(Peer, SipMessage)> {
        self.send(from, text);
        let replies = self.sent();
        let Some((_, challenge)) = replies
            .iter()
            .find(|(_, m)| matches!(m.status(), Some(401 | 407)))
        else {
            return replies;
        };
        let retry = answering(text, challenge, user, password);
        self.send(from, &retry);
        self.sent()
    }

    /// 202 (port 5072) calls `callee`, answering the 407.
    fn dial(&mut self, callee: &str, call_id: &str) -> Vec<(Peer, SipMessage)> {
        let text = invite("202", callee, 5072, call_id);
        self.request_with_auth(udp(5072), &text, "202", "pw202")
    }

    fn register(
        &mut self,
        ext: &str,
        password: &str,
        from: Peer,
        expires: u32,
    ) -> Vec<(Peer, SipMessage)> {
        let port = from.addr.port();
        let text = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKreg{ext}{port};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{ext}@127.0.0.1>;tag=r{port}\r\nTo: <sip:{ext}@127.0.0.1>\r\n\
Call-ID: reg-{ext}-{port}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{ext}@127.0.0.1:{port}>\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
        );
        self.request_with_auth(from, &text, ext, password)
    }
}

/// `text` (a request with CSeq 1) sent again with credentials answering `challenge` (a
/// 401 or 407 to it): CSeq 2, a new branch.
fn answering(text: &str, challenge: &SipMessage, user: &str, password: &str) -> String {
    let (header, answer) = if challenge.status() == Some(401) {
        (Name::WWW_AUTHENTICATE, "Authorization")
    } else {
        (Name::PROXY_AUTHENTICATE, "Proxy-Authorization")
    };
    let challenge = challenge.header(&header).unwrap().to_string();
    let request = SipMessage::parse_datagram(text.as_bytes()).unwrap();
    let method = request.method().unwrap().to_string();
    let uri = request.request_line().unwrap().uri.to_string();
    let auth = credentials(&challenge, user, password, &method, &uri, 1);
    text.replacen("CSeq: 1 ", "CSeq: 2 ", 1)
        .replacen("branch=z9hG4bK", "branch=z9hG4bKretry", 1)
        .replacen(
            "Content-Length:",
            &format!("{answer}: {auth}\r\nContent-Length:"),
            1,
        )
}

fn invite(from_ext: &str, to: &str, port: u16, call_id: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    invite_with_sdp(from_ext, to, port, call_id, sdp)
}

fn invite_with_sdp(from_ext: &str, to: &str, port: u16, call_id: &str, sdp: &str) -> String {
    format!(
        "INVITE sip:{to}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id};rport\r\n\
Max-Forwards: 70\r\nFrom: \"Caller\" <sip:{from_ext}@127.0.0.1>;tag=a{port}\r\nTo: <sip:{to}@127.0.0.1>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{from_ext}@127.0.0.1:{port}>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// A UAS answer to a forked INVITE, as text.
fn answer(
    invite: &SipMessage,
    code: u16,
    reason: &str,
    tag: &str,
    port: u16,
    body: &str,
) -> String {
    let mut response = invite.response(code, reason, Some(tag));
    response.set_header(Name::CONTACT, format!("<sip:201@127.0.0.1:{port}>"));
    if !body.is_empty() {
        response.set_header(Name::CONTENT_TYPE, "application/sdp");
        response.body = bytes::Bytes::copy_from_slice(body.as_bytes());
    }
    String::from_utf8(response.to_bytes().to_vec()).unwrap()
}

fn statuses(msgs: &[(Peer, SipMessage)]) -> Vec<u16> {
    msgs.iter().filter_map(|(_, m)| m.status()).collect()
}

fn requests<'a>(msgs: &'a [(Peer, SipMessage)], method: &str) -> Vec<&'a (Peer, SipMessage)> {
    msgs.iter()
        .filter(|(_, m)| m.method().is_some_and(|x| x.to_string() == method))
        .collect()
}

#[test]
fn register_challenges_then_accepts_and_persists() {
    let mut h = Harness::new();
    h.send(udp(5071), "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKa\r\nFrom: <sip:201@127.0.0.1>;tag=1\r\nTo: <sip:201@127.0.0.1>\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\nContact: <sip:201@127.0.0.1:5071>\r\nContent-Length: 0\r\n\r\n");
    let challenge = h.sent();
    assert_eq!(statuses(&challenge), [401]);
    let www = challenge[0].1.header(&Name::WWW_AUTHENTICATE).unwrap();
    assert!(
        www.contains("algorithm=MD5") && www.contains("qop=\"auth\""),
        "{www}"
    );

    let replies = h.register("201", "pw201", udp(5071), 600);
    assert_eq!(statuses(&replies), [200]);
    let contact = replies[0].1.header(&Name::CONTACT).unwrap();
    assert!(
        contact.contains("sip:201@127.0.0.1:5071") && contact.contains("expires=600"),
        "{contact}"
    );
    let stored = h.store.load_bindings("gw1", h.now.unix()).unwrap();
    assert_eq!(stored.len(), 1, "the binding is persisted");
    assert_eq!(stored[0].1.contact, "sip:201@127.0.0.1:5071");
}

#[test]
fn wrong_password_and_unknown_user_look_the_same() {
    let mut h = Harness::new();
    let wrong = h.register("201", "nope", udp(5071), 600);
    let unknown = h.register("299", "nope", udp(5072), 600);
    assert_eq!(statuses(&wrong), [403]);
    assert_eq!(statuses(&unknown), [403]);
    let shape = |m: &SipMessage| {
        let mut names: Vec<String> = m
            .headers
            .iter()
            .map(|(n, _)| n.as_print_str().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(shape(&wrong[0].1), shape(&unknown[0].1));
}

/// An answered call 202 (port 5072, Call-ID `call_id`) -> 201 (port 5071, tag `b1`).
struct Established {
    b_invite: SipMessage,
    a_tag: String,
}

impl Established {
    /// Headers of a request from the caller inside its dialog, with a fresh branch.
    fn caller_headers(&self, call_id: &str, branch: &str) -> String {
        format!(
            "Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK{branch}\r\nFrom: \"Caller\" <sip:202@127.0.0.1>;tag=a5072\r\n\
To: <sip:201@127.0.0.1>;tag={}\r\nCall-ID: {call_id}\r\nMax-Forwards: 70\r\n",
            self.a_tag
        )
    }
}

fn establish(h: &mut Harness, call_id: &str) -> Established {
    assert_eq!(statuses(&h.register("201", "pw201", udp(5071), 600)), [200]);
    let out = h.dial("201", call_id);
    assert!(statuses(&out).contains(&100));
    let forked = requests(&out, "INVITE");
    assert_eq!(forked.len(), 1);
    let (peer, b_invite) = forked[0].clone();
    assert_eq!(peer, udp(5071), "sent to the registered source address");
    assert_ne!(
        b_invite.call_id(),
        Some(call_id),
        "the B leg has its own Call-ID"
    );
    assert!(b_invite.from_header().unwrap().display.as_deref() == Some("Bob"));
    assert!(!b_invite.body.is_empty(), "SDP passed through");

    h.send(
        udp(5071),
        &answer(&b_invite, 180, "Ringing", "b1", 5071, ""),
    );
    let ringing = h.sent();
    assert_eq!(statuses(&ringing), [180]);
    let a_tag = ringing[0].1.to_header().unwrap().tag().unwrap().to_string();
    assert_ne!(a_tag, "b1", "each leg has its own tags");

    h.send(
        udp(5071),
        &answer(&b_invite, 200, "OK", "b1", 5071, "v=0\r\n"),
    );
    let answered = h.sent();
    assert_eq!(requests(&answered, "ACK").len(), 1, "B's 2xx is ACKed");
    let ok = answered
        .iter()
        .find(|(_, m)| m.status() == Some(200))
        .unwrap();
    assert_eq!(ok.0, udp(5072));
    assert_eq!(&ok.1.body[..], b"v=0\r\n");
    let call = Established { b_invite, a_tag };
    let ack = format!(
        "ACK sip:gw@127.0.0.1:5060 SIP/2.0\r\n{}CSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n",
        call.caller_headers(call_id, "ack1")
    );
    h.send(udp(5072), &ack);
    assert!(
        h.sent().is_empty(),
        "the 2xx ACK ends the retransmissions, nothing to relay"
    );
    call
}

#[test]
fn call_rings_answers_and_ends_with_bye_from_caller() {
    let mut h = Harness::new();
    let call = establish(&mut h, "call1");
    h.send(
        udp(5072),
        &format!(
            "BYE sip:gw@127.0.0.1:5060 SIP/2.0\r\n{}CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n",
            call.caller_headers("call1", "bye1")
        ),
    );
    let bye = h.sent();
    assert_eq!(statuses(&bye), [200]);
    let b_bye = requests(&bye, "BYE");
    assert_eq!(b_bye.len(), 1);
    assert_eq!(b_bye[0].1.call_id(), call.b_invite.call_id());
    assert_eq!(b_bye[0].1.to_header().unwrap().tag(), Some("b1"));
}

#[test]
fn re_invite_and_info_are_relayed_between_legs() {
    let mut h = Harness::new();
    let call = establish(&mut h, "reinv");
    let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\na=sendonly\r\n";
    h.send(
        udp(5072),
        &format!(
            "INVITE sip:gw@127.0.0.1:5060 SIP/2.0\r\n{}CSeq: 3 INVITE\r\nContact: <sip:202@127.0.0.1:5072>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            call.caller_headers("reinv", "re1"),
            sdp.len()
        ),
    );
    let out = h.sent();
    let relayed = requests(&out, "INVITE");
    assert_eq!(relayed.len(), 1);
    let (peer, b_reinvite) = relayed[0].clone();
    assert_eq!(peer, udp(5071));
    assert_eq!(b_reinvite.call_id(), call.b_invite.call_id());
    assert_eq!(b_reinvite.to_header().unwrap().tag(), Some("b1"));
    assert_eq!(
        b_reinvite.cseq().unwrap().cseq,
        2,
        "next CSeq in the B dialog"
    );
    assert_eq!(&b_reinvite.body[..], sdp.as_bytes());
    assert_eq!(
        b_reinvite.request_line().unwrap().uri.to_string(),
        "sip:201@127.0.0.1:5071"
    );

    let mut ok = b_reinvite.response(200, "OK", None);
    ok.set_header(Name::CONTACT, "<sip:201@127.0.0.1:5071>");
    ok.set_header(Name::CONTENT_TYPE, "application/sdp");
    ok.body = bytes::Bytes::from_static(b"v=0\r\na=recvonly\r\n");
    h.send(udp(5071), std::str::from_utf8(&ok.to_bytes()).unwrap());
    let out = h.sent();
    let to_caller = out.iter().find(|(_, m)| m.status() == Some(200)).unwrap();
    assert_eq!(to_caller.0, udp(5072));
    assert_eq!(to_caller.1.cseq().unwrap().cseq, 3);
    assert_eq!(&to_caller.1.body[..], b"v=0\r\na=recvonly\r\n");

    h.send(
        udp(5072),
        &format!(
            "ACK sip:gw@127.0.0.1:5060 SIP/2.0\r\n{}CSeq: 3 ACK\r\nContent-Length: 0\r\n\r\n",
            call.caller_headers("reinv", "reack")
        ),
    );
    let out = h.sent();
    let acks = requests(&out, "ACK");
    assert_eq!(acks.len(), 1, "the caller's ACK is relayed to the callee");
    assert_eq!(acks[0].1.cseq().unwrap().cseq, 2);

    // INFO from the callee reaches the caller in the caller's dialog.
    let mut info = b_reinvite.clone();
    info.start = crate::sip::message::StartLine::Request(crate::sip::message::RequestLine {
        method: ezk_sip_types::Method::INFO,
        uri: crate::sip::message::RequestUri::parse("sip:gw@127.0.0.1:5060").unwrap(),
        version: "SIP/2.0".into(),
    });
    // Seen from the callee, the dialog's From/To are swapped.
    let (from, to) = (
        b_reinvite.header(&Name::FROM).unwrap().to_string(),
        b_reinvite.header(&Name::TO).unwrap().to_string(),
    );
    info.set_header(Name::FROM, to);
    info.set_header(Name::TO, from);
    info.set_header(Name::VIA, "SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKinfo1");
    info.set_header(Name::CSEQ, "7 INFO");
    info.set_header(Name::CONTENT_TYPE, "application/sdp");
    h.send(udp(5071), std::str::from_utf8(&info.to_bytes()).unwrap());
    let out = h.sent();
    let infos = requests(&out, "INFO");
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].0, udp(5072));
    assert_eq!(infos[0].1.call_id(), Some("reinv"));
    assert_eq!(
        infos[0].1.from_header().unwrap().tag(),
        Some(call.a_tag.as_str())
    );
}

#[test]
fn cancel_before_answer_reaches_the_callee() {
    let mut h = Harness::new();
    h.register("201", "pw201", udp(5071), 600);
    let out = h.dial("201", "call2");
    let b_invite = requests(&out, "INVITE")[0].1.clone();
    h.send(
        udp(5071),
        &answer(&b_invite, 180, "Ringing", "b1", 5071, ""),
    );
    h.sent();
    let cancel = "CANCEL sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKretrycall2;rport\r\n\
Max-Forwards: 70\r\nFrom: \"Caller\" <sip:202@127.0.0.1>;tag=a5072\r\nTo: <sip:201@127.0.0.1>\r\nCall-ID: call2\r\nCSeq: 2 CANCEL\r\nContent-Length: 0\r\n\r\n";
    h.send(udp(5072), cancel);
    let out = h.sent();
    let mut codes = statuses(&out);
    codes.sort();
    assert_eq!(codes, [200, 487]);
    assert_eq!(
        requests(&out, "CANCEL").len(),
        1,
        "the callee's INVITE is cancelled"
    );
}

#[test]
fn busy_unknown_unregistered_and_no_answer() {
    let mut h = Harness::new();
    h.register("201", "pw201", udp(5071), 600);
    let out = h.dial("201", "busy");
    let b_invite = requests(&out, "INVITE")[0].1.clone();
    h.send(
        udp(5071),
        &answer(&b_invite, 486, "Busy Here", "b1", 5071, ""),
    );
    let out = h.sent();
    assert!(statuses(&out).contains(&486));
    assert_eq!(requests(&out, "ACK").len(), 1, "the 486 is ACKed");

    let out = h.dial("299", "unknown");
    assert!(statuses(&out).contains(&404));
    let out = h.dial("203", "unreg");
    assert!(statuses(&out).contains(&480));

    let out = h.dial("201", "noanswer");
    let b_invite = requests(&out, "INVITE")[0].1.clone();
    h.send(
        udp(5071),
        &answer(&b_invite, 180, "Ringing", "b1", 5071, ""),
    );
    h.sent();
    h.advance(Duration::from_secs(31));
    let out = h.sent();
    assert!(statuses(&out).contains(&480), "{:?}", statuses(&out));
    let cancels = requests(&out, "CANCEL");
    assert!(!cancels.is_empty());
    assert!(cancels
        .iter()
        .all(|(_, c)| c.top_branch() == b_invite.top_branch()));
}

#[test]
fn forks_to_every_contact_and_cancels_the_losers() {
    let mut h = Harness::new();
    h.register("201", "pw201", udp(5071), 600);
    h.register("201", "pw201", udp(5073), 600);
    let out = h.dial("201", "fork");
    let forks = requests(&out, "INVITE");
    assert_eq!(forks.len(), 2);
    let (first, second) = (forks[0].clone(), forks[1].clone());
    h.send(
        second.0,
        &answer(&second.1, 180, "Ringing", "s", second.0.addr.port(), ""),
    );
    h.send(
        first.0,
        &answer(&first.1, 180, "Ringing", "f", first.0.addr.port(), ""),
    );
    h.sent();
    h.send(
        first.0,
        &answer(&first.1, 200, "OK", "f", first.0.addr.port(), "v=0\r\n"),
    );
    let out = h.sent();
    let cancels = requests(&out, "CANCEL");
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].0, second.0, "the other fork is cancelled");
}

#[test]
fn unauthenticated_from_spoofing_is_refused() {
    let mut h = Harness::new();
    h.register("201", "pw201", udp(5071), 600);
    // 202's credentials, but From claims 203.
    let out = h.request_with_auth(
        udp(5072),
        &invite("203", "201", 5072, "spoof"),
        "202",
        "pw202",
    );
    assert!(statuses(&out).contains(&403));
    assert!(requests(&out, "INVITE").is_empty());
}

#[test]
fn garbage_is_dropped_and_counted() {
    let mut h = Harness::new();
    h.send(udp(5099), "\u{1}\u{2}this is not SIP at all");
    assert!(h.sent().is_empty());
    assert_eq!(h.engine.stats().undecodable_dropped, 1);
}

/// RFC 3261 §18.2.2: without `rport` in the top Via a response goes to the Via's port (at
/// the source address), 5060 when it names none; with `rport`, to the source port (RFC
/// 3581). The same for transaction responses, stateless answers and rejections.
#[test]
fn responses_go_to_the_via_port_unless_rport_asks_for_the_source_port() {
    let mut h = Harness::new();
    let request = |method: &str, n: u32, sent_by: &str, params: &str| {
        format!(
            "{method} sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {sent_by};branch=z9hG4bKvia{n}{params}\r\n\
Max-Forwards: 70\r\nFrom: <sip:202@127.0.0.1>;tag=v{n}\r\nTo: <sip:201@127.0.0.1>\r\nCall-ID: via{n}\r\n\
CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let destinations = |h: &mut Harness, text: &str| -> Vec<(u16, u16)> {
        h.send(udp(40001), text);
        h.sent()
            .iter()
            .filter_map(|(peer, msg)| Some((msg.status()?, peer.addr.port())))
            .collect()
    };
    let cases = [
        ("OPTIONS", "127.0.0.1:5071", "", vec![(200, 5071)]),
        ("OPTIONS", "127.0.0.1:5071", ";rport", vec![(200, 40001)]),
        ("OPTIONS", "127.0.0.1", "", vec![(200, 5060)]),
        ("REGISTER", "127.0.0.1:5071", "", vec![(401, 5071)]),
        ("INVITE", "127.0.0.1:5071", "", vec![(407, 5071)]),
        ("INVITE", "127.0.0.1:5071", ";rport", vec![(407, 40001)]),
        ("FROBNICATE", "127.0.0.1:5071", "", vec![(501, 5071)]),
    ];
    for (n, (method, sent_by, params, expected)) in cases.into_iter().enumerate() {
        let text = request(method, n as u32, sent_by, params);
        assert_eq!(
            destinations(&mut h, &text),
            expected,
            "{method} via {sent_by}{params}"
        );
    }
}

/// A phone (or an attacker with its password) registering the gateway's own address would
/// make calls to the extension loop back into the gateway: 403, nothing bound.
#[test]
fn a_registration_naming_the_gateway_itself_is_refused() {
    let mut h = Harness::new();
    let text = "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKloop;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:201@127.0.0.1>;tag=l1\r\nTo: <sip:201@127.0.0.1>\r\nCall-ID: loop-201\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:201@127.0.0.1:5060>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n";
    let replies = h.request_with_auth(udp(5071), text, "201", "pw201");
    assert_eq!(statuses(&replies), [403]);
    assert!(h
        .store
        .load_bindings("gw1", h.now.unix())
        .unwrap()
        .is_empty());
    assert!(statuses(&h.dial("201", "to-loop")).contains(&480));
}

/// An offer of about 60 KB: whatever carries it, the INVITE is far above the UDP limit.
fn huge_sdp() -> String {
    let mut sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n".to_string();
    while sdp.len() < 60_000 {
        sdp.push_str("a=x-padding:0123456789abcdef0123456789abcdef0123456789abcdef\r\n");
    }
    sdp
}

/// 201 registers from port 5071 over `protocol` with `contact`.
fn register_contact(h: &mut Harness, protocol: Protocol, contact: &str) {
    let text = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKregc;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:201@127.0.0.1>;tag=rc\r\nTo: <sip:201@127.0.0.1>\r\nCall-ID: regc-201\r\n\
CSeq: 1 REGISTER\r\nContact: {contact}\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    let from = Peer {
        protocol,
        addr: "127.0.0.1:5071".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
    };
    assert_eq!(
        statuses(&h.request_with_auth(from, &text, "201", "pw201")),
        [200]
    );
}

/// RFC 3261 §18.1.1: a forked INVITE far above 1300 bytes (MTU - 200) is never sent over
/// UDP. To a phone registered over UDP with a plain Contact a 60 KB one is not sent at all
/// (more than `UDP_ONLY_LIMIT`), and the caller gets 513 (there is no other fork); before,
/// 60 KB went out in one UDP datagram. An INVITE of a few fragments still goes.
#[test]
fn an_invite_too_large_for_udp_is_not_forked_over_udp() {
    let mut h = Harness::new();
    register_contact(&mut h, Protocol::Udp, "<sip:201@127.0.0.1:5071>");
    let text = invite_with_sdp("202", "201", 5072, "huge-udp", &huge_sdp());
    let out = h.request_with_auth(udp(5072), &text, "202", "pw202");
    assert!(requests(&out, "INVITE").is_empty(), "nothing forked");
    assert!(
        out.iter()
            .all(|(_, m)| m.to_bytes().len() <= 1300 || m.is_request()),
        "no large answer either"
    );
    assert!(statuses(&out).contains(&513), "{:?}", statuses(&out));

    // A small INVITE still goes over UDP as before, and so does one of 2-3 KB (a rich offer).
    let out = h.dial("201", "small-udp");
    let forked = requests(&out, "INVITE");
    assert_eq!(forked.len(), 1);
    assert_eq!(forked[0].0, udp(5071));
    let rich_offer: String = huge_sdp().split_inclusive("\r\n").take(30).collect();
    let text = invite_with_sdp("202", "201", 5072, "rich-udp", &rich_offer);
    let out = h.request_with_auth(udp(5072), &text, "202", "pw202");
    let forked = requests(&out, "INVITE");
    assert_eq!(forked.len(), 1, "{:?}", statuses(&out));
    assert!(forked[0].1.to_bytes().len() > 1300);
}

/// The same INVITE to a phone whose Contact says transport=tcp goes over TCP to the
/// Contact's address, its Via and Contact saying TCP; to a phone registered over TCP, over
/// that TCP as before.
#[test]
fn an_invite_too_large_for_udp_goes_over_tcp_where_the_phone_takes_it() {
    let mut h = Harness::new();
    register_contact(
        &mut h,
        Protocol::Udp,
        "<sip:201@127.0.0.1:5080;transport=tcp>",
    );
    let text = invite_with_sdp("202", "201", 5072, "huge-tcp", &huge_sdp());
    let out = h.request_with_auth(udp(5072), &text, "202", "pw202");
    let forked = requests(&out, "INVITE");
    assert_eq!(forked.len(), 1);
    let (peer, invite) = forked[0];
    assert_eq!(
        *peer,
        Peer {
            protocol: Protocol::Tcp,
            addr: "127.0.0.1:5080".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        }
    );
    assert!(invite
        .header(&Name::VIA)
        .unwrap()
        .starts_with("SIP/2.0/TCP "));
    assert!(invite
        .header(&Name::CONTACT)
        .unwrap()
        .contains("transport=tcp"));
    assert!(invite.body.len() >= 60_000);
    assert!(!statuses(&out).contains(&513));

    let mut h = Harness::new();
    register_contact(
        &mut h,
        Protocol::Tcp,
        "<sip:201@127.0.0.1:5081;transport=tcp>",
    );
    let text = invite_with_sdp("202", "201", 5072, "huge-tcp2", &huge_sdp());
    let out = h.request_with_auth(udp(5072), &text, "202", "pw202");
    let forked = requests(&out, "INVITE");
    assert_eq!(forked.len(), 1);
    assert_eq!(forked[0].0.protocol, Protocol::Tcp);
}

/// A re-INVITE too large for UDP toward a UDP-only callee is not relayed: 513 to its sender.
#[test]
fn a_re_invite_too_large_for_udp_is_answered_513() {
    let mut h = Harness::new();
    let call = establish(&mut h, "huge-re");
    let sdp = huge_sdp();
    h.send(
        udp(5072),
        &format!(
            "INVITE sip:gw@127.0.0.1:5060 SIP/2.0\r\n{}CSeq: 3 INVITE\r\nContact: <sip:202@127.0.0.1:5072>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            call.caller_headers("huge-re", "re1"),
            sdp.len()
        ),
    );
    let out = h.sent();
    assert!(requests(&out, "INVITE").is_empty());
    assert!(statuses(&out).contains(&513), "{:?}", statuses(&out));
}

#[test]
fn registrations_expire() {
    let mut h = Harness::new();
    h.register("201", "pw201", udp(5071), 60);
    while h.engine.poll_store_command().is_some() {}
    h.advance(Duration::from_secs(61));
    let out = h.dial("201", "expired");
    assert!(statuses(&out).contains(&480));
}

/// 202 calls 201 with `[media] anchor = "always"`; 201 answers. Returns the harness, the
/// callee's INVITE, the caller's 200 OK and the media commands so far.
fn anchored_call() -> (
    Harness,
    SipMessage,
    SipMessage,
    Vec<super::media::MediaCommand>,
) {
    let mut h = Harness::with_config(&format!(
        "{CONFIG}[media]\nanchor = \"always\"\nport_min = 30000\nport_max = 30100\n"
    ));
    assert_eq!(statuses(&h.register("201", "pw201", udp(5071), 600)), [200]);
    let out = h.dial("201", "anchored");
    let (_, b_invite) = requests(&out, "INVITE")[0].clone();
    let answer_sdp = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
    h.send(
        udp(5071),
        &answer(&b_invite, 200, "OK", "b1", 5071, answer_sdp),
    );
    let answered = h.sent();
    let (_, ok) = answered
        .iter()
        .find(|(_, m)| m.status() == Some(200))
        .unwrap()
        .clone();
    let commands = std::iter::from_fn(|| h.engine.poll_media_command()).collect();
    (h, b_invite, ok, commands)
}

#[test]
fn anchored_calls_point_both_sides_at_the_relay_and_the_cdr_gets_the_counters() {
    use super::media::{audio_address, MediaCommand};
    use crate::store::CallStore;
    use fastpath::relay::LegReport;
    use std::net::SocketAddr;
    let (mut h, b_invite, ok, commands) = anchored_call();
    let MediaCommand::Install {
        relay: 1,
        a_port,
        b_port,
    } = commands[0]
    else {
        panic!("the relay is installed first: {commands:?}");
    };
    for port in [a_port, b_port] {
        assert!(
            (30_000..=30_098).contains(&port) && port % 2 == 0,
            "an even port of the range, its RTCP port too: {port}"
        );
    }
    assert_ne!(a_port, b_port);
    assert_eq!(
        audio_address(&b_invite.body),
        Some(SocketAddr::from(([127, 0, 0, 1], b_port))),
        "the callee sends to the relay's B port"
    );
    assert_eq!(
        commands[1..],
        [
            MediaCommand::SetPeer {
                relay: 1,
                leg: 0,
                peer: "127.0.0.1:4000".parse().unwrap()
            },
            MediaCommand::SetPeer {
                relay: 1,
                leg: 1,
                peer: "127.0.0.1:5000".parse().unwrap()
            },
        ]
    );
    assert_eq!(
        audio_address(&ok.body),
        Some(SocketAddr::from(([127, 0, 0, 1], a_port))),
        "the caller sends to the relay's A port"
    );
    let a_tag = ok.to_header().unwrap().tag().unwrap().to_string();
    h.send(
        udp(5072),
        &format!(
            "BYE sip:gw@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKabye\r\n\
From: \"Caller\" <sip:202@127.0.0.1>;tag=a5072\r\nTo: <sip:201@127.0.0.1>;tag={a_tag}\r\nCall-ID: anchored\r\n\
Max-Forwards: 70\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
        ),
    );
    assert_eq!(
        h.engine.poll_media_command(),
        Some(MediaCommand::Remove { relay: 1 })
    );
    let leg = |packets, lost| LegReport {
        packets,
        lost,
        jitter_ms: 0.5,
        foreign_dropped: 0,
        ..LegReport::default()
    };
    h.engine
        .handle_media_ended(h.now, 1, false, [leg(150, 2), leg(149, 0)]);
    h.run_store();
    let cdrs = h.store.recent_cdrs(1).unwrap();
    assert_eq!(
        cdrs[0].media.as_deref(),
        Some("A:150p/2lost/0.5ms B:149p/0lost/0.5ms")
    );
}

#[test]
fn a_call_whose_media_stops_is_hung_up() {
    use crate::store::CallStore;
    use fastpath::relay::LegReport;
    let (mut h, _, _, _) = anchored_call();
    h.sent();
    h.engine
        .handle_media_ended(h.now, 1, true, [LegReport::default(); 2]);
    h.run_store();
    let byes = h.sent();
    assert_eq!(requests(&byes, "BYE").len(), 2, "both phones are told");
    let cdrs = h.store.recent_cdrs(1).unwrap();
    assert_eq!(cdrs[0].hangup_cause, "media timeout (no RTP)");
    assert_eq!(
        cdrs[0].media.as_deref(),
        Some("A:0p/0lost/0.0ms B:0p/0lost/0.0ms")
    );
}

#[test]
fn a_call_up_when_the_gateway_dies_is_billed_to_its_last_mark() {
    use crate::store::{CallStore, INTERRUPTED};
    let mut h = Harness::new();
    establish(&mut h, "crash");
    let answered_ms = h.now.unix_ms;
    // Marks every 15 s (the default): at 15 and 30 s; the gateway dies at 40 s, and the
    // next start finds the call in the store.
    h.advance(Duration::from_secs(40));
    assert_eq!(h.store.recover_interrupted("gw1").unwrap().answered, 1);
    let cdr = &h.store.recent_cdrs(1).unwrap()[0];
    assert_eq!(cdr.disposition, INTERRUPTED);
    assert_eq!(cdr.answer_ms, Some(answered_ms));
    assert_eq!(cdr.answered_by.as_deref(), Some("201"));
    assert_eq!(cdr.billed.as_deref(), Some("202"));
    assert_eq!(
        cdr.duration_ms, 30_000,
        "talk time to the last mark, 30 s after the answer"
    );
}
