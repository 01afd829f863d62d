//! Checks a UAS/registrar/B2BUA makes before handling a message, and the RFC answer for each
//! failure (RFC 3261 §8.2, §16.3; dispositions of RFC 4475 and RFC 5118).

use super::message::{canonicalize_value, starts_with_ignore_case, NameAddrValue, QuoteTracker};
use super::message::{sip_uri_user, ParseError, RequestUri, SipMessage, StartLine, StatusLine};
use crate::sip::headers::Headers;
use bytes::Bytes;
use bytesstr::BytesStr;
use ezk_sip_types::{Method, Name};

/// What the gateway implements, for validation and for Allow/Accept/Supported headers.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Methods accepted (the Allow header).
    pub methods: &'static [&'static str],
    /// Option tags understood (the Supported header; a Require outside it gets 420).
    pub extensions: &'static [&'static str],
    /// Body types understood (the Accept header).
    pub content_types: &'static [&'static str],
}

/// The gateway's capabilities today.
pub const DEFAULT_CAPABILITIES: Capabilities = Capabilities {
    methods: &[
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "INFO",
        "UPDATE",
        "SUBSCRIBE",
    ],
    // RFC 3891: a pickup INVITE (a BLF key's) may require it.
    extensions: &["replaces"],
    content_types: &["application/sdp"],
};

/// Methods defined by RFCs; others are "unknown" and get 501 (RFC 3261 §8.2.1).
const KNOWN_METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
];

/// A request refused before it reaches a handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Status code.
    pub code: u16,
    /// Reason phrase naming the problem, e.g. "Bad Request (missing Call-ID)".
    pub reason: String,
    /// Headers the RFC asks for with this status (Unsupported, Allow, Accept).
    pub headers: Vec<(Name, String)>,
}

