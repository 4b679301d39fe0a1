//! SANITISER.md's worked cases T1–T15, through the public library API: a
//! long counts CSV is read, sanitised and rendered exactly as the daemon and
//! `mishare sanitise` do it.

use mishare::reference::PaymentGroups;
use mishare::sanitiser::{
    Blocked, Body, Classification, Code, InputError, Measure, Sanitised, TableSpec, View,
    read_counts, render, sanitise,
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

fn run(csv: &str, spec: &TableSpec) -> Result<Sanitised, Blocked> {
    let table = read_counts(
        csv.as_bytes(),
        "counts.csv",
        spec,
        &PaymentGroups::default(),
    )
    .map_err(|e| match e {
        InputError::Blocked(b) => b,
        other => panic!("unexpected I/O error: {other}"),
    })?;
    sanitise(spec, &table)
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
    for (i, x) in input.iter().enumerate() {
        csv.push_str(&format!("c{i:02},{x}\n"));
    }
    let out = run(&csv, &spec(Measure::Referrals, View::Counts, "cell", None)).expect("valid");
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
    let out = run(
        T5,
        &spec(
            Measure::JobStarts,
            View::Counts,
            "payment_group",
            Some("period"),
        ),
    )
    .expect("ok");
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
    assert_eq!(column(cells), [0, 0, 0, 0, 0]);
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
    assert_eq!(column(cells), [20, 40, 60, 80]);
    assert_eq!(total, 200);
    assert_eq!(warnings(&out), [Code::Distortion]);
    let message = &out.findings()[0].message;
    assert!(message.contains("+40, 25%"), "{message}");
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
    let out = run(
        csv,
        &spec(
            Measure::Referrals,
            View::Counts,
            "payment_group",
            Some("period"),
        ),
    )
    .expect("additive");
    assert_eq!(out.rows(), ["JSA 18-24", "JSA 25+"]);
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
    assert_eq!(shares(&out), vec![vec![None]; 4]);
    let suppressed = out
        .findings()
        .iter()
        .find(|f| f.code == Code::SmallBase)
        .expect("S_SMALL_BASE");
    assert!(suppressed.message.contains("40"), "{}", suppressed.message);
    assert!(codes(&out).contains(&Code::SmallCells));
    let csv = String::from_utf8(render::csv(&out)).expect("utf8");
    assert_eq!(csv.matches("[c]").count(), 4, "{csv}");
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
        ["N", "Y"],
        "byte order for a non-reference dimension"
    );
    assert_eq!(shares(&out), [vec![Some(78)], vec![Some(22)]]);
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
    assert_eq!(shares(&out), vec![vec![Some(33)]; 3]);
    let pct = out
        .findings()
        .iter()
        .find(|f| f.code == Code::PctSum)
        .expect("N_PCT_SUM");
    assert!(pct.message.contains("99"), "{}", pct.message);
}

#[test]
fn t14_shares_are_per_column() {
    let csv = "payment_group,la,count
JSA 18-24,LA1,58
JSA 25+,LA1,71
New ESA Claimants,LA1,12
JSA 18-24,LA2,14
JSA 25+,LA2,22
New ESA Claimants,LA2,3
";
    let out = run(
        csv,
        &spec(
            Measure::JobOutcomes,
            View::Shares,
            "payment_group",
            Some("la"),
        ),
    )
    .expect("ok");
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
    let mut s = spec(
        Measure::JobStarts,
        View::Counts,
        "payment_group",
        Some("period"),
    );
    s.classification = None;
    let out = run(T5, &s).expect("ok");
    let classified = run(
        T5,
        &spec(
            Measure::JobStarts,
            View::Counts,
            "payment_group",
            Some("period"),
        ),
    )
    .expect("ok");
    assert_eq!(out.body(), classified.body(), "T5's output");
    assert_eq!(out.classification(), Classification::Internal);
    assert!(
        out.label().starts_with("Internal MI – for "),
        "{}",
        out.label()
    );
    assert_eq!(warnings(&out), [Code::Unclassified]);
}
