//! The SIP pre-parser: frames one UDP datagram and pulls out what routing needs (request
//! method or response status, Call-ID, the top Via's branch, CSeq, the To tag that tells
//! an in-dialog request from a new one) without allocating or
//! copying: every field borrows from the datagram. Headers are read lazily, as Kamailio does;
//! everything else is left to the control plane's full parser.
//!
//! It runs on every datagram, so it reads the head once: one pass finds each line's end
//! (`line_feeds`: bit masks of 64 bytes at a time, which also show whether the bytes are
//! ASCII), tells a wanted header by its first bytes (a word compare, not a case-folding
//! compare of every name) and keeps the keys as byte slices; a head the scan saw to be
//! ASCII up to the last key is text, anything else is checked to be UTF-8 once, and the
//! keys are cut from it as text. The common spellings (a `SIP/2.0 200` status line, `;branch=`,
//! `<uri>;tag=`) are read directly, anything else the general way.

mod line_feeds;

use line_feeds::LineFeeds;

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

/// Where either of two bytes first occurs in `haystack` (SSE2 directly, as [`find_byte`]).
#[inline]
fn find_any2(a: u8, b: u8, haystack: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(finder) = memchr::arch::x86_64::sse2::memchr::Two::new(a, b) {
        return finder.find(haystack);
    }
    memchr::memchr2(a, b, haystack)
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

/// Which bytes are token characters (RFC 3261 `token`), as a table: methods are checked
/// twice per message.
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        byte += 1;
    }
    table
};

/// A SIP method (RFC 3261 `token`).
fn is_token(word: &[u8]) -> bool {
    !word.is_empty() && word.iter().all(|&b| TOKEN[usize::from(b)])
}

/// A name to match in any case (a header or parameter name, the `SIP/` of a version):
/// lower case letters and other ASCII. A byte matches a letter of the name in either case,
/// anything else only exactly (`| 0x20` on every byte would take `\r` for `-`). The first
/// eight bytes are compared as one word, which is what rules out nearly every line.
struct Name {
    bytes: &'static [u8],
    /// The first eight bytes of the name (zero past its end), little-endian.
    word: u64,
    /// 0x20 where the name has a letter: or-ed in, it folds the case of those bytes only.
    fold: u64,
    /// 0xff over the name's first eight bytes.
    mask: u64,
}

impl Name {
    /// The name `bytes`, spelt in lower case.
    const fn new(bytes: &'static [u8]) -> Name {
        let (mut word, mut fold, mut mask, mut i) = (0u64, 0u64, 0u64, 0);
        while i < bytes.len() && i < 8 {
            word |= (bytes[i] as u64) << (8 * i);
            if bytes[i].is_ascii_lowercase() {
                fold |= 0x20 << (8 * i);
            }
            mask |= 0xff << (8 * i);
            i += 1;
        }
        Name {
            bytes,
            word,
            fold,
            mask,
        }
    }

    /// Whether `bytes` starts with the name, in any case.
    fn starts(&self, bytes: &[u8]) -> bool {
        let Some(head) = bytes.get(..self.bytes.len()) else {
            return false;
        };
        // Bytes compared as a word need no second look.
        let compared = match bytes.first_chunk::<8>() {
            Some(word) if (u64::from_le_bytes(*word) | self.fold) & self.mask != self.word => {
                return false
            }
            Some(_) => 8,
            None => 0,
        };
        head.iter()
            .zip(self.bytes)
            .skip(compared)
            .all(|(&b, &n)| b == n || (b | 0x20 == n && n.is_ascii_lowercase()))
    }

    /// Whether `bytes` is the name, in any case.
    fn is(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.bytes.len() && self.starts(bytes)
    }
}

/// `SIP/` followed by anything: the version itself is the control plane's to judge (it
/// answers a request for another version with 505).
fn is_sip_version(word: &[u8]) -> bool {
    const SIP: Name = Name::new(b"sip/");
    SIP.starts(word)
}

