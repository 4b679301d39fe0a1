//! The operator's commands on the provider's state: agreements, suspensions,
//! status and the audit log. They act on the same database a running daemon
//! reads, so their effect is seen at the daemon's next gate check.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde_json::json;

use super::{Global, Outcome, actor, fail, status};
use mishare::common::audit::Verification;
use mishare::common::names::is_la_code;
use mishare::common::time::{london_date, parse_operator_time, timestamp};
use mishare::config::{ConfigError, ProviderConfig};
use mishare::provider::agreement::{AgreementError, AgreementRequest, NewAgreement};
use mishare::provider::status::{Status, dates, standing};
use mishare::provider::store::{Maker, Scope, Store, StoreError};

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Confidentiality agreements with LAs: add, list, show, revoke.
    #[command(subcommand)]
    Agreement(AgreementCommand),

    /// Suspend sharing with one LA or with every LA until `mishare resume`.
    /// Prints the suspension's id.
    Suspend(SuspendArgs),

    /// Lift a suspension the provider made (DWP's are lifted only by DWP).
    Resume(ResumeArgs),

    /// Each LA in [[authority]]: its agreement, the suspensions covering it
    /// and what the gate would decide now.
    Status(StatusArgs),

    /// The audit log: verify its hash chain, or export it.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgreementCommand {
    /// Put a signed confidentiality agreement on file, in place of the LA's
    /// current one if it has one.
    Add(AddArgs),
    /// Every LA's current agreement.
    List(ListArgs),
    /// One LA's agreement and its history.
    Show(ShowArgs),
    /// Revoke an LA's agreement: nothing more goes to the LA until a new one
    /// is added.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The LA's code in the reference data, for example E09000002.
    #[arg(long, value_name = "CODE")]
    la: String,
    /// The LA's representative responsible for keeping the agreement, as
    /// "Name <email>".
    #[arg(long, value_name = "NAME <EMAIL>")]
    representative: String,
    /// The date the agreement was signed (YYYY-MM-DD).
    #[arg(long, value_name = "YYYY-MM-DD")]
    signed: String,
    /// The last day the agreement covers (YYYY-MM-DD); none if it does not
    /// expire.
    #[arg(long, value_name = "YYYY-MM-DD")]
    expires: Option<String>,
    /// The signed document; a copy is kept under data_dir/agreements/ with
    /// its SHA-256.
    #[arg(long, value_name = "FILE")]
    document: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The LA's code.
    #[arg(long, value_name = "CODE")]
    la: String,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The LA whose agreement is revoked.
    #[arg(long, value_name = "CODE")]
    la: String,
    /// Why; recorded in the agreement's history and the audit log.
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["la", "all"])))]
pub(crate) struct SuspendArgs {
    /// Suspend sharing with this LA only.
    #[arg(long, value_name = "CODE")]
    la: Option<String>,
    /// Suspend sharing with every LA.
    #[arg(long)]
    all: bool,
    /// Why; recorded with the suspension and in the audit log.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Your own reference for it (a ticket or letter), if any.
    #[arg(long, value_name = "TEXT")]
    reference: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// The suspension's id, as `mishare suspend` printed it and `mishare
    /// status` lists it.
    #[arg(value_name = "ID")]
    id: i64,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Recompute the hash chain from the database. Exits 0 when it is
    /// intact, 1 naming the first broken entry.
    Verify,
    /// Write entries as JSON lines to standard output.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Only entries at or after this time: RFC 3339 (2013-03-31T12:00:00Z)
    /// or a date (YYYY-MM-DD, from midnight Europe/London).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// For people.
    Text,
    /// One JSON document.
    Json,
}

