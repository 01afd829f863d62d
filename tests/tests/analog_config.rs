//! Analog port configuration at start-up: /etc/dahdi/system.conf with the gateway's own
//! overrides, and the classic mistakes refused with a message that names them.

use e2e_tests::{Gateway, GatewayOptions};

fn with_system_conf(text: &str, extra: &str) -> (tempfile::TempDir, GatewayOptions) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("system.conf");
    std::fs::write(&path, text).unwrap();
    let options = GatewayOptions {
        analog: Some(format!(
            "[analog]\nsystem_conf = \"{}\"\ndahdi_dir = \"{}\"\n{extra}",
            path.display(),
            dir.path().join("no-dahdi-here").display()
        )),
        ..GatewayOptions::default()
    };
    (dir, options)
}

#[test]
fn ports_come_from_system_conf_with_overrides() {
    let (_dir, options) = with_system_conf(
        "fxoks=1-2\nfxsks=3\nloadzone=us\n",
        "[[analog.port]]\nchannel = 3\nzone = \"de\"\n[[analog.port]]\nchannel = 4\nkind = \"line\"\n",
    );
    let gateway = Gateway::start(options);
    // The analog worker starts right after the SIP sockets: wait for its line.
    gateway.wait_for_log("running on the emulated analog card (demo mode)");
    let log = gateway.log();
    assert!(
        log.contains("analog port 1: phone port (FxoKs signalling), tone zone us"),
        "{log}"
    );
    assert!(
        log.contains("analog port 3: line port (FxsKs signalling), tone zone de"),
        "{log}"
    );
    assert!(log.contains("analog port 4: line port"), "{log}");
    assert!(
        log.contains("no-dahdi-here: running on the emulated analog card (demo mode)"),
        "{log}"
    );
}

#[test]
fn a_missing_tone_zone_and_a_broken_system_conf_are_refused() {
    let (_dir, options) = with_system_conf("fxoks=1\n", "");
    let log = Gateway::start_failing(options);
    assert!(log.contains("no tone zone"), "{log}");
    let (_dir, options) = with_system_conf("fxoks=1-2\nfxsks=2\nloadzone=us\n", "");
    let log = Gateway::start_failing(options);
    assert!(
        log.contains("system.conf:2") && log.contains("already"),
        "{log}"
    );
    // The quick-start config's extension 101 sits on channel 1: here a line port.
    let (_dir, options) = with_system_conf("fxsks=1\nfxoks=2\nloadzone=us\n", "");
    let log = Gateway::start_failing(options);
    assert!(
        log.contains("extension 101: analog_channel 1 is a line port"),
        "{log}"
    );
}
