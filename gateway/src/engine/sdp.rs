//! The SDP the gateway writes itself: the answer in the pickup's dummy early dialog (the
//! picker's offered streams, each accepted with its first format, pointed at the gateway and
//! `inactive`, so the phone plays nothing until the real call replaces the dummy), and the
//! offers of its own re-INVITEs, which continue a dialog's session description (RFC 3264 §8).

use bytes::Bytes;
use sdp_types::{Attribute, Connection, Origin, Session, Time};
use std::net::IpAddr;

/// An `inactive` answer to `offer`, or None when the offer is not SDP we can read.
pub fn inactive_answer(offer: &[u8], gateway: IpAddr) -> Option<Bytes> {
    let offer = Session::parse(offer).ok()?;
    let mut answer = Session::new(Origin::with_ip_addr(1, 1, gateway), "-");
    answer.connection = Some(Connection::from_ip_addr(gateway));
    answer.times = vec![Time::new(0, 0)];
    for offered in &offer.medias {
        let first_format = offered
            .fmt
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .to_string();
        let mut media = offered.clone();
        media.port = if offered.port == 0 { 0 } else { 9 };
        media.fmt = first_format.clone();
        media.connections.clear();
        media.bandwidths.clear();
        media.key = None;
        media.attributes = offered
            .attributes
            .iter()
            .filter(|a| {
                a.attribute == "rtpmap"
                    && a.value
                        .as_deref()
                        .is_some_and(|v| v.split_whitespace().next() == Some(first_format.as_str()))
            })
            .cloned()
            .collect();
        media.attributes.push(Attribute::new("inactive"));
        answer.medias.push(media);
    }
    let mut bytes = Vec::new();
    answer.write(&mut bytes).ok()?;
    Some(Bytes::from(bytes))
}

/// Whether two bodies describe the same media (connection, session attributes, streams),
/// whatever their o= lines say; bodies that are not SDP are compared byte for byte.
pub fn same_media(a: &[u8], b: &[u8]) -> bool {
    match (Session::parse(a), Session::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.connection == b.connection && a.attributes == b.attributes && a.medias == b.medias
        }
        _ => a == b,
    }
}

/// `media` as the next offer in a dialog whose last SDP from the gateway was `previous`
/// (RFC 3264 §8): `previous`'s o= line with its version one higher, and at least its
/// m-lines (those `media` lacks are kept, rejected with port 0). None when either is not
/// SDP we can read.
pub fn next_offer(previous: &[u8], media: &[u8]) -> Option<Bytes> {
    let previous = Session::parse(previous).ok()?;
    let mut offer = Session::parse(media).ok()?;
    offer.origin = previous.origin.clone();
    offer.origin.sess_version = previous.origin.sess_version.wrapping_add(1);
    for dropped in previous.medias.iter().skip(offer.medias.len()) {
        let mut media = dropped.clone();
        media.port = 0;
        media.attributes.clear();
        offer.medias.push(media);
    }
    let mut bytes = Vec::new();
    offer.write(&mut bytes).ok()?;
    Some(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EARLY: &[u8] =
        b"v=0\r\no=gw 5 9 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 9 RTP/AVP 0\r\na=inactive\r\nm=video 0 RTP/AVP 31\r\n";

    #[test]
    fn a_re_offer_continues_the_dialogs_origin_and_keeps_its_streams() {
        let media = b"v=0\r\no=caller 1 1 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\n";
        let offer = next_offer(EARLY, media).unwrap();
        let text = String::from_utf8(offer.to_vec()).unwrap();
        assert!(text.contains("o=gw 5 10 IN IP4 10.0.0.1\r\n"), "{text}");
        assert!(text.contains("c=IN IP4 10.0.0.7\r\n"), "{text}");
        assert!(text.contains("m=audio 4000 RTP/AVP 0\r\n"), "{text}");
        assert!(text.contains("m=video 0 RTP/AVP 31\r\n"), "{text}");
        assert!(!text.contains("inactive"), "{text}");
        assert!(same_media(&offer, &next_offer(&offer, media).unwrap()));
        assert!(!same_media(&offer, EARLY));
        assert!(same_media(b"not sdp", b"not sdp") && !same_media(b"a", b"b"));
        assert_eq!(next_offer(b"not sdp", media), None);
    }

    #[test]
    fn answers_each_stream_inactive_with_its_first_format() {
        let offer = b"v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
m=video 0 RTP/AVP 31\r\n";
        let answer = inactive_answer(offer, "127.0.0.1".parse().unwrap()).unwrap();
        let text = String::from_utf8(answer.to_vec()).unwrap();
        assert!(text.contains("c=IN IP4 127.0.0.1"), "{text}");
        assert!(text.contains("m=audio 9 RTP/AVP 8\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:8 PCMA/8000"), "{text}");
        assert!(!text.contains("telephone-event"), "{text}");
        assert!(text.contains("m=video 0 RTP/AVP 31"), "{text}");
        assert_eq!(text.matches("a=inactive").count(), 2, "{text}");
        assert!(Session::parse(text.as_bytes()).is_ok());
        assert!(inactive_answer(b"not sdp", "127.0.0.1".parse().unwrap()).is_none());
    }
}
