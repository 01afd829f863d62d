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

/// Where `byte` first occurs in `haystack`. On x86-64 this calls memchr's SSE2 routine
/// directly: `memchr::memchr` picks AVX2 at run time through a function pointer, which on
/// header-sized haystacks costs more than the search itself.
#[inline]
fn find_byte(byte: u8, haystack: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(finder) = memchr::arch::x86_64::sse2::memchr::One::new(byte) {
        return finder.find(haystack);
    }
    memchr::memchr(byte, haystack)
}

/// Where any of three bytes first occurs in `haystack` (SSE2 directly, as [`find_byte`]).
#[inline]
fn find_any3(bytes: [u8; 3], haystack: &[u8]) -> Option<usize> {
    let [a, b, c] = bytes;
    #[cfg(target_arch = "x86_64")]
    if let Some(finder) = memchr::arch::x86_64::sse2::memchr::Three::new(a, b, c) {
        return finder.find(haystack);
    }
    memchr::memchr3(a, b, c, haystack)
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

/// The words of `text`: the runs of bytes between the ones `blank` names (which are ASCII,
/// so every word is text too).
struct Words<'a, F> {
    rest: &'a str,
    blank: F,
}

impl<'a, F: Fn(u8) -> bool> Iterator for Words<'a, F> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.rest.as_bytes();
        let start = bytes.iter().position(|&b| !(self.blank)(b))?;
        let end = bytes[start..]
            .iter()
            .position(|&b| (self.blank)(b))
            .map_or(bytes.len(), |len| start + len);
        let word = &self.rest[start..end];
        self.rest = &self.rest[end..];
        Some(word)
    }
}

/// The start line, read as tolerantly as the control plane reads it (extra spaces and tabs
/// between and after the parts are accepted, RFC 4475 §3.1.2.9-10).
fn parse_start_line(line: &str) -> Result<Kind<'_>, PreParseError> {
    let mut parts = Words {
        rest: line,
        blank: |b| b == b' ' || b == b'\t',
    };
    let first = parts.next().ok_or(PreParseError::StartLine)?;
    let second = parts.next().ok_or(PreParseError::StartLine)?;
    if is_sip_version(first) {
        // Three digits, 100 to 699.
        return match *second.as_bytes() {
            [hundreds @ b'1'..=b'6', tens @ b'0'..=b'9', units @ b'0'..=b'9'] => {
                Ok(Kind::Response(
                    u16::from(hundreds - b'0') * 100
                        + u16::from(tens - b'0') * 10
                        + u16::from(units - b'0'),
                ))
            }
            _ => Err(PreParseError::StartLine),
        };
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
    let first_end = find_byte(b'\n', data).unwrap_or(data.len());
    match std::str::from_utf8(strip_cr(&data[..first_end])) {
        Ok(line) if looks_like_request(line) => PreParseError::IncompleteRequest,
        _ => PreParseError::NoHeaderEnd,
    }
}

/// A header the pre-parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    CallId,
    Via,
    CSeq,
    To,
    Credentials,
}

/// The names the pre-parser reads (long and compact) that start with this byte: most lines
/// are ruled out by their first byte, the others by comparing one or two names.
fn names_starting(first: u8) -> &'static [(&'static [u8], Wanted)] {
    match first.to_ascii_lowercase() {
        b'c' => &[(b"cseq", Wanted::CSeq), (b"call-id", Wanted::CallId)],
        b'i' => &[(b"i", Wanted::CallId)],
        b'v' => &[(b"v", Wanted::Via), (b"via", Wanted::Via)],
        b't' => &[(b"t", Wanted::To), (b"to", Wanted::To)],
        b'a' => &[(b"authorization", Wanted::Credentials)],
        b'p' => &[(b"proxy-authorization", Wanted::Credentials)],
        _ => &[],
    }
}

/// The header a line names, if the pre-parser reads it, and the value after its colon. The
/// name is what precedes the first colon, less the spaces and tabs before it; case does
/// not matter.
fn wanted(line: &[u8]) -> Option<(Wanted, &[u8])> {
    names_starting(*line.first()?)
        .iter()
        .find_map(|&(name, which)| {
            let (head, rest) = line.split_at_checked(name.len())?;
            if !head.eq_ignore_ascii_case(name) {
                return None;
            }
            let colon = rest.iter().position(|&b| b != b' ' && b != b'\t')?;
            (rest[colon] == b':').then(|| (which, &rest[colon + 1..]))
        })
}

/// The first non-empty comma-separated value of a header (commas inside quotes or `<>` do
/// not count).
fn first_value(value: &str) -> Option<&str> {
    // Fast path: no quote or angle bracket before the first comma (a Via never has one).
    match find_any3([b',', b'"', b'<'], value.as_bytes()) {
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

/// `text` split at the first `byte` (an ASCII one, so both halves are text).
fn split_once_at(text: &str, byte: u8) -> Option<(&str, &str)> {
    let at = find_byte(byte, text.as_bytes())?;
    Some((&text[..at], &text[at + 1..]))
}

/// The `;`-separated pieces of a value, as `str::split(';')` gives them but found with
/// `memchr`.
struct Pieces<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        Some(match split_once_at(rest, b';') {
            Some((piece, after)) => {
                self.rest = Some(after);
                piece
            }
            None => self.rest.take()?,
        })
    }
}

