//! Content-Length framing of a SIP byte stream (TCP): split a stream into whole messages,
//! whatever the read boundaries (two messages in one read, one message across reads).
//!
//! The framer works in linear time: the end of the head (the empty line) is searched only
//! in bytes not yet examined, the head is parsed once when it is complete, Content-Length
//! is read from it, and the body is then awaited without looking at the buffer again. The
//! configured size limit (`sip.max_message_size`) applies to the head while it grows and
//! to head + Content-Length as soon as the head is known, so a peer cannot make the gateway
//! buffer more than the limit (plus one read). Errors carry the answer RFC 3261 asks for
//! (513 or 400) when the head is readable enough to build one.

use super::message::{Framing, MessageHead, ParseError, SipMessage};
use super::validate;
use bytes::{Buf, BytesMut};

/// Accumulates bytes from a stream and yields complete messages.
#[derive(Debug)]
pub struct StreamFramer {
    buffer: BytesMut,
    /// Largest message accepted (`sip.max_message_size`).
    limit: usize,
    /// Where the search for the head's empty line resumes (offset in `buffer`).
    scan_from: usize,
    /// The current message's head once complete, with its length and the body's.
    head: Option<PendingHead>,
    /// Heads parsed so far (tests prove one parse per message).
    #[cfg(test)]
    head_parses: usize,
    /// Bytes the empty-line search examined (tests prove the search is linear).
    #[cfg(test)]
    scanned: usize,
}

/// A head parsed, waiting for its body.
#[derive(Debug)]
struct PendingHead {
    head: MessageHead,
    head_len: usize,
    body_len: usize,
}

/// What the framer found in the buffered bytes.
#[derive(Debug)]
pub enum Framed {
    /// A whole message was parsed (boxed: a message is large, `NeedMore` is not).
    Message(Box<SipMessage>),
    /// An RFC 5626 keep-alive ping (CRLFCRLF) between messages: answer with a CRLF pong
    /// (RFC 5626 §4.4.1).
    Ping,
    /// More bytes are needed.
    NeedMore,
}

/// Why a stream must be closed, with the answer to write first when there is one.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The head, or head + Content-Length, is larger than the limit: 513 Message Too Large
    /// (RFC 3261 §21.5.14).
    #[error(
        "message of at least {size} bytes exceeds the {limit}-byte limit (sip.max_message_size)"
    )]
    TooLarge {
        /// Bytes known to belong to the message (buffered, or head + Content-Length).
        size: usize,
        /// The configured limit.
        limit: usize,
        /// The 513 to send, if the request could be answered.
        answer: Option<Box<SipMessage>>,
    },
    /// Content-Length is missing, negative, repeated or not a number, so the stream cannot
    /// be framed any further: 400 Bad Request.
    #[error("{error}")]
    ContentLength {
        /// What is wrong with it.
        error: ParseError,
        /// The 400 to send, if the request could be answered.
        answer: Option<Box<SipMessage>>,
    },
    /// The head is not a SIP message: 400 Bad Request when it is a request that can be
    /// answered, else nothing.
    #[error("{error}")]
    Malformed {
        /// Why the head did not parse.
        error: ParseError,
        /// The 400 to send, if the request could be answered.
        answer: Option<Box<SipMessage>>,
    },
}

impl FrameError {
    /// The response to write on the connection before closing it (never for a response
    /// or an ACK, nor for bytes without the headers a response copies).
    pub fn answer(&self) -> Option<&SipMessage> {
        match self {
            FrameError::TooLarge { answer, .. }
            | FrameError::ContentLength { answer, .. }
            | FrameError::Malformed { answer, .. } => answer.as_deref(),
        }
    }
}

/// The keep-alive ping of RFC 5626 §3.5.1.
const PING: &[u8] = b"\r\n\r\n";

impl StreamFramer {
    /// A new, empty framer accepting messages of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        StreamFramer {
            buffer: BytesMut::new(),
            limit,
            scan_from: 0,
            head: None,
            #[cfg(test)]
            head_parses: 0,
            #[cfg(test)]
            scanned: 0,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// True while part of a message is buffered (its first byte has arrived, its last has
    /// not): the transport's message timeout runs.
    pub fn in_message(&self) -> bool {
        self.buffer
            .first()
            .is_some_and(|&b| b != b'\r' && b != b'\n')
    }

