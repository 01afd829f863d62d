//! RFC 3264 answers for a bridged call, sans-IO: when the gateway connects two parties that
//! each sent an offer (a bridged pickup: the caller's INVITE and the picker's own INVITE),
//! each offer is answered on behalf of the other party, from the other party's offer.
//!
//! The rules (RFC 3264 §6): one m-line per offered m-line, in order; a stream takes the
//! offered formats the other party offered too (static payload types by number, dynamic ones
//! by encoding name, clock rate and channels), in the offer's order; telephone-event only at
//! the clock rate of a codec kept; a stream with no common codec, or none on the other side,
//! is rejected with port 0; the direction is the offer's reversed, narrowed by what the
//! other party offered.
//!
//! SDES keys (RFC 4568): each party sends with the key of its own `a=crypto` line, so the
//! answer to one party's secure stream carries the other party's line for one suite both
//! offered, under the tag the answered party gave that suite. Both answers pick the same
//! suite (the first both offered in a fixed order), so each party learns the key the other
//! sends with; the relay passes the SRTP through. Secure streams without a common suite
//! are rejected.
//!
//! Payload type numbers: an answer names each format by the number the other party offered
//! it under, with that party's rtpmap and fmtp, because that party is the one that receives
//! what the offerer sends (RFC 3264 §6.1 makes the offer's numbers a SHOULD, not a MUST).
//! The relay forwards RTP untouched, so with the offer's numbers a dynamic type (opus,
//! telephone-event) numbered differently by the two phones would arrive under a number its
//! receiver maps to another format, or to none.

use bytes::Bytes;
use sdp_types::{Attribute, Direction, Media, Session, Time};

/// The answer to `offer` on behalf of the party that offered `other`, naming `other`'s
/// media addresses; None when either is not SDP we can read.
pub fn answer(offer: &[u8], other: &[u8]) -> Option<Bytes> {
    let offer = Session::parse(offer).ok()?;
    let other = Session::parse(other).ok()?;
    let mut answer = Session::new(other.origin.clone(), "-");
    answer.connection = other.connection.clone().or_else(|| {
        other
            .medias
            .iter()
            .find_map(|m| m.connections.first().cloned())
    });
    answer.times = vec![Time::new(0, 0)];
    let mut used = vec![false; other.medias.len()];
    for offered in &offer.medias {
        let counterpart = other.medias.iter().enumerate().find(|(i, m)| {
            !used[*i]
                && m.port != 0
                && m.media == offered.media
                && m.proto == offered.proto
                && offered.port != 0
        });
        let answered = counterpart.and_then(|(i, theirs)| {
            let media = answer_stream(&offer, offered, &other, theirs)?;
            used[i] = true;
            Some(media)
        });
        answer
            .medias
            .push(answered.unwrap_or_else(|| rejected(offered)));
    }
    let mut bytes = Vec::new();
    answer.write(&mut bytes).ok()?;
    Some(Bytes::from(bytes))
}

/// An offered stream turned down: port 0, its formats listed as offered, nothing else.
fn rejected(offered: &Media) -> Media {
    let mut media = offered.clone();
    media.port = 0;
    media.num_ports = None;
    media.connections.clear();
    media.bandwidths.clear();
    media.key = None;
    media.attributes.clear();
    media
}

/// A payload type's encoding as its rtpmap names it (lower-cased name, clock rate, channels).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Encoding {
    name: String,
    clock: u32,
    channels: u32,
}

/// The rtpmap of payload type `pt` in `media`.
fn encoding(media: &Media, pt: &str) -> Option<Encoding> {
    let value = media.attributes.iter().find_map(|a| {
        let value = a.value.as_deref().filter(|_| a.attribute == "rtpmap")?;
        let (number, rest) = value.split_once(char::is_whitespace)?;
        (number == pt).then_some(rest.trim())
    })?;
    let mut parts = value.split('/');
    let name = parts.next()?.to_ascii_lowercase();
    let clock = parts.next()?.trim().parse().ok()?;
    let channels = parts
        .next()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(1);
    Some(Encoding {
        name,
        clock,
        channels,
    })
}

/// The payload type under which `theirs` offered the format `pt` of `ours`, if it did.
fn counterpart<'a>(ours: &Media, pt: &str, theirs: &'a Media) -> Option<&'a str> {
    let mut formats = theirs.fmt.split_whitespace();
    if pt.parse::<u8>().is_ok_and(|n| n < 96) {
        return formats.find(|&f| f == pt);
    }
    let wanted = encoding(ours, pt)?;
    formats.find(|f| encoding(theirs, f).as_ref() == Some(&wanted))
}