/// An error and the exit status it ends the process with.
struct Failure {
    status: u8,
    error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            status: status::FAILURE,
            error,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Self {
        Self {
            status: status::CONFIG,
            error: error.into(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self {
            status: status::FAILURE,
            error: error.into(),
        }
    }
}

impl From<AgreementError> for Failure {
    fn from(error: AgreementError) -> Self {
        Self {
            status: agreement_status(&error),
            error: error.into(),
        }
    }
}

fn agreement_status(error: &AgreementError) -> u8 {
    match error {
        AgreementError::DocumentMissing { .. }
        | AgreementError::DocumentUnreadable { .. }
        | AgreementError::DocumentNotAFile { .. } => status::NO_INPUT,
        _ => status::DATA_ERR,
    }
}

pub(crate) fn run(command: AdminCommand, global: &Global) -> Outcome {
    let result = match command {
        AdminCommand::Agreement(AgreementCommand::Add(args)) => add(&args, global),
        AdminCommand::Agreement(AgreementCommand::List(args)) => list(&args, global),
        AdminCommand::Agreement(AgreementCommand::Show(args)) => show(&args, global),
        AdminCommand::Agreement(AgreementCommand::Revoke(args)) => revoke(&args, global),
        AdminCommand::Suspend(args) => suspend(&args, global),
        AdminCommand::Resume(args) => resume(&args, global),
        AdminCommand::Status(args) => show_status(&args, global),
        AdminCommand::Audit(AuditCommand::Verify) => verify(global),
        AdminCommand::Audit(AuditCommand::Export(args)) => export(&args, global),
    };
    Ok(result.unwrap_or_else(|f| fail(f.status, &f.error)))
}

type Done = Result<u8, Failure>;

fn open(global: &Global) -> Result<(ProviderConfig, Store), Failure> {
    let config = ProviderConfig::load(&global.config)?;
    let store = Store::open(&config.data_dir)?;
    Ok((config, store))
}

fn add(args: &AddArgs, global: &Global) -> Done {
    let (config, mut store) = open(global)?;
    let now = Utc::now();
    let request = AgreementRequest {
        la: &args.la,
        representative: &args.representative,
        signed: &args.signed,
        expires: args.expires.as_deref(),
        document: &args.document,
    };
    let new = NewAgreement::validate(&request, &config, london_date(now))?;
    let added = store.add_agreement(&new, &actor(), now)?;
    let a = &added.agreement;
    println!(
        "agreement {} on file for {} ({})",
        a.id, a.la_code, a.la_name
    );
    println!("  representative: {}", a.representative);
    println!("  {}", dates(a));
    println!(
        "  document:       {} (sha256 {}), kept as {}",
        a.document_name,
        a.document_sha256,
        store.document_path(&a.document_sha256).display()
    );
    if let Some(old) = &added.replaced {
        println!(
            "  replaces agreement {} ({}, representative {})",
            old.id,
            dates(old),
            old.representative
        );
    }
    Ok(0)
}

fn list(args: &ListArgs, global: &Global) -> Done {
    let (_config, store) = open(global)?;
    let today = london_date(Utc::now());
    let agreements = store.agreements()?;
    match args.format {
        Format::Json => {
            let items: Vec<_> = agreements
                .iter()
                .map(|a| {
                    let mut j = a.to_json();
                    j["standing"] = json!(standing(a, today));
                    j
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items).context("JSON")?);
        }
        Format::Text if agreements.is_empty() => {
            println!("no agreements on file; add one with `mishare agreement add`");
        }
        Format::Text => {
            for a in &agreements {
                println!(
                    "{:<10} {:<24} {:<14} {:<38} {}",
                    a.la_code,
                    a.la_name,
                    standing(a, today),
                    dates(a),
                    a.representative
                );
            }
        }
    }
    Ok(0)
}

fn show(args: &ShowArgs, global: &Global) -> Done {
    let (_config, store) = open(global)?;
    let today = london_date(Utc::now());
    let Some(a) = store.agreement(&args.la)? else {
        return Err(StoreError::NoAgreement {
            la: args.la.clone(),
        }
        .into());
    };
    println!("agreement {} for {} ({})", a.id, a.la_code, a.la_name);
    println!("  standing:       {}", standing(&a, today));
    println!("  representative: {}", a.representative);
    println!("  {}", dates(&a));
    println!("  document:       {}", a.document_name);
    println!("  sha256:         {}", a.document_sha256);
    println!(
        "  stored copy:    {}",
        store.document_path(&a.document_sha256).display()
    );
    println!(
        "  added:          {} by {}",
        timestamp(a.added_at),
        a.added_by
    );
    if let (Some(at), Some(by)) = (a.revoked_at, &a.revoked_by) {
        println!(
            "  revoked:        {} by {}: {}",
            timestamp(at),
            by,
            a.revoke_reason.as_deref().unwrap_or("")
        );
    }
    println!("history:");
    for e in store.agreement_history(&args.la)? {
        let reason = e.reason.map(|r| format!(": {r}")).unwrap_or_default();
        println!(
            "  {}  agreement {} {} by {}{reason}",
            timestamp(e.at),
            e.agreement_id,
            e.kind.as_str(),
            e.actor
        );
    }
    Ok(0)
}

fn revoke(args: &RevokeArgs, global: &Global) -> Done {
    let (_config, mut store) = open(global)?;
    let a = store.revoke_agreement(&args.la, &args.reason, &actor(), Utc::now())?;
    println!(
        "agreement {} for {} ({}) revoked; nothing goes to {} until a new agreement is added",
        a.id, a.la_code, a.la_name, a.la_code
    );
    Ok(0)
}

fn suspend(args: &SuspendArgs, global: &Global) -> Done {
    let (config, mut store) = open(global)?;
    let scope = match &args.la {
        None => Scope::All,
        Some(la) => match config
            .reference
            .resolve(la)
            .filter(|_| is_la_code(la.trim()))
        {
            Some(found) => Scope::La(found.code.clone()),
            None => {
                return Err(anyhow!(
                    "{la:?} is not an LA in the reference data {}; check the code \
                     (`mishare status` lists the configured LAs)",
                    config.reference_path.display()
                )
                .into());
            }
        },
    };
    let s = store.suspend(
        scope,
        Maker::Provider,
        &args.reason,
        args.reference.as_deref(),
        &actor(),
        Utc::now(),
    )?;
    println!(
        "suspension {}: {} is suspended; lift it with `mishare resume {}`",
        s.id, s.scope, s.id
    );
    Ok(0)
}

fn resume(args: &ResumeArgs, global: &Global) -> Done {
    let (_config, mut store) = open(global)?;
    let s = store.lift(args.id, Maker::Provider, &actor(), Utc::now())?;
    println!("suspension {} lifted: {} may resume", s.id, s.scope);
    let others = match s.scope.la() {
        Some(la) => store.suspensions_covering(la)?,
        None => store.suspensions(true)?,
    };
    for o in others {
        println!(
            "  still in force: suspension {} by {} ({})",
            o.id, o.made_by, o.scope
        );
    }
    Ok(0)
}

fn show_status(args: &StatusArgs, global: &Global) -> Done {
    let (config, mut store) = open(global)?;
    let status = Status::read(&config, &mut store, Utc::now())?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&status.to_json()).context("JSON")?
        ),
        Format::Text => print!("{}", status.text()),
    }
    Ok(0)
}

