//! Content-Length framing of a SIP byte stream (TCP): split a stream into whole messages,
//! whatever the read boundaries (two messages in one read, one message across reads).

use super::message::{Framing, ParseError, SipMessage, MAX_MESSAGE_SIZE};
use bytes::{Buf, BytesMut};

/// Accumulates bytes from a stream and yields complete messages.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buffer: BytesMut,
}

/// What the framer found in the buffered bytes.
#[derive(Debug)]
pub enum Framed {
    /// A whole message was parsed (boxed: a message is large, `NeedMore` is not).
    Message(Box<SipMessage>),
    /// More bytes are needed.
    NeedMore,
}

impl StreamFramer {
    /// A new, empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Takes the next whole message out of the buffer. An error means the stream is garbage
    /// (or hostile) and the connection should be closed.
    pub fn next_message(&mut self) -> Result<Framed, ParseError> {
        // RFC 5626 keep-alives (CRLF / CRLFCRLF) between messages are skipped.
        let leading = self
            .buffer
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(self.buffer.len());
        self.buffer.advance(leading);
        if self.buffer.is_empty() {
            return Ok(Framed::NeedMore);
        }
        match SipMessage::parse_with(&self.buffer, Framing::Stream) {
            Ok((message, used)) => {
                self.buffer.advance(used);
                Ok(Framed::Message(Box::new(message)))
            }
            Err(ParseError::Incomplete) | Err(ParseError::BodyTruncated { .. }) => {
                if self.buffer.len() > MAX_MESSAGE_SIZE {
                    Err(ParseError::TooLarge(self.buffer.len()))
                } else {
                    Ok(Framed::NeedMore)
                }
            }
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(call_id: &str, body: &str) -> String {
        format!(
            "OPTIONS sip:201@h SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK{call_id}\r\nCall-ID: {call_id}\r\n\
CSeq: 1 OPTIONS\r\nFrom: <sip:1@h>;tag=1\r\nTo: <sip:201@h>\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn drain(framer: &mut StreamFramer) -> Vec<SipMessage> {
        let mut out = Vec::new();
        while let Framed::Message(m) = framer.next_message().unwrap() {
            out.push(*m);
        }
        out
    }

    #[test]
    fn two_messages_in_one_read() {
        let mut framer = StreamFramer::new();
        framer.push(format!("{}{}", options("one", "abc"), options("two", "")).as_bytes());
        let got = drain(&mut framer);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].call_id(), Some("one"));
        assert_eq!(&got[0].body[..], b"abc");
        assert_eq!(got[1].call_id(), Some("two"));
    }

    #[test]
    fn one_message_across_reads_byte_by_byte() {
        let mut framer = StreamFramer::new();
        let text = options("split", "v=0\r\n");
        let mut got = Vec::new();
        for byte in text.as_bytes() {
            framer.push(std::slice::from_ref(byte));
            got.extend(drain(&mut framer));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].body[..], b"v=0\r\n");
    }

    #[test]
    fn garbage_is_an_error_and_endless_heads_are_bounded() {
        let mut framer = StreamFramer::new();
        framer.push(b"\x00\x01garbage garbage\r\n\r\n");
        assert!(framer.next_message().is_err());
        let mut endless = StreamFramer::new();
        endless.push(b"OPTIONS sip:a@h SIP/2.0\r\n");
        let filler = vec![b'X'; 1024];
        let mut result = Ok(Framed::NeedMore);
        for _ in 0..80 {
            endless.push(b"X-Filler: ");
            endless.push(&filler);
            endless.push(b"\r\n");
            result = endless.next_message();
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(ParseError::TooLarge(_))));
    }
}
