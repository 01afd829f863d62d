//! Requests the transaction layer builds itself: ACK for a non-2xx final (RFC 3261 §17.1.1.3),
//! CANCEL (§9.1), and the ACK + BYE that end a dialog created by a 2xx that crossed our
//! CANCEL (RFC 5407 §3.1.2).

use crate::sip::headers::Headers;
use crate::sip::message::{RequestUri, SipMessage};
use bytesstr::BytesStr;
use ezk_sip_types::{Method, Name};

fn copy(from: &SipMessage, name: Name, headers: &mut Headers) {
    for value in from.raw_values(&name) {
        headers.insert(name.clone(), value.clone());
    }
}

fn request_uri(invite: &SipMessage) -> RequestUri {
    invite
        .request_line()
        .map(|line| line.uri.clone())
        .unwrap_or_else(|| RequestUri::parse("sip:invalid").expect("static URI parses"))
}

fn top_via(invite: &SipMessage) -> Option<String> {
    invite
        .header_list(&Name::VIA)
        .first()
        .map(|v| v.to_string())
}

fn cseq_number(invite: &SipMessage) -> u32 {
    invite.cseq().map(|c| c.cseq).unwrap_or(1)
}

/// A request that belongs to the INVITE's own transaction: its top Via (branch), Request-URI,
/// Call-ID, From, Route and CSeq number, with `method` and the To of `to_from`.
fn in_invite_transaction(invite: &SipMessage, method: Method, to_from: &SipMessage) -> SipMessage {
    let mut headers = Headers::with_capacity(8);
    if let Some(via) = top_via(invite) {
        headers.insert(Name::VIA, BytesStr::from(via));
    }
    headers.insert(Name::MAX_FORWARDS, BytesStr::from_static("70"));
    copy(invite, Name::FROM, &mut headers);
    copy(to_from, Name::TO, &mut headers);
    copy(invite, Name::CALL_ID, &mut headers);
    headers.insert(
        Name::CSEQ,
        BytesStr::from(format!("{} {method}", cseq_number(invite))),
    );
    copy(invite, Name::ROUTE, &mut headers);
    SipMessage::new_request(method, request_uri(invite), headers)
}

/// The ACK for a non-2xx final response: To (with its tag) from the response.
pub(super) fn ack_for_failure(invite: &SipMessage, response: &SipMessage) -> SipMessage {
    in_invite_transaction(invite, Method::ACK, response)
}

/// CANCEL for a pending INVITE: To from the INVITE (no tag), and a Reason (RFC 3326) if given.
pub(super) fn cancel(invite: &SipMessage, reason: Option<&str>) -> SipMessage {
    let mut cancel = in_invite_transaction(invite, Method::CANCEL, invite);
    if let Some(reason) = reason {
        cancel.set_header(Name::from("Reason"), reason);
    }
    cancel
}

/// A request in the dialog a 2xx created (ACK with the INVITE's CSeq, BYE with the next one),
/// sent to the 2xx's Contact with a fresh branch taken from the INVITE's Via host.
pub(super) fn in_answered_dialog(
    invite: &SipMessage,
    ok: &SipMessage,
    method: Method,
    branch: &str,
) -> SipMessage {
    let mut headers = Headers::with_capacity(8);
    if let Some(via) = top_via(invite) {
        let host = via.split(';').next().unwrap_or(&via);
        headers.insert(Name::VIA, BytesStr::from(format!("{host};branch={branch}")));
    }
    headers.insert(Name::MAX_FORWARDS, BytesStr::from_static("70"));
    copy(invite, Name::FROM, &mut headers);
    copy(ok, Name::TO, &mut headers);
    copy(invite, Name::CALL_ID, &mut headers);
    let number = if method == Method::ACK {
        cseq_number(invite)
    } else {
        cseq_number(invite) + 1
    };
    headers.insert(Name::CSEQ, BytesStr::from(format!("{number} {method}")));
    let target = ok
        .contacts()
        .and_then(|contacts| contacts.into_iter().next())
        .and_then(|contact| RequestUri::parse(&contact.uri).ok())
        .unwrap_or_else(|| request_uri(invite));
    SipMessage::new_request(method, target, headers)
}
