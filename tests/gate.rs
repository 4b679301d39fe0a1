//! The gate against a real database: every reason code, the expiry day in
//! Europe/London, suspensions and failing closed.

mod common;

use common::{Env, assert_status, at, raw_connection, stdout};
use mishare::common::audit::Verification;
use mishare::provider::gate::{Gate, Reason, Refusal, Stage};
use mishare::provider::store::{Maker, Scope, Store};

const LA: &str = "E09000002";
const REPORT: &str = "referrals-monthly";

/// Asks the gate and returns the permit's LA and audit entry, or the refusal.
fn ask(
    env: &Env,
    store: &mut Store,
    la: &str,
    report: &str,
    when: &str,
) -> Result<(String, i64), Refusal> {
    let config = env.config();
    let mut gate = Gate::new(&config, store, "daemon");
    gate.authorise(la, report, at(when), Stage::TransferStart, |permit| {
        assert_eq!(permit.stage(), Stage::TransferStart);
        assert_eq!(permit.report(), report);
        (permit.la().to_string(), permit.audit_seq())
    })
}

fn refused(env: &Env, store: &mut Store, la: &str, report: &str, when: &str) -> Reason {
    match ask(env, store, la, report, when) {
        Ok(_) => panic!("{la} at {when} should be refused"),
        Err(refusal) => refusal.reason,
    }
}

/// An env with an agreement for LA signed 2012-06-01, expiring 2013-03-31.
fn with_agreement() -> (Env, Store) {
    let env = Env::new();
    let mut store = env.store();
    env.add_agreement(
        &mut store,
        LA,
        "2012-06-01",
        Some("2013-03-31"),
        "2012-10-01",
    );
    (env, store)
}

#[test]
fn permit_when_every_rule_holds_and_it_is_audited() {
    let (env, mut store) = with_agreement();
    let (la, seq) = ask(&env, &mut store, LA, REPORT, "2012-10-01T12:00:00Z").expect("permit");
    assert_eq!(la, LA);
    let entries = store.audit_entries(None).expect("entries");
    let entry = entries.iter().find(|e| e.seq == seq).expect("audited");
    assert_eq!(entry.kind, "gate_permit");
    assert_eq!(entry.la.as_deref(), Some(LA));
    let detail: serde_json::Value = serde_json::from_str(&entry.detail).expect("json");
    assert_eq!(detail["stage"], "transfer_start");
    assert_eq!(detail["report"], REPORT);
    assert_eq!(detail["permitted"], true);
}

#[test]
fn refusals_are_audited_with_their_reason_and_stage() {
    let env = Env::new();
    let mut store = env.store();
    let config = env.config();
    let refusal = Gate::new(&config, &mut store, "daemon")
        .authorise(
            LA,
            REPORT,
            at("2012-10-01T12:00:00Z"),
            Stage::BeforeCommit,
            |_| (),
        )
        .expect_err("no agreement");
    let seq = refusal.audit_seq.expect("audited");
    let entries = store.audit_entries(None).expect("entries");
    let entry = entries.iter().find(|e| e.seq == seq).expect("entry");
    assert_eq!(entry.kind, "gate_refusal");
    assert_eq!(entry.actor, "daemon");
    let detail: serde_json::Value = serde_json::from_str(&entry.detail).expect("json");
    assert_eq!(detail["reason"], "NO_AGREEMENT");
    assert_eq!(detail["stage"], "before_commit");
    assert_eq!(
        refusal.to_string(),
        "the gate refused E09000002 at before_commit: NO_AGREEMENT (no agreement is on file)"
    );
}

#[test]
fn no_agreement() {
    let env = Env::new();
    let mut store = env.store();
    assert_eq!(
        refused(&env, &mut store, LA, REPORT, "2012-10-01T12:00:00Z"),
        Reason::NoAgreement
    );
}

#[test]
fn agreement_not_yet_signed_is_no_agreement() {
    let (env, mut store) = with_agreement();
    assert_eq!(
        refused(&env, &mut store, LA, REPORT, "2012-05-31T12:00:00Z"),
        Reason::NoAgreement
    );
    assert!(ask(&env, &mut store, LA, REPORT, "2012-06-01T00:00:00Z").is_ok());
}

