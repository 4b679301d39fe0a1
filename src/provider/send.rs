//! `mishare send-now`: one report, now, for every recipient or one. The
//! pipeline plans, runs, seals and spools; then the deliveries are pushed
//! by exactly one process:
//!
//! - when a daemon runs on the `data_dir`, by the daemon: `send-now` hands
//!   them over (wakes it through the state watch) and waits for their
//!   outcomes, so the two never push the same delivery;
//! - otherwise by `send-now` itself, holding the `data_dir` lock meanwhile
//!   (a daemon started then waits its turn), each as soon as it is
//!   spooled, with bounded concurrency, one slow LA holding up no other.
//!
//! On a shutdown (Ctrl-C) nothing more is spooled; its own pushes in
//! flight stop at once, recorded as failed; what is spooled stays for the
//! daemon or `mishare retry`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

use crate::common::shutdown::Shutdown;
use crate::common::time::timestamp;
use crate::config::provider::ProviderConfig;
use crate::provider::gate::Refusal;
use crate::provider::lock::{self, Holder, LockError};
use crate::provider::outbox::OutboxError;
use crate::provider::pipeline::{LaStep, Pipeline, PipelineError, RunRecord};
use crate::provider::push::{self, Courier, Delivered, PushOptions};
use crate::provider::report::{self, ReportError};
use crate::provider::store::{Delivery, DeliveryState, SharedStore, StoreError, StoredReceipt};
use crate::provider::watch::{StateWatch, WatchError};
use crate::sanitiser::{Blocked, Finding};
use crate::tls::TlsError;

/// How many pushes of one run are in flight at once.
pub const MAX_CONCURRENT_PUSHES: usize = 16;

/// Why `send-now` could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The report or LA is wrong.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The run could not be made (its source, the database).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The state database cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state watch could not start.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The provider's TLS identity cannot make a client configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Another `send-now` is pushing from this `data_dir`.
    #[error(
        "another mishare send-now is pushing from this data_dir; wait for it to finish \
         (or run the daemon, which takes every send-now's deliveries in turn)"
    )]
    Busy,
    /// The `data_dir` lock cannot be taken.
    #[error(transparent)]
    Lock(LockError),
    /// The state database failed while waiting for the daemon.
    #[error("waiting for the daemon: {0}")]
    Task(#[from] crate::common::blocking::TaskFailed),
}

/// What happened for one LA.
#[derive(Debug)]
pub enum LaOutcome {
    /// Spooled and pushed: how the push ended.
    Pushed(Delivered),
    /// The gate refused it when the run was planned.
    Refused(Refusal),
    /// The sanitiser blocked its table.
    Blocked(Blocked),
    /// The ledger audit withheld its file: the findings that blocked it.
    Withheld(Vec<Finding>),
    /// Its file could not be sealed or spooled.
    NotSpooled(OutboxError),
    /// send-now was stopped before its file was made.
    Stopped,
    /// Handed to the running daemon: the delivery as it stands when
    /// `send-now` stopped waiting, with its receipt once delivered.
    ByDaemon {
        delivery: Box<Delivery>,
        receipt: Option<StoredReceipt>,
    },
}

/// One LA's line of a `send-now`.
#[derive(Debug)]
pub struct LaResult {
    pub la: String,
    pub outcome: LaOutcome,
    /// The ledger audit's findings on a file it let go (warnings, notes):
    /// for the operator, never the LA.
    pub notes: Vec<Finding>,
}

impl LaResult {
    /// Whether this is a delivery the gate permitted that did not reach the
    /// LA.
    pub fn is_failure(&self) -> bool {
        match &self.outcome {
            LaOutcome::Pushed(Delivered::Failed(_))
            | LaOutcome::Blocked(_)
            | LaOutcome::NotSpooled(_)
            | LaOutcome::Stopped => true,
            LaOutcome::ByDaemon { delivery, .. } => !matches!(
                delivery.state,
                DeliveryState::Delivered | DeliveryState::Refused
            ),
            LaOutcome::Pushed(_) | LaOutcome::Refused(_) | LaOutcome::Withheld(_) => false,
        }
    }

