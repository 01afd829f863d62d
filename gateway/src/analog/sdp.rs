//! SDP offer/answer for analog ports (RFC 3264): one audio stream of G.711 (PCMU or PCMA)
//! in 20 ms packets, with RFC 4733 telephone-event for DTMF; as SRTP (RTP/SAVP with SDES
//! keys, RFC 4568) when the far end offers it.

use crate::srtp::sdes::CryptoAttribute;
use bytes::Bytes;
use sdp_types::Session;
use std::net::{IpAddr, SocketAddr};
use telephony_hw::dsp::g711::Law;
use telephony_hw::media::session::MediaFormat;

/// The telephone-event payload type the gateway offers.
pub const EVENT_PAYLOAD_TYPE: u8 = 101;

/// Where and how the far end takes our RTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Its RTP address.
    pub addr: SocketAddr,
    /// The negotiated format.
    pub format: MediaFormat,
    /// Its SRTP suite and key, when the stream is RTP/SAVP (SDES).
    pub crypto: Option<CryptoAttribute>,
}

/// Why an SDP body was not usable (answered 488, or the call ended).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpProblem {
    /// Not parseable SDP.
    #[error("the SDP does not parse")]
    Unparseable,
    /// No audio stream with an address and a port.
    #[error("no usable audio stream (port 0 or no connection address)")]
    NoAudio,
    /// The audio stream has neither PCMU nor PCMA.
    #[error("no common codec (analog ports speak PCMU and PCMA)")]
    NoCommonCodec,
    /// Secure RTP without an SDES key the ports can use (DTLS-SRTP, an MKI, another suite).
    #[error(
        "secure RTP without a usable a=crypto (analog ports take SDES keys of \
         AES_CM_128_HMAC_SHA1_80/32 or AEAD_AES_128_GCM, no MKI)"
    )]
    NoCryptoSuite,
}

/// An SDP body; `crypto` makes its stream RTP/SAVP with that `a=crypto` line.
fn body(
    local: SocketAddr,
    session_id: u64,
    formats: &str,
    rtpmaps: &str,
    crypto: Option<&CryptoAttribute>,
) -> Bytes {
    let ip = local.ip();
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let (profile, crypto) = match crypto {
        Some(crypto) => (
            "RTP/SAVP",
            format!("a=crypto:{}\r\n", crypto.value().as_str()),
        ),
        None => ("RTP/AVP", String::new()),
    };
    Bytes::from(format!(
        "v=0\r\no=- {session_id} 1 IN {family} {ip}\r\ns=analog\r\nc=IN {family} {ip}\r\n\
t=0 0\r\nm=audio {} {profile} {formats}\r\n{rtpmaps}{crypto}a=ptime:20\r\na=sendrecv\r\n",
        local.port()
    ))
}

fn law_name(law: Law) -> &'static str {
    match law {
        Law::Ulaw => "PCMU",
        Law::Alaw => "PCMA",
    }
}

/// Our offer: PCMU, PCMA and telephone-event at `local`; with our SDES key `crypto` as
/// RTP/SAVP.
pub fn offer(local: SocketAddr, session_id: u64, crypto: Option<&CryptoAttribute>) -> Bytes {
    body(
        local,
        session_id,
        &format!("0 8 {EVENT_PAYLOAD_TYPE}"),
        &format!(
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:{EVENT_PAYLOAD_TYPE} telephone-event/8000\r\na=fmtp:{EVENT_PAYLOAD_TYPE} 0-15\r\n"
        ),
        crypto,
    )
}

/// Our answer taking `format` (as chosen by [`negotiate`]) at `local`; with our SDES key
/// `crypto` (answering the offer's, [`CryptoAttribute::answering`]) as RTP/SAVP.
pub fn answer(
    local: SocketAddr,
    session_id: u64,
    format: MediaFormat,
    crypto: Option<&CryptoAttribute>,
) -> Bytes {
    let law = law_name(format.law);
    let mut formats = format.payload_type.to_string();
    let mut rtpmaps = format!("a=rtpmap:{} {law}/8000\r\n", format.payload_type);
    if let Some(event) = format.event_payload_type {
        formats.push_str(&format!(" {event}"));
        rtpmaps.push_str(&format!(
            "a=rtpmap:{event} telephone-event/8000\r\na=fmtp:{event} 0-15\r\n"
        ));
    }
    body(local, session_id, &formats, &rtpmaps, crypto)
}

