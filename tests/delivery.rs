//! Delivery end to end: `send-now` (the library function and the binary)
//! against real authority endpoints on 127.0.0.1:0, with a PKI and age keys
//! made in the test. Refusals, a suspension cutting a push off in flight,
//! and a push resumed after its connection was cut.

#[path = "common/net.rs"]
mod net;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mishare::common::shutdown::Shutdown;
use mishare::provider::gate::Reason;
use mishare::provider::outbox::{self, Addressed};
use mishare::provider::push::{self, Courier, Delivered, PushOptions};
use mishare::provider::store::{Delivery, DeliveryState, SharedStore};
use mishare::provider::store::{Maker, Scope};
use mishare::provider::watch::StateWatch;
use mishare::provider::{self, LaOutcome, SendOptions};
use mishare::sanitiser::Classification;
use mishare::seal::Recipients;
use net::{Net, ProxyMode};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn count(net: &Net, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

/// Audit entries of `kind` for `la`, as JSON details.
fn audit(net: &Net, kind: &str, la: &str) -> Vec<serde_json::Value> {
    net.store()
        .audit_entries(None)
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == kind && e.la.as_deref() == Some(la))
        .map(|e| serde_json::from_str(&e.detail).expect("detail"))
        .collect()
}

/// A file as text without its `# Made:` line: a preview and a send-now
/// made a moment apart say different times, and nothing else.
fn but_when_made(bytes: Vec<u8>) -> String {
    let text = String::from_utf8(bytes).expect("utf-8");
    assert_eq!(text.matches("\n# Made: ").count(), 1, "{text}");
    text.lines()
        .filter(|l| !l.starts_with("# Made: "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_now_delivers_exactly_what_preview_prints() {
    let net = Net::start(&["E09000002", "E09000009"]).await;
    net.add_agreement("E09000002");
    net.add_agreement("E09000009");

    // The library function.
    let results = provider::send_now(
        Arc::new(net.config()),
        "referrals-monthly",
        Some("E09000002"),
        SendOptions::now("provider:tester"),
        &Shutdown::new(),
    )
    .await
    .expect("send-now runs");
    assert_eq!(results.len(), 1, "{results:?}");
    let LaOutcome::Pushed(Delivered::Delivered {
        stored_as,
        sha256,
        verification,
    }) = &results[0].outcome
    else {
        panic!("delivered: {results:?}");
    };
    assert!(verification.starts_with("verified"), "{verification}");
    let files = net.inbox("E09000002");
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        files[0].file_name().and_then(|n| n.to_str()),
        Some(stored_as.as_str())
    );
    let ciphertext = std::fs::read(&files[0]).expect("read");
    assert_eq!(&hex(&Sha256::digest(&ciphertext)), sha256);

    let preview = net
        .run(&[
            "report",
            "preview",
            "referrals-monthly",
            "--la",
            "E09000002",
        ])
        .await;
    assert_eq!(preview.status.code(), Some(0), "{preview:?}");
    let plaintext = net.decrypt("E09000002", &files[0]);
    assert_eq!(
        but_when_made(plaintext.clone()),
        but_when_made(preview.stdout)
    );
    assert!(
        String::from_utf8_lossy(&plaintext).contains("Barking and Dagenham"),
        "labelled for the LA"
    );
    assert_eq!(count(&net, "SELECT count(*) FROM receipts"), 1);
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE state = 'delivered' AND spool_file IS NULL"
        ),
        1
    );
    assert!(net.spool().is_empty(), "{:?}", net.spool());
    assert_eq!(audit(&net, "delivery_delivered", "E09000002").len(), 1);
    assert!(net.inbox("E09000009").is_empty());

    // The binary.
    let out = net
        .run(&["send-now", "referrals-monthly", "--la", "E09000009"])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let files = net.inbox("E09000009");
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().and_then(|n| n.to_str()).expect("name");
    let digest = hex(&Sha256::digest(std::fs::read(&files[0]).expect("read")));
    assert_eq!(
        stdout,
        format!("E09000009 delivered {name} sha256 {digest} receipt verified\n")
    );
    let preview = net
        .run(&[
            "report",
            "preview",
            "referrals-monthly",
            "--la",
            "E09000009",
        ])
        .await;
    let sent = but_when_made(net.decrypt("E09000009", &files[0]));
    assert!(sent.contains("# Period: "), "{sent}");
    assert_eq!(sent, but_when_made(preview.stdout));
    assert_eq!(count(&net, "SELECT count(*) FROM receipts"), 2);
    assert!(net.spool().is_empty());

    // The stored receipt, exported by its file name, verifies offline
    // against the LA's certificate and not against another LA's.
    let exported = net.run(&["receipt", "export", name]).await;
    assert_eq!(exported.status.code(), Some(0), "{exported:?}");
    std::fs::write(net.path("receipt.json"), &exported.stdout).expect("receipt");
    let valid = net
        .run(&[
            "receipt",
            "verify",
            "receipt.json",
            "--cert",
            "certs/la-e09000009.pem",
        ])
        .await;
    assert_eq!(valid.status.code(), Some(0), "{valid:?}");
    let said = String::from_utf8_lossy(&valid.stdout);
    assert!(said.starts_with("receipt valid: "), "{said}");
    // It binds who sent what to whom, and says so.
    assert!(
        said.contains(&format!(
            ", sent by provider.test for E09000009 (report referrals-monthly, period {}, \
             internal), signed by la-e09000009.test",
            name.split('_').next().expect("period")
        )),
        "{said}"
    );
    let json: serde_json::Value = serde_json::from_slice(&exported.stdout).expect("JSON");
    assert_eq!(json["version"], 2, "{json}");
    assert_eq!(json["provider"], "provider.test", "{json}");
    assert_eq!(json["la_code"], "E09000009", "{json}");
    assert_eq!(json["classification"], "internal", "{json}");
    let wrong = net
        .run(&[
            "receipt",
            "verify",
            "receipt.json",
            "--cert",
            "certs/la-e09000002.pem",
        ])
        .await;
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    let unknown = net.run(&["receipt", "export", "no-such-transfer"]).await;
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_las_get_nothing_and_each_refusal_is_audited() {
    let net = Net::start(&["E09000002", "E09000030", "E09000009", "E09000005"]).await;
    net.add_agreement("E09000002");
    // E09000030: no agreement.
    net.add_agreement("E09000009");
    net.store()
        .revoke_agreement("E09000009", "breach", "provider:tester", Utc::now())
        .expect("revoke");
    net.add_agreement("E09000005");
    net.store()
        .suspend(
            Scope::La("E09000005".into()),
            Maker::Provider,
            "investigation",
            None,
            "provider:tester",
            Utc::now(),
        )
        .expect("suspend");

    let out = net.run(&["send-now", "referrals-monthly"]).await;
    // Refusals are the gate doing its job, not failures.
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("E09000002 delivered "), "{stdout}");
    assert_eq!(
        lines[1],
        "E09000030 refused NO_AGREEMENT: no agreement is on file"
    );
    assert_eq!(
        lines[2],
        "E09000009 refused AGREEMENT_REVOKED: the agreement was revoked"
    );
    assert!(
        lines[3].starts_with("E09000005 refused SUSPENDED_BY_PROVIDER: suspended by the provider"),
        "{stdout}"
    );

    assert_eq!(net.inbox("E09000002").len(), 1);
    for (la, code) in [
        ("E09000030", "NO_AGREEMENT"),
        ("E09000009", "AGREEMENT_REVOKED"),
        ("E09000005", "SUSPENDED_BY_PROVIDER"),
    ] {
        assert!(net.inbox(la).is_empty(), "{la} got a file");
        let refusals = audit(&net, "gate_refusal", la);
        assert_eq!(refusals.len(), 1, "{la}: {refusals:?}");
        assert_eq!(refusals[0]["reason"], code, "{la}");
        assert_eq!(refusals[0]["stage"], "plan", "{la}");
    }
    // A refused LA is never sealed or spooled.
    assert_eq!(count(&net, "SELECT count(*) FROM deliveries"), 1);
    assert!(net.spool().is_empty());
}

