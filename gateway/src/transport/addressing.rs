//! How a UDP socket's addresses become the SIP core's and back: a socket bound to every
//! address learns each datagram's destination (the peer's local address) and sends from
//! it, so a reply leaves from the address the request arrived on. (IPv4 peers of a
//! dual-stack `[::]` socket are plain IPv4 here: `fastpath::udp` maps them.)

use super::{Peer, Protocol};
use std::net::{IpAddr, SocketAddr};

/// `addr` with a v4-mapped IPv6 address as the IPv4 address it maps (TCP on `[::]`).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Gives `peer` a local address when it has none (a registration stored before local
/// addresses were kept): the listen address, or, on a gateway listening on every address,
/// the address the kernel would send to the peer from (asked with a connected UDP socket;
/// none is sent), with the listen port.
pub fn fill_local(peer: &mut Peer, listen: SocketAddr) {
    if !peer.local.ip().is_unspecified() {
        return;
    }
    peer.local = listen;
    if listen.ip().is_unspecified() {
        let unspecified: IpAddr = match peer.addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let unspecified = SocketAddr::new(unspecified, 0);
        let routed = std::net::UdpSocket::bind(unspecified)
            .and_then(|socket| socket.connect(peer.addr).and_then(|()| socket.local_addr()));
        if let Ok(routed) = routed {
            peer.local = SocketAddr::new(routed.ip().to_canonical(), listen.port());
        }
    }
}

/// The addressing of one bound UDP socket.
#[derive(Debug, Clone, Copy)]
pub struct Addressing {
    bound: SocketAddr,
}

impl Addressing {
    /// For a socket bound to `bound`.
    pub fn new(bound: SocketAddr) -> Addressing {
        Addressing { bound }
    }

    /// The peer of a datagram from `from`, sent to `to` (reported by a socket bound to
    /// every address; None: the bound address).
    pub fn peer(&self, from: SocketAddr, to: Option<IpAddr>) -> Peer {
        let local = to.unwrap_or(self.bound.ip());
        Peer {
            protocol: Protocol::Udp,
            addr: canonical(from),
            local: SocketAddr::new(local.to_canonical(), self.bound.port()),
        }
    }

    /// The source address of a send to `peer`: its local address when the socket is bound
    /// to every address (None: the socket's own address, or the kernel's choice when the
    /// local address is unknown or of a family the socket cannot send from).
    pub fn source(&self, peer: &Peer) -> Option<IpAddr> {
        let local = peer.local.ip();
        let sendable = match (self.bound.ip(), local) {
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
            (bound, _) => bound.is_unspecified(),
        };
        (sendable && !local.is_unspecified()).then_some(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_wildcard_socket_names_and_sends_from_each_datagrams_destination() {
        let socket = Addressing::new(addr("[::]:5060"));
        let peer = socket.peer(addr("10.1.0.2:5062"), Some("10.1.0.1".parse().unwrap()));
        assert_eq!(peer.addr, addr("10.1.0.2:5062"));
        assert_eq!(peer.local, addr("10.1.0.1:5060"));
        assert_eq!(socket.source(&peer), Some("10.1.0.1".parse().unwrap()));
        let v6 = socket.peer(
            addr("[2001:db8::2]:5062"),
            Some("2001:db8::1".parse().unwrap()),
        );
        assert_eq!(v6.local, addr("[2001:db8::1]:5060"));
        assert_eq!(socket.source(&v6), Some("2001:db8::1".parse().unwrap()));
        let mapped = socket.peer(addr("[::ffff:10.1.0.2]:5062"), None);
        assert_eq!(mapped.addr, addr("10.1.0.2:5062"), "TCP-style mapped input");
    }

    #[test]
    fn a_restored_peer_without_a_local_address_gets_the_route_to_it() {
        let mut peer = Peer {
            protocol: Protocol::Udp,
            addr: addr("127.0.0.2:5062"),
            local: addr("0.0.0.0:0"),
        };
        fill_local(&mut peer, addr("0.0.0.0:5060"));
        assert_eq!(
            peer.local,
            addr("127.0.0.1:5060"),
            "the loopback route's source"
        );
        peer.local = addr("0.0.0.0:0");
        fill_local(&mut peer, addr("192.0.2.1:5070"));
        assert_eq!(peer.local, addr("192.0.2.1:5070"));
        fill_local(&mut peer, addr("0.0.0.0:5060"));
        assert_eq!(peer.local, addr("192.0.2.1:5070"), "a known address stays");
    }

    #[test]
    fn a_socket_bound_to_one_address_keeps_it_and_lets_the_kernel_send() {
        let socket = Addressing::new(addr("192.0.2.1:5060"));
        let peer = socket.peer(addr("192.0.2.9:5062"), None);
        assert_eq!(peer.local, addr("192.0.2.1:5060"));
        assert_eq!(socket.source(&peer), None);
    }

    #[test]
    fn an_unknown_local_address_leaves_the_source_to_the_kernel() {
        let socket = Addressing::new(addr("0.0.0.0:5060"));
        let mut peer = socket.peer(addr("192.0.2.9:5062"), None);
        assert_eq!(peer.local, addr("0.0.0.0:5060"));
        assert_eq!(socket.source(&peer), None);
        peer.local = addr("[2001:db8::1]:5060");
        assert_eq!(
            socket.source(&peer),
            None,
            "no IPv6 source on an IPv4 socket"
        );
    }
}