/// Reads an offer or an answer: the first audio stream's address, its first G.711 format
/// (in the far end's order of preference), its telephone-event payload type, and for
/// RTP/SAVP the first `a=crypto` the ports can use. An `a=crypto` in an RTP/AVP stream is
/// ignored (the stream is plain RTP: RFC 4568 keys belong to secure profiles).
pub fn negotiate(sdp: &[u8]) -> Result<RemoteMedia, SdpProblem> {
    let session = Session::parse(sdp).map_err(|_| SdpProblem::Unparseable)?;
    let audio = session
        .medias
        .iter()
        .find(|m| m.media == "audio" && m.port != 0)
        .ok_or(SdpProblem::NoAudio)?;
    let ip: IpAddr = audio
        .connections
        .first()
        .or(session.connection.as_ref())
        .and_then(|c| c.try_address().ok())
        .map(|a| a.ip)
        .ok_or(SdpProblem::NoAudio)?;
    let rtpmap = |pt: &str| {
        audio.attributes.iter().find_map(|a| {
            let value = a.value.as_deref().filter(|_| a.attribute == "rtpmap")?;
            let (number, encoding) = value.split_once(' ')?;
            (number == pt).then(|| encoding.to_ascii_lowercase())
        })
    };
    let mut law = None;
    let mut event_payload_type = None;
    for pt in audio.fmt.split_whitespace() {
        let encoding = rtpmap(pt);
        let number: Option<u8> = pt.parse().ok();
        match (number, encoding.as_deref()) {
            (Some(0), None) => law = law.or(Some((Law::Ulaw, 0))),
            (Some(8), None) => law = law.or(Some((Law::Alaw, 8))),
            (Some(n), Some(e)) if e.starts_with("pcmu/8000") => law = law.or(Some((Law::Ulaw, n))),
            (Some(n), Some(e)) if e.starts_with("pcma/8000") => law = law.or(Some((Law::Alaw, n))),
            (Some(n), Some(e)) if e.starts_with("telephone-event/8000") => {
                event_payload_type = event_payload_type.or(Some(n))
            }
            _ => {}
        }
    }
    let (law, payload_type) = law.ok_or(SdpProblem::NoCommonCodec)?;
    let crypto = match audio.proto.to_ascii_uppercase().contains("SAVP") {
        true => {
            let offered = audio
                .attributes
                .iter()
                .filter(|a| a.attribute == "crypto")
                .filter_map(|a| a.value.as_deref());
            Some(CryptoAttribute::first_usable(offered).ok_or(SdpProblem::NoCryptoSuite)?)
        }
        false => None,
    };
    Ok(RemoteMedia {
        addr: SocketAddr::new(ip, audio.port),
        format: MediaFormat {
            law,
            payload_type,
            event_payload_type,
        },
        crypto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::sdes::Suite;

    const LOCAL: &str = "127.0.0.1:4000";

    #[test]
    fn our_offer_negotiates_pcmu_with_events() {
        let remote = negotiate(&offer(LOCAL.parse().unwrap(), 1, None)).unwrap();
        assert_eq!(remote.addr, LOCAL.parse().unwrap());
        assert_eq!(
            remote.format,
            MediaFormat {
                law: Law::Ulaw,
                payload_type: 0,
                event_payload_type: Some(101)
            }
        );
    }

    #[test]
    fn the_far_ends_preference_wins_and_the_answer_echoes_it() {
        let sdp = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 18 8 0 96\r\nc=IN IP4 10.0.0.9\r\na=rtpmap:96 telephone-event/8000\r\n";
        let remote = negotiate(sdp).unwrap();
        assert_eq!(remote.addr, "10.0.0.9:6000".parse().unwrap());
        assert_eq!(
            (remote.format.law, remote.format.payload_type),
            (Law::Alaw, 8)
        );
        assert_eq!(remote.format.event_payload_type, Some(96));
        let answer = answer(LOCAL.parse().unwrap(), 2, remote.format, None);
        let text = std::str::from_utf8(&answer).unwrap();
        assert!(text.contains("m=audio 4000 RTP/AVP 8 96\r\n"), "{text}");
        assert_eq!(negotiate(&answer).unwrap().format, remote.format);
    }

    #[test]
    fn a_secure_offer_is_answered_secure_with_a_key_of_our_own() {
        let offer = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nt=0 0\r\n\
m=audio 6000 RTP/SAVP 0\r\nc=IN IP4 10.0.0.9\r\n\
a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:dGhpcyBpcyBub3QgYSB1c2FibGUga2V5IGZvciB1cyB0aGlzIGlzIG5vdA==\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31\r\n";
        let remote = negotiate(offer).unwrap();
        let theirs = remote.crypto.clone().expect("the second, usable attribute");
        assert_eq!((theirs.tag, theirs.suite), (2, Suite::AesCm128HmacSha1_32));
        let ours = CryptoAttribute::answering(&theirs);
        let answer = answer(LOCAL.parse().unwrap(), 3, remote.format, Some(&ours));
        let text = std::str::from_utf8(&answer).unwrap();
        assert!(text.contains("m=audio 4000 RTP/SAVP 0\r\n"), "{text}");
        assert_eq!(negotiate(&answer).unwrap().crypto, Some(ours));
        // Secure without a key the ports can use, or DTLS-SRTP: refused, named.
        let dtls = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 6000 UDP/TLS/RTP/SAVP 0\r\na=fingerprint:sha-256 AB:CD\r\n";
        assert_eq!(negotiate(dtls), Err(SdpProblem::NoCryptoSuite));
        // A key in a plain RTP/AVP stream does not make it secure.
        let plain = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";
        assert_eq!(negotiate(plain).unwrap().crypto, None);
    }

    #[test]
    fn unusable_offers_are_named() {
        assert_eq!(negotiate(b"hello"), Err(SdpProblem::Unparseable));
        let no_codec = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 6000 RTP/AVP 18\r\n";
        assert_eq!(negotiate(no_codec), Err(SdpProblem::NoCommonCodec));
        let rejected = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n";
        assert_eq!(negotiate(rejected), Err(SdpProblem::NoAudio));
    }
}
