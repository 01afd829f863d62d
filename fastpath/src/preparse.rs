//! The SIP pre-parser: frames one UDP datagram and pulls out what routing needs (request
//! method or response status, Call-ID, the top Via's branch, CSeq, the To tag that tells
//! an in-dialog request from a new one) without allocating or
//! copying: every field borrows from the datagram. Headers are read lazily, as Kamailio does;
//! everything else is left to the control plane's full parser.

/// Whether the message is a request or a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A request with this method token.
    Request(&'a str),
    /// A response with this status code.
    Response(u16),
}

/// The routing keys of one message, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreParsed<'a> {
    /// Request method or response status.
    pub kind: Kind<'a>,
    /// The Call-ID value.
    pub call_id: &'a str,
    /// The top Via's `branch` parameter, if it has one.
    pub branch: Option<&'a str>,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method.
    pub cseq_method: &'a str,
    /// The To header's `tag` parameter: a request with one belongs to a dialog.
    pub to_tag: Option<&'a str>,
    /// A request carries `Authorization` or `Proxy-Authorization`: it answers a challenge,
    /// so the call it starts is already under way (overload control serves it first).
    pub has_credentials: bool,
    /// Where the body starts (bytes from the start of the datagram).
    pub body_offset: usize,
}

/// Why a datagram is not a SIP message the fast path can route. Most are dropped and
/// counted; the ones [`PreParseError::answerable`] names are requests the control plane
/// still answers with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PreParseError {
    /// No blank line ends the headers.
    #[error("no end of headers")]
    NoHeaderEnd,
    /// A request line, but no blank line ends the headers.
    #[error("request without an end of headers")]
    IncompleteRequest,
    /// The head is not UTF-8 text.
    #[error("header bytes are not text")]
    NotText,
    /// The first line is neither a request line nor a status line.
    #[error("malformed start line")]
    StartLine,
    /// The first line ends in a SIP version, so it is a request line, but its method is
    /// empty or not a token, or its Request-URI is missing or holds whitespace (RFC 4475
    /// §3.1.2.8 `INVITE sip:user@example.com; lr SIP/2.0`).
    #[error("malformed request line")]
    RequestLine,
    /// No Call-ID header (or an empty one).
    #[error("no Call-ID")]
    CallId,
    /// No CSeq, or not `number method`.
    #[error("missing or malformed CSeq")]
    CSeq,
    /// No Via header.
    #[error("no Via")]
    Via,
}

impl PreParseError {
    /// True when the datagram is a request the control plane can still answer with 400
    /// (RFC 3261 §8.2): its request line, Call-ID or CSeq is malformed, but the headers a
    /// response copies may be there. (A datagram starting with `SIP/` is a response and
    /// never answered, whatever the error.)
    pub fn answerable(self) -> bool {
        matches!(
            self,
            PreParseError::RequestLine
                | PreParseError::IncompleteRequest
                | PreParseError::CallId
                | PreParseError::CSeq
        )
    }
}

/// Tokens allowed in a SIP method (RFC 3261 `token`).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                )
        })
}

/// `SIP/` followed by anything: the version itself is the control plane's to judge (it
/// answers a request for another version with 505).
fn is_sip_version(word: &str) -> bool {
    word.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
}

/// The start line, read as tolerantly as the control plane reads it (extra spaces and tabs
/// between and after the parts are accepted, RFC 4475 §3.1.2.9-10).
fn parse_start_line(line: &str) -> Result<Kind<'_>, PreParseError> {
    let mut parts = line.split([' ', '\t']).filter(|p| !p.is_empty());
    let first = parts.next().ok_or(PreParseError::StartLine)?;
    let second = parts.next().ok_or(PreParseError::StartLine)?;
    if is_sip_version(first) {
        let status = second
            .parse::<u16>()
            .ok()
            .filter(|code| second.len() == 3 && (100..=699).contains(code))
            .ok_or(PreParseError::StartLine)?;
        return Ok(Kind::Response(status));
    }
    match (parts.next(), parts.next()) {
        (Some(version), None) if is_token(first) && is_sip_version(version) => {
            Ok(Kind::Request(first))
        }
        _ => Err(malformed_start_line(line)),
    }
}

