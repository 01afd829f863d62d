//! Where a call goes: an extension's registered SIP phones or its analog phone port, every
//! member of a call group, or an analog line (trunk) for numbers starting with its dial
//! prefix. Analog ports are reached through the in-process analog user agent.

use super::{Engine, Now};
use crate::config::ExtensionConfig;
use crate::registrar::Binding;
use crate::transport::ANALOG_PEER;

/// The host part of analog port contacts; the analog user agent reads `channel=`.
pub const ANALOG_HOST: &str = "analog.invalid";

/// The contact of analog port `channel` for calls to `user` (an extension, or the number a
/// line dials).
pub fn analog_contact(user: &str, channel: u32) -> String {
    format!("sip:{user}@{ANALOG_HOST};channel={channel}")
}

/// A binding that never expires, for an analog port.
fn analog_binding(user: &str, channel: u32) -> Binding {
    Binding {
        contact: analog_contact(user, channel),
        expires_at: u64::MAX,
        call_id: String::new(),
        cseq: 0,
        source: ANALOG_PEER,
        q: None,
        user_agent: None,
    }
}

impl Engine {
    /// Whether calls to `called` have somewhere to go (else 404).
    pub(super) fn is_routable(&self, called: &str) -> bool {
        self.config.extension(called).is_some()
            || self.config.is_call_group(called)
            || self.trunk_for(called).is_some()
    }

    /// The line port and the number to dial for `called`, when it starts with a dial prefix.
    fn trunk_for(&self, called: &str) -> Option<(u32, String)> {
        self.config.trunks().find_map(|port| {
            let number = called.strip_prefix(port.dial_prefix.as_deref()?)?;
            (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
                .then(|| (port.channel, number.to_string()))
        })
    }

    fn extension_contacts(&self, now: Now, extension: &ExtensionConfig) -> Vec<Binding> {
        match extension.analog_channel {
            Some(channel) => vec![analog_binding(&extension.number, channel)],
            None => self.registrar.lookup(now.unix(), &extension.number),
        }
    }

    /// Every contact a call to `called` rings, each with the extension it belongs to (None
    /// for a line port dialled out by prefix); an extension beats a group of the same name,
    /// a group beats a dial prefix.
    pub(super) fn contacts_for(&self, now: Now, called: &str) -> Vec<(Option<String>, Binding)> {
        let of = |extension: &ExtensionConfig| -> Vec<(Option<String>, Binding)> {
            self.extension_contacts(now, extension)
                .into_iter()
                .map(|binding| (Some(extension.number.clone()), binding))
                .collect()
        };
        if let Some(extension) = self.config.extension(called) {
            return of(extension);
        }
        if self.config.is_call_group(called) {
            return self
                .config
                .call_group_members(called)
                .flat_map(of)
                .collect();
        }
        self.trunk_for(called)
            .map(|(channel, number)| vec![(None, analog_binding(&number, channel))])
            .unwrap_or_default()
    }

    /// The call groups a call to `called` rings in (what pickers may pick it up by).
    pub(super) fn call_groups_of(&self, called: &str) -> Vec<String> {
        match self.config.extension(called) {
            Some(extension) => extension.call_groups.clone(),
            None if self.config.is_call_group(called) => vec![called.to_string()],
            None => Vec::new(),
        }
    }
}
