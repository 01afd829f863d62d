//! Two nodes sharing one store, in virtual time: a call reaching node B for a phone
//! registered through node A goes through A (signed, trusted there without a challenge),
//! one CDR for it; signatures count only from node addresses; a silent node is taken over.

use super::*;
use crate::store::CallStore;
use ezk_sip_types::Method;

const SECRET: &str = "cluster-secret-0123456789";

fn node_config(id: &str, port: u16, peer: u16, secret: &str) -> String {
    node_config_from(CONFIG, id, port, peer, secret)
}

/// `base` (listening on 127.0.0.1:5060, without a [node] section) as node `id` on `port`
/// with the other node on `peer`.
fn node_config_from(base: &str, id: &str, port: u16, peer: u16, secret: &str) -> String {
    base.replace(
        "listen = \"127.0.0.1:5060\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    )
    .replace(
        "path = \"unused.db\"",
        "url = \"postgres://gateway@localhost/gateway\"",
    ) + &format!(
        "[node]\nid = \"{id}\"\npeers = [\"127.0.0.1:{peer}\"]\nsecret = \"{secret}\"\n\
             heartbeat_secs = 1\ntakeover_secs = 3\n"
    )
}

/// A peer reaching `local_port` from `port`.
pub(super) fn at(port: u16, local_port: u16) -> Peer {
    Peer {
        protocol: Protocol::Udp,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        local: format!("127.0.0.1:{local_port}").parse().unwrap(),
    }
}

pub(super) const A: u16 = 5061;
pub(super) const B: u16 = 5060;

/// Node a (port 5061) and node b (5060) on one database, both alive.
fn cluster() -> (Harness, Harness) {
    cluster_of(
        &node_config("a", A, B, SECRET),
        &node_config("b", B, A, SECRET),
    )
}

/// The quick-start office (201-203 in `sales`, 204 in no group) on nodes a and b.
fn office_cluster() -> (Harness, Harness) {
    office_cluster_edited(|office| office)
}

/// [`office_cluster`] with the office config changed by `edit` (on both nodes).
pub(super) fn office_cluster_edited(edit: impl Fn(String) -> String) -> (Harness, Harness) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml");
    let office = std::fs::read_to_string(path)
        .unwrap()
        .replace("[node]\nid = \"gw1\"\n", "")
        .replace("path = \"./data/gateway.db\"", "path = \"unused.db\"")
        .replace(
            "zone = \"us\"",
            "zone = \"us\"\ncontrol_socket = \"unused.sock\"",
        );
    let office = edit(office);
    cluster_of(
        &node_config_from(&office, "a", A, B, SECRET),
        &node_config_from(&office, "b", B, A, SECRET),
    )
}

fn cluster_of(a_config: &str, b_config: &str) -> (Harness, Harness) {
    let mut a = Harness::with_config(a_config);
    let mut b = Harness::with_config(b_config);
    b.store = Store::open(&a._dir.path().join("gw.db")).unwrap();
    let now = a.now.unix_ms;
    a.store.register_node("a", at(A, A).addr, now).unwrap();
    b.store.register_node("b", at(B, B).addr, now).unwrap();
    (a, b)
}

/// Delivers what `from` sent to `to`'s address into `to`; the rest goes to `elsewhere`.
fn pass(from: &mut Harness, to: &mut Harness, elsewhere: &mut Vec<(Peer, SipMessage)>) -> bool {
    let (from_addr, to_addr) = (
        from.engine.config.listen_addr(),
        to.engine.config.listen_addr(),
    );
    let mut moved = false;
    for (peer, msg) in from.sent() {
        if peer.addr == to_addr {
            let source = Peer {
                protocol: Protocol::Udp,
                addr: from_addr,
                local: to_addr,
            };
            to.send(source, std::str::from_utf8(&msg.to_bytes()).unwrap());
            moved = true;
        } else {
            elsewhere.push((peer, msg));
        }
    }
    moved
}

/// Moves messages between the nodes until neither sends the other anything; returns what
/// they sent to anyone else (phones).
pub(super) fn exchange(a: &mut Harness, b: &mut Harness) -> Vec<(Peer, SipMessage)> {
    let mut elsewhere = Vec::new();
    while pass(a, b, &mut elsewhere) | pass(b, a, &mut elsewhere) {}
    elsewhere
}

