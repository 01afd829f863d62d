//! RFC 4475 torture messages: each gets the disposition the RFC names for it, checked on
//! what the engine actually sends back, plus the parsed values the RFC cares about.

mod common;

use common::{answer_codes, check_dispositions, office_engine, Rng};
use gateway::sip::message::{RequestUri, SipMessage};

fn fixture(name: &str) -> Vec<u8> {
    common::fixture("rfc4475", name)
}

fn parse(name: &str) -> SipMessage {
    SipMessage::parse_datagram(&fixture(name)).unwrap_or_else(|e| panic!("{name} must parse: {e}"))
}

/// What the engine does with each message. `None` = sends nothing (dropped, or an ACK /
/// response that needs no answer). For "parse" messages the code is the normal handling's
/// answer (e.g. 401 from the registrar, 407 for an INVITE, 200 for OPTIONS).
const DISPOSITIONS: &[(&str, Option<u16>)] = &[
    // 3.1.1 valid messages: parsed and handled normally.
    ("wsinv", Some(481)), // a re-INVITE (To has a tag) for an unknown dialog
    ("intmeth", Some(501)),
    ("esc01", Some(407)),
    ("escnull", Some(401)),
    ("esc02", Some(501)), // RE%47IST%45R is not REGISTER
    ("lwsdisp", Some(200)),
    ("longreq", Some(407)),
    ("dblreq", Some(401)),
    ("semiuri", Some(200)),
    ("transports", Some(200)),
    ("mpart01", Some(405)), // parsed (binary body); MESSAGE is not served
    ("unreason", None),
    ("noreason", None),
    // 3.1.2 invalid messages
    ("badinv01", Some(400)),
    ("clerr", Some(400)),
    ("ncl", Some(400)),
    ("scalar02", Some(400)),
    ("scalarlg", None),
    ("quotbal", Some(400)),
    ("ltgtruri", Some(400)),
    ("lwsruri", Some(400)),
    ("lwsstart", Some(407)),
    ("trws", Some(200)),
    ("escruri", Some(407)),
    ("baddate", Some(407)),
    ("regbadct", Some(401)),
    ("badaspec", Some(200)),
    ("baddn", Some(400)),
    ("badvers", Some(505)),
    ("mismatch01", Some(400)),
    ("mismatch02", Some(501)),
    ("bigcode", None),
    // 3.2 transaction layer
    ("badbranch", Some(200)),
    // 3.3 application layer
    ("insuf", Some(400)),
    ("unkscm", Some(416)),
    ("novelsc", Some(416)),
    ("unksm2", Some(400)), // parsed; a registrar refuses a To that is not sip:/sips:
    ("bext01", Some(420)),
    ("invut", Some(415)),
    ("regaut01", Some(401)),
    ("multi01", Some(400)),
    ("mcl01", Some(400)),
    ("bcast", None),
    ("zeromf", Some(483)),
    ("cparam01", Some(401)),
    ("cparam02", Some(401)),
    ("regescrt", Some(401)),
    ("sdp01", Some(406)),
    // 3.4 backward compatibility
    ("inv2543", Some(407)),
];

#[test]
fn every_torture_message_gets_its_disposition() {
    check_dispositions("rfc4475", DISPOSITIONS);
}

