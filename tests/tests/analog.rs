//! Analog ports end to end, in demo mode: the real binary runs its emulated card (phones on
//! ports 1 and 2 as extensions 101 and 102, a PSTN line on port 3 ringing `sales` and taking
//! `9` + number), SIPp plays the SIP phones' signalling, an RTP peer plays their media, and
//! `gateway analog ...` acts as the analog phones and the central office. Audio is checked
//! by measuring tones on both sides; DTMF and caller ID by decoding them.

use e2e_tests::analog::{analog_to_sip_audio, sip_to_analog_audio, Received, RtpPeer, EVENT_PT};
use e2e_tests::{free_port, logged_port, register, Gateway, GatewayOptions, Sipp, SippRun};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use telephony_hw::dsp::g711::Law;

/// A picker `ext` dialling `*8`, whose phone answers the INVITE with Replaces with its
/// media at `peer` and must be shown the caller `from` (the start of its From header). Its
/// dummy dialog stays up 15 s: long enough for the media checks of the replacing call.
fn picker(ext: &str, peer: &RtpPeer, from: &str) -> Sipp {
    Sipp::new("uac_pickup.xml", free_port())
        .service("*8")
        .credentials(ext, &format!("pw{ext}"))
        .key("caller", ext)
        .out_of_call("uas_replaces.xml")
        .caller_id(from)
        .fill("@PICKED_CALL_MS@", "15000")
        .fill("@MEDIA_PORT@", &peer.port().to_string())
}

/// The fields of the newest CDR: caller, called, answered by, pickup, billed, result.
fn last_cdr(gateway: &Gateway) -> Vec<String> {
    let (cdrs, fields) = gateway.last_cdr();
    assert!(fields.len() >= 8, "{cdrs}");
    fields[2..8].to_vec()
}

/// A SIP phone registered as `ext` running `scenario` with its media at `peer`.
fn sip_phone(gateway: &Gateway, ext: &str, scenario: &str, peer: &RtpPeer) -> SippRun {
    let port = free_port();
    register(gateway, ext, port, 600, 200);
    Sipp::new(scenario, port)
        .fill("@MEDIA_PORT@", &peer.port().to_string())
        .spawn(gateway)
}