/// Why a start line that is neither a request line nor a status line was refused: a line
/// that ends in `SIP/2.0` and does not start with a version is a broken request line (an
/// empty method, a method that is not a token, whitespace inside the Request-URI), which
/// the control plane answers with 400 as it answers any request whose head it can read;
/// anything else is not SIP. Off the hot path: only refused lines get here.
fn malformed_start_line(line: &str) -> PreParseError {
    if looks_like_request(line) {
        PreParseError::RequestLine
    } else {
        PreParseError::StartLine
    }
}

/// The control plane's test for a request it may answer although it cannot parse it.
fn looks_like_request(line: &str) -> bool {
    !is_sip_version(line) && line.trim_end_matches([' ', '\t']).ends_with("SIP/2.0")
}

/// Why a datagram without an empty line after its headers was refused: a request (the
/// control plane answers it 400 when it can read the headers) or not.
fn unterminated(data: &[u8]) -> PreParseError {
    let first_end = memchr::memchr(b'\n', data).unwrap_or(data.len());
    match std::str::from_utf8(strip_cr(&data[..first_end])) {
        Ok(line) if looks_like_request(line) => PreParseError::IncompleteRequest,
        _ => PreParseError::NoHeaderEnd,
    }
}

/// The header a line names, by its long or compact name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    CallId,
    Via,
    CSeq,
    To,
    Credentials,
    Other,
}

/// Classifies a header name by its length first: most names are ruled out by one compare.
fn classify(name: &[u8]) -> Wanted {
    match name.len() {
        1 => match name[0] | 0x20 {
            b'i' => Wanted::CallId,
            b'v' => Wanted::Via,
            b't' => Wanted::To,
            _ => Wanted::Other,
        },
        2 if name.eq_ignore_ascii_case(b"to") => Wanted::To,
        3 if name.eq_ignore_ascii_case(b"via") => Wanted::Via,
        4 if name.eq_ignore_ascii_case(b"cseq") => Wanted::CSeq,
        7 if name.eq_ignore_ascii_case(b"call-id") => Wanted::CallId,
        13 if name.eq_ignore_ascii_case(b"authorization") => Wanted::Credentials,
        19 if name.eq_ignore_ascii_case(b"proxy-authorization") => Wanted::Credentials,
        _ => Wanted::Other,
    }
}

/// The first non-empty comma-separated value of a header (commas inside quotes or `<>` do
/// not count).
fn first_value(value: &str) -> Option<&str> {
    // Fast path: no quote or angle bracket before the first comma (a Via never has one).
    match memchr::memchr3(b',', b'"', b'<', value.as_bytes()) {
        None => return Some(value).filter(|v| !v.is_empty()),
        Some(at) if value.as_bytes()[at] == b',' && !trim_lws(&value[..at]).is_empty() => {
            return Some(trim_lws(&value[..at]));
        }
        _ => {}
    }
    let (mut quoted, mut angle, mut escaped, mut start) = (false, false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                let item = trim_lws(&value[start..i]);
                if !item.is_empty() {
                    return Some(item);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    Some(trim_lws(&value[start..])).filter(|item| !item.is_empty())
}

/// The `branch` parameter of a Via value.
fn branch_of(via: &str) -> Option<&str> {
    via.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("branch")
            .then(|| value.trim())
            .filter(|v| !v.is_empty())
    })
}

/// The length of the head (up to the line break before the empty line) and where the body
/// starts. Lines end with CRLF or, tolerated as the control plane does, a bare LF: the head
/// ends at the first `\n\r\n` or `\n\n`, whichever comes first (both found with SIMD).
fn head_end(data: &[u8]) -> Option<(usize, usize)> {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    // Searchers built once: building one costs more than searching a datagram.
    static CRLF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\r\n"));
    static BARE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
    let crlf = CRLF.find(data).map(|at| (at, at + 3));
    let bare = BARE
        .find(&data[..crlf.map_or(data.len(), |(at, _)| at)])
        .map(|at| (at, at + 2));
    match (crlf, bare) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (found, None) | (None, found) => found,
    }
}

