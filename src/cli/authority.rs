//! `mishare authority run|audit verify` (the LA's endpoint) and
//! `mishare receipt verify` (anyone holding a receipt and the endpoint's
//! certificate).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mishare::authority;
use mishare::authority::open::{self, OpenError};
use mishare::authority::retention;
use mishare::authority::store::{DATABASE_FILE, Store, Transfer};
use mishare::common::audit::Verification;
use mishare::common::encoding::hex;
use mishare::common::shutdown::{Shutdown, cancel_on_signals};
use mishare::config::AuthorityConfig;
use mishare::receipt;
use mishare::seal::{Identities, SealError};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest as _, Sha256};
use std::io::Seek as _;
use zeroize::Zeroizing;

use super::{Global, Outcome, fail, status};

/// The file `authority` commands read when `--config` is not given.
const DEFAULT_CONFIG: &str = "authority.toml";

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuthorityCommand {
    /// Run the LA's endpoint: receive files from the providers in
    /// authority.toml (--config; ./authority.toml when not given) until
    /// SIGTERM or SIGINT.
    Run,
    /// The endpoint's audit log.
    #[command(subcommand)]
    Audit(AuthorityAuditCommand),
    /// For LA staff: the files received, and a file opened for a
    /// spreadsheet.
    #[command(subcommand)]
    Inbox(InboxCommand),
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum InboxCommand {
    /// Every file received, oldest first: provider, report, period,
    /// classification, when it was received, its size and SHA-256, whether a
    /// receipt was issued, and where it is.
    List(InboxListArgs),
    /// Decrypt a received file for a spreadsheet: a CSV that Excel reads as
    /// UTF-8 (with a byte-order mark), or an XLSX workbook with a cover
    /// sheet, the table as numbers and the label printed on every page.
    #[command(
        after_help = "FILE is the file's name as `inbox list` shows it, or a path to \
                            it (a copy elsewhere is fine: it is matched to what was received \
                            by its SHA-256, and refused if nothing received matches). The \
                            plaintext is written only where --out says (owner-only, never \
                            replacing a file, and only once the whole file has decrypted and \
                            been authenticated), or, for CSV, to standard output. Exit status: \
                            0 on success, 1 when the key does not open the file or --out \
                            cannot be written, 64 for XLSX without --out, 65 when the file is \
                            damaged or not a table, 66 when FILE or KEY cannot be read or \
                            FILE was not received here."
    )]
    Open(InboxOpenArgs),
    /// Delete received files older than DAYS days from the inbox, as
    /// `[retention] inbox_days` does: each deletion is an audit entry with
    /// the file's SHA-256. The transfer, its receipt and the audit log are
    /// kept.
    Purge(InboxPurgeArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct InboxPurgeArgs {
    /// Delete files received more than this many days ago (at least 1).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    older_than: u32,
}

#[derive(Debug, clap::Args)]
pub(crate) struct InboxListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Text)]
    format: ListFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ListFormat {
    /// For people.
    Text,
    /// One JSON array.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Sheet {
    /// UTF-8 CSV with a byte-order mark.
    Csv,
    /// An Excel workbook.
    Xlsx,
}

#[derive(Debug, clap::Args)]
pub(crate) struct InboxOpenArgs {
    /// The received file: its name (`<period>_<report>_<transfer id>.age`)
    /// or a path to it.
    #[arg(value_name = "FILE")]
    file: String,

    /// The LA's age identity file (made by `mishare keygen` or `age-keygen`).
    #[arg(long, value_name = "KEY")]
    identity: PathBuf,

    /// What to make; when not given, xlsx if --out ends in `.xlsx`, else csv.
    #[arg(long = "as", value_enum, value_name = "FORMAT")]
    sheet: Option<Sheet>,

