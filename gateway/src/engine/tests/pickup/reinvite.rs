//! Re-INVITEs the gateway sends itself so that a side learns new media: a picker held in
//! the dummy early dialog (183 with an inactive answer) whose Replaces INVITE failed is
//! bridged with a 200 repeating that answer (RFC 3261 §13.2.1, RFC 6337 §3.1), then offered
//! the caller's media in a re-INVITE; likewise a caller whose early answer named other media.

use super::*;
use crate::engine::media::{audio_address, MediaCommand};
use ezk_sip_types::Method;

/// The dummy dialog's 183, and the picker's and the caller's 200 after the Replaces
/// INVITE of a group pickup by 202 failed with `code`.
struct Fallback {
    progress: SipMessage,
    to_picker: SipMessage,
    to_caller: SipMessage,
}

impl Fallback {
    fn dummy_tag(&self) -> String {
        self.progress
            .to_header()
            .unwrap()
            .tag()
            .unwrap()
            .to_string()
    }
}

/// 204 calls 201; 202 dials `*8` with Replaces, whose INVITE gets `code`.
fn failed_replaces(h: &mut Harness, code: u16, reason: &str) -> Fallback {
    ringing_call(h);
    let out = pick(h, "202", "*8", 5072, true);
    let progress = response_to(&out, udp(5072), 183).unwrap().clone();
    let replaces = requests(&out, "INVITE")[0].1.clone();
    h.send(udp(5072), &answer(&replaces, code, reason, "pk", 5072, ""));
    let out = h.sent();
    assert!(
        !out.iter()
            .any(|(p, m)| *p == udp(5072) && m.method() == Some(&Method::INVITE)),
        "no re-INVITE before the picker's ACK: {out:?}"
    );
    Fallback {
        progress,
        to_picker: response_to(&out, udp(5072), 200)
            .expect("the picker's own INVITE is answered")
            .clone(),
        to_caller: response_to(&out, udp(5074), 200)
            .expect("the caller is connected")
            .clone(),
    }
}

