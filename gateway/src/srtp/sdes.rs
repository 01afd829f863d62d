//! SDES (RFC 4568): the `a=crypto` attribute, `<tag> <suite> inline:<key||salt>[|lifetime]`,
//! and the master keys it carries.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngExt;
use zeroize::Zeroizing;

/// A crypto suite the gateway can terminate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag (RFC 4568 §6.2.1; every SRTP
    /// phone has it).
    AesCm128HmacSha1_80,
    /// The same with a 32-bit tag (RFC 4568 §6.2.2).
    AesCm128HmacSha1_32,
    /// AES-128 GCM (RFC 7714 §12).
    AeadAes128Gcm,
}

impl Suite {
    /// Every suite, in the gateway's order of preference when it offers.
    pub const ALL: [Suite; 3] = [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes128Gcm,
    ];

    /// The suite's name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite named `name` (case-sensitive, as RFC 4568 registers them).
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|suite| suite.name() == name)
    }

    /// Master key length, bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length, bytes.
    pub fn salt_len(self) -> usize {
        match self {
            Suite::AeadAes128Gcm => 12,
            _ => 14,
        }
    }
}

/// A master key and salt (key first), erased from memory when dropped; its `Debug` shows
/// no byte of it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial({} bytes, redacted)", self.bytes.len())
    }
}

impl KeyMaterial {
    /// A fresh key and salt for `suite` from the operating system's CSPRNG.
    pub fn generate(suite: Suite) -> KeyMaterial {
        let mut bytes = Zeroizing::new(vec![0u8; suite.key_len() + suite.salt_len()]);
        rand::rng().fill(&mut bytes[..]);
        KeyMaterial { bytes }
    }

    /// The master key.
    pub fn key(&self, suite: Suite) -> &[u8] {
        &self.bytes[..suite.key_len()]
    }

    /// The master salt.
    pub fn salt(&self, suite: Suite) -> &[u8] {
        &self.bytes[suite.key_len()..]
    }

    /// Base64 of key || salt, as `inline:` carries it.
    fn inline(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(&self.bytes[..]))
    }
}

/// One `a=crypto` attribute the gateway can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag an answer repeats.
    pub tag: u32,
    /// The suite.
    pub suite: Suite,
    /// The key and salt of the side that sent it (for what that side sends).
    pub key: KeyMaterial,
}

impl CryptoAttribute {
    /// Reads an attribute's value (after `crypto:`). None for a suite the gateway lacks,
    /// a key of the wrong length, several keys, an MKI (one key per direction only) or
    /// session parameters (unencrypted or unauthenticated SRTP is refused): the caller
    /// then tries the next attribute.
    pub fn parse(value: &str) -> Option<CryptoAttribute> {
        let mut words = value.split_whitespace();
        let tag: u32 = words.next()?.parse().ok()?;
        let suite = Suite::from_name(words.next()?)?;
        let key_params = words.next()?;
        if words.next().is_some() {
            return None; // session parameters
        }
        let inline = key_params.strip_prefix("inline:")?;
        let mut parts = inline.split('|');
        let encoded = parts.next()?;
        // A lifetime is accepted; an MKI (`n:len`) is not.
        if parts.any(|part| part.contains(':')) || key_params.contains(';') {
            return None;
        }
        let decoded = Zeroizing::new(STANDARD.decode(encoded).ok()?);
        if decoded.len() != suite.key_len() + suite.salt_len() {
            return None;
        }
        Some(CryptoAttribute {
            tag,
            suite,
            key: KeyMaterial { bytes: decoded },
        })
    }

    /// The first usable `a=crypto` value among `values`, in the far end's order.
    pub fn first_usable<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<CryptoAttribute> {
        values.into_iter().find_map(CryptoAttribute::parse)
    }

    /// A fresh key of our own for `suite`, as attribute `tag`.
    pub fn fresh(tag: u32, suite: Suite) -> CryptoAttribute {
        CryptoAttribute {
            tag,
            suite,
            key: KeyMaterial::generate(suite),
        }
    }

    /// A fresh key of our own answering `offered` (its tag and suite).
    pub fn answering(offered: &CryptoAttribute) -> CryptoAttribute {
        CryptoAttribute::fresh(offered.tag, offered.suite)
    }

    /// The attribute's value, e.g. `1 AES_CM_128_HMAC_SHA1_80 inline:...` (it holds the
    /// key: it goes into SDP sent over TLS only, never into a log line).
    pub fn value(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            self.key.inline().as_str()
        ))
    }
}

/// `sdp` without its `a=crypto` lines (for what is kept at rest: the store's copy of a
/// ringing call's offer holds no key).
pub fn without_keys(sdp: &[u8]) -> Vec<u8> {
    sdp.split_inclusive(|&b| b == b'\n')
        .filter(|line| !line.starts_with(b"a=crypto:"))
        .flatten()
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4568 §9.1's example attribute.
    const RFC_EXAMPLE: &str =
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4";

    #[test]
    fn attributes_round_trip_and_keys_are_fresh_and_hidden() {
        let ours = CryptoAttribute::answering(&CryptoAttribute {
            tag: 7,
            suite: Suite::AesCm128HmacSha1_32,
            key: KeyMaterial::generate(Suite::AesCm128HmacSha1_32),
        });
        let value = ours.value();
        assert!(
            value.starts_with("7 AES_CM_128_HMAC_SHA1_32 inline:"),
            "{}",
            *value
        );
        assert_eq!(CryptoAttribute::parse(&value), Some(ours.clone()));
        let other = KeyMaterial::generate(Suite::AesCm128HmacSha1_32);
        assert_ne!(other, ours.key, "a key is never drawn twice");
        let shown = format!("{ours:?}");
        assert!(
            shown.contains("redacted") && !shown.contains(&value[34..]),
            "{shown}"
        );
        let gcm = KeyMaterial::generate(Suite::AeadAes128Gcm);
        assert_eq!(
            (
                gcm.key(Suite::AeadAes128Gcm).len(),
                gcm.salt(Suite::AeadAes128Gcm).len()
            ),
            (16, 12)
        );
    }

    #[test]
    fn what_is_kept_at_rest_has_no_key() {
        let sdp =
            format!("v=0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:{RFC_EXAMPLE}\r\na=sendrecv\r\n");
        let kept = without_keys(sdp.as_bytes());
        assert_eq!(kept, b"v=0\r\nm=audio 4000 RTP/SAVP 0\r\na=sendrecv\r\n");
    }

    #[test]
    fn what_the_gateway_cannot_honour_is_skipped_for_the_next_attribute() {
        let without_mki = RFC_EXAMPLE.replace("|1:4", "");
        let parsed = CryptoAttribute::parse(&without_mki).expect("the example without its MKI");
        assert_eq!((parsed.tag, parsed.suite), (1, Suite::AesCm128HmacSha1_80));
        for unusable in [
            RFC_EXAMPLE,                                              // MKI
            "1 AES_256_CM_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", // suite
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=",             // key length
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP",
            "x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "",
        ] {
            assert_eq!(CryptoAttribute::parse(unusable), None, "{unusable}");
        }
        let first = CryptoAttribute::first_usable([RFC_EXAMPLE, without_mki.as_str()]);
        assert_eq!(first, Some(parsed));
    }
}
