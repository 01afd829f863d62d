//! Analog ports as call endpoints: phone ports (FXS) are extensions, line ports (FXO) are
//! trunks. Each port is a SIP endpoint of the in-process analog user agent (`agent`), which
//! the engine reaches over [`crate::transport::Protocol::Internal`]; the service thread
//! (`service`) runs the line drivers, the RTP media and, in demo mode, the emulated card
//! with its operator interface (`control`).

pub mod agent;
#[cfg(test)]
mod agent_tests;
pub mod control;
pub mod sdp;
pub mod service;

use crate::config::{AnalogConfig, Config, DialModeName, SrtpPolicy};
use agent::PortRole;
use service::{PortConfig, ServiceConfig};
use telephony_hw::dahdi::ports::PortPlan;
use telephony_hw::line::driver::DialMode;

/// The numbers an analog phone can dial: every extension, the pickup codes, and the dial
/// prefixes of the lines followed by a number.
pub fn dial_plan(config: &Config) -> Vec<String> {
    let features = &config.features;
    let mut patterns = vec![features.group_pickup.clone()];
    for extension in config.extensions() {
        patterns.push(extension.number.clone());
        patterns.push(format!(
            "{}{}",
            features.directed_pickup_prefix, extension.number
        ));
    }
    for trunk in config.trunks() {
        if let Some(prefix) = &trunk.dial_prefix {
            patterns.push(format!("{prefix}X."));
        }
    }
    patterns
}

/// The analog service's configuration for the planned ports.
pub fn service_config(
    config: &Config,
    analog: &AnalogConfig,
    ports: Vec<PortPlan>,
) -> ServiceConfig {
    let listen = config.listen_addr();
    let dial_plan = dial_plan(config);
    let ports = ports
        .into_iter()
        .map(|plan| {
            let entry = analog.ports.iter().find(|p| p.channel == plan.channel);
            let role = if plan.signalling.is_phone_port() {
                let extension = config.analog_extension(plan.channel);
                PortRole::Phone {
                    extension: extension
                        .map_or_else(|| format!("analog{}", plan.channel), |e| e.number.clone()),
                    display: extension.and_then(|e| e.display_name.clone()),
                }
            } else {
                PortRole::Line {
                    target: entry.and_then(|e| e.target.clone()),
                    answer_supervision: entry.is_some_and(|e| e.answer_supervision),
                }
            };
            PortConfig {
                plan,
                role,
                dial_plan: dial_plan.clone(),
                rings_before_offer: entry.map_or(2, |e| e.rings_before_offer),
                dial_mode: match entry.map(|e| e.dial_mode) {
                    Some(DialModeName::Pulse) => DialMode::Pulse,
                    _ => DialMode::Dtmf,
                },
            }
        })
        .collect();
    ServiceConfig {
        ports,
        dahdi_dir: analog.dahdi_dir.clone(),
        rtp_ip: config.media_bind_ip(),
        gateway_host: match listen.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        },
        control_socket: analog.control_socket_path(&config.database),
        rtp_probation_packets: config.media.probation_packets,
        srtp_required: config
            .extensions()
            .iter()
            .filter(|e| config.srtp_policy_of(&e.number) == Some(SrtpPolicy::Required))
            .map(|e| e.number.clone())
            .collect(),
    }
}
