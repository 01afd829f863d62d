//! Bad input against the real binary: RFC answers for broken requests, silent drops for
//! garbage, closed TCP connections, no crash on the RFC 4475 torture messages, and a normal
//! call still works afterwards.

use e2e_tests::{
    answers_options, free_port, options_request, register, status_of, tcp_closed_after,
    udp_exchange, workspace_root, Gateway, GatewayOptions, Sipp,
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(2);

fn answer(gateway: &Gateway, text: &str) -> Option<String> {
    udp_exchange(gateway, text.as_bytes(), WAIT)
}

fn request(method: &str, uri: &str, branch: &str, extra: &str) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{branch}\r\nTo: <sip:201@127.0.0.1>\r\n\
Call-ID: {branch}@probe\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn broken_requests_get_rfc_answers() {
    let gateway = Gateway::start(GatewayOptions {
        max_message_size: 4096,
        ..GatewayOptions::default()
    });
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "missing Call-ID",
            request("OPTIONS", "sip:201@127.0.0.1", "m1", "").replace("Call-ID: m1@probe\r\n", ""),
            400,
        ),
        (
            "unsupported URI scheme",
            request("INVITE", "tel:+15551234", "m2", ""),
            416,
        ),
        (
            "unknown Require",
            request(
                "OPTIONS",
                "sip:201@127.0.0.1",
                "m3",
                "Require: teleportation\r\n",
            ),
            420,
        ),
        (
            "Max-Forwards 0",
            request("INVITE", "sip:201@127.0.0.1", "m4", "")
                .replace("Max-Forwards: 70", "Max-Forwards: 0"),
            483,
        ),
        (
            "bad version",
            request("OPTIONS", "sip:201@127.0.0.1", "m5", "")
                .replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia"),
            505,
        ),
        (
            "unknown method",
            request("FROBNICATE", "sip:201@127.0.0.1", "m6", ""),
            501,
        ),
        (
            "Content-Length larger than the datagram",
            request("OPTIONS", "sip:201@127.0.0.1", "m7", "")
                .replace("Content-Length: 0", "Content-Length: 300"),
            400,
        ),
        (
            // RFC 4475 §3.1.2.8 (lwsruri): the fast path used to drop it unanswered.
            "whitespace in the Request-URI",
            request("INVITE", "sip:201@127.0.0.1; lr", "m10", ""),
            400,
        ),
        (
            "empty method",
            request("", "sip:201@127.0.0.1", "m11", ""),
            400,
        ),
        (
            "oversized",
            request(
                "OPTIONS",
                "sip:201@127.0.0.1",
                "m8",
                &format!("X-Padding: {}\r\n", "x".repeat(5000)),
            ),
            513,
        ),
    ];
    for (what, text, expected) in cases {
        let response = answer(&gateway, &text).unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(status_of(&response), Some(expected), "{what}: {response}");
    }
    let response = answer(
        &gateway,
        &request(
            "OPTIONS",
            "sip:201@127.0.0.1",
            "m9",
            "Require: teleportation\r\n",
        ),
    )
    .unwrap();
    assert!(
        response.contains("Unsupported: teleportation"),
        "{response}"
    );
}

#[test]
fn garbage_is_dropped_and_tcp_garbage_disconnected() {
    let mut gateway = Gateway::start(GatewayOptions::default());
    for junk in [
        &b"\x00\x01\x02\x03"[..],
        b"hello world\r\n\r\n",
        b"SIP/2.0 200\r\n",
        &[0xffu8; 1400],
    ] {
        assert_eq!(
            udp_exchange(&gateway, junk, Duration::from_millis(300)),
            None
        );
    }
    // The fast path drops them before the control plane sees them, and counts them.
    assert!(gateway
        .log()
        .contains("fast path dropped a malformed datagram"));
    assert!(tcp_closed_after(&gateway, b"this is not SIP\r\n\r\n", WAIT));
    assert!(tcp_closed_after(
        &gateway,
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -7\r\n\r\n",
        WAIT
    ));
    assert!(answers_options(&gateway));
    assert!(gateway.terminate().is_some());
    assert!(
        gateway
            .log()
            .contains("4 malformed dropped, 0 too large, 0 send(s) dropped"),
        "{}",
        gateway.log()
    );
}

#[test]
fn torture_messages_do_not_break_the_gateway_and_calls_still_work() {
    let gateway = Gateway::start(GatewayOptions::default());
    let fixtures = workspace_root().join("gateway/tests/fixtures/rfc4475");
    let mut sent = 0;
    for entry in std::fs::read_dir(&fixtures).expect("fixtures") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "dat") {
            let bytes = std::fs::read(&path).unwrap();
            let _ = udp_exchange(&gateway, &bytes, Duration::from_millis(50));
            sent += 1;
        }
    }
    assert_eq!(sent, 49);
    assert!(
        answers_options(&gateway),
        "the gateway still answers after the torture messages"
    );
    let probe = options_request(gateway.port, "after");
    assert!(udp_exchange(&gateway, probe.as_bytes(), WAIT).is_some());

    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_answer.xml", phone).spawn(&gateway);
    Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("202", "pw202")
        .key("caller", "202")
        .run(&gateway);
    callee.wait();
}
