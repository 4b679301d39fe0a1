//! A `[[report]]` is checked against the disclosure rules when
//! `provider.toml` is loaded, not at its first scheduled run: every refusal
//! of the table model stops `provider run`, `plan`, `send-now` and
//! `report preview` with exit 78, naming the report, the key and the rule.
//! And a report's files say what they are and cover an explicit range.

mod common;

use common::{Env, assert_status, stderr, stdout};

/// `provider.toml` with the first report's `from` replaced by `to`.
fn edited(env: &Env, from: &str, to: &str) {
    let path = env.config_path();
    let text = std::fs::read_to_string(&path).expect("provider.toml");
    let at = text.find("[[report]]").expect("a report");
    let (head, reports) = text.split_at(at);
    assert!(reports.contains(from), "the first report has {from:?}");
    std::fs::write(&path, format!("{head}{}", reports.replacen(from, to, 1))).expect("write");
}

const COMMANDS: [&[&str]; 4] = [
    &["provider", "run"],
    &["plan"],
    &["send-now", "referrals-monthly"],
    &["report", "preview", "referrals-monthly"],
];

/// Every command that runs reports refuses the configuration the same way.
fn refused_everywhere(env: &Env, want: &[&str]) {
    for command in COMMANDS {
        let out = env.run(command);
        assert_status(&out, 78);
        let err = stderr(&out);
        for w in want {
            assert!(err.contains(w), "{command:?}: {err}");
        }
        assert!(stdout(&out).is_empty(), "{command:?}");
    }
}

#[test]
fn an_identifier_is_not_a_dimension() {
    let env = Env::new();
    edited(
        &env,
        "rows = \"payment_group\"",
        "rows = \"participant_id\"",
    );
    refused_everywhere(
        &env,
        &[
            "`report[1].rows`",
            "report referrals-monthly",
            "E_NOT_A_DIMENSION",
            "`participant_id`",
            "period, la_code, payment_group, disability",
        ],
    );
}

#[test]
fn another_stage_date_is_not_a_dimension() {
    let env = Env::new();
    edited(&env, "cols = \"period\"", "cols = \"job_outcome_date\"");
    refused_everywhere(&env, &["`report[1].cols`", "E_NOT_A_DIMENSION"]);
}

#[test]
fn an_undeclared_column_is_not_a_dimension() {
    let env = Env::new();
    edited(&env, "rows = \"payment_group\"", "rows = \"gender\"");
    refused_everywhere(&env, &["`report[1].rows`", "E_NOT_A_DIMENSION", "`gender`"]);
}

#[test]
fn outcome_volumes_are_refused_at_load() {
    let env = Env::new();
    edited(
        &env,
        "measure = \"referrals\"",
        "measure = \"job_outcomes\"",
    );
    refused_everywhere(&env, &["`report[1].view`", "E_OUTCOME_VOLUME"]);
}

#[test]
fn outcomes_beside_another_measure_are_an_outcome_rate() {
    let env = Env::new();
    edited(
        &env,
        "measure = \"referrals\"",
        "measure = \"job_outcomes\"",
    );
    edited(&env, "view = \"counts\"", "view = \"shares\"");
    edited(&env, "cols = \"period\"", "cols = \"measure\"");
    refused_everywhere(&env, &["`report[1].cols`", "E_OUTCOME_RATE"]);
}

#[test]
fn an_internal_report_never_shows_las_separately() {
    let env = Env::new();
    edited(&env, "cols = \"period\"", "cols = \"la_code\"");
    refused_everywhere(&env, &["`report[1].cols`", "E_OTHER_LA"]);
}

#[test]
fn an_internal_report_gives_each_la_only_its_own_participants() {
    let env = Env::new();
    edited(
        &env,
        "split_by_recipient = true",
        "split_by_recipient = false",
    );
    refused_everywhere(
        &env,
        &["`report[1].split_by_recipient`", "E_OTHER_LA", "everyone's"],
    );
}

#[test]
fn a_published_report_may_compare_las() {
    let env = Env::new();
    edited(&env, "cols = \"period\"", "cols = \"la_code\"");
    edited(
        &env,
        "split_by_recipient = true",
        "split_by_recipient = false",
    );
    edited(
        &env,
        "classification = \"internal\"",
        "classification = \"published\"",
    );
    assert_status(&env.run(&["plan"]), 0);
}

#[test]
fn the_period_range_is_bounded() {
    let env = Env::new();
    for (periods, ok) in [("1", true), ("120", true), ("0", false), ("121", false)] {
        let env = Env::new();
        edited(
            &env,
            "period = \"month\"",
            &format!("period = \"month\"\nperiods = {periods}"),
        );
        let out = env.run(&["plan"]);
        if ok {
            assert_status(&out, 0);
        } else {
            assert_status(&out, 78);
            let err = stderr(&out);
            assert!(err.contains("`report[1].periods`"), "{err}");
            assert!(err.contains("from 1 to 120"), "{err}");
        }
    }
    // Quarters are bounded at 40.
    edited(
        &env,
        "period = \"month\"",
        "period = \"quarter\"\nperiods = 41",
    );
    let out = env.run(&["plan"]);
    assert_status(&out, 78);
    assert!(stderr(&out).contains("from 1 to 40"), "{}", stderr(&out));
}

