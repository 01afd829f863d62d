//! Checks and fixtures the tests of this crate and of `tests/` share (the `test-support`
//! feature).

pub mod pki;

use std::io::Write;
use std::process::{Command, Stdio};

/// Validates a dialog-info document against RFC 4235's schema (`tests/fixtures/
/// dialog-info.xsd`) with `xmllint` (Debian's libxml2-utils); panics with xmllint's
/// complaint and the body when it is not valid.
pub fn assert_valid_dialog_info(body: &[u8]) {
    let xsd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/dialog-info.xsd"
    );
    let mut xmllint = Command::new("xmllint")
        .args(["--noout", "--schema", xsd, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xmllint runs (Debian package libxml2-utils; scripts/test.sh installs it)");
    xmllint
        .stdin
        .take()
        .expect("xmllint's stdin")
        .write_all(body)
        .expect("the body reaches xmllint");
    let output = xmllint.wait_with_output().expect("xmllint ends");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(body)
    );
}
