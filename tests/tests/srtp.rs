//! SRTP (SDES keys over TLS) against the real binary, with baresip and linphone as the
//! phones: calls to and from analog phones, whose ports terminate SRTP themselves; a call
//! between two SRTP phones through the relay; `*8` pickups of an analog caller, bridged
//! (baresip) and through the INVITE with Replaces (linphone). Audio is checked each way.

use e2e_tests::baresip::{Baresip, TONE_HZ};
use e2e_tests::linphone::Linphone;
use e2e_tests::tls::TlsSetup;
use e2e_tests::{Gateway, GatewayOptions};
use std::time::{Duration, Instant};

/// The gateway serving TLS with `media.srtp = "required"`.
fn requiring_srtp(tls: &TlsSetup) -> Gateway {
    Gateway::start(GatewayOptions {
        keys: vec![("media", "srtp = \"required\"".to_string())],
        ..tls.options()
    })
}

#[test]
fn baresip_with_mandatory_srtp_calls_an_analog_phone_and_each_hears_the_other() {
    let tls = TlsSetup::new();
    let gateway = Gateway::start(tls.options());
    let mut phone = Baresip::over_tls_with(
        "201",
        tls.port,
        &tls.pki.ca_certificate(),
        ";mediaenc=srtp-mand",
        &["/dial 101"],
    );
    gateway.wait_for_log("analog port 1: incoming call");
    gateway.analog("lift 1");
    gateway.wait_for_log("as SRTP (AES_CM_128_HMAC_SHA1_80)");
    phone.wait_for("SRTP is Enabled");
    // baresip's audio, decrypted by the port, reaches the analog phone.
    gateway.hears_tone(1, "baresip's tone through SRTP", &[TONE_HZ]);
    // The port's audio, encrypted by it, is decrypted and decoded by baresip.
    gateway.analog("say 1 1000 5000");
    phone.wait_for_audio_received();
    let status = gateway.analog("status 1");
    assert_eq!(status["srtp_refused"], "0", "{status:?}");
    assert!(
        status["rtp_received"].parse::<u64>().unwrap() > 20,
        "{status:?}"
    );
    // The offer was SRTP and went over TLS: its key never crossed the wire in clear.
    let invite = phone
        .trace()
        .into_iter()
        .find(|m| m.start_line.starts_with("INVITE sip:101@"))
        .expect("baresip's INVITE in its trace");
    assert_eq!(invite.transport, "TLS", "{invite:?}");
    assert!(phone.output().contains("RTP/SAVP"), "{}", phone.output());
    gateway.analog("hangup 1");
    phone.wait_for("BYE sip:");
}

#[test]
fn an_anchored_call_between_two_srtp_phones_passes_their_srtp_through_the_relay() {
    let tls = TlsSetup::new();
    let gateway = Gateway::start(GatewayOptions {
        media_anchor: Some("always"),
        ..tls.options()
    });
    let ca = tls.pki.ca_certificate();
    let mut callee = Baresip::over_tls_with("202", tls.port, &ca, ";mediaenc=srtp-mand", &[]);
    callee.wait_registered(&gateway);
    let mut caller =
        Baresip::over_tls_with("201", tls.port, &ca, ";mediaenc=srtp-mand", &["/dial 202"]);
    caller.wait_for("SRTP is Enabled");
    callee.wait_for("SRTP is Enabled");
    // Keyed end to end: each decodes the other's audio, which crossed the relay.
    caller.wait_for_audio_received();
    callee.wait_for_audio_received();
    // What each phone was told to send to (in the SDP the gateway sent it) is a relay
    // port (20000-31999 in these tests); the phones' own are 61000-61999.
    for phone in [&caller, &callee] {
        let output = phone.output();
        let ports: Vec<u16> = output
            .split("m=audio ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        assert!(
            ports.iter().any(|port| (20_000..32_000).contains(port)),
            "{ports:?}"
        );
        assert!(output.contains("RTP/SAVP"), "{output}");
    }
}

#[test]
fn an_analog_phone_calling_a_phone_that_requires_srtp_offers_it_srtp() {
    let tls = TlsSetup::new();
    let gateway = requiring_srtp(&tls);
    let ca = tls.pki.ca_certificate();
    let mut phone = Baresip::over_tls_with("201", tls.port, &ca, ";mediaenc=srtp-mand", &[]);
    phone.wait_registered(&gateway);
    gateway.analog("lift 1");
    gateway.analog("dial 1 201");
    gateway.wait_for_log("as SRTP (AES_CM_128_HMAC_SHA1_80)");
    phone.wait_for("SRTP is Enabled");
    gateway.hears_tone(1, "baresip's tone through SRTP", &[TONE_HZ]);
    phone.wait_for_audio_received();
    assert_eq!(gateway.analog("status 1")["srtp_refused"], "0");
    gateway.analog("hangup 1");
    phone.wait_for("BYE sip:");
}