#[test]
fn an_operator_declares_a_characteristic_in_reference_data() {
    let env = Env::new();
    std::fs::write(
        env.path("reference/dimensions.csv"),
        "dimension,category,label\n\
         payment_group,JSA,\npayment_group,ESA,\n\
         age_band,18-24,18 to 24\nage_band,25+,25 and over\n",
    )
    .expect("dimensions");
    let text = std::fs::read_to_string(env.config_path()).expect("provider.toml");
    std::fs::write(
        env.config_path(),
        text.replacen(
            "reference = \"reference/las.csv\"",
            "reference = \"reference/las.csv\"\ndimensions = \"reference/dimensions.csv\"",
            1,
        ),
    )
    .expect("write");
    edited(&env, "rows = \"payment_group\"", "rows = \"age_band\"");
    assert_status(&env.run(&["plan"]), 0);
    // disability is not declared in that file: it is not a dimension there.
    edited(&env, "rows = \"age_band\"", "rows = \"disability\"");
    let out = env.run(&["plan"]);
    assert_status(&out, 78);
    assert!(
        stderr(&out).contains("period, la_code, payment_group, age_band"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_broken_dimensions_file_is_named() {
    let env = Env::new();
    std::fs::write(
        env.path("reference/dimensions.csv"),
        "dimension,category,label\ndisability,Y,\ndisability,Y,\n",
    )
    .expect("dimensions");
    let text = std::fs::read_to_string(env.config_path()).expect("provider.toml");
    std::fs::write(
        env.config_path(),
        text.replacen(
            "reference = \"reference/las.csv\"",
            "reference = \"reference/las.csv\"\ndimensions = \"reference/dimensions.csv\"",
            1,
        ),
    )
    .expect("write");
    let out = env.run(&["plan"]);
    assert_status(&out, 78);
    let err = stderr(&out);
    assert!(err.contains("`dimensions`"), "{err}");
    assert!(err.contains("dimensions.csv"), "{err}");
}

/// Participant records for E09000002 in 2012-07 to 2012-09, and one outside
/// that range that no file may count.
fn records(env: &Env, extra: &str) {
    std::fs::create_dir_all(env.path("data")).expect("mkdir");
    let mut text = String::from(
        "participant_id,la_code,payment_group,disability,referral_date,attachment_date,\
         job_start_date,job_outcome_date,first_sustainment_date\n",
    );
    for (i, month) in ["2012-07", "2012-08", "2012-09", "2012-06"]
        .iter()
        .enumerate()
    {
        for n in 0..30 {
            text.push_str(&format!("P{i}{n},E09000002,JSA 25+,N,{month}-10,,,,\n"));
        }
    }
    text.push_str(extra);
    std::fs::write(env.path("data/participants.csv"), text).expect("records");
}

#[test]
fn a_report_file_says_what_it_is_and_covers_its_range_in_full() {
    let env = Env::new();
    records(&env, "");
    edited(
        &env,
        "period = \"month\"",
        "period = \"month\"\nperiods = 3",
    );
    let out = env.run(&[
        "report",
        "preview",
        "referrals-monthly",
        "--la",
        "E09000002",
    ]);
    // Run in October 2012 or later: the preview is as of now, so the range
    // is the last three complete months before today. What is checked is
    // the shape, which depends only on the specification and the range.
    assert_status(&out, 0);
    let csv = stdout(&out);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("# Internal MI – for Barking and Dagenham (E09000002) only"));
    assert!(lines[1].starts_with("# Rounded to nearest 20"));
    assert_eq!(lines[2], "# Provider: Example Provider Ltd");
    assert_eq!(
        lines[3],
        "# Report: referrals-monthly; measure: referrals; view: counts"
    );
    assert!(
        lines[4].starts_with("# Period: ") && lines[4].contains(" to "),
        "{csv}"
    );
    assert!(lines[5].starts_with("# Made: "), "{csv}");
    let header: Vec<&str> = lines[6].split(',').collect();
    // payment_group, three months, Total.
    assert_eq!(header.len(), 5, "{csv}");
    assert_eq!(header[0], "payment_group");
    assert_eq!(header[4], "Total");
    // All nine payment groups, in reference order, whatever the data holds;
    // then the Total row.
    let rows: Vec<&str> = lines[7..]
        .iter()
        .map(|l| l.split(',').next().unwrap_or_default())
        .collect();
    assert_eq!(
        rows,
        [
            "JSA 18-24",
            "JSA 25+",
            "JSA Early Access",
            "JSA Ex-IB",
            "ESA Volunteers",
            "New ESA Claimants",
            "ESA Ex-IB",
            "IB/IS",
            "JSA Prison Leavers",
            "Total"
        ]
    );
}

#[test]
fn an_undeclared_value_in_a_report_source_blocks_naming_file_line_and_column() {
    let env = Env::new();
    records(&env, "P999,E09000002,Martians,N,2012-08-01,,,,\n");
    let out = env.run(&["report", "preview", "referrals-monthly"]);
    assert_status(&out, 65);
    let err = stderr(&out);
    assert!(err.contains("E_UNDECLARED_VALUE"), "{err}");
    assert!(err.contains("line 122"), "{err}");
    assert!(err.contains("payment_group"), "{err}");
    assert!(err.contains("Martians"), "{err}");
}
