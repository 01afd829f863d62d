//! The TOML configuration on arbitrary text: an error names the file and key, never a panic.
#![no_main]

use gateway::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::from_toml(text, Path::new("gateway.toml")) {
            let _ = config.auth.guard();
        }
    }
});
