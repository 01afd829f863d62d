//! The SRTP contexts of one call's media (RFC 3711): what the gateway sends is protected
//! with its own key, what the far end sends is checked and decrypted with the far end's
//! (SDES gives each direction its own key). Replay protection is on for what arrives.

use super::sdes::{KeyMaterial, Suite};
use rtc_crypto::providers::RingCrypto;
use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_no_replay_protection, srtcp_replay_protection};
use rtc_srtp::option::{srtp_no_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

/// Packets behind the newest one that may still arrive (reordered), for replay checks.
const REPLAY_WINDOW: usize = 128;

/// Why SRTP could not be set up or a packet was refused.
#[derive(Debug, thiserror::Error)]
pub enum SrtpError {
    /// The keys could not make a context (a suite/key mismatch: a bug, not input).
    #[error("SRTP context: {0}")]
    Setup(String),
    /// A packet failed authentication, was a replay, or was not SRTP.
    #[error("SRTP packet refused: {0}")]
    Refused(String),
}

/// One call's two SRTP contexts.
pub struct SrtpSession {
    outbound: Context,
    inbound: Context,
    suite: Suite,
}

impl std::fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrtpSession({})", self.suite.name())
    }
}

fn profile(suite: Suite) -> ProtectionProfile {
    match suite {
        Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        Suite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

impl SrtpSession {
    /// Contexts for `suite`: `local` protects what we send, `remote` what the far end sends.
    pub fn new(suite: Suite, local: &KeyMaterial, remote: &KeyMaterial) -> Result<Self, SrtpError> {
        let context = |key: &KeyMaterial, inbound: bool| {
            let (rtp, rtcp) = match inbound {
                true => (
                    srtp_replay_protection(REPLAY_WINDOW),
                    srtcp_replay_protection(REPLAY_WINDOW),
                ),
                false => (srtp_no_replay_protection(), srtcp_no_replay_protection()),
            };
            Context::new(
                key.key(suite),
                key.salt(suite),
                profile(suite),
                Some(rtp),
                Some(rtcp),
                &RingCrypto,
            )
            .map_err(|e| SrtpError::Setup(e.to_string()))
        };
        Ok(SrtpSession {
            outbound: context(local, false)?,
            inbound: context(remote, true)?,
            suite,
        })
    }

    /// The suite in use.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// `rtp` (a whole RTP packet) as SRTP.
    pub fn protect(&mut self, rtp: &[u8]) -> Result<Vec<u8>, SrtpError> {
        self.outbound
            .encrypt_rtp(rtp)
            .map(|packet| packet.to_vec())
            .map_err(|e| SrtpError::Refused(e.to_string()))
    }

    /// The RTP packet inside `srtp`, if it authenticates and is not a replay.
    pub fn unprotect(&mut self, srtp: &[u8]) -> Result<Vec<u8>, SrtpError> {
        self.inbound
            .decrypt_rtp(srtp)
            .map(|packet| packet.to_vec())
            .map_err(|e| SrtpError::Refused(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(sequence: u16) -> Vec<u8> {
        let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
        packet[2..4].copy_from_slice(&sequence.to_be_bytes());
        packet.extend_from_slice(&[0xd5; 160]);
        packet
    }

    #[test]
    fn a_stream_crossing_the_sequence_wrap_is_carried_whole() {
        let suite = Suite::AesCm128HmacSha1_80;
        let (ours, theirs) = (KeyMaterial::generate(suite), KeyMaterial::generate(suite));
        let mut gateway = SrtpSession::new(suite, &ours, &theirs).unwrap();
        let mut phone = SrtpSession::new(suite, &theirs, &ours).unwrap();
        for offset in 0..40u16 {
            let sequence = 65_520u16.wrapping_add(offset);
            let sent = phone.protect(&rtp(sequence)).unwrap();
            assert_eq!(
                gateway.unprotect(&sent).unwrap(),
                rtp(sequence),
                "{sequence}"
            );
        }
    }

    #[test]
    fn each_suite_carries_packets_one_way_and_refuses_tampering_and_replays() {
        for suite in Suite::ALL {
            let (ours, theirs) = (KeyMaterial::generate(suite), KeyMaterial::generate(suite));
            let mut gateway = SrtpSession::new(suite, &ours, &theirs).unwrap();
            let mut phone = SrtpSession::new(suite, &theirs, &ours).unwrap();
            let sent = gateway.protect(&rtp(1)).unwrap();
            assert_ne!(
                &sent[12..172],
                &rtp(1)[12..],
                "{suite:?}: the payload is encrypted"
            );
            assert_eq!(phone.unprotect(&sent).unwrap(), rtp(1), "{suite:?}");
            assert!(
                phone.unprotect(&sent).is_err(),
                "{suite:?}: a replay is refused"
            );
            let mut tampered = gateway.protect(&rtp(2)).unwrap();
            tampered[20] ^= 1;
            assert!(
                phone.unprotect(&tampered).is_err(),
                "{suite:?}: tampering is caught"
            );
            let back = phone.protect(&rtp(9)).unwrap();
            assert_eq!(gateway.unprotect(&back).unwrap(), rtp(9), "{suite:?}");
            assert!(
                gateway.unprotect(&rtp(10)).is_err(),
                "{suite:?}: plain RTP is refused"
            );
        }
    }
}
