//! Times as mishare stores and shows them: RFC 3339 UTC with milliseconds
//! in state and logs, Europe/London dates for the rules (agreements expire
//! on London days, periods end on London days).

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Europe::London;

/// How times are stored: RFC 3339, UTC, milliseconds. Fixed width, so text
/// order is time order.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A stored time back; `None` if it is not RFC 3339.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A stored `YYYY-MM-DD` date back; `None` if it is not one.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// The date of `at` in Europe/London.
pub fn london_date(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&London).date_naive()
}

/// A time as an operator in London reads it: `2026-12-02 06:00 GMT`.
pub fn london(t: DateTime<Utc>) -> String {
    t.with_timezone(&London)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// A time given by an operator: RFC 3339, or a date meaning midnight at the
/// start of that day in Europe/London.
pub fn parse_operator_time(s: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = parse_timestamp(s) {
        return Some(t);
    }
    london_midnight(parse_date(s)?)
}

/// The start of `date` in Europe/London (midnight, or the first moment
/// after it if the clocks skip it).
pub fn london_midnight(date: NaiveDate) -> Option<DateTime<Utc>> {
    use chrono::TimeZone;
    London
        .from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        let t = parse_timestamp("2012-10-01T12:00:00.123Z").expect("time");
        assert_eq!(timestamp(t), "2012-10-01T12:00:00.123Z");
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn london_dates_follow_the_clocks() {
        // 23:30 UTC on 30 June is 00:30 BST on 1 July.
        let t = parse_timestamp("2012-06-30T23:30:00Z").expect("time");
        assert_eq!(london_date(t).to_string(), "2012-07-01");
        assert_eq!(london(t), "2012-07-01 00:30 BST");
    }

    #[test]
    fn operator_times_take_a_date_as_london_midnight() {
        let t = parse_operator_time("2012-07-01").expect("date");
        assert_eq!(timestamp(t), "2012-06-30T23:00:00.000Z");
        let t = parse_operator_time("2012-07-01T09:00:00Z").expect("time");
        assert_eq!(timestamp(t), "2012-07-01T09:00:00.000Z");
        assert_eq!(parse_operator_time("soon"), None);
    }
}
