//! Calls through the real gateway while nft drops 10% of the UDP datagrams each way (a
//! private network namespace per test): SIPp's and the gateway's retransmissions must carry
//! every call to its end, and every answered call must be billed.
//!
//! The peer's limits, and how the scenarios live with them (each was a failed call before):
//! SIPp takes a retransmitted INVITE or ACK for an unexpected message and abandons the call,
//! so the callee scenario answers a retransmitted INVITE again and absorbs a repeated ACK;
//! SIPp matches a response by its code alone, so the caller's BYE waits for the 200 of its
//! own transaction (`response_txn`), not a retransmitted 200 for the INVITE; SIPp gives up
//! after 5 retransmissions where RFC 3261 sends 7 INVITEs and 11 non-INVITEs, so the caller
//! gets RFC 3261's counts; and a SIPp callee stops answering once it reached its `-m` count
//! although calls are still open, so the callee serves until stopped and is judged by the
//! caller and the CDRs. With those, no call may fail: any failure is the gateway's.

use e2e_tests::netns::LossyLoopback;
use e2e_tests::{free_port, register, Gateway, GatewayOptions, Sipp};
use std::time::Duration;

/// 10% of the datagrams, each way.
const LOSS_PER_MILLE: u32 = 100;

/// CDR rows (after the header) whose result is `answered`.
fn answered_rows(cdrs: &str) -> Vec<&str> {
    cdrs.lines()
        .skip(1)
        .filter(|row| row.split_whitespace().any(|field| field == "answered"))
        .collect()
}

/// Waits (bounded) until the gateway has committed `count` answered CDRs; returns the table.
fn wait_for_answered(gateway: &Gateway, count: usize) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let cdrs = gateway.recent_cdrs(count + 100);
        if answered_rows(&cdrs).len() >= count || std::time::Instant::now() > deadline {
            return cdrs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn five_hundred_calls_complete_at_ten_percent_loss() {
    let network = LossyLoopback::enter();
    let gateway = Gateway::start(GatewayOptions {
        udp_only_without_analog: true,
        ..GatewayOptions::default()
    });
    let phone = free_port();
    register(&gateway, "201", phone, 3600, 200);
    network.drop_udp(LOSS_PER_MILLE);
    let limit = Duration::from_secs(120);
    let callee = Sipp::new("uas_answer.xml", phone)
        .calls(100_000)
        .time_limit(limit)
        .spawn(&gateway);
    Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("202", "pw202")
        .key("caller", "202")
        .rate(25)
        .calls(500)
        .retransmissions(7, 11)
        .time_limit(limit)
        .run(&gateway);
    callee.kill();
    let dropped = network.dropped();
    assert!(
        dropped > 500,
        "the loss rule dropped only {dropped} datagrams"
    );
    let cdrs = wait_for_answered(&gateway, 500);
    let answered = answered_rows(&cdrs);
    assert_eq!(answered.len(), 500, "{cdrs}");
    assert!(
        answered.iter().all(|row| row.contains("BYE from caller")),
        "every call ended by the caller's BYE:\n{cdrs}"
    );
}
