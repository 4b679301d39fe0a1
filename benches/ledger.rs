//! The release ledger's audit on five years of one LA's history.
//!
//! `cargo bench --bench ledger [-- OUT.json]`: 60 monthly referrals
//! releases by payment group × period (one month each), 20 quarterly ones
//! by payment group × period (one quarter each), 60 monthly ones by
//! disability, and 20 known quarterly totals; then the next month's
//! payment-group table. Prints the median wall time of the next release's
//! audit (≥ 20 runs) and of the full audit, and peak RSS. With OUT.json it
//! also writes the full audit's problem (cells, constraints, objectives)
//! and its intervals, for `benches/ledger_highs.py` to solve with HiGHS.
//!
//! `cargo bench --bench ledger -- run [LAS] [TRIALS]`: a whole run of one
//! report (referrals by payment group × month, split by LA) to LAS (default
//! 150) LAs through the real pipeline (gate, records read once, sanitise,
//! ledger verification and audit, seal, spool and record), against a
//! provider state whose every LA has the five-year history above recorded
//! through the store (with its audit entries) and 20 known figures, and
//! against a fresh state with no history, interleaved. Prints the medians,
//! their ratio, and the audit's own share (ledger verification, and the
//! per-LA audits run alone).

use std::collections::BTreeMap;
use std::time::Instant;

use mishare::common::files::write_new_private;
use mishare::provider::ledger::{
    Audit, AuditPolicy, Axis, Figures, Known, KnownValue, ReleaseTable, Released, audit,
};
use mishare::reference::{DEFAULT_PAYMENT_GROUPS, Dimensions, LaReference, LocalAuthority};
use mishare::sanitiser::{Catalogue, Measure, Period, PeriodGrain, View};

const LA: &str = "E09000002";
const DIS: [&str; 2] = ["Y", "N"];

fn r(x: u64) -> u64 {
    20 * ((x + 10) / 20)
}

/// A one-column counts table of true counts by `dimension`, restricted to
/// the LA, over one period laid out as the column.
fn table(period: Period, dimension: &str, codes: &[&str], truth: &[u64]) -> ReleaseTable {
    let cells: Vec<Vec<u64>> = truth.iter().map(|&x| vec![r(x)]).collect();
    let total: u64 = cells.iter().map(|c| c[0]).sum();
    ReleaseTable {
        measure: Measure::Referrals,
        view: View::Counts,
        range: mishare::sanitiser::PeriodRange::single(period),
        rows: Axis {
            dimension: dimension.into(),
            codes: codes.iter().map(|c| c.to_string()).collect(),
        },
        cols: Some(Axis {
            dimension: "period".into(),
            codes: vec![period.to_string()],
        }),
        fixed: vec![("la_code".into(), LA.into())],
        figures: Figures::Counts {
            row_totals: cells.iter().map(|c| c[0]).collect(),
            cells,
            col_totals: vec![total],
            total,
        },
    }
}

/// True counts by (month, group, disability): deterministic, realistic
/// sizes (a few to a few hundred a month per group).
fn truth(months: usize) -> Vec<[[u64; 2]; 9]> {
    let mut s: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let scale = [40, 120, 15, 6, 4, 20, 10, 3, 2];
    (0..months)
        .map(|_| {
            let mut m = [[0u64; 2]; 9];
            for (g, row) in m.iter_mut().enumerate() {
                for (d, x) in row.iter_mut().enumerate() {
                    let share = if d == 0 { 3 } else { 7 };
                    *x = next() % (scale[g] * share / 5 + 1);
                }
            }
            m
        })
        .collect()
}

