//! The provider daemon and its one-off run.
//!
//! - [`run`] and [`Daemon`]: `mishare provider run`. One instance per
//!   `data_dir` (an exclusive lock on `data_dir/daemon.lock`). Runs each
//!   `[[report]]` when its schedule falls due (missed runs per `missed`, see
//!   [`scheduler`]), spools each LA's file as a durable delivery, and works
//!   the outbox: pushes with bounded concurrency, failures retried with
//!   exponential backoff and jitter until `[delivery]`'s limits make them
//!   dead, deliveries left by a stopped process resumed at start. Serves
//!   DWP's `Directive` service when `[directive]` is configured.
//! - [`send_now`]: `mishare send-now`. One report, now, for every recipient
//!   or one: the gate at planning, one pass over the source, seal and spool
//!   per LA, then pushes with bounded concurrency, one slow LA holding up no
//!   other.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::{ProviderConfig, ReportConfig};
use crate::directive::{self, ServeError};
use crate::gate::{Gate, Reason, Stage};
use crate::outbox::{self, Addressed, OutboxError};
use crate::push::{self, Courier, Delivered, PushError, PushOptions, StateWatch};
use crate::report::{self, ReportError};
use crate::sanitiser::Blocked;
use crate::scheduler;
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
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// TLS or the state watcher could not be set up.
    #[error(transparent)]
    Push(#[from] PushError),
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
    /// Another daemon holds the lock on this `data_dir`.
    #[error(
        "another mishare provider daemon is running on this data_dir: {} is locked; \
         stop that daemon first (only one may use a data_dir)",
        lock.display()
    )]
    AlreadyRunning { lock: PathBuf },
    /// The lock file cannot be made or locked.
    #[error("cannot lock {}: {source}", lock.display())]
    Lock {
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A background task failed.
    #[error("{0}")]
    Task(String),
}

/// Runs the provider daemon until `shutdown` completes: the schedule, the
/// outbox, and DWP's `Directive` service when `[directive]` is configured.
pub async fn run(
    config: ProviderConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProviderError> {
    let daemon = Daemon::open(Arc::new(config), DaemonOptions::default())?;
    daemon.run(shutdown).await
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

/// The file under `data_dir` a running daemon holds an exclusive lock on.
pub const LOCK_FILE: &str = "daemon.lock";

/// How long in-flight pushes may run on after a shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The longest the daemon sleeps between looks at the clock, so a wall
/// clock that jumps (a machine waking from sleep) is noticed soon.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How the daemon behaves beyond `provider.toml`. The defaults suit
/// production.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Recorded as the actor of the daemon's audit entries.
    pub actor: String,
    /// Per-push settings. Retries across attempts are the outbox's (from
    /// `[delivery]`), so each push makes one attempt.
    pub push: PushOptions,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            actor: "provider:daemon".into(),
            push: PushOptions {
                attempts: 1,
                ..PushOptions::default()
            },
        }
    }
}

/// What the scheduler did for one report at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduledRun {
    /// A run was recorded and its deliveries spooled.
    Ran {
        report: String,
        run_id: i64,
        scheduled_for: DateTime<Utc>,
    },
    /// Missed runs were skipped (`missed = "skip"`).
    Skipped {
        report: String,
        scheduled_for: Vec<DateTime<Utc>>,
    },
    /// The run could not be made (its source is unreadable, say); it is
    /// recorded and will not be tried again by itself.
    Failed { report: String, error: String },
}

/// The provider daemon: holds the `data_dir` lock, runs reports on their
/// schedules and works the outbox. [`Daemon::run`] is the whole daemon;
/// tests drive its steps ([`Daemon::schedule`], [`Daemon::deliver_due`],
/// [`Daemon::settle`]) with a time of their choosing.
#[derive(Debug)]
pub struct Daemon {
    config: Arc<ProviderConfig>,
    store: Arc<Mutex<Store>>,
    courier: Courier,
    watch: StateWatch,
    actor: String,
    limit: Arc<Semaphore>,
    inflight: HashSet<i64>,
    pushes: JoinSet<(i64, Delivered)>,
    _lock: std::fs::File,
}

