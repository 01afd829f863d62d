//! Registration with digest authentication against the real binary, driven by SIPp.

use e2e_tests::{free_port, register, Gateway, GatewayOptions, Sipp};

#[test]
fn good_password_registers_and_survives_a_restart() {
    let mut gateway = Gateway::start(GatewayOptions::default());
    let callee = free_port();
    register(&gateway, "201", callee, 600, 200);
    gateway.restart();
    assert!(
        gateway.log().contains("1 registration(s) restored"),
        "{}",
        gateway.log()
    );
    // The restored binding is used: a call reaches the phone at its registered address.
    let answering = Sipp::new("uas_answer.xml", callee).spawn(&gateway);
    Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("202", "pw202")
        .key("caller", "202")
        .run(&gateway);
    answering.wait();
}

#[test]
fn wrong_password_and_unknown_user_are_forbidden() {
    let gateway = Gateway::start(GatewayOptions::default());
    Sipp::new("register.xml", free_port())
        .service("201")
        .credentials("201", "not-the-password")
        .key("expires", "600")
        .expect(403)
        .run(&gateway);
    Sipp::new("register.xml", free_port())
        .service("299")
        .credentials("299", "pw299")
        .key("expires", "600")
        .expect(403)
        .run(&gateway);
}

#[test]
fn registration_expires_and_unregisters() {
    let gateway = Gateway::start(GatewayOptions::default());
    let phone = free_port();
    register(&gateway, "201", phone, 1, 200);
    gateway.wait_for_log("registration of 201 expired");
    let call = |code| {
        Sipp::new("uac_fail.xml", free_port())
            .service("201")
            .credentials("202", "pw202")
            .key("caller", "202")
            .expect(code)
            .run(&gateway)
    };
    call(480);
    register(&gateway, "201", phone, 600, 200);
    register(&gateway, "201", phone, 0, 200);
    call(480);
}

#[test]
fn registration_over_tcp() {
    let gateway = Gateway::start(GatewayOptions::default());
    Sipp::new("register.xml", free_port())
        .tcp()
        .service("203")
        .credentials("203", "pw203")
        .key("expires", "600")
        .expect(200)
        .run(&gateway);
    assert!(gateway.log().contains("203 now has 1 contact(s)"));
}
