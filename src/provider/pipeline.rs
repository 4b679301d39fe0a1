//! The pipeline, written once: **plan → run → seal → spool**. `send-now`,
//! the daemon's scheduled runs and `mishare retry` all go through it.
//!
//! 1. **Plan**: the gate at [`Stage::Plan`] for each LA ([`plan`]). A
//!    refused LA is never read for, sealed or sent; a scheduled run
//!    remembers its refusals, so finishing it after a restart does not send
//!    what was withheld.
//! 2. **Run**: the report made for the permitted LAs, its source read once
//!    ([`report::run_report`]), off the reactor. A table the sanitiser
//!    blocks is that LA's outcome; the other LAs go on.
//! 3. **Ledger audit** (R11): before anything is sealed, each LA's file is
//!    audited together with everything that LA has been sent and the
//!    figures it knows ([`ledger::audit`]), over a ledger first verified
//!    against the audit chain. A figure or cell pinned (`E_UNPICKABLE`), a
//!    ledger that does not verify, or in strict mode a warning, withholds
//!    that LA's file: recorded with the run and in the audit log, with the
//!    findings; the other LAs go on. Findings never reach an LA.
//! 4. **Seal and spool**: each LA's file sealed to its recipients and
//!    written to the spool with no lock held, then recorded as a queued
//!    delivery with its release in the ledger, in one transaction
//!    ([`outbox::spool`]). Each delivery is handed on as soon as it is
//!    spooled, so a caller can push it while the next is sealed.
//!
//! A shutdown stops it between LAs: what is spooled stays spooled (queued,
//! for the daemon or `mishare retry`), and nothing is half-recorded.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::common::blocking::{TaskFailed, blocking};
use crate::common::shutdown::Shutdown;
use crate::config::provider::{ProviderConfig, ReportConfig};
use crate::provider::gate::{Gate, Refusal, Stage};
use crate::provider::ledger::{self, AuditPolicy, Known, ReleaseError, ReleaseTable, Released};
use crate::provider::outbox::{self, Addressed, OutboxError, RequeueError};
use crate::provider::report::{self, LaFile, ReportError};
use crate::provider::store::{Delivery, LedgerCheck, SharedStore, Store, StoreError};
use crate::sanitiser::Period;
use crate::sanitiser::{Blocked, Code, Finding};

/// Why a run could not be made at all (for any LA).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The report's source could not be read, or is blocked as a whole.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The state database failed.
    #[error("report {report}: the state database: {source}")]
    Store {
        report: String,
        #[source]
        source: StoreError,
    },
    /// A blocking task failed.
    #[error("report {report}: {source}")]
    Task {
        report: String,
        #[source]
        source: TaskFailed,
    },
}

/// Which run a pipeline pass makes files for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRecord {
    /// A new run outside the schedule (`send-now`): recorded once the
    /// report is made, if any LA is permitted.
    New,
    /// A scheduled run already recorded (and possibly half spooled).
    Scheduled(i64),
}

/// What became of one LA in a pass.
#[derive(Debug)]
pub enum LaStep {
    /// Its file is sealed, spooled and queued.
    Spooled(Delivery),
    /// The gate refused it at planning.
    Refused(Refusal),
    /// The sanitiser blocked its table.
    Blocked(Blocked),
    /// The ledger audit withheld its file: the findings that blocked it
    /// (recorded with the run and in the audit log).
    Withheld(Vec<Finding>),
    /// Its file could not be sealed or spooled.
    NotSpooled(OutboxError),
    /// The pass stopped (a shutdown) before its file was made.
    Stopped,
}

/// The result of one pass.
#[derive(Debug)]
pub struct Pass {
    /// The run's id, once it is recorded.
    pub run_id: Option<i64>,
    /// The period the run covers.
    pub period: Period,
    /// One step per LA asked for, in the order asked.
    pub las: Vec<(String, LaStep)>,
    /// The ledger audit's findings for each LA whose file it let go
    /// (warnings and notes, for the operator).
    pub notes: Vec<(String, Vec<Finding>)>,
}

