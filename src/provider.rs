//! The provider daemon and its one-off run.
//!
//! - [`run`]: `mishare provider run`. Serves DWP's `Directive` service when
//!   `[directive]` is configured and waits for shutdown. (The schedule comes
//!   in a later issue.)
//! - [`send_now`]: `mishare send-now`. One report, now, for every recipient
//!   or one: the gate at planning, one pass over the source, seal and spool
//!   per LA, then pushes with bounded concurrency, one slow LA holding up no
//!   other.

use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::ProviderConfig;
use crate::directive::{self, ServeError};
use crate::gate::{Gate, Reason, Stage};
use crate::outbox::{self, Addressed, OutboxError};
use crate::push::{self, Courier, Delivered, PushError, PushOptions, StateWatch};
use crate::report::{self, ReportError};
use crate::sanitiser::Blocked;
use crate::seal::Recipients;
use crate::store::{Store, StoreError};

/// How many pushes of one run are in flight at once.
pub const MAX_CONCURRENT_PUSHES: usize = 16;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The state database cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The `[directive]` listener cannot be bound.
    #[error("cannot listen on {addr} for the Directive service: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The Directive service failed.
    #[error(transparent)]
    Directive(#[from] ServeError),
}

/// Runs the provider daemon until `shutdown` completes.
pub async fn run(
    config: ProviderConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProviderError> {
    // Fail at start, not at the first request, if the state is unusable.
    drop(Store::open(&config.data_dir)?);
    match config.directive.clone() {
        Some(d) => {
            let listener = tokio::net::TcpListener::bind(d.listen)
                .await
                .map_err(|source| ProviderError::Bind {
                    addr: d.listen,
                    source,
                })?;
            directive::serve(&config, &d, listener, shutdown).await?;
        }
        None => {
            tracing::info!(
                "no [directive] configured; nothing to serve until the schedule arrives, \
                 waiting for SIGTERM or SIGINT"
            );
            shutdown.await;
        }
    }
    tracing::info!("provider daemon stopped");
    Ok(())
}

/// Why `send-now` could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The report or LA is wrong, or its source cannot be read.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The state database failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// TLS or the state watcher could not be set up.
    #[error(transparent)]
    Push(#[from] PushError),
    /// A background task failed.
    #[error("{0}")]
    Task(String),
}

impl From<StoreError> for SendError {
    fn from(e: StoreError) -> Self {
        SendError::Outbox(e.into())
    }
}

/// What happened for one LA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaOutcome {
    /// Delivered; the receipt is stored.
    Delivered {
        stored_as: String,
        sha256: String,
        verification: String,
    },
    /// The gate refused (at planning, at a later check, or in flight).
    Refused { reason: Reason, detail: String },
    /// Permitted but not delivered: blocked by the sanitiser, or the push
    /// failed.
    Failed { error: String },
}

/// One LA's line of a `send-now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaResult {
    pub la: String,
    pub outcome: LaOutcome,
}

impl LaResult {
    /// Whether this is a permitted delivery that failed.
    pub fn is_failure(&self) -> bool {
        matches!(self.outcome, LaOutcome::Failed { .. })
    }

    /// The line `send-now` prints.
    pub fn line(&self) -> String {
        match &self.outcome {
            LaOutcome::Delivered {
                stored_as, sha256, ..
            } => format!(
                "{} delivered {stored_as} sha256 {sha256} receipt verified",
                self.la
            ),
            LaOutcome::Refused { reason, detail } => {
                format!("{} refused {reason}: {detail}", self.la)
            }
            LaOutcome::Failed { error } => format!("{} failed: {error}", self.la),
        }
    }
}