impl Daemon {
    /// Takes the `data_dir` lock (refusing if another daemon holds it),
    /// opens the state and queues again any delivery a stopped process left
    /// `sending`.
    pub fn open(
        config: Arc<ProviderConfig>,
        options: DaemonOptions,
    ) -> Result<Self, ProviderError> {
        let lock = lock_data_dir(&config.data_dir)?;
        let mut store = Store::open(&config.data_dir)?;
        let recovered = outbox::recover_interrupted(&mut store, Utc::now())?;
        if recovered > 0 {
            tracing::info!(
                deliveries = recovered,
                "queued again deliveries a stopped daemon left sending"
            );
        }
        let store = Arc::new(Mutex::new(store));
        let tls = Courier::client_tls(&config).map_err(PushError::from)?;
        let watch = StateWatch::start(config.data_dir.clone(), options.push.watch_interval)?;
        let courier = Courier::new(
            config.clone(),
            tls,
            store.clone(),
            watch.clone(),
            options.actor.clone(),
            options.push,
        );
        let concurrency = usize::try_from(config.delivery.concurrency)
            .unwrap_or(1)
            .max(1);
        Ok(Self {
            config,
            store,
            courier,
            watch,
            actor: options.actor,
            limit: Arc::new(Semaphore::new(concurrency)),
            inflight: HashSet::new(),
            pushes: JoinSet::new(),
            _lock: lock,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ProviderConfig, &mut Store) -> T + Send + 'static,
    ) -> Result<T, ProviderError> {
        let (config, store) = (self.config.clone(), self.store.clone());
        tokio::task::spawn_blocking(move || {
            let mut store = store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&config, &mut store)
        })
        .await
        .map_err(|e| ProviderError::Task(e.to_string()))
    }

    /// Handles every report's due runs at `now`: finishes runs a stopped
    /// daemon left half spooled, records skipped misses, and records and
    /// spools due runs (their deliveries are then queued for
    /// [`Daemon::deliver_due`]). A report that fails is logged and does not
    /// stop the others.
    pub async fn schedule(&self, now: DateTime<Utc>) -> Result<Vec<ScheduledRun>, ProviderError> {
        self.blocking(move |config, store| scheduler::initialise_marks(store, config, now))
            .await??;
        let mut done = Vec::new();
        let unfinished = self
            .blocking(|_, store| scheduler::unfinished_runs(store))
            .await??;
        for run in unfinished {
            let Some(report) = self.config.report(&run.report).cloned() else {
                tracing::warn!(report = %run.report, run = run.id,
                    "an unfinished run's report is no longer configured; leaving it");
                continue;
            };
            tracing::info!(report = %run.report, run = run.id, "finishing a run a stopped daemon left");
            done.push(self.spool_run(report, run.id, run.scheduled_for).await);
        }
        for report in self.config.reports.clone() {
            let name = report.name.clone();
            let mark = self
                .blocking(move |_, store| scheduler::mark(store, &name))
                .await??
                .unwrap_or(now);
            let due = scheduler::due(&scheduler::schedule_of(&report), report.missed, mark, now);
            if due.is_idle() {
                continue;
            }
            if !due.skipped.is_empty() {
                let (r, skipped, until, actor) = (
                    report.clone(),
                    due.skipped.clone(),
                    due.handled_until,
                    self.actor.clone(),
                );
                self.blocking(move |_, store| {
                    scheduler::record_skipped(store, &r, &skipped, until, &actor, now)
                })
                .await??;
                tracing::warn!(report = %report.name, missed = due.skipped.len(),
                    "missed runs skipped (missed = \"skip\")");
                done.push(ScheduledRun::Skipped {
                    report: report.name.clone(),
                    scheduled_for: due.skipped.clone(),
                });
            }
            if let Some(at) = due.run {
                let (r, until, actor) = (report.clone(), due.handled_until, self.actor.clone());
                let run_id = self
                    .blocking(move |_, store| {
                        scheduler::record_run(store, &r, at, until, &actor, Utc::now())
                    })
                    .await??;
                tracing::info!(report = %report.name, run = run_id, scheduled_for = %at, "scheduled run");
                done.push(self.spool_run(report, run_id, at).await);
            }
        }
        Ok(done)
    }