#[test]
fn agreement_revoked() {
    let (env, mut store) = with_agreement();
    store
        .revoke_agreement(
            LA,
            "the LA withdrew",
            "provider:tester",
            at("2012-11-01T09:00:00Z"),
        )
        .expect("revoked");
    assert_eq!(
        refused(&env, &mut store, LA, REPORT, "2012-11-02T12:00:00Z"),
        Reason::AgreementRevoked
    );
}

#[test]
fn agreement_expires_at_the_end_of_its_last_day_in_london() {
    let (env, mut store) = with_agreement();
    // GMT until 01:00 UTC on 31 March 2013.
    assert!(ask(&env, &mut store, LA, REPORT, "2013-03-31T00:00:00Z").is_ok());
    assert!(ask(&env, &mut store, LA, REPORT, "2013-03-31T12:00:00Z").is_ok());
    // 22:59:59 UTC is 23:59:59 BST, still the 31st in London.
    assert!(ask(&env, &mut store, LA, REPORT, "2013-03-31T22:59:59Z").is_ok());
    // 23:30 UTC on the 31st is 00:30 BST on 1 April: expired in London,
    // though UTC still says 31 March.
    assert_eq!(
        refused(&env, &mut store, LA, REPORT, "2013-03-31T23:30:00Z"),
        Reason::AgreementExpired
    );
    // 1 April 00:00 London (= 2013-03-31T23:00Z) and later.
    assert_eq!(
        refused(&env, &mut store, LA, REPORT, "2013-03-31T23:00:00Z"),
        Reason::AgreementExpired
    );
    assert_eq!(
        refused(&env, &mut store, LA, REPORT, "2013-04-01T12:00:00Z"),
        Reason::AgreementExpired
    );
}

#[test]
fn outside_contract_area() {
    // Ealing (London West) gets an agreement while the provider delivers
    // there; then the contract areas shrink to London East.
    let env = Env::new();
    let mut store = env.store();
    env.add_agreement(&mut store, "E09000030", "2012-06-01", None, "2012-10-01");
    let east_only = env.write_config("east.toml", &["London East"]);
    let config = mishare::config::ProviderConfig::load(&east_only).expect("loads");
    assert!(
        Gate::new(&config, &mut store, "daemon")
            .authorise(
                "E09000030",
                REPORT,
                at("2012-10-01T12:00:00Z"),
                Stage::Plan,
                |_| ()
            )
            .is_ok(),
        "Tower Hamlets is in London East"
    );
    let birmingham = Gate::new(&config, &mut store, "daemon")
        .authorise(
            "E08000025",
            REPORT,
            at("2012-10-01T12:00:00Z"),
            Stage::Plan,
            |_| (),
        )
        .expect_err("Birmingham is outside");
    let reasons: Vec<_> = birmingham.findings.iter().map(|f| f.reason).collect();
    assert_eq!(reasons, [Reason::NoAgreement, Reason::OutsideContractArea]);

    // An agreement made while the LA was in the areas no longer helps.
    let shrunk = env.write_config("shrunk.toml", &["London West"]);
    let config = mishare::config::ProviderConfig::load(&shrunk).expect("loads");
    let refusal = Gate::new(&config, &mut store, "daemon")
        .authorise(
            "E09000030",
            REPORT,
            at("2012-10-01T12:00:00Z"),
            Stage::Plan,
            |_| (),
        )
        .expect_err("Tower Hamlets is now outside");
    assert_eq!(refusal.reason, Reason::OutsideContractArea);
    assert_eq!(refusal.findings.len(), 1, "{refusal}");
}

#[test]
fn not_a_recipient() {
    let env = Env::new();
    let mut store = env.store();
    env.add_agreement(&mut store, "E09000030", "2012-06-01", None, "2012-10-01");
    assert!(
        ask(
            &env,
            &mut store,
            "E09000030",
            REPORT,
            "2012-10-01T12:00:00Z"
        )
        .is_ok()
    );
    assert_eq!(
        refused(
            &env,
            &mut store,
            "E09000030",
            "east-only",
            "2012-10-01T12:00:00Z"
        ),
        Reason::NotARecipient
    );
    assert_eq!(
        refused(
            &env,
            &mut store,
            "E09000030",
            "no-such-report",
            "2012-10-01T12:00:00Z"
        ),
        Reason::NotARecipient
    );
}

