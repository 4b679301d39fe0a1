//! SANITISER.md's worked cases T1–T15, T21 and T22, through the public
//! library API: a long counts CSV (or participant records) is read,
//! sanitised and rendered exactly as the daemon and `mishare sanitise` do
//! it. Every table is laid out in full (R15): every declared category of
//! every dimension it uses, so cases that name only some payment groups
//! declare just those.

use std::io::Write;

use mishare::reference::{Dimensions, LaReference, LocalAuthority};
use mishare::sanitiser::{
    Blocked, Body, Catalogue, Classification, Code, InputError, Measure, PeriodGrain, Sanitised,
    TableSpec, View, read_counts, read_records, render, sanitise,
};

const GROUPS: [&str; 9] = [
    "JSA 18-24",
    "JSA 25+",
    "JSA Early Access",
    "JSA Ex-IB",
    "ESA Volunteers",
    "New ESA Claimants",
    "ESA Ex-IB",
    "IB/IS",
    "JSA Prison Leavers",
];

fn spec(measure: Measure, view: View, rows: &str, cols: Option<&str>) -> TableSpec {
    TableSpec {
        view,
        cols: cols.map(str::to_string),
        classification: Some(Classification::Internal),
        ..TableSpec::new(measure, rows)
    }
}

/// Declared dimensions from a `dimension,category,label` file's rows, and
/// LAs with these codes (in this order).
fn catalogue(dimensions: &str, las: &[&str]) -> Catalogue {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(file, "dimension,category,label\n{dimensions}").expect("write");
    let dimensions = Dimensions::load(file.path()).expect("a valid declaration");
    let las = las.iter().map(|code| LocalAuthority {
        code: code.to_string(),
        name: format!("{code} Council"),
        cpa: "Area".to_string(),
    });
    Catalogue::new(dimensions, LaReference::from_entries(las))
}

/// The payment groups T5 uses, alone.
const T5_GROUPS: &str =
    "payment_group,JSA 18-24,\npayment_group,JSA 25+,\npayment_group,ESA Ex-IB,\n";

fn blocked(e: InputError) -> Blocked {
    match e {
        InputError::Blocked(b) => b,
        other => panic!("unexpected I/O error: {other}"),
    }
}

fn run(csv: &str, spec: &TableSpec) -> Result<Sanitised, Blocked> {
    run_with(csv, spec, &Catalogue::default())
}

fn run_with(csv: &str, spec: &TableSpec, catalogue: &Catalogue) -> Result<Sanitised, Blocked> {
    let table = read_counts(csv.as_bytes(), "counts.csv", spec, catalogue).map_err(blocked)?;
    sanitise(spec, &table)
}

/// T5's spec: job starts by the three groups × 2012-Q1, 2012-Q2.
fn t5_spec() -> TableSpec {
    let mut s = spec(
        Measure::JobStarts,
        View::Counts,
        "payment_group",
        Some("period"),
    );
    s.period = PeriodGrain::Quarter;
    s.periods = Some("2012-Q1..2012-Q2".parse().expect("range"));
    s
}

/// A one-column counts CSV over the payment groups, in reference order.
fn by_group(counts: &[u64]) -> String {
    let mut csv = String::from("payment_group,count\n");
    for (g, c) in GROUPS.iter().zip(counts) {
        csv.push_str(&format!("{g},{c}\n"));
    }
    csv
}

fn counts(s: &Sanitised) -> (Vec<Vec<u64>>, Vec<u64>, Vec<u64>, u64) {
    match s.body() {
        Body::Counts {
            cells,
            row_totals,
            col_totals,
            total,
        } => (
            cells
                .iter()
                .map(|r| r.iter().map(|x| x.get()).collect())
                .collect(),
            row_totals.iter().map(|x| x.get()).collect(),
            col_totals.iter().map(|x| x.get()).collect(),
            total.get(),
        ),
        Body::Shares { .. } => panic!("expected counts"),
    }
}

fn column(cells: Vec<Vec<u64>>) -> Vec<u64> {
    cells.into_iter().map(|r| r[0]).collect()
}

fn shares(s: &Sanitised) -> Vec<Vec<Option<u8>>> {
    match s.body() {
        Body::Shares { cells } => cells.clone(),
        Body::Counts { .. } => panic!("expected shares"),
    }
}

