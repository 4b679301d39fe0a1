//! The command-line edge: argument parsing, output formatting and exit
//! statuses. Commands call the library; nothing here holds policy.

/// `eprintln!` that never panics: a line for standard error, dropped if
/// nobody is reading it any more (`mishare … 2>&1 | head -1`). The command
/// then ends with the status it would have had.
macro_rules! to_stderr {
    ($($arg:tt)*) => {
        $crate::cli::write_stderr(format_args!($($arg)*))
    };
}

mod admin;
mod authority;
mod certs;
mod demo;
mod keys;
mod ledger;
mod provider;
mod sanitise;

use std::path::PathBuf;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit statuses, following sysexits(3) where one fits.
pub(crate) mod status {
    /// Something failed (an audit chain is broken, a delivery failed).
    pub const FAILURE: u8 = 1;
    /// The command line was wrong (clap uses 2 for its own parse errors).
    pub const USAGE: u8 = 64;
    /// The input was blocked: bad data, or a disclosure rule forbids it.
    pub const DATA_ERR: u8 = 65;
    /// An input file could not be opened.
    pub const NO_INPUT: u8 = 66;
    /// A configuration file is wrong.
    pub const CONFIG: u8 = 78;
}

/// Share rounded, encrypted management information with local authorities,
/// only where a confidentiality agreement allows it.
#[derive(Debug, Parser)]
#[command(name = "mishare", version, propagate_version = true)]
pub(crate) struct Cli {
    /// The configuration file: provider.toml for provider commands;
    /// authority commands read ./authority.toml unless this names another.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "provider.toml"
    )]
    config: PathBuf,

    /// How log lines are written to standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the whole job on loopback: a development PKI, an endpoint per LA,
    /// agreements for some, a suspension, and a real send-now of synthetic
    /// records. Everything lives in a temporary directory (kept with --out).
    Demo(demo::DemoArgs),

    /// Round, total and label one table under the disclosure rules, and print
    /// exactly what an LA would receive (or, with --format json, the table
    /// and its findings).
    Sanitise(Box<sanitise::SanitiseArgs>),

    /// Certificates for mutual TLS.
    #[command(subcommand)]
    Certs(certs::CertsCommand),

    /// Make an age identity for an LA: writes the secret key file and prints
    /// the public key (age1…) to give the provider.
    Keygen(keys::KeygenArgs),

    /// Decrypt a delivered file with the LA's age identity file.
    Decrypt(keys::DecryptArgs),

    #[command(flatten)]
    Admin(admin::AdminCommand),

    /// The LA's endpoint: receive files from providers (authority.toml).
    #[command(subcommand)]
    Authority(authority::AuthorityCommand),

    /// Signed receipts from an LA's endpoint.
    #[command(subcommand)]
    Receipt(authority::ReceiptCommand),

    /// The provider daemon (provider.toml).
    #[command(subcommand)]
    Provider(provider::ProviderCommand),

    /// Reports: what an LA would receive.
    #[command(subcommand)]
    Report(provider::ReportCommand),

    /// Run a report now and deliver it: the gate, seal, spool and push, one
    /// line per LA. Exits non-zero only if a delivery the gate permitted
    /// failed.
    SendNow(provider::SendNowArgs),

    /// A dry run of the schedule: each report's next run (Europe/London and
    /// UTC), the period it would send, its recipients and what the gate
    /// would decide for each at that time. Sends nothing and writes nothing.
    Plan(provider::PlanArgs),

    /// Queue a dead delivery again (after asking the gate; a refusal says
    /// why). A running daemon sends it at once.
    Retry(provider::RetryArgs),

    /// End a dead delivery for good: it is never sent, its spooled
    /// ciphertext is deleted, and the step is audited with the reason. Its
    /// row, receipts, audit entries and ledger release are kept.
    Abandon(provider::AbandonArgs),

    /// The release ledger: what each LA has received, and what it could
    /// work out from it together with the figures it knows (R11).
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),

    /// Figures an LA knows from elsewhere, which the ledger audit counts.
    #[command(subcommand)]
    Known(ledger::KnownCommand),
}

