//! The provider's delivery commands: `provider run`, `report preview` and
//! `send-now`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use clap::{Args, Subcommand};

use super::{Global, Outcome, actor, signals, status};
use mishare::config::ProviderConfig;
use mishare::gate::{Decision, Gate};
use mishare::provider::{self, LaOutcome, Progress, SendError, SendOptions};
use mishare::report::{self, ReportError};
use mishare::store::Store;

#[derive(Debug, Subcommand)]
pub(crate) enum ProviderCommand {
    /// Run the provider daemon: serves DWP's Directive service when
    /// [directive] is configured, and runs until SIGTERM or SIGINT.
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
            match &config.directive {
                Some(d) => eprintln!(
                    "mishare provider daemon: serving Directive on {} to {}",
                    d.listen,
                    d.regulators.join(", ")
                ),
                None => eprintln!(
                    "mishare provider daemon: no [directive] configured; waiting for SIGTERM \
                     or SIGINT"
                ),
            }
            provider::run(config, shutdown).await?;
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