/// A courier over the test's provider state, for pushes driven directly.
async fn courier(net: &Net, options: PushOptions) -> Courier {
    let config = Arc::new(net.config());
    let store = SharedStore::open(&config.data_dir).expect("store");
    let watch = StateWatch::start(store.clone(), options.watch_interval, &Shutdown::new())
        .await
        .expect("watch");
    Courier::new(
        config,
        store,
        watch,
        "provider:tester",
        options,
        Default::default(),
    )
    .expect("courier")
}

/// Seals `size` bytes for `la` and spools them as one delivery.
fn spool_large(net: &Net, la: &str, size: usize) -> Delivery {
    let store = SharedStore::new(net.store());
    let run = store
        .lock()
        .start_run(
            "referrals-monthly",
            "2012-09",
            "provider:tester",
            Utc::now(),
        )
        .expect("run");
    let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let recipients = Recipients::parse(&[net.la(la).recipient.clone()]).expect("recipients");
    outbox::spool(
        &store,
        Addressed {
            run_id: run,
            la,
            report: "referrals-monthly",
            period: "2012-09",
            classification: Classification::Internal,
        },
        &plaintext[..],
        &recipients,
        outbox::Release {
            table: &net::test_release(la),
            findings: &[],
        },
        "provider:tester",
        Utc::now(),
    )
    .expect("spooled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspension_cuts_off_a_push_in_flight() {
    let mut net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    // Far more than the HTTP/2 windows: the push cannot reach its commit
    // while the proxy holds the connection.
    let proxy = net
        .proxy("E09000002", ProxyMode::StallAfter(256 * 1024))
        .await;
    let delivery = spool_large(&net, "E09000002", 16 << 20);
    assert!(delivery.spool_path.as_ref().is_some_and(|p| p.exists()));
    let courier = courier(
        &net,
        PushOptions {
            chunk_bytes: 64 * 1024,
            ..PushOptions::default()
        },
    )
    .await;
    let push = {
        let delivery = delivery.clone();
        tokio::spawn(async move { push::deliver(&courier, &delivery).await })
    };
    proxy.stalled.notified().await;

    // The operator suspends from another process's point of view: its own
    // connection to the database, on another thread.
    let data_dir = net.config().data_dir;
    tokio::task::spawn_blocking(move || {
        mishare::provider::store::Store::open(&data_dir)
            .expect("store")
            .suspend(
                Scope::La("E09000002".into()),
                Maker::Provider,
                "stop now",
                None,
                "provider:operator",
                Utc::now(),
            )
            .expect("suspend")
    })
    .await
    .expect("join");

    let outcome = push.await.expect("join");
    let Delivered::Refused { reason, stage, .. } = &outcome else {
        panic!("refused: {outcome:?}");
    };
    assert_eq!(*reason, Reason::SuspendedByProvider);
    assert_eq!(stage, "in_flight");
    proxy.release();

    assert!(net.inbox("E09000002").is_empty());
    let stored = net.store().delivery(delivery.id).expect("delivery");
    assert_eq!(stored.state, DeliveryState::Refused);
    assert_eq!(stored.reason.as_deref(), Some("SUSPENDED_BY_PROVIDER"));
    assert!(stored.spool_path.is_none());
    assert!(net.spool().is_empty(), "withheld ciphertext is not kept");
    let refused = audit(&net, "delivery_refused", "E09000002");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["reason"], "SUSPENDED_BY_PROVIDER");
    // The endpoint never saw a Commit.
    assert_eq!(
        audit(&net, "gate_permit", "E09000002")
            .iter()
            .filter(|d| d["stage"] == "before_commit")
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_connection_resumes_from_the_committed_offset() {
    let mut net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    let proxy = net
        .proxy("E09000002", ProxyMode::CutFirstAfter(1 << 20))
        .await;
    let delivery = spool_large(&net, "E09000002", 4 << 20);
    let spooled = std::fs::read(delivery.spool_path.as_ref().expect("spooled")).expect("read");
    let courier = courier(
        &net,
        PushOptions {
            chunk_bytes: 64 * 1024,
            backoff: Duration::from_millis(50),
            ..PushOptions::default()
        },
    )
    .await;
    let outcome = push::deliver(&courier, &delivery).await;
    let Delivered::Delivered { sha256, .. } = &outcome else {
        panic!("delivered: {outcome:?}");
    };
    assert_eq!(sha256, &delivery.sha256_hex());

    let files = net.inbox("E09000002");
    assert_eq!(files.len(), 1, "{files:?}");
    let received = std::fs::read(&files[0]).expect("read");
    assert_eq!(received, spooled, "the same ciphertext, resumed");
    assert_eq!(hex(&Sha256::digest(&received)), delivery.sha256_hex());

    let connections = proxy.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(connections >= 2, "{connections} connections");
    let last = proxy.forwarded(connections - 1);
    assert!(
        last < delivery.size,
        "the last connection sent {last} bytes of a {}-byte file: it started again from 0",
        delivery.size
    );
    let stored = net.store().delivery(delivery.id).expect("delivery");
    assert_eq!(stored.state, DeliveryState::Delivered);
    assert!(stored.attempts >= 2, "{}", stored.attempts);
    assert!(net.spool().is_empty());
}

/// Every file under `dir`, recursively, but for the running endpoint's
/// health-probe files, which exist for moments.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            let probe = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(mishare::common::health::PROBE_PREFIX));
            if probe {
                continue;
            }
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The sanitiser's findings are for the provider alone: W_DISTORTION's
/// message holds the exact true total, and neither it nor any other
/// finding's text reaches the LA's file, the wire (everything the endpoint
/// recorded of the push, in its database and audit log) or the receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_finding_text_reaches_the_la() {
    let net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    // Nine participants in each of the nine payment groups: every cell 1–9,
    // all round to 0, so the grand total (81) is distorted.
    let last = mishare::provider::report::last_complete_period(
        mishare::sanitiser::PeriodGrain::Month,
        Utc::now(),
    );
    let mut records = String::from(
        "participant_id,la_code,payment_group,disability,referral_date,attachment_date,\
         job_start_date,job_outcome_date,first_sustainment_date\n",
    );
    let groups = mishare::reference::Dimensions::default();
    let groups = groups.payment_groups();
    for (g, category) in groups.categories().iter().enumerate() {
        for n in 0..9 {
            records.push_str(&format!(
                "P{g}{n},E09000002,{},N,{},,,,\n",
                category.code,
                last.first_day()
            ));
        }
    }
    std::fs::write(net.path("data/participants.csv"), records).expect("records");

    let preview = net.run(&["report", "preview", "referrals-monthly"]).await;
    assert_eq!(preview.status.code(), Some(0), "{preview:?}");
    let said = String::from_utf8_lossy(&preview.stderr).into_owned();
    let findings: Vec<&str> = said
        .lines()
        .filter_map(|l| l.split_once("]: ").map(|(_, message)| message))
        .collect();
    assert!(
        said.contains("warning[W_DISTORTION]: the grand total is 0 after rounding (-81, 100%)"),
        "{said}"
    );
    assert!(findings.len() >= 2, "{said}");

    let sent = net.run(&["send-now", "referrals-monthly"]).await;
    assert_eq!(sent.status.code(), Some(0), "{sent:?}");
    // The ledger audit's findings go to the operator too (W_ADHOC: this
    // release is outside the schedule), and never to the LA.
    let told = String::from_utf8_lossy(&sent.stderr).into_owned();
    let audit_findings: Vec<String> = told
        .lines()
        .filter_map(|l| l.strip_prefix("E09000002: ledger audit: "))
        .filter_map(|l| l.split_once("]: ").map(|(_, m)| m.to_string()))
        .collect();
    assert!(
        told.contains("E09000002: ledger audit: warning[W_ADHOC]: "),
        "{told}"
    );
    let findings: Vec<&str> = findings
        .into_iter()
        .chain(audit_findings.iter().map(String::as_str))
        .collect();
    let files = net.inbox("E09000002");
    assert_eq!(files.len(), 1, "{files:?}");
    let plaintext = String::from_utf8(net.decrypt("E09000002", &files[0])).expect("utf-8");
    let transfer_id = files[0]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.rsplit('_').next())
        .expect("transfer id")
        .to_string();
    let receipt = net.run(&["receipt", "export", &transfer_id]).await;
    assert_eq!(receipt.status.code(), Some(0), "{receipt:?}");
    let receipt = String::from_utf8_lossy(&receipt.stdout).into_owned();

    // Everything the endpoint holds: the inbox and its state (database, WAL,
    // audit log), as raw bytes.
    let mut seen_by_the_la = vec![plaintext, receipt];
    let la_dir = net.path("la-e09000002");
    for file in files_under(&la_dir) {
        if file.extension().is_some_and(|e| e == "age") {
            continue; // ciphertext; its plaintext is checked above
        }
        seen_by_the_la
            .push(String::from_utf8_lossy(&std::fs::read(&file).expect("read")).into_owned());
    }
    for text in &seen_by_the_la {
        for finding in &findings {
            assert!(
                !text.contains(finding),
                "a finding reached the LA: {finding}"
            );
        }
        for code in [
            "W_DISTORTION",
            "W_SMALL_CELLS",
            "(-81",
            "after rounding",
            "W_ADHOC",
            "ledger",
        ] {
            assert!(!text.contains(code), "{code} reached the LA");
        }
    }
}

