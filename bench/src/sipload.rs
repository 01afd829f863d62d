//! A SIP load generator for full calls through a B2BUA or proxy: callees (UAS, one socket
//! each) register with digest authentication and answer every INVITE (180, 200 with SDP,
//! 200 to BYE); callers (UAC, one socket each) place calls at a paced rate, answer the 407
//! challenge, ACK the 2xx, hold, and hang up. Both roles run on fast path workers (epoll or
//! io_uring), so one process drives thousands of calls per second. A call counts as
//! completed when the 200 to its BYE arrives; anything else (a final error, a timeout) is a
//! failure. Setup latency (first INVITE to 200) goes into a histogram, and so do its hops
//! ([`SetupHops`]; the callers' sockets report the kernel's receipt time, which splits the
//! challenge hop into the server's share and the generator's own wait to read).
//!
//! It behaves as RFC 3261 asks of a UA where a proxy relies on it: callees copy Record-Route
//! into their responses, callers send ACK and BYE along the recorded route set, INVITE and
//! BYE are retransmitted on Timer A/E (T1 doubling) until answered (given up at Timer B/F), a
//! retransmitted 2xx is ACKed again, and callees retransmit their 2xx until its ACK. So the
//! same generator drives the gateway (a B2BUA) and Kamailio (a proxy), on a lossy network too.

use crate::retransmit::{Due, Retransmit};
use fastpath::udp::{BackendChoice, Handler, Io, Worker, WorkerConfig};
use gateway::auth::{digest_response, DigestInput};
use gateway::config::DigestAlgorithm;
use gateway::sip::ids::{branch, tag};
use gateway::sip::message::SipMessage;
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The SIP server under test.
    pub server: SocketAddr,
    /// Caller extensions with their passwords.
    pub callers: Vec<(String, String)>,
    /// Callee extensions with their passwords.
    pub callees: Vec<(String, String)>,
    /// Calls per second offered.
    pub rate: f64,
    /// Calls placed in all.
    pub calls: u64,
    /// How long an answered call lasts before the caller hangs up.
    pub hold: Duration,
    /// A call not completed this long after its INVITE fails.
    pub timeout: Duration,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Calls placed.
    pub attempted: u64,
    /// Calls that went INVITE .. BYE/200.
    pub completed: u64,
    /// Calls that got an error or timed out.
    pub failed: u64,
    /// Why they failed ("INVITE 503", "timeout while ringing", ...), with counts.
    pub failures: BTreeMap<String, u64>,
    /// First INVITE to 200 OK, microseconds.
    pub setup_us: Histogram<u64>,
    /// The same time in its hops, to tell which one makes the tail.
    pub hops: SetupHops,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Adds what another generator, running at the same time against another node,
    /// reported (the wall time is the longer of the two).
    pub fn absorb(&mut self, other: LoadReport) {
        self.attempted += other.attempted;
        self.completed += other.completed;
        self.failed += other.failed;
        for (reason, count) in other.failures {
            *self.failures.entry(reason).or_default() += count;
        }
        // Same bounds on both sides: adding cannot fail.
        let _ = self.setup_us.add(&other.setup_us);
        self.hops.absorb(&other.hops);
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

/// Call setup in its hops, microseconds each (same bounds as the setup histogram): where
/// the time between the first INVITE and its 200 goes.
#[derive(Debug, Clone)]
pub struct SetupHops {
    /// The first INVITE sent to its 407 received: one message through the server.
    pub challenge_us: Histogram<u64>,
    /// The INVITE with credentials sent to the 180 received: the server forwards the
    /// INVITE, the callee rings, the server forwards the 180.
    pub ringing_us: Histogram<u64>,
    /// The 180 received to the 200 received (the callee sends them back to back): what
    /// the server adds between two responses of one call.
    pub answer_us: Histogram<u64>,
    /// The first INVITE sent to the kernel's receipt of its 407: the hop without the
    /// generator's own wait to read the answer.
    pub challenge_to_kernel_us: Histogram<u64>,
    /// The kernel's receipt of a response to the callers reading it: the generator's wait.
    pub callers_wait_us: Histogram<u64>,
}

/// A histogram of microseconds up to a minute, as every setup time is kept.
fn setup_histogram() -> std::io::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| std::io::Error::other(e.to_string()))
}

