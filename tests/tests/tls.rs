//! SIP over TLS against the real binary: `openssl s_client` for handshakes (TLS 1.2 and
//! 1.3, a wrong server name, an expired certificate, clear text on the TLS port, SIGHUP
//! reloads) and baresip as a phone registered over TLS that an analog phone calls.
//! Certificates come from a test CA the tests make with `openssl`.

use e2e_tests::baresip::{Baresip, TONE_HZ};
use e2e_tests::tls::{options_over_tls, SClient, TlsSetup};
use e2e_tests::{Gateway, GatewayOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn openssl_is_answered_over_tls_1_2_and_1_3_and_clear_text_on_the_tls_port_is_not() {
    let tls = TlsSetup::new();
    let gateway = Gateway::start(tls.options());
    for (version, named) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let mut client = tls.s_client(true, &[version]);
        client.send(&options_over_tls(&format!("v{}", &version[4..])));
        assert!(client.wait_for("SIP/2.0 200 OK"), "{}", client.output());
        assert!(client.wait_for("Via: SIP/2.0/TLS"), "{}", client.output());
        let output = client.output();
        assert!(output.contains(named), "{version}: {output}");
        assert!(output.contains("Verify return code: 0 (ok)"), "{output}");
    }
    // A client asking for another name: the gateway serves its certificate, which the
    // client's check refuses; nothing is answered in that session.
    let mut wrong = s_client_checking_name(&tls, "wrong.example");
    wrong.send(&options_over_tls("wrong"));
    let output = wrong.finish();
    assert!(output.contains("hostname mismatch"), "{output}");
    assert!(!output.contains("SIP/2.0"), "{output}");
    // Clear text on the TLS port: no SIP answer, the connection closed, and counted.
    let mut clear = TcpStream::connect(("127.0.0.1", tls.port)).unwrap();
    clear
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    clear
        .write_all(options_over_tls("clear").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    let _ = clear.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("SIP/2.0"), "{answer}");
    gateway.wait_for_log("tls: 1 handshake(s) failed");
    // Still serving.
    let mut after = tls.s_client(true, &[]);
    after.send(&options_over_tls("after"));
    assert!(after.wait_for("SIP/2.0 200 OK"), "{}", after.output());
    // An IP address as the server name (illegal in SNI; linphone sends it) is served and
    // writes no log line per handshake (the TLS library's own warnings are not logged: a
    // client could flood the log with them).
    for round in 0..3 {
        let mut ip_named = tls.s_client(false, &["-servername", "127.0.0.1"]);
        ip_named.send(&options_over_tls(&format!("ip{round}")));
        assert!(ip_named.wait_for("SIP/2.0 200 OK"), "{}", ip_named.output());
    }
    assert!(!gateway.log().contains("rustls"), "{}", gateway.log());
}

/// `openssl s_client` checking the gateway's certificate against the host name `name`.
fn s_client_checking_name(tls: &TlsSetup, name: &str) -> SClient {
    let ca = tls.pki.ca_certificate();
    let check = [
        "-CAfile",
        &ca,
        "-verify_return_error",
        "-verify_hostname",
        name,
    ];
    tls.s_client(false, &check)
}

#[test]
fn an_expired_certificate_is_named_with_its_date_and_sighup_replaces_it_keeping_connections() {
    let tls = TlsSetup::new();
    tls.install(&tls.pki.expired_certificate(), &tls.pki.server_key());
    let gateway = Gateway::start(tls.options());
    gateway.wait_for_log("expired on 2020-01-02T00:00:00Z");
    let refused = tls.s_client(true, &[]).finish();
    assert!(refused.contains("certificate has expired"), "{refused}");
    // A session that does not check the certificate, open across the reloads.
    let mut open = tls.s_client(false, &[]);
    open.send(&options_over_tls("before"));
    assert!(open.wait_for("Call-ID: before"), "{}", open.output());

    tls.install(&tls.pki.server_certificate(), &tls.pki.server_key());
    gateway.hang_up();
    gateway.wait_for_log("reload: TLS certificate");
    let mut renewed = tls.s_client(true, &[]);
    renewed.send(&options_over_tls("renewed"));
    assert!(renewed.wait_for("Call-ID: renewed"), "{}", renewed.output());

    // A broken file: the reload is refused, with the file named; the last good
    // certificate stays.
    std::fs::write(&tls.key, "not a key\n").unwrap();
    gateway.hang_up();
    gateway.wait_for_log("reload: TLS files not reloaded");
    assert!(
        gateway
            .log()
            .contains(&format!("tls.private_key {}", tls.key.display())),
        "{}",
        gateway.log()
    );
    let mut still = tls.s_client(true, &[]);
    still.send(&options_over_tls("still"));
    assert!(still.wait_for("Call-ID: still"), "{}", still.output());
    // The session opened before both reloads is still served.
    open.send(&options_over_tls("across"));
    assert!(open.wait_for("Call-ID: across"), "{}", open.output());
}

#[test]
fn a_key_that_is_not_the_certificate_s_stops_the_gateway_naming_both_files() {
    let tls = TlsSetup::new();
    tls.install(&tls.pki.server_certificate(), &tls.pki.stranger_key());
    let output = Gateway::start_failing(tls.options());
    assert!(
        output.contains("does not belong to the certificate"),
        "{output}"
    );
    assert!(output.contains(&tls.key.display().to_string()), "{output}");
    assert!(
        output.contains(&tls.certificate.display().to_string()),
        "{output}"
    );
}

#[test]
fn baresip_registered_over_tls_is_called_from_an_analog_phone_over_its_own_connection() {
    let tls = TlsSetup::new();
    let gateway = Gateway::start(GatewayOptions {
        tls: Some(tls.section()),
        ..GatewayOptions::default()
    });
    let mut phone = Baresip::over_tls("201", tls.port, &tls.pki.ca_certificate());
    phone.wait_registered(&gateway);
    gateway.analog("lift 1");
    gateway.analog("dial 1 201");
    gateway.wait_for_log("analog port 1: call answered");
    gateway.analog("listen 1");
    gateway.hears_tone(1, "baresip's tone", &[TONE_HZ]);
    gateway.analog("hangup 1");
    phone.wait_for("BYE sip:");
    // Every request the gateway sent the phone came over TLS from the TLS port.
    let from_gateway: Vec<_> = phone
        .trace()
        .into_iter()
        .filter(|m| m.to != format!("127.0.0.1:{}", tls.port))
        .filter(|m| !m.start_line.starts_with("SIP/2.0"))
        .collect();
    assert!(
        from_gateway
            .iter()
            .any(|m| m.start_line.starts_with("INVITE ")),
        "{from_gateway:?}"
    );
    assert!(
        from_gateway
            .iter()
            .all(|m| m.transport == "TLS" && m.from == format!("127.0.0.1:{}", tls.port)),
        "{from_gateway:?}"
    );
    let (_, fields) = gateway.last_cdr();
    assert_eq!(fields[2..4], ["101".to_string(), "201".to_string()]);
}