    /// The line `send-now` prints.
    pub fn line(&self) -> String {
        let la = &self.la;
        match &self.outcome {
            LaOutcome::Pushed(Delivered::Delivered {
                stored_as, sha256, ..
            }) => format!("{la} delivered {stored_as} sha256 {sha256} receipt verified"),
            LaOutcome::Pushed(Delivered::Refused { reason, detail, .. }) => {
                format!("{la} refused {reason}: {detail}")
            }
            LaOutcome::Refused(refusal) => {
                format!("{la} refused {}: {}", refusal.reason, refusal.detail())
            }
            LaOutcome::Pushed(Delivered::Failed(failure)) => format!("{la} failed: {failure}"),
            LaOutcome::Blocked(blocked) => format!("{la} failed: {}", blocked_text(blocked)),
            LaOutcome::Withheld(findings) => format!("{la} refused {}", withheld_text(findings)),
            LaOutcome::NotSpooled(e) => format!("{la} failed: {e}"),
            LaOutcome::Stopped => {
                format!("{la} failed: not sent: send-now was stopped before its file was made")
            }
            LaOutcome::ByDaemon { delivery, receipt } => by_daemon_line(la, delivery, receipt),
        }
    }
}

/// A delivery the daemon pushed, as `send-now` reports it.
fn by_daemon_line(la: &str, d: &Delivery, receipt: &Option<StoredReceipt>) -> String {
    let error = d.last_error.as_deref().unwrap_or("");
    match (d.state, receipt) {
        (DeliveryState::Delivered, Some(r)) => format!(
            "{la} delivered {} sha256 {} receipt verified",
            r.stored_as,
            d.sha256_hex()
        ),
        (DeliveryState::Refused, _) => format!(
            "{la} refused {}: {error}",
            d.reason.as_deref().unwrap_or("GATE_ERROR")
        ),
        (DeliveryState::Failed, _) => match d.next_attempt_at {
            Some(at) => format!(
                "{la} failed: {error} (the daemon tries again at {})",
                timestamp(at)
            ),
            None => format!("{la} failed: {error}"),
        },
        (DeliveryState::Queued | DeliveryState::Sending, _) => format!(
            "{la} failed: not delivered yet: handed to the running daemon, which is still \
             sending it (delivery {}; mishare status shows it)",
            d.id
        ),
        (_, _) => format!("{la} failed: {error}"),
    }
}

/// Whether `send-now` has seen the end of a delivery it handed over: it
/// reached a final state, or failed once and the daemon has scheduled
/// another attempt.
fn settled(d: &Delivery) -> bool {
    match d.state {
        DeliveryState::Delivered
        | DeliveryState::Refused
        | DeliveryState::Dead
        | DeliveryState::Abandoned => true,
        DeliveryState::Failed => d.next_attempt_at.is_some(),
        DeliveryState::Queued | DeliveryState::Sending => false,
    }
}

/// A blocked table in one line: every reason, then how many more.
pub fn blocked_text(blocked: &Blocked) -> String {
    let reasons: Vec<String> = blocked.errors.iter().map(ToString::to_string).collect();
    let more = if blocked.more > 0 {
        format!(" (and {} more)", blocked.more)
    } else {
        String::new()
    };
    format!("blocked by the sanitiser: {}{more}", reasons.join("; "))
}

/// A file the ledger audit withheld, in one line: its codes, then the
/// first finding and how many more.
pub fn withheld_text(findings: &[Finding]) -> String {
    let first = findings.first().map_or("", |f| f.message.as_str());
    let more = match findings.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more; the audit log has them all)", n - 1),
    };
    format!(
        "{}: withheld by the ledger audit: {first}{more}",
        crate::provider::pipeline::codes(findings)
    )
}

/// Progress of a `send-now`, for a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A file is spooled and its push begins.
    Pushing { la: String },
    /// One LA is done.
    Finished { la: String, done: usize },
}