    /// Where to write it (a new file). CSV goes to standard output without
    /// it; XLSX needs it.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuthorityAuditCommand {
    /// Check the endpoint's audit chain; names the first entry that breaks it.
    Verify,
    /// Print the endpoint's audit log, one JSON object per line.
    Export,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ReceiptCommand {
    /// Check a receipt's signature offline against the endpoint's
    /// certificate. Exit status 0 if valid, 1 (with the reason) if not.
    Verify(VerifyArgs),

    /// Print a receipt the provider stored (as JSON, for `receipt verify`).
    /// Reads the provider's state (--config, default ./provider.toml).
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// The transfer id, or the delivered file's name that ends with it
    /// (`<period>_<report>_<transfer id>.age`, as `send-now` prints it).
    #[arg(value_name = "TRANSFER_ID")]
    transfer_id: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The receipt, as JSON.
    #[arg(value_name = "RECEIPT.json")]
    receipt: PathBuf,

    /// The endpoint's certificate (PEM; the first certificate is used).
    #[arg(long, value_name = "ENDPOINT.pem")]
    cert: PathBuf,
}

/// `--config` is shared with the provider's commands, whose default is
/// `provider.toml`; left at that default, `authority` commands read
/// `./authority.toml` instead.
fn config_path(global: &Global) -> PathBuf {
    if global.config == Path::new("provider.toml") {
        PathBuf::from(DEFAULT_CONFIG)
    } else {
        global.config.clone()
    }
}

fn load(global: &Global) -> Result<AuthorityConfig, u8> {
    AuthorityConfig::load(&config_path(global)).map_err(|e| {
        eprintln!("error: {e}");
        status::CONFIG
    })
}

pub(crate) fn run(command: &AuthorityCommand, global: &Global) -> Outcome {
    let config = match load(global) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match command {
        AuthorityCommand::Run => serve(config),
        AuthorityCommand::Audit(AuthorityAuditCommand::Verify) => audit_verify(&config),
        AuthorityCommand::Audit(AuthorityAuditCommand::Export) => audit_export(&config),
        AuthorityCommand::Inbox(InboxCommand::List(args)) => inbox_list(&config, args),
        AuthorityCommand::Inbox(InboxCommand::Open(args)) => inbox_open(&config, args),
        AuthorityCommand::Inbox(InboxCommand::Purge(args)) => inbox_purge(&config, args),
    }
}

fn serve(config: AuthorityConfig) -> Outcome {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listen = config.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {listen} (`listen` in {})",
                    config.path.display()
                )
            })?;
        let local = listener.local_addr().unwrap_or(listen);
        let shutdown = Shutdown::new();
        cancel_on_signals(&shutdown).context("cannot listen for SIGTERM and SIGINT")?;
        let (reload, reloads) = mishare::common::reload::channel();
        mishare::common::reload::reload_on_sighup(reload, &shutdown)
            .context("cannot listen for SIGHUP")?;
        eprintln!(
            "mishare authority endpoint for {} listening on {local}",
            config.code
        );
        let metrics = super::bind_metrics(config.metrics, &config.path).await?;
        let options = authority::ServeOptions {
            reloads: Some(reloads),
            notify: mishare::common::notify::Notifier::from_env(),
            metrics,
        };
        authority::serve_with(config, listener, &shutdown, options).await?;
        Ok(0)
    })
}

fn open_state(config: &AuthorityConfig) -> anyhow::Result<Store> {
    let db = config.data_dir.join(DATABASE_FILE);
    if !db.exists() {
        anyhow::bail!(
            "there is no endpoint state at {}; has `mishare authority run` been started with \
             this configuration?",
            db.display()
        );
    }
    Ok(Store::open(&config.data_dir, &config.code)?)
}

fn audit_verify(config: &AuthorityConfig) -> Outcome {
    let state = open_state(config)?;
    match state.verify_audit()? {
        Verification::Intact { entries, head } => {
            println!("audit chain intact: {entries} entries");
            println!("last entry hash: {head}");
            Ok(0)
        }
        Verification::Broken(broken) => {
            eprintln!("error: {broken}");
            Ok(status::FAILURE)
        }
    }
}

