//! What a running gateway takes from its config file read again (SIGHUP, `gateway status
//! reload`): the SIP extensions (added, removed, passwords, groups, pickup policy, BLF
//! privacy, SRTP policy) and `[calls]`, which new calls follow while the calls up go on.
//! Every other section is bound into sockets, threads or the store at start: a change
//! there is reported as needing a restart and the running value is kept. The analog
//! extensions are tied to their ports' dial plans and user agent, so a change to one of
//! them refuses the whole reload.

use super::{Config, ExtensionConfig};

/// A config taken for new calls.
#[derive(Debug)]
pub struct Reloaded {
    /// The running config with the reloadable parts of the new one.
    pub config: Config,
    /// What changed, one line each (`extension 205 added`).
    pub changed: Vec<String>,
    /// Sections that changed in the file but need a restart (the running ones are kept).
    pub kept: Vec<&'static str>,
}

/// Why a reload took nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The running config was not loaded from a file.
    #[error("the running config has no file to read again")]
    NoFile,
    /// The file is unreadable or invalid: its error names the file, line and field.
    #[error(transparent)]
    Invalid(#[from] super::ConfigError),
    /// An analog extension changed.
    #[error("analog extension {0} changed: the analog ports take it at a restart only (the running config is kept)")]
    AnalogExtension(String),
}

/// The analog part of an extension, which only a restart changes.
fn analog_part(extension: &ExtensionConfig) -> Option<String> {
    extension
        .analog_channel
        .map(|channel| format!("{} {channel} {:?}", extension.number, extension.srtp))
}

impl Config {
    /// Reads the config file again and takes what can change while running.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let path = self.source().ok_or(ReloadError::NoFile)?;
        let new = Config::load(path)?;
        self.take_reloadable(new)
    }

    /// This config with the reloadable parts of `new`.
    pub fn take_reloadable(&self, new: Config) -> Result<Reloaded, ReloadError> {
        let analog = |config: &Config| -> Vec<String> {
            let mut parts: Vec<String> = config.extensions.iter().filter_map(analog_part).collect();
            parts.sort();
            parts
        };
        let (running, read) = (analog(self), analog(&new));
        if let Some(changed) = running
            .iter()
            .chain(&read)
            .find(|part| !running.contains(part) || !read.contains(part))
        {
            let number = changed.split(' ').next().unwrap_or_default().to_string();
            return Err(ReloadError::AnalogExtension(number));
        }
        let differ = |running: &dyn std::fmt::Debug, read: &dyn std::fmt::Debug| {
            format!("{running:?}") != format!("{read:?}")
        };
        let mut changed = Vec::new();
        for old in &self.extensions {
            match new.extension(&old.number) {
                None => changed.push(format!("extension {} removed", old.number)),
                Some(now) if differ(now, old) => {
                    changed.push(format!("extension {} changed", old.number))
                }
                Some(_) => {}
            }
        }
        for added in &new.extensions {
            if self.extension(&added.number).is_none() {
                changed.push(format!("extension {} added", added.number));
            }
        }
        if differ(&self.calls, &new.calls) {
            changed.push("[calls] changed".into());
        }
        let sections: [(&'static str, bool); 15] = [
            ("[node]", differ(&self.node, &new.node)),
            ("[sip]", differ(&self.sip, &new.sip)),
            ("[auth]", differ(&self.auth, &new.auth)),
            ("[registrar]", differ(&self.registrar, &new.registrar)),
            ("[features]", differ(&self.features, &new.features)),
            ("[database]", differ(&self.database, &new.database)),
            ("[analog]", differ(&self.analog, &new.analog)),
            ("[fastpath]", differ(&self.fastpath, &new.fastpath)),
            ("[media]", differ(&self.media, &new.media)),
            ("[overload]", differ(&self.overload, &new.overload)),
            ("[tcp]", differ(&self.tcp, &new.tcp)),
            ("[tls]", differ(&self.tls, &new.tls)),
            (
                "[subscriptions]",
                differ(&self.subscriptions, &new.subscriptions),
            ),
            ("[status]", differ(&self.status, &new.status)),
            ("[trace]", differ(&self.trace, &new.trace)),
        ];
        let kept = sections
            .into_iter()
            .filter(|(_, differs)| *differs)
            .map(|(name, _)| name)
            .collect();
        let mut config = self.clone();
        config.extensions = new.extensions;
        config.directory = new.directory;
        config.calls = new.calls;
        Ok(Reloaded {
            config,
            changed,
            kept,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[sip]
listen = "127.0.0.1:5060"
[database]
path = "gw.db"
[[extension]]
number = "201"
password = "old"
pickup_groups = ["sales"]
[[extension]]
number = "202"
password = "x"
"#;

    fn config(text: &str) -> Config {
        Config::from_toml(text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn extensions_change_and_restart_only_sections_are_kept() {
        let running = config(BASE);
        let edited = BASE
            .replace("password = \"old\"", "password = \"new\"")
            .replace(
                "number = \"202\"\npassword = \"x\"\n",
                "number = \"205\"\npassword = \"y\"\n",
            )
            .replace("127.0.0.1:5060", "127.0.0.1:5070");
        let reloaded = running.take_reloadable(config(&edited)).unwrap();
        assert_eq!(
            reloaded.changed,
            [
                "extension 201 changed",
                "extension 202 removed",
                "extension 205 added"
            ]
        );
        assert_eq!(reloaded.kept, ["[sip]"]);
        let config = reloaded.config;
        assert_eq!(config.listen_addr().port(), 5060, "the listener stays");
        assert_eq!(
            config.extension("201").unwrap().password.as_deref(),
            Some("new")
        );
        assert!(config.extension("202").is_none());
        assert!(
            config.extension("205").is_some(),
            "the directory is the new one"
        );
    }

    #[test]
    fn an_analog_extension_change_refuses_the_reload() {
        let with_analog = |channel: u32| {
            format!("{BASE}[[extension]]\nnumber = \"210\"\nanalog_channel = {channel}\n[analog]\n")
        };
        let running = config(&with_analog(1));
        let error = running
            .take_reloadable(config(&with_analog(2)))
            .unwrap_err();
        assert!(
            error.to_string().contains("analog extension 210"),
            "{error}"
        );
        let same = running.take_reloadable(config(&with_analog(1))).unwrap();
        assert!(same.changed.is_empty() && same.kept.is_empty());
    }
}
