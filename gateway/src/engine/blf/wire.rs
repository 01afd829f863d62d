//! The text one node writes its dialogs of an extension in for the others
//! (`blf_dialogs.dialogs`, see `store/blf.rs`): small, line-based, versioned.
//!
//! No dialogs is the empty text. Otherwise the first line is `dialogs 1` (the format's
//! version: a reader refuses another) and each further line is one dialog, ten fields
//! separated by single spaces:
//!
//! ```text
//! id direction state call-id local-tag remote-tag local-user local-display remote-user remote-display
//! ```
//!
//! - `direction` is `initiator` or `recipient`; `state` is `trying`, `early`, `confirmed`,
//!   `terminated`, or `terminated:<event>` (RFC 4235's `event` attribute: `cancelled`,
//!   `rejected`, `replaced`, `local-bye`, `remote-bye`, `timeout`, `error`; another event
//!   reads as none).
//! - An absent value is `-`: `call-id` `-` means the dialog has no ids (then both tags are
//!   `-` too), `local-user` `-` means no participants (then the three after it are `-`).
//! - Every other value is percent-encoded (RFC 3986 style, `%` and two upper-case hex
//!   digits per UTF-8 byte) where it holds `%`, a space, a control character or DEL, and
//!   as `%2D` when it is `-` itself; an empty value is an empty field.
//!
//! For example, 201 ringing with a call from 204 ("Reception 204"):
//!
//! ```text
//! dialogs 1
//! a-17 recipient early b2b-9f@gw 6a1 gw-3c 201 - 204 Reception%20204
//! ```

use super::dialog_info::{DialogIds, DialogState, DialogView, Direction, Participant};
use std::fmt::Write as _;

/// The first line of a text with dialogs.
const HEADER: &str = "dialogs 1";

/// The `event` values a terminated state can carry (RFC 4235 §4.1.2).
const EVENTS: [&str; 7] = [
    "cancelled",
    "rejected",
    "replaced",
    "local-bye",
    "remote-bye",
    "timeout",
    "error",
];

/// Why a text does not read as dialogs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The first line is not this format's (another version: a newer node wrote it).
    #[error(
        "not a dialog list of this version (first line {0:?}); is another node a newer gateway?"
    )]
    Version(String),
    /// A dialog line is malformed.
    #[error("dialog line {line}: {problem}")]
    Line {
        /// Its number (1: the first after the version line).
        line: usize,
        /// What is wrong.
        problem: &'static str,
    },
}

/// The text of `dialogs` (empty for none).
pub fn encode(dialogs: &[DialogView]) -> String {
    if dialogs.is_empty() {
        return String::new();
    }
    let mut text = String::with_capacity(16 + 120 * dialogs.len());
    text.push_str(HEADER);
    for dialog in dialogs {
        text.push('\n');
        let direction = match dialog.direction {
            Direction::Initiator => "initiator",
            Direction::Recipient => "recipient",
        };
        let state = match dialog.state {
            DialogState::Trying => "trying".to_string(),
            DialogState::Early => "early".to_string(),
            DialogState::Confirmed => "confirmed".to_string(),
            DialogState::Terminated(None) => "terminated".to_string(),
            DialogState::Terminated(Some(event)) => format!("terminated:{event}"),
        };
        let ids = dialog.ids.as_ref();
        let parties = dialog.parties.as_ref();
        let fields: [Option<&str>; 10] = [
            Some(&dialog.id),
            Some(direction),
            Some(&state),
            ids.map(|ids| ids.call_id.as_str()),
            ids.and_then(|ids| ids.local_tag.as_deref()),
            ids.and_then(|ids| ids.remote_tag.as_deref()),
            parties.map(|(local, _)| local.user.as_str()),
            parties.and_then(|(local, _)| local.display.as_deref()),
            parties.map(|(_, remote)| remote.user.as_str()),
            parties.and_then(|(_, remote)| remote.display.as_deref()),
        ];
        for (n, field) in fields.into_iter().enumerate() {
            if n > 0 {
                text.push(' ');
            }
            match field {
                None => text.push('-'),
                Some(value) => escape_into(&mut text, value),
            }
        }
    }
    text
}

