//! The operator's commands, run as the real binary: what they print, what
//! they refuse and with which exit status.

mod common;

use common::{Env, assert_status, at, stderr, stdout};
use mishare::provider::store::Scope;

const REP: &str = "Jo Bloggs <jo.bloggs@example.gov.uk>";

fn add(env: &Env, la: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "agreement",
        "add",
        "--la",
        la,
        "--representative",
        REP,
        "--signed",
        "2024-06-01",
        "--document",
        "agreement.pdf",
    ];
    args.extend_from_slice(extra);
    env.run(&args)
}

/// Runs the command, expects `code` and returns standard error.
fn refused(env: &Env, args: &[&str], code: i32) -> String {
    let out = env.run(args);
    assert_status(&out, code);
    assert_eq!(stdout(&out), "", "a refusal prints nothing on stdout");
    stderr(&out)
}

#[test]
fn agreement_add_keeps_the_document_and_its_hash() {
    let env = Env::new();
    let out = add(&env, "E09000002", &["--expires", "2099-03-31"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(
        text.starts_with("agreement 1 on file for E09000002 (Barking and Dagenham)\n"),
        "{text}"
    );
    assert!(
        text.contains("representative: Jo Bloggs <jo.bloggs@example.gov.uk>"),
        "{text}"
    );
    assert!(
        text.contains("signed 2024-06-01, expires 2099-03-31"),
        "{text}"
    );

    let document = std::fs::read(env.path("agreement.pdf")).expect("doc");
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(&document)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert!(text.contains(&sha), "{text}");
    let copy = env.path("var/provider/agreements").join(&sha);
    assert_eq!(std::fs::read(&copy).expect("copy kept"), document);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&copy).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn adding_again_replaces_and_the_history_says_so() {
    let env = Env::new();
    assert_status(&add(&env, "E09000002", &[]), 0);
    let out = env.run(&[
        "agreement",
        "add",
        "--la",
        "E09000002",
        "--representative",
        "Sam Patel <sam.patel@example.gov.uk>",
        "--signed",
        "2025-01-15",
        "--expires",
        "2099-12-31",
        "--document",
        "agreement.pdf",
    ]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains("replaces agreement 1 (signed 2024-06-01, no expiry, representative Jo Bloggs <jo.bloggs@example.gov.uk>)"),
        "{}",
        stdout(&out)
    );
    let show = env.run(&["agreement", "show", "--la", "E09000002"]);
    assert_status(&show, 0);
    let text = stdout(&show);
    assert!(
        text.starts_with("agreement 2 for E09000002 (Barking and Dagenham)\n"),
        "{text}"
    );
    assert!(
        text.contains("representative: Sam Patel <sam.patel@example.gov.uk>"),
        "{text}"
    );
    assert!(
        text.contains("agreement 1 added by provider:tester"),
        "{text}"
    );
    assert!(
        text.contains("agreement 1 replaced by provider:tester: replaced by agreement 2"),
        "{text}"
    );
    assert!(
        text.contains("agreement 2 added by provider:tester"),
        "{text}"
    );

    let list = env.run(&["agreement", "list", "--format", "json"]);
    assert_status(&list, 0);
    let items: serde_json::Value = serde_json::from_str(&stdout(&list)).expect("json");
    let items = items.as_array().expect("array");
    assert_eq!(items.len(), 1, "only the current agreement is listed");
    assert_eq!(items[0]["id"], 2);
    assert_eq!(items[0]["standing"], "active");
    assert_eq!(
        items[0]["representative"]["email"],
        "sam.patel@example.gov.uk"
    );
}

#[test]
fn agreement_list_text() {
    let env = Env::new();
    let empty = env.run(&["agreement", "list"]);
    assert_status(&empty, 0);
    assert_eq!(
        stdout(&empty),
        "no agreements on file; add one with `mishare agreement add`\n"
    );
    assert_status(&add(&env, "E09000030", &[]), 0);
    let out = env.run(&["agreement", "list"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).starts_with("E09000030  Tower Hamlets"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("active"), "{}", stdout(&out));
}

#[test]
fn add_refuses_an_la_not_in_the_reference_data() {
    let env = Env::new();
    let err = refused(
        &env,
        &[
            "agreement",
            "add",
            "--la",
            "E09999999",
            "--representative",
            REP,
            "--signed",
            "2024-06-01",
            "--document",
            "agreement.pdf",
        ],
        65,
    );
    assert_eq!(
        err,
        "error: E09999999 is not in the reference data reference/las.csv; check the code, or \
         update the reference data if the LA is new\n"
    );
    let err = refused(
        &env,
        &[
            "agreement",
            "add",
            "--la",
            "../etc",
            "--representative",
            REP,
            "--signed",
            "2024-06-01",
            "--document",
            "agreement.pdf",
        ],
        65,
    );
    assert!(err.contains("\"../etc\" is not an LA code"), "{err}");
}

#[test]
fn add_refuses_an_la_outside_the_contract_areas() {
    let env = Env::new();
    let err = refused(
        &env,
        &[
            "agreement",
            "add",
            "--la",
            "E08000025",
            "--representative",
            REP,
            "--signed",
            "2024-06-01",
            "--document",
            "agreement.pdf",
        ],
        65,
    );
    assert_eq!(
        err,
        "error: E08000025 (Birmingham) lies in Birmingham and the Black Country, which is not \
         one of the provider's contract package areas (London East, London West); agreements \
         are only for LAs where the provider delivers\n"
    );
}

#[test]
fn add_refuses_a_representative_without_email() {
    let env = Env::new();
    let err = refused(
        &env,
        &[
            "agreement",
            "add",
            "--la",
            "E09000002",
            "--representative",
            "Jo Bloggs",
            "--signed",
            "2024-06-01",
            "--document",
            "agreement.pdf",
        ],
        65,
    );
    assert_eq!(
        err,
        "error: the representative \"Jo Bloggs\" has no email address; write it as \"Name \
         <email>\", for example \"Jo Bloggs <jo.bloggs@example.gov.uk>\"\n"
    );
}

#[test]
fn add_refuses_a_malformed_email() {
    let env = Env::new();
    let err = refused(
        &env,
        &[
            "agreement",
            "add",
            "--la",
            "E09000002",
            "--representative",
            "Jo <jo.bloggs.example.gov.uk>",
            "--signed",
            "2024-06-01",
            "--document",
            "agreement.pdf",
        ],
        65,
    );
    assert_eq!(
        err,
        "error: the representative's email \"jo.bloggs.example.gov.uk\" is not an email \
         address: it has no @\n"
    );
}

#[test]
fn add_refuses_a_missing_document() {
    let env = Env::new();
    let err = refused(
        &env,
        &[
            "agreement",
            "add",
            "--la",
            "E09000002",
            "--representative",
            REP,
            "--signed",
            "2024-06-01",
            "--document",
            "signed.pdf",
        ],
        66,
    );
    assert_eq!(
        err,
        "error: the signed agreement signed.pdf does not exist; give the path to the signed copy\n"
    );
    let err = refused(
        &env,
        &[
            "agreement",
            "add",
            "--la",
            "E09000002",
            "--representative",
            REP,
            "--signed",
            "2024-06-01",
            "--document",
            "reference",
        ],
        66,
    );
    assert_eq!(err, "error: the signed agreement reference is not a file\n");
}

#[test]
fn add_refuses_an_empty_document() {
    let env = Env::new();
    std::fs::write(env.path("empty.pdf"), b"").expect("write");
    let err = refused(
        &env,
        &[
            "agreement",
            "add",
            "--la",
            "E09000002",
            "--representative",
            REP,
            "--signed",
            "2024-06-01",
            "--document",
            "empty.pdf",
        ],
        65,
    );
    assert!(err.contains("empty.pdf is empty"), "{err}");
}

#[test]
fn add_refuses_bad_dates() {
    let env = Env::new();
    let base = [
        "agreement",
        "add",
        "--la",
        "E09000002",
        "--representative",
        REP,
        "--document",
        "agreement.pdf",
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };

    let err = refused(&env, &with(&["--signed", "1/6/2024"]), 65);
    assert_eq!(
        err,
        "error: the signed date \"1/6/2024\" is not a date; write it as YYYY-MM-DD\n"
    );

    let err = refused(
        &env,
        &with(&["--signed", "2024-06-01", "--expires", "2024-05-31"]),
        65,
    );
    assert_eq!(
        err,
        "error: the agreement expires on 2024-05-31, before it was signed on 2024-06-01; check the dates\n"
    );

    let err = refused(&env, &with(&["--signed", "2099-01-01"]), 65);
    assert!(
        err.starts_with("error: the agreement is dated 2099-01-01, after today ("),
        "{err}"
    );
    assert!(
        err.ends_with(", Europe/London); record it once it has been signed\n"),
        "{err}"
    );

    let err = refused(
        &env,
        &with(&["--signed", "2012-06-01", "--expires", "2013-03-31"]),
        65,
    );
    assert!(
        err.starts_with("error: the agreement expired on 2013-03-31 (today is "),
        "{err}"
    );
}

#[test]
fn a_refused_add_leaves_no_trace() {
    let env = Env::new();
    refused(
        &env,
        &[
            "agreement",
            "add",
            "--la",
            "E08000025",
            "--representative",
            REP,
            "--signed",
            "2024-06-01",
            "--document",
            "agreement.pdf",
        ],
        65,
    );
    let out = env.run(&["audit", "verify"]);
    assert!(
        stdout(&out).starts_with("audit chain intact: 0 entries"),
        "{}",
        stdout(&out)
    );
    assert!(!env.path("var/provider/agreements").exists());
}

#[test]
fn revoke_and_its_refusals() {
    let env = Env::new();
    let err = refused(
        &env,
        &["agreement", "revoke", "--la", "E09000002", "--reason", "x"],
        1,
    );
    assert_eq!(
        err,
        "error: there is no agreement on file for E09000002; `mishare agreement list` shows those there are\n"
    );
    assert_status(&add(&env, "E09000002", &[]), 0);
    let out = env.run(&[
        "agreement",
        "revoke",
        "--la",
        "E09000002",
        "--reason",
        "LA withdrew",
    ]);
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out),
        "agreement 1 for E09000002 (Barking and Dagenham) revoked; nothing goes to E09000002 \
         until a new agreement is added\n"
    );
    let err = refused(
        &env,
        &[
            "agreement",
            "revoke",
            "--la",
            "E09000002",
            "--reason",
            "again",
        ],
        1,
    );
    assert!(
        err.starts_with("error: the agreement for E09000002 was already revoked at "),
        "{err}"
    );
    let err = refused(
        &env,
        &["agreement", "revoke", "--la", "E09000030", "--reason", " "],
        1,
    );
    assert_eq!(
        err,
        "error: give a reason (--reason TEXT); it goes in the audit log\n"
    );
    let show = env.run(&["agreement", "show", "--la", "E09000002"]);
    assert!(
        stdout(&show).contains("standing:       revoked"),
        "{}",
        stdout(&show)
    );
    assert!(
        stdout(&show).contains("agreement 1 revoked by provider:tester: LA withdrew"),
        "{}",
        stdout(&show)
    );
}

#[test]
fn suspend_prints_the_id_and_refuses_a_duplicate() {
    let env = Env::new();
    let out = env.run(&[
        "suspend",
        "--la",
        "E09000002",
        "--reason",
        "breach check",
        "--reference",
        "INC-7",
    ]);
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out),
        "suspension 1: sharing with E09000002 is suspended; lift it with `mishare resume 1`\n"
    );
    let err = refused(
        &env,
        &["suspend", "--la", "E09000002", "--reason", "again"],
        1,
    );
    assert_eq!(
        err,
        "error: sharing with E09000002 is already suspended by the provider (suspension 1); \
         `mishare status` lists active suspensions\n"
    );
    // Another scope is another suspension.
    let all = env.run(&["suspend", "--all", "--reason", "incident"]);
    assert_status(&all, 0);
    assert_eq!(
        stdout(&all),
        "suspension 2: sharing with every LA is suspended; lift it with `mishare resume 2`\n"
    );
    let err = refused(&env, &["suspend", "--all", "--reason", "again"], 1);
    assert!(
        err.contains("already suspended by the provider (suspension 2)"),
        "{err}"
    );
}

