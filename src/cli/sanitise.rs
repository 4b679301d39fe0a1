//! `mishare sanitise`: the sanitiser on one file, as SANITISER.md's
//! command-line contract describes it.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use clap::ValueEnum;
use mishare::common::names::is_la_code;
use mishare::config::ProviderConfig;
use mishare::reference::{Dimensions, LaReference, PaymentGroups, ReferenceError};
use mishare::sanitiser::{
    self, Blocked, Catalogue, Classification, Code, InputError, LA_CODE, Measure, PeriodGrain,
    PeriodRange, Recipient, Sanitised, TableSpec, View, render,
};

use super::{Outcome, status};

#[derive(Debug, clap::Args)]
#[command(
    group = clap::ArgGroup::new("input").required(true).args(["counts", "records"]),
    after_help = "Rows, columns and filters may use only declared dimensions: period, la_code \
                  (from the LA reference data), payment_group and the characteristics (built \
                  in: disability Y/N; more with --dimensions FILE). Every declared category is \
                  laid out, in reference order, whether or not anyone falls in it.\n\n\
                  Exit status: 0 on success (warnings allowed), 65 when the input or the \
                  request is blocked (one `error[CODE]: …` line per reason on standard error, \
                  nothing on standard output), 64 for a wrong command line (including a \
                  missing or too long --periods: error[E_PERIOD_RANGE]), 66 when an input \
                  cannot be read, 78 when a reference data file is wrong."
)]
pub(crate) struct SanitiseArgs {
    /// A long counts CSV: a header, the columns of the dimensions the table
    /// uses and a `count` column, one row per cell.
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

    /// The row dimension: period, la_code, payment_group or a declared
    /// characteristic such as disability.
    #[arg(long, value_name = "DIM")]
    rows: String,

    /// The column dimension. Without it the table has one column, `All`.
    #[arg(long, value_name = "DIM")]
    cols: Option<String>,

    /// Keep only input where dimension DIM has category VALUE. Repeat to
    /// narrow further.
    #[arg(long = "where", value_name = "DIM=VALUE", value_parser = parse_filter)]
    filters: Vec<(String, String)>,

    /// The grain of the `period` dimension: derived from the measure's date
    /// in records, the `period` column's labels in counts [default: the
    /// grain of --periods, else month].
    #[arg(long, value_enum)]
    period: Option<PeriodGrain>,

    /// The periods the table covers, FROM..TO (2012-07..2012-09,
    /// 2012-Q1..2012-Q4) or one PERIOD; needed when `period` is the rows or
    /// columns; at most 120 months or 40 quarters. Without it every period
    /// in the input is counted.
    #[arg(long, value_name = "FROM..TO")]
    periods: Option<String>,

    /// Published (public domain) or internal MI for one LA. Without it the
    /// file is labelled internal and W_UNCLASSIFIED is reported.
    #[arg(long, value_enum)]
    classification: Option<Classification>,

    /// The LA this file is for: its name goes on the label, and an internal
    /// file counts only its participants (la_code). Its name comes from
    /// --las or else from the reference data of the provider configuration.
    #[arg(long, value_name = "CODE")]
    recipient: Option<String>,

    /// What to print: the CSV an LA receives, or the table and its findings
    /// as one JSON object.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,

    /// Treat warnings as errors: the table is blocked if any is found.
    #[arg(long)]
    strict: bool,

    /// LA reference data (`la_code,la_name,cpa`): the categories of
    /// `la_code`, in file order, and the name of a --recipient [default:
    /// the `reference` of --config, if that file exists].
    #[arg(long, value_name = "FILE")]
    las: Option<PathBuf>,

    /// The declared dimensions: a CSV `dimension,category,label`, one row
    /// per category in reference order, declaring payment_group and any
    /// characteristics [default: the nine payment groups and disability].
    #[arg(long, value_name = "FILE")]
    dimensions: Option<PathBuf>,

    /// Payment groups in reference order (a CSV with the header
    /// `payment_group`), replacing those of the declared dimensions.
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
    let periods = match args.periods.as_deref().map(str::parse::<PeriodRange>) {
        None => None,
        Some(Ok(range)) => Some(range),
        Some(Err(e)) => {
            to_stderr!(
                "error: --periods: {e}; give FROM..TO (for example 2012-07..2012-09 or \
                 2012-Q1..2012-Q4) or one PERIOD"
            );
            return Ok(status::USAGE);
        }
    };
    let mut dimensions = match &args.dimensions {
        Some(path) => match reference(Dimensions::load(path)) {
            Ok(d) => d,
            Err(code) => return Ok(code),
        },
        None => Dimensions::default(),
    };
    if let Some(path) = &args.payment_groups {
        match reference(PaymentGroups::load(path)) {
            Ok(groups) => dimensions = dimensions.with_payment_groups(&groups),
            Err(code) => return Ok(code),
        }
    }
    let uses_las = std::iter::once(args.rows.as_str())
        .chain(args.cols.as_deref())
        .chain(args.filters.iter().map(|(d, _)| d.as_str()))
        .any(|d| d == LA_CODE);
    let las = match &args.las {
        Some(path) => match reference(LaReference::load(path)) {
            Ok(las) => las,
            Err(code) => return Ok(code),
        },
        None if (uses_las || args.recipient.is_some()) && global.config.exists() => {
            ProviderConfig::load(&global.config)?.reference
        }
        None => LaReference::default(),
    };
    let needs = "pass --las FILE (la_code,la_name,cpa), or run where provider.toml is (or name \
                 it with --config)";
    let recipient = match &args.recipient {
        Some(code) if las.is_empty() => {
            to_stderr!(
                "error: --recipient {code} needs LA reference data to name the LA on the \
                 label: {needs}"
            );
            return Ok(status::USAGE);
        }
        Some(code) => match recipient(code, &las) {
            Ok(r) => Some(r),
            Err(message) => {
                to_stderr!("error: {message}");
                return Ok(status::USAGE);
            }
        },
        None => None,
    };
    if uses_las && las.is_empty() {
        to_stderr!(
            "error: `{LA_CODE}` needs LA reference data, whose codes (in file order) are its \
             categories: {needs}"
        );
        return Ok(status::USAGE);
    }
    let spec = TableSpec {
        view: args.view,
        cols: args.cols.clone(),
        filters: args.filters.clone(),
        period: args
            .period
            .or(periods.map(|r| r.grain()))
            .unwrap_or_default(),
        periods,
        classification: args.classification,
        recipient,
        strict: args.strict,
        min_share_base: args.min_share_base,
        ..TableSpec::new(args.measure, args.rows.clone())
    };
    let catalogue = Catalogue::new(dimensions, las);

    if let Err(errors) = sanitiser::check_spec(&spec, &catalogue) {
        // A missing, too long or mismatched --periods is a mistake in the
        // command line, not a refused table.
        let usage = errors.0.iter().all(|e| e.code == Code::PeriodRange);
        let code = blocked_status(&errors.into());
        return Ok(if usage { status::USAGE } else { code });
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
        sanitiser::read_records(file, &source, &spec, &catalogue)
    } else {
        sanitiser::read_counts(io::BufReader::new(file), &source, &spec, &catalogue)
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

/// Reference data, or the exit status for why it cannot be used: 66 if it
/// cannot be read, 78 if it is wrong (the message names the file and line).
fn reference<T>(loaded: Result<T, ReferenceError>) -> Result<T, u8> {
    loaded.map_err(|e| {
        to_stderr!("error: {e}");
        match e {
            ReferenceError::Io { .. } => status::NO_INPUT,
            _ => status::CONFIG,
        }
    })
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