fn codes(s: &Sanitised) -> Vec<Code> {
    s.findings().iter().map(|f| f.code).collect()
}

fn warnings(s: &Sanitised) -> Vec<Code> {
    codes(s)
        .into_iter()
        .filter(|c| c.as_str().starts_with("W_"))
        .collect()
}

#[test]
fn t1_rounding_through_the_pipeline() {
    let input = [
        0, 1, 9, 10, 11, 19, 20, 29, 30, 31, 49, 50, 51, 99, 100, 110, 1234,
    ];
    let expected = [
        0, 0, 0, 20, 20, 20, 20, 20, 40, 40, 40, 60, 60, 100, 100, 120, 1240,
    ];
    let mut csv = String::from("cell,count\n");
    let mut declared = String::from("payment_group,JSA,\n");
    for (i, x) in input.iter().enumerate() {
        csv.push_str(&format!("c{i:02},{x}\n"));
        declared.push_str(&format!("cell,c{i:02},\n"));
    }
    let out = run_with(
        &csv,
        &spec(Measure::Referrals, View::Counts, "cell", None),
        &catalogue(&declared, &[]),
    )
    .expect("valid");
    assert_eq!(column(counts(&out).0), expected);
}

#[test]
fn t2_invalid_and_missing_values_block_with_every_reason() {
    let csv = "payment_group,count\nJSA 18-24,-5\nJSA 25+,12.5\nJSA Ex-IB,\"1,234\"\nIB/IS,\n";
    let blocked = run(
        csv,
        &spec(Measure::Referrals, View::Counts, "payment_group", None),
    )
    .expect_err("blocked");
    let got: Vec<(Code, &str)> = blocked
        .errors
        .iter()
        .map(|e| (e.code, e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Code::InvalidValue,
                "counts.csv line 2, column count: \"-5\" is not a whole number"
            ),
            (
                Code::InvalidValue,
                "counts.csv line 3, column count: \"12.5\" is not a whole number"
            ),
            (
                Code::InvalidValue,
                "counts.csv line 4, column count: \"1,234\" is not a whole number"
            ),
            (
                Code::MissingValue,
                "counts.csv line 5, column count: the count is empty"
            ),
        ]
    );
}

#[test]
fn t2_exponent_and_text_are_invalid_too() {
    for bad in ["1e3", "ten", "+5", " 5", "0x10", "５"] {
        let csv = format!("payment_group,count\nJSA 25+,{bad}\n");
        let blocked = run(
            &csv,
            &spec(Measure::Referrals, View::Counts, "payment_group", None),
        )
        .expect_err(bad);
        assert_eq!(blocked.errors[0].code, Code::InvalidValue, "{bad}");
    }
}

#[test]
fn t3_the_largest_count_passes_and_one_more_blocks() {
    let s = spec(Measure::Referrals, View::Counts, "payment_group", None);
    let ok = run("payment_group,count\nJSA 25+,1000000000000\n", &s).expect("at the limit");
    assert_eq!(counts(&ok).3, 1_000_000_000_000);
    for too_big in ["1000000000001", "99999999999999999999999"] {
        let blocked =
            run(&format!("payment_group,count\nJSA 25+,{too_big}\n"), &s).expect_err("over");
        assert_eq!(blocked.errors[0].code, Code::ValueTooLarge);
        assert!(blocked.errors[0].message.contains("line 2, column count"));
    }
}

#[test]
fn t4_referrals_total_is_the_sum_of_rounded_cells() {
    let csv = by_group(&[412, 655, 138, 27, 14, 96, 31, 6, 19]);
    let out = run(
        &csv,
        &spec(Measure::Referrals, View::Counts, "payment_group", None),
    )
    .expect("ok");
    let (cells, _, col_totals, total) = counts(&out);
    assert_eq!(column(cells), [420, 660, 140, 20, 20, 100, 40, 0, 20]);
    assert_eq!(total, 1420, "not R(1398) = 1400");
    assert_eq!(col_totals, [1420]);
    assert_eq!(warnings(&out), []);
}

const T5: &str = "payment_group,period,count
JSA 18-24,2012-Q1,57
JSA 18-24,2012-Q2,64
JSA 25+,2012-Q1,103
JSA 25+,2012-Q2,88
ESA Ex-IB,2012-Q1,9
ESA Ex-IB,2012-Q2,14
";