/// A stream's direction: its own attribute, else the session's, else sendrecv.
fn direction(session: &Session, media: &Media) -> Direction {
    let of = |attributes: &[Attribute]| {
        attributes.iter().find_map(|a| match a.attribute.as_str() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        })
    };
    of(&media.attributes)
        .or_else(|| of(&session.attributes))
        .unwrap_or(Direction::SendRecv)
}

/// The answer to `offered` from the other party's `theirs`; None when no codec is common.
fn answer_stream(
    offer: &Session,
    offered: &Media,
    other: &Session,
    theirs: &Media,
) -> Option<Media> {
    // (offered type, the other party's type for the same format)
    let common: Vec<(&str, &str)> = offered
        .fmt
        .split_whitespace()
        .filter_map(|pt| Some((pt, counterpart(offered, pt, theirs)?)))
        .collect();
    let is_event = |pt: &str| encoding(offered, pt).is_some_and(|e| e.name == "telephone-event");
    // A static type without rtpmap: the 8000 Hz of the telephony codecs (RFC 3551).
    let clock_of = |pt: &str| encoding(offered, pt).map_or(8000, |e| e.clock);
    let codecs: Vec<&str> = common
        .iter()
        .map(|(pt, _)| *pt)
        .filter(|pt| !is_event(pt))
        .collect();
    if codecs.is_empty() {
        return None;
    }
    let mut kept: Vec<&str> = Vec::new();
    for (pt, their_pt) in &common {
        let at_a_codecs_rate = || codecs.iter().any(|c| clock_of(c) == clock_of(pt));
        // Two offered types of one format map to one of theirs: listed once.
        if (!is_event(pt) || at_a_codecs_rate()) && !kept.contains(their_pt) {
            kept.push(*their_pt);
        }
    }
    let mut media = theirs.clone();
    media.fmt = kept.join(" ");
    media.key = None;
    media.attributes = theirs
        .attributes
        .iter()
        .filter(|a| matches!(a.attribute.as_str(), "rtpmap" | "fmtp"))
        .filter(|a| {
            a.value
                .as_deref()
                .and_then(|v| v.split_whitespace().next())
                .is_some_and(|pt| kept.contains(&pt))
        })
        .cloned()
        .collect();
    media.attributes.extend(
        theirs
            .attributes
            .iter()
            .filter(|a| a.attribute == "ptime")
            .cloned(),
    );
    if offered.proto.to_ascii_uppercase().contains("SAVP") {
        let crypto = crypto_answer(offered, theirs)?;
        media.attributes.push(Attribute {
            attribute: "crypto".into(),
            value: Some(crypto),
        });
    }
    let wanted = direction(other, theirs);
    let reversed = direction(offer, offered).reverse();
    let send = reversed.has_send() && wanted.has_send();
    let recv = reversed.has_recv() && wanted.has_recv();
    let answered = match (send, recv) {
        (true, true) => Direction::SendRecv,
        (true, false) => Direction::SendOnly,
        (false, true) => Direction::RecvOnly,
        (false, false) => Direction::Inactive,
    };
    media
        .attributes
        .push(Attribute::new(answered.as_str().to_string()));
    Some(media)
}

/// A stream's `a=crypto` lines as (tag, suite, key parameters and the rest).
fn crypto_lines(media: &Media) -> Vec<(&str, &str, &str)> {
    media
        .attributes
        .iter()
        .filter(|a| a.attribute == "crypto")
        .filter_map(|a| {
            let value = a.value.as_deref()?.trim();
            let (tag, rest) = value.split_once(char::is_whitespace)?;
            let (suite, keys) = rest.trim_start().split_once(char::is_whitespace)?;
            Some((tag, suite, keys.trim_start()))
        })
        .collect()
}

