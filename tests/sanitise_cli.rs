//! `mishare sanitise` as scripts see it: flags, exit statuses, the
//! `error[CODE]: …` lines, the JSON shape and the CSV an LA receives.

mod common;

use std::path::Path;
use std::process::{Command, Output};

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().expect("temp dir"))
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> &Self {
        std::fs::write(self.0.path().join(name), contents).expect("write input");
        self
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Runs `mishare sanitise ARGS` in this directory.
    fn sanitise(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_mishare"))
            .arg("sanitise")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("run mishare");
        Run(output)
    }
}

/// The lines of a CSV after its leading `#` lines.
fn table_lines(csv: &str) -> Vec<String> {
    csv.lines()
        .skip_while(|l| l.starts_with('#'))
        .map(String::from)
        .collect()
}

struct Run(Output);

impl Run {
    fn code(&self) -> i32 {
        self.0.status.code().expect("exited, not killed")
    }
    fn stdout(&self) -> String {
        String::from_utf8(self.0.stdout.clone()).expect("utf8 stdout")
    }
    fn stderr(&self) -> String {
        String::from_utf8(self.0.stderr.clone()).expect("utf8 stderr")
    }
    /// Asserts a block: status 65, nothing on stdout, every stderr line an
    /// `error[CODE]: ` line; returns the stderr lines.
    fn blocked(&self) -> Vec<String> {
        assert_eq!(self.code(), 65, "stderr: {}", self.stderr());
        assert_eq!(self.stdout(), "", "a blocked table prints nothing");
        let lines: Vec<String> = self.stderr().lines().map(str::to_string).collect();
        assert!(!lines.is_empty());
        for line in &lines {
            assert!(line.starts_with("error["), "not an error line: {line}");
        }
        lines
    }
}

const T5: &str = "payment_group,period,count
JSA 18-24,2012-Q1,57
JSA 18-24,2012-Q2,64
JSA 25+,2012-Q1,103
JSA 25+,2012-Q2,88
ESA Ex-IB,2012-Q1,9
ESA Ex-IB,2012-Q2,14
";

const LAS: &str = "la_code,la_name,cpa\nE09000002,Barking and Dagenham,London East\n\
                   E09000030,Tower Hamlets,London East\n";

/// T5's payment groups, alone, so the table shows just those three.
const T5_GROUPS: &str = "payment_group\nJSA 18-24\nJSA 25+\nESA Ex-IB\n";

const T5_ARGS: [&str; 14] = [
    "--counts",
    "counts.csv",
    "--measure",
    "job_starts",
    "--rows",
    "payment_group",
    "--cols",
    "period",
    "--period",
    "quarter",
    "--periods",
    "2012-Q1..2012-Q2",
    "--payment-groups",
    "groups.csv",
];

/// T5 with an `la_code` column, for E09000002, and rows for another LA
/// that an internal file for E09000002 must not count.
const T5_BY_LA: &str = "payment_group,period,la_code,count
JSA 18-24,2012-Q1,E09000002,57
JSA 18-24,2012-Q2,E09000002,64
JSA 25+,2012-Q1,E09000002,103
JSA 25+,2012-Q2,E09000002,88
ESA Ex-IB,2012-Q1,E09000002,9
ESA Ex-IB,2012-Q2,E09000002,14
JSA 25+,2012-Q1,E09000030,500
";

const RECORDS_HEADER: &str = "participant_id,la_code,payment_group,disability,referral_date,\
                              attachment_date,job_start_date,job_outcome_date,\
                              first_sustainment_date\n";

#[test]
fn csv_is_exactly_the_file_an_la_receives() {
    let dir = Dir::new();
    dir.write("counts.csv", T5_BY_LA)
        .write("las.csv", LAS)
        .write("groups.csv", T5_GROUPS);
    let mut args = T5_ARGS.to_vec();
    args.extend([
        "--classification",
        "internal",
        "--recipient",
        "E09000002",
        "--las",
        "las.csv",
    ]);
    let run = dir.sanitise(&args);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        run.stdout(),
        "# Internal MI – for Barking and Dagenham (E09000002) only – not for publication
# Rounded to nearest 20 (halves up); totals are sums of rounded figures; percentages are computed from rounded figures.
# Measure: job_starts; view: counts
# Period: 2012-Q1 to 2012-Q2
payment_group,2012-Q1,2012-Q2,Total
JSA 18-24,60,60,120
JSA 25+,100,80,180
ESA Ex-IB,0,20,20
Total,160,160,320
"
    );
    assert_eq!(run.stderr(), "", "no findings for T5");
}

