//! BLF in virtual time: dialog subscriptions (RFC 6665) and their dialog-info NOTIFYs
//! (RFC 4235), privacy, limits, and the pickup an INVITE with Replaces built from a NOTIFY
//! does. Office config: 201-203 and the analog 101/102 in `sales`, 204 in no group.

use super::pickup::response_to;
use super::*;
use crate::engine::blf::NOTIFY_BATCH;
use ezk_sip_types::Method;

/// A SUBSCRIBE from `subscriber` (port `port`) for `target`'s dialogs, as text.
pub(super) fn subscribe_text(subscriber: &str, port: u16, target: &str, extra: &str) -> String {
    format!(
        "SUBSCRIBE sip:{target}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKsub{subscriber}{target};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{subscriber}@127.0.0.1>;tag=s{port}\r\nTo: <sip:{target}@127.0.0.1>\r\n\
Call-ID: sub-{subscriber}-{target}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:{subscriber}@127.0.0.1:{port}>\r\n\
{extra}Content-Length: 0\r\n\r\n"
    )
}

pub(super) const DIALOG: &str =
    "Event: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: 600\r\n";

/// Subscribes (answering the challenge); returns what followed the credentials.
pub(super) fn subscribe(
    h: &mut Harness,
    subscriber: &str,
    port: u16,
    target: &str,
    extra: &str,
) -> Vec<(Peer, SipMessage)> {
    let text = subscribe_text(subscriber, port, target, extra);
    h.request_with_auth(udp(port), &text, subscriber, &format!("pw{subscriber}"))
}

/// The NOTIFYs sent to `port`.
pub(super) fn notifies(msgs: &[(Peer, SipMessage)], port: u16) -> Vec<SipMessage> {
    requests(msgs, "NOTIFY")
        .into_iter()
        .filter(|(p, _)| *p == udp(port))
        .map(|(_, m)| m.clone())
        .collect()
}

/// The one NOTIFY sent to `port`, answered 200 by the subscriber.
pub(super) fn one_notify(h: &mut Harness, msgs: &[(Peer, SipMessage)], port: u16) -> SipMessage {
    let sent = notifies(msgs, port);
    assert_eq!(sent.len(), 1, "one NOTIFY to {port}: {:?}", statuses(msgs));
    let notify = sent[0].clone();
    reply(h, &notify, port, 200);
    notify
}

/// Answers 200 to every NOTIFY in `msgs` and to those that follow (one NOTIFY is in
/// flight per subscription: the next waits for its answer); returns all sent to `port`.
pub(super) fn answered_notifies(
    h: &mut Harness,
    msgs: &[(Peer, SipMessage)],
    port: u16,
) -> Vec<SipMessage> {
    let mut pending: Vec<(Peer, SipMessage)> =
        requests(msgs, "NOTIFY").into_iter().cloned().collect();
    let mut to_port = Vec::new();
    while !pending.is_empty() {
        let mut next = Vec::new();
        for (peer, notify) in pending {
            let response = notify.response(200, "OK", None);
            h.send(peer, std::str::from_utf8(&response.to_bytes()).unwrap());
            next.extend(requests(&h.sent(), "NOTIFY").into_iter().cloned());
            if peer == udp(port) {
                to_port.push(notify);
            }
        }
        pending = next;
    }
    to_port
}

/// 201's phone (port 5071, tag b1) answers `b_invite` with `code` (180 or 200, with
/// `body`); returns the one NOTIFY this causes to the key on port 5072, answered 200.
fn phone_answers(h: &mut Harness, b_invite: &SipMessage, code: u16, body: &str) -> SipMessage {
    let reason = if code == 180 { "Ringing" } else { "OK" };
    h.send(udp(5071), &answer(b_invite, code, reason, "b1", 5071, body));
    let out = h.sent();
    one_notify(h, &out, 5072)
}

