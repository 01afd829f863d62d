//! G.711 µ-law and A-law (ITU-T G.711), table-driven, bit-exact with the ITU-T G.191
//! reference implementation (which codes negative samples by one's complement).
//!
//! Decoding is one lookup in a 256-entry table. Encoding is one lookup too: µ-law depends
//! only on `sample >> 2` and A-law on `sample >> 4`, so the tables have 16 384 and 4 096
//! entries. All tables are built at compile time.

/// µ-law code to linear sample (G.191 `ulaw_expand`).
const fn ulaw_expand(code: u8) -> i16 {
    let mantissa_bits = !code;
    let exponent = ((mantissa_bits >> 4) & 0x7) as i32;
    let mantissa = (mantissa_bits & 0xF) as i32;
    let step = 4 << (exponent + 1);
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    if code < 0x80 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear sample to µ-law code (G.191 `ulaw_compress`).
const fn ulaw_compress(sample: i16) -> u8 {
    let x = sample as i32;
    let mut magnitude = if x < 0 {
        ((!x) >> 2) + 33
    } else {
        (x >> 2) + 33
    };
    if magnitude > 0x1FFF {
        magnitude = 0x1FFF;
    }
    let mut i = magnitude >> 6;
    let mut segment = 1;
    while i != 0 {
        segment += 1;
        i >>= 1;
    }
    let high = 0x8 - segment;
    let low = 0xF - ((magnitude >> segment) & 0xF);
    let code = (high << 4) | low;
    (if x >= 0 { code | 0x80 } else { code }) as u8
}

/// A-law code to linear sample (G.191 `alaw_expand`).
const fn alaw_expand(code: u8) -> i16 {
    let ix = ((code ^ 0x55) & 0x7F) as i32;
    let exponent = ix >> 4;
    let mut mantissa = ix & 0xF;
    if exponent > 0 {
        mantissa += 16;
    }
    mantissa = (mantissa << 4) + 8;
    if exponent > 1 {
        mantissa <<= exponent - 1;
    }
    if code > 127 {
        mantissa as i16
    } else {
        -mantissa as i16
    }
}

/// Linear sample to A-law code (G.191 `alaw_compress`).
const fn alaw_compress(sample: i16) -> u8 {
    let x = sample as i32;
    let mut ix = if x < 0 { (!x) >> 4 } else { x >> 4 };
    if ix > 15 {
        let mut exponent = 1;
        while ix > 16 + 15 {
            ix >>= 1;
            exponent += 1;
        }
        ix -= 16;
        ix += exponent << 4;
    }
    if x >= 0 {
        ix |= 0x80;
    }
    (ix ^ 0x55) as u8
}

static ULAW_TO_LINEAR: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = ulaw_expand(code as u8);
        code += 1;
    }
    table
};

static ALAW_TO_LINEAR: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = alaw_expand(code as u8);
        code += 1;
    }
    table
};

/// Indexed by `(sample >> 2) + 8192`.
static LINEAR_TO_ULAW: [u8; 16384] = {
    let mut table = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        table[i] = ulaw_compress(((i as i32 - 8192) << 2) as i16);
        i += 1;
    }
    table
};

/// Indexed by `(sample >> 4) + 2048`.
static LINEAR_TO_ALAW: [u8; 4096] = {
    let mut table = [0u8; 4096];
    let mut i = 0;
    while i < 4096 {
        table[i] = alaw_compress(((i as i32 - 2048) << 4) as i16);
        i += 1;
    }
    table
};

/// Which G.711 companding law (PCMU or PCMA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// µ-law (North America, Japan), RTP payload type 0.
    Ulaw,
    /// A-law (Europe and most of the world), RTP payload type 8.
    Alaw,
}

