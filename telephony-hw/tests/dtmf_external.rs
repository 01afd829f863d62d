//! Cross-checks with independent programs from Debian: `multimon-ng` decodes the digits our
//! generator makes, and our detector decodes DTMF synthesised by `sox`.

use std::path::Path;
use std::process::Command;
use telephony_hw::dsp::dtmf::{detect_digits, frequencies, DtmfGenerator, DtmfThresholds};

const DIGITS: &str = "123A456B789C*0#D";

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} not found: install it (apt-get install {tool}) or run scripts/test.sh"
    );
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn write_raw(path: &Path, samples: &[i16]) {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn multimon_ng_decodes_our_digits() {
    require("sox");
    require("multimon-ng");
    let dir = tempfile::tempdir().unwrap();
    let (ours, resampled) = (dir.path().join("ours.raw"), dir.path().join("22k.raw"));
    let mut generator = DtmfGenerator::new(-8.0, -6.0);
    write_raw(&ours, &generator.dial(DIGITS, 80, 80));
    // multimon-ng reads raw s16le at 22050 Hz.
    run(Command::new("sox")
        .args([
            "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1",
        ])
        .arg(&ours)
        .args([
            "-t", "raw", "-r", "22050", "-e", "signed", "-b", "16", "-c", "1",
        ])
        .arg(&resampled));
    let text = run(Command::new("multimon-ng")
        .args(["-q", "-a", "DTMF", "-t", "raw"])
        .arg(&resampled));
    let decoded: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("DTMF: "))
        .filter_map(|d| d.trim().chars().next())
        .collect();
    assert_eq!(decoded, DIGITS, "multimon-ng printed:\n{text}");
}

#[test]
fn we_decode_digits_synthesised_by_sox() {
    require("sox");
    let dir = tempfile::tempdir().unwrap();
    let mut signal: Vec<i16> = Vec::new();
    for digit in DIGITS.chars() {
        let (low, high) = frequencies(digit).unwrap();
        let path = dir.path().join(format!("{}.raw", digit as u32));
        run(Command::new("sox")
            .args([
                "-n", "-r", "8000", "-c", "1", "-b", "16", "-e", "signed", "-t", "raw",
            ])
            .arg(&path)
            .args(["synth", "0.07", "sine"])
            .arg(low.to_string())
            .arg("sine")
            .arg(high.to_string())
            .args(["channels", "1", "pad", "0", "0.07"]));
        let bytes = std::fs::read(&path).unwrap();
        signal.extend(
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
    }
    assert_eq!(detect_digits(&signal, DtmfThresholds::default()), DIGITS);
}