fn reply(h: &mut Harness, request: &SipMessage, port: u16, code: u16) {
    let response = request.response(code, "Whatever", None);
    h.send(
        udp(port),
        std::str::from_utf8(&response.to_bytes()).unwrap(),
    );
}

pub(super) fn body(notify: &SipMessage) -> String {
    String::from_utf8(notify.body.to_vec()).unwrap()
}

/// The value of the first `name="..."` in `xml` (after the XML declaration).
pub(super) fn attr(xml: &str, name: &str) -> Option<String> {
    let xml = xml.split_once("?>").map_or(xml, |(_, rest)| rest);
    let start = xml.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(xml[start..start + xml[start..].find('"')?].to_string())
}

/// Checks a NOTIFY's headers and validates its body against RFC 4235's schema.
pub(super) fn assert_valid(notify: &SipMessage) {
    assert_eq!(notify.header(&Name::EVENT), Some("dialog"));
    assert_eq!(
        notify.header(&Name::CONTENT_TYPE),
        Some("application/dialog-info+xml")
    );
    assert!(notify.header(&Name::CONTACT).is_some());
    crate::test_support::assert_valid_dialog_info(&notify.body);
}

/// 204 (port 5074) calls 201 (registered at 5071), which rings: the INVITE to 201 and
/// everything sent meanwhile.
fn ring_201(h: &mut Harness) -> (SipMessage, Vec<(Peer, SipMessage)>) {
    assert_eq!(statuses(&h.register("201", "pw201", udp(5071), 600)), [200]);
    let mut out = h.request_with_auth(udp(5074), &invite("204", "201", 5074, "c1"), "204", "pw204");
    let b_invite = requests(&out, "INVITE")[0].1.clone();
    h.send(
        udp(5071),
        &answer(&b_invite, 180, "Ringing", "b1", 5071, ""),
    );
    out.extend(h.sent());
    (b_invite, out)
}

/// The office config with `line` in its `[subscriptions]` section.
fn office_with_subscriptions(line: &str) -> Harness {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml");
    let config = std::fs::read_to_string(path).unwrap().replacen(
        "[[extension]]",
        &format!("[subscriptions]\n{line}\n\n[[extension]]"),
        1,
    );
    Harness::with_config(&config)
}

/// 202 (port 5072) watches 201; returns the first NOTIFY (answered).
fn watching_201(h: &mut Harness) -> SipMessage {
    let out = subscribe(h, "202", 5072, "201", DIALOG);
    let ok = response_to(&out, udp(5072), 200).expect("200 to the SUBSCRIBE");
    assert_eq!(ok.header(&Name::EXPIRES), Some("600"));
    one_notify(h, &out, 5072)
}

/// An in-dialog SUBSCRIBE from 202 in the subscription `first` started, as text.
fn in_dialog_subscribe(first: &SipMessage, cseq: u32, expires: u32) -> String {
    let tag = first.from_header().unwrap().tag().unwrap().to_string();
    subscribe_text(
        "202",
        5072,
        "201",
        &format!("Event: dialog\r\nExpires: {expires}\r\n"),
    )
    .replacen(
        "To: <sip:201@127.0.0.1>",
        &format!("To: <sip:201@127.0.0.1>;tag={tag}"),
        1,
    )
    .replacen("CSeq: 1 SUBSCRIBE", &format!("CSeq: {cseq} SUBSCRIBE"), 1)
    .replacen(
        "branch=z9hG4bKsub202201",
        &format!("branch=z9hG4bKre{cseq}"),
        1,
    )
}

#[test]
fn a_subscribe_is_challenged_then_answered_with_the_idle_state() {
    let mut h = Harness::office();
    h.send(udp(5072), &subscribe_text("202", 5072, "201", DIALOG));
    assert_eq!(statuses(&h.sent()), [407], "authenticated like an INVITE");
    let notify = watching_201(&mut h);
    assert_valid(&notify);
    assert_eq!(
        notify.header(&Name::SUBSCRIPTION_STATE),
        Some("active;expires=600")
    );
    let xml = body(&notify);
    assert_eq!(attr(&xml, "version").as_deref(), Some("0"));
    assert_eq!(attr(&xml, "entity").as_deref(), Some("sip:201@127.0.0.1"));
    assert!(
        xml.contains("<dialog id=\"idle\">") && !xml.contains("call-id"),
        "idle: one terminated dialog (Yealink needs a dialog element): {xml}"
    );
}

