//! The audit chain: intact logs verify; edits made straight to the database
//! (as with the `sqlite3` tool) are caught and the first broken entry named.

mod common;

use common::{Env, assert_status, at, database, raw_connection, stderr, stdout};
use mishare::common::audit::{self, Problem, Verification};
use mishare::provider::store::{Maker, Scope};

/// A log of six entries: two agreements, a suspension and its lifting, a
/// revocation and another suspension.
fn six_entries() -> Env {
    let env = Env::new();
    let mut store = env.store();
    env.add_agreement(&mut store, "E09000002", "2012-06-01", None, "2012-10-01");
    env.add_agreement(&mut store, "E09000030", "2012-06-01", None, "2012-10-01");
    let s = store
        .suspend(
            Scope::All,
            Maker::Provider,
            "incident",
            None,
            "provider:tester",
            at("2012-10-02T09:00:00Z"),
        )
        .expect("suspend");
    store
        .lift(
            s.id,
            Maker::Provider,
            "provider:tester",
            at("2012-10-02T10:00:00Z"),
        )
        .expect("lift");
    store
        .revoke_agreement(
            "E09000030",
            "withdrawn",
            "provider:tester",
            at("2012-10-03T09:00:00Z"),
        )
        .expect("revoke");
    store
        .suspend(
            Scope::La("E09000002".into()),
            Maker::Provider,
            "check",
            None,
            "provider:tester",
            at("2012-10-04T09:00:00Z"),
        )
        .expect("suspend");
    env
}

/// Opens the database as an attacker would, without the append-only
/// triggers that guard against this program's own mistakes.
fn tamper(env: &Env, sql: &str) {
    let db = raw_connection(&database(env));
    db.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
        .expect("drop triggers");
    db.execute_batch(sql).expect("tamper");
}

fn verdict(env: &Env) -> Verification {
    env.store().verify_audit().expect("verify runs")
}

fn broken_at(env: &Env) -> (i64, Problem) {
    match verdict(env) {
        Verification::Broken(b) => (b.seq, b.problem),
        Verification::Intact { entries, .. } => panic!("tampering not caught ({entries} entries)"),
    }
}

