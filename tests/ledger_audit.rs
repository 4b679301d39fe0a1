//! The release ledger's audit (R11): worked cases T16–T20, joint cuts of
//! the same people, months against quarters, records made from sanitised
//! tables, and a property test against brute-force enumeration.

use std::collections::BTreeMap;

use mishare::provider::ledger::{
    Audit, AuditPolicy, Axis, FigureInterval, FigureKind, Figures, Known, KnownPeriod, KnownValue,
    ReleaseTable, Released, audit, audit_whole_ledger,
};
use mishare::reference::{Dimensions, LaReference, LocalAuthority, PaymentGroups};
use mishare::sanitiser::{
    Catalogue, Classification, Code, CountTable, Measure, Recipient, TableSpec, View, sanitise,
};
use proptest::prelude::*;

const LA: &str = "E09000002";

fn las() -> LaReference {
    LaReference::from_entries(["E09000002", "E09000009"].map(|code| LocalAuthority {
        code: code.to_string(),
        name: format!("LA {code}"),
        cpa: "London East".to_string(),
    }))
}

/// The built-in dimensions: nine payment groups, disability Y/N.
fn catalogue() -> Catalogue {
    Catalogue::new(Dimensions::default(), las())
}

/// Payment groups JSA and ESA only, disability Y/N.
fn small_catalogue(groups: &[&str]) -> Catalogue {
    let groups = PaymentGroups::from_names(groups.iter().map(|g| g.to_string())).expect("distinct");
    Catalogue::new(Dimensions::default().with_payment_groups(&groups), las())
}

/// R3.
fn r(x: u64) -> u64 {
    20 * ((x + 10) / 20)
}

/// A counts table for the LA, sent from true counts `truth[row][col]`.
fn table(
    measure: Measure,
    range: &str,
    rows: (&str, &[&str]),
    cols: Option<(&str, &[&str])>,
    truth: &[Vec<u64>],
) -> ReleaseTable {
    let cells: Vec<Vec<u64>> = truth
        .iter()
        .map(|row| row.iter().map(|&x| r(x)).collect())
        .collect();
    let ncols = cells[0].len();
    let row_totals: Vec<u64> = cells.iter().map(|row| row.iter().sum()).collect();
    let col_totals: Vec<u64> = (0..ncols)
        .map(|c| cells.iter().map(|row| row[c]).sum())
        .collect();
    let total = row_totals.iter().sum();
    let axis = |(dimension, codes): (&str, &[&str])| Axis {
        dimension: dimension.to_string(),
        codes: codes.iter().map(|c| c.to_string()).collect(),
    };
    ReleaseTable {
        measure,
        view: View::Counts,
        range: range.parse().expect("range"),
        rows: axis(rows),
        cols: cols.map(axis),
        fixed: vec![("la_code".to_string(), LA.to_string())],
        figures: Figures::Counts {
            cells,
            row_totals,
            col_totals,
            total,
        },
    }
}

/// A one-column table (rows only).
fn column(measure: Measure, range: &str, rows: (&str, &[&str]), truth: &[u64]) -> ReleaseTable {
    let truth: Vec<Vec<u64>> = truth.iter().map(|&x| vec![x]).collect();
    table(measure, range, rows, None, &truth)
}

fn known(id: i64, period: &str, extra: &[(&str, &str)], value: KnownValue) -> Known {
    let mut fixed = vec![("la_code".to_string(), LA.to_string())];
    fixed.extend(extra.iter().map(|(d, c)| (d.to_string(), c.to_string())));
    Known::new(
        &catalogue(),
        id,
        Measure::Referrals,
        period.parse().expect("period"),
        fixed,
        value,
        "DWP official statistics",
    )
    .expect("a valid known figure")
}

fn released(tables: Vec<ReleaseTable>) -> Vec<Released> {
    (tables.into_iter().enumerate())
        .map(|(i, table)| Released {
            id: i as i64 + 1,
            table,
        })
        .collect()
}

fn codes(audit: &Audit) -> Vec<Code> {
    let mut codes: Vec<Code> = audit.findings.iter().map(|f| f.code).collect();
    codes.sort();
    codes.dedup();
    codes
}

/// The interval of the figure of `release` (`None`: the candidate) of
/// this kind whose categories include `wanted` and whose period is `period`.
fn figure<'a>(
    audit: &'a Audit,
    release: Option<i64>,
    kind: FigureKind,
    period: &str,
    wanted: &[(&str, &str)],
) -> &'a FigureInterval {
    let mut found = audit.figures.iter().filter(|f| {
        f.release == release
            && f.kind == kind
            && f.period == period
            && wanted
                .iter()
                .all(|(d, c)| f.categories.get(*d).map(String::as_str) == Some(c))
            && f.categories.len() == wanted.len() + 1
    });
    let f = found.next().unwrap_or_else(|| {
        panic!(
            "no figure {release:?} {kind:?} {period} {wanted:?} in {:#?}",
            audit.figures
        )
    });
    assert!(found.next().is_none(), "one figure");
    f
}

fn lo_hi(f: &FigureInterval) -> (u64, u64) {
    (f.lo, f.hi)
}

const DISABILITY: (&str, &[&str]) = ("disability", &["Y", "N"]);

/// T16: 9 and 9 sent as 0 and 0 against a known exact total of 18: both
/// pinned to 9, and the file is blocked.
#[test]
fn t16_two_small_cells_against_an_exact_total_are_pinned() {
    let next = column(Measure::Referrals, "2012-09", DISABILITY, &[9, 9]);
    let k = [known(1, "2012-09", &[], KnownValue::Exact(18))];
    let a = audit(&catalogue(), &[], &k, Some(&next), &AuditPolicy::default());
    for code in ["Y", "N"] {
        let f = figure(
            &a,
            None,
            FigureKind::Cell,
            "2012-09",
            &[("disability", code)],
        );
        assert_eq!((f.sent, lo_hi(f)), (0, (9, 9)), "{code}");
    }
    assert_eq!(codes(&a), [Code::Unpickable], "{:#?}", a.findings);
    assert!(a.blocks());
    let pinned: Vec<&str> = a.findings.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(
        pinned.len(),
        2,
        "one finding a cell, not again for its finest cell: {pinned:#?}"
    );
    assert!(
        pinned[0].starts_with(
            "the cell referrals 2012-09 (disability=Y, la_code=E09000002) of this release (sent \
             as 0) can only be 9"
        ),
        "{}",
        pinned[0]
    );
    // The total is the known figure itself: pinned, but not by the release.
    let total = figure(&a, None, FigureKind::ColTotal, "2012-09", &[]);
    assert_eq!(lo_hi(total), (18, 18));
}

