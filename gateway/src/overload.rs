//! Overload control: what a message is worth when the control plane cannot keep up.
//!
//! Messages that keep calls already up going (responses, ACK, CANCEL, BYE, every
//! in-dialog request, and OPTIONS probes, which are cheap and tell monitors we are alive)
//! are [`Class::Priority`]; requests that start something new (INVITE, REGISTER,
//! SUBSCRIBE...) are [`Class::New`], or [`Class::Answering`] when they carry credentials
//! (the second INVITE of a call, after its 407: shedding it would waste the work already
//! done for the call, so under overload new calls are refused at their first INVITE).
//! Each class has its own bounded queue from the fast path (a full queue drops and
//! counts); priority messages are always taken first, then answering ones, and a
//! new request that waited longer than the configured delay is answered
//! `503 Service Unavailable` with `Retry-After` (RFC 3261 §21.5.4; RFC 7339 is the idea of
//! the signal) instead of being served late, so a flood of new calls never delays the calls
//! already up and never makes every caller wait seconds.

use fastpath::preparse::{Kind, PreParsed};
use std::time::{Duration, Instant};

/// How urgent a message is under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Keeps existing calls working: served first, never shed.
    Priority,
    /// Starts something new and answers a challenge (the call is under way): served
    /// before [`Class::New`], shed with 503 when it waited too long.
    Answering,
    /// Starts something new: shed with 503 when it waited too long.
    New,
}

/// Methods that never start anything new.
const PRIORITY_METHODS: [&str; 8] = [
    "ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "INFO", "NOTIFY", "OPTIONS",
];

/// The class of a pre-parsed message.
pub fn class_of(keys: &PreParsed<'_>) -> Class {
    match keys.kind {
        Kind::Response(_) => Class::Priority,
        Kind::Request(_) if keys.to_tag.is_some() => Class::Priority,
        Kind::Request(method)
            if PRIORITY_METHODS
                .iter()
                .any(|m| m.eq_ignore_ascii_case(method)) =>
        {
            Class::Priority
        }
        Kind::Request(_) if keys.has_credentials => Class::Answering,
        Kind::Request(_) => Class::New,
    }
}

/// When a new request is served and when it is answered 503 instead.
#[derive(Debug, Clone, Copy)]
pub struct Shedder {
    max_queue_delay: Duration,
}

impl Shedder {
    /// Sheds new requests that waited longer than `max_queue_delay`.
    pub fn new(max_queue_delay: Duration) -> Self {
        Shedder { max_queue_delay }
    }

    /// True when a new request received at `received` is still worth serving at `now`.
    pub fn serves(&self, now: Instant, received: Instant) -> bool {
        now.saturating_duration_since(received) <= self.max_queue_delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastpath::preparse::preparse;

    fn class(start: &str, to: &str) -> Class {
        let text = format!(
            "{start}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: {to}\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n"
        );
        class_of(&preparse(text.as_bytes()).unwrap())
    }

    #[test]
    fn calls_already_up_come_first() {
        assert_eq!(class("SIP/2.0 200 OK", "<sip:a@h>"), Class::Priority);
        assert_eq!(
            class("BYE sip:a@h SIP/2.0", "<sip:a@h>;tag=1"),
            Class::Priority
        );
        assert_eq!(class("ACK sip:a@h SIP/2.0", "<sip:a@h>"), Class::Priority);
        assert_eq!(
            class("CANCEL sip:a@h SIP/2.0", "<sip:a@h>"),
            Class::Priority
        );
        assert_eq!(
            class("INVITE sip:a@h SIP/2.0", "<sip:a@h>;tag=1"),
            Class::Priority,
            "re-INVITE"
        );
        assert_eq!(class("OPTIONS sip:h SIP/2.0", "<sip:h>"), Class::Priority);
        assert_eq!(class("INVITE sip:a@h SIP/2.0", "<sip:a@h>"), Class::New);
        assert_eq!(class("REGISTER sip:h SIP/2.0", "<sip:a@h>"), Class::New);
        assert_eq!(class("SUBSCRIBE sip:a@h SIP/2.0", "<sip:a@h>"), Class::New);
        assert_eq!(
            class(
                "INVITE sip:a@h SIP/2.0",
                "<sip:a@h>\r\nProxy-Authorization: Digest username=\"a\""
            ),
            Class::Answering,
            "a call answering its challenge"
        );
    }

    #[test]
    fn a_new_request_that_waited_too_long_is_shed() {
        let shedder = Shedder::new(Duration::from_millis(100));
        let received = Instant::now();
        assert!(shedder.serves(received + Duration::from_millis(100), received));
        assert!(!shedder.serves(received + Duration::from_millis(101), received));
    }
}
