//! The release ledger through the real binary, against real endpoints on
//! 127.0.0.1:0: T16 and T18 end to end (`known add`, then `send-now`: the
//! pinned LA gets no file and its line names E_UNPICKABLE, the other LA gets
//! its file, `audit verify` passes), a tampered ledger row caught by `audit
//! verify` and withholding that LA's next file, `ledger audit --format json`,
//! and every refusal of `known add`.

#[path = "common/net.rs"]
mod net;

use chrono::{Datelike, Utc};
use mishare::provider::report::last_complete_period;
use mishare::sanitiser::{Period, PeriodGrain};
use net::Net;

const PINNED: &str = "E09000002";
const OTHER: &str = "E09000009";

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn count(net: &Net, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

/// Records: for each LA, `(disability, month, how many)` referrals.
fn write_records(net: &Net, rows: &[(&str, &str, Period, usize)]) {
    let mut text = String::from(
        "participant_id,la_code,payment_group,disability,referral_date,attachment_date,\
         job_start_date,job_outcome_date,first_sustainment_date\n",
    );
    let mut n = 0;
    for (la, disability, month, how_many) in rows {
        for _ in 0..*how_many {
            n += 1;
            text.push_str(&format!(
                "P{n},{la},JSA 25+,{disability},{},,,,\n",
                month.first_day()
            ));
        }
    }
    std::fs::write(net.path("data/participants.csv"), text).expect("records");
}

async fn both_agreed() -> Net {
    let net = Net::start(&[PINNED, OTHER]).await;
    net.add_agreement(PINNED);
    net.add_agreement(OTHER);
    net
}

/// The month every send-now today is for.
fn last_month() -> Period {
    last_complete_period(PeriodGrain::Month, Utc::now())
}

/// `known add` for `la`, which must succeed.
async fn known_add(net: &Net, args: &[&str]) -> String {
    let mut all = vec!["known", "add"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--source", "DWP official statistics"]);
    let out = net.run(&all).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    stdout(&out)
}

/// The lines of a send-now, by LA.
fn line<'a>(out: &'a str, la: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{la} ")))
        .unwrap_or_else(|| panic!("no line for {la} in {out}"))
}

async fn audit_verifies(net: &Net) {
    let verify = net.run(&["audit", "verify"]).await;
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
    assert!(
        stdout(&verify).contains("release ledger intact: "),
        "{verify:?}"
    );
}

/// T16: referrals by disability, 9 and 9, sent as 0 and 0, and the LA
/// knows the month's total is 18: both cells pinned to 9, so its file is
/// withheld with E_UNPICKABLE. The other LA gets its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t16_end_to_end_the_pinned_la_gets_nothing_and_the_other_gets_its_file() {
    let net = both_agreed().await;
    net.edit_config("rows = \"payment_group\"", "rows = \"disability\"");
    let month = last_month();
    write_records(
        &net,
        &[
            (PINNED, "Y", month, 9),
            (PINNED, "N", month, 9),
            (OTHER, "Y", month, 30),
            (OTHER, "N", month, 50),
        ],
    );
    let added = known_add(
        &net,
        &[
            "--la",
            "e09000002", // case is normalised, as `mishare suspend` does
            "--measure",
            "referrals",
            "--period",
            &month.to_string(),
            "--value",
            "18",
        ],
    )
    .await;
    assert!(
        added.starts_with("known figure 1 for E09000002: "),
        "{added}"
    );

    // `report preview` and `plan` say what the audit would say, sending
    // and recording nothing.
    let preview = net.run(&["report", "preview", "referrals-monthly"]).await;
    assert_eq!(preview.status.code(), Some(0), "{preview:?}");
    let said = stderr(&preview);
    let pinned_part = said
        .split("== E09000009")
        .next()
        .expect("the pinned LA's part");
    assert!(
        pinned_part
            .contains("the ledger audit would withhold it: E_UNPICKABLE: the cell referrals"),
        "{said}"
    );
    assert!(
        said.contains("the ledger audit would let it go: no findings"),
        "{said}"
    );
    let this_month = month.last_day().succ_opt().expect("next day").to_string();
    let plan = net.run(&["plan", "--at", &this_month]).await;
    let planned = stdout(&plan);
    assert_eq!(plan.status.code(), Some(0), "{plan:?}");
    assert!(
        planned.contains(&format!(
            "period {month}, schedule \"0 6 2 * *\", missed run-once\n  E09000002 permit\n    \
             the ledger audit would withhold it: E_UNPICKABLE: "
        )),
        "{planned}"
    );
    assert!(
        planned.contains("  E09000009 permit\n    the ledger audit would let it go: no findings\n"),
        "{planned}"
    );
    assert_eq!(count(&net, "SELECT count(*) FROM releases"), 0);

    let sent = net.run(&["send-now", "referrals-monthly"]).await;
    let out = stdout(&sent);
    // A refusal by the audit, like the gate's, is not a failure.
    assert_eq!(sent.status.code(), Some(0), "{out}{}", stderr(&sent));
    let pinned = line(&out, PINNED);
    assert!(
        pinned.starts_with("E09000002 refused E_UNPICKABLE: withheld by the ledger audit: "),
        "{pinned}"
    );
    assert!(pinned.contains("can only be 9"), "{pinned}");
    assert!(
        line(&out, OTHER).starts_with("E09000009 delivered "),
        "{out}"
    );
    assert!(net.inbox(PINNED).is_empty(), "{:?}", net.inbox(PINNED));
    let files = net.inbox(OTHER);
    assert_eq!(files.len(), 1, "{files:?}");

    // The ledger: one release (the other LA's), delivered; the refusal is
    // with the run and in the audit log, with its codes.
    assert_eq!(count(&net, "SELECT count(*) FROM releases"), 1);
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM releases WHERE la_code = 'E09000009' AND delivered_at IS NOT NULL"
        ),
        1
    );
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM run_refusals WHERE la_code = 'E09000002' AND reason = 'E_UNPICKABLE'"
        ),
        1
    );
    let blocked: Vec<serde_json::Value> = net
        .store()
        .audit_entries(None)
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == "ledger_audit_blocked")
        .map(|e| serde_json::from_str(&e.detail).expect("detail"))
        .collect();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0]["codes"], serde_json::json!(["E_UNPICKABLE"]));

    // The release records exactly what the LA decrypts.
    let plaintext = net.decrypt(OTHER, &files[0]);
    let digest: String =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&plaintext))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
    let recorded: String = conn
        .query_row("SELECT plaintext_sha256 FROM releases", [], |r| r.get(0))
        .expect("release");
    assert_eq!(recorded, digest);
    // No finding reaches the LA that got its file.
    let text = String::from_utf8(plaintext).expect("utf-8");
    for code in ["E_UNPICKABLE", "W_ADHOC", "ledger", "pinned", "can only be"] {
        assert!(!text.contains(code), "{code} reached the LA: {text}");
    }
    audit_verifies(&net).await;

    // `ledger audit --format json`: the shape issue 11 fixes. The other LA
    // then learns N's exact count: N's figure is pinned, but by what the LA
    // knew, not by a release, so there is no finding; Y (sent 40, true 30)
    // keeps [30, 49], since a total is the sum of rounded cells (R4) and
    // tells nothing more.
    known_add(
        &net,
        &[
            "--la",
            OTHER,
            "--measure",
            "referrals",
            "--period",
            &month.to_string(),
            "--where",
            "disability=N",
            "--value",
            "50",
        ],
    )
    .await;
    let audited = net
        .run(&["ledger", "audit", "--la", OTHER, "--format", "json"])
        .await;
    assert_eq!(audited.status.code(), Some(0), "{audited:?}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&audited)).expect("json");
    let keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["figures", "findings", "known", "la", "releases"]);
    assert_eq!(json["la"], OTHER);
    assert_eq!(json["releases"], 1);
    assert_eq!(json["known"], 1);
    let figure = |code: &str| {
        json["figures"]
            .as_array()
            .expect("figures")
            .iter()
            .find(|f| f["categories"] == serde_json::json!({ "disability": code }))
            .unwrap_or_else(|| panic!("the figure for {code}: {json}"))
            .clone()
    };
    let (y, n) = (figure("Y"), figure("N"));
    assert_eq!(
        (&n["sent"], &n["lo"], &n["hi"]),
        (
            &serde_json::json!(60),
            &serde_json::json!(50),
            &serde_json::json!(50)
        )
    );
    assert_eq!(json["findings"], serde_json::json!([]));
    let mut fields: Vec<&str> = y
        .as_object()
        .expect("figure")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "categories",
            "hi",
            "lo",
            "measure",
            "period",
            "release",
            "sent"
        ]
    );
    assert_eq!(
        (&y["release"], &y["sent"], &y["lo"], &y["hi"], &y["period"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(40),
            &serde_json::json!(30),
            &serde_json::json!(49),
            &serde_json::json!(month.to_string())
        )
    );
}

