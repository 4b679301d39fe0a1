//! The provider daemon: `mishare provider run`. One concept in one file:
//! the loop, and the steps of it that tests drive one at a time.
//!
//! One instance per `data_dir` (an exclusive lock on `data_dir/daemon.lock`).
//! It runs each `[[report]]` when its schedule falls due (missed runs per
//! `missed`, see [`scheduler`]) through the [`Pipeline`], and works the
//! outbox: pushes with bounded concurrency, failures retried with
//! exponential backoff and jitter until `[delivery]`'s limits make them
//! dead, deliveries left by a stopped process resumed at start. It serves
//! DWP's `Directive` service when `[directive]` is configured.
//!
//! Every task it starts belongs to its [`Shutdown`]: on SIGTERM or SIGINT it
//! takes no new work, gives pushes in flight [`SHUTDOWN_GRACE`] to finish,
//! then stops them (recorded as failed, to resume on the next start) and
//! drains everything else.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::common::blocking::TaskFailed;
use crate::common::notify::{Notifier, WatchdogTicks};
use crate::common::reload::{self, ReloadError, ReloadHandle, ReloadRequests, Reloaded};
use crate::common::shutdown::Shutdown;
use crate::config::provider::{ProviderConfig, ReportConfig};
use crate::provider::directive::{self, ServeError};
use crate::provider::gate::{Gate, Stage};
use crate::provider::lock::{self, DataDirLock, Holder, LockError};
use crate::provider::metrics::{self, ProviderMetrics};
use crate::provider::outbox::{self, OutboxError};
use crate::provider::pipeline::{Pipeline, PipelineError, RunRecord};
use crate::provider::push::{self, Courier, Delivered, PushOptions};
use crate::provider::report::last_complete_period;
use crate::provider::scheduler;
use crate::provider::store::{SharedStore, StoreError};
use crate::provider::watch::{StateWatch, WatchError};
use crate::tls::{SharedServerTls, TlsError};

/// How long in-flight pushes may run on after a shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How long stopped pushes and the daemon's other tasks have to wind down
/// once the grace period is over.
const WIND_DOWN: Duration = Duration::from_secs(5);

/// The longest the daemon sleeps between looks at the clock, so a wall
/// clock that jumps (a machine waking from sleep) is noticed soon.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The state database cannot be opened or used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A scheduled run failed as a whole.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The state watch could not start.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The provider's TLS identity cannot make a client configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The Directive service could not start or failed.
    #[error(transparent)]
    Directive(#[from] ServeError),
    /// A blocking task failed.
    #[error(transparent)]
    Task(#[from] TaskFailed),
    /// Another daemon holds the lock on this `data_dir`.
    #[error(
        "another mishare provider daemon is running on this data_dir: {} is locked; \
         stop that daemon first (only one may use a data_dir)",
        lock.display()
    )]
    AlreadyRunning { lock: PathBuf },
    /// `mishare send-now` holds the lock: it is pushing because no daemon
    /// ran when it started.
    #[error(
        "mishare send-now is pushing from this data_dir ({} is locked by it); start the \
         daemon when it has finished",
        lock.display()
    )]
    SendNowRunning { lock: PathBuf },
    /// The lock file cannot be made or locked.
    #[error(transparent)]
    Lock(LockError),
}

/// How the daemon behaves beyond `provider.toml`. The defaults suit
/// production.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Recorded as the actor of the daemon's audit entries.
    pub actor: String,
    /// Per-push settings. Retries across attempts are the outbox's (from
    /// `[delivery]`), so each push makes one attempt.
    pub push: PushOptions,
    /// systemd notifications: `READY=1` once the store is open and the
    /// Directive listener bound, around reloads, on stopping, and the
    /// watchdog fed by the main loop.
    pub notify: Notifier,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            actor: "provider:daemon".into(),
            push: PushOptions {
                attempts: 1,
                ..PushOptions::default()
            },
            notify: Notifier::disabled(),
        }
    }
}