#[test]
fn json_has_the_contract_shape() {
    let dir = Dir::new();
    dir.write("counts.csv", T5).write("groups.csv", T5_GROUPS);
    let mut args = T5_ARGS.to_vec();
    args.extend(["--format", "json", "--classification", "published"]);
    let run = dir.sanitise(&args);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let json: serde_json::Value = serde_json::from_str(&run.stdout()).expect("one JSON object");
    let keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "measure",
        "view",
        "classification",
        "recipient",
        "label",
        "provider",
        "report",
        "periods",
        "made_at",
        "rows",
        "cols",
        "cells",
        "row_totals",
        "col_totals",
        "total",
        "findings",
        "method",
    ];
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected);
    assert_eq!(json["measure"], "job_starts");
    assert_eq!(json["view"], "counts");
    assert_eq!(json["classification"], "published");
    assert_eq!(json["recipient"], serde_json::Value::Null);
    assert_eq!(json["label"], "Published – public domain");
    assert_eq!(
        json["periods"],
        serde_json::json!({"grain": "quarter", "first": "2012-Q1", "last": "2012-Q2"})
    );
    for unknown in ["provider", "report", "made_at"] {
        assert_eq!(json[unknown], serde_json::Value::Null, "{unknown}");
    }
    assert_eq!(json["cols"], serde_json::json!(["2012-Q1", "2012-Q2"]));
    assert_eq!(
        json["cells"],
        serde_json::json!([[60, 60], [100, 80], [0, 20]])
    );
    assert_eq!(json["row_totals"], serde_json::json!([120, 180, 20]));
    assert_eq!(json["col_totals"], serde_json::json!([160, 160]));
    assert_eq!(json["total"], 320);
    assert_eq!(json["findings"], serde_json::json!([]));
}

#[test]
fn shares_json_carries_no_totals_and_null_for_suppressed() {
    let dir = Dir::new();
    dir.write(
        "counts.csv",
        "payment_group,la_code,count\nJSA 18-24,LA1,58\nJSA 25+,LA1,71\nNew ESA Claimants,LA1,12\n\
         JSA 18-24,LA2,14\nJSA 25+,LA2,22\nNew ESA Claimants,LA2,3\n",
    )
    .write(
        "las.csv",
        "la_code,la_name,cpa\nLA1,One,Area\nLA2,Two,Area\n",
    )
    .write(
        "dimensions.csv",
        "dimension,category,label\npayment_group,JSA 18-24,\npayment_group,JSA 25+,\n\
         payment_group,New ESA Claimants,\n",
    );
    let run = dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--measure",
        "job_outcomes",
        "--view",
        "shares",
        "--rows",
        "payment_group",
        "--cols",
        "la_code",
        "--las",
        "las.csv",
        "--dimensions",
        "dimensions.csv",
        "--classification",
        "published",
        "--format",
        "json",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let json: serde_json::Value = serde_json::from_str(&run.stdout()).expect("json");
    for key in ["total", "row_totals", "col_totals"] {
        assert!(json.get(key).is_none(), "{key} in the shares view");
    }
    assert_eq!(
        json["cells"],
        serde_json::json!([[38, null], [50, null], [13, null]])
    );
    let codes: Vec<&str> = json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["code"].as_str().expect("code"))
        .collect();
    assert_eq!(json["cols"], serde_json::json!(["LA1", "LA2"]));
    assert_eq!(codes, ["N_PCT_SUM", "S_SMALL_BASE"]);
}

#[test]
fn shares_csv_marks_suppressed_cells() {
    let dir = Dir::new();
    dir.write("counts.csv", "disability,count\nY,12\nN,25\n");
    let run = dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--measure",
        "sustainments",
        "--view",
        "shares",
        "--rows",
        "disability",
        "--classification",
        "published",
    ]);
    assert_eq!(run.code(), 0);
    let body = table_lines(&run.stdout());
    assert_eq!(
        body,
        ["disability,All", "Disabled,[c]", "Not disabled,[c]"],
        "declared order and labels"
    );
    assert!(
        run.stderr().contains("suppressed[S_SMALL_BASE]"),
        "{}",
        run.stderr()
    );
}

#[test]
fn blocked_input_prints_one_error_line_per_reason() {
    let dir = Dir::new();
    dir.write(
        "counts.csv",
        "payment_group,count\nJSA 18-24,1\nJSA 25+,2\nJSA Early Access,3\nJSA Ex-IB,4\n\
         ESA Volunteers,5\nNew ESA Claimants,12.5\nESA Ex-IB,\n",
    );
    let run = dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--measure",
        "referrals",
        "--rows",
        "payment_group",
    ]);
    assert_eq!(
        run.blocked(),
        [
            "error[E_INVALID_VALUE]: counts.csv line 7, column count: \"12.5\" is not a whole number",
            "error[E_MISSING_VALUE]: counts.csv line 8, column count: the count is empty",
        ]
    );
}

