//! BLF keys against the real binary: SIPp subscribers watch 201's dialogs (RFC 6665,
//! RFC 4235), every NOTIFY body is validated against RFC 4235's schema
//! (`tests/fixtures/dialog-info.xsd`, with xmllint), and an INVITE with Replaces built from
//! an early NOTIFY takes the ringing call. 204 calls 201 (or the analog phone 101 does);
//! 203 (in `sales`, like 201) is the BLF key; 204 is in no pickup group.

use e2e_tests::blf::{key, logged_ids, wait_validated, Ids};
use e2e_tests::{free_port, register, Gateway, GatewayOptions, Sipp, SippRun};
use std::time::Duration;

/// 203's key watches `watched` while it rings, 203 takes the call with
/// an INVITE with Replaces built from the early NOTIFY by `replaces` (call-id, local-tag,
/// remote-tag -> leg, to-tag, from-tag) sent to the caller `caller_number` at the gateway;
/// then the key refreshes and unsubscribes. Returns the NOTIFY bodies and 203's call (it
/// ends when the caller hangs up).
fn take_from_the_key(
    gateway: &Gateway,
    watched: &str,
    caller_number: &str,
    replaces: fn(&Ids) -> Ids,
) -> (Vec<String>, SippRun) {
    let watcher = key("uac_subscribe.xml", "203", watched)
        .fill("@WAIT_FOR@", "&lt;state&gt;early&lt;/state&gt;")
        .fill("@THEN_WAIT_FOR@", "event=&quot;replaced&quot;")
        .spawn(gateway);
    let ids = logged_ids(&watcher);
    let (leg, to_tag, from_tag) = replaces(&ids);
    let picker = Sipp::new("uac_blf.xml", free_port())
        .service(caller_number)
        .credentials("203", "pw203")
        .key("caller", "203")
        .key("leg", &leg)
        .key("to_tag", &to_tag)
        .key("from_tag", &from_tag)
        .spawn(gateway);
    let bodies = wait_validated(watcher);
    assert!(bodies[0].contains("version=\"0\""), "{}", bodies[0]);
    let early = bodies
        .iter()
        .find(|b| b.contains("<state>early</state>"))
        .unwrap();
    assert!(early.contains("direction=\"recipient\""), "{early}");
    assert!(early.contains("<target uri=\"sip:"), "{early}");
    (bodies, picker)
}

