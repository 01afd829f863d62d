//! Where a response goes (RFC 3261 §18.2.2, RFC 3581).
//!
//! Over a reliable transport (TCP, TLS, the analog ports' internal link) a response goes
//! back the way its request came (for TLS, only that way: never in clear). Over UDP it goes to the request's `received` address (its
//! source IP: the engine stamps it on every request it serves) and:
//! - with `rport` in the top Via (RFC 3581 symmetric response routing, what phones behind
//!   NAT send), to the source port;
//! - without it, to the port of the Via's sent-by, [`DEFAULT_SIP_PORT`] when the sent-by
//!   names none (RFC 3261 §18.2.2).
//!
//! A Via whose sent-by cannot be read (or names port 0) gets the source port. `maddr` is not
//! honoured: it would let a request send its responses to a third party (RFC 3261 uses it
//! for multicast, which the gateway does not serve).

use super::message::SipMessage;
use crate::transport::{Peer, Protocol};
use ezk_sip_types::Name;
use std::net::SocketAddr;

/// The port UDP responses go to when the top Via's sent-by names none (RFC 3261 §18.2.2;
/// TLS responses always take the request's connection).
pub const DEFAULT_SIP_PORT: u16 = 5060;

/// Where the response `msg` (or a response to the request `msg`: both carry the same top
/// Via) goes, for a request received from `source`.
pub fn response_destination(msg: &SipMessage, source: Peer) -> Peer {
    if source.protocol != Protocol::Udp {
        return source;
    }
    match msg.first_item(&Name::VIA).and_then(via_reply_port) {
        Some(port) => Peer {
            addr: SocketAddr::new(source.addr.ip(), port),
            ..source
        },
        None => source,
    }
}

/// The port a Via value (`SIP/2.0/UDP host:port;params`) asks responses to go to; None for
/// the source port (`rport`, or a sent-by that cannot be read).
fn via_reply_port(via: &str) -> Option<u16> {
    let mut parts = via.split(';');
    let sent_by = parts.next()?.split_whitespace().nth(1)?;
    let rport = parts.any(|param| {
        let name = param.split('=').next().unwrap_or(param);
        name.trim().eq_ignore_ascii_case("rport")
    });
    if rport {
        return None;
    }
    let port = match sent_by.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.1.strip_prefix(':'),
        None => sent_by.split_once(':').map(|(_, port)| port),
    };
    match port {
        None => Some(DEFAULT_SIP_PORT),
        Some(port) => port.parse::<u16>().ok().filter(|&port| port != 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(via: &str) -> SipMessage {
        let text = format!(
            "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP 10.9.9.9:7777\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        SipMessage::parse_datagram(text.as_bytes()).unwrap()
    }

    fn from(protocol: Protocol, addr: &str) -> Peer {
        Peer {
            protocol,
            addr: addr.parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        }
    }

    #[test]
    fn without_rport_the_via_port_with_rport_the_source_port() {
        let source = from(Protocol::Udp, "192.0.2.7:40000");
        let to = |via: &str| response_destination(&request(via), source).addr.to_string();
        assert_eq!(
            to("SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK1"),
            "192.0.2.7:5070"
        );
        assert_eq!(
            to("SIP/2.0/UDP phone.example.com;branch=z9hG4bK1"),
            "192.0.2.7:5060",
            "no port: 5060, at the received (source) address"
        );
        assert_eq!(
            to("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;received=192.0.2.7"),
            "192.0.2.7:5070"
        );
        assert_eq!(
            to("SIP/2.0/UDP 10.0.0.5:5070;rport;branch=z9hG4bK1"),
            "192.0.2.7:40000"
        );
        assert_eq!(
            to("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;RPORT=40000"),
            "192.0.2.7:40000"
        );
        assert_eq!(
            to("SIP/2.0/UDP 10.0.0.5:0;branch=z9hG4bK1"),
            "192.0.2.7:40000"
        );
        assert_eq!(
            to("SIP/2.0/UDP 10.0.0.5:x;branch=z9hG4bK1"),
            "192.0.2.7:40000"
        );
        assert_eq!(
            to("SIP/2.0/UDP 10.0.0.5:5070;maddr=198.51.100.1;branch=z9hG4bK1"),
            "192.0.2.7:5070",
            "never to a third party"
        );
        let v6 = from(Protocol::Udp, "[2001:db8::1]:40000");
        let request = request("SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1");
        assert_eq!(
            response_destination(&request, v6).addr.to_string(),
            "[2001:db8::1]:5070"
        );
        let bare = self::request("SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK1");
        assert_eq!(response_destination(&bare, v6).addr.port(), 5060);
    }

    #[test]
    fn reliable_transports_answer_on_the_same_connection() {
        let request = request("SIP/2.0/TCP 192.0.2.7:5070;branch=z9hG4bK1");
        let tcp = from(Protocol::Tcp, "192.0.2.7:40000");
        assert_eq!(response_destination(&request, tcp), tcp);
        let request = self::request("SIP/2.0/TLS 192.0.2.7;branch=z9hG4bK1");
        let tls = from(Protocol::Tls, "192.0.2.7:40001");
        assert_eq!(response_destination(&request, tls), tls);
        let internal = crate::transport::ANALOG_PEER;
        assert_eq!(response_destination(&request, internal), internal);
    }
}