    /// Makes run `run_id`'s files for the recipients that have none yet, the
    /// gate asked at planning for each, and spools them.
    async fn spool_run(
        &self,
        report: ReportConfig,
        run_id: i64,
        scheduled_for: DateTime<Utc>,
    ) -> ScheduledRun {
        let name = report.name.clone();
        let actor = self.actor.clone();
        let (config, store) = (self.config.clone(), self.store.clone());
        let made = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let lock = || {
                store
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            };
            let have = scheduler::las_in_run(&lock(), run_id).map_err(|e| e.to_string())?;
            let wanted: Vec<String> = report::recipients(&config, &report)
                .into_iter()
                .filter(|la| !have.contains(la))
                .collect();
            let mut permitted = Vec::new();
            for la in wanted {
                let mut store = lock();
                let answer = Gate::new(&config, &mut store, actor.clone()).authorise(
                    &la,
                    &report.name,
                    Utc::now(),
                    Stage::Plan,
                    |_| {},
                );
                match answer {
                    Ok(()) => permitted.push(la),
                    // Remembered, so finishing this run after a restart
                    // does not send it what was withheld.
                    Err(refusal) => scheduler::record_plan_refusal(
                        &mut store,
                        run_id,
                        &la,
                        refusal.reason.as_str(),
                    )
                    .map_err(|e| e.to_string())?,
                }
            }
            if !permitted.is_empty() {
                let run = report::run_report(&config, &report, &permitted, scheduled_for)
                    .map_err(|e| e.to_string())?;
                for file in run.files {
                    let rendered = match file.outcome {
                        Ok(r) => r,
                        Err(blocked) => {
                            tracing::error!(report = %report.name, la = %file.la,
                                error = %blocked_text(&blocked), "no file for this LA");
                            continue;
                        }
                    };
                    let Some(authority) = config.authority(&file.la) else {
                        continue;
                    };
                    let recipients =
                        Recipients::parse(&authority.recipients).map_err(|e| e.to_string())?;
                    outbox::spool(
                        &mut lock(),
                        Addressed {
                            run_id,
                            la: &file.la,
                            report: &report.name,
                            period: &run.period.name,
                            classification: report.classification,
                        },
                        &rendered.csv,
                        &recipients,
                        &actor,
                        Utc::now(),
                    )
                    .map_err(|e| e.to_string())?;
                }
            }
            scheduler::mark_spooled(&mut lock(), run_id, Utc::now()).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match made {
            Ok(()) => ScheduledRun::Ran {
                report: name,
                run_id,
                scheduled_for,
            },
            Err(error) => {
                tracing::error!(report = %name, run = run_id, %error, "a scheduled run failed");
                // Recorded as spooled so it is not retried forever; the
                // deliveries made so far go out.
                let _ = self
                    .blocking(move |_, store| scheduler::mark_spooled(store, run_id, Utc::now()))
                    .await;
                ScheduledRun::Failed {
                    report: name,
                    error,
                }
            }
        }
    }

