//! CDRs for billing and other programs: `gateway cdr --format csv|json`. The same columns
//! either way, in this order (README documents each): times as ISO 8601 UTC, durations in
//! milliseconds, every failed pickup of the call in one field.

use super::utc_time;
use crate::store::{Cdr, FailedPickup};
use serde::Serialize;

/// One exported CDR.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CdrRow {
    /// The call's key (unique; the store's context and the log lines name it).
    pub call_key: String,
    /// The node that handled the call.
    pub node: String,
    /// The caller's number.
    pub caller: String,
    /// The number dialled (an extension, a group, a line).
    pub called: String,
    /// Who answered: the callee, or the picker.
    pub answered_by: String,
    /// `none`, `group` (`*8`), `directed` (`**<ext>`) or `replaces` (a BLF key).
    pub pickup_method: String,
    /// Who pays: the picker when picked up, else the caller.
    pub billed: String,
    /// When it started ringing.
    pub ring_start: String,
    /// When the pickup claimed it (empty without a pickup).
    pub pickup_at: String,
    /// When it was answered (empty if never).
    pub answer_at: String,
    /// When it ended.
    pub end_at: String,
    /// From ringing to answer, or to the end when unanswered (ms).
    pub ring_ms: u64,
    /// Talk time: from answer to end (ms; 0 when unanswered).
    pub talk_ms: u64,
    /// `answered`, `no-answer`, `busy`, `cancelled`, `failed` or `interrupted`.
    pub disposition: String,
    /// What ended it (`BYE from caller`, `486 Busy Here`...).
    pub hangup_cause: String,
    /// The relay's counters per side (`packets/lost/jitter`) for an anchored call.
    pub media: String,
    /// Pickups that failed before it was answered: `picker method at: reason`, `; ` apart.
    pub failed_pickups: String,
}

/// ISO 8601 UTC (`2026-12-04T10:15:00Z`) for Unix ms.
fn iso(unix_ms: u64) -> String {
    format!("{}Z", utc_time(unix_ms).replace(' ', "T"))
}

impl CdrRow {
    /// The row of `cdr` and its failed pickups.
    pub fn new(cdr: &Cdr, failed: &[FailedPickup]) -> CdrRow {
        CdrRow {
            call_key: cdr.call_key.clone(),
            node: cdr.node.clone(),
            caller: cdr.caller.clone(),
            called: cdr.called.clone(),
            answered_by: cdr.answered_by.clone().unwrap_or_default(),
            pickup_method: cdr.pickup_method.clone(),
            billed: cdr.billed.clone().unwrap_or_default(),
            ring_start: iso(cdr.ring_start_ms),
            pickup_at: cdr.pickup_ms.map(iso).unwrap_or_default(),
            answer_at: cdr.answer_ms.map(iso).unwrap_or_default(),
            end_at: iso(cdr.end_ms),
            ring_ms: cdr
                .answer_ms
                .unwrap_or(cdr.end_ms)
                .saturating_sub(cdr.ring_start_ms),
            talk_ms: cdr.duration_ms,
            disposition: cdr.disposition.clone(),
            hangup_cause: cdr.hangup_cause.clone(),
            media: cdr.media.clone().unwrap_or_default(),
            failed_pickups: failed
                .iter()
                .map(|f| {
                    format!(
                        "{} {} {}: {}",
                        f.picker,
                        f.method,
                        iso(f.failed_ms),
                        f.reason
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// The rows as CSV (RFC 4180, a header line first).
pub fn csv(rows: &[CdrRow]) -> Result<String, String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.serialize(row).map_err(|e| e.to_string())?;
    }
    if rows.is_empty() {
        writer.write_record(COLUMNS).map_err(|e| e.to_string())?;
    }
    let bytes = writer.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// The rows as a JSON array of objects.
pub fn json(rows: &[CdrRow]) -> Result<String, String> {
    serde_json::to_string_pretty(rows).map_err(|e| e.to_string())
}

/// The column names, in order (the header of an empty export too).
pub const COLUMNS: [&str; 17] = [
    "call_key",
    "node",
    "caller",
    "called",
    "answered_by",
    "pickup_method",
    "billed",
    "ring_start",
    "pickup_at",
    "answer_at",
    "end_at",
    "ring_ms",
    "talk_ms",
    "disposition",
    "hangup_cause",
    "media",
    "failed_pickups",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn picked_up() -> (Cdr, Vec<FailedPickup>) {
        let cdr = Cdr {
            call_key: "gw1-1-0".into(),
            caller: "5551234".into(),
            called: "sales".into(),
            answered_by: Some("202".into()),
            pickup_method: "group".into(),
            billed: Some("202".into()),
            ring_start_ms: 1_000,
            pickup_ms: Some(4_000),
            answer_ms: Some(5_000),
            end_ms: 65_000,
            duration_ms: 60_000,
            disposition: "answered".into(),
            hangup_cause: "BYE from caller, \"Jane\"".into(),
            node: "gw1".into(),
            media: None,
        };
        let failed = vec![FailedPickup {
            picker: "203".into(),
            method: "group".into(),
            claimed_ms: 2_000,
            failed_ms: 3_000,
            reason: "603 Decline".into(),
        }];
        (cdr, failed)
    }

    #[test]
    fn csv_has_the_documented_columns_and_quotes_what_needs_it() {
        let (cdr, failed) = picked_up();
        let text = csv(&[CdrRow::new(&cdr, &failed)]).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), COLUMNS.join(","));
        assert_eq!(
            lines.next().unwrap(),
            "gw1-1-0,gw1,5551234,sales,202,group,202,1970-01-01T00:00:01Z,1970-01-01T00:00:04Z,\
             1970-01-01T00:00:05Z,1970-01-01T00:01:05Z,4000,60000,answered,\
             \"BYE from caller, \"\"Jane\"\"\",,203 group 1970-01-01T00:00:03Z: 603 Decline"
        );
        assert_eq!(csv(&[]).unwrap().trim_end(), COLUMNS.join(","));
    }

    #[test]
    fn json_has_the_same_fields() {
        let (cdr, failed) = picked_up();
        let text = json(&[CdrRow::new(&cdr, &failed)]).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let row = value[0].as_object().unwrap();
        let keys: Vec<&str> = row.keys().map(String::as_str).collect();
        let mut columns = COLUMNS.to_vec();
        columns.sort();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, columns);
        assert_eq!(row["talk_ms"], 60_000);
        assert_eq!(row["answer_at"], "1970-01-01T00:00:05Z");
    }
}
