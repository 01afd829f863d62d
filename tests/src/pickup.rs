//! The first steps of the pickup tests: 201 ringing with a call from 204, and pickers.

use crate::{free_port, register, Gateway, Sipp, SippRun};

/// A Call-ID that lands on engine shard `shard` of 2.
pub fn call_id_on_shard(shard: usize, seed: &str) -> String {
    let shards = gateway::engine::shard::ShardId::new(0, 2).unwrap();
    (0..)
        .map(|n| format!("{seed}-{n}@127.0.0.1"))
        .find(|call_id| shards.of_call_id(call_id) == shard)
        .unwrap()
}

/// [`ringing`] with the caller's Call-ID on engine shard `shard` of 2.
pub fn ringing_on_shard(gateway: &Gateway, shard: usize) -> (SippRun, SippRun) {
    let caller_call_id = call_id_on_shard(shard, "caller");
    ringing_with(gateway, "uas_ring_picked.xml", "uac_call.xml", |caller| {
        caller.call_id(&caller_call_id)
    })
}

/// A SIPp picker `ext` (password `pw<ext>`) dialling `code` with `scenario`.
pub fn picker(scenario: &str, code: &str, ext: &str) -> Sipp {
    Sipp::new(scenario, free_port())
        .service(code)
        .credentials(ext, &format!("pw{ext}"))
        .key("caller", ext)
}

/// 201 registered and ringing with a call from 204; returns (callee, caller) SIPp runs.
pub fn ringing(
    gateway: &Gateway,
    callee_scenario: &str,
    caller_scenario: &str,
) -> (SippRun, SippRun) {
    ringing_with(gateway, callee_scenario, caller_scenario, |caller| caller)
}

/// [`ringing`], the caller's SIPp run adjusted by `caller`.
pub fn ringing_with(
    gateway: &Gateway,
    callee_scenario: &str,
    caller_scenario: &str,
    caller: impl FnOnce(Sipp) -> Sipp,
) -> (SippRun, SippRun) {
    let phone = free_port();
    register(gateway, "201", phone, 600, 200);
    let callee = Sipp::new(callee_scenario, phone).spawn(gateway);
    let caller = caller(
        Sipp::new(caller_scenario, free_port())
            .service("201")
            .credentials("204", "pw204")
            .key("caller", "204")
            .expect(480),
    )
    .spawn(gateway);
    gateway.wait_for_log("ringing 1 contact(s)");
    (callee, caller)
}
