//! The SRTP rules the engine applies to a call's offer, sans-IO: SDES keys only ever
//! cross TLS (or the in-process link to the analog ports), and each SIP phone's
//! `srtp` policy (off, optional, required) is honoured on both ends of its calls.

use crate::config::SrtpPolicy;
use crate::transport::Protocol;
use sdp_types::Session;

/// What an SDP body says about SRTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Security {
    /// Some stream carries an `a=crypto` key.
    pub has_keys: bool,
    /// The first live audio stream is secure RTP (RTP/SAVP, RTP/SAVPF) with a key.
    pub secure: bool,
}

impl Security {
    /// Reads `body`; a body that is not SDP carries no keys.
    pub fn of(body: &[u8]) -> Security {
        let Ok(session) = Session::parse(body) else {
            return Security::default();
        };
        let keyed = |attributes: &[sdp_types::Attribute]| {
            attributes
                .iter()
                .any(|a| a.attribute.eq_ignore_ascii_case("crypto"))
        };
        let has_keys =
            keyed(&session.attributes) || session.medias.iter().any(|m| keyed(&m.attributes));
        let secure = session
            .medias
            .iter()
            .find(|m| m.media == "audio" && m.port != 0)
            .is_some_and(|audio| {
                audio.proto.to_ascii_uppercase().contains("SAVP") && keyed(&audio.attributes)
            });
        Security { has_keys, secure }
    }
}

/// Whether SDES keys may be sent to (or accepted from) a peer of `protocol`: over TLS, or
/// in-process to the analog ports.
pub fn may_carry_keys(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Tls | Protocol::Internal)
}

/// Why an offer is refused (488 Not Acceptable Here, with the reason in its phrase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The offer carries keys and came in clear: they are no secret any more.
    #[error("SDES keys only over TLS: use transport=tls")]
    KeysInClear,
    /// The offer carries keys and the callee (or picker) is reached in clear.
    #[error("SDES keys only over TLS: the callee is not reached over TLS")]
    CalleeInClear,
    /// The caller's policy is `required` and the offer is plain RTP.
    #[error("SRTP required for this phone: offer RTP/SAVP with a=crypto")]
    CallerRequires,
    /// The caller's policy is `off` and the offer is SRTP.
    #[error("SRTP is off for this phone")]
    CallerOff,
    /// The callee's policy is `required` and the offer is plain RTP.
    #[error("the callee takes SRTP only")]
    CalleeRequires,
    /// The callee's policy is `off` and the offer is SRTP.
    #[error("the callee does not take SRTP")]
    CalleeOff,
}

/// Checks an INVITE's offer that arrived over `arrived_over` from a caller with policy
/// `caller` (None: an analog port, or a caller that is no SIP extension here).
pub fn check_arrival(
    offer: Security,
    arrived_over: Protocol,
    caller: Option<SrtpPolicy>,
) -> Result<(), Refusal> {
    if offer.has_keys && !may_carry_keys(arrived_over) {
        return Err(Refusal::KeysInClear);
    }
    match (caller, offer.secure) {
        (Some(SrtpPolicy::Required), false) => Err(Refusal::CallerRequires),
        (Some(SrtpPolicy::Off), true) => Err(Refusal::CallerOff),
        _ => Ok(()),
    }
}

/// Checks that an offer may go to a callee (or picker) with policy `callee` reached over
/// `to`.
pub fn check_delivery(
    offer: Security,
    to: Protocol,
    callee: Option<SrtpPolicy>,
) -> Result<(), Refusal> {
    if offer.has_keys && !may_carry_keys(to) {
        return Err(Refusal::CalleeInClear);
    }
    match (callee, offer.secure) {
        (Some(SrtpPolicy::Required), false) => Err(Refusal::CalleeRequires),
        (Some(SrtpPolicy::Off), true) => Err(Refusal::CalleeOff),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECURE: &[u8] = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 6000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";
    const PLAIN: &[u8] = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n";
    /// Keys in a plain stream (optimistic SRTP): keys all the same.
    const OPTIMISTIC: &[u8] = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";

    #[test]
    fn offers_are_read_for_keys_and_secure_audio() {
        let secure = Security {
            has_keys: true,
            secure: true,
        };
        assert_eq!(Security::of(SECURE), secure);
        assert_eq!(Security::of(PLAIN), Security::default());
        assert_eq!(
            Security::of(OPTIMISTIC),
            Security {
                has_keys: true,
                secure: false
            }
        );
        assert_eq!(Security::of(b"not sdp"), Security::default());
    }

    #[test]
    fn keys_cross_tls_only_and_each_end_s_policy_is_honoured() {
        use SrtpPolicy::*;
        let (secure, plain) = (Security::of(SECURE), Security::of(PLAIN));
        for clear in [Protocol::Udp, Protocol::Tcp] {
            assert_eq!(
                check_arrival(secure, clear, None),
                Err(Refusal::KeysInClear)
            );
            let optimistic = Security::of(OPTIMISTIC);
            assert_eq!(
                check_arrival(optimistic, clear, None),
                Err(Refusal::KeysInClear)
            );
            assert_eq!(
                check_delivery(secure, clear, None),
                Err(Refusal::CalleeInClear)
            );
            assert_eq!(check_arrival(plain, clear, Some(Optional)), Ok(()));
            assert_eq!(check_delivery(plain, clear, Some(Optional)), Ok(()));
        }
        assert!(may_carry_keys(Protocol::Tls) && may_carry_keys(Protocol::Internal));
        let tls = Protocol::Tls;
        assert_eq!(check_arrival(secure, tls, Some(Required)), Ok(()));
        assert_eq!(check_delivery(secure, tls, Some(Optional)), Ok(()));
        assert_eq!(check_delivery(secure, Protocol::Internal, None), Ok(()));
        assert_eq!(
            check_arrival(plain, tls, Some(Required)),
            Err(Refusal::CallerRequires)
        );
        assert_eq!(
            check_arrival(secure, tls, Some(Off)),
            Err(Refusal::CallerOff)
        );
        assert_eq!(
            check_delivery(plain, tls, Some(Required)),
            Err(Refusal::CalleeRequires)
        );
        assert_eq!(
            check_delivery(secure, tls, Some(Off)),
            Err(Refusal::CalleeOff)
        );
    }
}