/// The pipeline over one configuration and store, recording as `actor`.
#[derive(Debug, Clone)]
pub struct Pipeline {
    config: Arc<ProviderConfig>,
    store: SharedStore,
    actor: String,
}

impl Pipeline {
    pub fn new(config: Arc<ProviderConfig>, store: SharedStore, actor: impl Into<String>) -> Self {
        Self {
            config,
            store,
            actor: actor.into(),
        }
    }

    /// Makes `report`'s files for `las` as of `at`: plan, run, seal and
    /// spool. Each delivery is handed to `spooled` as soon as it is queued.
    /// Stops between LAs once `shutdown` is cancelled.
    pub async fn pass(
        &self,
        report: &ReportConfig,
        las: Vec<String>,
        at: DateTime<Utc>,
        record: RunRecord,
        shutdown: &Shutdown,
        mut spooled: impl FnMut(&Delivery),
    ) -> Result<Pass, PipelineError> {
        let name = report.name.clone();
        let store_error = |source| PipelineError::Store {
            report: name.clone(),
            source,
        };
        let task_error = |source| PipelineError::Task {
            report: name.clone(),
            source,
        };
        let period = report::last_complete_period(report.period, at);

        let (config, actor, r) = (self.config.clone(), self.actor.clone(), report.clone());
        let run_for_refusals = match record {
            RunRecord::Scheduled(id) => Some(id),
            RunRecord::New => None,
        };
        let planned = self
            .store
            .run(move |store| plan(&config, store, &r, las, &actor, run_for_refusals))
            .await
            .map_err(task_error)?
            .map_err(store_error)?;
        let mut steps: Vec<(String, Option<LaStep>)> = Vec::new();
        let mut permitted = Vec::new();
        for (la, answer) in planned {
            match answer {
                Ok(()) => {
                    permitted.push(la.clone());
                    steps.push((la, None));
                }
                Err(refusal) => steps.push((la, Some(LaStep::Refused(refusal)))),
            }
        }
        let mut pass = Pass {
            run_id: None,
            period,
            las: Vec::new(),
            notes: Vec::new(),
        };
        if permitted.is_empty() || shutdown.is_cancelled() {
            pass.run_id = run_for_refusals;
            pass.las = finish_steps(steps);
            return Ok(pass);
        }

        let (config, r) = (self.config.clone(), report.clone());
        let made = blocking(move || report::run_report(&config, &r, &permitted, at))
            .await
            .map_err(task_error)??;
        let run_id = match record {
            RunRecord::Scheduled(id) => id,
            RunRecord::New => {
                let (report_name, period_name, actor) = (
                    report.name.clone(),
                    made.period.to_string(),
                    self.actor.clone(),
                );
                self.store
                    .run(move |store| {
                        store.start_run(&report_name, &period_name, &actor, Utc::now())
                    })
                    .await
                    .map_err(task_error)?
                    .map_err(store_error)?
            }
        };
        pass.run_id = Some(run_id);
        pass.period = made.period;

        // The ledger, verified once for the pass against the audit chain:
        // an audit over a ledger that does not verify fails closed.
        let check: Result<LedgerCheck, String> = match self.store.run(|s| s.verify_ledger()).await {
            Ok(Ok(check)) => Ok(check),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let adhoc = matches!(record, RunRecord::New);

        // Seal and spool one file at a time, each handed on as soon as it
        // is queued (so its push can start while the next is sealed). The
        // database is held only to record each, never while sealing; and
        // one at a time, a crash leaves at most one sealed file unrecorded.
        for LaFile { la, outcome } in made.files {
            if shutdown.is_cancelled() {
                break;
            }
            let rendered = match outcome {
                Ok(rendered) => rendered,
                Err(blocked) => {
                    set_step(&mut steps, &la, LaStep::Blocked(blocked));
                    continue;
                }
            };
            let Some(endpoint) = self.config.authority(&la) else {
                // The report's recipients are all [[authority]] sections.
                continue;
            };
            let audited = self
                .audit_for(&la, &rendered, &check, adhoc)
                .await
                .map_err(task_error)?;
            let (table, notes) = match audited {
                Verdict::Pass { table, notes } => (table, notes),
                Verdict::Withheld { blocking, all } => {
                    tracing::warn!(%la, report = %report.name,
                        codes = %codes(&blocking), "the ledger audit withheld the file");
                    let (store, actor, report_name, la_) = (
                        self.store.clone(),
                        self.actor.clone(),
                        report.name.clone(),
                        la.clone(),
                    );
                    let b = blocking.clone();
                    store
                        .run(move |s| {
                            s.record_audit_refusal(
                                run_id,
                                &report_name,
                                &la_,
                                &b,
                                &all,
                                &actor,
                                Utc::now(),
                            )
                        })
                        .await
                        .map_err(task_error)?
                        .map_err(store_error)?;
                    set_step(&mut steps, &la, LaStep::Withheld(blocking));
                    continue;
                }
            };
            let (store, actor, recipients) = (
                self.store.clone(),
                self.actor.clone(),
                endpoint.recipients.clone(),
            );
            let (report_name, period_name, classification, to_la) = (
                report.name.clone(),
                made.period.to_string(),
                report.classification,
                la.clone(),
            );
            let recorded_notes = notes.clone();
            let done = blocking(move || {
                let to = Addressed {
                    run_id,
                    la: &to_la,
                    report: &report_name,
                    period: &period_name,
                    classification,
                };
                let release = outbox::Release {
                    table: &table,
                    findings: &recorded_notes,
                };
                outbox::spool(
                    &store,
                    to,
                    &rendered.csv[..],
                    &recipients,
                    release,
                    &actor,
                    Utc::now(),
                )
            })
            .await
            .map_err(task_error)?;
            if done.is_ok() && !notes.is_empty() {
                pass.notes.push((la.clone(), notes));
            }
            settle(&mut steps, la, done, &mut spooled);
        }
        pass.las = finish_steps(steps);
        Ok(pass)
    }
}

/// What the ledger audit decided for one LA's file.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// It may go: the table the ledger records, and the findings that did
    /// not block it.
    Pass {
        table: Box<ReleaseTable>,
        notes: Vec<Finding>,
    },
    /// It is withheld: the findings that block it, and all of them.
    Withheld {
        blocking: Vec<Finding>,
        all: Vec<Finding>,
    },
}

