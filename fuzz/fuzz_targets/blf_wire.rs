//! The text other nodes write for BLF across nodes (`blf_dialogs` rows, read from the
//! shared database): whatever a row holds, reading it never panics, and what reads writes
//! back to a text that reads the same.
#![no_main]

use gateway::engine::blf_wire::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(dialogs) = decode(text) {
        let written = encode(&dialogs);
        assert_eq!(
            decode(&written).ok(),
            Some(dialogs),
            "what reads writes back the same: {written:?}"
        );
    }
});
