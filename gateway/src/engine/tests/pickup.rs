//! Pickup in virtual time: 204 (port 5074) calls 201 (registered at 5071), pickers 202
//! (5072) and 203 (5073) take the call. The store is a real SQLite database.

use super::*;
use crate::engine::calls::reason_of;
use crate::engine::observe::Detail;
use crate::store::CallStore;

mod reinvite;

/// A ringing call 204 -> 201; returns the INVITE the gateway sent to 201.
fn ringing_call(h: &mut Harness) -> SipMessage {
    ringing_call_from(h, "204")
}

/// A ringing call `caller` (port 5074) -> 201.
fn ringing_call_from(h: &mut Harness, caller: &str) -> SipMessage {
    let text = invite(caller, "201", 5074, "c1");
    ringing_call_with(h, |h| {
        h.request_with_auth(udp(5074), &text, caller, &format!("pw{caller}"))
    })
}

/// A ringing call to 201, whose INVITE `call` sends; returns the INVITE the gateway sent
/// to 201.
fn ringing_call_with(
    h: &mut Harness,
    call: impl FnOnce(&mut Harness) -> Vec<(Peer, SipMessage)>,
) -> SipMessage {
    assert_eq!(statuses(&h.register("201", "pw201", udp(5071), 600)), [200]);
    let out = call(h);
    let b_invite = requests(&out, "INVITE")[0].1.clone();
    h.send(
        udp(5071),
        &answer(&b_invite, 180, "Ringing", "b1", 5071, ""),
    );
    assert_eq!(statuses(&h.sent()), [180]);
    b_invite
}

/// 204 calls 201, 202 dials `*8` advertising Replaces: returns the INVITE with Replaces.
fn picked_with_replaces() -> (Harness, SipMessage) {
    let mut h = Harness::office();
    ringing_call(&mut h);
    let out = pick(&mut h, "202", "*8", 5072, true);
    let replaces_invite = requests(&out, "INVITE")[0].1.clone();
    (h, replaces_invite)
}

/// `picker` dials `code` from `port`; `replaces` adds `Supported: replaces`.
fn pick(
    h: &mut Harness,
    picker: &str,
    code: &str,
    port: u16,
    replaces: bool,
) -> Vec<(Peer, SipMessage)> {
    let mut text = invite(picker, code, port, &format!("pick{port}"));
    if replaces {
        text = text.replacen(
            "Content-Type",
            "Supported: replaces, timer\r\nContent-Type",
            1,
        );
    }
    h.request_with_auth(udp(port), &text, picker, &format!("pw{picker}"))
}

pub(super) fn response_to(
    msgs: &[(Peer, SipMessage)],
    peer: Peer,
    code: u16,
) -> Option<&SipMessage> {
    msgs.iter()
        .find(|(p, m)| *p == peer && m.status() == Some(code))
        .map(|(_, m)| m)
}

/// The caller 204 ACKs the 200 OK `connected`, talks for `talk`, and hangs up with BYE;
/// returns what the gateway sent for the BYE.
fn talk_then_hang_up(
    h: &mut Harness,
    connected: SipMessage,
    talk: Duration,
) -> Vec<(Peer, SipMessage)> {
    let a_tag = connected.to_header().unwrap().tag().unwrap().to_string();
    let dialog = format!(
        "Via: SIP/2.0/UDP 127.0.0.1:5074;branch=z9hG4bK{{b}}\r\nFrom: <sip:204@127.0.0.1>;tag=a5074\r\n\
To: <sip:201@127.0.0.1>;tag={a_tag}\r\nCall-ID: c1\r\nMax-Forwards: 70\r\n"
    );
    h.send(
        udp(5074),
        &format!(
            "ACK sip:gw@127.0.0.1 SIP/2.0\r\n{}CSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n",
            dialog.replace("{b}", "ack")
        ),
    );
    h.advance(talk);
    h.send(
        udp(5074),
        &format!(
            "BYE sip:gw@127.0.0.1 SIP/2.0\r\n{}CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n",
            dialog.replace("{b}", "bye")
        ),
    );
    h.sent()
}

/// The picker's CANCEL of its own `*8` INVITE (the retried one, CSeq 2).
fn cancel_pick(port: u16, code: &str) -> String {
    format!(
        "CANCEL sip:{code}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKretrypick{port};rport\r\n\
Max-Forwards: 70\r\nFrom: \"Caller\" <sip:20{}@127.0.0.1>;tag=a{port}\r\nTo: <sip:{code}@127.0.0.1>\r\n\
Call-ID: pick{port}\r\nCSeq: 2 CANCEL\r\nContent-Length: 0\r\n\r\n",
        port % 10
    )
}