#[test]
fn outcome_volumes_are_refused() {
    let dir = Dir::new();
    dir.write("counts.csv", "payment_group,count\nJSA 25+,100\n");
    for measure in ["job_outcomes", "sustainments"] {
        let run = dir.sanitise(&[
            "--counts",
            "counts.csv",
            "--measure",
            measure,
            "--rows",
            "payment_group",
        ]);
        let lines = run.blocked();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("error[E_OUTCOME_VOLUME]: "),
            "{}",
            lines[0]
        );
    }
}

#[test]
fn strict_mode_blocks_on_warnings() {
    let dir = Dir::new();
    dir.write("counts.csv", T5).write("groups.csv", T5_GROUPS);
    let mut args = T5_ARGS.to_vec();
    args.push("--strict");
    let lines = dir.sanitise(&args).blocked();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("error[W_UNCLASSIFIED]: "),
        "{}",
        lines[0]
    );
}

#[test]
fn warnings_go_to_stderr_never_into_the_file() {
    let dir = Dir::new();
    dir.write(
        "counts.csv",
        "payment_group,count\nJSA 18-24,9\nJSA 25+,9\n",
    );
    let run = dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--measure",
        "referrals",
        "--rows",
        "payment_group",
    ]);
    assert_eq!(run.code(), 0);
    assert!(
        run.stderr().contains("warning[W_SMALL_CELLS]"),
        "{}",
        run.stderr()
    );
    assert!(!run.stdout().contains("W_"), "{}", run.stdout());
}

#[test]
fn malformed_csv_is_named_never_a_panic() {
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "ragged",
            b"payment_group,count\nJSA 25+,1,2\n",
            "error[E_MALFORMED_CSV]: counts.csv line 2: the row has 3 fields but the header has 2",
        ),
        (
            "no count column",
            b"payment_group,n\nJSA 25+,1\n",
            "error[E_MISSING_COLUMN]: counts.csv: the counts input needs a `count` column; its columns are: payment_group, n",
        ),
        (
            "invalid UTF-8",
            b"payment_group,count\nJSA \xff,1\n",
            "error[E_MALFORMED_CSV]: counts.csv line 2, column payment_group: invalid UTF-8",
        ),
        (
            "empty",
            b"",
            "error[E_MALFORMED_CSV]: counts.csv is empty: expected a header naming the dimensions and `count`",
        ),
        (
            "unknown payment group",
            b"payment_group,count\nJSA 25+,1\nMartians,3\n",
            "error[E_UNDECLARED_VALUE]: counts.csv line 3, column payment_group: \"Martians\" is not a payment group in the reference data; correct the input or pass --payment-groups FILE or --dimensions FILE",
        ),
    ];
    for (what, input, expected) in cases {
        let dir = Dir::new();
        dir.write("counts.csv", input);
        let run = dir.sanitise(&[
            "--counts",
            "counts.csv",
            "--measure",
            "referrals",
            "--rows",
            "payment_group",
        ]);
        assert_eq!(run.blocked(), [expected], "{what}");
    }
}

#[test]
fn an_undeclared_dimension_lists_the_declared_ones() {
    let dir = Dir::new();
    dir.write("counts.csv", T5);
    let run = dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--measure",
        "referrals",
        "--rows",
        "payment_group",
        "--cols",
        "gender",
    ]);
    assert_eq!(
        run.blocked(),
        [
            "error[E_NOT_A_DIMENSION]: `gender` is not a declared dimension: rows, columns and filters may use only the declared dimensions period, payment_group, disability"
        ]
    );
}

#[test]
fn a_declared_dimension_the_input_lacks_is_a_missing_column() {
    let dir = Dir::new();
    dir.write("counts.csv", T5);
    let run = dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--measure",
        "referrals",
        "--rows",
        "disability",
    ]);
    assert_eq!(
        run.blocked(),
        [
            "error[E_MISSING_COLUMN]: counts.csv: no column `disability` to lay out or filter the table by; its columns are: payment_group, period, count"
        ]
    );
}

