//! The ledger's tamper evidence at the store: every way a row can be
//! changed outside mishare (changed, typed differently, not UTF-8, deleted,
//! added, its later step set, cleared or changed) is found by
//! `verify_ledger`, names the row, and withholds only the LAs concerned.

use chrono::{DateTime, Utc};
use mishare::provider::ledger::{Axis, Figures, Known, KnownValue, ReleaseTable};
use mishare::provider::store::deliveries::{Addressed, NewDelivery};
use mishare::provider::store::{DATABASE_FILE, LedgerCheck, NewRelease, Store};
use mishare::reference::{Dimensions, LaReference, LocalAuthority};
use mishare::sanitiser::{Catalogue, Classification, Measure, PeriodRange, View};
use mishare::wire::v1;

const A: &str = "E09000002";
const B: &str = "E09000009";

fn now() -> DateTime<Utc> {
    "2025-02-03T06:00:00Z".parse().expect("time")
}

fn catalogue() -> Catalogue {
    Catalogue::new(
        Dimensions::default(),
        LaReference::from_entries([A, B].map(|code| LocalAuthority {
            code: code.into(),
            name: format!("Council {code}"),
            cpa: "London East".into(),
        })),
    )
}

fn table(la: &str, month: &str, cells: [u64; 2]) -> ReleaseTable {
    ReleaseTable {
        measure: Measure::Referrals,
        view: View::Counts,
        range: PeriodRange::single(month.parse().expect("month")),
        rows: Axis {
            dimension: "disability".into(),
            codes: vec!["Y".into(), "N".into()],
        },
        cols: Some(Axis {
            dimension: "period".into(),
            codes: vec![month.into()],
        }),
        fixed: vec![("la_code".into(), la.into())],
        figures: Figures::Counts {
            cells: cells.iter().map(|&c| vec![c]).collect(),
            row_totals: cells.to_vec(),
            col_totals: vec![cells.iter().sum()],
            total: cells.iter().sum(),
        },
    }
}

/// A store holding, for each of A and B, two months' releases (the first
/// delivered) and two known figures (the first removed). Release ids 1–4
/// alternate A, B; known figure ids 1–4 too.
fn ledger() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("state")).expect("store");
    let mut transfer = 0;
    for month in ["2024-11", "2024-12"] {
        let run = store
            .start_run("referrals-monthly", month, "test", now())
            .expect("run");
        for la in [A, B] {
            transfer += 1;
            let transfer_id = format!("{transfer:032x}");
            let spool_file = format!("{transfer_id}.age");
            let new = NewDelivery {
                to: Addressed {
                    run_id: run,
                    la,
                    report: "referrals-monthly",
                    period: month,
                    classification: Classification::Internal,
                },
                transfer_id: &transfer_id,
                spool_file: &spool_file,
                size: 0,
                sha256: &[0; 32],
            };
            let t = table(la, month, [20, 140]);
            let release = NewRelease {
                table: &t,
                plaintext_sha256: &[7; 32],
                findings: &[],
            };
            let delivery = store
                .record_spooled(&new, &release, "test", now())
                .expect("spooled");
            if month == "2024-11" {
                let receipt = v1::Receipt {
                    transfer_id: transfer_id.clone(),
                    sha256: vec![0; 32],
                    stored_as: spool_file,
                    ..Default::default()
                };
                store
                    .record_receipt(delivery.id, &receipt, "verified", "test", now())
                    .expect("receipt");
            }
        }
    }
    let catalogue = catalogue();
    for period in ["2024-11", "2024-12"] {
        for la in [A, B] {
            let known = Known::new(
                &catalogue,
                0,
                Measure::Referrals,
                period.parse().expect("period"),
                vec![("la_code".into(), la.into())],
                KnownValue::Exact(160),
                "DWP official statistics",
            )
            .expect("known");
            let row = store.add_known(&known, "test", now()).expect("known");
            if period == "2024-11" {
                store
                    .remove_known(row.known.id, "superseded", "test", now())
                    .expect("removed");
            }
        }
    }
    (dir, store)
}

/// Runs `sql` on the database behind mishare's back, then verifies.
fn tampered(sql: &str) -> LedgerCheck {
    let (dir, store) = ledger();
    drop(store);
    let state = dir.path().join("state");
    let conn = rusqlite::Connection::open(state.join(DATABASE_FILE)).expect("db");
    conn.execute_batch(sql).expect("tampered");
    drop(conn);
    let store = Store::open(&state).expect("store");
    store.verify_ledger().expect("verified")
}

/// The one problem found: it names `message`, undermines exactly `las`,
/// and withholds them and nobody else.
fn only_problem(check: &LedgerCheck, message: &str, las: &[&str]) {
    assert!(check.chain.is_none(), "{check:?}");
    assert_eq!(check.problems.len(), 1, "{check:?}");
    assert_eq!(check.problems[0].message, message, "{check:?}");
    assert_eq!(check.problems[0].las, las, "{check:?}");
    for la in [A, B] {
        assert_eq!(
            check.refusal(la).is_some(),
            las.contains(&la),
            "{la}: {check:?}"
        );
    }
}