#[test]
fn group_pickup_follows_the_seed_flow_and_bills_the_picker() {
    let mut h = Harness::office();
    let b_invite = ringing_call(&mut h);
    let out = pick(&mut h, "202", "*8", 5072, true);

    // 183 to the picker (the dummy early dialog), before the INVITE with Replaces.
    let progress_at = out
        .iter()
        .position(|(p, m)| *p == udp(5072) && m.status() == Some(183));
    let replaces_at = out
        .iter()
        .position(|(p, m)| *p == udp(5072) && m.method() == Some(&ezk_sip_types::Method::INVITE));
    let (Some(progress_at), Some(replaces_at)) = (progress_at, replaces_at) else {
        panic!(
            "expected 183 and an INVITE to the picker: {:?}",
            statuses(&out)
        );
    };
    assert!(
        progress_at < replaces_at,
        "183 comes before the Replaces INVITE"
    );
    let progress = &out[progress_at].1;
    let dummy_tag = progress.to_header().unwrap().tag().unwrap().to_string();
    assert!(String::from_utf8_lossy(&progress.body).contains("a=inactive"));

    // The ringing leg is cancelled with the Reason that suppresses a missed-call entry.
    let cancel = requests(&out, "CANCEL");
    assert_eq!(cancel.len(), 1);
    assert_eq!(cancel[0].0, udp(5071));
    assert_eq!(cancel[0].1.top_branch(), b_invite.top_branch());
    assert_eq!(
        cancel[0].1.header(&Name::from("Reason")),
        Some("SIP;cause=200;text=\"Call completed elsewhere\"")
    );

    // The INVITE with Replaces names the dummy dialog per RFC 3891 §3 and shows the caller.
    let replaces_invite = out[replaces_at].1.clone();
    assert_eq!(
        replaces_invite.header(&Name::REPLACES),
        Some(format!("pick5072;to-tag=a5072;from-tag={dummy_tag};early-only").as_str())
    );
    let from = replaces_invite.from_header().unwrap();
    assert_eq!(from.display.as_deref(), Some("Reception 204"));
    assert_eq!(from.user().as_deref(), Some("204"));
    assert!(replaces_invite
        .header(&Name::from("P-Asserted-Identity"))
        .unwrap()
        .contains("sip:204@"));
    assert!(replaces_invite
        .header(&Name::CALL_INFO)
        .unwrap()
        .contains("answer-after=0"));
    assert!(
        String::from_utf8_lossy(&replaces_invite.body).contains("m=audio 4000"),
        "the caller's offer"
    );

    // The phone rings, CANCELs the dummy first, then answers (what linphone does).
    h.send(
        udp(5072),
        &answer(&replaces_invite, 180, "Ringing", "pk", 5072, ""),
    );
    h.sent();
    h.send(udp(5072), &cancel_pick(5072, "*8"));
    let out = h.sent();
    let mut codes = statuses(&out);
    codes.sort();
    assert_eq!(
        codes,
        [200, 487],
        "the dummy CANCEL is answered, the pickup goes on"
    );
    let terminated = response_to(&out, udp(5072), 487).unwrap();
    assert_eq!(
        terminated.to_header().unwrap().tag(),
        Some(dummy_tag.as_str())
    );
    h.send(
        udp(5071),
        &answer(&b_invite, 487, "Request Terminated", "b1", 5071, ""),
    );
    h.sent();
    h.send(
        udp(5072),
        &answer(
            &replaces_invite,
            200,
            "OK",
            "pk",
            5072,
            "v=0\r\ns=picker\r\n",
        ),
    );
    let out = h.sent();
    assert_eq!(requests(&out, "ACK").len(), 1, "the picker's 200 is ACKed");
    let connected = response_to(&out, udp(5074), 200).expect("the caller gets 200");
    assert_eq!(
        &connected.body[..],
        b"v=0\r\ns=picker\r\n",
        "with the picker's answer"
    );

    // The caller hangs up; the CDR bills the picker.
    let out = talk_then_hang_up(&mut h, connected.clone(), Duration::from_secs(5));
    let bye = requests(&out, "BYE");
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].0, udp(5072), "the picker is hung up");
    let cdr = &h.store.recent_cdrs(1).unwrap()[0];
    assert_eq!(cdr.caller, "204");
    assert_eq!(cdr.called, "201");
    assert_eq!(cdr.answered_by.as_deref(), Some("202"));
    assert_eq!(cdr.billed.as_deref(), Some("202"));
    assert_eq!(cdr.pickup_method, "group");
    assert_eq!(cdr.disposition, "answered");
    assert!(cdr.pickup_ms.is_some() && cdr.duration_ms >= 5000);
    assert!(h.store.failed_pickups(&cdr.call_key).unwrap().is_empty());
}