#[test]
fn an_analog_phone_calls_a_sip_phone_with_audio_and_dtmf_both_ways() {
    let gateway = Gateway::start(GatewayOptions::default());
    let mut peer = RtpPeer::new();
    let phone = sip_phone(&gateway, "201", "uas_answer.xml", &peer);
    gateway.analog("lift 1");
    gateway.hears_tone(1, "dial tone (us: 350+440 Hz)", &[350.0, 440.0]);
    gateway.analog("dial 1 201");
    gateway.wait_for_log("analog port 1: call answered");
    let analog_rtp = analog_to_sip_audio(&gateway, 1, &peer);
    sip_to_analog_audio(&gateway, 1, &mut peer, analog_rtp);
    // One packet in five lost: concealed, and the tone still comes through.
    gateway.analog("listen 1");
    peer.send_tone_losing(analog_rtp, Law::Ulaw, 0, 1400.0, 1000, Some(5));
    gateway.hears_tone(1, "RTP with loss -> analog: 1400 Hz", &[1400.0]);
    let concealed: u32 = gateway.analog("status 1")["rtp_concealed"].parse().unwrap();
    assert!(concealed >= 5, "{concealed} frames concealed");
    // A key pressed on the analog phone arrives as RFC 4733 events, not as audio.
    gateway.analog("dial 1 5");
    let pressed_5 = |r: &Received| r.events.iter().any(|&(_, key, end)| key == '5' && end);
    let received = peer.receive_until(Duration::from_secs(15), Law::Ulaw, EVENT_PT, pressed_5);
    assert!(
        pressed_5(&received),
        "no event for 5: {:?}",
        received.events
    );
    // An event from the SIP side is played to the analog phone as a DTMF tone.
    gateway.analog("listen 1");
    peer.send_event(analog_rtp, EVENT_PT, '7', 200);
    gateway.hears(1, "the SIP side's 7", |heard| {
        heard.get("dtmf").map(String::as_str) == Some("7")
    });
    // The media went through the gateway's relay (anchored: a call with an analog leg).
    assert!(
        (20_000..32_000).contains(&analog_rtp.port()),
        "RTP came from the relay's port range: {analog_rtp}"
    );
    // Hanging up the handset sends BYE to the SIP phone.
    gateway.analog("hangup 1");
    phone.wait();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let media = loop {
        let cdrs = gateway.cdrs();
        if let Some(media) = cdrs.split_whitespace().find(|w| w.starts_with("A:")) {
            break media.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no media counters in the CDR: {cdrs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let packets: u64 = media[2..media.find('p').unwrap()].parse().unwrap();
    assert!(
        packets > 100,
        "the relay counted the analog side's packets: {media}"
    );
    assert_eq!(
        last_cdr(&gateway)[..2],
        ["101".to_string(), "201".to_string()]
    );
}

/// The port's count of RTP packets dropped as foreign.
fn foreign_dropped(gateway: &Gateway, port: u32) -> u64 {
    gateway.analog(&format!("status {port}"))["rtp_foreign_dropped"]
        .parse()
        .expect("a count")
}

/// What `port`'s far end heard while `send` sent `packets` RTP packets that the port drops
/// as foreign (returns once all of them are counted).
fn heard_while_dropped(
    gateway: &Gateway,
    port: u32,
    packets: u64,
    send: impl FnOnce(),
) -> HashMap<String, String> {
    gateway.analog(&format!("listen {port}"));
    let expected = foreign_dropped(gateway, port) + packets;
    send();
    gateway.wait_for_analog(
        port,
        "rtp_foreign_dropped",
        &expected.to_string(),
        Duration::from_secs(5),
    );
    gateway.analog(&format!("listen {port}"))
}

#[test]
fn rtp_from_anyone_but_the_far_end_is_not_played_on_an_analog_port() {
    let gateway = Gateway::start(GatewayOptions::default());
    let mut attacker = RtpPeer::new();
    let status = gateway.analog("status 1");
    let analog_rtp: SocketAddr = status["rtp_local"].parse().expect("the port's RTP address");
    // With no call, the port takes nothing.
    attacker.send_tone(analog_rtp, Law::Ulaw, 0, 2000.0, 100);
    gateway.wait_for_analog(1, "rtp_foreign_dropped", "5", Duration::from_secs(15));

    let mut peer = RtpPeer::new();
    let phone = sip_phone(&gateway, "201", "uas_answer.xml", &peer);
    gateway.analog("lift 1");
    gateway.analog("dial 1 201");
    gateway.wait_for_log("analog port 1: call answered");
    // The SIP phone's media arrives through the relay, from the address the port's SDP
    // answer named: it latches at once.
    let relay = analog_to_sip_audio(&gateway, 1, &peer);
    gateway.analog("listen 1");
    peer.send_tone(relay, Law::Ulaw, 0, 1400.0, 400);
    gateway.hears_tone(1, "the far end's 1400 Hz", &[1400.0]);
    gateway.wait_for_log("analog port 1: RTP from ");

    // An attacker sends audio, then an RFC 4733 digit, straight at the port's RTP socket.
    let heard = heard_while_dropped(&gateway, 1, 30, || {
        attacker.send_tone(analog_rtp, Law::Ulaw, 0, 2000.0, 600)
    });
    assert!(
        heard
            .get("tone_hz")
            .and_then(|t| t.parse::<f32>().ok())
            .is_none_or(|hz| (hz - 2000.0).abs() > 50.0),
        "the injected tone was played: {heard:?}"
    );
    let heard = heard_while_dropped(&gateway, 1, 13, || {
        attacker.send_event(analog_rtp, EVENT_PT, '9', 200)
    });
    assert_eq!(heard.get("dtmf"), None, "the injected digit was played");

    // The far end's digit still is.
    peer.send_event(relay, EVENT_PT, '7', 200);
    gateway.hears(1, "the far end's 7", |heard| {
        heard.get("dtmf").map(String::as_str) == Some("7")
    });
    gateway.analog("hangup 1");
    phone.wait();
}

/// The far end sends `ms` of a `hz` tone; port 1 hears it.
fn port_1_hears(gateway: &Gateway, peer: &mut RtpPeer, to: SocketAddr, hz: f32, ms: u32) {
    gateway.analog("listen 1"); // forget what came before
    peer.send_tone(to, Law::Ulaw, 0, hz, ms);
    gateway.hears_tone(1, &format!("the far end's {hz} Hz"), &[hz]);
}

#[test]
fn an_analog_phone_keeps_hearing_the_far_end_when_its_ssrc_and_ptime_change() {
    let gateway = Gateway::start(GatewayOptions::default());
    let mut peer = RtpPeer::new();
    let phone = sip_phone(&gateway, "201", "uas_answer.xml", &peer);
    gateway.analog("lift 1");
    gateway.analog("dial 1 201");
    gateway.wait_for_log("analog port 1: call answered");
    let relay = analog_to_sip_audio(&gateway, 1, &peer);
    port_1_hears(&gateway, &mut peer, relay, 1400.0, 600);
    // Another phone's media (a picker's, a transfer target's) takes over: its own SSRC and
    // sequence numbers, a timestamp base behind the old one, 60 ms packets.
    peer.switch_source(0x0b0b_0001, 40_000, -1_000_000, 60);
    port_1_hears(&gateway, &mut peer, relay, 1800.0, 900);
    // And again: a base far ahead, 10 ms packets.
    peer.switch_source(0x0b0b_0002, 7, 1 << 30, 10);
    port_1_hears(&gateway, &mut peer, relay, 1000.0, 600);
    let status = gateway.analog("status 1");
    assert_eq!(
        status.get("rtp_resyncs").map(String::as_str),
        Some("2"),
        "{status:?}"
    );
    gateway.analog("hangup 1");
    phone.wait();
}

#[test]
fn an_analog_caller_hears_busy_when_the_sip_phone_is_busy_and_congestion_for_nowhere() {
    let gateway = Gateway::start(GatewayOptions::default());
    let port = free_port();
    register(&gateway, "201", port, 600, 200);
    let phone = Sipp::new("uas_reject.xml", port)
        .expect(486)
        .spawn(&gateway);
    gateway.analog("lift 1");
    gateway.analog("dial 1 201");
    gateway.wait_for_log("analog port 1: call failed with 486");
    phone.wait();
    gateway.hears_tone(1, "busy tone (us: 480+620 Hz)", &[480.0, 620.0]);
    gateway.analog("hangup 1");
    // The line counts the hang-up as one (not a hook flash) once it has been on hook longer
    // than a flash: then the line is idle again.
    gateway.wait_for_analog(1, "line_idle", "true", Duration::from_secs(15));
    // 202 is not registered: 480, congestion.
    gateway.analog("lift 1");
    gateway.analog("dial 1 202");
    gateway.wait_for_log("analog port 1: call failed with 480");
}

#[test]
fn a_sip_phone_calls_an_analog_phone_which_shows_caller_id_and_answers() {
    let gateway = Gateway::start(GatewayOptions::default());
    let peer = RtpPeer::new();
    let caller = Sipp::new("uac_call.xml", free_port())
        .service("101")
        .credentials("204", "pw204")
        .key("caller", "204")
        .fill("@MEDIA_PORT@", &peer.port().to_string())
        .fill("@HOLD_MS@", "3000")
        .spawn(&gateway);
    gateway.wait_for_analog(1, "ringing", "true", Duration::from_secs(15));
    // Caller ID is sent between the first ring (2 s) and the second: once the second ring
    // starts, the phone has heard it all.
    gateway.wait_for_analog(1, "ringing", "false", Duration::from_secs(15));
    gateway.wait_for_analog(1, "ringing", "true", Duration::from_secs(15));
    let heard = gateway.analog("listen 1");
    assert_eq!(
        heard.get("callerid_number").map(String::as_str),
        Some("204"),
        "{heard:?}"
    );
    assert_eq!(
        heard.get("callerid_name").map(String::as_str),
        Some("Reception 204"),
        "{heard:?}"
    );
    gateway.analog("lift 1");
    gateway.wait_for_log("analog port 1: answered");
    analog_to_sip_audio(&gateway, 1, &peer);
    // The SIP caller hangs up: the analog phone hears busy until it hangs up too.
    gateway.wait_for_analog(1, "call", "idle", Duration::from_secs(15));
    gateway.hears_tone(1, "busy tone (us: 480+620 Hz)", &[480.0, 620.0]);
    gateway.analog("hangup 1");
    caller.wait();
}

#[test]
fn an_analog_caller_is_picked_up_by_a_sip_phone_with_replaces() {
    let gateway = Gateway::start(GatewayOptions::default());
    let mut peer = RtpPeer::new();
    let unused = RtpPeer::new();
    let callee = sip_phone(&gateway, "201", "uas_ring_picked.xml", &unused);
    gateway.analog("lift 1");
    gateway.analog("dial 1 201");
    gateway.wait_for_log("ringing 1 contact(s)");
    gateway.hears_tone(1, "ringback (us: 440+480 Hz)", &[440.0, 480.0]);
    let pickup = picker("202", &peer, "\"Analog 101\" <sip:101@").spawn(&gateway);
    gateway.wait_for_log("analog port 1: call answered");
    let analog_rtp = analog_to_sip_audio(&gateway, 1, &peer);
    sip_to_analog_audio(&gateway, 1, &mut peer, analog_rtp);
    gateway.analog("hangup 1");
    pickup.wait();
    callee.wait();
    assert_eq!(
        last_cdr(&gateway),
        ["101", "201", "202", "group", "202", "answered"]
    );
}

#[test]
fn an_analog_caller_picked_up_by_a_phone_refusing_replaces_talks_through_the_relay() {
    let gateway = Gateway::start(GatewayOptions::default());
    let mut peer = RtpPeer::new();
    let unused = RtpPeer::new();
    let callee = sip_phone(&gateway, "201", "uas_ring_picked.xml", &unused);
    gateway.analog("lift 1");
    gateway.analog("dial 1 201");
    gateway.wait_for_log("ringing 1 contact(s)");
    // 202's phone refuses the INVITE with Replaces: bridged, then re-INVITEd to the relay.
    let pickup = Sipp::new("uac_pickup_fallback.xml", free_port())
        .service("*8")
        .credentials("202", "pw202")
        .key("caller", "202")
        .out_of_call("uas_replaces_reject.xml")
        .fill("@REJECT@", "488")
        .fill("@MEDIA_PORT@", &peer.port().to_string())
        .spawn(&gateway);
    let relay = logged_port(&pickup.wait_for_log_line("re-invited"));
    gateway.wait_for_log("B took the call's media");
    let analog_rtp = analog_to_sip_audio(&gateway, 1, &peer);
    assert_eq!(
        analog_rtp.port(),
        relay,
        "from the relay port the re-INVITE named"
    );
    sip_to_analog_audio(&gateway, 1, &mut peer, analog_rtp);
    gateway.analog("hangup 1");
    pickup.wait();
    callee.wait();
    assert_eq!(
        last_cdr(&gateway),
        ["101", "201", "202", "group", "202", "answered"]
    );
}

#[test]
fn a_pstn_caller_ringing_sales_is_picked_up_by_a_sip_phone() {
    let gateway = Gateway::start(GatewayOptions::default());
    let peer = RtpPeer::new();
    let unused = RtpPeer::new();
    let callee = sip_phone(&gateway, "201", "uas_ring_picked.xml", &unused);
    gateway.analog("ring 3 5551234 Jane Doe");
    // Offered after two rings, with the caller ID captured between them: the sales group
    // rings 201 and the analog phones 101 and 102.
    gateway.wait_for_log("5551234 -> sales, ringing 3 contact(s)");
    gateway.wait_for_analog(1, "ringing", "true", Duration::from_secs(15));
    gateway.wait_for_analog(2, "ringing", "true", Duration::from_secs(15));
    let pickup = picker("202", &peer, "\"Jane Doe\" <sip:5551234@").spawn(&gateway);
    gateway.wait_for_analog(3, "loop_closed", "true", Duration::from_secs(10));
    gateway.wait_for_analog(1, "ringing", "false", Duration::from_secs(15));
    analog_to_sip_audio(&gateway, 3, &peer);
    // The PSTN caller hangs up: the office drops battery, the picker gets BYE.
    gateway.analog("battery-drop 3");
    pickup.wait();
    callee.wait();
    assert_eq!(
        last_cdr(&gateway),
        ["5551234", "sales", "202", "group", "202", "answered"]
    );
}

#[test]
fn a_sip_caller_ringing_an_analog_phone_is_picked_up_by_another_sip_phone() {
    let gateway = Gateway::start(GatewayOptions::default());
    let peer = RtpPeer::new();
    let caller = Sipp::new("uac_call.xml", free_port())
        .service("102")
        .credentials("204", "pw204")
        .key("caller", "204")
        .fill("@HOLD_MS@", "1000")
        .spawn(&gateway);
    gateway.wait_for_analog(2, "ringing", "true", Duration::from_secs(15));
    let pickup = picker("203", &peer, "\"Reception 204\" <sip:204@").spawn(&gateway);
    gateway.wait_for_analog(2, "ringing", "false", Duration::from_secs(10));
    gateway.wait_for_analog(2, "call", "idle", Duration::from_secs(15));
    caller.wait();
    pickup.wait();
    assert_eq!(
        last_cdr(&gateway),
        ["204", "102", "203", "group", "203", "answered"]
    );
}

/// A gateway whose line offers calls after one ring, to 201.
fn quick_line() -> GatewayOptions {
    GatewayOptions {
        analog: Some(
            "[analog]\nzone = \"us\"\ndahdi_dir = \"/nonexistent/dahdi\"\n\
[[analog.port]]\nchannel = 1\nkind = \"phone\"\n[[analog.port]]\nchannel = 2\nkind = \"phone\"\n\
[[analog.port]]\nchannel = 3\nkind = \"line\"\ntarget = \"201\"\ndial_prefix = \"9\"\nrings_before_offer = 1\n"
                .into(),
        ),
        ..GatewayOptions::default()
    }
}

#[test]
fn the_pstn_far_end_hanging_up_ends_the_sip_call_whatever_the_signal() {
    let gateway = Gateway::start(quick_line());
    let peer = RtpPeer::new();
    for signal in ["battery-drop", "reverse", "busy"] {
        let phone = sip_phone(&gateway, "201", "uas_answer.xml", &peer);
        gateway.analog("ring 3");
        gateway.wait_for_analog(3, "loop_closed", "true", Duration::from_secs(15));
        gateway.analog(&format!("{signal} 3"));
        phone.wait(); // it got the BYE
        gateway.wait_for_analog(3, "loop_closed", "false", Duration::from_secs(15));
        gateway.wait_for_analog(3, "call", "idle", Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(2500)); // the office's ring guard time
    }
}

#[test]
fn a_sip_bye_puts_the_line_on_hook_and_sip_phones_dial_out_with_the_prefix() {
    let gateway = Gateway::start(quick_line());
    let peer = RtpPeer::new();
    let first_call_media = RtpPeer::new();
    let phone = sip_phone(
        &gateway,
        "201",
        "uas_answer_then_bye.xml",
        &first_call_media,
    );
    gateway.analog("ring 3");
    gateway.wait_for_analog(3, "loop_closed", "true", Duration::from_secs(15));
    phone.wait(); // it hung up after 300 ms
    gateway.wait_for_analog(3, "loop_closed", "false", Duration::from_secs(15));

    let caller = Sipp::new("uac_call.xml", free_port())
        .service("95551234")
        .credentials("204", "pw204")
        .key("caller", "204")
        .fill("@MEDIA_PORT@", &peer.port().to_string())
        .fill("@HOLD_MS@", "4000")
        .spawn(&gateway);
    gateway.wait_for_analog(3, "digits", "5551234", Duration::from_secs(15));
    analog_to_sip_audio(&gateway, 3, &peer);
    caller.wait();
    gateway.wait_for_analog(3, "loop_closed", "false", Duration::from_secs(15));
}

#[test]
fn operator_commands_are_checked_and_sigterm_stops_the_gateway() {
    let mut gateway = Gateway::start(GatewayOptions::default());
    let ports = gateway.analog("ports");
    assert_eq!(ports.get("port3").map(String::as_str), Some("line idle"));
    assert!(gateway.analog_refused("lift 3").contains("line port"));
    assert!(gateway.analog_refused("ring 1").contains("phone port"));
    assert!(gateway
        .analog_refused("lift 9")
        .contains("no analog port 9"));
    assert!(gateway.analog_refused("dial 1 12x").contains("DTMF digits"));
    assert!(gateway
        .log()
        .contains("running on the emulated analog card (demo mode)"));
    let status = gateway.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "no clean exit on SIGTERM: {status:?}\n{}",
        gateway.log()
    );
}
