//! The extensions by number and by call group, indexed once when the configuration is
//! loaded: the engine looks extensions up several times per request, and a scan of every
//! extension per lookup grows with the office.

use super::ExtensionConfig;
use std::collections::HashMap;

/// Indexes into the configuration's extension list.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    by_number: HashMap<String, usize>,
    by_analog_channel: HashMap<u32, usize>,
    /// Each call group's members, in the order of the file.
    members: HashMap<String, Vec<usize>>,
}

impl Directory {
    /// The indexes of `extensions` (the first of a number wins; the file check refuses
    /// repeated numbers anyway).
    pub fn new(extensions: &[ExtensionConfig]) -> Directory {
        let mut directory = Directory::default();
        for (index, extension) in extensions.iter().enumerate() {
            directory
                .by_number
                .entry(extension.number.clone())
                .or_insert(index);
            if let Some(channel) = extension.analog_channel {
                directory.by_analog_channel.entry(channel).or_insert(index);
            }
            for group in &extension.call_groups {
                let members = directory.members.entry(group.clone()).or_default();
                if !members.contains(&index) {
                    members.push(index);
                }
            }
        }
        directory
    }

    /// The position of extension `number`.
    pub fn number(&self, number: &str) -> Option<usize> {
        self.by_number.get(number).copied()
    }

    /// The position of the extension on analog phone port `channel`.
    pub fn analog_channel(&self, channel: u32) -> Option<usize> {
        self.by_analog_channel.get(&channel).copied()
    }

    /// The positions of call group `group`'s members (empty: no such group).
    pub fn members(&self, group: &str) -> &[usize] {
        self.members.get(group).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn extensions_are_found_by_number_channel_and_group_as_the_file_lists_them() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/office.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config = Config::from_toml(&text, &path).unwrap();
        for extension in config.extensions() {
            let found = config.extension(&extension.number).unwrap();
            assert_eq!(found.number, extension.number);
            if let Some(channel) = extension.analog_channel {
                assert_eq!(
                    config.analog_extension(channel).unwrap().number,
                    extension.number
                );
            }
            for group in &extension.call_groups {
                assert!(config
                    .call_group_members(group)
                    .any(|m| m.number == extension.number));
            }
        }
        let sales: Vec<&str> = config
            .call_group_members("sales")
            .map(|e| e.number.as_str())
            .collect();
        let expected: Vec<&str> = config
            .extensions()
            .iter()
            .filter(|e| e.call_groups.iter().any(|g| g == "sales"))
            .map(|e| e.number.as_str())
            .collect();
        assert_eq!(sales, expected, "members in file order");
        assert!(config.extension("999").is_none());
        assert!(!config.is_call_group("nobody"));
    }
}