#[test]
fn a_picker_without_replaces_is_bridged() {
    let mut h = Harness::office();
    ringing_call(&mut h);
    let ringing = h.engine.report(h.now, Detail::Lists);
    assert_eq!(ringing.counts.calls, [1, 0, 0]);
    assert_eq!(
        (
            ringing.calls[0].called.as_str(),
            ringing.calls[0].state.as_str()
        ),
        ("201", "ringing")
    );
    assert!(
        h.engine.report(h.now, Detail::Counts).calls.is_empty(),
        "the metrics' report holds no lists"
    );
    let out = pick(&mut h, "203", "**201", 5073, false);
    assert_eq!(requests(&out, "CANCEL").len(), 1);
    assert!(
        requests(&out, "INVITE").is_empty(),
        "no Replaces INVITE to a phone without it"
    );
    let to_picker = response_to(&out, udp(5073), 200).expect("the picker's own INVITE is answered");
    assert!(
        String::from_utf8_lossy(&to_picker.body).contains("m=audio 4000"),
        "with the caller's offer"
    );
    let to_caller = response_to(&out, udp(5074), 200).expect("the caller is connected");
    assert!(String::from_utf8_lossy(&to_caller.body).contains("m=audio 4000"));
    let metrics = h.engine.report(h.now, Detail::Counts).metrics;
    assert_eq!(
        (metrics.pickups_connected, metrics.pickups_failed),
        ([0, 1, 0, 0], [0; 4]),
        "counted as bridged"
    );
    assert_eq!(metrics.recent_pickups[0].path, "bridged");
    let answered = h.engine.report(h.now, Detail::Lists);
    assert_eq!(answered.counts.calls, [0, 0, 1]);
    assert_eq!(answered.calls[0].answered_by.as_deref(), Some("203"));
    assert_eq!(answered.calls[0].pickup.as_deref(), Some("directed"));
}

#[test]
fn a_group_pickup_reveals_no_call_it_may_not_take_but_a_directed_one_is_refused() {
    let mut h = Harness::office();
    let out = pick(&mut h, "202", "*8", 5072, true);
    let nothing = response_to(&out, udp(5072), 480)
        .expect("nothing rings: 480")
        .clone();
    ringing_call_from(&mut h, "203");
    // 204 is in no pickup group: to its `*8` the call ringing in sales does not exist.
    let out = pick(&mut h, "204", "*8", 5075, true);
    let ineligible = response_to(&out, udp(5075), 480)
        .unwrap_or_else(|| panic!("like nothing ringing: {:?}", statuses(&out)));
    assert_eq!(reason_of(ineligible), reason_of(&nothing));
    // A directed pickup names the call: refusing it reveals nothing.
    let out = pick(&mut h, "204", "**201", 5076, true);
    assert!(
        response_to(&out, udp(5076), 403).is_some(),
        "204 may not take 201's call: {:?}",
        statuses(&out)
    );
    assert!(requests(&out, "CANCEL").is_empty(), "nothing was cancelled");
    let out = pick(&mut h, "203", "**202", 5073, true);
    assert!(
        response_to(&out, udp(5073), 480).is_some(),
        "202 is not ringing"
    );
}

#[test]
fn two_pickers_at_once_one_wins() {
    let mut h = Harness::office();
    ringing_call(&mut h);
    let first = pick(&mut h, "202", "*8", 5072, true);
    assert!(response_to(&first, udp(5072), 183).is_some());
    let second = pick(&mut h, "203", "*8", 5073, true);
    assert!(
        response_to(&second, udp(5073), 480).is_some(),
        "{:?}",
        statuses(&second)
    );
}

