//! Report runs, each report's schedule mark, and the LAs the gate refused
//! when a run was planned.
//!
//! A run row is written in one place ([`insert_run`]), whoever makes it:
//! `send-now` (no scheduled time), a scheduled run, or a skipped one.

use chrono::{DateTime, Utc};
use rusqlite::{Transaction, params};
use serde_json::json;

use super::{Store, StoreError};
use crate::common::audit::{self, Kind};
use crate::common::db::{Optional, time_column};
use crate::common::time::timestamp;

/// How a run ended up in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Deliveries were (or are being) made for it.
    Ran,
    /// Missed while the daemon was down and not run (`missed = "skip"`).
    Skipped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ran => "ran",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The one INSERT into `report_runs`.
fn insert_run(
    tx: &Transaction<'_>,
    report: &str,
    period: &str,
    scheduled_for: Option<DateTime<Utc>>,
    outcome: Outcome,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO report_runs (report, period, scheduled_for, started_at, actor, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            report,
            period,
            scheduled_for.map(timestamp),
            timestamp(now),
            actor,
            outcome.as_str(),
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

fn set_mark(tx: &Transaction<'_>, report: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO schedule_marks (report, handled_until) VALUES (?1, ?2)
         ON CONFLICT (report) DO UPDATE SET handled_until = excluded.handled_until
         WHERE excluded.handled_until > schedule_marks.handled_until",
        params![report, timestamp(at)],
    )?;
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

impl Store {
    /// Records a run of `report` for `period` made now, outside the schedule
    /// (`send-now`).
    pub fn start_run(
        &mut self,
        report: &str,
        period: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let tx = self.write()?;
        let id = insert_run(&tx, report, period, None, Outcome::Ran, actor, now)?;
        tx.commit()?;
        Ok(id)
    }

    /// Records a scheduled run of `report` for `period` at `scheduled_for`,
    /// and moves the report's mark to `handled_until`, in one transaction.
    /// The run is not yet spooled ([`Store::mark_spooled`] says when it is).
    pub fn record_scheduled_run(
        &mut self,
        report: &str,
        period: &str,
        scheduled_for: DateTime<Utc>,
        handled_until: DateTime<Utc>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let tx = self.write()?;
        let id = insert_run(
            &tx,
            report,
            period,
            Some(scheduled_for),
            Outcome::Ran,
            actor,
            now,
        )?;
        set_mark(&tx, report, handled_until)?;
        tx.commit()?;
        Ok(id)
    }

    /// Records runs of `report` missed and skipped, each `(scheduled time,
    /// period)` with an audit entry, and moves its mark to `handled_until`.
    pub fn record_skipped_runs(
        &mut self,
        report: &str,
        skipped: &[(DateTime<Utc>, String)],
        handled_until: DateTime<Utc>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        for (scheduled_for, period) in skipped {
            let run = insert_run(
                &tx,
                report,
                period,
                Some(*scheduled_for),
                Outcome::Skipped,
                actor,
                now,
            )?;
            audit::append(
                &tx,
                now,
                Kind::RunSkipped,
                actor,
                None,
                &json!({
                    "run": run,
                    "report": report,
                    "period": period,
                    "scheduled_for": timestamp(*scheduled_for),
                    "why": "missed while the daemon was down; the report's missed policy is skip",
                }),
            )?;
        }
        set_mark(&tx, report, handled_until)?;
        tx.commit()?;
        Ok(())
    }

    /// Records that every delivery of run `id` is spooled.
    pub fn mark_spooled(&mut self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.execute(
            "UPDATE report_runs SET spooled_at = ?2 WHERE id = ?1",
            params![id, timestamp(now)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A report's mark: the last scheduled time handled, if it has one.
    pub fn schedule_mark(&self, report: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT handled_until FROM schedule_marks WHERE report = ?1",
                [report],
                |r| r.get(0),
            )
            .optional()?;
        Ok(text.as_deref().map(time_column).transpose()?)
    }

    /// Sets the marks of `reports` that have none to `now` (the first
    /// start): only runs after it are due.
    pub fn initialise_marks<'a>(
        &mut self,
        reports: impl IntoIterator<Item = &'a str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        for report in reports {
            tx.execute(
                "INSERT OR IGNORE INTO schedule_marks (report, handled_until) VALUES (?1, ?2)",
                params![report, timestamp(now)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Scheduled runs to finish spooling, oldest first.
    pub fn unfinished_runs(&self) -> Result<Vec<UnfinishedRun>, StoreError> {
        let mut stmt = self.conn().prepare(
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
                scheduled_for: time_column(&at)?,
            });
        }
        Ok(out)
    }

    /// The LAs already settled in run `id`: with a delivery, or refused by
    /// the gate when it was planned.
    pub fn las_in_run(&self, id: i64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn().prepare(
            "SELECT la_code FROM deliveries WHERE run_id = ?1
             UNION SELECT la_code FROM run_refusals WHERE run_id = ?1",
        )?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that the gate refused `la` when run `id` was planned.
    pub fn record_plan_refusal(
        &mut self,
        id: i64,
        la: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.execute(
            "INSERT OR IGNORE INTO run_refusals (run_id, la_code, reason) VALUES (?1, ?2, ?3)",
            params![id, la, reason],
        )?;
        tx.commit()?;
        Ok(())
    }
}
