//! DWP's `Directive` service on a real socket: DWP suspends and lifts over
//! mutual TLS; the provider's CLI cannot lift DWP's suspension; anyone who
//! is not a DWP identity is refused at the handshake.

#[path = "common/net.rs"]
mod net;

use std::sync::Arc;

use mishare::common::shutdown::Shutdown;
use mishare::provider::directive;
use mishare::provider::store::SharedStore;
use mishare::provider::{self, LaOutcome, SendOptions};
use mishare::tls;
use mishare::wire::v1::directive_client::DirectiveClient;
use mishare::wire::v1::{LiftRequest, ListRequest, SuspendRequest};
use net::{Net, PROVIDER_ID};
use tonic::Code;

/// Starts Directive for `net` and returns a way to stop it.
async fn serve(net: &mut Net) -> Shutdown {
    let listener = net.directive_listener().await;
    let config = Arc::new(net.config());
    assert!(config.directive.is_some(), "[directive]");
    let store = SharedStore::open(&config.data_dir).expect("store");
    let stop = Shutdown::new();
    let serving = stop.clone();
    tokio::spawn(async move {
        directive::serve(config, store, listener, &serving)
            .await
            .expect("Directive serves");
    });
    stop
}

/// A Directive client presenting `certs/<stem>.pem`.
async fn client(
    net: &Net,
    stem: &str,
) -> Result<DirectiveClient<tonic::transport::Channel>, String> {
    let identity = tls::Identity::load(
        &net.path(&format!("certs/{stem}.pem")),
        &net.path(&format!("certs/{stem}.key")),
    )
    .expect("identity");
    let anchors = tls::TrustAnchors::load(&net.path("certs/ca.pem")).expect("anchors");
    let config = tls::client_config(&identity, &anchors).expect("client config");
    let endpoint = format!("https://{}", net.directive.expect("listening"));
    let channel = tls::connect(&endpoint, PROVIDER_ID, config)
        .await
        .map_err(|e| e.to_string())?;
    Ok(DirectiveClient::new(channel))
}