/// An endpoint that takes the whole file, then answers with a receipt it
/// really signed, with the LA's key, but for something other than what was
/// sent (`lie` changes it), or in version 1 (`version_1`).
struct LyingEndpoint {
    identity: mishare::tls::Identity,
    lie: fn(&mut mishare::wire::v1::Receipt),
    version_1: bool,
}

#[tonic::async_trait]
impl mishare::wire::v1::exchange_server::Exchange for LyingEndpoint {
    async fn push(
        &self,
        request: tonic::Request<tonic::Streaming<mishare::wire::v1::PushRequest>>,
    ) -> Result<tonic::Response<mishare::wire::v1::Receipt>, tonic::Status> {
        use mishare::wire::v1::push_request::Body;
        let mut stream = request.into_inner();
        let mut manifest = None;
        while let Some(message) = stream.message().await? {
            match message.body {
                Some(Body::Manifest(m)) => manifest = Some(m),
                Some(Body::Chunk(_)) => {}
                Some(Body::Commit(_)) => break,
                None => return Err(tonic::Status::invalid_argument("empty message")),
            }
        }
        let m = manifest.ok_or_else(|| tonic::Status::invalid_argument("no manifest"))?;
        let mut receipt = mishare::wire::v1::Receipt {
            stored_as: format!("{}_{}_{}.age", m.period, m.report, m.transfer_id),
            transfer_id: m.transfer_id,
            sha256: m.sha256,
            size: m.size,
            received_unix_ms: Utc::now().timestamp_millis(),
            provider: net::PROVIDER_ID.into(),
            la_code: m.la_code,
            report: m.report,
            period: m.period,
            classification: m.classification,
            ..Default::default()
        };
        (self.lie)(&mut receipt);
        let receipt = if self.version_1 {
            sign_version_1(&self.identity, receipt)
        } else {
            mishare::receipt::ReceiptSigner::new(&self.identity)
                .expect("signer")
                .sign(receipt)
                .expect("sign")
        };
        Ok(tonic::Response::new(receipt))
    }

