//! The scheduler: which runs of each `[[report]]` are due at a given time,
//! and the durable record of what has been handled.
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
use rusqlite::params;
use serde_json::json;

use crate::audit::{self, Kind};
use crate::config::{Missed, ProviderConfig, ReportConfig};
use crate::report::last_complete_period;
use crate::schedule::Schedule;
use crate::store::{Optional, Store, StoreError, parse_timestamp, timestamp};

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

/// The parsed schedule of `report` (checked when the config was loaded).
pub fn schedule_of(report: &ReportConfig) -> Schedule {
    report
        .schedule
        .parse()
        .expect("schedules are checked when the configuration is loaded")
}

/// A report's mark: the last scheduled time handled, if it has one.
pub fn mark(store: &Store, report: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let text: Option<String> = store
        .conn()
        .query_row(
            "SELECT handled_until FROM schedule_marks WHERE report = ?1",
            [report],
            |r| r.get(0),
        )
        .optional()?;
    text.as_deref().map(parse_timestamp).transpose()
}

/// Sets the marks of reports that have none to `now` (the first start):
/// only runs after it are due.
pub fn initialise_marks(
    store: &mut Store,
    config: &ProviderConfig,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tx = store.write()?;
    for report in &config.reports {
        tx.execute(
            "INSERT OR IGNORE INTO schedule_marks (report, handled_until) VALUES (?1, ?2)",
            params![report.name, timestamp(now)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Records a scheduled run of `report` for `scheduled_for`, and moves its
/// mark to `handled_until`, in one transaction. The run is not yet spooled
/// ([`mark_spooled`] says when it is).
pub fn record_run(
    store: &mut Store,
    report: &ReportConfig,
    scheduled_for: DateTime<Utc>,
    handled_until: DateTime<Utc>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let period = last_complete_period(report.period, scheduled_for).name;
    let tx = store.write()?;
    tx.execute(
        "INSERT INTO report_runs (report, period, scheduled_for, started_at, actor, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, 'ran')",
        params![
            report.name,
            period,
            timestamp(scheduled_for),
            timestamp(now),
            actor
        ],
    )?;
    let id = tx.last_insert_rowid();
    set_mark(&tx, &report.name, handled_until)?;
    tx.commit()?;
    Ok(id)
}

/// Records runs of `report` missed and skipped (`missed = "skip"`), with an
/// audit entry each, and moves its mark to `handled_until`.
pub fn record_skipped(
    store: &mut Store,
    report: &ReportConfig,
    skipped: &[DateTime<Utc>],
    handled_until: DateTime<Utc>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tx = store.write()?;
    for &scheduled_for in skipped {
        let period = last_complete_period(report.period, scheduled_for).name;
        tx.execute(
            "INSERT INTO report_runs (report, period, scheduled_for, started_at, actor, outcome,
                 spooled_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'skipped', NULL)",
            params![
                report.name,
                period,
                timestamp(scheduled_for),
                timestamp(now),
                actor
            ],
        )?;
        let run = tx.last_insert_rowid();
        audit::append(
            &tx,
            now,
            Kind::RunSkipped,
            actor,
            None,
            &json!({
                "run": run,
                "report": report.name,
                "period": period,
                "scheduled_for": timestamp(scheduled_for),
                "why": "missed while the daemon was down; the report's missed policy is skip",
            }),
        )?;
    }
    set_mark(&tx, &report.name, handled_until)?;
    tx.commit()?;
    Ok(())
}

fn set_mark(
    tx: &rusqlite::Transaction<'_>,
    report: &str,
    at: DateTime<Utc>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO schedule_marks (report, handled_until) VALUES (?1, ?2)
         ON CONFLICT (report) DO UPDATE SET handled_until = excluded.handled_until
         WHERE excluded.handled_until > schedule_marks.handled_until",
        params![report, timestamp(at)],
    )?;
    Ok(())
}

/// Records that every delivery of run `id` is spooled.
pub fn mark_spooled(store: &mut Store, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
    let tx = store.write()?;
    tx.execute(
        "UPDATE report_runs SET spooled_at = ?2 WHERE id = ?1",
        params![id, timestamp(now)],
    )?;
    tx.commit()?;
    Ok(())
}

/// A scheduled run recorded but not completely spooled (the daemon stopped
/// while making it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedRun {
    pub id: i64,
    pub report: String,
    pub scheduled_for: DateTime<Utc>,
}

/// Scheduled runs to finish spooling, oldest first.
pub fn unfinished_runs(store: &Store) -> Result<Vec<UnfinishedRun>, StoreError> {
    let mut stmt = store.conn().prepare(
        "SELECT id, report, scheduled_for FROM report_runs
         WHERE outcome = 'ran' AND spooled_at IS NULL AND scheduled_for IS NOT NULL
         ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, report, at) = row?;
        out.push(UnfinishedRun {
            id,
            report,
            scheduled_for: parse_timestamp(&at)?,
        });
    }
    Ok(out)
}

/// The LAs already settled in run `id`: with a delivery, or refused by the
/// gate when it was planned.
pub fn las_in_run(store: &Store, id: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = store.conn().prepare(
        "SELECT la_code FROM deliveries WHERE run_id = ?1
         UNION SELECT la_code FROM run_refusals WHERE run_id = ?1",
    )?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records that the gate refused `la` when run `id` was planned.
pub fn record_plan_refusal(
    store: &mut Store,
    id: i64,
    la: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let tx = store.write()?;
    tx.execute(
        "INSERT OR IGNORE INTO run_refusals (run_id, la_code, reason) VALUES (?1, ?2, ?3)",
        params![id, la, reason],
    )?;
    tx.commit()?;
    Ok(())
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