    /// Starts a push for every pending delivery due at `now` and not already
    /// in flight (at most `[delivery] concurrency` run at once). Returns
    /// when the next waiting delivery falls due, if one is waiting.
    pub async fn deliver_due(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, ProviderError> {
        let pending = self.blocking(|_, store| outbox::pending(store)).await??;
        let mut next = None;
        for delivery in pending {
            if self.inflight.contains(&delivery.id) {
                continue;
            }
            if let Some(at) = delivery.next_attempt_at.filter(|&at| at > now) {
                next = Some(next.map_or(at, |n: DateTime<Utc>| n.min(at)));
                continue;
            }
            self.inflight.insert(delivery.id);
            let (courier, limit) = (self.courier.clone(), self.limit.clone());
            self.pushes.spawn(async move {
                let _slot = limit.acquire_owned().await;
                let outcome = push::deliver(&courier, &delivery).await;
                (delivery.id, outcome)
            });
        }
        Ok(next)
    }

    /// Handles one finished push: a failure is tried again later with
    /// backoff, or becomes dead.
    async fn finished(&mut self, id: i64, outcome: Delivered) -> Result<(), ProviderError> {
        self.inflight.remove(&id);
        match outcome {
            Delivered::Delivered { .. } => tracing::info!(delivery = id, "delivered"),
            Delivered::Refused { reason, .. } => {
                tracing::warn!(delivery = id, %reason, "refused by the gate");
            }
            Delivered::Failed { error, dead: true } => {
                tracing::error!(delivery = id, %error, "delivery dead");
            }
            Delivered::Failed { error, dead: false } => {
                let (policy, actor) = (self.config.delivery, self.actor.clone());
                let next = self
                    .blocking(move |_, store| {
                        outbox::after_failure(
                            store,
                            id,
                            &policy,
                            outbox::jitter(),
                            &actor,
                            Utc::now(),
                        )
                    })
                    .await??;
                match next {
                    outbox::AfterFailure::RetryAt(at) => {
                        tracing::warn!(delivery = id, %error, retry_at = %at, "delivery failed; will retry");
                    }
                    outbox::AfterFailure::Dead => {
                        tracing::error!(delivery = id, %error, "delivery dead: out of attempts or time");
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits for every push in flight to finish and records each outcome.
    pub async fn settle(&mut self) -> Result<(), ProviderError> {
        while let Some(joined) = self.pushes.join_next().await {
            let (id, outcome) = joined.map_err(|e| ProviderError::Task(e.to_string()))?;
            self.finished(id, outcome).await?;
        }
        Ok(())
    }

    /// After suspensions or agreements changed: every pending delivery not
    /// in flight whose LA the gate now refuses is refused, its ciphertext
    /// removed; it is never sent later by itself. (Pushes in flight are cut
    /// off by their own watch.)
    pub async fn refuse_withheld(&self) -> Result<usize, ProviderError> {
        let inflight = self.inflight.clone();
        let actor = self.actor.clone();
        self.blocking(move |config, store| -> Result<usize, OutboxError> {
            let mut n = 0;
            for d in outbox::pending(store)? {
                if inflight.contains(&d.id) {
                    continue;
                }
                let now = Utc::now();
                if Gate::new(config, store, "")
                    .evaluate(&d.la, now)
                    .is_permit()
                {
                    continue;
                }
                // Recorded by the gate with its reason, then the delivery.
                let refusal = Gate::new(config, store, actor.clone()).authorise(
                    &d.la,
                    &d.report,
                    now,
                    Stage::Plan,
                    |_| {},
                );
                if let Err(refusal) = refusal {
                    outbox::mark_refused(
                        store,
                        d.id,
                        refusal.reason,
                        &refusal.detail(),
                        "queued",
                        &actor,
                        now,
                    )?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await?
        .map_err(ProviderError::from)
    }

    /// The next scheduled run of any report after `now`.
    fn next_run(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.config
            .reports
            .iter()
            .filter_map(|r| scheduler::schedule_of(r).next_after(now))
            .min()
    }

    /// The daemon: serves `[directive]` if configured, then until
    /// `shutdown` completes runs reports when due and works the outbox,
    /// sleeping until the next due time, a finished push or a change of
    /// state. On shutdown it takes no new work and gives pushes in flight
    /// [`SHUTDOWN_GRACE`] to finish; what remains resumes on the next start.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ProviderError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let directive = match self.config.directive.clone() {
            Some(d) => {
                let listener = tokio::net::TcpListener::bind(d.listen)
                    .await
                    .map_err(|source| ProviderError::Bind {
                        addr: d.listen,
                        source,
                    })?;
                let config = self.config.clone();
                let mut stop = stop_rx.clone();
                Some(tokio::spawn(async move {
                    directive::serve(&config, &d, listener, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
                }))
            }
            None => None,
        };
        tracing::info!(
            reports = self.config.reports.len(),
            authorities = self.config.authorities.len(),
            "provider daemon started"
        );
        let mut watch = self.watch.clone();
        tokio::pin!(shutdown);
        loop {
            let now = Utc::now();
            if let Err(e) = self.schedule(now).await {
                tracing::error!(error = %e, "the scheduler failed; trying again shortly");
            }
            let next_retry = match self.deliver_due(now).await {
                Ok(n) => n,
                Err(e) => {
                    // The database was busy or failed; look again shortly
                    // rather than stop the daemon.
                    tracing::error!(error = %e, "cannot read the outbox; trying again shortly");
                    Some(Utc::now() + chrono::Duration::seconds(5))
                }
            };
            let wake = [self.next_run(now), next_retry]
                .into_iter()
                .flatten()
                .min()
                .map_or(MAX_SLEEP, |at| {
                    (at - Utc::now())
                        .to_std()
                        .unwrap_or_default()
                        .min(MAX_SLEEP)
                });
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(wake) => {}
                Some(joined) = self.pushes.join_next(), if !self.pushes.is_empty() => {
                    match joined {
                        Ok((id, outcome)) => {
                            if let Err(e) = self.finished(id, outcome).await {
                                tracing::error!(error = %e, "cannot record a push's outcome");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "a push task failed"),
                    }
                }
                () = watch.changed() => {
                    match self.refuse_withheld().await {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(deliveries = n, "queued deliveries refused by the gate"),
                        Err(e) => tracing::error!(error = %e, "cannot ask the gate about queued deliveries"),
                    }
                }
            }
        }
        let _ = stop_tx.send(true);
        if !self.pushes.is_empty() {
            tracing::info!(pushes = self.pushes.len(), grace = ?SHUTDOWN_GRACE,
                "letting pushes in flight finish");
            if tokio::time::timeout(SHUTDOWN_GRACE, self.settle())
                .await
                .is_err()
            {
                tracing::warn!(
                    pushes = self.pushes.len(),
                    "grace period over; stopping pushes still in flight (they resume on the next start)"
                );
                self.pushes.shutdown().await;
            }
        }
        if let Some(task) = directive {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the Directive service failed"),
                Err(e) => tracing::error!(error = %e, "the Directive service task failed"),
            }
        }
        tracing::info!("provider daemon stopped");
        Ok(())
    }
}

/// Takes the exclusive lock on `data_dir/daemon.lock`, creating `data_dir`
/// (owner-only) and the file if needed. The lock lasts as long as the
/// returned file is open, and the system drops it if the process dies.
pub fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, ProviderError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let lock = data_dir.join(LOCK_FILE);
    let io = |source| ProviderError::Lock {
        lock: lock.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ProviderError::AlreadyRunning { lock }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// One report's next run, for `plan` and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRun {
    pub report: String,
    /// `None` only for a schedule with no date in eight years.
    pub at: Option<DateTime<Utc>>,
    /// The period that run would send.
    pub period: Option<String>,
    /// Its recipients, in `[[authority]]` order.
    pub recipients: Vec<String>,
}

/// Each report's next run after `after`.
pub fn next_runs(config: &ProviderConfig, after: DateTime<Utc>) -> Vec<NextRun> {
    config
        .reports
        .iter()
        .map(|r| {
            let at = scheduler::schedule_of(r).next_after(after);
            NextRun {
                report: r.name.clone(),
                at,
                period: at.map(|t| report::last_complete_period(r.period, t).name),
                recipients: report::recipients(config, r),
            }
        })
        .collect()
}
