//! Operator-facing reports of the `gateway cdr` subcommand: the table, and the export
//! formats ([`export`]) for a `--since` ([`since`]).

pub mod export;
pub mod since;

use crate::store::{Cdr, FailedPickup};
use std::fmt::Write as _;

/// `YYYY-MM-DD HH:MM:SS` (UTC) for Unix milliseconds (civil-from-days, proleptic Gregorian).
pub fn utc_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The CDRs as an aligned table, newest first; under each call, a line per failed pickup.
pub fn cdr_table(calls: &[(Cdr, Vec<FailedPickup>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<19}  {:<8} {:<8} {:<11} {:<8} {:<8} {:<11} {:>9}  {:<36} cause",
        "ring start (UTC)",
        "caller",
        "called",
        "answered by",
        "pickup",
        "billed",
        "result",
        "talk (s)",
        "media (packets/lost/jitter per side)"
    );
    for (cdr, failed_pickups) in calls {
        let _ = writeln!(
            out,
            "{:<19}  {:<8} {:<8} {:<11} {:<8} {:<8} {:<11} {:>9.1}  {:<36} {}",
            utc_time(cdr.ring_start_ms),
            cdr.caller,
            cdr.called,
            cdr.answered_by.as_deref().unwrap_or("-"),
            cdr.pickup_method,
            cdr.billed.as_deref().unwrap_or("-"),
            cdr.disposition,
            cdr.duration_ms as f64 / 1000.0,
            cdr.media.as_deref().unwrap_or("-"),
            cdr.hangup_cause
        );
        for failed in failed_pickups {
            let _ = writeln!(
                out,
                "    failed pickup by {} ({}), claimed {}, failed {}: {}",
                failed.picker,
                failed.method,
                utc_time(failed.claimed_ms),
                utc_time(failed.failed_ms),
                failed.reason
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc_time(1_795_550_766_942), "2026-11-24 20:06:06");
    }

    #[test]
    fn failed_pickups_are_listed_under_their_call() {
        let cdr = Cdr {
            call_key: "k".into(),
            caller: "203".into(),
            called: "201".into(),
            answered_by: Some("201".into()),
            pickup_method: "none".into(),
            billed: Some("203".into()),
            ring_start_ms: 0,
            pickup_ms: None,
            answer_ms: Some(9_000),
            end_ms: 19_000,
            duration_ms: 10_000,
            disposition: "answered".into(),
            hangup_cause: "BYE from caller".into(),
            node: "gw1".into(),
            media: None,
        };
        let failed = FailedPickup {
            picker: "202".into(),
            method: "group".into(),
            claimed_ms: 2_000,
            failed_ms: 5_000,
            reason: "603 Decline".into(),
        };
        let table = cdr_table(&[(cdr, vec![failed])]);
        let lines: Vec<&str> = table.lines().collect();
        let fields: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            fields[2..8],
            ["203", "201", "201", "none", "203", "answered"]
        );
        assert_eq!(
            lines[2],
            "    failed pickup by 202 (group), claimed 1970-01-01 00:00:02, failed 1970-01-01 00:00:05: 603 Decline"
        );
    }
}