/// What the scheduler did for one report at one moment.
#[derive(Debug)]
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
    Failed {
        report: String,
        run_id: i64,
        error: PipelineError,
    },
}

/// The provider daemon: holds the `data_dir` lock, runs reports on their
/// schedules and works the outbox. [`Daemon::run`] is the whole daemon;
/// tests drive its steps ([`Daemon::schedule`], [`Daemon::deliver_due`],
/// [`Daemon::settle`]) with a time of their choosing.
#[derive(Debug)]
pub struct Daemon {
    config: Arc<ProviderConfig>,
    store: SharedStore,
    pipeline: Pipeline,
    courier: Courier,
    watch: StateWatch,
    actor: String,
    shutdown: Shutdown,
    /// Cancelled when the pushes' grace period is over.
    abort: CancellationToken,
    limit: Arc<Semaphore>,
    inflight: HashSet<i64>,
    /// Each finished push: the delivery's id and LA, and how it ended.
    pushes: JoinSet<(i64, String, Delivered)>,
    notify: Notifier,
    reload: ReloadHandle,
    reloads: ReloadRequests,
    /// The digests of the reloadable parts as they were loaded (at open,
    /// or by the last reload that succeeded): what the next reload
    /// compares against. Not read again from disk, so a file replaced under
    /// the same path shows as changed.
    digests: BTreeMap<String, String>,
    /// The provider's own certificate in use, for the metrics and the
    /// observer's expiry warnings; a reload replaces it.
    own_certificate: metrics::OwnCertificate,
    /// Its metrics, once [`Daemon::serve_metrics`] is called.
    metrics: Option<Arc<ProviderMetrics>>,
    /// The `Directive` listener's TLS, which a reload replaces; `None`
    /// without `[directive]`.
    directive_tls: Option<SharedServerTls>,
    _lock: DataDirLock,
}

impl Daemon {
    /// Takes the `data_dir` lock (refusing if another daemon holds it),
    /// opens the state and queues again any delivery a stopped process left
    /// `sending`. Its tasks belong to a branch of `shutdown`.
    pub async fn open(
        config: Arc<ProviderConfig>,
        options: DaemonOptions,
        shutdown: &Shutdown,
    ) -> Result<Self, DaemonError> {
        let lock = lock::lock(&config.data_dir, Holder::Daemon).map_err(|e| match e {
            LockError::Held {
                lock,
                holder: Some(Holder::SendNow),
            } => DaemonError::SendNowRunning { lock },
            LockError::Held { lock, .. } => DaemonError::AlreadyRunning { lock },
            other => DaemonError::Lock(other),
        })?;
        let store = SharedStore::open(&config.data_dir)?;
        let recovered = store
            .run(|store| store.requeue_interrupted(Utc::now()))
            .await??;
        if recovered > 0 {
            tracing::info!(
                deliveries = recovered,
                "queued again deliveries a stopped daemon left sending"
            );
        }
        let shutdown = shutdown.branch();
        let watch =
            StateWatch::start(store.clone(), options.push.watch_interval, &shutdown).await?;
        let abort = CancellationToken::new();
        let courier = Courier::new(
            config.clone(),
            store.clone(),
            watch.clone(),
            options.actor.clone(),
            options.push,
            abort.clone(),
        )?;
        let concurrency = usize::try_from(config.delivery.concurrency)
            .unwrap_or(1)
            .max(1);
        let directive_tls = directive::server_tls(&config)?.map(SharedServerTls::new);
        let (reload, reloads) = reload::channel();
        Ok(Self {
            digests: super::reload::digests(&config),
            own_certificate: metrics::OwnCertificate::of(&config),
            directive_tls,
            notify: options.notify,
            reload,
            reloads,
            pipeline: Pipeline::new(config.clone(), store.clone(), options.actor.clone()),
            config,
            store,
            courier,
            watch,
            actor: options.actor,
            shutdown,
            abort,
            limit: Arc::new(Semaphore::new(concurrency)),
            inflight: HashSet::new(),
            pushes: JoinSet::new(),
            metrics: None,
            _lock: lock,
        })
    }