    async fn query_transfer(
        &self,
        _: tonic::Request<mishare::wire::v1::QueryTransferRequest>,
    ) -> Result<tonic::Response<mishare::wire::v1::TransferStatus>, tonic::Status> {
        Err(tonic::Status::not_found("no such transfer"))
    }
}

/// `receipt` as endpoints signed receipts before version 2: the fields
/// version 2 binds cleared, the version 1 byte string signed.
fn sign_version_1(
    identity: &mishare::tls::Identity,
    receipt: mishare::wire::v1::Receipt,
) -> mishare::wire::v1::Receipt {
    let mut receipt = mishare::wire::v1::Receipt {
        transfer_id: receipt.transfer_id,
        sha256: receipt.sha256,
        size: receipt.size,
        stored_as: receipt.stored_as,
        received_unix_ms: receipt.received_unix_ms,
        ..Default::default()
    };
    let message = mishare::receipt::signed_bytes(&receipt).expect("version 1 bytes");
    assert!(message.starts_with(mishare::receipt::DOMAIN_V1));
    let key = identity.signing_key().expect("key");
    let signer = key
        .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .expect("the test PKI's keys are P-256");
    receipt.signature = u16::from(signer.scheme()).to_be_bytes().to_vec();
    receipt
        .signature
        .extend(signer.sign(&message).expect("sign"));
    receipt
}

