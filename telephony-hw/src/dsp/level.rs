//! Signal levels in dBm0, the unit telephony specifications use.
//!
//! G.711's largest sine (µ-law code 0x80, ±32124) is +3.17 dBm0, so a 0 dBm0 sine has a peak
//! of 32124 / 10^(3.17/20) ≈ 22 300 in 16-bit linear samples.

/// Peak amplitude of a 0 dBm0 sine, in 16-bit linear units.
pub const DBM0_PEAK: f32 = 22_300.0;

/// Peak amplitude of a sine at `dbm0`.
pub fn amplitude_for_dbm0(dbm0: f32) -> f32 {
    DBM0_PEAK * 10f32.powf(dbm0 / 20.0)
}

/// Level in dBm0 of a sine with this peak amplitude.
pub fn dbm0_for_amplitude(amplitude: f32) -> f32 {
    20.0 * (amplitude / DBM0_PEAK).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip() {
        assert!((amplitude_for_dbm0(3.17) - 32124.0).abs() < 50.0);
        assert!((dbm0_for_amplitude(amplitude_for_dbm0(-26.0)) + 26.0).abs() < 1e-3);
    }
}
