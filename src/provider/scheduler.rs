//! The scheduler: which runs of each `[[report]]` are due at a given time.
//! Pure: the marks it works from are kept by the store
//! ([`crate::provider::store::runs`]).
//!
//! Each report has a mark in the database: the last scheduled time handled
//! (run or skipped). Everything up to the mark is done; a restart starts from
//! it, so no run is repeated and none is lost. On the very first start a
//! report's mark is set to "now": the daemon does not run a report's whole
//! history.
//!
//! Scheduled times between the mark and now are split in two:
//!
//! - **on time**: at most [`ON_TIME`] ago. The daemon was up and simply woke
//!   for it; the latest such time runs.
//! - **missed**: older (the daemon was down, or the machine asleep). With
//!   `missed = "run-once"` the latest of them runs once, as of its scheduled
//!   time (so it sends the period that run would have sent); with `skip`,
//!   the miss is recorded (a `report_runs` row marked `skipped` and an audit
//!   entry) and nothing runs until the next scheduled time.
//!
//! The functions here take `now` as a parameter: the daemon passes the
//! clock, tests pass the time they want.

use chrono::{DateTime, Duration, Utc};

use crate::config::provider::Missed;
use crate::cron::Schedule;

/// How late a scheduled time may be handled and still count as on time.
pub const ON_TIME: Duration = Duration::minutes(10);

/// More missed times than this are not listed one by one (a schedule of
/// every minute, down for a month).
const MAX_MISSED_SCAN: usize = 100_000;

/// What to do for one report at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The scheduled time to run now, if any.
    pub run: Option<DateTime<Utc>>,
    /// Missed times that are skipped (`missed = "skip"`), oldest first.
    pub skipped: Vec<DateTime<Utc>>,
    /// The new mark: everything up to here is handled once this is done.
    pub handled_until: DateTime<Utc>,
}

impl Due {
    /// Whether there is nothing to do.
    pub fn is_idle(&self) -> bool {
        self.run.is_none() && self.skipped.is_empty()
    }
}

/// What is due for a report with `schedule` and `missed`, whose times up to
/// `mark` are handled, at `now`.
pub fn due(schedule: &Schedule, missed: Missed, mark: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    let times: Vec<DateTime<Utc>> = schedule
        .runs_between(mark, now)
        .take(MAX_MISSED_SCAN)
        .collect();
    let handled_until = times.last().copied().unwrap_or(mark);
    let (late, on_time): (Vec<_>, Vec<_>) = times.into_iter().partition(|&t| now - t > ON_TIME);
    if let Some(&latest) = on_time.last() {
        // Times missed before an on-time run are covered by it (run-once)
        // or recorded as skipped.
        let skipped = match missed {
            Missed::RunOnce => Vec::new(),
            Missed::Skip => late,
        };
        return Due {
            run: Some(latest),
            skipped,
            handled_until,
        };
    }
    match missed {
        Missed::RunOnce => Due {
            run: late.last().copied(),
            skipped: Vec::new(),
            handled_until,
        },
        Missed::Skip => Due {
            run: None,
            skipped: late,
            handled_until,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("a time")
            .with_timezone(&Utc)
    }

    fn monthly() -> Schedule {
        "0 6 2 * *".parse().expect("schedule")
    }

    #[test]
    fn nothing_is_due_before_the_next_time() {
        let d = due(
            &monthly(),
            Missed::RunOnce,
            t("2026-01-10T00:00:00Z"),
            t("2026-02-01T00:00:00Z"),
        );
        assert!(d.is_idle());
        assert_eq!(d.handled_until, t("2026-01-10T00:00:00Z"));
    }

    #[test]
    fn an_on_time_run_runs_whatever_the_policy() {
        for missed in [Missed::RunOnce, Missed::Skip] {
            let d = due(
                &monthly(),
                missed,
                t("2026-01-10T00:00:00Z"),
                t("2026-02-02T06:00:01Z"),
            );
            assert_eq!(d.run, Some(t("2026-02-02T06:00:00Z")), "{missed:?}");
            assert!(d.skipped.is_empty());
            assert_eq!(d.handled_until, t("2026-02-02T06:00:00Z"));
        }
    }

    #[test]
    fn missed_runs_run_once_or_are_skipped() {
        let (mark, now) = (t("2026-01-10T00:00:00Z"), t("2026-03-05T12:00:00Z"));
        let once = due(&monthly(), Missed::RunOnce, mark, now);
        assert_eq!(once.run, Some(t("2026-03-02T06:00:00Z")));
        assert!(once.skipped.is_empty());
        assert_eq!(once.handled_until, t("2026-03-02T06:00:00Z"));

        let skip = due(&monthly(), Missed::Skip, mark, now);
        assert_eq!(skip.run, None);
        assert_eq!(
            skip.skipped,
            vec![t("2026-02-02T06:00:00Z"), t("2026-03-02T06:00:00Z")]
        );
        assert_eq!(skip.handled_until, t("2026-03-02T06:00:00Z"));

        // Handled: the same moment again has nothing to do.
        let again = due(&monthly(), Missed::RunOnce, once.handled_until, now);
        assert!(again.is_idle());
    }

    #[test]
    fn clock_changes_run_once() {
        // 01:30 daily: on 29 March 2026 (clocks forward) it runs once, at
        // 02:00 BST; on 25 October 2026 (clocks back) once, at the first
        // 01:30.
        let s: Schedule = "30 1 * * *".parse().expect("schedule");
        let spring: Vec<_> = s
            .runs_between(t("2026-03-28T12:00:00Z"), t("2026-03-29T12:00:00Z"))
            .collect();
        assert_eq!(spring, vec![t("2026-03-29T01:00:00Z")]);
        let autumn: Vec<_> = s
            .runs_between(t("2026-10-24T12:00:00Z"), t("2026-10-25T12:00:00Z"))
            .collect();
        assert_eq!(autumn, vec![t("2026-10-25T00:30:00Z")]);
        let d = due(
            &s,
            Missed::RunOnce,
            t("2026-10-24T12:00:00Z"),
            Utc.with_ymd_and_hms(2026, 10, 25, 0, 31, 0)
                .single()
                .expect("t"),
        );
        assert_eq!(d.run, Some(t("2026-10-25T00:30:00Z")));
    }
}