#[test]
fn t5_job_starts_two_way_table() {
    let out = run_with(T5, &t5_spec(), &catalogue(T5_GROUPS, &[])).expect("ok");
    assert_eq!(out.rows(), ["JSA 18-24", "JSA 25+", "ESA Ex-IB"]);
    assert_eq!(out.cols(), ["2012-Q1", "2012-Q2"]);
    let (cells, row_totals, col_totals, total) = counts(&out);
    assert_eq!(cells, [vec![60, 60], vec![100, 80], vec![0, 20]]);
    assert_eq!(row_totals, [120, 180, 20]);
    assert_eq!(col_totals, [160, 160]);
    assert_eq!(total, 320);
    assert_eq!(warnings(&out), []);
}

#[test]
fn t6_all_small_cells_warn_twice() {
    let out = run(
        &by_group(&[9, 9, 9, 9, 9]),
        &spec(Measure::Referrals, View::Counts, "payment_group", None),
    )
    .expect("ok");
    let (cells, _, _, total) = counts(&out);
    assert_eq!(
        column(cells),
        [0; 9],
        "the four groups with nobody show 0 too"
    );
    assert_eq!(total, 0);
    assert_eq!(warnings(&out), [Code::Distortion, Code::SmallCells]);
}

#[test]
fn t7_distortion_of_plus_40_is_25_percent() {
    let csv = "payment_group,count\nJSA 18-24,10\nJSA 25+,30\nJSA Early Access,50\nJSA Ex-IB,70\n";
    let out = run(
        csv,
        &spec(Measure::Attachments, View::Counts, "payment_group", None),
    )
    .expect("ok");
    let (cells, _, _, total) = counts(&out);
    assert_eq!(column(cells), [20, 40, 60, 80, 0, 0, 0, 0, 0]);
    assert_eq!(total, 200);
    assert_eq!(warnings(&out), [Code::Distortion]);
    let message = &out.findings()[0].message;
    assert!(message.contains("+40, 25%"), "{message}");
}

/// The exact total stays with the provider: W_DISTORTION's message holds
/// it for the operator, and no finding is ever part of the LA's file.
#[test]
fn t7_the_distortion_message_never_reaches_the_file() {
    let csv = "payment_group,count\nJSA 18-24,10\nJSA 25+,30\nJSA Early Access,50\nJSA Ex-IB,70\n";
    let out = run(
        csv,
        &spec(Measure::Attachments, View::Counts, "payment_group", None),
    )
    .expect("ok");
    assert!(out.has(Code::Distortion));
    let file = String::from_utf8(render::csv(&out)).expect("utf8");
    for finding in out.findings() {
        assert!(!file.contains(&finding.message), "{file}");
        assert!(!file.contains(finding.code.as_str()), "{file}");
    }
    assert!(!file.contains("160"), "the true total 160: {file}");
    assert!(!file.contains("25%"), "{file}");
}

#[test]
fn t8_declared_total_that_does_not_add_up_blocks() {
    let csv = "payment_group,count\nJSA 18-24,40\nJSA 25+,25\nTotal,70\n";
    let blocked = run(
        csv,
        &spec(Measure::Referrals, View::Counts, "payment_group", None),
    )
    .expect_err("non-additive");
    assert_eq!(blocked.errors.len(), 1);
    assert_eq!(blocked.errors[0].code, Code::NonAdditive);
    assert!(blocked.errors[0].message.contains("line 4"), "{blocked}");
}

#[test]
fn t8_declared_totals_that_add_up_are_checked_then_dropped() {
    let csv = "payment_group,period,count
JSA 18-24,2012-Q1,40
JSA 25+,2012-Q1,25
TOTAL,2012-Q1,65
JSA 18-24,total,40
total,Total,65
";
    let mut s = spec(
        Measure::Referrals,
        View::Counts,
        "payment_group",
        Some("period"),
    );
    s.period = PeriodGrain::Quarter;
    s.periods = Some("2012-Q1".parse().expect("a quarter"));
    let out = run(csv, &s).expect("additive");
    assert_eq!(out.rows(), GROUPS, "no Total row: every group, once");
    assert_eq!(out.cols(), ["2012-Q1"]);
    assert_eq!(counts(&out).3, 60);
}

