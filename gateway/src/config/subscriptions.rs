//! `[subscriptions]`: the dialog event package (BLF keys, RFC 6665 + RFC 4235).

use serde::Deserialize;

/// `[subscriptions]`: how long dialog subscriptions last and how many there may be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsConfig {
    /// Shortest subscription accepted (423 with Min-Expires below it).
    #[serde(default = "default_min_expires")]
    pub min_expires_secs: u32,
    /// Granted when the SUBSCRIBE names no expiry.
    #[serde(default = "default_default_expires")]
    pub default_expires_secs: u32,
    /// Longest subscription granted (longer requests are shortened).
    #[serde(default = "default_max_expires")]
    pub max_expires_secs: u32,
    /// Most subscriptions one extension may hold (more: 403).
    #[serde(default = "default_max_per_subscriber")]
    pub max_per_subscriber: usize,
    /// Most subscriptions in total (more: 503 with Retry-After).
    #[serde(default = "default_max_total")]
    pub max_total: usize,
    /// Whether a watched extension's incoming call is shown while the gateway's INVITE to it
    /// has no answer yet (state `trying`), or only from its 18x on (`early`, the default, as
    /// Kamailio's `callee_trying` and OpenSIPS's `publish_on_trying` default): a `trying`
    /// NOTIFY lights no key on common phones and only delays the `early` one behind it.
    #[serde(default)]
    pub notify_callee_trying: bool,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        SubscriptionsConfig {
            min_expires_secs: default_min_expires(),
            default_expires_secs: default_default_expires(),
            max_expires_secs: default_max_expires(),
            max_per_subscriber: default_max_per_subscriber(),
            max_total: default_max_total(),
            notify_callee_trying: false,
        }
    }
}

impl SubscriptionsConfig {
    /// What is wrong with these values, if anything (for the config error).
    pub(super) fn problem(&self) -> Option<&'static str> {
        let ordered = 0 < self.min_expires_secs
            && self.min_expires_secs <= self.default_expires_secs
            && self.default_expires_secs <= self.max_expires_secs;
        if !ordered {
            Some("need 0 < min_expires_secs <= default_expires_secs <= max_expires_secs")
        } else if self.max_per_subscriber == 0 || self.max_total == 0 {
            Some("max_per_subscriber and max_total must be at least 1")
        } else {
            None
        }
    }
}

/// What a subscriber outside an extension's call groups learns about it (per extension,
/// `blf_others`). Subscribers whose pickup groups meet the extension's call groups, and the
/// extension itself, always see everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlfOthers {
    /// Their SUBSCRIBE gets 403.
    #[default]
    Forbidden,
    /// They see the states (idle, ringing, busy) without identities or dialog ids, so
    /// they can light a key but not pick the call up.
    StateOnly,
}

fn default_min_expires() -> u32 {
    60
}
fn default_default_expires() -> u32 {
    600
}
fn default_max_expires() -> u32 {
    3600
}
fn default_max_per_subscriber() -> usize {
    100
}
fn default_max_total() -> usize {
    10_000
}
