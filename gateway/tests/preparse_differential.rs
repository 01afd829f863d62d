//! Differential test of the fast path's pre-parser against the full SIP parser: on the RFC
//! 4475 and RFC 5118 messages and thousands of mutations of them, whenever the control plane
//! would route a message (the full parser reads it and validation finds it well-formed), the
//! pre-parser must read it too and extract the same method or status, Call-ID, CSeq and top
//! Via branch; and whenever the control plane would answer a request it cannot parse (a
//! 400), the pre-parser must pass it on rather than drop it.

mod common;

use common::{fixtures, Rng};
use fastpath::preparse::{preparse, Kind, PreParseError};
use gateway::sip::message::SipMessage;
use gateway::sip::validate::{
    reject_unparseable_datagram, validate_request, validate_response, DEFAULT_CAPABILITIES,
};

/// The messages the control plane would route: the full parser reads them, and validation
/// does not find them malformed (it may still refuse them: 405, 416, 420, 505...).
fn routable(bytes: &[u8]) -> Option<SipMessage> {
    let full = SipMessage::parse_datagram(bytes).ok()?;
    let well_formed = if full.is_request() {
        validate_request(&full, &DEFAULT_CAPABILITIES).map_or_else(|r| r.code != 400, |()| true)
    } else {
        validate_response(&full).is_ok()
    };
    well_formed.then_some(full)
}

/// A request the full parser refuses but the control plane answers (400) that the
/// pre-parser would drop: the sender would get silence instead of its answer. Not counted:
/// a request in which the pre-parser finds no Via (the two read a mangled Via line, or a
/// bare line feed before it, differently, and a Via is what the answer is routed by).
fn silenced(bytes: &[u8]) -> Option<String> {
    let error = SipMessage::parse_datagram(bytes).err()?;
    reject_unparseable_datagram(bytes, &error)?;
    match preparse(bytes) {
        Err(PreParseError::Via) => None,
        Err(e) if !e.answerable() => Some(format!(
            "answered {error}, but the pre-parser drops it ({e})"
        )),
        _ => None,
    }
}

/// None when the two agree (or the control plane would not route the message); else what
/// differs.
fn disagreement(bytes: &[u8]) -> Option<String> {
    if let Some(problem) = silenced(bytes) {
        return Some(problem);
    }
    let full = routable(bytes)?;
    let (call_id, cseq, _) = (full.call_id()?, full.cseq()?, full.top_via()?);
    let pre = match preparse(bytes) {
        Ok(pre) => pre,
        Err(e) => return Some(format!("pre-parser refused it: {e}")),
    };
    let kind = match full.status() {
        Some(status) => format!("response {status}"),
        None => format!("request {}", full.request_line()?.method),
    };
    let pre_kind = match pre.kind {
        Kind::Request(method) => format!("request {method}"),
        Kind::Response(status) => format!("response {status}"),
    };
    let checks = [
        ("kind", kind, pre_kind),
        ("Call-ID", call_id.to_string(), pre.call_id.to_string()),
        ("CSeq number", cseq.cseq.to_string(), pre.cseq.to_string()),
        (
            "CSeq method",
            cseq.method.to_string(),
            pre.cseq_method.to_string(),
        ),
        (
            "branch",
            format!("{:?}", full.top_branch()),
            format!("{:?}", pre.branch.map(str::to_string)),
        ),
        (
            "To tag",
            full.to_header()
                .and_then(|to| to.tag().map(|tag| format!("tag {tag}")))
                .unwrap_or_else(|| "no tag".into()),
            pre.to_tag
                .map(|tag| format!("tag {tag}"))
                .unwrap_or_else(|| "no tag".into()),
        ),
    ];
    // Whitespace inside these values is invalid (RFC 3261: callid = word ["@" word]); the
    // full parser canonicalises it and the pre-parser keeps the bytes, both deterministically,
    // so a call still maps to one shard: compare without it. ezk also canonicalises the case
    // of known methods in CSeq.
    let same = |a: &str, b: &str| {
        let squeeze = |s: &str| s.split_whitespace().collect::<String>();
        squeeze(a) == squeeze(b)
    };
    checks
        .iter()
        .find(|(what, a, b)| {
            if *what == "CSeq method" {
                !a.eq_ignore_ascii_case(b)
            } else {
                !same(a, b)
            }
        })
        .map(|(what, a, b)| format!("{what}: full parser {a}, pre-parser {b}"))
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut all = fixtures("rfc4475");
    all.extend(fixtures("rfc5118"));
    all
}

#[test]
fn the_torture_messages_agree() {
    let mut failures = Vec::new();
    for (name, bytes) in corpus() {
        if let Some(problem) = disagreement(&bytes) {
            failures.push(format!("{name}: {problem}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn thousands_of_mutations_agree() {
    let mut rng = Rng(0xfa57);
    let mut failures = Vec::new();
    let mut compared = 0;
    for (name, original) in corpus() {
        for round in 0..200 {
            let mut bytes = original.clone();
            let at = rng.next() as usize % bytes.len();
            match round % 5 {
                0 => bytes.truncate(at),
                1 => bytes[at] = rng.next() as u8,
                2 => {
                    let filler = [
                        b' ', b'\t', b'\r', b'\n', b';', b',', b'"', b'<', b':', b'=',
                    ];
                    bytes.insert(at, filler[rng.next() as usize % filler.len()]);
                }
                3 => {
                    bytes.drain(at..(at + 6).min(bytes.len()));
                }
                _ => bytes[at] = bytes[at].to_ascii_uppercase(),
            }
            if routable(&bytes).is_some() {
                compared += 1;
            }
            if let Some(problem) = disagreement(&bytes) {
                failures.push(format!(
                    "{name} round {round}: {problem}\n{:?}",
                    String::from_utf8_lossy(&bytes)
                ));
            }
        }
    }
    assert!(compared > 3000, "only {compared} mutations parsed");
    assert!(
        failures.is_empty(),
        "{} disagreements, first:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
}