/// A receipt the LA's endpoint really signed, but for another LA, report,
/// period, classification or provider than the delivery sent, or in
/// version 1 (which names none of them), is refused: the delivery is dead,
/// no receipt is kept, and send-now says which field is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receipt_that_does_not_bind_what_was_sent_is_refused() {
    type Lie = fn(&mut mishare::wire::v1::Receipt);
    let cases: &[(&str, Lie, bool, &str)] = &[
        (
            "another LA",
            |r| r.la_code = "E09000030".into(),
            false,
            "its la_code is \"E09000030\", the delivery's \"E09000002\"",
        ),
        (
            "another report",
            |r| r.report = "referrals-quarterly".into(),
            false,
            "its report is \"referrals-quarterly\", the delivery's \"referrals-monthly\"",
        ),
        (
            "another period",
            |r| r.period = "2001-01".into(),
            false,
            "its period is \"2001-01\", the delivery's",
        ),
        (
            "another classification",
            |r| r.classification = mishare::wire::v1::Classification::Published as i32,
            false,
            "its classification is \"PUBLISHED\", the delivery's \"INTERNAL\"",
        ),
        (
            "another provider",
            |r| r.provider = "other.test".into(),
            false,
            "its provider is \"other.test\", the delivery's [\"provider.test\"]",
        ),
        ("version 1", |_| {}, true, "receipt is version 1"),
    ];
    for (case, lie, version_1, says) in cases {
        let mut net = Net::start(&["E09000002"]).await;
        net.add_agreement("E09000002");
        let certs = net.path("certs");
        let identity = mishare::tls::Identity::load(
            &certs.join("la-e09000002.pem"),
            &certs.join("la-e09000002.key"),
        )
        .expect("the LA's identity");
        let anchors =
            mishare::tls::TrustAnchors::load(&certs.join("ca.pem")).expect("trust anchors");
        let allow = mishare::tls::AllowList::new([net::PROVIDER_ID.to_string()]);
        let config =
            mishare::tls::server_config(&identity, &anchors, allow.clone()).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tasks = Shutdown::new();
        let incoming = mishare::tls::incoming(listener, config, allow, &tasks, |_, _| {});
        let liar = LyingEndpoint {
            identity,
            lie: *lie,
            version_1: *version_1,
        };
        let served = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(mishare::wire::v1::exchange_server::ExchangeServer::new(
                    liar,
                ))
                .serve_with_incoming(incoming),
        );
        net.las[0].endpoint = addr;
        net.write_config();

        let out = net
            .run(&["send-now", "referrals-monthly", "--la", "E09000002"])
            .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_ne!(out.status.code(), Some(0), "{case}: {out:?}");
        assert!(
            stdout.starts_with("E09000002 failed: the endpoint's receipt "),
            "{case}: {stdout}"
        );
        assert!(stdout.contains(says), "{case}: {stdout}");
        assert_eq!(
            count(&net, "SELECT count(*) FROM receipts"),
            0,
            "{case}: no receipt is kept"
        );
        assert_eq!(
            count(&net, "SELECT count(*) FROM deliveries WHERE state = 'dead'"),
            1,
            "{case}: the delivery is dead"
        );
        assert!(audit(&net, "delivery_delivered", "E09000002").is_empty());
        served.abort();
        tasks.cancel();
    }
}
