//! `mishare sanitise`: the sanitiser on one file, as SANITISER.md's
//! command-line contract describes it.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use clap::ValueEnum;
use mishare::config::ProviderConfig;
use mishare::reference::{LaReference, PaymentGroups, is_la_code};
use mishare::sanitiser::{
    self, Blocked, Classification, InputError, Measure, PeriodGrain, Recipient, Sanitised,
    TableSpec, View, render,
};

use super::{Outcome, status};

#[derive(Debug, clap::Args)]
#[command(
    group = clap::ArgGroup::new("input").required(true).args(["counts", "records"]),
    after_help = "Exit status: 0 on success (warnings allowed), 65 when the input is blocked \
                  (one `error[CODE]: …` line per reason on standard error, nothing on standard \
                  output), 64 for a wrong command line, 66 when an input cannot be read."
)]
pub(crate) struct SanitiseArgs {
    /// A long counts CSV: a header, the table's dimension columns and a
    /// `count` column, one row per cell.
    #[arg(long, value_name = "FILE")]
    counts: Option<PathBuf>,

    /// Participant records, one row per journey (participant_id, la_code,
    /// payment_group, disability and the five stage dates), counted in one
    /// streaming pass.
    #[arg(long, value_name = "FILE")]
    records: Option<PathBuf>,

    /// What to count. Job outcomes and sustainments may only be shown as
    /// shares.
    #[arg(long, value_enum)]
    measure: Measure,

    /// Rounded volumes with totals, or whole column percentages.
    #[arg(long, value_enum, default_value_t = View::Counts)]
    view: View,

    /// The row dimension: a column of the input, or `period`.
    #[arg(long, value_name = "DIM")]
    rows: String,

    /// The column dimension. Without it the table has one column, `All`.
    #[arg(long, value_name = "DIM")]
    cols: Option<String>,

    /// Keep only rows where DIM equals VALUE. Repeat to narrow further.
    #[arg(long = "where", value_name = "DIM=VALUE", value_parser = parse_filter)]
    filters: Vec<(String, String)>,

    /// The grain of the `period` dimension of participant records
    /// [default: month].
    #[arg(long, value_enum)]
    period: Option<PeriodGrain>,

    /// Published (public domain) or internal MI for one LA. Without it the
    /// file is labelled internal and W_UNCLASSIFIED is reported.
    #[arg(long, value_enum)]
    classification: Option<Classification>,

    /// The LA this file is for; its name goes on the label, from --las or
    /// else from the reference data of the provider configuration.
    #[arg(long, value_name = "CODE")]
    recipient: Option<String>,

    /// What to print: the CSV an LA receives, or the table and its findings
    /// as one JSON object.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,

    /// Treat warnings as errors: the table is blocked if any is found.
    #[arg(long)]
    strict: bool,

    /// LA reference data (`la_code,la_name,cpa`) to name a --recipient on
    /// the label [default: the `reference` of --config, if that file exists].
    #[arg(long, value_name = "FILE")]
    las: Option<PathBuf>,

    /// Payment groups in reference order (a CSV with the header
    /// `payment_group`), instead of the built-in nine.
    #[arg(long, value_name = "FILE")]
    payment_groups: Option<PathBuf>,

    /// The smallest rounded column base for which shares are shown.
    #[arg(long, value_name = "N", default_value_t = sanitiser::DEFAULT_MIN_SHARE_BASE)]
    min_share_base: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Csv,
    Json,
}

fn parse_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((dim, value)) if !dim.is_empty() => Ok((dim.to_string(), value.to_string())),
        _ => Err(format!("expected DIM=VALUE, got {s:?}")),
    }
}

pub(crate) fn run(args: &SanitiseArgs, global: &super::Global) -> Outcome {
    if args.counts.is_some() && args.period.is_some() {
        to_stderr!(
            "error: --period applies to --records only; a counts file's own period column is \
             used as it is"
        );
        return Ok(status::USAGE);
    }
    let groups = match &args.payment_groups {
        Some(path) => PaymentGroups::load(path)?,
        None => PaymentGroups::default(),
    };
    let recipient = match &args.recipient {
        Some(code) => {
            let las = match &args.las {
                Some(path) => LaReference::load(path)?,
                None if global.config.exists() => ProviderConfig::load(&global.config)?.reference,
                None => {
                    to_stderr!(
                        "error: --recipient {code} needs LA reference data to name the LA on the \
                         label: pass --las FILE (la_code,la_name,cpa), or run where \
                         provider.toml is (or name it with --config)"
                    );
                    return Ok(status::USAGE);
                }
            };
            match recipient(code, &las) {
                Ok(r) => Some(r),
                Err(message) => {
                    to_stderr!("error: {message}");
                    return Ok(status::USAGE);
                }
            }
        }
        None => None,
    };
    let spec = TableSpec {
        view: args.view,
        cols: args.cols.clone(),
        filters: args.filters.clone(),
        period: args.period.unwrap_or_default(),
        classification: args.classification,
        recipient,
        strict: args.strict,
        min_share_base: args.min_share_base,
        ..TableSpec::new(args.measure, args.rows.clone())
    };

    if let Err(blocked) = sanitiser::check_spec(&spec) {
        return Ok(blocked_status(&blocked));
    }
    let (path, records) = match (&args.counts, &args.records) {
        (Some(p), _) => (p, false),
        (None, Some(p)) => (p, true),
        (None, None) => unreachable!("clap requires one of --counts and --records"),
    };
    let source = path.display().to_string();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            to_stderr!("error: cannot open {source}: {e}");
            return Ok(status::NO_INPUT);
        }
    };
    let read = if records {
        sanitiser::read_records(file, &source, &spec, &groups)
    } else {
        sanitiser::read_counts(io::BufReader::new(file), &source, &spec, &groups)
    };
    let table = match read {
        Ok(t) => t,
        Err(InputError::Blocked(blocked)) => return Ok(blocked_status(&blocked)),
        Err(e) => {
            to_stderr!("error: {e}");
            return Ok(status::NO_INPUT);
        }
    };
    let sanitised = match sanitiser::sanitise(&spec, &table) {
        Ok(s) => s,
        Err(blocked) => return Ok(blocked_status(&blocked)),
    };
    print(&sanitised, args.format)
}

/// Looks the recipient up in the LA reference data.
fn recipient(code: &str, las: &LaReference) -> Result<Recipient, String> {
    if !is_la_code(code) {
        return Err(format!(
            "--recipient {code:?} is not an LA code (1 to 16 ASCII letters and digits)"
        ));
    }
    match las.get(code) {
        Some(la) => Ok(Recipient {
            code: la.code.clone(),
            name: la.name.clone(),
        }),
        None => Err(format!(
            "--recipient {code} is not in the LA reference data; check the code"
        )),
    }
}

/// Prints a block's errors and gives the exit status for it.
fn blocked_status(blocked: &Blocked) -> u8 {
    to_stderr!("{blocked}");
    status::DATA_ERR
}

fn print(table: &Sanitised, format: Format) -> Outcome {
    let out = match format {
        Format::Csv => {
            // Findings are for the operator, never part of the file (R13).
            for finding in table.findings() {
                to_stderr!("{finding}");
            }
            render::csv(table)
        }
        Format::Json => render::json(table).into_bytes(),
    };
    super::write_stdout(&out)
}
