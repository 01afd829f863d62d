//! Packet-info control messages, built and read as bytes without unsafe code: the
//! destination address the kernel reports for each datagram on a socket bound to the
//! unspecified address (`IP_PKTINFO`, `IPV6_PKTINFO`), and the source address a send asks
//! for, so that a reply leaves from the address the request arrived on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

/// `CMSG_LEN(0)`: the header before a control message's data.
const HEADER: usize = align(std::mem::size_of::<libc::cmsghdr>());
/// Bytes of `struct in_pktinfo` (ifindex, spec_dst, addr).
const IN_PKTINFO: usize = 12;
/// Bytes of `struct in6_pktinfo` (addr, ifindex).
const IN6_PKTINFO: usize = 20;
/// Room for one packet-info message of either family (`CMSG_SPACE(in6_pktinfo)`), and what
/// a receive reserves for control data.
pub(super) const SPACE: usize = 64;

/// A control-message buffer, aligned like `struct cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(super) struct ControlBuffer(pub(super) [u8; SPACE]);

impl Default for ControlBuffer {
    fn default() -> Self {
        ControlBuffer([0; SPACE])
    }
}

/// Rounds up like `CMSG_ALIGN`.
const fn align(len: usize) -> usize {
    let word = std::mem::size_of::<usize>();
    (len + word - 1) & !(word - 1)
}

/// Asks the kernel to report each datagram's destination on `socket` (bound to the
/// unspecified address of `ip`'s family; a dual-stack IPv6 socket reports IPv4 datagrams'
/// destinations as v4-mapped addresses).
pub(super) fn report_destinations(socket: &impl AsFd, ip: IpAddr) -> std::io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    match ip {
        IpAddr::V4(_) => setsockopt(socket, sockopt::Ipv4PacketInfo, &true)?,
        IpAddr::V6(_) => setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)?,
    }
    Ok(())
}

/// The destination address in a received datagram's control data, if it carries one
/// (for `IP_PKTINFO`, the local address the kernel would reply from: `ipi_spec_dst`).
pub(super) fn destination(control: &[u8]) -> Option<IpAddr> {
    let word = std::mem::size_of::<usize>();
    let mut offset = 0;
    while offset + HEADER <= control.len() {
        let length = usize::from_ne_bytes(control[offset..offset + word].try_into().ok()?);
        let level = i32::from_ne_bytes(control[offset + word..offset + word + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(
            control[offset + word + 4..offset + word + 8]
                .try_into()
                .ok()?,
        );
        if length < HEADER || offset + length > control.len() {
            return None;
        }
        let data = &control[offset + HEADER..offset + length];
        match (level, kind) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= IN_PKTINFO => {
                let octets: [u8; 4] = data[4..8].try_into().ok()?;
                return Some(IpAddr::V4(Ipv4Addr::from(octets)));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= IN6_PKTINFO => {
                let octets: [u8; 16] = data[..16].try_into().ok()?;
                return Some(IpAddr::V6(Ipv6Addr::from(octets)));
            }
            _ => offset += align(length),
        }
    }
    None
}

/// Writes into `buffer` the control message that sends from `source` (`IP_PKTINFO` for an
/// IPv4 address, `IPV6_PKTINFO` for IPv6, v4-mapped on a dual-stack socket) and returns
/// its length for `msg_controllen`.
pub(super) fn source(source: IpAddr, buffer: &mut ControlBuffer) -> usize {
    let word = std::mem::size_of::<usize>();
    let (level, kind, data) = match source {
        IpAddr::V4(ip) => {
            let mut data = [0u8; IN6_PKTINFO];
            // ipi_ifindex 0 (any interface), ipi_spec_dst = the source, ipi_addr unused.
            data[4..8].copy_from_slice(&ip.octets());
            (libc::IPPROTO_IP, libc::IP_PKTINFO, (data, IN_PKTINFO))
        }
        IpAddr::V6(ip) => {
            let mut data = [0u8; IN6_PKTINFO];
            // ipi6_addr = the source, ipi6_ifindex 0 (any interface).
            data[..16].copy_from_slice(&ip.octets());
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, (data, IN6_PKTINFO))
        }
    };
    let (data, data_len) = data;
    let bytes = &mut buffer.0;
    bytes.fill(0);
    bytes[..word].copy_from_slice(&(HEADER + data_len).to_ne_bytes());
    bytes[word..word + 4].copy_from_slice(&level.to_ne_bytes());
    bytes[word + 4..word + 8].copy_from_slice(&kind.to_ne_bytes());
    bytes[HEADER..HEADER + data_len].copy_from_slice(&data[..data_len]);
    HEADER + align(data_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_layout_is_the_kernels() {
        assert_eq!(IN_PKTINFO, std::mem::size_of::<libc::in_pktinfo>());
        assert_eq!(IN6_PKTINFO, std::mem::size_of::<libc::in6_pktinfo>());
        // SAFETY: CMSG_LEN and CMSG_SPACE only compute lengths.
        let (header, space) = unsafe {
            (
                libc::CMSG_LEN(0) as usize,
                libc::CMSG_SPACE(IN6_PKTINFO as u32) as usize,
            )
        };
        assert_eq!(HEADER, header);
        assert!(space <= SPACE);
    }

    #[test]
    fn a_source_reads_back_as_the_destination() {
        for text in ["192.0.2.7", "2001:db8::5", "::ffff:10.1.0.1"] {
            let ip: IpAddr = text.parse().unwrap();
            let mut buffer = ControlBuffer::default();
            let length = source(ip, &mut buffer);
            assert_eq!(destination(&buffer.0[..length]), Some(ip), "{text}");
        }
    }

    #[test]
    fn other_or_broken_control_data_names_no_destination() {
        assert_eq!(destination(&[]), None);
        assert_eq!(destination(&[0xff; 40]), None, "a length past the end");
        // A message of another kind (SO_TIMESTAMP-like), then nothing.
        let word = std::mem::size_of::<usize>();
        let mut other = vec![0u8; HEADER + 8];
        other[..word].copy_from_slice(&(HEADER + 8).to_ne_bytes());
        other[word..word + 4].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        other[word + 4..word + 8].copy_from_slice(&libc::SO_TIMESTAMP.to_ne_bytes());
        assert_eq!(destination(&other), None);
        // Then a packet-info message after it is found.
        let mut buffer = ControlBuffer::default();
        let length = source("10.2.0.1".parse().unwrap(), &mut buffer);
        other.extend_from_slice(&buffer.0[..length]);
        assert_eq!(destination(&other), Some("10.2.0.1".parse().unwrap()));
    }
}