/// The dialogs a text holds.
pub fn decode(text: &str) -> Result<Vec<DialogView>, WireError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    if first != HEADER {
        return Err(WireError::Version(first.chars().take(40).collect()));
    }
    lines
        .enumerate()
        .map(|(index, line)| {
            decode_line(line).map_err(|problem| WireError::Line {
                line: index + 1,
                problem,
            })
        })
        .collect()
}

fn decode_line(line: &str) -> Result<DialogView, &'static str> {
    let fields: Vec<&str> = line.split(' ').collect();
    let [id, direction, state, call_id, local_tag, remote_tag, local_user, local_display, remote_user, remote_display] =
        fields[..]
    else {
        return Err("not ten fields");
    };
    let direction = match direction {
        "initiator" => Direction::Initiator,
        "recipient" => Direction::Recipient,
        _ => return Err("unknown direction"),
    };
    let state = match state {
        "trying" => DialogState::Trying,
        "early" => DialogState::Early,
        "confirmed" => DialogState::Confirmed,
        "terminated" => DialogState::Terminated(None),
        other => match other.strip_prefix("terminated:") {
            Some(event) => DialogState::Terminated(EVENTS.iter().copied().find(|e| *e == event)),
            None => return Err("unknown state"),
        },
    };
    let value = |field: &str| -> Result<Option<String>, &'static str> {
        match field {
            "-" => Ok(None),
            field => unescape(field).map(Some),
        }
    };
    let ids = match value(call_id)? {
        None => None,
        Some(call_id) => Some(DialogIds {
            call_id,
            local_tag: value(local_tag)?,
            remote_tag: value(remote_tag)?,
        }),
    };
    let parties = match (value(local_user)?, value(remote_user)?) {
        (Some(local), Some(remote)) => Some((
            Participant {
                display: value(local_display)?,
                user: local,
            },
            Participant {
                display: value(remote_display)?,
                user: remote,
            },
        )),
        (None, None) => None,
        _ => return Err("one participant without the other"),
    };
    Ok(DialogView {
        id: value(id)?.ok_or("no id")?,
        ids,
        direction,
        state,
        parties,
    })
}

/// Appends `value` percent-encoded where it must be (see the module's documentation).
fn escape_into(text: &mut String, value: &str) {
    if value == "-" {
        text.push_str("%2D");
        return;
    }
    for c in value.chars() {
        if c == '%' || c == ' ' || c.is_control() {
            let mut bytes = [0; 4];
            for byte in c.encode_utf8(&mut bytes).bytes() {
                let _ = write!(text, "%{byte:02X}");
            }
        } else {
            text.push(c);
        }
    }
}

