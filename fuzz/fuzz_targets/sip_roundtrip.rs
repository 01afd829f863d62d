//! SIP parser: parse -> serialise -> parse. Whatever parses once must parse again from its
//! own serialisation, to the same message (hickory-dns style), and nothing panics.
#![no_main]

use gateway::sip::message::SipMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(first) = SipMessage::parse_datagram(data) else {
        return;
    };
    let printed = first.to_bytes();
    let second = SipMessage::parse_datagram(&printed)
        .unwrap_or_else(|e| panic!("our own serialisation does not parse: {e}\n{printed:?}"));
    assert_eq!(second.to_bytes(), printed, "serialisation is not stable");
    assert_eq!(first.call_id(), second.call_id());
    assert_eq!(first.status(), second.status());
    assert_eq!(first.body, second.body);
});
