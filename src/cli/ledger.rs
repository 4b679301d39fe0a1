//! The release ledger's commands: `known add|list|remove` (figures an LA
//! knows from elsewhere) and `ledger list|show|audit` (what each LA has
//! received, and what it could work out from it). They act on the same
//! database a running daemon reads; the next run's audit sees a known
//! figure at once.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use chrono::Utc;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde_json::json;

use super::{Global, Outcome, actor, fail, status};
use mishare::common::names::is_la_code;
use mishare::common::time::timestamp;
use mishare::config::ProviderConfig;
use mishare::provider::ledger::{self, AuditPolicy, Known, KnownPeriod, KnownValue, Released};
use mishare::provider::store::{ReleaseRow, Store, StoreError};
use mishare::reference::{LA_CODE, PERIOD};
use mishare::sanitiser::{Measure, Severity};

#[derive(Debug, Subcommand)]
pub(crate) enum KnownCommand {
    /// Register a figure an LA knows from elsewhere (DWP's official
    /// statistics, the referrals it made itself), so the ledger audit counts
    /// it: the true count of MEASURE in PERIOD for the LA's participants in
    /// the --where categories (all categories of any dimension not named).
    /// Prints its id; audited.
    Add(KnownAddArgs),
    /// Known figures, current and removed.
    List(KnownListArgs),
    /// Remove a known figure: the audit no longer counts it. It is kept,
    /// marked removed, with the reason; audited.
    Remove(KnownRemoveArgs),
}

#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("figure").required(true).args(["value", "range"])),
    after_help = "Examples:\n  \
        mishare known add --la E09000002 --measure referrals --period 2012-Q3 --value 30 \
        --source \"DWP stat-xplore, Work Programme referrals\"\n  \
        mishare known add --la E09000002 --measure referrals --period 2012-09 \
        --where disability=Y --range 8..12 --source \"the LA's own referrals\"\n\n\
        Exit status: 0 when the figure is registered; 65 when it is refused (an unknown LA, \
        dimension or category, a bad period or range), with the reason."
)]
pub(crate) struct KnownAddArgs {
    /// The LA that knows the figure, for its own area (a code in the
    /// reference data, for example E09000002).
    #[arg(long, value_name = "CODE")]
    la: String,
    /// The measure the figure counts.
    #[arg(long, value_enum, value_name = "MEASURE")]
    measure: Measure,
    /// A month (2012-09), a quarter (2012-Q3) or a calendar year (2012).
    #[arg(long, value_name = "PERIOD")]
    period: String,
    /// Only these participants: a declared dimension and one of its
    /// categories (payment_group="JSA 25+", disability=Y); repeat for more.
    #[arg(long = "where", value_name = "DIM=VALUE")]
    wheres: Vec<String>,
    /// The figure exactly.
    #[arg(long, value_name = "N")]
    value: Option<u64>,
    /// The figure lies between LO and HI, both included.
    #[arg(long, value_name = "LO..HI")]
    range: Option<String>,
    /// Where the LA has it from, for the record.
    #[arg(long, value_name = "TEXT")]
    source: String,
}