    /// A handle that reloads this daemon while it runs (SIGHUP drives the
    /// same one in the binary).
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Reads `provider.toml` and the files it names again and, if all of it
    /// is usable, takes in the new `[tls]` (for pushes started from now on)
    /// and each LA's `recipients` (for runs sealed from now on). Anything
    /// wrong leaves the running configuration whole. Logged and audited
    /// either way.
    pub async fn reload(&mut self) -> Result<Reloaded, ReloadError> {
        let path = self.config.path.clone();
        let outcome = self.load_and_swap().await;
        let (kind, detail) = match &outcome {
            Ok((done, digests)) => (
                crate::common::audit::Kind::ConfigReloaded,
                serde_json::json!({
                    "config": path.display().to_string(),
                    "changed": done.changed,
                    "needs_restart": done.needs_restart,
                    "sha256": digests,
                }),
            ),
            Err(e) => (
                crate::common::audit::Kind::ConfigReloadRefused,
                serde_json::json!({ "config": path.display().to_string(), "error": e.to_string() }),
            ),
        };
        let actor = self.actor.clone();
        let audited = self
            .store
            .run(move |store| store.audit(kind, &actor, None, &detail, Utc::now()))
            .await;
        match audited {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot audit a reload"),
            Err(e) => tracing::error!(error = %e, "cannot audit a reload"),
        }
        let outcome = outcome.map(|(done, _)| done);
        reload::log_outcome("provider daemon", &path, &outcome);
        outcome
    }