#[test]
fn a_rejected_replaces_invite_rings_the_callee_again() {
    let (mut h, replaces_invite) = picked_with_replaces();
    h.send(
        udp(5072),
        &answer(&replaces_invite, 603, "Decline", "pk", 5072, ""),
    );
    let out = h.sent();
    let again = requests(&out, "INVITE");
    assert_eq!(again.len(), 1, "201 rings again: {:?}", statuses(&out));
    assert_eq!(again[0].0, udp(5071));
    assert!(
        response_to(&out, udp(5072), 480).is_some(),
        "the picker's INVITE fails"
    );
    assert!(
        response_to(&out, udp(5074), 480).is_none(),
        "the caller is not dropped"
    );
}

#[test]
fn a_declined_pickup_then_the_callee_answering_is_billed_as_the_callee_answering() {
    let (mut h, replaces_invite) = picked_with_replaces();
    let claimed_ms = h.now.unix_ms;
    h.advance(Duration::from_secs(2));
    h.sent(); // the Replaces INVITE's retransmissions
    h.send(
        udp(5072),
        &answer(&replaces_invite, 603, "Decline", "pk", 5072, ""),
    );
    let out = h.sent();
    let again = requests(&out, "INVITE")[0].1.clone();
    h.send(udp(5071), &answer(&again, 200, "OK", "b2", 5071, "v=0\r\n"));
    let out = h.sent();
    let connected = response_to(&out, udp(5074), 200)
        .unwrap_or_else(|| panic!("the callee connects the caller: {out:?}"))
        .clone();
    let out = talk_then_hang_up(&mut h, connected, Duration::from_secs(4));
    assert_eq!(
        requests(&out, "BYE")[0].0,
        udp(5071),
        "the callee is hung up"
    );
    let cdr = &h.store.recent_cdrs(1).unwrap()[0];
    assert_eq!(cdr.answered_by.as_deref(), Some("201"), "{cdr:?}");
    assert_eq!(cdr.pickup_method, "none");
    assert_eq!(
        cdr.billed.as_deref(),
        Some("204"),
        "billed as any answered call"
    );
    assert_eq!(cdr.pickup_ms, None);
    assert_eq!(
        (cdr.disposition.as_str(), cdr.duration_ms),
        ("answered", 4000)
    );
    assert_eq!(
        h.store.failed_pickups(&cdr.call_key).unwrap(),
        [crate::store::FailedPickup {
            picker: "202".into(),
            method: "group".into(),
            claimed_ms,
            failed_ms: claimed_ms + 2000,
            reason: "603 Decline".into(),
        }],
        "the auditor sees who tried, when, and why it failed"
    );
}

#[test]
fn an_unsupported_replaces_falls_back_to_bridging() {
    let (mut h, replaces_invite) = picked_with_replaces();
    h.send(
        udp(5072),
        &answer(&replaces_invite, 420, "Bad Extension", "pk", 5072, ""),
    );
    let out = h.sent();
    assert!(
        response_to(&out, udp(5072), 200).is_some(),
        "the picker's own INVITE is answered"
    );
    assert!(
        response_to(&out, udp(5074), 200).is_some(),
        "the caller is connected"
    );
}

#[test]
fn a_silent_picker_falls_back_after_a_few_seconds_but_a_ringing_one_is_waited_for() {
    let mut h = Harness::office();
    ringing_call(&mut h);
    pick(&mut h, "202", "*8", 5072, true);
    h.advance(Duration::from_millis(3100));
    let out = h.sent();
    assert!(
        response_to(&out, udp(5072), 200).is_some(),
        "bridged after silence: {:?}",
        statuses(&out)
    );
    let metrics = h.engine.report(h.now, Detail::Counts).metrics;
    assert_eq!(
        metrics.pickups_connected,
        [0, 0, 0, 1],
        "counted as a fallback"
    );

    let (mut h, replaces_invite) = picked_with_replaces();
    h.send(
        udp(5072),
        &answer(&replaces_invite, 180, "Ringing", "pk", 5072, ""),
    );
    h.advance(Duration::from_secs(10));
    let out = h.sent();
    assert!(
        response_to(&out, udp(5072), 200).is_none(),
        "a ringing picker is not bridged"
    );
}

