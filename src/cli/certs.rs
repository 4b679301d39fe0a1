//! `mishare certs dev`: a development PKI.

use std::path::PathBuf;

use mishare::certs::write_dev_pki;
use mishare::common::names::is_la_code;

use super::{Outcome, status};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum CertsCommand {
    /// Write a development PKI: a CA, the provider's client certificate, a
    /// DWP client certificate and one server certificate per LA. NEVER for
    /// production: use your organisation's PKI there.
    Dev(DevArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// The directory to write into (created if missing; an existing PKI in
    /// it is never overwritten).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// An LA to make a server certificate for (its name is la-<code>.test).
    /// Repeat for each LA.
    #[arg(long = "la", value_name = "CODE", required = true)]
    las: Vec<String>,

    /// The DNS name in the provider's client certificate.
    #[arg(long, value_name = "NAME", default_value = "provider.test")]
    provider: String,

    /// The DNS name in the DWP client certificate.
    #[arg(long, value_name = "NAME", default_value = "dwp.test")]
    dwp: String,
}

pub(crate) fn run(command: &CertsCommand) -> Outcome {
    let CertsCommand::Dev(args) = command;
    if let Some(bad) = args.las.iter().find(|c| !is_la_code(c)) {
        eprintln!("error: --la {bad:?} is not an LA code (1 to 16 ASCII letters and digits)");
        return Ok(status::USAGE);
    }
    let pki = write_dev_pki(&args.out, &args.provider, &args.dwp, &args.las)?;
    println!(
        "development PKI written to {} (NOT for production)",
        args.out.display()
    );
    println!("  CA (trust anchor on both sides): {}", pki.ca.display());
    println!(
        "  provider {}: {} {}",
        args.provider,
        pki.provider.0.display(),
        pki.provider.1.display()
    );
    println!(
        "  DWP {}: {} {}",
        args.dwp,
        pki.dwp.0.display(),
        pki.dwp.1.display()
    );
    for (code, name, cert, key) in &pki.las {
        println!(
            "  LA {code} as {name}: {} {}",
            cert.display(),
            key.display()
        );
    }
    Ok(0)
}
