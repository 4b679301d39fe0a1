//! The authority endpoint on real sockets: `authority::serve` on
//! 127.0.0.1:0 with an `authority.toml` and a PKI made in the test, and
//! providers pushing age files through `tls::connect`. Every refusal is
//! checked for its gRPC code, and for leaving nothing in the inbox.

#[path = "common/exchange.rs"]
mod exchange;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mishare::authority::store::Store;
use mishare::authority::{self, AuthorityError};
use mishare::certs::{DevCa, Issued, Usage, Validity};
use mishare::common::shutdown::Shutdown;
use mishare::config::AuthorityConfig;
use mishare::receipt;
use mishare::tls;
use mishare::wire::v1::exchange_client::ExchangeClient;
use mishare::wire::v1::{
    Classification, Manifest, PushRequest, QueryTransferRequest, Receipt, TransferStatus,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use exchange::{
    CHUNK, CODE, SERVER_NAME, age_file, chunk, chunks, commit, m, manifest, push, sha256, whole,
    write_private_key,
};

/// A PKI: the CA, the endpoint, two allowed providers and a stranger.
struct Pki {
    ca: DevCa,
    server: Issued,
    provider: Issued,
    other: Issued,
    stranger: Issued,
}

fn pki() -> Pki {
    let ca = DevCa::new("test CA").expect("ca");
    let issue = |name: &str, usage| ca.issue(name, usage, Validity::Current).expect("issue");
    Pki {
        server: issue(SERVER_NAME, Usage::Server),
        provider: issue("provider.test", Usage::Client),
        other: issue("other.test", Usage::Client),
        stranger: issue("stranger.test", Usage::Client),
        ca,
    }
}

/// A running endpoint and its directory.
struct Endpoint {
    dir: tempfile::TempDir,
    pki: Arc<Pki>,
    addr: SocketAddr,
    stop: Option<Shutdown>,
    task: Option<JoinHandle<Result<(), AuthorityError>>>,
}

/// Writes `authority.toml` (with `extra` top-level keys) and the PEM files.
fn write_config(dir: &Path, pki: &Pki, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("certs")).expect("mkdir");
    std::fs::write(dir.join("certs/ca.pem"), pki.ca.cert_pem()).expect("ca");
    std::fs::write(dir.join("certs/authority.pem"), &pki.server.cert_pem).expect("cert");
    write_private_key(&dir.join("certs/authority.key"), &pki.server.key_pem);
    let grace = if extra.contains("shutdown_grace_secs") {
        ""
    } else {
        "shutdown_grace_secs = 2\n"
    };
    let text = format!(
        "code = \"{CODE}\"\nlisten = \"127.0.0.1:0\"\ninbox = \"var/inbox\"\n\
         data_dir = \"var/authority\"\nmax_file_bytes = 1048576\nmax_chunk_bytes = {CHUNK}\n\
         {grace}{extra}\n\
         [tls]\ncert = \"certs/authority.pem\"\nkey = \"certs/authority.key\"\nca = \"certs/ca.pem\"\n\n\
         [[provider]]\nid = \"provider.test\"\nname = \"Example Provider Ltd\"\n\n\
         [[provider]]\nid = \"other.test\"\nname = \"Other Provider Ltd\"\n"
    );
    let path = dir.join("authority.toml");
    std::fs::write(&path, text).expect("config");
    path
}

impl Endpoint {
    async fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Arc::new(pki());
        write_config(dir.path(), &pki, extra);
        let mut endpoint = Endpoint {
            dir,
            pki,
            addr: "127.0.0.1:1".parse().expect("addr"),
            stop: None,
            task: None,
        };
        endpoint.restart().await;
        endpoint
    }

    /// Starts (again) on a fresh port with the same directory.
    async fn restart(&mut self) {
        let config =
            AuthorityConfig::load(&self.dir.path().join("authority.toml")).expect("config loads");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        self.addr = listener.local_addr().expect("addr");
        let stop = Shutdown::new();
        self.stop = Some(stop.clone());
        self.task = Some(tokio::spawn(async move {
            authority::serve(config, listener, &stop).await
        }));
    }

    /// Triggers shutdown and waits for `serve` to return.
    async fn shutdown(&mut self) -> Result<(), AuthorityError> {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        self.task
            .take()
            .expect("running")
            .await
            .expect("serve task")
    }

    async fn client(&self, who: &Issued) -> Result<ExchangeClient<Channel>, String> {
        let config = tls::client_config(&who.identity(), &self.pki.ca.anchors()).expect("client");
        let channel = tls::connect(&format!("https://{}", self.addr), SERVER_NAME, config)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ExchangeClient::new(channel))
    }

    async fn provider(&self) -> ExchangeClient<Channel> {
        self.client(&self.pki.provider)
            .await
            .expect("provider connects")
    }

    fn inbox(&self) -> PathBuf {
        self.dir.path().join("var/inbox")
    }

    /// How many partial files there are.
    fn partial_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("var/authority/partial"))
            .expect("partial dir")
            .filter(|e| !is_health_probe(&e.as_ref().expect("entry").path()))
            .count()
    }

    /// Every file under the inbox, relative to it.
    fn inbox_files(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("read inbox") {
                let path = entry.expect("entry").path();
                if is_health_probe(&path) {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(
                        path.strip_prefix(base)
                            .expect("under inbox")
                            .display()
                            .to_string(),
                    );
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.inbox(), &self.inbox(), &mut out);
        out.sort();
        out
    }

    /// The endpoint's audit log, as (kind, detail) pairs.
    fn audit(&self) -> Vec<(String, serde_json::Value)> {
        let state = Store::open(&self.dir.path().join("var/authority"), CODE).expect("state");
        state
            .audit_entries()
            .expect("entries")
            .into_iter()
            .map(|e| {
                let detail = serde_json::from_str(&e.detail).expect("json");
                (e.kind, detail)
            })
            .collect()
    }
}

async fn query(client: &mut ExchangeClient<Channel>, id: &str) -> TransferStatus {
    client
        .query_transfer(QueryTransferRequest {
            transfer_id: id.into(),
        })
        .await
        .expect("query")
        .into_inner()
}

/// Whether `path` is a file of the endpoint's health probe, which lives
/// for moments in the folders it probes.
fn is_health_probe(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(mishare::common::health::PROBE_PREFIX))
}