/// The `a=crypto` value answering `offered` from `theirs`: `theirs`'s line for the suite
/// both offered that comes first in a fixed order (the gateway's own preference, then by
/// name), under `offered`'s tag for it. None when they have no suite in common.
fn crypto_answer(offered: &Media, theirs: &Media) -> Option<String> {
    let (ours, their_lines) = (crypto_lines(offered), crypto_lines(theirs));
    let rank = |suite: &str| {
        let known = crate::srtp::sdes::Suite::ALL
            .iter()
            .position(|s| s.name() == suite);
        (known.unwrap_or(usize::MAX), suite.to_string())
    };
    let (tag, suite, _) = ours
        .iter()
        .filter(|(_, suite, _)| their_lines.iter().any(|(_, s, _)| s == suite))
        .min_by_key(|(_, suite, _)| rank(suite))?;
    let (_, _, keys) = their_lines.iter().find(|(_, s, _)| s == suite)?;
    Some(format!("{tag} {suite} {keys}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINPHONE: &str = include_str!("../../tests/fixtures/sdp/linphone-5.1-offer.sdp");

    /// A caller offering PCMU and PCMA with telephone-event at 8000 Hz, and video.
    const CALLER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
m=video 6002 RTP/AVP 31\r\n";

    /// The fixture's SDP body (after its comment header), with CRLF line ends.
    fn linphone() -> String {
        LINPHONE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| format!("{l}\r\n"))
            .collect()
    }

    fn text(offer: &str, other: &str) -> String {
        let answer = answer(offer.as_bytes(), other.as_bytes()).expect("an answer");
        let text = String::from_utf8(answer.to_vec()).unwrap();
        assert!(Session::parse(text.as_bytes()).is_ok(), "{text}");
        text
    }

    fn m_lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with("m=")).collect()
    }

    #[test]
    fn the_fixture_is_a_multi_codec_offer() {
        let offer = Session::parse(linphone().as_bytes()).unwrap();
        assert_eq!(offer.medias.len(), 2);
        assert!(offer.medias[0].fmt.split_whitespace().count() >= 9);
    }

    #[test]
    fn linphone_offer_answered_from_a_pcmu_pcma_caller() {
        let text = text(&linphone(), CALLER);
        assert_eq!(
            m_lines(&text),
            ["m=audio 6000 RTP/AVP 0 8 101", "m=video 0 RTP/AVP 96 97"],
            "linphone's telephone-event/8000 (100) under the caller's number: {text}"
        );
        assert!(
            text.contains("c=IN IP4 10.0.0.9"),
            "the caller's address: {text}"
        );
        assert!(text.contains("a=rtpmap:101 telephone-event/8000"), "{text}");
        assert!(
            text.contains("a=fmtp:101 0-15"),
            "the caller's fmtp: {text}"
        );
        for gone in ["opus", "speex", "G729", "/48000", "/16000"] {
            assert!(!text.contains(gone), "{gone} is not common: {text}");
        }
        assert_eq!(text.matches("a=sendrecv").count(), 1, "{text}");
    }

    #[test]
    fn the_caller_offer_answered_from_linphone_keeps_the_callers_order() {
        let text = text(CALLER, &linphone());
        assert_eq!(
            m_lines(&text),
            ["m=audio 7078 RTP/AVP 0 8 100", "m=video 0 RTP/AVP 31"],
            "linphone's port; no common video codec: {text}"
        );
        assert!(text.contains("c=IN IP4 192.168.1.23"), "{text}");
        assert!(text.contains("a=rtpmap:100 telephone-event/8000"), "{text}");
        assert!(!text.contains("a=rtpmap:101"), "{text}");
    }

    #[test]
    fn dynamic_types_match_by_name_clock_and_channels_not_number() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 111 112 113\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:112 speex/16000\r\n\
a=rtpmap:113 L16/8000/2\r\n";
        let other = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 5000 RTP/AVP 96 97 98\r\na=rtpmap:96 OPUS/48000/2\r\na=rtpmap:97 speex/8000\r\n\
a=rtpmap:98 L16/8000\r\n";
        let text = text(offer, other);
        assert_eq!(
            m_lines(&text),
            ["m=audio 5000 RTP/AVP 96"],
            "opus under the other party's number: {text}"
        );
        assert!(text.contains("a=rtpmap:96 OPUS/48000/2"), "{text}");
        let twice = offer.replace("113\r\n", "113 114\r\na=rtpmap:114 opus/48000/2\r\n");
        assert_eq!(
            m_lines(&super::tests::text(&twice, other)),
            ["m=audio 5000 RTP/AVP 96"],
            "one format offered twice is answered once"
        );
    }

    #[test]
    fn telephone_event_is_kept_only_at_a_chosen_codecs_clock_rate() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 96 8 101 100\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/48000\r\n\
