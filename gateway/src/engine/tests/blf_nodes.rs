//! BLF across two nodes sharing one store, in virtual time: a key on node b watching 201,
//! whose call rings on node a, sees it with a's ids (through a notification, or at b's next
//! poll without one), takes it with them, and goes dark when a is taken over; privacy is
//! b's. Office config: 201-203 in `sales`, 204 in no group; 201 registered on a.

use super::blf::{
    answered_notifies, assert_valid, attr, body, notifies, one_notify, subscribe, subscribe_text,
    DIALOG,
};
use super::nodes::{at, deliver, exchange, find, office_cluster_edited, ringing_on_a, A, B};
use super::*;
use ezk_sip_types::Method;

/// What PostgreSQL's NOTIFY would tell `to` of `from`'s BLF writes, handed to `to` (as its
/// listener thread does).
fn listen(from: &mut Harness, to: &mut Harness) {
    for notice in std::mem::take(&mut from.notices) {
        to.engine.handle_store_result(to.now, notice);
        to.run_store();
    }
}

/// Advances both nodes by `by`, one second at a time (both heartbeat: nobody is taken
/// over); returns what b sent meanwhile.
fn both_advance(a: &mut Harness, b: &mut Harness, by: Duration) -> Vec<(Peer, SipMessage)> {
    let mut sent = Vec::new();
    let mut left = by;
    while !left.is_zero() {
        let step = left.min(Duration::from_secs(1));
        a.advance(step);
        b.advance(step);
        sent.extend(b.sent());
        left -= step;
    }
    sent
}

/// `subscriber` (at `port`) watches 201 on node b; the first NOTIFY (idle) is answered.
/// Then both nodes heartbeat once: a learns that a key on b watches 201.
fn key_on_b(a: &mut Harness, b: &mut Harness, subscriber: &str, port: u16) {
    let out = subscribe(b, subscriber, port, "201", DIALOG);
    let idle = one_notify(b, &out, port);
    assert!(body(&idle).contains("id=\"idle\""), "{}", body(&idle));
    assert!(both_advance(a, b, Duration::from_secs(1)).is_empty());
    a.sent();
}

/// The office cluster, 203's key on b watching 201, 201 ringing on a: returns a's INVITE
/// to 201 (the leg whose ids the key must see).
fn ringing_watched_from_b(a: &mut Harness, b: &mut Harness) -> SipMessage {
    key_on_b(a, b, "203", 5073);
    let to_201 = ringing_on_a(a, b);
    assert!(
        notifies(&b.sent(), 5073).is_empty(),
        "nothing before b hears of it"
    );
    to_201
}

/// The one NOTIFY b sent the key at `port` in `out`, answered; its body.
fn the_notify(b: &mut Harness, out: &[(Peer, SipMessage)], port: u16) -> String {
    let notify = one_notify(b, out, port);
    assert_valid(&notify);
    body(&notify)
}

/// Checks that `xml` shows 201's early dialog with the ids of a's leg to the phone.
fn assert_early_with_a_s_ids(xml: &str, to_201: &SipMessage) {
    assert!(xml.contains("<state>early</state>"), "{xml}");
    assert_eq!(attr(xml, "call-id").as_deref(), to_201.call_id(), "{xml}");
    assert_eq!(
        attr(xml, "local-tag").as_deref(),
        Some("b1"),
        "the phone's tag"
    );
    assert_eq!(
        attr(xml, "remote-tag").as_deref(),
        to_201.from_header().unwrap().tag(),
        "a's tag"
    );
    assert_eq!(attr(xml, "direction").as_deref(), Some("recipient"));
    assert!(xml.contains("display=\"Reception 204\""), "{xml}");
    assert!(
        xml.contains("<target uri=\"sip:204@127.0.0.1:5060\"/>"),
        "reached through b, the key's gateway: {xml}"
    );
}

/// 204 cancels its call on a, and 201's phone answers the CANCELed INVITE 487.
fn caller_cancels_on_a(a: &mut Harness, to_201: &SipMessage) {
    a.send(
        at(5074, A),
        "CANCEL sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5074;branch=z9hG4bKretryc1;rport\r\n\
Max-Forwards: 70\r\nFrom: \"Caller\" <sip:204@127.0.0.1>;tag=a5074\r\nTo: <sip:201@127.0.0.1>\r\n\
Call-ID: c1\r\nCSeq: 2 CANCEL\r\nContent-Length: 0\r\n\r\n",
    );
    a.send(
        at(5071, A),
        &answer(to_201, 487, "Request Terminated", "b1", 5071, ""),
    );
    a.sent();
}

fn office_cluster() -> (Harness, Harness) {
    office_cluster_edited(|office| office)
}