/// 201 registered and ringing (SIPp callee, cancelled by the pickup) with a call from 204.
fn ringing_201(gateway: &Gateway) -> (SippRun, SippRun) {
    let phone = free_port();
    register(gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_ring_picked.xml", phone).spawn(gateway);
    let caller = Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("204", "pw204")
        .key("caller", "204")
        .spawn(gateway);
    gateway.wait_for_log("ringing 1 contact(s)");
    (callee, caller)
}

#[test]
fn a_key_lit_by_a_ringing_sip_call_takes_it_then_refreshes_and_unsubscribes() {
    let gateway = Gateway::start(GatewayOptions::default());
    let (callee, caller) = ringing_201(&gateway);
    // RFC 3891 order: the gateway is the recipient, to-tag is its own (remote-tag).
    let (bodies, picker) = take_from_the_key(&gateway, "201", "204", |(call_id, local, remote)| {
        (call_id.clone(), remote.clone(), local.clone())
    });
    caller.wait();
    picker.wait();
    callee.wait();
    let early = bodies
        .iter()
        .find(|b| b.contains("<state>early</state>"))
        .unwrap();
    assert!(early.contains("display=\"Reception 204\""), "{early}");
    let (cdrs, fields) = gateway.last_cdr();
    assert_eq!(
        &fields[2..8],
        ["204", "201", "203", "replaces", "203", "answered"],
        "{cdrs}"
    );
}

#[test]
fn an_analog_caller_is_taken_from_the_key_with_the_tags_the_other_way_round() {
    let gateway = Gateway::start(GatewayOptions::default());
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_ring_picked.xml", phone).spawn(&gateway);
    gateway.analog("lift 1");
    gateway.analog("dial 1 201");
    gateway.wait_for_log("ringing 1 contact(s)");
    let (bodies, picker) = take_from_the_key(&gateway, "201", "101", |(call_id, local, remote)| {
        (call_id.clone(), local.clone(), remote.clone())
    });
    gateway.wait_for_log("analog port 1: call answered");
    gateway.analog("hangup 1");
    picker.wait();
    callee.wait();
    let early = bodies
        .iter()
        .find(|b| b.contains("<state>early</state>"))
        .unwrap();
    assert!(early.contains("display=\"Analog 101\""), "{early}");
    let (cdrs, fields) = gateway.last_cdr();
    assert_eq!(
        &fields[2..8],
        ["101", "201", "203", "replaces", "203", "answered"],
        "{cdrs}"
    );
}

#[test]
fn a_key_watching_an_analog_phone_takes_the_sip_call_ringing_it() {
    let gateway = Gateway::start(GatewayOptions::default());
    let caller = Sipp::new("uac_call.xml", free_port())
        .service("101")
        .credentials("204", "pw204")
        .key("caller", "204")
        .spawn(&gateway);
    gateway.wait_for_analog(1, "ringing", "true", Duration::from_secs(15));
    let (bodies, picker) = take_from_the_key(&gateway, "101", "204", |(call_id, local, remote)| {
        (call_id.clone(), remote.clone(), local.clone())
    });
    gateway.wait_for_analog(1, "ringing", "false", Duration::from_secs(15));
    caller.wait();
    picker.wait();
    let early = bodies
        .iter()
        .find(|b| b.contains("<state>early</state>"))
        .unwrap();
    assert!(early.contains("display=\"Analog 101\">sip:101@"), "{early}");
    let (cdrs, fields) = gateway.last_cdr();
    assert_eq!(
        &fields[2..8],
        ["204", "101", "203", "replaces", "203", "answered"],
        "{cdrs}"
    );
}

#[test]
fn a_subscription_not_refreshed_ends_with_reason_timeout() {
    let gateway = Gateway::start(GatewayOptions {
        extra: "[subscriptions]\nmin_expires_secs = 1\n".into(),
        ..GatewayOptions::default()
    });
    let watcher = key("uac_subscribe_expire.xml", "203", "201")
        .fill("@EXPIRES@", "2")
        .spawn(&gateway);
    let bodies = wait_validated(watcher);
    assert_eq!(bodies.len(), 2, "idle, then the last one: {bodies:?}");
}

#[test]
fn a_subscriber_answering_481_loses_its_subscription() {
    let gateway = Gateway::start(GatewayOptions::default());
    let watcher = key("uac_subscribe_vanish.xml", "203", "201").spawn(&gateway);
    watcher.wait_for_log_line("subscribed");
    let (callee, caller) = ringing_201(&gateway);
    gateway.wait_for_log("NOTIFY answered 481: ending the subscription");
    wait_validated(watcher);
    caller.kill();
    callee.kill();
}

#[test]
fn a_subscriber_outside_the_pickup_groups_is_refused() {
    let gateway = Gateway::start(GatewayOptions::default());
    key("uac_subscribe_refused.xml", "204", "201")
        .expect(403)
        .run(&gateway);
    assert!(!gateway.log().contains("subscribed to the dialogs"));
}

/// The `version` of a dialog-info document.
fn version_of(body: &str) -> u32 {
    let element = &body[body.find("<dialog-info").expect("a dialog-info element")..];
    let start = element.find(" version=\"").expect("a version") + " version=\"".len();
    let digits = &element[start..start + element[start..].find('"').unwrap()];
    digits.parse().expect("a number")
}

#[test]
fn a_restart_keeps_the_subscription_and_puts_out_the_key_of_the_call_it_ended() {
    let mut gateway = Gateway::start(GatewayOptions::default());
    let (callee, caller) = ringing_201(&gateway);
    // The key waits for the early NOTIFY, then for the idle one after the restart, and
    // refreshes and unsubscribes with the restarted gateway.
    let watcher = key("uac_subscribe.xml", "203", "201")
        .fill("@WAIT_FOR@", "&lt;state&gt;early&lt;/state&gt;")
        .fill("@THEN_WAIT_FOR@", "id=&quot;idle&quot;")
        .spawn(&gateway);
    logged_ids(&watcher);
    gateway.restart();
    let bodies = wait_validated(watcher);
    caller.kill();
    callee.kill();
    assert!(
        gateway.log().contains("1 dialog subscription(s) restored"),
        "{}",
        gateway.log()
    );
    let early = bodies
        .iter()
        .position(|b| b.contains("<state>early</state>"))
        .unwrap();
    let idle = bodies
        .iter()
        .rposition(|b| b.contains("id=\"idle\""))
        .unwrap();
    assert!(idle > early, "{bodies:?}");
    // +1 per NOTIFY while the gateway runs; across the restart they keep rising, from the
    // counter the store reserved ahead (full-state documents: a gap loses nothing).
    let versions: Vec<u32> = bodies.iter().map(|b| version_of(b)).collect();
    assert!(
        versions.windows(2).all(|pair| pair[1] > pair[0]),
        "the versions keep rising across the restart: {versions:?}"
    );
    let jumps = versions.windows(2).filter(|p| p[1] != p[0] + 1).count();
    assert!(jumps <= 1, "+1 per NOTIFY but at the restart: {versions:?}");
}

#[test]
fn a_key_over_tcp_is_notified_on_its_connection() {
    let gateway = Gateway::start(GatewayOptions {
        extra: "[subscriptions]\nmin_expires_secs = 1\n".into(),
        ..GatewayOptions::default()
    });
    let watcher = key("uac_subscribe_expire.xml", "203", "201")
        .tcp()
        .fill("@EXPIRES@", "2")
        .spawn(&gateway);
    let bodies = wait_validated(watcher);
    assert_eq!(bodies.len(), 2, "idle, then the last one: {bodies:?}");
}