/// The words of a start line: the runs of bytes between spaces and tabs.
struct Words<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| b != b' ' && b != b'\t')?;
        let rest = &self.rest[start..];
        let (word, after) = rest.split_at(find_any2(b' ', b'\t', rest).unwrap_or(rest.len()));
        self.rest = after;
        Some(word)
    }
}

/// What a start line names: a request's method or a response's status.
enum Start<'a> {
    Method(&'a [u8]),
    Status(u16),
}

/// The start line, read as tolerantly as the control plane reads it (extra spaces and tabs
/// between and after the parts are accepted, RFC 4475 §3.1.2.9-10). Whether it is text is
/// checked with the rest of the head.
fn parse_start_line(line: &[u8]) -> Result<Start<'_>, PreParseError> {
    // Nearly every status line: `SIP/2.0 `, three digits, then a space or the end.
    if let [b'S', b'I', b'P', b'/', b'2', b'.', b'0', b' ', code @ ..] = line {
        if let Some(status) = status_code(code) {
            return Ok(Start::Status(status));
        }
    }
    // Nearly every request line: `METHOD URI SIP/2.0`, single spaces.
    if let Some(head) = line.strip_suffix(b" SIP/2.0") {
        if let Some(space) = find_any2(b' ', b'\t', head) {
            let (method, uri) = (&head[..space], &head[space + 1..]);
            if head[space] == b' '
                && is_token(method)
                && !uri.is_empty()
                && find_any2(b' ', b'\t', uri).is_none()
            {
                return Ok(Start::Method(method));
            }
        }
    }
    let mut parts = Words { rest: line };
    let first = parts.next().ok_or(PreParseError::StartLine)?;
    let second = parts.next().ok_or(PreParseError::StartLine)?;
    if is_sip_version(first) {
        return match second.len() {
            3 => status_code(second)
                .map(Start::Status)
                .ok_or(PreParseError::StartLine),
            _ => Err(PreParseError::StartLine),
        };
    }
    match (parts.next(), parts.next()) {
        (Some(version), None) if is_token(first) && is_sip_version(version) => {
            Ok(Start::Method(first))
        }
        _ => Err(malformed_start_line(line)),
    }
}

/// The status code at the start of `word`: three digits, 100 to 699, then the end of the
/// word (a space, a tab or nothing).
fn status_code(word: &[u8]) -> Option<u16> {
    match *word {
        [hundreds @ b'1'..=b'6', tens @ b'0'..=b'9', units @ b'0'..=b'9', ref rest @ ..]
            if matches!(rest, [] | [b' ' | b'\t', ..]) =>
        {
            Some(
                u16::from(hundreds - b'0') * 100
                    + u16::from(tens - b'0') * 10
                    + u16::from(units - b'0'),
            )
        }
        _ => None,
    }
}

/// Why a start line that is neither a request line nor a status line was refused: a line
/// that ends in `SIP/2.0` and does not start with a version is a broken request line (an
/// empty method, a method that is not a token, whitespace inside the Request-URI), which
/// the control plane answers with 400 as it answers any request whose head it can read;
/// anything else is not SIP. Off the hot path: only refused lines get here.
fn malformed_start_line(line: &[u8]) -> PreParseError {
    if looks_like_request(line) {
        PreParseError::RequestLine
    } else {
        PreParseError::StartLine
    }
}

/// The control plane's test for a request it may answer although it cannot parse it.
fn looks_like_request(line: &[u8]) -> bool {
    let end = line
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |last| last + 1);
    !is_sip_version(line) && line[..end].ends_with(b"SIP/2.0")
}

