//! The provider's delivery commands: `provider run`, `report preview` and
//! `send-now`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::London;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{Global, Outcome, actor, signals, status};
use mishare::config::ProviderConfig;
use mishare::gate::{Decision, Gate, Stage};
use mishare::outbox::{self, RequeueError};
use mishare::provider::{self, LaOutcome, Progress, SendError, SendOptions};
use mishare::report::{self, ReportError};
use mishare::store::Store;

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
    /// only --la's), with the sanitiser's findings and what the gate would
    /// say on standard error. Sends nothing and writes nothing.
    Preview(PreviewArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every table can be made, 65 when the sanitiser \
                        blocks one (its reasons are on standard error). What the gate would \
                        say does not change the status: a preview sends nothing."
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
    CODE failed: why\n\
    Progress is drawn on standard error when it is a terminal.\n\n\
    Exit status: 0 when every LA the gate permitted got its file; 1 when any permitted \
    delivery failed (including a table the sanitiser blocked). Refusals alone are not \
    failures: the gate did its job, and each is in the audit log with its reason code.")]
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
            let shutdown = signals()?;
            let config = Arc::new(config);
            let daemon = provider::Daemon::open(config.clone(), provider::DaemonOptions::default())?;
            let directive = match &config.directive {
                Some(d) => format!("serving Directive on {} to {}", d.listen, d.regulators.join(", ")),
                None => "no [directive] configured".into(),
            };
            eprintln!(
                "mishare provider daemon: {} reports scheduled, {} LAs, data_dir {} locked; {directive}; \
                 stop with SIGTERM or SIGINT",
                config.reports.len(),
                config.authorities.len(),
                config.data_dir.display()
            );
            daemon.run(shutdown).await?;
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
    for file in &run.files {
        let name = config
            .reference
            .get(&file.la)
            .map_or("", |e| e.name.as_str());
        eprintln!(
            "== {} {name}: report {}, period {} ==",
            file.la, run.report, run.period.name
        );
        let gate = match store.as_mut() {
            Some(store) => match Gate::new(&config, store, actor()).evaluate(&file.la, at) {
                Decision::Permit => "the gate would permit it now".to_string(),
                Decision::Refuse(findings) => {
                    let detail: Vec<&str> = findings.iter().map(|f| f.detail.as_str()).collect();
                    format!(
                        "the gate would refuse it now: {}: {}",
                        findings.first().map_or("GATE_ERROR", |f| f.reason.as_str()),
                        detail.join("; ")
                    )
                }
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
        Arc::new(|p| {
            let mut err = std::io::stderr().lock();
            let _ = match p {
                Progress::Pushing { total } => write!(err, "\r\x1b[Kpushing to {total} LAs…"),
                Progress::Finished { la, done, total } => {
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
    let sent = runtime()?.block_on(provider::send_now(
        Arc::new(config),
        &args.name,
        args.la.as_deref(),
        options,
    ));
    if terminal {
        eprint!("\r\x1b[K");
    }
    let results = match sent {
        Ok(r) => r,
        Err(SendError::Report(e)) => return Ok(report_error(&e)),
        Err(e) => return Err(e.into()),
    };
    let mut out = String::new();
    for r in &results {
        out.push_str(&r.line());
        out.push('\n');
    }
    super::write_stdout(out.as_bytes())?;
    let failed = results
        .iter()
        .filter(|r| matches!(r.outcome, LaOutcome::Failed { .. }))
        .count();
    if failed > 0 {
        eprintln!(
            "error: {failed} of the LAs the gate permitted did not get their file; see the lines \
             above"
        );
        return Ok(status::FAILURE);
    }
    Ok(0)
}

/// A time on the command line: RFC 3339, or a date from midnight
/// Europe/London.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    London
        .from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// A time as an operator in London reads it: `2026-12-02 06:00 GMT`.
pub(crate) fn london(t: DateTime<Utc>) -> String {
    t.with_timezone(&London)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

fn decision_text(decision: &Decision) -> String {
    match decision {
        Decision::Permit => "permit".into(),
        Decision::Refuse(findings) => {
            let detail: Vec<&str> = findings.iter().map(|f| f.detail.as_str()).collect();
            format!(
                "refuse {}: {}",
                decision.reason().map_or("GATE_ERROR", |r| r.as_str()),
                detail.join("; ")
            )
        }
    }
}

pub(crate) fn plan(args: &PlanArgs, global: &Global) -> Outcome {
    let config = match load(global) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let at = match args.at.as_deref() {
        None => Utc::now(),
        Some(s) => match parse_time(s) {
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
    let runs = provider::next_runs(&config, at);
    let mut decide = |la: &str, when: DateTime<Utc>| match store.as_mut() {
        Some(store) => Gate::new(&config, store, actor()).evaluate(la, when),
        None => Decision::Refuse(vec![mishare::gate::Finding {
            reason: mishare::gate::Reason::NoAgreement,
            detail: format!(
                "no state database at {} yet",
                config.database_path().display()
            ),
        }]),
    };
    let mut out = String::new();
    let mut reports = Vec::new();
    if args.format == PlanFormat::Text {
        out.push_str(&format!(
            "plan at {} ({}); nothing is sent\n",
            mishare::store::timestamp(at),
            london(at)
        ));
    }
    for (run, report) in runs.iter().zip(&config.reports) {
        let when = run.at.unwrap_or(at);
        let decisions: Vec<(String, Decision)> = run
            .recipients
            .iter()
            .map(|la| (la.clone(), decide(la, when)))
            .collect();
        match args.format {
            PlanFormat::Text => {
                match run.at {
                    Some(t) => out.push_str(&format!(
                        "{}: next run {} ({}), period {}, schedule \"{}\", missed {}\n",
                        run.report,
                        london(t),
                        mishare::store::timestamp(t),
                        run.period.as_deref().unwrap_or("-"),
                        report.schedule,
                        missed_name(report.missed),
                    )),
                    None => out.push_str(&format!(
                        "{}: no run in the next eight years (schedule \"{}\")\n",
                        run.report, report.schedule
                    )),
                }
                if decisions.is_empty() {
                    out.push_str("  no recipients\n");
                }
                for (la, d) in &decisions {
                    out.push_str(&format!("  {la} {}\n", decision_text(d)));
                }
            }
            PlanFormat::Json => reports.push(json!({
                "report": run.report,
                "schedule": report.schedule,
                "missed": missed_name(report.missed),
                "next_run_utc": run.at.map(mishare::store::timestamp),
                "next_run_london": run.at.map(london),
                "period": run.period,
                "recipients": decisions.iter().map(|(la, d)| json!({
                    "la": la,
                    "gate": d.to_json(),
                })).collect::<Vec<_>>(),
            })),
        }
    }
    if args.format == PlanFormat::Json {
        let doc = json!({ "at": mishare::store::timestamp(at), "reports": reports });
        out = serde_json::to_string_pretty(&doc).context("JSON")? + "\n";
    }
    super::write_stdout(out.as_bytes())
}

fn missed_name(m: mishare::config::Missed) -> &'static str {
    match m {
        mishare::config::Missed::RunOnce => "run-once",
        mishare::config::Missed::Skip => "skip",
    }
}

pub(crate) fn retry(args: &RetryArgs, global: &Global) -> Outcome {
    let config = match load(global) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let mut store = Store::open(&config.data_dir)?;
    let delivery = outbox::delivery(&store, args.id)?;
    if delivery.state != outbox::DeliveryState::Dead {
        eprintln!(
            "error: {}",
            RequeueError::NotDead {
                id: args.id,
                state: delivery.state
            }
        );
        return Ok(status::FAILURE);
    }
    let asked = Gate::new(&config, &mut store, actor()).authorise(
        &delivery.la,
        &delivery.report,
        Utc::now(),
        Stage::Plan,
        |_| {},
    );
    if let Err(refusal) = asked {
        eprintln!(
            "error: delivery {} to {} not queued again: the gate refuses it: {}: {}",
            args.id,
            delivery.la,
            refusal.reason,
            refusal.detail()
        );
        return Ok(status::FAILURE);
    }
    match outbox::requeue(&mut store, args.id, &actor(), Utc::now())? {
        Ok(d) => super::write_stdout(
            format!(
                "delivery {} to {} ({} {}) queued again; a running daemon sends it now\n",
                d.id, d.la, d.report, d.period
            )
            .as_bytes(),
        ),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(status::FAILURE)
        }
    }
}