#[test]
fn a_ringing_call_is_notified_early_with_the_callee_legs_ids_then_confirmed_then_gone() {
    let mut h = Harness::office();
    watching_201(&mut h);
    assert_eq!(statuses(&h.register("201", "pw201", udp(5071), 600)), [200]);
    let out = h.request_with_auth(udp(5074), &invite("204", "201", 5074, "c1"), "204", "pw204");
    assert!(
        notifies(&out, 5072).is_empty(),
        "201's phone has not answered the INVITE yet (trying): nothing to show"
    );
    let b_invite = requests(&out, "INVITE")[0].1.clone();
    let early = phone_answers(&mut h, &b_invite, 180, "");
    assert_valid(&early);
    let xml = body(&early);
    assert_eq!(attr(&xml, "version").as_deref(), Some("1"));
    assert_eq!(
        attr(&xml, "call-id"),
        b_invite.call_id().map(str::to_string)
    );
    assert_eq!(
        attr(&xml, "local-tag").as_deref(),
        Some("b1"),
        "the callee's tag"
    );
    assert_eq!(
        attr(&xml, "remote-tag").as_deref(),
        b_invite.from_header().unwrap().tag()
    );
    assert_eq!(attr(&xml, "direction").as_deref(), Some("recipient"));
    assert!(xml.contains("<state>early</state>"), "{xml}");
    assert!(
        xml.contains("<identity display=\"Reception 204\">sip:204@127.0.0.1</identity>"),
        "{xml}"
    );
    assert!(
        xml.contains("<target uri=\"sip:204@127.0.0.1:5060\"/>"),
        "{xml}"
    );
    assert!(
        xml.contains("<identity display=\"Sales 201\">sip:201@127.0.0.1</identity>"),
        "{xml}"
    );

    let confirmed = phone_answers(&mut h, &b_invite, 200, "v=0\r\n");
    assert!(body(&confirmed).contains("<state>confirmed</state>"));
    let bye = format!(
        "BYE sip:gw@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKbye\r\n\
From: <sip:201@127.0.0.1>;tag=b1\r\n{}\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        format_args!("To: {}", b_invite.header(&Name::FROM).unwrap()),
        b_invite.call_id().unwrap()
    );
    h.send(udp(5071), &bye);
    let ended = {
        let out = h.sent();
        one_notify(&mut h, &out, 5072)
    };
    assert_valid(&ended);
    assert!(
        body(&ended).contains("<state>terminated</state>"),
        "{}",
        body(&ended)
    );
    h.advance(Duration::from_secs(1));
    assert!(
        notifies(&h.sent(), 5072).is_empty(),
        "nothing changed since"
    );
}