#[test]
fn bad_dates_in_records_are_named() {
    let dir = Dir::new();
    dir.write(
        "records.csv",
        "participant_id,la_code,payment_group,disability,referral_date,attachment_date,\
         job_start_date,job_outcome_date,first_sustainment_date\n\
         P1,E1,JSA 25+,N,2012-01-01,2012-1-5,,,\n",
    );
    let run = dir.sanitise(&[
        "--records",
        "records.csv",
        "--measure",
        "referrals",
        "--rows",
        "payment_group",
    ]);
    assert_eq!(
        run.blocked(),
        [
            "error[E_INVALID_DATE]: records.csv line 2, column attachment_date: \"2012-1-5\" is not a date (YYYY-MM-DD)"
        ]
    );
}

#[test]
fn records_give_a_table_by_period() {
    let dir = Dir::new();
    dir.write(
        "records.csv",
        "participant_id,la_code,payment_group,disability,referral_date,attachment_date,\
         job_start_date,job_outcome_date,first_sustainment_date\n"
            .to_string()
            + &"P1,E1,JSA 25+,N,2012-01-01,,,,\n".repeat(25)
            + &"P2,E1,JSA 18-24,N,2012-04-01,,,,\n".repeat(31),
    );
    let run = dir.sanitise(&[
        "--records",
        "records.csv",
        "--measure",
        "referrals",
        "--rows",
        "payment_group",
        "--cols",
        "period",
        "--periods",
        "2011-Q4..2012-Q3",
        "--classification",
        "published",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        table_lines(&run.stdout()),
        [
            "payment_group,2011-Q4,2012-Q1,2012-Q2,2012-Q3,Total",
            "JSA 18-24,0,0,40,0,40",
            "JSA 25+,0,20,0,0,20",
            "JSA Early Access,0,0,0,0,0",
            "JSA Ex-IB,0,0,0,0,0",
            "ESA Volunteers,0,0,0,0,0",
            "New ESA Claimants,0,0,0,0,0",
            "ESA Ex-IB,0,0,0,0,0",
            "IB/IS,0,0,0,0,0",
            "JSA Prison Leavers,0,0,0,0,0",
            "Total,0,20,40,0,60"
        ],
        "every group and every quarter of the range, in order"
    );
    assert!(
        run.stdout().contains("\n# Period: 2011-Q4 to 2012-Q3\n"),
        "{}",
        run.stdout()
    );
}

#[test]
fn a_missing_input_file_exits_66() {
    let dir = Dir::new();
    let run = dir.sanitise(&[
        "--counts",
        "nope.csv",
        "--measure",
        "referrals",
        "--rows",
        "payment_group",
    ]);
    assert_eq!(run.code(), 66);
    assert!(
        run.stderr().starts_with("error: cannot open nope.csv: "),
        "{}",
        run.stderr()
    );
    assert_eq!(run.stdout(), "");
}

#[test]
fn command_line_mistakes_exit_non_zero_with_a_reason() {
    let dir = Dir::new();
    dir.write("counts.csv", T5);
    let recipient_without_las = dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--measure",
        "referrals",
        "--rows",
        "payment_group",
        "--recipient",
        "E09000002",
    ]);
    assert_eq!(recipient_without_las.code(), 64);
    assert!(
        recipient_without_las.stderr().contains("--las FILE"),
        "{}",
        recipient_without_las.stderr()
    );

    let both_inputs = dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--records",
        "counts.csv",
        "--measure",
        "referrals",
        "--rows",
        "x",
    ]);
    assert_eq!(both_inputs.code(), 2, "clap's usage error");

    let bad_measure = dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--measure",
        "outcomes",
        "--rows",
        "x",
    ]);
    assert_eq!(bad_measure.code(), 2);
    assert!(
        bad_measure.stderr().contains("job_outcomes"),
        "lists the measures: {}",
        bad_measure.stderr()
    );
}

#[test]
fn help_explains_the_exit_statuses() {
    let dir = Dir::new();
    let run = dir.sanitise(&["--help"]);
    assert_eq!(run.code(), 0);
    let help = run.stdout();
    for needle in ["--counts", "--records", "--strict", "65", "error[CODE]"] {
        assert!(help.contains(needle), "help lacks {needle}: {help}");
    }
}

