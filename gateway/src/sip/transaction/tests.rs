//! The transaction layer in virtual time: exact schedules, absorption, ACK, CANCEL, RFC 6026.

use super::*;
use crate::transport::Protocol;
use std::time::Duration;

fn peer(protocol: Protocol) -> Peer {
    Peer {
        protocol,
        addr: "127.0.0.1:5070".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
    }
}

fn request(method: &str, branch: &str) -> SipMessage {
    let text = format!(
        "{method} sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:202@127.0.0.1>;tag=ft\r\nTo: <sip:201@127.0.0.1>\r\n\
Call-ID: cid-{branch}\r\nCSeq: 7 {method}\r\nContact: <sip:202@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
    );
    SipMessage::parse_datagram(text.as_bytes()).unwrap()
}

fn response_to(req: &SipMessage, code: u16, to_tag: &str) -> SipMessage {
    let mut response = req.response(code, "X", Some(to_tag));
    response.set_header(ezk_sip_types::Name::CONTACT, "<sip:201@127.0.0.1:5071>");
    response
}

/// Things that happened, with when (offset from the start).
type Timeline<T> = Vec<(Duration, T)>;

/// Advances time to `end`, running every timer on the way; returns (offset, message) of
/// each transmission and every event.
struct Clock {
    start: Instant,
    now: Instant,
}

impl Clock {
    fn new() -> Clock {
        let start = Instant::now();
        Clock { start, now: start }
    }