/// The codes of `findings`, once each, comma-separated.
pub fn codes(findings: &[Finding]) -> String {
    let mut codes: Vec<&str> = Vec::new();
    for f in findings {
        if !codes.contains(&f.code.as_str()) {
            codes.push(f.code.as_str());
        }
    }
    codes.join(",")
}

impl Pipeline {
    /// Audits `la`'s file against its ledger (R11). Fails closed: a ledger
    /// that does not verify or cannot be read, or a file the ledger cannot
    /// record, withholds the file.
    async fn audit_for(
        &self,
        la: &str,
        rendered: &report::Rendered,
        check: &Result<LedgerCheck, String>,
        adhoc: bool,
    ) -> Result<Verdict, TaskFailed> {
        let table = match precheck(check, la, &rendered.release) {
            Ok(table) => table.clone(),
            Err(verdict) => return Ok(verdict),
        };
        let who = la.to_string();
        let ledger = self.store.run(move |s| ledger_of(s, &who)).await?;
        let (history, known) = match ledger {
            Ok(ledger) => ledger,
            Err(verdict) => return Ok(verdict),
        };
        let config = self.config.clone();
        blocking(move || decide(&config, &history, &known, table, adhoc)).await
    }
}

/// The ledger audit's verdict on one LA's file, as the pipeline would give
/// it, recording nothing: for `report preview` and `plan`. `store` is
/// `None` when there is no state database yet (nothing sent, nothing
/// known).
pub fn audit_preview(
    config: &ProviderConfig,
    store: Option<&Store>,
    check: &Result<LedgerCheck, String>,
    la: &str,
    release: &Result<ReleaseTable, ReleaseError>,
    adhoc: bool,
) -> Verdict {
    let table = match precheck(check, la, release) {
        Ok(table) => table.clone(),
        Err(verdict) => return verdict,
    };
    let (history, known) = match store.map(|s| ledger_of(s, la)) {
        None => (Vec::new(), Vec::new()),
        Some(Ok(ledger)) => ledger,
        Some(Err(verdict)) => return verdict,
    };
    decide(config, &history, &known, table, adhoc)
}