fn audit_actors(net: &Net, kind: &str) -> Vec<(String, serde_json::Value)> {
    net.store()
        .audit_entries(None)
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| {
            (
                e.actor,
                serde_json::from_str(&e.detail).expect("detail json"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dwp_suspends_and_lifts_and_the_cli_cannot_lift_it() {
    let mut net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    let _stop = serve(&mut net).await;
    let mut dwp = client(&net, "dwp").await.expect("DWP connects");

    let made = dwp
        .suspend(SuspendRequest {
            la_code: "E09000002".into(),
            all: false,
            reason: "DWP security review".into(),
            reference: "letter 2012/41".into(),
        })
        .await
        .expect("suspended")
        .into_inner();
    assert_eq!(made.la_code, "E09000002");
    assert!(!made.all);
    assert_eq!(made.made_by, "dwp");
    assert_eq!(made.reference, "letter 2012/41");
    assert_eq!(made.lifted_unix_ms, 0);

    let listed = dwp
        .list(ListRequest {
            include_lifted: false,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.suspensions, vec![made.clone()]);

    // The provider's operator cannot lift it.
    let out = net.run(&["resume", &made.id.to_string()]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: suspension {} was required by DWP; only DWP can lift it\n",
            made.id
        )
    );

    // And nothing goes to the LA while it stands.
    let results = provider::send_now(
        Arc::new(net.config()),
        "referrals-monthly",
        None,
        SendOptions::now("provider:tester"),
        &Shutdown::new(),
    )
    .await
    .expect("send-now");
    assert!(
        matches!(
            &results[0].outcome,
            LaOutcome::Refused(refusal) if refusal.reason.as_str() == "SUSPENDED_BY_DWP"
        ),
        "{results:?}"
    );
    assert!(net.inbox("E09000002").is_empty());

    // Bad requests are refused before they reach the store.
    let bad = dwp
        .suspend(SuspendRequest {
            la_code: "../../etc".into(),
            all: false,
            reason: "x".into(),
            reference: String::new(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = dwp
        .suspend(SuspendRequest {
            la_code: "E09000002".into(),
            all: false,
            reason: "   ".into(),
            reference: String::new(),
        })
        .await
        .expect_err("no reason");
    assert_eq!(bad.code(), Code::InvalidArgument);

    // DWP cannot lift a suspension the provider made.
    let out = net
        .run(&["suspend", "--all", "--reason", "provider's own hold"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let provider_id = made.id + 1;
    let refused = dwp
        .lift(LiftRequest {
            suspension_id: provider_id,
            reason: "try".into(),
        })
        .await
        .expect_err("not DWP's");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let lifted = dwp
        .lift(LiftRequest {
            suspension_id: made.id,
            reason: "review complete".into(),
        })
        .await
        .expect("lifted")
        .into_inner();
    assert!(lifted.lifted_unix_ms > 0);

    // Every call is audited with the DWP identity as actor.
    let calls = audit_actors(&net, "directive_call");
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert!(calls.iter().all(|(actor, _)| actor == "dwp:dwp.test"));
    let methods: Vec<&str> = calls
        .iter()
        .map(|(_, d)| d["method"].as_str().expect("method"))
        .collect();
    assert_eq!(
        methods,
        ["Suspend", "List", "Suspend", "Suspend", "Lift", "Lift"]
    );
    assert_eq!(calls[2].1["outcome"]["ok"], false);
    let made_entries = audit_actors(&net, "suspension_made");
    assert_eq!(made_entries[0].0, "dwp:dwp.test");
    assert_eq!(audit_actors(&net, "suspension_lifted")[0].0, "dwp:dwp.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_dwp_identity_is_refused_at_the_handshake() {
    let mut net = Net::start(&["E09000002"]).await;
    let _stop = serve(&mut net).await;
    // The provider's own certificate chains to the same CA but is not a
    // regulator.
    let attempt = async {
        let mut c = client(&net, "provider").await?;
        c.suspend(SuspendRequest {
            la_code: "E09000002".into(),
            all: false,
            reason: "not DWP".into(),
            reference: String::new(),
        })
        .await
        .map_err(|s| format!("{s}: {}", tls::error_chain(&s)))
    };
    let error = attempt.await.expect_err("refused");
    // What the client sees depends on when the server's alert arrives; the
    // server's own record of why is what this test pins.
    let refused = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let refused = audit_actors(&net, "handshake_refused");
            if !refused.is_empty() {
                break refused;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the refused handshake is audited");
    // The channel may try a second handshake after the first is refused;
    // every one must be refused, for the same reason.
    for (_, detail) in &refused {
        assert_eq!(
            detail["service"], "Directive",
            "{refused:?} (client saw: {error})"
        );
        let why = detail["reason"].as_str().expect("reason");
        assert!(
            why.contains("\"provider.test\"") && why.contains("allow-list"),
            "{why}"
        );
    }
    assert!(net.store().suspensions(false).expect("list").is_empty());
    assert!(audit_actors(&net, "directive_call").is_empty());
}

/// DWP is never told it suspended what the gate would not match: an LA
/// code differing only in case is normalised to the reference data's, and
/// one the reference data does not list is refused with INVALID_ARGUMENT
/// (so nothing is recorded). The operator's `mishare suspend` follows the
/// same rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn la_codes_are_normalised_or_refused_never_silently_unmatched() {
    let mut net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    let _stop = serve(&mut net).await;
    let mut dwp = client(&net, "dwp").await.expect("DWP connects");

    let made = dwp
        .suspend(SuspendRequest {
            la_code: "e09000002".into(),
            all: false,
            reason: "lower case".into(),
            reference: String::new(),
        })
        .await
        .expect("suspended")
        .into_inner();
    assert_eq!(made.la_code, "E09000002");
    // The gate matches it: nothing goes to the LA.
    let results = provider::send_now(
        Arc::new(net.config()),
        "referrals-monthly",
        None,
        SendOptions::now("provider:tester"),
        &Shutdown::new(),
    )
    .await
    .expect("send-now");
    assert!(
        matches!(
            &results[0].outcome,
            LaOutcome::Refused(refusal) if refusal.reason.as_str() == "SUSPENDED_BY_DWP"
        ),
        "{results:?}"
    );

    let unknown = dwp
        .suspend(SuspendRequest {
            la_code: "E99999999".into(),
            all: false,
            reason: "not an LA".into(),
            reference: String::new(),
        })
        .await
        .expect_err("refused");
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown
            .message()
            .contains("E99999999 is not an LA in the provider's reference data"),
        "{unknown:?}"
    );
    let listed = dwp
        .list(ListRequest {
            include_lifted: true,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.suspensions.len(), 1, "only the lower-case one");

    // The operator's CLI: the same rules.
    let lower = net
        .run(&["suspend", "--la", "e09000002", "--reason", "x"])
        .await;
    assert_eq!(lower.status.code(), Some(0), "{lower:?}");
    assert!(
        String::from_utf8_lossy(&lower.stdout).contains("sharing with E09000002 is suspended"),
        "{lower:?}"
    );
    let unknown = net
        .run(&["suspend", "--la", "E99999999", "--reason", "x"])
        .await;
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("\"E99999999\" is not an LA"),
        "{unknown:?}"
    );
}

/// Idle TCP connections from one address never stop DWP reaching the
/// Directive service: 500 are held open from 127.0.0.2 while DWP (from
/// 127.0.0.1) connects and lists suspensions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_do_not_stop_dwp() {
    let mut net = Net::start(&["E09000002"]).await;
    let _stop = serve(&mut net).await;
    let addr = net.directive.expect("listening");
    let mut idle = Vec::new();
    for _ in 0..500 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind 127.0.0.2 (any 127/8 address is loopback on Linux)");
        idle.push(socket.connect(addr).await.expect("connect"));
    }
    let mut dwp = client(&net, "dwp")
        .await
        .expect("DWP connects while 500 idle connections are open");
    let listed = dwp
        .list(ListRequest {
            include_lifted: true,
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.suspensions.is_empty());
    drop(idle);
}

/// 10,000 failed handshakes on the Directive listener add a bounded number
/// of rows to the provider's audit log, whose counts add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_failed_handshakes_add_a_bounded_number_of_audit_rows() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const N: usize = 10_000;
    let mut net = Net::start(&["E09000002"]).await;
    let stop = serve(&mut net).await;
    let addr = net.directive.expect("listening");
    let started = std::time::Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..N {
        let permit = gate.clone().acquire_owned().await.expect("permit");
        set.spawn(async move {
            let _permit = permit;
            let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _ = tcp.write_all(b"not TLS at all\r\n").await;
            let mut sink = [0u8; 512];
            while let Ok(n) = tcp.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.expect("client task");
    }
    let minutes = started.elapsed().as_secs() / 60;
    // The rows are flushed when the listener stops; wait (bounded) for the
    // counts to be written.
    stop.cancel();
    let rows = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let rows = audit_actors(&net, "handshake_refused");
            let total: u64 = rows
                .iter()
                .map(|(_, d)| d["count"].as_u64().unwrap_or(0))
                .sum();
            if total >= N as u64 {
                break rows;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| audit_actors(&net, "handshake_refused"));
    let total: u64 = rows
        .iter()
        .map(|(_, d)| d["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, N as u64, "{} rows: {:?}", rows.len(), rows.first());
    let keys: std::collections::HashSet<String> = rows
        .iter()
        .map(|(_, d)| format!("{} {}", d["source"], d["reason"]))
        .collect();
    assert!(keys.len() <= 4, "{keys:?}");
    assert!(
        rows.len() <= keys.len() * (2 + minutes as usize),
        "{} rows for {} keys",
        rows.len(),
        keys.len()
    );
    assert!(rows.iter().all(|(actor, d)| actor == "unauthenticated"
        && d["service"] == "Directive"
        && d["source"] == "127.0.0.1"));
}