#[tokio::test]
async fn a_file_pushed_in_chunks_is_stored_whole_with_a_signed_receipt() {
    let mut endpoint = Endpoint::start("").await;
    let mut client = endpoint.provider().await;
    let file = age_file(20_000);
    assert!(file.len() > 4 * CHUNK, "several chunks");

    let receipt = push(&mut client, whole("transfer-0001", &file, 0))
        .await
        .expect("accepted");

    let stored_as = "2012-10_referrals-monthly_transfer-0001.age";
    assert_eq!(receipt.stored_as, stored_as);
    assert_eq!(receipt.transfer_id, "transfer-0001");
    assert_eq!(receipt.size, file.len() as u64);
    assert_eq!(receipt.sha256, sha256(&file));
    assert_eq!(
        endpoint.inbox_files(),
        vec![format!("provider.test/{stored_as}")]
    );
    let stored =
        std::fs::read(endpoint.inbox().join("provider.test").join(stored_as)).expect("stored file");
    assert_eq!(stored, file, "byte-identical");

    // It binds who sent what to whom: the provider its certificate proved,
    // this LA, and the manifest's report, period and classification.
    assert_eq!(receipt.version, receipt::VERSION);
    assert_eq!(receipt.provider, "provider.test");
    assert_eq!(receipt.la_code, CODE);
    assert_eq!(receipt.report, "referrals-monthly");
    assert_eq!(receipt.period, "2012-10");
    assert_eq!(receipt.classification, Classification::Internal as i32);
    assert_eq!(
        receipt::verify(&receipt, &endpoint.pki.server.cert_der).expect("valid receipt"),
        receipt::Version::V2
    );
    let mut tampered = receipt.clone();
    tampered.la_code = "E09000030".into();
    assert!(receipt::verify(&tampered, &endpoint.pki.server.cert_der).is_err());
    let mut tampered = receipt.clone();
    tampered.stored_as = "2012-10_referrals-monthly_transfer-0002.age".into();
    assert!(receipt::verify(&tampered, &endpoint.pki.server.cert_der).is_err());
    let mut tampered = receipt.clone();
    tampered.sha256[0] ^= 1;
    assert!(receipt::verify(&tampered, &endpoint.pki.server.cert_der).is_err());
    assert!(
        receipt::verify(&receipt, &endpoint.pki.provider.cert_der).is_err(),
        "another certificate's key did not sign it"
    );

    let status = query(&mut client, "transfer-0001").await;
    assert!(status.complete);
    assert_eq!(status.committed, file.len() as u64);
    assert_eq!(status.receipt.as_ref(), Some(&receipt));

    endpoint.shutdown().await.expect("clean shutdown");
    let audit = endpoint.audit();
    assert!(
        audit
            .iter()
            .any(|(kind, d)| kind == "transfer_accepted" && d["stored_as"] == stored_as),
        "{audit:?}"
    );
}

/// `receipt` as endpoints signed receipts before version 2: the fields
/// version 2 binds cleared, the version 1 byte string signed.
fn sign_version_1(identity: &tls::Identity, receipt: &Receipt) -> Receipt {
    let mut old = Receipt {
        transfer_id: receipt.transfer_id.clone(),
        sha256: receipt.sha256.clone(),
        size: receipt.size,
        stored_as: receipt.stored_as.clone(),
        received_unix_ms: receipt.received_unix_ms,
        ..Receipt::default()
    };
    let message = receipt::signed_bytes(&old).expect("version 1 bytes");
    assert!(message.starts_with(receipt::DOMAIN_V1));
    let key = identity.signing_key().expect("key");
    let signer = key
        .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .expect("the test PKI's keys are P-256");
    old.signature = u16::from(signer.scheme()).to_be_bytes().to_vec();
    old.signature.extend(signer.sign(&message).expect("sign"));
    old
}

