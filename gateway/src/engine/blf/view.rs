//! An extension's dialogs as the dialog event package shows them, derived from the call
//! table (the calls stay the only owner of call state; this is a read of it).
//!
//! Which ids a dialog carries (DESIGN.md §9, README "BLF keys"): for a call ringing (or
//! answered by) the watched extension, those of its own leg, the dialog between the gateway
//! and the extension: `call-id` is the Call-ID the gateway minted for that leg, `local-tag`
//! the extension's tag, `remote-tag` the gateway's. An INVITE with
//! `Replaces: <call-id>;to-tag=<remote-tag>;from-tag=<local-tag>` sent to the remote target
//! (the gateway) therefore names a dialog in which the gateway is the recipient's peer, as
//! RFC 3891 wants. For a call the extension placed, the caller's leg: the Call-ID of its
//! INVITE, its From tag as `local-tag` and the gateway's To tag as `remote-tag`. The
//! gateway accepts a Replaces naming either leg of a call, with the tags in either order
//! (`super::replaces`).
//!
//! In a cluster only the calls this node owns are shown: a call it carries for another
//! node (`Call::relayed`: a call routed here for a phone registered here, a pickup on its
//! way to or from the call's owner) is shown by that node, with the ids of its own legs,
//! which are the ones the store knows a pickup by (`cluster.rs`).

use super::dialog_info::{DialogIds, DialogState, DialogView, Direction, Participant};
use crate::config::Config;
use crate::engine::call::{Call, Calls, Fork};
use crate::store::PickupMethod;
use std::collections::{BTreeSet, HashMap};

/// The dialogs of each of `extensions`, from the calls in progress that involve it (only
/// extensions with a dialog to show are in the map), each extension's in the order its
/// calls started. A callee's leg still in `trying` is shown only with
/// `subscriptions.notify_callee_trying`. Reads the index [`refresh`] keeps.
pub fn dialogs_of<'a>(
    calls: &Calls,
    config: &Config,
    extensions: impl IntoIterator<Item = &'a str>,
) -> HashMap<String, Vec<DialogView>> {
    let mut views = HashMap::new();
    for extension in extensions {
        let mut involved: Vec<&Call> = calls.calls.of_extension(extension).collect();
        involved.sort_by_key(|call| (call.ring_started_ms, call.key.as_str()));
        let shown: Vec<DialogView> = involved
            .into_iter()
            .filter_map(|call| view_for(call, config, extension))
            .collect();
        if !shown.is_empty() {
            views.insert(extension.to_string(), shown);
        }
    }
    views
}

/// The extensions whose dialogs may have changed since the last call: those of every call
/// touched, started or ended meanwhile (before and after the change), with the index of
/// calls by extension brought up to date for [`dialogs_of`].
pub fn refresh(calls: &mut Calls, config: &Config) -> BTreeSet<String> {
    let (touched, mut changed) = calls.calls.take_touched();
    for id in touched {
        let Some(call) = calls.calls.get(&id) else {
            continue;
        };
        let now = involved(call, config);
        changed.extend(now.iter().cloned());
        changed.extend(calls.calls.set_involved(id, now));
    }
    changed
}

/// The extensions whose dialogs `call` shows: its caller, the extensions it rings and the
/// picker who answered it (none for a call this node carries for another).
fn involved(call: &Call, config: &Config) -> Vec<String> {
    if call.relayed.is_some() {
        return Vec::new();
    }
    let mut out = vec![call.caller.number.clone()];
    let picker = call.answer.as_ref().map(|a| a.answered_by.as_str());
    for extension in callees(call, config).chain(picker) {
        if !out.iter().any(|e| e == extension) {
            out.push(extension.to_string());
        }
    }
    out
}

/// `call` as `extension` sees it, if it shows a dialog to it (a call [`involved`] lists
/// `extension` for: never one carried for another node).
fn view_for(call: &Call, config: &Config, extension: &str) -> Option<DialogView> {
    if call.caller.number == extension {
        return Some(initiator_view(call, config));
    }
    let shown = |view: &DialogView| {
        view.state != DialogState::Trying || config.subscriptions.notify_callee_trying
    };
    if callees(call, config).any(|e| e == extension) {
        return recipient_view(call, extension, config).filter(shown);
    }
    let answered_by = call.answer.as_ref().map(|a| a.answered_by.as_str());
    if answered_by == Some(extension) && extension != call.called {
        return recipient_view(call, extension, config);
    }
    None
}

