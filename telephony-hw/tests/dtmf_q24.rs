//! DTMF detector against Q.23/Q.24 in the style of the Mitel CM7291 tests (as spandsp's
//! dtmf_rx_tests summarise them), with synthetic signals: decode, bandwidth, twist, dynamic
//! range, guard times, noise and talk-off.

use std::f64::consts::TAU;
use telephony_hw::dsp::dtmf::{detect_digits, frequencies, DtmfThresholds};
use telephony_hw::dsp::level::amplitude_for_dbm0;

/// Deterministic noise source (xorshift + Box-Muller).
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Gaussian sample with this RMS.
    fn gaussian(&mut self, rms: f64) -> f64 {
        let (u1, u2) = (self.uniform().max(1e-12), self.uniform());
        rms * (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
}

/// Two sines (any frequencies) at the given levels, `ms` long.
fn dual(f1: f64, dbm1: f32, f2: f64, dbm2: f32, ms: usize) -> Vec<f64> {
    let (a1, a2) = (
        amplitude_for_dbm0(dbm1) as f64,
        amplitude_for_dbm0(dbm2) as f64,
    );
    (0..ms * 8)
        .map(|n| {
            let t = n as f64 / 8000.0;
            a1 * (TAU * f1 * t).sin() + a2 * (TAU * f2 * t + 0.7).sin()
        })
        .collect()
}

fn digit(d: char, dbm: f32, ms: usize) -> Vec<f64> {
    let (low, high) = frequencies(d).unwrap();
    dual(low as f64, dbm, high as f64, dbm, ms)
}

fn silence(ms: usize) -> Vec<f64> {
    vec![0.0; ms * 8]
}

fn to_pcm(signal: &[f64]) -> Vec<i16> {
    signal
        .iter()
        .map(|s| s.clamp(-32768.0, 32767.0) as i16)
        .collect()
}

fn detect(signal: &[f64]) -> String {
    detect_digits(&to_pcm(signal), DtmfThresholds::default())
}

const ALL: &str = "123A456B789C*0#D";

#[test]
fn decodes_every_key() {
    let mut signal = Vec::new();
    for d in ALL.chars() {
        signal.extend(digit(d, -10.0, 50));
        signal.extend(silence(50));
    }
    assert_eq!(detect(&signal), ALL);
}

#[test]
fn bandwidth_accepts_1_5_percent_and_rejects_3_5_percent() {
    for d in ALL.chars() {
        let (low, high) = frequencies(d).unwrap();
        for (low_shift, high_shift, accept) in [
            (1.015, 1.0, true),
            (0.985, 1.0, true),
            (1.0, 1.015, true),
            (1.0, 0.985, true),
            (1.035, 1.0, false),
            (0.965, 1.0, false),
            (1.0, 1.035, false),
            (1.0, 0.965, false),
        ] {
            let signal = dual(
                low as f64 * low_shift,
                -10.0,
                high as f64 * high_shift,
                -10.0,
                60,
            );
            let got = detect(&signal);
            let expected = if accept { d.to_string() } else { String::new() };
            assert_eq!(got, expected, "{d} with shifts {low_shift}/{high_shift}");
        }
    }
}

#[test]
fn twist_limits() {
    for d in ALL.chars() {
        let (low, high) = frequencies(d).unwrap();
        let (low, high) = (low as f64, high as f64);
        // Normal twist: the high group louder, accepted up to 4 dB.
        assert_eq!(
            detect(&dual(low, -12.0, high, -8.0, 60)),
            d.to_string(),
            "{d} +4 dB"
        );
        assert_eq!(detect(&dual(low, -12.0, high, -4.0, 60)), "", "{d} +8 dB");
        // Reverse twist: the low group louder, accepted up to 8 dB.
        assert_eq!(
            detect(&dual(low, -4.0, high, -12.0, 60)),
            d.to_string(),
            "{d} -8 dB"
        );
        assert_eq!(detect(&dual(low, 0.0, high, -12.0, 60)), "", "{d} -12 dB");
    }
}

#[test]
fn dynamic_range_of_26_db_and_more() {
    for level in [0.0, -6.0, -12.0, -20.0, -26.0, -32.0, -36.0] {
        let mut signal = Vec::new();
        for d in ALL.chars() {
            signal.extend(digit(d, level, 50));
            signal.extend(silence(50));
        }
        assert_eq!(detect(&signal), ALL, "at {level} dBm0 per tone");
    }
    assert_eq!(
        detect(&digit('5', -45.0, 60)),
        "",
        "below the sensitivity floor"
    );
}

#[test]
fn guard_times() {
    assert_eq!(detect(&digit('7', -10.0, 40)), "7", "40 ms is a digit");
    assert_eq!(detect(&digit('7', -10.0, 20)), "", "20 ms is not");
    let mut repeated = digit('3', -10.0, 45);
    repeated.extend(silence(40));
    repeated.extend(digit('3', -10.0, 45));
    assert_eq!(detect(&repeated), "33", "a 40 ms pause separates digits");
    let mut interrupted = digit('3', -10.0, 60);
    interrupted.extend(silence(10));
    interrupted.extend(digit('3', -10.0, 60));
    assert_eq!(detect(&interrupted), "3", "a 10 ms drop-out does not");
}

#[test]
fn works_at_15_db_signal_to_noise() {
    let mut noise = Noise(0x1234_5678);
    // Noise RMS 15 dB below the RMS of one tone at -10 dBm0.
    let tone_rms = amplitude_for_dbm0(-10.0) as f64 / 2f64.sqrt();
    let noise_rms = tone_rms / 10f64.powf(15.0 / 20.0);
    for round in 0..3 {
        let mut signal = Vec::new();
        for d in ALL.chars() {
            signal.extend(digit(d, -10.0, 50));
            signal.extend(silence(50));
        }
        let noisy: Vec<f64> = signal
            .iter()
            .map(|s| s + noise.gaussian(noise_rms))
            .collect();
        assert_eq!(detect(&noisy), ALL, "round {round}");
    }
    let loud_noise: Vec<f64> = (0..8000 * 5).map(|_| noise.gaussian(5000.0)).collect();
    assert_eq!(detect(&loud_noise), "", "noise alone is never a digit");
}

#[test]
fn no_talk_off_on_speech_like_signals() {
    let mut noise = Noise(42);
    let mut signal = Vec::new();
    // Voiced "speech": a wandering 90-250 Hz fundamental with 30 harmonics shaped by two
    // moving formants, plus breath noise; 20 s of it.
    let mut phase = vec![0.0f64; 30];
    for n in 0..8000 * 20 {
        let t = n as f64 / 8000.0;
        let f0 = 170.0 + 80.0 * (TAU * 0.7 * t).sin() + 20.0 * (TAU * 3.1 * t).sin();
        let formant1 = 500.0 + 300.0 * (TAU * 0.9 * t).sin();
        let formant2 = 1500.0 + 600.0 * (TAU * 0.37 * t).cos();
        let mut sample = 0.0;
        for (h, p) in phase.iter_mut().enumerate() {
            let f = f0 * (h + 1) as f64;
            *p = (*p + TAU * f / 8000.0) % TAU;
            let gain = 1.0 / (1.0 + ((f - formant1) / 150.0).powi(2))
                + 0.7 / (1.0 + ((f - formant2) / 200.0).powi(2));
            sample += 3000.0 * gain * p.sin();
        }
        signal.push(sample + noise.gaussian(200.0));
    }
    assert_eq!(detect(&signal), "", "speech must not dial");
    // Single tones and three-tone chords are not digits either.
    assert_eq!(detect(&dual(697.0, -10.0, 1000.0, -40.0, 200)), "");
    let mut chord = dual(697.0, -10.0, 1209.0, -10.0, 100);
    for (s, extra) in chord.iter_mut().zip(dual(852.0, -11.0, 0.0, -90.0, 100)) {
        *s += extra;
    }
    assert_eq!(detect(&chord), "", "two row tones at once");
}