    fn run_until(
        &mut self,
        layer: &mut TxLayer,
        end: Duration,
    ) -> (Timeline<SipMessage>, Timeline<TxEvent>) {
        let end = self.start + end;
        let (mut sent, mut events) = (Vec::new(), Vec::new());
        loop {
            while let Some(out) = layer.poll_transmit() {
                sent.push((
                    self.now - self.start,
                    SipMessage::parse_datagram(&out.bytes).unwrap(),
                ));
            }
            while let Some(event) = layer.poll_event() {
                events.push((self.now - self.start, event));
            }
            match layer.poll_timeout() {
                Some(at) if at <= end => {
                    self.now = at.max(self.now);
                    layer.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = end.max(self.now);
        (sent, events)
    }
}

fn secs(offsets: &[(Duration, SipMessage)]) -> Vec<f64> {
    offsets.iter().map(|(at, _)| at.as_secs_f64()).collect()
}

#[test]
fn invite_client_sends_seven_times_then_times_out_at_32s() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let tx = layer.send_request(
        clock.now,
        request("INVITE", "z9hG4bKa"),
        peer(Protocol::Udp),
    );
    let (sent, events) = clock.run_until(&mut layer, Duration::from_secs(40));
    assert_eq!(secs(&sent), [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
    assert_eq!(events.len(), 1);
    assert!(
        matches!(events[0], (at, TxEvent::Timeout { tx: t }) if t == tx && at == Duration::from_secs(32))
    );
    assert!(layer.is_empty() && layer.poll_timeout().is_none());
}

#[test]
fn non_invite_client_sends_eleven_times_then_times_out_at_32s() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    layer.send_request(
        clock.now,
        request("OPTIONS", "z9hG4bKb"),
        peer(Protocol::Udp),
    );
    let (sent, events) = clock.run_until(&mut layer, Duration::from_secs(40));
    assert_eq!(
        secs(&sent),
        [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert!(matches!(events[..], [(at, TxEvent::Timeout { .. })] if at == Duration::from_secs(32)));
    assert!(layer.is_empty());
}

#[test]
fn non_invite_client_retransmits_every_t2_after_a_provisional() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let req = request("BYE", "z9hG4bKt2");
    layer.send_request(clock.now, req.clone(), peer(Protocol::Udp));
    clock.run_until(&mut layer, Duration::from_millis(600));
    layer.handle_message(clock.now, response_to(&req, 100, "x"), peer(Protocol::Udp));
    let (sent, events) = clock.run_until(&mut layer, Duration::from_secs(14));
    assert!(matches!(events[..], [(_, TxEvent::Response { .. })]));
    assert_eq!(secs(&sent), [4.6, 8.6, 12.6]);
}

#[test]
fn reliable_transport_never_retransmits() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    layer.send_request(
        clock.now,
        request("INVITE", "z9hG4bKc"),
        peer(Protocol::Tcp),
    );
    layer.send_request(
        clock.now,
        request("OPTIONS", "z9hG4bKd"),
        peer(Protocol::Tcp),
    );
    let (sent, events) = clock.run_until(&mut layer, Duration::from_secs(40));
    assert_eq!(secs(&sent), [0.0, 0.0]);
    assert_eq!(events.len(), 2, "both still time out");
}

#[test]
fn non_2xx_final_is_acked_and_retransmissions_reacked() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKe");
    let tx = layer.send_request(clock.now, invite.clone(), peer(Protocol::Udp));
    clock.run_until(&mut layer, Duration::from_millis(100));
    let busy = response_to(&invite, 486, "callee");
    layer.handle_message(clock.now, busy.clone(), peer(Protocol::Udp));
    let (sent, events) = clock.run_until(&mut layer, Duration::from_millis(200));
    assert!(
        matches!(&events[..], [(_, TxEvent::Response { tx: t, msg })] if *t == tx && msg.status() == Some(486))
    );
    let ack = &sent[0].1;
    assert_eq!(ack.method(), Some(&Method::ACK));
    assert_eq!(ack.top_branch().as_deref(), Some("z9hG4bKe"));
    assert_eq!(ack.to_header().unwrap().tag(), Some("callee"));
    assert_eq!(ack.cseq().unwrap().cseq, 7);
    assert_eq!(ack.cseq().unwrap().method, Method::ACK);
    layer.handle_message(clock.now, busy, peer(Protocol::Udp));
    let (sent, events) = clock.run_until(&mut layer, Duration::from_secs(40));
    assert_eq!(sent.len(), 1, "the retransmitted 486 is ACKed again");
    assert!(events.is_empty(), "but not passed up again");
    assert!(layer.is_empty(), "Timer D ended the transaction");
}

#[test]
fn server_absorbs_retransmitted_requests() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKf");
    layer.handle_message(clock.now, invite.clone(), peer(Protocol::Udp));
    let (sent, events) = clock.run_until(&mut layer, Duration::ZERO);
    assert_eq!(sent[0].1.status(), Some(100), "100 Trying at once");
    assert_eq!(events.len(), 1);
    layer.handle_message(clock.now, invite, peer(Protocol::Udp));
    let (sent, events) = clock.run_until(&mut layer, Duration::ZERO);
    assert!(events.is_empty());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.status(), Some(100), "the last response is resent");

    let options = request("OPTIONS", "z9hG4bKg");
    layer.handle_message(clock.now, options.clone(), peer(Protocol::Udp));
    let (_, events) = clock.run_until(&mut layer, Duration::ZERO);
    let TxEvent::Request { tx, .. } = events[0].1 else {
        panic!("a request")
    };
    layer.send_response(clock.now, tx, options.response(200, "OK", Some("t")));
    layer.handle_message(clock.now, options, peer(Protocol::Udp));
    let (sent, events) = clock.run_until(&mut layer, Duration::ZERO);
    assert!(events.is_empty());
    assert_eq!(
        sent.iter().filter(|(_, m)| m.status() == Some(200)).count(),
        2
    );
}

