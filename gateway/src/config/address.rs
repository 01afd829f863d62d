//! The addresses a gateway names in what it sends: `sip.advertise` (a host with an optional
//! port, for Via, Contact and the URIs the gateway writes) and `media.advertise` (an IP
//! address for SDP), for a gateway behind NAT with a public address. Without them the
//! gateway names the address each peer reached it at.

use std::net::IpAddr;

/// A host (IP address or DNS name) with an optional port, as SIP headers write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host as a SIP URI writes it: an IPv6 address in brackets.
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
}

/// What an address field must look like, for messages.
const HOST_PORT_FORM: &str = "an IP address or host name with an optional port, e.g. \
     \"203.0.113.5\", \"pbx.example.com:5060\" or \"[2001:db8::5]:5060\"";

impl HostPort {
    /// Reads `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; the error
    /// says what is wrong.
    pub fn parse(text: &str) -> Result<HostPort, String> {
        let bad = |why: &str| format!("{text:?} {why}: write {HOST_PORT_FORM}");
        if let Ok(ip) = text.parse::<IpAddr>() {
            return HostPort::from_ip(ip, None).map_err(|why| bad(&why));
        }
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (inside, after) = rest.split_once(']').ok_or_else(|| bad("lacks its ']'"))?;
                let ip = inside
                    .parse::<std::net::Ipv6Addr>()
                    .map_err(|_| bad("has no IPv6 address in its brackets"))?;
                let port = match after {
                    "" => None,
                    _ => Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("has text after ']'"))?,
                    ),
                };
                return HostPort::from_ip(
                    IpAddr::V6(ip),
                    port.map(parse_port).transpose().map_err(|why| bad(&why))?,
                )
                .map_err(|why| bad(&why));
            }
            None => match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(parse_port(port).map_err(|why| bad(&why))?)),
                None => (text, None),
            },
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return HostPort::from_ip(ip, port).map_err(|why| bad(&why));
        }
        if !is_host_name(host) {
            return Err(bad("is not a valid host name"));
        }
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn from_ip(ip: IpAddr, port: Option<u16>) -> Result<HostPort, String> {
        if ip.is_unspecified() {
            return Err("is the unspecified address, which no one can send to".into());
        }
        Ok(HostPort {
            host: match ip {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            },
            port,
        })
    }
}

/// A port number 1 to 65535.
fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("has port {text:?}, not 1 to 65535")),
    }
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Reads `media.advertise`: an IP address phones can send RTP to (SDP needs an address:
/// the gateway resolves no DNS and phones rarely do for `c=`).
pub fn parse_media_advertise(text: &str) -> Result<IpAddr, String> {
    match text.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => Err(format!(
            "{text:?} is the unspecified address: name the address phones send their RTP to"
        )),
        Ok(ip) => Ok(ip),
        Err(_) => Err(format!(
            "{text:?} is not an IP address (SDP names an address, e.g. \"203.0.113.5\" or \
             \"2001:db8::5\"; host names are not resolved)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_port(host: &str, port: Option<u16>) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn hosts_addresses_and_ports() {
        for (text, expected) in [
            ("203.0.113.5", host_port("203.0.113.5", None)),
            ("203.0.113.5:5080", host_port("203.0.113.5", Some(5080))),
            ("PBX.example.com", host_port("pbx.example.com", None)),
            (
                "pbx.example.com:5060",
                host_port("pbx.example.com", Some(5060)),
            ),
            ("2001:db8::5", host_port("[2001:db8::5]", None)),
            ("[2001:db8::5]", host_port("[2001:db8::5]", None)),
            ("[2001:db8::5]:5062", host_port("[2001:db8::5]", Some(5062))),
        ] {
            assert_eq!(HostPort::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn what_cannot_be_advertised_is_refused_with_the_reason() {
        for (text, reason) in [
            ("0.0.0.0", "unspecified"),
            ("[::]:5060", "unspecified"),
            ("pbx.example.com:0", "not 1 to 65535"),
            ("pbx.example.com:http", "not 1 to 65535"),
            ("pbx_example.com", "not a valid host name"),
            ("", "not a valid host name"),
            ("[2001:db8::5", "lacks its ']'"),
            ("[2001:db8::5]5060", "text after ']'"),
            ("[pbx]:5060", "no IPv6 address"),
        ] {
            let error = HostPort::parse(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
        assert_eq!(
            parse_media_advertise("2001:db8::5"),
            Ok("2001:db8::5".parse().unwrap())
        );
        assert!(parse_media_advertise("media.example.com")
            .unwrap_err()
            .contains("not an IP address"));
        assert!(parse_media_advertise("0.0.0.0")
            .unwrap_err()
            .contains("unspecified"));
    }
}
