//! B2BUA calls between extensions against the real binary, driven by SIPp.

use e2e_tests::{free_port, register, Gateway, GatewayOptions, Sipp};

fn caller(scenario: &str, callee: &str) -> Sipp {
    Sipp::new(scenario, free_port())
        .service(callee)
        .credentials("202", "pw202")
        .key("caller", "202")
}

#[test]
fn call_rings_is_answered_and_caller_hangs_up() {
    let gateway = Gateway::start(GatewayOptions::default());
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_answer.xml", phone).spawn(&gateway);
    caller("uac_call.xml", "201").run(&gateway);
    callee.wait();
    assert!(gateway.log().contains("ended by A"));
}

#[test]
fn callee_hangs_up() {
    let gateway = Gateway::start(GatewayOptions::default());
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_answer_then_bye.xml", phone).spawn(&gateway);
    caller("uac_call_callee_hangs_up.xml", "201").run(&gateway);
    callee.wait();
    assert!(gateway.log().contains("ended by B"));
}

#[test]
fn caller_cancels_before_answer() {
    let gateway = Gateway::start(GatewayOptions::default());
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_ring_cancel.xml", phone).spawn(&gateway);
    caller("uac_cancel.xml", "201")
        .fill("@CANCEL_AFTER_MS@", "0")
        .run(&gateway);
    callee.wait();
}

#[test]
fn busy_callee_gives_486() {
    let gateway = Gateway::start(GatewayOptions::default());
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_reject.xml", phone)
        .expect(486)
        .spawn(&gateway);
    caller("uac_fail.xml", "201").expect(486).run(&gateway);
    callee.wait();
}

#[test]
fn unknown_and_unregistered_extensions() {
    let gateway = Gateway::start(GatewayOptions::default());
    caller("uac_fail.xml", "299").expect(404).run(&gateway);
    caller("uac_fail.xml", "203").expect(480).run(&gateway);
}

#[test]
fn no_answer_ends_with_480_after_the_ring_timeout() {
    let gateway = Gateway::start(GatewayOptions {
        ring_timeout_secs: 2,
        ..GatewayOptions::default()
    });
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_ring_cancel.xml", phone).spawn(&gateway);
    caller("uac_fail.xml", "201").expect(480).run(&gateway);
    callee.wait();
}

#[test]
fn call_over_tcp() {
    let gateway = Gateway::start(GatewayOptions::default());
    let phone = free_port();
    Sipp::new("register.xml", phone)
        .tcp()
        .service("201")
        .credentials("201", "pw201")
        .key("expires", "600")
        .expect(200)
        .run(&gateway);
    let callee = Sipp::new("uas_answer.xml", phone).tcp().spawn(&gateway);
    caller("uac_call.xml", "201").tcp().run(&gateway);
    callee.wait();
}

/// The kernel tears down a killed process's io_uring rings after it has been reaped, and
/// their sockets keep the SIP port for some milliseconds: a supervisor restarting the
/// gateway at once must still get it listening.
#[test]
fn a_gateway_restarted_at_once_after_kill_9_listens_again() {
    let mut gateway = Gateway::start(GatewayOptions::default());
    for _ in 0..5 {
        gateway.kill();
        gateway.start_again();
    }
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
}

#[test]
fn calls_up_when_the_gateway_is_killed_get_interrupted_cdrs_with_their_talk_time() {
    let mut gateway = Gateway::start(GatewayOptions {
        billing_mark_secs: 1,
        ..GatewayOptions::default()
    });
    let phone = free_port();
    register(&gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_answer.xml", phone).calls(2).spawn(&gateway);
    let caller = caller("uac_call.xml", "201")
        .calls(2)
        .fill("@HOLD_MS@", "60000")
        .spawn(&gateway);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while gateway.log().matches("answered by 201").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", gateway.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The store logs each mark as it applies it, then the commit. The second mark with both
    // calls up came a full interval after the first, so after both answers: once a commit
    // follows it, a crash keeps more than no talk time.
    let up_from = gateway.log().len();
    let second_mark_committed = |log: &str| {
        log.match_indices("2 answered call(s) marked up")
            .nth(1)
            .is_some_and(|(at, _)| log[at..].contains("billing records committed"))
    };
    while !second_mark_committed(&gateway.log()[up_from..]) {
        assert!(std::time::Instant::now() < deadline, "{}", gateway.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    gateway.kill();
    caller.kill();
    callee.kill();
    gateway.start_again();
    gateway.wait_for_log("an earlier run stopped with 2 call(s) up and 0 ringing");
    let cdrs = gateway.cdrs();
    let interrupted: Vec<Vec<&str>> = cdrs
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.get(7) == Some(&"interrupted"))
        .collect();
    assert_eq!(interrupted.len(), 2, "{cdrs}");
    for fields in interrupted {
        assert_eq!(fields[2..7], ["202", "201", "201", "none", "202"], "{cdrs}");
        let talk: f64 = fields[8].parse().unwrap();
        assert!(talk >= 1.0, "talk time to the last mark: {cdrs}");
    }
}
