//! Which ringing call an INVITE with `Replaces` (RFC 3891) from a BLF key names.
//!
//! Phones build the header from the dialog event package differently: with the ids of the
//! callee's leg (what our NOTIFYs give) or of the caller's leg (Kazoo saw both), and with
//! `to-tag`/`from-tag` in either order. The gateway accepts all of these: the header names a
//! call when its Call-ID is one of the call's legs and its two tags are that leg's two tags,
//! in any order (a tag the callee has not sent yet matches anything). A header naming an
//! answered call gets 486 with `early-only` (RFC 3891 §3) and 403 without it (taking over
//! an answered call by a key is not offered); one naming no call, 481.

use crate::engine::call::{Calls, RelayLeg};
use crate::store::NamedLeg;

/// A parsed `Replaces` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Replaces<'a> {
    call_id: &'a str,
    to_tag: Option<&'a str>,
    from_tag: Option<&'a str>,
    /// The `early-only` flag: replace the dialog only while it is early.
    early_only: bool,
}

/// What a `Replaces` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replaced {
    /// A ringing call: a leg of it, as the store's claim knows it (`PickupTarget::Leg`);
    /// an empty Call-ID when it has none left (the claim then finds nothing).
    Ringing(NamedLeg),
    /// An answered call; whether the header carried `early-only`.
    Answered {
        /// RFC 3891 §3: with it, 486 Busy Here.
        early_only: bool,
    },
    /// No call the gateway holds (481).
    Nothing,
}

fn parse(value: &str) -> Replaces<'_> {
    let mut parts = value.split(';').map(str::trim);
    let call_id = parts.next().unwrap_or_default();
    let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
    for part in parts {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "to-tag" => to_tag = Some(value.trim()),
            "from-tag" => from_tag = Some(value.trim()),
            "early-only" => early_only = true,
            _ => {}
        }
    }
    Replaces {
        call_id,
        to_tag,
        from_tag,
        early_only,
    }
}

/// The Call-ID of the dialog a `Replaces` header names.
pub fn replaced_call_id(header: &str) -> &str {
    parse(header).call_id
}

/// Whether the header's tags are `ours` and `theirs` in either order (`theirs` None: not
/// known yet, anything matches it).
fn tags_match(replaces: &Replaces<'_>, ours: &str, theirs: Option<&str>) -> bool {
    let matches = |a: Option<&str>, b: Option<&str>| {
        a == Some(ours) && theirs.is_none_or(|theirs| b == Some(theirs))
    };
    matches(replaces.to_tag, replaces.from_tag) || matches(replaces.from_tag, replaces.to_tag)
}

/// The calls with a leg of the header's Call-ID on which our tag is one of its tags (at
/// most two lookups: which tag is ours depends on who wrote the header).
fn candidate_ids(calls: &Calls, replaces: &Replaces<'_>) -> impl Iterator<Item = u64> {
    [replaces.to_tag, replaces.from_tag]
        .map(|tag| tag.and_then(|tag| calls.index.call_of_leg(replaces.call_id, tag)))
        .into_iter()
        .flatten()
}

/// The call `header` names, and whether it still rings.
pub fn replaced_dialog(calls: &Calls, header: &str) -> Replaced {
    let replaces = parse(header);
    let named = candidate_ids(calls, &replaces)
        .filter_map(|id| calls.calls.get(&id))
        .find(|call| {
            let a = &call.a;
            (a.call_id == replaces.call_id
                && tags_match(&replaces, &a.local_tag, a.remote_tag.as_deref()))
                || call.forks.iter().any(|fork| {
                    fork.pickup.is_none()
                        && fork.dialog.call_id == replaces.call_id
                        && tags_match(
                            &replaces,
                            &fork.dialog.local_tag,
                            fork.dialog.remote_tag.as_deref(),
                        )
                })
        });
    match named {
        None => Replaced::Nothing,
        Some(call) if call.answer.is_some() => Replaced::Answered {
            early_only: replaces.early_only,
        },
        Some(call) => Replaced::Ringing(
            call.forks
                .iter()
                .rev()
                .find(|fork| fork.pickup.is_none() && fork.tx.is_some())
                .map(|fork| NamedLeg {
                    call_id: fork.dialog.call_id.clone(),
                    tags: [
                        fork.dialog.local_tag.clone(),
                        fork.dialog.remote_tag.clone().unwrap_or_default(),
                    ],
                })
                .unwrap_or_else(|| NamedLeg {
                    call_id: String::new(),
                    tags: Default::default(),
                }),
        ),
    }
}

/// The leg a `Replaces` header names, as the store's claim looks for it (a call of
/// another node, which only the store knows).
pub fn named_leg(header: &str) -> NamedLeg {
    let replaces = parse(header);
    NamedLeg {
        call_id: replaces.call_id.to_string(),
        tags: [
            replaces.to_tag.unwrap_or_default().to_string(),
            replaces.from_tag.unwrap_or_default().to_string(),
        ],
    }
}

/// The call this node carries to another node for a pickup (its picker claimed a call
/// ringing there) whose fork to that node `header` names: the owner's INVITE with
/// Replaces for the picker names that dialog.
pub fn pickup_relay_named(calls: &Calls, header: &str) -> Option<u64> {
    let replaces = parse(header);
    candidate_ids(calls, &replaces)
        .filter_map(|id| calls.calls.get(&id).map(|call| (id, call)))
        .find(|(_, call)| {
            call.relayed
                .as_ref()
                .is_some_and(|r| matches!(r.leg, RelayLeg::PickupToOwner { .. }))
                && call.forks.iter().any(|fork| {
                    fork.dialog.call_id == replaces.call_id
                        && tags_match(
                            &replaces,
                            &fork.dialog.local_tag,
                            fork.dialog.remote_tag.as_deref(),
                        )
                })
        })
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_match_in_either_order_and_an_unknown_far_tag_matches_anything() {
        let header = parse("abc@gw;to-tag=gw1;from-tag=ph1;early-only");
        assert_eq!(header.call_id, "abc@gw");
        assert!(header.early_only);
        assert!(!parse("abc@gw;to-tag=gw1;from-tag=ph1").early_only);
        assert!(tags_match(&header, "gw1", Some("ph1")));
        assert!(tags_match(&header, "ph1", Some("gw1")));
        assert!(!tags_match(&header, "gw1", Some("other")));
        assert!(tags_match(&header, "gw1", None));
        assert!(!tags_match(&header, "nope", None));
        let bare = parse("abc@gw");
        assert!(!tags_match(&bare, "gw1", None));
    }
}