    /// Takes the next whole message (or ping) out of the buffer. An error means the
    /// stream cannot be framed any further and the connection must be closed, after
    /// writing [`FrameError::answer`] if there is one.
    pub fn next_message(&mut self) -> Result<Framed, FrameError> {
        if self.head.is_none() && self.scan_from == 0 {
            if let Some(keep_alive) = self.skip_keep_alives() {
                return Ok(keep_alive);
            }
        }
        if self.head.is_none() {
            let Some(head_len) = self.find_head_end() else {
                if self.buffer.len() > self.limit {
                    return Err(self.too_large(self.buffer.len()));
                }
                return Ok(Framed::NeedMore);
            };
            self.head = Some(self.parse_head(head_len)?);
        }
        let Some(pending) = &self.head else {
            return Ok(Framed::NeedMore);
        };
        let total = pending.head_len + pending.body_len;
        if self.buffer.len() < total {
            return Ok(Framed::NeedMore);
        }
        let PendingHead { head, head_len, .. } = self.head.take().expect("checked above");
        let mut message = self.buffer.split_to(total);
        let body = message.split_off(head_len).freeze();
        self.scan_from = 0;
        Ok(Framed::Message(Box::new(head.with_body(body))))
    }

    /// Skips CRLF keep-alives before a message (RFC 5626 §4.4.1, RFC 3261 §7.5). Returns a
    /// ping when one was consumed, `NeedMore` when the buffer ends in the middle of one.
    fn skip_keep_alives(&mut self) -> Option<Framed> {
        loop {
            match self.buffer.first() {
                None => return Some(Framed::NeedMore),
                Some(b'\r' | b'\n') => {}
                Some(_) => return None,
            }
            if self.buffer.starts_with(PING) {
                self.buffer.advance(PING.len());
                return Some(Framed::Ping);
            }
            if PING.starts_with(&self.buffer) {
                return Some(Framed::NeedMore); // perhaps the start of a ping
            }
            let step = if self.buffer.starts_with(b"\r\n") {
                2
            } else {
                1
            };
            self.buffer.advance(step);
        }
    }

    /// The length of the head (through its empty line) when the buffer holds all of it.
    /// Examines only bytes not examined before: a line end is an LF, the empty line an LF
    /// followed by LF or CRLF.
    fn find_head_end(&mut self) -> Option<usize> {
        let start = self.scan_from;
        for at in memchr::memchr_iter(b'\n', &self.buffer[start..]).map(|i| start + i) {
            match (self.buffer.get(at + 1), self.buffer.get(at + 2)) {
                (Some(b'\n'), _) => return self.scanned_to(at, Some(at + 2)),
                (Some(b'\r'), Some(b'\n')) => return self.scanned_to(at, Some(at + 3)),
                (None, _) | (Some(b'\r'), None) => return self.scanned_to(at, None), // wait
                _ => {}
            }
        }
        let end = self.buffer.len();
        self.scanned_to(end, None)
    }

    /// Records that the search stopped at `at` (it resumes there) and returns `found`.
    fn scanned_to(&mut self, at: usize, found: Option<usize>) -> Option<usize> {
        #[cfg(test)]
        {
            self.scanned += at.saturating_sub(self.scan_from) + 1;
        }
        self.scan_from = at;
        found
    }

    /// Parses the complete head of `head_len` bytes and reads its Content-Length.
    fn parse_head(&mut self, head_len: usize) -> Result<PendingHead, FrameError> {
        #[cfg(test)]
        {
            self.head_parses += 1;
        }
        let raw = &self.buffer[..head_len];
        let answer = |error: &ParseError| validate::reject_unparseable(raw, error).map(Box::new);
        let head = MessageHead::parse_stream_head(raw).map_err(|error| FrameError::Malformed {
            answer: answer(&error),
            error,
        })?;
        let body_len =
            head.body_length(Framing::Stream, 0)
                .map_err(|error| FrameError::ContentLength {
                    answer: answer(&error),
                    error,
                })?;
        if head_len.saturating_add(body_len) > self.limit {
            return Err(self.too_large(head_len.saturating_add(body_len)));
        }
        Ok(PendingHead {
            head,
            head_len,
            body_len,
        })
    }