/// A line without its trailing carriage return.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A header name without the spaces or tabs before its colon.
fn trim_end_ws(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &name[..end]
}

/// Header lines with their continuation lines folded in, without the line breaks at their
/// ends (a line starting with a space or a tab continues the one before).
struct LogicalLines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for LogicalLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let mut end = 0;
        let line = loop {
            match memchr::memchr(b'\n', &self.rest[end..]) {
                Some(at) => {
                    let next = end + at + 1;
                    if matches!(self.rest.get(next), Some(b' ' | b'\t')) {
                        end = next;
                        continue;
                    }
                    let line = &self.rest[..end + at];
                    self.rest = &self.rest[next..];
                    break line;
                }
                None => break std::mem::take(&mut self.rest),
            }
        };
        Some(strip_cr(line))
    }
}

/// Trims SIP linear white space (spaces, tabs, folded line breaks) at both ends.
fn trim_lws(text: &str) -> &str {
    let lws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|b| !lws(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !lws(b)).map_or(start, |i| i + 1);
    // Both ends are at ASCII bytes, so at character boundaries.
    &text[start..end]
}

/// Pre-parses one datagram.
pub fn preparse(datagram: &[u8]) -> Result<PreParsed<'_>, PreParseError> {
    // Line breaks before the start line are ignored (RFC 3261 §7.5).
    let skip = datagram
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(PreParseError::NoHeaderEnd)?;
    let data = &datagram[skip..];
    let (head_len, body_offset) = head_end(data).ok_or_else(|| unterminated(data))?;
    let head = &data[..head_len];
    let first_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let start =
        std::str::from_utf8(strip_cr(&head[..first_end])).map_err(|_| PreParseError::NotText)?;
    let kind = parse_start_line(start)?;
    let (mut call_id, mut via, mut cseq, mut to) = (None, None, None, None);
    // Credentials matter only in requests: a response is done once the four are found.
    let mut has_credentials = matches!(kind, Kind::Response(_));
    // Lazily, as Kamailio does: stop once the wanted headers are found.
    let mut lines = LogicalLines {
        rest: head.get(first_end + 1..).unwrap_or_default(),
    };
    while call_id.is_none() || via.is_none() || cseq.is_none() || to.is_none() || !has_credentials {
        let Some(line) = lines.next() else {
            break;
        };
        // A malformed line is the control plane's to judge (it answers 400): skip it here.
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let wanted = classify(trim_end_ws(&line[..colon]));
        if wanted == Wanted::Other {
            continue;
        }
        if wanted == Wanted::Credentials {
            has_credentials = true;
            continue;
        }
        let Ok(value) = std::str::from_utf8(&line[colon + 1..]) else {
            continue;
        };
        let value = trim_lws(value);
        match wanted {
            Wanted::CallId if call_id.is_none() => call_id = Some(value),
            Wanted::Via if via.is_none() => via = first_value(value),
            Wanted::CSeq if cseq.is_none() => cseq = Some(value),
            Wanted::To if to.is_none() => to = Some(value),
            _ => {}
        }
    }
    let body_offset = skip + body_offset;
    let call_id = call_id
        .filter(|v| !v.is_empty())
        .ok_or(PreParseError::CallId)?;
    let (number, method) = cseq
        .and_then(|v| {
            let mut words = v.split([' ', '\t', '\r', '\n']).filter(|w| !w.is_empty());
            let number = words.next()?.parse::<u32>().ok()?;
            let method = words.next().filter(|m| is_token(m))?;
            words.next().is_none().then_some((number, method))
        })
        .ok_or(PreParseError::CSeq)?;
    // Content-Length, like the version, is checked by the control plane (it answers 400).
    let via = via.ok_or(PreParseError::Via)?;
    Ok(PreParsed {
        kind,
        call_id,
        branch: branch_of(via),
        cseq: number,
        cseq_method: method,
        to_tag: to.and_then(tag_of),
        has_credentials: has_credentials && matches!(kind, Kind::Request(_)),
        body_offset,
    })
}