/// Options every command can see.
#[derive(Debug)]
pub(crate) struct Global {
    /// `--config`: the provider configuration file.
    pub config: PathBuf,
}

pub(crate) fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let global = Global { config: cli.config };
    let result = match cli.command {
        Command::Certs(cmd) => certs::run(&cmd),
        Command::Demo(args) => demo::run(&args),
        Command::Sanitise(args) => sanitise::run(&args, &global),
        Command::Keygen(args) => keys::keygen(&args),
        Command::Decrypt(args) => keys::decrypt(&args),
        Command::Admin(cmd) => admin::run(cmd, &global),
        Command::Authority(cmd) => authority::run(&cmd, &global),
        Command::Receipt(cmd) => authority::receipt(&cmd, &global),
        Command::Provider(cmd) => provider::run(&cmd, &global),
        Command::Report(cmd) => provider::preview(&cmd, &global),
        Command::SendNow(args) => provider::send_now(&args, &global),
        Command::Plan(args) => provider::plan(&args, &global),
        Command::Retry(args) => provider::retry(&args, &global),
        Command::Abandon(args) => provider::abandon(&args, &global),
        Command::Ledger(cmd) => ledger::ledger(cmd, &global),
        Command::Known(cmd) => ledger::known(cmd, &global),
    };
    ExitCode::from(match result {
        Ok(code) => code,
        Err(error) => fail(status::FAILURE, &error),
    })
}

/// What a command returns: the exit status, or an error that ends the process
/// with status 1. A command that wants another status for an error prints it
/// with [`fail`] and returns `Ok(status)`.
pub(crate) type Outcome = anyhow::Result<u8>;

/// Prints `error: …` with the whole cause chain and returns `code`.
pub(crate) fn fail(code: u8, error: &anyhow::Error) -> u8 {
    to_stderr!("error: {error:#}");
    code
}

/// Binds `[metrics] listen`, if configured; the error names the address
/// and the configuration file it came from.
pub(crate) async fn bind_metrics(
    listen: Option<std::net::SocketAddr>,
    config: &std::path::Path,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    use anyhow::Context;
    let Some(listen) = listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen} (`metrics.listen` in {})",
                config.display()
            )
        })?;
    Ok(Some(listener))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MISHARE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Writes a command's output. A reader that went away (`| head`) is not a
/// failure of the command.
pub(crate) fn write_stdout(bytes: &[u8]) -> Outcome {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// Writes one line to standard error, ignoring any failure: there is no
/// better place to report that standard error is gone, and a closed stderr
/// must not turn a command's result into a panic. Use [`to_stderr!`].
pub(crate) fn write_stderr(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    let _ = stderr
        .write_fmt(args)
        .and_then(|()| stderr.write_all(b"\n"));
}

/// Who is acting: `provider:<login name>`.
pub(crate) fn actor() -> String {
    format!("provider:{}", login())
}

/// The login name (`$USER`), without control characters, at most 64
/// characters; `operator` when there is none.
pub(crate) fn login() -> String {
    let user: String = std::env::var("USER")
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let user = user.trim();
    if user.is_empty() {
        "operator".to_string()
    } else {
        user.to_string()
    }
}

/// `mishare status | head` must not end in a panic. Rust ignores SIGPIPE, so
/// `println!` to a reader that went away panics; this crate forbids the
/// `unsafe` needed to restore SIGPIPE, so the panic hook ends the process
/// quietly instead, as SIGPIPE would, with status 0 like [`write_stdout`].
///
/// The same for standard error: commands write to it with [`to_stderr!`],
/// which cannot panic, but an `eprintln!` left anywhere else would. Such a
/// panic ends the process quietly with status 1 ([`status::FAILURE`]): the
/// status the command would have had is not known at that point, and a
/// command that was writing to stderr was most likely saying something
/// went wrong.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") {
            if message.starts_with("failed printing to stdout") {
                std::process::exit(0);
            }
            if message.starts_with("failed printing to stderr") {
                std::process::exit(i32::from(status::FAILURE));
            }
        }
        default(info);
    }));
}
