//! The analog user agent in virtual time: SIP in from a scripted engine, line notices in,
//! SIP and line commands out.

use super::agent::{AgentAction, AnalogAgent, PortRole, PortSetup};
use crate::sip::message::SipMessage;
use ezk_sip_types::{Method, Name};
use std::time::{Duration, Instant};
use telephony_hw::line::line_port::{LineAction, LineCommand};
use telephony_hw::line::phone_port::{PhoneAction, PhoneCommand};

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

fn new_agent(answer_supervision: bool) -> AnalogAgent {
    AnalogAgent::new(
        vec![
            PortSetup {
                channel: 1,
                role: PortRole::Phone {
                    extension: "101".into(),
                    display: Some("Analog 101".into()),
                },
                rtp: "127.0.0.1:4000".parse().unwrap(),
            },
            PortSetup {
                channel: 3,
                role: PortRole::Line {
                    target: Some("sales".into()),
                    answer_supervision,
                },
                rtp: "127.0.0.1:4002".parse().unwrap(),
            },
        ],
        "127.0.0.1".into(),
    )
}

/// An INVITE from the engine to `user` on `channel`, with `sdp`.
fn invite(user: &str, channel: u32, branch: &str, sdp: &str) -> SipMessage {
    let text = format!(
        "INVITE sip:{user}@analog.invalid;channel={channel} SIP/2.0\r\n\
Via: SIP/2.0/INTERNAL 127.0.0.1:5060;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
From: \"Reception 204\" <sip:204@127.0.0.1>;tag=f{branch}\r\nTo: <sip:{user}@127.0.0.1>\r\n\
Call-ID: {branch}@gw\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@127.0.0.1:5060>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    SipMessage::parse_datagram(text.as_bytes()).unwrap()
}

/// An in-dialog request from the engine following `invite`, whose answer had `to_tag`.
fn in_dialog(invite: &SipMessage, method: &str, cseq: u32, to_tag: &str) -> SipMessage {
    let text = format!(
        "{method} sip:analog@analog.invalid SIP/2.0\r\nVia: SIP/2.0/INTERNAL 127.0.0.1:5060;branch=z9hG4bK{method}{cseq}\r\n\
Max-Forwards: 70\r\nFrom: {}\r\nTo: {};tag={to_tag}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
Content-Length: 0\r\n\r\n",
        invite.header(&Name::FROM).unwrap(),
        invite.header(&Name::TO).unwrap(),
        invite.call_id().unwrap()
    );
    SipMessage::parse_datagram(text.as_bytes()).unwrap()
}

/// What the agent sent the engine, without the transaction layer's 100 Trying.
fn sent(agent: &mut AnalogAgent) -> Vec<SipMessage> {
    std::iter::from_fn(|| agent.poll_transmit())
        .map(|bytes| SipMessage::parse_datagram(&bytes).unwrap())
        .filter(|msg| msg.status() != Some(100))
        .collect()
}

fn actions(agent: &mut AnalogAgent) -> Vec<AgentAction> {
    std::iter::from_fn(|| agent.poll_action()).collect()
}

fn statuses(messages: &[SipMessage]) -> Vec<u16> {
    messages.iter().filter_map(SipMessage::status).collect()
}

fn to_tag(msg: &SipMessage) -> String {
    msg.to_header().unwrap().tag().unwrap().to_string()
}

#[test]
fn a_call_for_a_phone_rings_it_with_caller_id_and_connects_on_answer() {
    let (mut agent, now) = (new_agent(true), Instant::now());
    let call = invite("101", 1, "a1", OFFER);
    agent.handle_message(now, call.clone());
    let out = sent(&mut agent);
    assert_eq!(statuses(&out), [180]);
    let tag = to_tag(&out[0]);
    let [AgentAction::Phone(1, PhoneCommand::Incoming(id))] = &actions(&mut agent)[..] else {
        panic!("the phone must ring");
    };
    assert_eq!(
        (id.number.as_deref(), id.name.as_deref()),
        (Some("204"), Some("Reception 204"))
    );
    assert!(agent.is_busy(1));

    agent.phone_notice(now, 1, PhoneAction::Answered);
    let out = sent(&mut agent);
    assert_eq!(statuses(&out), [200]);
    assert_eq!(to_tag(&out[0]), tag, "one dialog, one tag");
    let answer = String::from_utf8(out[0].body.to_vec()).unwrap();
    assert!(answer.contains("m=audio 4000 RTP/AVP 0 101"), "{answer}");
    let [AgentAction::StartMedia {
        channel: 1,
        remote,
        local_crypto: None,
    }] = &actions(&mut agent)[..]
    else {
        panic!("media must start");
    };
    assert_eq!(remote.addr, "10.0.0.9:6000".parse().unwrap());

    agent.handle_message(now, in_dialog(&call, "BYE", 2, &tag));
    assert_eq!(statuses(&sent(&mut agent)), [200]);
    assert_eq!(
        actions(&mut agent),
        [
            AgentAction::StopMedia(1),
            AgentAction::Phone(1, PhoneCommand::FarEndHungUp)
        ]
    );
    assert!(!agent.is_busy(1));
}

#[test]
fn calls_the_port_cannot_take_are_refused_with_the_right_status() {
    let (mut agent, now) = (new_agent(true), Instant::now());
    agent.handle_message(now, invite("101", 7, "b1", OFFER));
    assert_eq!(statuses(&sent(&mut agent)), [404], "no such port");
    let video_only = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 6000 RTP/AVP 18\r\n";
    agent.handle_message(now, invite("101", 1, "b2", video_only));
    assert_eq!(statuses(&sent(&mut agent)), [488], "no common codec");
    agent.handle_message(now, invite("101", 1, "b3", OFFER));
    assert_eq!(statuses(&sent(&mut agent)), [180]);
    agent.handle_message(now, invite("101", 1, "b4", OFFER));
    assert_eq!(
        statuses(&sent(&mut agent)),
        [486],
        "the phone is already ringing"
    );
    agent.handle_message(
        now,
        in_dialog(&invite("101", 1, "zz", OFFER), "BYE", 2, "nope"),
    );
    assert_eq!(statuses(&sent(&mut agent)), [481], "unknown dialog");
}

#[test]
fn a_cancelled_call_stops_the_ringing() {
    let (mut agent, now) = (new_agent(true), Instant::now());
    let call = invite("101", 1, "c1", OFFER);
    agent.handle_message(now, call.clone());
    sent(&mut agent);
    actions(&mut agent);
    let cancel = String::from_utf8(call.to_bytes().to_vec())
        .unwrap()
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace("Content-Type: application/sdp\r\n", "");
    let cancel =
        cancel[..cancel.find("Content-Length").unwrap()].to_string() + "Content-Length: 0\r\n\r\n";
    agent.handle_message(now, SipMessage::parse_datagram(cancel.as_bytes()).unwrap());
    assert_eq!(statuses(&sent(&mut agent)), [200, 487]);
    assert_eq!(
        actions(&mut agent),
        [AgentAction::Phone(1, PhoneCommand::FarEndHungUp)]
    );
    assert!(!agent.is_busy(1));
}

#[test]
fn a_phone_dialling_places_a_call_and_hears_how_it_goes() {
    let (mut agent, now) = (new_agent(true), Instant::now());
    agent.phone_notice(now, 1, PhoneAction::Dialed("201".into()));
    let out = sent(&mut agent);
    let invite = &out[0];
    assert_eq!(invite.method(), Some(&Method::INVITE));
    assert_eq!(
        invite.request_line().unwrap().uri.to_string(),
        "sip:201@127.0.0.1"
    );
    assert!(invite
        .header(&Name::FROM)
        .unwrap()
        .starts_with("\"Analog 101\" <sip:101@127.0.0.1>"));
    assert!(invite.header(&Name::CONTACT).unwrap().contains("channel=1"));
    assert!(String::from_utf8_lossy(&invite.body).contains("RTP/AVP 0 8 101"));

    agent.handle_message(now, invite.response(180, "Ringing", Some("b")));
    assert_eq!(
        actions(&mut agent),
        [AgentAction::Phone(1, PhoneCommand::FarEndRinging)]
    );
    let mut ok = invite.response(200, "OK", Some("b"));
    ok.set_header(Name::CONTACT, "<sip:201@10.0.0.9:5070>");
    ok.set_header(Name::CONTENT_TYPE, "application/sdp");
    ok.body = OFFER.as_bytes().to_vec().into();
    agent.handle_message(now, ok);
    let out = sent(&mut agent);
    assert_eq!(out[0].method(), Some(&Method::ACK));
    assert_eq!(
        out[0].request_line().unwrap().uri.to_string(),
        "sip:201@10.0.0.9:5070"
    );
    let done = actions(&mut agent);
    assert!(
        matches!(done[0], AgentAction::StartMedia { channel: 1, .. }),
        "{done:?}"
    );
    assert_eq!(done[1], AgentAction::Phone(1, PhoneCommand::FarEndAnswered));

    agent.phone_notice(now, 1, PhoneAction::HungUp);
    let out = sent(&mut agent);
    assert_eq!(out[0].method(), Some(&Method::BYE));
    assert_eq!(out[0].to_header().unwrap().tag(), Some("b"));
    assert_eq!(actions(&mut agent), [AgentAction::StopMedia(1)]);
}

#[test]
fn failed_calls_give_busy_or_congestion_and_hanging_up_early_cancels() {
    for (code, heard) in [
        (486, PhoneCommand::FarEndBusy),
        (404, PhoneCommand::Failed),
        (503, PhoneCommand::Failed),
    ] {
        let (mut agent, now) = (new_agent(true), Instant::now());
        agent.phone_notice(now, 1, PhoneAction::Dialed("201".into()));
        let invite = sent(&mut agent).remove(0);
        agent.handle_message(now, invite.response(code, "No", Some("b")));
        assert_eq!(
            actions(&mut agent),
            [AgentAction::Phone(1, heard)],
            "{code}"
        );
        assert!(!agent.is_busy(1));
    }
    let (mut agent, now) = (new_agent(true), Instant::now());
    agent.phone_notice(now, 1, PhoneAction::Dialed("201".into()));
    let invite = sent(&mut agent).remove(0);
    agent.handle_message(now, invite.response(180, "Ringing", Some("b")));
    actions(&mut agent);
    agent.phone_notice(now, 1, PhoneAction::HungUp);
    assert_eq!(sent(&mut agent)[0].method(), Some(&Method::CANCEL));
    agent.handle_message(now, invite.response(487, "Request Terminated", Some("b")));
    assert!(
        actions(&mut agent).is_empty(),
        "the phone is on hook already"
    );
    assert!(!agent.is_busy(1));
}

#[test]
fn an_unanswered_invite_times_out_as_a_failure() {
    let (mut agent, now) = (new_agent(true), Instant::now());
    agent.phone_notice(now, 1, PhoneAction::Dialed("201".into()));
    sent(&mut agent);
    let later = now + Duration::from_secs(64);
    agent.handle_timeout(later);
    assert_eq!(
        actions(&mut agent),
        [AgentAction::Phone(1, PhoneCommand::Failed)]
    );
}

#[test]
fn a_ringing_line_calls_its_target_with_the_callers_identity() {
    use telephony_hw::dsp::callerid::CallerId;
    let (mut agent, now) = (new_agent(true), Instant::now());
    let id = CallerId {
        number: Some("5551234".into()),
        name: Some("Jane \"JD\" Doe".into()),
        ..CallerId::default()
    };
    agent.line_notice(now, 3, LineAction::Offer(Some(id)));
    let invite = sent(&mut agent).remove(0);
    assert_eq!(
        invite.request_line().unwrap().uri.to_string(),
        "sip:sales@127.0.0.1"
    );
    assert!(
        invite
            .header(&Name::FROM)
            .unwrap()
            .starts_with("\"Jane JD Doe\" <sip:5551234@"),
        "{:?}",
        invite.header(&Name::FROM)
    );
    let mut ok = invite.response(200, "OK", Some("b"));
    ok.set_header(Name::CONTENT_TYPE, "application/sdp");
    ok.body = OFFER.as_bytes().to_vec().into();
    agent.handle_message(now, ok);
    let done = actions(&mut agent);
    assert_eq!(
        done[1],
        AgentAction::Line(3, LineCommand::Answer),
        "{done:?}"
    );
    agent.line_notice(
        now,
        3,
        LineAction::Disconnected(telephony_hw::line::line_port::Disconnect::BatteryDrop),
    );
    let out = sent(&mut agent);
    assert_eq!(out.last().unwrap().method(), Some(&Method::BYE));

    // Without caller ID the call comes from "anonymous".
    let (mut agent, now) = (new_agent(true), Instant::now());
    agent.line_notice(now, 3, LineAction::Offer(None));
    let invite = sent(&mut agent).remove(0);
    assert!(invite
        .header(&Name::FROM)
        .unwrap()
        .starts_with("<sip:anonymous@"));
}

#[test]
fn dialling_out_on_a_line_answers_by_supervision_or_at_once() {
    // With answer supervision: 180 now, 200 when the line reverses polarity.
    let (mut agent, now) = (new_agent(true), Instant::now());
    agent.handle_message(now, invite("5551234", 3, "d1", OFFER));
    assert_eq!(statuses(&sent(&mut agent)), [180]);
    assert_eq!(
        actions(&mut agent),
        [AgentAction::Line(3, LineCommand::Dial("5551234".into()))]
    );
    agent.line_notice(now, 3, LineAction::RemoteAnswered);
    assert_eq!(statuses(&sent(&mut agent)), [200]);
    // Without: 200 at once; a line with no dial tone then ends the call with BYE.
    let (mut agent, now) = (new_agent(false), Instant::now());
    agent.handle_message(now, invite("5551234", 3, "d2", OFFER));
    assert_eq!(statuses(&sent(&mut agent)), [180, 200]);
    agent.line_notice(now, 3, LineAction::NoDialTone);
    assert_eq!(sent(&mut agent)[0].method(), Some(&Method::BYE));
    // With supervision and no dial tone, the INVITE itself fails.
    let (mut agent, now) = (new_agent(true), Instant::now());
    agent.handle_message(now, invite("5551234", 3, "d3", OFFER));
    sent(&mut agent);
    agent.line_notice(now, 3, LineAction::NoDialTone);
    assert_eq!(statuses(&sent(&mut agent)), [503]);
    assert!(!agent.is_busy(3));
}

/// A call to an extension whose SRTP policy is `required` is offered SRTP with a key of
/// the port's own; a secure answer starts secure media, a plain one is hung up.
#[test]
fn a_call_to_a_phone_requiring_srtp_is_offered_srtp_and_needs_a_secure_answer() {
    let secure_answer = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 6000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";
    for (answer, secure) in [(secure_answer, true), (OFFER, false)] {
        let now = Instant::now();
        let mut agent = new_agent(true).offering_srtp_to(["201".to_string()].into());
        agent.phone_notice(now, 1, PhoneAction::Dialed("201".into()));
        let invite = sent(&mut agent).remove(0);
        let offer = String::from_utf8_lossy(&invite.body).into_owned();
        assert!(offer.contains("m=audio 4000 RTP/SAVP 0 8 101"), "{offer}");
        assert!(
            offer.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{offer}"
        );
        let mut ok = invite.response(200, "OK", Some("b"));
        ok.set_header(Name::CONTACT, "<sip:201@10.0.0.9:5070>");
        ok.set_header(Name::CONTENT_TYPE, "application/sdp");
        ok.body = answer.as_bytes().to_vec().into();
        agent.handle_message(now, ok);
        let methods: Vec<_> = sent(&mut agent)
            .iter()
            .filter_map(|m| m.method().cloned())
            .collect();
        let done = actions(&mut agent);
        if secure {
            assert_eq!(methods, [Method::ACK]);
            let AgentAction::StartMedia {
                remote,
                local_crypto: Some(ours),
                ..
            } = &done[0]
            else {
                panic!("secure media must start: {done:?}");
            };
            assert!(
                offer.contains(ours.value().as_str()),
                "our key is the one offered"
            );
            assert_eq!(remote.crypto.as_ref().map(|c| c.suite), Some(ours.suite));
        } else {
            assert_eq!(
                methods,
                [Method::ACK, Method::BYE],
                "a plain answer is hung up"
            );
            assert!(
                !done
                    .iter()
                    .any(|a| matches!(a, AgentAction::StartMedia { .. })),
                "{done:?}"
            );
        }
    }
    // Other callees are offered plain RTP.
    let mut agent = new_agent(true).offering_srtp_to(["201".to_string()].into());
    agent.phone_notice(Instant::now(), 1, PhoneAction::Dialed("202".into()));
    let invite = sent(&mut agent).remove(0);
    assert!(String::from_utf8_lossy(&invite.body).contains("RTP/AVP 0 8 101"));
}
