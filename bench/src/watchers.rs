//! BLF keys for benchmarks: many subscriptions to extensions' dialog state (RFC 6665
//! `Event: dialog`, RFC 4235 bodies) from one UDP socket served by a thread of its own, as
//! desk phones answer on their own: each subscription answers the SUBSCRIBE's 407 with digest
//! credentials; every NOTIFY is answered 200 at once and reported with the time the kernel
//! received it (`SO_TIMESTAMPNS`, so the benchmark's own reading delay is not counted), the
//! watched extension and whether it shows the extension ringing (`<state>early</state>`).
//! Loopback only: no retransmissions, a lost datagram shows up as a subscription that never
//! completes.

use crate::sipload::authorization;
use crossbeam_channel::{Receiver, Sender};
use gateway::sip::ids::{branch, tag};
use gateway::sip::message::SipMessage;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Kernel buffer asked for on the watchers' socket.
const WATCHER_BUFFER: usize = 16 << 20;

/// How long the watchers' thread blocks in a read before looking for new subscriptions.
const READ_SLICE: Duration = Duration::from_millis(2);

/// A NOTIFY as a watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notified {
    /// The watched extension (the body's `entity` user).
    pub target: String,
    /// Whether the document shows a dialog in state early (the key blinks).
    pub ringing: bool,
    /// When the kernel received it (wall clock, as `SO_TIMESTAMPNS` gives it).
    pub at: SystemTime,
}

/// What the watchers' thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatcherEvent {
    /// The gateway accepted a subscription.
    Subscribed,
    /// The gateway refused one (with the status code).
    Refused(u16),
    /// A NOTIFY arrived (and was answered).
    Notified(Notified),
}

/// A subscription to set up: its SUBSCRIBE parts.
struct Pending {
    subscriber: String,
    target: String,
    from_tag: String,
}

/// The watchers: their thread answers everything the gateway sends them.
pub struct Watchers {
    subscribe: Sender<Pending>,
    events: Receiver<WatcherEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchers {
    /// Watchers sending to `server` from a new loopback socket, served by a new thread.
    pub fn new(server: SocketAddr) -> std::io::Result<Watchers> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // A ringing extension's NOTIFYs to every watcher arrive at once: with the default
        // 208 KiB some are dropped and come again only on Timer E (500 ms later).
        fastpath::udp::enlarge_buffers(&socket, WATCHER_BUFFER)?;
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true)?;
        socket.set_read_timeout(Some(READ_SLICE))?;
        let (subscribe, requests) = crossbeam_channel::unbounded();
        let (report, events) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let mut served = Served {
            local: socket.local_addr()?,
            socket,
            server,
            pending: HashMap::new(),
            report,
        };
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("watchers".into())
            .spawn(move || served.run(&requests, &stopped))?;
        Ok(Watchers {
            subscribe,
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// Sends `subscriber`'s SUBSCRIBE for `target`'s dialogs (the challenge is answered as it
    /// comes; [`WatcherEvent::Subscribed`] reports the 200).
    pub fn subscribe(&self, subscriber: &str, target: &str) {
        let pending = Pending {
            subscriber: subscriber.to_string(),
            target: target.to_string(),
            from_tag: tag(),
        };
        // The thread runs until `self` is dropped, so the channel is open.
        let _ = self.subscribe.send(pending);
    }

    /// The next thing the watchers saw, or None at `deadline`.
    pub fn next(&self, deadline: Instant) -> Option<WatcherEvent> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.events.recv_timeout(left).ok()
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The watchers' thread state: the socket and the subscriptions being set up.
struct Served {
    socket: UdpSocket,
    server: SocketAddr,
    local: SocketAddr,
    /// Call-ID -> the subscription it sets up (until its final response).
    pending: HashMap<String, Pending>,
    report: Sender<WatcherEvent>,
}

impl Served {
    fn run(&mut self, requests: &Receiver<Pending>, stop: &AtomicBool) {
        let mut buffer = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            while let Ok(pending) = requests.try_recv() {
                if let Err(e) = self.send_subscribe(pending) {
                    eprintln!("  watchers: SUBSCRIBE not sent: {e}");
                }
            }
            match receive(&self.socket, &mut buffer) {
                Ok(Some((len, at))) => {
                    if let Err(e) = self.on_datagram(&buffer[..len], at) {
                        eprintln!("  watchers: {e}");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("  watchers: read failed: {e}");
                    return;
                }
            }
        }
    }

    fn send_subscribe(&mut self, pending: Pending) -> std::io::Result<()> {
        let call_id = format!("blf-{}-{}-{}", pending.subscriber, pending.target, tag());
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

    /// A datagram from the gateway: a NOTIFY is answered 200 and reported, a response to a
    /// SUBSCRIBE handled.
    fn on_datagram(&mut self, datagram: &[u8], at: SystemTime) -> std::io::Result<()> {
        let Ok(msg) = SipMessage::parse_datagram(datagram) else {
            return Ok(());
        };
        if msg.method().is_some_and(|m| m.to_string() == "NOTIFY") {
            let ok = msg.response(200, "OK", None).to_bytes();
            self.socket.send_to(&ok, self.server)?;
            if let Some(target) = entity_user(&msg.body) {
                let ringing = contains(&msg.body, b"<state>early</state>");
                let _ = self.report.send(WatcherEvent::Notified(Notified {
                    target,
                    ringing,
                    at,
                }));
            }
            return Ok(());
        }
        self.on_response(&msg)
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
                    let _ = self.report.send(WatcherEvent::Subscribed);
                }
            }
            _ => {
                if let Some(sub) = self.pending.remove(call_id) {
                    eprintln!(
                        "  subscription of {} to {} refused: {code}",
                        sub.subscriber, sub.target
                    );
                    let _ = self.report.send(WatcherEvent::Refused(code));
                }
            }
        }
        Ok(())
    }
}

/// One datagram and the time the kernel received it; None when the read timed out.
fn receive(socket: &UdpSocket, buffer: &mut [u8]) -> std::io::Result<Option<(usize, SystemTime)>> {
    let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [IoSliceMut::new(buffer)];
    let received = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::empty(),
    );
    let message = match received {
        Ok(message) => message,
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(None),
        Err(errno) => return Err(errno.into()),
    };
    let mut at = SystemTime::now();
    if let Ok(mut cmsgs) = message.cmsgs() {
        if let Some(ControlMessageOwned::ScmTimestampns(ts)) = cmsgs.next() {
            let since_epoch = Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32);
            at = UNIX_EPOCH + since_epoch;
        }
    }
    Ok(Some((message.bytes, at)))
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

    #[test]
    fn a_datagram_carries_the_kernel_receive_time() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        setsockopt(&receiver, sockopt::ReceiveTimestampns, &true).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let before = SystemTime::now();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(b"ping", receiver.local_addr().unwrap())
            .unwrap();
        let mut buffer = [0u8; 16];
        let (len, at) = receive(&receiver, &mut buffer).unwrap().unwrap();
        assert_eq!(&buffer[..len], b"ping");
        assert!(at >= before - Duration::from_millis(1), "{at:?} {before:?}");
        assert!(at <= SystemTime::now());
    }
}
