//! One side of a B2BUA call as a SIP dialog (RFC 3261 §12): identifiers, CSeq, remote
//! target, and how to build in-dialog requests toward that side.

use crate::sip::headers::Headers;
use crate::sip::message::{RequestUri, SipMessage};
use crate::transport::mtu::{route_by_size, SizeRoute, UDP_ONLY_LIMIT, UDP_REQUEST_LIMIT};
use crate::transport::Peer;
use bytesstr::BytesStr;
use ezk_sip_types::{Method, Name};

pub use super::local::LocalIdentity;

/// Dialog state for one leg, seen from the gateway.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// The leg's Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The far end's tag (None while a B leg has not answered with a tag).
    pub remote_tag: Option<String>,
    /// Our name-addr (without tag), as in our From (B leg) or To (A leg).
    pub local_uri: String,
    /// The far end's name-addr (without tag).
    pub remote_uri: String,
    /// Where in-dialog requests go (the far end's Contact URI).
    pub remote_target: String,
    /// Last CSeq number we used in this dialog.
    pub local_cseq: u32,
    /// Transport address of the far end (we send to the source address: NAT-friendly).
    pub peer: Peer,
}

impl Dialog {
    /// Our (UAS) side of the dialog a request creates: its From is the far end, its To is
    /// us with `local_tag`. None when From or To do not parse.
    pub fn answering(request: &SipMessage, local_tag: String, peer: Peer) -> Option<Dialog> {
        let (from, to) = (request.from_header()?, request.to_header()?);
        Some(Dialog {
            call_id: request.call_id().unwrap_or_default().to_string(),
            local_tag,
            remote_tag: from.tag().map(str::to_string),
            local_uri: to.without_tag(),
            remote_uri: from.without_tag(),
            remote_target: request.remote_target()?,
            local_cseq: 0,
            peer,
        })
    }

    /// Builds an in-dialog request; `cseq` None takes the next number.
    pub fn request(
        &mut self,
        method: Method,
        cseq: Option<u32>,
        local: &LocalIdentity,
    ) -> SipMessage {
        let number = cseq.unwrap_or_else(|| {
            self.local_cseq += 1;
            self.local_cseq
        });
        let uri = RequestUri::parse(&self.remote_target)
            .unwrap_or_else(|_| RequestUri::parse("sip:invalid").expect("static URI parses"));
        let mut headers = Headers::with_capacity(10);
        let mut put = |name: Name, value: String| headers.insert(name, BytesStr::from(value));
        put(Name::VIA, local.via(self.peer));
        put(Name::MAX_FORWARDS, "70".into());
        put(
            Name::FROM,
            format!("{};tag={}", self.local_uri, self.local_tag),
        );
        put(
            Name::TO,
            match &self.remote_tag {
                Some(tag) => format!("{};tag={tag}", self.remote_uri),
                None => self.remote_uri.clone(),
            },
        );
        put(Name::CALL_ID, self.call_id.clone());
        put(Name::CSEQ, format!("{number} {method}"));
        if method == Method::INVITE || method == Method::UPDATE {
            put(Name::CONTACT, local.contact(self.peer));
        }
        SipMessage::new_request(method, uri, headers)
    }
}

/// A request larger than [`UDP_ONLY_LIMIT`] toward a far end not known to take TCP (RFC 3261
/// §18.1.1, see [`crate::transport::mtu`]): it is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "request of {size} bytes is larger than the {limit} bytes sent over UDP to a phone \
     that takes no TCP (RFC 3261 §18.1.1 wants TCP above {mtu_limit}): have the phone \
     register over TCP or with transport=tcp",
    limit = UDP_ONLY_LIMIT,
    mtu_limit = UDP_REQUEST_LIMIT
)]
pub struct RequestTooLarge {
    /// The request's size in bytes.
    pub size: usize,
}

impl Dialog {
    /// Applies RFC 3261 §18.1.1 to `request`, built by [`Dialog::request`] for this dialog:
    /// when it is too large for UDP and the remote target takes TCP (`transport=tcp`), the
    /// dialog moves to TCP and the request's Via and Contact say so; when it cannot, the
    /// request must not be sent.
    pub fn fit_transport(
        &mut self,
        request: &mut SipMessage,
        local: &LocalIdentity,
        tcp_served: bool,
    ) -> Result<(), RequestTooLarge> {
        let size = request.encoded_len();
        match route_by_size(self.peer, &self.remote_target, size, tcp_served) {
            SizeRoute::Keep => Ok(()),
            SizeRoute::Tcp(peer) => {
                self.peer = peer;
                request.headers.remove(&Name::VIA);
                request.headers.insert_front(Name::VIA, local.via(peer));
                if request.headers.contains(&Name::CONTACT) {
                    request.set_header(Name::CONTACT, local.contact(peer));
                }
                Ok(())
            }
            SizeRoute::TooLarge => Err(RequestTooLarge { size }),
        }
    }
}

/// Copies the body and its Content-Type from one message to another.
pub fn copy_body(from: &SipMessage, to: &mut SipMessage) {
    to.remove_header(&Name::CONTENT_TYPE);
    if !from.body.is_empty() {
        if let Some(content_type) = from.header(&Name::CONTENT_TYPE) {
            to.set_header(Name::CONTENT_TYPE, content_type.to_string());
        }
    }
    to.body = from.body.clone();
}