/// 203 takes the call ringing 201 with an INVITE whose Replaces header `replaces` builds
/// from the early NOTIFY's ids.
fn blf_pickup(replaces: impl Fn(&str, &str, &str, &str, &str) -> String) {
    let mut h = Harness::office();
    let out = subscribe(&mut h, "203", 5073, "201", DIALOG);
    one_notify(&mut h, &out, 5073);
    let (_, out) = ring_201(&mut h);
    let early = answered_notifies(&mut h, &out, 5073);
    let xml = body(early.last().expect("an early NOTIFY"));
    let (call_id, local, remote) = (
        attr(&xml, "call-id").unwrap(),
        attr(&xml, "local-tag").unwrap(),
        attr(&xml, "remote-tag").unwrap(),
    );
    let caller = h.engine.calls.calls.values().next().unwrap();
    let header = replaces(
        &call_id,
        &local,
        &remote,
        &caller.a.call_id,
        &caller.a.local_tag,
    );
    let target = xml
        .split("<remote>")
        .nth(1)
        .and_then(|r| attr(r, "uri"))
        .unwrap();
    assert_eq!(
        target, "sip:204@127.0.0.1:5060",
        "the INVITE goes to the gateway"
    );
    // RFC 3891 §4: a phone may require the extension.
    let text = invite("203", "204", 5073, "blf").replacen(
        "Content-Type",
        &format!("Replaces: {header}\r\nRequire: replaces\r\nContent-Type"),
        1,
    );
    let out = h.request_with_auth(udp(5073), &text, "203", "pw203");
    assert!(
        response_to(&out, udp(5073), 200).is_some(),
        "{:?}",
        statuses(&out)
    );
    assert!(
        response_to(&out, udp(5074), 200).is_some(),
        "the caller is connected"
    );
    assert_eq!(
        requests(&out, "CANCEL")[0].0,
        udp(5071),
        "the ringing phone stops"
    );
    let seen: Vec<String> = notifies(&out, 5073).iter().map(body).collect();
    assert!(
        seen.iter()
            .any(|x| x.contains("<state event=\"replaced\">terminated</state>")),
        "201's key goes dark, its call taken: {seen:?}"
    );
}

#[test]
fn an_invite_with_replaces_from_the_notify_takes_the_call_with_the_rfc_3891_tag_order() {
    blf_pickup(|call_id, local, remote, _, _| {
        format!("{call_id};to-tag={remote};from-tag={local}")
    });
}

#[test]
fn the_tags_may_come_the_other_way_round() {
    blf_pickup(|call_id, local, remote, _, _| {
        format!("{call_id};from-tag={remote};to-tag={local};early-only")
    });
}

#[test]
fn the_caller_legs_call_id_names_the_call_too() {
    blf_pickup(|_, _, _, a_call_id, a_tag| format!("{a_call_id};to-tag={a_tag};from-tag=a5074"));
}

#[test]
fn a_replaces_with_wrong_tags_gets_481_and_for_an_answered_call_486_or_403() {
    let mut h = Harness::office();
    let (b_invite, _) = ring_201(&mut h);
    let call_id = b_invite.call_id().unwrap().to_string();
    let replaces = |h: &mut Harness, header: String, n: u16| {
        let text = invite("203", "204", 5073, &format!("blf{n}")).replacen(
            "Content-Type",
            &format!("Replaces: {header}\r\nContent-Type"),
            1,
        );
        statuses(&h.request_with_auth(udp(5073), &text, "203", "pw203"))
    };
    assert!(replaces(&mut h, format!("{call_id};to-tag=nope;from-tag=b1"), 1).contains(&481));
    h.send(
        udp(5071),
        &answer(&b_invite, 200, "OK", "b1", 5071, "v=0\r\n"),
    );
    h.sent();
    let gw_tag = b_invite.from_header().unwrap().tag().unwrap().to_string();
    let codes = replaces(
        &mut h,
        format!("{call_id};to-tag={gw_tag};from-tag=b1;early-only"),
        2,
    );
    assert_eq!(codes, [486], "confirmed, early-only: RFC 3891 §3");
    let codes = replaces(&mut h, format!("{call_id};to-tag={gw_tag};from-tag=b1"), 3);
    assert_eq!(
        codes,
        [403],
        "confirmed: a key does not take over an answered call"
    );
    assert_eq!(
        h.engine
            .calls
            .calls
            .values()
            .filter(|c| c.answer.is_some())
            .count(),
        1,
        "the answered call goes on"
    );
}

