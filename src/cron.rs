//! Report schedules: five-field cron expressions evaluated in Europe/London.
//!
//! `minute hour day-of-month month day-of-week`, each a `*`, a number, a
//! range `a-b`, a step `*/n` or `a-b/n`, or a comma-separated list of those;
//! months and days of the week also by name (`jan`, `mon`). As in Vixie cron,
//! when both day fields are restricted a day matches if either does; Sunday
//! is 0 or 7.
//!
//! Clock changes run each scheduled time once:
//!
//! - when the clocks go back, a local time that happens twice (01:30 on the
//!   last Sunday of October) runs at its first occurrence only;
//! - when the clocks go forward, a local time that never happens (01:30 on
//!   the last Sunday of March) runs at the instant the gap ends (02:00 BST),
//!   and several skipped times that land on the same instant run once.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Europe::London;

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "schedule {expr:?}: {reason}; expected five fields: minute hour day-of-month month day-of-week"
)]
pub struct ScheduleError {
    expr: String,
    reason: String,
}

/// A parsed schedule.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// How far ahead to look for the next run: long enough for `29 2` (a leap
/// day) to recur, short enough to answer at once for a day that never comes.
const SEARCH_DAYS: i64 = 366 * 8 + 2;

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(expr: &str) -> Result<Self, ScheduleError> {
        let error = |reason: String| ScheduleError {
            expr: expr.to_string(),
            reason,
        };
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(error(format!("it has {} fields", fields.len())));
        };
        let minutes = field(minute, 0, 59, &[], "minute").map_err(&error)?;
        let hours = field(hour, 0, 23, &[], "hour").map_err(&error)?;
        let days = field(day, 1, 31, &[], "day of month").map_err(&error)?;
        let months = field(month, 1, 12, &MONTHS, "month").map_err(&error)?;
        let mut weekdays = field(weekday, 0, 7, &WEEKDAYS, "day of week").map_err(&error)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let schedule = Self {
            text: fields.join(" "),
            minutes,
            hours: u32::try_from(hours).expect("24 bits"),
            days: u32::try_from(days).expect("32 bits"),
            months: u16::try_from(months).expect("13 bits"),
            weekdays: u8::try_from(weekdays).expect("7 bits"),
            days_restricted: day != "*",
            weekdays_restricted: weekday != "*",
        };
        let start = Utc
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .expect("a real instant");
        if schedule.next_after(start).is_none() {
            return Err(error("no date ever matches it".into()));
        }
        Ok(schedule)
    }
}

/// Parses one field into a bit set over `lo..=hi`.
/// `names[i]` stands for `lo + i` (months from 1, weekdays from 0).
fn field(text: &str, lo: u32, hi: u32, names: &[&str], what: &str) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(lo + u32::try_from(i).expect("at most 12 names"));
        }
        let n: u32 = s
            .parse()
            .map_err(|_| format!("{what} {s:?} is not a number"))?;
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{what} {n} is outside {lo}-{hi}"))
        }
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("{what} step {s:?} is not a positive number"))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("{what} range {range:?} runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            (a, if step > 1 { hi } else { a })
        };
        // A step past the field's end leaves one value: `n` stops at
        // u32::MAX instead of wrapping round to the small values again.
        let mut n = from;
        while n <= to {
            bits |= 1 << n;
            n = n.saturating_add(step);
        }
    }
    Ok(bits)
}

impl Schedule {
    /// Whether the schedule runs on this local date.
    fn runs_on(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        }
    }

    /// The first run strictly after `after`, or `None` if none comes within
    /// eight years (only possible for a date that does not exist, like 31 Feb,
    /// which parsing already refuses).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first_day = after.with_timezone(&London).date_naive() - Duration::days(1);
        for offset in 0..SEARCH_DAYS {
            let date = first_day + Duration::days(offset);
            if !self.runs_on(date) {
                continue;
            }
            for hour in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                for minute in (0..60).filter(|m| self.minutes & (1 << m) != 0) {
                    let time = NaiveTime::from_hms_opt(hour, minute, 0).expect("a real time");
                    let instant = resolve(date.and_time(time));
                    if instant > after {
                        return Some(instant);
                    }
                }
            }
        }
        None
    }

    /// Every run in `(after, until]`, in order.
    pub fn runs_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let mut last = after;
        std::iter::from_fn(move || {
            let next = self.next_after(last).filter(|&n| n <= until)?;
            last = next;
            Some(next)
        })
    }
}

