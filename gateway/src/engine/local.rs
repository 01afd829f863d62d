//! How the gateway names itself toward each peer: the sent-by of its Via, its Contact, the
//! host of the URIs it writes and the address of the SDP it writes. Without `sip.advertise`
//! it names the address the peer reached (`Peer::local`: where the peer's messages arrived,
//! which is what a gateway listening on every address must answer with); with it, the
//! advertised host (a gateway behind NAT). SDP likewise: `media.advertise`, a specified
//! `media.address`, or the peer's local address.

use crate::config::address::HostPort;
use crate::sip::ids;
use crate::sip::message::decimal;
use crate::transport::Peer;
use std::net::{IpAddr, SocketAddr};

/// How the gateway names itself in Via, Contact, its URIs and its SDP.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    /// A fixed name, `(host:port, host)`: `sip.advertise`, or the analog agent's.
    fixed: Option<(String, String)>,
    /// The listen address: named for peers whose local address is unknown; its port for
    /// an advertised host without one.
    listen: SocketAddr,
    /// The fixed SDP address (`media.advertise` or a specified `media.address`).
    media: Option<IpAddr>,
}

/// `ip` as a URI host: IPv6 in brackets.
fn uri_host(ip: IpAddr) -> String {
    let mut out = String::with_capacity(48);
    push_uri_host(&mut out, ip);
    out
}

/// Appends `ip` as a URI host. IPv4 is written octet by octet: the messages of every call
/// name the gateway several times, and `Ipv4Addr`'s `Display` (padding support, a buffer
/// of its own) cost more than building the rest of those headers.
fn push_uri_host(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V6(v6) => out.push_str(&format!("[{v6}]")),
        IpAddr::V4(v4) => {
            for (at, octet) in v4.octets().into_iter().enumerate() {
                if at > 0 {
                    out.push('.');
                }
                out.push_str(decimal(usize::from(octet), &mut [0; 20]));
            }
        }
    }
}

impl LocalIdentity {
    /// The gateway listening on `listen`, advertising `advertised` (None: each peer's local
    /// address) and `media` in SDP (None: each peer's local address).
    pub fn new(
        listen: SocketAddr,
        advertised: Option<HostPort>,
        media: Option<IpAddr>,
    ) -> LocalIdentity {
        let fixed = advertised.map(|name| {
            let port = name.port.unwrap_or(listen.port());
            (format!("{}:{port}", name.host), name.host)
        });
        LocalIdentity {
            fixed,
            listen,
            media,
        }
    }

    /// An identity that always names `host` (no port), e.g. the analog agent's.
    pub fn named(host: &str) -> LocalIdentity {
        LocalIdentity {
            fixed: Some((host.to_string(), host.to_string())),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            media: None,
        }
    }

    /// The gateway's address `peer` reaches (the listen address where unknown).
    fn reached(&self, peer: Peer) -> SocketAddr {
        let ip = match peer.local.ip() {
            ip if ip.is_unspecified() => self.listen.ip(),
            ip => ip,
        };
        let port = match peer.local.port() {
            0 => self.listen.port(),
            port => port,
        };
        SocketAddr::new(ip, port)
    }

    /// `host:port` for messages to `peer` (Via sent-by, Contact).
    pub fn host_port(&self, peer: Peer) -> String {
        match &self.fixed {
            Some((host_port, _)) => host_port.clone(),
            None => {
                let reached = self.reached(peer);
                let mut out = String::with_capacity(56);
                push_uri_host(&mut out, reached.ip());
                out.push(':');
                out.push_str(decimal(usize::from(reached.port()), &mut [0; 20]));
                out
            }
        }
    }

    /// The host alone, for URIs such as `sip:201@host` and Call-IDs.
    pub fn host(&self, peer: Peer) -> String {
        match &self.fixed {
            Some((_, host)) => host.clone(),
            None => uri_host(self.reached(peer).ip()),
        }
    }