/// The ledger check of a store for [`audit_preview`]: `Ok` with no
/// problems when there is no store yet.
pub fn check_of(store: Option<&Store>) -> Result<LedgerCheck, String> {
    match store {
        None => Ok(LedgerCheck {
            chain: None,
            entries: 0,
            releases: 0,
            known: 0,
            problems: Vec::new(),
        }),
        Some(s) => s.verify_ledger().map_err(|e| e.to_string()),
    }
}

/// A verdict withholding the file for one reason.
fn withheld(finding: Finding) -> Verdict {
    Verdict::Withheld {
        blocking: vec![finding.clone()],
        all: vec![finding],
    }
}

/// What withholds a file before any audit: a ledger that does not verify
/// for `la`, or a file the ledger cannot record.
fn precheck<'r>(
    check: &Result<LedgerCheck, String>,
    la: &str,
    release: &'r Result<ReleaseTable, ReleaseError>,
) -> Result<&'r ReleaseTable, Verdict> {
    let unverified = match check {
        Err(e) => Some(format!(
            "the ledger cannot be verified ({e}); nothing is spooled until `mishare audit \
             verify` passes"
        )),
        Ok(check) => check.refusal(la),
    };
    if let Some(why) = unverified {
        return Err(withheld(Finding::new(Code::LedgerUnverified, why)));
    }
    release.as_ref().map_err(|e| {
        withheld(Finding::new(
            Code::LedgerInvalid,
            format!("the file cannot be recorded in the release ledger: {e}"),
        ))
    })
}

/// `la`'s releases and current known figures; a ledger that cannot be read
/// withholds the file.
fn ledger_of(s: &Store, la: &str) -> Result<(Vec<Released>, Vec<Known>), Verdict> {
    let read = || -> Result<_, StoreError> {
        let history: Vec<Released> = (s.releases(Some(la))?.into_iter())
            .map(Released::from)
            .collect();
        let known: Vec<Known> = (s.known_figures(Some(la), false)?.into_iter())
            .map(|k| k.known)
            .collect();
        Ok((history, known))
    };
    read().map_err(|e| {
        withheld(Finding::new(
            Code::LedgerUnverified,
            format!("the ledger for {la} cannot be read ({e}); nothing is spooled for it"),
        ))
    })
}

/// The audit of `table` against `la`'s ledger, and what it decides.
fn decide(
    config: &ProviderConfig,
    history: &[Released],
    known: &[Known],
    table: ReleaseTable,
    adhoc: bool,
) -> Verdict {
    let policy = AuditPolicy::from(config.disclosure);
    let a = ledger::audit(&config.catalogue, history, known, Some(&table), &policy);
    let blocking: Vec<Finding> = a.blocking().cloned().collect();
    let mut all = a.findings.clone();
    if adhoc {
        // How the release was made, not what it reveals: strict mode does
        // not make it block (choice).
        all.push(Finding::new(
            Code::Adhoc,
            "this release is made outside the schedule (send-now); the audit counts it like \
             any other",
        ));
    }
    if blocking.is_empty() {
        Verdict::Pass {
            table: Box::new(table),
            notes: all,
        }
    } else {
        Verdict::Withheld { blocking, all }
    }
}