    /// The 513 error for a message of (at least) `size` bytes, answered from the complete
    /// lines of its head that fit in the limit.
    fn too_large(&self, size: usize) -> FrameError {
        let readable = &self.buffer[..self.buffer.len().min(self.limit)];
        let lines = memchr::memrchr(b'\n', readable).map_or(&readable[..0], |at| &readable[..=at]);
        FrameError::TooLarge {
            size,
            limit: self.limit,
            answer: validate::answer_raw_request(lines, 513, "Message Too Large").map(Box::new),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::MAX_MESSAGE_SIZE;

    fn options(call_id: &str, body: &str) -> String {
        format!(
            "OPTIONS sip:201@h SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK{call_id}\r\nCall-ID: {call_id}\r\n\
CSeq: 1 OPTIONS\r\nFrom: <sip:1@h>;tag=1\r\nTo: <sip:201@h>\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn drain(framer: &mut StreamFramer) -> Vec<SipMessage> {
        let mut out = Vec::new();
        loop {
            match framer.next_message().unwrap() {
                Framed::Message(m) => out.push(*m),
                Framed::Ping => {}
                Framed::NeedMore => return out,
            }
        }
    }

    fn status(error: &FrameError) -> Option<(u16, String)> {
        error.answer().map(|a| match &a.start {
            crate::sip::message::StartLine::Response(line) => (line.code, line.reason.clone()),
            other => panic!("answer is not a response: {other:?}"),
        })
    }

    #[test]
    fn two_messages_in_one_read() {
        let mut framer = StreamFramer::new(MAX_MESSAGE_SIZE);
        framer.push(format!("{}{}", options("one", "abc"), options("two", "")).as_bytes());
        let got = drain(&mut framer);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].call_id(), Some("one"));
        assert_eq!(&got[0].body[..], b"abc");
        assert_eq!(got[1].call_id(), Some("two"));
    }

    #[test]
    fn one_message_across_reads_byte_by_byte() {
        let mut framer = StreamFramer::new(MAX_MESSAGE_SIZE);
        let text = options("split", "v=0\r\n");
        let mut got = Vec::new();
        for byte in text.as_bytes() {
            framer.push(std::slice::from_ref(byte));
            got.extend(drain(&mut framer));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].body[..], b"v=0\r\n");
    }

    /// Fed one byte at a time, a 60 KB message is parsed once and each byte is examined a
    /// bounded number of times (the old framer re-parsed the whole buffer on every read).
    #[test]
    fn byte_by_byte_framing_is_linear() {
        let filler = format!("X-Filler: {}\r\n", "y".repeat(200)).repeat(250);
        let text = options("big", &"b".repeat(8000)).replacen(
            "Content-Length",
            &format!("{filler}Content-Length"),
            1,
        );
        assert!(text.len() > 58_000);
        let mut framer = StreamFramer::new(MAX_MESSAGE_SIZE);
        let mut got = Vec::new();
        for byte in text.as_bytes() {
            framer.push(std::slice::from_ref(byte));
            got.extend(drain(&mut framer));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body.len(), 8000);
        assert_eq!(
            got[0].header_count(&ezk_sip_types::Name::from("X-Filler")),
            250
        );
        assert_eq!(framer.head_parses, 1, "the head is parsed once");
        let head_len = text.find("\r\n\r\n").unwrap() + 4;
        assert!(
            framer.scanned <= 3 * head_len,
            "the empty-line search examined {} bytes of a {head_len}-byte head",
            framer.scanned
        );
    }

    #[test]
    fn keep_alives_are_skipped_and_pings_reported() {
        let mut framer = StreamFramer::new(MAX_MESSAGE_SIZE);
        framer.push(b"\r\n");
        assert!(matches!(framer.next_message(), Ok(Framed::NeedMore)));
        assert!(!framer.in_message(), "a keep-alive is not a message");
        framer.push(b"\r\n");
        assert!(matches!(framer.next_message(), Ok(Framed::Ping)));
        framer.push(b"\r\n\n");
        framer.push(options("after", "").as_bytes());
        framer.push(b"\r\n\r\n\r\n");
        let mut events = Vec::new();
        loop {
            match framer.next_message().unwrap() {
                Framed::Message(m) => events.push(m.call_id().unwrap().to_string()),
                Framed::Ping => events.push("ping".into()),
                Framed::NeedMore => break,
            }
        }
        assert_eq!(events, ["after", "ping"]);
        framer.push(b"OPT");
        assert!(matches!(framer.next_message(), Ok(Framed::NeedMore)));
        assert!(framer.in_message());
    }