/// Progress of a `send-now`, for a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The run will push to this many LAs.
    Pushing { total: usize },
    /// One LA is done.
    Finished {
        la: String,
        done: usize,
        total: usize,
    },
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
/// it. Returns one result per LA in `[[authority]]` order.
pub async fn send_now(
    config: Arc<ProviderConfig>,
    name: &str,
    la: Option<&str>,
    options: SendOptions,
) -> Result<Vec<LaResult>, SendError> {
    let (report_config, las) = report::select(&config, name, la)?;
    let report_config = report_config.clone();
    let tls = Courier::client_tls(&config).map_err(PushError::from)?;
    let store = Arc::new(Mutex::new(Store::open(&config.data_dir)?));
    let watch = StateWatch::start(config.data_dir.clone(), options.push.watch_interval)?;

    // The gate at planning: a refused LA is never read for, sealed or sent.
    let (plan_config, plan_store, plan_las) = (config.clone(), store.clone(), las.clone());
    let (report_name, actor, at) = (
        report_config.name.clone(),
        options.actor.clone(),
        options.at,
    );
    let planned = tokio::task::spawn_blocking(move || {
        let mut store = plan_store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut gate = Gate::new(&plan_config, &mut store, actor);
        plan_las
            .into_iter()
            .map(|la| {
                let answer =
                    gate.authorise(&la, &report_name, Utc::now(), Stage::Plan, |_permit| {});
                (la, answer)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| SendError::Task(e.to_string()))?;
    let mut results = Vec::new();
    let mut permitted = Vec::new();
    for (la, answer) in planned {
        match answer {
            Ok(()) => permitted.push(la),
            Err(refusal) => results.push(LaResult {
                la,
                outcome: LaOutcome::Refused {
                    reason: refusal.reason,
                    detail: refusal.detail(),
                },
            }),
        }
    }

    if !permitted.is_empty() {
        let (run_config, run_report, run_las) =
            (config.clone(), report_config.clone(), permitted.clone());
        let run = tokio::task::spawn_blocking(move || {
            report::run_report(&run_config, &run_report, &run_las, at)
        })
        .await
        .map_err(|e| SendError::Task(e.to_string()))??;

        let run_id = {
            let mut store = store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            outbox::start_run(
                &mut store,
                &run.report,
                &run.period.name,
                None,
                &options.actor,
                Utc::now(),
            )?
        };
        let courier = Courier::new(
            config.clone(),
            tls,
            store.clone(),
            watch,
            options.actor.clone(),
            options.push.clone(),
        );
        let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_PUSHES));
        let mut tasks = JoinSet::new();
        let mut total = 0;
        for file in run.files {
            let rendered = match file.outcome {
                Ok(r) => r,
                Err(blocked) => {
                    results.push(LaResult {
                        la: file.la,
                        outcome: LaOutcome::Failed {
                            error: blocked_text(&blocked),
                        },
                    });
                    continue;
                }
            };
            total += 1;
            let (courier, limit, store) = (courier.clone(), limit.clone(), store.clone());
            let (config, period, report, actor) = (
                config.clone(),
                run.period.name.clone(),
                report_config.clone(),
                options.actor.clone(),
            );
            tasks.spawn(async move {
                let la = file.la;
                let _slot = limit.acquire_owned().await;
                let spool_la = la.clone();
                let spooled = tokio::task::spawn_blocking(move || {
                    let authority = config
                        .authority(&spool_la)
                        .ok_or_else(|| format!("{spool_la} has no [[authority]] section"))?;
                    let recipients =
                        Recipients::parse(&authority.recipients).map_err(|e| e.to_string())?;
                    let mut store = store
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    outbox::spool(
                        &mut store,
                        Addressed {
                            run_id,
                            la: &spool_la,
                            report: &report.name,
                            period: &period,
                            classification: report.classification,
                        },
                        &rendered.csv,
                        &recipients,
                        &actor,
                        Utc::now(),
                    )
                    .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                let outcome = match spooled {
                    Err(error) => LaOutcome::Failed { error },
                    Ok(delivery) => match push::deliver(&courier, &delivery).await {
                        Delivered::Delivered {
                            stored_as,
                            sha256,
                            verification,
                        } => LaOutcome::Delivered {
                            stored_as,
                            sha256,
                            verification,
                        },
                        Delivered::Refused { reason, detail, .. } => {
                            LaOutcome::Refused { reason, detail }
                        }
                        Delivered::Failed { error, .. } => LaOutcome::Failed { error },
                    },
                };
                LaResult { la, outcome }
            });
        }
        (options.progress)(Progress::Pushing { total });
        let mut done = 0;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.map_err(|e| SendError::Task(e.to_string()))?;
            done += 1;
            (options.progress)(Progress::Finished {
                la: result.la.clone(),
                done,
                total,
            });
            results.push(result);
        }
    }

    let order = |la: &str| config.authorities.iter().position(|a| a.code == la);
    results.sort_by_key(|r| order(&r.la));
    Ok(results)
}

fn blocked_text(blocked: &Blocked) -> String {
    let reasons: Vec<String> = blocked.errors.iter().map(ToString::to_string).collect();
    let more = if blocked.more > 0 {
        format!(" (and {} more)", blocked.more)
    } else {
        String::new()
    };
    format!("blocked by the sanitiser: {}{more}", reasons.join("; "))
}