/// Why a datagram without an empty line after its headers was refused: a request (the
/// control plane answers it 400 when it can read the headers) or not.
fn unterminated(data: &[u8]) -> PreParseError {
    let first_end = find_byte(b'\n', data).unwrap_or(data.len());
    let line = strip_cr(&data[..first_end]);
    if std::str::from_utf8(line).is_ok() && looks_like_request(line) {
        PreParseError::IncompleteRequest
    } else {
        PreParseError::NoHeaderEnd
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

/// The header a line names, if the pre-parser reads it, and the value after its colon. The
/// name is what precedes the first colon, less the spaces and tabs before it; case does
/// not matter. Its first two bytes tell which name it can be (most lines are ruled out by
/// the first), so at most one name is compared.
fn wanted(line: &[u8]) -> Option<(Wanted, &[u8])> {
    const VIA: Name = Name::new(b"via");
    const V: Name = Name::new(b"v");
    const TO: Name = Name::new(b"to");
    const T: Name = Name::new(b"t");
    const I: Name = Name::new(b"i");
    const CSEQ: Name = Name::new(b"cseq");
    const CALL_ID: Name = Name::new(b"call-id");
    const AUTHORIZATION: Name = Name::new(b"authorization");
    const PROXY_AUTHORIZATION: Name = Name::new(b"proxy-authorization");
    let second = line.get(1).map_or(0, |&b| b | 0x20);
    let (which, name) = match line.first()? | 0x20 {
        b'v' if second == b'i' => (Wanted::Via, &VIA),
        b'v' => (Wanted::Via, &V),
        b't' if second == b'o' => (Wanted::To, &TO),
        b't' => (Wanted::To, &T),
        b'i' => (Wanted::CallId, &I),
        b'c' if second == b's' => (Wanted::CSeq, &CSEQ),
        b'c' if second == b'a' => (Wanted::CallId, &CALL_ID),
        b'a' => (Wanted::Credentials, &AUTHORIZATION),
        b'p' => (Wanted::Credentials, &PROXY_AUTHORIZATION),
        _ => return None,
    };
    if !name.starts(line) {
        return None;
    }
    let rest = &line[name.bytes.len()..];
    let colon = rest.iter().position(|&b| b != b' ' && b != b'\t')?;
    (rest[colon] == b':').then(|| (which, &rest[colon + 1..]))
}

/// Whether a header value is text (UTF-8); only a text value is read.
fn is_text(value: &[u8]) -> bool {
    value.is_ascii() || std::str::from_utf8(value).is_ok()
}

/// The first non-empty comma-separated value of a header (commas inside quotes or `<>` do
/// not count). The bytes that matter are ASCII, and UTF-8 never uses ASCII bytes inside a
/// character, so the value is read byte by byte.
fn first_value(value: &[u8]) -> Option<&[u8]> {
    // Fast path: no quote or angle bracket before the first comma (a Via never has one).
    match find_any3([b',', b'"', b'<'], value) {
        None => return Some(value).filter(|v| !v.is_empty()),
        Some(at) if value[at] == b',' && !trim_lws(&value[..at]).is_empty() => {
            return Some(trim_lws(&value[..at]));
        }
        _ => {}
    }
    let (mut quoted, mut angle, mut escaped, mut start) = (false, false, false, 0);
    for (i, &b) in value.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
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

/// The `;`-separated parameters of a value as (name, value) pairs, untrimmed, the value
/// None for a parameter without `=`: what `str::split(';')` and then `split_once('=')`
/// give, in one scan of each parameter.
struct Params<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for Params<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let Some(at) = find_any2(b'=', b';', rest) else {
            self.rest = None;
            return Some((rest, None));
        };
        let (name, after) = (&rest[..at], &rest[at + 1..]);
        if rest[at] == b';' {
            self.rest = Some(after);
            return Some((name, None));
        }
        let end = find_byte(b';', after);
        self.rest = end.map(|end| &after[end + 1..]);
        Some((name, Some(&after[..end.unwrap_or(after.len())])))
    }
}

/// The `branch` parameter of a Via value.
fn branch_of(via: &[u8]) -> Option<&[u8]> {
    const BRANCH: Name = Name::new(b"branch");
    let params = &via[find_byte(b';', via)? + 1..];
    // Nearly always `;branch=` right after the sent-by, spelt plainly.
    if let Some(branch) = params.strip_prefix(b"branch=") {
        let branch = trim_unicode(&branch[..find_byte(b';', branch).unwrap_or(branch.len())]);
        if !branch.is_empty() {
            return Some(branch);
        }
    }
    Params { rest: Some(params) }.find_map(|(name, value)| {
        let value = trim_unicode(value?);
        (BRANCH.is(trim_unicode(name)) && !value.is_empty()).then_some(value)
    })
}

/// Trims white space at both ends as `str::trim` does (Unicode White_Space), which is how
/// the `branch` parameter has always been read: ASCII ends are trimmed here, anything
/// else through `str::trim`.
fn trim_unicode(bytes: &[u8]) -> &[u8] {
    // Nearly always: printable ASCII at both ends, nothing to trim.
    if bytes.first().is_some_and(u8::is_ascii_graphic)
        && bytes.last().is_some_and(u8::is_ascii_graphic)
    {
        return bytes;
    }
    let ascii_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let start = bytes
        .iter()
        .position(|b| !ascii_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !ascii_space(b))
        .map_or(start, |last| last + 1);
    let trimmed = &bytes[start..end];
    match (trimmed.first(), trimmed.last()) {
        (Some(&first), Some(&last)) if !first.is_ascii() || !last.is_ascii() => {
            std::str::from_utf8(bytes).map_or(trimmed, |text| text.trim().as_bytes())
        }
        _ => trimmed,
    }
}

/// A CSeq number as `str::parse::<u32>` reads it (an optional `+`, then digits).
fn parse_number(word: &[u8]) -> Option<u32> {
    let digits = word.strip_prefix(b"+").unwrap_or(word);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |number, &b| {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        number.checked_mul(10)?.checked_add(u32::from(digit))
    })
}