impl Rejection {
    fn new(code: u16, reason: impl Into<String>) -> Rejection {
        Rejection {
            code,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    fn bad_request(detail: impl std::fmt::Display) -> Rejection {
        Rejection::new(400, format!("Bad Request ({detail})"))
    }

    fn with(mut self, name: Name, value: String) -> Rejection {
        self.headers.push((name, value));
        self
    }

    /// The response to send for `request`.
    pub fn to_response(&self, request: &SipMessage) -> SipMessage {
        let mut response = request.response(self.code, &self.reason, Some(&super::ids::tag()));
        for (name, value) in &self.headers {
            response.add_header(name.clone(), value.clone());
        }
        response
    }
}

/// Why a response is dropped instead of processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// A mandatory header is missing or malformed, or repeated.
    #[error("malformed response: {0}")]
    Malformed(String),
}

const MAX_CSEQ: u32 = (1 << 31) - 1;

/// False for list values with empty elements or empty parameters (`;;`, `,,`, a trailing
/// `;`), which RFC 4475 §3.1.2.1 says make the message invalid.
fn well_formed_list(value: &str) -> bool {
    // The value with whitespace dropped and each quoted string standing for one token,
    // scanned once: no two separators in a row, none first or last.
    let is_separator = |c: char| matches!(c, ';' | ',');
    let (mut quotes, mut first, mut last) = (QuoteTracker::default(), None, None);
    for c in value.chars() {
        let token = if quotes.inside(c) {
            if quotes.is_open() {
                continue;
            }
            'q' // a whole quoted string stands for one token
        } else if c.is_whitespace() {
            continue;
        } else {
            c
        };
        if last.is_some_and(is_separator) && is_separator(token) {
            return false;
        }
        first.get_or_insert(token);
        last = Some(token);
    }
    !quotes.is_open() && !first.is_some_and(is_separator) && !last.is_some_and(is_separator)
}

fn mandatory_headers(msg: &SipMessage) -> Result<(), String> {
    if msg.header_count(&Name::VIA) == 0 {
        return Err("missing Via".into());
    }
    let vias_well_formed = msg
        .raw_values(&Name::VIA)
        .all(|v| well_formed_list(v.as_str()));
    if !vias_well_formed || msg.top_via().is_none() {
        return Err("malformed Via".into());
    }
    let contacts_well_formed = msg
        .raw_values(&Name::CONTACT)
        .all(|v| well_formed_list(v.as_str()));
    if !contacts_well_formed || (msg.header_count(&Name::CONTACT) > 0 && msg.contacts().is_none()) {
        return Err("malformed Contact".into());
    }
    for (name, label) in [(Name::FROM, "From"), (Name::TO, "To")] {
        match msg.header(&name) {
            None => return Err(format!("missing {label}")),
            Some(value) if !NameAddrValue::is_valid(value) => {
                return Err(format!("malformed {label}"))
            }
            Some(_) => {}
        }
    }
    match msg.call_id() {
        None => return Err("missing Call-ID".into()),
        Some(id) if id.trim().is_empty() || id.contains(char::is_whitespace) => {
            return Err("malformed Call-ID".into())
        }
        Some(_) => {}
    }
    if let Some(repeated) = msg.repeated_single_value_header() {
        return Err(format!("multiple {repeated} values"));
    }
    if msg.header_count(&Name::CSEQ) == 0 {
        return Err("missing CSeq".into());
    }
    match msg.cseq() {
        None => return Err("malformed CSeq".into()),
        Some(cseq) if cseq.cseq > MAX_CSEQ => return Err("CSeq number too large".into()),
        Some(_) => {}
    }
    Ok(())
}

fn token_in(list: &[&str], token: &str) -> bool {
    list.iter().any(|t| t.eq_ignore_ascii_case(token))
}

/// Checks a request; the Err is the response to send instead of handling it.
pub fn validate_request(msg: &SipMessage, caps: &Capabilities) -> Result<(), Rejection> {
    let StartLine::Request(line) = &msg.start else {
        return Ok(());
    };
    if line.version != "SIP/2.0" {
        return Err(Rejection::new(505, "Version Not Supported"));
    }
    mandatory_headers(msg).map_err(Rejection::bad_request)?;
    let method = line.method.to_string();
    let cseq = msg.cseq().expect("checked by mandatory_headers");
    if !token_in(&KNOWN_METHODS, &method) && !token_in(caps.methods, &method) {
        return Err(
            Rejection::new(501, "Not Implemented").with(Name::ALLOW, caps.methods.join(", "))
        );
    }
    if cseq.method != line.method {
        return Err(Rejection::bad_request(
            "CSeq method does not match the request",
        ));
    }
    match msg.max_forwards() {
        Some(Err(())) => return Err(Rejection::bad_request("malformed Max-Forwards")),
        Some(Ok(hops)) if hops > 255 => {
            return Err(Rejection::bad_request("Max-Forwards above 255"))
        }
        _ => {}
    }
    // RFC 3261 §8.2.1: a known method we do not implement is 405, before header checks.
    if !token_in(caps.methods, &method) {
        return Err(
            Rejection::new(405, "Method Not Allowed").with(Name::ALLOW, caps.methods.join(", "))
        );
    }
    if let Some(expires) = msg.header(&Name::EXPIRES) {
        if expires.trim().parse::<u32>().is_err() {
            return Err(Rejection::bad_request("malformed Expires"));
        }
    }
    if let RequestUri::Other { scheme, .. } = &line.uri {
        return Err(Rejection::new(
            416,
            format!("Unsupported URI Scheme ({scheme})"),
        ));
    }
    let is_ack_or_cancel = line.method == Method::ACK || line.method == Method::CANCEL;
    if !is_ack_or_cancel {
        let unsupported: Vec<String> = [Name::REQUIRE, Name::PROXY_REQUIRE]
            .iter()
            .flat_map(|name| msg.option_tags(name))
            .filter(|tag| !token_in(caps.extensions, tag))
            .collect();
        if !unsupported.is_empty() {
            return Err(Rejection::new(420, "Bad Extension")
                .with(Name::UNSUPPORTED, unsupported.join(", ")));
        }
    }
    let for_the_gateway = line.method == Method::REGISTER
        || (line.method == Method::OPTIONS
            && matches!(&line.uri, RequestUri::Sip(uri) if sip_uri_user(uri.uri()).is_none()));
    if msg.max_forwards() == Some(Ok(0)) && !for_the_gateway && !is_ack_or_cancel {
        return Err(Rejection::new(483, "Too Many Hops"));
    }
    check_body(msg, caps)?;
    if line.method == Method::INVITE {
        check_accept(msg, caps)?;
    }
    Ok(())
}

fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn check_body(msg: &SipMessage, caps: &Capabilities) -> Result<(), Rejection> {
    if msg.body.is_empty() {
        return Ok(());
    }
    let accept = || caps.content_types.join(", ");
    let Some(content_type) = msg.header(&Name::CONTENT_TYPE) else {
        return Err(Rejection::bad_request("body without Content-Type"));
    };
    let kind = media_type(content_type);
    if token_in(caps.content_types, &kind) {
        return Ok(());
    }
    // A multipart body is acceptable when one of its parts is a type we understand.
    if kind.starts_with("multipart/") {
        let body = String::from_utf8_lossy(&msg.body).to_ascii_lowercase();
        if caps
            .content_types
            .iter()
            .any(|t| body.contains(&format!("content-type: {t}")))
        {
            return Ok(());
        }
    }
    Err(Rejection::new(415, "Unsupported Media Type").with(Name::ACCEPT, accept()))
}

/// 406 when the request's Accept rules out every body type we could answer with.
fn check_accept(msg: &SipMessage, caps: &Capabilities) -> Result<(), Rejection> {
    let accepted = msg.header_list(&Name::ACCEPT);
    if accepted.is_empty() {
        return Ok(());
    }
    let acceptable = accepted.iter().map(|a| media_type(a)).any(|a| {
        a == "*/*"
            || token_in(caps.content_types, &a)
            || caps
                .content_types
                .iter()
                .any(|t| a.ends_with("/*") && t.starts_with(&a[..a.len() - 1]))
    });
    if acceptable {
        Ok(())
    } else {
        Err(Rejection::new(406, "Not Acceptable").with(Name::ACCEPT, caps.content_types.join(", ")))
    }
}

/// Checks a response; malformed ones are dropped (RFC 4475 §3.1.2.5, §3.1.2.19).
pub fn validate_response(msg: &SipMessage) -> Result<(), DropReason> {
    if let StartLine::Response(StatusLine { version, .. }) = &msg.start {
        if version != "SIP/2.0" {
            return Err(DropReason::Malformed(format!("version {version}")));
        }
    }
    mandatory_headers(msg).map_err(DropReason::Malformed)
}

/// Header lines of a message that failed to parse: unfolded, with compact names expanded.
fn raw_headers(text: &str) -> Vec<(Name, String)> {
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or(text)
        .split("\n\n")
        .next()
        .unwrap_or(text);
    let mut lines: Vec<String> = Vec::new();
    for line in head.split('\n').skip(1) {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            lines.push(line.to_string());
        }
    }
    lines
        .iter()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(super::message::is_token_byte) {
                return None;
            }
            Some((Name::from(name.to_string()), canonicalize_value(value)))
        })
        .collect()
}

