//! Packet-info control messages, built and read as bytes without unsafe code: the
//! destination address the kernel reports for each datagram on a socket bound to the
//! unspecified address (`IP_PKTINFO`, `IPV6_PKTINFO`), and the source address a send asks
//! for, so that a reply leaves from the address the request arrived on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::time::{Duration, SystemTime};

/// `CMSG_LEN(0)`: the header before a control message's data.
const HEADER: usize = align(std::mem::size_of::<libc::cmsghdr>());
/// Bytes of `struct in_pktinfo` (ifindex, spec_dst, addr).
const IN_PKTINFO: usize = 12;
/// Bytes of `struct in6_pktinfo` (addr, ifindex).
const IN6_PKTINFO: usize = 20;
/// Bytes of `struct timespec` (seconds, nanoseconds), the receive time's data.
const TIMESPEC: usize = 16;
/// Room for one packet-info message of either family (`CMSG_SPACE(in6_pktinfo)`) and a
/// receive time (`CMSG_SPACE(timespec)`), and what a receive reserves for control data.
pub(super) const SPACE: usize = 80;

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

/// The control messages in `control`: (level, type, data) each, until the end or the
/// first one whose length does not fit.
fn messages(control: &[u8]) -> impl Iterator<Item = (i32, i32, &[u8])> {
    let word = std::mem::size_of::<usize>();
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset + HEADER > control.len() {
            return None;
        }
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
        offset += align(length);
        Some((level, kind, data))
    })
}

/// What a received datagram's control data tells: the address it was sent to (on a socket
/// bound to the unspecified address), when the kernel received it (where asked for).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Arrival {
    /// For `IP_PKTINFO`, the local address the kernel would reply from (`ipi_spec_dst`).
    pub(super) to: Option<IpAddr>,
    /// `SCM_TIMESTAMPNS`: the real-time clock when the datagram arrived.
    pub(super) at: Option<SystemTime>,
}

/// Reads a received datagram's control data.
pub(super) fn arrival(control: &[u8]) -> Arrival {
    let mut arrival = Arrival::default();
    for (level, kind, data) in messages(control) {
        match (level, kind) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= IN_PKTINFO => {
                let octets: [u8; 4] = data[4..8].try_into().unwrap_or_default();
                arrival.to = Some(IpAddr::V4(Ipv4Addr::from(octets)));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= IN6_PKTINFO => {
                let octets: [u8; 16] = data[..16].try_into().unwrap_or_default();
                arrival.to = Some(IpAddr::V6(Ipv6Addr::from(octets)));
            }
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) if data.len() >= TIMESPEC => {
                arrival.at = timespec(data);
            }
            _ => {}
        }
    }
    arrival
}

/// A `struct timespec` of the real-time clock as a time.
fn timespec(data: &[u8]) -> Option<SystemTime> {
    let seconds = u64::try_from(i64::from_ne_bytes(data[..8].try_into().ok()?)).ok()?;
    let nanos = u32::try_from(i64::from_ne_bytes(data[8..16].try_into().ok()?))
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// Asks the kernel to report when each datagram on `socket` arrived (`SO_TIMESTAMPNS`).
pub(super) fn report_receive_times(socket: &impl AsFd) -> std::io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(socket, sockopt::ReceiveTimestampns, &true)?;
    Ok(())
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
                libc::CMSG_SPACE(IN6_PKTINFO as u32) as usize
                    + libc::CMSG_SPACE(TIMESPEC as u32) as usize,
            )
        };
        assert_eq!(TIMESPEC, std::mem::size_of::<libc::timespec>());
        assert_eq!(HEADER, header);
        assert!(space <= SPACE);
    }

    #[test]
    fn a_source_reads_back_as_the_destination() {
        for text in ["192.0.2.7", "2001:db8::5", "::ffff:10.1.0.1"] {
            let ip: IpAddr = text.parse().unwrap();
            let mut buffer = ControlBuffer::default();
            let length = source(ip, &mut buffer);
            assert_eq!(arrival(&buffer.0[..length]).to, Some(ip), "{text}");
        }
    }

    /// A control message of `level`/`kind` carrying `data`, padded as the kernel pads it.
    fn message(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let word = std::mem::size_of::<usize>();
        let mut bytes = vec![0u8; HEADER + align(data.len())];
        bytes[..word].copy_from_slice(&(HEADER + data.len()).to_ne_bytes());
        bytes[word..word + 4].copy_from_slice(&level.to_ne_bytes());
        bytes[word + 4..word + 8].copy_from_slice(&kind.to_ne_bytes());
        bytes[HEADER..HEADER + data.len()].copy_from_slice(data);
        bytes
    }

    #[test]
    fn a_receive_time_reads_with_or_without_a_destination() {
        let mut timespec = Vec::new();
        timespec.extend_from_slice(&1_700_000_000i64.to_ne_bytes());
        timespec.extend_from_slice(&123_456_789i64.to_ne_bytes());
        let stamp = message(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &timespec);
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(
            arrival(&stamp),
            Arrival {
                to: None,
                at: Some(at)
            }
        );
        let mut buffer = ControlBuffer::default();
        let length = source("10.2.0.1".parse().unwrap(), &mut buffer);
        let both = [&buffer.0[..length], &stamp[..]].concat();
        assert_eq!(
            arrival(&both),
            Arrival {
                to: Some("10.2.0.1".parse().unwrap()),
                at: Some(at)
            }
        );
        assert!(both.len() <= SPACE, "both fit what a receive reserves");
        // Nanoseconds out of range, a negative time, a short one: no time.
        for (seconds, nanos) in [(1i64, 2_000_000_000i64), (-5, 0)] {
            let mut bad = Vec::new();
            bad.extend_from_slice(&seconds.to_ne_bytes());
            bad.extend_from_slice(&nanos.to_ne_bytes());
            let bad = message(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &bad);
            assert_eq!(arrival(&bad).at, None, "{seconds} s {nanos} ns");
        }
        let short = message(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &timespec[..8]);
        assert_eq!(arrival(&short).at, None);
    }

    #[test]
    fn other_or_broken_control_data_names_no_destination() {
        assert_eq!(arrival(&[]), Arrival::default());
        assert_eq!(arrival(&[0xff; 40]).to, None, "a length past the end");
        // A message of another kind (SO_TIMESTAMP-like), then nothing.
        let word = std::mem::size_of::<usize>();
        let mut other = vec![0u8; HEADER + 8];
        other[..word].copy_from_slice(&(HEADER + 8).to_ne_bytes());
        other[word..word + 4].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        other[word + 4..word + 8].copy_from_slice(&libc::SO_TIMESTAMP.to_ne_bytes());
        assert_eq!(arrival(&other).to, None);
        // Then a packet-info message after it is found.
        let mut buffer = ControlBuffer::default();
        let length = source("10.2.0.1".parse().unwrap(), &mut buffer);
        other.extend_from_slice(&buffer.0[..length]);
        assert_eq!(arrival(&other).to, Some("10.2.0.1".parse().unwrap()));
    }
}