/// A CSeq value, trimmed as [`read_keys`] keeps it: `number method`, nothing more (the two
/// separated by linear white space, which the method, a token, cannot hold).
fn parse_cseq(value: &[u8]) -> Option<(u32, &[u8])> {
    let number_end = value
        .iter()
        .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))?;
    let number = parse_number(&value[..number_end])?;
    let method = trim_lws(&value[number_end..]);
    is_token(method).then_some((number, method))
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

/// Frames the head in one pass: walks the header lines after the start line (which ends
/// with the `\n` at `first_end`; `feeds` hands out the line feeds after it), hands each
/// to `visit` with where it ends in `data`
/// (continuation lines folded in: a line starting with a space or a tab continues the one
/// before; the final line break left out) until `visit` returns false, and returns where
/// the body starts, or None if no empty line ends the head. The head ends at the first
/// line break followed by an empty line, so the lines after `visit` is done are still
/// walked.
fn frame<'a>(
    data: &'a [u8],
    first_end: usize,
    feeds: &mut LineFeeds<'a>,
    mut visit: impl FnMut(&'a [u8], usize) -> bool,
) -> Option<usize> {
    if let Some(body) = body_after(data, first_end) {
        return Some(body);
    }
    let (mut start, mut visiting) = (first_end + 1, true);
    loop {
        let nl = feeds.next()?;
        let from = nl + 1;
        // The byte after the line feed (0 at the end of the data: a line that never ends).
        let next = data.get(from).copied().unwrap_or(0);
        if matches!(next, b' ' | b'\t') {
            continue;
        }
        if visiting {
            let line = strip_cr(&data[start..nl]);
            visiting = visit(line, start + line.len());
        }
        match next {
            b'\n' => return Some(from + 1),
            b'\r' if data.get(from + 1) == Some(&b'\n') => return Some(from + 2),
            _ => start = from,
        }
    }
}

/// Trims SIP linear white space (spaces, tabs, folded line breaks) at both ends.
// Not inlined: it has several callers, and inlined into the header loop it made that loop
// slower (callgrind: 3% more instructions per message).
#[inline(never)]
fn trim_lws(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r' | b'\n', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The headers the keys come from, as read from the head (slices of the datagram).
#[derive(Default)]
struct Keys<'a> {
    call_id: Option<&'a [u8]>,
    /// The top Via (the first value of the first Via header).
    via: Option<&'a [u8]>,
    cseq: Option<&'a [u8]>,
    to: Option<&'a [u8]>,
    has_credentials: bool,
    /// Where the last header a key was taken from ends.
    end: usize,
}