/// For a request that could not be parsed, a best-effort 400 naming the problem when the
/// headers needed to answer (Via, From, To, Call-ID, CSeq) can be recovered; None means
/// drop it.
pub fn reject_unparseable(bytes: &[u8], error: &ParseError) -> Option<SipMessage> {
    if matches!(error, ParseError::NotUtf8) && std::str::from_utf8(bytes).is_err() {
        // Only the head must be text; find it and retry on that part.
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        std::str::from_utf8(&bytes[..end]).ok()?;
    }
    answer_raw_request(bytes, 400, &format!("Bad Request ({})", reason_for(error)))
}

/// [`reject_unparseable`] for a datagram: the answer is never larger than the request, as
/// anyone can send a broken request over UDP from a forged address and the gateway must
/// not amplify it. When the reason's detail makes the answer too large it is plain
/// "Bad Request"; when even that is larger (a small request of compact header names),
/// None: nothing is sent. (Over TCP the handshake proved the source: the framer answers
/// with [`reject_unparseable`].)
pub fn reject_unparseable_datagram(bytes: &[u8], error: &ParseError) -> Option<SipMessage> {
    let fits = |answer: &SipMessage| answer.encoded_len() <= bytes.len();
    let mut answer = reject_unparseable(bytes, error)?;
    if !fits(&answer) {
        if let StartLine::Response(line) = &mut answer.start {
            line.reason = "Bad Request".into();
        }
    }
    fits(&answer).then_some(answer)
}

