//! A SIP message as the IP packet that carried it, for pcap files: an IPv4 or IPv6 header
//! and a UDP header, or a TCP header with a sequence number per direction (TLS messages
//! are written as the clear text they carried, on TCP). Checksums are computed, so
//! Wireshark and tshark read the packets as they would off the wire.

use std::net::{IpAddr, SocketAddr};

/// The transport a captured message used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// UDP.
    Udp,
    /// TCP (or TLS, as its clear text), with the segment's sequence number.
    Tcp {
        /// The first byte's sequence number in its direction.
        sequence: u32,
    },
}

impl Carrier {
    /// The IP protocol number.
    pub fn protocol(self) -> u8 {
        match self {
            Carrier::Udp => 17,
            Carrier::Tcp { .. } => 6,
        }
    }
}

/// The most payload one packet holds (an IPv4 packet's length field is 16 bits).
pub const MAX_PAYLOAD: usize = 65_535 - 60 - 20;

/// The one's-complement sum of RFC 1071 over `chunks`, folded.
fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for chunk in chunks {
        for &byte in *chunk {
            match odd.take() {
                Some(high) => sum += u32::from(u16::from_be_bytes([high, byte])),
                None => odd = Some(byte),
            }
        }
    }
    if let Some(high) = odd {
        sum += u32::from(u16::from_be_bytes([high, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The transport header for `payload` from `from` to `to` (checksum still zero).
fn transport_header(carrier: Carrier, from: SocketAddr, to: SocketAddr, length: usize) -> Vec<u8> {
    let mut header = Vec::with_capacity(20);
    header.extend_from_slice(&from.port().to_be_bytes());
    header.extend_from_slice(&to.port().to_be_bytes());
    match carrier {
        Carrier::Udp => {
            header.extend_from_slice(&((8 + length) as u16).to_be_bytes());
            header.extend_from_slice(&[0, 0]);
        }
        Carrier::Tcp { sequence } => {
            header.extend_from_slice(&sequence.to_be_bytes());
            header.extend_from_slice(&0u32.to_be_bytes()); // no acknowledgment number
            header.extend_from_slice(&[0x50, 0x08]); // 20-byte header; PSH
            header.extend_from_slice(&65_535u16.to_be_bytes()); // window
            header.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        }
    }
    header
}

/// The IP packet carrying `payload` (cut at [`MAX_PAYLOAD`]) from `from` to `to`; None when
/// one address is IPv4 and the other IPv6.
pub fn ip_packet(
    carrier: Carrier,
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
    let mut transport = transport_header(carrier, from, to, payload.len());
    let transport_length = (transport.len() + payload.len()) as u16;
    let checksum_at = match carrier {
        Carrier::Udp => 6,
        Carrier::Tcp { .. } => 16,
    };
    let protocol = carrier.protocol();
    let mut packet = Vec::with_capacity(40 + transport.len() + payload.len());
    match (from.ip().to_canonical(), to.ip().to_canonical()) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            let pseudo = [
                &source.octets()[..],
                &destination.octets(),
                &[0, protocol],
                &transport_length.to_be_bytes(),
            ]
            .concat();
            let sum = checksum(&[&pseudo, &transport, payload]);
            transport[checksum_at..checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
            let mut header = vec![0x45, 0];
            header.extend_from_slice(&(20 + transport_length).to_be_bytes());
            header.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]); // DF, TTL 64
            header.extend_from_slice(&source.octets());
            header.extend_from_slice(&destination.octets());
            let sum = checksum(&[&header]);
            header[10..12].copy_from_slice(&sum.to_be_bytes());
            packet.extend_from_slice(&header);
        }
        (IpAddr::V6(source), IpAddr::V6(destination)) => {
            let pseudo = [
                &source.octets()[..],
                &destination.octets(),
                &u32::from(transport_length).to_be_bytes(),
                &[0, 0, 0, protocol],
            ]
            .concat();
            let sum = checksum(&[&pseudo, &transport, payload]);
            transport[checksum_at..checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
            packet.extend_from_slice(&[0x60, 0, 0, 0]);
            packet.extend_from_slice(&transport_length.to_be_bytes());
            packet.extend_from_slice(&[protocol, 64]);
            packet.extend_from_slice(&source.octets());
            packet.extend_from_slice(&destination.octets());
        }
        _ => return None,
    }
    packet.extend_from_slice(&transport);
    packet.extend_from_slice(payload);
    Some(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_1071_example_sums_as_the_rfc_says() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2, so the checksum is 220d.
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03], &[0xf4, 0xf5, 0xf6, 0xf7]]),
            0x220d
        );
    }

    #[test]
    fn a_packet_with_its_checksums_sums_to_zero() {
        let from: SocketAddr = "192.0.2.1:5070".parse().unwrap();
        let to: SocketAddr = "192.0.2.2:5060".parse().unwrap();
        let packet = ip_packet(Carrier::Udp, from, to, b"OPTIONS sip:x SIP/2.0\r\n\r\n").unwrap();
        assert_eq!(checksum(&[&packet[..20]]), 0, "IPv4 header");
        assert_eq!(
            u16::from_be_bytes([packet[2], packet[3]]) as usize,
            packet.len()
        );
        let pseudo = [&packet[12..20], &[0, 17], &packet[24..26]].concat();
        assert_eq!(checksum(&[&pseudo, &packet[20..]]), 0, "UDP");
        let v6 = ip_packet(
            Carrier::Tcp { sequence: 7 },
            "[2001:db8::1]:5061".parse().unwrap(),
            "[2001:db8::2]:40000".parse().unwrap(),
            b"SIP/2.0 200 OK\r\n\r\n",
        )
        .unwrap();
        assert_eq!(v6[0] >> 4, 6);
        assert_eq!(u32::from_be_bytes([v6[44], v6[45], v6[46], v6[47]]), 7);
        assert!(ip_packet(Carrier::Udp, from, "[2001:db8::2]:1".parse().unwrap(), b"x").is_none());
    }
}
