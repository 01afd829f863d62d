//! The `--since` of `gateway cdr`: a UTC date or date and time, a Unix time, or an age.

/// Why a `--since` value was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--since {0:?}: expected a UTC date or time (2026-12-01, 2026-12-01 08:30, 2026-12-01T08:30:00Z), a Unix time (@1796112000) or an age (90m, 24h, 7d)")]
pub struct SinceError(String);

/// Days since 1970-01-01 of a proleptic Gregorian date (days-from-civil), when it is one.
fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month[month as usize - 1] {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let shifted_month = i64::from((month + 9) % 12);
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// `YYYY-MM-DD` with an optional ` HH:MM[:SS]` or `THH:MM[:SS][Z]`, as Unix ms (UTC).
fn utc_ms(text: &str) -> Option<u64> {
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time.strip_suffix('Z').unwrap_or(time))),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    let days = days_from_civil(year, month, day)?;
    let secs_of_day = match time {
        None => 0,
        Some(time) => {
            let fields: Vec<u32> = time
                .split(':')
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            let (hour, minute, second) = match fields[..] {
                [h, m] => (h, m, 0),
                [h, m, s] => (h, m, s),
                _ => return None,
            };
            if hour > 23 || minute > 59 || second > 59 {
                return None;
            }
            i64::from(hour * 3600 + minute * 60 + second)
        }
    };
    u64::try_from(days * 86_400 + secs_of_day)
        .ok()?
        .checked_mul(1000)
}

/// The moment `text` names, as Unix ms; an age counts back from `now_ms`.
pub fn parse_since(text: &str, now_ms: u64) -> Result<u64, SinceError> {
    let error = || SinceError(text.to_string());
    let text = text.trim();
    if let Some(unix) = text.strip_prefix('@') {
        let secs: u64 = unix.parse().map_err(|_| error())?;
        return secs.checked_mul(1000).ok_or_else(error);
    }
    let unit_ms = match text.chars().last() {
        Some('s') => Some(1_000),
        Some('m') => Some(60_000),
        Some('h') => Some(3_600_000),
        Some('d') => Some(86_400_000),
        _ => None,
    };
    if let Some(unit) = unit_ms {
        if let Ok(count) = text[..text.len() - 1].parse::<u64>() {
            return Ok(now_ms.saturating_sub(count.saturating_mul(unit)));
        }
    }
    utc_ms(text).ok_or_else(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::utc_time;

    #[test]
    fn dates_and_times_are_utc() {
        assert_eq!(parse_since("1970-01-01", 0), Ok(0));
        assert_eq!(parse_since("2000-02-29", 0), Ok(951_782_400_000));
        let at = parse_since("2026-11-24 20:06:06", 0).unwrap();
        assert_eq!(utc_time(at), "2026-11-24 20:06:06");
        assert_eq!(parse_since("2026-11-24T20:06:06Z", 0), Ok(at));
        assert_eq!(parse_since("2026-11-24 20:06", 0), Ok(at - 6_000));
    }

    #[test]
    fn unix_times_and_ages() {
        assert_eq!(parse_since("@1796112000", 0), Ok(1_796_112_000_000));
        let now = 10 * 86_400_000;
        assert_eq!(parse_since("24h", now), Ok(9 * 86_400_000));
        assert_eq!(parse_since("7d", now), Ok(3 * 86_400_000));
        assert_eq!(parse_since("90m", now), Ok(now - 90 * 60_000));
        assert_eq!(parse_since("30d", now), Ok(0), "not before 1970");
    }

    #[test]
    fn what_is_no_time_says_what_is_expected() {
        for bad in [
            "",
            "yesterday",
            "2026-02-30",
            "2026-13-01",
            "2026-01-01 25:00",
            "@x",
            "5w",
            "2026-01-01 10",
        ] {
            let error = parse_since(bad, 0).unwrap_err().to_string();
            assert!(error.contains("expected a UTC date"), "{bad:?}: {error}");
        }
    }
}