/// A stateless answer (`code`, `reason`) to a request that could not be parsed (or not
/// read whole), built from the raw lines of its head: the Via, From, To, Call-ID and CSeq
/// values copied, a To tag added. None when the bytes are a response, an ACK (never
/// answered), not SIP, or lack one of those headers.
pub fn answer_raw_request(bytes: &[u8], code: u16, reason: &str) -> Option<SipMessage> {
    let text = String::from_utf8_lossy(bytes);
    let first = text.lines().next()?.trim();
    if starts_with_ignore_case(first, "SIP/") || !first.ends_with("SIP/2.0") {
        return None; // a response, or not SIP at all
    }
    let method = first.split_whitespace().next()?;
    if method.eq_ignore_ascii_case("ACK") {
        return None; // never answer an ACK
    }
    let headers = raw_headers(&text);
    let get = |wanted: &Name| -> Vec<&String> {
        headers
            .iter()
            .filter(|(name, _)| name == wanted)
            .map(|(_, value)| value)
            .collect()
    };
    let mut response = Headers::new();
    for name in [Name::VIA, Name::FROM, Name::TO, Name::CALL_ID, Name::CSEQ] {
        let values = get(&name);
        if values.is_empty() {
            return None;
        }
        for value in values {
            let value = if name == Name::TO && !value.contains("tag=") {
                format!("{value};tag={}", super::ids::tag())
            } else {
                value.clone()
            };
            response.insert(name.clone(), BytesStr::from(value));
        }
    }
    Some(SipMessage {
        start: StartLine::Response(StatusLine {
            code,
            reason: reason.to_string(),
            version: "SIP/2.0".into(),
        }),
        headers: response,
        body: Bytes::new(),
    })
}

