//! The analog ports the gateway serves: what /etc/dahdi/system.conf says, with the gateway's
//! own overrides (its TOML) on top, checked before anything opens a channel.

use super::system_conf::{Signalling, SystemConf};
use crate::dsp::tones::{self, Zone};

/// A port as the gateway will drive it.
#[derive(Debug, Clone, PartialEq)]
pub struct PortPlan {
    /// DAHDI channel number.
    pub channel: u32,
    /// Its signalling (phone port or line port).
    pub signalling: Signalling,
    /// The tone zone for its tones, ring cadence and detectors.
    pub zone: &'static Zone,
}

/// The gateway's override of one port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortOverride {
    /// DAHDI channel number.
    pub channel: u32,
    /// Signalling instead of system.conf's (or for a channel system.conf does not list).
    pub signalling: Option<Signalling>,
    /// Tone zone for this port only.
    pub zone: Option<String>,
}

/// Why the port plan is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No tone zone anywhere: DAHDI could not ring phones either.
    #[error("no tone zone: add loadzone=/defaultzone= to /etc/dahdi/system.conf (and run dahdi_cfg) or set analog.zone")]
    NoZone,
    /// A zone name this gateway does not know.
    #[error("{key}: unknown tone zone {name:?} (known: {known})")]
    UnknownZone {
        /// The setting that named it.
        key: String,
        /// The name.
        name: String,
        /// The zones available.
        known: String,
    },
    /// An override names a channel without giving its signalling, and system.conf lacks it.
    #[error("{key}: channel {channel} is not in system.conf; give its kind (phone or line)")]
    NoSignalling {
        /// The setting.
        key: String,
        /// The channel.
        channel: u32,
    },
}

fn find_zone(key: &str, name: &str) -> Result<&'static Zone, PlanError> {
    tones::zone(name).ok_or_else(|| PlanError::UnknownZone {
        key: key.to_string(),
        name: name.to_string(),
        known: tones::zones()
            .iter()
            .map(|z| z.name)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Merges system.conf with the overrides (`zone` overrides system.conf's zone for all ports).
pub fn plan(
    conf: &SystemConf,
    zone: Option<&str>,
    overrides: &[PortOverride],
) -> Result<Vec<PortPlan>, PlanError> {
    let default_zone = match (zone, conf.zone()) {
        (Some(name), _) => Some(find_zone("analog.zone", name)?),
        (None, Some(name)) => Some(find_zone("system.conf loadzone/defaultzone", name)?),
        (None, None) => None,
    };
    let mut ports: std::collections::BTreeMap<u32, (Signalling, Option<&'static Zone>)> = conf
        .channels
        .iter()
        .map(|(&channel, &signalling)| (channel, (signalling, default_zone)))
        .collect();
    for (index, o) in overrides.iter().enumerate() {
        let key = format!("analog.port[{index}]");
        let signalling = match (o.signalling, ports.get(&o.channel)) {
            (Some(signalling), _) => signalling,
            (None, Some((signalling, _))) => *signalling,
            (None, None) => {
                return Err(PlanError::NoSignalling {
                    key,
                    channel: o.channel,
                })
            }
        };
        let zone = match &o.zone {
            Some(name) => Some(find_zone(&format!("{key}.zone"), name)?),
            None => default_zone,
        };
        ports.insert(o.channel, (signalling, zone));
    }
    ports
        .into_iter()
        .map(|(channel, (signalling, zone))| {
            Ok(PortPlan {
                channel,
                signalling,
                zone: zone.ok_or(PlanError::NoZone)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn conf(text: &str) -> SystemConf {
        SystemConf::parse(text, Path::new("system.conf")).unwrap()
    }

    #[test]
    fn system_conf_with_overrides() {
        let c = conf("fxoks=1-2\nfxsks=3\nloadzone=us\n");
        let overrides = [
            PortOverride {
                channel: 3,
                zone: Some("de".into()),
                ..Default::default()
            },
            PortOverride {
                channel: 4,
                signalling: Some(Signalling::FxsKs),
                ..Default::default()
            },
        ];
        let ports = plan(&c, None, &overrides).unwrap();
        assert_eq!(ports.len(), 4);
        assert_eq!(ports[0].zone.name, "us");
        assert_eq!(ports[2].zone.name, "de");
        assert_eq!(ports[3].signalling, Signalling::FxsKs);
        assert!(plan(&c, Some("uk"), &[])
            .unwrap()
            .iter()
            .all(|p| p.zone.name == "uk"));
    }

    #[test]
    fn the_classic_mistakes_are_named() {
        let no_zone = conf("fxoks=1\n");
        assert_eq!(plan(&no_zone, None, &[]), Err(PlanError::NoZone));
        let error = plan(&no_zone, Some("atlantis"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("analog.zone") && error.contains("atlantis") && error.contains("us"),
            "{error}"
        );
        let missing = [PortOverride {
            channel: 9,
            ..Default::default()
        }];
        let error = plan(&conf("fxoks=1\nloadzone=us\n"), None, &missing)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("analog.port[0]") && error.contains("channel 9"),
            "{error}"
        );
    }
}