/// Reads the keys' headers and frames the head ([`frame`]): the first header of each kind
/// counts, lazily, as Kamailio does (reading stops once the wanted headers are found).
/// With `checked`, the first whose value is text; without, the first, which is the same
/// when the head is text up to the last header taken, as it nearly always is: the caller
/// checks that once and reads again, checked, when it is not (one check for the lot
/// instead of one per header). None if the head does not end.
fn read_keys<'a>(
    data: &'a [u8],
    first_end: usize,
    feeds: &mut LineFeeds<'a>,
    request: bool,
    checked: bool,
) -> Option<(Keys<'a>, usize)> {
    // Credentials matter only in requests: a response is done once the four are found.
    let mut keys = Keys {
        has_credentials: !request,
        ..Keys::default()
    };
    // The keys still to find: four, and the credentials of a request.
    let mut missing = 4 + u8::from(request);
    let body = frame(data, first_end, feeds, |line, end| {
        // A malformed line is the control plane's to judge (it answers 400): skip it here.
        if let Some((wanted, value)) = wanted(line) {
            let slot = match wanted {
                Wanted::Credentials => {
                    if !keys.has_credentials {
                        keys.has_credentials = true;
                        missing -= 1;
                    }
                    None
                }
                Wanted::CallId => Some(&mut keys.call_id),
                Wanted::Via => Some(&mut keys.via),
                Wanted::CSeq => Some(&mut keys.cseq),
                Wanted::To => Some(&mut keys.to),
            };
            if let Some(slot @ None) = slot {
                if !checked || is_text(value) {
                    let value = trim_lws(value);
                    *slot = match wanted {
                        Wanted::Via => first_value(value),
                        _ => Some(value),
                    };
                    if slot.is_some() {
                        missing -= 1;
                    }
                    keys.end = end;
                }
            }
        }
        missing > 0
    })?;
    Some((keys, body))
}

/// The keys as text. Each key is a slice of a header value checked to be text when it was
/// read (or of the start line); rather than check each again, the head up to the last key
/// is checked once and the keys are cut from it by their place in the datagram.
struct Text<'a> {
    data: &'a [u8],
    /// `data` up to the end of the last key, if it is all text.
    head: Option<&'a str>,
}

impl<'a> Text<'a> {
    /// `key`, a slice of `data`, as text: None only if it is not text.
    fn of(&self, key: &'a [u8]) -> Option<&'a str> {
        match self.head {
            Some(head) => {
                // Where the key lies in the datagram (addresses within one slice).
                let start = (key.as_ptr() as usize).wrapping_sub(self.data.as_ptr() as usize);
                head.get(start..start.checked_add(key.len())?)
            }
            None => std::str::from_utf8(key).ok(),
        }
    }
}

/// Pre-parses one datagram.
pub fn preparse(datagram: &[u8]) -> Result<PreParsed<'_>, PreParseError> {
    // Line breaks before the start line are ignored (RFC 3261 §7.5).
    let skip = datagram
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(PreParseError::NoHeaderEnd)?;
    let data = &datagram[skip..];
    let mut feeds = LineFeeds::new(data);
    let first_end = feeds.next().ok_or_else(|| unterminated(data))?;
    let start_line = strip_cr(&data[..first_end]);
    let start = match parse_start_line(start_line) {
        Ok(start) => start,
        // A datagram whose head does not end is refused as such, whatever its first line;
        // a first line that is not text, as such.
        Err(_) if frame(data, first_end, &mut feeds, |_, _| false).is_none() => {
            return Err(unterminated(data))
        }
        Err(_) if std::str::from_utf8(start_line).is_err() => return Err(PreParseError::NotText),
        Err(error) => return Err(error),
    };
    let request = matches!(start, Start::Method(_));
    let (mut keys, body_offset) =
        read_keys(data, first_end, &mut feeds, request, false).ok_or_else(|| unterminated(data))?;
    let head_end = keys.end.max(first_end);
    // Nearly always ASCII, which the line feed scan has seen; else checked here.
    let head = match feeds.ascii_text(head_end) {
        Some(head) => Some(head),
        None => match std::str::from_utf8(data.get(..head_end).unwrap_or(data)) {
            Ok(head) => Some(head),
            Err(error) if error.valid_up_to() < start_line.len() => {
                return Err(PreParseError::NotText)
            }
            Err(_) => {
                // A second pass over the header lines: their line feeds from the start.
                let mut feeds = LineFeeds::new(data);
                feeds.next();
                (keys, _) = read_keys(data, first_end, &mut feeds, request, true)
                    .ok_or_else(|| unterminated(data))?;
                None
            }
        },
    };
    let text = Text { data, head };
    let kind = match start {
        Start::Method(method) => Kind::Request(text.of(method).ok_or(PreParseError::NotText)?),
        Start::Status(status) => Kind::Response(status),
    };
    let body_offset = skip + body_offset;
    let call_id = keys
        .call_id
        .filter(|v| !v.is_empty())
        .and_then(|v| text.of(v))
        .ok_or(PreParseError::CallId)?;
    let (number, method) = keys
        .cseq
        .and_then(parse_cseq)
        .and_then(|(number, method)| Some((number, text.of(method)?)))
        .ok_or(PreParseError::CSeq)?;
    // Content-Length, like the version, is checked by the control plane (it answers 400).
    let via = keys.via.ok_or(PreParseError::Via)?;
    Ok(PreParsed {
        kind,
        call_id,
        branch: branch_of(via).and_then(|branch| text.of(branch)),
        cseq: number,
        cseq_method: method,
        to_tag: keys.to.and_then(tag_of).and_then(|tag| text.of(tag)),
        has_credentials: keys.has_credentials && request,
        body_offset,
    })
}