fn audit_export(config: &AuthorityConfig) -> Outcome {
    let state = open_state(config)?;
    let mut out = String::new();
    for entry in state.audit_entries()? {
        out.push_str(&entry.to_json().to_string());
        out.push('\n');
    }
    super::write_stdout(out.as_bytes())
}

/// Where a received file is: `inbox/<provider>/<stored as>`.
fn inbox_path(config: &AuthorityConfig, transfer: &Transfer) -> Option<PathBuf> {
    let stored_as = transfer.receipt.as_ref()?.stored_as.clone();
    Some(config.inbox.join(&transfer.provider).join(stored_as))
}

fn inbox_list(config: &AuthorityConfig, args: &InboxListArgs) -> Outcome {
    let state = open_state(config)?;
    let received = state.received()?;
    let deletions = state.deletions()?;
    let deleted = |t: &Transfer| {
        deletions
            .get(&(t.provider.clone(), t.transfer_id.clone()))
            .and_then(|ms| chrono::DateTime::from_timestamp_millis(*ms))
            .map(mishare::common::time::timestamp)
    };
    let mut out = String::new();
    match args.format {
        ListFormat::Json => {
            let files: Vec<_> = received
                .iter()
                .map(|t| {
                    let path = inbox_path(config, t);
                    serde_json::json!({
                        "file": t.receipt.as_ref().map(|r| r.stored_as.clone()),
                        "path": path.as_ref().map(|p| p.display().to_string()),
                        "present": path.as_ref().is_some_and(|p| p.is_file()),
                        "deleted": deleted(t),
                        "provider": t.provider,
                        "report": t.report,
                        "period": t.period,
                        "classification": t.classification,
                        "received": received_at(t),
                        "size": t.size,
                        "sha256": hex(&t.sha256),
                        "receipt_issued": t.receipt.is_some(),
                    })
                })
                .collect();
            out.push_str(&serde_json::to_string_pretty(&files)?);
            out.push('\n');
        }
        ListFormat::Text if received.is_empty() => {
            out.push_str("no files received yet\n");
        }
        ListFormat::Text => {
            for t in &received {
                let path = inbox_path(config, t);
                let missing = match deleted(t) {
                    Some(at) => format!(" (deleted {at})"),
                    None if path.as_ref().is_some_and(|p| p.is_file()) => String::new(),
                    None => " (no longer in the inbox)".to_string(),
                };
                out.push_str(&format!(
                    "{}{missing}\n  from {}: report {}, period {}, {}\n  received {}, {} bytes, \
                     sha256 {}, receipt {}\n",
                    t.receipt.as_ref().map_or("", |r| r.stored_as.as_str()),
                    t.provider,
                    t.report,
                    t.period,
                    t.classification,
                    received_at(t),
                    t.size,
                    hex(&t.sha256),
                    if t.receipt.is_some() {
                        "issued"
                    } else {
                        "not issued"
                    },
                ));
            }
            out.push_str(&format!(
                "{} file(s); open one with `mishare authority inbox open FILE --identity KEY`\n",
                received.len()
            ));
        }
    }
    super::write_stdout(out.as_bytes())
}

fn inbox_purge(config: &AuthorityConfig, args: &InboxPurgeArgs) -> Outcome {
    let state = open_state(config)?;
    let why = format!("by hand: inbox purge --older-than {}", args.older_than);
    let actor = format!("la-staff:{}", super::login());
    let deleted = retention::purge(
        &state,
        &config.inbox,
        args.older_than,
        &why,
        &actor,
        mishare::common::time::now_ms(),
    )?;
    let mut out = String::new();
    for d in &deleted {
        out.push_str(&format!(
            "deleted {}{} (sha256 {}, received {})\n",
            d.path.display(),
            if d.was_present {
                ""
            } else {
                " (it was already gone; recorded now)"
            },
            hex(&d.transfer.sha256),
            received_at(&d.transfer)
        ));
    }
    out.push_str(&format!(
        "{} file(s) received more than {} day(s) ago deleted; each is in the audit log\n",
        deleted.len(),
        args.older_than
    ));
    super::write_stdout(out.as_bytes())
}