#[test]
fn t9_outcome_volumes_are_refused_before_reading() {
    for measure in [Measure::JobOutcomes, Measure::Sustainments] {
        let s = spec(measure, View::Counts, "payment_group", None);
        // Even unreadable input is not looked at: the request itself is refused.
        let blocked = run("not,a\ncounts,file\n", &s).expect_err("outcome volume");
        assert_eq!(blocked.errors.len(), 1);
        assert_eq!(blocked.errors[0].code, Code::OutcomeVolume);
    }
}

#[test]
fn t10_outcome_shares_by_payment_group() {
    let csv = by_group(&[118, 236, 41, 4, 3, 22, 6, 1, 9]);
    let out = run(
        &csv,
        &spec(Measure::JobOutcomes, View::Shares, "payment_group", None),
    )
    .expect("ok");
    let got: Vec<Option<u8>> = shares(&out).into_iter().map(|r| r[0]).collect();
    let expected = [29, 57, 10, 0, 0, 5, 0, 0, 0].map(Some);
    assert_eq!(got, expected);
    assert!(codes(&out).contains(&Code::PctSum));
    assert!(codes(&out).contains(&Code::SmallCells));
    let pct = out
        .findings()
        .iter()
        .find(|f| f.code == Code::PctSum)
        .expect("note");
    assert!(pct.message.contains("101"), "{}", pct.message);
    // No base, count or total is shown beside shares.
    let json: serde_json::Value = serde_json::from_str(&render::json(&out)).expect("json");
    for key in ["total", "row_totals", "col_totals"] {
        assert!(
            json.get(key).is_none(),
            "{key} must not appear in the shares view"
        );
    }
    let csv = String::from_utf8(render::csv(&out)).expect("utf8");
    assert!(!csv.contains("Total"), "{csv}");
}

#[test]
fn t11_small_base_suppresses_the_column() {
    let csv = "payment_group,count\nJSA 18-24,12\nJSA 25+,25\nJSA Early Access,8\nJSA Ex-IB,3\n";
    let out = run(
        csv,
        &spec(Measure::JobOutcomes, View::Shares, "payment_group", None),
    )
    .expect("ok");
    assert_eq!(shares(&out), vec![vec![None]; 9]);
    let suppressed = out
        .findings()
        .iter()
        .find(|f| f.code == Code::SmallBase)
        .expect("S_SMALL_BASE");
    assert!(suppressed.message.contains("40"), "{}", suppressed.message);
    assert!(codes(&out).contains(&Code::SmallCells));
    let csv = String::from_utf8(render::csv(&out)).expect("utf8");
    assert_eq!(csv.matches("[c]").count(), 9, "{csv}");
}

#[test]
fn t12_sustainments_by_disability() {
    let csv = "disability,count\nY,47\nN,133\n";
    let out = run(
        csv,
        &spec(Measure::Sustainments, View::Shares, "disability", None),
    )
    .expect("ok");
    assert_eq!(
        out.rows(),
        ["Disabled", "Not disabled"],
        "the declared order (Y, N) and labels"
    );
    assert_eq!(shares(&out), [vec![Some(22)], vec![Some(78)]]);
    assert!(!codes(&out).contains(&Code::PctSum));
}

#[test]
fn t13_thirds_sum_to_99() {
    let csv = "payment_group,count\nJSA 18-24,35\nJSA 25+,41\nJSA Early Access,44\n";
    let out = run(
        csv,
        &spec(Measure::JobOutcomes, View::Shares, "payment_group", None),
    )
    .expect("ok");
    let mut expected = vec![vec![Some(33)]; 3];
    expected.extend(vec![vec![Some(0)]; 6]);
    assert_eq!(shares(&out), expected);
    let pct = out
        .findings()
        .iter()
        .find(|f| f.code == Code::PctSum)
        .expect("N_PCT_SUM");
    assert!(pct.message.contains("99"), "{}", pct.message);
}