#[test]
fn server_non_2xx_retransmits_with_timer_g_until_ack_then_timer_i() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKh");
    layer.handle_message(clock.now, invite.clone(), peer(Protocol::Udp));
    let (_, events) = clock.run_until(&mut layer, Duration::ZERO);
    let TxEvent::Request { tx, .. } = events[0].1 else {
        panic!("a request")
    };
    layer.send_response(clock.now, tx, invite.response(486, "Busy Here", Some("gw")));
    let (sent, _) = clock.run_until(&mut layer, Duration::from_secs(20));
    assert_eq!(secs(&sent), [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]);
    let ack = "ACK sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKh\r\n\
From: <sip:202@127.0.0.1>;tag=ft\r\nTo: <sip:201@127.0.0.1>;tag=gw\r\nCall-ID: cid-z9hG4bKh\r\nCSeq: 7 ACK\r\nContent-Length: 0\r\n\r\n";
    layer.handle_message(
        clock.now,
        SipMessage::parse_datagram(ack.as_bytes()).unwrap(),
        peer(Protocol::Udp),
    );
    let (sent, events) = clock.run_until(&mut layer, Duration::from_secs(30));
    assert!(sent.is_empty() && events.is_empty(), "the ACK is absorbed");
    assert!(layer.is_empty(), "Timer I ended the transaction");
}

#[test]
fn server_gives_up_with_timer_h_without_ack() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKi");
    layer.handle_message(clock.now, invite.clone(), peer(Protocol::Udp));
    let (_, events) = clock.run_until(&mut layer, Duration::ZERO);
    let TxEvent::Request { tx, .. } = events[0].1 else {
        panic!("a request")
    };
    layer.send_response(clock.now, tx, invite.response(404, "Not Found", Some("gw")));
    let (sent, _) = clock.run_until(&mut layer, Duration::from_secs(40));
    assert_eq!(*secs(&sent).last().unwrap(), 31.5);
    assert!(layer.is_empty());
}

#[test]
fn server_2xx_is_retransmitted_until_ack_and_ack_is_passed_up() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKj");
    layer.handle_message(clock.now, invite.clone(), peer(Protocol::Udp));
    let (_, events) = clock.run_until(&mut layer, Duration::ZERO);
    let TxEvent::Request { tx, .. } = events[0].1 else {
        panic!("a request")
    };
    layer.send_response(clock.now, tx, invite.response(200, "OK", Some("gw")));
    let (sent, _) = clock.run_until(&mut layer, Duration::from_secs(2));
    assert_eq!(secs(&sent), [0.0, 0.5, 1.5]);
    // The ACK for a 2xx has its own branch.
    let ack = "ACK sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother\r\n\
From: <sip:202@127.0.0.1>;tag=ft\r\nTo: <sip:201@127.0.0.1>;tag=gw\r\nCall-ID: cid-z9hG4bKj\r\nCSeq: 7 ACK\r\nContent-Length: 0\r\n\r\n";
    let ack = SipMessage::parse_datagram(ack.as_bytes()).unwrap();
    layer.handle_message(clock.now, ack.clone(), peer(Protocol::Udp));
    layer.handle_message(clock.now, ack, peer(Protocol::Udp));
    let (sent, events) = clock.run_until(&mut layer, Duration::from_secs(40));
    assert!(sent.is_empty(), "no more 2xx after the ACK");
    assert_eq!(events.len(), 1, "the ACK is passed up once");
    assert!(matches!(events[0].1, TxEvent::Ack { invite: Some(t), .. } if t == tx));
    assert!(layer.is_empty(), "Timer L ended the transaction");
}