#[test]
fn the_recipient_is_named_from_the_provider_configuration() {
    let dir = Dir::new();
    dir.write("counts.csv", T5_BY_LA)
        .write("groups.csv", T5_GROUPS);
    // The example configuration, finished: its reference data and a PKI
    // made here (a configuration is loaded whole, certificates included).
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    std::fs::create_dir_all(dir.path().join("reference")).expect("mkdir");
    std::fs::copy(
        data.join("reference/las.csv"),
        dir.path().join("reference/las.csv"),
    )
    .expect("las");
    std::fs::copy(
        data.join("provider.example.toml"),
        dir.path().join("provider.toml"),
    )
    .expect("example");
    common::write_provider_certs(&dir.path().join("certs"));
    std::fs::copy(
        dir.path().join("certs/ca.pem"),
        dir.path().join("certs/dwp-ca.pem"),
    )
    .expect("dwp ca");
    let config = dir.path().join("provider.toml");
    let config = config.to_str().expect("utf8 path");
    let mut args = T5_ARGS.to_vec();
    args.extend(["--recipient", "E09000002", "--config", config]);
    let run = dir.sanitise(&args);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stdout()
            .starts_with("# Internal MI – for Barking and Dagenham (E09000002) only"),
        "{}",
        run.stdout()
    );
    assert_eq!(
        table_lines(&run.stdout())[2],
        "JSA 25+,100,80,180",
        "only the recipient's participants"
    );
}

/// Participant records for the refusal tests: two in E09000002, one in
/// E09000030, with later stages set for some.
fn records_dir() -> Dir {
    let dir = Dir::new();
    dir.write(
        "r.csv",
        format!(
            "{RECORDS_HEADER}P1,E09000002,JSA 25+,N,2012-09-03,2012-09-10,2012-10-01,2013-01-07,\n\
             P2,E09000002,IB/IS,Y,2012-09-04,,,,\n\
             P3,E09000030,JSA 25+,N,2012-08-01,,,,\n"
        ),
    )
    .write("las.csv", LAS);
    dir
}

/// `mishare sanitise --records r.csv --measure referrals ARGS`.
fn referrals(dir: &Dir, args: &[&str]) -> Run {
    let mut all = vec!["--records", "r.csv", "--measure", "referrals"];
    all.extend(args);
    dir.sanitise(&all)
}

/// The one error line of a refused request.
fn refused(run: &Run) -> String {
    let lines = run.blocked();
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines[0].clone()
}

#[test]
fn t21_an_identifier_a_date_and_another_stage_are_refused() {
    let dir = records_dir();
    assert_eq!(
        refused(&referrals(&dir, &["--rows", "participant_id"])),
        "error[E_NOT_A_DIMENSION]: `participant_id` is not a declared dimension: rows, columns \
         and filters may use only the declared dimensions period, payment_group, disability"
    );
    let date = refused(&referrals(
        &dir,
        &["--rows", "payment_group", "--cols", "job_outcome_date"],
    ));
    assert!(
        date.starts_with("error[E_NOT_A_DIMENSION]: `job_outcome_date` is a stage date"),
        "{date}"
    );
    for value in ["", "2013-01-07"] {
        let filter = format!("job_outcome_date={value}");
        let rate = refused(&referrals(
            &dir,
            &["--rows", "payment_group", "--where", &filter],
        ));
        assert!(
            rate.starts_with(&format!(
                "error[E_OUTCOME_RATE]: --where {filter}: selecting referrals by \
                 `job_outcome_date`"
            )),
            "{rate}"
        );
    }
}

#[test]
fn free_text_count_and_undeclared_columns_are_not_dimensions() {
    let dir = Dir::new();
    dir.write(
        "counts.csv",
        "payment_group,notes,count\nJSA 25+,called on Tuesday,40\n",
    );
    for (flag, name) in [
        ("--rows", "notes"),
        ("--rows", "count"),
        ("--where", "notes=x"),
    ] {
        let mut args = vec!["--counts", "counts.csv", "--measure", "referrals"];
        if flag == "--where" {
            args.extend(["--rows", "payment_group"]);
        }
        args.extend([flag, name]);
        let line = refused(&dir.sanitise(&args));
        let column = name.split('=').next().expect("a name");
        assert!(
            line.starts_with(&format!("error[E_NOT_A_DIMENSION]: `{column}` ")),
            "{line}"
        );
        assert!(
            line.ends_with("period, payment_group, disability"),
            "{line}"
        );
    }
}

#[test]
fn a_filter_on_the_measures_own_date_points_to_period() {
    let dir = records_dir();
    let line = refused(&referrals(
        &dir,
        &[
            "--rows",
            "payment_group",
            "--where",
            "referral_date=2012-09-03",
        ],
    ));
    assert!(
        line.starts_with(
            "error[E_NOT_A_DIMENSION]: `referral_date` is --measure's own stage date, not a \
             dimension: select periods with --where period=… or --periods"
        ),
        "{line}"
    );
}