#[test]
fn refresh_unsubscribe_and_expiry() {
    let mut h = Harness::office();
    let first = watching_201(&mut h);
    // A refresh without Contact leaves the remote target alone.
    let refresh = in_dialog_subscribe(&first, 3, 120).replacen(
        "Contact: <sip:202@127.0.0.1:5072>\r\n",
        "",
        1,
    );
    h.send(udp(5072), &refresh);
    let out = h.sent();
    let ok = response_to(&out, udp(5072), 200).expect("the refresh is accepted");
    assert_eq!(ok.header(&Name::EXPIRES), Some("120"));
    let notify = one_notify(&mut h, &out, 5072);
    assert_eq!(
        notify.header(&Name::SUBSCRIPTION_STATE),
        Some("active;expires=120")
    );
    assert_eq!(
        notify.request_line().unwrap().uri.to_string(),
        "sip:202@127.0.0.1:5072"
    );
    assert_eq!(attr(&body(&notify), "version").as_deref(), Some("1"));
    assert!(notify.cseq().unwrap().cseq > first.cseq().unwrap().cseq);

    h.send(udp(5072), &in_dialog_subscribe(&first, 4, 0));
    let out = h.sent();
    assert!(response_to(&out, udp(5072), 200).is_some());
    let last = one_notify(&mut h, &out, 5072);
    assert_valid(&last);
    assert_eq!(last.header(&Name::SUBSCRIPTION_STATE), Some("terminated"));
    h.send(udp(5072), &in_dialog_subscribe(&first, 5, 600));
    assert_eq!(statuses(&h.sent()), [481], "the subscription is gone");

    let again = subscribe_text("202", 5072, "201", "Event: dialog\r\nExpires: 60\r\n")
        .replacen("branch=z9hG4bKsub", "branch=z9hG4bKagain", 1)
        .replacen("Call-ID: sub-", "Call-ID: again-", 1);
    let again = h.request_with_auth(udp(5072), &again, "202", "pw202");
    one_notify(&mut h, &again, 5072);
    h.advance(Duration::from_secs(59));
    assert!(notifies(&h.sent(), 5072).is_empty());
    h.advance(Duration::from_secs(2));
    let out = h.sent();
    let expired = notifies(&out, 5072);
    assert!(!expired.is_empty(), "{:?}", statuses(&out));
    assert!(
        expired.iter().all(|n| n.cseq() == expired[0].cseq()),
        "one NOTIFY (and its retransmissions)"
    );
    assert_eq!(
        expired[0].header(&Name::SUBSCRIPTION_STATE),
        Some("terminated;reason=timeout")
    );
}

#[test]
fn a_481_or_a_timeout_to_a_notify_ends_the_subscription() {
    let mut h = Harness::office();
    let out = subscribe(&mut h, "202", 5072, "201", DIALOG);
    let notify = notifies(&out, 5072).remove(0);
    reply(&mut h, &notify, 5072, 481);
    assert_eq!(h.engine.subscriptions.targets().count(), 0, "481 ends it");
    let dropped = h.store.load_subscriptions("gw1", h.now.unix()).unwrap();
    assert!(dropped.is_empty(), "and the store forgets it");

    let out = subscribe(&mut h, "203", 5073, "201", DIALOG);
    assert_eq!(notifies(&out, 5073).len(), 1);
    h.advance(Duration::from_secs(40));
    assert_eq!(
        h.engine.subscriptions.targets().count(),
        0,
        "no answer at all ends it"
    );
    let (_, out) = ring_201(&mut h);
    assert!(notifies(&out, 5073).is_empty());
}

