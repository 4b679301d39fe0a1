//! Two processes of the binary writing to one fresh state directory at the
//! same time: nothing is lost and the audit chain still verifies.

mod common;

use std::sync::Barrier;

use common::{Env, assert_status, stdout};
use mishare::common::audit::Verification;
use mishare::provider::store::AgreementEventKind;

const ROUNDS: usize = 20;
const LAS: [&str; 2] = ["E09000002", "E09000030"];

/// One writer: each round replaces the LA's agreement (with a new document),
/// suspends the LA and lifts the suspension.
fn writer(env: &Env, la: &str, start: &Barrier) {
    start.wait();
    for round in 0..ROUNDS {
        let document = format!("{la}-{round}.pdf");
        std::fs::write(env.path(&document), format!("agreement {la} round {round}")).expect("doc");
        let out = env.run(&[
            "agreement",
            "add",
            "--la",
            la,
            "--representative",
            "Jo Bloggs <jo@example.gov.uk>",
            "--signed",
            "2024-06-01",
            "--document",
            &document,
        ]);
        assert_status(&out, 0);

        let reason = format!("round {round}");
        let out = env.run(&["suspend", "--la", la, "--reason", &reason]);
        assert_status(&out, 0);
        let text = stdout(&out);
        let id = text
            .strip_prefix("suspension ")
            .and_then(|rest| rest.split(':').next())
            .expect("the id is printed");

        assert_status(&env.run(&["resume", id]), 0);
    }
}

#[test]
fn two_processes_at_once_lose_nothing_and_keep_the_chain() {
    // No database yet: the two first commands also race to create and
    // migrate it.
    let env = Env::new();
    let start = Barrier::new(LAS.len());
    std::thread::scope(|s| {
        for la in LAS {
            let (env, start) = (&env, &start);
            s.spawn(move || writer(env, la, start));
        }
    });

    let per_la = 3 * ROUNDS;
    let total = LAS.len() * per_la;
    let out = env.run(&["audit", "verify"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).starts_with(&format!("audit chain intact: {total} entries\n")),
        "{}",
        stdout(&out)
    );

    let store = env.store();
    let entries = store.audit_entries(None).expect("entries");
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=total as i64).collect::<Vec<_>>());
    assert!(matches!(
        store.verify_audit(),
        Ok(Verification::Intact { .. })
    ));

    for la in LAS {
        let mine = entries
            .iter()
            .filter(|e| e.la.as_deref() == Some(la))
            .count();
        assert_eq!(mine, per_la, "{la}: audit entries");
        assert_eq!(
            store.agreements_for(la).expect("agreements").len(),
            ROUNDS,
            "{la}"
        );
        let current = store.agreement(la).expect("read").expect("current");
        assert_eq!(current.document_name, format!("{la}-{}.pdf", ROUNDS - 1));
        let history = store.agreement_history(la).expect("history");
        let count = |kind| history.iter().filter(|e| e.kind == kind).count();
        assert_eq!(count(AgreementEventKind::Added), ROUNDS, "{la}");
        assert_eq!(count(AgreementEventKind::Replaced), ROUNDS - 1, "{la}");
        for round in 0..ROUNDS {
            let sha =
                &store.agreements_for(la).expect("agreements")[ROUNDS - 1 - round].document_sha256;
            assert!(
                store.document_path(sha).is_file(),
                "{la} round {round}: document kept"
            );
        }
    }
    let suspensions = store.suspensions(false).expect("suspensions");
    assert_eq!(suspensions.len(), LAS.len() * ROUNDS);
    assert!(
        suspensions.iter().all(|s| !s.is_active()),
        "every suspension was lifted"
    );
}