impl SetupHops {
    fn new() -> std::io::Result<SetupHops> {
        let histogram = setup_histogram;
        Ok(SetupHops {
            challenge_us: histogram()?,
            ringing_us: histogram()?,
            answer_us: histogram()?,
            challenge_to_kernel_us: histogram()?,
            callers_wait_us: histogram()?,
        })
    }

    fn absorb(&mut self, other: &SetupHops) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.challenge_us.add(&other.challenge_us);
        let _ = self.ringing_us.add(&other.ringing_us);
        let _ = self.answer_us.add(&other.answer_us);
        let _ = self
            .challenge_to_kernel_us
            .add(&other.challenge_to_kernel_us);
        let _ = self.callers_wait_us.add(&other.callers_wait_us);
    }

    /// One line: p50, p90, p99 and p99.9 of each hop, ms.
    pub fn summary(&self) -> String {
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        [
            ("INVITE->407", &self.challenge_us),
            ("INVITE with credentials->180", &self.ringing_us),
            ("180->200", &self.answer_us),
            ("INVITE->407 in the kernel", &self.challenge_to_kernel_us),
            ("callers' read wait", &self.callers_wait_us),
        ]
        .iter()
        .map(|(name, h)| {
            format!(
                "{name} p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} ms",
                ms(h, 0.5),
                ms(h, 0.9),
                ms(h, 0.99),
                ms(h, 0.999)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// Microseconds since `since`, for a histogram.
fn micros_since(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A quoted parameter of a challenge header, e.g. `nonce`.
fn challenge_param(challenge: &str, name: &str) -> String {
    let key = format!("{name}=");
    challenge
        .split(',')
        .map(|p| p.trim().trim_start_matches("Digest ").trim())
        .find_map(|p| p.strip_prefix(&key))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default()
}

/// An Authorization/Proxy-Authorization value answering `challenge` (MD5, qop=auth).
pub fn authorization(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
) -> String {
    let (realm, nonce) = (
        challenge_param(challenge, "realm"),
        challenge_param(challenge, "nonce"),
    );
    let response = digest_response(&DigestInput {
        algorithm: DigestAlgorithm::Md5,
        username: user,
        realm: &realm,
        password,
        method,
        uri,
        nonce: &nonce,
        nc: "00000001",
        cnonce: "10ad",
        qop: "auth",
    });
    let mut value = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"10ad\""
    );
    if challenge.contains("opaque=") {
        value.push_str(&format!(
            ", opaque=\"{}\"",
            challenge_param(challenge, "opaque")
        ));
    }
    value
}

/// The audio offer and answer every generated phone sends.
pub const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";

/// Registers `ext` from `socket` (answering the 401), blocking; the socket then belongs to a
/// callee. Each REGISTER is retransmitted on Timer E until answered, given up at Timer F.
pub fn register(
    socket: &UdpSocket,
    server: SocketAddr,
    ext: &str,
    password: &str,
) -> std::io::Result<()> {
    let local = socket.local_addr()?;
    let (call_id, from_tag) = (format!("reg-{ext}-{}", tag()), tag());
    let request = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={}\r\nMax-Forwards: 70\r\n\
From: <sip:{ext}@{server}>;tag={from_tag}\r\nTo: <sip:{ext}@{server}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\
Contact: <sip:{ext}@{local}>\r\nExpires: 3600\r\n{auth}Content-Length: 0\r\n\r\n",
            branch(),
        )
        .into_bytes()
    };
    let mut cseq = 1;
    let mut pending = Retransmit::request(request(cseq, ""), false, Instant::now());
    socket.send_to(pending.bytes(), server)?;
    let mut buffer = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        match pending.poll(now) {
            Due::GiveUp => {
                return Err(std::io::Error::other(format!(
                    "{ext} could not register: no answer to REGISTER within 64·T1"
                )))
            }
            Due::Send(bytes) => {
                socket.send_to(bytes, server)?;
                continue;
            }
            Due::Wait => {}
        }
        let wait = pending.deadline().saturating_duration_since(now);
        socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let n = match socket.recv_from(&mut buffer) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let Ok(response) = SipMessage::parse_datagram(&buffer[..n]) else {
            continue;
        };
        if response.cseq().map(|c| c.cseq) != Some(cseq) {
            continue; // a retransmitted answer to the earlier REGISTER
        }
        match response.status() {
            Some(200) => return Ok(()),
            Some(401) if cseq == 1 => {
                let challenge = response
                    .header(&ezk_sip_types::Name::WWW_AUTHENTICATE)
                    .unwrap_or_default()
                    .to_string();
                let auth = authorization(
                    &challenge,
                    ext,
                    password,
                    "REGISTER",
                    &format!("sip:{server}"),
                );
                cseq = 2;
                let bytes = request(cseq, &format!("Authorization: {auth}\r\n"));
                pending = Retransmit::request(bytes, false, Instant::now());
                socket.send_to(pending.bytes(), server)?;
            }
            Some(code) if code >= 200 => {
                return Err(std::io::Error::other(format!(
                    "{ext} could not register: {code}"
                )))
            }
            _ => {}
        }
    }
}

/// The callees: answer every INVITE with 180 and 200 (again for a retransmitted INVITE),
/// retransmit the 200 until its ACK (RFC 3261 §13.3.1.4), answer BYE with 200.
#[derive(Default)]
struct Callees {
    /// 200s awaiting the ACK, by (Call-ID, CSeq number), with where they go.
    unacked: HashMap<(String, u32), (usize, SocketAddr, Retransmit)>,
}

impl Handler for Callees {
    type Command = std::convert::Infallible;

    fn datagram(&mut self, io: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]) {
        let Ok(request) = SipMessage::parse_datagram(bytes) else {
            return;
        };
        let (Some(method), Some(call_id), Some(cseq)) = (
            request.method().map(|m| m.to_string()),
            request.call_id().map(str::to_string),
            request.cseq(),
        ) else {
            return;
        };
        let local = io.local_addr(socket);
        let to_tag = format!("uas{}", call_id.len());
        let answer = |code: u16, reason: &str, body: bool| {
            let mut response = request.response(code, reason, Some(&to_tag));
            for route in request.header_list(&ezk_sip_types::Name::RECORD_ROUTE) {
                response.add_header(ezk_sip_types::Name::RECORD_ROUTE, route);
            }
            if let Some(local) = local {
                response.set_header(ezk_sip_types::Name::CONTACT, format!("<sip:uas@{local}>"));
            }
            if body {
                response.set_header(ezk_sip_types::Name::CONTENT_TYPE, "application/sdp");
                response.body = bytes::Bytes::from_static(SDP.as_bytes());
            }
            response.to_bytes().to_vec()
        };
        match method.as_str() {
            "INVITE" => {
                io.send(socket, from, &answer(180, "Ringing", false));
                let ok = answer(200, "OK", true);
                io.send(socket, from, &ok);
                self.unacked
                    .entry((call_id, cseq.cseq))
                    .or_insert_with(|| (socket, from, Retransmit::response(ok, Instant::now())));
            }
            "ACK" => {
                self.unacked.remove(&(call_id, cseq.cseq));
            }
            "BYE" => io.send(socket, from, &answer(200, "OK", false)),
            _ => {}
        }
    }

    fn command(&mut self, _io: &mut Io, command: Self::Command) {
        match command {}
    }

    fn tick(&mut self, io: &mut Io, now: Instant) {
        self.unacked
            .retain(|_, (socket, to, retransmit)| match retransmit.poll(now) {
                Due::Wait => true,
                Due::Send(bytes) => {
                    io.send(*socket, *to, bytes);
                    true
                }
                Due::GiveUp => false,
            });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Inviting,
    Answered,
    Hanging,
}

struct Call {
    caller: usize,
    callee: String,
    call_id: String,
    from_tag: String,
    cseq: u32,
    branch: String,
    started: Instant,
    /// The same on the real-time clock, as the kernel stamps the answer's receipt.
    started_wall: std::time::SystemTime,
    /// When the INVITE with credentials went out, and when its 180 came.
    authenticated_at: Option<Instant>,
    ringing_at: Option<Instant>,
    stage: Stage,
    to: Option<String>,
    target: Option<String>,
    /// Route header values for in-dialog requests (the 2xx's Record-Route, reversed).
    route_set: Vec<String>,
    bye_at: Option<Instant>,
    /// The request to send again until answered (INVITE until a provisional, BYE until final).
    retransmit: Option<Retransmit>,
}

/// Commands for the callers' worker.
pub enum CallerCommand {
    /// Place call number `n`.
    Start(u64),
    /// Report the counts so far.
    Report(crossbeam_channel::Sender<CallerCounts>),
}

/// What the callers' worker reports: calls completed, failures by reason, setup times.
pub type CallerCounts = (u64, BTreeMap<String, u64>, Histogram<u64>, SetupHops);

struct Callers {
    server: SocketAddr,
    credentials: Vec<(String, String)>,
    callees: Vec<String>,
    hold: Duration,
    timeout: Duration,
    calls: HashMap<String, Call>,
    completed: u64,
    failures: BTreeMap<String, u64>,
    setup_us: Histogram<u64>,
    hops: SetupHops,
}

impl Callers {
    fn invite(&self, io: &mut Io, call: &mut Call, auth: Option<&str>) {
        let Some(local) = io.local_addr(call.caller) else {
            return;
        };
        let (user, server) = (&self.credentials[call.caller].0, self.server);
        let authorization = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "INVITE sip:{}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={};rport\r\nMax-Forwards: 70\r\n\
From: <sip:{user}@{server}>;tag={}\r\nTo: <sip:{}@{server}>\r\nCall-ID: {}\r\nCSeq: {} INVITE\r\n\
Contact: <sip:{user}@{local}>\r\n{authorization}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            call.callee,
            call.branch,
            call.from_tag,
            call.callee,
            call.call_id,
            call.cseq,
            SDP.len()
        );
        io.send(call.caller, server, text.as_bytes());
        call.retransmit = Some(Retransmit::request(text.into_bytes(), true, Instant::now()));
    }

    /// An in-dialog request (ACK for the 2xx, BYE) along the dialog's route set; returns it.
    fn in_dialog(&self, io: &mut Io, call: &Call, method: &str, cseq: u32) -> Vec<u8> {
        let Some(local) = io.local_addr(call.caller) else {
            return Vec::new();
        };
        let user = &self.credentials[call.caller].0;
        let server = self.server;
        let target = call
            .target
            .clone()
            .unwrap_or_else(|| format!("sip:{}@{server}", call.callee));
        let routes: String = call
            .route_set
            .iter()
            .map(|route| format!("Route: {route}\r\n"))
            .collect();
        let text = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={}\r\nMax-Forwards: 70\r\n\
From: <sip:{user}@{server}>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n{routes}Content-Length: 0\r\n\r\n",
            branch(),
            call.from_tag,
            call.to.as_deref().unwrap_or_default(),
            call.call_id
        );
        io.send(call.caller, server, text.as_bytes());
        text.into_bytes()
    }

    /// The ACK of a non-2xx final response: the branch and CSeq number of the INVITE it
    /// answers (taken from the response: it may answer an earlier INVITE of the call).
    fn ack_failure(&self, io: &mut Io, call: &Call, response: &SipMessage) {
        let Some(local) = io.local_addr(call.caller) else {
            return;
        };
        let (user, server) = (&self.credentials[call.caller].0, self.server);
        let text = format!(
            "ACK sip:{}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={};rport\r\nMax-Forwards: 70\r\n\
From: <sip:{user}@{server}>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
            call.callee,
            response.top_branch().unwrap_or_else(|| call.branch.clone()),
            call.from_tag,
            response.header(&ezk_sip_types::Name::TO).unwrap_or_default(),
            call.call_id,
            response.cseq().map_or(call.cseq, |c| c.cseq)
        );
        io.send(call.caller, server, text.as_bytes());
    }

    fn response(
        &mut self,
        io: &mut Io,
        response: SipMessage,
        arrived: Option<std::time::SystemTime>,
    ) {
        let Some(call_id) = response.call_id().map(str::to_string) else {
            return;
        };
        let (Some(code), Some(cseq)) = (response.status(), response.cseq()) else {
            return;
        };
        let Some(mut call) = self.calls.remove(&call_id) else {
            return;
        };
        let method = cseq.method.to_string();
        if method == "INVITE" && cseq.cseq != call.cseq {
            // A retransmission answering the earlier (challenged) INVITE: ACK it again.
            if code >= 300 {
                self.ack_failure(io, &call, &response);
            }
            self.calls.insert(call_id, call);
            return;
        }
        match (call.stage, method.as_str(), code) {
            (Stage::Inviting, "INVITE", 407) if call.cseq == 1 => {
                let _ = self.hops.challenge_us.record(micros_since(call.started));
                if let Some(Ok(took)) = arrived.map(|at| at.duration_since(call.started_wall)) {
                    let _ = self
                        .hops
                        .challenge_to_kernel_us
                        .record(took.as_micros() as u64);
                }
                self.ack_failure(io, &call, &response);
                let challenge = response
                    .header(&ezk_sip_types::Name::PROXY_AUTHENTICATE)
                    .unwrap_or_default()
                    .to_string();
                let (user, password) = &self.credentials[call.caller];
                let uri = format!("sip:{}@{}", call.callee, self.server);
                let auth = authorization(&challenge, user, password, "INVITE", &uri);
                call.cseq = 2;
                call.branch = branch();
                self.invite(io, &mut call, Some(&auth));
                call.authenticated_at = Some(Instant::now());
            }
            (Stage::Inviting, "INVITE", 100..=199) => {
                call.retransmit = None;
                if code == 180 && call.ringing_at.is_none() {
                    call.ringing_at = Some(Instant::now());
                    if let Some(at) = call.authenticated_at {
                        let _ = self.hops.ringing_us.record(micros_since(at));
                    }
                }
            }
            (Stage::Inviting, "INVITE", 200..=299) => {
                call.retransmit = None;
                call.to = response
                    .header(&ezk_sip_types::Name::TO)
                    .map(str::to_string);
                call.target = response.remote_target();
                call.route_set = response
                    .header_list(&ezk_sip_types::Name::RECORD_ROUTE)
                    .into_iter()
                    .rev()
                    .map(str::to_string)
                    .collect();
                self.in_dialog(io, &call, "ACK", call.cseq);
                let _ = self.setup_us.record(micros_since(call.started));
                if let Some(at) = call.ringing_at {
                    let _ = self.hops.answer_us.record(micros_since(at));
                }
                call.stage = Stage::Answered;
                call.bye_at = Some(Instant::now() + self.hold);
            }
            // The 2xx again: our ACK was lost.
            (Stage::Answered | Stage::Hanging, "INVITE", 200..=299) => {
                self.in_dialog(io, &call, "ACK", call.cseq);
            }
            (Stage::Hanging, "BYE", 200..=299) => {
                self.completed += 1;
                return;
            }
            (Stage::Inviting, "INVITE", _) | (Stage::Hanging, "BYE", 300..) => {
                if method == "INVITE" {
                    self.ack_failure(io, &call, &response);
                }
                *self.failures.entry(format!("{method} {code}")).or_default() += 1;
                return;
            }
            _ => {}
        }
        self.calls.insert(call_id, call);
    }
}