#[test]
fn the_caller_hanging_up_ends_every_picker_dialog() {
    let (mut h, replaces_invite) = picked_with_replaces();
    h.send(
        udp(5072),
        &answer(&replaces_invite, 180, "Ringing", "pk", 5072, ""),
    );
    h.sent();
    let cancel = "CANCEL sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5074;branch=z9hG4bKretryc1;rport\r\n\
Max-Forwards: 70\r\nFrom: \"Caller\" <sip:204@127.0.0.1>;tag=a5074\r\nTo: <sip:201@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 2 CANCEL\r\nContent-Length: 0\r\n\r\n";
    h.send(udp(5074), cancel);
    let out = h.sent();
    assert!(response_to(&out, udp(5074), 487).is_some());
    let cancels = requests(&out, "CANCEL");
    assert!(cancels
        .iter()
        .any(|(p, m)| *p == udp(5072) && m.top_branch() == replaces_invite.top_branch()));
    assert!(
        out.iter()
            .any(|(p, m)| *p == udp(5072) && m.status().is_some_and(|c| c >= 400)),
        "the dummy dialog ends"
    );
    assert_eq!(h.store.recent_cdrs(1).unwrap()[0].disposition, "cancelled");
    let metrics = h.engine.report(h.now, Detail::Counts).metrics;
    assert_eq!(
        metrics.pickups_failed,
        [1, 0, 0, 0],
        "a Replaces pickup that failed"
    );
    assert_eq!((metrics.calls_started, metrics.calls_ended[3]), (1, 1));
    assert_eq!(metrics.setup.count(), 1, "the caller heard ringing once");
}

#[test]
fn a_callee_answering_during_the_pickup_is_acked_and_byed() {
    let mut h = Harness::office();
    let b_invite = ringing_call(&mut h);
    pick(&mut h, "202", "*8", 5072, true);
    h.send(
        udp(5071),
        &answer(&b_invite, 200, "OK", "b1", 5071, "v=0\r\n"),
    );
    let out = h.sent();
    let methods: Vec<String> = out
        .iter()
        .filter(|(p, _)| *p == udp(5071))
        .filter_map(|(_, m)| m.method().map(|m| m.to_string()))
        .collect();
    assert_eq!(methods, ["ACK", "BYE"], "the late 2xx is ended");
    assert!(
        response_to(&out, udp(5074), 200).is_none(),
        "the picker keeps the call"
    );
}

#[test]
fn a_blf_invite_with_replaces_takes_the_ringing_leg_directly() {
    let mut h = Harness::office();
    let b_invite = ringing_call(&mut h);
    // The BLF key knows the ringing dialog (201's side of it) from the dialog event package.
    let leg_call_id = b_invite.call_id().unwrap().to_string();
    let gateway_tag = b_invite.from_header().unwrap().tag().unwrap().to_string();
    let text = invite("203", "201", 5073, "blf").replacen(
        "Content-Type",
        &format!("Replaces: {leg_call_id};to-tag=b1;from-tag={gateway_tag}\r\nContent-Type"),
        1,
    );
    let out = h.request_with_auth(udp(5073), &text, "203", "pw203");
    assert!(
        response_to(&out, udp(5073), 183).is_none(),
        "no dummy dialog for a BLF pickup"
    );
    assert!(
        response_to(&out, udp(5073), 200).is_some(),
        "the BLF INVITE itself is answered"
    );
    assert!(
        response_to(&out, udp(5074), 200).is_some(),
        "the caller is connected"
    );
    let cancel = requests(&out, "CANCEL");
    assert_eq!(cancel[0].0, udp(5071), "the ringing phone stops");

    let unknown = invite("203", "201", 5073, "blf2").replacen(
        "Content-Type",
        "Replaces: nosuchcall;to-tag=x;from-tag=y\r\nContent-Type",
        1,
    );
    let out = h.request_with_auth(udp(5073), &unknown, "203", "pw203");
    assert!(
        response_to(&out, udp(5073), 481).is_some(),
        "{:?}",
        statuses(&out)
    );
}

