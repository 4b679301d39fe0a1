//! `mishare sanitise` as scripts see it: flags, exit statuses, the
//! `error[CODE]: …` lines, the JSON shape and the CSV an LA receives.

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

const LAS: &str = "la_code,la_name,cpa\nE09000002,Barking and Dagenham,London East\n";

const T5_ARGS: [&str; 8] = [
    "--counts",
    "counts.csv",
    "--measure",
    "job_starts",
    "--rows",
    "payment_group",
    "--cols",
    "period",
];

#[test]
fn csv_is_exactly_the_file_an_la_receives() {
    let dir = Dir::new();
    dir.write("counts.csv", T5).write("las.csv", LAS);
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
    dir.write("counts.csv", T5);
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
        "payment_group,la,count\nJSA 18-24,LA1,58\nJSA 25+,LA1,71\nNew ESA Claimants,LA1,12\n\
         JSA 18-24,LA2,14\nJSA 25+,LA2,22\nNew ESA Claimants,LA2,3\n",
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
        "la",
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
    assert_eq!(codes, ["N_PCT_SUM", "S_SMALL_BASE", "W_UNCLASSIFIED"]);
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
    let body: Vec<String> = run.stdout().lines().skip(2).map(String::from).collect();
    assert_eq!(body, ["disability,All", "N,[c]", "Y,[c]"]);
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
    dir.write("counts.csv", T5);
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
            "error[E_UNKNOWN_PAYMENT_GROUP]: counts.csv line 3, column payment_group: \"Martians\" is not a payment group in the reference data; correct the input or pass --payment-groups FILE",
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
fn unknown_dimension_lists_the_columns() {
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
            "error[E_UNKNOWN_DIMENSION]: counts.csv: no column `gender` to lay out or filter the table by; its columns are: payment_group, period, count"
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
        "--period",
        "quarter",
        "--classification",
        "published",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let table: Vec<String> = run.stdout().lines().skip(2).map(String::from).collect();
    assert_eq!(
        table,
        [
            "payment_group,2012-Q1,2012-Q2,Total",
            "JSA 18-24,0,40,40",
            "JSA 25+,20,0,20",
            "Total,20,40,60"
        ]
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
    dir.write("counts.csv", T5);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/provider.example.toml");
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
    // An unreadable input (66) too.
    let mut missing = base.to_vec();
    missing[1] = "nope.csv";
    assert_eq!(run(&missing).0, Some(66));
}