a=rtpmap:100 telephone-event/8000\r\n";
        let other = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 5000 RTP/AVP 8 97 98\r\na=rtpmap:97 telephone-event/48000\r\na=rtpmap:98 telephone-event/8000\r\n";
        let text = text(offer, other);
        assert_eq!(m_lines(&text), ["m=audio 5000 RTP/AVP 8 98"], "{text}");
        // Only telephone-event in common: the stream is rejected.
        let events = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 5000 RTP/AVP 98\r\na=rtpmap:98 telephone-event/8000\r\n";
        assert_eq!(
            m_lines(&super::tests::text(offer, events)),
            ["m=audio 0 RTP/AVP 96 8 101 100"]
        );
    }

    #[test]
    fn streams_without_a_common_codec_or_counterpart_are_rejected_in_place() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=video 4002 RTP/AVP 34\r\nm=audio 4000 RTP/AVP 18\r\nm=audio 0 RTP/AVP 0\r\nm=audio 4004 RTP/AVP 0\r\n";
        let other = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 5000 RTP/AVP 0\r\nm=video 5002 RTP/AVP 31\r\n";
        let text = text(offer, other);
        assert_eq!(
            m_lines(&text),
            [
                "m=video 0 RTP/AVP 34",
                "m=audio 0 RTP/AVP 18",
                "m=audio 0 RTP/AVP 0",
                "m=audio 5000 RTP/AVP 0"
            ],
            "{text}"
        );
    }

    #[test]
    fn the_direction_is_the_offers_reversed_narrowed_by_the_other_party() {
        let with = |offer_dir: &str, other_dir: &str| {
            let offer = format!(
                "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\n{offer_dir}"
            );
            let other = format!(
                "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
{other_dir}m=audio 5000 RTP/AVP 0\r\n"
            );
            text(&offer, &other)
        };
        assert!(with("", "").contains("a=sendrecv"));
        assert!(with("a=sendonly\r\n", "").contains("a=recvonly"));
        assert!(with("a=recvonly\r\n", "").contains("a=sendonly"));
        assert!(with("a=inactive\r\n", "").contains("a=inactive"));
        assert!(
            with("", "a=sendonly\r\n").contains("a=sendonly"),
            "a session-level direction of the other party counts"
        );
        assert!(with("a=sendonly\r\n", "a=sendonly\r\n").contains("a=inactive"));
    }

    #[test]
    fn unreadable_sdp_gives_no_answer() {
        assert!(answer(b"not sdp", CALLER.as_bytes()).is_none());
        assert!(answer(CALLER.as_bytes(), b"not sdp").is_none());
    }

    /// Two secure offers (a bridged pickup of an SRTP call by an SRTP phone): each answer
    /// carries the other party's key for the same suite, under the answered party's tag.
    #[test]
    fn secure_streams_are_answered_with_the_other_party_s_key_for_a_common_suite() {
        let secure = |port: u16, lines: &[(&str, &str, &str)]| {
            let mut text = format!(
                "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
                 m=audio {port} RTP/SAVP 0\r\n"
            );
            for (tag, suite, key) in lines {
                text.push_str(&format!("a=crypto:{tag} {suite} inline:{key}\r\n"));
            }
            text
        };
        let caller = secure(
            4000,
            &[
                ("1", "AES_CM_128_HMAC_SHA1_32", "CALLER32"),
                ("2", "AES_CM_128_HMAC_SHA1_80", "CALLER80"),
            ],
        );
        let picker = secure(
            5000,
            &[
                ("7", "AES_CM_128_HMAC_SHA1_80", "PICKER80|2^31"),
                ("8", "AES_CM_128_HMAC_SHA1_32", "PICKER32"),
            ],
        );
        let to_caller = text(&caller, &picker);
        let to_picker = text(&picker, &caller);
        assert!(
            to_caller.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:PICKER80|2^31\r\n"),
            "{to_caller}"
        );
        assert!(
            to_picker.contains("a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:CALLER80\r\n"),
            "{to_picker}"
        );
        assert_eq!(to_caller.matches("a=crypto").count(), 1, "{to_caller}");
        // No suite in common: the secure stream is rejected.
        let other = secure(5000, &[("1", "AEAD_AES_128_GCM", "PICKERGCM")]);
        assert!(m_lines(&text(&caller, &other))[0].starts_with("m=audio 0 "));
    }
}