#[test]
fn a_bye_on_the_dummy_dialog_is_the_replacement_not_a_give_up() {
    let mut h = Harness::office();
    ringing_call(&mut h);
    let out = pick(&mut h, "202", "*8", 5072, true);
    let dummy_tag = response_to(&out, udp(5072), 183)
        .unwrap()
        .to_header()
        .unwrap()
        .tag()
        .unwrap()
        .to_string();
    let replaces_invite = requests(&out, "INVITE")[0].1.clone();
    h.send(
        udp(5072),
        &answer(&replaces_invite, 180, "Ringing", "pk", 5072, ""),
    );
    let bye = format!(
        "BYE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKdummybye\r\n\
From: \"Caller\" <sip:202@127.0.0.1>;tag=a5072\r\nTo: <sip:*8@127.0.0.1>;tag={dummy_tag}\r\n\
Call-ID: pick5072\r\nCSeq: 3 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    h.send(udp(5072), &bye);
    let out = h.sent();
    assert!(
        response_to(&out, udp(5072), 200).is_some(),
        "the BYE is answered"
    );
    assert!(
        requests(&out, "INVITE").is_empty(),
        "201 does not ring again"
    );
    h.send(
        udp(5072),
        &answer(&replaces_invite, 200, "OK", "pk", 5072, "v=0\r\n"),
    );
    assert!(
        response_to(&h.sent(), udp(5074), 200).is_some(),
        "the caller is connected"
    );
}

#[test]
fn the_per_extension_mode_forces_bridging() {
    let office = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml"),
    )
    .unwrap();
    let config = office.replace(
        "display_name = \"Sales 202\"",
        "display_name = \"Sales 202\"\npickup_mode = \"bridge\"",
    );
    let mut h = Harness::with_config(&config);
    ringing_call(&mut h);
    let out = pick(&mut h, "202", "*8", 5072, true);
    assert!(
        requests(&out, "INVITE").is_empty(),
        "no Replaces INVITE in bridge mode"
    );
    assert!(response_to(&out, udp(5072), 200).is_some());
}

/// The office with `[media] anchor = mode`.
fn office_anchoring(mode: &str) -> Harness {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml");
    let text = std::fs::read_to_string(path).unwrap();
    Harness::with_config(&text.replace("anchor = \"analog\"", &format!("anchor = \"{mode}\"")))
}

/// An offer of PCMU and PCMA with telephone-event at 8000 Hz, as a PBX or an ATA sends it.
const PCM_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";

/// linphone's multi-codec offer, from the fixture (its comment header stripped, CRLF lines).
fn linphone_offer() -> String {
    include_str!("../../../tests/fixtures/sdp/linphone-5.1-offer.sdp")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect()
}

/// 204 (PCM_OFFER) calls 201; 203 dials `**201` without Replaces, offering linphone's SDP.
/// Returns the picker's 200 and the caller's 200.
fn bridged_linphone_pickup(h: &mut Harness) -> (SipMessage, SipMessage) {
    let text = invite_with_sdp("204", "201", 5074, "c1", PCM_OFFER);
    ringing_call_with(h, |h| h.request_with_auth(udp(5074), &text, "204", "pw204"));
    bridge_linphone_picker(h, udp(5074))
}

/// 203 dials `**201` without Replaces with linphone's offer and is bridged to the ringing
/// caller at `caller`: the picker's 200 and the caller's 200.
fn bridge_linphone_picker(h: &mut Harness, caller: Peer) -> (SipMessage, SipMessage) {
    let text = invite_with_sdp("203", "**201", 5073, "pick5073", &linphone_offer());
    let out = h.request_with_auth(udp(5073), &text, "203", "pw203");
    let to_picker = response_to(&out, udp(5073), 200).expect("the picker is answered");
    let to_caller = response_to(&out, caller, 200).expect("the caller is connected");
    (to_picker.clone(), to_caller.clone())
}

