//! Node-to-node trust: a request one gateway node sends another carries a signature header,
//! `X-Gateway-Node: <node id>;ts=<unix seconds>;mac=<hex>`, an HMAC-SHA256 keyed with the
//! cluster's shared secret over the node id, the time and the request's key fields
//! (method, Request-URI, Call-ID, CSeq, From tag and URI, and the pickup headers
//! [`PICKUP_HEADER`] and Replaces). The receiver trusts it only from a
//! configured node address ([`crate::config::NodeConfig::peers`]), within
//! [`MAX_SKEW_SECS`] of its own clock; anything else is outside traffic (digest as usual).
//! Sans-IO: the time comes in as an argument.

use crate::sip::message::SipMessage;
use ezk_sip_types::Name;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The signature header.
pub const NODE_HEADER: &str = "X-Gateway-Node";

/// The header of a pickup one node forwards to the call's owner (its claim); signed.
pub const PICKUP_HEADER: &str = "X-Gateway-Pickup";

/// How far the signature's time may be from the receiver's clock (seconds): bounds the
/// replay of a captured request (whose Call-ID and CSeq the MAC also fixes).
pub const MAX_SKEW_SECS: u64 = 30;

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeAuthError {
    /// The header does not have the form `<id>;ts=<secs>;mac=<hex>`.
    #[error("malformed {NODE_HEADER} header")]
    Malformed,
    /// The request lacks a field the signature covers.
    #[error("the request lacks a field the node signature covers")]
    Incomplete,
    /// The time is too far from ours (a replay, or the nodes' clocks disagree: check NTP).
    #[error("signature time {ts} is more than {MAX_SKEW_SECS} s from ours ({now}): a replay, or the nodes' clocks differ (check NTP)")]
    Skew {
        /// The signature's time.
        ts: u64,
        /// Ours.
        now: u64,
    },
    /// The MAC does not match (another secret, or a forged or altered request).
    #[error("bad signature (node.secret differs, or the request was forged or altered)")]
    BadMac,
}

fn header_name() -> Name {
    Name::from(NODE_HEADER)
}

/// The MAC over `node`, `ts` and the request's key fields.
fn mac(secret: &[u8], node: &str, ts: u64, msg: &SipMessage) -> Option<Hmac<Sha256>> {
    let line = msg.request_line()?;
    let call_id = msg.call_id()?;
    let cseq = msg.header(&Name::CSEQ)?;
    let from = msg.from_header();
    let from_tag = from
        .as_ref()
        .and_then(|from| from.tag().map(str::to_string))
        .unwrap_or_default();
    // The identity the receiving node trusts, and what a pickup between nodes claims.
    let from_uri = from.map(|from| from.uri).unwrap_or_default();
    let signed_header = |name: &str| msg.header(&Name::from(name)).unwrap_or_default().trim();
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    for field in [
        node,
        &ts.to_string(),
        &line.method.to_string(),
        &line.uri.to_string(),
        call_id.trim(),
        &cseq.split_whitespace().collect::<Vec<_>>().join(" "),
        &from_tag,
        &from_uri,
        signed_header(PICKUP_HEADER),
        signed_header("Replaces"),
    ] {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field.as_bytes());
    }
    Some(mac)
}

/// Signs `msg` (a request) as node `node` at `now_secs`, replacing any signature it had.
pub fn sign(msg: &mut SipMessage, secret: &[u8], node: &str, now_secs: u64) {
    msg.remove_header(&header_name());
    if let Some(mac) = mac(secret, node, now_secs, msg) {
        let tag = hex::encode(mac.finalize().into_bytes());
        msg.set_header(header_name(), format!("{node};ts={now_secs};mac={tag}"));
    }
}

/// Whether `msg` carries a node signature at all.
pub fn is_signed(msg: &SipMessage) -> bool {
    msg.header(&header_name()).is_some()
}

/// Checks the signature of `msg` at `now_secs`: the signing node's id when it is valid.
/// The caller checks that the request came from a node's address.
pub fn verify(msg: &SipMessage, secret: &[u8], now_secs: u64) -> Result<String, NodeAuthError> {
    let value = msg.header(&header_name()).ok_or(NodeAuthError::Malformed)?;
    let mut parts = value.trim().split(';');
    let node = parts
        .next()
        .filter(|n| !n.is_empty())
        .ok_or(NodeAuthError::Malformed)?;
    let (mut ts, mut tag) = (None, None);
    for part in parts {
        match part.trim().split_once('=') {
            Some(("ts", v)) => ts = v.parse::<u64>().ok(),
            Some(("mac", v)) => tag = hex::decode(v).ok(),
            _ => return Err(NodeAuthError::Malformed),
        }
    }
    let (Some(ts), Some(tag)) = (ts, tag) else {
        return Err(NodeAuthError::Malformed);
    };
    if ts.abs_diff(now_secs) > MAX_SKEW_SECS {
        return Err(NodeAuthError::Skew { ts, now: now_secs });
    }
    let mac = mac(secret, node, ts, msg).ok_or(NodeAuthError::Incomplete)?;
    // Constant time.
    mac.verify_slice(&tag).map_err(|_| NodeAuthError::BadMac)?;
    Ok(node.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> SipMessage {
        SipMessage::parse_datagram(
            b"INVITE sip:201@127.0.0.1:5061 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\
Max-Forwards: 70\r\nFrom: <sip:202@127.0.0.1>;tag=f1\r\nTo: <sip:201@127.0.0.1>\r\n\
Call-ID: c1@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()
    }

    #[test]
    fn a_signature_survives_the_wire_and_binds_the_request() {
        let secret = b"0123456789abcdef";
        let mut msg = invite();
        sign(&mut msg, secret, "b", 1000);
        let wire = SipMessage::parse_datagram(&msg.to_bytes()).unwrap();
        assert_eq!(verify(&wire, secret, 1010), Ok("b".into()));
        assert_eq!(
            verify(&wire, b"another secret!!", 1010),
            Err(NodeAuthError::BadMac)
        );
        assert!(matches!(
            verify(&wire, secret, 1000 + MAX_SKEW_SECS + 1),
            Err(NodeAuthError::Skew { .. })
        ));
        // Retargeted to another extension: the MAC no longer matches.
        let text = String::from_utf8(wire.to_bytes().to_vec()).unwrap();
        let retargeted = text.replacen("INVITE sip:201@", "INVITE sip:203@", 1);
        let retargeted = SipMessage::parse_datagram(retargeted.as_bytes()).unwrap();
        assert_eq!(
            verify(&retargeted, secret, 1010),
            Err(NodeAuthError::BadMac)
        );
        // Another identity, or another claim: no longer the request the node signed.
        for (from, to) in [
            ("From: <sip:202@", "From: <sip:203@"),
            (
                "Call-ID:",
                "X-Gateway-Pickup: k1;method=group;mode=bridge\r\nCall-ID:",
            ),
            ("Call-ID:", "Replaces: c9;to-tag=a;from-tag=b\r\nCall-ID:"),
        ] {
            let altered =
                SipMessage::parse_datagram(text.replacen(from, to, 1).as_bytes()).unwrap();
            assert_eq!(
                verify(&altered, secret, 1010),
                Err(NodeAuthError::BadMac),
                "{to}"
            );
        }
        let garbled = text.replacen(";ts=1000", ";ts=x", 1);
        let garbled = SipMessage::parse_datagram(garbled.as_bytes()).unwrap();
        assert_eq!(
            verify(&garbled, secret, 1010),
            Err(NodeAuthError::Malformed)
        );
        assert!(!is_signed(&invite()));
    }
}