fn verify(global: &Global) -> Done {
    let (_config, store) = open(global)?;
    let head = match store.verify_audit()? {
        Verification::Intact { entries, head } => {
            println!("audit chain intact: {entries} entries");
            head
        }
        Verification::Broken(broken) => return Err(anyhow::Error::new(broken).into()),
    };
    // The release ledger and known figures, each row against the entry
    // that recorded it.
    let ledger = store.verify_ledger()?;
    if let Some(first) = ledger.problems.first() {
        let more = match ledger.problems.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return Err(anyhow!(
            "the release ledger does not verify against the audit chain: {}{more}; nothing is \
             spooled for {} until this is resolved",
            first.message,
            if first.las.is_empty() {
                "the LAs concerned".to_string()
            } else {
                first.las.join(", ")
            }
        )
        .into());
    }
    println!(
        "release ledger intact: {} releases, {} known figures",
        ledger.releases, ledger.known
    );
    println!("last entry hash: {head}");
    Ok(0)
}

fn export(args: &ExportArgs, global: &Global) -> Done {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let (_config, store) = open(global)?;
    let entries = store.audit_entries(since)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = entries
        .iter()
        .try_for_each(|e| writeln!(out, "{}", e.to_json()))
        .and_then(|()| out.flush());
    match written {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(anyhow::Error::new(e)
            .context("writing to standard output")
            .into()),
        Ok(()) => Ok(0),
    }
}

fn parse_since(s: &str) -> Result<DateTime<Utc>, Failure> {
    parse_operator_time(s).ok_or_else(|| Failure {
        status: status::USAGE,
        error: anyhow!(
            "--since {s:?} is not a time; write 2013-03-31T12:00:00Z or a date such as 2013-03-31"
        ),
    })
}