#[test]
fn suspend_needs_exactly_one_scope_and_a_known_la() {
    let env = Env::new();
    assert_status(&env.run(&["suspend", "--reason", "x"]), 2);
    assert_status(
        &env.run(&["suspend", "--all", "--la", "E09000002", "--reason", "x"]),
        2,
    );
    let err = refused(
        &env,
        &["suspend", "--la", "E0900002", "--reason", "typo"],
        1,
    );
    assert_eq!(
        err,
        "error: \"E0900002\" is not an LA in the reference data reference/las.csv; check the \
         code (`mishare status` lists the configured LAs)\n"
    );
}

#[test]
fn resume_refusals() {
    let env = Env::new();
    let err = refused(&env, &["resume", "9"], 1);
    assert_eq!(
        err,
        "error: there is no suspension 9; `mishare status` lists active suspensions\n"
    );
    assert_status(&env.run(&["suspend", "--all", "--reason", "incident"]), 0);
    let out = env.run(&["resume", "1"]);
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out),
        "suspension 1 lifted: sharing with every LA may resume\n"
    );
    let err = refused(&env, &["resume", "1"], 1);
    assert!(
        err.starts_with("error: suspension 1 was already lifted at ")
            && err.ends_with(" by provider:tester\n"),
        "{err}"
    );
}

