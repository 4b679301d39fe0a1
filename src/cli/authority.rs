//! `mishare authority run|audit verify` (the LA's endpoint) and
//! `mishare receipt verify` (anyone holding a receipt and the endpoint's
//! certificate).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mishare::authority;
use mishare::authority::store::{DATABASE_FILE, Store};
use mishare::common::audit::Verification;
use mishare::common::shutdown::{Shutdown, cancel_on_signals};
use mishare::config::AuthorityConfig;
use mishare::receipt;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{Global, Outcome, status};

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
        eprintln!(
            "mishare authority endpoint for {} listening on {local}",
            config.code
        );
        authority::serve(config, listener, &shutdown).await?;
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
