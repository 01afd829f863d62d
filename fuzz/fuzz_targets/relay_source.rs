//! The relay's per-datagram decision (the strict-source filter every relay leg and analog
//! port applies, with its RTP header parser) driven by arbitrary operations: new SDP,
//! packets from a handful of addresses, RTCP. Nothing panics, and once the signalled
//! address has sent, nothing from any other address is accepted until new SDP comes.
#![no_main]

use fastpath::relay::strict_source::{RtpHeader, StrictSource};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;

fn address(byte: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, byte % 4], 4000 + u16::from(byte % 3) * 2))
}

fuzz_target!(|data: &[u8]| {
    let mut source = StrictSource::new(1 + u32::from(data.first().copied().unwrap_or(0) % 6));
    let (mut signalled, mut fixed) = (None, None);
    for chunk in data.split(|&b| b == 0xff).skip(1) {
        let [op, who, packet @ ..] = chunk else {
            continue;
        };
        let from = address(*who);
        let _ = RtpHeader::parse(packet);
        match op % 3 {
            0 => {
                source.signal(from);
                if signalled != Some(from) {
                    fixed = None;
                }
                signalled = Some(from);
            }
            1 => {
                let accepted = source.admit(from, packet).is_accepted();
                if let Some(fixed) = fixed {
                    assert!(!accepted || from == fixed, "{from} accepted on a stream fixed to {fixed}");
                }
                if accepted && Some(from) == signalled {
                    fixed = Some(from);
                }
            }
            _ => {
                let _ = source.admits_rtcp(from);
            }
        }
    }
});
