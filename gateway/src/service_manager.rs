//! The gateway as a systemd service (`Type=notify`): it says when it is ready (every
//! listener bound, the store open, the engine shards running), reloading and stopping,
//! and feeds the watchdog (`WatchdogSec=`) only while every engine shard answers a ping,
//! so a wedged shard gets the gateway restarted. Outside systemd (no `NOTIFY_SOCKET`)
//! each notice does nothing.

use crate::shard::peers::Peers;
use crate::shard::ShardCommand;
use sd_notify::NotifyState;
use std::time::{Duration, Instant};

/// Sends `states`; a failure is logged, never fatal (the service manager may be gone).
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager ($NOTIFY_SOCKET): {e}");
    }
}

/// The gateway serves: `READY=1`, with `status` for `systemctl status`.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts (`RELOADING=1` with the monotonic time, as `Type=notify-reload` wants);
/// [`ready`] ends it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// The gateway stops.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Whether every engine shard answers a ping within `within`.
fn shards_answer(peers: &Peers, within: Duration) -> bool {
    peers
        .ask_every(ShardCommand::Ping)
        .all_by(Instant::now() + within)
}

/// Feeds the watchdog at half its interval while the shards answer; returns at once when
/// the service manager set no watchdog.
pub async fn watchdog(peers: Peers) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = interval / 2;
    tracing::info!(
        "systemd watchdog: {} ms, fed every {} ms while every engine shard answers",
        interval.as_millis(),
        period.as_millis()
    );
    let mut ticks = tokio::time::interval(period);
    let mut starving = false;
    loop {
        ticks.tick().await;
        let probe = peers.clone();
        let healthy = tokio::task::spawn_blocking(move || shards_answer(&probe, period))
            .await
            .unwrap_or(false);
        match healthy {
            true => {
                if std::mem::replace(&mut starving, false) {
                    tracing::info!("systemd watchdog: every engine shard answers again");
                }
                notify(&[NotifyState::Watchdog]);
            }
            false if !starving => {
                starving = true;
                tracing::error!(
                    "systemd watchdog: an engine shard did not answer within {} ms; the watchdog is not fed",
                    period.as_millis()
                );
            }
            false => {}
        }
    }
}