#[test]
fn valid_messages_parse_to_the_right_values() {
    use ezk_sip_types::Name;
    let wsinv = parse("wsinv");
    assert_eq!(wsinv.top_branch().as_deref(), Some("390skdjuw"));
    assert_eq!(wsinv.vias().len(), 3);
    let from = wsinv.from_header().unwrap();
    assert_eq!(from.display.as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(wsinv.to_header().unwrap().tag(), Some("1918181833n"));
    assert_eq!(wsinv.cseq().unwrap().cseq, 9);
    assert_eq!(wsinv.max_forwards(), Some(Ok(68)));
    assert_eq!(
        wsinv.header(&Name::from("NewFangledHeader")),
        Some("newfangled value continued newfangled value")
    );
    let contact = &wsinv.contacts().unwrap()[0];
    assert_eq!(contact.display.as_deref(), Some("Quoted string \"\""));
    assert_eq!(contact.param("q"), Some("0.33"));
    assert_eq!(wsinv.body.len(), 150);

    let intmeth = parse("intmeth");
    let method = intmeth.method().unwrap().to_string();
    assert_eq!(method, "!interesting-Method0123456789_*+`.%indeed'~");
    assert_eq!(intmeth.cseq().unwrap().method.to_string(), method);

    let semiuri = parse("semiuri");
    // ezk-sip-types unescapes the user part: %40 is "@".
    assert_eq!(
        semiuri.request_line().unwrap().uri.user(),
        Some("user;par=u@example.net")
    );
    assert_eq!(parse("transports").vias().len(), 5);
    assert_eq!(
        parse("lwsdisp").from_header().unwrap().display.as_deref(),
        Some("caller")
    );
    assert!(parse("inv2543").top_branch().is_none());
    assert!(matches!(
        parse("esc01").request_line().unwrap().uri,
        RequestUri::Sip(_)
    ));
    assert!(parse("escnull").to_header().unwrap().uri.contains("%00"));
    let longreq = parse("longreq");
    assert!(
        longreq
            .header(&Name::from("X-Long-Header"))
            .is_some_and(|v| v.len() > 300)
            || longreq
                .to_header()
                .unwrap()
                .display
                .is_some_and(|d| d.len() > 100)
    );
    let unreason = parse("unreason");
    assert!(
        matches!(&unreason.start, gateway::sip::message::StartLine::Response(l)
        if l.code == 200 && l.reason.starts_with("= 2**3 * 5**2"))
    );
    let noreason = parse("noreason");
    assert_eq!(noreason.status(), Some(100));
    assert!(
        matches!(&noreason.start, gateway::sip::message::StartLine::Response(l) if l.reason.is_empty())
    );
    // dblreq: the REGISTER is taken, the trailing INVITE ignored.
    assert_eq!(parse("dblreq").method().unwrap().to_string(), "REGISTER");
}

/// The responses the engine sends to one datagram (100 Trying left out).
fn responses(bytes: &[u8]) -> Vec<SipMessage> {
    let (mut engine, now) = office_engine();
    engine.handle_datagram(now, common::udp_peer(), bytes);
    std::iter::from_fn(|| engine.poll_transmit())
        .filter_map(|out| SipMessage::parse_datagram(&out.bytes).ok())
        .filter(|msg| msg.status().is_some_and(|code| code != 100))
        .collect()
}

fn reason(msg: &SipMessage) -> &str {
    match &msg.start {
        gateway::sip::message::StartLine::Response(line) => &line.reason,
        gateway::sip::message::StartLine::Request(_) => "",
    }
}

/// RFC 4475 §3.3.4: unknown schemes in To, From and Contact are parsed; a registrar refuses
/// the REGISTER with 400 because its To must be a SIP or SIPS address-of-record; the same
/// headers in other requests are handled as in any request (200 to OPTIONS, a challenge to
/// an INVITE).
#[test]
fn unknown_schemes_in_header_fields_are_parsed_and_handled_per_method() {
    let unksm2 = parse("unksm2");
    assert_eq!(unksm2.to_header().unwrap().uri, "isbn:2983792873");
    assert_eq!(unksm2.from_header().unwrap().uri, "http://www.example.com");
    assert_eq!(unksm2.contacts().unwrap()[0].uri, "name:John_Smith");

    let register = responses(&fixture("unksm2"));
    assert_eq!(register.len(), 1);
    assert_eq!(register[0].status(), Some(400));
    assert_eq!(
        reason(&register[0]),
        "Bad Request (To is not a SIP or SIPS URI)"
    );

    let text = String::from_utf8(fixture("unksm2")).unwrap();
    let as_method = |method: &str, uri: &str| {
        text.replacen("REGISTER sip:example.com", &format!("{method} {uri}"), 1)
            .replacen("234902 REGISTER", &format!("234902 {method}"), 1)
    };
    let options = responses(as_method("OPTIONS", "sip:127.0.0.1").as_bytes());
    assert_eq!(
        options.iter().map(|m| m.status()).collect::<Vec<_>>(),
        [Some(200)]
    );
    let invite = responses(as_method("INVITE", "sip:201@127.0.0.1").as_bytes());
    assert_eq!(
        invite.iter().map(|m| m.status()).collect::<Vec<_>>(),
        [Some(407)]
    );
}

/// Deterministic xorshift, so failures reproduce.
#[test]
fn mutated_torture_messages_never_panic() {
    use gateway::sip::framing::StreamFramer;
    let (mut engine, now) = office_engine();
    let mut rng = Rng(0x5eed);
    for (name, _) in DISPOSITIONS {
        let original = fixture(name);
        for round in 0..60 {
            let mut bytes = original.clone();
            match round % 4 {
                0 => bytes.truncate(rng.next() as usize % (bytes.len() + 1)),
                1 => {
                    for _ in 0..4 {
                        let at = rng.next() as usize % bytes.len();
                        bytes[at] = rng.next() as u8;
                    }
                }
                2 => {
                    let at = rng.next() as usize % bytes.len();
                    let filler = [b' ', b'\r', b'\n', b';', b',', b'"', b'<', b'>', b':', 0xff];
                    bytes.insert(at, filler[rng.next() as usize % filler.len()]);
                }
                _ => {
                    let at = rng.next() as usize % bytes.len();
                    bytes.drain(at..(at + 8).min(bytes.len()));
                }
            }
            answer_codes(&mut engine, now, &bytes);
            let mut framer = StreamFramer::new(gateway::sip::message::MAX_MESSAGE_SIZE);
            framer.push(&bytes);
            let _ = framer.next_message();
        }
    }
}