fn received_at(t: &Transfer) -> String {
    t.receipt
        .as_ref()
        .and_then(|r| chrono::DateTime::from_timestamp_millis(r.received_unix_ms))
        .map(mishare::common::time::timestamp)
        .unwrap_or_default()
}

fn inbox_open(config: &AuthorityConfig, args: &InboxOpenArgs) -> Outcome {
    let sheet = args
        .sheet
        .unwrap_or_else(|| match args.out.as_ref().and_then(|p| p.extension()) {
            Some(ext) if ext.eq_ignore_ascii_case("xlsx") => Sheet::Xlsx,
            _ => Sheet::Csv,
        });
    if sheet == Sheet::Xlsx && args.out.is_none() {
        return Ok(fail(
            status::USAGE,
            &anyhow::anyhow!("an XLSX workbook is written only to a file: give --out PATH"),
        ));
    }
    let state = open_state(config)?;
    let (transfer, path, mut file) = match find_received(config, &state, &args.file) {
        Ok(found) => found,
        Err(e) => return Ok(fail(status::NO_INPUT, &e)),
    };
    let identities = match Identities::load(&args.identity) {
        Ok(ids) => ids,
        Err(e) => return Ok(fail(status::NO_INPUT, &e.into())),
    };
    let plaintext = match open::decrypt(&mut file, transfer.size, &identities) {
        Ok(p) => p,
        Err(e) => {
            let code = match &e {
                OpenError::Seal(SealError::WrongIdentity { .. }) => status::FAILURE,
                OpenError::Read(_) => status::NO_INPUT,
                _ => status::DATA_ERR,
            };
            let e = anyhow::Error::new(e).context(format!("cannot decrypt {}", path.display()));
            return Ok(fail(code, &e));
        }
    };
    let bytes = match sheet {
        Sheet::Csv => open::csv_for_excel(&plaintext),
        Sheet::Xlsx => {
            let made = open::parse(&plaintext).and_then(|t| open::xlsx(&t, &transfer));
            match made {
                Ok(b) => Zeroizing::new(b),
                Err(e) => {
                    let e = anyhow::Error::new(e)
                        .context(format!("cannot make a workbook of {}", path.display()));
                    return Ok(fail(status::DATA_ERR, &e));
                }
            }
        }
    };
    let Some(out) = &args.out else {
        return super::write_stdout(&bytes);
    };
    if let Err(e) = write_new_private(out, &bytes) {
        let e = anyhow::Error::new(e).context(format!("cannot write {}", out.display()));
        return Ok(fail(status::FAILURE, &e));
    }
    eprintln!(
        "wrote {} ({}): {}'s {} for {}, {}",
        out.display(),
        match sheet {
            Sheet::Csv => "CSV",
            Sheet::Xlsx => "XLSX",
        },
        transfer.provider,
        transfer.report,
        transfer.period,
        transfer.classification
    );
    Ok(0)
}

/// The received file `file` names (a name from `inbox list`, or a path),
/// opened, and checked against what was received: its SHA-256 must be that
/// of a received file.
fn find_received(
    config: &AuthorityConfig,
    state: &Store,
    file: &str,
) -> anyhow::Result<(Transfer, PathBuf, std::fs::File)> {
    let given = Path::new(file);
    let path = if given.is_file() {
        given.to_path_buf()
    } else {
        let named: Vec<Transfer> = state
            .received()?
            .into_iter()
            .filter(|t| t.receipt.as_ref().is_some_and(|r| r.stored_as == file))
            .collect();
        match named.first().and_then(|t| inbox_path(config, t)) {
            Some(path) => path,
            None => anyhow::bail!(
                "{file}: no such file, and no file received here is named so (`mishare \
                 authority inbox list` lists them)"
            ),
        }
    };
    let mut opened =
        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut opened, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let digest = hasher.finalize();
    let Some(transfer) = state.received_with_digest(&digest)?.into_iter().next() else {
        anyhow::bail!(
            "{} is not a file this endpoint received: no received file has its SHA-256 ({}); \
             it was changed, or it came from elsewhere",
            path.display(),
            hex(&digest)
        );
    };
    opened
        .seek(std::io::SeekFrom::Start(0))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok((transfer, path, opened))
}