/// T17: 9 and 8 against a known total of 17: both in [8, 9], narrowed but
/// sent.
#[test]
fn t17_a_narrow_interval_warns() {
    let next = column(Measure::Referrals, "2012-09", DISABILITY, &[9, 8]);
    let k = [known(1, "2012-09", &[], KnownValue::Exact(17))];
    let a = audit(&catalogue(), &[], &k, Some(&next), &AuditPolicy::default());
    for code in ["Y", "N"] {
        let f = figure(
            &a,
            None,
            FigureKind::Cell,
            "2012-09",
            &[("disability", code)],
        );
        assert_eq!(lo_hi(f), (8, 9), "{code}");
    }
    assert_eq!(codes(&a), [Code::Narrowed], "{:#?}", a.findings);
    assert!(!a.blocks());
    let strict = AuditPolicy {
        strict: true,
        ..AuditPolicy::default()
    };
    assert!(audit(&catalogue(), &[], &k, Some(&next), &strict).blocks());
    let wide = AuditPolicy {
        min_interval_width: 0,
        ..AuditPolicy::default()
    };
    assert!(
        audit(&catalogue(), &[], &k, Some(&next), &wide)
            .findings
            .is_empty()
    );
}

/// T18: three months of 10 sent as 20, and a known quarter of 30: each
/// month pinned to 10, whether the third month is the candidate or all
/// three are history.
#[test]
fn t18_months_against_a_known_quarter_are_pinned() {
    let months = ["2012-07", "2012-08", "2012-09"];
    let tables: Vec<ReleaseTable> = (months.iter())
        .map(|m| column(Measure::Referrals, m, ("period", &[m]), &[10]))
        .collect();
    let k = [known(1, "2012-Q3", &[], KnownValue::Exact(30))];
    let history = released(tables[..2].to_vec());
    let a = audit(
        &catalogue(),
        &history,
        &k,
        Some(&tables[2]),
        &AuditPolicy::default(),
    );
    for (i, m) in months.iter().enumerate() {
        let release = (i < 2).then_some(i as i64 + 1);
        let f = figure(&a, release, FigureKind::Cell, m, &[]);
        assert_eq!((f.sent, lo_hi(f)), (20, (10, 10)), "{m}");
    }
    assert!(a.has(Code::Unpickable) && a.blocks());
    let full = audit(
        &catalogue(),
        &released(tables),
        &k,
        None,
        &AuditPolicy::default(),
    );
    assert!(full.has(Code::Unpickable));
    for (i, m) in months.iter().enumerate() {
        let f = figure(&full, Some(i as i64 + 1), FigureKind::Cell, m, &[]);
        assert_eq!(lo_hi(f), (10, 10), "{m}");
    }
}

/// T19: the same quarterly table sent twice from unchanged data: nothing.
#[test]
fn t19_a_table_sent_again_unchanged_adds_nothing() {
    let groups = (
        "payment_group",
        &mishare::reference::DEFAULT_PAYMENT_GROUPS[..],
    );
    let truth = [412, 655, 138, 27, 14, 96, 31, 6, 19];
    let quarter = column(Measure::Referrals, "2012-Q3", groups, &truth);
    let history = released(vec![quarter.clone()]);
    let once = audit(&catalogue(), &history, &[], None, &AuditPolicy::default());
    let twice = audit(
        &catalogue(),
        &history,
        &[],
        Some(&quarter),
        &AuditPolicy::default(),
    );
    assert_eq!(twice.findings, [], "{:#?}", twice.findings);
    let bounds = |a: &Audit, release| -> Vec<(u64, u64)> {
        (a.figures.iter())
            .filter(|f| f.release == release)
            .map(lo_hi)
            .collect()
    };
    assert_eq!(bounds(&once, Some(1)), bounds(&twice, Some(1)));
    assert_eq!(bounds(&twice, None), bounds(&twice, Some(1)));
    // JSA 25+: 655 sent as 660, [650, 669].
    assert_eq!(bounds(&twice, None)[1], (650, 669));
}

/// T20: a cell sent as 20 (true 29), then, after one late record, as 40
/// (true 30): W_REVISION names it and both values, and the two are
/// different unknowns (held as one, no true count would fit both).
#[test]
fn t20_a_revised_figure_is_named_and_becomes_a_new_unknown() {
    let first = column(Measure::Referrals, "2012-09", DISABILITY, &[29, 100]);
    let second = column(Measure::Referrals, "2012-09", DISABILITY, &[30, 100]);
    let history = released(vec![first]);
    let a = audit(
        &catalogue(),
        &history,
        &[],
        Some(&second),
        &AuditPolicy::default(),
    );
    assert_eq!(codes(&a), [Code::Revision], "{:#?}", a.findings);
    assert_eq!(
        a.findings[0].message,
        "this release sends referrals 2012-09 (disability=Y, la_code=E09000002) as 40; release 1 \
         sent it as 20: late records changed it, so from this release on the audit takes the \
         counts of 2012-09 as new unknowns"
    );
    let new = figure(
        &a,
        None,
        FigureKind::Cell,
        "2012-09",
        &[("disability", "Y")],
    );
    assert_eq!(lo_hi(new), (30, 49));
    // Only the new revision's cells are touched by the candidate.
    assert!(a.cells.iter().all(|c| c.revision == 1), "{:#?}", a.cells);
    // The full audit names it too, holds both revisions, and is consistent.
    let full = audit(
        &catalogue(),
        &released(vec![
            column(Measure::Referrals, "2012-09", DISABILITY, &[29, 100]),
            second,
        ]),
        &[],
        None,
        &AuditPolicy::default(),
    );
    assert_eq!(codes(&full), [Code::Revision]);
    assert!(
        full.findings[0].message.starts_with("release 2 sends"),
        "{}",
        full.findings[0].message
    );
    let old = figure(
        &full,
        Some(1),
        FigureKind::Cell,
        "2012-09",
        &[("disability", "Y")],
    );
    let new = figure(
        &full,
        Some(2),
        FigureKind::Cell,
        "2012-09",
        &[("disability", "Y")],
    );
    assert_eq!((lo_hi(old), lo_hi(new)), ((10, 29), (30, 49)));
    let revisions: Vec<u32> = full.cells.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, [0, 0, 1, 1], "{:#?}", full.cells);
}

