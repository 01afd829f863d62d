//! Call pickup against the real binary, driven by SIPp: 204 calls 201; 202 takes the call
//! with `*8` through the seed's flow (183 dummy, CANCEL with Reason, INVITE with Replaces),
//! 203 with `**201` without Replaces (bridged); 204 may not pick up calls ringing in `sales`.

use e2e_tests::{free_port, register, Gateway, GatewayOptions, Sipp};

/// A SIPp picker `ext` (password `pw<ext>`) dialling `code` with `scenario`.
fn picker(scenario: &str, code: &str, ext: &str) -> Sipp {
    Sipp::new(scenario, free_port())
        .service(code)
        .credentials(ext, &format!("pw{ext}"))
        .key("caller", ext)
}

/// 202 dials `*8` and its phone declines the INVITE with Replaces (603): the pickup fails.
fn picker_declines(gateway: &Gateway) {
    picker("uac_pickup_abandoned.xml", "*8", "202")
        .expect(480)
        .out_of_call("uas_replaces_reject.xml")
        .fill("@REJECT@", "603")
        .run(gateway);
}

/// 201 registered and ringing with a call from 204; returns (callee, caller) SIPp runs.
fn ringing(
    gateway: &Gateway,
    callee_scenario: &str,
    caller_scenario: &str,
) -> (e2e_tests::SippRun, e2e_tests::SippRun) {
    let phone = free_port();
    register(gateway, "201", phone, 600, 200);
    let callee = Sipp::new(callee_scenario, phone).spawn(gateway);
    let caller = Sipp::new(caller_scenario, free_port())
        .service("201")
        .credentials("204", "pw204")
        .key("caller", "204")
        .expect(480)
        .spawn(gateway);
    gateway.wait_for_log("ringing 1 contact(s)");
    (callee, caller)
}

#[test]
fn group_pickup_with_replaces() {
    let mut gateway = Gateway::start(GatewayOptions::default());
    let (callee, caller) = ringing(&gateway, "uas_ring_picked.xml", "uac_call.xml");
    picker("uac_pickup.xml", "*8", "202")
        .out_of_call("uas_replaces.xml")
        .run(&gateway);
    caller.wait();
    gateway.wait_for_log("connected through Replaces");
    // The caller got its 200 OK to the BYE: the CDR must already be on disk.
    gateway.kill();
    callee.wait();
    let (cdrs, fields) = gateway.last_cdr();
    assert_eq!(
        &fields[2..8],
        ["204", "201", "202", "group", "202", "answered"],
        "{cdrs}"
    );
}

#[test]
fn directed_pickup_without_replaces_is_bridged() {
    let gateway = Gateway::start(GatewayOptions::default());
    let (callee, caller) = ringing(&gateway, "uas_ring_picked.xml", "uac_call.xml");
    picker("uac_pickup_bridge.xml", "**201", "203").run(&gateway);
    caller.wait();
    callee.wait();
    let (cdrs, fields) = gateway.last_cdr();
    assert_eq!(
        &fields[2..8],
        ["204", "201", "203", "directed", "203", "answered"],
        "{cdrs}"
    );
}

#[test]
fn an_extension_outside_the_group_cannot_pick_up() {
    let gateway = Gateway::start(GatewayOptions {
        ring_timeout_secs: 3,
        ..GatewayOptions::default()
    });
    // 203 calls 201 this time, so 204 is not the caller.
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_ring_cancel.xml", phone).spawn(&gateway);
    let caller = picker("uac_fail.xml", "201", "203")
        .expect(480)
        .spawn(&gateway);
    gateway.wait_for_log("ringing 1 contact(s)");
    // Group pickup: the only ringing call is one 204 may not take, so nothing rings for it
    // (480, not a 403 that reveals the call); directed pickup names the call: 403.
    for (code, expected) in [("*8", 480), ("**201", 403)] {
        Sipp::new("uac_fail.xml", free_port())
            .service(code)
            .credentials("204", "pw204")
            .key("caller", "204")
            .expect(expected)
            .run(&gateway);
    }
    caller.wait();
    callee.wait();
    assert!(gateway.cdrs().contains("no-answer"), "{}", gateway.cdrs());
}

#[test]
fn a_picker_phone_rejecting_replaces_is_bridged_instead() {
    let gateway = Gateway::start(GatewayOptions::default());
    let (callee, caller) = ringing(&gateway, "uas_ring_picked.xml", "uac_call.xml");
    picker("uac_pickup_fallback.xml", "*8", "202")
        .out_of_call("uas_replaces_reject.xml")
        .fill("@REJECT@", "420")
        .run(&gateway);
    caller.wait();
    callee.wait();
    gateway.wait_for_log("bridged to the picker");
}