impl Handler for Callers {
    type Command = CallerCommand;

    fn datagram(&mut self, io: &mut Io, _socket: usize, _from: SocketAddr, bytes: &[u8]) {
        if let Ok(message) = SipMessage::parse_datagram(bytes) {
            if message.status().is_some() {
                let arrived = io.received_at();
                let now = std::time::SystemTime::now();
                if let Some(Ok(waited)) = arrived.map(|at| now.duration_since(at)) {
                    let _ = self.hops.callers_wait_us.record(waited.as_micros() as u64);
                }
                self.response(io, message, arrived);
            }
        }
    }

    fn command(&mut self, io: &mut Io, command: CallerCommand) {
        match command {
            CallerCommand::Start(n) => {
                let caller = (n as usize) % self.credentials.len();
                let mut call = Call {
                    caller,
                    callee: self.callees[(n as usize) % self.callees.len()].clone(),
                    call_id: format!("load-{n}-{}", tag()),
                    from_tag: tag(),
                    cseq: 1,
                    branch: branch(),
                    started: Instant::now(),
                    started_wall: std::time::SystemTime::now(),
                    authenticated_at: None,
                    ringing_at: None,
                    stage: Stage::Inviting,
                    to: None,
                    target: None,
                    route_set: Vec::new(),
                    bye_at: None,
                    retransmit: None,
                };
                self.invite(io, &mut call, None);
                self.calls.insert(call.call_id.clone(), call);
            }
            CallerCommand::Report(reply) => {
                let _ = reply.send((
                    self.completed,
                    self.failures.clone(),
                    self.setup_us.clone(),
                    self.hops.clone(),
                ));
            }
        }
    }

