//! RFC 5118 IPv6 torture messages: dispositions as the engine answers them, and the IPv6
//! values parsed out of them.

mod common;

use common::{check_dispositions, fixture};
use ezk_sip_types::host::Host;
use gateway::sip::message::{RequestUri, SipMessage};

const DISPOSITIONS: &[(&str, Option<u16>)] = &[
    ("ipv6-good", Some(401)),
    ("ipv6-bad", Some(400)),
    ("port-ambiguous", Some(401)),
    ("port-unambiguous", Some(401)),
    ("via-received-param-with-delim", Some(481)),
    ("via-received-param-no-delim", Some(200)),
    ("ipv6-in-sdp", Some(407)),
    ("mult-ip-in-header", Some(481)),
    ("mult-ip-in-sdp", Some(407)),
    ("ipv4-mapped-ipv6", Some(407)),
    // Not valid RFC 4291 text; RFC 5118 §4.10 asks for robustness, we answer a clear 400.
    ("ipv6-bug-abnf-3-colons", Some(400)),
    ("ipv6-correct-abnf-2-colons", Some(200)),
];

fn parse(name: &str) -> SipMessage {
    SipMessage::parse_datagram(&fixture("rfc5118", name))
        .unwrap_or_else(|e| panic!("{name} must parse: {e}"))
}

fn request_host(msg: &SipMessage) -> (Host, Option<u16>) {
    match &msg.request_line().unwrap().uri {
        RequestUri::Sip(uri) => (uri.uri().host_port.host.clone(), uri.uri().host_port.port),
        other => panic!("not a SIP URI: {other:?}"),
    }
}

#[test]
fn every_ipv6_message_gets_its_disposition() {
    check_dispositions("rfc5118", DISPOSITIONS);
}

#[test]
fn ipv6_references_parse_to_addresses_and_ports() {
    let v6 = |text: &str| Host::IP6(text.parse().unwrap());
    assert_eq!(
        request_host(&parse("ipv6-good")),
        (v6("2001:db8::10"), None)
    );
    assert_eq!(
        request_host(&parse("port-ambiguous")),
        (v6("2001:db8::10:5070"), None)
    );
    assert_eq!(
        request_host(&parse("port-unambiguous")),
        (v6("2001:db8::10"), Some(5070))
    );
    assert_eq!(
        parse("ipv6-good").top_via().unwrap().sent_by.host,
        v6("2001:db8::9:1")
    );
    assert_eq!(
        parse("ipv6-good").contacts().unwrap()[0].uri,
        "sip:caller@[2001:db8::1]"
    );
    let vias = parse("mult-ip-in-header").vias();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].sent_by.port, Some(6050));
    assert_eq!(
        vias[1].sent_by.host,
        Host::IP4("192.0.2.1".parse().unwrap())
    );
    assert_eq!(
        parse("ipv4-mapped-ipv6").top_via().unwrap().sent_by.port,
        Some(19823)
    );
    assert!(parse("ipv6-in-sdp").body.starts_with(b"v=0"));
    assert!(SipMessage::parse_datagram(&fixture("rfc5118", "ipv6-bad"))
        .is_err_and(|e| e.to_string().contains("Request-URI")));
}