/// The `tag` parameter of a From/To value: parameters follow the `>` of a name-addr
/// (`"A <b>" <sip:x@h>;tag=1`), or the URI of a bare addr-spec (`sip:x@h;tag=1`).
fn tag_of(value: &str) -> Option<&str> {
    let params = match angle_close(value) {
        Some(close) => &value[close + 1..],
        None => &value[value.find(';')?..],
    };
    // A `tag` without a value is still a tag (empty), as the full parser reads it.
    params.split(';').find_map(|param| {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        trim_lws(name)
            .eq_ignore_ascii_case("tag")
            .then(|| trim_lws(value))
    })
}

/// Where the `>` closing a name-addr's URI is (quoted display names skipped).
fn angle_close(value: &str) -> Option<usize> {
    let (mut quoted, mut escaped, mut open) = (false, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => open = true,
            '>' if !quoted && open => return Some(i),
            _ => {}
        }
    }
    None
}

/// Which of `shards` queues a Call-ID belongs to (FNV-1a): every message of a call goes to
/// the same control-plane shard.
pub fn shard_of(call_id: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in call_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:201@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKabc, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKold\r\n\
Via: SIP/2.0/UDP 10.0.0.8;branch=z9hG4bKolder\r\n\
From: \"A, B\" <sip:204@example.com>;tag=1\r\nTo: <sip:201@example.com>\r\n\
Call-ID: a84b4c76e66710@pc33\r\nCSeq: 314159 INVITE\r\nContent-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn a_request_gives_its_keys() {
        let parsed = preparse(INVITE.as_bytes()).unwrap();
        assert_eq!(parsed.kind, Kind::Request("INVITE"));
        assert_eq!(parsed.call_id, "a84b4c76e66710@pc33");
        assert_eq!(parsed.branch, Some("z9hG4bKabc"));
        assert_eq!((parsed.cseq, parsed.cseq_method), (314159, "INVITE"));
        assert_eq!(parsed.to_tag, None, "a new INVITE");
        assert!(!parsed.has_credentials);
        let answered = INVITE.replace("CSeq:", "proxy-AUTHORIZATION: Digest x\r\nCSeq:");
        assert!(preparse(answered.as_bytes()).unwrap().has_credentials);
        assert_eq!(&INVITE.as_bytes()[parsed.body_offset..], b"v=0\n");
    }

    #[test]
    fn the_to_tag_in_every_form() {
        for (to, tag) in [
            ("To: <sip:201@h>;tag=abc", Some("abc")),
            ("t: sip:201@h;TAG = x1", Some("x1")),
            (
                "To: \"A <b>;tag=no\" <sip:201@h;tag=no>;tag=yes",
                Some("yes"),
            ),
            ("To: \"q \\\" ;tag=no\" <sip:201@h>", None),
            ("To: <sip:201@h>", None),
            ("To: sip:201@h", None),
        ] {
            let text = format!("BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n{to}\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n\r\n");
            assert_eq!(preparse(text.as_bytes()).unwrap().to_tag, tag, "{to}");
        }
    }

    #[test]
    fn compact_names_folding_and_odd_spacing() {
        let text = "SIP/2.0 180 Ringing\r\nv : SIP/2.0/UDP h;BRANCH = z9hG4bK1\r\n\
i:\r\n  folded-id\r\ncseq:\t7\r\n INVITE\r\nl: 0\r\n\r\n";
        let parsed = preparse(text.as_bytes()).unwrap();
        assert_eq!(parsed.kind, Kind::Response(180));
        assert_eq!(parsed.call_id, "folded-id");
        assert_eq!(parsed.branch, Some("z9hG4bK1"));
        assert_eq!((parsed.cseq, parsed.cseq_method), (7, "INVITE"));
    }

    #[test]
    fn broken_datagrams_are_named() {
        let cases: &[(&str, PreParseError)] = &[
            (
                "INVITE sip:x SIP/2.0\r\nCall-ID: a\r\n",
                PreParseError::IncompleteRequest,
            ),
            (
                "SIP/2.0 200 OK\r\nCall-ID: a\r\n",
                PreParseError::NoHeaderEnd,
            ),
            ("hello\r\n", PreParseError::NoHeaderEnd),
            ("HELLO\r\n\r\n", PreParseError::StartLine),
            ("SIP/2.0 99 Low\r\n\r\n", PreParseError::StartLine),
            ("INVITE sip:x HTTP/1.1\r\n\r\n", PreParseError::StartLine),
            (
                "INVITE sip:x SIP/2.0 extra\r\n\r\n",
                PreParseError::StartLine,
            ),
            (
                "INVITE sip:x SIP/2.0\r\nVia: a\r\nCSeq: 1 INVITE\r\n\r\n",
                PreParseError::CallId,
            ),
            (
                "INVITE sip:x SIP/2.0\r\nVia: a\r\nCall-ID: x\r\nCSeq: one INVITE\r\n\r\n",
                PreParseError::CSeq,
            ),
            (
                "INVITE sip:x SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n",
                PreParseError::Via,
            ),
        ];
        for (text, error) in cases {
            assert_eq!(preparse(text.as_bytes()), Err(*error), "{text:?}");
        }
        assert_eq!(
            preparse(b"INVITE \xff\r\n\r\n"),
            Err(PreParseError::NotText)
        );
    }

    #[test]
    fn broken_request_lines_are_told_from_garbage() {
        // RFC 4475 §3.1.2.8 (whitespace in the Request-URI), an empty method, a method that
        // is not a token, a missing Request-URI: requests the control plane answers 400.
        for line in [
            "INVITE sip:user@example.com; lr SIP/2.0",
            " sip:x SIP/2.0",
            "\tsip:x SIP/2.0",
            "IN<VITE sip:x SIP/2.0",
            "INVITE SIP/2.0",
        ] {
            let text = format!("{line}\r\nVia: a;branch=b\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n");
            let error = preparse(text.as_bytes()).unwrap_err();
            assert_eq!(error, PreParseError::RequestLine, "{line:?}");
            assert!(error.answerable());
        }
        for line in [
            "hello world",
            "SIP/2.0 sip:x SIP/2.0",
            "INVITE sip:x SIP/2.0 extra",
        ] {
            let text = format!("{line}\r\n\r\n");
            let error = preparse(text.as_bytes()).unwrap_err();
            assert_eq!(error, PreParseError::StartLine, "{line:?}");
            assert!(!error.answerable());
        }
    }

    #[test]
    fn what_the_control_plane_answers_is_passed_on() {
        // Another version (505), a short body (400), blank lines first, spaces: all keyed.
        let text =
            "\r\nINVITE  sip:x  SIP/7.0 \r\nVia: a;branch=b\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\
Content-Length: 9\r\n\r\nabc";
        let parsed = preparse(text.as_bytes()).unwrap();
        assert_eq!(
            (parsed.kind, parsed.call_id),
            (Kind::Request("INVITE"), "x")
        );
    }

    #[test]
    fn no_input_panics() {
        let bytes = INVITE.as_bytes();
        for cut in 0..bytes.len() {
            let _ = preparse(&bytes[..cut]);
            let mut flipped = bytes.to_vec();
            flipped[cut] ^= 0x20;
            let _ = preparse(&flipped);
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("abc", 4), shard_of("abc", 4));
        let mut used = [false; 4];
        for i in 0..64 {
            used[shard_of(&format!("call-{i}"), 4)] = true;
        }
        assert!(used.iter().all(|&u| u));
        assert_eq!(shard_of("x", 0), 0);
    }
}