#[test]
fn resume_says_what_else_still_suspends() {
    let env = Env::new();
    assert_status(&env.run(&["suspend", "--all", "--reason", "incident"]), 0);
    assert_status(
        &env.run(&["suspend", "--la", "E09000002", "--reason", "local"]),
        0,
    );
    let out = env.run(&["resume", "2"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out)
            .contains("still in force: suspension 1 by the provider (sharing with every LA)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_dwp_suspension_cannot_be_lifted_from_the_cli() {
    let env = Env::new();
    let id = env
        .store()
        .suspend_by_dwp(
            Scope::All,
            "national incident",
            Some("DWP-1"),
            "dwp.test",
            at("2024-06-01T09:00:00Z"),
        )
        .expect("DWP suspends")
        .id;
    let err = refused(&env, &["resume", &id.to_string()], 1);
    assert_eq!(
        err,
        format!("error: suspension {id} was required by DWP; only DWP can lift it\n")
    );
    let status = env.run(&["status", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&status)).expect("json");
    assert_eq!(doc["suspensions"][0]["made_by"], "dwp");
    assert_eq!(doc["suspensions"][0]["lifted_at"], serde_json::Value::Null);
}

#[test]
fn status_json_shape() {
    let env = Env::new();
    assert_status(&add(&env, "E09000002", &[]), 0);
    assert_status(&add(&env, "E09000030", &[]), 0);
    assert_status(
        &env.run(&[
            "suspend",
            "--la",
            "E09000030",
            "--reason",
            "check",
            "--reference",
            "INC-9",
        ]),
        0,
    );
    let out = env.run(&["status", "--format", "json"]);
    assert_status(&out, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert!(doc["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(doc["london_date"].as_str().is_some_and(|d| d.len() == 10));
    let las = doc["authorities"].as_array().expect("authorities");
    let codes: Vec<&str> = las.iter().map(|a| a["la"].as_str().expect("la")).collect();
    assert_eq!(
        codes,
        ["E09000002", "E09000030", "E08000025", "E09999999"],
        "config order"
    );

    let barking = &las[0];
    assert_eq!(barking["name"], "Barking and Dagenham");
    assert_eq!(barking["cpa"], "London East");
    assert_eq!(barking["agreement"]["standing"], "active");
    assert_eq!(barking["agreement"]["representative"]["name"], "Jo Bloggs");
    assert_eq!(barking["suspensions"], serde_json::json!([]));
    assert_eq!(
        barking["gate"],
        serde_json::json!({ "permitted": true, "reason": null, "findings": [] })
    );

    let tower = &las[1];
    assert_eq!(tower["gate"]["permitted"], false);
    assert_eq!(tower["gate"]["reason"], "SUSPENDED_BY_PROVIDER");
    assert_eq!(tower["suspensions"][0]["id"], 1);
    assert_eq!(tower["suspensions"][0]["scope"], "E09000030");
    assert_eq!(tower["suspensions"][0]["reference"], "INC-9");

    let birmingham = &las[2];
    assert_eq!(birmingham["agreement"], serde_json::Value::Null);
    let reasons: Vec<&str> = birmingham["gate"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(reasons, ["NO_AGREEMENT", "OUTSIDE_CONTRACT_AREA"]);

    let unknown = &las[3];
    assert_eq!(unknown["name"], serde_json::Value::Null);
    assert_eq!(unknown["gate"]["reason"], "UNKNOWN_LA");

    assert_eq!(doc["suspensions"].as_array().map(Vec::len), Some(1));
}

#[test]
fn status_is_read_only() {
    let env = Env::new();
    assert_status(&env.run(&["status"]), 0);
    let out = env.run(&["audit", "verify"]);
    assert!(
        stdout(&out).starts_with("audit chain intact: 0 entries"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn status_text() {
    let env = Env::new();
    assert_status(&add(&env, "E09000002", &[]), 0);
    assert_status(&env.run(&["suspend", "--all", "--reason", "incident"]), 0);
    let out = env.run(&["status"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("E09000002 Barking and Dagenham (London East)\n"),
        "{text}"
    );
    assert!(
        text.contains("  gate now:    refuse SUSPENDED_BY_PROVIDER (suspended by the provider (suspension 1))\n"),
        "{text}"
    );
    assert!(
        text.contains("E09999999 (not in the reference data)\n"),
        "{text}"
    );
    assert!(
        text.contains("  gate now:    refuse UNKNOWN_LA (the LA is not in the reference data)\n"),
        "{text}"
    );
}

#[test]
fn a_missing_config_says_where_it_looked() {
    let env = Env::new();
    std::fs::remove_file(env.config_path()).expect("rm");
    let err = refused(&env, &["status"], 78);
    assert_eq!(
        err,
        "error: no configuration file at provider.toml; run the command in the directory that \
         holds provider.toml, or name the file with --config FILE\n"
    );
    let err = refused(
        &env,
        &["--config", "elsewhere/p.toml", "agreement", "list"],
        78,
    );
    assert!(
        err.starts_with("error: no configuration file at elsewhere/p.toml;"),
        "{err}"
    );
}

#[test]
fn a_bad_config_names_the_file_line_and_key() {
    let env = Env::new();
    let text = std::fs::read_to_string(env.config_path()).expect("read");
    std::fs::write(
        env.config_path(),
        text.replacen("[tls]", "[tls]\nciphers = \"all\"", 1),
    )
    .expect("write");
    let err = refused(&env, &["agreement", "list"], 78);
    assert!(
        err.starts_with("error: provider.toml: line 7, column 1: unknown field `ciphers`"),
        "{err}"
    );
}

#[test]
fn the_data_dir_must_be_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    assert_status(&env.run(&["status"]), 0);
    std::fs::set_permissions(
        env.path("var/provider"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let err = refused(&env, &["status"], 1);
    assert_eq!(
        err,
        "error: var/provider is accessible to other users (mode 755); the provider's state is \
         owner-only: run `chmod 700 var/provider`\n"
    );
}

#[test]
fn every_argument_has_help() {
    let env = Env::new();
    for cmd in [
        &["agreement", "add", "-h"][..],
        &["agreement", "list", "-h"],
        &["agreement", "show", "-h"],
        &["agreement", "revoke", "-h"],
        &["suspend", "-h"],
        &["resume", "-h"],
        &["status", "-h"],
        &["audit", "verify", "-h"],
        &["audit", "export", "-h"],
    ] {
        let out = env.run(cmd);
        assert_status(&out, 0);
        let text = stdout(&out);
        // In short help clap puts an argument's help beside its name; an
        // argument with none is a bare name.
        let args = text
            .lines()
            .filter(|l| l.starts_with("  -") || l.starts_with("      --") || l.starts_with("  <"));
        for line in args {
            assert!(line.trim().contains("  "), "{cmd:?}: no help for {line:?}");
        }
    }
}