#[allow(
    clippy::needless_range_loop,
    reason = "months, groups and categories are indexed together, as the tables lay them out"
)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "run") {
        let numbers: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
        whole_run(
            numbers.first().copied().unwrap_or(150),
            numbers.get(1).copied().unwrap_or(5),
        );
        return;
    }
    let out = args.iter().find(|a| a.ends_with(".json")).cloned();
    let catalogue = Catalogue::new(
        Dimensions::default(),
        LaReference::from_entries([LocalAuthority {
            code: LA.into(),
            name: "Barking and Dagenham".into(),
            cpa: "London East".into(),
        }]),
    );
    let first: Period = "2020-01".parse().expect("month");
    let months: Vec<Period> = std::iter::successors(Some(first), |p| p.next())
        .take(61)
        .collect();
    let data = truth(61);
    let by_group = |m: usize| -> Vec<u64> { data[m].iter().map(|g| g[0] + g[1]).collect() };
    let by_dis =
        |m: usize| -> Vec<u64> { (0..2).map(|d| data[m].iter().map(|g| g[d]).sum()).collect() };
    let mut history = Vec::new();
    let mut knowns = Vec::new();
    let mut id = 0;
    let mut push = |t: ReleaseTable, history: &mut Vec<Released>| {
        id += 1;
        history.push(Released { id, table: t });
    };
    for m in 0..60 {
        push(
            table(
                months[m],
                "payment_group",
                &DEFAULT_PAYMENT_GROUPS,
                &by_group(m),
            ),
            &mut history,
        );
        push(
            table(months[m], "disability", &DIS, &by_dis(m)),
            &mut history,
        );
        if m % 3 == 2 {
            let quarter =
                Period::containing(months[m].first_day(), PeriodGrain::Quarter).expect("a quarter");
            let q: Vec<u64> = (0..9)
                .map(|g| (m - 2..=m).map(|k| by_group(k)[g]).sum())
                .collect();
            push(
                table(quarter, "payment_group", &DEFAULT_PAYMENT_GROUPS, &q),
                &mut history,
            );
            let total: u64 = q.iter().sum();
            knowns.push(
                Known::new(
                    &catalogue,
                    knowns.len() as i64 + 1,
                    Measure::Referrals,
                    quarter.to_string().parse().expect("period"),
                    vec![("la_code".into(), LA.into())],
                    KnownValue::Exact(total),
                    "DWP official statistics",
                )
                .expect("known"),
            );
        }
    }
    let next = table(
        months[60],
        "payment_group",
        &DEFAULT_PAYMENT_GROUPS,
        &by_group(60),
    );
    let policy = AuditPolicy::default();
    println!(
        "history: {} releases ({} monthly by payment group, {} quarterly, {} monthly by disability), {} known figures",
        history.len(),
        60,
        20,
        60,
        knowns.len()
    );

    let median = |runs: usize, f: &mut dyn FnMut() -> Audit| -> (f64, Audit) {
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..runs {
            let t = Instant::now();
            let a = f();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            last = Some(a);
        }
        times.sort_by(f64::total_cmp);
        (times[runs / 2], last.expect("runs"))
    };
    let (next_ms, a) = median(21, &mut || {
        audit(&catalogue, &history, &knowns, Some(&next), &policy)
    });
    println!(
        "next release: median {next_ms:.3} ms over 21 runs; {} of {} components solved, {} LPs; {} findings",
        a.stats.solved,
        a.stats.components,
        a.stats.lp_solves,
        a.findings.len()
    );
    let (full_ms, full) = median(5, &mut || {
        audit(&catalogue, &history, &knowns, None, &policy)
    });
    println!(
        "full audit: median {full_ms:.1} ms over 5 runs; {} components ({} unimodular, {} branch and bound), {} LPs, {} branched; {} figures, {} cells, {} findings",
        full.stats.components,
        full.stats.unimodular,
        full.stats.branch_and_bound,
        full.stats.lp_solves,
        full.stats.branched,
        full.figures.len(),
        full.cells.len(),
        full.findings.len()
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!("peak RSS: {}", hwm.trim_start_matches("VmHWM:").trim());

    if let Some(path) = out {
        // The same problem, written out: finest cells (month, group,
        // disability), one constraint per released cell and known figure,
        // and the audit's intervals of every cell and released figure.
        let mut index = BTreeMap::new();
        for m in 0..60 {
            for g in 0..9 {
                for d in 0..2 {
                    index.insert(
                        (months[m].to_string(), DEFAULT_PAYMENT_GROUPS[g], DIS[d]),
                        index.len(),
                    );
                }
            }
        }
        let cells_of = |period: &str, cats: &BTreeMap<String, String>| -> Vec<usize> {
            let in_period = |m: &str| {
                if let Some((y, q)) = period.split_once("-Q") {
                    let month: u32 = m[5..].parse().expect("month");
                    m.starts_with(y) && ((month - 1) / 3 + 1).to_string() == q
                } else {
                    m == period
                }
            };
            (index.iter())
                .filter(|((m, g, d), _)| {
                    in_period(m)
                        && cats.get("payment_group").is_none_or(|x| x == g)
                        && cats.get("disability").is_none_or(|x| x == d)
                })
                .map(|(_, &j)| j)
                .collect()
        };
        let mut constraints = Vec::new();
        for f in full
            .figures
            .iter()
            .filter(|f| f.kind == mishare::provider::ledger::FigureKind::Cell)
        {
            constraints.push(serde_json::json!({
                "cells": cells_of(&f.period, &f.categories), "lo": f.sent.saturating_sub(10), "hi": f.sent + 9
            }));
        }
        for k in &knowns {
            let (lo, hi) = k.value.bounds();
            constraints.push(serde_json::json!({"cells": cells_of(&k.period.to_string(), &BTreeMap::new()), "lo": lo, "hi": hi}));
        }
        let mut objectives = Vec::new();
        for f in &full.figures {
            objectives.push(serde_json::json!({"cells": cells_of(&f.period, &f.categories), "lo": f.lo, "hi": f.hi}));
        }
        for c in &full.cells {
            objectives.push(serde_json::json!({"cells": cells_of(&c.period, &c.categories), "lo": c.lo, "hi": c.hi}));
        }
        let problem = serde_json::json!({
            "cells": index.len(), "constraints": constraints, "objectives": objectives,
            "rust_full_ms": full_ms, "rust_next_ms": next_ms,
        });
        std::fs::write(&path, problem.to_string()).expect("write the problem");
        println!("wrote {path}");
    }
}