#[tokio::test]
async fn a_receipt_verifies_from_the_command_line() {
    let endpoint = Endpoint::start("").await;
    let mut client = endpoint.provider().await;
    let file = age_file(100);
    let receipt = push(&mut client, whole("transfer-cli-01", &file, 0))
        .await
        .expect("accepted");
    let dir = endpoint.dir.path();
    std::fs::write(dir.join("receipt.json"), receipt::to_json(&receipt)).expect("write");
    let mut tampered = receipt.clone();
    tampered.size += 1;
    std::fs::write(dir.join("tampered.json"), receipt::to_json(&tampered)).expect("write");

    let run = |file: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mishare"))
            .args(["receipt", "verify", file, "--cert", "certs/authority.pem"])
            .current_dir(dir)
            .output()
            .expect("run mishare")
    };
    let ok = run("receipt.json");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(
        stdout.starts_with("receipt valid: transfer transfer-cli-01 stored as"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            ", sent by provider.test for E09000002 (report referrals-monthly, period 2012-10, \
             internal), signed by la-e09000002.test"
        ),
        "{stdout}"
    );
    let bad = run("tampered.json");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        stderr.starts_with("receipt invalid: the signature does not match"),
        "{stderr}"
    );

    // A receipt signed before version 2 still verifies, and says what it
    // does not prove; one that names a field its signature does not cover
    // is refused.
    let old = sign_version_1(&endpoint.pki.server.identity(), &receipt);
    std::fs::write(dir.join("v1.json"), receipt::to_json(&old)).expect("write");
    let ok = run("v1.json");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(
        stdout.starts_with("receipt valid: transfer transfer-cli-01 stored as"),
        "{stdout}"
    );
    assert!(!stdout.contains("sent by"), "{stdout}");
    assert!(
        stdout.ends_with(
            "\nnote: a version 1 receipt, signed before receipts named the provider, LA, \
             report, period and classification; it proves none of them\n"
        ),
        "{stdout}"
    );
    let mut named = old.clone();
    named.la_code = CODE.into();
    std::fs::write(dir.join("v1-named.json"), receipt::to_json(&named)).expect("write");
    let bad = run("v1-named.json");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        stderr.starts_with(
            "receipt invalid: the receipt is version 1, whose signature does not cover \
             `la_code`"
        ),
        "{stderr}"
    );

    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_mishare"))
        .args(["authority", "audit", "verify", "--config", "authority.toml"])
        .current_dir(dir)
        .output()
        .expect("run mishare");
    let stdout = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(audit.status.code(), Some(0), "{audit:?}");
    assert!(
        stdout.starts_with("audit chain intact: 1 entries"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_provider_not_on_the_list_is_refused_at_the_handshake_and_audited() {
    let mut endpoint = Endpoint::start("").await;
    let refused = match endpoint.client(&endpoint.pki.stranger).await {
        Err(e) => e,
        // TLS 1.3 may report a refused client certificate only at the first
        // request.
        Ok(mut client) => query_err(&mut client, "transfer-0001").await,
    };
    assert!(!refused.is_empty());

    // The refusal is audited by a writer task; give it a bounded while.
    let mut audited = false;
    for _ in 0..100 {
        audited = endpoint.audit().iter().any(|(kind, d)| {
            kind == "handshake_refused"
                && d["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("stranger.test"))
        });
        if audited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    endpoint.shutdown().await.expect("clean shutdown");
    let audit = endpoint.audit();
    assert!(audited, "{audit:?}");
    assert!(
        audit.iter().all(|(kind, _)| kind == "handshake_refused"),
        "no handler ran: {audit:?}"
    );
    assert!(endpoint.inbox_files().is_empty());
}

/// Idle TCP connections from one address never stop the endpoint
/// accepting others: 500 are held open from 127.0.0.2 while a provider
/// (from 127.0.0.1) connects and pushes a file. Those over the address's
/// limit of pending handshakes are closed at once and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_do_not_stop_a_provider_pushing() {
    let mut endpoint = Endpoint::start("").await;
    let mut idle = Vec::new();
    for _ in 0..500 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind 127.0.0.2 (any 127/8 address is loopback on Linux)");
        idle.push(socket.connect(endpoint.addr).await.expect("connect"));
    }

    let mut client = endpoint.provider().await;
    let file = age_file(10_000);
    let receipt = push(&mut client, whole("transfer-while-flooded", &file, 0))
        .await
        .expect("a push completes while 500 idle connections are open");
    assert_eq!(receipt.sha256, sha256(&file));
    assert_eq!(endpoint.inbox_files().len(), 1);
    drop(idle);

    endpoint.shutdown().await.expect("clean shutdown");
    let audit = endpoint.audit();
    assert!(
        audit.iter().any(|(kind, d)| kind == "handshake_refused"
            && d["reason"]
                .as_str()
                .is_some_and(|r| r.contains("too many handshakes pending from"))
            && d["peer_addr"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.2"))),
        "{audit:?}"
    );
}

/// Opens `n` TCP connections to `addr`, at most 64 at once, each sending
/// bytes that are not TLS and then waiting until the endpoint closes it
/// (it tells its audit before it closes, so every refusal is counted once
/// this returns).
async fn failed_handshakes(addr: SocketAddr, n: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await.expect("permit");
        set.spawn(async move {
            let _permit = permit;
            let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            // The endpoint may close first (over a limit): never mind.
            let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
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
}

/// The `handshake_refused` rows of an audit log: (count, detail).
fn refusal_rows(audit: &[(String, serde_json::Value)]) -> Vec<(u64, serde_json::Value)> {
    audit
        .iter()
        .filter(|(kind, _)| kind == "handshake_refused")
        .map(|(_, d)| (d["count"].as_u64().unwrap_or(0), d.clone()))
        .collect()
}

/// 10,000 failed handshakes do not write 10,000 fsynced rows: refusals are
/// coalesced per (source address, reason), at most one row a minute for
/// each, carrying the count of refusals it stands for; the counts add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_failed_handshakes_add_a_bounded_number_of_audit_rows() {
    const N: usize = 10_000;
    let mut endpoint = Endpoint::start("").await;
    let started = std::time::Instant::now();
    failed_handshakes(endpoint.addr, N).await;
    let minutes = started.elapsed().as_secs() / 60;
    endpoint.shutdown().await.expect("clean shutdown");

    let audit = endpoint.audit();
    let rows = refusal_rows(&audit);
    let total: u64 = rows.iter().map(|(count, _)| count).sum();
    assert_eq!(
        total, N as u64,
        "the counts add up to every refusal: {rows:?}"
    );
    let keys: std::collections::HashSet<(String, String)> = rows
        .iter()
        .map(|(_, d)| (d["source"].to_string(), d["reason"].to_string()))
        .collect();
    assert!(
        keys.iter().all(|(source, _)| source == "\"127.0.0.1\""),
        "{keys:?}"
    );
    // For each key: its first refusal at once, then one row per minute (or
    // part of one, at shutdown).
    let bound = keys.len() * (2 + minutes as usize);
    assert!(
        rows.len() <= bound,
        "{} rows for {} keys in {minutes} whole minutes: {rows:?}",
        rows.len(),
        keys.len()
    );
    assert!(keys.len() <= 4, "{keys:?}");
    assert_eq!(
        endpoint.audit().len(),
        rows.len(),
        "nothing else was audited"
    );
}

async fn query_err(client: &mut ExchangeClient<Channel>, id: &str) -> String {
    client
        .query_transfer(QueryTransferRequest {
            transfer_id: id.into(),
        })
        .await
        .expect_err("refused")
        .to_string()
}

#[tokio::test]
async fn hostile_pushes_are_refused_with_the_right_code_and_leave_nothing() {
    let mut endpoint = Endpoint::start("").await;
    let mut client = endpoint.provider().await;
    let file = age_file(10_000);
    let good = |id: &str| manifest(id, &file, 0);
    let with = |id: &str, change: fn(&mut Manifest)| {
        let mut manifest = good(id);
        change(&mut manifest);
        manifest
    };
    let mut wrong_digest = good("transfer-digest");
    wrong_digest.sha256 = sha256(b"something else");
    let not_age = b"PK\x03\x04 this is a zip file, not age, and it is long enough".to_vec();
    let mut magic_then_junk = b"age-encryption.org/v1\n".to_vec();
    magic_then_junk.extend_from_slice(b"-> nonsense\n--- not a mac\n");
    let one_chunk = &file[..CHUNK];

    let cases: Vec<(&str, Vec<PushRequest>, Code)> = vec![
        (
            "path traversal in report",
            vec![
                m(with("transfer-trav", |m| m.report = "../../etc".into())),
                chunk(0, one_chunk),
            ],
            Code::InvalidArgument,
        ),
        (
            "bad transfer id",
            vec![m(with("../../../etc/passwd", |_| {}))],
            Code::InvalidArgument,
        ),
        (
            "short transfer id",
            vec![m(with("short", |_| {}))],
            Code::InvalidArgument,
        ),
        (
            "bad period",
            vec![m(with("transfer-period", |m| m.period = "2012-13".into()))],
            Code::InvalidArgument,
        ),
        (
            "unspecified classification",
            vec![m(with("transfer-class", |m| m.classification = 0))],
            Code::InvalidArgument,
        ),
        (
            "digest not 32 bytes",
            vec![m(with("transfer-sha-len", |m| m.sha256 = vec![1; 20]))],
            Code::InvalidArgument,
        ),
        (
            "wrong la_code",
            vec![m(with("transfer-la", |m| m.la_code = "E09000030".into()))],
            Code::PermissionDenied,
        ),
        (
            "size over the limit",
            vec![m(with("transfer-size", |m| m.size = 2 * 1048576))],
            Code::ResourceExhausted,
        ),
        (
            "manifest offset not the committed size",
            vec![m(with("transfer-moff", |m| m.offset = 4096))],
            Code::FailedPrecondition,
        ),
        (
            "chunk at the wrong offset",
            vec![m(good("transfer-coff")), chunk(10, one_chunk)],
            Code::FailedPrecondition,
        ),
        (
            "digest mismatch",
            {
                let mut msgs = vec![m(wrong_digest)];
                msgs.extend(chunks(&file, 0));
                msgs.push(commit());
                msgs
            },
            Code::DataLoss,
        ),
        (
            "not age",
            vec![
                m(manifest("transfer-notage", &not_age, 0)),
                chunk(0, &not_age),
                commit(),
            ],
            Code::InvalidArgument,
        ),
        (
            "age magic but no age header",
            vec![
                m(manifest("transfer-junk", &magic_then_junk, 0)),
                chunk(0, &magic_then_junk),
                commit(),
            ],
            Code::InvalidArgument,
        ),
        (
            "chunk over the limit",
            vec![m(good("transfer-big")), chunk(0, &file[..CHUNK + 1])],
            Code::ResourceExhausted,
        ),
        (
            "chunk beyond size",
            vec![
                m(manifest("transfer-beyond", &file[..100], 0)),
                chunk(0, &file[..101]),
            ],
            Code::InvalidArgument,
        ),
        (
            "commit before every byte",
            vec![m(good("transfer-short")), chunk(0, one_chunk), commit()],
            Code::DataLoss,
        ),
        (
            "stream without a manifest",
            vec![chunk(0, one_chunk), commit()],
            Code::InvalidArgument,
        ),
        (
            "a second manifest",
            vec![
                m(good("transfer-twice")),
                chunk(0, one_chunk),
                m(good("transfer-twice")),
            ],
            Code::InvalidArgument,
        ),
        (
            "a request with no body",
            vec![m(good("transfer-nobody")), PushRequest { body: None }],
            Code::InvalidArgument,
        ),
    ];
    let count = cases.len();
    for (name, msgs, code) in cases {
        let status = push(&mut client, msgs).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert_ne!(status.code(), Code::Internal, "{name}");
        assert!(
            endpoint.inbox_files().is_empty(),
            "{name}: {:?}",
            endpoint.inbox_files()
        );
    }

    // A refused digest discards what arrived: the transfer starts again.
    let status = query(&mut client, "transfer-digest").await;
    assert_eq!((status.committed, status.complete), (0, false));

    endpoint.shutdown().await.expect("clean shutdown");
    let refusals = endpoint
        .audit()
        .into_iter()
        .filter(|(kind, _)| kind == "transfer_refused")
        .collect::<Vec<_>>();
    assert_eq!(refusals.len(), count, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .any(|(_, d)| d["code"] == "DataLoss" && d["transfer_id"] == "transfer-digest"),
        "{refusals:?}"
    );
}

#[tokio::test]
async fn pushing_a_completed_transfer_again_returns_the_original_receipt() {
    let mut endpoint = Endpoint::start("").await;
    let mut client = endpoint.provider().await;
    let file = age_file(9_000);
    let first = push(&mut client, whole("transfer-again", &file, 0))
        .await
        .expect("first");
    let second = push(&mut client, whole("transfer-again", &file, 0))
        .await
        .expect("second");
    assert_eq!(
        prost::Message::encode_to_vec(&first),
        prost::Message::encode_to_vec(&second),
        "byte-equal receipts"
    );
    // Even a manifest alone gets it.
    let third = push(&mut client, vec![m(manifest("transfer-again", &file, 0))])
        .await
        .expect("third");
    assert_eq!(third, first);
    assert_eq!(
        endpoint.inbox_files().len(),
        1,
        "{:?}",
        endpoint.inbox_files()
    );

    // The same id for another file is refused, not stored.
    let other = age_file(9_000);
    let status = push(&mut client, whole("transfer-again", &other, 0))
        .await
        .expect_err("another file under a used id");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(endpoint.inbox_files().len(), 1);

    endpoint.shutdown().await.expect("clean shutdown");
    let kinds: Vec<String> = endpoint.audit().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "transfer_accepted",
            "transfer_repeated",
            "transfer_repeated",
            "transfer_refused"
        ]
    );
}

/// A push held open: its manifest and first chunk sent and taken in (the
/// endpoint has committed them), nothing more until it is dropped.
struct OpenPush {
    tx: mpsc::Sender<PushRequest>,
    call: JoinHandle<Result<tonic::Response<Receipt>, Status>>,
}

/// Opens a push of `file` as `id` and waits (bounded) until the endpoint
/// has committed its first chunk; needs `sync_every_bytes = 1`.
async fn open_push(client: &ExchangeClient<Channel>, id: &str, file: &[u8]) -> OpenPush {
    let (tx, rx) = mpsc::channel(64);
    let mut sender = client.clone();
    let call = tokio::spawn(async move { sender.push(ReceiverStream::new(rx)).await });
    tx.send(m(manifest(id, file, 0))).await.expect("send");
    tx.send(chunk(0, &file[..CHUNK])).await.expect("send");
    let mut querier = client.clone();
    for _ in 0..500 {
        if query(&mut querier, id).await.committed > 0 {
            return OpenPush { tx, call };
        }
        assert!(!call.is_finished(), "the push ended: {:?}", call.await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the endpoint never took in the first chunk of {id}");
}

/// One provider cannot hold every stream: over `max_streams_per_provider`
/// its next push is refused with RESOURCE_EXHAUSTED, while another
/// provider still pushes.
#[tokio::test]
async fn a_provider_over_its_stream_limit_is_refused_and_others_still_push() {
    let mut endpoint =
        Endpoint::start("sync_every_bytes = 1\nmax_streams = 8\nmax_streams_per_provider = 2")
            .await;
    let client = endpoint.provider().await;
    let file = age_file(20_000);
    let first = open_push(&client, "transfer-open-1", &file).await;
    let _second = open_push(&client, "transfer-open-2", &file).await;

    let status = push(&mut client.clone(), whole("transfer-open-3", &file, 0))
        .await
        .expect_err("a third stream at once");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("2 pushes"), "{status:?}");

    let mut other = endpoint
        .client(&endpoint.pki.other)
        .await
        .expect("other provider connects");
    push(&mut other, whole("transfer-theirs", &file, 0))
        .await
        .expect("another provider is not held up");

    // When one of its streams ends, the provider may push again.
    drop(first.tx);
    let _ = first.call.await;
    let mut done = None;
    for _ in 0..100 {
        match push(&mut client.clone(), whole("transfer-open-3", &file, 0)).await {
            Ok(receipt) => {
                done = Some(receipt);
                break;
            }
            Err(s) if s.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    done.expect("a place came free");
    endpoint.shutdown().await.expect("clean shutdown");
    assert!(
        endpoint
            .audit()
            .iter()
            .any(|(kind, d)| kind == "transfer_refused" && d["code"] == "ResourceExhausted")
    );
}

/// One provider cannot fill the disk with partial files: the sizes of its
/// unfinished transfers (in flight, or interrupted and kept for a resume)
/// are bounded by `max_partial_bytes_per_provider`; a push that would go
/// over is refused with RESOURCE_EXHAUSTED before a byte of it is written.
#[tokio::test]
async fn a_provider_over_its_partial_bytes_is_refused_before_a_byte_is_written() {
    let mut endpoint =
        Endpoint::start("sync_every_bytes = 1\nmax_partial_bytes_per_provider = 1048576").await;
    let client = endpoint.provider().await;
    let big = age_file(600_000);

    // In flight: its whole size is held from its Manifest on.
    let open = open_push(&client, "transfer-big-1", &big).await;
    let status = push(&mut client.clone(), whole("transfer-big-2", &big, 0))
        .await
        .expect_err("over the limit with one in flight");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        endpoint.partial_files(),
        1,
        "nothing written for the refused push"
    );
    assert_eq!(
        query(&mut client.clone(), "transfer-big-2").await.committed,
        0
    );

    // Interrupted and kept for a resume: still held.
    drop(open.tx);
    let _ = open.call.await;
    let mut refused = None;
    for _ in 0..100 {
        match push(&mut client.clone(), whole("transfer-big-2", &big, 0)).await {
            Err(s) if s.code() == Code::ResourceExhausted => {
                refused = Some(s);
                break;
            }
            // The old stream may still hold the claim for a moment.
            Err(s) if s.code() == Code::FailedPrecondition => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("{other:?}"),
        }
    }
    refused.expect("refused while the interrupted transfer is kept");
    assert_eq!(endpoint.partial_files(), 1);

    // Another provider has a limit of its own.
    let mut other = endpoint
        .client(&endpoint.pki.other)
        .await
        .expect("other provider connects");
    push(&mut other, whole("transfer-big-2", &big, 0))
        .await
        .expect("another provider is not held up");

    // Once the first is finished, its bytes are no longer held.
    let committed = query(&mut client.clone(), "transfer-big-1").await.committed as usize;
    push(
        &mut client.clone(),
        whole("transfer-big-1", &big, committed),
    )
    .await
    .expect("the held transfer resumes");
    push(&mut client.clone(), whole("transfer-big-2", &big, 0))
        .await
        .expect("room again");
    endpoint.shutdown().await.expect("clean shutdown");
}

/// A chunk with no bytes makes no progress and is refused.
#[tokio::test]
async fn a_zero_length_chunk_is_refused() {
    let mut endpoint = Endpoint::start("").await;
    let mut client = endpoint.provider().await;
    let file = age_file(10_000);
    let mut msgs = vec![m(manifest("transfer-empty-chunk", &file, 0)), chunk(0, b"")];
    msgs.extend(chunks(&file, 0));
    msgs.push(commit());
    let status = push(&mut client, msgs).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("empty chunk"), "{status:?}");
    endpoint.shutdown().await.expect("clean shutdown");
    assert!(endpoint.inbox_files().is_empty());
}

/// Idleness is measured by bytes that make progress: a stream of one-byte
/// chunks, each well within `stream_idle_secs` of the last, is still cut
/// off, because it never moves a useful amount.
#[tokio::test]
async fn a_stream_of_tiny_chunks_cannot_keep_itself_alive() {
    let mut endpoint = Endpoint::start("stream_idle_secs = 1").await;
    let client = endpoint.provider().await;
    let file = age_file(20_000);
    let (tx, rx) = mpsc::channel(64);
    let mut sender = client.clone();
    let call = tokio::spawn(async move { sender.push(ReceiverStream::new(rx)).await });
    tx.send(m(manifest("transfer-trickle", &file, 0)))
        .await
        .expect("send");
    // Up to 50 one-byte chunks, one every 200 ms: 10 s of messages.
    for (i, byte) in file.iter().take(50).enumerate() {
        if call.is_finished() || tx.send(chunk(i as u64, &[*byte])).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(tx);
    let status = call.await.expect("task").expect_err("cut off");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    endpoint.shutdown().await.expect("clean shutdown");
    assert!(endpoint.inbox_files().is_empty());
}

/// Below the free-space floor (`min_free_bytes`), a push is refused with
/// RESOURCE_EXHAUSTED before a byte is written. The floor here is more
/// than any disk has.
#[tokio::test]
async fn below_the_free_space_floor_a_push_is_refused_before_a_byte_is_written() {
    let mut endpoint = Endpoint::start("min_free_bytes = 1152921504606846976").await;
    let mut client = endpoint.provider().await;
    let file = age_file(10_000);
    let status = push(&mut client, whole("transfer-no-room", &file, 0))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("disk space"), "{status:?}");
    assert!(
        !status.message().chars().any(|c| c.is_ascii_digit()),
        "internal figures are logged, never sent: {status:?}"
    );
    assert_eq!(query(&mut client, "transfer-no-room").await.committed, 0);
    endpoint.shutdown().await.expect("clean shutdown");
    let partials = endpoint.partial_files();
    assert_eq!(partials, 0);
    assert!(endpoint.inbox_files().is_empty());
}

/// Sends half the file, then a chunk at a wrong offset: the refusal comes
/// after what arrived was fsynced and recorded, so the committed offset is
/// exactly half.
async fn push_half_then_break(client: &mut ExchangeClient<Channel>, id: &str, file: &[u8]) -> u64 {
    let half = (file.len() / 2 / CHUNK) * CHUNK;
    assert!(half > 0);
    let mut msgs = vec![m(manifest(id, file, 0))];
    msgs.extend(chunks(&file[..half], 0));
    msgs.push(chunk(half as u64 + 1, b"x"));
    let status = push(client, msgs).await.expect_err("broken push");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    half as u64
}

#[tokio::test]
async fn an_interrupted_push_resumes_from_the_committed_offset() {
    let mut endpoint = Endpoint::start("").await;
    let mut client = endpoint.provider().await;
    let file = age_file(30_000);
    let half = push_half_then_break(&mut client, "transfer-resume", &file).await;

    let status = query(&mut client, "transfer-resume").await;
    assert_eq!(status.committed, half, "everything that arrived is durable");
    assert!(!status.complete);
    assert!(
        endpoint.inbox_files().is_empty(),
        "partials never in the inbox"
    );

    // Resuming from anywhere else is refused, naming the committed offset.
    let status = push(&mut client, vec![m(manifest("transfer-resume", &file, 0))])
        .await
        .expect_err("wrong start");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains(&half.to_string()), "{status:?}");

    let receipt = push(&mut client, whole("transfer-resume", &file, half as usize))
        .await
        .expect("resumed");
    assert_eq!(receipt.sha256, sha256(&file));
    let files = endpoint.inbox_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let stored = std::fs::read(endpoint.inbox().join(&files[0])).expect("stored");
    assert_eq!(sha256(&stored), sha256(&file));
    endpoint.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_dropped_stream_resumes_from_what_query_transfer_reports() {
    // Every chunk is fsynced and recorded as it arrives.
    let mut endpoint = Endpoint::start("sync_every_bytes = 1").await;
    let mut client = endpoint.provider().await;
    let file = age_file(30_000);
    let half = (file.len() / 2 / CHUNK) * CHUNK;

    let (tx, rx) = mpsc::channel(64);
    let mut sender = client.clone();
    let call = tokio::spawn(async move { sender.push(ReceiverStream::new(rx)).await });
    tx.send(m(manifest("transfer-dropped", &file, 0)))
        .await
        .expect("send");
    for msg in chunks(&file[..half], 0) {
        tx.send(msg).await.expect("send");
    }
    // Drop the stream: no Commit.
    call.abort();
    drop(tx);
    let _ = call.await;

    // Whatever the endpoint has when asked is durable and on a chunk
    // boundary; a provider resumes from there, asking again if the old
    // stream was still being wound down.
    let first = query(&mut client, "transfer-dropped").await;
    assert!(first.committed <= half as u64, "{first:?}");
    assert_eq!(first.committed % CHUNK as u64, 0, "{first:?}");
    let mut receipt = None;
    for _ in 0..50 {
        let status = query(&mut client, "transfer-dropped").await;
        match push(
            &mut client,
            whole("transfer-dropped", &file, status.committed as usize),
        )
        .await
        {
            Ok(r) => {
                receipt = Some(r);
                break;
            }
            Err(s) if s.code() == Code::FailedPrecondition => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("resume failed: {s:?}"),
        }
    }
    let receipt = receipt.expect("resumed within 50 attempts");
    assert_eq!(receipt.sha256, sha256(&file));
    let files = endpoint.inbox_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let stored = std::fs::read(endpoint.inbox().join(&files[0])).expect("stored");
    assert_eq!(stored, file);
    endpoint.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn another_provider_can_neither_see_nor_resume_a_transfer() {
    let mut endpoint = Endpoint::start("").await;
    let mut mine = endpoint.provider().await;
    let mut theirs = endpoint
        .client(&endpoint.pki.other)
        .await
        .expect("other provider connects");
    let file = age_file(30_000);
    let half = push_half_then_break(&mut mine, "transfer-shared-id", &file).await;

    let seen = query(&mut theirs, "transfer-shared-id").await;
    assert_eq!((seen.committed, seen.complete), (0, false));
    assert!(seen.receipt.is_none());
    let status = push(
        &mut theirs,
        whole("transfer-shared-id", &file, half as usize),
    )
    .await
    .expect_err("cannot resume someone else's transfer");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // The same id is theirs to use for their own file, apart from mine.
    let their_file = age_file(5_000);
    push(&mut theirs, whole("transfer-shared-id", &their_file, 0))
        .await
        .expect("their own transfer");
    assert_eq!(query(&mut mine, "transfer-shared-id").await.committed, half);
    let receipt = push(&mut mine, whole("transfer-shared-id", &file, half as usize))
        .await
        .expect("mine resumes");
    assert_eq!(receipt.sha256, sha256(&file));
    let name = "2012-10_referrals-monthly_transfer-shared-id.age";
    assert_eq!(
        endpoint.inbox_files(),
        vec![
            format!("other.test/{name}"),
            format!("provider.test/{name}")
        ]
    );
    let theirs_stored =
        std::fs::read(endpoint.inbox().join("other.test").join(name)).expect("theirs");
    assert_eq!(theirs_stored, their_file);
    endpoint.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_lets_a_push_in_flight_finish_then_serve_returns() {
    let mut endpoint = Endpoint::start("sync_every_bytes = 1\nshutdown_grace_secs = 30").await;
    let mut client = endpoint.provider().await;
    let file = age_file(20_000);
    let (tx, rx) = mpsc::channel(64);
    let mut sender = client.clone();
    let call = tokio::spawn(async move { sender.push(ReceiverStream::new(rx)).await });
    tx.send(m(manifest("transfer-inflight", &file, 0)))
        .await
        .expect("send");
    tx.send(chunk(0, &file[..CHUNK])).await.expect("send");
    // Wait until the endpoint has the first chunk, so the push is surely
    // in flight when shutdown begins.
    for _ in 0..200 {
        if query(&mut client, "transfer-inflight").await.committed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stop = endpoint.stop.take().expect("running");
    stop.cancel();
    for msg in chunks(&file, CHUNK) {
        tx.send(msg).await.expect("send");
    }
    tx.send(commit()).await.expect("send");
    let receipt = call
        .await
        .expect("task")
        .expect("the push in flight finishes")
        .into_inner();
    assert_eq!(receipt.sha256, sha256(&file));
    endpoint
        .task
        .take()
        .expect("task")
        .await
        .expect("serve task")
        .expect("serve returns cleanly");
    assert_eq!(endpoint.inbox_files().len(), 1);

    // Nothing listens any more (the accept loop ends on its own task).
    let mut refused = false;
    for _ in 0..100 {
        if endpoint.client(&endpoint.pki.provider).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the endpoint still accepts connections");
}

#[tokio::test]
async fn shutdown_cancels_a_stalled_push_after_the_grace_period() {
    let mut endpoint =
        Endpoint::start("sync_every_bytes = 1\nshutdown_grace_secs = 1\nstream_idle_secs = 600")
            .await;
    let mut client = endpoint.provider().await;
    let file = age_file(20_000);
    let (tx, rx) = mpsc::channel(64);
    let mut sender = client.clone();
    let call = tokio::spawn(async move { sender.push(ReceiverStream::new(rx)).await });
    tx.send(m(manifest("transfer-stalled", &file, 0)))
        .await
        .expect("send");
    tx.send(chunk(0, &file[..CHUNK])).await.expect("send");
    for _ in 0..200 {
        if query(&mut client, "transfer-stalled").await.committed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The push now stalls; serve still returns.
    endpoint.shutdown().await.expect("serve returns cleanly");
    let status = call.await.expect("task").expect_err("cancelled");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(endpoint.inbox_files().is_empty());
    drop(tx);

    // What it sent is kept for a resume after a restart.
    endpoint.restart().await;
    let mut client = endpoint.provider().await;
    assert_eq!(
        query(&mut client, "transfer-stalled").await.committed,
        CHUNK as u64
    );
    push(&mut client, whole("transfer-stalled", &file, CHUNK))
        .await
        .expect("resumed after restart");
    endpoint.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_file_stored_but_not_recorded_is_completed_at_start() {
    let mut endpoint = Endpoint::start("").await;
    let mut client = endpoint.provider().await;
    let file = age_file(6_000);
    // Everything arrives but no Commit: committed == size.
    let mut msgs = vec![m(manifest("transfer-crash", &file, 0))];
    msgs.extend(chunks(&file, 0));
    msgs.push(chunk(file.len() as u64 + 1, b"x"));
    push(&mut client, msgs).await.expect_err("no commit");
    assert_eq!(
        query(&mut client, "transfer-crash").await.committed,
        file.len() as u64
    );
    endpoint.shutdown().await.expect("clean shutdown");

    // As if the endpoint stopped between the rename and the database write.
    let name = "2012-10_referrals-monthly_transfer-crash.age";
    let folder = endpoint.inbox().join("provider.test");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join(name), &file).expect("place file");

    endpoint.restart().await;
    let mut client = endpoint.provider().await;
    let status = query(&mut client, "transfer-crash").await;
    assert!(status.complete, "{status:?}");
    let receipt = status.receipt.expect("receipt");
    assert_eq!(receipt.stored_as, name);
    receipt::verify(&receipt, &endpoint.pki.server.cert_der).expect("valid");
    let partials = endpoint.partial_files();
    assert_eq!(partials, 0);
    endpoint.shutdown().await.expect("clean shutdown");
    assert!(
        endpoint
            .audit()
            .iter()
            .any(|(kind, _)| kind == "transfer_recovered")
    );
}

#[tokio::test]
async fn idle_partial_transfers_are_removed_and_audited() {
    let mut endpoint = Endpoint::start("partial_ttl_secs = 1").await;
    let mut client = endpoint.provider().await;
    let file = age_file(30_000);
    push_half_then_break(&mut client, "transfer-idle", &file).await;
    let mut removed = false;
    for _ in 0..100 {
        if query(&mut client, "transfer-idle").await.committed == 0 {
            removed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(removed, "the sweep removes it within 10 s");
    endpoint.shutdown().await.expect("clean shutdown");
    assert!(
        endpoint
            .audit()
            .iter()
            .any(|(kind, d)| kind == "partial_removed" && d["transfer_id"] == "transfer-idle")
    );
    let partials = endpoint.partial_files();
    assert_eq!(partials, 0);
}

#[tokio::test]
async fn a_bad_config_names_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let path = write_config(dir.path(), &pki, "bogus = 1");
    let err = AuthorityConfig::load(&path).expect_err("unknown key");
    assert!(err.to_string().contains("authority.toml"), "{err}");
    assert!(err.to_string().contains("bogus"), "{err}");

    let path = write_config(dir.path(), &pki, "max_streams = 0");
    let err = AuthorityConfig::load(&path).expect_err("zero");
    assert!(err.to_string().contains("`max_streams`"), "{err}");

    for (extra, key) in [
        (
            "max_streams_per_provider = 0",
            "`max_streams_per_provider`: must be at least 1",
        ),
        (
            "max_streams = 4\nmax_streams_per_provider = 5",
            "`max_streams_per_provider`: 5 is more than max_streams (4)",
        ),
        (
            "max_partial_bytes_per_provider = 1048575",
            "`max_partial_bytes_per_provider`: 1048575 is less than max_file_bytes (1048576)",
        ),
    ] {
        let path = write_config(dir.path(), &pki, extra);
        let err = AuthorityConfig::load(&path).expect_err(extra).to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    // The defaults, and a per-provider default that fits a small max_streams.
    let path = write_config(dir.path(), &pki, "");
    let config = AuthorityConfig::load(&path).expect("defaults");
    assert_eq!(config.max_streams_per_provider, 8);
    assert_eq!(config.max_partial_bytes_per_provider, 4 * 1048576);
    assert_eq!(config.min_free_bytes, 1 << 30);
    let path = write_config(dir.path(), &pki, "max_streams = 3\nmin_free_bytes = 0");
    let config = AuthorityConfig::load(&path).expect("small");
    assert_eq!(config.max_streams_per_provider, 3);
    assert_eq!(config.min_free_bytes, 0);

    // A key that is not the certificate's fails at load, not at the first
    // handshake.
    let path = write_config(dir.path(), &pki, "");
    std::fs::write(
        dir.path().join("certs/authority.key"),
        &pki.provider.key_pem,
    )
    .expect("key");
    let err = AuthorityConfig::load(&path).expect_err("mismatched key");
    assert!(err.to_string().contains("`tls.cert`"), "{err}");
}

/// The endpoint publishes a file by hard-linking it from `data_dir/partial`
/// into the inbox, which cannot cross filesystems (EXDEV). An inbox on
/// another filesystem is refused at load, naming both paths. This uses
/// two real filesystems where the machine has them (/dev/shm is tmpfs on
/// Linux); the seam below is tested on its own whatever the machine.
#[test]
fn an_inbox_on_another_filesystem_than_the_partial_files_is_refused_at_load() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let Ok(elsewhere) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("no /dev/shm here: only the seam is tested");
        return;
    };
    let dev = |p: &Path| std::fs::metadata(p).expect("metadata").dev();
    if dev(dir.path()) == dev(elsewhere.path()) {
        eprintln!("/dev/shm is on the same filesystem here: only the seam is tested");
        return;
    }
    let pki = pki();
    let path = write_config(dir.path(), &pki, "");
    let inbox = elsewhere.path().join("inbox");
    let text = std::fs::read_to_string(&path).expect("config").replace(
        "inbox = \"var/inbox\"",
        &format!("inbox = {:?}", inbox.display().to_string()),
    );
    std::fs::write(&path, text).expect("config");
    let err = AuthorityConfig::load(&path)
        .expect_err("another filesystem")
        .to_string();
    let partial = dir.path().join("var/authority/partial");
    assert!(
        err.starts_with(&format!("{}: `inbox`: ", path.display())),
        "{err}"
    );
    assert!(err.contains(&inbox.display().to_string()), "{err}");
    assert!(err.contains(&partial.display().to_string()), "{err}");
}

/// The start-up check through its seam: the device of each path is what
/// the test says, so two filesystems need not exist.
#[test]
fn the_filesystem_check_names_both_paths_through_its_seam() {
    use mishare::config::authority::check_same_filesystem;
    let config = Path::new("/srv/la/authority.toml");
    let inbox = Path::new("/mnt/inbox");
    let partial = Path::new("/srv/la/var/authority/partial");
    let two = |p: &Path| Ok(if p.starts_with("/mnt") { 7 } else { 3 });
    let err = check_same_filesystem(config, inbox, partial, two)
        .expect_err("two filesystems")
        .to_string();
    assert_eq!(
        err,
        "/srv/la/authority.toml: `inbox`: /mnt/inbox is on another filesystem than the \
         partial transfers in /srv/la/var/authority/partial; a received file is moved into \
         the inbox by a hard link, which cannot cross filesystems: put inbox and data_dir \
         on the same filesystem"
    );
    check_same_filesystem(config, inbox, partial, |_| Ok(3)).expect("one filesystem");
    let err = check_same_filesystem(config, inbox, partial, |p: &Path| {
        if p.starts_with("/mnt") {
            Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
        } else {
            Ok(3)
        }
    })
    .expect_err("unknown device")
    .to_string();
    assert!(
        err.starts_with(
            "/srv/la/authority.toml: `inbox`: cannot tell which filesystem /mnt/inbox is on"
        ),
        "{err}"
    );
}

/// A TLS key its group or others can read is refused at load, naming the
/// file and the `chmod` to run, as ssh does.
#[test]
fn a_tls_key_others_can_read_is_refused_with_the_chmod_to_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let path = write_config(dir.path(), &pki, "");
    let key = dir.path().join("certs/authority.key");
    AuthorityConfig::load(&path).expect("a 0600 key loads");
    for mode in [0o644, 0o640, 0o660, 0o604] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let err = AuthorityConfig::load(&path)
            .expect_err("an open key is refused")
            .to_string();
        assert!(
            err.starts_with(&format!("{}: `tls.key`: ", path.display())),
            "{err}"
        );
        assert!(err.contains(&format!("(mode {mode:04o})")), "{err}");
        assert!(
            err.ends_with(&format!("chmod 600 {}", key.display())),
            "{err}"
        );
    }
}

/// Receipts work with the keys operators make with `openssl`: RSA (signed
/// with RSA-PSS) and Ed25519, as well as the dev PKI's ECDSA.
#[test]
fn receipts_sign_and_verify_with_rsa_and_ed25519_keys_made_by_openssl() {
    let dir = tempfile::tempdir().expect("dir");
    for (name, key_args) in [
        ("rsa", vec!["-newkey", "rsa:2048"]),
        ("ed25519", vec!["-newkey", "ed25519"]),
    ] {
        let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
        let mut args = vec!["req", "-x509", "-nodes", "-days", "30"];
        args.extend(key_args);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &cert,
            "-subj",
            "/CN=la-e1.test",
            "-addext",
            "subjectAltName=DNS:la-e1.test",
        ]);
        let out = std::process::Command::new("openssl")
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}); install Debian's openssl"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let identity =
            tls::Identity::load(&dir.path().join(&cert), &dir.path().join(&key)).expect("identity");
        let signer = receipt::ReceiptSigner::new(&identity).expect(name);
        let signed = signer
            .sign(mishare::wire::v1::Receipt {
                transfer_id: "transfer-0001".into(),
                sha256: vec![9; 32],
                size: 42,
                stored_as: "2012_r_transfer-0001.age".into(),
                received_unix_ms: 1,
                provider: "provider.test".into(),
                la_code: CODE.into(),
                report: "r".into(),
                period: "2012".into(),
                classification: Classification::Published as i32,
                ..Default::default()
            })
            .expect("sign");
        receipt::verify(&signed, identity.leaf()).expect(name);
        let mut tampered = signed.clone();
        tampered.received_unix_ms += 1;
        assert!(
            receipt::verify(&tampered, identity.leaf()).is_err(),
            "{name}"
        );
        if name == "rsa" {
            let scheme = receipt::scheme_name(&signed).expect("scheme");
            assert!(scheme.starts_with("RSA_PSS"), "{scheme}");
        }
    }
}
