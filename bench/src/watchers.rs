//! BLF keys for benchmarks: many subscriptions to extensions' dialog state (RFC 6665
//! `Event: dialog`, RFC 4235 bodies) from one UDP socket. Each subscription answers the
//! SUBSCRIBE's 407 with digest credentials; every NOTIFY is answered 200 at once and
//! reported with its arrival time, the watched extension and whether it shows the
//! extension ringing (`<state>early</state>`). Loopback only: no retransmissions, a lost
//! datagram shows up as a subscription that never completes.

use crate::sipload::authorization;
use gateway::sip::ids::{branch, tag};
use gateway::sip::message::SipMessage;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Kernel buffer asked for on the watchers' socket.
const WATCHER_BUFFER: usize = 16 << 20;

/// A NOTIFY as a watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notified {
    /// The watched extension (the body's `entity` user).
    pub target: String,
    /// Whether the document shows a dialog in state early (the key blinks).
    pub ringing: bool,
    /// When it arrived.
    pub at: Instant,
}

/// A subscription being set up: its SUBSCRIBE parts.
struct Pending {
    subscriber: String,
    target: String,
    from_tag: String,
}

/// The watchers' socket and their subscriptions.
pub struct Watchers {
    socket: UdpSocket,
    server: SocketAddr,
    local: SocketAddr,
    /// Call-ID -> the subscription it sets up (until its 200).
    pending: HashMap<String, Pending>,
    subscribed: usize,
    buffer: Vec<u8>,
}

impl Watchers {
    /// Watchers sending to `server` from a new loopback socket.
    pub fn new(server: SocketAddr) -> std::io::Result<Watchers> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // A ringing extension's NOTIFYs to every watcher arrive at once: with the default
        // 208 KiB some are dropped and come again only on Timer E (500 ms later).
        fastpath::udp::enlarge_buffers(&socket, WATCHER_BUFFER)?;
        let local = socket.local_addr()?;
        Ok(Watchers {
            socket,
            server,
            local,
            pending: HashMap::new(),
            subscribed: 0,
            buffer: vec![0u8; 65_536],
        })
    }

    /// Subscriptions the gateway accepted so far.
    pub fn subscribed(&self) -> usize {
        self.subscribed
    }

    /// Sends `subscriber`'s SUBSCRIBE for `target`'s dialogs (the challenge is answered as
    /// it comes, in [`Watchers::poll`]).
    pub fn subscribe(&mut self, subscriber: &str, target: &str) -> std::io::Result<()> {
        let call_id = format!("blf-{subscriber}-{target}-{}", tag());
        let pending = Pending {
            subscriber: subscriber.to_string(),
            target: target.to_string(),
            from_tag: tag(),
        };
        let request = self.subscribe_text(&call_id, &pending, 1, "");
        self.socket.send_to(request.as_bytes(), self.server)?;
        self.pending.insert(call_id, pending);
        Ok(())
    }

    fn subscribe_text(&self, call_id: &str, sub: &Pending, cseq: u32, auth: &str) -> String {
        let (server, local) = (self.server, self.local);
        format!(
            "SUBSCRIBE sip:{target}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={}\r\n\
Max-Forwards: 70\r\nFrom: <sip:{subscriber}@{server}>;tag={from_tag}\r\nTo: <sip:{target}@{server}>\r\n\
Call-ID: {call_id}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:{subscriber}@{local}>\r\n\
Event: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: 3600\r\n{auth}Content-Length: 0\r\n\r\n",
            branch(),
            target = sub.target,
            subscriber = sub.subscriber,
            from_tag = sub.from_tag,
        )
    }

    /// Reads and answers until `deadline`, or until a datagram was handled when `once`;
    /// returns the NOTIFYs that arrived.
    pub fn poll(&mut self, deadline: Instant, once: bool) -> std::io::Result<Vec<Notified>> {
        let mut notified = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(notified);
            }
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let len = match self.socket.recv(&mut self.buffer) {
                Ok(len) => len,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(notified)
                }
                Err(e) => return Err(e),
            };
            let at = Instant::now();
            let Ok(msg) = SipMessage::parse_datagram(&self.buffer[..len]) else {
                continue;
            };
            if msg.method().is_some_and(|m| m.to_string() == "NOTIFY") {
                let ok = msg.response(200, "OK", None).to_bytes();
                self.socket.send_to(&ok, self.server)?;
                if let Some(target) = entity_user(&msg.body) {
                    let ringing = contains(&msg.body, b"<state>early</state>");
                    notified.push(Notified {
                        target,
                        ringing,
                        at,
                    });
                }
            } else {
                self.on_response(&msg)?;
            }
            if once {
                return Ok(notified);
            }
        }
    }

    /// A response to one of our SUBSCRIBEs: a 407 is answered with credentials, a 2xx
    /// completes the subscription.
    fn on_response(&mut self, msg: &SipMessage) -> std::io::Result<()> {
        let (Some(code), Some(call_id)) = (msg.status(), msg.call_id()) else {
            return Ok(());
        };
        match code {
            401 | 407 => {
                let Some(sub) = self.pending.get(call_id) else {
                    return Ok(());
                };
                let (challenge_header, answer_header) = if code == 407 {
                    ("Proxy-Authenticate", "Proxy-Authorization")
                } else {
                    ("WWW-Authenticate", "Authorization")
                };
                let challenge = msg
                    .header(&ezk_sip_types::Name::from(challenge_header))
                    .unwrap_or_default()
                    .to_string();
                let uri = format!("sip:{}@{}", sub.target, self.server);
                let password = format!("pw{}", sub.subscriber);
                let value =
                    authorization(&challenge, &sub.subscriber, &password, "SUBSCRIBE", &uri);
                let request =
                    self.subscribe_text(call_id, sub, 2, &format!("{answer_header}: {value}\r\n"));
                self.socket.send_to(request.as_bytes(), self.server)?;
            }
            200..=299 => {
                if self.pending.remove(call_id).is_some() {
                    self.subscribed += 1;
                }
            }
            _ => {
                if let Some(sub) = self.pending.remove(call_id) {
                    eprintln!(
                        "  subscription of {} to {} refused: {code}",
                        sub.subscriber, sub.target
                    );
                }
            }
        }
        Ok(())
    }
}

/// The user of a dialog-info document's `entity="sip:user@host"`.
fn entity_user(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("entity=\"sip:")? + "entity=\"sip:".len();
    let rest = &text[start..];
    Some(rest[..rest.find('@')?].to_string())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watched_extension_is_the_entity_user() {
        let body = b"<?xml version=\"1.0\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" \
version=\"3\" state=\"full\" entity=\"sip:30001@127.0.0.1\">\n<dialog id=\"d\"><state>early</state></dialog>";
        assert_eq!(entity_user(body).as_deref(), Some("30001"));
        assert!(contains(body, b"<state>early</state>"));
        assert_eq!(entity_user(b"no document"), None);
    }
}