#[test]
fn t14_shares_are_per_column() {
    let csv = "payment_group,la_code,count
JSA 18-24,LA1,58
JSA 25+,LA1,71
New ESA Claimants,LA1,12
JSA 18-24,LA2,14
JSA 25+,LA2,22
New ESA Claimants,LA2,3
";
    // LAs side by side: a published table (an internal one is for one LA).
    let mut s = spec(
        Measure::JobOutcomes,
        View::Shares,
        "payment_group",
        Some("la_code"),
    );
    s.classification = Some(Classification::Published);
    let declared = "payment_group,JSA 18-24,\npayment_group,JSA 25+,\n\
                    payment_group,New ESA Claimants,\n";
    let out = run_with(csv, &s, &catalogue(declared, &["LA1", "LA2"])).expect("ok");
    assert_eq!(out.cols(), ["LA1", "LA2"]);
    assert_eq!(
        shares(&out),
        [
            vec![Some(38), None],
            vec![Some(50), None],
            vec![Some(13), None]
        ]
    );
    let notes: Vec<(Code, bool, bool)> = out
        .findings()
        .iter()
        .filter(|f| matches!(f.code, Code::PctSum | Code::SmallBase))
        .map(|f| (f.code, f.message.contains("LA1"), f.message.contains("LA2")))
        .collect();
    assert_eq!(
        notes,
        [(Code::PctSum, true, false), (Code::SmallBase, false, true)]
    );
}

#[test]
fn t15_no_classification_means_internal_with_a_warning() {
    let groups = catalogue(T5_GROUPS, &[]);
    let mut s = t5_spec();
    s.classification = None;
    let out = run_with(T5, &s, &groups).expect("ok");
    let classified = run_with(T5, &t5_spec(), &groups).expect("ok");
    assert_eq!(out.body(), classified.body(), "T5's output");
    assert_eq!(out.classification(), Classification::Internal);
    assert!(
        out.label().starts_with("Internal MI – for "),
        "{}",
        out.label()
    );
    assert_eq!(warnings(&out), [Code::Unclassified]);
}

const RECORDS_HEADER: &str = "participant_id,la_code,payment_group,disability,referral_date,\
                              attachment_date,job_start_date,job_outcome_date,\
                              first_sustainment_date\n";

#[test]
fn t21_identifiers_dates_and_other_stages_are_refused() {
    let records = format!("{RECORDS_HEADER}P1,E1,JSA 25+,N,2012-09-03,,,2013-01-07,\n");
    // (rows, cols, filter, the code that refuses it)
    type Case<'a> = (&'a str, Option<&'a str>, Option<(&'a str, &'a str)>, Code);
    let cases: [Case; 3] = [
        ("participant_id", None, None, Code::NotADimension),
        (
            "payment_group",
            Some("job_outcome_date"),
            None,
            Code::NotADimension,
        ),
        (
            "payment_group",
            None,
            Some(("job_outcome_date", "")),
            Code::OutcomeRate,
        ),
    ];
    for (rows, cols, filter, code) in cases {
        let mut s = spec(Measure::Referrals, View::Counts, rows, cols);
        s.filters
            .extend(filter.map(|(d, v)| (d.to_string(), v.to_string())));
        let err = read_records(records.as_bytes(), "r.csv", &s, &Catalogue::default())
            .map_err(blocked)
            .expect_err(rows);
        let codes: Vec<Code> = err.errors.iter().map(|e| e.code).collect();
        assert_eq!(codes, [code], "{rows} {cols:?} {filter:?}: {err}");
    }
}

#[test]
fn t22_a_group_of_three_looks_like_a_group_of_none() {
    let mut records = String::from(RECORDS_HEADER);
    for i in 0..200 {
        records.push_str(&format!("P{i},E1,JSA 25+,N,2012-09-03,,,,\n"));
    }
    for i in 200..203 {
        records.push_str(&format!("P{i},E1,JSA Prison Leavers,N,2012-09-04,,,,\n"));
    }
    let s = spec(Measure::Referrals, View::Counts, "payment_group", None);
    let table =
        read_records(records.as_bytes(), "r.csv", &s, &Catalogue::default()).expect("valid");
    let out = sanitise(&s, &table).expect("ok");
    assert_eq!(out.rows(), GROUPS, "all nine groups, in reference order");
    let (cells, _, _, total) = counts(&out);
    assert_eq!(column(cells), [0, 200, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(total, 200);
    let file = String::from_utf8(render::csv(&out)).expect("utf8");
    let body: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        body,
        [
            "payment_group,All,Total",
            "JSA 18-24,0,0",
            "JSA 25+,200,200",
            "JSA Early Access,0,0",
            "JSA Ex-IB,0,0",
            "ESA Volunteers,0,0",
            "New ESA Claimants,0,0",
            "ESA Ex-IB,0,0",
            "IB/IS,0,0",
            "JSA Prison Leavers,0,0",
            "Total,200,200",
        ]
    );
}
