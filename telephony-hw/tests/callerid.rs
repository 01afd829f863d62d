//! Caller ID: messages, Bell 202 / V.23 spills at 20 dB S/N, checksum errors, DTMF CLIP, and
//! `minimodem --rx 1200` (an independent Bell 202 decoder) reading our spill.

use std::process::Command;
use telephony_hw::dsp::callerid::{
    decode_spill, demodulate, modulate, Absence, CallerId, CallerIdError, Modem,
};
use telephony_hw::dsp::dtmf::{detect_digits, DtmfGenerator, DtmfThresholds};

fn alice() -> CallerId {
    CallerId {
        date_time: Some((11, 24, 20, 15)),
        number: Some("2015550123".into()),
        name: Some("ALICE SMITH".into()),
        ..CallerId::default()
    }
}

#[test]
fn mdmf_and_sdmf_round_trip_with_the_gr30_layout() {
    let mdmf = alice().encode_mdmf();
    assert_eq!(mdmf[0], 0x80);
    assert_eq!(mdmf[1] as usize, mdmf.len() - 3);
    assert_eq!(&mdmf[2..4], &[0x01, 8]);
    assert_eq!(&mdmf[4..12], b"11242015");
    assert_eq!(
        mdmf.iter().fold(0u8, |s, b| s.wrapping_add(*b)),
        0,
        "checksum makes the sum 0"
    );
    assert_eq!(CallerId::decode(&mdmf).unwrap(), alice());

    let sdmf = alice().encode_sdmf();
    assert_eq!(sdmf[0], 0x04);
    let decoded = CallerId::decode(&sdmf).unwrap();
    assert_eq!(decoded.number.as_deref(), Some("2015550123"));
    assert_eq!(decoded.name, None, "SDMF carries no name");

    let private = CallerId {
        number_absent: Some(Absence::Private),
        name_absent: Some(Absence::Private),
        ..CallerId::default()
    };
    let decoded = CallerId::decode(&private.encode_mdmf()).unwrap();
    assert_eq!(
        (decoded.number_absent, decoded.name_absent),
        (Some(Absence::Private), Some(Absence::Private))
    );
    let out_of_area = CallerId {
        number_absent: Some(Absence::Unavailable),
        ..CallerId::default()
    };
    assert_eq!(
        CallerId::decode(&out_of_area.encode_sdmf())
            .unwrap()
            .number_absent,
        Some(Absence::Unavailable)
    );
}

#[test]
fn a_bad_checksum_is_reported_never_accepted() {
    let mut message = alice().encode_mdmf();
    message[8] ^= 0x01;
    assert!(matches!(
        CallerId::decode(&message),
        Err(CallerIdError::Checksum { .. })
    ));
    let short = &alice().encode_mdmf()[..10];
    assert_eq!(CallerId::decode(short), Err(CallerIdError::Truncated));
    assert_eq!(
        CallerId::decode(&[0x99, 0, 0x67]),
        Err(CallerIdError::UnknownType(0x99))
    );
}

fn with_noise(signal: &[i16], snr_db: f32, seed: u64) -> Vec<i16> {
    let mut state = seed;
    let signal_rms =
        (signal.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / signal.len() as f64).sqrt();
    let noise_rms = signal_rms / 10f64.powf(snr_db as f64 / 20.0);
    signal
        .iter()
        .map(|&s| {
            let mut uniform = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 11) as f64 / (1u64 << 53) as f64).max(1e-12)
            };
            let (u1, u2) = (uniform(), uniform());
            let g = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (s as f64 + noise_rms * g).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

#[test]
fn spills_decode_clean_and_at_20_db_snr_for_both_modems() {
    for modem in [Modem::Bell202, Modem::V23] {
        for (message, expected) in [
            (alice().encode_mdmf(), alice()),
            (
                alice().encode_sdmf(),
                CallerId {
                    name: None,
                    ..alice()
                },
            ),
        ] {
            let spill = modulate(modem, &message, -13.0);
            assert_eq!(
                decode_spill(&demodulate(modem, &spill)).unwrap(),
                expected,
                "{modem:?} clean"
            );
            for seed in 1..=5 {
                let noisy = with_noise(&spill, 20.0, seed);
                assert_eq!(
                    decode_spill(&demodulate(modem, &noisy)).unwrap(),
                    expected,
                    "{modem:?} at 20 dB, seed {seed}"
                );
            }
        }
    }
}

#[test]
fn a_corrupted_spill_is_rejected() {
    let mut message = alice().encode_mdmf();
    let last = message.len() - 1;
    message[last] ^= 0xFF;
    let spill = modulate(Modem::Bell202, &message, -13.0);
    assert!(matches!(
        decode_spill(&demodulate(Modem::Bell202, &spill)),
        Err(CallerIdError::Checksum { .. })
    ));
    let silence = vec![0i16; 8000];
    assert_eq!(
        decode_spill(&demodulate(Modem::Bell202, &silence)),
        Err(CallerIdError::NotFound)
    );
}

#[test]
fn dtmf_clip_round_trips_through_the_dtmf_detector() {
    for id in [
        CallerId {
            number: Some("0612345678".into()),
            ..CallerId::default()
        },
        CallerId {
            number_absent: Some(Absence::Private),
            ..CallerId::default()
        },
    ] {
        let digits = id.to_dtmf();
        let audio = DtmfGenerator::new(-10.0, -8.0).dial(&digits, 70, 70);
        let heard = detect_digits(&audio, DtmfThresholds::default());
        assert_eq!(CallerId::from_dtmf(&heard), Some(id));
    }
    assert_eq!(CallerId::from_dtmf("A12"), None, "no end digit");
}

#[test]
fn minimodem_decodes_our_bell_202_spill() {
    let found = Command::new("sh")
        .args(["-c", "command -v minimodem && command -v sox"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "minimodem and sox are needed: apt-get install minimodem sox, or run scripts/test.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let (raw, wav) = (dir.path().join("spill.raw"), dir.path().join("spill.wav"));
    let spill = modulate(Modem::Bell202, &alice().encode_mdmf(), -10.0);
    let mut padded = vec![0i16; 4000];
    padded.extend(spill);
    padded.extend(vec![0i16; 4000]);
    let bytes: Vec<u8> = padded.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&raw, bytes).unwrap();
    let status = Command::new("sox")
        .args([
            "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1",
        ])
        .arg(&raw)
        .arg(&wav)
        .status()
        .unwrap();
    assert!(status.success());
    let output = Command::new("minimodem")
        .args(["--rx", "1200", "-q", "-f"])
        .arg(&wav)
        .output()
        .unwrap();
    let decoded = output.stdout;
    let text = String::from_utf8_lossy(&decoded);
    assert!(
        text.contains("2015550123") && text.contains("ALICE SMITH"),
        "minimodem printed {text:?}"
    );
    // The bytes minimodem recovered form a message our decoder accepts, checksum included.
    assert_eq!(decode_spill(&decoded).unwrap(), alice());
}