/// The picker's ACK of the 200 that answered its `*8` INVITE (CSeq 2 after the challenge).
fn picker_ack(dummy_tag: &str) -> String {
    format!(
        "ACK sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKpickack\r\n\
From: \"Caller\" <sip:202@127.0.0.1>;tag=a5072\r\nTo: <sip:*8@127.0.0.1>;tag={dummy_tag}\r\n\
Call-ID: pick5072\r\nCSeq: 2 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The caller's ACK of its 200 (its INVITE was CSeq 2 after the challenge).
fn caller_ack(a_tag: &str) -> String {
    format!(
        "ACK sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5074;branch=z9hG4bKcallack\r\n\
From: \"Caller\" <sip:204@127.0.0.1>;tag=a5074\r\nTo: <sip:201@127.0.0.1>;tag={a_tag}\r\n\
Call-ID: c1\r\nCSeq: 2 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The requests `method` in `out` sent to `peer`, each once (retransmissions left out).
fn sent_to(out: &[(Peer, SipMessage)], peer: Peer, method: &str) -> Vec<SipMessage> {
    let mut seen = Vec::new();
    requests(out, method)
        .into_iter()
        .filter(|(p, m)| {
            *p == peer && !seen.contains(&m.top_branch()) && {
                seen.push(m.top_branch());
                true
            }
        })
        .map(|(_, m)| m.clone())
        .collect()
}

/// The one INVITE transaction in `out` started toward `peer`.
fn reinvite_to(out: &[(Peer, SipMessage)], peer: Peer) -> SipMessage {
    let invites = sent_to(out, peer, "INVITE");
    assert_eq!(invites.len(), 1, "one re-INVITE to {peer:?}: {out:?}");
    invites[0].clone()
}

/// An o= line with its version one higher.
fn next_version(origin: &str) -> String {
    let mut fields: Vec<String> = origin.split(' ').map(str::to_string).collect();
    fields[2] = (fields[2].parse::<u64>().unwrap() + 1).to_string();
    fields.join(" ")
}

fn sdp_text(msg: &SipMessage) -> String {
    String::from_utf8_lossy(&msg.body).to_string()
}

fn origin_line(msg: &SipMessage) -> String {
    sdp_text(msg)
        .lines()
        .find(|l| l.starts_with("o="))
        .unwrap_or_default()
        .to_string()
}

/// The SDP the picker answers our re-INVITE with, receiving on `port`.
fn picker_answer_sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    )
}

/// The ACKs in `out` sent to `peer`.
fn acks_to(out: &[(Peer, SipMessage)], peer: Peer) -> Vec<SipMessage> {
    requests(out, "ACK")
        .into_iter()
        .filter(|(p, _)| *p == peer)
        .map(|(_, m)| m.clone())
        .collect()
}

#[test]
fn a_failed_replaces_repeats_the_early_answer_then_re_invites_the_picker_to_active_media() {
    let mut h = Harness::office();
    let fallback = failed_replaces(&mut h, 488, "Not Acceptable Here");
    assert_eq!(
        sdp_text(&fallback.to_picker),
        sdp_text(&fallback.progress),
        "RFC 3261 §13.2.1: the picker took the 183's answer; the 200 repeats it"
    );
    let dummy_tag = fallback.dummy_tag();
    h.send(udp(5072), &picker_ack(&dummy_tag));
    let out = h.sent();
    let reinvite = reinvite_to(&out, udp(5072));
    assert_eq!(
        reinvite.call_id(),
        Some("pick5072"),
        "in the picker's dialog"
    );
    assert_eq!(
        reinvite.from_header().unwrap().tag(),
        Some(dummy_tag.as_str())
    );
    assert_eq!(reinvite.to_header().unwrap().tag(), Some("a5072"));
    assert_eq!(
        reinvite.request_line().unwrap().uri.to_string(),
        "sip:202@127.0.0.1:5072",
        "to the picker's Contact"
    );
    let cseq = reinvite.cseq().unwrap();
    assert_eq!((cseq.cseq, cseq.method), (1, Method::INVITE));
    let offer = sdp_text(&reinvite);
    assert!(!offer.contains("inactive"), "media become active: {offer}");
    assert!(offer.contains("m=audio 4000 RTP/AVP 0"), "{offer}");
    assert!(
        offer.contains("c=IN IP4 127.0.0.1"),
        "the caller's media: {offer}"
    );
    let early_origin = origin_line(&fallback.progress);
    assert_eq!(
        origin_line(&reinvite),
        next_version(&early_origin),
        "RFC 3264 §8: the dialog's o= line, its version one higher"
    );

    let ok = answer(
        &reinvite,
        200,
        "OK",
        "a5072",
        5072,
        &picker_answer_sdp(4000),
    );
    h.send(udp(5072), &ok);
    let out = h.sent();
    let acks = acks_to(&out, udp(5072));
    assert_eq!(acks.len(), 1, "the 2xx is ACKed: {out:?}");
    let ack_cseq = acks[0].cseq().unwrap();
    assert_eq!((ack_cseq.cseq, ack_cseq.method), (1, Method::ACK));
    assert_eq!(acks[0].call_id(), Some("pick5072"));
    assert!(acks[0].body.is_empty());
    assert!(
        requests(&out, "INVITE").is_empty(),
        "the caller's media did not change: nothing to tell it"
    );
    h.send(udp(5072), &ok);
    assert_eq!(
        acks_to(&h.sent(), udp(5072)).len(),
        1,
        "a retransmitted 2xx is ACKed again"
    );
    // The call is up: the caller hangs up, the picker is billed.
    let out = talk_then_hang_up(&mut h, fallback.to_caller, Duration::from_secs(3));
    assert_eq!(requests(&out, "BYE")[0].0, udp(5072));
    let cdr = &h.store.recent_cdrs(1).unwrap()[0];
    assert_eq!(cdr.answered_by.as_deref(), Some("202"));
}

#[test]
fn an_anchored_fallback_re_invites_the_picker_to_the_relay() {
    let mut h = office_anchoring("always");
    let fallback = failed_replaces(&mut h, 420, "Bad Extension");
    let commands: Vec<MediaCommand> =
        std::iter::from_fn(|| h.engine.poll_media_command()).collect();
    let MediaCommand::Install { b_port, .. } = commands[0] else {
        panic!("anchored: {commands:?}");
    };
    h.send(udp(5072), &picker_ack(&fallback.dummy_tag()));
    let reinvite = reinvite_to(&h.sent(), udp(5072));
    assert_eq!(
        audio_address(&reinvite.body).map(|a| a.port()),
        Some(b_port),
        "the picker sends to the relay: {}",
        sdp_text(&reinvite)
    );
    h.send(
        udp(5072),
        &answer(
            &reinvite,
            200,
            "OK",
            "a5072",
            5072,
            &picker_answer_sdp(4010),
        ),
    );
    let out = h.sent();
    assert_eq!(acks_to(&out, udp(5072)).len(), 1);
    assert!(
        requests(&out, "INVITE").is_empty(),
        "the caller sends to the relay already"
    );
    let commands: Vec<MediaCommand> =
        std::iter::from_fn(|| h.engine.poll_media_command()).collect();
    assert!(
        commands.contains(&MediaCommand::SetPeer {
            relay: 1,
            leg: 1,
            peer: "127.0.0.1:4010".parse().unwrap()
        }),
        "the relay learns where the picker receives: {commands:?}"
    );
}

#[test]
fn a_re_invite_in_glare_is_retried_after_a_random_delay() {
    let mut h = Harness::office();
    let fallback = failed_replaces(&mut h, 481, "Call/Transaction Does Not Exist");
    h.send(udp(5072), &picker_ack(&fallback.dummy_tag()));
    let first = reinvite_to(&h.sent(), udp(5072));
    // The picker's own re-INVITE crosses ours: it gets 491 (RFC 3261 §14.2)...
    let crossing = format!(
        "INVITE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKcross\r\n\
From: \"Caller\" <sip:202@127.0.0.1>;tag=a5072\r\nTo: <sip:*8@127.0.0.1>;tag={}\r\n\
Call-ID: pick5072\r\nCSeq: 3 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:202@127.0.0.1:5072>\r\n\
Content-Length: 0\r\n\r\n",
        fallback.dummy_tag()
    );
    h.send(udp(5072), &crossing);
    let out = h.sent();
    assert!(response_to(&out, udp(5072), 491).is_some(), "{out:?}");
    assert!(
        requests(&out, "INVITE").is_empty(),
        "not relayed to the caller"
    );
    // ...and ours gets 491 too: retried after 0 to 2 s (we do not own the Call-ID, §14.1).
    h.send(
        udp(5072),
        &answer(&first, 491, "Request Pending", "a5072", 5072, ""),
    );
    let out = h.sent();
    assert_eq!(acks_to(&out, udp(5072)).len(), 1, "the 491 is ACKed");
    assert!(requests(&out, "INVITE").is_empty(), "not at once");
    h.advance(Duration::from_millis(2010));
    let out = h.sent();
    let second = reinvite_to(&out, udp(5072));
    assert_eq!(second.cseq().unwrap().cseq, 2, "the dialog's next CSeq");
    assert_ne!(second.top_branch(), first.top_branch(), "a new transaction");
    assert_eq!(
        audio_address(&second.body),
        audio_address(&first.body),
        "the same media"
    );
    h.send(
        udp(5072),
        &answer(&second, 200, "OK", "a5072", 5072, &picker_answer_sdp(4000)),
    );
    let acks = acks_to(&h.sent(), udp(5072));
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].cseq().unwrap().cseq, 2);
}