/// Referrals by payment group and by disability for the same LA and month,
/// with a known total: the joint system narrows the finest cell (JSA, N)
/// to [9, 11], where either table alone leaves it [0, 11].
#[test]
fn two_cuts_of_the_same_people_narrow_what_neither_does_alone() {
    let catalogue = small_catalogue(&["JSA", "ESA"]);
    // True finest cells: (JSA,Y)=0 (JSA,N)=10 (ESA,Y)=0 (ESA,N)=1.
    let by_group = column(
        Measure::Referrals,
        "2012-09",
        ("payment_group", &["JSA", "ESA"]),
        &[10, 1],
    );
    let by_disability = column(Measure::Referrals, "2012-09", DISABILITY, &[0, 11]);
    let k = [known(1, "2012-09", &[], KnownValue::Exact(11))];
    let finest = |a: &Audit, group: &str, disability: &str| -> (u64, u64) {
        let c = (a.cells.iter())
            .find(|c| {
                c.categories.get("payment_group").map(String::as_str) == Some(group)
                    && c.categories.get("disability").map(String::as_str) == Some(disability)
            })
            .expect("the finest cell");
        c.finest_interval()
    };
    // Each table alone, against the known total.
    let alone_g = audit(
        &catalogue,
        &released(vec![by_disability.clone()]),
        &k,
        Some(&by_group),
        &AuditPolicy::default(),
    );
    let alone_d = audit(
        &catalogue,
        &released(vec![by_group.clone()]),
        &k,
        Some(&by_disability),
        &AuditPolicy::default(),
    );
    // Payment group alone knows nothing of disability: its cells are (group,
    // all disabilities); disability alone likewise. So look at the joint.
    let joint = audit(
        &catalogue,
        &released(vec![by_group.clone(), by_disability.clone()]),
        &k,
        None,
        &AuditPolicy::default(),
    );
    assert_eq!(finest(&joint, "JSA", "N"), (9, 11));
    assert_eq!(finest(&joint, "ESA", "N"), (0, 1));
    let only_group = audit(
        &catalogue,
        &released(vec![by_group.clone()]),
        &k,
        None,
        &AuditPolicy::default(),
    );
    let only_disability = audit(
        &catalogue,
        &released(vec![by_disability.clone()]),
        &k,
        None,
        &AuditPolicy::default(),
    );
    let jsa = (only_group.cells.iter())
        .find(|c| c.categories.get("payment_group").map(String::as_str) == Some("JSA"))
        .expect("JSA");
    assert_eq!((jsa.lo, jsa.hi), (10, 11), "JSA, all disabilities");
    let n = (only_disability.cells.iter())
        .find(|c| c.categories.get("disability").map(String::as_str) == Some("N"))
        .expect("N");
    assert_eq!((n.lo, n.hi), (10, 11), "N, all groups");
    // Neither alone bounds (JSA, N) better than [0, 11]: JSA's 10 or 11 may
    // all be disabled, N's 11 may all be ESA. Jointly, both narrow it.
    assert!(joint.has(Code::Narrowed), "{:#?}", joint.findings);
    assert!(
        joint.findings.iter().any(|f| f.message.contains("the finest cell referrals 2012-09 (disability=N, la_code=E09000002, payment_group=JSA) lies between 9 and 11")),
        "{:#?}",
        joint.findings
    );
    // The candidate that completes the pair is what the audit flags.
    for a in [&alone_g, &alone_d] {
        assert!(a.has(Code::Overlap), "{:#?}", a.findings);
        assert!(a.has(Code::Narrowed), "{:#?}", a.findings);
    }
}

/// Monthly tables and a quarterly one of the same months: the quarter
/// narrows each month without pinning it.
#[test]
fn a_quarter_narrows_its_months_without_pinning_them() {
    let months = ["2012-07", "2012-08", "2012-09"];
    let truth = [10, 10, 9];
    let mut tables: Vec<ReleaseTable> = (months.iter().zip(truth))
        .map(|(m, x)| column(Measure::Referrals, m, ("period", &[m]), &[x]))
        .collect();
    tables.push(column(
        Measure::Referrals,
        "2012-Q3",
        ("period", &["2012-Q3"]),
        &[29],
    ));
    let a = audit(
        &catalogue(),
        &released(tables.clone()),
        &[],
        None,
        &AuditPolicy::default(),
    );
    let months_alone = audit(
        &catalogue(),
        &released(tables[..3].to_vec()),
        &[],
        None,
        &AuditPolicy::default(),
    );
    for (i, m) in months.iter().enumerate() {
        let before = lo_hi(figure(
            &months_alone,
            Some(i as i64 + 1),
            FigureKind::Cell,
            m,
            &[],
        ));
        let after = lo_hi(figure(&a, Some(i as i64 + 1), FigureKind::Cell, m, &[]));
        let expected = if i < 2 {
            ((10, 29), (10, 19))
        } else {
            ((0, 9), (0, 9))
        };
        assert_eq!((before, after), expected, "{m}");
    }
    let q = figure(&a, Some(4), FigureKind::Cell, "2012-Q3", &[]);
    assert_eq!(lo_hi(q), (20, 29));
    assert!(
        a.findings.is_empty(),
        "narrowed, but wider than 4: {:#?}",
        a.findings
    );
    // As the candidate, the quarter overlaps the months (another grain).
    let next = audit(
        &catalogue(),
        &released(tables[..3].to_vec()),
        &[],
        Some(&tables[3]),
        &AuditPolicy::default(),
    );
    assert_eq!(codes(&next), [Code::Overlap]);
}

/// Given the next release, only the components it touches are solved.
#[test]
fn the_next_release_solves_only_what_it_touches() {
    let months = ["2012-01", "2012-02", "2012-03", "2012-04"];
    let tables: Vec<ReleaseTable> = (months.iter())
        .map(|m| column(Measure::Referrals, m, DISABILITY, &[12, 40]))
        .collect();
    let history = released(tables[..3].to_vec());
    let full = audit(&catalogue(), &history, &[], None, &AuditPolicy::default());
    assert_eq!((full.stats.components, full.stats.solved), (6, 6));
    let next = audit(
        &catalogue(),
        &history,
        &[],
        Some(&tables[3]),
        &AuditPolicy::default(),
    );
    // Only what the candidate reaches is modelled: its month's two cells.
    assert_eq!((next.stats.components, next.stats.solved), (2, 2));
    assert!(
        next.figures.iter().all(|f| f.release.is_none()),
        "{:#?}",
        next.figures
    );
    let whole = audit_whole_ledger(
        &catalogue(),
        &history,
        &[],
        Some(&tables[3]),
        &AuditPolicy::default(),
    );
    assert_eq!((whole.stats.components, whole.stats.solved), (8, 2));
    assert_eq!(without_components(next), without_components(whole));
}

/// The audit with the component count set aside: what depends on how much
/// of the ledger was modelled.
fn without_components(mut a: Audit) -> Audit {
    a.stats.components = 0;
    a
}

