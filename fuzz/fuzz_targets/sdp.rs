//! SDP handling on arbitrary bodies: the analog ports' negotiation, the dummy dialog's
//! inactive answer, the relay's SDP rewrite, the bridged pickup's answer to one body from
//! another and the re-offer continuing one body's o= line with another's media (the input
//! split at its first NUL). Nothing panics; what we write parses.
#![no_main]

use gateway::analog::sdp::negotiate;
use gateway::engine::media::{audio_address, rewrite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = negotiate(data);
    let _ = audio_address(data);
    let ip = "192.0.2.1".parse().unwrap();
    if let Some(rewritten) = rewrite(data, ip, 40_000) {
        assert_eq!(
            audio_address(&rewritten).map(|a| a.port()),
            Some(40_000),
            "a rewritten body names the relay"
        );
    }
    let _ = gateway::engine::sdp::inactive_answer(data, ip);
    let (offer, other) = data
        .iter()
        .position(|&b| b == 0)
        .map_or((data, data), |nul| (&data[..nul], &data[nul + 1..]));
    if let Some(answer) = gateway::engine::answer::answer(offer, other) {
        assert!(
            gateway::engine::answer::answer(&answer, other).is_some(),
            "an answer parses"
        );
    }
    let _ = gateway::engine::sdp::same_media(offer, other);
    if let Some(reoffer) = gateway::engine::sdp::next_offer(offer, other) {
        assert!(
            gateway::engine::sdp::same_media(&reoffer, &reoffer)
                && gateway::engine::sdp::next_offer(&reoffer, &reoffer).is_some(),
            "a re-offer parses"
        );
    }
});