/// The product's own flow, secured: an analog caller rings a SIP phone, a colleague over
/// TLS takes the call with `*8`, and the call's media is SRTP end to end between the
/// analog port and the picker, each hearing the other; the picker is billed.
#[test]
fn a_picker_over_tls_takes_an_analog_call_with_star_8_and_srtp_both_ways() {
    let tls = TlsSetup::new();
    let gateway = requiring_srtp(&tls);
    let ca = tls.pki.ca_certificate();
    let secure_ringing = ";mediaenc=srtp-mand;answermode=manual";
    let mut callee = Baresip::over_tls_with("202", tls.port, &ca, secure_ringing, &[]);
    callee.wait_registered(&gateway);
    gateway.analog("lift 1");
    gateway.analog("dial 1 202");
    callee.wait_for("Incoming call");
    let mut picker =
        Baresip::over_tls_with("201", tls.port, &ca, ";mediaenc=srtp-mand", &["/dial *8"]);
    gateway.wait_for_log("analog port 1: call answered");
    gateway.wait_for_log("as SRTP (AES_CM_128_HMAC_SHA1_80)");
    picker.wait_for("SRTP is Enabled");
    gateway.hears_tone(1, "the picker's tone through SRTP", &[TONE_HZ]);
    picker.wait_for_audio_received();
    assert_eq!(gateway.analog("status 1")["srtp_refused"], "0");
    gateway.analog("hangup 1");
    picker.wait_for("BYE sip:");
    // Caller, called, answered by, how, billed, result.
    let (cdrs, fields) = gateway.last_cdr();
    assert!(fields.len() >= 8, "{cdrs}");
    assert_eq!(
        &fields[2..8],
        ["101", "202", "201", "group", "201", "answered"],
        "{cdrs}"
    );
}

/// The issue's own interop case, with linphone: it registers over TLS (checking the
/// gateway's certificate), takes an analog caller ringing another phone with `*8`, the
/// gateway hands it the call with an INVITE with Replaces over TLS, and the media is SRTP
/// between linphone and the analog port: the analog phone hears what linphone plays.
#[test]
fn linphone_over_tls_picks_up_an_analog_call_with_star_8_through_replaces_with_srtp() {
    let tls = TlsSetup::new();
    let gateway = requiring_srtp(&tls);
    let ca = tls.pki.ca_certificate();
    let ringing = ";mediaenc=srtp-mand;answermode=manual";
    let mut callee = Baresip::over_tls_with("202", tls.port, &ca, ringing, &[]);
    let mut picker = Linphone::over_tls("203", tls.port, &ca);
    picker.until("register-status ALL", "LinphoneRegistrationOk");
    callee.wait_registered(&gateway);
    gateway.analog("lift 1");
    gateway.analog("dial 1 202");
    callee.wait_for("Incoming call");
    picker.until("call sip:*8@127.0.0.1", "Status: Ok");
    gateway.wait_for_log(": connected through Replaces");
    gateway.wait_for_log("as SRTP (AES_CM_128_HMAC_SHA1_80)");
    picker.until("call-status", "LinphoneCallStreamsRunning");
    picker.play_tone(TONE_HZ);
    gateway.hears_tone(1, "linphone's tone through SRTP", &[TONE_HZ]);
    // linphone's packets keep coming and are decrypted (a second of them at least).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = gateway.analog("status 1");
        if status["rtp_received"].parse::<u64>().unwrap() > 50 {
            break;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the analog phone's audio reaches linphone, decrypted.
    gateway.analog("say 1 1000 8000");
    wait_for_linphone_audio(&picker);
    // The INVITE with Replaces reached linphone over TLS with the analog port's key.
    let log = picker.log();
    assert!(
        log.contains("Replaces: "),
        "no INVITE with Replaces in linphone's log"
    );
    assert!(
        log.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80"),
        "no key in linphone's log"
    );
    gateway.analog("hangup 1");
    let (cdrs, fields) = gateway.last_cdr();
    assert!(fields.len() >= 8, "{cdrs}");
    assert_eq!(
        &fields[2..8],
        ["101", "202", "203", "group", "203", "answered"],
        "{cdrs}"
    );
}

/// linphone (SRTP mandatory, over TLS) calls an analog phone: the port answers secure, the
/// analog phone hears what linphone plays, linphone receives the port's audio, and the STUN
/// keep-alives linphone sends on its RTP port are set aside, not taken for bad SRTP.
#[test]
fn linphone_over_tls_calls_an_analog_phone_with_srtp_both_ways() {
    let tls = TlsSetup::new();
    let gateway = Gateway::start(tls.options());
    let mut phone = Linphone::over_tls("203", tls.port, &tls.pki.ca_certificate());
    phone.until("register-status ALL", "LinphoneRegistrationOk");
    phone.until("call sip:101@127.0.0.1", "Status: Ok");
    gateway.wait_for_log("analog port 1: incoming call");
    gateway.analog("lift 1");
    gateway.wait_for_log("as SRTP (AES_CM_128_HMAC_SHA1_80)");
    phone.until("call-status", "LinphoneCallStreamsRunning");
    phone.play_tone(TONE_HZ);
    gateway.hears_tone(1, "linphone's tone through SRTP", &[TONE_HZ]);
    gateway.analog("say 1 1000 8000");
    wait_for_linphone_audio(&phone);
    let status = gateway.analog("status 1");
    assert_eq!(status["srtp_refused"], "0", "{status:?}");
    gateway.analog("hangup 1");
}

/// Waits until linphone receives at least 32 kbit/s of RTP and has decrypted all of it.
fn wait_for_linphone_audio(phone: &Linphone) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while phone.received_kbit_per_second() < 32.0 {
        assert!(
            Instant::now() < deadline,
            "linphone received no audio:\n{}",
            phone.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !phone.log().contains("srtp_unprotect"),
        "linphone could not decrypt"
    );
}