/// Issue 14: under loss SIPp re-ACKs a retransmitted 407 of the first INVITE (CSeq 6 here)
/// with the *second* INVITE's branch. That ACK is not for the 2xx of the second INVITE
/// (CSeq 7): the 2xx is matched by dialog and CSeq number (RFC 3261 §13.2.2.4, §17.2.1), so
/// it keeps being retransmitted until the real ACK.
#[test]
fn an_ack_with_the_2xx_branch_but_another_cseq_does_not_stop_the_2xx() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKsecond");
    layer.handle_message(clock.now, invite.clone(), peer(Protocol::Udp));
    let (_, events) = clock.run_until(&mut layer, Duration::ZERO);
    let TxEvent::Request { tx, .. } = events[0].1 else {
        panic!("a request")
    };
    layer.send_response(clock.now, tx, invite.response(200, "OK", Some("gw")));
    let (sent, _) = clock.run_until(&mut layer, Duration::from_secs(1));
    assert_eq!(secs(&sent), [0.0, 0.5]);
    let ack = |cseq: u32, to_tag: &str| {
        let text = format!(
            "ACK sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsecond\r\n\
From: <sip:202@127.0.0.1>;tag=ft\r\nTo: <sip:201@127.0.0.1>{to_tag}\r\nCall-ID: cid-z9hG4bKsecond\r\n\
CSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n"
        );
        SipMessage::parse_datagram(text.as_bytes()).unwrap()
    };
    // The 407's re-ACK: CSeq 6, the 407's To tag, the second INVITE's branch.
    layer.handle_message(clock.now, ack(6, ";tag=challenge"), peer(Protocol::Udp));
    let (sent, events) = clock.run_until(&mut layer, Duration::from_secs(4));
    assert_eq!(secs(&sent), [1.5, 3.5], "the 2xx is still retransmitted");
    assert!(
        events.iter().all(|(_, e)| !matches!(
            e,
            TxEvent::Ack {
                invite: Some(_),
                ..
            }
        )),
        "not taken as the 2xx's ACK"
    );
    // The real ACK (CSeq 7, our To tag) stops it, even with the same branch.
    layer.handle_message(clock.now, ack(7, ";tag=gw"), peer(Protocol::Udp));
    let (sent, events) = clock.run_until(&mut layer, Duration::from_secs(40));
    assert!(sent.is_empty(), "no more 2xx after the real ACK");
    assert!(matches!(events[..], [(_, TxEvent::Ack { invite: Some(t), .. })] if t == tx));
}

/// The caller's ACK was lost and it hung up: its BYE (a later CSeq of the same dialog) shows
/// the 2xx arrived, so the 2xx is not retransmitted into the ended call until Timer L, and
/// no ACK timeout is reported. A BYE of another dialog changes nothing.
#[test]
fn a_bye_of_the_dialog_stops_the_2xx_retransmissions() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKhangup");
    layer.handle_message(clock.now, invite.clone(), peer(Protocol::Udp));
    let (_, events) = clock.run_until(&mut layer, Duration::ZERO);
    let TxEvent::Request { tx, .. } = events[0].1 else {
        panic!("a request")
    };
    layer.send_response(clock.now, tx, invite.response(200, "OK", Some("gw")));
    let bye = |to_tag: &str| {
        let text = format!(
            "BYE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbye{to_tag}\r\n\
Max-Forwards: 70\r\nFrom: <sip:202@127.0.0.1>;tag=ft\r\nTo: <sip:201@127.0.0.1>;tag={to_tag}\r\n\
Call-ID: cid-z9hG4bKhangup\r\nCSeq: 8 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        SipMessage::parse_datagram(text.as_bytes()).unwrap()
    };
    let (sent, _) = clock.run_until(&mut layer, Duration::from_secs(1));
    assert_eq!(secs(&sent), [0.0, 0.5]);
    layer.handle_message(clock.now, bye("other"), peer(Protocol::Udp));
    let (sent, _) = clock.run_until(&mut layer, Duration::from_secs(2));
    assert_eq!(secs(&sent), [1.5], "another dialog's BYE stops nothing");
    layer.handle_message(clock.now, bye("gw"), peer(Protocol::Udp));
    let (sent, events) = clock.run_until(&mut layer, Duration::from_secs(40));
    assert!(sent.is_empty(), "no 2xx after the BYE: {:?}", secs(&sent));
    assert!(
        events
            .iter()
            .all(|(_, e)| !matches!(e, TxEvent::AckTimeout { .. })),
        "no ACK timeout: {events:?}"
    );
}