#[derive(Debug, Args)]
pub(crate) struct KnownListArgs {
    /// Only this LA's.
    #[arg(long, value_name = "CODE")]
    la: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct KnownRemoveArgs {
    /// The known figure's id, as `mishare known list` shows it.
    #[arg(value_name = "ID")]
    id: i64,
    /// Why; recorded with it and in the audit log.
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LedgerCommand {
    /// Every release recorded: what went to each LA, when spooled and
    /// delivered.
    List(LedgerListArgs),
    /// One release: its table as the LA received it (rounded figures, in
    /// category codes) and where it came from.
    Show(LedgerShowArgs),
    /// What an LA could work out from everything it has received and the
    /// figures it knows: the exact interval of true values of every figure
    /// sent, and the findings (E_UNPICKABLE, W_NARROWED, …).
    Audit(LedgerAuditArgs),
}

#[derive(Debug, Args)]
pub(crate) struct LedgerListArgs {
    /// Only releases to this LA.
    #[arg(long, value_name = "CODE")]
    la: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct LedgerShowArgs {
    /// The release's id, as `mishare ledger list` shows it.
    #[arg(value_name = "RELEASE_ID")]
    id: i64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
#[command(after_help = "With --format json, prints one object:\n  \
    {\"la\": CODE, \"releases\": N, \"known\": N,\n   \
    \"figures\": [{\"release\": ID, \"measure\": M, \"period\": P, \"categories\": {DIM: CODE}, \
    \"sent\": N, \"lo\": N, \"hi\": N}],\n   \
    \"findings\": [{\"code\": CODE, \"message\": TEXT}]}\n\
    `lo` and `hi` are the exact integer interval of the figure's true value.\n\n\
    Exit status: 0 when the audit ran (whatever it found); 1 when the ledger does not \
    verify against the audit chain (nothing is printed then: an audit over it could not be \
    trusted).")]
pub(crate) struct LedgerAuditArgs {
    /// The LA whose ledger is audited.
    #[arg(long, value_name = "CODE")]
    la: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// For people.
    Text,
    /// One JSON document.
    Json,
}

/// A refusal to print, and the status to end with.
struct Refused(u8, anyhow::Error);

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused(status::FAILURE, e.into())
    }
}

impl From<anyhow::Error> for Refused {
    fn from(e: anyhow::Error) -> Self {
        Refused(status::FAILURE, e)
    }
}

type Done = Result<u8, Refused>;

fn finish(done: Done) -> Outcome {
    Ok(done.unwrap_or_else(|Refused(code, e)| fail(code, &e)))
}

fn open(global: &Global) -> Result<(ProviderConfig, Store), Refused> {
    let config =
        ProviderConfig::load(&global.config).map_err(|e| Refused(status::CONFIG, e.into()))?;
    let store = Store::open(&config.data_dir)?;
    Ok((config, store))
}

/// The LA an operator means, as `mishare suspend` reads it: its code in
/// the reference data, case aside; anything else refused.
fn resolve_la(config: &ProviderConfig, given: &str, flag: &str) -> Result<String, Refused> {
    config
        .reference
        .resolve(given)
        .filter(|_| is_la_code(given.trim()))
        .map(|la| la.code.clone())
        .ok_or_else(|| {
            Refused(
                status::DATA_ERR,
                anyhow!(
                    "{flag} {given:?} is not an LA in the reference data {}; check the code \
                     (`mishare status` lists the configured LAs)",
                    config.reference_path.display()
                ),
            )
        })
}

pub(crate) fn known(command: KnownCommand, global: &Global) -> Outcome {
    finish(match command {
        KnownCommand::Add(args) => known_add(&args, global),
        KnownCommand::List(args) => known_list(&args, global),
        KnownCommand::Remove(args) => known_remove(&args, global),
    })
}

pub(crate) fn ledger(command: LedgerCommand, global: &Global) -> Outcome {
    finish(match command {
        LedgerCommand::List(args) => ledger_list(&args, global),
        LedgerCommand::Show(args) => ledger_show(&args, global),
        LedgerCommand::Audit(args) => ledger_audit(&args, global),
    })
}

/// `DIM=VALUE` as a declared dimension and one of its category codes (a
/// category's label is taken for its code).
fn category(config: &ProviderConfig, given: &str) -> Result<(String, String), Refused> {
    let refuse = |why: String| Refused(status::DATA_ERR, anyhow!("--where {given:?}: {why}"));
    let Some((dimension, value)) = given.split_once('=') else {
        return Err(refuse(
            "write DIM=VALUE, for example disability=Y".to_string(),
        ));
    };
    let (dimension, value) = (dimension.trim(), value.trim());
    let dimensions = config.catalogue.dimensions();
    let declared = || {
        dimensions
            .iter()
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if dimension == LA_CODE {
        return Err(refuse("the LA is given with --la".to_string()));
    }
    if dimension == PERIOD {
        return Err(refuse("the period is given with --period".to_string()));
    }
    let Some(d) = dimensions.get(dimension) else {
        return Err(refuse(format!(
            "`{dimension}` is not a declared dimension; a known figure can name {}",
            declared()
        )));
    };
    let code = d
        .categories()
        .iter()
        .find(|c| c.code == value)
        .or_else(|| d.categories().iter().find(|c| c.label == value))
        .map(|c| c.code.clone());
    match code {
        Some(code) => Ok((dimension.to_string(), code)),
        None => Err(refuse(format!(
            "{value:?} is not a declared category of `{dimension}` ({})",
            d.categories()
                .iter()
                .map(|c| c.code.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn known_add(args: &KnownAddArgs, global: &Global) -> Done {
    let (config, mut store) = open(global)?;
    let la = resolve_la(&config, &args.la, "--la")?;
    let data_err = |e: anyhow::Error| Refused(status::DATA_ERR, e);
    let period: KnownPeriod = args
        .period
        .parse()
        .map_err(|e: String| data_err(anyhow!("--period: {e}")))?;
    let value = match (args.value, &args.range) {
        (Some(v), None) => KnownValue::Exact(v),
        (None, Some(range)) => {
            let parsed = range
                .split_once("..")
                .and_then(|(lo, hi)| Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?)));
            match parsed {
                Some((lo, hi)) => KnownValue::Range(lo, hi),
                None => {
                    return Err(data_err(anyhow!(
                        "--range {range:?} is not LO..HI with whole numbers, for example 8..12"
                    )));
                }
            }
        }
        // clap's group allows exactly one.
        _ => {
            return Err(Refused(
                status::USAGE,
                anyhow!("give the figure with exactly one of --value N or --range LO..HI"),
            ));
        }
    };
    let mut fixed = vec![(LA_CODE.to_string(), la.clone())];
    for given in &args.wheres {
        let (dimension, code) = category(&config, given)?;
        if fixed.iter().any(|(d, _)| *d == dimension) {
            return Err(data_err(anyhow!(
                "--where names `{dimension}` twice; a figure has one category per dimension"
            )));
        }
        fixed.push((dimension, code));
    }
    let known = Known::new(
        &config.catalogue,
        0,
        args.measure,
        period,
        fixed,
        value,
        args.source.trim(),
    )
    .map_err(|e| data_err(e.into()))?;
    let row = store.add_known(&known, &actor(), Utc::now())?;
    println!(
        "known figure {} for {la}: {} {} {}: {} (source: {}); the next audit for {la} counts it",
        row.known.id,
        known.measure,
        known.period,
        categories_text(&row.known.fixed, &la),
        known.value,
        known.source
    );
    Ok(0)
}

/// The categories a figure fixes, but the LA's own code: `disability=Y`,
/// or `all` when it fixes none.
fn categories_text(fixed: &[(String, String)], la: &str) -> String {
    let parts: Vec<String> = fixed
        .iter()
        .filter(|(d, c)| !(d == LA_CODE && c == la))
        .map(|(d, c)| format!("{d}={c}"))
        .collect();
    if parts.is_empty() {
        "all".to_string()
    } else {
        parts.join(", ")
    }
}

fn known_list(args: &KnownListArgs, global: &Global) -> Done {
    let (config, store) = open(global)?;
    let la = args
        .la
        .as_deref()
        .map(|la| resolve_la(&config, la, "--la"))
        .transpose()?;
    let rows = store.known_figures(la.as_deref(), true)?;
    match args.format {
        Format::Json => {
            let items: Vec<_> = rows.iter().map(|k| k.to_json()).collect();
            println!("{}", serde_json::to_string_pretty(&items).context("JSON")?);
        }
        Format::Text if rows.is_empty() => {
            println!("no known figures; register one with `mishare known add`");
        }
        Format::Text => {
            for k in &rows {
                let removed = match &k.removed {
                    Some((at, by, reason)) => {
                        format!(" — removed {} by {by}: {reason}", timestamp(*at))
                    }
                    None => String::new(),
                };
                println!(
                    "{:<5} {:<10} {} {} {}: {} (source: {}; added {} by {}){removed}",
                    k.known.id,
                    k.la,
                    k.known.measure,
                    k.known.period,
                    categories_text(&k.known.fixed, &k.la),
                    k.known.value,
                    k.known.source,
                    timestamp(k.added_at),
                    k.added_by,
                );
            }
        }
    }
    Ok(0)
}

fn known_remove(args: &KnownRemoveArgs, global: &Global) -> Done {
    let (_config, mut store) = open(global)?;
    let row = store.remove_known(args.id, &args.reason, &actor(), Utc::now())?;
    println!(
        "known figure {} for {} removed; the next audit for {} no longer counts it",
        row.known.id, row.la, row.la
    );
    Ok(0)
}

fn list_line(r: &ReleaseRow) -> String {
    format!(
        "{:<5} {:<10} {} run {} {} {} {} by {} ({}{}) spooled {} delivered {}",
        r.id,
        r.la,
        r.report,
        r.run_id,
        r.table.measure,
        r.table.view.as_str(),
        r.table.range,
        r.dimensions(),
        r.classification.as_str(),
        if r.table.fixed.iter().any(|(d, _)| d != LA_CODE) {
            format!("; {}", categories_text(&r.table.fixed, &r.la))
        } else {
            String::new()
        },
        timestamp(r.spooled_at),
        r.delivered_at.map_or_else(|| "-".to_string(), timestamp),
    )
}

fn ledger_list(args: &LedgerListArgs, global: &Global) -> Done {
    let (config, store) = open(global)?;
    let la = args
        .la
        .as_deref()
        .map(|la| resolve_la(&config, la, "--la"))
        .transpose()?;
    let rows = store.releases(la.as_deref())?;
    match args.format {
        Format::Json => {
            let items: Vec<_> = rows
                .iter()
                .map(|r| {
                    let mut j = r.to_json();
                    if let Some(o) = j.as_object_mut() {
                        o.remove("table");
                    }
                    j
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items).context("JSON")?);
        }
        Format::Text if rows.is_empty() => println!("no releases recorded"),
        Format::Text => {
            for r in &rows {
                println!("{}", list_line(r));
            }
        }
    }
    Ok(0)
}

fn ledger_show(args: &LedgerShowArgs, global: &Global) -> Done {
    let (_config, store) = open(global)?;
    let r = store.release(args.id)?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&r.to_json()).context("JSON")?
        ),
        Format::Text => {
            println!("release {} to {}", r.id, r.la);
            println!(
                "  report:         {} (run {}, delivery {})",
                r.report, r.run_id, r.delivery_id
            );
            println!("  transfer id:    {}", r.transfer_id);
            println!(
                "  table:          {} {} {} by {}",
                r.table.measure,
                r.table.view.as_str(),
                r.table.range,
                r.dimensions()
            );
            println!("  restricted to:  {}", categories_text(&r.table.fixed, ""));
            println!("  classification: {}", r.classification.as_str());
            println!("  plaintext:      sha256 {}", r.plaintext_sha256);
            println!("  spooled:        {}", timestamp(r.spooled_at));
            println!(
                "  delivered:      {}",
                r.delivered_at.map_or_else(|| "-".to_string(), timestamp)
            );
            print!("{}", grid(&r));
        }
    }
    Ok(0)
}

/// The figures sent, as a grid of category codes (shares as the rounded
/// counts the audit takes them to reveal, then the shares).
fn grid(r: &ReleaseRow) -> String {
    let t = &r.table;
    let cols: Vec<String> = t
        .cols
        .as_ref()
        .map_or_else(|| vec!["All".to_string()], |c| c.codes.clone());
    let mut out = String::from("  figures:\n");
    let mut row = |label: &str, values: Vec<String>| {
        out.push_str(&format!("    {label:<20}"));
        for v in values {
            out.push_str(&format!(" {v:>10}"));
        }
        out.push('\n');
    };
    let head = t.rows.dimension.clone();
    match &t.figures {
        ledger::Figures::Counts {
            cells,
            row_totals,
            col_totals,
            total,
        } => {
            let mut h = cols.clone();
            h.push("Total".into());
            row(&head, h);
            for (i, code) in t.rows.codes.iter().enumerate() {
                let mut v: Vec<String> = cells[i].iter().map(u64::to_string).collect();
                v.push(row_totals[i].to_string());
                row(code, v);
            }
            let mut v: Vec<String> = col_totals.iter().map(u64::to_string).collect();
            v.push(total.to_string());
            row("Total", v);
        }
        ledger::Figures::Shares { rounded, shares } => {
            row(&format!("{head} (counts)"), cols.clone());
            for (i, code) in t.rows.codes.iter().enumerate() {
                row(code, rounded[i].iter().map(u64::to_string).collect());
            }
            row(&format!("{head} (shares)"), cols);
            for (i, code) in t.rows.codes.iter().enumerate() {
                row(
                    code,
                    shares[i]
                        .iter()
                        .map(|s| s.map_or_else(|| "[c]".to_string(), |s| format!("{s}%")))
                        .collect(),
                );
            }
        }
    }
    out
}

fn ledger_audit(args: &LedgerAuditArgs, global: &Global) -> Done {
    let (config, store) = open(global)?;
    let la = resolve_la(&config, &args.la, "--la")?;
    let check = store.verify_ledger()?;
    if let Some(why) = check.refusal(&la) {
        return Err(anyhow!("{why}").into());
    }
    let history: Vec<Released> = (store.releases(Some(&la))?.into_iter())
        .map(Released::from)
        .collect();
    let known: Vec<Known> = store
        .known_figures(Some(&la), false)?
        .into_iter()
        .map(|k| k.known)
        .collect();
    let policy = AuditPolicy::from(config.disclosure);
    let a = ledger::audit(&config.catalogue, &history, &known, None, &policy);
    let figures: Vec<serde_json::Value> = a
        .figures
        .iter()
        .map(|f| {
            let categories: BTreeMap<&String, &String> = f
                .categories
                .iter()
                .filter(|(d, c)| !(d.as_str() == LA_CODE && **c == la))
                .collect();
            json!({
                "release": f.release,
                "measure": f.measure,
                "period": f.period,
                "categories": categories,
                "sent": f.sent,
                "lo": f.lo,
                "hi": f.hi,
            })
        })
        .collect();
    match args.format {
        Format::Json => {
            let out = json!({
                "la": la,
                "releases": history.len(),
                "known": known.len(),
                "figures": figures,
                "findings": a.findings,
            });
            println!("{}", serde_json::to_string(&out).context("JSON")?);
        }
        Format::Text => {
            println!(
                "ledger audit for {la}: {} releases, {} known figures, {} figures sent",
                history.len(),
                known.len(),
                a.figures.len()
            );
            let stops = a
                .findings
                .iter()
                .filter(|f| f.code.severity() == Severity::Error)
                .count();
            for f in &a.findings {
                println!("{f}");
            }
            if a.findings.is_empty() {
                println!(
                    "no findings: no figure sent is narrower than width {}",
                    policy.min_interval_width
                );
            } else if stops > 0 {
                println!(
                    "{stops} finding(s) would withhold a file: see the README's \"The ledger audit\" \
                     for what to do"
                );
            }
            println!("--format json lists every figure with its exact interval");
        }
    }
    Ok(0)
}
