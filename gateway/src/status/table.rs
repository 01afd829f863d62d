//! `gateway status` for people: each list as a table with aligned columns, times as
//! durations and UTC clock times.

use super::StatusView;
use crate::report::utc_time;
use std::fmt::Write as _;

/// An aligned table: each column as wide as its widest cell, two spaces apart.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(&widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `ms` as minutes and seconds (`3:07`), hours when it is that long (`1:02:03`).
fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs / 3600 {
        0 => format!("{}:{:02}", secs / 60, secs % 60),
        hours => format!("{hours}:{:02}:{:02}", secs % 3600 / 60, secs % 60),
    }
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

/// The calls up and ringing.
pub fn calls(view: &StatusView) -> String {
    let rows = view
        .calls
        .iter()
        .map(|call| {
            let media = call.media.map_or("-".to_string(), |[a, b]| {
                format!(
                    "{}/{}/{:.1} {}/{}/{:.1}",
                    a.packets, a.lost, a.jitter_ms, b.packets, b.lost, b.jitter_ms
                )
            });
            vec![
                call.caller.clone(),
                call.called.clone(),
                call.state.clone(),
                or_dash(call.answered_by.as_deref()),
                or_dash(call.pickup.as_deref()),
                duration(view.at_ms.saturating_sub(call.started_ms)),
                call.answered_ms
                    .map_or("-".into(), |at| duration(view.at_ms.saturating_sub(at))),
                format!("{}/{}", call.node, call.shard),
                media,
                call.key.clone(),
            ]
        })
        .collect();
    table(
        &[
            "caller",
            "called",
            "state",
            "answered by",
            "pickup",
            "since ring",
            "talking",
            "node/shard",
            "media pkts/lost/jitter ms (caller callee)",
            "call key",
        ],
        rows,
    )
}

/// The registered contacts.
pub fn registrations(view: &StatusView) -> String {
    let rows = view
        .registrations
        .iter()
        .map(|r| {
            vec![
                r.extension.clone(),
                r.transport.clone(),
                r.source.clone(),
                format!("{} s", r.expires_at.saturating_sub(view.at_ms / 1000)),
                or_dash(r.user_agent.as_deref()),
                r.contact.clone(),
            ]
        })
        .collect();
    table(
        &[
            "extension",
            "transport",
            "from",
            "expires in",
            "user agent",
            "contact",
        ],
        rows,
    )
}

/// The analog ports, like `dahdi show channels`.
pub fn ports(view: &StatusView) -> String {
    let rows = view
        .ports
        .iter()
        .map(|p| {
            vec![
                p.channel.to_string(),
                p.kind.clone(),
                p.signalling.clone(),
                p.line_state.clone(),
                if p.alarm { "red" } else { "-" }.into(),
                p.call.clone(),
                match (&p.media_peer, p.srtp) {
                    (Some(peer), true) => format!("{peer} srtp"),
                    (Some(peer), false) => peer.clone(),
                    (None, _) => "-".into(),
                },
                p.foreign_dropped.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "chan",
            "kind",
            "signalling",
            "line",
            "alarm",
            "call",
            "media from",
            "foreign dropped",
        ],
        rows,
    )
}

/// The pickups in flight, then the recent ones.
pub fn pickups(view: &StatusView) -> String {
    let rows = view
        .pickups
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.picker.clone(),
                p.method.clone(),
                or_dash(p.call.as_deref()),
                if p.replaces { "replaces" } else { "bridge" }.into(),
                if p.dummy_open { "open" } else { "closed" }.into(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "pickup",
            "picker",
            "method",
            "call",
            "handover",
            "dummy dialog",
        ],
        rows,
    );
    let recent = view
        .recent_pickups
        .iter()
        .rev()
        .map(|p| {
            vec![
                utc_time(p.at_ms),
                p.picker.clone(),
                p.method.clone(),
                p.path.clone(),
                p.outcome.clone(),
            ]
        })
        .collect();
    out.push_str("\nrecent pickups, newest first:\n");
    out.push_str(&table(
        &["ended (UTC)", "picker", "method", "path", "outcome"],
        recent,
    ));
    out
}

/// The dialog event subscriptions (BLF keys).
pub fn subscriptions(view: &StatusView) -> String {
    let rows = view
        .subscriptions
        .iter()
        .map(|s| {
            vec![
                s.watched.clone(),
                s.subscriber.clone(),
                s.peer.clone(),
                format!("{} s", s.expires_at.saturating_sub(view.at_ms / 1000)),
            ]
        })
        .collect();
    table(&["watched", "subscriber", "notify to", "expires in"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::view::{CallView, MediaView, PortView};

    #[test]
    fn columns_line_up_under_their_headers() {
        let text = table(
            &["a", "long header"],
            vec![
                vec!["wide cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "a          long header");
        assert_eq!(lines[1], "wide cell  x");
        assert_eq!(lines[2], "y          z");
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(duration(0), "0:00");
        assert_eq!(duration(187_000), "3:07");
        assert_eq!(duration(3_723_000), "1:02:03");
    }

    #[test]
    fn a_call_and_a_port_show_what_an_operator_asks_first() {
        let view = StatusView {
            node: "gw1".into(),
            at_ms: 70_000,
            calls: vec![CallView {
                key: "gw1-1-0".into(),
                caller: "201".into(),
                called: "202".into(),
                state: "answered".into(),
                answered_by: Some("203".into()),
                pickup: Some("group".into()),
                started_ms: 10_000,
                answered_ms: Some(40_000),
                node: "gw1".into(),
                shard: 1,
                relay: Some(3),
                media: Some([
                    MediaView {
                        packets: 1500,
                        lost: 2,
                        jitter_ms: 1.5,
                        foreign_dropped: 0,
                    },
                    MediaView::default(),
                ]),
            }],
            ports: vec![PortView {
                channel: 4,
                kind: "line".into(),
                signalling: "fxsks".into(),
                line_state: "idle".into(),
                alarm: true,
                call: "idle".into(),
                media_peer: None,
                srtp: false,
                foreign_dropped: 7,
            }],
            ..StatusView::default()
        };
        let calls = calls(&view);
        let row: Vec<&str> = calls.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "201",
                "202",
                "answered",
                "203",
                "group",
                "1:00",
                "0:30",
                "gw1/1",
                "1500/2/1.5",
                "0/0/0.0",
                "gw1-1-0"
            ]
        );
        let ports = ports(&view);
        let row: Vec<&str> = ports.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row, ["4", "line", "fxsks", "idle", "red", "idle", "-", "7"]);
    }
}