    async fn load_and_swap(&mut self) -> Result<(Reloaded, BTreeMap<String, String>), ReloadError> {
        let path = self.config.path.clone();
        let new = crate::common::blocking::blocking(move || ProviderConfig::load(&path))
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))??;
        let (next, needs_restart) = super::reload::merge(&self.config, &new);
        let next = Arc::new(next);
        // Built before anything is replaced: a key that does not match its
        // certificate is refused here.
        let courier = self.courier.reconfigured(next.clone())?;
        let directive_tls = directive::server_tls(&next)?;
        let digests = super::reload::digests_after(&self.digests, &next, &needs_restart);
        let done = Reloaded::between(&self.digests, &digests, needs_restart);
        self.pipeline = Pipeline::new(next.clone(), self.store.clone(), self.actor.clone());
        self.courier = courier;
        if let (Some(shared), Some(fresh)) = (&self.directive_tls, directive_tls) {
            shared.replace(fresh);
        }
        self.config = next;
        self.digests = digests.clone();
        let own = self.own_certificate.set(&self.config);
        if let (Some(m), Some(own)) = (&self.metrics, own) {
            m.certificate(&own.role, &own.subject, own.ends);
        }
        Ok((done, digests))
    }

    /// Serves Prometheus metrics on `listener` (`[metrics] listen`) from now
    /// until the daemon stops, and counts into them. Call before
    /// [`Daemon::run`].
    pub fn serve_metrics(&mut self, listener: tokio::net::TcpListener) {
        let metrics = ProviderMetrics::new();
        if let Some(own) = self.own_certificate.get() {
            metrics.certificate(&own.role, &own.subject, own.ends);
        }
        crate::common::metrics::serve(listener, metrics.registry(), &self.shutdown);
        self.courier = self.courier.clone().with_metrics(metrics.clone());
        self.metrics = Some(metrics);
    }

    /// Handles every report's due runs at `now`: finishes runs a stopped
    /// daemon left half spooled, records skipped misses, and records and
    /// spools due runs (their deliveries are then queued for
    /// [`Daemon::deliver_due`]). A report that fails is logged and does not
    /// stop the others.
    pub async fn schedule(&self, now: DateTime<Utc>) -> Result<Vec<ScheduledRun>, DaemonError> {
        let names: Vec<String> = self.config.reports.iter().map(|r| r.name.clone()).collect();
        self.store
            .run(move |store| store.initialise_marks(names.iter().map(String::as_str), now))
            .await??;
        let mut done = Vec::new();
        let unfinished = self.store.run(|store| store.unfinished_runs()).await??;
        for run in unfinished {
            let Some(report) = self.config.report(&run.report).cloned() else {
                tracing::warn!(report = %run.report, run = run.id,
                    "an unfinished run's report is no longer configured; leaving it");
                continue;
            };
            tracing::info!(report = %run.report, run = run.id, "finishing a run a stopped daemon left");
            done.push(self.spool_run(&report, run.id, run.scheduled_for).await?);
        }
        for report in &self.config.reports {
            let name = report.name.clone();
            let mark = self
                .store
                .run(move |store| store.schedule_mark(&name))
                .await??
                .unwrap_or(now);
            let due = scheduler::due(&report.schedule, report.missed, mark, now);
            if due.is_idle() {
                continue;
            }
            if !due.skipped.is_empty() {
                let skipped: Vec<_> = due
                    .skipped
                    .iter()
                    .map(|&at| (at, last_complete_period(report.period, at).to_string()))
                    .collect();
                let (name, until, actor) =
                    (report.name.clone(), due.handled_until, self.actor.clone());
                self.store
                    .run(move |store| {
                        store.record_skipped_runs(&name, &skipped, until, &actor, now)
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
                let period = last_complete_period(report.period, at).to_string();
                let (name, until, actor) =
                    (report.name.clone(), due.handled_until, self.actor.clone());
                let run_id = self
                    .store
                    .run(move |store| {
                        store.record_scheduled_run(&name, &period, at, until, &actor, Utc::now())
                    })
                    .await??;
                tracing::info!(report = %report.name, run = run_id, scheduled_for = %at, "scheduled run");
                done.push(self.spool_run(report, run_id, at).await?);
            }
        }
        Ok(done)
    }

    /// Makes run `run_id`'s files for the recipients that have none yet
    /// through the pipeline, and records the run as spooled. A run that
    /// fails as a whole is recorded as spooled all the same, so it is not
    /// retried forever; the deliveries made so far go out.
    async fn spool_run(
        &self,
        report: &ReportConfig,
        run_id: i64,
        scheduled_for: DateTime<Utc>,
    ) -> Result<ScheduledRun, DaemonError> {
        let have = self
            .store
            .run(move |store| store.las_in_run(run_id))
            .await??;
        let wanted: Vec<String> = self
            .config
            .recipients_of(report)
            .into_iter()
            .filter(|la| !have.contains(la))
            .collect();
        let made = self
            .pipeline
            .pass(
                report,
                wanted,
                scheduled_for,
                RunRecord::Scheduled(run_id),
                &self.shutdown,
                |_| {},
            )
            .await;
        if let Ok(pass) = &made {
            for (la, step) in &pass.las {
                match step {
                    crate::provider::pipeline::LaStep::Refused(refusal) => {
                        if let Some(m) = &self.metrics {
                            m.gate_refusal(refusal.reason);
                        }
                    }
                    crate::provider::pipeline::LaStep::Blocked(blocked) => {
                        tracing::error!(report = %report.name, %la,
                            error = %crate::provider::send::blocked_text(blocked),
                            "no file for this LA");
                    }
                    crate::provider::pipeline::LaStep::Withheld(findings) => {
                        tracing::warn!(report = %report.name, %la,
                            reason = %crate::provider::send::withheld_text(findings),
                            "no file for this LA");
                    }
                    _ => {}
                }
            }
        }
        if self.shutdown.is_cancelled() {
            // Left unspooled: the next start finishes it.
            return Ok(ScheduledRun::Ran {
                report: report.name.clone(),
                run_id,
                scheduled_for,
            });
        }
        self.store
            .run(move |store| store.mark_spooled(run_id, Utc::now()))
            .await??;
        Ok(match made {
            Ok(_) => ScheduledRun::Ran {
                report: report.name.clone(),
                run_id,
                scheduled_for,
            },
            Err(error) => {
                tracing::error!(report = %report.name, run = run_id, %error, "a scheduled run failed");
                ScheduledRun::Failed {
                    report: report.name.clone(),
                    run_id,
                    error,
                }
            }
        })
    }

    /// Starts a push for every pending delivery due at `now` and not already
    /// in flight (at most `[delivery] concurrency` run at once). Returns
    /// when the next waiting delivery falls due, if one is waiting.
    pub async fn deliver_due(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, DaemonError> {
        let pending = self.store.run(|store| store.pending_deliveries()).await??;
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
            let metrics = self.metrics.clone();
            self.pushes.spawn(async move {
                let _slot = limit.acquire_owned().await;
                let started = std::time::Instant::now();
                let outcome = push::deliver(&courier, &delivery).await;
                if let Some(m) = &metrics {
                    m.push_took(started.elapsed());
                }
                (delivery.id, delivery.la, outcome)
            });
        }
        Ok(next)
    }

    /// Handles one finished push to `la`: a failure is tried again later
    /// with backoff, or becomes dead. Counts how it ended in the metrics.
    async fn finished(&mut self, id: i64, la: &str, outcome: Delivered) -> Result<(), DaemonError> {
        self.inflight.remove(&id);
        let count = |outcome| {
            if let Some(m) = &self.metrics {
                m.delivery(la, outcome);
            }
        };
        match outcome {
            Delivered::Delivered { .. } => {
                count(metrics::Outcome::Delivered);
                tracing::info!(delivery = id, "delivered");
            }
            Delivered::Refused { reason, .. } => {
                if let Some(m) = &self.metrics {
                    m.gate_refusal(reason);
                }
                count(metrics::Outcome::Refused);
                tracing::warn!(delivery = id, %reason, "refused by the gate");
            }
            Delivered::Failed(failure) if failure.is_dead() => {
                count(metrics::Outcome::Dead);
                tracing::error!(delivery = id, error = %failure, "delivery dead");
            }
            Delivered::Failed(failure) => {
                let (policy, actor) = (self.config.delivery, self.actor.clone());
                let next = self
                    .store
                    .run(move |store| {
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
                        count(metrics::Outcome::Failed);
                        tracing::warn!(delivery = id, error = %failure, retry_at = %at, "delivery failed; will retry");
                    }
                    outbox::AfterFailure::Dead => {
                        count(metrics::Outcome::Dead);
                        tracing::error!(delivery = id, error = %failure, "delivery dead: out of attempts or time");
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits for every push in flight to finish and records each outcome.
    pub async fn settle(&mut self) -> Result<(), DaemonError> {
        while let Some(joined) = self.pushes.join_next().await {
            match joined {
                Ok((id, la, outcome)) => self.finished(id, &la, outcome).await?,
                Err(e) => tracing::error!(error = %e, "a push task failed"),
            }
        }
        Ok(())
    }

    /// After suspensions or agreements changed: every pending delivery not
    /// in flight whose LA the gate now refuses is refused, its ciphertext
    /// removed; it is never sent later by itself. (Pushes in flight are cut
    /// off by their own watch.)
    pub async fn refuse_withheld(&self) -> Result<usize, DaemonError> {
        let (inflight, actor, config) = (
            self.inflight.clone(),
            self.actor.clone(),
            self.config.clone(),
        );
        let metrics = self.metrics.clone();
        let refused = self
            .store
            .run(move |store| -> Result<usize, OutboxError> {
                let mut n = 0;
                for d in store.pending_deliveries()? {
                    if inflight.contains(&d.id) {
                        continue;
                    }
                    let now = Utc::now();
                    if Gate::new(&config, store, "")
                        .evaluate(&d.la, now)
                        .is_permit()
                    {
                        continue;
                    }
                    // Recorded by the gate with its reason, then the delivery.
                    let refusal = Gate::new(&config, store, actor.clone()).authorise(
                        &d.la,
                        &d.report,
                        now,
                        Stage::Plan,
                        |_| {},
                    );
                    if let Err(refusal) = refusal {
                        if let Some(m) = &metrics {
                            m.gate_refusal(refusal.reason);
                            m.delivery(&d.la, metrics::Outcome::Refused);
                        }
                        outbox::refused(
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
            .await??;
        Ok(refused)
    }

    /// The next scheduled run of any report after `now`.
    fn next_run(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.config
            .reports
            .iter()
            .filter_map(|r| r.schedule.next_after(now))
            .min()
    }

    /// The daemon: serves `[directive]` if configured, then until its
    /// shutdown is cancelled runs reports when due and works the outbox,
    /// sleeping until the next due time, a finished push or a change of
    /// state. Then it takes no new work, gives pushes in flight
    /// [`SHUTDOWN_GRACE`] to finish, stops the rest (they resume on the next
    /// start) and drains its tasks.
    pub async fn run(mut self) -> Result<(), DaemonError> {
        if let (Some(d), Some(tls)) = (self.config.directive.clone(), self.directive_tls.clone()) {
            let listener = tokio::net::TcpListener::bind(d.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: d.listen,
                    source,
                })?;
            let (config, store, shutdown) = (
                self.config.clone(),
                self.store.clone(),
                self.shutdown.clone(),
            );
            self.shutdown.spawn(async move {
                if let Err(e) =
                    directive::serve_reloadable(config, store, listener, tls, &shutdown).await
                {
                    tracing::error!(error = %e, "the Directive service failed");
                }
            });
        }
        metrics::observe(
            &self.config.data_dir,
            self.own_certificate.clone(),
            self.metrics.clone(),
            &self.shutdown,
        );
        tracing::info!(
            reports = self.config.reports.len(),
            authorities = self.config.authorities.len(),
            "provider daemon started"
        );
        // The store is open and the Directive listener (if any) bound.
        self.notify.ready();
        let mut watchdog = WatchdogTicks::new(&self.notify);
        let mut watch = self.watch.clone();
        let shutdown = self.shutdown.clone();
        'run: loop {
            let now = Utc::now();
            if let Err(e) = self.schedule(now).await {
                tracing::error!(error = %e, "the scheduler failed; trying again shortly");
            }
            if shutdown.is_cancelled() {
                break;
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
            // Once round the loop: a loop stuck above feeds nothing, and
            // systemd restarts the daemon.
            self.notify.watchdog();
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
            let sleep = tokio::time::sleep(wake);
            tokio::pin!(sleep);
            // Waiting is not being stuck: a watchdog tick is fed here and the
            // wait goes on, with no pass round the loop. A loop stuck in a
            // step above (or in one below) never gets here to feed it.
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break 'run,
                    () = &mut sleep => {}
                    () = watchdog.tick() => {
                        self.notify.watchdog();
                        continue;
                    }
                    Some(request) = self.reloads.next() => {
                        self.notify.reloading();
                        let outcome = self.reload().await;
                        self.notify.ready();
                        request.answer(outcome);
                    }
                    Some(joined) = self.pushes.join_next(), if !self.pushes.is_empty() => {
                        match joined {
                            Ok((id, la, outcome)) => {
                                if let Err(e) = self.finished(id, &la, outcome).await {
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
                break;
            }
        }
        self.notify.stopping();
        self.stop().await;
        Ok(())
    }

    /// Lets pushes in flight finish within [`SHUTDOWN_GRACE`], stops those
    /// still running (each recorded as failed, to resume on the next start),
    /// and drains the daemon's other tasks.
    async fn stop(&mut self) {
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
                self.abort.cancel();
                if tokio::time::timeout(WIND_DOWN, self.settle())
                    .await
                    .is_err()
                {
                    tracing::warn!(pushes = self.pushes.len(), "pushes did not stop in time");
                    self.pushes.shutdown().await;
                }
            }
        }
        self.shutdown.cancel();
        self.shutdown.drain(WIND_DOWN, "provider daemon").await;
        tracing::info!("provider daemon stopped");
    }
}