impl Verdict {
    /// One line for the operator: `would be sent` with any findings, or
    /// `would withhold it: CODES: …`.
    pub fn text(&self) -> String {
        match self {
            Verdict::Pass { notes, .. } if notes.is_empty() => {
                "the ledger audit would let it go: no findings".to_string()
            }
            Verdict::Pass { notes, .. } => format!(
                "the ledger audit would let it go, with {}",
                notes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Verdict::Withheld { blocking, .. } => format!(
                "the ledger audit would withhold it: {}",
                crate::provider::send::withheld_text(blocking).replacen(
                    ": withheld by the ledger audit",
                    "",
                    1
                )
            ),
        }
    }

    /// As JSON: `{"withheld": bool, "findings": [...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Verdict::Pass { notes, .. } => {
                serde_json::json!({ "withheld": false, "findings": notes })
            }
            Verdict::Withheld { all, .. } => {
                serde_json::json!({ "withheld": true, "findings": all })
            }
        }
    }
}

fn settle(
    steps: &mut [(String, Option<LaStep>)],
    la: String,
    done: Result<Delivery, OutboxError>,
    spooled: &mut impl FnMut(&Delivery),
) {
    let step = match done {
        Ok(delivery) => {
            spooled(&delivery);
            LaStep::Spooled(delivery)
        }
        Err(e) => {
            tracing::error!(%la, error = %e, "cannot spool the file");
            LaStep::NotSpooled(e)
        }
    };
    set_step(steps, &la, step);
}

fn set_step(steps: &mut [(String, Option<LaStep>)], la: &str, step: LaStep) {
    if let Some((_, slot)) = steps.iter_mut().find(|(l, _)| l == la) {
        *slot = Some(step);
    }
}

fn finish_steps(steps: Vec<(String, Option<LaStep>)>) -> Vec<(String, LaStep)> {
    steps
        .into_iter()
        .map(|(la, step)| (la, step.unwrap_or(LaStep::Stopped)))
        .collect()
}

/// What the gate said for each LA at planning.
pub type Planned = Vec<(String, Result<(), Refusal>)>;

/// The gate at planning for each of `las`, recorded as `actor`. For a
/// scheduled run (`run`), each refusal is remembered with it.
pub fn plan(
    config: &ProviderConfig,
    store: &mut Store,
    report: &ReportConfig,
    las: Vec<String>,
    actor: &str,
    run: Option<i64>,
) -> Result<Planned, StoreError> {
    let mut out = Vec::with_capacity(las.len());
    for la in las {
        let answer = Gate::new(config, store, actor).authorise(
            &la,
            &report.name,
            Utc::now(),
            Stage::Plan,
            |_permit| {},
        );
        if let (Err(refusal), Some(run)) = (&answer, run) {
            store.record_plan_refusal(run, &la, refusal.reason.as_str())?;
        }
        out.push((la, answer));
    }
    Ok(out)
}

/// Why `mishare retry` did not queue a delivery again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError {
    /// It is not dead, or its ciphertext is gone.
    #[error(transparent)]
    NotRequeueable(#[from] RequeueError),
    /// The gate refuses it now (recorded in the audit log).
    #[error(
        "delivery {id} to {la} not queued again: the gate refuses it: {}: {}",
        refusal.reason,
        refusal.detail()
    )]
    Refused {
        id: i64,
        la: String,
        refusal: Box<Refusal>,
    },
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `mishare retry`: queues dead delivery `id` again with the same spooled
/// ciphertext, after the gate at planning permits it (and records so).
pub fn retry(
    config: &ProviderConfig,
    store: &mut Store,
    id: i64,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Delivery, RetryError> {
    let delivery = store.delivery(id)?;
    outbox::can_requeue(&delivery)?;
    Gate::new(config, store, actor)
        .authorise(&delivery.la, &delivery.report, now, Stage::Plan, |_| {})
        .map_err(|refusal| RetryError::Refused {
            id,
            la: delivery.la.clone(),
            refusal: Box::new(refusal),
        })?;
    Ok(store.requeue_dead(id, actor, now)?)
}
