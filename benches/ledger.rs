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

use std::collections::BTreeMap;
use std::time::Instant;

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
    let out = std::env::args().skip(1).find(|a| a.ends_with(".json"));
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