#[test]
fn a_key_on_node_b_sees_the_call_ringing_on_node_a_with_a_s_ids_as_a_notifies_it() {
    let (mut a, mut b) = office_cluster();
    let to_201 = ringing_watched_from_b(&mut a, &mut b);
    // a wrote 201's dialogs; the notification makes b read that row at once.
    listen(&mut a, &mut b);
    let out = b.sent();
    let early = the_notify(&mut b, &out, 5073);
    assert_early_with_a_s_ids(&early, &to_201);
    assert_eq!(attr(&early, "version").as_deref(), Some("1"));

    caller_cancels_on_a(&mut a, &to_201);
    listen(&mut a, &mut b);
    let out = b.sent();
    let gone = the_notify(&mut b, &out, 5073);
    assert!(
        gone.contains("<state event=\"cancelled\">terminated</state>"),
        "{gone}"
    );
    assert_eq!(attr(&gone, "call-id").as_deref(), to_201.call_id());
    // Terminated once: the polls that follow find nothing new.
    let later = both_advance(&mut a, &mut b, Duration::from_secs(2));
    assert!(notifies(&later, 5073).is_empty(), "{later:?}");
}

#[test]
fn without_notifications_a_key_on_node_b_learns_of_the_call_at_b_s_next_poll() {
    let (mut a, mut b) = office_cluster();
    let to_201 = ringing_watched_from_b(&mut a, &mut b);
    // No LISTEN (CockroachDB): node.blf_poll_ms (1 s) later, b has read the change.
    a.notices.clear();
    b.advance(Duration::from_millis(999));
    assert!(notifies(&b.sent(), 5073).is_empty(), "not before the poll");
    b.advance(Duration::from_millis(1));
    let out = b.sent();
    assert_early_with_a_s_ids(&the_notify(&mut b, &out, 5073), &to_201);

    caller_cancels_on_a(&mut a, &to_201);
    a.notices.clear();
    let out = both_advance(&mut a, &mut b, Duration::from_secs(1));
    let gone = the_notify(&mut b, &out, 5073);
    assert!(gone.contains("event=\"cancelled\""), "{gone}");
    let later = both_advance(&mut a, &mut b, Duration::from_secs(3));
    assert!(notifies(&later, 5073).is_empty(), "{later:?}");
}

#[test]
fn a_key_on_node_b_goes_dark_when_node_a_dies_mid_ring_and_lights_again_if_a_was_only_stalled() {
    let (mut a, mut b) = office_cluster();
    let to_201 = ringing_watched_from_b(&mut a, &mut b);
    listen(&mut a, &mut b);
    let out = b.sent();
    assert_early_with_a_s_ids(&the_notify(&mut b, &out, 5073), &to_201);

    // a falls silent (kill -9): once b takes it over (3 s after a's last heartbeat), the
    // key is told the dialog is over, once.
    let mut told = Vec::new();
    for _ in 0..2 {
        b.advance(Duration::from_secs(1));
        told.extend(b.sent());
    }
    assert!(notifies(&told, 5073).is_empty(), "not before the takeover");
    let mut dark = Vec::new();
    for _ in 0..4 {
        b.advance(Duration::from_secs(1));
        let out = b.sent();
        dark.extend(answered_notifies(&mut b, &out, 5073));
    }
    assert_eq!(dark.len(), 1, "{dark:?}");
    assert_valid(&dark[0]);
    let xml = body(&dark[0]);
    assert!(
        xml.contains("<state event=\"cancelled\">terminated</state>")
            && !xml.contains("<state>early</state>"),
        "{xml}"
    );
    assert_eq!(
        b.store.nodes().unwrap().len(),
        1,
        "a was taken over: {:?}",
        b.store.nodes()
    );

    // a was only stalled: its next heartbeat finds its row gone, and it writes its
    // dialogs again: the call still rings there.
    a.advance(Duration::from_secs(5));
    listen(&mut a, &mut b);
    let out = b.sent();
    assert_early_with_a_s_ids(&the_notify(&mut b, &out, 5073), &to_201);
}

#[test]
fn privacy_is_the_watching_node_s_for_remote_dialogs_as_for_its_own() {
    let (mut a, mut b) = office_cluster_edited(|office| {
        office.replacen(
            "display_name = \"Sales 201\"",
            "display_name = \"Sales 201\"\nblf_others = \"state-only\"",
            1,
        )
    });
    // 203 (in 201's pickup group) and 204 (in none: the states only) watch 201 on b.
    key_on_b(&mut a, &mut b, "203", 5073);
    key_on_b(&mut a, &mut b, "204", 5084);
    ringing_on_a(&mut a, &mut b);
    listen(&mut a, &mut b);
    let out = b.sent();
    let full = the_notify(&mut b, &out, 5073);
    assert!(
        full.contains("call-id=") && full.contains("<identity"),
        "{full}"
    );
    let bare = the_notify(&mut b, &out, 5084);
    assert!(bare.contains("<state>early</state>"), "{bare}");
    assert!(
        !bare.contains("call-id") && !bare.contains("identity") && !bare.contains("tag="),
        "{bare}"
    );
}