/// One LA's five-year history (as in `main`), as tables in release order,
/// and its known quarterly totals.
fn history_of(la: &str, catalogue: &Catalogue) -> (Vec<(Period, ReleaseTable)>, Vec<Known>) {
    let first: Period = "2020-01".parse().expect("month");
    let months: Vec<Period> = std::iter::successors(Some(first), |p| p.next())
        .take(60)
        .collect();
    let data = truth(60);
    let by_group = |m: usize| -> Vec<u64> { data[m].iter().map(|g| g[0] + g[1]).collect() };
    let by_dis =
        |m: usize| -> Vec<u64> { (0..2).map(|d| data[m].iter().map(|g| g[d]).sum()).collect() };
    let restrict = |mut t: ReleaseTable| {
        t.fixed = vec![("la_code".into(), la.into())];
        t
    };
    let mut tables = Vec::new();
    let mut known = Vec::new();
    for (m, &month) in months.iter().enumerate() {
        tables.push((
            month,
            restrict(table(
                month,
                "payment_group",
                &DEFAULT_PAYMENT_GROUPS,
                &by_group(m),
            )),
        ));
        tables.push((
            month,
            restrict(table(month, "disability", &DIS, &by_dis(m))),
        ));
        if m % 3 == 2 {
            let quarter =
                Period::containing(month.first_day(), PeriodGrain::Quarter).expect("a quarter");
            let q: Vec<u64> = (0..9)
                .map(|g| (m - 2..=m).map(|k| by_group(k)[g]).sum())
                .collect();
            tables.push((
                quarter,
                restrict(table(quarter, "payment_group", &DEFAULT_PAYMENT_GROUPS, &q)),
            ));
            known.push(
                Known::new(
                    catalogue,
                    0,
                    Measure::Referrals,
                    quarter.to_string().parse().expect("period"),
                    vec![("la_code".into(), la.into())],
                    KnownValue::Exact(q.iter().sum()),
                    "DWP official statistics",
                )
                .expect("known"),
            );
        }
    }
    (tables, known)
}