#[test]
fn undeclared_values_name_the_file_line_and_column() {
    let dir = Dir::new();
    dir.write(
        "r.csv",
        format!(
            "{RECORDS_HEADER}P1,E09000002,JSA 25+,N,2012-09-03,,,,\n\
             P2,E09000002,Martians,N,2012-09-04,,,,\n\
             P3,E09000002,JSA 25+,unknown,2012-09-04,,,,\n\
             P4,E09999999,JSA 25+,N,2012-09-04,,,,\n"
        ),
    )
    .write("las.csv", LAS);
    let rows = refused(&referrals(&dir, &["--rows", "payment_group"]));
    assert_eq!(
        rows,
        "error[E_UNDECLARED_VALUE]: r.csv line 3, column payment_group: \"Martians\" is not a \
         payment group in the reference data; correct the input or pass --payment-groups FILE \
         or --dimensions FILE"
    );
    let lines = referrals(
        &dir,
        &[
            "--rows",
            "payment_group",
            "--cols",
            "la_code",
            "--las",
            "las.csv",
            "--classification",
            "published",
            "--where",
            "disability=N",
        ],
    )
    .blocked();
    assert_eq!(
        lines,
        [
            "error[E_UNDECLARED_VALUE]: r.csv line 3, column payment_group: \"Martians\" is not a payment group in the reference data; correct the input or pass --payment-groups FILE or --dimensions FILE",
            "error[E_UNDECLARED_VALUE]: r.csv line 4, column disability: \"unknown\" is not a declared category of `disability` (Y, N); correct the input or declare it (--dimensions FILE)",
            "error[E_UNDECLARED_VALUE]: r.csv line 5, column la_code: \"E09999999\" is not an LA code in the LA reference data; correct the input or the reference data (--las FILE)",
        ],
        "rows, filter and columns"
    );
    let request = refused(&referrals(
        &dir,
        &["--rows", "payment_group", "--where", "disability=maybe"],
    ));
    assert_eq!(
        request,
        "error[E_UNDECLARED_VALUE]: --where disability=maybe: \"maybe\" is not a declared \
         category of `disability` (Y, N); correct the input or declare it (--dimensions FILE)"
    );
}

#[test]
fn an_internal_file_never_shows_las_separately() {
    let dir = records_dir();
    for classification in [None, Some("internal")] {
        let mut args = vec![
            "--rows",
            "payment_group",
            "--cols",
            "la_code",
            "--las",
            "las.csv",
        ];
        args.extend(classification.iter().flat_map(|c| ["--classification", c]));
        let line = refused(&referrals(&dir, &args));
        assert!(
            line.starts_with(
                "error[E_OTHER_LA]: `la_code` cannot lay out an internal file: internal MI is \
                 for one LA and never shows LAs separately"
            ),
            "{classification:?}: {line}"
        );
    }
    let published = referrals(
        &dir,
        &[
            "--rows",
            "la_code",
            "--las",
            "las.csv",
            "--classification",
            "published",
        ],
    );
    assert_eq!(published.code(), 0, "{}", published.stderr());
    assert_eq!(
        table_lines(&published.stdout()),
        [
            "la_code,All,Total",
            "E09000002,0,0",
            "E09000030,0,0",
            "Total,0,0"
        ]
    );
}

#[test]
fn an_internal_file_is_its_recipients_only() {
    let dir = records_dir();
    let line = refused(&referrals(
        &dir,
        &[
            "--rows",
            "payment_group",
            "--recipient",
            "E09000002",
            "--las",
            "las.csv",
            "--where",
            "la_code=E09000030",
        ],
    ));
    assert_eq!(
        line,
        "error[E_OTHER_LA]: --where la_code=E09000030: an internal file for E09000002 holds \
         only E09000002's participants; it cannot select another LA"
    );
    // With the recipient named, the file counts only its participants.
    let mut counts = String::from("payment_group,la_code,count\n");
    counts += "JSA 25+,E09000002,400\nJSA 25+,E09000030,4000\n";
    dir.write("counts.csv", counts);
    let run = dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--measure",
        "referrals",
        "--rows",
        "payment_group",
        "--recipient",
        "E09000002",
        "--las",
        "las.csv",
        "--classification",
        "internal",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        table_lines(&run.stdout()).last().map(String::as_str),
        Some("Total,400,400")
    );
    // And a counts file that cannot say whose participants they are is refused.
    dir.write("counts.csv", "payment_group,count\nJSA 25+,400\n");
    let line = refused(&dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--measure",
        "referrals",
        "--rows",
        "payment_group",
        "--recipient",
        "E09000002",
        "--las",
        "las.csv",
    ]));
    assert!(
        line.starts_with(
            "error[E_MISSING_COLUMN]: counts.csv: the counts need a `la_code` column to select \
             the recipient's participants"
        ),
        "{line}"
    );
}