/// The `tag` parameter of a From/To value: parameters follow the `>` of a name-addr
/// (`"A <b>" <sip:x@h>;tag=1`), or the URI of a bare addr-spec (`sip:x@h;tag=1`).
fn tag_of(value: &[u8]) -> Option<&[u8]> {
    let params = match angle_close(value) {
        Some(close) => &value[close + 1..],
        None => &value[find_byte(b';', value)?..],
    };
    // Nearly always `;tag=` right after the URI: the first parameter, spelt plainly.
    if let Some(tag) = params.strip_prefix(b";tag=") {
        return Some(trim_lws(&tag[..find_byte(b';', tag).unwrap_or(tag.len())]));
    }
    // A `tag` without a value is still a tag (empty), as the full parser reads it.
    Params { rest: Some(params) }.find_map(|(name, value)| {
        const TAG: Name = Name::new(b"tag");
        TAG.is(trim_lws(name))
            .then(|| trim_lws(value.unwrap_or(&name[name.len()..])))
    })
}

/// Where the `>` closing a name-addr's URI is (quoted display names skipped, and `\`
/// escapes inside them). All the bytes that matter are ASCII, so it jumps between them
/// with `memchr`.
fn angle_close(value: &[u8]) -> Option<usize> {
    let (mut from, mut open) = (0, false);
    // Nearly always a bare `<uri>`: opened at once, closed before any quote.
    if value.first() == Some(&b'<') {
        let at = 1 + find_any2(b'"', b'>', &value[1..])?;
        if value[at] == b'>' {
            return Some(at);
        }
        (from, open) = (1, true);
    }
    loop {
        let at = from + find_any3([b'"', b'<', b'>'], value.get(from..)?)?;
        let next = match value[at] {
            b'<' => {
                open = true;
                at
            }
            b'>' if open => return Some(at),
            b'>' => at,
            _ => closing_quote(value, at)?,
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

    /// A BYE with these header lines (CRLF after each, then the empty line).
    fn bye(headers: &[&str]) -> Vec<u8> {
        let mut text = String::from("BYE sip:x SIP/2.0\r\n");
        for header in headers {
            text.push_str(header);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        text.into_bytes()
    }

    const KEYS: [&str; 4] = [
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1",
        "To: <sip:b@h>;tag=2",
        "Call-ID: c1",
        "CSeq: 2 BYE",
    ];

    #[test]
    fn bare_line_feeds_and_where_the_body_starts() {
        let text = "SIP/2.0 200 OK\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nTo: <sip:b@h>;tag=2\n\
Call-ID: c1\nCSeq: 2 BYE\n\nbody";
        let parsed = preparse(text.as_bytes()).unwrap();
        assert_eq!((parsed.call_id, parsed.to_tag), ("c1", Some("2")));
        assert_eq!(&text.as_bytes()[parsed.body_offset..], b"body");
        // A bare empty line ends the head even when a CRLF follows it, as the full parser
        // reads it.
        let text = "SIP/2.0 200 OK\r\nVia: a;branch=b\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\n\r\nbody";
        let parsed = preparse(text.as_bytes()).unwrap();
        assert_eq!(&text.as_bytes()[parsed.body_offset..], b"\r\nbody");
        // A head that is only a start line.
        assert_eq!(
            preparse(b"SIP/2.0 200 OK\r\n\r\n"),
            Err(PreParseError::CallId)
        );
    }

    #[test]
    fn header_values_that_are_not_text_are_passed_over() {
        // The first Call-ID and Via are not UTF-8: the next ones count.
        let text = [
            b"BYE sip:x SIP/2.0\r\nCall-ID: \xff\xfe\r\nVia: SIP/2.0/UDP \xc3;branch=no\r\n"
                .as_slice(),
            b"From: \"Jos\xe9\" <sip:j@h>;tag=1\r\ni: c2\r\nv: SIP/2.0/UDP h;branch=yes\r\n",
            b"CSeq: 3 BYE\r\nt: <sip:b@h>;tag=\xc3\xa9t\xc3\xa9\r\n\r\n",
        ]
        .concat();
        let parsed = preparse(&text).unwrap();
        assert_eq!(parsed.call_id, "c2");
        assert_eq!(parsed.branch, Some("yes"));
        assert_eq!(parsed.to_tag, Some("été"));
        // Latin-1 in a header the pre-parser does not read changes nothing.
        let mut latin = bye(&KEYS);
        latin.splice(19..19, b"Subject: caf\xe9\r\n".iter().copied());
        assert_eq!(preparse(&latin).unwrap().call_id, "c1");
        // A start line that is not text is refused, whichever way it is broken.
        for line in [
            &b"BYE sip:\xff SIP/2.0"[..],
            b"B\xffE sip:x SIP/2.0",
            b"SIP/2.0 \xff",
        ] {
            let text = [line, &bye(&KEYS)[17..]].concat();
            assert_eq!(preparse(&text), Err(PreParseError::NotText), "{line:?}");
        }
    }

    #[test]
    fn header_names_in_any_case_and_their_lookalikes() {
        let shouted = bye(&[
            "VIA: a;BRANCH=z9",
            "tO: <sip:b@h>;Tag=t",
            "cAlL-iD: c",
            "CSEQ: 1 BYE",
        ]);
        let parsed = preparse(&shouted).unwrap();
        assert_eq!(
            (parsed.branch, parsed.to_tag, parsed.call_id),
            (Some("z9"), Some("t"), "c")
        );
        // Names that only look like Call-ID (a carriage return folds to `-` under `| 0x20`),
        // a name with a word after it, a name folded before its colon.
        for fake in [
            "Call\rID: x",
            "Call-IDs: x",
            "Call-ID x: y",
            "Call-ID\r\n : x",
            "I-: x",
        ] {
            let text = bye(&[KEYS[0], KEYS[1], fake, KEYS[3]]);
            assert_eq!(preparse(&text), Err(PreParseError::CallId), "{fake:?}");
        }
        for fake in ["Vias: a;branch=b", "Vi: a", "V\r: a"] {
            let text = bye(&[fake, KEYS[1], KEYS[2], KEYS[3]]);
            assert_eq!(preparse(&text), Err(PreParseError::Via), "{fake:?}");
        }
        // Credentials under either name, in any case, and a lookalike.
        for (line, credentials) in [
            ("AUTHORIZATION: Digest x", true),
            ("proxy-authorization: Digest x", true),
            ("Authorizations: Digest x", false),
            ("Proxy-Authenticate: Digest x", false),
        ] {
            let text = bye(&[KEYS[0], KEYS[1], KEYS[2], KEYS[3], line]);
            assert_eq!(
                preparse(&text).unwrap().has_credentials,
                credentials,
                "{line}"
            );
        }
    }

    #[test]
    fn start_lines_in_every_spacing() {
        let rest = &bye(&KEYS)[17..];
        for (line, kind) in [
            ("SIP/2.0 200 OK", Some(Kind::Response(200))),
            ("SIP/2.0 200", Some(Kind::Response(200))),
            ("SIP/2.0 180\tRinging", Some(Kind::Response(180))),
            ("sip/2.0  486  Busy", Some(Kind::Response(486))),
            ("SIP/3.0 699 x", Some(Kind::Response(699))),
            ("SIP/2.0 2000 OK", None),
            ("SIP/2.0 700 x", None),
            ("SIP/2.0 20 OK", None),
            ("SIP/2.0 2x0 OK", None),
            ("BYE sip:x SIP/2.0", Some(Kind::Request("BYE"))),
            ("BYE\tsip:x SIP/2.0", Some(Kind::Request("BYE"))),
            ("BYE  sip:x\t SIP/2.0 ", Some(Kind::Request("BYE"))),
            ("BYE sip:x sip/2.0", Some(Kind::Request("BYE"))),
            ("BYE sip:x y SIP/2.0", None),
            ("BYE  SIP/2.0", None),
            ("B/E sip:x SIP/2.0", None),
        ] {
            let text = [line.as_bytes(), rest].concat();
            assert_eq!(preparse(&text).ok().map(|p| p.kind), kind, "{line:?}");
        }
    }

    #[test]
    fn cseq_is_a_number_and_a_method() {
        for (cseq, number) in [
            ("CSeq: 7 BYE", Some(7)),
            ("CSeq: +7 BYE", Some(7)),
            ("CSeq: 4294967295 BYE", Some(u32::MAX)),
            ("CSeq: 4294967296 BYE", None),
            ("CSeq: -7 BYE", None),
            ("CSeq: + BYE", None),
            ("CSeq: 7", None),
            ("CSeq: 7 BYE now", None),
            ("CSeq: 7 B<YE", None),
            ("CSeq: seven BYE", None),
        ] {
            let text = bye(&[KEYS[0], KEYS[1], KEYS[2], cseq]);
            let parsed = preparse(&text).map(|p| p.cseq);
            assert_eq!(parsed.ok(), number, "{cseq}");
        }
    }

    #[test]
    fn branch_and_tag_parameters_in_every_spelling() {
        for (via, branch) in [
            (
                "Via: SIP/2.0/UDP h;rport;branch=z9hG4bK1;received=h",
                Some("z9hG4bK1"),
            ),
            ("Via: SIP/2.0/UDP h ; Branch = z9 ;x", Some("z9")),
            // Unicode white space around the name and the value, as `str::trim` reads it.
            ("Via: SIP/2.0/UDP h;branch\u{a0}=\u{3000}z9", Some("z9")),
            ("Via: SIP/2.0/UDP h;branch=;branch=second", Some("second")),
            ("Via: SIP/2.0/UDP h;branch", None),
            ("Via: SIP/2.0/UDP h;branches=x", None),
            ("Via: SIP/2.0/UDP h", None),
        ] {
            let text = bye(&[via, KEYS[1], KEYS[2], KEYS[3]]);
            assert_eq!(preparse(&text).unwrap().branch, branch, "{via}");
        }
        for (to, tag) in [
            ("To: <sip:b@h>;tag=a=b;x", Some("a=b")),
            ("To: <sip:b@h>;tag", Some("")),
            ("To: <sip:b@h>;x=1;tag=t", Some("t")),
            ("To: <sip:b@h>; tag = t ", Some("t")),
            ("To: <sip:b@h>tag=t", Some("t")),
            ("To: <sip:b@h>;tags=t", None),
        ] {
            let text = bye(&[KEYS[0], to, KEYS[2], KEYS[3]]);
            assert_eq!(preparse(&text).unwrap().to_tag, tag, "{to}");
        }
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