/// How `send-now` behaves.
#[derive(Clone)]
pub struct SendOptions {
    /// The time the run is for (its period is the last complete one before).
    pub at: DateTime<Utc>,
    /// Recorded as the actor of every audit entry.
    pub actor: String,
    pub push: PushOptions,
    /// Told about progress; the CLI draws it on a terminal.
    pub progress: Arc<dyn Fn(Progress) + Send + Sync>,
}

impl std::fmt::Debug for SendOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendOptions")
            .field("at", &self.at)
            .field("actor", &self.actor)
            .field("push", &self.push)
            .finish_non_exhaustive()
    }
}

impl SendOptions {
    /// Now, as `actor`, with default push options and no progress.
    pub fn now(actor: impl Into<String>) -> Self {
        Self {
            at: Utc::now(),
            actor: actor.into(),
            push: PushOptions::default(),
            progress: Arc::new(|_| {}),
        }
    }
}

/// Runs report `name` now for every recipient, or only `la`, and delivers
/// it (itself, or through a running daemon). Returns one result per LA in
/// `[[authority]]` order. Stops early, cleanly, when `shutdown` is
/// cancelled.
pub async fn send_now(
    config: Arc<ProviderConfig>,
    name: &str,
    la: Option<&str>,
    options: SendOptions,
    shutdown: &Shutdown,
) -> Result<Vec<LaResult>, SendError> {
    let (report, las) = report::select(&config, name, la)?;
    let report = report.clone();
    let held = match lock::lock(&config.data_dir, Holder::SendNow) {
        Ok(held) => Some(held),
        Err(e) if e.held_by_daemon() => None,
        Err(LockError::Held { .. }) => return Err(SendError::Busy),
        Err(e) => return Err(SendError::Lock(e)),
    };
    let store = SharedStore::open(&config.data_dir)?;
    let pipeline = Pipeline::new(config.clone(), store.clone(), options.actor.clone());
    let mut results = match held {
        Some(_lock) => {
            push_here(&config, &report, las, &options, shutdown, store, pipeline).await?
        }
        None => hand_to_daemon(&report, las, &options, shutdown, store, pipeline).await?,
    };
    let order = |la: &str| config.authorities.iter().position(|a| a.code == la);
    results.sort_by_key(|r| order(&r.la));
    Ok(results)
}

/// No daemon runs: spool and push here, each delivery as soon as it is
/// spooled.
async fn push_here(
    config: &Arc<ProviderConfig>,
    report: &crate::config::provider::ReportConfig,
    las: Vec<String>,
    options: &SendOptions,
    shutdown: &Shutdown,
    store: SharedStore,
    pipeline: Pipeline,
) -> Result<Vec<LaResult>, SendError> {
    // The watch and the pushes stop with send-now itself.
    let tasks = shutdown.branch();
    let watch = StateWatch::start(store.clone(), options.push.watch_interval, &tasks).await?;
    let courier = Courier::new(
        config.clone(),
        store,
        watch,
        options.actor.clone(),
        options.push.clone(),
        shutdown.token().clone(),
    )?;
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_PUSHES));
    let mut pushes = tokio::task::JoinSet::new();
    let pass = pipeline
        .pass(
            report,
            las,
            options.at,
            RunRecord::New,
            shutdown,
            |delivery| {
                (options.progress)(Progress::Pushing {
                    la: delivery.la.clone(),
                });
                let (courier, limit, delivery) = (courier.clone(), limit.clone(), delivery.clone());
                pushes.spawn(async move {
                    let _slot = limit.acquire_owned().await;
                    let outcome = push::deliver(&courier, &delivery).await;
                    (delivery.la, outcome)
                });
            },
        )
        .await;
    let mut pushed = Vec::new();
    while let Some(joined) = pushes.join_next().await {
        match joined {
            Ok((la, outcome)) => {
                (options.progress)(Progress::Finished {
                    la: la.clone(),
                    done: pushed.len() + 1,
                });
                pushed.push((la, outcome));
            }
            Err(e) => tracing::error!(error = %e, "a push task failed"),
        }
    }
    tasks.cancel();
    tasks
        .drain(std::time::Duration::from_secs(5), "send-now")
        .await;
    let pass = pass?;
    let mut notes = pass.notes;
    Ok(pass
        .las
        .into_iter()
        .map(|(la, step)| {
            let outcome = match step {
                LaStep::Spooled(_) => match pushed.iter().position(|(l, _)| *l == la) {
                    Some(i) => LaOutcome::Pushed(pushed.swap_remove(i).1),
                    None => LaOutcome::Stopped,
                },
                other => not_spooled(other),
            };
            let notes = take_notes(&mut notes, &la);
            LaResult { la, outcome, notes }
        })
        .collect())
}

