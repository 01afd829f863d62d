//! `/etc/dahdi/system.conf`, the way dahdi_cfg reads it, for the analog ports: which
//! channels have which signalling, and the tone zones. A phone port (FXS hardware) uses FXO
//! signalling (`fxoks=`); a line port (FXO hardware) uses FXS signalling (`fxsks=`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A channel's signalling as system.conf names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalling {
    /// `fxoks`: phone port, kewlstart (the usual choice).
    FxoKs,
    /// `fxols`: phone port, loopstart.
    FxoLs,
    /// `fxogs`: phone port, groundstart.
    FxoGs,
    /// `fxsks`: line port, kewlstart.
    FxsKs,
    /// `fxsls`: line port, loopstart.
    FxsLs,
    /// `fxsgs`: line port, groundstart.
    FxsGs,
}

impl Signalling {
    /// True for phone ports (an analog phone plugs in; FXO signalling).
    pub fn is_phone_port(self) -> bool {
        matches!(
            self,
            Signalling::FxoKs | Signalling::FxoLs | Signalling::FxoGs
        )
    }

    /// The DAHDI `sigtype` value.
    pub fn sigtype(self) -> i32 {
        use super::abi::sig;
        match self {
            Signalling::FxoKs => sig::FXOKS,
            Signalling::FxoLs => sig::FXOLS,
            Signalling::FxoGs => sig::FXOGS,
            Signalling::FxsKs => sig::FXSKS,
            Signalling::FxsLs => sig::FXSLS,
            Signalling::FxsGs => sig::FXSGS,
        }
    }

    fn from_key(key: &str) -> Option<Signalling> {
        Some(match key {
            "fxoks" => Signalling::FxoKs,
            "fxols" => Signalling::FxoLs,
            "fxogs" => Signalling::FxoGs,
            "fxsks" => Signalling::FxsKs,
            "fxsls" => Signalling::FxsLs,
            "fxsgs" => Signalling::FxsGs,
            _ => return None,
        })
    }
}

/// What system.conf says about analog channels and tone zones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SystemConf {
    /// Signalling per channel number.
    pub channels: BTreeMap<u32, Signalling>,
    /// Zones loaded into the kernel (`loadzone=`).
    pub load_zones: Vec<String>,
    /// The default zone (`defaultzone=`).
    pub default_zone: Option<String>,
}

/// A system.conf problem, with the file and line.
#[derive(Debug, thiserror::Error)]
pub enum SystemConfError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line that does not parse.
    #[error("{path}:{line}: {problem}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// The highest channel number DAHDI has (`DAHDI_MAX_CHANNELS` in the kernel is 1024).
pub const MAX_CHANNEL: u32 = 1024;

/// Parses `1-4,6,8-9` into channel numbers.
fn channel_list(text: &str) -> Result<Vec<u32>, String> {
    let mut channels = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |n: &str| {
            n.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| (1..=MAX_CHANNEL).contains(&n))
                .ok_or_else(|| format!("{n:?} is not a channel number (1 to {MAX_CHANNEL})"))
        };
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (number(from)?, number(to)?);
                if from > to {
                    return Err(format!("range {part:?} runs backwards"));
                }
                channels.extend(from..=to);
            }
            None => channels.push(number(part)?),
        }
    }
    if channels.is_empty() {
        return Err("no channels listed".into());
    }
    Ok(channels)
}

impl SystemConf {
    /// Reads and parses a system.conf file.
    pub fn load(path: &Path) -> Result<SystemConf, SystemConfError> {
        let text = std::fs::read_to_string(path).map_err(|source| SystemConfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SystemConf::parse(&text, path)
    }

    /// Parses system.conf text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<SystemConf, SystemConfError> {
        let mut conf = SystemConf::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let error = |problem: String| SystemConfError::Syntax {
                path: path.to_path_buf(),
                line: index + 1,
                problem,
            };
            let Some((key, value)) = line.split_once('=') else {
                return Err(error(format!("expected key=value, found {line:?}")));
            };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            if let Some(signalling) = Signalling::from_key(&key) {
                for channel in channel_list(value).map_err(|p| error(format!("{key}: {p}")))? {
                    if let Some(previous) = conf.channels.insert(channel, signalling) {
                        return Err(error(format!(
                            "channel {channel} is already configured as {previous:?}"
                        )));
                    }
                }
            } else if key == "loadzone" {
                conf.load_zones.extend(
                    value
                        .split(',')
                        .map(|z| z.trim().to_string())
                        .filter(|z| !z.is_empty()),
                );
            } else if key == "defaultzone" {
                conf.default_zone = Some(value.to_string());
            }
            // Other keys (span, bchan, echocanceller, ...) concern digital spans.
        }
        Ok(conf)
    }

    /// The zone ports use: `defaultzone`, else the first `loadzone`.
    pub fn zone(&self) -> Option<&str> {
        self.default_zone
            .as_deref()
            .or_else(|| self.load_zones.first().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TDM400: &str = "# a TDM400P with two FXS and two FXO modules\n\
span=1,0,0,esf,b8zs   # digital, ignored\n\
fxoks=1-2\n\
fxsks=3,4\n\
echocanceller=oslec,1-4\n\
loadzone = us,de\n\
defaultzone=us\n";

    /// Found by the system_conf fuzz target: `fxsks = 5-4000000000` made the parser list
    /// four billion channels (out of memory) instead of naming the line.
    #[test]
    fn a_huge_channel_range_is_an_error_not_an_allocation() {
        let text = "fxoks = 1-2\nfxsks = 3,5-4000000000\n";
        let error = SystemConf::parse(text, Path::new("system.conf")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("system.conf:2:") && message.contains("1 to 1024"),
            "{message}"
        );
        assert!(SystemConf::parse("fxoks = 1-1024\n", Path::new("s")).is_ok());
    }

    #[test]
    fn reads_the_analog_ports_and_zones() {
        let conf = SystemConf::parse(TDM400, Path::new("system.conf")).unwrap();
        assert_eq!(conf.channels[&1], Signalling::FxoKs);
        assert!(conf.channels[&2].is_phone_port());
        assert_eq!(conf.channels[&4], Signalling::FxsKs);
        assert!(!conf.channels[&3].is_phone_port());
        assert_eq!(conf.load_zones, ["us", "de"]);
        assert_eq!(conf.zone(), Some("us"));
        assert_eq!(Signalling::FxoKs.sigtype(), 0x1020);
    }

    #[test]
    fn errors_name_file_and_line() {
        let twice = SystemConf::parse("fxoks=1-2\nfxsks=2\n", Path::new("/etc/dahdi/system.conf"));
        let message = twice.unwrap_err().to_string();
        assert!(
            message.starts_with("/etc/dahdi/system.conf:2:") && message.contains("already"),
            "{message}"
        );
        let bad = SystemConf::parse("fxoks=4-1\n", Path::new("s.conf"))
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("s.conf:1") && bad.contains("backwards"),
            "{bad}"
        );
        let junk = SystemConf::parse("\nfxoks\n", Path::new("s.conf"))
            .unwrap_err()
            .to_string();
        assert!(junk.contains("s.conf:2"), "{junk}");
        let missing = SystemConf::load(Path::new("/nonexistent/system.conf"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nonexistent/system.conf"), "{missing}");
    }
}
