//! The analog ports' SIP user agent, sans-IO: each port is a SIP endpoint toward the engine
//! (like an ATA built into the gateway). Line notices (the phone dialled, answered, hung up;
//! the PSTN line rings, disconnects) become SIP requests and responses; SIP from the engine
//! becomes line commands and media start/stop. Messages travel over the in-process link
//! ([`ANALOG_PEER`]), reliably, through a transaction layer of its own.

use super::sdp::{self, RemoteMedia};
use crate::engine::dialog::{Dialog, LocalIdentity};
use crate::engine::routing::ANALOG_HOST;
use crate::sip::ids;
use crate::sip::message::SipMessage;
use crate::sip::transaction::{ClientTxId, ServerTxId, TimerConfig, TxEvent, TxLayer};
use crate::srtp::sdes::{CryptoAttribute, Suite};
use crate::transport::ANALOG_PEER;
use bytes::Bytes;
use ezk_sip_types::{Method, Name};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;
use telephony_hw::dsp::callerid::CallerId;
use telephony_hw::line::line_port::{LineAction, LineCommand};
use telephony_hw::line::phone_port::{PhoneAction, PhoneCommand};

/// What an analog port is to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRole {
    /// A phone port: the extension it is, and the name its calls show.
    Phone {
        /// Extension number.
        extension: String,
        /// Display name for its outgoing calls.
        display: Option<String>,
    },
    /// A line port (trunk).
    Line {
        /// What incoming calls ring (extension or call group); None: they are not taken.
        target: Option<String>,
        /// The line reverses polarity on answer: send 200 OK only then.
        answer_supervision: bool,
    },
}

/// One port as the agent knows it.
#[derive(Debug, Clone)]
pub struct PortSetup {
    /// DAHDI channel number.
    pub channel: u32,
    /// Phone or line.
    pub role: PortRole,
    /// The local RTP address of this port's media socket (written into SDP).
    pub rtp: SocketAddr,
}

/// What the agent wants done on the analog side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAction {
    /// Tell a phone port's state machine.
    Phone(u32, PhoneCommand),
    /// Tell a line port's state machine.
    Line(u32, LineCommand),
    /// Start exchanging RTP on a port.
    StartMedia {
        /// The port.
        channel: u32,
        /// The far end's RTP address and format (and SRTP key, if secure).
        remote: RemoteMedia,
        /// Our SRTP key, sent in our answer, when the media is secure.
        local_crypto: Option<CryptoAttribute>,
    },
    /// Stop the port's RTP.
    StopMedia(u32),
}

/// Which dialog a request from the engine belongs to.
enum Addressed {
    /// No To tag: a new call.
    NewDialog,
    /// A dialog of this port.
    Dialog(u32),
    /// A To tag matching no dialog.
    UnknownDialog,
}

/// The SIP side of one port's call.
#[derive(Debug)]
enum PortCall {
    Idle,
    /// Our INVITE is pending; `hung_up` once the analog side gave up (CANCEL sent);
    /// `offered`: our SRTP key when the offer was secure.
    Calling {
        tx: ClientTxId,
        dialog: Dialog,
        hung_up: bool,
        offered: Option<CryptoAttribute>,
    },
    /// An INVITE from the engine is ringing the phone or being dialled on the line.
    Alerting {
        tx: ServerTxId,
        dialog: Dialog,
        remote: RemoteMedia,
    },
    /// Established.
    Connected {
        dialog: Dialog,
    },
}

#[derive(Debug)]
struct Port {
    setup: PortSetup,
    call: PortCall,
}

/// The analog ports' user agent.
pub struct AnalogAgent {
    tx: TxLayer,
    /// How the agent names itself (Via, Contact).
    local: LocalIdentity,
    /// The engine's host, for the URIs of calls placed through it.
    gateway_host: String,
    ports: BTreeMap<u32, Port>,
    actions: VecDeque<AgentAction>,
    session_ids: u64,
    /// The extensions whose SRTP policy is `required`: calls to them are offered SRTP.
    secure_callees: HashSet<String>,
}

/// The `channel=` parameter of an analog contact URI.
fn channel_of(uri: &str) -> Option<u32> {
    uri.split(';')
        .skip(1)
        .find_map(|p| p.strip_prefix("channel="))
        .and_then(|v| v.split(['?', '>']).next())
        .and_then(|v| v.parse().ok())
}