/// Writes `bytes` to a new owner-only file at `out`: through a temporary
/// file beside it, fsynced, then linked into place without replacing
/// anything, so `out` is whole or absent.
fn write_new_private(out: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".mishare-open-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist_noclobber(out).map_err(|e| e.error)?;
    mishare::common::files::sync_dir(dir)
}

pub(crate) fn receipt(command: &ReceiptCommand, global: &Global) -> Outcome {
    let args = match command {
        ReceiptCommand::Verify(args) => args,
        ReceiptCommand::Export(args) => return export_receipt(args, global),
    };
    let text = std::fs::read_to_string(&args.receipt)
        .with_context(|| format!("cannot read the receipt {}", args.receipt.display()))?;
    let cert = CertificateDer::from_pem_file(&args.cert).map_err(|e| {
        anyhow::anyhow!(
            "cannot read a PEM certificate from {}: {e:?}",
            args.cert.display()
        )
    })?;
    let checked = receipt::from_json(&text)
        .and_then(|r| receipt::verify(&r, &cert).map(|version| (r, version)));
    match checked {
        Ok((r, version)) => {
            let signer = mishare::tls::dns_names(&cert)
                .map(|names| names.join(", "))
                .unwrap_or_default();
            let received = chrono::DateTime::from_timestamp_millis(r.received_unix_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| r.received_unix_ms.to_string());
            let bound = match version {
                receipt::Version::V2 => format!(
                    ", sent by {} for {} (report {}, period {}, {})",
                    r.provider,
                    r.la_code,
                    r.report,
                    r.period,
                    mishare::wire::v1::Classification::try_from(r.classification).map_or_else(
                        |_| format!("classification {}", r.classification),
                        |c| c.as_str_name().to_ascii_lowercase()
                    ),
                ),
                receipt::Version::V1 => String::new(),
            };
            println!(
                "receipt valid: transfer {} stored as {}, {} bytes, sha256 {}, received {}{bound}, \
                 signed by {} ({})",
                r.transfer_id,
                r.stored_as,
                r.size,
                mishare::common::encoding::hex(&r.sha256),
                received,
                if signer.is_empty() {
                    "the certificate's key"
                } else {
                    &signer
                },
                receipt::scheme_name(&r).unwrap_or_default(),
            );
            if version == receipt::Version::V1 {
                println!(
                    "note: a version 1 receipt, signed before receipts named the provider, LA, \
                     report, period and classification; it proves none of them"
                );
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("receipt invalid: {e}");
            Ok(status::FAILURE)
        }
    }
}

/// `receipt export`: a stored receipt, signature and all, from the
/// provider's state.
fn export_receipt(args: &ExportArgs, global: &Global) -> Outcome {
    let config = mishare::config::ProviderConfig::load(&global.config)?;
    let store = mishare::provider::store::Store::open(&config.data_dir)?;
    let id = args
        .transfer_id
        .strip_suffix(".age")
        .map_or(args.transfer_id.as_str(), |name| {
            name.rsplit_once('_').map_or(name, |(_, id)| id)
        });
    match store.wire_receipt(id)? {
        Some(r) => {
            println!("{}", receipt::to_json(&r));
            Ok(0)
        }
        None => {
            eprintln!(
                "error: no receipt is stored for transfer {id:?}; send-now prints each \
                 delivered file's name, which ends with its transfer id"
            );
            Ok(status::FAILURE)
        }
    }
}