fn reason_for(error: &ParseError) -> String {
    let text = match error {
        ParseError::BodyTruncated { .. } => "Content-Length larger than body".to_string(),
        ParseError::ContentLength(detail) => format!("invalid Content-Length {detail}"),
        ParseError::RequestLine { problem, .. } => (*problem).to_string(),
        other => other.to_string(),
    };
    // A reason phrase cannot hold CR/LF.
    text.replace(['\r', '\n'], " ").chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SipMessage {
        SipMessage::parse_datagram(text.as_bytes()).unwrap()
    }

    const BASE: &str = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: x\r\n";

    fn check(text: &str) -> Result<(), Rejection> {
        validate_request(&parse(text), &DEFAULT_CAPABILITIES)
    }

    #[test]
    fn each_rule_gives_its_status() {
        let ok = format!("OPTIONS sip:b@h SIP/2.0\r\n{BASE}CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n");
        assert_eq!(check(&ok), Ok(()));
        let missing = format!(
            "OPTIONS sip:b@h SIP/2.0\r\n{}CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n",
            BASE.replace("Call-ID: x\r\n", "")
        );
        assert_eq!(
            check(&missing).unwrap_err().reason,
            "Bad Request (missing Call-ID)"
        );
        let version = ok.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia");
        assert_eq!(check(&version).unwrap_err().code, 505);
        let tel = ok.replace("OPTIONS sip:b@h", "OPTIONS tel:+1234");
        assert_eq!(check(&tel).unwrap_err().code, 416);
        let require = ok.replace("l: 0", "Require: foo, bar\r\nl: 0");
        let err = check(&require).unwrap_err();
        assert_eq!(err.code, 420);
        assert_eq!(err.headers, [(Name::UNSUPPORTED, "foo, bar".to_string())]);
        let hops = format!(
            "INVITE sip:b@h SIP/2.0\r\n{BASE}CSeq: 1 INVITE\r\nMax-Forwards: 0\r\nl: 0\r\n\r\n"
        );
        assert_eq!(check(&hops).unwrap_err().code, 483);
        let unknown = format!("FOO sip:b@h SIP/2.0\r\n{BASE}CSeq: 1 FOO\r\nl: 0\r\n\r\n");
        let err = check(&unknown).unwrap_err();
        assert_eq!(err.code, 501);
        assert_eq!(err.headers[0].0, Name::ALLOW);
        let mismatch = format!("INVITE sip:b@h SIP/2.0\r\n{BASE}CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n");
        assert_eq!(check(&mismatch).unwrap_err().code, 400);
        let media = format!(
            "INVITE sip:b@h SIP/2.0\r\n{BASE}CSeq: 1 INVITE\r\nc: text/plain\r\nl: 2\r\n\r\nhi"
        );
        assert_eq!(check(&media).unwrap_err().code, 415);
        let accept = format!("INVITE sip:b@h SIP/2.0\r\n{BASE}CSeq: 1 INVITE\r\nAccept: text/nonsense\r\nl: 0\r\n\r\n");
        assert_eq!(check(&accept).unwrap_err().code, 406);
    }

    #[test]
    fn broken_request_lines_get_a_400_naming_the_problem() {
        let rest = format!("{BASE}CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
        for (line, problem) in [
            // RFC 4475 §3.1.2.8 (lwsruri)
            (
                "INVITE sip:user@example.com; lr SIP/2.0",
                "whitespace in the Request-URI",
            ),
            (" sip:x SIP/2.0", "empty method"),
            ("sip:x SIP/2.0", "empty method"),
            ("INVITE SIP/2.0", "no Request-URI"),
            ("IN<VITE sip:x SIP/2.0", "method is not a token"),
        ] {
            let text = format!("{line}\r\n{rest}");
            let error = SipMessage::parse_datagram(text.as_bytes()).unwrap_err();
            let answer = reject_unparseable(text.as_bytes(), &error)
                .unwrap_or_else(|| panic!("{line:?}: {error} not answered"));
            assert!(
                matches!(&answer.start, StartLine::Response(l)
                    if l.code == 400 && l.reason == format!("Bad Request ({problem})")),
                "{line:?}: {:?}",
                answer.start
            );
        }
        // The RFC 4475 message itself, over UDP: the answer fits with its detail.
        let lwsruri = include_bytes!("../../tests/fixtures/rfc4475/lwsruri.dat");
        let error = SipMessage::parse_datagram(lwsruri).unwrap_err();
        let answer = reject_unparseable_datagram(lwsruri, &error).unwrap();
        assert!(matches!(&answer.start, StartLine::Response(l)
            if l.reason == "Bad Request (whitespace in the Request-URI)"));
    }

    #[test]
    fn answers_to_broken_requests_are_never_larger_than_them() {
        // Compact names and a bare To: the answer spells the names out and adds a tag.
        let (mut detailed, mut plain, mut silent) = (0, 0, 0);
        for pad in 0..120 {
            let text = format!(
                "INVITE sip:a; b SIP/2.0\r\nv:SIP/2.0/UDP h\r\nf:<sip:a@h>;tag=1\r\nt:<sip:b@h>\r\n\
i:x\r\nCSeq:1 INVITE\r\nX:{}\r\n\r\n",
                "p".repeat(pad)
            );
            let error = SipMessage::parse_datagram(text.as_bytes()).unwrap_err();
            match reject_unparseable_datagram(text.as_bytes(), &error) {
                None => silent += 1,
                Some(answer) => {
                    assert!(answer.encoded_len() <= text.len(), "{pad}");
                    assert_eq!(answer.encoded_len(), answer.to_bytes().len());
                    match &answer.start {
                        StartLine::Response(l) if l.reason == "Bad Request" => plain += 1,
                        _ => detailed += 1,
                    }
                }
            }
        }
        assert!(
            detailed > 0 && plain > 0 && silent > 0,
            "{detailed} {plain} {silent}"
        );
    }

    #[test]
    fn unparseable_requests_get_400_when_answerable() {
        let text = format!(
            "INVITE sip:b@h SIP/2.0\r\n{BASE}CSeq: 1 INVITE\r\nContent-Length: 50\r\n\r\nshort"
        );
        let error = SipMessage::parse_datagram(text.as_bytes()).unwrap_err();
        let response = reject_unparseable(text.as_bytes(), &error).unwrap();
        assert_eq!(response.status(), Some(400));
        assert!(response.to_header().unwrap().tag().is_some());
        assert!(reject_unparseable(b"\x01\x02garbage", &ParseError::Incomplete).is_none());
        let response_text = "SIP/2.0 200 OK\r\nContent-Length: 50\r\n\r\n";
        assert!(reject_unparseable(response_text.as_bytes(), &ParseError::Incomplete).is_none());
    }
}
