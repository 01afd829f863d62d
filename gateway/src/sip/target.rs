//! Where a `sip:`/`sips:` URI points when its host is an IP address: the address, the port
//! it names and whether it asks for TCP. Used to reach registered contacts, to spot a
//! Contact that names the gateway itself, and to tell whether a phone takes TCP.

use ezk_sip_types::parse::Parse;
use ezk_sip_types::uri::SipUri;
use std::net::{IpAddr, SocketAddr};

/// The port a `sip:` URI without one means (RFC 3261 §19.1.2; 5061 for `sips:`).
const SIP_PORT: u16 = 5060;
/// The port a `sips:` URI without one means.
const SIPS_PORT: u16 = 5061;

/// A SIP URI whose host is an IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UriTarget {
    /// The host.
    pub ip: IpAddr,
    /// The port the URI names, if any.
    pub port: Option<u16>,
    /// A `sips:` URI.
    pub sips: bool,
    /// Its `transport` parameter is `tcp` (any case).
    pub tcp: bool,
}

impl UriTarget {
    /// Reads `uri`; None for other schemes, host names (the gateway resolves no DNS) and
    /// unparseable URIs.
    pub fn parse(uri: &str) -> Option<UriTarget> {
        let parsed = SipUri::parse_str(uri).ok()?;
        let tcp = parsed.uri_params.to_string().split(';').any(|param| {
            param.split_once('=').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("transport") && value.eq_ignore_ascii_case("tcp")
            })
        });
        Some(UriTarget {
            ip: parsed.host_port.ip()?,
            port: parsed.host_port.port,
            sips: parsed.sips,
            tcp,
        })
    }

    /// The address, with the scheme's default port when the URI names none.
    pub fn addr(&self) -> SocketAddr {
        let default = if self.sips { SIPS_PORT } else { SIP_PORT };
        SocketAddr::new(self.ip, self.port.unwrap_or(default))
    }

    /// The address when the URI names its port.
    pub fn explicit_addr(&self) -> Option<SocketAddr> {
        self.port.map(|port| SocketAddr::new(self.ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_hosts_ports_and_transports() {
        let t = UriTarget::parse("sip:201@192.0.2.5:5070;transport=TCP;ob").unwrap();
        assert_eq!(t.addr().to_string(), "192.0.2.5:5070");
        assert!(t.tcp);
        let t = UriTarget::parse("sip:201@192.0.2.5;transport=udp").unwrap();
        assert_eq!(
            (t.addr().port(), t.explicit_addr(), t.tcp),
            (5060, None, false)
        );
        assert_eq!(
            UriTarget::parse("sips:201@192.0.2.5")
                .unwrap()
                .addr()
                .port(),
            5061
        );
        let v6 = UriTarget::parse("sip:201@[2001:db8::1]:5080").unwrap();
        assert_eq!(v6.addr().to_string(), "[2001:db8::1]:5080");
        assert_eq!(
            UriTarget::parse("sip:user;par=u%40example.net@192.0.2.5").map(|t| t.addr().port()),
            Some(5060)
        );
        for other in [
            "sip:201@phone.example.com",
            "tel:+15551234",
            "name:John_Smith",
            "*",
        ] {
            assert_eq!(UriTarget::parse(other), None, "{other}");
        }
    }
}