#[test]
fn the_caller_hanging_up_during_a_pickup_ends_the_picker_dialogs() {
    let gateway = Gateway::start(GatewayOptions::default());
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_ring_picked.xml", phone).spawn(&gateway);
    let caller = picker("uac_cancel.xml", "201", "204")
        .fill("@CANCEL_AFTER_MS@", "1500")
        .spawn(&gateway);
    gateway.wait_for_log("ringing 1 contact(s)");
    picker("uac_pickup_abandoned.xml", "*8", "202")
        .expect(480)
        .out_of_call("uas_replaces_cancelled.xml")
        .run(&gateway);
    caller.wait();
    callee.wait();
    assert!(gateway.cdrs().contains("cancelled"), "{}", gateway.cdrs());
}

#[test]
fn nothing_to_pick_up_is_480() {
    let gateway = Gateway::start(GatewayOptions::default());
    picker("uac_fail.xml", "*8", "202")
        .expect(480)
        .run(&gateway);
}

#[test]
fn a_declined_pickup_rings_the_callee_again() {
    let gateway = Gateway::start(GatewayOptions {
        ring_timeout_secs: 4,
        ..GatewayOptions::default()
    });
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    // 201 is rung twice: before the pickup, and again after the picker declined.
    let callee = Sipp::new("uas_ring_cancel.xml", phone)
        .calls(2)
        .spawn(&gateway);
    let caller = picker("uac_fail.xml", "201", "204")
        .expect(480)
        .spawn(&gateway);
    gateway.wait_for_log("ringing 1 contact(s)");
    picker_declines(&gateway);
    caller.wait();
    callee.wait();
    assert!(gateway.log().contains("ringing again"), "{}", gateway.log());
    assert_eq!(gateway.log().matches("ringing 1 contact(s)").count(), 2);
}

#[test]
fn a_declined_pickup_then_the_callee_answering_bills_the_callee_and_lists_the_attempt() {
    let gateway = Gateway::start(GatewayOptions::default());
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    // 201 rings, is cancelled for the pickup, rings again after 202 declined, and answers.
    let callee = Sipp::new("uas_ring_cancelled_then_answer.xml", phone)
        .calls(2)
        .spawn(&gateway);
    let caller = picker("uac_call.xml", "201", "204").spawn(&gateway);
    gateway.wait_for_log("ringing 1 contact(s)");
    picker_declines(&gateway);
    caller.wait();
    callee.wait();
    let (cdrs, fields) = gateway.last_cdr();
    assert_eq!(
        &fields[2..8],
        ["204", "201", "201", "none", "204", "answered"],
        "answered by the callee and billed as such: {cdrs}"
    );
    let attempt = cdrs.lines().nth(2).unwrap_or_default();
    assert!(
        attempt.starts_with("    failed pickup by 202 (group), claimed ")
            && attempt.ends_with(": 603 Rejected"),
        "the failed pickup is listed under its call: {cdrs}"
    );
}

#[test]
fn two_pickers_at_once_exactly_one_wins() {
    let gateway = Gateway::start(GatewayOptions::default());
    let (callee, caller) = ringing(&gateway, "uas_ring_picked.xml", "uac_call.xml");
    let pickers: Vec<_> = [("202", "*8"), ("203", "**201")]
        .into_iter()
        .map(|(picker, code)| {
            Sipp::new("uac_pickup_race.xml", free_port())
                .service(code)
                .credentials(picker, &format!("pw{picker}"))
                .key("caller", picker)
                .spawn(&gateway)
        })
        .collect();
    for picker in pickers {
        picker.wait();
    }
    caller.wait();
    callee.wait();
    let log = gateway.log();
    assert_eq!(log.matches("bridged to the picker").count(), 1, "{log}");
    let (cdrs, fields) = gateway.last_cdr();
    assert!(["202", "203"].contains(&fields[4].as_str()), "{cdrs}");
}

#[test]
fn a_callee_answering_during_the_pickup_is_acked_and_byed() {
    let gateway = Gateway::start(GatewayOptions::default());
    let (callee, caller) = ringing(&gateway, "uas_answer_crossing_cancel.xml", "uac_call.xml");
    picker("uac_pickup_bridge.xml", "**201", "203").run(&gateway);
    caller.wait();
    callee.wait();
    let (cdrs, fields) = gateway.last_cdr();
    assert_eq!(fields[4], "203", "the picker keeps the call: {cdrs}");
}

#[test]
fn a_silent_picker_phone_is_bridged_after_a_few_seconds() {
    let gateway = Gateway::start(GatewayOptions::default());
    let (callee, caller) = ringing(&gateway, "uas_ring_picked.xml", "uac_call.xml");
    // The silent phone's call (the Replaces INVITE it never answers) is still open when
    // SIPp exits, which SIPp reports as an aborted call: that is the point of this phone.
    let silent_phone_left_open = picker("uac_pickup_fallback.xml", "*8", "202")
        .out_of_call("uas_replaces_silent.xml")
        .spawn(&gateway)
        .wait_allowing(&["Aborted call with Call-ID"]);
    assert!(
        silent_phone_left_open.len() <= 1,
        "{silent_phone_left_open:?}"
    );
    caller.wait();
    callee.wait();
    gateway.wait_for_log("no answer to the Replaces INVITE; bridging instead");
}