/// Reverses [`escape_into`].
fn unescape(field: &str) -> Result<String, &'static str> {
    if !field.contains('%') {
        return Ok(field.to_string());
    }
    let mut bytes = Vec::with_capacity(field.len());
    let mut rest = field.as_bytes();
    while let Some((&byte, after)) = rest.split_first() {
        if byte == b'%' {
            let hex = after.get(..2).ok_or("a cut % escape")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "a bad % escape")?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| "a bad % escape")?);
            rest = &after[2..];
        } else {
            bytes.push(byte);
            rest = after;
        }
    }
    String::from_utf8(bytes).map_err(|_| "an escape that is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(user: &str, display: Option<&str>) -> Participant {
        Participant {
            display: display.map(str::to_string),
            user: user.into(),
        }
    }

    fn ringing() -> DialogView {
        DialogView {
            id: "a-17".into(),
            ids: Some(DialogIds {
                call_id: "b2b-9f@gw".into(),
                local_tag: Some("6a1".into()),
                remote_tag: Some("gw-3c".into()),
            }),
            direction: Direction::Recipient,
            state: DialogState::Early,
            parties: Some((party("201", None), party("204", Some("Reception 204")))),
        }
    }

    #[test]
    fn the_documented_example_is_what_a_ringing_dialog_encodes_to() {
        let text = encode(&[ringing()]);
        assert_eq!(
            text,
            "dialogs 1\na-17 recipient early b2b-9f@gw 6a1 gw-3c 201 - 204 Reception%20204"
        );
        assert_eq!(decode(&text).unwrap(), [ringing()]);
        assert_eq!(encode(&[]), "");
        assert_eq!(decode("").unwrap(), []);
    }

    #[test]
    fn every_state_direction_and_absent_value_round_trips() {
        let mut dialogs = Vec::new();
        for state in [
            DialogState::Trying,
            DialogState::Early,
            DialogState::Confirmed,
            DialogState::Terminated(None),
            DialogState::Terminated(Some("replaced")),
            DialogState::Terminated(Some("cancelled")),
            DialogState::Terminated(Some("remote-bye")),
        ] {
            for direction in [Direction::Initiator, Direction::Recipient] {
                dialogs.push(DialogView {
                    state,
                    direction,
                    ..ringing()
                });
            }
        }
        dialogs.push(DialogView {
            ids: None,
            parties: None,
            ..ringing()
        });
        dialogs.push(DialogView {
            ids: Some(DialogIds {
                call_id: "c".into(),
                local_tag: None,
                remote_tag: None,
            }),
            parties: Some((party("201", Some("")), party("", None))),
            ..ringing()
        });
        let text = encode(&dialogs);
        assert_eq!(text.lines().count(), dialogs.len() + 1);
        assert_eq!(decode(&text).unwrap(), dialogs);
    }

    #[test]
    fn separators_escapes_dashes_and_any_unicode_survive() {
        let odd = DialogView {
            id: "-".into(),
            ids: Some(DialogIds {
                call_id: "a b%20c\n@x".into(),
                local_tag: Some("-".into()),
                remote_tag: Some("%".into()),
            }),
            parties: Some((
                party("201", Some("Zoë \"Z\" <x>\t\u{7f}")),
                party("+49 30 1234", Some("日本 テスト")),
            )),
            ..ringing()
        };
        let text = encode(std::slice::from_ref(&odd));
        let line = text.lines().nth(1).unwrap();
        assert_eq!(line.split(' ').count(), 10, "{line}");
        assert!(
            line.starts_with("%2D recipient early a%20b%2520c%0A@x %2D %25 "),
            "{line}"
        );
        assert_eq!(decode(&text).unwrap(), [odd]);
    }

    #[test]
    fn another_version_and_broken_lines_are_refused_and_unknown_events_read_as_none() {
        assert!(matches!(
            decode("dialogs 2\nx"),
            Err(WireError::Version(first)) if first == "dialogs 2"
        ));
        let good = encode(&[ringing()]);
        for (broken, problem) in [
            (good.replace(" early ", " ringing "), "unknown state"),
            (
                good.replace(" recipient ", " sideways "),
                "unknown direction",
            ),
            (good.replace(" 201 ", " "), "not ten fields"),
            (
                good.replace(" 204 ", " - "),
                "one participant without the other",
            ),
            (good.replace("Reception%20204", "bad%2"), "a cut % escape"),
            (good.replace("Reception%20204", "bad%zz"), "a bad % escape"),
            (
                good.replace("Reception%20204", "%FF"),
                "an escape that is not UTF-8",
            ),
        ] {
            assert_eq!(
                decode(&broken),
                Err(WireError::Line { line: 1, problem }),
                "{broken}"
            );
        }
        let future = good.replace(" early ", " terminated:exploded ");
        assert_eq!(
            decode(&future).unwrap()[0].state,
            DialogState::Terminated(None)
        );
    }
}