#[test]
fn an_untouched_log_verifies() {
    let env = six_entries();
    assert!(matches!(
        verdict(&env),
        Verification::Intact { entries: 6, .. }
    ));
    let out = env.run(&["audit", "verify"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).starts_with("audit chain intact: 6 entries\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_empty_log_verifies() {
    let env = Env::new();
    let out = env.run(&["audit", "verify"]);
    assert_status(&out, 0);
    assert!(stdout(&out).starts_with("audit chain intact: 0 entries\n"));
}

#[test]
fn the_program_cannot_update_or_delete_entries() {
    let env = six_entries();
    let db = raw_connection(&database(&env));
    let update = db.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 1", []);
    assert!(update.is_err_and(|e| e.to_string().contains("append-only")));
    let delete = db.execute("DELETE FROM audit_log WHERE seq = 6", []);
    assert!(delete.is_err());
}

#[test]
fn a_changed_field_is_caught() {
    for (column, value) in [
        ("time", "'2012-01-01T00:00:00.000Z'"),
        ("kind", "'suspension_lifted'"),
        ("actor", "'provider:someone-else'"),
        ("la", "'E09000009'"), // entry 3 (suspend all) has none
        ("detail", "'{}'"),
    ] {
        let env = six_entries();
        tamper(
            &env,
            &format!("UPDATE audit_log SET {column} = {value} WHERE seq = 3"),
        );
        assert_eq!(broken_at(&env), (3, Problem::HashMismatch), "{column}");
    }
}

#[test]
fn a_changed_field_with_its_hash_recomputed_breaks_the_next_link() {
    let env = six_entries();
    let entries = env.store().audit_entries(None).expect("entries");
    let e = &entries[2];
    let forged = audit::entry_hash(
        e.seq,
        &e.time,
        &e.kind,
        "provider:mallory",
        e.la.as_deref(),
        &e.detail,
        &e.prev_hash,
    );
    tamper(
        &env,
        &format!(
            "UPDATE audit_log SET actor = 'provider:mallory', hash = '{forged}' WHERE seq = 3"
        ),
    );
    assert_eq!(broken_at(&env), (4, Problem::PrevLinkBroken));
}

#[test]
fn a_blob_stored_in_a_text_field_is_caught() {
    let env = six_entries();
    // A number would become text under the column's TEXT affinity; a blob
    // stays a blob.
    tamper(&env, "UPDATE audit_log SET detail = x'7b7d' WHERE seq = 2");
    assert_eq!(broken_at(&env), (2, Problem::NotText { field: "detail" }));
}

#[test]
fn a_deleted_row_is_caught() {
    let env = six_entries();
    tamper(&env, "DELETE FROM audit_log WHERE seq = 3");
    assert_eq!(broken_at(&env), (3, Problem::Gap { next: 4 }));
}

#[test]
fn a_deleted_first_row_is_caught() {
    let env = six_entries();
    tamper(&env, "DELETE FROM audit_log WHERE seq = 1");
    assert_eq!(broken_at(&env), (1, Problem::Gap { next: 2 }));
}

#[test]
fn a_deleted_last_row_is_caught() {
    let env = six_entries();
    tamper(&env, "DELETE FROM audit_log WHERE seq = 6");
    assert_eq!(
        broken_at(&env),
        (
            6,
            Problem::HeadMismatch {
                last: 5,
                head_seq: 6
            }
        )
    );
}

#[test]
fn a_deleted_last_row_and_a_rewound_head_seq_is_caught() {
    let env = six_entries();
    tamper(
        &env,
        "DELETE FROM audit_log WHERE seq = 6; UPDATE audit_head SET seq = 5;",
    );
    assert_eq!(
        broken_at(&env),
        (
            5,
            Problem::HeadMismatch {
                last: 5,
                head_seq: 5
            }
        )
    );
}

#[test]
fn a_swapped_pair_of_rows_is_caught() {
    let env = six_entries();
    // Swap the contents of entries 2 and 3, keeping their numbers.
    tamper(
        &env,
        "CREATE TEMP TABLE t AS SELECT * FROM audit_log WHERE seq IN (2, 3);
         UPDATE audit_log SET (time, kind, actor, la, detail, prev_hash, hash) =
             (SELECT time, kind, actor, la, detail, prev_hash, hash FROM t
              WHERE t.seq = 5 - audit_log.seq)
         WHERE seq IN (2, 3);",
    );
    let entries = env.store().audit_entries(None).expect("entries");
    assert_eq!(entries[1].kind, "suspension_made", "the swap happened");
    assert_eq!(broken_at(&env), (2, Problem::HashMismatch));
}

#[test]
fn a_swapped_pair_of_whole_rows_is_caught() {
    let env = six_entries();
    // Swap the numbers too, so each row keeps a hash that matches it.
    tamper(
        &env,
        "UPDATE audit_log SET seq = -2 WHERE seq = 2;
         UPDATE audit_log SET seq = 2 WHERE seq = 3;
         UPDATE audit_log SET seq = 3 WHERE seq = -2;",
    );
    assert_eq!(broken_at(&env), (2, Problem::HashMismatch));
}

#[test]
fn verify_names_the_first_broken_entry_and_exits_1() {
    let env = six_entries();
    tamper(
        &env,
        "UPDATE audit_log SET actor = 'x' WHERE seq = 4; DELETE FROM audit_log WHERE seq = 2;",
    );
    let out = env.run(&["audit", "verify"]);
    assert_status(&out, 1);
    assert_eq!(
        stderr(&out),
        "error: audit chain broken at entry 2: gap: the entry is missing and the log continues \
         at entry 3 (entries were deleted)\n"
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn verify_reports_a_changed_field_in_words() {
    let env = six_entries();
    tamper(&env, "UPDATE audit_log SET la = 'E09000009' WHERE seq = 5");
    let out = env.run(&["audit", "verify"]);
    assert_status(&out, 1);
    assert_eq!(
        stderr(&out),
        "error: audit chain broken at entry 5: hash mismatch: its stored fields do not give \
         its hash (the entry was changed)\n"
    );
}

#[test]
fn appending_after_a_deleted_last_row_keeps_the_gap_visible() {
    let env = six_entries();
    tamper(&env, "DELETE FROM audit_log WHERE seq = 6");
    assert_status(&env.run(&["suspend", "--all", "--reason", "after"]), 0);
    assert_eq!(broken_at(&env), (6, Problem::Gap { next: 7 }));
}

#[test]
fn export_writes_json_lines_in_order() {
    let env = six_entries();
    let out = env.run(&["audit", "export"]);
    assert_status(&out, 0);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 6);
    let seqs: Vec<i64> = lines
        .iter()
        .map(|l| l["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(lines[0]["kind"], "agreement_added");
    assert_eq!(lines[0]["la"], "E09000002");
    assert_eq!(lines[0]["detail"]["agreement"]["signed"], "2012-06-01");
    assert_eq!(lines[0]["prev_hash"], audit::GENESIS);
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);
    assert_eq!(lines[2]["la"], serde_json::Value::Null);
    for key in [
        "seq",
        "time",
        "kind",
        "actor",
        "la",
        "detail",
        "prev_hash",
        "hash",
    ] {
        assert!(lines[5].get(key).is_some(), "{key}");
    }
}

#[test]
fn export_since_filters_by_time() {
    let env = six_entries();
    let since = |arg: &str| {
        let out = env.run(&["audit", "export", "--since", arg]);
        assert_status(&out, 0);
        stdout(&out).lines().count()
    };
    // Entries are timed 2012-10-01 09:00 (two), 10-02 09:00, 10-02 10:00,
    // 10-03 09:00, 10-04 09:00 (UTC).
    assert_eq!(since("2012-10-02T09:00:00Z"), 4);
    assert_eq!(since("2012-10-02T09:00:00.001Z"), 3);
    // A date means midnight in London: 2012-10-03 00:00 BST = 10-02 23:00 UTC.
    assert_eq!(since("2012-10-03"), 2);
    assert_eq!(since("2030-01-01"), 0);
    let bad = env.run(&["audit", "export", "--since", "yesterday"]);
    assert_status(&bad, 64);
    assert!(
        stderr(&bad).contains("--since \"yesterday\" is not a time"),
        "{}",
        stderr(&bad)
    );
}