/// The `branch` parameter of a Via value.
fn branch_of(via: &str) -> Option<&str> {
    Pieces { rest: Some(via) }.skip(1).find_map(|param| {
        let (name, value) = split_once_at(param, b'=')?;
        name.trim()
            .eq_ignore_ascii_case("branch")
            .then(|| value.trim())
            .filter(|v| !v.is_empty())
    })
}

/// A line without its trailing carriage return.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where the body starts if the line break at `nl` ends the head, that is if an empty line
/// follows it: CRLF or, tolerated as the control plane does, a bare LF.
fn body_after(data: &[u8], nl: usize) -> Option<usize> {
    match data.get(nl + 1..) {
        Some([b'\n', ..]) => Some(nl + 2),
        Some([b'\r', b'\n', ..]) => Some(nl + 3),
        _ => None,
    }
}

/// Where the header line starting at `start` ends (the `\n` after it), its continuation
/// lines included: a line starting with a space or a tab continues the one before.
fn line_end(data: &[u8], start: usize) -> Option<usize> {
    let mut from = start;
    loop {
        let nl = from + find_byte(b'\n', data.get(from..)?)?;
        if !matches!(data.get(nl + 1), Some(b' ' | b'\t')) {
            return Some(nl);
        }
        from = nl + 1;
    }
}

/// Frames the head in one pass: walks the header lines after the start line (which ends
/// with the `\n` at `first_end`), hands each to `visit` (continuation lines folded in, the
/// final line break left out) until `visit` returns false, and returns where the body
/// starts, or None if no empty line ends the head. The head ends at the first line break
/// followed by an empty line, so the lines after `visit` is done are still walked.
fn frame<'a>(
    data: &'a [u8],
    first_end: usize,
    mut visit: impl FnMut(&'a [u8]) -> bool,
) -> Option<usize> {
    let (mut nl, mut visiting) = (first_end, true);
    loop {
        if let Some(body) = body_after(data, nl) {
            return Some(body);
        }
        let start = nl + 1;
        nl = line_end(data, start)?;
        if visiting {
            visiting = visit(strip_cr(&data[start..nl]));
        }
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
    let first_end = find_byte(b'\n', data).ok_or_else(|| unterminated(data))?;
    let kind = std::str::from_utf8(strip_cr(&data[..first_end]))
        .map_err(|_| PreParseError::NotText)
        .and_then(parse_start_line);
    let kind = match kind {
        Ok(kind) => kind,
        // A datagram whose head does not end is refused as such, whatever its first line.
        Err(_) if frame(data, first_end, |_| false).is_none() => return Err(unterminated(data)),
        Err(error) => return Err(error),
    };
    let (mut call_id, mut via, mut cseq, mut to) = (None, None, None, None);
    // Credentials matter only in requests: a response is done once the four are found.
    let mut has_credentials = matches!(kind, Kind::Response(_));
    // Lazily, as Kamailio does: stop reading once the wanted headers are found.
    let body_offset = frame(data, first_end, |line| {
        // A malformed line is the control plane's to judge (it answers 400): skip it here.
        if let Some((wanted, value)) = wanted(line) {
            let slot = match wanted {
                Wanted::Credentials => {
                    has_credentials = true;
                    None
                }
                Wanted::CallId => Some(&mut call_id),
                Wanted::Via => Some(&mut via),
                Wanted::CSeq => Some(&mut cseq),
                Wanted::To => Some(&mut to),
            };
            // The first one of each counts, or the first whose value is text.
            if let Some(slot @ None) = slot {
                if let Ok(value) = std::str::from_utf8(value) {
                    let value = trim_lws(value);
                    *slot = match wanted {
                        Wanted::Via => first_value(value),
                        _ => Some(value),
                    };
                }
            }
        }
        call_id.is_none() || via.is_none() || cseq.is_none() || to.is_none() || !has_credentials
    })
    .ok_or_else(|| unterminated(data))?;
    let body_offset = skip + body_offset;
    let call_id = call_id
        .filter(|v| !v.is_empty())
        .ok_or(PreParseError::CallId)?;
    let (number, method) = cseq
        .and_then(|v| {
            let mut words = Words {
                rest: v,
                blank: |b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'),
            };
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
        None => &value[find_byte(b';', value.as_bytes())?..],
    };
    // A `tag` without a value is still a tag (empty), as the full parser reads it.
    Pieces { rest: Some(params) }.find_map(|param| {
        let (name, value) = split_once_at(param, b'=').unwrap_or((param, ""));
        trim_lws(name)
            .eq_ignore_ascii_case("tag")
            .then(|| trim_lws(value))
    })
}

/// Where the `>` closing a name-addr's URI is (quoted display names skipped, and `\`
/// escapes inside them). All the bytes that matter are ASCII, so it jumps between them
/// with `memchr`.
fn angle_close(value: &str) -> Option<usize> {
    let bytes = value.as_bytes();
    let (mut from, mut open) = (0, false);
    loop {
        let at = from + find_any3([b'"', b'<', b'>'], bytes.get(from..)?)?;
        let next = match bytes[at] {
            b'<' => {
                open = true;
                at
            }
            b'>' if open => return Some(at),
            b'>' => at,
            _ => closing_quote(bytes, at)?,
        };
        from = next + 1;
    }
}

/// Where the quoted string opened at `open` ends (escaped characters skipped).
fn closing_quote(bytes: &[u8], open: usize) -> Option<usize> {
    let mut from = open + 1;
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', bytes.get(from..)?)?;
        if bytes[at] == b'"' {
            return Some(at);
        }
        from = at + 2;
    }
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