/// A London wall-clock time as an instant: the first of two when the clocks
/// go back, the end of the gap when they go forward.
fn resolve(local: chrono::NaiveDateTime) -> DateTime<Utc> {
    match London.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Walk forward a minute at a time: the first local time that
            // exists is the end of the gap (gaps are an hour here).
            let mut probe = local;
            loop {
                probe += Duration::minutes(1);
                match London.from_local_datetime(&probe) {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                        return t.with_timezone(&Utc);
                    }
                    LocalResult::None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    fn schedule(s: &str) -> Schedule {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn monthly_on_the_second_at_six_london_time() {
        let s = schedule("0 6 2 * *");
        // Winter: GMT.
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-02T06:00:00Z"))
        );
        // Summer: BST, so 06:00 London is 05:00 UTC.
        assert_eq!(
            s.next_after(utc("2026-06-02T05:00:00Z")),
            Some(utc("2026-07-02T05:00:00Z"))
        );
    }

    #[test]
    fn a_time_skipped_when_the_clocks_go_forward_runs_once_at_the_end_of_the_gap() {
        // 29 March 2026: 01:00 GMT becomes 02:00 BST; 01:30 never happens.
        let s = schedule("30 1 * * *");
        let runs: Vec<_> = s
            .runs_between(utc("2026-03-28T00:00:00Z"), utc("2026-03-31T00:00:00Z"))
            .collect();
        assert_eq!(
            runs,
            [
                utc("2026-03-28T01:30:00Z"),
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-30T00:30:00Z")
            ]
        );
    }

    #[test]
    fn a_time_that_happens_twice_when_the_clocks_go_back_runs_once() {
        // 25 October 2026: 02:00 BST becomes 01:00 GMT; 01:30 happens twice.
        let s = schedule("30 1 * * *");
        let runs: Vec<_> = s
            .runs_between(utc("2026-10-24T00:00:00Z"), utc("2026-10-27T00:00:00Z"))
            .collect();
        assert_eq!(
            runs,
            [
                utc("2026-10-24T00:30:00Z"),
                utc("2026-10-25T00:30:00Z"),
                utc("2026-10-26T01:30:00Z")
            ]
        );
    }

    #[test]
    fn skipped_times_landing_on_one_instant_run_once() {
        let s = schedule("*/30 1-2 * * *");
        let runs: Vec<_> = s
            .runs_between(utc("2026-03-29T00:00:00Z"), utc("2026-03-29T02:00:00Z"))
            .collect();
        // 01:00 and 01:30 (skipped) and 02:00 BST are all 01:00 UTC; then 02:30 BST.
        assert_eq!(
            runs,
            [utc("2026-03-29T01:00:00Z"), utc("2026-03-29T01:30:00Z")]
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 1st of the month or any Monday.
        let s = schedule("0 0 1 * mon");
        let runs: Vec<_> = s
            .runs_between(utc("2026-05-31T12:00:00Z"), utc("2026-06-10T00:00:00Z"))
            .map(|t| t.with_timezone(&London).date_naive().to_string())
            .collect();
        assert_eq!(runs, ["2026-06-01", "2026-06-08"]);
    }

    #[test]
    fn lists_ranges_steps_and_names() {
        let s = schedule("0,15 9-17/4 * jan-mar 7");
        assert_eq!(s.hours, (1 << 9) | (1 << 13) | (1 << 17));
        assert_eq!(s.minutes, 1 | (1 << 15));
        assert_eq!(s.months, (1 << 1) | (1 << 2) | (1 << 3));
        assert_eq!(s.weekdays, 1, "7 is Sunday");
        assert_eq!(schedule("0 0 * * sun").weekdays, 1);
        assert_eq!(schedule("0 0 * dec *").months, 1 << 12);
    }

    #[test]
    fn a_step_near_u32_max_is_one_value_not_a_wrap() {
        // Found reviewing the provider_toml fuzz target: `n += step`
        // overflowed, a panic with overflow checks and, without them, a
        // wrap that added minutes the schedule never named (0, 6, …, 24).
        let s = schedule("30/4294967290 6 * * *");
        assert_eq!(s.minutes, 1 << 30);
        let s = schedule("1/4294967295 0-23/4294967295 1/4294967295 1/4294967295 0/4294967295");
        assert_eq!(
            (s.minutes, s.hours, s.days, s.months, s.weekdays),
            (1 << 1, 1, 1 << 1, 1 << 1, 1)
        );
    }

    #[test]
    fn leap_day_schedules_find_the_next_leap_year() {
        let s = schedule("0 12 29 2 *");
        assert_eq!(
            s.next_after(utc("2025-03-01T00:00:00Z")),
            Some(utc("2028-02-29T12:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        for (expr, why) in [
            ("0 6 2 *", "4 fields"),
            ("60 6 * * *", "minute 60 is outside 0-59"),
            ("0 24 * * *", "hour 24 is outside 0-23"),
            ("0 6 0 * *", "day of month 0 is outside 1-31"),
            ("0 6 * 13 *", "month 13 is outside 1-12"),
            ("0 6 * * 8", "day of week 8 is outside 0-7"),
            ("*/0 * * * *", "step \"0\""),
            ("0 6 10-2 * *", "runs backwards"),
            ("0 6 31 2 *", "no date ever matches"),
            ("x 6 * * *", "minute \"x\" is not a number"),
        ] {
            let err = expr.parse::<Schedule>().expect_err(expr).to_string();
            assert!(err.contains(why), "{expr}: {err}");
        }
    }
}