    fn tick(&mut self, io: &mut Io, now: Instant) {
        let mut timed_out = Vec::new();
        let mut gave_up = Vec::new();
        let mut byes = Vec::new();
        for (id, call) in &mut self.calls {
            if now.duration_since(call.started) > self.timeout {
                timed_out.push(id.clone());
                continue;
            }
            match call.retransmit.as_mut().map(|r| r.poll(now)) {
                Some(Due::Send(bytes)) => io.send(call.caller, self.server, bytes),
                Some(Due::GiveUp) => {
                    gave_up.push(id.clone());
                    continue;
                }
                Some(Due::Wait) | None => {}
            }
            if call.stage == Stage::Answered && call.bye_at.is_some_and(|at| at <= now) {
                call.stage = Stage::Hanging;
                byes.push(id.clone());
            }
        }
        for id in timed_out {
            if let Some(call) = self.calls.remove(&id) {
                let stage = match call.stage {
                    Stage::Inviting => "timeout before the answer",
                    Stage::Answered => "timeout while answered",
                    Stage::Hanging => "timeout waiting for the BYE's 200",
                };
                *self.failures.entry(stage.into()).or_default() += 1;
            }
        }
        for id in gave_up {
            if let Some(call) = self.calls.remove(&id) {
                let what = match call.stage {
                    Stage::Hanging => "BYE unanswered until Timer F",
                    _ => "INVITE unanswered until Timer B",
                };
                *self.failures.entry(what.into()).or_default() += 1;
            }
        }
        for id in byes {
            if let Some(call) = self.calls.get(&id) {
                let bye = self.in_dialog(io, call, "BYE", call.cseq + 1);
                if let Some(call) = self.calls.get_mut(&id) {
                    call.retransmit = Some(Retransmit::request(bye, false, now));
                }
            }
        }
    }
}

