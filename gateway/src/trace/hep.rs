//! HEP version 3 (the Homer Encapsulation Protocol, as Homer, heplify-server and
//! Wireshark's `hep` dissector read it): a `HEP3` header with the total length, then
//! chunks of vendor 0 (generic), each a type, its length and its value, in network order.

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

/// HEP's protocol type for SIP.
const PROTOCOL_SIP: u8 = 1;

/// One HEP3 packet being built.
struct Chunks(Vec<u8>);

impl Chunks {
    fn chunk(&mut self, kind: u16, value: &[u8]) {
        self.0.extend_from_slice(&0u16.to_be_bytes()); // vendor: generic
        self.0.extend_from_slice(&kind.to_be_bytes());
        self.0
            .extend_from_slice(&((6 + value.len()) as u16).to_be_bytes());
        self.0.extend_from_slice(value);
    }
}

/// What identifies the capture to the collector.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The capture agent id (chunk 0x000c).
    pub id: u32,
    /// The collector's password (chunk 0x000e), when it wants one.
    pub password: Option<String>,
}

/// The HEP3 packet for a SIP message from `from` to `to` seen at `at` over `protocol`
/// (an IP protocol number: 17 UDP, 6 TCP); None when one address is IPv4 and the other
/// IPv6, or the message does not fit a HEP packet.
pub fn encode(
    agent: &Agent,
    at: SystemTime,
    protocol: u8,
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let mut packet = Chunks(Vec::with_capacity(payload.len() + 128));
    packet.0.extend_from_slice(b"HEP3\0\0");
    match (from.ip().to_canonical(), to.ip().to_canonical()) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            packet.chunk(0x0001, &[2]); // AF_INET
            packet.chunk(0x0002, &[protocol]);
            packet.chunk(0x0003, &source.octets());
            packet.chunk(0x0004, &destination.octets());
        }
        (IpAddr::V6(source), IpAddr::V6(destination)) => {
            packet.chunk(0x0001, &[10]); // AF_INET6
            packet.chunk(0x0002, &[protocol]);
            packet.chunk(0x0005, &source.octets());
            packet.chunk(0x0006, &destination.octets());
        }
        _ => return None,
    }
    packet.chunk(0x0007, &from.port().to_be_bytes());
    packet.chunk(0x0008, &to.port().to_be_bytes());
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    packet.chunk(
        0x0009,
        &u32::try_from(since.as_secs())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    packet.chunk(0x000a, &since.subsec_micros().to_be_bytes());
    packet.chunk(0x000b, &[PROTOCOL_SIP]);
    packet.chunk(0x000c, &agent.id.to_be_bytes());
    if let Some(password) = &agent.password {
        packet.chunk(0x000e, password.as_bytes());
    }
    packet.chunk(0x000f, payload);
    let total = u16::try_from(packet.0.len()).ok()?;
    packet.0[4..6].copy_from_slice(&total.to_be_bytes());
    Some(packet.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunks of a HEP3 packet: (type, value).
    fn chunks(packet: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut rest = &packet[6..];
        let mut found = Vec::new();
        while rest.len() >= 6 {
            let kind = u16::from_be_bytes([rest[2], rest[3]]);
            let length = usize::from(u16::from_be_bytes([rest[4], rest[5]]));
            found.push((kind, rest[6..length].to_vec()));
            rest = &rest[length..];
        }
        found
    }

    #[test]
    fn a_sip_message_becomes_hep3_chunks() {
        let agent = Agent {
            id: 2001,
            password: Some("secret".into()),
        };
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        let packet = encode(
            &agent,
            at,
            17,
            "192.0.2.1:5060".parse().unwrap(),
            "192.0.2.9:5070".parse().unwrap(),
            b"SIP/2.0 200 OK\r\n\r\n",
        )
        .unwrap();
        assert_eq!(&packet[..4], b"HEP3");
        assert_eq!(
            usize::from(u16::from_be_bytes([packet[4], packet[5]])),
            packet.len()
        );
        let found = chunks(&packet);
        let value = |kind: u16| {
            found
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(value(0x0001), Some(vec![2]));
        assert_eq!(value(0x0003), Some(vec![192, 0, 2, 1]));
        assert_eq!(value(0x0008), Some(5070u16.to_be_bytes().to_vec()));
        assert_eq!(value(0x0009), Some(1_700_000_000u32.to_be_bytes().to_vec()));
        assert_eq!(value(0x000a), Some(123_456u32.to_be_bytes().to_vec()));
        assert_eq!(value(0x000c), Some(2001u32.to_be_bytes().to_vec()));
        assert_eq!(value(0x000e), Some(b"secret".to_vec()));
        assert_eq!(value(0x000f), Some(b"SIP/2.0 200 OK\r\n\r\n".to_vec()));
    }
}
