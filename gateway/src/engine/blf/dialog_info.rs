//! The `application/dialog-info+xml` body (RFC 4235 §4): an extension's dialogs as full
//! state, each with its ids, direction, state and (unless withheld) both participants.

use std::fmt::Write as _;

/// The content type of the body.
pub const CONTENT_TYPE: &str = "application/dialog-info+xml";

/// RFC 4235 §3.7.1 dialog states, with the `event` attribute of a terminated one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// An INVITE went out (or came in); no provisional response yet.
    Trying,
    /// A provisional response with a To tag: the callee rings.
    Early,
    /// Answered.
    Confirmed,
    /// Over; `Some(event)` says how (`cancelled`, `replaced`, `rejected`, `remote-bye`...).
    Terminated(Option<&'static str>),
}

impl DialogState {
    fn name(self) -> &'static str {
        match self {
            DialogState::Trying => "trying",
            DialogState::Early => "early",
            DialogState::Confirmed => "confirmed",
            DialogState::Terminated(_) => "terminated",
        }
    }
}

/// Who the dialog's participants are, from the watched extension's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The extension placed the call.
    Initiator,
    /// The extension is (or was) being called.
    Recipient,
}

/// One participant: `<identity display=...>` and `<target uri=...>`, both at the gateway
/// (requests for anyone, an INVITE with Replaces included, go through it) under the name
/// the gateway has toward the subscriber ([`GatewayName`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// Display name, if known.
    pub display: Option<String>,
    /// The extension or caller number: the user part of its identity and target.
    pub user: String,
}

/// How the gateway is named toward one subscriber (the address its SUBSCRIBE reached, or
/// the advertised one): identities are `sip:user@host`, targets `sip:user@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayName {
    /// Host (IPv6 in brackets).
    pub host: String,
    /// Host and port.
    pub host_port: String,
}

/// The dialog identifiers (RFC 4235 §4.1.1 `call-id`, `local-tag`, `remote-tag`), seen
/// from the watched extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogIds {
    /// The Call-ID.
    pub call_id: String,
    /// The watched extension's tag (unknown until it answered with one).
    pub local_tag: Option<String>,
    /// The other side's tag.
    pub remote_tag: Option<String>,
}

/// One `<dialog>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogView {
    /// The `id` attribute: stable for the dialog's life.
    pub id: String,
    /// The ids a phone needs for an INVITE with Replaces; None when withheld.
    pub ids: Option<DialogIds>,
    /// Who called whom.
    pub direction: Direction,
    /// Where the dialog is.
    pub state: DialogState,
    /// The watched extension and the far end; None when withheld.
    pub parties: Option<(Participant, Participant)>,
}

impl DialogView {
    /// Whether the dialog is going on (not terminated).
    pub fn is_live(&self) -> bool {
        !matches!(self.state, DialogState::Terminated(_))
    }
}

/// The `id` of the one terminated dialog an idle extension's document holds.
pub const IDLE_ID: &str = "idle";

/// A document without its `version`, which differs per subscriber: rendered once per state
/// change for all the subscribers that see the same thing, and completed per NOTIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Up to the version number.
    head: String,
    /// After it.
    tail: String,
}