#[test]
fn unknown_la() {
    let env = Env::new();
    let mut store = env.store();
    assert_eq!(
        refused(
            &env,
            &mut store,
            "E09999999",
            REPORT,
            "2012-10-01T12:00:00Z"
        ),
        Reason::UnknownLa
    );
    assert_eq!(
        refused(
            &env,
            &mut store,
            "../../etc",
            REPORT,
            "2012-10-01T12:00:00Z"
        ),
        Reason::UnknownLa
    );
}

#[test]
fn suspended_by_provider_for_one_la() {
    let (env, mut store) = with_agreement();
    let s = store
        .suspend(
            Scope::La(LA.into()),
            Maker::Provider,
            "checking a breach",
            None,
            "provider:tester",
            at("2012-10-01T09:00:00Z"),
        )
        .expect("suspended");
    assert_eq!(
        refused(&env, &mut store, LA, REPORT, "2012-10-01T12:00:00Z"),
        Reason::SuspendedByProvider
    );
    store
        .lift(
            s.id,
            Maker::Provider,
            "provider:tester",
            at("2012-10-01T10:00:00Z"),
        )
        .expect("lifted");
    assert!(ask(&env, &mut store, LA, REPORT, "2012-10-01T12:00:00Z").is_ok());
}

#[test]
fn suspended_by_dwp_and_only_dwp_lifts_it() {
    let (env, mut store) = with_agreement();
    let s = store
        .suspend_by_dwp(
            Scope::La(LA.into()),
            "data incident",
            Some("DWP-2012-17"),
            "dwp.test",
            at("2012-10-01T09:00:00Z"),
        )
        .expect("suspended");
    assert_eq!(s.made_by, Maker::Dwp);
    assert_eq!(s.made_actor, "dwp:dwp.test");
    assert_eq!(
        refused(&env, &mut store, LA, REPORT, "2012-10-01T12:00:00Z"),
        Reason::SuspendedByDwp
    );
    let err = store
        .lift(
            s.id,
            Maker::Provider,
            "provider:tester",
            at("2012-10-01T10:00:00Z"),
        )
        .expect_err("the provider cannot lift it");
    assert_eq!(
        err.to_string(),
        format!(
            "suspension {} was required by DWP; only DWP can lift it",
            s.id
        )
    );
    assert_eq!(
        refused(&env, &mut store, LA, REPORT, "2012-10-01T12:00:00Z"),
        Reason::SuspendedByDwp,
        "the refused lift changed nothing"
    );
    let lifted = store
        .lift_by_dwp(s.id, "dwp.test", at("2012-10-02T09:00:00Z"))
        .expect("DWP lifts");
    assert_eq!(lifted.lifted_by.as_deref(), Some("dwp:dwp.test"));
    assert!(ask(&env, &mut store, LA, REPORT, "2012-10-02T12:00:00Z").is_ok());
}

#[test]
fn dwp_cannot_lift_a_provider_suspension() {
    let (_env, mut store) = with_agreement();
    let s = store
        .suspend(
            Scope::All,
            Maker::Provider,
            "audit",
            None,
            "provider:tester",
            at("2012-10-01T09:00:00Z"),
        )
        .expect("suspended");
    let err = store
        .lift_by_dwp(s.id, "dwp.test", at("2012-10-01T10:00:00Z"))
        .expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "suspension {} was made by the provider; only the provider can lift it",
            s.id
        )
    );
}

#[test]
fn a_dwp_suspension_of_all_las_outranks_a_provider_one() {
    let (env, mut store) = with_agreement();
    store
        .suspend(
            Scope::La(LA.into()),
            Maker::Provider,
            "local",
            None,
            "provider:tester",
            at("2012-10-01T09:00:00Z"),
        )
        .expect("suspended");
    store
        .suspend_by_dwp(
            Scope::All,
            "national",
            None,
            "dwp.test",
            at("2012-10-01T09:00:00Z"),
        )
        .expect("suspended");
    let refusal = ask(&env, &mut store, LA, REPORT, "2012-10-01T12:00:00Z").expect_err("refused");
    let reasons: Vec<_> = refusal.findings.iter().map(|f| f.reason).collect();
    assert_eq!(
        reasons,
        [Reason::SuspendedByDwp, Reason::SuspendedByProvider]
    );
}

