//! `mishare send-now`: one report, now, for every recipient or one. The
//! pipeline plans, runs, seals and spools; each delivery is pushed as soon
//! as it is spooled, with bounded concurrency, one slow LA holding up no
//! other.
//!
//! On a shutdown (Ctrl-C) nothing more is spooled and pushes in flight stop
//! at once, recorded as failed: what is spooled stays for the daemon or
//! `mishare retry`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

use crate::common::shutdown::Shutdown;
use crate::config::provider::ProviderConfig;
use crate::provider::gate::Refusal;
use crate::provider::outbox::OutboxError;
use crate::provider::pipeline::{LaStep, Pipeline, PipelineError, RunRecord};
use crate::provider::push::{self, Courier, Delivered, PushOptions};
use crate::provider::report::{self, ReportError};
use crate::provider::store::{SharedStore, StoreError};
use crate::provider::watch::{StateWatch, WatchError};
use crate::sanitiser::Blocked;
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
    /// Its file could not be sealed or spooled.
    NotSpooled(OutboxError),
    /// send-now was stopped before its file was made.
    Stopped,
}

/// One LA's line of a `send-now`.
#[derive(Debug)]
pub struct LaResult {
    pub la: String,
    pub outcome: LaOutcome,
}

impl LaResult {
    /// Whether this is a delivery the gate permitted that did not reach the
    /// LA.
    pub fn is_failure(&self) -> bool {
        matches!(
            self.outcome,
            LaOutcome::Pushed(Delivered::Failed(_))
                | LaOutcome::Blocked(_)
                | LaOutcome::NotSpooled(_)
                | LaOutcome::Stopped
        )
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
            LaOutcome::NotSpooled(e) => format!("{la} failed: {e}"),
            LaOutcome::Stopped => {
                format!("{la} failed: not sent: send-now was stopped before its file was made")
            }
        }
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
/// it. Returns one result per LA in `[[authority]]` order. Stops early,
/// cleanly, when `shutdown` is cancelled.
pub async fn send_now(
    config: Arc<ProviderConfig>,
    name: &str,
    la: Option<&str>,
    options: SendOptions,
    shutdown: &Shutdown,
) -> Result<Vec<LaResult>, SendError> {
    let (report, las) = report::select(&config, name, la)?;
    let report = report.clone();
    let store = SharedStore::open(&config.data_dir)?;
    // The watch and the pushes stop with send-now itself.
    let tasks = shutdown.branch();
    let watch = StateWatch::start(store.clone(), options.push.watch_interval, &tasks).await?;
    let courier = Courier::new(
        config.clone(),
        store.clone(),
        watch,
        options.actor.clone(),
        options.push.clone(),
        shutdown.token().clone(),
    )?;
    let pipeline = Pipeline::new(config.clone(), store, options.actor.clone());

    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_PUSHES));
    let mut pushes = tokio::task::JoinSet::new();
    let pass = pipeline
        .pass(
            &report,
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

    let mut results: Vec<LaResult> = pass
        .las
        .into_iter()
        .map(|(la, step)| {
            let outcome = match step {
                LaStep::Spooled(_) => match pushed.iter().position(|(l, _)| *l == la) {
                    Some(i) => LaOutcome::Pushed(pushed.swap_remove(i).1),
                    None => LaOutcome::Stopped,
                },
                LaStep::Refused(refusal) => LaOutcome::Refused(refusal),
                LaStep::Blocked(blocked) => LaOutcome::Blocked(blocked),
                LaStep::NotSpooled(e) => LaOutcome::NotSpooled(e),
                LaStep::Stopped => LaOutcome::Stopped,
            };
            LaResult { la, outcome }
        })
        .collect();
    let order = |la: &str| config.authorities.iter().position(|a| a.code == la);
    results.sort_by_key(|r| order(&r.la));
    Ok(results)
}
