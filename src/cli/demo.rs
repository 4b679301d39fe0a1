//! `mishare demo`: the whole job on an embedded default, in a temporary
//! directory, so a newcomer sees what mishare does with one command.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{Days, NaiveDate};
use mishare::reference::{LaReference, PaymentGroups};
use mishare::sanitiser::{
    self, Classification, InputError, Measure, PeriodGrain, Recipient, TableSpec, View, render,
};

use super::Outcome;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Keep the demo's files in DIR (created if missing) instead of a
    /// temporary directory that is removed at the end.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// How many synthetic participant records to make.
    #[arg(long, value_name = "N", default_value_t = 40_000)]
    participants: u32,
}

/// The demo's local authorities: two in the provider's contract package
/// areas, one outside them.
const LAS: &str = "la_code,la_name,cpa
E09000002,Barking and Dagenham,London East
E09000030,Tower Hamlets,London East
E09000009,Ealing,London West
E08000025,Birmingham,West Midlands Birmingham Solihull & Black Country
";

const HEADER: &str = "participant_id,la_code,payment_group,disability,referral_date,\
                      attachment_date,job_start_date,job_outcome_date,first_sustainment_date\n";

pub(crate) fn run(args: &DemoArgs) -> Outcome {
    let temp;
    let dir: &Path = match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir
        }
        None => {
            temp = tempfile::tempdir().context("cannot make a temporary directory")?;
            temp.path()
        }
    };
    let las_path = dir.join("las.csv");
    let records_path = dir.join("participants.csv");
    std::fs::write(&las_path, LAS)
        .with_context(|| format!("cannot write {}", las_path.display()))?;
    std::fs::write(&records_path, synthetic_records(args.participants))
        .with_context(|| format!("cannot write {}", records_path.display()))?;
    let las = LaReference::load(&las_path)?;
    let groups = PaymentGroups::default();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "mishare demo: {} synthetic participant records in {}\n",
        args.participants,
        dir.display()
    );

    for code in ["E09000002", "E09000030"] {
        let la = las
            .get(code)
            .context("the demo's LA is in its reference data")?;
        let spec = TableSpec {
            cols: Some("period".into()),
            period: PeriodGrain::Quarter,
            filters: vec![("la_code".into(), code.into())],
            classification: Some(Classification::Internal),
            recipient: Some(Recipient {
                code: la.code.clone(),
                name: la.name.clone(),
            }),
            ..TableSpec::new(Measure::Referrals, "payment_group")
        };
        show(
            &mut out,
            &format!(
                "Referrals by quarter for {} ({}), as the LA would receive them:",
                la.name, la.code
            ),
            &spec,
            &records_path,
            &groups,
        )?;
    }

    let shares = TableSpec {
        view: View::Shares,
        filters: vec![("la_code".into(), "E09000002".into())],
        classification: Some(Classification::Published),
        ..TableSpec::new(Measure::JobOutcomes, "disability")
    };
    show(
        &mut out,
        "Job outcomes for E09000002 may only leave as shares (here by disability):",
        &shares,
        &records_path,
        &groups,
    )?;

    let volumes = TableSpec::new(Measure::JobOutcomes, "payment_group");
    show(
        &mut out,
        "And a request for job outcome volumes is refused:",
        &volumes,
        &records_path,
        &groups,
    )?;

    let records = match &args.out {
        Some(_) => records_path.display().to_string(),
        None => "DIR/participants.csv".to_string(),
    };
    let _ = writeln!(
        out,
        "Try it yourself{}:\n  mishare sanitise --records {records} --measure job_starts \
         --rows payment_group --cols period --period quarter --where la_code=E09000009 --format json",
        if args.out.is_none() {
            " (after `mishare demo --out DIR`, which keeps the files)"
        } else {
            ""
        },
    );
    super::write_stdout(out.as_bytes())
}

/// Runs one table through the sanitiser and prints what would leave, or why
/// nothing would.
fn show(
    out: &mut String,
    title: &str,
    spec: &TableSpec,
    records: &Path,
    groups: &PaymentGroups,
) -> anyhow::Result<()> {
    let _ = writeln!(out, "── {title}");
    let source = records.display().to_string();
    let file = std::fs::File::open(records).with_context(|| format!("cannot open {source}"))?;
    let result = sanitiser::read_records(file, &source, spec, groups)
        .and_then(|table| Ok(sanitiser::sanitise(spec, &table)?));
    match result {
        Ok(table) => {
            out.push_str(&String::from_utf8_lossy(&render::csv(&table)));
            for finding in table.findings() {
                let _ = writeln!(out, "   (for the provider only) {finding}");
            }
        }
        Err(InputError::Blocked(blocked)) => {
            let _ = writeln!(out, "{blocked}\n   nothing leaves.");
        }
        Err(e) => return Err(e.into()),
    }
    out.push('\n');
    Ok(())
}

/// Deterministic synthetic participant records (a linear congruential
/// generator; no randomness, so the demo prints the same every time).
fn synthetic_records(n: u32) -> String {
    const CODES: [&str; 4] = ["E09000002", "E09000030", "E09000009", "E08000025"];
    // (payment group, weight in thousandths, chance of disability in %)
    const GROUPS: [(&str, u64, u64); 9] = [
        ("JSA 18-24", 200, 10),
        ("JSA 25+", 480, 14),
        ("JSA Early Access", 90, 18),
        ("JSA Ex-IB", 20, 45),
        ("ESA Volunteers", 30, 80),
        ("New ESA Claimants", 100, 85),
        ("ESA Ex-IB", 40, 88),
        ("IB/IS", 20, 60),
        ("JSA Prison Leavers", 20, 12),
    ];
    let mut state: u64 = 0x5eed_2012;
    let mut next = |below: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % below
    };
    let start = NaiveDate::from_ymd_opt(2012, 1, 1).expect("a real date");
    let mut out = String::with_capacity(n as usize * 96);
    out.push_str(HEADER);
    for id in 0..n {
        let la = CODES[next(CODES.len() as u64) as usize];
        let mut pick = next(1000);
        let (group, _, disabled_pct) = *GROUPS
            .iter()
            .find(|(_, w, _)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .unwrap_or(&GROUPS[1]);
        let disability = if next(100) < disabled_pct { "Y" } else { "N" };
        let referral = start + Days::new(next(730));
        let mut dates = [Some(referral), None, None, None, None];
        if next(100) < 95 {
            dates[1] = Some(referral + Days::new(3 + next(25)));
            if next(100) < 32 {
                dates[2] = dates[1].map(|d| d + Days::new(20 + next(300)));
                if next(100) < 60 {
                    dates[3] = dates[2].map(|d| d + Days::new(91 + next(90)));
                    if next(100) < 80 {
                        dates[4] = dates[3].map(|d| d + Days::new(28));
                    }
                }
            }
        }
        let _ = write!(out, "P{id:09},{la},{group},{disability}");
        for date in dates {
            out.push(',');
            if let Some(d) = date {
                let _ = write!(out, "{}", d.format("%Y-%m-%d"));
            }
        }
        out.push('\n');
    }
    out
}
