//! Measuring what a line carries: the strongest frequency and its level. The operator
//! interface and the end-to-end tests use it to prove that audio crossed the gateway.

use super::level::dbm0_for_amplitude;
use super::SAMPLE_RATE;

/// Below this level a signal counts as silence (dBm0).
const SILENCE_DBM0: f32 = -50.0;
/// At most this many samples are analysed (half a second).
const WINDOW: usize = 4000;

/// A measured tone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Strongest frequency, to about 1 Hz (Hz).
    pub frequency_hz: f32,
    /// Level of the whole signal, as the peak of an equivalent sine (dBm0).
    pub level_dbm0: f32,
}

/// Power of `frequency` in `samples` (Goertzel).
fn power_at(samples: &[f64], frequency: f64) -> f64 {
    // f64: in f32 the recursion loses the tone over a few thousand samples.
    let coefficient = 2.0 * (std::f64::consts::TAU * frequency / f64::from(SAMPLE_RATE)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coefficient * s1 * s2
}

/// The strongest frequency between 200 and 3600 Hz in the last half second of `samples`,
/// or None when they are (nearly) silent.
pub fn dominant_frequency(samples: &[i16]) -> Option<Measurement> {
    let window: Vec<f64> = samples[samples.len().saturating_sub(WINDOW)..]
        .iter()
        .map(|&s| f64::from(s))
        .collect();
    if window.len() < 160 {
        return None;
    }
    let mean_square = window.iter().map(|x| x * x).sum::<f64>() / window.len() as f64;
    let level_dbm0 = dbm0_for_amplitude((2.0 * mean_square).sqrt() as f32);
    if level_dbm0 < SILENCE_DBM0 {
        return None;
    }
    // A window of T seconds resolves 1/T Hz: scan coarsely on 50 ms (20 Hz wide peaks,
    // 10 Hz steps), then finely on the whole window around the coarse peak.
    let strongest = |window: &[f64], from: f64, to: f64, step: f64| {
        let mut best = (from, f64::MIN);
        let mut frequency = from;
        while frequency <= to {
            let power = power_at(window, frequency);
            if power > best.1 {
                best = (frequency, power);
            }
            frequency += step;
        }
        best.0
    };
    let coarse = strongest(
        &window[window.len() - 400.min(window.len())..],
        200.0,
        3600.0,
        10.0,
    );
    let fine = strongest(&window, coarse - 15.0, coarse + 15.0, 0.5);
    Some(Measurement {
        frequency_hz: fine as f32,
        level_dbm0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::g711::Law;
    use crate::dsp::level::amplitude_for_dbm0;

    fn tone(frequency: f32, dbm0: f32, count: usize) -> Vec<i16> {
        let amplitude = amplitude_for_dbm0(dbm0);
        (0..count)
            .map(|n| {
                let t = n as f32 / SAMPLE_RATE as f32;
                (amplitude * (std::f32::consts::TAU * frequency * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn finds_a_tone_through_g711() {
        for frequency in [300.0, 1004.0, 1633.0, 3400.0] {
            let mut codes = vec![0u8; 4000];
            Law::Alaw.encode(&tone(frequency, -10.0, 4000), &mut codes);
            let mut decoded = vec![0i16; 4000];
            Law::Alaw.decode(&codes, &mut decoded);
            let found = dominant_frequency(&decoded).unwrap();
            assert!(
                (found.frequency_hz - frequency).abs() <= 2.0,
                "{frequency}: {found:?}"
            );
            assert!((found.level_dbm0 + 10.0).abs() < 0.5, "{found:?}");
        }
    }

    #[test]
    fn silence_and_short_input_measure_nothing() {
        assert_eq!(dominant_frequency(&[0; 4000]), None);
        assert_eq!(dominant_frequency(&tone(1000.0, -60.0, 4000)), None);
        assert_eq!(dominant_frequency(&tone(1000.0, -10.0, 100)), None);
    }

    #[test]
    fn the_stronger_of_two_tones_wins() {
        let mixed: Vec<i16> = tone(440.0, -20.0, 4000)
            .iter()
            .zip(tone(1400.0, -10.0, 4000))
            .map(|(a, b)| a + b)
            .collect();
        let found = dominant_frequency(&mixed).unwrap();
        assert!((found.frequency_hz - 1400.0).abs() <= 2.0, "{found:?}");
    }
}