#[test]
fn bad_events_short_expiries_unknown_extensions_and_foreign_watchers_are_refused() {
    let mut h = Harness::office();
    let presence = subscribe_text("202", 5072, "201", "Event: presence\r\n");
    h.send(udp(5072), &presence);
    let out = h.sent();
    assert_eq!(statuses(&out), [489]);
    assert_eq!(out[0].1.header(&Name::ALLOW_EVENTS), Some("dialog"));
    h.send(
        udp(5072),
        &subscribe_text("202", 5072, "201", "Event: dialog\r\nExpires: 10\r\n"),
    );
    let out = h.sent();
    assert_eq!(statuses(&out), [423]);
    assert_eq!(out[0].1.header(&Name::MIN_EXPIRES), Some("60"));
    assert_eq!(
        statuses(&subscribe(&mut h, "202", 5072, "299", DIALOG)),
        [404]
    );
    let foreign = subscribe(&mut h, "204", 5074, "201", DIALOG);
    assert_eq!(
        statuses(&foreign),
        [403],
        "204 is in no pickup group of 201's"
    );
    let options = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKo\r\n\
From: <sip:202@127.0.0.1>;tag=o\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    h.send(udp(5072), options);
    let out = h.sent();
    assert!(out[0].1.header(&Name::ALLOW).unwrap().contains("SUBSCRIBE"));
    assert_eq!(out[0].1.header(&Name::ALLOW_EVENTS), Some("dialog"));
}

#[test]
fn state_only_watchers_see_the_ringing_but_no_identity_or_ids() {
    let office = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml"),
    )
    .unwrap()
    .replacen(
        "display_name = \"Sales 201\"",
        "display_name = \"Sales 201\"\nblf_others = \"state-only\"",
        1,
    );
    let mut h = Harness::with_config(&office);
    let out = subscribe(&mut h, "204", 5075, "201", DIALOG);
    one_notify(&mut h, &out, 5075);
    let (_, out) = ring_201(&mut h);
    let early = answered_notifies(&mut h, &out, 5075)
        .pop()
        .expect("an early NOTIFY");
    assert_valid(&early);
    let xml = body(&early);
    assert!(xml.contains("<state>early</state>"), "{xml}");
    assert!(
        attr(&xml, "call-id").is_none() && !xml.contains("<identity"),
        "{xml}"
    );
}

#[test]
fn subscriptions_are_limited_per_subscriber_and_in_total() {
    let office = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml"),
    )
    .unwrap()
        + "\n[subscriptions]\nmax_per_subscriber = 1\nmax_total = 2\n";
    let mut h = Harness::with_config(&office);
    let out = subscribe(&mut h, "202", 5072, "201", DIALOG);
    assert!(response_to(&out, udp(5072), 200).is_some());
    assert_eq!(
        statuses(&subscribe(&mut h, "202", 5072, "203", DIALOG)),
        [403]
    );
    let out = subscribe(&mut h, "203", 5073, "201", DIALOG);
    assert!(response_to(&out, udp(5073), 200).is_some());
    let full = subscribe(&mut h, "201", 5071, "202", DIALOG);
    assert_eq!(statuses(&full), [503]);
    assert!(full[0].1.header(&Name::RETRY_AFTER).is_some());
}

#[test]
fn an_analog_callee_rings_on_the_key_like_a_sip_phone() {
    use crate::transport::ANALOG_PEER;
    let mut h = Harness::office();
    let out = subscribe(&mut h, "202", 5072, "101", DIALOG);
    one_notify(&mut h, &out, 5072);
    let out = h.request_with_auth(udp(5074), &invite("204", "101", 5074, "c1"), "204", "pw204");
    let to_port = requests(&out, "INVITE")
        .into_iter()
        .find(|(p, _)| *p == ANALOG_PEER);
    let port_invite = to_port.expect("the analog port is rung").1.clone();
    answered_notifies(&mut h, &out, 5072);
    h.sent();
    let ringing = answer(&port_invite, 180, "Ringing", "port1", 0, "");
    h.engine.handle_message(
        h.now,
        ANALOG_PEER,
        SipMessage::parse_datagram(ringing.as_bytes()).unwrap(),
    );
    h.run_store();
    let out = h.sent();
    let early = answered_notifies(&mut h, &out, 5072);
    let xml = body(early.last().expect("an early NOTIFY"));
    assert!(
        xml.contains("<state>early</state>") && xml.contains("local-tag=\"port1\""),
        "{xml}"
    );
    assert!(xml.contains("display=\"Analog 101\""), "{xml}");
}