    /// A Via value for a request sent to `peer`, with a fresh branch.
    pub fn via(&self, peer: Peer) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            peer.protocol.via_token(),
            self.host_port(peer),
            ids::branch()
        )
    }

    /// Our Contact value for dialogs with `peer`.
    pub fn contact(&self, peer: Peer) -> String {
        format!(
            "<sip:gw@{};transport={}>",
            self.host_port(peer),
            peer.protocol.uri_param()
        )
    }

    /// `sip:user@host` for an extension or caller number, as `peer` is told.
    pub fn uri_for(&self, user: &str, peer: Peer) -> String {
        format!("sip:{user}@{}", self.host(peer))
    }

    /// The address the SDP the gateway writes for `peer` names.
    pub fn media_ip(&self, peer: Peer) -> IpAddr {
        self.media.unwrap_or_else(|| self.reached(peer).ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Protocol;

    fn peer(local: &str) -> Peer {
        Peer {
            protocol: Protocol::Udp,
            addr: "192.0.2.50:5062".parse().unwrap(),
            local: local.parse().unwrap(),
        }
    }

    fn sent_by(via: &str) -> &str {
        via.split_whitespace()
            .nth(1)
            .and_then(|v| v.split(';').next())
            .unwrap()
    }

    #[test]
    fn a_wildcard_listener_names_the_address_each_peer_reached() {
        let local = LocalIdentity::new("0.0.0.0:5060".parse().unwrap(), None, None);
        let (a, b) = (peer("10.1.0.1:5060"), peer("10.2.0.1:5060"));
        assert_eq!(sent_by(&local.via(a)), "10.1.0.1:5060");
        assert_eq!(sent_by(&local.via(b)), "10.2.0.1:5060");
        assert_eq!(local.contact(b), "<sip:gw@10.2.0.1:5060;transport=udp>");
        assert_eq!(local.uri_for("201", a), "sip:201@10.1.0.1");
        assert_eq!(local.media_ip(b), "10.2.0.1".parse::<IpAddr>().unwrap());
        let v6 = peer("[2001:db8::1]:5060");
        assert_eq!(local.host_port(v6), "[2001:db8::1]:5060");
        assert_eq!(local.host(v6), "[2001:db8::1]");
        assert_eq!(local.media_ip(v6), "2001:db8::1".parse::<IpAddr>().unwrap());
        for ip in ["0.0.0.0", "255.255.255.255", "10.20.3.4", "192.0.2.100"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(uri_host(ip), ip.to_string(), "written as Display writes it");
        }
    }

    #[test]
    fn an_unknown_local_address_falls_back_to_the_listen_address() {
        let local = LocalIdentity::new("192.0.2.1:5070".parse().unwrap(), None, None);
        assert_eq!(local.host_port(peer("0.0.0.0:0")), "192.0.2.1:5070");
    }

    #[test]
    fn advertised_addresses_replace_the_local_ones() {
        let advertised = HostPort::parse("pbx.example.com").unwrap();
        let local = LocalIdentity::new(
            "0.0.0.0:5060".parse().unwrap(),
            Some(advertised),
            Some("203.0.113.5".parse().unwrap()),
        );
        let a = peer("10.1.0.1:5060");
        assert_eq!(sent_by(&local.via(a)), "pbx.example.com:5060");
        assert_eq!(
            local.contact(a),
            "<sip:gw@pbx.example.com:5060;transport=udp>"
        );
        assert_eq!(local.uri_for("201", a), "sip:201@pbx.example.com");
        assert_eq!(local.media_ip(a), "203.0.113.5".parse::<IpAddr>().unwrap());
        let with_port = LocalIdentity::new(
            "0.0.0.0:5060".parse().unwrap(),
            Some(HostPort::parse("[2001:db8::5]:5080").unwrap()),
            None,
        );
        assert_eq!(with_port.host_port(a), "[2001:db8::5]:5080");
        assert_eq!(
            with_port.media_ip(a),
            "10.1.0.1".parse::<IpAddr>().unwrap(),
            "without media.advertise SDP names the local address"
        );
    }
}
