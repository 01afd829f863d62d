//! The fast path's pre-parser on arbitrary datagrams: never panics, and agrees with the
//! full parser on the routing keys of every message the full parser accepts.
#![no_main]

use fastpath::preparse::{preparse, Kind};
use gateway::sip::message::SipMessage;
use libfuzzer_sys::fuzz_target;

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect()
}

fuzz_target!(|data: &[u8]| {
    let pre = preparse(data);
    let Ok(full) = SipMessage::parse_datagram(data) else {
        return;
    };
    let (Some(call_id), Some(cseq), Some(_)) = (full.call_id(), full.cseq(), full.top_via()) else {
        return;
    };
    if call_id.is_empty() {
        return;
    }
    let Ok(pre) = pre else {
        return; // the full parser is more tolerant of some broken heads; validation refuses those
    };
    assert_eq!(squeeze(pre.call_id), squeeze(call_id), "Call-ID");
    assert_eq!(pre.cseq, cseq.cseq, "CSeq number");
    match (pre.kind, full.status()) {
        (Kind::Response(a), Some(b)) => assert_eq!(a, b, "status"),
        (Kind::Request(_), None) => {}
        (kind, status) => panic!("kind {kind:?} against status {status:?}"),
    }
});
