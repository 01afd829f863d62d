//! RTP and RFC 4733 as the analog ports receive them: arbitrary packets (split at 0xff
//! 0xff) into a media session's jitter buffer and event decoder, with the line pulling
//! audio in between. Nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telephony_hw::dahdi::channel::BLOCK_SIZE;
use telephony_hw::dsp::g711::Law;
use telephony_hw::dsp::telephone_event::TelephoneEvent;
use telephony_hw::line::driver::CallAudio;
use telephony_hw::media::session::{MediaFormat, MediaSession, StreamStart};

fuzz_target!(|data: &[u8]| {
    let mut session = MediaSession::new(
        MediaFormat {
            law: Law::Ulaw,
            payload_type: 0,
            event_payload_type: Some(101),
        },
        StreamStart {
            ssrc: 1,
            sequence: 2,
            timestamp: 3,
        },
    );
    let mut line = [0i16; BLOCK_SIZE];
    for (i, packet) in data.split(|&b| b == 0xff).enumerate() {
        let _ = TelephoneEvent::decode(packet);
        session.set_now(i as u64 * 20);
        session.receive(packet);
        session.play_to_line(&mut line);
    }
});