/// The extensions a call rings: the called extension, or every member of the called group.
fn callees<'a>(call: &'a Call, config: &'a Config) -> impl Iterator<Item = &'a str> + 'a {
    let direct = config.extension(&call.called).map(|e| e.number.as_str());
    let group = direct
        .is_none()
        .then(|| {
            config
                .call_group_members(&call.called)
                .map(|e| e.number.as_str())
        })
        .into_iter()
        .flatten();
    direct.into_iter().chain(group)
}

fn party(config: &Config, number: &str, display: Option<String>) -> Participant {
    Participant {
        display: display.or_else(|| {
            config
                .extension(number)
                .and_then(|e| e.display_name.clone())
        }),
        user: number.to_string(),
    }
}

/// The call as the extension that placed it sees it: the caller's leg.
fn initiator_view(call: &Call, config: &Config) -> DialogView {
    let state = if call.answer.is_some() {
        DialogState::Confirmed
    } else if call.forks.iter().any(|f| f.dialog.remote_tag.is_some()) {
        DialogState::Early
    } else {
        DialogState::Trying
    };
    DialogView {
        id: call.key.clone(),
        ids: Some(DialogIds {
            call_id: call.a.call_id.clone(),
            local_tag: call.a.remote_tag.clone(),
            remote_tag: Some(call.a.local_tag.clone()),
        }),
        direction: Direction::Initiator,
        state,
        parties: Some((
            party(config, &call.caller.number, call.caller.display.clone()),
            party(config, &call.called, None),
        )),
    }
}

/// The call as a callee (or the picker who took it) sees it: its own leg, the dialog between
/// the gateway and the extension's phone. For a group call each member's state and ids are
/// those of the leg to its own phone (a member whose phone has not rung yet is `trying`,
/// one whose phone turned the call down has no dialog); a phone that takes the call by the
/// key replaces that leg, as RFC 3891 means it (the ids of any leg still name the call).
fn recipient_view(call: &Call, extension: &str, config: &Config) -> Option<DialogView> {
    let own: Vec<&Fork> = call
        .forks
        .iter()
        .filter(|f| f.extension.as_deref() == Some(extension))
        .collect();
    let pending = || {
        own.iter()
            .copied()
            .filter(|f| f.final_status.is_none() && f.pickup.is_none())
    };
    let ringing = pending().find(|f| f.dialog.remote_tag.is_some());
    let state = match call.answer.as_ref() {
        Some(answer) if answer.answered_by == extension => DialogState::Confirmed,
        // Someone else took the call: this extension's leg was cancelled.
        Some(answer) if answer.pickup_method != PickupMethod::None => {
            DialogState::Terminated(Some("replaced"))
        }
        Some(_) => DialogState::Terminated(Some("cancelled")),
        None if ringing.is_some() || (call.picking.is_some() && !own.is_empty()) => {
            DialogState::Early
        }
        None if pending().next().is_some() => DialogState::Trying,
        None => return None,
    };
    // The answering leg once answered, else the ringing one, else one still pending.
    let leg = call
        .answered
        .filter(|_| state == DialogState::Confirmed)
        .map(|index| &call.forks[index])
        .or(ringing)
        .or_else(|| pending().next())
        .or_else(|| own.iter().copied().find(|f| f.pickup.is_none()));
    Some(DialogView {
        id: call.key.clone(),
        ids: leg.map(|fork| DialogIds {
            call_id: fork.dialog.call_id.clone(),
            local_tag: fork.dialog.remote_tag.clone(),
            remote_tag: Some(fork.dialog.local_tag.clone()),
        }),
        direction: Direction::Recipient,
        state,
        parties: Some((
            party(config, extension, None),
            party(config, &call.caller.number, call.caller.display.clone()),
        )),
    })
}