#[test]
fn the_glare_delay_replays_from_the_seed() {
    let delay = || {
        let mut h = Harness::office();
        let fallback = failed_replaces(&mut h, 488, "Not Acceptable Here");
        h.send(udp(5072), &picker_ack(&fallback.dummy_tag()));
        let first = reinvite_to(&h.sent(), udp(5072));
        h.send(
            udp(5072),
            &answer(&first, 491, "Request Pending", "a5072", 5072, ""),
        );
        h.sent();
        let start = h.now.mono;
        let mut waited = Duration::ZERO;
        while h
            .sent()
            .iter()
            .all(|(_, m)| m.method() != Some(&Method::INVITE))
        {
            assert!(waited <= Duration::from_secs(2), "retried within 2 s");
            h.advance(Duration::from_millis(10));
            waited = h.now.mono - start;
        }
        waited
    };
    assert_eq!(delay(), delay(), "the engine's secret seeds the draw");
}

#[test]
fn a_refused_re_invite_keeps_the_call_up_and_a_timed_out_one_ends_it() {
    let mut h = Harness::office();
    let fallback = failed_replaces(&mut h, 488, "Not Acceptable Here");
    let a_tag = fallback
        .to_caller
        .to_header()
        .unwrap()
        .tag()
        .unwrap()
        .to_string();
    h.send(udp(5074), &caller_ack(&a_tag));
    h.send(udp(5072), &picker_ack(&fallback.dummy_tag()));
    let reinvite = reinvite_to(&h.sent(), udp(5072));
    h.send(
        udp(5072),
        &answer(&reinvite, 488, "Not Acceptable Here", "a5072", 5072, ""),
    );
    let out = h.sent();
    assert!(
        requests(&out, "BYE").is_empty(),
        "the call stays up: {out:?}"
    );
    h.advance(Duration::from_secs(40));
    assert!(requests(&h.sent(), "INVITE").is_empty(), "not retried");
    let out = talk_then_hang_up(&mut h, fallback.to_caller, Duration::from_secs(1));
    assert_eq!(requests(&out, "BYE")[0].0, udp(5072), "the call was up");

    // No answer at all (RFC 3261 §14.1, §12.2.1.2): the dialog, and so the call, ends.
    let mut h = Harness::office();
    let fallback = failed_replaces(&mut h, 488, "Not Acceptable Here");
    let a_tag = fallback
        .to_caller
        .to_header()
        .unwrap()
        .tag()
        .unwrap()
        .to_string();
    h.send(udp(5074), &caller_ack(&a_tag));
    h.send(udp(5072), &picker_ack(&fallback.dummy_tag()));
    let reinvite = reinvite_to(&h.sent(), udp(5072));
    h.send(
        udp(5072),
        &answer(&reinvite, 100, "Trying", "a5072", 5072, ""),
    );
    h.advance(Duration::from_secs(31));
    assert!(requests(&h.sent(), "BYE").is_empty(), "still waiting");
    h.advance(Duration::from_secs(2));
    let out = h.sent();
    for side in [udp(5072), udp(5074)] {
        assert_eq!(
            sent_to(&out, side, "BYE").len(),
            1,
            "{side:?} hung up: {out:?}"
        );
    }
    let cdr = &h.store.recent_cdrs(1).unwrap()[0];
    assert!(cdr.hangup_cause.contains("re-INVITE"), "{cdr:?}");
}