fn m_lines(msg: &SipMessage) -> Vec<String> {
    String::from_utf8_lossy(&msg.body)
        .lines()
        .filter(|l| l.starts_with("m="))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_bridged_caller_gets_an_rfc_3264_answer_not_linphones_offer() {
    let mut h = Harness::office();
    let (to_picker, to_caller) = bridged_linphone_pickup(&mut h);
    let caller_sdp = String::from_utf8_lossy(&to_caller.body).to_string();
    assert_eq!(
        m_lines(&to_caller),
        ["m=audio 7078 RTP/AVP 0 8 100"],
        "one m-line per offered one, the common codecs under the picker's numbers: {caller_sdp}"
    );
    assert!(caller_sdp.contains("c=IN IP4 192.168.1.23"), "{caller_sdp}");
    for gone in ["opus", "speex", "G729", "/48000", "/16000"] {
        assert!(!caller_sdp.contains(gone), "{gone}: {caller_sdp}");
    }
    let picker_sdp = String::from_utf8_lossy(&to_picker.body).to_string();
    assert_eq!(
        m_lines(&to_picker),
        ["m=audio 4000 RTP/AVP 0 8 101", "m=video 0 RTP/AVP 96 97"],
        "linphone's offer answered: telephone-event at 8000 Hz, video rejected: {picker_sdp}"
    );
    assert!(picker_sdp.contains("a=rtpmap:101 telephone-event/8000"));
    assert!(
        !picker_sdp.contains("telephone-event/48000"),
        "{picker_sdp}"
    );
}

/// Both sides of a bridged pickup of an anchored call send to the relay, and the relay
/// learns where each receives.
fn assert_bridged_through_the_relay(
    h: &mut Harness,
    b_invite: &SipMessage,
    to_picker: &SipMessage,
    to_caller: &SipMessage,
    caller_media: &str,
) {
    use crate::engine::media::{audio_address, MediaCommand};
    let commands: Vec<MediaCommand> =
        std::iter::from_fn(|| h.engine.poll_media_command()).collect();
    let MediaCommand::Install {
        relay: 1,
        a_port,
        b_port,
    } = commands[0]
    else {
        panic!("the call is anchored: {commands:?}");
    };
    let relay_ip = audio_address(&b_invite.body)
        .expect("the callee was offered the relay")
        .ip();
    assert_eq!(
        audio_address(&to_picker.body),
        Some(std::net::SocketAddr::new(relay_ip, b_port)),
        "the picker sends to the relay's B port: {}",
        String::from_utf8_lossy(&to_picker.body)
    );
    assert_eq!(
        audio_address(&to_caller.body),
        Some(std::net::SocketAddr::new(relay_ip, a_port)),
        "the caller sends to the relay's A port: {}",
        String::from_utf8_lossy(&to_caller.body)
    );
    assert_eq!(
        commands[1..],
        [
            MediaCommand::SetPeer {
                relay: 1,
                leg: 0,
                peer: caller_media.parse().unwrap()
            },
            MediaCommand::SetPeer {
                relay: 1,
                leg: 1,
                peer: "192.168.1.23:7078".parse().unwrap()
            },
        ]
    );
    assert_eq!(
        m_lines(to_caller),
        ["m=audio ".to_string() + &a_port.to_string() + " RTP/AVP 0 8 100"]
    );
}

#[test]
fn a_bridged_pickup_with_anchor_always_goes_through_the_relay() {
    let mut h = office_anchoring("always");
    let text = invite_with_sdp("204", "201", 5074, "c1", PCM_OFFER);
    let b_invite = ringing_call_with(&mut h, |h| {
        h.request_with_auth(udp(5074), &text, "204", "pw204")
    });
    let (to_picker, to_caller) = bridge_linphone_picker(&mut h, udp(5074));
    assert_bridged_through_the_relay(&mut h, &b_invite, &to_picker, &to_caller, "127.0.0.1:4000");
}

#[test]
fn a_bridged_pickup_of_an_analog_caller_goes_through_the_relay() {
    use crate::transport::ANALOG_PEER;
    let mut h = Harness::office();
    let sdp = PCM_OFFER.replace("4000", "20000");
    let text = invite_with_sdp("101", "201", 5074, "c1", &sdp);
    let b_invite = ringing_call_with(&mut h, |h| {
        let msg = SipMessage::parse_datagram(text.as_bytes()).unwrap();
        h.engine.handle_message(h.now, ANALOG_PEER, msg);
        h.run_store();
        h.sent()
    });
    let (to_picker, to_caller) = bridge_linphone_picker(&mut h, ANALOG_PEER);
    assert_bridged_through_the_relay(&mut h, &b_invite, &to_picker, &to_caller, "127.0.0.1:20000");
}

#[test]
fn a_pickup_while_the_database_is_unreachable_gets_503_with_retry_after() {
    let mut h = Harness::office();
    ringing_call(&mut h);
    // The store is now a PostgreSQL database that refuses the gateway.
    let cluster = crate::store::test_cluster::TestCluster::shared();
    let url = cluster.create_database();
    h.store = Store::open_postgres(&crate::store::PgPool::new(&url).unwrap()).unwrap();
    cluster.refuse_connections(&url);
    let out = pick(&mut h, "202", "*8", 5072, true);
    let refused = response_to(&out, udp(5072), 503).expect("503, not 480");
    let retry = h.engine.config.overload.retry_after_secs.to_string();
    assert_eq!(refused.header(&Name::RETRY_AFTER), Some(retry.as_str()));
    assert!(
        requests(&out, "CANCEL").is_empty(),
        "the call keeps ringing: {:?}",
        statuses(&out)
    );
}
