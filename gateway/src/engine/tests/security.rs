//! Attacks on authentication, driven in virtual time: toll fraud by retargeting a digest,
//! password guessing, and the memory and replies that unauthenticated requests cost.

use super::*;

/// An INVITE from 202 (port 5072) to `to`, carrying `proxy_authorization` if given.
fn invite_with(
    to: &str,
    call_id: &str,
    branch: &str,
    cseq: u32,
    authorization: Option<&str>,
) -> String {
    let auth = authorization
        .map(|value| format!("Proxy-Authorization: {value}\r\n"))
        .unwrap_or_default();
    format!(
        "INVITE sip:{to}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK{branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:202@127.0.0.1>;tag=a5072\r\nTo: <sip:{to}@127.0.0.1>\r\n\
Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:202@127.0.0.1:5072>\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

fn challenge_of(out: &[(Peer, SipMessage)]) -> String {
    out.iter()
        .find_map(|(_, m)| {
            m.header(&Name::PROXY_AUTHENTICATE)
                .or(m.header(&Name::WWW_AUTHENTICATE))
        })
        .expect("a challenge")
        .to_string()
}

/// Finding 1: a Proxy-Authorization computed for `INVITE sip:203@...` was accepted on
/// `INVITE sip:9555123@...`, and the analog line went off hook to the PSTN.
#[test]
fn a_digest_for_one_target_cannot_place_a_call_to_another() {
    let mut h = Harness::office();
    h.send(udp(5072), &invite_with("203", "fraud", "f1", 1, None));
    let challenge = challenge_of(&h.sent());
    let for_203 = credentials(&challenge, "202", "pw202", "INVITE", "sip:203@127.0.0.1", 1);
    h.send(
        udp(5072),
        &invite_with("9555123", "fraud", "f2", 2, Some(&for_203)),
    );
    let out = h.sent();
    assert_eq!(statuses(&out), [400], "{out:?}");
    let crate::sip::message::StartLine::Response(status) = &out[0].1.start else {
        panic!("not a response");
    };
    assert!(status.reason.contains("digest uri"), "{}", status.reason);
    assert!(
        requests(&out, "INVITE").is_empty(),
        "nothing goes to the line"
    );
    assert_eq!(
        h.engine.guard_stats().failures,
        1,
        "counted as a failed authentication"
    );
    // The same credentials on the call they were made for work (nc 1 was never used).
    h.send(
        udp(5072),
        &invite_with("203", "fraud", "f3", 3, Some(&for_203)),
    );
    assert!(!statuses(&h.sent()).contains(&400));
}

/// Finding 3: a challenge went through a server transaction that retransmitted for 32 s
/// and held ~3 KB per request; an INVITE also got a 100 Trying first.
#[test]
fn challenges_and_refusals_are_sent_once_and_keep_no_transaction() {
    let mut h = Harness::new();
    h.send(udp(5072), &invite_with("201", "c1", "c1", 1, None));
    let out = h.sent();
    assert_eq!(statuses(&out), [407], "one reply, no 100 Trying: {out:?}");
    assert_eq!(h.engine.tx.len(), 0, "no transaction kept for a challenge");
    let challenge = challenge_of(&out);
    let wrong = credentials(&challenge, "202", "nope", "INVITE", "sip:201@127.0.0.1", 1);
    h.send(udp(5072), &invite_with("201", "c1", "c2", 2, Some(&wrong)));
    assert_eq!(statuses(&h.sent()), [403]);
    assert_eq!(h.engine.tx.len(), 0, "no transaction kept for a refusal");
    h.advance(Duration::from_secs(40));
    assert!(h.sent().is_empty(), "nothing is retransmitted");
    // A retransmission of the challenged request is challenged again, once.
    h.send(udp(5072), &invite_with("201", "c1", "c1", 1, None));
    assert_eq!(statuses(&h.sent()), [407]);
}

#[test]
fn a_challenge_is_no_larger_than_the_request_beyond_its_first_algorithm() {
    let mut h = Harness::with_config(&CONFIG.replace(
        "algorithms = [\"MD5\"]",
        "algorithms = [\"SHA-256\", \"MD5\"]",
    ));
    let small = "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKs\r\n\
From: <sip:201@127.0.0.1>;tag=1\r\nTo: <sip:201@127.0.0.1>\r\nCall-ID: s\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
    h.engine.handle_datagram(h.now, udp(5071), small.as_bytes());
    let out: Vec<_> = std::iter::from_fn(|| h.engine.poll_transmit()).collect();
    assert_eq!(out.len(), 1);
    let reply = SipMessage::parse_datagram(&out[0].bytes).unwrap();
    let offered = reply.raw_values(&Name::WWW_AUTHENTICATE).count();
    assert_eq!(offered, 1, "only SHA-256 fits");
    // A phone's usual REGISTER (with Contact, User-Agent...) gets both.
    let big = small.replace(
        "Content-Length: 0",
        &format!(
            "Contact: <sip:201@127.0.0.1:5071>\r\nUser-Agent: {}\r\nContent-Length: 0",
            "x".repeat(300)
        ),
    );
    h.send(udp(5071), &big);
    let reply = h.sent().remove(0).1;
    assert_eq!(reply.raw_values(&Name::WWW_AUTHENTICATE).count(), 2);
}

/// Finding 2: 2,898 guesses per second against 201, never blocked. A pipelined guesser
/// (every guess sent without waiting for an answer, all on one nonce) gets at most the
/// configured failures per window answered; the rest are dropped and counted.
#[test]
fn a_pipelined_guesser_gets_five_answers_then_silence() {
    let mut h = Harness::new();
    h.send(udp(5072), &invite_with("201", "g", "g0", 1, None));
    let challenge = challenge_of(&h.sent());
    for guess in 0..50u32 {
        let value = credentials(
            &challenge,
            "201",
            &format!("guess{guess}"),
            "INVITE",
            "sip:201@127.0.0.1",
            1,
        )
        .replace("username=\"201\"", "username=\"202\"");
        h.engine.handle_datagram(
            h.now,
            udp(5072),
            invite_with(
                "201",
                "g",
                &format!("g{}", guess + 1),
                guess + 2,
                Some(&value),
            )
            .as_bytes(),
        );
    }
    let out = h.sent();
    assert_eq!(statuses(&out), [403; 5], "{out:?}");
    let stats = h.engine.guard_stats();
    assert_eq!(stats.failures, 5);
    assert_eq!(stats.sources_blocked, 1);
    assert_eq!(stats.blocked_requests_dropped, 45);
    // Even the right password is not looked at while blocked, from any port.
    let right = credentials(&challenge, "202", "pw202", "INVITE", "sip:201@127.0.0.1", 2);
    h.send(udp(5080), &invite_with("201", "g", "gr", 99, Some(&right)));
    assert!(h.sent().is_empty());
    // The block ends after block_secs (900 s by default).
    h.advance(Duration::from_secs(901));
    h.send(udp(5072), &invite_with("201", "g2", "h0", 1, None));
    assert_eq!(statuses(&h.sent()), [407]);
}

#[test]
fn trusted_networks_are_never_blocked() {
    let mut h = Harness::with_config(&CONFIG.replace(
        "algorithms = [\"MD5\"]",
        "algorithms = [\"MD5\"]\ntrusted_networks = [\"127.0.0.0/8\"]",
    ));
    for round in 0..10 {
        let out = h.register("201", "nope", udp(5071 + round), 600);
        assert_eq!(statuses(&out), [403]);
    }
    assert_eq!(h.engine.guard_stats().sources_blocked, 0);
}

/// A guesser spread over many addresses locks the extension: then only its registered
/// address (and trusted networks) may authenticate as it, with the right password.
#[test]
fn a_locked_extension_still_serves_its_registered_phone() {
    let mut h = Harness::with_config(&CONFIG.replace(
        "algorithms = [\"MD5\"]",
        "algorithms = [\"MD5\"]\nmax_failures_per_extension = 3",
    ));
    let phone = udp(5071);
    assert_eq!(statuses(&h.register("201", "pw201", phone, 600)), [200]);
    for i in 1..=3u8 {
        let attacker = Peer {
            protocol: Protocol::Udp,
            addr: format!("192.0.2.{i}:5060").parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        };
        assert_eq!(statuses(&h.register("201", "guess", attacker, 600)), [403]);
    }
    // Someone elsewhere who knows the password is refused like a wrong password...
    let elsewhere = Peer {
        protocol: Protocol::Udp,
        addr: "192.0.2.50:5060".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
    };
    assert_eq!(statuses(&h.register("201", "pw201", elsewhere, 600)), [403]);
    // ...while the phone itself re-registers.
    let again = h.register("201", "pw201", phone, 600);
    assert_eq!(statuses(&again), [200]);
    assert_eq!(h.engine.guard_stats().extensions_locked, 1);
}

/// A spoofed source (a reflection attack's victim) gets at most
/// `auth.max_challenges_per_source` challenges a second; the rest go unanswered.
#[test]
fn challenges_to_one_source_are_capped_per_second() {
    let mut h = Harness::new();
    for n in 0..250 {
        h.engine.handle_datagram(
            h.now,
            udp(5072),
            invite_with("201", &format!("r{n}"), &format!("r{n}"), 1, None).as_bytes(),
        );
    }
    assert_eq!(statuses(&h.sent()), [407; 200]);
    assert_eq!(h.engine.guard_stats().challenges_dropped, 50);
    assert_eq!(h.engine.tx.len(), 0, "nothing kept for the unanswered ones");
    h.advance(Duration::from_secs(1));
    h.send(udp(5072), &invite_with("201", "later", "later", 1, None));
    assert_eq!(statuses(&h.sent()), [407]);
}

/// Requests for dialogs or transactions that do not exist (anyone can make them up) are
/// answered 481 once and cost no state.
#[test]
fn made_up_dialogs_and_cancels_cost_no_state() {
    let mut h = Harness::new();
    for n in 0..500 {
        let headers = format!(
            "Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKfake{n}\r\nMax-Forwards: 70\r\n\
From: <sip:202@127.0.0.1>;tag=a{n}\r\nTo: <sip:201@127.0.0.1>;tag=made-up{n}\r\n\
Call-ID: fake{n}\r\nContent-Length: 0\r\n"
        );
        h.engine.handle_datagram(
            h.now,
            udp(5072),
            format!("BYE sip:201@127.0.0.1 SIP/2.0\r\n{headers}CSeq: 2 BYE\r\n\r\n").as_bytes(),
        );
        h.engine.handle_datagram(
            h.now,
            udp(5072),
            format!("CANCEL sip:201@127.0.0.1 SIP/2.0\r\n{headers}CSeq: 1 CANCEL\r\n\r\n")
                .as_bytes(),
        );
    }
    assert_eq!(statuses(&h.sent()), [481; 1000]);
    assert_eq!(h.engine.tx.len(), 0);
}
