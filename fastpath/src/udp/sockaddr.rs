//! Socket addresses in the kernel's layout, built and read without unsafe code.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `addr` as handlers see it: an IPv4 peer of a dual-stack IPv6 socket (v4-mapped there)
/// as plain IPv4.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `ip` as a socket of the given family writes it: IPv4 v4-mapped on an IPv6 socket.
pub(super) fn in_family(v6_socket: bool, ip: IpAddr) -> IpAddr {
    match (v6_socket, ip) {
        (true, IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
        _ => ip,
    }
}

/// A `sockaddr_in` or `sockaddr_in6` for a send.
#[derive(Clone, Copy)]
pub(super) enum RawAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawAddr {
    /// The kernel's form of `addr`.
    pub(super) fn new(addr: SocketAddr) -> RawAddr {
        match addr {
            SocketAddr::V4(a) => RawAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => RawAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    /// Pointer for `msghdr.msg_name` (valid while `self` lives and does not move).
    pub(super) fn as_ptr(&mut self) -> *mut libc::c_void {
        match self {
            RawAddr::V4(a) => (a as *mut libc::sockaddr_in).cast(),
            RawAddr::V6(a) => (a as *mut libc::sockaddr_in6).cast(),
        }
    }

    /// Length for `msghdr.msg_namelen`.
    pub(super) fn len(&self) -> libc::socklen_t {
        let size = match self {
            RawAddr::V4(_) => std::mem::size_of::<libc::sockaddr_in>(),
            RawAddr::V6(_) => std::mem::size_of::<libc::sockaddr_in6>(),
        };
        size as libc::socklen_t
    }
}

/// Reads a `sockaddr_in`/`sockaddr_in6` the kernel wrote (native-endian family, network-order
/// port and address).
pub(super) fn parse(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(raw.get(..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let octets: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(octets),
                port,
            )))
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_ne_bytes(raw.get(4..8)?.try_into().ok()?);
            let octets: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(raw.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(octets),
                port,
                flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(raw: &mut RawAddr) -> Vec<u8> {
        let length = raw.len() as usize;
        let copy = *raw;
        match copy {
            RawAddr::V4(a) => {
                let mut out = Vec::with_capacity(length);
                out.extend_from_slice(&a.sin_family.to_ne_bytes());
                out.extend_from_slice(&a.sin_port.to_ne_bytes());
                out.extend_from_slice(&a.sin_addr.s_addr.to_ne_bytes());
                out.extend_from_slice(&a.sin_zero);
                out
            }
            RawAddr::V6(a) => {
                let mut out = Vec::with_capacity(length);
                out.extend_from_slice(&a.sin6_family.to_ne_bytes());
                out.extend_from_slice(&a.sin6_port.to_ne_bytes());
                out.extend_from_slice(&a.sin6_flowinfo.to_ne_bytes());
                out.extend_from_slice(&a.sin6_addr.s6_addr);
                out.extend_from_slice(&a.sin6_scope_id.to_ne_bytes());
                out
            }
        }
    }

    #[test]
    fn addresses_round_trip_through_the_kernel_layout() {
        for text in ["127.0.0.1:5060", "[2001:db8::1]:40000", "0.0.0.0:1"] {
            let addr: SocketAddr = text.parse().unwrap();
            let mut raw = RawAddr::new(addr);
            assert_eq!(parse(&bytes_of(&mut raw)), Some(addr), "{text}");
        }
        assert_eq!(parse(&[0, 0, 1]), None);
        assert_eq!(parse(&[255; 16]), None);
    }
}