/// What the candidate cannot reach is not modelled, and the answer is
/// that of the whole ledger: the cells are still split by every category
/// any release or known figure singles out, reached or not (here
/// disability, by a table of January only, and IB/IS, by a known figure of
/// February only), and a quarter reaches its months and what they reach.
#[test]
fn what_the_candidate_cannot_reach_changes_nothing() {
    const GROUP: (&str, &[&str]) = ("payment_group", &["JSA", "ESA", "IB"]);
    let history = released(vec![
        column(Measure::Referrals, "2012-01", DISABILITY, &[3, 40]),
        column(Measure::Referrals, "2012-04", GROUP, &[12, 40, 2]),
        column(Measure::Referrals, "2012-Q2", GROUP, &[20, 50, 2]),
        column(Measure::Referrals, "2012-07", GROUP, &[30, 120, 4]),
    ]);
    let known = vec![
        known(1, "2012-06", &[], KnownValue::Exact(9)),
        known(
            2,
            "2012-02",
            &[("payment_group", "IB/IS")],
            KnownValue::Exact(60),
        ),
    ];
    let next = column(Measure::Referrals, "2012-05", GROUP, &[3, 9, 0]);
    let policy = AuditPolicy::default();
    let pruned = audit(&catalogue(), &history, &known, Some(&next), &policy);
    let whole = audit_whole_ledger(&catalogue(), &history, &known, Some(&next), &policy);
    assert!(
        !whole.has(Code::LedgerInconsistent),
        "{:#?}",
        whole.findings
    );
    assert!(
        pruned.stats.components < whole.stats.components,
        "{:?} {:?}",
        pruned.stats,
        whole.stats
    );
    assert!(
        pruned.figures.iter().any(|f| f.period == "2012-Q2"),
        "the quarter is reached through May"
    );
    assert!(
        !pruned
            .figures
            .iter()
            .any(|f| f.period == "2012-01" || f.period == "2012-07"),
        "{:#?}",
        pruned.figures
    );
    // Nothing reached names disability or IB/IS, yet the cells reached are
    // split by them, as in the whole ledger.
    assert!(
        pruned.figures.iter().all(|f| {
            !f.categories.contains_key("disability")
                && f.categories.get("payment_group").map(String::as_str) != Some("IB/IS")
        }),
        "{:#?}",
        pruned.figures
    );
    assert!(
        pruned
            .cells
            .iter()
            .any(|c| c.categories.contains_key("disability")
                && c.categories.get("payment_group").map(String::as_str) == Some("JSA")),
        "{:#?}",
        pruned.cells
    );
    assert!(
        pruned
            .cells
            .iter()
            .any(|c| c.categories.get("payment_group").map(String::as_str) == Some("IB/IS")),
        "{:#?}",
        pruned.cells
    );
    assert_eq!(without_components(pruned), without_components(whole));
}

/// A known figure names declared dimensions and categories only, and
/// always says whose participants it counts.
#[test]
fn known_figures_are_checked_against_the_declared_dimensions() {
    let c = catalogue();
    let make = |fixed: &[(&str, &str)], value| {
        Known::new(
            &c,
            1,
            Measure::Referrals,
            KnownPeriod::Year(2012),
            fixed
                .iter()
                .map(|(d, v)| (d.to_string(), v.to_string()))
                .collect(),
            value,
            "stat-xplore",
        )
        .map_err(|e| e.to_string())
    };
    let exact = KnownValue::Exact(5);
    assert!(make(&[("la_code", LA), ("disability", "Y")], exact).is_ok());
    type Case<'a> = (&'a [(&'a str, &'a str)], KnownValue, &'a str);
    let cases: [Case; 6] = [
        (
            &[("la_code", LA), ("gender", "F")],
            exact,
            "`gender` is not a dimension a known figure can name: use la_code, payment_group, disability",
        ),
        (
            &[("la_code", LA), ("disability", "Disabled")],
            exact,
            "\"Disabled\" is not a declared category of `disability` (Y, N)",
        ),
        (
            &[("la_code", "E99999999")],
            exact,
            "\"E99999999\" is not a declared category of `la_code` (not in the LA reference data)",
        ),
        (
            &[("disability", "Y")],
            exact,
            "a known figure must say whose participants it counts: add la_code=CODE",
        ),
        (
            &[("la_code", LA), ("period", "2012-09")],
            exact,
            "`period` is not a dimension",
        ),
        (
            &[("la_code", LA)],
            KnownValue::Range(9, 8),
            "the interval 9 to 8 is empty",
        ),
    ];
    for (fixed, value, expected) in cases {
        let err = make(fixed, value).expect_err(expected);
        assert!(err.starts_with(expected), "{err}");
    }
    assert_eq!(KnownPeriod::Year(2012).months().len(), 12);
    assert_eq!(
        "2012-Q3".parse::<KnownPeriod>().expect("q").months().len(),
        3
    );
    let json =
        serde_json::to_string(&make(&[("la_code", LA)], KnownValue::Range(8, 9)).expect("ok"))
            .expect("json");
    assert_eq!(
        json,
        r#"{"id":1,"measure":"referrals","period":"2012","fixed":[["la_code","E09000002"]],"value":{"range":[8,9]},"source":"stat-xplore"}"#
    );
}

