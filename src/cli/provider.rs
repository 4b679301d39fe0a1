//! The provider's delivery commands: `provider run`, `report preview` and
//! `send-now`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use chrono::Utc;
use clap::{Args, Subcommand};

use super::{Global, Outcome, actor, status};
use mishare::common::shutdown::{Shutdown, cancel_on_signals};
use mishare::common::time::parse_operator_time;
use mishare::config::ProviderConfig;
use mishare::provider::gate::{Decision, Gate};
use mishare::provider::outbox;
use mishare::provider::pipeline::{self, RetryError};
use mishare::provider::report::{self, ReportError};
use mishare::provider::status::Plan;
use mishare::provider::store::{Store, StoreError};
use mishare::provider::{self, Progress, SendError, SendOptions};

#[derive(Debug, Subcommand)]
pub(crate) enum ProviderCommand {
    /// Run the provider daemon until SIGTERM or SIGINT: each [[report]] on
    /// its schedule, deliveries retried until delivered or dead, DWP's
    /// Directive service when [directive] is configured. One daemon per
    /// data_dir.
    Run,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ReportCommand {
    /// Print exactly the CSV each LA would receive from a report now (or
    /// only --la's), with the sanitiser's findings, what the gate would say
    /// and what the ledger audit would say (against everything the LA has
    /// received and knows) on standard error. Sends nothing and writes
    /// nothing.
    Preview(PreviewArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every table can be made, 65 when the sanitiser \
                        blocks one (its reasons are on standard error). What the gate or the \
                        ledger audit would say does not change the status: a preview sends \
                        nothing."
)]
pub(crate) struct PreviewArgs {
    /// The [[report]]'s name.
    #[arg(value_name = "NAME")]
    name: String,
    /// Only this LA's file.
    #[arg(long, value_name = "CODE")]
    la: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Prints one line per LA on standard output:\n  \
    CODE delivered STORED_AS sha256 HEX receipt verified\n  \
    CODE refused REASON_CODE: why\n  \
    CODE refused E_UNPICKABLE: withheld by the ledger audit: why\n  \
    CODE failed: why\n\
    The ledger audit's warnings on files it let go are on standard error, one line \
    each; the audit log has every finding.\n\
    Progress is drawn on standard error when it is a terminal.\n\n\
    Exit status: 0 when every LA the gate permitted got its file; 1 when any permitted \
    delivery failed (including a table the sanitiser blocked). Refusals alone (the gate's, \
    or the ledger audit's) are not failures: the gate did its job, and each is in the audit log with its reason code.")]
pub(crate) struct SendNowArgs {
    /// The [[report]]'s name.
    #[arg(value_name = "NAME")]
    name: String,
    /// Only this LA.
    #[arg(long, value_name = "CODE")]
    la: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// Plan as if it were this time: RFC 3339 (2026-12-01T09:00:00Z) or a
    /// date (YYYY-MM-DD, from midnight Europe/London). Default: now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    format: PlanFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PlanFormat {
    /// For people.
    Text,
    /// One JSON document.
    Json,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when the delivery is queued again; 1 when the gate \
    refuses it now (the reason is printed and audited) or it is not dead."
)]
pub(crate) struct RetryArgs {
    /// The delivery's id, as `mishare status` lists it.
    #[arg(value_name = "ID")]
    id: i64,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when the delivery is abandoned; 1 when it is not dead \
    (only a dead delivery can be abandoned) or its ciphertext could not be removed (the \
    delivery is abandoned all the same, and the file named)."
)]
pub(crate) struct AbandonArgs {
    /// The dead delivery's id, as `mishare status` lists it.
    #[arg(value_name = "DELIVERY_ID")]
    id: i64,
    /// Why it is abandoned; it goes in the audit log.
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

fn load(global: &Global) -> Result<ProviderConfig, u8> {
    ProviderConfig::load(&global.config).map_err(|e| {
        eprintln!("error: {e}");
        status::CONFIG
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn run(command: &ProviderCommand, global: &Global) -> Outcome {
    let config = match load(global) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match command {
        ProviderCommand::Run => runtime()?.block_on(async {
            let shutdown = Shutdown::new();
            cancel_on_signals(&shutdown).context("cannot listen for SIGTERM and SIGINT")?;
            let config = Arc::new(config);
            let options = provider::DaemonOptions {
                notify: mishare::common::notify::Notifier::from_env(),
                ..provider::DaemonOptions::default()
            };
            let mut daemon = provider::Daemon::open(config.clone(), options, &shutdown).await?;
            mishare::common::reload::reload_on_sighup(daemon.reload_handle(), &shutdown)
                .context("cannot listen for SIGHUP")?;
            if let Some(listener) = super::bind_metrics(config.metrics, &config.path).await? {
                daemon.serve_metrics(listener);
            }
            let directive = match &config.directive {
                Some(d) => format!("serving Directive on {} to {}", d.listen, d.regulators.join(", ")),
                None => "no [directive] configured".into(),
            };
            eprintln!(
                "mishare provider daemon: {} reports scheduled, {} LAs, data_dir {} locked; {directive}; \
                 reload with SIGHUP; stop with SIGTERM or SIGINT",
                config.reports.len(),
                config.authorities.len(),
                config.data_dir.display()
            );
            daemon.run().await?;
            shutdown.cancel();
            shutdown.drain(std::time::Duration::from_secs(5), "provider daemon").await;
            Ok(0)
        }),
    }
}

/// Prints a report error and gives the exit status for it.
fn report_error(e: &ReportError) -> u8 {
    eprintln!("error: {e}");
    match e {
        ReportError::UnknownReport(_) | ReportError::NotARecipient { .. } => status::USAGE,
        ReportError::SourceBlocked { .. } => status::DATA_ERR,
        _ => status::NO_INPUT,
    }
}

pub(crate) fn preview(command: &ReportCommand, global: &Global) -> Outcome {
    let ReportCommand::Preview(args) = command;
    let config = match load(global) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let (report, las) = match report::select(&config, &args.name, args.la.as_deref()) {
        Ok(r) => r,
        Err(e) => return Ok(report_error(&e)),
    };
    let at = Utc::now();
    let run = match report::run_report(&config, report, &las, at) {
        Ok(r) => r,
        Err(e) => return Ok(report_error(&e)),
    };
    // The gate's view without recording anything. With no database yet there
    // is no agreement either; opening one would create it, so it is not.
    let mut store = if config.database_path().exists() {
        Some(Store::open(&config.data_dir)?)
    } else {
        None
    };
    let several = run.files.len() > 1;
    let mut code = 0;
    let check = pipeline::check_of(store.as_ref());
    for file in &run.files {
        let name = config
            .reference
            .get(&file.la)
            .map_or("", |e| e.name.as_str());
        eprintln!(
            "== {} {name}: report {}, period {} ==",
            file.la, run.report, run.range
        );
        let gate = match store.as_mut() {
            Some(store) => match Gate::new(&config, store, actor()).evaluate(&file.la, at) {
                Decision::Permit => "the gate would permit it now".to_string(),
                refusal @ Decision::Refuse(_) => format!(
                    "the gate would refuse it now: {}: {}",
                    refusal.reason().map_or("GATE_ERROR", |r| r.as_str()),
                    refusal.detail()
                ),
            },
            None => format!(
                "the gate would refuse it now: NO_AGREEMENT: no state database at {} yet",
                config.database_path().display()
            ),
        };
        match &file.outcome {
            Ok(rendered) => {
                for finding in &rendered.findings {
                    eprintln!("{finding}");
                }
                eprintln!("{gate}");
                let verdict = pipeline::audit_preview(
                    &config,
                    store.as_ref(),
                    &check,
                    &file.la,
                    &rendered.release,
                    false,
                );
                eprintln!("{}", verdict.text());
                super::write_stdout(&rendered.csv)?;
                if several {
                    super::write_stdout(b"\n")?;
                }
            }
            Err(blocked) => {
                eprintln!("{blocked}");
                eprintln!("{gate}");
                code = status::DATA_ERR;
            }
        }
    }
    Ok(code)
}

pub(crate) fn send_now(args: &SendNowArgs, global: &Global) -> Outcome {
    let config = match load(global) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let terminal = std::io::stderr().is_terminal();
    let progress: Arc<dyn Fn(Progress) + Send + Sync> = if terminal {
        let pushing = Arc::new(AtomicUsize::new(0));
        Arc::new(move |p| {
            let mut err = std::io::stderr().lock();
            let _ = match p {
                Progress::Pushing { .. } => {
                    let total = pushing.fetch_add(1, Ordering::Relaxed) + 1;
                    write!(err, "\r\x1b[Kpushing to {total} LAs…")
                }
                Progress::Finished { la, done } => {
                    let total = pushing.load(Ordering::Relaxed);
                    write!(err, "\r\x1b[K[{done}/{total}] {la} done")
                }
            };
            let _ = err.flush();
        })
    } else {
        Arc::new(|_| {})
    };
    let options = SendOptions {
        progress,
        ..SendOptions::now(actor())
    };
    let (sent, stopped) = runtime()?.block_on(async {
        let shutdown = Shutdown::new();
        cancel_on_signals(&shutdown).context("cannot listen for SIGTERM and SIGINT")?;
        let sent = provider::send_now(
            Arc::new(config),
            &args.name,
            args.la.as_deref(),
            options,
            &shutdown,
        )
        .await;
        let stopped = shutdown.is_cancelled();
        shutdown.cancel();
        shutdown
            .drain(std::time::Duration::from_secs(5), "send-now")
            .await;
        anyhow::Ok((sent, stopped))
    })?;
    if terminal {
        eprint!("\r\x1b[K");
    }
    let results = match sent {
        Ok(r) => r,
        Err(SendError::Report(e)) => return Ok(report_error(&e)),
        Err(SendError::Pipeline(mishare::provider::pipeline::PipelineError::Report(e))) => {
            return Ok(report_error(&e));
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = String::new();
    for r in &results {
        out.push_str(&r.line());
        out.push('\n');
        for note in &r.notes {
            eprintln!("{}: ledger audit: {note}", r.la);
        }
    }
    super::write_stdout(out.as_bytes())?;
    if stopped {
        eprintln!(
            "error: send-now was stopped; what is spooled stays queued for the daemon or \
             `mishare retry`"
        );
        return Ok(status::FAILURE);
    }
    let failed = results.iter().filter(|r| r.is_failure()).count();
    if failed > 0 {
        eprintln!(
            "error: {failed} of the LAs the gate permitted did not get their file; see the lines \
             above"
        );
        return Ok(status::FAILURE);
    }
    Ok(0)
}

pub(crate) fn plan(args: &PlanArgs, global: &Global) -> Outcome {
    let config = match load(global) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let at = match args.at.as_deref() {
        None => Utc::now(),
        Some(s) => match parse_operator_time(s) {
            Some(t) => t,
            None => {
                eprintln!(
                    "error: --at {s:?} is not a time; write 2026-12-01T09:00:00Z or a date such \
                     as 2026-12-01"
                );
                return Ok(status::USAGE);
            }
        },
    };
    // The gate's view without recording anything; with no database there is
    // no agreement either, and none is created.
    let mut store = if config.database_path().exists() {
        Some(Store::open(&config.data_dir)?)
    } else {
        None
    };
    let plan = Plan::read(&config, store.as_mut(), at)?;
    let out = match args.format {
        PlanFormat::Text => plan.text(),
        PlanFormat::Json => serde_json::to_string_pretty(&plan.to_json()).context("JSON")? + "\n",
    };
    super::write_stdout(out.as_bytes())
}

pub(crate) fn abandon(args: &AbandonArgs, global: &Global) -> Outcome {
    let config = match load(global) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let mut store = Store::open(&config.data_dir)?;
    match outbox::abandon(&mut store, args.id, &args.reason, &actor(), Utc::now()) {
        Ok(done) => {
            let d = &done.delivery;
            let mut out = format!(
                "delivery {} to {} ({} {}) abandoned; it will not be sent",
                d.id, d.la, d.report, d.period
            );
            let not_deleted = match &done.ciphertext {
                Some((path, None)) => {
                    out.push_str(&format!("; its ciphertext {} is deleted", path.display()));
                    None
                }
                Some((path, Some(e))) => Some((path, e)),
                None => {
                    out.push_str("; it had no spooled ciphertext left");
                    None
                }
            };
            out.push('\n');
            super::write_stdout(out.as_bytes())?;
            if let Some((path, e)) = not_deleted {
                eprintln!(
                    "error: cannot delete its ciphertext {}: {e}; delete it by hand",
                    path.display()
                );
                return Ok(status::FAILURE);
            }
            Ok(0)
        }
        Err(e @ (StoreError::NotDead { .. } | StoreError::UnknownDelivery(_))) => {
            eprintln!("error: {e}");
            Ok(status::FAILURE)
        }
        Err(e @ StoreError::NoReason) => {
            eprintln!("error: {e}");
            Ok(status::USAGE)
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn retry(args: &RetryArgs, global: &Global) -> Outcome {
    let config = match load(global) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let mut store = Store::open(&config.data_dir)?;
    match pipeline::retry(&config, &mut store, args.id, &actor(), Utc::now()) {
        Ok(d) => super::write_stdout(
            format!(
                "delivery {} to {} ({} {}) queued again; a running daemon sends it now\n",
                d.id, d.la, d.report, d.period
            )
            .as_bytes(),
        ),
        Err(e @ (RetryError::NotRequeueable(_) | RetryError::Refused { .. })) => {
            eprintln!("error: {e}");
            Ok(status::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}
