//! What the operator sees of a running gateway: plain data, serialised as JSON on the
//! control socket and the status page, rendered as tables by `gateway status`.

use serde::{Deserialize, Serialize};

/// One call the gateway is carrying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallView {
    /// The call's key in the store (CDRs carry it).
    pub key: String,
    /// The caller's number (an extension, a line's caller ID).
    pub caller: String,
    /// The number dialled.
    pub called: String,
    /// `ringing`, `picking` (a pickup holds its claim) or `answered`.
    pub state: String,
    /// Who answered (the callee or the picker), once answered.
    pub answered_by: Option<String>,
    /// `group`, `directed` or `replaces` when a pickup answered it.
    pub pickup: Option<String>,
    /// When it started ringing (Unix ms).
    pub started_ms: u64,
    /// When it was answered (Unix ms).
    pub answered_ms: Option<u64>,
    /// The node whose engine carries it.
    pub node: String,
    /// The engine shard that owns it.
    pub shard: usize,
    /// The media relay's number, when its media is anchored.
    pub relay: Option<u64>,
    /// What the relay forwarded, caller's side then callee's (when anchored).
    pub media: Option<[MediaView; 2]>,
}

/// What one side of a relayed call sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MediaView {
    /// RTP packets forwarded.
    pub packets: u64,
    /// RTP packets lost on the way in.
    pub lost: u64,
    /// Interarrival jitter (ms).
    pub jitter_ms: f32,
    /// Packets dropped from sources other than the party that signalled the media.
    pub foreign_dropped: u64,
}

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationView {
    /// The extension.
    pub extension: String,
    /// The Contact URI.
    pub contact: String,
    /// `udp`, `tcp`, `tls` or `internal`.
    pub transport: String,
    /// Where its REGISTER came from.
    pub source: String,
    /// When it expires (Unix s).
    pub expires_at: u64,
    /// The phone's User-Agent, when it sent one.
    pub user_agent: Option<String>,
}

/// One pickup in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PickupView {
    /// The pickup's number (in the log lines about it).
    pub id: u64,
    /// The picking extension.
    pub picker: String,
    /// `group`, `directed` or `replaces` (a BLF key).
    pub method: String,
    /// The call it claimed, once the store answered.
    pub call: Option<String>,
    /// Whether the gateway hands the call over with an INVITE with Replaces (else it
    /// bridges the picker's own INVITE).
    pub replaces: bool,
    /// Whether the picker's dummy early dialog is still open.
    pub dummy_open: bool,
}

/// A pickup that ended recently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentPickupView {
    /// The picking extension.
    pub picker: String,
    /// How it was asked for: `group`, `directed` or `replaces`.
    pub method: String,
    /// How it went: `replaces`, `bridged`, `blf` or `fallback`.
    pub path: String,
    /// `connected` or `failed`.
    pub outcome: String,
    /// When it ended (Unix ms).
    pub at_ms: u64,
}

/// One dialog event subscription (a BLF key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionView {
    /// The subscriber's extension.
    pub subscriber: String,
    /// The extension it watches.
    pub watched: String,
    /// Where NOTIFYs go.
    pub peer: String,
    /// When it expires (Unix s).
    pub expires_at: u64,
}

/// One analog port, like `dahdi show channels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortView {
    /// The DAHDI channel.
    pub channel: u32,
    /// `phone` (FXS, signalling fxoks) or `line` (FXO, fxsks).
    pub kind: String,
    /// The DAHDI signalling from system.conf.
    pub signalling: String,
    /// The line state machine's state (`idle`, `dialtone`, `ringing`, `connected`...).
    pub line_state: String,
    /// Whether the port reports a red alarm (no line plugged in).
    pub alarm: bool,
    /// The port's SIP call: `idle`, `calling`, `alerting` or `connected`.
    pub call: String,
    /// The far end of its media, when a call has media.
    pub media_peer: Option<String>,
    /// Whether that media is SRTP.
    pub srtp: bool,
    /// RTP packets dropped from anyone but the far end since the port opened.
    pub foreign_dropped: u64,
}