    #[test]
    fn bare_lf_heads_are_framed() {
        let mut framer = StreamFramer::new(MAX_MESSAGE_SIZE);
        framer.push(options("lf", "abc").replace("\r\n", "\n").as_bytes());
        let got = drain(&mut framer);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].body[..], b"abc");
    }

    #[test]
    fn garbage_is_malformed_and_not_answered() {
        let mut framer = StreamFramer::new(MAX_MESSAGE_SIZE);
        framer.push(b"\x00\x01garbage garbage\r\n\r\n");
        let error = framer.next_message().unwrap_err();
        assert!(matches!(error, FrameError::Malformed { .. }), "{error}");
        assert!(error.answer().is_none());
    }

    /// The configured limit, not the 64 KiB maximum, bounds a head that never ends, and the
    /// request is answered with 513 from the lines read so far.
    #[test]
    fn endless_heads_are_bounded_by_the_configured_limit() {
        let mut endless = StreamFramer::new(4096);
        let start = options("endless", "");
        endless.push(&start.as_bytes()[..start.find("Content-Length").unwrap()]);
        let filler = vec![b'X'; 1024];
        let mut result = Ok(Framed::NeedMore);
        let mut pushed = 0;
        for _ in 0..60 {
            endless.push(b"X-Filler: ");
            endless.push(&filler);
            endless.push(b"\r\n");
            pushed += 1;
            result = endless.next_message();
            if result.is_err() {
                break;
            }
        }
        let error = result.unwrap_err();
        assert!(
            matches!(error, FrameError::TooLarge { limit: 4096, .. }),
            "{error}"
        );
        assert!(pushed <= 4, "rejected after {pushed} KB");
        assert_eq!(status(&error).map(|s| s.0), Some(513));
        let answer = error.answer().unwrap();
        assert_eq!(answer.call_id(), Some("endless"));
    }

    #[test]
    fn content_length_over_the_limit_is_rejected_as_soon_as_the_head_is_known() {
        let mut framer = StreamFramer::new(2048);
        let text = options("huge", "").replace("Content-Length: 0", "Content-Length: 100000");
        framer.push(text.as_bytes());
        let error = framer.next_message().unwrap_err();
        assert!(
            matches!(error, FrameError::TooLarge { size, .. } if size > 100_000),
            "{error}"
        );
        assert_eq!(status(&error).map(|s| s.0), Some(513));
        // A message exactly at the limit passes.
        let digits = 4 - 1; // Content-Length: 0 becomes four digits
        let body = "z".repeat(2048 - options("fits", "").len() - digits);
        let text = options("fits", &body);
        assert_eq!(text.len(), 2048);
        let mut framer = StreamFramer::new(2048);
        framer.push(text.as_bytes());
        assert_eq!(drain(&mut framer).len(), 1);
    }

    #[test]
    fn bad_content_length_gets_400_with_a_reason() {
        for (value, detail) in [("-1", "\"-1\""), ("abc", "\"abc\"")] {
            let mut framer = StreamFramer::new(MAX_MESSAGE_SIZE);
            let text = options("bad", "")
                .replace("Content-Length: 0", &format!("Content-Length: {value}"));
            framer.push(text.as_bytes());
            let error = framer.next_message().unwrap_err();
            assert!(matches!(error, FrameError::ContentLength { .. }), "{error}");
            let (code, reason) = status(&error).unwrap();
            assert_eq!(code, 400);
            assert!(
                reason.contains("Content-Length") && reason.contains(detail),
                "{reason}"
            );
        }
        let mut missing = StreamFramer::new(MAX_MESSAGE_SIZE);
        missing.push(
            options("none", "")
                .replace("Content-Length: 0\r\n", "")
                .as_bytes(),
        );
        let error = missing.next_message().unwrap_err();
        assert!(matches!(error, FrameError::ContentLength { .. }), "{error}");
        assert_eq!(status(&error).map(|s| s.0), Some(400));
    }

    #[test]
    fn acks_and_responses_are_never_answered() {
        let ack = options("ack", "")
            .replace("OPTIONS sip", "ACK sip")
            .replace("1 OPTIONS", "1 ACK")
            .replace("Content-Length: 0", "Content-Length: -1");
        let response = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP a;branch=z9hG4bKr\r\nCall-ID: r\r\n\
CSeq: 1 OPTIONS\r\nFrom: <sip:1@h>;tag=1\r\nTo: <sip:201@h>;tag=2\r\nContent-Length: 99999\r\n\r\n";
        for text in [ack.as_str(), response] {
            let mut framer = StreamFramer::new(4096);
            framer.push(text.as_bytes());
            let error = framer.next_message().unwrap_err();
            assert!(error.answer().is_none(), "{text} was answered");
        }
    }

    #[test]
    fn bare_carriage_returns_are_malformed() {
        let mut framer = StreamFramer::new(MAX_MESSAGE_SIZE);
        framer.push(
            options("cr", "")
                .replace("Call-ID: cr", "Call-ID: c\rr")
                .as_bytes(),
        );
        let error = framer.next_message().unwrap_err();
        assert!(matches!(error, FrameError::Malformed { .. }), "{error}");
    }
}
