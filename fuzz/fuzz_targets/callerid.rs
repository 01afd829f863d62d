//! The caller-ID decoder: message bytes (SDMF/MDMF), whole spills, DTMF CLIP strings,
//! and FSK demodulation of arbitrary samples. Nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telephony_hw::dsp::callerid::{decode_spill, demodulate, CallerId, Modem};

fuzz_target!(|data: &[u8]| {
    let _ = CallerId::decode(data);
    let _ = decode_spill(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = CallerId::from_dtmf(text);
    }
    let samples: Vec<i16> = data
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    for modem in [Modem::Bell202, Modem::V23] {
        let _ = decode_spill(&demodulate(modem, &samples));
    }
});