#[test]
fn a_period_layout_needs_periods_given_and_bounded() {
    let dir = records_dir();
    let usage = |run: Run| {
        assert_eq!(run.code(), 64, "{}", run.stderr());
        assert_eq!(run.stdout(), "");
        run.stderr()
    };
    let missing = usage(referrals(&dir, &["--rows", "period"]));
    assert_eq!(
        missing,
        "error[E_PERIOD_RANGE]: `period` lays the table out (--rows), so its periods must be \
         given, not taken from the data: give --periods FROM..TO (or one PERIOD), at most 120 \
         months or 40 quarters\n"
    );
    let long = usage(referrals(
        &dir,
        &[
            "--rows",
            "payment_group",
            "--cols",
            "period",
            "--periods",
            "2010-01..2020-01",
        ],
    ));
    assert!(
        long.starts_with("error[E_PERIOD_RANGE]: the period range 2010-01 to 2020-01 holds 121 months; a table covers at most 120"),
        "{long}"
    );
    let quarters = usage(referrals(
        &dir,
        &["--rows", "period", "--periods", "2010-Q1..2020-Q1"],
    ));
    assert!(quarters.contains("holds 41 quarters"), "{quarters}");
    let grains = usage(referrals(
        &dir,
        &[
            "--rows",
            "period",
            "--period",
            "month",
            "--periods",
            "2012-Q3",
        ],
    ));
    assert!(
        grains.contains("is in quarters but the table's period grain is month"),
        "{grains}"
    );
    for bad in [
        "2012-13",
        "2012-09..2012-07",
        "2012-07..2012-Q3",
        "last month",
    ] {
        let text = usage(referrals(&dir, &["--rows", "period", "--periods", bad]));
        assert!(text.starts_with("error: --periods: "), "{bad}: {text}");
    }
    // The longest range allowed is laid out in full.
    let ok = referrals(
        &dir,
        &[
            "--rows",
            "period",
            "--periods",
            "2003-01..2012-12",
            "--classification",
            "published",
        ],
    );
    assert_eq!(ok.code(), 0, "{}", ok.stderr());
    let table = table_lines(&ok.stdout());
    assert_eq!(table.len(), 1 + 120 + 1, "header, 120 months, total");
    assert_eq!(table[1], "2003-01,0,0");
    assert_eq!(table[117], "2012-09,0,0", "2 referrals round to 0");
    // --where period must be a label of the grain, inside the range.
    let outside = refused(&referrals(
        &dir,
        &[
            "--rows",
            "payment_group",
            "--periods",
            "2012-07..2012-09",
            "--where",
            "period=2012-10",
        ],
    ));
    assert!(outside.starts_with("error[E_INVALID_VALUE]: --where period=2012-10: 2012-10 lies outside the period range 2012-07 to 2012-09"), "{outside}");
}

#[test]
fn the_period_grain_applies_to_counts_too() {
    let dir = Dir::new();
    dir.write(
        "counts.csv",
        "payment_group,period,count\nJSA 25+,2012-07,40\nJSA 25+,2012-08,40\nJSA 25+,2012-10,400\n",
    );
    let args = |extra: &[&'static str]| {
        let mut args = vec![
            "--counts",
            "counts.csv",
            "--measure",
            "referrals",
            "--rows",
            "payment_group",
            "--classification",
            "published",
        ];
        args.extend(extra);
        args
    };
    let months = dir.sanitise(&args(&["--periods", "2012-07..2012-09"]));
    assert_eq!(months.code(), 0, "{}", months.stderr());
    assert_eq!(
        table_lines(&months.stdout()).last().map(String::as_str),
        Some("Total,80,80")
    );
    assert!(months.stdout().contains("\n# Period: 2012-07 to 2012-09\n"));
    let all = dir.sanitise(&args(&[]));
    assert_eq!(
        table_lines(&all.stdout()).last().map(String::as_str),
        Some("Total,480,480")
    );
    assert!(
        all.stdout()
            .contains("\n# Period: every period in the input (no period range was given)\n"),
        "{}",
        all.stdout()
    );
    // The period column holds labels of the grain, used or not.
    let lines = dir.sanitise(&args(&["--period", "quarter"])).blocked();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0],
        "error[E_UNDECLARED_VALUE]: counts.csv line 2, column period: \"2012-07\" is not a \
         quarter (YYYY-Qn)"
    );
}

