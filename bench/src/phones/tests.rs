//! The phones on a lossy network, in virtual time: the server's side is played by the test
//! from the datagrams left in the outbox (nothing is sent).

use super::*;
use ezk_sip_types::Name;
use gateway::sip::message::SipMessage;

/// The gateway the test plays.
const SERVER: &str = "127.0.0.1:9";

fn phones() -> Phones {
    Phones::new(SERVER.parse().expect("address")).expect("socket")
}

impl Phones {
    /// A datagram from the server the test plays.
    fn handle_from_server(&mut self, now: Instant, datagram: &[u8]) {
        self.handle(now, datagram, SERVER.parse().expect("address"));
    }
}

/// The queued datagrams, parsed, emptying the outbox.
fn sent(phones: &mut Phones) -> Vec<SipMessage> {
    phones
        .outbox
        .drain(..)
        .map(|(_, d)| SipMessage::parse_datagram(&d).expect("a SIP message"))
        .collect()
}

fn first_line(message: &SipMessage) -> String {
    let text = String::from_utf8_lossy(&message.to_bytes()).to_string();
    text.lines().next().unwrap_or_default().to_string()
}

fn lines(messages: &[SipMessage]) -> Vec<String> {
    messages.iter().map(first_line).collect()
}

fn at(start: Instant, ms: u64) -> Instant {
    start + Duration::from_millis(ms)
}

/// A server request (an INVITE, CANCEL, BYE or ACK) as bytes.
fn request(method: &str, call_id: &str, branch: &str, cseq: u32, extra: &str) -> Vec<u8> {
    format!(
        "{method} sip:301@127.0.0.1:5 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch={branch}\r\n\
From: <sip:200@gw>;tag=gw1\r\nTo: <sip:301@gw>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
Contact: <sip:gw@127.0.0.1:9>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A call placed and answered with 200 (after a 180 with To tag `early`); returns its
/// Call-ID and the INVITE.
fn answered_call(phones: &mut Phones, start: Instant) -> (String, SipMessage) {
    let call_id = phones.dial("201", "pw201", "301", true);
    let invite = sent(phones).remove(0);
    phones.handle_from_server(
        start,
        &invite.response(180, "Ringing", Some("early")).to_bytes(),
    );
    phones.handle_from_server(start, &invite.response(200, "OK", Some("early")).to_bytes());
    (call_id, invite)
}

#[test]
fn an_invite_is_retransmitted_until_a_provisional_and_fails_at_timer_b() {
    let start = Instant::now();
    let mut phones = phones();
    let call_id = phones.dial("201", "pw201", "301", false);
    let invite = sent(&mut phones).remove(0);
    phones.on_timers(at(start, 600));
    phones.on_timers(at(start, 1700));
    assert_eq!(lines(&sent(&mut phones)), vec![first_line(&invite); 2]);
    phones.handle_from_server(
        at(start, 1800),
        &invite.response(100, "Trying", None).to_bytes(),
    );
    phones.on_timers(at(start, 4000));
    assert!(sent(&mut phones).is_empty(), "a provisional stops Timer A");

    let other = phones.dial("201", "pw201", "302", false);
    sent(&mut phones);
    phones.on_timers(start + Duration::from_secs(40));
    let timed_out: Vec<_> = phones
        .events
        .iter()
        .filter(|e| matches!(e, Event::TimedOut { .. }))
        .collect();
    assert_eq!(
        timed_out,
        [&Event::TimedOut {
            call_id: other,
            method: "INVITE".into()
        }],
        "{call_id} had its provisional"
    );
}

#[test]
fn a_retransmitted_2xx_is_acked_again_and_a_challenge_answered_once() {
    let start = Instant::now();
    let mut phones = phones();
    let call_id = phones.dial("201", "pw201", "301", false);
    let invite = sent(&mut phones).remove(0);
    let mut challenge = invite.response(407, "Proxy Authentication Required", Some("c"));
    challenge.set_header(
        Name::PROXY_AUTHENTICATE,
        "Digest realm=\"r\", nonce=\"n\", qop=\"auth\"",
    );
    phones.handle_from_server(start, &challenge.to_bytes());
    let answer = sent(&mut phones);
    assert_eq!(lines(&answer)[0], "ACK sip:301@127.0.0.1:9 SIP/2.0");
    assert!(answer[1].header(&Name::PROXY_AUTHORIZATION).is_some());
    // The 407 again (our ACK lost): ACKed again, not answered with a third INVITE.
    phones.handle_from_server(start, &challenge.to_bytes());
    assert_eq!(
        lines(&sent(&mut phones)),
        ["ACK sip:301@127.0.0.1:9 SIP/2.0"]
    );

    let ok = answer[1].response(200, "OK", Some("callee"));
    phones.handle_from_server(start, &ok.to_bytes());
    let ack = sent(&mut phones);
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].cseq().map(|c| c.cseq), Some(2));
    phones.handle_from_server(at(start, 500), &ok.to_bytes());
    assert_eq!(
        sent(&mut phones)[0].to_bytes(),
        ack[0].to_bytes(),
        "the same ACK"
    );
    let answered = phones
        .events
        .iter()
        .filter(|e| matches!(e, Event::Answered { call_id: c, .. } if *c == call_id))
        .count();
    assert_eq!(answered, 1, "{:?}", phones.events);
}