impl Document {
    /// The document for `entity` (the watched extension), named as `gateway` for the
    /// subscriber: full state. An extension with no dialog gets one terminated dialog
    /// ([`IDLE_ID`]) instead of none, as Asterisk sends it: valid either way, but Yealink
    /// phones keep a key lit by a document without a dialog element (DESIGN.md §9).
    pub fn new(gateway: &GatewayName, entity: &str, dialogs: &[DialogView]) -> Document {
        let mut head = String::with_capacity(160);
        head.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        head.push_str("<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"");
        let mut xml = String::with_capacity(256 + 512 * dialogs.len());
        let _ = writeln!(
            xml,
            "\" state=\"full\" entity=\"sip:{}@{}\">",
            escape(entity),
            escape(&gateway.host)
        );
        if dialogs.is_empty() {
            let _ = writeln!(
                xml,
                "  <dialog id=\"{IDLE_ID}\">\n    <state>terminated</state>\n  </dialog>"
            );
        }
        for dialog in dialogs {
            render_dialog(&mut xml, gateway, dialog);
        }
        xml.push_str("</dialog-info>\n");
        Document { head, tail: xml }
    }

    /// The document at `version` (RFC 4235 §4.1: 0 first, then +1 per NOTIFY).
    pub fn at(&self, version: u32) -> String {
        let mut xml = String::with_capacity(self.head.len() + 10 + self.tail.len());
        xml.push_str(&self.head);
        let _ = write!(xml, "{version}");
        xml.push_str(&self.tail);
        xml
    }
}

fn render_dialog(xml: &mut String, gateway: &GatewayName, dialog: &DialogView) {
    let _ = write!(xml, "  <dialog id=\"{}\"", escape(&dialog.id));
    if let Some(ids) = &dialog.ids {
        let _ = write!(xml, " call-id=\"{}\"", escape(&ids.call_id));
        for (name, tag) in [
            ("local-tag", &ids.local_tag),
            ("remote-tag", &ids.remote_tag),
        ] {
            if let Some(tag) = tag {
                let _ = write!(xml, " {name}=\"{}\"", escape(tag));
            }
        }
    }
    let direction = match dialog.direction {
        Direction::Initiator => "initiator",
        Direction::Recipient => "recipient",
    };
    let _ = writeln!(xml, " direction=\"{direction}\">");
    match dialog.state {
        DialogState::Terminated(Some(event)) => {
            let _ = writeln!(xml, "    <state event=\"{event}\">terminated</state>");
        }
        state => {
            let _ = writeln!(xml, "    <state>{}</state>", state.name());
        }
    }
    if let Some((local, remote)) = &dialog.parties {
        render_participant(xml, gateway, "local", local);
        render_participant(xml, gateway, "remote", remote);
    }
    xml.push_str("  </dialog>\n");
}

fn render_participant(xml: &mut String, gateway: &GatewayName, element: &str, party: &Participant) {
    let _ = write!(xml, "    <{element}>\n      <identity");
    if let Some(display) = &party.display {
        let _ = write!(xml, " display=\"{}\"", escape(display));
    }
    let user = escape(&party.user);
    let _ = writeln!(
        xml,
        ">sip:{user}@{}</identity>\n      <target uri=\"sip:{user}@{}\"/>\n    </{element}>",
        escape(&gateway.host),
        escape(&gateway.host_port)
    );
}

/// Escapes text for XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ringing() -> DialogView {
        DialogView {
            id: "d1".into(),
            ids: Some(DialogIds {
                call_id: "abc@gw".into(),
                local_tag: Some("callee".into()),
                remote_tag: Some("gw".into()),
            }),
            direction: Direction::Recipient,
            state: DialogState::Early,
            parties: Some((
                Participant {
                    display: Some("Sales 201".into()),
                    user: "201".into(),
                },
                Participant {
                    display: Some("A \"quoted\" <name> & co".into()),
                    user: "204".into(),
                },
            )),
        }
    }

    fn gateway() -> GatewayName {
        GatewayName {
            host: "h".into(),
            host_port: "h:5060".into(),
        }
    }

    #[test]
    fn a_ringing_dialog_has_ids_direction_state_and_both_parties_in_schema_order() {
        let xml = Document::new(&gateway(), "201", &[ringing()]).at(3);
        assert!(xml.contains("version=\"3\" state=\"full\" entity=\"sip:201@h\""));
        assert!(xml.contains(
            "<dialog id=\"d1\" call-id=\"abc@gw\" local-tag=\"callee\" remote-tag=\"gw\" direction=\"recipient\">"
        ));
        let (state, local, remote) = (
            xml.find("<state>early</state>").unwrap(),
            xml.find("<local>").unwrap(),
            xml.find("<remote>").unwrap(),
        );
        assert!(state < local && local < remote, "{xml}");
        assert!(xml.contains("display=\"A &quot;quoted&quot; &lt;name&gt; &amp; co\""));
        assert!(xml.contains("<target uri=\"sip:204@h:5060\"/>"));
    }

    #[test]
    fn withheld_dialogs_and_an_idle_extension_are_still_documents() {
        let mut dialog = ringing();
        dialog.ids = None;
        dialog.parties = None;
        dialog.state = DialogState::Terminated(Some("replaced"));
        let xml = Document::new(&gateway(), "201", &[dialog]).at(0);
        assert!(
            xml.contains("<dialog id=\"d1\" direction=\"recipient\">"),
            "{xml}"
        );
        assert!(xml.contains("<state event=\"replaced\">terminated</state>"));
        assert!(!xml.contains("identity"));
        let idle = Document::new(&gateway(), "201", &[]).at(1);
        assert!(
            idle.contains("<dialog id=\"idle\">\n    <state>terminated</state>"),
            "{idle}"
        );
        assert!(idle.ends_with("</dialog-info>\n"));
    }
}