/// How often `send-now` looks at the deliveries it handed to the daemon.
const HANDOVER_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// A daemon runs: spool here, hand the deliveries to it, and wait until it
/// has settled each (or `send-now` is stopped; the daemon goes on).
async fn hand_to_daemon(
    report: &crate::config::provider::ReportConfig,
    las: Vec<String>,
    options: &SendOptions,
    shutdown: &Shutdown,
    store: SharedStore,
    pipeline: Pipeline,
) -> Result<Vec<LaResult>, SendError> {
    let pass = pipeline
        .pass(
            report,
            las,
            options.at,
            RunRecord::New,
            shutdown,
            |delivery| {
                (options.progress)(Progress::Pushing {
                    la: delivery.la.clone(),
                });
            },
        )
        .await?;
    let ids: Vec<i64> = pass
        .las
        .iter()
        .filter_map(|(_, step)| match step {
            LaStep::Spooled(d) => Some(d.id),
            _ => None,
        })
        .collect();
    if !ids.is_empty() {
        store.run(|s| s.wake_daemon()).await??;
    }
    let mut reported = std::collections::HashSet::new();
    let mut seen = loop {
        let look = ids.clone();
        let seen: Vec<(Delivery, Option<StoredReceipt>)> = store
            .run(move |s| -> Result<Vec<_>, StoreError> {
                look.iter()
                    .map(|&id| {
                        let d = s.delivery(id)?;
                        let r = s.receipt(id)?;
                        Ok((d, r))
                    })
                    .collect()
            })
            .await??;
        for (d, _) in &seen {
            if settled(d) && reported.insert(d.id) {
                (options.progress)(Progress::Finished {
                    la: d.la.clone(),
                    done: reported.len(),
                });
            }
        }
        if seen.iter().all(|(d, _)| settled(d)) || shutdown.is_cancelled() {
            break seen;
        }
        tokio::select! {
            () = tokio::time::sleep(HANDOVER_POLL) => {}
            () = shutdown.cancelled() => {}
        }
    };
    let mut notes = pass.notes;
    Ok(pass
        .las
        .into_iter()
        .map(|(la, step)| {
            let outcome = match step {
                LaStep::Spooled(spooled) => match seen.iter().position(|(d, _)| d.id == spooled.id)
                {
                    Some(i) => {
                        let (delivery, receipt) = seen.swap_remove(i);
                        LaOutcome::ByDaemon {
                            delivery: Box::new(delivery),
                            receipt,
                        }
                    }
                    None => LaOutcome::Stopped,
                },
                other => not_spooled(other),
            };
            let notes = take_notes(&mut notes, &la);
            LaResult { la, outcome, notes }
        })
        .collect())
}

/// The audit's notes for `la`, taken out of a pass's.
fn take_notes(notes: &mut Vec<(String, Vec<Finding>)>, la: &str) -> Vec<Finding> {
    match notes.iter().position(|(l, _)| l == la) {
        Some(i) => notes.swap_remove(i).1,
        None => Vec::new(),
    }
}

/// A pipeline step that is not a spooled delivery, as an outcome.
fn not_spooled(step: LaStep) -> LaOutcome {
    match step {
        LaStep::Refused(refusal) => LaOutcome::Refused(refusal),
        LaStep::Blocked(blocked) => LaOutcome::Blocked(blocked),
        LaStep::Withheld(findings) => LaOutcome::Withheld(findings),
        LaStep::NotSpooled(e) => LaOutcome::NotSpooled(e),
        LaStep::Spooled(_) | LaStep::Stopped => LaOutcome::Stopped,
    }
}
