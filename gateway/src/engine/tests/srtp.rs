//! The SRTP rules on offers: SDES keys cross TLS only (an offer with keys that came in
//! clear is refused, a keyed offer never goes to a phone reached in clear), and each
//! phone's `srtp` policy is honoured on both ends.

use super::*;

const SECURE_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";

fn tls(port: u16) -> Peer {
    Peer {
        protocol: Protocol::Tls,
        ..udp(port)
    }
}

/// The reason phrase of the final response among `out`.
fn refusal(out: &[(Peer, SipMessage)]) -> (u16, String) {
    out.iter()
        .find_map(|(_, m)| match &m.start {
            crate::sip::message::StartLine::Response(line) if line.code >= 300 => {
                Some((line.code, line.reason.clone()))
            }
            _ => None,
        })
        .expect("a final response")
}

#[test]
fn an_offer_with_keys_that_came_in_clear_is_refused() {
    let mut h = Harness::new();
    h.register("201", "pw201", tls(5071), 600);
    let text = invite_with_sdp("202", "201", 5072, "keys-in-clear", SECURE_SDP);
    let out = h.request_with_auth(udp(5072), &text, "202", "pw202");
    assert!(requests(&out, "INVITE").is_empty(), "nothing forked");
    let (code, reason) = refusal(&out);
    assert_eq!(code, 488);
    assert!(reason.contains("SDES keys only over TLS"), "{reason}");
}

#[test]
fn a_keyed_offer_goes_to_the_callee_s_tls_contacts_only() {
    let mut h = Harness::new();
    h.register("201", "pw201", tls(5071), 600);
    h.register("201", "pw201", udp(5073), 600);
    let text = invite_with_sdp("202", "201", 5072, "keyed", SECURE_SDP);
    let out = h.request_with_auth(tls(5072), &text, "202", "pw202");
    let forked = requests(&out, "INVITE");
    assert_eq!(forked.len(), 1, "{:?}", statuses(&out));
    assert_eq!(forked[0].0, tls(5071));
    assert!(String::from_utf8_lossy(&forked[0].1.body).contains("a=crypto:1"));
    // The same callee with only a clear contact: the call is refused, no key sent.
    let mut h = Harness::new();
    h.register("201", "pw201", udp(5073), 600);
    let out = h.request_with_auth(tls(5072), &text, "202", "pw202");
    assert!(requests(&out, "INVITE").is_empty());
    let (code, reason) = refusal(&out);
    assert_eq!(code, 488);
    assert!(reason.contains("not reached over TLS"), "{reason}");
}

#[test]
fn required_and_off_policies_refuse_what_they_do_not_take() {
    let config = CONFIG
        .replace(
            "number = \"201\"\n",
            "number = \"201\"\nsrtp = \"required\"\n",
        )
        .replace("number = \"203\"\n", "number = \"203\"\nsrtp = \"off\"\n");
    let mut h = Harness::with_config(&config);
    h.register("201", "pw201", tls(5071), 600);
    h.register("203", "pw203", tls(5075), 600);
    // 201 requires SRTP: its plain offer, and a plain offer to it, are refused.
    let plain = invite("201", "203", 5071, "plain-from-201");
    let out = h.request_with_auth(tls(5071), &plain, "201", "pw201");
    assert_eq!(refusal(&out).0, 488);
    assert!(
        refusal(&out).1.contains("SRTP required"),
        "{:?}",
        refusal(&out)
    );
    let out = h.dial("201", "plain-to-201");
    assert!(requests(&out, "INVITE").is_empty());
    assert!(
        refusal(&out).1.contains("takes SRTP only"),
        "{:?}",
        refusal(&out)
    );
    // A secure offer to 201 rings it.
    let secure = invite_with_sdp("202", "201", 5072, "secure-to-201", SECURE_SDP);
    let out = h.request_with_auth(tls(5072), &secure, "202", "pw202");
    assert_eq!(requests(&out, "INVITE").len(), 1, "{:?}", statuses(&out));
    // 203 has SRTP off: a secure offer to it is refused, a plain one rings it.
    let secure = invite_with_sdp("202", "203", 5072, "secure-to-203", SECURE_SDP);
    let out = h.request_with_auth(tls(5072), &secure, "202", "pw202");
    assert!(
        refusal(&out).1.contains("does not take SRTP"),
        "{:?}",
        refusal(&out)
    );
    assert_eq!(requests(&h.dial("203", "plain-to-203"), "INVITE").len(), 1);
}

#[test]
fn a_picker_reached_in_clear_cannot_take_a_call_whose_offer_carries_keys() {
    let mut h = Harness::office();
    assert_eq!(statuses(&h.register("201", "pw201", tls(5071), 600)), [200]);
    let text = invite_with_sdp("204", "201", 5074, "c1", SECURE_SDP);
    let out = h.request_with_auth(tls(5074), &text, "204", "pw204");
    let b_invite = requests(&out, "INVITE")[0].1.clone();
    h.send(
        tls(5071),
        &answer(&b_invite, 180, "Ringing", "b1", 5071, ""),
    );
    h.sent();
    // The store's copy of the ringing call's offer (for pickups) holds no key.
    let database = rusqlite::Connection::open(h._dir.path().join("gw.db")).unwrap();
    let kept: Vec<u8> = database
        .query_row("SELECT caller_offer FROM call_contexts", [], |row| {
            row.get(0)
        })
        .unwrap();
    let kept = String::from_utf8(kept).unwrap();
    assert!(
        kept.contains("RTP/SAVP") && !kept.contains("a=crypto"),
        "{kept}"
    );
    // 202 over UDP dials *8: refused, and 201 keeps ringing (nothing cancelled).
    let pick = invite("202", "*8", 5072, "pick5072");
    let out = h.request_with_auth(udp(5072), &pick, "202", "pw202");
    let (code, reason) = refusal(&out);
    assert_eq!(code, 488, "{:?}", statuses(&out));
    assert!(reason.contains("not reached over TLS"), "{reason}");
    assert!(requests(&out, "CANCEL").is_empty());
    assert!(
        requests(&out, "INVITE").is_empty(),
        "the caller's keys went nowhere"
    );
    // Over TLS the same picker takes it.
    let pick = invite("202", "*8", 5072, "pick-tls").replacen(
        "Content-Type",
        "Supported: replaces\r\nContent-Type",
        1,
    );
    let out = h.request_with_auth(tls(5072), &pick, "202", "pw202");
    assert_eq!(requests(&out, "CANCEL").len(), 1, "{:?}", statuses(&out));
    // The INVITE with Replaces carries the call's offer with its key (from the call, not
    // the store).
    let replaces = requests(&out, "INVITE");
    assert_eq!(replaces.len(), 1, "{:?}", statuses(&out));
    assert_eq!(replaces[0].0, tls(5072));
    assert!(String::from_utf8_lossy(&replaces[0].1.body).contains("a=crypto:1"));
}