#[test]
fn a_call_reaching_node_b_goes_through_node_a_to_the_phone_registered_there() {
    let (mut a, mut b) = cluster();
    let registered = a.register("201", "pw201", at(5071, A), 600);
    assert_eq!(statuses(&registered), [200]);
    a.run_store();

    // 202 calls 201 through b: b finds 201 on a and forks to a's address, signed.
    let out = b.dial("201", "x1");
    assert!(statuses(&out).contains(&100), "{out:?}");
    let forks = requests(&out, "INVITE");
    assert_eq!(forks.len(), 1, "{out:?}");
    let (peer, to_a) = forks[0].clone();
    assert_eq!(peer.addr, at(A, B).addr, "to node a");
    assert_eq!(
        to_a.request_line().unwrap().uri.to_string(),
        "sip:201@127.0.0.1:5061"
    );
    assert!(
        to_a.header(&Name::from("X-Gateway-Node"))
            .is_some_and(|v| v.starts_with("b;ts=")),
        "{to_a:?}"
    );
    assert!(
        to_a.header(&Name::PROXY_AUTHORIZATION).is_none(),
        "the caller's credentials stay on b"
    );

    // a trusts it (no challenge) and rings the phone over its flow.
    a.send(at(B, A), std::str::from_utf8(&to_a.to_bytes()).unwrap());
    let at_a = a.sent();
    assert!(!statuses(&at_a).contains(&407), "{at_a:?}");
    let to_phone = requests(&at_a, "INVITE");
    assert_eq!(to_phone.len(), 1, "{at_a:?}");
    let (phone_peer, phone_invite) = to_phone[0].clone();
    assert_eq!(
        phone_peer.addr,
        at(5071, A).addr,
        "the address 201 registered from"
    );
    assert!(phone_invite.header(&Name::from("X-Gateway-Node")).is_none());
    assert_eq!(
        phone_invite.from_header().unwrap().user().as_deref(),
        Some("202"),
        "the caller as b authenticated it"
    );
    // a's 100 goes back to b.
    for (peer, msg) in &at_a {
        if msg.status().is_some() {
            b.send(at(A, B), std::str::from_utf8(&msg.to_bytes()).unwrap());
            assert_eq!(peer.addr, at(B, A).addr);
        }
    }
    assert!(b.sent().is_empty(), "a 100 ends there");

    // The phone rings, then answers: both reach the caller on b.
    a.send(
        at(5071, A),
        &answer(&phone_invite, 180, "Ringing", "p1", 5071, ""),
    );
    let to_caller = exchange(&mut a, &mut b);
    assert_eq!(statuses(&to_caller), [180], "{to_caller:?}");
    a.send(
        at(5071, A),
        &answer(&phone_invite, 200, "OK", "p1", 5071, "v=0\r\n"),
    );
    let to_caller = exchange(&mut a, &mut b);
    let ok = to_caller
        .iter()
        .find(|(_, m)| m.status() == Some(200))
        .expect("the caller gets the 200");
    assert_eq!(ok.0.addr, at(5072, B).addr);
    assert_eq!(&ok.1.body[..], b"v=0\r\n");
    assert_eq!(
        requests(&to_caller, "ACK").len(),
        1,
        "a ACKs the phone's 2xx"
    );

    // The caller hangs up; the BYE travels b -> a -> phone and the 200s back.
    let a_tag = ok.1.to_header().unwrap().tag().unwrap().to_string();
    let bye = format!(
        "BYE sip:gw@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKbye1\r\n\
From: \"Caller\" <sip:202@127.0.0.1>;tag=a5072\r\nTo: <sip:201@127.0.0.1>;tag={a_tag}\r\n\
Call-ID: x1\r\nMax-Forwards: 70\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    b.send(at(5072, B), &bye);
    let out = exchange(&mut a, &mut b);
    let phone_bye = requests(&out, "BYE");
    assert_eq!(phone_bye.len(), 1, "{out:?}");
    assert_eq!(statuses(&out), [200], "the caller's BYE answered: {out:?}");
    let bye_ok = phone_bye[0].1.response(200, "OK", None);
    a.send(
        at(5071, A),
        std::str::from_utf8(&bye_ok.to_bytes()).unwrap(),
    );
    assert!(exchange(&mut a, &mut b).is_empty());

    // One CDR, by the node the caller reached; no context left behind on either.
    let cdrs = b.store.recent_cdrs(10).unwrap();
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    assert_eq!(
        (
            cdrs[0].caller.as_str(),
            cdrs[0].called.as_str(),
            cdrs[0].node.as_str()
        ),
        ("202", "201", "b")
    );
    assert_eq!(cdrs[0].disposition, "answered");
    assert_eq!(
        b.store.recover_interrupted("a").unwrap(),
        Default::default()
    );
}

#[test]
fn a_node_signature_counts_only_from_a_node_address_with_the_secret() {
    let (mut a, mut b) = cluster();
    a.register("201", "pw201", at(5071, A), 600);
    let out = b.dial("201", "x2");
    let (_, to_a) = requests(&out, "INVITE")[0].clone();
    let signed = String::from_utf8(to_a.to_bytes().to_vec()).unwrap();

    // The same signed INVITE from anywhere but node b: outside traffic, challenged.
    a.send(at(5099, A), &signed);
    let replies = a.sent();
    assert_eq!(statuses(&replies), [407], "{replies:?}");
    assert!(
        requests(&replies, "INVITE").is_empty(),
        "the phone does not ring"
    );
    assert_eq!(a.engine.stats().forged_node_requests, 1);

    // From node b's address but signed with another secret, or not signed: challenged.
    let mut forger = Harness::with_config(&node_config("b", B, A, "not-the-cluster-secret"));
    forger.store = Store::open(&a._dir.path().join("gw.db")).unwrap();
    forger
        .store
        .register_node("b", at(B, B).addr, forger.now.unix_ms)
        .unwrap();
    let out = forger.dial("201", "x3");
    let (_, forged) = requests(&out, "INVITE")[0].clone();
    a.send(at(B, A), std::str::from_utf8(&forged.to_bytes()).unwrap());
    assert_eq!(statuses(&a.sent()), [407]);
    let mut unsigned = forged.clone();
    unsigned.remove_header(&Name::from("X-Gateway-Node"));
    a.send(at(B, A), std::str::from_utf8(&unsigned.to_bytes()).unwrap());
    assert_eq!(
        statuses(&a.sent()),
        [407],
        "a node address alone is no credential"
    );
    // A replay long after it was signed: challenged too.
    a.advance(Duration::from_secs(60));
    a.sent();
    let replayed = signed.replace("branch=z9hG4bK", "branch=z9hG4bKreplay");
    a.send(at(B, A), &replayed);
    assert_eq!(statuses(&a.sent()), [407]);
    assert_eq!(a.engine.stats().forged_node_requests, 3);

    // The genuine one from node b rings the phone.
    a.send(
        at(B, A),
        &signed
            .replace("branch=z9hG4bK", "branch=z9hG4bKlate")
            .replace(
                &to_a
                    .header(&Name::from("X-Gateway-Node"))
                    .unwrap()
                    .to_string(),
                &{
                    let mut fresh = SipMessage::parse_datagram(signed.as_bytes()).unwrap();
                    crate::auth::node::sign(&mut fresh, SECRET.as_bytes(), "b", a.now.unix());
                    fresh
                        .header(&Name::from("X-Gateway-Node"))
                        .unwrap()
                        .to_string()
                },
            ),
    );
    let rung = a.sent();
    assert_eq!(requests(&rung, "INVITE").len(), 1, "{rung:?}");
}

#[test]
fn a_silent_node_is_taken_over_and_learns_it_when_it_heartbeats_again() {
    let (mut a, mut b) = cluster();
    a.register("201", "pw201", at(5071, A), 600);
    assert_eq!(a.store.load_bindings("a", a.now.unix()).unwrap().len(), 1);
    // a rings 201 for 203's call: a context of node a.
    let ring = a.request_with_auth(
        at(5073, A),
        &invite("203", "201", 5073, "x4"),
        "203",
        "pw203",
    );
    assert_eq!(requests(&ring, "INVITE").len(), 1);

    // Both heartbeat: nothing is taken over.
    for _ in 0..4 {
        a.advance(Duration::from_secs(1));
        b.advance(Duration::from_secs(1));
    }
    assert_eq!(b.store.nodes().unwrap().len(), 2);
    // a falls silent; b takes it over once 3 s passed since a's last heartbeat.
    b.advance(Duration::from_secs(2));
    assert_eq!(b.store.nodes().unwrap().len(), 2, "not yet");
    b.advance(Duration::from_secs(2));
    let nodes: Vec<String> = b.store.nodes().unwrap().into_iter().map(|n| n.0).collect();
    assert_eq!(nodes, ["b"]);
    assert!(b.store.load_bindings("a", b.now.unix()).unwrap().is_empty());
    let cdrs = b.store.recent_cdrs(10).unwrap();
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    assert_eq!(
        (cdrs[0].node.as_str(), cdrs[0].disposition.as_str()),
        ("a", "interrupted")
    );
    // A call for 201 through b now finds nobody.
    let out = b.dial("201", "x5");
    assert!(statuses(&out).contains(&480), "{out:?}");

    // a was only stalled: its next heartbeat finds its row gone and writes 201 again.
    a.advance(Duration::from_secs(1));
    assert_eq!(a.store.load_bindings("a", a.now.unix()).unwrap().len(), 1);
    let nodes: Vec<String> = b.store.nodes().unwrap().into_iter().map(|n| n.0).collect();
    assert_eq!(nodes, ["a", "b"]);
}

/// Sends `msg` (which `from_port`'s node or phone sent) into `to`.
pub(super) fn deliver(to: &mut Harness, from_port: u16, msg: &SipMessage) {
    let local = to.engine.config.listen_addr().port();
    to.send(
        at(from_port, local),
        std::str::from_utf8(&msg.to_bytes()).unwrap(),
    );
}

/// In the office cluster, 204 calls 201 on node a (201 registered there) and 201 rings;
/// 202 is registered on node b. Returns a's INVITE to 201.
pub(super) fn ringing_on_a(a: &mut Harness, b: &mut Harness) -> SipMessage {
    assert_eq!(
        statuses(&a.register("201", "pw201", at(5071, A), 600)),
        [200]
    );
    assert_eq!(
        statuses(&b.register("202", "pw202", at(5072, B), 600)),
        [200]
    );
    let ring = a.request_with_auth(
        at(5074, A),
        &invite("204", "201", 5074, "c1"),
        "204",
        "pw204",
    );
    let to_201 = requests(&ring, "INVITE")[0].1.clone();
    a.send(
        at(5071, A),
        &answer(&to_201, 180, "Ringing", "b1", 5071, ""),
    );
    assert_eq!(statuses(&a.sent()), [180]);
    to_201
}

/// 202 dials `code` on node b (advertising Replaces or not); returns b's INVITE to node a.
fn pick_on_b(b: &mut Harness, code: &str, replaces: bool) -> SipMessage {
    let mut text = invite("202", code, 5072, "pick5072");
    if replaces {
        text = text.replacen("Content-Type", "Supported: replaces\r\nContent-Type", 1);
    }
    let out = b.request_with_auth(at(5072, B), &text, "202", "pw202");
    let forwarded = requests(&out, "INVITE");
    assert_eq!(forwarded.len(), 1, "{out:?}");
    assert_eq!(forwarded[0].0.addr, at(A, B).addr, "to the owner node");
    forwarded[0].1.clone()
}

pub(super) fn find(
    msgs: &[(Peer, SipMessage)],
    port: u16,
    what: impl Fn(&SipMessage) -> bool,
) -> Option<&SipMessage> {
    msgs.iter()
        .find(|(peer, msg)| peer.addr.port() == port && what(msg))
        .map(|(_, msg)| msg)
}

#[test]
fn a_picker_on_node_b_takes_a_call_ringing_on_node_a_through_replaces_and_pays_for_it() {
    let (mut a, mut b) = office_cluster();
    let to_201 = ringing_on_a(&mut a, &mut b);

    // b's claim finds the call on a: the pickup goes there, signed, with the claim.
    let to_a = pick_on_b(&mut b, "*8", true);
    let claim = to_a.header(&Name::from("X-Gateway-Pickup")).unwrap();
    assert!(
        claim.starts_with("a-") && claim.ends_with(";method=group;mode=replaces"),
        "{claim}"
    );
    assert!(to_a.header(&Name::from("X-Gateway-Node")).is_some());

    // a runs the seed flow: 201's leg cancelled with the Reason, the dummy 183 and the
    // INVITE with Replaces reach the picker through b, naming the picker's dialog with b.
    deliver(&mut a, B, &to_a);
    let out = exchange(&mut a, &mut b);
    let cancel = find(&out, 5071, |m| m.method() == Some(&Method::CANCEL)).expect("CANCEL");
    assert_eq!(
        cancel.header(&Name::from("Reason")),
        Some("SIP;cause=200;text=\"Call completed elsewhere\"")
    );
    let dummy = find(&out, 5072, |m| m.status() == Some(183)).expect("183 to the picker");
    let dummy_tag = dummy.to_header().unwrap().tag().unwrap().to_string();
    assert!(String::from_utf8_lossy(&dummy.body).contains("a=inactive"));
    let replaces_invite = find(&out, 5072, |m| m.method() == Some(&Method::INVITE))
        .expect("INVITE with Replaces to the picker")
        .clone();
    assert_eq!(
        replaces_invite.header(&Name::REPLACES),
        Some(format!("pick5072;to-tag=a5072;from-tag={dummy_tag};early-only").as_str())
    );
    assert_eq!(
        replaces_invite.from_header().unwrap().user().as_deref(),
        Some("204"),
        "the caller's identity"
    );
    assert!(replaces_invite
        .header(&Name::CALL_INFO)
        .is_some_and(|v| v.contains("answer-after=0")));
    assert!(replaces_invite
        .header(&Name::from("X-Gateway-Node"))
        .is_none());
    assert!(replaces_invite
        .header(&Name::from("X-Gateway-Pickup"))
        .is_none());
    a.send(
        at(5071, A),
        &answer(&to_201, 487, "Request Terminated", "b1", 5071, ""),
    );
    exchange(&mut a, &mut b);

    // The picker answers: the caller on a is connected, the dummy ends with 487.
    deliver(
        &mut b,
        5072,
        &SipMessage::parse_datagram(
            answer(
                &replaces_invite,
                200,
                "OK",
                "pk",
                5072,
                "v=0\r\ns=picker\r\n",
            )
            .as_bytes(),
        )
        .unwrap(),
    );
    let out = exchange(&mut a, &mut b);
    let connected = find(&out, 5074, |m| m.status() == Some(200)).expect("200 to the caller");
    assert_eq!(&connected.body[..], b"v=0\r\ns=picker\r\n");
    assert!(find(&out, 5072, |m| m.method() == Some(&Method::ACK)).is_some());
    let ended = find(&out, 5072, |m| m.status() == Some(487)).expect("the dummy ends");
    assert_eq!(ended.to_header().unwrap().tag(), Some(dummy_tag.as_str()));

    // The caller hangs up: the BYE reaches the picker through b; a bills the picker.
    let a_tag = connected.to_header().unwrap().tag().unwrap().to_string();
    a.send(
        at(5074, A),
        &format!(
            "BYE sip:gw@127.0.0.1:5061 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5074;branch=z9hG4bKbye4\r\n\
From: <sip:204@127.0.0.1>;tag=a5074\r\nTo: <sip:201@127.0.0.1>;tag={a_tag}\r\n\
Call-ID: c1\r\nMax-Forwards: 70\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
        ),
    );
    let out = exchange(&mut a, &mut b);
    let bye = find(&out, 5072, |m| m.method() == Some(&Method::BYE)).expect("BYE to the picker");
    deliver(&mut b, 5072, &bye.response(200, "OK", None));
    exchange(&mut a, &mut b);
    let cdrs = a.store.recent_cdrs(10).unwrap();
    assert_eq!(cdrs.len(), 1, "one CDR, by the owner: {cdrs:?}");
    let cdr = &cdrs[0];
    assert_eq!(
        (
            cdr.node.as_str(),
            cdr.answered_by.as_deref(),
            cdr.billed.as_deref(),
            cdr.pickup_method.as_str(),
            cdr.disposition.as_str()
        ),
        ("a", Some("202"), Some("202"), "group", "answered")
    );
}

#[test]
fn a_picker_on_node_b_without_replaces_is_bridged_by_the_owner_through_b() {
    let (mut a, mut b) = office_cluster();
    ringing_on_a(&mut a, &mut b);
    let to_a = pick_on_b(&mut b, "**201", false);
    assert!(to_a
        .header(&Name::from("X-Gateway-Pickup"))
        .is_some_and(|claim| claim.ends_with(";method=directed;mode=bridge")));
    deliver(&mut a, B, &to_a);
    let out = exchange(&mut a, &mut b);
    // The picker's own INVITE is answered (through b) and the caller connected.
    let picker_ok = find(&out, 5072, |m| m.status() == Some(200)).expect("200 to the picker");
    assert!(String::from_utf8_lossy(&picker_ok.body).contains("m=audio"));
    assert!(find(&out, 5074, |m| m.status() == Some(200)).is_some());
    assert!(find(&out, 5072, |m| m.method() == Some(&Method::INVITE)).is_none());
    assert_eq!(a.store.recent_cdrs(10).unwrap().len(), 0, "still up");
}

#[test]
fn a_blf_key_s_replaces_reaching_the_wrong_node_is_claimed_through_the_store() {
    let (mut a, mut b) = office_cluster();
    let to_201 = ringing_on_a(&mut a, &mut b);
    b.register("203", "pw203", at(5073, B), 600);
    let call_id = to_201.call_id().unwrap().to_string();
    let gw_tag = to_201.from_header().unwrap().tag().unwrap().to_string();
    let blf = |header: &str, n: u16| {
        invite("203", "201", 5073, &format!("blf{n}")).replacen(
            "Content-Type",
            &format!("Replaces: {header}\r\nContent-Type"),
            1,
        )
    };
    // Tags that are not the leg's: nothing to take, on any node.
    let wrong = b.request_with_auth(
        at(5073, B),
        &blf(&format!("{call_id};to-tag=nope;from-tag=b1"), 1),
        "203",
        "pw203",
    );
    assert!(statuses(&wrong).contains(&481), "{wrong:?}");
    assert!(requests(&wrong, "INVITE").is_empty());
    // The leg's ids (as the NOTIFY gave them): b forwards the pickup to a.
    let out = b.request_with_auth(
        at(5073, B),
        &blf(&format!("{call_id};to-tag=b1;from-tag={gw_tag}"), 2),
        "203",
        "pw203",
    );
    let to_a = requests(&out, "INVITE")[0].1.clone();
    assert!(to_a
        .header(&Name::from("X-Gateway-Pickup"))
        .is_some_and(|claim| claim.ends_with(";method=replaces;mode=bridge")));
    assert!(
        to_a.header(&Name::REPLACES).is_none(),
        "the key's Replaces names a dialog of node a, not one of b's"
    );
    deliver(&mut a, B, &to_a);
    let out = exchange(&mut a, &mut b);
    assert!(find(&out, 5071, |m| m.method() == Some(&Method::CANCEL)).is_some());
    let key_ok = find(&out, 5073, |m| m.status() == Some(200)).expect("the key's INVITE answered");
    assert!(String::from_utf8_lossy(&key_ok.body).contains("m=audio"));
    assert!(find(&out, 5074, |m| m.status() == Some(200)).is_some());
}

#[test]
fn a_picker_on_node_b_declining_the_replaces_invite_lets_the_call_ring_again_on_a() {
    let (mut a, mut b) = office_cluster();
    ringing_on_a(&mut a, &mut b);
    let to_a = pick_on_b(&mut b, "*8", true);
    deliver(&mut a, B, &to_a);
    let out = exchange(&mut a, &mut b);
    let replaces_invite = find(&out, 5072, |m| m.method() == Some(&Method::INVITE))
        .unwrap()
        .clone();
    deliver(
        &mut b,
        5072,
        &SipMessage::parse_datagram(
            answer(&replaces_invite, 603, "Decline", "pk", 5072, "").as_bytes(),
        )
        .unwrap(),
    );
    let out = exchange(&mut a, &mut b);
    // 201 rings again (a new INVITE from a), the picker's INVITE ends with 480 through b.
    assert!(
        find(&out, 5071, |m| m.method() == Some(&Method::INVITE)).is_some(),
        "{out:?}"
    );
    assert!(
        find(&out, 5072, |m| m.status() == Some(480)).is_some(),
        "{out:?}"
    );
    // And another picker can take it: the claim was given back.
    b.register("203", "pw203", at(5073, B), 600);
    let again = b.request_with_auth(
        at(5073, B),
        &invite("203", "*8", 5073, "pick5073"),
        "203",
        "pw203",
    );
    assert!(requests(&again, "INVITE")
        .iter()
        .any(|(_, m)| m.header(&Name::from("X-Gateway-Pickup")).is_some()));
}

#[test]
fn a_claim_header_counts_only_from_a_node_and_only_for_the_claim_s_picker() {
    let (mut a, mut b) = office_cluster();
    ringing_on_a(&mut a, &mut b);
    // A phone sending the header itself: an ordinary INVITE (challenged, then no pickup).
    let forged = invite("203", "201", 5073, "forged").replacen(
        "Content-Type",
        "X-Gateway-Pickup: a-1;method=group;mode=bridge\r\nContent-Type",
        1,
    );
    a.send(at(5073, A), &forged);
    assert_eq!(statuses(&a.sent()), [407]);
    // A node forwarding a claim that is not in the store for that picker: nothing taken.
    let to_a = pick_on_b(&mut b, "*8", false);
    let mut other_picker = String::from_utf8(to_a.to_bytes().to_vec())
        .unwrap()
        .replace("sip:202@", "sip:203@");
    let mut msg = SipMessage::parse_datagram(other_picker.as_bytes()).unwrap();
    crate::auth::node::sign(&mut msg, SECRET.as_bytes(), "b", a.now.unix());
    other_picker = String::from_utf8(msg.to_bytes().to_vec()).unwrap();
    a.send(at(B, A), &other_picker);
    let out = a.sent();
    assert!(statuses(&out).contains(&480), "{out:?}");
    assert!(requests(&out, "CANCEL").is_empty(), "201 keeps ringing");
}

/// 202 calls 201 (registered on node a) through node b; a rings the phone. Returns b's
/// INVITE to a and a's INVITE to the phone.
fn routed_through_a(a: &mut Harness, b: &mut Harness, call_id: &str) -> (SipMessage, SipMessage) {
    a.register("201", "pw201", at(5071, A), 600);
    a.run_store();
    let out = b.dial("201", call_id);
    let (_, to_a) = requests(&out, "INVITE")[0].clone();
    deliver(a, B, &to_a);
    let to_phone = requests(&a.sent(), "INVITE")[0].1.clone();
    (to_a, to_phone)
}

#[test]
fn a_call_ringing_through_a_node_that_dies_fails_at_the_takeover_not_the_ring_timeout() {
    let (mut a, mut b) = cluster();
    // a rings the phone, then stops (no answer ever comes back).
    routed_through_a(&mut a, &mut b, "x6");
    b.advance(Duration::from_secs(1));
    assert!(b.sent().iter().all(|(_, m)| m.status() != Some(480)));
    // b takes a over after 3 s of silence: the caller hears 480 at once.
    let mut told = Vec::new();
    for _ in 0..5 {
        b.advance(Duration::from_secs(1));
        told.extend(b.sent());
    }
    let failed = told
        .iter()
        .find(|(peer, m)| peer.addr.port() == 5072 && m.status() == Some(480))
        .unwrap_or_else(|| panic!("the caller is told: {told:?}"));
    assert!(
        String::from_utf8_lossy(&failed.1.to_bytes()).contains("node a stopped"),
        "{failed:?}"
    );
    let cdrs = b.store.recent_cdrs(10).unwrap();
    let by_b: Vec<_> = cdrs.iter().filter(|c| c.node == "b").collect();
    assert_eq!(by_b.len(), 1, "{cdrs:?}");
    assert_eq!(by_b[0].disposition, "no-answer");
}

#[test]
fn a_call_up_through_a_node_that_dies_is_hung_up_and_billed_by_the_caller_s_node() {
    let (mut a, mut b) = cluster();
    let (_, to_phone) = routed_through_a(&mut a, &mut b, "x7");
    a.send(
        at(5071, A),
        &answer(&to_phone, 200, "OK", "p7", 5071, "v=0\r\n"),
    );
    let to_caller = exchange(&mut a, &mut b);
    assert!(statuses(&to_caller).contains(&200));
    let mut told = Vec::new();
    for _ in 0..6 {
        b.advance(Duration::from_secs(1));
        told.extend(b.sent());
    }
    let byes: Vec<_> = requests(&told, "BYE");
    assert!(!byes.is_empty(), "{told:?}");
    assert!(
        byes.iter()
            .all(|(peer, bye)| peer.addr.port() == 5072
                && bye.top_branch() == byes[0].1.top_branch()),
        "one BYE (with its retransmissions), only to the caller: a is gone: {byes:?}"
    );
    let cdr = b
        .store
        .recent_cdrs(10)
        .unwrap()
        .into_iter()
        .find(|c| c.node == "b")
        .expect("b's CDR");
    assert_eq!(
        (cdr.disposition.as_str(), cdr.hangup_cause.as_str()),
        ("answered", "node a stopped")
    );
}

#[test]
fn a_node_s_cancel_reason_reaches_the_phone_a_phone_s_does_not() {
    let (mut a, mut b) = cluster();
    let (to_a, to_phone) = routed_through_a(&mut a, &mut b, "x8");
    a.send(
        at(5071, A),
        &answer(&to_phone, 180, "Ringing", "p8", 5071, ""),
    );
    exchange(&mut a, &mut b);
    let reason = "SIP;cause=200;text=\"Call completed elsewhere\"";
    // The CANCEL of `invite` (same Request-URI, Via, Call-ID, From, To, CSeq number).
    let cancel = |invite: &SipMessage| {
        let mut cancel = invite.clone();
        let text = String::from_utf8(cancel.to_bytes().to_vec())
            .unwrap()
            .replacen("INVITE sip:", "CANCEL sip:", 1)
            .replace(" INVITE\r\n", " CANCEL\r\n");
        cancel = SipMessage::parse_datagram(text.as_bytes()).unwrap();
        cancel.body = Default::default();
        cancel.remove_header(&Name::CONTENT_TYPE);
        cancel.set_header(Name::from("Reason"), reason);
        cancel
    };
    // Node b cancels with a Reason: the phone's CANCEL carries it.
    let mut from_b = cancel(&to_a);
    crate::auth::node::sign(&mut from_b, SECRET.as_bytes(), "b", a.now.unix());
    deliver(&mut a, B, &from_b);
    let out = a.sent();
    let to_phone_cancel = find(&out, 5071, |m| m.method() == Some(&Method::CANCEL)).unwrap();
    assert_eq!(to_phone_cancel.header(&Name::from("Reason")), Some(reason));

    // A phone cancelling its own call with a Reason: not passed on.
    let mut h = Harness::with_config(CONFIG);
    h.register("201", "pw201", at(5071, 5060), 600);
    let out = h.dial("201", "x9");
    let (_, phone_invite) = requests(&out, "INVITE")[0].clone();
    h.send(
        at(5071, 5060),
        &answer(&phone_invite, 180, "Ringing", "p9", 5071, ""),
    );
    h.sent();
    let caller_invite =
        SipMessage::parse_datagram(invite("202", "201", 5072, "x9").as_bytes()).unwrap();
    let mut caller_cancel = cancel(&caller_invite);
    // The retried (authenticated) INVITE is the one the call belongs to.
    let text = String::from_utf8(caller_cancel.to_bytes().to_vec())
        .unwrap()
        .replace("branch=z9hG4bKx9", "branch=z9hG4bKretryx9")
        .replace("CSeq: 1 CANCEL", "CSeq: 2 CANCEL");
    caller_cancel = SipMessage::parse_datagram(text.as_bytes()).unwrap();
    deliver(&mut h, 5072, &caller_cancel);
    let out = h.sent();
    let cancel_to_phone = find(&out, 5071, |m| m.method() == Some(&Method::CANCEL))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(cancel_to_phone.header(&Name::from("Reason")).is_none());
}

#[test]
fn when_the_database_is_back_the_registrations_are_written_again() {
    let (mut a, _b) = cluster();
    a.register("201", "pw201", at(5071, A), 600);
    a.register("202", "pw202", at(5072, A), 600);
    a.run_store();
    // Lost while the database was away: the store has none of them now.
    a.store.replace_bindings("a", "201", &[]).unwrap();
    a.store.replace_bindings("a", "202", &[]).unwrap();
    a.engine
        .handle_store_result(a.now, crate::store::StoreResult::DatabaseBack);
    a.run_store();
    let mut stored: Vec<String> = a
        .store
        .load_bindings("a", a.now.unix())
        .unwrap()
        .into_iter()
        .map(|(aor, _)| aor)
        .collect();
    stored.sort();
    assert_eq!(stored, ["201", "202"]);
}
