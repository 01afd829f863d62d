//! Call pickup against the real binary, driven by SIPp: 204 calls 201; 202 takes the call
//! with `*8` through the seed's flow (183 dummy, CANCEL with Reason, INVITE with Replaces),
//! 203 with `**201` without Replaces (bridged); 204 may not pick up calls ringing in `sales`.
//! A bridged picker held in the dummy dialog is re-INVITEd to the call's media; RTP peers
//! check that media flow through the relay both ways.

use e2e_tests::analog::RtpPeer;
use e2e_tests::pickup::{call_id_on_shard, picker, ringing, ringing_on_shard, ringing_with};
use e2e_tests::{free_port, logged_port, register, Gateway, GatewayOptions, Sipp};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use telephony_hw::dsp::analysis::dominant_frequency;
use telephony_hw::dsp::g711::Law;

/// 202 dials `*8` and its phone declines the INVITE with Replaces (603): the pickup fails.
fn picker_declines(gateway: &Gateway) {
    picker("uac_pickup_abandoned.xml", "*8", "202")
        .expect(480)
        .out_of_call("uas_replaces_reject.xml")
        .fill("@REJECT@", "603")
        .run(gateway);
}

/// The last CDR's caller, called, answered by, pickup method, billed and disposition.
fn assert_last_cdr(gateway: &Gateway, expected: [&str; 6]) {
    let (cdrs, fields) = gateway.last_cdr();
    assert_eq!(&fields[2..8], expected, "{cdrs}");
}

/// The caller stays on the line long enough for the picker's re-INVITE to be over first.
fn holding(caller: Sipp) -> Sipp {
    caller.fill("@HOLD_MS@", "2000")
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
    assert_last_cdr(&gateway, ["204", "201", "202", "group", "202", "answered"]);
}

#[test]
fn directed_pickup_without_replaces_is_bridged() {
    let gateway = Gateway::start(GatewayOptions::default());
    let (callee, caller) = ringing(&gateway, "uas_ring_picked.xml", "uac_call.xml");
    picker("uac_pickup_bridge.xml", "**201", "203").run(&gateway);
    caller.wait();
    callee.wait();
    assert_last_cdr(
        &gateway,
        ["204", "201", "203", "directed", "203", "answered"],
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
    let (callee, caller) = ringing_with(&gateway, "uas_ring_picked.xml", "uac_call.xml", holding);
    // The picker scenario takes the gateway's re-INVITE (the call's media) before the BYE.
    picker("uac_pickup_fallback.xml", "*8", "202")
        .out_of_call("uas_replaces_reject.xml")
        .fill("@REJECT@", "420")
        .run(&gateway);
    caller.wait();
    callee.wait();
    gateway.wait_for_log("bridged to the picker");
    gateway.wait_for_log("B took the call's media");
}

/// `from` sends a `hz` tone to `to`; `at` receives it from `relay_out` (waiting until 20
/// packets arrived, at most 10 s).
fn tone_reaches(from: &mut RtpPeer, to: SocketAddr, at: &RtpPeer, relay_out: SocketAddr, hz: f32) {
    from.send_tone(to, Law::Ulaw, 0, hz, 600);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut audio, mut source) = (Vec::new(), None);
    while audio.len() < 20 * 160 {
        assert!(
            Instant::now() < deadline,
            "{} of 30 packets of {hz} Hz relayed",
            audio.len() / 160
        );
        let received = at.receive(Duration::from_millis(50), Law::Ulaw, 101);
        audio.extend(received.audio);
        source = source.or(received.source);
    }
    assert_eq!(
        source,
        Some(relay_out),
        "relayed from the port the SDP named"
    );
    let tone = dominant_frequency(&audio).expect("audio relayed");
    assert!((tone.frequency_hz - hz).abs() < 5.0, "{tone:?}");
}