#[test]
fn a_restart_restores_subscriptions_with_rising_cseq_and_version() {
    let mut h = Harness::office();
    let first = watching_201(&mut h);
    let stored = h.store.load_subscriptions("gw1", h.now.unix()).unwrap();
    assert_eq!(stored.len(), 1, "kept in the store");
    let config = h.engine.config.clone();
    let mut engine = Engine::new(config, Default::default(), [7; 32], h.now);
    engine.restore_subscriptions(h.now, stored);
    let sent: Vec<SipMessage> = std::iter::from_fn(|| engine.poll_transmit())
        .map(|out| SipMessage::parse_datagram(&out.bytes).unwrap())
        .collect();
    assert_eq!(sent.len(), 1);
    let notify = &sent[0];
    assert_eq!(notify.method(), Some(&Method::NOTIFY));
    assert_eq!(notify.call_id(), first.call_id());
    assert!(notify.cseq().unwrap().cseq > first.cseq().unwrap().cseq);
    let version = |n: &SipMessage| attr(&body(n), "version").unwrap().parse::<u32>().unwrap();
    assert!(
        version(notify) > version(&first),
        "the store keeps the counters ahead of those used (full state: a gap loses nothing)"
    );
}

#[test]
fn a_group_members_key_follows_the_leg_to_its_own_phone() {
    let mut h = Harness::office();
    let out = subscribe(&mut h, "203", 5073, "201", DIALOG);
    one_notify(&mut h, &out, 5073);
    assert_eq!(statuses(&h.register("201", "pw201", udp(5071), 600)), [200]);
    assert_eq!(statuses(&h.register("202", "pw202", udp(5072), 600)), [200]);
    let out = h.request_with_auth(
        udp(5074),
        &invite("204", "sales", 5074, "g1"),
        "204",
        "pw204",
    );
    let to = |port: u16| {
        requests(&out, "INVITE")
            .into_iter()
            .find(|(p, _)| *p == udp(port))
            .unwrap()
            .1
            .clone()
    };
    let (to_201, to_202) = (to(5071), to(5072));
    answered_notifies(&mut h, &out, 5073);
    h.send(
        udp(5072),
        &answer(&to_202, 180, "Ringing", "m202", 5072, ""),
    );
    let out = h.sent();
    assert!(
        answered_notifies(&mut h, &out, 5073).is_empty(),
        "202's phone rings, 201's has not yet: 201's key shows nothing"
    );
    h.send(
        udp(5071),
        &answer(&to_201, 180, "Ringing", "m201", 5071, ""),
    );
    let out = h.sent();
    let early = answered_notifies(&mut h, &out, 5073)
        .pop()
        .expect("201 rings");
    let xml = body(&early);
    assert!(xml.contains("<state>early</state>"), "{xml}");
    assert_eq!(attr(&xml, "call-id"), to_201.call_id().map(str::to_string));
    assert_eq!(attr(&xml, "local-tag").as_deref(), Some("m201"), "{xml}");
    h.send(
        udp(5071),
        &answer(&to_201, 486, "Busy Here", "m201", 5071, ""),
    );
    let out = h.sent();
    let ended = answered_notifies(&mut h, &out, 5073)
        .pop()
        .expect("201 declined");
    assert_valid(&ended);
    assert!(
        body(&ended).contains("terminated</state>") && !body(&ended).contains("early"),
        "201's phone turned the call down while 202's still rings: {}",
        body(&ended)
    );
}