fn worker_config(name: &str, tick: Option<Duration>) -> WorkerConfig {
    WorkerConfig {
        name: name.into(),
        backend: BackendChoice::Auto,
        core: None,
        buffer_size: 65_536 + 256,
        buffers: 256,
        tick,
    }
}

/// Registers the callees, offers the calls at the configured rate, waits for them to end.
pub fn run(config: &LoadConfig) -> std::io::Result<LoadReport> {
    let bind = || UdpSocket::bind("127.0.0.1:0");
    let callee_sockets: Vec<UdpSocket> = config
        .callees
        .iter()
        .map(|_| bind())
        .collect::<Result<_, _>>()?;
    for (socket, (ext, password)) in callee_sockets.iter().zip(&config.callees) {
        register(socket, config.server, ext, password)?;
    }
    let _callees = Worker::spawn(
        worker_config("load-uas", Some(Duration::from_millis(10))),
        callee_sockets,
        Callees::default(),
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    let caller_sockets: Vec<UdpSocket> = config
        .callers
        .iter()
        .map(|_| bind())
        .collect::<Result<_, _>>()?;
    for socket in &caller_sockets {
        fastpath::udp::report_receive_times(socket)?;
    }
    let callers = Worker::spawn(
        worker_config("load-uac", Some(Duration::from_millis(10))),
        caller_sockets,
        Callers {
            server: config.server,
            credentials: config.callers.clone(),
            callees: config.callees.iter().map(|(e, _)| e.clone()).collect(),
            hold: config.hold,
            timeout: config.timeout,
            calls: HashMap::new(),
            completed: 0,
            failures: BTreeMap::new(),
            setup_us: setup_histogram()?,
            hops: SetupHops::new()?,
        },
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    let control = callers.sender();
    let began = Instant::now();
    for n in 0..config.calls {
        let due = began + Duration::from_secs_f64(n as f64 / config.rate.max(0.001));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        control.command(CallerCommand::Start(n));
    }
    let deadline = Instant::now() + config.timeout + config.hold + Duration::from_secs(1);
    loop {
        let (reply, answer) = crossbeam_channel::bounded(1);
        control.command(CallerCommand::Report(reply));
        let (completed, mut failures, setup_us, hops) = answer
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| std::io::Error::other("the callers' worker did not answer"))?;
        let failed: u64 = failures.values().sum();
        if completed + failed >= config.calls || Instant::now() > deadline {
            let unfinished = config.calls.saturating_sub(completed + failed);
            if unfinished > 0 {
                failures.insert("unfinished at the end".into(), unfinished);
            }
            return Ok(LoadReport {
                attempted: config.calls,
                completed,
                failed: config.calls - completed,
                failures,
                setup_us,
                hops,
                elapsed: began.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