#[test]
fn a_bye_is_retransmitted_until_its_final_response() {
    let start = Instant::now();
    let mut phones = phones();
    let (call_id, _) = answered_call(&mut phones, start);
    sent(&mut phones);
    phones.hang_up(&call_id);
    let bye = sent(&mut phones).remove(0);
    phones.on_timers(at(start, 600));
    assert_eq!(lines(&sent(&mut phones)), [first_line(&bye)]);
    phones.handle_from_server(at(start, 700), &bye.response(200, "OK", None).to_bytes());
    phones.handle_from_server(at(start, 800), &bye.response(200, "OK", None).to_bytes());
    phones.on_timers(at(start, 5000));
    assert!(sent(&mut phones).is_empty());
    let hung_up: Vec<_> = phones
        .events
        .iter()
        .filter(|e| matches!(e, Event::HungUp { .. }))
        .collect();
    assert_eq!(hung_up, [&Event::HungUp { call_id, code: 200 }]);
}

#[test]
fn a_retransmitted_invite_gets_the_same_answer_and_a_cancel_a_487_until_the_ack() {
    let start = Instant::now();
    let mut phones = phones();
    let invite = request("INVITE", "in-1", "z9hG4bKa", 1, "");
    phones.handle_from_server(start, &invite);
    phones.handle_from_server(at(start, 500), &invite);
    let ringing = sent(&mut phones);
    assert_eq!(ringing.len(), 2);
    assert_eq!(ringing[0].to_bytes(), ringing[1].to_bytes());
    assert_eq!(
        phones.events.drain(..).collect::<Vec<_>>(),
        [Event::Incoming {
            call_id: "in-1".into(),
            user: "301".into()
        }]
    );

    let cancel = request("CANCEL", "in-1", "z9hG4bKa", 1, "");
    phones.handle_from_server(at(start, 600), &cancel);
    assert_eq!(
        lines(&sent(&mut phones)),
        ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]
    );
    // The CANCEL again: its 200 again; the 487 on Timer G until the ACK.
    phones.handle_from_server(at(start, 700), &cancel);
    phones.on_timers(at(start, 1100));
    assert_eq!(
        lines(&sent(&mut phones)),
        ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]
    );
    phones.handle_from_server(at(start, 1200), &request("ACK", "in-1", "z9hG4bKa", 1, ""));
    phones.on_timers(at(start, 10_000));
    assert!(sent(&mut phones).is_empty());
    assert_eq!(
        phones.events.drain(..).collect::<Vec<_>>(),
        [Event::Cancelled {
            call_id: "in-1".into(),
            user: "301".into()
        }]
    );
    // A CANCEL for an INVITE never seen.
    phones.handle_from_server(
        at(start, 1300),
        &request("CANCEL", "in-2", "z9hG4bKb", 1, ""),
    );
    assert_eq!(
        lines(&sent(&mut phones)),
        ["SIP/2.0 481 Call/Transaction Does Not Exist"]
    );
}