#[test]
fn suspending_all_overrides_every_agreement_and_lifting_restores_them() {
    let (env, mut store) = with_agreement();
    env.add_agreement(&mut store, "E09000030", "2012-06-01", None, "2012-10-01");
    let when = "2012-10-01T12:00:00Z";
    for la in [LA, "E09000030"] {
        assert!(
            ask(&env, &mut store, la, REPORT, when).is_ok(),
            "{la} before"
        );
    }
    let all = store
        .suspend(
            Scope::All,
            Maker::Provider,
            "incident",
            Some("INC-1"),
            "provider:tester",
            at("2012-10-01T11:00:00Z"),
        )
        .expect("suspended");
    for la in [LA, "E09000030"] {
        assert_eq!(
            refused(&env, &mut store, la, REPORT, when),
            Reason::SuspendedByProvider,
            "{la}"
        );
    }
    store
        .lift(
            all.id,
            Maker::Provider,
            "provider:tester",
            at("2012-10-01T11:30:00Z"),
        )
        .expect("lifted");
    for la in [LA, "E09000030"] {
        assert!(
            ask(&env, &mut store, la, REPORT, when).is_ok(),
            "{la} after"
        );
    }
}

#[test]
fn a_suspension_made_by_the_cli_is_seen_at_the_next_check() {
    // The daemon's connection stays open while another process writes.
    let (env, mut daemon) = with_agreement();
    assert!(ask(&env, &mut daemon, LA, REPORT, "2012-10-01T12:00:00Z").is_ok());
    let out = env.run(&["suspend", "--la", LA, "--reason", "stop now"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).starts_with("suspension 1:"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        refused(&env, &mut daemon, LA, REPORT, "2012-10-01T12:00:01Z"),
        Reason::SuspendedByProvider
    );
    assert_status(&env.run(&["resume", "1"]), 0);
    assert!(ask(&env, &mut daemon, LA, REPORT, "2012-10-01T12:00:02Z").is_ok());
}

#[test]
fn an_unreadable_date_fails_closed() {
    let (env, mut store) = with_agreement();
    let db = raw_connection(&common::database(&env));
    db.execute(
        "UPDATE agreements SET expires_on = 'soon' WHERE la_code = ?1",
        [LA],
    )
    .expect("corrupt");
    let refusal = ask(&env, &mut store, LA, REPORT, "2012-10-01T12:00:00Z").expect_err("refused");
    assert_eq!(refusal.reason, Reason::GateError);
    assert!(
        refusal.detail().contains("\"soon\""),
        "{}",
        refusal.detail()
    );
    // The refusal itself is still recorded, and the chain is intact.
    let seq = refusal.audit_seq.expect("audited");
    let entries = store.audit_entries(None).expect("entries");
    assert_eq!(
        entries.last().map(|e| (e.seq, e.kind.as_str())),
        Some((seq, "gate_refusal"))
    );
    assert!(matches!(
        store.verify_audit(),
        Ok(Verification::Intact { .. })
    ));
}

#[test]
fn a_database_failure_fails_closed() {
    let (env, mut store) = with_agreement();
    let db = raw_connection(&common::database(&env));
    db.execute_batch("DROP TABLE suspensions")
        .expect("break the schema");
    let refusal = ask(&env, &mut store, LA, REPORT, "2012-10-01T12:00:00Z").expect_err("refused");
    assert_eq!(refusal.reason, Reason::GateError);
    assert!(refusal.audit_seq.is_some());
}

#[test]
fn a_database_that_cannot_record_fails_closed() {
    let (env, mut store) = with_agreement();
    let db = raw_connection(&common::database(&env));
    db.execute_batch("DROP TABLE audit_head")
        .expect("break the log");
    let refusal = ask(&env, &mut store, LA, REPORT, "2012-10-01T12:00:00Z").expect_err("refused");
    assert_eq!(refusal.reason, Reason::GateError);
    assert_eq!(refusal.audit_seq, None, "nothing could be recorded");
}
