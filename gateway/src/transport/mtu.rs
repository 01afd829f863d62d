//! RFC 3261 §18.1.1: a request within 200 bytes of the path MTU, or larger than 1300 bytes
//! when the MTU is unknown, MUST go over a congestion-controlled transport (TCP), not UDP,
//! so that it is not fragmented (a lost fragment loses the whole datagram, and every
//! retransmission resends them all).
//!
//! The gateway never knows the path MTU, so [`UDP_REQUEST_LIMIT`] applies. A larger request
//! goes over TCP when the far end takes TCP: its URI (the registered Contact, a dialog's
//! remote target) says `transport=tcp`, or it is already reached over TCP (registered over
//! TCP). A far end that takes only UDP (most phones registered over UDP) still gets a request
//! of up to [`UDP_ONLY_LIMIT`] over UDP, fragmented, as every PBX does: refusing it would
//! lose the call of a phone that merely sent a rich offer. Anything larger is not sent: the
//! caller of a fork gets `513 Message Too Large` (RFC 3261 §21.5.14) when no other fork
//! answers, so the operator sees why (and can make the phone register over TCP), and a 60 KB
//! INVITE is never fanned out as 45 fragments per phone.
//!
//! Responses are not bound by this rule (§18.2.1 has none; they follow their request).

use super::{Peer, Protocol};
use crate::sip::target::UriTarget;

/// The path MTU assumed when it is unknown: Ethernet's.
pub const ASSUMED_PATH_MTU: usize = 1500;

/// The largest request sent over UDP: the assumed MTU less the 200 bytes RFC 3261 §18.1.1
/// keeps free (1300, the figure the RFC names for an unknown MTU).
pub const UDP_REQUEST_LIMIT: usize = ASSUMED_PATH_MTU - 200;

/// The largest request sent over UDP to a far end not known to take TCP (a few fragments;
/// phones' receive buffers commonly hold 4-8 KiB).
pub const UDP_ONLY_LIMIT: usize = 4096;

/// How a request of some size may travel to a far end first reached at some peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRoute {
    /// As planned: small enough for UDP, or not over UDP anyway.
    Keep,
    /// Over TCP to this peer instead of UDP.
    Tcp(Peer),
    /// Larger than [`UDP_ONLY_LIMIT`], and the far end is not known to take TCP: not to be
    /// sent.
    TooLarge,
}

/// Where a request of `len` bytes planned for `peer` goes, its target being `target` (the
/// Request-URI: a registered Contact or a dialog's remote target); `tcp_served` says
/// whether the gateway runs a TCP transport.
pub fn route_by_size(peer: Peer, target: &str, len: usize, tcp_served: bool) -> SizeRoute {
    if peer.protocol != Protocol::Udp || len <= UDP_REQUEST_LIMIT {
        return SizeRoute::Keep;
    }
    match UriTarget::parse(target) {
        Some(uri) if uri.tcp && !uri.sips && tcp_served => SizeRoute::Tcp(Peer {
            protocol: Protocol::Tcp,
            addr: uri.addr(),
            local: peer.local,
        }),
        _ if len <= UDP_ONLY_LIMIT => SizeRoute::Keep,
        _ => SizeRoute::TooLarge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(protocol: Protocol) -> Peer {
        Peer {
            protocol,
            addr: "192.0.2.9:40000".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        }
    }

    #[test]
    fn the_limit_is_mtu_minus_200() {
        assert_eq!(UDP_REQUEST_LIMIT, 1300);
        let udp = peer(Protocol::Udp);
        let plain = "sip:201@192.0.2.9:5070";
        assert_eq!(route_by_size(udp, plain, 1300, true), SizeRoute::Keep);
        assert_eq!(
            route_by_size(udp, plain, 1301, true),
            SizeRoute::Keep,
            "a UDP-only phone still gets a request of a few fragments"
        );
        assert_eq!(
            route_by_size(udp, plain, UDP_ONLY_LIMIT, true),
            SizeRoute::Keep
        );
        assert_eq!(
            route_by_size(udp, plain, UDP_ONLY_LIMIT + 1, true),
            SizeRoute::TooLarge
        );
        assert_eq!(
            route_by_size(peer(Protocol::Tcp), plain, 60_000, true),
            SizeRoute::Keep,
            "already over TCP"
        );
    }

    #[test]
    fn larger_requests_go_over_tcp_where_the_target_takes_it() {
        let udp = peer(Protocol::Udp);
        let tcp_contact = "sip:201@192.0.2.9:5070;transport=tcp";
        assert_eq!(
            route_by_size(udp, tcp_contact, 60_000, true),
            SizeRoute::Tcp(Peer {
                protocol: Protocol::Tcp,
                addr: "192.0.2.9:5070".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
            })
        );
        assert_eq!(
            route_by_size(udp, tcp_contact, 60_000, false),
            SizeRoute::TooLarge,
            "the gateway serves no TCP"
        );
        assert_eq!(
            route_by_size(udp, "sip:201@phone.example.com;transport=tcp", 60_000, true),
            SizeRoute::TooLarge,
            "no DNS"
        );
    }
}