#[test]
fn an_operator_declares_a_characteristic_without_a_code_change() {
    let dir = Dir::new();
    dir.write(
        "dimensions.csv",
        "dimension,category,label\npayment_group,JSA,\npayment_group,ESA,\n\
         age_band,18-24,Aged 18 to 24\nage_band,25-49,Aged 25 to 49\nage_band,50+,Aged 50 and over\n",
    )
    .write(
        "counts.csv",
        "payment_group,age_band,count\nJSA,18-24,61\nESA,50+,30\n",
    );
    let run = dir.sanitise(&[
        "--counts",
        "counts.csv",
        "--measure",
        "referrals",
        "--rows",
        "age_band",
        "--cols",
        "payment_group",
        "--dimensions",
        "dimensions.csv",
        "--classification",
        "published",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        table_lines(&run.stdout()),
        [
            "age_band,JSA,ESA,Total",
            "Aged 18 to 24,60,0,60",
            "Aged 25 to 49,0,0,0",
            "Aged 50 and over,0,40,40",
            "Total,60,40,100"
        ]
    );
}

#[test]
fn a_bad_dimensions_file_names_the_file_and_line() {
    let dir = Dir::new();
    dir.write("counts.csv", T5).write(
        "dimensions.csv",
        "dimension,category,label\npayment_group,JSA,\nparticipant_id,P1,\n",
    );
    let args = [
        "--counts",
        "counts.csv",
        "--measure",
        "referrals",
        "--rows",
        "payment_group",
        "--dimensions",
        "dimensions.csv",
    ];
    let run = dir.sanitise(&args);
    assert_eq!(run.code(), 78, "{}", run.stderr());
    assert_eq!(
        run.stderr(),
        "error: reference data dimensions.csv line 3: `participant_id` cannot be declared as a \
         dimension: it is a column of participant records that is not a characteristic (an \
         identifier or a stage date)\n"
    );
    assert_eq!(run.stdout(), "");
    let mut missing = args;
    missing[7] = "nope.csv";
    let run = dir.sanitise(&missing);
    assert_eq!(run.code(), 66, "{}", run.stderr());
    assert!(
        run.stderr()
            .starts_with("error: cannot read reference data nope.csv: "),
        "{}",
        run.stderr()
    );
}

#[test]
fn the_file_says_what_it_is() {
    let dir = records_dir();
    let run = referrals(
        &dir,
        &[
            "--rows",
            "disability",
            "--periods",
            "2012-09",
            "--recipient",
            "E09000002",
            "--las",
            "las.csv",
            "--classification",
            "internal",
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let head: Vec<String> = (run.stdout().lines())
        .take_while(|l| l.starts_with('#'))
        .map(String::from)
        .collect();
    assert_eq!(
        head,
        [
            "# Internal MI – for Barking and Dagenham (E09000002) only – not for publication",
            "# Rounded to nearest 20 (halves up); totals are sums of rounded figures; percentages are computed from rounded figures.",
            "# Measure: referrals; view: counts",
            "# Period: 2012-09",
        ]
    );
}

/// `mishare sanitise … 2>&1 | head -1`: standard error goes away, and the
/// command still ends with the status it would have had, not a panic.
#[test]
fn a_closed_stderr_is_not_a_panic() {
    let dir = Dir::new();
    dir.write(
        "counts.csv",
        "payment_group,count\nJSA 18-24,9\nJSA 25+,9\nIB/IS,x\n",
    );
    let run = |args: &[&str]| {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader); // Every write to stderr now fails with EPIPE.
        let output = Command::new(env!("CARGO_BIN_EXE_mishare"))
            .arg("sanitise")
            .args(args)
            .current_dir(dir.path())
            .stderr(writer)
            .output()
            .expect("run mishare");
        (
            output.status.code(),
            String::from_utf8(output.stdout).expect("utf8"),
        )
    };
    let base = [
        "--counts",
        "counts.csv",
        "--measure",
        "referrals",
        "--rows",
        "payment_group",
    ];
    // Blocked: the error lines go nowhere, the status is still 65.
    assert_eq!(run(&base), (Some(65), String::new()));
    // Warnings go nowhere; the file is still printed and the status is 0.
    dir.write(
        "counts.csv",
        "payment_group,count\nJSA 18-24,9\nJSA 25+,9\n",
    );
    let (code, stdout) = run(&base);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("JSA 25+,0,0"), "{stdout}");
    // A usage error (64) and an unreadable input (66) too.
    let mut periods = base.to_vec();
    periods[5] = "period";
    assert_eq!(run(&periods).0, Some(64));
    let mut missing = base.to_vec();
    missing[1] = "nope.csv";
    assert_eq!(run(&missing).0, Some(66));
}