/// The packet counts of both sides in the newest CDR's media column (waits for the relay's
/// counters, at most 10 s).
fn media_packets(gateway: &Gateway) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cdrs = gateway.cdrs();
        let count = |side: &str| {
            let word = cdrs.split_whitespace().find(|w| w.starts_with(side))?;
            word[2..word.find('p')?].parse::<u64>().ok()
        };
        if let (Some(a), Some(b)) = (count("A:"), count("B:")) {
            return (a, b);
        }
        assert!(Instant::now() < deadline, "no media counters: {cdrs}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_anchored_pickup_whose_replaces_failed_relays_rtp_both_ways_after_the_re_invite() {
    let gateway = Gateway::start(GatewayOptions {
        media_anchor: Some("always"),
        ..GatewayOptions::default()
    });
    let (mut caller_media, mut picker_media) = (RtpPeer::new(), RtpPeer::new());
    let (callee, caller) = ringing_with(&gateway, "uas_ring_picked.xml", "uac_call.xml", |c| {
        c.fill("@MEDIA_PORT@", &caller_media.port().to_string())
            .fill("@HOLD_MS@", "8000")
    });
    let picker = picker("uac_pickup_fallback.xml", "*8", "202")
        .out_of_call("uas_replaces_reject.xml")
        .fill("@REJECT@", "488")
        .fill("@MEDIA_PORT@", &picker_media.port().to_string())
        .spawn(&gateway);
    let relay_a: SocketAddr = (
        [127, 0, 0, 1],
        logged_port(&caller.wait_for_log_line("answered")),
    )
        .into();
    let relay_b: SocketAddr = (
        [127, 0, 0, 1],
        logged_port(&picker.wait_for_log_line("re-invited")),
    )
        .into();
    assert_ne!(
        relay_a.port(),
        picker_media.port(),
        "the caller sends to the relay"
    );
    assert_ne!(
        relay_b.port(),
        caller_media.port(),
        "the picker sends to the relay"
    );
    gateway.wait_for_log("B took the call's media");
    tone_reaches(&mut caller_media, relay_a, &picker_media, relay_b, 1004.0);
    tone_reaches(&mut picker_media, relay_b, &caller_media, relay_a, 1400.0);
    caller.wait();
    picker.wait();
    callee.wait();
    let (a, b) = media_packets(&gateway);
    assert!(
        a >= 20 && b >= 20,
        "both sides counted: A {a}, B {b}: {}",
        gateway.cdrs()
    );
    let (cdrs, fields) = gateway.last_cdr();
    assert_eq!(&fields[4..8], ["202", "group", "202", "answered"], "{cdrs}");
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
    let (callee, caller) = ringing_with(&gateway, "uas_ring_picked.xml", "uac_call.xml", holding);
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

/// A gateway of two engine shards, 204's call to 201 ringing on shard 1.
fn ringing_on_shard_1() -> (Gateway, e2e_tests::SippRun, e2e_tests::SippRun) {
    let gateway = Gateway::start(GatewayOptions::two_shards());
    let (callee, caller) = ringing_on_shard(&gateway, 1);
    (gateway, callee, caller)
}

/// Two engine shards: a picker dialling `*8` from shard 0 takes the call ringing on shard
/// 1 with Replaces; the pickup is handed to the call's shard and billed there.
#[test]
fn a_group_pickup_reaches_a_call_ringing_on_another_engine_shard() {
    let (gateway, callee, caller) = ringing_on_shard_1();
    picker("uac_pickup.xml", "*8", "202")
        .call_id(&call_id_on_shard(0, "picker"))
        .out_of_call("uas_replaces.xml")
        .run(&gateway);
    caller.wait();
    callee.wait();
    gateway.wait_for_log("of engine shard 1: handed over");
    gateway.wait_for_log("connected through Replaces");
    assert_last_cdr(&gateway, ["204", "201", "202", "group", "202", "answered"]);
}

/// Two engine shards: a bridged directed pickup from shard 0, its dialog (ACK, BYE)
/// routed to the call's shard 1.
#[test]
fn a_bridged_pickup_reaches_a_call_ringing_on_another_engine_shard() {
    let (gateway, callee, caller) = ringing_on_shard_1();
    picker("uac_pickup_bridge.xml", "**201", "203")
        .call_id(&call_id_on_shard(0, "bridged-picker"))
        .run(&gateway);
    caller.wait();
    callee.wait();
    gateway.wait_for_log("of engine shard 1: handed over");
    assert_last_cdr(
        &gateway,
        ["204", "201", "203", "directed", "203", "answered"],
    );
}