#[test]
fn a_ledger_written_through_the_store_verifies() {
    let (_dir, store) = ledger();
    let check = store.verify_ledger().expect("verified");
    assert!(check.is_intact(), "{check:?}");
    assert_eq!((check.releases, check.known), (4, 4));
    assert_eq!(store.releases(None).expect("all").len(), 4);
    let of_b = store.releases(Some(B)).expect("B's");
    assert_eq!(
        of_b.iter()
            .map(|r| (r.id, r.la.as_str()))
            .collect::<Vec<_>>(),
        [(2, B), (4, B)]
    );
    assert!(of_b[0].delivered_at.is_some() && of_b[1].delivered_at.is_none());
    assert_eq!(store.known_figures(None, true).expect("all").len(), 4);
    let known_a = store.known_figures(Some(A), false).expect("A's current");
    assert_eq!(
        known_a.iter().map(|k| k.known.id).collect::<Vec<_>>(),
        [3],
        "A's removed figure is left out"
    );
    assert_eq!(store.known_figures(Some(A), true).expect("A's").len(), 2);
}

#[test]
fn a_changed_figure_is_found() {
    let check = tampered(
        "DROP TRIGGER releases_fixed;
         UPDATE releases SET figures = replace(figures, '140', '120') WHERE id = 4;",
    );
    only_problem(
        &check,
        "release 4 no longer matches its audit entry (it was changed)",
        &[B],
    );
}

#[test]
fn a_value_stored_with_another_type_is_found() {
    let check = tampered(
        "DROP TRIGGER releases_fixed;
         UPDATE releases SET figures = CAST(figures AS BLOB) WHERE id = 1;",
    );
    only_problem(
        &check,
        "release 1 no longer matches its audit entry (it was changed)",
        &[A],
    );
}

#[test]
fn text_that_is_not_utf8_is_found_not_a_panic() {
    let check = tampered(
        "DROP TRIGGER releases_fixed;
         UPDATE releases SET report = CAST(X'FF6F6F' AS TEXT) WHERE id = 3;",
    );
    only_problem(
        &check,
        "release 3 no longer matches its audit entry (it was changed)",
        &[A],
    );
}

#[test]
fn a_deleted_release_is_found() {
    let check = tampered(
        "DROP TRIGGER releases_no_delete;
         DELETE FROM releases WHERE id = 4;",
    );
    only_problem(
        &check,
        "release 4 is in the audit log (ledger_release) but gone from the ledger (it was \
         deleted)",
        &[B],
    );
}

#[test]
fn an_added_release_is_found() {
    let check = tampered(
        "INSERT INTO deliveries (run_id, la_code, transfer_id, report, period, classification,
             state, size, sha256, spool_file, created_at, updated_at)
         SELECT run_id, 'E00000000', transfer_id || 'x', report, period, classification, state,
             size, sha256, spool_file || 'x', created_at, updated_at FROM deliveries
             WHERE id = 3;
         INSERT INTO releases (delivery_id, run_id, report, transfer_id, la_code, measure,
             view, period_range, dimensions, filters, classification, figures,
             plaintext_sha256, spooled_at)
         SELECT last_insert_rowid(), run_id, report, transfer_id || 'x', la_code, measure, view,
             period_range, dimensions, filters, classification, figures, plaintext_sha256,
             spooled_at FROM releases WHERE id = 3;",
    );
    only_problem(
        &check,
        "release 5 has no audit entry (it was added outside mishare)",
        &[A],
    );
}

#[test]
fn a_delivery_time_cleared_changed_or_set_is_found() {
    let check = tampered(
        "DROP TRIGGER releases_delivered_once;
         UPDATE releases SET delivered_at = NULL WHERE id = 1;",
    );
    only_problem(
        &check,
        "release 1's delivery time was cleared outside mishare",
        &[A],
    );
    let check = tampered(
        "DROP TRIGGER releases_delivered_once;
         UPDATE releases SET delivered_at = '2025-02-04T06:00:00Z' WHERE id = 2;",
    );
    only_problem(
        &check,
        "release 2's delivery time no longer matches its audit entry",
        &[B],
    );
    let check = tampered("UPDATE releases SET delivered_at = '2025-02-04T06:00:00Z' WHERE id = 4;");
    only_problem(&check, "release 4's delivery time has no audit entry", &[B]);
}

#[test]
fn a_known_figure_changed_restored_or_removed_outside_mishare_is_found() {
    let check = tampered(
        "DROP TRIGGER known_figures_fixed;
         UPDATE known_figures SET value_lo = 150, value_hi = 150 WHERE id = 3;",
    );
    only_problem(
        &check,
        "known figure 3 no longer matches its audit entry (it was changed)",
        &[A],
    );
    let check = tampered(
        "DROP TRIGGER known_figures_removed_once;
         UPDATE known_figures SET removed_at = NULL, removed_by = NULL, remove_reason = NULL
             WHERE id = 2;",
    );
    only_problem(
        &check,
        "known figure 2 was removed, and restored outside mishare",
        &[B],
    );
    let check = tampered(
        "UPDATE known_figures SET removed_at = '2025-02-04T06:00:00Z', removed_by = 'x',
             remove_reason = 'y' WHERE id = 4;",
    );
    only_problem(
        &check,
        "known figure 4 was marked removed outside mishare",
        &[B],
    );
}

#[test]
fn a_broken_chain_withholds_every_la() {
    let check = tampered(
        "DROP TRIGGER audit_log_no_update;
         UPDATE audit_log SET actor = 'someone' WHERE seq = 2;",
    );
    assert!(check.chain.is_some(), "{check:?}");
    for la in [A, B] {
        let why = check.refusal(la).expect("withheld");
        assert!(why.contains("the ledger cannot be verified"), "{why}");
    }
}