/// A record made from a sanitised table holds codes, not labels; the
/// recipient of an internal file; and, for shares, the rounded counts.
#[test]
fn a_record_from_a_sanitised_table_holds_codes_and_the_counts_behind_shares() {
    let spec = TableSpec {
        cols: Some("period".into()),
        periods: Some("2012-08..2012-09".parse().expect("range")),
        classification: Some(Classification::Internal),
        recipient: Some(Recipient {
            code: LA.into(),
            name: "Barking and Dagenham".into(),
        }),
        ..TableSpec::new(Measure::Referrals, "disability")
    };
    let counts = CountTable::new(
        vec!["Disabled".into(), "Not disabled".into()],
        vec!["2012-08".into(), "2012-09".into()],
        vec![vec![9, 31], vec![100, 0]],
    )
    .with_codes(
        vec!["Y".into(), "N".into()],
        vec!["2012-08".into(), "2012-09".into()],
    );
    let out = sanitise(&spec, &counts).expect("sanitised");
    let record = ReleaseTable::from_sanitised(&out, Vec::new()).expect("recorded");
    assert_eq!(record.rows.codes, ["Y", "N"]);
    assert_eq!(
        record.cols.as_ref().expect("cols").codes,
        ["2012-08", "2012-09"]
    );
    assert_eq!(record.fixed, [("la_code".to_string(), LA.to_string())]);
    assert_eq!(
        record.figures,
        Figures::Counts {
            cells: vec![vec![0, 40], vec![100, 0]],
            row_totals: vec![40, 100],
            col_totals: vec![100, 40],
            total: 140
        }
    );
    let json = serde_json::to_string(&record).expect("json");
    assert!(!json.contains("Disabled"), "{json}");
    assert_eq!(
        serde_json::from_str::<ReleaseTable>(&json).expect("back"),
        record
    );

    let shares = TableSpec {
        view: View::Shares,
        cols: None,
        periods: Some("2012-09".parse().expect("range")),
        filters: vec![("payment_group".into(), "JSA 25+".into())],
        ..TableSpec::new(Measure::JobOutcomes, "disability")
    };
    let counts = CountTable::column(
        vec!["Disabled".into(), "Not disabled".into()],
        vec![47, 133],
    )
    .with_codes(vec!["Y".into(), "N".into()], vec!["All".into()]);
    let out = sanitise(&shares, &counts).expect("sanitised");
    let record =
        ReleaseTable::from_sanitised(&out, vec![("la_code".into(), LA.into())]).expect("recorded");
    assert_eq!(record.cols, None);
    assert_eq!(
        record.fixed,
        [
            ("la_code".to_string(), LA.to_string()),
            ("payment_group".to_string(), "JSA 25+".to_string())
        ]
    );
    assert_eq!(
        record.figures,
        Figures::Shares {
            rounded: vec![vec![40], vec![140]],
            shares: vec![vec![Some(22)], vec![Some(78)]]
        }
    );
    // Audited, a shares table constrains the counts behind it.
    let a = audit(
        &catalogue(),
        &[],
        &[],
        Some(&record),
        &AuditPolicy::default(),
    );
    let mut bounds: Vec<_> = (a.figures.iter())
        .filter(|f| f.kind == FigureKind::Cell)
        .map(lo_hi)
        .collect();
    bounds.sort();
    assert_eq!(bounds, [(30, 49), (130, 149)]);
    // A contradictory restriction is refused.
    let err = ReleaseTable::from_sanitised(&out, vec![("payment_group".into(), "IB/IS".into())])
        .expect_err("conflict");
    assert!(
        err.to_string()
            .contains("restricted to payment_group=IB/IS and to payment_group=JSA 25+"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Brute force.

/// A finest cell of the small worlds below: (month index, a, b).
type Cell = (usize, usize, usize);

/// A random small ledger: months, categories of `a` (payment groups) and
/// optionally of `b` (disability), true counts, the tables released and the
/// known figures.
#[derive(Debug, Clone)]
struct World {
    months: usize,
    a: usize,
    b: usize,
    truth: BTreeMap<Cell, u64>,
    tables: Vec<Layout>,
    /// (month or the quarter, group or all, bounds).
    knowns: Vec<KnownSpec>,
}

/// A known figure of a world: (month or the quarter, group or all, bounds).
type KnownSpec = (Option<usize>, Option<usize>, (u64, u64));

/// What a table lays out: rows and optional columns, of `a`, `b`,
/// `period` (months) or `quarter` (one column for the three months).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dim {
    A,
    B,
    Month,
}

#[derive(Debug, Clone)]
struct Layout {
    rows: Dim,
    cols: Option<Dim>,
    quarterly: bool,
}

const MONTHS: [&str; 3] = ["2012-07", "2012-08", "2012-09"];
const GROUPS: [&str; 3] = ["JSA", "ESA", "IB"];
const DIS: [&str; 2] = ["Y", "N"];

fn world() -> impl Strategy<Value = World> {
    // Shapes with at most four finest cells: the search space stays small.
    let shapes = prop_oneof![
        Just((1usize, 2usize, 1usize)),
        Just((1, 3, 1)),
        Just((1, 2, 2)),
        Just((2, 2, 1)),
        Just((3, 1, 1)),
    ];
    shapes.prop_flat_map(|(months, a, b)| {
        let n = months * a * b;
        let dims: Vec<Dim> = [Dim::A, Dim::B, Dim::Month]
            .into_iter()
            .filter(|d| match d {
                Dim::A => a > 1,
                Dim::B => b > 1,
                Dim::Month => months > 1,
            })
            .collect();
        let layout = {
            let dims = dims.clone();
            (0..dims.len().max(1), 0..dims.len() + 1, any::<bool>()).prop_map(move |(r, c, q)| {
                let rows = dims.get(r).copied().unwrap_or(Dim::A);
                let cols = dims.get(c).copied().filter(|&d| d != rows);
                Layout {
                    rows,
                    cols,
                    quarterly: q && months == 3 && rows != Dim::Month && cols != Some(Dim::Month),
                }
            })
        };
        (
            prop::collection::vec(0u64..=40, n),
            prop::collection::vec(layout, 1..=3),
            prop::collection::vec((0..months + 1, 0..a + 1, any::<bool>(), 0u64..=3), 0..=2),
        )
            .prop_map(move |(values, tables, knowns)| {
                let mut truth = BTreeMap::new();
                let mut it = values.into_iter();
                for m in 0..months {
                    for x in 0..a {
                        for y in 0..b {
                            truth.insert((m, x, y), it.next().expect("n values"));
                        }
                    }
                }
                let knowns = knowns
                    .into_iter()
                    .map(|(m, x, exact, slack)| {
                        // A known figure is for a month, or for the quarter
                        // when the world has all three months.
                        let m = match (m < months, months) {
                            (true, _) => Some(m),
                            (false, 3) => None,
                            (false, _) => Some(0),
                        };
                        let x = (x < a && a > 1).then_some(x);
                        let v: u64 = (truth.iter())
                            .filter(|((cm, cx, _), _)| {
                                m.is_none_or(|m| m == *cm) && x.is_none_or(|x| x == *cx)
                            })
                            .map(|(_, v)| v)
                            .sum();
                        let bounds = if exact {
                            (v, v)
                        } else {
                            (v.saturating_sub(slack), v + slack)
                        };
                        (m, x, bounds)
                    })
                    .collect();
                World {
                    months,
                    a,
                    b,
                    truth,
                    tables,
                    knowns,
                }
            })
    })
}

/// Which finest cells a figure counts: month set and optional a, b.
#[derive(Debug, Clone, Default)]
struct Region {
    months: Vec<usize>,
    a: Option<usize>,
    b: Option<usize>,
    /// Groups left out (a cell that lumps the groups no figure names).
    a_not: Vec<usize>,
}

impl Region {
    fn contains(&self, (m, x, y): Cell) -> bool {
        self.months.contains(&m)
            && self.a.is_none_or(|a| a == x)
            && self.b.is_none_or(|b| b == y)
            && !self.a_not.contains(&x)
    }
}

impl World {
    fn catalogue(&self) -> Catalogue {
        small_catalogue(&GROUPS[..self.a])
    }

    fn sum(&self, region: &Region) -> u64 {
        self.truth
            .iter()
            .filter(|(c, _)| region.contains(**c))
            .map(|(_, v)| v)
            .sum()
    }

    /// The release records, and each released cell's region and value.
    fn releases(&self) -> (Vec<ReleaseTable>, Vec<(Region, u64)>) {
        let mut records = Vec::new();
        let mut constraints = Vec::new();
        for t in &self.tables {
            let (range, periods): (String, Vec<Vec<usize>>) = if t.quarterly {
                ("2012-Q3".into(), vec![vec![0, 1, 2]])
            } else {
                let range = if self.months == 1 {
                    MONTHS[0].to_string()
                } else {
                    format!("{}..{}", MONTHS[0], MONTHS[self.months - 1])
                };
                (range, vec![(0..self.months).collect()])
            };
            let axis = |d: Dim| -> (String, Vec<String>, Vec<Region>) {
                let all: Vec<usize> = periods[0].clone();
                match d {
                    Dim::A => (
                        "payment_group".into(),
                        GROUPS[..self.a].iter().map(|s| s.to_string()).collect(),
                        (0..self.a)
                            .map(|x| Region {
                                months: all.clone(),
                                a: Some(x),
                                ..Region::default()
                            })
                            .collect(),
                    ),
                    Dim::B => (
                        "disability".into(),
                        DIS[..self.b].iter().map(|s| s.to_string()).collect(),
                        (0..self.b)
                            .map(|y| Region {
                                months: all.clone(),
                                b: Some(y),
                                ..Region::default()
                            })
                            .collect(),
                    ),
                    Dim::Month => (
                        "period".into(),
                        MONTHS[..self.months]
                            .iter()
                            .map(|s| s.to_string())
                            .collect(),
                        (0..self.months)
                            .map(|m| Region {
                                months: vec![m],
                                ..Region::default()
                            })
                            .collect(),
                    ),
                }
            };
            let (row_dim, row_codes, row_regions) = axis(t.rows);
            let cols = t.cols.map(axis);
            let col_regions: Vec<Region> = match &cols {
                Some((_, _, r)) => r.clone(),
                None => vec![Region {
                    months: periods[0].clone(),
                    ..Region::default()
                }],
            };
            let meet = |p: &Region, q: &Region| Region {
                months: p
                    .months
                    .iter()
                    .copied()
                    .filter(|m| q.months.contains(m))
                    .collect(),
                a: p.a.or(q.a),
                b: p.b.or(q.b),
                a_not: Vec::new(),
            };
            let mut truth_cells = Vec::new();
            for rr in &row_regions {
                let mut row = Vec::new();
                for cr in &col_regions {
                    let region = meet(rr, cr);
                    let v = self.sum(&region);
                    constraints.push((region, r(v)));
                    row.push(v);
                }
                truth_cells.push(row);
            }
            let codes: Vec<&str> = row_codes.iter().map(String::as_str).collect();
            let col_codes: Option<Vec<String>> = cols.as_ref().map(|(_, c, _)| c.clone());
            let col_refs: Option<Vec<&str>> = col_codes
                .as_ref()
                .map(|c| c.iter().map(String::as_str).collect());
            let col_dim = cols.as_ref().map(|(d, _, _)| d.clone());
            records.push(table(
                Measure::Referrals,
                &range,
                (&row_dim, &codes),
                col_dim.as_deref().zip(col_refs.as_deref()),
                &truth_cells,
            ));
        }
        (records, constraints)
    }

    fn known_figures(&self) -> Vec<(Known, Region)> {
        (self.knowns.iter().enumerate())
            .map(|(i, &(m, x, (lo, hi)))| {
                let mut extra = Vec::new();
                if let Some(x) = x {
                    extra.push(("payment_group".to_string(), GROUPS[x].to_string()));
                }
                let period = match m {
                    Some(m) => MONTHS[m].to_string(),
                    None if self.months == 3 => "2012-Q3".to_string(),
                    None => MONTHS[0].to_string(),
                };
                let months = match (m, self.months) {
                    (Some(m), _) => vec![m],
                    (None, 3) => vec![0, 1, 2],
                    (None, _) => vec![0],
                };
                let mut fixed = vec![("la_code".to_string(), LA.to_string())];
                fixed.extend(extra);
                let value = if lo == hi {
                    KnownValue::Exact(lo)
                } else {
                    KnownValue::Range(lo, hi)
                };
                let k = Known::new(
                    &self.catalogue(),
                    i as i64 + 1,
                    Measure::Referrals,
                    period.parse().expect("p"),
                    fixed,
                    value,
                    "test",
                )
                .expect("valid");
                (
                    k,
                    Region {
                        months,
                        a: x,
                        ..Region::default()
                    },
                )
            })
            .collect()
    }
}

/// Every non-negative integer assignment of the finest cells that meets
/// the constraints, visited by depth-first search with the partial sums
/// checked as soon as a constraint's last cell is set.
fn enumerate(
    cells: &[Cell],
    constraints: &[(Vec<usize>, u64, u64)],
    mut visit: impl FnMut(&[u64]),
) {
    let n = cells.len();
    let upper: Vec<u64> = (0..n)
        .map(|j| {
            (constraints.iter())
                .filter(|(s, _, _)| s.contains(&j))
                .map(|(_, _, hi)| *hi)
                .min()
                .expect("every cell is in a constraint")
        })
        .collect();
    let last: Vec<usize> = constraints
        .iter()
        .map(|(s, _, _)| *s.iter().max().expect("non-empty"))
        .collect();
    fn go(
        j: usize,
        x: &mut Vec<u64>,
        upper: &[u64],
        constraints: &[(Vec<usize>, u64, u64)],
        last: &[usize],
        visit: &mut dyn FnMut(&[u64]),
    ) {
        if j == upper.len() {
            visit(x);
            return;
        }
        for v in 0..=upper[j] {
            x[j] = v;
            let ok = (constraints.iter().zip(last)).all(|((s, lo, hi), &l)| {
                let partial: u64 = s.iter().filter(|&&k| k <= j).map(|&k| x[k]).sum();
                partial <= *hi && (l != j || partial >= *lo)
            });
            if ok {
                go(j + 1, x, upper, constraints, last, visit);
            } else if (constraints.iter()).any(|(s, _, hi)| {
                s.contains(&j) && s.iter().filter(|&&k| k <= j).map(|&k| x[k]).sum::<u64>() > *hi
            }) {
                break;
            }
        }
        x[j] = 0;
    }
    let mut x = vec![0; n];
    go(0, &mut x, &upper, constraints, &last, &mut visit);
}

/// The brute-force interval of every region asked about.
fn brute_force(
    world: &World,
    constraints: &[(Region, u64, u64)],
    asked: &[Region],
) -> Vec<(u64, u64)> {
    let cells: Vec<Cell> = world.truth.keys().copied().collect();
    let index = |region: &Region| -> Vec<usize> {
        (0..cells.len())
            .filter(|&j| region.contains(cells[j]))
            .collect()
    };
    let rows: Vec<(Vec<usize>, u64, u64)> = (constraints.iter())
        .map(|(r, lo, hi)| (index(r), *lo, *hi))
        .filter(|(s, _, _)| !s.is_empty())
        .collect();
    let sets: Vec<Vec<usize>> = asked.iter().map(index).collect();
    let mut bounds = vec![(u64::MAX, 0u64); asked.len()];
    enumerate(&cells, &rows, |x| {
        for (b, s) in bounds.iter_mut().zip(&sets) {
            let v: u64 = s.iter().map(|&j| x[j]).sum();
            b.0 = b.0.min(v);
            b.1 = b.1.max(v);
        }
    });
    bounds
}

/// The region of an audited figure, read back from its period and
/// categories.
fn region_of(period: &str, categories: &BTreeMap<String, String>) -> Region {
    let months = if period == "2012-Q3" {
        vec![0, 1, 2]
    } else if let Some((from, to)) = period.split_once(" to ") {
        let i = |p: &str| MONTHS.iter().position(|m| *m == p).expect("month");
        (i(from)..=i(to)).collect()
    } else {
        vec![MONTHS.iter().position(|m| *m == period).expect("month")]
    };
    Region {
        months,
        a: categories
            .get("payment_group")
            .map(|g| GROUPS.iter().position(|x| x == g).expect("group")),
        b: categories
            .get("disability")
            .map(|d| DIS.iter().position(|x| x == d).expect("dis")),
        a_not: Vec::new(),
    }
}

/// Checks every figure and cell interval of an audit against brute force.
fn check_against_brute_force(world: &World, a: &Audit) -> Result<(), TestCaseError> {
    let (_, released) = world.releases();
    let mut constraints: Vec<(Region, u64, u64)> = (released.into_iter())
        .map(|(region, r)| (region, r.saturating_sub(10), r + 9))
        .collect();
    constraints.extend(world.known_figures().into_iter().map(|(k, region)| {
        let (lo, hi) = k.value.bounds();
        (region, lo, hi)
    }));
    let mut asked: Vec<Region> = a
        .figures
        .iter()
        .map(|f| region_of(&f.period, &f.categories))
        .collect();
    let got: Vec<(u64, u64)> = (a.figures.iter().map(lo_hi))
        .chain(a.cells.iter().map(|c| (c.lo, c.hi)))
        .collect();
    // The groups some cell names: a cell that lumps the rest holds the others.
    let named: Vec<usize> = (a.cells.iter())
        .filter_map(|c| c.categories.get("payment_group"))
        .map(|g| GROUPS.iter().position(|x| x == g).expect("group"))
        .collect();
    for c in &a.cells {
        let mut region = region_of(&c.period, &c.categories);
        if c.rest.iter().any(|d| d == "payment_group") {
            region.a_not = named.clone();
            prop_assert_eq!(
                c.finest,
                (world.a
                    - named
                        .iter()
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()) as u64
            );
        } else {
            prop_assert!(c.rest.is_empty() && c.finest == 1, "{:?}", c);
        }
        asked.push(region);
    }
    let expected = brute_force(world, &constraints, &asked);
    prop_assert_eq!(
        got,
        expected,
        "figures {:#?}\ncells {:#?}",
        a.figures,
        a.cells
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The audit's intervals are exactly those of brute-force enumeration
    /// of every non-negative integer assignment consistent with the
    /// releases and the known figures: for the whole history, and with the
    /// last table as the candidate.
    #[test]
    fn intervals_equal_brute_force(world in world()) {
        let (records, _) = world.releases();
        let knowns: Vec<Known> = world.known_figures().into_iter().map(|(k, _)| k).collect();
        let catalogue = world.catalogue();
        let full = audit(&catalogue, &released(records.clone()), &knowns, None, &AuditPolicy::default());
        prop_assert!(!full.has(Code::LedgerInconsistent), "{:#?}", full.findings);
        check_against_brute_force(&world, &full)?;
        let (last, earlier) = records.split_last().expect("a table");
        let next = audit(&catalogue, &released(earlier.to_vec()), &knowns, Some(last), &AuditPolicy::default());
        prop_assert!(next.figures.iter().any(|f| f.release.is_none()));
        check_against_brute_force(&world, &next)?;
    }
}

// ---------------------------------------------------------------------------
// Beyond a world: what its candidate may or may not reach.

/// The months of a world (`MONTHS`) and those beyond it.
const ALL_MONTHS: [&str; 7] = [
    "2012-07", "2012-08", "2012-09", "2012-10", "2012-11", "2012-12", "2013-01",
];

/// The periods of the tables beyond a world, and their months (indices
/// into `ALL_MONTHS`): the first reaches back to July, which every table
/// of the world covers; the second to September, which only a world of
/// three months has; the others stay beyond. None covers January 2013.
const BEYOND_RANGES: [(&str, &[usize]); 6] = [
    ("2012-07..2012-10", &[0, 1, 2, 3]),
    ("2012-09..2012-10", &[2, 3]),
    ("2012-10", &[3]),
    ("2012-Q4", &[3, 4, 5]),
    ("2012-11..2012-12", &[4, 5]),
    ("2012-12", &[5]),
];

/// The periods of the known figures beyond a world, and their months.
const BEYOND_KNOWN: [(&str, &[usize]); 4] = [
    ("2012-10", &[3]),
    ("2012-11", &[4]),
    ("2012-12", &[5]),
    ("2012-Q4", &[3, 4, 5]),
];

/// Referrals tables and known figures beyond a world's months, some
/// reaching back into them, laid out by payment group, disability (even in
/// a world without it) or month, and sent from true counts that agree with
/// the world's.
#[derive(Debug, Clone)]
struct Beyond {
    /// True counts of October 2012 to January 2013 by (month, group,
    /// disability), for three groups and both disability codes.
    values: Vec<u64>,
    /// (index into `BEYOND_RANGES`, rows, columns).
    tables: Vec<(usize, Dim, Option<Dim>)>,
    /// (index into `BEYOND_KNOWN`, group or all, exact, slack).
    knowns: Vec<(usize, Option<usize>, bool, u64)>,
}

fn beyond() -> impl Strategy<Value = Beyond> {
    let dims = [Dim::A, Dim::B, Dim::Month];
    let layout = (0..BEYOND_RANGES.len(), 0..3usize, 0..4usize).prop_map(move |(i, r, c)| {
        // Months are laid out only over a range of them.
        let by_month = BEYOND_RANGES[i].0.contains("..");
        let fits = |d: &Dim| *d != Dim::Month || by_month;
        let rows = Some(dims[r]).filter(fits).unwrap_or(Dim::A);
        let cols = dims.get(c).copied().filter(|d| *d != rows && fits(d));
        (i, rows, cols)
    });
    (
        prop::collection::vec(0u64..=40, 4 * 3 * 2),
        prop::collection::vec(layout, 0..=3),
        prop::collection::vec(
            (0..BEYOND_KNOWN.len(), 0..4usize, any::<bool>(), 0u64..=3),
            0..=2,
        ),
    )
        .prop_map(|(values, tables, knowns)| Beyond {
            values,
            tables,
            knowns: (knowns.into_iter())
                .map(|(i, x, exact, slack)| (i, (x < 3).then_some(x), exact, slack))
                .collect(),
        })
}

impl Beyond {
    /// The true counts of every month of `ALL_MONTHS`: the world's in its
    /// months (all under the first disability code in a world without
    /// disability), none in the months of the quarter it lacks, and
    /// `values` beyond.
    fn truth(&self, world: &World) -> BTreeMap<Cell, u64> {
        let mut truth = BTreeMap::new();
        for m in 0..ALL_MONTHS.len() {
            for x in 0..world.a {
                for y in 0..DIS.len() {
                    let v = match m {
                        0..3 if m < world.months && y < world.b => world.truth[&(m, x, y)],
                        0..3 => 0,
                        _ => self.values[((m - 3) * 3 + x) * 2 + y],
                    };
                    truth.insert((m, x, y), v);
                }
            }
        }
        truth
    }

    /// The tables beyond the world, and the known figures (numbered from
    /// `first_id`).
    fn records(&self, world: &World, first_id: i64) -> (Vec<ReleaseTable>, Vec<Known>) {
        let truth = self.truth(world);
        let tables = (self.tables.iter())
            .map(|&(i, rows, cols)| {
                let (range, months) = BEYOND_RANGES[i];
                laid_out(
                    Measure::Referrals,
                    range,
                    months,
                    world.a,
                    (rows, cols),
                    &truth,
                )
            })
            .collect();
        let knowns = (self.knowns.iter())
            .filter(|(_, x, _, _)| x.is_none_or(|x| x < world.a))
            .enumerate()
            .map(|(n, &(i, x, exact, slack))| {
                let (period, months) = BEYOND_KNOWN[i];
                let region = Region {
                    months: months.to_vec(),
                    a: x,
                    ..Region::default()
                };
                let v = sum_of(&truth, &region);
                let value = if exact {
                    KnownValue::Exact(v)
                } else {
                    KnownValue::Range(v.saturating_sub(slack), v + slack)
                };
                let group = x.map(|x| ("payment_group", GROUPS[x]));
                world_known(world, first_id + n as i64, period, group, value)
            })
            .collect();
        (tables, knowns)
    }

    /// What no table of the world or beyond it can reach: a referrals table
    /// by disability and group of January 2013, an attachments table of the
    /// world's months, and a known figure of January 2013's disabled.
    fn unreachable(&self, world: &World, id: i64) -> (Vec<ReleaseTable>, Known) {
        let truth = self.truth(world);
        let january = laid_out(
            Measure::Referrals,
            ALL_MONTHS[6],
            &[6],
            world.a,
            (Dim::B, Some(Dim::A)),
            &truth,
        );
        let months: Vec<usize> = (0..world.months).collect();
        let range = match world.months {
            1 => MONTHS[0].to_string(),
            n => format!("{}..{}", MONTHS[0], MONTHS[n - 1]),
        };
        let attachments = laid_out(
            Measure::Attachments,
            &range,
            &months,
            world.a,
            (Dim::A, None),
            &truth,
        );
        let disabled = Region {
            months: vec![6],
            b: Some(0),
            ..Region::default()
        };
        let value = KnownValue::Exact(sum_of(&truth, &disabled));
        let known = world_known(
            world,
            id,
            ALL_MONTHS[6],
            Some(("disability", DIS[0])),
            value,
        );
        (vec![january, attachments], known)
    }
}

/// The true count of a region.
fn sum_of(truth: &BTreeMap<Cell, u64>, region: &Region) -> u64 {
    (truth.iter())
        .filter(|(c, _)| region.contains(**c))
        .map(|(_, v)| v)
        .sum()
}

/// A known referrals figure of the LA in a world.
fn world_known(
    world: &World,
    id: i64,
    period: &str,
    category: Option<(&str, &str)>,
    value: KnownValue,
) -> Known {
    let mut fixed = vec![("la_code".to_string(), LA.to_string())];
    fixed.extend(category.map(|(d, c)| (d.to_string(), c.to_string())));
    Known::new(
        &world.catalogue(),
        id,
        Measure::Referrals,
        period.parse().expect("period"),
        fixed,
        value,
        "test",
    )
    .expect("valid")
}

/// A table of `measure` over `range` (the months `months`, indices into
/// `ALL_MONTHS`) laid out by rows and columns of the first `a` groups, both
/// disability codes or the months, sent from `truth`.
fn laid_out(
    measure: Measure,
    range: &str,
    months: &[usize],
    a: usize,
    (rows, cols): (Dim, Option<Dim>),
    truth: &BTreeMap<Cell, u64>,
) -> ReleaseTable {
    let all = |a, b| Region {
        months: months.to_vec(),
        a,
        b,
        a_not: Vec::new(),
    };
    let axis = |d: Dim| -> (&'static str, Vec<&'static str>, Vec<Region>) {
        match d {
            Dim::A => (
                "payment_group",
                GROUPS[..a].to_vec(),
                (0..a).map(|x| all(Some(x), None)).collect(),
            ),
            Dim::B => (
                "disability",
                DIS.to_vec(),
                (0..DIS.len()).map(|y| all(None, Some(y))).collect(),
            ),
            Dim::Month => (
                "period",
                months.iter().map(|&m| ALL_MONTHS[m]).collect(),
                (months.iter())
                    .map(|&m| Region {
                        months: vec![m],
                        ..Region::default()
                    })
                    .collect(),
            ),
        }
    };
    let (row_dim, row_codes, row_regions) = axis(rows);
    let cols = cols.map(axis);
    let col_regions = cols
        .as_ref()
        .map_or_else(|| vec![all(None, None)], |(_, _, r)| r.clone());
    let values: Vec<Vec<u64>> = (row_regions.iter())
        .map(|rr| {
            (col_regions.iter())
                .map(|cr| {
                    (truth.iter())
                        .filter(|(c, _)| rr.contains(**c) && cr.contains(**c))
                        .map(|(_, v)| v)
                        .sum()
                })
                .collect()
        })
        .collect();
    table(
        measure,
        range,
        (row_dim, &row_codes),
        cols.as_ref().map(|(d, codes, _)| (*d, &codes[..])),
        &values,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// With any of the tables of a world or beyond it as the candidate and
    /// the others as the history, the audit that models only what the
    /// candidate reaches gives the answer of the one that models the whole
    /// ledger. Some of the history is always out of reach (a referrals
    /// table by disability and a known figure of a month no other table
    /// covers, and a table of another measure), so every case prunes, and
    /// what is pruned may be all that names disability.
    #[test]
    fn a_candidate_gets_the_answer_of_the_whole_ledger(
        world in world(),
        beyond in beyond(),
        pick in any::<proptest::sample::Index>(),
    ) {
        let (mut records, _) = world.releases();
        let mut knowns: Vec<Known> = world.known_figures().into_iter().map(|(k, _)| k).collect();
        let (tables, beyond_knowns) = beyond.records(&world, knowns.len() as i64 + 1);
        records.extend(tables);
        knowns.extend(beyond_knowns);
        let (unreachable, known) = beyond.unreachable(&world, knowns.len() as i64 + 1);
        knowns.push(known);
        let catalogue = world.catalogue();
        let next = records.remove(pick.index(records.len()));
        records.extend(unreachable);
        let history = released(records);
        let policy = AuditPolicy::default();
        let pruned = audit(&catalogue, &history, &knowns, Some(&next), &policy);
        let whole = audit_whole_ledger(&catalogue, &history, &knowns, Some(&next), &policy);
        prop_assert!(!whole.has(Code::LedgerInconsistent), "{:#?}", whole.findings);
        prop_assert!(
            pruned.stats.components < whole.stats.components,
            "nothing was pruned: {:?} {:?}",
            pruned.stats,
            whole.stats
        );
        prop_assert_eq!(without_components(pruned), without_components(whole));
    }
}

/// The checker itself: a bound one wider than the truth is caught.
#[test]
fn the_brute_force_check_catches_a_loosened_bound() {
    let world = World {
        months: 1,
        a: 2,
        b: 1,
        truth: BTreeMap::from([((0, 0, 0), 9), ((0, 1, 0), 9)]),
        tables: vec![Layout {
            rows: Dim::A,
            cols: None,
            quarterly: false,
        }],
        knowns: vec![(None, None, (18, 18))],
    };
    let (records, _) = world.releases();
    let knowns: Vec<Known> = world.known_figures().into_iter().map(|(k, _)| k).collect();
    let mut a = audit(
        &world.catalogue(),
        &released(records),
        &knowns,
        None,
        &AuditPolicy::default(),
    );
    assert!(check_against_brute_force(&world, &a).is_ok());
    a.figures[0].hi += 1;
    assert!(check_against_brute_force(&world, &a).is_err());
}