#[test]
fn a_fan_out_to_many_keys_goes_out_in_batches_with_the_engine_due_in_between() {
    let mut h = office_with_subscriptions("max_per_subscriber = 1000");
    let watchers = NOTIFY_BATCH + 8;
    for n in 0..watchers {
        let port = 6000 + n as u16;
        let text = subscribe_text("202", port, "201", DIALOG)
            .replace("Call-ID: sub-202-201", &format!("Call-ID: sub-202-201-{n}"))
            .replace("branch=z9hG4bKsub202201", &format!("branch=z9hG4bKsub{n}"));
        let out = h.request_with_auth(udp(port), &text, "202", "pw202");
        one_notify(&mut h, &out, port);
        // Within the challenges one source may get per second.
        h.advance(Duration::from_millis(20));
    }
    let (_, out) = ring_201(&mut h);
    let first = requests(&out, "NOTIFY").len();
    assert_eq!(first, NOTIFY_BATCH, "one batch with the 180");
    assert!(
        h.engine.poll_timeout().is_some_and(|at| at <= h.now.mono),
        "the rest is due at once"
    );
    h.advance(Duration::ZERO);
    let rest = requests(&h.sent(), "NOTIFY").len();
    assert_eq!(first + rest, watchers, "every key learns it rings");
}

#[test]
fn a_stored_subscription_edited_to_last_forever_is_cut_to_the_longest_grant() {
    let mut h = Harness::office();
    watching_201(&mut h);
    let mut stored = h.store.load_subscriptions("gw1", h.now.unix()).unwrap();
    stored[0].expires_at = u64::MAX;
    let mut engine = Engine::new(h.engine.config.clone(), Default::default(), [7; 32], h.now);
    engine.restore_subscriptions(h.now, stored);
    let notify = SipMessage::parse_datagram(&engine.poll_transmit().unwrap().bytes).unwrap();
    assert_eq!(
        notify.header(&Name::SUBSCRIPTION_STATE),
        Some("active;expires=3600")
    );
}

#[test]
fn a_change_while_a_notify_is_in_flight_goes_out_once_it_is_answered() {
    let mut h = Harness::office();
    watching_201(&mut h);
    let (_, out) = ring_201(&mut h);
    let in_flight = notifies(&out, 5072);
    assert_eq!(in_flight.len(), 1);
    assert!(body(&in_flight[0]).contains("<state>early</state>"));
    let cancel = "CANCEL sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5074;branch=z9hG4bKretryc1;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:204@127.0.0.1>;tag=a5074\r\nTo: <sip:201@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 2 CANCEL\r\nContent-Length: 0\r\n\r\n";
    h.send(udp(5074), cancel);
    let out = h.sent();
    assert!(statuses(&out).contains(&487), "{:?}", statuses(&out));
    assert!(
        notifies(&out, 5072).is_empty(),
        "the end of the call waits for the early NOTIFY's answer"
    );
    reply(&mut h, &in_flight[0], 5072, 200);
    let out = h.sent();
    let next = notifies(&out, 5072);
    assert_eq!(next.len(), 1);
    assert!(
        body(&next[0]).contains("<state event=\"cancelled\">terminated</state>"),
        "the state now: {}",
        body(&next[0])
    );
    reply(&mut h, &next[0], 5072, 200);
    assert!(notifies(&h.sent(), 5072).is_empty(), "nothing more is owed");
}

#[test]
fn with_notify_callee_trying_the_unanswered_invite_is_shown_as_trying_first() {
    let mut h = office_with_subscriptions("notify_callee_trying = true");
    watching_201(&mut h);
    assert_eq!(statuses(&h.register("201", "pw201", udp(5071), 600)), [200]);
    let out = h.request_with_auth(udp(5074), &invite("204", "201", 5074, "c1"), "204", "pw204");
    let trying = one_notify(&mut h, &out, 5072);
    assert_valid(&trying);
    assert!(
        body(&trying).contains("<state>trying</state>"),
        "{}",
        body(&trying)
    );
    let b_invite = requests(&out, "INVITE")[0].1.clone();
    let early = phone_answers(&mut h, &b_invite, 180, "");
    assert!(body(&early).contains("<state>early</state>"));
    assert_eq!(attr(&body(&early), "version").as_deref(), Some("2"));
}
