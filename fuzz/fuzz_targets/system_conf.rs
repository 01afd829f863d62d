//! /etc/dahdi/system.conf parsing on arbitrary text: an error names the line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use telephony_hw::dahdi::system_conf::SystemConf;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SystemConf::parse(text, Path::new("/etc/dahdi/system.conf"));
    }
});