#[test]
fn a_key_on_node_b_takes_the_call_with_the_ids_of_its_notify_and_sees_it_replaced() {
    let (mut a, mut b) = office_cluster();
    let to_201 = ringing_watched_from_b(&mut a, &mut b);
    b.register("203", "pw203", at(5073, B), 600);
    listen(&mut a, &mut b);
    let out = b.sent();
    let early = the_notify(&mut b, &out, 5073);
    assert_early_with_a_s_ids(&early, &to_201);
    // RFC 3891: the gateway is the recipient, to-tag is its own tag (remote-tag).
    let replaces = format!(
        "{};to-tag={};from-tag={}",
        attr(&early, "call-id").unwrap(),
        attr(&early, "remote-tag").unwrap(),
        attr(&early, "local-tag").unwrap()
    );
    let key = invite("203", "204", 5073, "key1").replacen(
        "Content-Type",
        &format!("Replaces: {replaces}\r\nContent-Type"),
        1,
    );
    let out = b.request_with_auth(at(5073, B), &key, "203", "pw203");
    let to_a = requests(&out, "INVITE")[0].1.clone();
    assert!(to_a
        .header(&Name::from("X-Gateway-Pickup"))
        .is_some_and(|claim| claim.ends_with(";method=replaces;mode=bridge")));
    deliver(&mut a, B, &to_a);
    let out = exchange(&mut a, &mut b);
    assert!(find(&out, 5071, |m| m.method() == Some(&Method::CANCEL)).is_some());
    assert!(
        find(&out, 5073, |m| m.status() == Some(200)).is_some(),
        "{out:?}"
    );
    a.send(
        at(5071, A),
        &answer(&to_201, 487, "Request Terminated", "b1", 5071, ""),
    );
    exchange(&mut a, &mut b);
    // a's 201 was replaced by the key's phone: the key hears it, once.
    listen(&mut a, &mut b);
    let out = b.sent();
    let notified = answered_notifies(&mut b, &out, 5073);
    let replaced: Vec<String> = notified.iter().map(body).collect();
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert!(
        replaced[0].contains("<state event=\"replaced\">terminated</state>"),
        "{}",
        replaced[0]
    );
}

#[test]
fn a_call_node_a_carries_for_node_b_is_shown_once_with_the_ids_of_b_which_owns_it() {
    let (mut a, mut b) = office_cluster();
    a.register("201", "pw201", at(5071, A), 600);
    // 203's key on a watches 201.
    let text = subscribe_text("203", 5073, "201", DIALOG);
    let out = a.request_with_auth(at(5073, A), &text, "203", "pw203");
    let to_key = |msgs: &[(Peer, SipMessage)]| -> Vec<SipMessage> {
        requests(msgs, "NOTIFY")
            .into_iter()
            .filter(|(peer, _)| peer.addr.port() == 5073)
            .map(|(_, m)| m.clone())
            .collect()
    };
    let idle = to_key(&out);
    assert_eq!(idle.len(), 1, "{out:?}");
    deliver(&mut a, 5073, &idle[0].response(200, "OK", None));
    both_advance(&mut a, &mut b, Duration::from_secs(1));
    a.sent();

    // 202 calls 201 through b, which owns the call; a carries it to the phone.
    let out = b.dial("201", "x1");
    let (_, to_a) = requests(&out, "INVITE")[0].clone();
    deliver(&mut a, B, &to_a);
    let to_phone = exchange(&mut a, &mut b);
    let phone_invite = find(&to_phone, 5071, |m| m.method() == Some(&Method::INVITE))
        .expect("a rings the phone")
        .clone();
    a.send(
        at(5071, A),
        &answer(&phone_invite, 180, "Ringing", "p1", 5071, ""),
    );
    let out = exchange(&mut a, &mut b);
    assert!(
        to_key(&out).is_empty(),
        "a does not show the call it only carries: {out:?}"
    );
    // b shows it, with the ids of its own leg (to a): the one the store knows.
    listen(&mut b, &mut a);
    let out = a.sent();
    let notified = to_key(&out);
    assert_eq!(notified.len(), 1, "{out:?}");
    assert_valid(&notified[0]);
    let xml = body(&notified[0]);
    assert_eq!(xml.matches("<dialog ").count(), 1, "{xml}");
    assert!(xml.contains("<state>early</state>"), "{xml}");
    assert_eq!(attr(&xml, "call-id").as_deref(), to_a.call_id(), "{xml}");
    assert_eq!(
        attr(&xml, "remote-tag").as_deref(),
        to_a.from_header().unwrap().tag(),
        "b's tag"
    );
}

#[test]
fn a_node_writes_an_extension_s_dialogs_as_soon_as_a_key_on_another_node_watches_it() {
    let (mut a, mut b) = office_cluster();
    // 201 rings on a while no key watches it: a writes nothing.
    let to_201 = ringing_on_a(&mut a, &mut b);
    assert!(a.notices.is_empty(), "{:?}", a.notices);
    // 203's key subscribes on b: b knows nothing of a's call yet.
    let out = subscribe(&mut b, "203", 5073, "201", DIALOG);
    assert!(the_notify(&mut b, &out, 5073).contains("id=\"idle\""));
    // b's save of the subscription notifies a (no heartbeat needed), which writes 201's
    // dialogs at once; their notification brings them to the key.
    listen(&mut b, &mut a);
    listen(&mut a, &mut b);
    let out = b.sent();
    assert_early_with_a_s_ids(&the_notify(&mut b, &out, 5073), &to_201);
}