impl Law {
    /// One code to a linear sample.
    #[inline]
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            Law::Ulaw => ULAW_TO_LINEAR[code as usize],
            Law::Alaw => ALAW_TO_LINEAR[code as usize],
        }
    }

    /// One linear sample to a code.
    #[inline]
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            Law::Ulaw => LINEAR_TO_ULAW[((sample >> 2) as i32 + 8192) as usize],
            Law::Alaw => LINEAR_TO_ALAW[((sample >> 4) as i32 + 2048) as usize],
        }
    }

    /// Decodes a block into `out` (same length); no allocation.
    pub fn decode(self, codes: &[u8], out: &mut [i16]) {
        for (code, sample) in codes.iter().zip(out.iter_mut()) {
            *sample = self.decode_sample(*code);
        }
    }

    /// Encodes a block into `out` (same length); no allocation.
    pub fn encode(self, samples: &[i16], out: &mut [u8]) {
        for (sample, code) in samples.iter().zip(out.iter_mut()) {
            *code = self.encode_sample(*sample);
        }
    }

    /// The code of silence (the "zero" most equipment idles on).
    pub fn silence(self) -> u8 {
        match self {
            Law::Ulaw => 0xFF,
            Law::Alaw => 0xD5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // ITU-T G.711 / G.191 end points and zero codes.
        assert_eq!(Law::Ulaw.decode_sample(0xFF), 0);
        assert_eq!(Law::Ulaw.decode_sample(0x7F), 0);
        assert_eq!(Law::Ulaw.decode_sample(0x80), 32124);
        assert_eq!(Law::Ulaw.decode_sample(0x00), -32124);
        assert_eq!(Law::Ulaw.decode_sample(0xFE), 8);
        assert_eq!(Law::Alaw.decode_sample(0xD5), 8);
        assert_eq!(Law::Alaw.decode_sample(0x55), -8);
        assert_eq!(Law::Alaw.decode_sample(0xAA), 32256);
        assert_eq!(Law::Alaw.decode_sample(0x2A), -32256);
        assert_eq!(Law::Ulaw.encode_sample(0), 0xFF);
        assert_eq!(
            Law::Ulaw.encode_sample(-1),
            0x7F,
            "one's complement: -1 codes as -0"
        );
        assert_eq!(Law::Ulaw.encode_sample(i16::MAX), 0x80);
        assert_eq!(Law::Ulaw.encode_sample(i16::MIN), 0x00);
        assert_eq!(Law::Alaw.encode_sample(0), 0xD5);
        assert_eq!(Law::Alaw.encode_sample(-1), 0x55);
        assert_eq!(Law::Alaw.encode_sample(i16::MAX), 0xAA);
        assert_eq!(Law::Alaw.encode_sample(i16::MIN), 0x2A);
    }

    #[test]
    fn all_256_codes_round_trip() {
        for law in [Law::Ulaw, Law::Alaw] {
            for code in 0..=255u8 {
                let sample = law.decode_sample(code);
                let again = law.encode_sample(sample);
                // µ-law has two zeros (0x7F and 0xFF); both decode to 0, which encodes as 0xFF.
                if !(law == Law::Ulaw && code == 0x7F) {
                    assert_eq!(again, code, "{law:?} code {code:#04x} -> {sample}");
                }
            }
        }
    }

    #[test]
    fn tables_match_the_reference_algorithm_for_every_sample() {
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(Law::Ulaw.encode_sample(sample), ulaw_compress(sample));
            assert_eq!(Law::Alaw.encode_sample(sample), alaw_compress(sample));
        }
        for code in 0..=255u8 {
            assert_eq!(ULAW_TO_LINEAR[code as usize], ulaw_expand(code));
            assert_eq!(ALAW_TO_LINEAR[code as usize], alaw_expand(code));
        }
    }

    #[test]
    fn quantisation_error_stays_within_half_a_step() {
        for law in [Law::Ulaw, Law::Alaw] {
            for sample in (i16::MIN..=i16::MAX).step_by(7) {
                let code = law.encode_sample(sample);
                let back = law.decode_sample(code) as i32;
                let error = (back - sample as i32).abs();
                // Largest step is 1024 (µ-law) / 1024 (A-law segment 7): half of it, plus clipping.
                let limit = if (sample as i32).abs() > 32000 {
                    800
                } else {
                    512
                };
                assert!(error <= limit, "{law:?} {sample} -> {code:#04x} -> {back}");
                // And relative to the level: G.711's ~ 6% step for loud samples.
                if (sample as i32).abs() > 256 {
                    assert!(
                        error * 100 / (sample as i32).abs() <= 7,
                        "{law:?} {sample} -> {back}"
                    );
                }
            }
        }
    }

    #[test]
    fn decoding_is_monotonic_in_the_code() {
        // Positive µ-law codes 0xFF..=0x80 grow in magnitude as the code falls.
        let positive: Vec<i16> = (0x80..=0xFFu8)
            .rev()
            .map(|c| Law::Ulaw.decode_sample(c))
            .collect();
        assert!(positive.windows(2).all(|w| w[0] < w[1]));
        let alaw: Vec<i16> = (0..128u8)
            .map(|i| Law::Alaw.decode_sample((i | 0x80) ^ 0x55))
            .collect();
        assert!(alaw.windows(2).all(|w| w[0] < w[1]));
    }
}