/// A provider directory: a development PKI, `n` LAs with age keys and
/// agreements, records for January 2025, and a monthly report split by LA.
/// Returns the directory and the configuration.
fn provider_dir(
    n: usize,
    name: &str,
) -> (
    tempfile::TempDir,
    std::sync::Arc<mishare::config::ProviderConfig>,
    Vec<String>,
) {
    use mishare::certs::{DevCa, Usage, Validity};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |rel: &str| dir.path().join(rel);
    for sub in ["reference", "certs", "data", "keys"] {
        std::fs::create_dir(path(sub)).expect("mkdir");
    }
    std::fs::write(path("agreement.pdf"), b"%PDF signed\n").expect("doc");
    let ca = DevCa::new("bench CA").expect("ca");
    std::fs::write(path("certs/ca.pem"), ca.cert_pem()).expect("ca");
    let issued = ca
        .issue("provider.test", Usage::ClientAndServer, Validity::Current)
        .expect("issue");
    std::fs::write(path("certs/provider.pem"), &issued.cert_pem).expect("cert");
    // Owner-only from creation: the configuration refuses a key others can
    // read, whatever the umask.
    write_new_private(&path("certs/provider.key"), issued.key_pem.as_bytes()).expect("key");
    let codes: Vec<String> = (0..n).map(|i| format!("E{:08}", 9_100_000 + i)).collect();
    let mut reference = String::from("la_code,la_name,cpa\n");
    let mut text = String::from(
        "provider = \"Bench Provider\"\ndata_dir = \"var/provider\"\n\
         contract_areas = [\"London East\"]\nreference = \"reference/las.csv\"\n\n\
         [tls]\ncert = \"certs/provider.pem\"\nkey = \"certs/provider.key\"\nca = \"certs/ca.pem\"\n\n",
    );
    let mut records = String::from(
        "participant_id,la_code,payment_group,disability,referral_date,attachment_date,\
         job_start_date,job_outcome_date,first_sustainment_date\n",
    );
    let next = truth(61)[60];
    let mut id = 0;
    for code in &codes {
        reference.push_str(&format!("{code},Council {code},London East\n"));
        let recipient = mishare::seal::generate(&path(&format!("keys/{code}.key"))).expect("age");
        text.push_str(&format!(
            "[[authority]]\ncode = \"{code}\"\nendpoint = \"https://127.0.0.1:9\"\n\
             server_name = \"{}\"\nrecipients = [\"{recipient}\"]\n\n",
            mishare::certs::la_server_name(code)
        ));
        for (g, row) in next.iter().enumerate() {
            for (d, &count) in row.iter().enumerate() {
                for _ in 0..count {
                    id += 1;
                    records.push_str(&format!(
                        "P{id},{code},{},{},2025-01-15,,,,\n",
                        DEFAULT_PAYMENT_GROUPS[g], DIS[d]
                    ));
                }
            }
        }
    }
    text.push_str(&format!(
        "[[report]]\nname = \"{name}\"\nsource = {{ records = \"data/participants.csv\" }}\n\
         measure = \"referrals\"\nview = \"counts\"\nrows = \"payment_group\"\ncols = \"period\"\n\
         period = \"month\"\nschedule = \"0 6 2 * *\"\nrecipients = \"all\"\n\
         split_by_recipient = true\nclassification = \"internal\"\nmissed = \"run-once\"\n"
    ));
    std::fs::write(path("reference/las.csv"), reference).expect("las");
    std::fs::write(path("data/participants.csv"), records).expect("records");
    std::fs::write(path("provider.toml"), text).expect("provider.toml");
    let config =
        mishare::config::ProviderConfig::load(&path("provider.toml")).expect("provider.toml");
    let mut store = mishare::provider::store::Store::open(&config.data_dir).expect("store");
    let today = chrono::Utc::now().date_naive();
    let signed = (today - chrono::Duration::days(30)).to_string();
    for code in &codes {
        let request = mishare::provider::agreement::AgreementRequest {
            la: code,
            representative: "Jo Bloggs <jo@example.gov.uk>",
            signed: &signed,
            expires: None,
            document: &path("agreement.pdf"),
        };
        let new = mishare::provider::agreement::NewAgreement::validate(&request, &config, today)
            .expect("valid");
        store
            .add_agreement(&new, "bench", chrono::Utc::now())
            .expect("added");
    }
    (dir, std::sync::Arc::new(config), codes)
}

/// Records every LA's five-year history and known figures through the
/// store, as the pipeline and `known add` would (each with its audit
/// entries).
fn record_histories(config: &mishare::config::ProviderConfig, codes: &[String], name: &str) {
    use mishare::provider::store::deliveries::{Addressed, NewDelivery};
    use mishare::provider::store::{NewRelease, Store};
    let mut store = Store::open(&config.data_dir).expect("store");
    let histories: Vec<_> = codes
        .iter()
        .map(|la| history_of(la, &config.catalogue))
        .collect();
    let releases = histories[0].0.len();
    let now = chrono::Utc::now();
    let mut transfer = 0u64;
    for i in 0..releases {
        let period = histories[0].0[i].0.to_string();
        let run = store.start_run(name, &period, "bench", now).expect("run");
        for (la, (tables, _)) in codes.iter().zip(&histories) {
            transfer += 1;
            let transfer_id = format!("{transfer:032x}");
            let spool_file = format!("{transfer_id}.age");
            let new = NewDelivery {
                to: Addressed {
                    run_id: run,
                    la,
                    report: name,
                    period: &period,
                    classification: mishare::sanitiser::Classification::Internal,
                },
                transfer_id: &transfer_id,
                spool_file: &spool_file,
                size: 0,
                sha256: &[0; 32],
            };
            let release = NewRelease {
                table: &tables[i].1,
                plaintext_sha256: &[0; 32],
                findings: &[],
            };
            store
                .record_spooled(&new, &release, "bench", now)
                .expect("recorded");
        }
    }
    for (_, known) in &histories {
        for k in known {
            store.add_known(k, "bench", now).expect("known");
        }
    }
}