#[test]
fn the_caller_is_re_invited_when_the_pickers_media_moved() {
    let mut h = Harness::office();
    let fallback = failed_replaces(&mut h, 488, "Not Acceptable Here");
    h.send(udp(5072), &picker_ack(&fallback.dummy_tag()));
    let reinvite = reinvite_to(&h.sent(), udp(5072));
    // The picker answers from another port than it offered in its INVITE.
    h.send(
        udp(5072),
        &answer(
            &reinvite,
            200,
            "OK",
            "a5072",
            5072,
            &picker_answer_sdp(4444),
        ),
    );
    let out = h.sent();
    assert!(
        requests(&out, "INVITE").is_empty(),
        "not before the caller ACKed its 200"
    );
    let a_tag = fallback
        .to_caller
        .to_header()
        .unwrap()
        .tag()
        .unwrap()
        .to_string();
    h.send(udp(5074), &caller_ack(&a_tag));
    let out = h.sent();
    let to_caller = reinvite_to(&out, udp(5074));
    assert_eq!(to_caller.call_id(), Some("c1"));
    assert_eq!(to_caller.from_header().unwrap().tag(), Some(a_tag.as_str()));
    assert_eq!(to_caller.to_header().unwrap().tag(), Some("a5074"));
    assert_eq!(to_caller.cseq().unwrap().cseq, 1);
    assert_eq!(
        audio_address(&to_caller.body),
        Some("127.0.0.1:4444".parse().unwrap()),
        "{}",
        sdp_text(&to_caller)
    );
    assert_eq!(
        origin_line(&to_caller),
        next_version(&origin_line(&fallback.to_caller))
    );
    let ok = answer(
        &to_caller,
        200,
        "OK",
        "a5074",
        5074,
        &picker_answer_sdp(4000),
    );
    h.send(udp(5074), &ok);
    let out = h.sent();
    assert_eq!(acks_to(&out, udp(5074)).len(), 1);
    assert!(requests(&out, "INVITE").is_empty(), "no ping-pong");
}

#[test]
fn a_caller_whose_early_answer_named_the_callee_is_re_invited_to_the_picker() {
    let mut h = Harness::office();
    let b_invite = ringing_call(&mut h);
    let early = picker_answer_sdp(5555).replace("o=- 7 2", "o=callee 9 9");
    h.send(
        udp(5071),
        &answer(&b_invite, 183, "Session Progress", "b1", 5071, &early),
    );
    let out = h.sent();
    let progress = response_to(&out, udp(5074), 183)
        .expect("early media relayed")
        .clone();
    let text = invite_with_sdp("203", "**201", 5073, "pick5073", &picker_answer_sdp(4600));
    let out = h.request_with_auth(udp(5073), &text, "203", "pw203");
    let connected = response_to(&out, udp(5074), 200).expect("bridged").clone();
    assert_eq!(
        sdp_text(&connected),
        sdp_text(&progress),
        "the caller took the 183's answer; the 200 repeats it"
    );
    let a_tag = connected.to_header().unwrap().tag().unwrap().to_string();
    h.send(udp(5074), &caller_ack(&a_tag));
    let to_caller = reinvite_to(&h.sent(), udp(5074));
    assert_eq!(
        audio_address(&to_caller.body),
        Some("127.0.0.1:4600".parse().unwrap()),
        "the picker's media: {}",
        sdp_text(&to_caller)
    );
    assert!(origin_line(&to_caller).starts_with("o=callee 9 10 "));
}