#[test]
fn a_replaces_invite_for_our_early_dialog_cancels_it_and_is_answered_until_the_ack() {
    let start = Instant::now();
    let mut phones = phones();
    let picker = phones.dial("202", "pw202", "*8", true);
    let invite = sent(&mut phones).remove(0);
    phones.handle_from_server(
        start,
        &invite
            .response(183, "Session Progress", Some("dummy"))
            .to_bytes(),
    );
    let our_tag = invite
        .from_header()
        .and_then(|f| f.tag().map(str::to_string))
        .expect("a From tag");
    let replaces = format!("Replaces: {picker};to-tag={our_tag};from-tag=dummy;early-only\r\n");
    phones.handle_from_server(start, &request("INVITE", "rep-1", "z9hG4bKr", 1, &replaces));
    let out = sent(&mut phones);
    assert_eq!(
        lines(&out),
        [
            "CANCEL sip:*8@127.0.0.1:9 SIP/2.0".to_string(),
            "SIP/2.0 200 OK".to_string()
        ]
    );
    assert_eq!(out[0].top_branch(), invite.top_branch());
    assert_eq!(out[1].header(&Name::CONTENT_TYPE), Some("application/sdp"));
    // The 2xx until the ACK (with a branch of its own), the CANCEL until its 200.
    phones.on_timers(at(start, 600));
    assert_eq!(
        lines(&sent(&mut phones)),
        ["CANCEL sip:*8@127.0.0.1:9 SIP/2.0", "SIP/2.0 200 OK"]
    );
    phones.handle_from_server(at(start, 700), &out[0].response(200, "OK", None).to_bytes());
    phones.handle_from_server(
        at(start, 700),
        &request("ACK", "rep-1", "z9hG4bKother", 1, ""),
    );
    phones.on_timers(at(start, 10_000));
    assert!(sent(&mut phones).is_empty());
    phones.handle_from_server(
        at(start, 800),
        &invite
            .response(487, "Request Terminated", Some("dummy"))
            .to_bytes(),
    );
    assert_eq!(
        lines(&sent(&mut phones)),
        ["ACK sip:*8@127.0.0.1:9 SIP/2.0"]
    );
    assert_eq!((phones.replaces_received, phones.replaces_accepted), (1, 1));

    // Tags that name no early dialog of ours (say its 183 was lost): 481.
    let stale = format!("Replaces: {picker};to-tag={our_tag};from-tag=unknown;early-only\r\n");
    phones.handle_from_server(
        at(start, 900),
        &request("INVITE", "rep-2", "z9hG4bKs", 1, &stale),
    );
    assert_eq!(
        lines(&sent(&mut phones)),
        ["SIP/2.0 481 Call/Transaction Does Not Exist"]
    );
}

#[test]
fn a_re_invite_in_a_dialog_is_accepted_at_once_with_our_media() {
    let start = Instant::now();
    let mut phones = phones();
    let reinvite = request("INVITE", "bridged", "z9hG4bKre", 2, "")
        .into_iter()
        .collect::<Vec<u8>>();
    let reinvite = String::from_utf8(reinvite)
        .unwrap()
        .replace("To: <sip:301@gw>", "To: <sip:301@gw>;tag=picker");
    phones.handle_from_server(start, reinvite.as_bytes());
    let answered = sent(&mut phones);
    assert_eq!(lines(&answered), ["SIP/2.0 200 OK"]);
    assert!(!answered[0].body.is_empty(), "the 200 carries our SDP");
    assert_eq!(
        answered[0]
            .to_header()
            .and_then(|to| to.tag().map(str::to_string)),
        Some("picker".to_string()),
        "in the existing dialog"
    );
}
