//! Key expiry times: RFC 3339 text to [`SystemTime`], through TOML's own date-time parser
//! (already a dependency) so that offsets like `+02:00` work, not only `Z`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use toml::value::{Datetime, Offset};

/// Parses `2027-01-01T00:00:00Z`, `2027-01-01T02:00:00+02:00` or a bare date (midnight UTC).
///
/// A date-time without an offset is refused: which zone it means would be a guess.
pub(crate) fn parse_expiry(text: &str) -> Result<SystemTime, String> {
    let invalid = || format!("'{text}' is not an RFC 3339 date-time (e.g. 2027-01-01T00:00:00Z)");
    let datetime: Datetime = text.trim().parse().map_err(|_| invalid())?;
    let date = datetime.date.ok_or_else(invalid)?;
    if date.day > days_in_month(date.year, date.month) {
        return Err(invalid());
    }
    let (seconds_of_day, nanos, offset_minutes) = match (datetime.time, datetime.offset) {
        (None, _) => (0, 0, 0),
        (Some(_), None) => {
            return Err(format!(
                "'{text}' has no UTC offset: add 'Z' or one like '+02:00'"
            ));
        }
        (Some(time), Some(offset)) => {
            let minutes = match offset {
                Offset::Z => 0,
                Offset::Custom { minutes } => i64::from(minutes),
            };
            let seconds =
                i64::from(time.hour) * 3600 + i64::from(time.minute) * 60 + i64::from(time.second);
            (seconds, time.nanosecond, minutes)
        }
    };
    let days = days_since_epoch(i64::from(date.year), date.month, date.day);
    let unix = days * 86_400 + seconds_of_day - offset_minutes * 60;
    let unix = u64::try_from(unix).map_err(|_| format!("'{text}' is before 1970"))?;
    Ok(UNIX_EPOCH + Duration::new(unix, nanos))
}

fn is_leap(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date, counting in 400-year eras that start
/// on March 1st so that the leap day falls at the end of each year.
fn days_since_epoch(year: i64, month: u8, day: u8) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(text: &str) -> u64 {
        parse_expiry(text)
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn utc_offsets_and_bare_dates_parse() {
        // Reference values from `date -u -d ... +%s`.
        assert_eq!(unix("1970-01-01T00:00:00Z"), 0);
        assert_eq!(unix("2027-01-01T00:00:00Z"), 1_798_761_600);
        assert_eq!(unix("2027-01-01T02:00:00+02:00"), 1_798_761_600);
        assert_eq!(unix("2026-12-31T19:00:00-05:00"), 1_798_761_600);
        assert_eq!(unix("2027-01-01"), 1_798_761_600);
        assert_eq!(unix("2024-02-29T12:34:56Z"), 1_709_210_096);
        assert_eq!(unix("2000-03-01T00:00:00Z"), 951_868_800);
    }

    #[test]
    fn ambiguous_or_impossible_times_are_refused() {
        assert!(
            parse_expiry("2027-01-01T00:00:00")
                .unwrap_err()
                .contains("offset")
        );
        assert!(parse_expiry("2027-02-29T00:00:00Z").is_err());
        assert!(parse_expiry("next tuesday").is_err());
        assert!(parse_expiry("12:00:00Z").is_err());
        assert!(parse_expiry("1969-12-31T23:59:59Z").is_err());
    }
}