impl AnalogAgent {
    /// An agent for `ports`; `gateway_host` is the engine's host (as in `sip:201@host`).
    pub fn new(ports: Vec<PortSetup>, gateway_host: String) -> AnalogAgent {
        AnalogAgent {
            tx: TxLayer::new(TimerConfig::default()),
            local: LocalIdentity::named(ANALOG_HOST),
            gateway_host,
            ports: ports
                .into_iter()
                .map(|setup| {
                    (
                        setup.channel,
                        Port {
                            setup,
                            call: PortCall::Idle,
                        },
                    )
                })
                .collect(),
            actions: VecDeque::new(),
            session_ids: 0,
            secure_callees: HashSet::new(),
        }
    }

    /// The agent offering SRTP (SDES, AES_CM_128_HMAC_SHA1_80) on calls to `numbers`: the
    /// extensions whose SRTP policy is `required`. Other calls are offered plain RTP.
    pub fn offering_srtp_to(mut self, numbers: HashSet<String>) -> AnalogAgent {
        self.secure_callees = numbers;
        self
    }

    /// The next message for the engine (serialised, as over any transport).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.tx.poll_transmit().map(|out| out.bytes)
    }

    /// A message from the engine, serialised.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        match SipMessage::parse_datagram(bytes) {
            Ok(msg) => self.handle_message(now, msg),
            Err(e) => tracing::error!("analog agent: unparseable message from the engine: {e}"),
        }
    }

    /// The next thing to do on the analog side.
    pub fn poll_action(&mut self) -> Option<AgentAction> {
        self.actions.pop_front()
    }

    /// When [`AnalogAgent::handle_timeout`] should run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tx.poll_timeout()
    }

    /// Transaction timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.process_events(now);
    }

    /// Whether a port has a call (ringing, dialling or connected).
    pub fn is_busy(&self, channel: u32) -> bool {
        self.ports
            .get(&channel)
            .is_some_and(|p| !matches!(p.call, PortCall::Idle))
    }

    /// The port's SIP call for the operator: `idle`, `calling` (our INVITE is pending),
    /// `alerting` (the engine's INVITE rings the phone or is dialled on the line) or
    /// `connected`.
    pub fn call_state(&self, channel: u32) -> &'static str {
        match self.ports.get(&channel).map(|p| &p.call) {
            None | Some(PortCall::Idle) => "idle",
            Some(PortCall::Calling { .. }) => "calling",
            Some(PortCall::Alerting { .. }) => "alerting",
            Some(PortCall::Connected { .. }) => "connected",
        }
    }

    /// A message from the engine.
    pub fn handle_message(&mut self, now: Instant, msg: SipMessage) {
        self.tx.handle_message(now, msg, ANALOG_PEER);
        self.process_events(now);
    }

    fn process_events(&mut self, now: Instant) {
        while let Some(event) = self.tx.poll_event() {
            match event {
                TxEvent::Request { tx, msg, .. } => self.on_request(now, tx, msg),
                TxEvent::Cancel { invite, .. } => self.on_cancel(now, invite),
                TxEvent::Ack { .. } => {}
                TxEvent::Response { tx, msg } => self.on_response(now, tx, msg),
                TxEvent::Timeout { tx } => self.on_failure(tx, 408),
                TxEvent::AckTimeout { invite } => {
                    if let Some(channel) = self
                        .port_by(|c| matches!(c, PortCall::Alerting { tx, .. } if *tx == invite))
                    {
                        self.hang_up(now, channel);
                    }
                }
            }
        }
    }

    /// Whether `channel` is a phone port (else a line port, or unknown).
    fn is_phone(&self, channel: u32) -> bool {
        self.ports
            .get(&channel)
            .is_some_and(|p| matches!(p.setup.role, PortRole::Phone { .. }))
    }

    fn port_by(&self, matches: impl Fn(&PortCall) -> bool) -> Option<u32> {
        self.ports
            .iter()
            .find(|(_, p)| matches(&p.call))
            .map(|(&channel, _)| channel)
    }

    fn next_session_id(&mut self) -> u64 {
        self.session_ids += 1;
        self.session_ids
    }

    fn reply(&mut self, now: Instant, tx: ServerTxId, code: u16, reason: &str) {
        if let Some(request) = self.tx.request(tx) {
            let response = request.response(code, reason, Some(&ids::tag()));
            self.tx.send_response(now, tx, response);
        }
    }

    // --- analog side -> SIP ---------------------------------------------------------------

    /// Something a phone port's state machine reported.
    pub fn phone_notice(&mut self, now: Instant, channel: u32, notice: PhoneAction) {
        match notice {
            PhoneAction::Dialed(number) => self.place_call(now, channel, &number, None),
            PhoneAction::Answered => self.answer(now, channel),
            PhoneAction::HungUp => self.hang_up(now, channel),
            PhoneAction::Flash => tracing::info!("analog port {channel}: hook flash (ignored)"),
            _ => {}
        }
    }

    /// Something a line port's state machine reported.
    pub fn line_notice(&mut self, now: Instant, channel: u32, notice: LineAction) {
        match notice {
            LineAction::Offer(caller_id) => {
                let target = match self.ports.get(&channel).map(|p| &p.setup.role) {
                    Some(PortRole::Line {
                        target: Some(target),
                        ..
                    }) => target.clone(),
                    _ => {
                        tracing::info!("analog port {channel}: incoming call, but no target set");
                        return;
                    }
                };
                self.place_call(now, channel, &target, caller_id);
            }
            LineAction::RemoteAnswered => self.answer(now, channel),
            LineAction::Abandoned | LineAction::Disconnected(_) => self.hang_up(now, channel),
            LineAction::NoDialTone => {
                let alerting = self
                    .ports
                    .get(&channel)
                    .is_some_and(|p| matches!(p.call, PortCall::Alerting { .. }));
                if !alerting {
                    // Already connected (a line without answer supervision): end the call.
                    self.hang_up(now, channel);
                } else if let Some(PortCall::Alerting { tx, .. }) = self.take_call(channel) {
                    self.reply(
                        now,
                        tx,
                        503,
                        "Service Unavailable (no dial tone on the line)",
                    );
                }
            }
            LineAction::Alarm(on) => {
                tracing::warn!(
                    "analog port {channel}: red alarm {}",
                    if on {
                        "(no line plugged in?)"
                    } else {
                        "cleared"
                    }
                )
            }
            _ => {}
        }
    }

    fn take_call(&mut self, channel: u32) -> Option<PortCall> {
        let port = self.ports.get_mut(&channel)?;
        Some(std::mem::replace(&mut port.call, PortCall::Idle))
    }

    /// An outgoing call from a port to `called`: the phone's extension, or the PSTN caller
    /// (caller ID) on a line.
    fn place_call(
        &mut self,
        now: Instant,
        channel: u32,
        called: &str,
        caller_id: Option<CallerId>,
    ) {
        let session_id = self.next_session_id();
        let Some(port) = self.ports.get_mut(&channel) else {
            return;
        };
        if !matches!(port.call, PortCall::Idle) {
            return;
        }
        let (user, display) = match &port.setup.role {
            PortRole::Phone { extension, display } => (extension.clone(), display.clone()),
            PortRole::Line { .. } => {
                let id = caller_id.unwrap_or_default();
                (
                    id.number
                        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                        .unwrap_or_else(|| "anonymous".into()),
                    id.name,
                )
            }
        };
        let local_uri = match display {
            Some(name) => format!(
                "\"{}\" <sip:{user}@{}>",
                name.replace(['"', '\\'], ""),
                self.gateway_host
            ),
            None => format!("<sip:{user}@{}>", self.gateway_host),
        };
        let mut dialog = Dialog {
            call_id: ids::call_id(ANALOG_HOST),
            local_tag: ids::tag(),
            remote_tag: None,
            local_uri,
            remote_uri: format!("<sip:{called}@{}>", self.gateway_host),
            remote_target: format!("sip:{called}@{}", self.gateway_host),
            local_cseq: 0,
            peer: ANALOG_PEER,
        };
        let mut invite = dialog.request(Method::INVITE, None, &self.local);
        invite.set_header(
            Name::CONTACT,
            format!("<sip:{user}@{ANALOG_HOST};channel={channel}>"),
        );
        invite.set_header(Name::CONTENT_TYPE, "application/sdp");
        let offered = self
            .secure_callees
            .contains(called)
            .then(|| CryptoAttribute::fresh(1, Suite::AesCm128HmacSha1_80));
        invite.body = sdp::offer(port.setup.rtp, session_id, offered.as_ref());
        tracing::info!("analog port {channel}: calling {called} as {user}");
        let tx = self.tx.send_request(now, invite, ANALOG_PEER);
        port.call = PortCall::Calling {
            tx,
            dialog,
            hung_up: false,
            offered,
        };
    }

    /// The analog side answered the call offered to it.
    fn answer(&mut self, now: Instant, channel: u32) {
        let session_id = self.next_session_id();
        let Some(port) = self.ports.get_mut(&channel) else {
            return;
        };
        let PortCall::Alerting { tx, dialog, remote } =
            std::mem::replace(&mut port.call, PortCall::Idle)
        else {
            return;
        };
        let rtp = port.setup.rtp;
        port.call = PortCall::Connected {
            dialog: dialog.clone(),
        };
        let local_crypto = remote.crypto.as_ref().map(CryptoAttribute::answering);
        if let Some(request) = self.tx.request(tx) {
            let mut ok = request.response(200, "OK", Some(&dialog.local_tag));
            ok.set_header(
                Name::CONTACT,
                format!("<sip:analog@{ANALOG_HOST};channel={channel}>"),
            );
            ok.set_header(Name::CONTENT_TYPE, "application/sdp");
            ok.body = sdp::answer(rtp, session_id, remote.format, local_crypto.as_ref());
            self.tx.send_response(now, tx, ok);
        }
        self.actions.push_back(AgentAction::StartMedia {
            channel,
            remote,
            local_crypto,
        });
        tracing::info!("analog port {channel}: answered");
    }

    /// The analog side hung up (or the line disconnected, or the caller gave up).
    fn hang_up(&mut self, now: Instant, channel: u32) {
        let Some(port) = self.ports.get_mut(&channel) else {
            return;
        };
        match std::mem::replace(&mut port.call, PortCall::Idle) {
            PortCall::Idle => {}
            PortCall::Calling {
                tx,
                dialog,
                hung_up: false,
                offered,
            } => {
                self.tx.cancel(now, tx);
                port.call = PortCall::Calling {
                    tx,
                    dialog,
                    hung_up: true,
                    offered,
                };
            }
            calling @ PortCall::Calling { .. } => port.call = calling,
            PortCall::Alerting { tx, .. } => {
                self.reply(now, tx, 480, "Temporarily Unavailable");
                self.actions.push_back(AgentAction::StopMedia(channel));
            }
            PortCall::Connected { mut dialog } => {
                let bye = dialog.request(Method::BYE, None, &self.local);
                self.tx.send_request(now, bye, ANALOG_PEER);
                self.actions.push_back(AgentAction::StopMedia(channel));
                tracing::info!("analog port {channel}: hung up");
            }
        }
    }

    // --- SIP -> analog side ---------------------------------------------------------------

    fn on_response(&mut self, now: Instant, tx: ClientTxId, msg: SipMessage) {
        let Some(channel) =
            self.port_by(|c| matches!(c, PortCall::Calling { tx: t, .. } if *t == tx))
        else {
            return; // a BYE's answer, or a late response
        };
        let code = msg.status().unwrap_or(500);
        let Some(port) = self.ports.get_mut(&channel) else {
            return;
        };
        let is_phone = matches!(port.setup.role, PortRole::Phone { .. });
        match code {
            180 | 183 if is_phone => self
                .actions
                .push_back(AgentAction::Phone(channel, PhoneCommand::FarEndRinging)),
            100..=199 => {}
            200..=299 => {
                let PortCall::Calling {
                    mut dialog,
                    hung_up,
                    offered,
                    ..
                } = std::mem::replace(&mut port.call, PortCall::Idle)
                else {
                    return;
                };
                dialog.remote_tag = msg.to_header().and_then(|t| t.tag().map(str::to_string));
                if let Some(target) = msg.remote_target() {
                    dialog.remote_target = target;
                }
                let ack = dialog.request(Method::ACK, Some(1), &self.local);
                self.tx.send_stateless(ack, ANALOG_PEER);
                // The answer is secure exactly when our offer was, in the suite offered.
                let remote =
                    sdp::negotiate(&msg.body).and_then(|remote| match (&offered, &remote.crypto) {
                        (None, None) => Ok(remote),
                        (Some(ours), Some(theirs)) if ours.suite == theirs.suite => Ok(remote),
                        _ => Err(sdp::SdpProblem::NoCryptoSuite),
                    });
                if hung_up || remote.is_err() {
                    if let Err(problem) = &remote {
                        tracing::warn!("analog port {channel}: unusable answer: {problem}");
                    }
                    let bye = dialog.request(Method::BYE, None, &self.local);
                    self.tx.send_request(now, bye, ANALOG_PEER);
                    if !hung_up {
                        self.tell_far_end_gone(channel, is_phone);
                    }
                    return;
                }
                port.call = PortCall::Connected { dialog };
                if let Ok(remote) = remote {
                    self.actions.push_back(AgentAction::StartMedia {
                        channel,
                        remote,
                        local_crypto: offered,
                    });
                }
                self.actions.push_back(if is_phone {
                    AgentAction::Phone(channel, PhoneCommand::FarEndAnswered)
                } else {
                    AgentAction::Line(channel, LineCommand::Answer)
                });
                tracing::info!("analog port {channel}: call answered");
            }
            _ => self.on_failure(tx, code),
        }
    }

    /// Our INVITE failed with `code` (or timed out).
    fn on_failure(&mut self, tx: ClientTxId, code: u16) {
        let Some(channel) =
            self.port_by(|c| matches!(c, PortCall::Calling { tx: t, .. } if *t == tx))
        else {
            return;
        };
        let Some(PortCall::Calling { hung_up, .. }) = self.take_call(channel) else {
            return;
        };
        tracing::info!("analog port {channel}: call failed with {code}");
        let is_phone = self.is_phone(channel);
        if hung_up || !is_phone {
            // A line keeps ringing until the PSTN caller gives up: nothing to tell it.
            return;
        }
        let command = match code {
            486 | 600 | 603 => PhoneCommand::FarEndBusy,
            _ => PhoneCommand::Failed,
        };
        self.actions.push_back(AgentAction::Phone(channel, command));
    }

    fn tell_far_end_gone(&mut self, channel: u32, is_phone: bool) {
        self.actions.push_back(if is_phone {
            AgentAction::Phone(channel, PhoneCommand::FarEndHungUp)
        } else {
            AgentAction::Line(channel, LineCommand::HangUp)
        });
    }

    fn on_request(&mut self, now: Instant, tx: ServerTxId, msg: SipMessage) {
        let addressed = match msg.to_header().and_then(|t| t.tag().map(str::to_string)) {
            None => Addressed::NewDialog,
            Some(tag) => {
                let call_id = msg.call_id().unwrap_or_default().to_string();
                self.port_by(|c| match c {
                    PortCall::Connected { dialog } | PortCall::Alerting { dialog, .. } => {
                        dialog.call_id == call_id && dialog.local_tag == tag
                    }
                    _ => false,
                })
                .map_or(Addressed::UnknownDialog, Addressed::Dialog)
            }
        };
        match (msg.method().cloned(), addressed) {
            (Some(Method::INVITE), Addressed::NewDialog) => self.on_invite(now, tx, msg),
            (Some(Method::BYE), Addressed::Dialog(channel)) => {
                self.reply(now, tx, 200, "OK");
                let is_phone = self.is_phone(channel);
                self.take_call(channel);
                self.actions.push_back(AgentAction::StopMedia(channel));
                self.tell_far_end_gone(channel, is_phone);
                tracing::info!("analog port {channel}: far end hung up");
            }
            (Some(Method::INVITE), Addressed::Dialog(channel)) => {
                self.on_reinvite(now, tx, channel, &msg)
            }
            (Some(Method::INFO | Method::UPDATE | Method::OPTIONS), Addressed::Dialog(_)) => {
                self.reply(now, tx, 200, "OK")
            }
            (Some(_), Addressed::Dialog(_) | Addressed::UnknownDialog) => {
                self.reply(now, tx, 481, "Call/Transaction Does Not Exist")
            }
            _ => self.reply(now, tx, 405, "Method Not Allowed"),
        }
    }

    /// A new call for a port: ring the phone, or dial out on the line.
    fn on_invite(&mut self, now: Instant, tx: ServerTxId, msg: SipMessage) {
        let uri = msg
            .request_line()
            .map(|l| l.uri.to_string())
            .unwrap_or_default();
        let Some(channel) = channel_of(&uri).filter(|c| self.ports.contains_key(c)) else {
            self.reply(now, tx, 404, "Not Found (no such analog port)");
            return;
        };
        if self.is_busy(channel) {
            self.reply(now, tx, 486, "Busy Here");
            return;
        }
        let remote = match sdp::negotiate(&msg.body) {
            Ok(remote) => remote,
            Err(problem) => {
                tracing::info!("analog port {channel}: refusing a call: {problem}");
                self.reply(now, tx, 488, "Not Acceptable Here");
                return;
            }
        };
        let Some(dialog) = Dialog::answering(&msg, ids::tag(), ANALOG_PEER) else {
            self.reply(now, tx, 400, "Bad Request (malformed From or To)");
            return;
        };
        let role = self.ports[&channel].setup.role.clone();
        let command = match role {
            PortRole::Phone { .. } => {
                let from = msg.from_header();
                let caller_id = CallerId {
                    number: from.as_ref().and_then(|f| f.user()),
                    name: from.and_then(|f| f.display),
                    ..CallerId::default()
                };
                AgentAction::Phone(channel, PhoneCommand::Incoming(caller_id))
            }
            PortRole::Line { .. } => {
                let number = msg
                    .request_line()
                    .and_then(|l| l.uri.user())
                    .unwrap_or_default()
                    .to_string();
                AgentAction::Line(channel, LineCommand::Dial(number))
            }
        };
        if let Some(request) = self.tx.request(tx) {
            let ringing = request.response(180, "Ringing", Some(&dialog.local_tag));
            self.tx.send_response(now, tx, ringing);
        }
        self.ports.get_mut(&channel).expect("checked above").call =
            PortCall::Alerting { tx, dialog, remote };
        self.actions.push_back(command);
        tracing::info!("analog port {channel}: incoming call");
        if let PortRole::Line {
            answer_supervision: false,
            ..
        } = role
        {
            // No answer signal from the line: connect now, so the caller hears the progress.
            self.answer(now, channel);
        }
    }

    /// A re-INVITE (hold, new address): take the new media, answer with ours.
    fn on_reinvite(&mut self, now: Instant, tx: ServerTxId, channel: u32, msg: &SipMessage) {
        let session_id = self.next_session_id();
        let Some(port) = self.ports.get(&channel) else {
            return;
        };
        let PortCall::Connected { dialog } = &port.call else {
            self.reply(now, tx, 491, "Request Pending");
            return;
        };
        let Ok(remote) = sdp::negotiate(&msg.body) else {
            self.reply(now, tx, 488, "Not Acceptable Here");
            return;
        };
        let mut ok = msg.response(200, "OK", Some(&dialog.local_tag));
        ok.set_header(
            Name::CONTACT,
            format!("<sip:analog@{ANALOG_HOST};channel={channel}>"),
        );
        ok.set_header(Name::CONTENT_TYPE, "application/sdp");
        let local_crypto = remote.crypto.as_ref().map(CryptoAttribute::answering);
        ok.body = sdp::answer(
            port.setup.rtp,
            session_id,
            remote.format,
            local_crypto.as_ref(),
        );
        self.tx.send_response(now, tx, ok);
        self.actions.push_back(AgentAction::StartMedia {
            channel,
            remote,
            local_crypto,
        });
    }

    /// The engine cancelled a call before the port answered.
    fn on_cancel(&mut self, now: Instant, invite: ServerTxId) {
        let Some(channel) =
            self.port_by(|c| matches!(c, PortCall::Alerting { tx, .. } if *tx == invite))
        else {
            return;
        };
        let is_phone = self.is_phone(channel);
        self.take_call(channel);
        self.reply(now, invite, 487, "Request Terminated");
        self.tell_far_end_gone(channel, is_phone);
        tracing::info!("analog port {channel}: call cancelled");
    }
}
