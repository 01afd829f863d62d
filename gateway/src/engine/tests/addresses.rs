//! Which address the gateway names toward each phone: a gateway listening on every address
//! names, in the Via, Contact and SDP of what it sends a phone, the address that phone
//! reached it at (IPv6 in brackets, `c=IN IP6`), and sends from it; `sip.advertise` and
//! `media.advertise` replace it (a gateway behind NAT).

use super::*;

/// `CONFIG` listening on every address with `extra` lines in `[sip]`, every call anchored.
fn wildcard(extra: &str, media: &str) -> Harness {
    let text = CONFIG.replace(
        "listen = \"127.0.0.1:5060\"",
        &format!("listen = \"[::]:5060\"\n{extra}"),
    );
    Harness::with_config(&format!(
        "{text}[media]\nanchor = \"always\"\nport_min = 30000\nport_max = 30100\n{media}"
    ))
}

/// A phone at `addr` that reaches the gateway at `local`.
fn phone(addr: &str, local: &str) -> Peer {
    Peer {
        protocol: Protocol::Udp,
        addr: addr.parse().unwrap(),
        local: local.parse().unwrap(),
    }
}

/// The sent-by of a message's top Via.
fn sent_by(msg: &SipMessage) -> String {
    let via = msg.header_list(&Name::VIA)[0].to_string();
    via.split_whitespace()
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn sdp_connection(msg: &SipMessage) -> String {
    String::from_utf8_lossy(&msg.body)
        .lines()
        .find(|line| line.starts_with("c="))
        .unwrap_or_default()
        .to_string()
}

/// 202 at `caller` calls 201 at `callee` (both registered), 201 answers: the INVITE the
/// gateway forked to 201 and the 200 it sent 202, with the peers they went to.
fn call(h: &mut Harness, caller: Peer, callee: Peer) -> ((Peer, SipMessage), (Peer, SipMessage)) {
    assert_eq!(statuses(&h.register("201", "pw201", callee, 600)), [200]);
    assert_eq!(statuses(&h.register("202", "pw202", caller, 600)), [200]);
    let out = h.request_with_auth(caller, &invite("202", "201", 5072, "addr1"), "202", "pw202");
    let trying = out.iter().find(|(_, m)| m.status() == Some(100)).unwrap();
    assert_eq!(trying.0, caller, "answered from where the INVITE arrived");
    let fork = requests(&out, "INVITE")[0].clone();
    let answer_sdp = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
    h.send(callee, &answer(&fork.1, 200, "OK", "b1", 5071, answer_sdp));
    let answered = h.sent();
    let ok = answered
        .iter()
        .find(|(_, m)| m.status() == Some(200))
        .expect("the callee's 200 is ours and relayed")
        .clone();
    (fork, ok)
}

#[test]
fn each_phone_is_told_the_address_it_reached() {
    let mut h = wildcard("", "");
    let caller = phone("10.2.0.2:5072", "10.2.0.1:5060");
    let callee = phone("10.1.0.2:5071", "10.1.0.1:5060");
    let ((to, fork), (back, ok)) = call(&mut h, caller, callee);
    assert_eq!(to, callee, "sent from the address the callee registered at");
    assert_eq!(sent_by(&fork), "10.1.0.1:5060");
    assert_eq!(
        fork.header(&Name::CONTACT),
        Some("<sip:gw@10.1.0.1:5060;transport=udp>")
    );
    assert_eq!(sdp_connection(&fork), "c=IN IP4 10.1.0.1");
    assert_eq!(back, caller);
    assert_eq!(
        ok.header(&Name::CONTACT),
        Some("<sip:gw@10.2.0.1:5060;transport=udp>")
    );
    assert_eq!(sdp_connection(&ok), "c=IN IP4 10.2.0.1");
}

#[test]
fn an_ipv6_phone_is_told_an_ipv6_address_in_brackets() {
    let mut h = wildcard("", "");
    let caller = phone("10.2.0.2:5072", "10.2.0.1:5060");
    let callee = phone("[2001:db8::2]:5071", "[2001:db8::1]:5060");
    let ((to, fork), (_, ok)) = call(&mut h, caller, callee);
    assert_eq!(to, callee);
    assert_eq!(sent_by(&fork), "[2001:db8::1]:5060");
    assert_eq!(
        fork.header(&Name::CONTACT),
        Some("<sip:gw@[2001:db8::1]:5060;transport=udp>")
    );
    assert_eq!(sdp_connection(&fork), "c=IN IP6 2001:db8::1");
    assert_eq!(sdp_connection(&ok), "c=IN IP4 10.2.0.1");
}

#[test]
fn advertised_addresses_replace_the_local_ones() {
    let mut h = wildcard(
        "advertise = \"pbx.example.com\"",
        "advertise = \"203.0.113.5\"\n",
    );
    let caller = phone("10.2.0.2:5072", "10.2.0.1:5060");
    let callee = phone("10.1.0.2:5071", "10.1.0.1:5060");
    let ((to, fork), (_, ok)) = call(&mut h, caller, callee);
    assert_eq!(to, callee, "still sent from the local address");
    assert_eq!(sent_by(&fork), "pbx.example.com:5060");
    assert_eq!(
        fork.header(&Name::CONTACT),
        Some("<sip:gw@pbx.example.com:5060;transport=udp>")
    );
    assert_eq!(sdp_connection(&fork), "c=IN IP4 203.0.113.5");
    assert_eq!(
        ok.header(&Name::CONTACT),
        Some("<sip:gw@pbx.example.com:5060;transport=udp>")
    );
    assert_eq!(sdp_connection(&ok), "c=IN IP4 203.0.113.5");
}

#[test]
fn a_contact_naming_the_address_a_wildcard_gateway_was_reached_at_is_a_loop() {
    let mut h = wildcard("", "");
    let text = "REGISTER sip:10.1.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.0.2:5071;branch=z9hG4bKloop;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:201@10.1.0.1>;tag=l1\r\nTo: <sip:201@10.1.0.1>\r\nCall-ID: loop-201\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:201@10.1.0.1:5060>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n";
    let from = phone("10.1.0.2:5071", "10.1.0.1:5060");
    assert_eq!(
        statuses(&h.request_with_auth(from, text, "201", "pw201")),
        [403]
    );
}

/// office.toml (pickup groups) listening on every address, every call anchored.
fn wildcard_office() -> Harness {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml");
    let text = std::fs::read_to_string(path).unwrap();
    Harness::with_config(
        &text
            .replace("listen = \"127.0.0.1:5060\"", "listen = \"[::]:5060\"")
            .replace("anchor = \"analog\"", "anchor = \"always\""),
    )
}

/// 204 on one network calls 201 on another; 202, on a third, dials `*8` (advertising
/// Replaces or not): what the gateway sent the picker.
fn picked_across_networks(replaces: bool) -> Vec<(Peer, SipMessage)> {
    let mut h = wildcard_office();
    let callee = phone("10.1.0.2:5071", "10.1.0.1:5060");
    let caller = phone("10.2.0.2:5074", "10.2.0.1:5060");
    let picker = phone("10.3.0.2:5072", "10.3.0.1:5060");
    assert_eq!(statuses(&h.register("201", "pw201", callee, 600)), [200]);
    let out = h.request_with_auth(caller, &invite("204", "201", 5074, "c1"), "204", "pw204");
    let fork = requests(&out, "INVITE")[0].1.clone();
    h.send(callee, &answer(&fork, 180, "Ringing", "b1", 5071, ""));
    h.sent();
    let mut text = invite("202", "*8", 5072, "pick1");
    if replaces {
        text = text.replacen("Content-Type", "Supported: replaces\r\nContent-Type", 1);
    }
    let out = h.request_with_auth(picker, &text, "202", "pw202");
    out.into_iter().filter(|(to, _)| *to == picker).collect()
}

#[test]
fn a_picker_on_another_network_is_offered_the_relay_at_the_address_it_reached() {
    let to_picker = picked_across_networks(true);
    let (_, replaces) = requests(&to_picker, "INVITE")[0];
    assert!(replaces.header(&Name::REPLACES).is_some());
    assert_eq!(sdp_connection(replaces), "c=IN IP4 10.3.0.1");
    let to_picker = picked_across_networks(false);
    let (_, ok) = to_picker
        .iter()
        .find(|(_, m)| m.status() == Some(200))
        .expect("the picker without Replaces is bridged");
    assert_eq!(sdp_connection(ok), "c=IN IP4 10.3.0.1");
}