#[test]
fn unacknowledged_2xx_reports_ack_timeout() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKk");
    layer.handle_message(clock.now, invite.clone(), peer(Protocol::Udp));
    let (_, events) = clock.run_until(&mut layer, Duration::ZERO);
    let TxEvent::Request { tx, .. } = events[0].1 else {
        panic!("a request")
    };
    layer.send_response(clock.now, tx, invite.response(200, "OK", Some("gw")));
    let (sent, events) = clock.run_until(&mut layer, Duration::from_secs(40));
    assert_eq!(
        secs(&sent),
        [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert!(
        matches!(events[..], [(at, TxEvent::AckTimeout { invite })] if invite == tx && at == Duration::from_secs(32))
    );
}

#[test]
fn cancel_matches_its_invite_or_gets_481() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKl");
    layer.handle_message(clock.now, invite, peer(Protocol::Udp));
    clock.run_until(&mut layer, Duration::ZERO);
    layer.handle_message(
        clock.now,
        request("CANCEL", "z9hG4bKl"),
        peer(Protocol::Udp),
    );
    let (sent, events) = clock.run_until(&mut layer, Duration::ZERO);
    assert_eq!(sent[0].1.status(), Some(200));
    assert_eq!(sent[0].1.cseq().unwrap().method, Method::CANCEL);
    assert!(matches!(events[..], [(_, TxEvent::Cancel { .. })]));

    layer.handle_message(
        clock.now,
        request("CANCEL", "z9hG4bKnone"),
        peer(Protocol::Udp),
    );
    let (sent, events) = clock.run_until(&mut layer, Duration::ZERO);
    assert_eq!(sent[0].1.status(), Some(481));
    assert!(events.is_empty());
}

#[test]
fn cancel_waits_for_a_provisional() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKm");
    let tx = layer.send_request(clock.now, invite.clone(), peer(Protocol::Udp));
    clock.run_until(&mut layer, Duration::from_millis(100));
    layer.cancel(clock.now, tx);
    let (sent, _) = clock.run_until(&mut layer, Duration::from_millis(200));
    assert!(sent.is_empty(), "no CANCEL before a provisional");
    layer.handle_message(
        clock.now,
        response_to(&invite, 180, "callee"),
        peer(Protocol::Udp),
    );
    let (sent, events) = clock.run_until(&mut layer, Duration::from_millis(300));
    let cancel = &sent[0].1;
    assert_eq!(cancel.method(), Some(&Method::CANCEL));
    assert_eq!(cancel.top_branch().as_deref(), Some("z9hG4bKm"));
    assert_eq!(cancel.cseq().unwrap().cseq, 7);
    assert!(cancel.to_header().unwrap().tag().is_none());
    assert!(matches!(events[..], [(_, TxEvent::Response { .. })]));
    // 487 for the INVITE is passed up and ACKed.
    layer.handle_message(
        clock.now,
        response_to(&invite, 487, "callee"),
        peer(Protocol::Udp),
    );
    let (sent, events) = clock.run_until(&mut layer, Duration::from_millis(400));
    assert!(sent.iter().any(|(_, m)| m.method() == Some(&Method::ACK)));
    assert!(
        matches!(&events[..], [(_, TxEvent::Response { msg, .. })] if msg.status() == Some(487))
    );
}

#[test]
fn late_2xx_after_cancel_is_acked_then_byed() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKn");
    let tx = layer.send_request(clock.now, invite.clone(), peer(Protocol::Udp));
    layer.handle_message(
        clock.now,
        response_to(&invite, 180, "callee"),
        peer(Protocol::Udp),
    );
    layer.cancel(clock.now, tx);
    clock.run_until(&mut layer, Duration::from_millis(10));
    let ok = response_to(&invite, 200, "callee");
    layer.handle_message(clock.now, ok.clone(), peer(Protocol::Udp));
    let (sent, events) = clock.run_until(&mut layer, Duration::from_millis(20));
    assert!(events.is_empty(), "the TU does not see the 2xx");
    let methods: Vec<_> = sent
        .iter()
        .filter_map(|(_, m)| m.method().cloned())
        .collect();
    assert_eq!(methods, [Method::ACK, Method::BYE]);
    let (ack, bye) = (&sent[0].1, &sent[1].1);
    assert_eq!(ack.to_header().unwrap().tag(), Some("callee"));
    assert_eq!(ack.cseq().unwrap().cseq, 7);
    assert_eq!(
        ack.request_line().unwrap().uri.to_string(),
        "sip:201@127.0.0.1:5071"
    );
    assert_eq!(bye.cseq().unwrap().cseq, 8);
    assert_ne!(bye.top_branch(), ack.top_branch());
    // A retransmitted 2xx is ACKed again but not BYEd twice.
    layer.handle_message(clock.now, ok, peer(Protocol::Udp));
    let (sent, _) = clock.run_until(&mut layer, Duration::from_millis(30));
    let methods: Vec<_> = sent
        .iter()
        .filter_map(|(_, m)| m.method().cloned())
        .collect();
    assert_eq!(methods, [Method::ACK]);
}