fn whole_run(n: usize, trials: usize) {
    use mishare::common::shutdown::Shutdown;
    use mishare::provider::pipeline::{LaStep, Pipeline, RunRecord};
    use mishare::provider::store::{SharedStore, Store};
    let name = "referrals-monthly";
    let t = Instant::now();
    let (_full_dir, full, codes) = provider_dir(n, name);
    record_histories(&full, &codes, name);
    let (_fresh_dir, fresh, _) = provider_dir(n, name);
    println!(
        "set up {n} LAs, each with 140 releases and 20 known figures, in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let at: chrono::DateTime<chrono::Utc> = "2025-02-15T12:00:00Z".parse().expect("time");
    let pass = |config: &std::sync::Arc<mishare::config::ProviderConfig>| -> (f64, usize, usize) {
        let store = SharedStore::open(&config.data_dir).expect("store");
        let pipeline = Pipeline::new(config.clone(), store, "bench");
        let report = config.report(name).expect("report").clone();
        let started = Instant::now();
        let pass = runtime
            .block_on(pipeline.pass(
                &report,
                codes.clone(),
                at,
                RunRecord::New,
                &Shutdown::new(),
                |_| {},
            ))
            .expect("pass");
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let spooled = (pass.las.iter())
            .filter(|(_, s)| matches!(s, LaStep::Spooled(_)))
            .count();
        let withheld = (pass.las.iter())
            .filter(|(_, s)| matches!(s, LaStep::Withheld(_)))
            .count();
        (ms, spooled, withheld)
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let mut outcome = (0, 0);
    for _ in 0..trials {
        let (ms, spooled, withheld) = pass(&full);
        with.push(ms);
        outcome = (spooled, withheld);
        without.push(pass(&fresh).0);
    }
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    let (w, wo) = (with[trials / 2], without[trials / 2]);
    println!(
        "whole run to {n} LAs: with five-year ledgers median {w:.0} ms, with empty ledgers \
         {wo:.0} ms over {trials} interleaved runs; ratio {:.2}; last run spooled {}, withheld {}",
        w / wo,
        outcome.0,
        outcome.1
    );
    // The audit's own share, alone.
    let store = Store::open(&full.data_dir).expect("store");
    let started = Instant::now();
    let check = store.verify_ledger().expect("verify");
    let verify_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(check.is_intact(), "the bench's ledger verifies");
    let started = Instant::now();
    let mut loaded = 0;
    let mut audit_ms = 0.0;
    let january: Period = "2025-01".parse().expect("month");
    let counts: Vec<u64> = truth(61)[60].iter().map(|g| g[0] + g[1]).collect();
    let next = &table(january, "payment_group", &DEFAULT_PAYMENT_GROUPS, &counts);
    for la in &codes {
        let history: Vec<Released> = store
            .releases(Some(la))
            .expect("releases")
            .into_iter()
            .map(Released::from)
            .collect();
        let known: Vec<Known> = store
            .known_figures(Some(la), false)
            .expect("known")
            .into_iter()
            .map(|k| k.known)
            .collect();
        loaded += history.len();
        let mut next = next.clone();
        next.fixed = vec![("la_code".into(), la.clone())];
        let t = Instant::now();
        let _ = audit(
            &full.catalogue,
            &history,
            &known,
            Some(&next),
            &AuditPolicy::default(),
        );
        audit_ms += t.elapsed().as_secs_f64() * 1e3;
    }
    let load_and_audit_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "alone: ledger verification {verify_ms:.0} ms ({} releases, {} known figures); loading \
         and auditing {n} LAs' ledgers ({loaded} releases) {load_and_audit_ms:.0} ms, of which the \
         audits {audit_ms:.0} ms",
        check.releases, check.known
    );
}