/// T18: monthly referrals of 10, 10 and 10 sent as 20, 20 and 20, and the
/// LA knows the quarter's total is 30: each month pinned to 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t18_end_to_end_months_against_a_known_quarter_are_withheld() {
    let net = both_agreed().await;
    // The table runs from the first month of the quarter before the last
    // complete month's, so it holds that whole quarter whatever today is.
    let last = last_month();
    let quarter = Period::containing(last.first_day(), PeriodGrain::Quarter)
        .and_then(Period::prev)
        .expect("a quarter");
    let offset = (last.first_day().month0() % 3) as usize;
    let periods = 3 + offset + 1;
    net.edit_config(
        "rows = \"payment_group\"\ncols = \"period\"",
        &format!("rows = \"period\"\nperiods = {periods}"),
    );
    let mut months =
        vec![Period::containing(quarter.first_day(), PeriodGrain::Month).expect("month")];
    while months.len() < 3 {
        months.push(months[months.len() - 1].next().expect("month"));
    }
    let mut rows = Vec::new();
    for m in &months {
        rows.push((PINNED, "N", *m, 10));
        rows.push((OTHER, "N", *m, 10));
    }
    write_records(&net, &rows);
    known_add(
        &net,
        &[
            "--la",
            PINNED,
            "--measure",
            "referrals",
            "--period",
            &quarter.to_string(),
            "--value",
            "30",
        ],
    )
    .await;

    let sent = net.run(&["send-now", "referrals-monthly"]).await;
    let out = stdout(&sent);
    assert_eq!(sent.status.code(), Some(0), "{out}{}", stderr(&sent));
    let pinned = line(&out, PINNED);
    assert!(
        pinned.starts_with("E09000002 refused E_UNPICKABLE: "),
        "{pinned}"
    );
    assert!(pinned.contains("can only be 10"), "{pinned}");
    assert!(
        line(&out, OTHER).starts_with("E09000009 delivered "),
        "{out}"
    );
    assert!(net.inbox(PINNED).is_empty());
    assert_eq!(net.inbox(OTHER).len(), 1);
    audit_verifies(&net).await;

    // Removing the known figure (audited) lets the next run through.
    let removed = net
        .run(&[
            "known",
            "remove",
            "1",
            "--reason",
            "entered for the wrong LA",
        ])
        .await;
    assert_eq!(removed.status.code(), Some(0), "{removed:?}");
    let again = net
        .run(&["send-now", "referrals-monthly", "--la", PINNED])
        .await;
    assert!(
        stdout(&again).starts_with("E09000002 delivered "),
        "{again:?}"
    );
    let listed = net.run(&["known", "list", "--format", "json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&stdout(&listed)).expect("json");
    assert_eq!(listed[0]["removed"]["reason"], "entered for the wrong LA");
    audit_verifies(&net).await;
}

/// A ledger row changed outside mishare: `audit verify` fails naming it,
/// and the next send-now spools nothing for that LA (fail closed), while
/// the other LA still gets its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tampered_release_fails_verify_and_withholds_that_las_next_file() {
    let net = both_agreed().await;
    let first = net.run(&["send-now", "referrals-monthly"]).await;
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert_eq!(count(&net, "SELECT count(*) FROM releases"), 2);
    audit_verifies(&net).await;

    // Someone with the sqlite3 tool lowers what the ledger says was sent.
    let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
    let changed = conn
        .execute_batch(
            "DROP TRIGGER releases_fixed;
             UPDATE releases SET figures = replace(figures, '140', '0')
                 WHERE la_code = 'E09000009';",
        )
        .and_then(|()| {
            conn.query_row(
                "SELECT count(*) FROM releases WHERE figures LIKE '%140%'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .expect("tampered");
    assert_eq!(changed, 1, "only E09000002's still says 140");
    drop(conn);

    let verify = net.run(&["audit", "verify"]).await;
    assert_eq!(verify.status.code(), Some(1), "{verify:?}");
    assert!(
        stderr(&verify).contains("release 2 no longer matches its audit entry (it was changed)"),
        "{verify:?}"
    );
    let listed = net.run(&["ledger", "audit", "--la", OTHER]).await;
    assert_eq!(listed.status.code(), Some(1), "{listed:?}");

    let spooled_before = count(&net, "SELECT count(*) FROM deliveries");
    let second = net.run(&["send-now", "referrals-monthly"]).await;
    let out = stdout(&second);
    assert!(
        line(&out, OTHER).starts_with("E09000009 refused E_LEDGER_UNVERIFIED: "),
        "{out}"
    );
    assert!(
        line(&out, OTHER).contains("release 2 no longer matches"),
        "{out}"
    );
    assert!(
        line(&out, PINNED).starts_with("E09000002 delivered "),
        "{out}"
    );
    assert_eq!(
        net.inbox(OTHER).len(),
        1,
        "nothing more for the tampered LA"
    );
    assert_eq!(net.inbox(PINNED).len(), 2);
    assert_eq!(
        count(&net, "SELECT count(*) FROM deliveries"),
        spooled_before + 1
    );
}

/// `known add` refuses what it cannot check, naming what and where, and
/// records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn known_add_refuses_bad_input_with_a_clear_error() {
    let net = Net::start(&[PINNED]).await;
    let base = ["known", "add", "--measure", "referrals", "--source", "DWP"];
    let cases: [(&[&str], i32, &str); 9] = [
        (
            &[
                "--la",
                PINNED,
                "--period",
                "2012-09",
                "--value",
                "1",
                "--where",
                "participant_id=P1",
            ],
            65,
            "error: --where \"participant_id=P1\": `participant_id` is not a declared dimension; \
             a known figure can name payment_group, disability",
        ),
        (
            &[
                "--la",
                PINNED,
                "--period",
                "2012-09",
                "--value",
                "1",
                "--where",
                "disability=Q",
            ],
            65,
            "error: --where \"disability=Q\": \"Q\" is not a declared category of `disability` (Y, N)",
        ),
        (
            &[
                "--la",
                PINNED,
                "--period",
                "2012-09",
                "--value",
                "1",
                "--where",
                "disability",
            ],
            65,
            "error: --where \"disability\": write DIM=VALUE, for example disability=Y",
        ),
        (
            &[
                "--la",
                PINNED,
                "--period",
                "2012-09",
                "--value",
                "1",
                "--where",
                "la_code=E09000009",
            ],
            65,
            "error: --where \"la_code=E09000009\": the LA is given with --la",
        ),
        (
            &["--la", PINNED, "--period", "2012-13", "--value", "1"],
            65,
            "error: --period: \"2012-13\" is not a period: expected a month YYYY-MM, a quarter \
             YYYY-Qn or a year YYYY",
        ),
        (
            &["--la", PINNED, "--period", "2012-09", "--range", "12..8"],
            65,
            "error: the interval 12 to 8 is empty; give the lower end first",
        ),
        (
            &[
                "--la",
                PINNED,
                "--period",
                "2012-09",
                "--range",
                "eight..12",
            ],
            65,
            "error: --range \"eight..12\" is not LO..HI with whole numbers, for example 8..12",
        ),
        (
            &["--la", "E99999999", "--period", "2012-09", "--value", "1"],
            65,
            "error: --la \"E99999999\" is not an LA in the reference data",
        ),
        (
            &[
                "--la", PINNED, "--period", "2012-09", "--value", "1", "--range", "1..2",
            ],
            2,
            "error: the argument '--value <N>' cannot be used with '--range <LO..HI>'",
        ),
    ];
    for (args, code, message) in cases {
        let mut all: Vec<&str> = base.to_vec();
        all.extend_from_slice(args);
        let out = net.run(&all).await;
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        assert!(
            stderr(&out).starts_with(message),
            "{args:?}:\n{}\nwanted: {message}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "{args:?}: {out:?}");
    }
    let listed = net.run(&["known", "list"]).await;
    assert_eq!(
        stdout(&listed),
        "no known figures; register one with `mishare known add`\n"
    );
    let removed = net.run(&["known", "remove", "7", "--reason", "x"]).await;
    assert_eq!(removed.status.code(), Some(1), "{removed:?}");
    assert!(
        stderr(&removed).contains("there is no known figure 7"),
        "{removed:?}"
    );
}

/// `[disclosure]` is checked when provider.toml is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_disclosure_section_is_refused_at_load() {
    let net = Net::start(&[PINNED]).await;
    net.append_config("[disclosure]\nmin_interval_width = 19\nstrict = true\n");
    let out = net.run(&["known", "list"]).await;
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(
        stderr(&out).contains("disclosure.min_interval_width")
            && stderr(&out).contains("at most 18"),
        "{out:?}"
    );
    net.edit_config(
        "min_interval_width = 19",
        "min_interval_width = 4\nwidth = 3",
    );
    let out = net.run(&["known", "list"]).await;
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(stderr(&out).contains("width"), "{out:?}");
}