#[test]
fn accepted_client_passes_2xx_retransmissions_up() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let invite = request("INVITE", "z9hG4bKo");
    layer.send_request(clock.now, invite.clone(), peer(Protocol::Udp));
    let ok = response_to(&invite, 200, "callee");
    layer.handle_message(clock.now, ok.clone(), peer(Protocol::Udp));
    layer.handle_message(clock.now, ok, peer(Protocol::Udp));
    let (_, events) = clock.run_until(&mut layer, Duration::from_secs(40));
    assert_eq!(events.len(), 2, "both copies reach the TU, which re-ACKs");
    assert!(layer.is_empty(), "Timer M ended the transaction");
}

#[test]
fn non_invite_timers_j_and_k_clean_up() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let mut clock = Clock::new();
    let options = request("OPTIONS", "z9hG4bKp");
    let client = request("OPTIONS", "z9hG4bKq");
    layer.send_request(clock.now, client.clone(), peer(Protocol::Udp));
    layer.handle_message(
        clock.now,
        response_to(&client, 200, "x"),
        peer(Protocol::Udp),
    );
    layer.handle_message(clock.now, options.clone(), peer(Protocol::Udp));
    let (_, events) = clock.run_until(&mut layer, Duration::ZERO);
    let tx = events
        .iter()
        .find_map(|(_, e)| match e {
            TxEvent::Request { tx, .. } => Some(*tx),
            _ => None,
        })
        .unwrap();
    layer.send_response(clock.now, tx, options.response(200, "OK", Some("t")));
    clock.run_until(&mut layer, Duration::from_secs(6));
    assert_eq!(
        layer.len(),
        1,
        "Timer K (5 s) ended the client; Timer J (32 s) still holds the server"
    );
    clock.run_until(&mut layer, Duration::from_secs(33));
    assert!(layer.is_empty() && layer.poll_timeout().is_none());
}

#[test]
fn a_mass_expiry_is_run_in_batches_so_datagrams_get_in_between() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let clock = Clock::new();
    let count = TIMER_BATCH * 3 + 10;
    for n in 0..count {
        let options = request("OPTIONS", &format!("z9hG4bKm{n}"));
        layer.send_request(clock.now, options.clone(), peer(Protocol::Udp));
        layer.handle_message(
            clock.now,
            response_to(&options, 200, "x"),
            peer(Protocol::Udp),
        );
    }
    while layer.poll_transmit().is_some() {}
    while layer.poll_event().is_some() {}
    assert_eq!(layer.len(), count, "each waits for Timer K");
    let later = clock.now + Duration::from_secs(6);
    layer.handle_timeout(later);
    assert_eq!(layer.len(), count - TIMER_BATCH, "one batch per call");
    assert!(
        layer.poll_timeout().is_some_and(|at| at <= later),
        "the rest is still due"
    );
    while layer.poll_timeout().is_some_and(|at| at <= later) {
        layer.handle_timeout(later);
    }
    assert!(layer.is_empty());
}

#[test]
fn stray_responses_are_counted() {
    let mut layer = TxLayer::new(TimerConfig::default());
    let invite = request("INVITE", "z9hG4bKr");
    layer.handle_message(
        Instant::now(),
        response_to(&invite, 200, "x"),
        peer(Protocol::Udp),
    );
    assert_eq!(layer.stray_responses(), 1);
    assert!(layer.poll_event().is_none());
}
