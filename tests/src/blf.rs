//! BLF keys in the end-to-end tests: SIPp subscribers and what they received, every
//! NOTIFY body validated against RFC 4235's schema (`tests/fixtures/dialog-info.xsd`, with
//! xmllint).

use crate::{free_port, Sipp, SippRun};

/// A BLF key of extension `ext` running `scenario` for `watched`'s dialogs, tracing its
/// messages.
pub fn key(scenario: &str, ext: &str, watched: &str) -> Sipp {
    Sipp::new(scenario, free_port())
        .service(watched)
        .credentials(ext, &format!("pw{ext}"))
        .key("caller", ext)
        .trace_messages()
}

/// The dialog-info documents in a SIPp message trace.
pub fn dialog_info_bodies(trace: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut rest = trace;
    while let Some(start) = rest.find("<dialog-info") {
        let doc = &rest[start..];
        let open_end = doc.find('>').expect("the element's start tag ends");
        let end = if doc[..open_end].ends_with('/') {
            open_end + 1
        } else {
            doc.find("</dialog-info>").expect("the element ends") + "</dialog-info>".len()
        };
        bodies.push(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n",
            &doc[..end]
        ));
        rest = &doc[end..];
    }
    bodies
}

/// Waits for `run` and validates every NOTIFY body it received against RFC 4235's schema;
/// returns the bodies.
pub fn wait_validated(run: SippRun) -> Vec<String> {
    let trace = run.messages_path();
    run.wait();
    let text = std::fs::read_to_string(&trace).expect("the message trace");
    let bodies = dialog_info_bodies(&text);
    assert!(
        !bodies.is_empty(),
        "no dialog-info body in {}",
        trace.display()
    );
    for body in &bodies {
        gateway::test_support::assert_valid_dialog_info(body.as_bytes());
    }
    bodies
}

/// A dialog's ids as a NOTIFY gives them (call-id, local-tag, remote-tag), or a Replaces
/// header's (Call-ID, to-tag, from-tag).
pub type Ids = (String, String, String);

/// The ids the key logged.
pub fn logged_ids(run: &SippRun) -> Ids {
    let line = run.wait_for_log_line("watched dialog");
    let ids: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(ids.len(), 3, "{line}");
    (ids[0].into(), ids[1].into(), ids[2].into())
}
