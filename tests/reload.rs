//! Reloading without a restart: the endpoint's certificate, key, CRLs and
//! allow-list, and the provider daemon's certificate and LAs' recipients,
//! read again through the reload handle (in process) and on a real SIGHUP
//! (the binary), with systemd's notifications on a socket made in the test.
//! A broken file never replaces a working one.

#[path = "common/exchange.rs"]
mod exchange;
#[path = "common/net.rs"]
mod net;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mishare::authority::store::Store;
use mishare::authority::{self, AuthorityError, ServeOptions};
use mishare::certs::{DevCa, Issued, Usage, Validity};
use mishare::common::reload::{self, ReloadError, ReloadHandle};
use mishare::common::shutdown::Shutdown;
use mishare::config::AuthorityConfig;
use mishare::provider::{Daemon, DaemonOptions};
use mishare::receipt;
use mishare::tls;
use mishare::wire::v1::exchange_client::ExchangeClient;
use mishare::wire::v1::{PushRequest, QueryTransferRequest};
use net::{Net, PROVIDER_ID};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use exchange::{
    CHUNK, CODE, SERVER_NAME, age_file, chunks, commit, m, manifest, push, whole, write_private_key,
};

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    mishare::common::encoding::hex(&Sha256::digest(cert.as_ref()))
}

/// An endpoint's directory: its CA, its certificate files and its
/// `authority.toml`.
struct Site {
    dir: tempfile::TempDir,
    ca: DevCa,
    provider: Issued,
    other: Issued,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = DevCa::new("test CA").expect("ca");
        std::fs::create_dir_all(dir.path().join("certs")).expect("mkdir");
        std::fs::write(dir.path().join("certs/ca.pem"), ca.cert_pem()).expect("ca");
        let provider = ca
            .issue("provider.test", Usage::Client, Validity::Current)
            .expect("issue");
        let other = ca
            .issue("other.test", Usage::Client, Validity::Current)
            .expect("issue");
        let site = Self {
            dir,
            ca,
            provider,
            other,
        };
        site.install(&site.issue_server());
        site
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn issue_server(&self) -> Issued {
        self.ca
            .issue(SERVER_NAME, Usage::Server, Validity::Current)
            .expect("issue")
    }

    /// Puts `server`'s certificate and key where authority.toml names them.
    fn install(&self, server: &Issued) {
        std::fs::write(self.path("certs/authority.pem"), &server.cert_pem).expect("cert");
        write_private_key(&self.path("certs/authority.key"), &server.key_pem);
    }

    /// Writes authority.toml serving `providers`, with `extra` top-level
    /// keys and `tls_extra` keys under [tls].
    fn write_config(&self, listen: &str, providers: &[&str], extra: &str, tls_extra: &str) {
        let mut text = format!(
            "code = \"{CODE}\"\nlisten = \"{listen}\"\ninbox = \"var/inbox\"\n\
             data_dir = \"var/authority\"\nmax_file_bytes = 1048576\nmax_chunk_bytes = {CHUNK}\n\
             shutdown_grace_secs = 2\nsync_every_bytes = {CHUNK}\n{extra}\n\
             [tls]\ncert = \"certs/authority.pem\"\nkey = \"certs/authority.key\"\n\
             ca = \"certs/ca.pem\"\n{tls_extra}\n"
        );
        for p in providers {
            text.push_str(&format!(
                "[[provider]]\nid = \"{p}\"\nname = \"{p} Ltd\"\n\n"
            ));
        }
        std::fs::write(self.path("authority.toml"), text).expect("authority.toml");
    }

    fn config(&self) -> AuthorityConfig {
        AuthorityConfig::load(&self.path("authority.toml")).expect("config loads")
    }

    /// The endpoint's audit log, as (kind, detail) pairs.
    fn audit(&self) -> Vec<(String, serde_json::Value)> {
        let state = Store::open(&self.path("var/authority"), CODE).expect("state");
        state
            .audit_entries()
            .expect("entries")
            .into_iter()
            .map(|e| (e.kind, serde_json::from_str(&e.detail).expect("json")))
            .collect()
    }

    /// Connects as `who`; the channel and the certificate the endpoint
    /// presented.
    async fn connect(
        &self,
        addr: SocketAddr,
        who: &Issued,
    ) -> Result<(ExchangeClient<Channel>, CertificateDer<'static>), String> {
        let config = tls::client_config(&who.identity(), &self.ca.anchors()).expect("client");
        let (channel, seen) =
            tls::connect_recording(&format!("https://{addr}"), SERVER_NAME, config)
                .await
                .map_err(|e| e.to_string())?;
        let cert = seen
            .lock()
            .expect("lock")
            .clone()
            .expect("a server certificate");
        Ok((ExchangeClient::new(channel), cert))
    }
}

/// An endpoint served in this process, with its reload handle.
struct Endpoint {
    addr: SocketAddr,
    reload: ReloadHandle,
    stop: Shutdown,
    task: JoinHandle<Result<(), AuthorityError>>,
}

impl Endpoint {
    async fn start(site: &Site) -> Self {
        let config = site.config();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reload, reloads) = reload::channel();
        let stop = Shutdown::new();
        let serving = stop.clone();
        let task = tokio::spawn(async move {
            let options = ServeOptions {
                reloads: Some(reloads),
                ..ServeOptions::default()
            };
            authority::serve_with(config, listener, &serving, options).await
        });
        Self {
            addr,
            reload,
            stop,
            task,
        }
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("serve task")
            .expect("clean shutdown");
    }
}

async fn query(client: &mut ExchangeClient<Channel>, id: &str) -> Result<u64, Status> {
    client
        .query_transfer(QueryTransferRequest {
            transfer_id: id.into(),
        })
        .await
        .map(|r| r.into_inner().committed)
}

/// The endpoint's certificate is replaced and reloaded: a new connection
/// is shown the new certificate and its receipts verify against it, while
/// a push that began before the reload, on a connection that was shown the
/// old one, finishes with a receipt signed by the old key (the one its
/// provider can check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_endpoint_certificate_serves_new_connections_and_a_push_in_flight_finishes_on_the_old()
 {
    let site = Site::new();
    site.write_config("127.0.0.1:0", &["provider.test"], "", "");
    let old_der = CertificateDer::from_pem_slice(
        std::fs::read(site.path("certs/authority.pem"))
            .expect("cert")
            .as_slice(),
    )
    .expect("pem");
    let endpoint = Endpoint::start(&site).await;

    // A push begins on a connection shown the old certificate, and the
    // endpoint has written part of it.
    let (mut before, seen) = site
        .connect(endpoint.addr, &site.provider)
        .await
        .expect("connects");
    assert_eq!(seen, old_der);
    let file = age_file(6 * CHUNK);
    let all = chunks(&file, 0);
    let (tx, rx) = mpsc::channel::<PushRequest>(64);
    tx.send(m(manifest("transfer-inflight", &file, 0)))
        .await
        .expect("send");
    for c in &all[..2] {
        tx.send(c.clone()).await.expect("send");
    }
    let mut pushing = before.clone();
    let in_flight = tokio::spawn(async move {
        pushing
            .push(ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    let mut written = 0;
    for _ in 0..400 {
        written = query(&mut before, "transfer-inflight")
            .await
            .expect("query");
        if written > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(written > 0, "the endpoint has written part of the push");

    let new = site.issue_server();
    site.install(&new);
    let done = endpoint.reload.reload().await.expect("reloads");
    assert_eq!(done.changed, ["tls.cert"]);
    assert!(done.needs_restart.is_empty(), "{done:?}");

    // A new connection is shown the new certificate, and its receipts are
    // signed by the new key.
    let (mut after, seen) = site
        .connect(endpoint.addr, &site.provider)
        .await
        .expect("connects after the reload");
    assert_eq!(seen, new.cert_der);
    assert_ne!(seen, old_der);
    let fresh = push(&mut after, whole("transfer-after", &age_file(CHUNK), 0))
        .await
        .expect("a push after the reload");
    receipt::verify(&fresh, &new.cert_der).expect("signed by the new key");
    assert!(receipt::verify(&fresh, &old_der).is_err());

    // The push in flight finishes, signed by the key its provider saw.
    for c in &all[2..] {
        tx.send(c.clone()).await.expect("send");
    }
    tx.send(commit()).await.expect("send");
    drop(tx);
    let receipt = in_flight
        .await
        .expect("join")
        .expect("the push in flight is accepted");
    receipt::verify(&receipt, &old_der).expect("signed by the old key");
    assert!(receipt::verify(&receipt, &new.cert_der).is_err());

    // The reload is audited with what changed and the new certificate.
    let audit = site.audit();
    let reloaded: Vec<_> = audit
        .iter()
        .filter(|(kind, _)| kind == "config_reloaded")
        .collect();
    assert_eq!(reloaded.len(), 1, "{audit:?}");
    assert_eq!(reloaded[0].1["changed"], serde_json::json!(["tls.cert"]));
    assert_eq!(
        reloaded[0].1["sha256"]["tls.cert"],
        serde_json::json!(fingerprint(&new.cert_der))
    );
    // Each accepted file records which of the provider's certificates
    // sent it.
    assert!(audit.iter().any(|(kind, d)| kind == "transfer_accepted"
        && d["client_certificate_sha256"]
            == serde_json::json!(fingerprint(&site.provider.cert_der))));
    endpoint.shutdown().await;
}

/// A provider taken off the allow-list is refused from its next
/// connection, and at its next request on a connection it opened before;
/// the providers still listed are served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_removed_from_the_allow_list_is_refused_from_its_next_connection() {
    let site = Site::new();
    site.write_config("127.0.0.1:0", &["provider.test", "other.test"], "", "");
    let endpoint = Endpoint::start(&site).await;
    let (mut open_before, _) = site
        .connect(endpoint.addr, &site.other)
        .await
        .expect("other.test connects while listed");
    assert_eq!(
        query(&mut open_before, "transfer-0001")
            .await
            .expect("served"),
        0
    );

    site.write_config("127.0.0.1:0", &["provider.test"], "", "");
    let done = endpoint.reload.reload().await.expect("reloads");
    assert_eq!(done.changed, ["provider"]);

    // Its next connection is refused at the handshake (TLS 1.3 may tell
    // the client only at its first request).
    let refused = match site.connect(endpoint.addr, &site.other).await {
        Err(e) => e,
        Ok((mut client, _)) => query(&mut client, "transfer-0001")
            .await
            .expect_err("refused")
            .message()
            .to_string(),
    };
    assert!(!refused.is_empty());
    // On the connection it opened before, its next request is refused.
    let status = query(&mut open_before, "transfer-0001")
        .await
        .expect_err("refused on the old connection");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = push(
        &mut open_before,
        whole("transfer-0002", &age_file(CHUNK), 0),
    )
    .await
    .expect_err("a push on the old connection is refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // provider.test is served as before.
    let (mut still, _) = site
        .connect(endpoint.addr, &site.provider)
        .await
        .expect("provider.test connects");
    push(&mut still, whole("transfer-0003", &age_file(CHUNK), 0))
        .await
        .expect("provider.test pushes");

    // Put back: served again from its next connection.
    site.write_config("127.0.0.1:0", &["provider.test", "other.test"], "", "");
    assert_eq!(
        endpoint.reload.reload().await.expect("reloads").changed,
        ["provider"]
    );
    let (mut back, _) = site
        .connect(endpoint.addr, &site.other)
        .await
        .expect("other.test connects once listed again");
    assert_eq!(query(&mut back, "transfer-0001").await.expect("served"), 0);
    endpoint.shutdown().await;
}

/// Every kind of broken file is refused as a whole: the reload fails
/// naming the file and the reason, is audited, and the endpoint goes on
/// serving with the old certificate and allow-list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_is_refused_and_the_old_material_stays_in_use() {
    let site = Site::new();
    site.write_config("127.0.0.1:0", &["provider.test"], "", "");
    let serving = std::fs::read(site.path("certs/authority.pem")).expect("cert");
    let serving_der = CertificateDer::from_pem_slice(&serving).expect("pem");
    let endpoint = Endpoint::start(&site).await;
    let good_key = std::fs::read_to_string(site.path("certs/authority.key")).expect("key");
    let good_ca = site.ca.cert_pem();
    let stranger = site.issue_server();

    type Break = Box<dyn Fn(&Site)>;
    let cases: Vec<(&str, Break, &str)> = vec![
        (
            "a certificate file that is not PEM",
            Box::new(|s: &Site| {
                std::fs::write(s.path("certs/authority.pem"), "not a certificate\n").expect("w")
            }),
            "authority.pem",
        ),
        (
            "a key that does not match the certificate",
            Box::new(move |s: &Site| {
                write_private_key(&s.path("certs/authority.key"), &stranger.key_pem)
            }),
            "authority.key",
        ),
        (
            "a key others can read",
            Box::new(|s: &Site| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    s.path("certs/authority.key"),
                    std::fs::Permissions::from_mode(0o644),
                )
                .expect("chmod")
            }),
            "chmod 600",
        ),
        (
            "a CA file that is not PEM",
            Box::new(|s: &Site| std::fs::write(s.path("certs/ca.pem"), "garbage\n").expect("w")),
            "ca.pem",
        ),
        (
            "a revocation list that is not one",
            Box::new(|s: &Site| {
                std::fs::write(
                    s.path("certs/garbage.crl"),
                    "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
                )
                .expect("w");
                s.write_config(
                    "127.0.0.1:0",
                    &["provider.test"],
                    "",
                    "crls = [\"certs/garbage.crl\"]",
                );
            }),
            "garbage.crl",
        ),
        (
            "a revocation list that is missing",
            Box::new(|s: &Site| {
                s.write_config(
                    "127.0.0.1:0",
                    &["provider.test"],
                    "",
                    "crls = [\"certs/missing.crl\"]",
                )
            }),
            "missing.crl",
        ),
        (
            "authority.toml that is not TOML",
            Box::new(|s: &Site| {
                std::fs::write(s.path("authority.toml"), "code = \"E09000002\n[[provider\n")
                    .expect("w")
            }),
            "authority.toml: line",
        ),
        (
            "an allow-list with nobody on it",
            Box::new(|s: &Site| s.write_config("127.0.0.1:0", &[], "", "")),
            "lists no provider",
        ),
        (
            "an allow-list entry that is not a DNS name",
            Box::new(|s: &Site| s.write_config("127.0.0.1:0", &["*.test"], "", "")),
            "provider[1].id",
        ),
    ];
    let mut refusals = 0;
    for (what, break_it, named) in &cases {
        break_it(&site);
        let err = endpoint
            .reload
            .reload()
            .await
            .expect_err(&format!("{what}: refused"));
        refusals += 1;
        let text = err.to_string();
        assert!(
            matches!(err, ReloadError::Config(_) | ReloadError::Tls(_)),
            "{what}: {err:?}"
        );
        assert!(text.contains(named), "{what}: names {named}: {text}");
        assert!(
            text.contains("stays in use"),
            "{what}: says the old configuration stays: {text}"
        );

        // Still serving, with the old certificate, to the old list.
        let (mut client, seen) = site
            .connect(endpoint.addr, &site.provider)
            .await
            .unwrap_or_else(|e| panic!("{what}: still serving: {e}"));
        assert_eq!(seen, serving_der, "{what}");
        assert_eq!(
            query(&mut client, "transfer-0001").await.expect("served"),
            0,
            "{what}"
        );

        // Put right again.
        std::fs::write(site.path("certs/authority.pem"), &serving).expect("cert");
        write_private_key(&site.path("certs/authority.key"), &good_key);
        std::fs::write(site.path("certs/ca.pem"), good_ca).expect("ca");
        site.write_config("127.0.0.1:0", &["provider.test"], "", "");
    }
    // Each refusal is audited, naming the reason.
    let audit = site.audit();
    let refused: Vec<_> = audit
        .iter()
        .filter(|(kind, _)| kind == "config_reload_refused")
        .collect();
    assert_eq!(refused.len(), refusals, "{audit:?}");
    assert!(
        refused[0].1["error"]
            .as_str()
            .is_some_and(|e| e.contains("authority.pem")),
        "{refused:?}"
    );
    // With the files put right, a reload finds nothing changed.
    let done = endpoint.reload.reload().await.expect("reloads");
    assert!(done.changed.is_empty(), "{done:?}");
    endpoint.shutdown().await;
}

/// A change to a key that needs a restart is reported, and the running
/// value stays; the reloadable parts are still taken in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_needs_a_restart_is_reported_and_the_running_value_stays() {
    let site = Site::new();
    site.write_config("127.0.0.1:0", &["provider.test"], "", "");
    let endpoint = Endpoint::start(&site).await;
    site.write_config(
        "127.0.0.1:1",
        &["provider.test", "other.test"],
        "partial_ttl_secs = 60\n[metrics]\nlisten = \"127.0.0.1:9464\"\n",
        "",
    );
    let done = endpoint.reload.reload().await.expect("reloads");
    assert_eq!(done.changed, ["provider"]);
    assert_eq!(
        done.needs_restart,
        ["listen", "partial_ttl_secs", "metrics.listen"]
    );
    // Still on the address it was bound to, and other.test is served.
    let (mut client, _) = site
        .connect(endpoint.addr, &site.other)
        .await
        .expect("other.test connects");
    assert_eq!(
        query(&mut client, "transfer-0001").await.expect("served"),
        0
    );
    endpoint.shutdown().await;
}

/// What a notify socket received, one datagram at a time.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        Self { socket, path }
    }

    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Starts `mishare ARGS` in `dir`, told to notify this socket and to
    /// keep a 200 ms watchdog fed.
    fn spawn(&self, dir: &Path, args: &[&str]) -> KillOnDrop {
        self.spawn_with_stderr(dir, args, Stdio::null())
    }

    /// [`NotifySocket::spawn`], its standard error (the log) to `stderr`.
    fn spawn_with_stderr(&self, dir: &Path, args: &[&str], stderr: Stdio) -> KillOnDrop {
        KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_mishare"))
                .args(args)
                .current_dir(dir)
                .env_remove("MISHARE_LOG")
                .env("NOTIFY_SOCKET", &self.path)
                .env("WATCHDOG_USEC", "200000")
                .env_remove("WATCHDOG_PID")
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("mishare starts"),
        )
    }

    /// The next notification other than a watchdog ping.
    fn next_not_watchdog(&self) -> String {
        loop {
            let got = self.next();
            if got != "WATCHDOG=1\n" {
                return got;
            }
        }
    }
}

/// A child process killed if the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &KillOnDrop, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -{name}");
}

/// `mishare authority run` under a notify socket: READY=1 only once the
/// listener accepts connections, the watchdog fed, a real SIGHUP answered
/// with RELOADING=1 and READY=1 and the new certificate served from then
/// on, and SIGTERM with STOPPING=1 and a clean exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_binary_reloads_on_sighup_and_tells_systemd() {
    let site = Site::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    site.write_config(&port.to_string(), &["provider.test"], "", "");
    let old_der = CertificateDer::from_pem_slice(
        std::fs::read(site.path("certs/authority.pem"))
            .expect("cert")
            .as_slice(),
    )
    .expect("pem");
    let notify = NotifySocket::bind(site.dir.path());
    let child = notify.spawn(
        site.dir.path(),
        &["authority", "run", "--config", "authority.toml"],
    );
    assert_eq!(notify.next(), "READY=1\n");
    // Ready means serving: a connection made at once is served.
    let (mut client, seen) = site
        .connect(port, &site.provider)
        .await
        .expect("connects right after READY=1");
    assert_eq!(seen, old_der);
    assert_eq!(
        query(&mut client, "transfer-0001").await.expect("served"),
        0
    );
    assert_eq!(notify.next(), "WATCHDOG=1\n");

    let new = site.issue_server();
    site.install(&new);
    signal(&child, "HUP");
    let reloading = notify.next_not_watchdog();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(notify.next_not_watchdog(), "READY=1\n");
    let (_, seen) = site
        .connect(port, &site.provider)
        .await
        .expect("connects after the reload");
    assert_eq!(seen, new.cert_der, "the new certificate from READY=1 on");

    // A broken file on SIGHUP: refused, and the new certificate stays.
    std::fs::write(site.path("certs/authority.pem"), "broken\n").expect("w");
    signal(&child, "HUP");
    assert!(notify.next_not_watchdog().starts_with("RELOADING=1\n"));
    assert_eq!(notify.next_not_watchdog(), "READY=1\n");
    let (_, seen) = site
        .connect(port, &site.provider)
        .await
        .expect("still serving after a broken reload");
    assert_eq!(seen, new.cert_der);

    signal(&child, "TERM");
    assert_eq!(notify.next_not_watchdog(), "STOPPING=1\n");
    let mut child = child;
    let status = child.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{status:?}");
    let audit = site.audit();
    assert!(
        audit.iter().any(|(kind, d)| kind == "config_reloaded"
            && d["changed"] == serde_json::json!(["tls.cert"])),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|(kind, d)| kind == "config_reload_refused"
            && d["error"]
                .as_str()
                .is_some_and(|e| e.contains("authority.pem"))),
        "{audit:?}"
    );
}

async fn daemon(net: &Net) -> Daemon {
    Daemon::open(
        Arc::new(net.config()),
        DaemonOptions::default(),
        &Shutdown::new(),
    )
    .await
    .expect("daemon opens")
}

/// The endpoint's audit entries of accepted files: the SHA-256 of the
/// client certificate each came with.
fn accepted_with(net: &Net, code: &str) -> Vec<String> {
    let dir = net.path(&format!("la-{}", code.to_ascii_lowercase()));
    Store::open(&dir.join("state"), code)
        .expect("state")
        .audit_entries()
        .expect("entries")
        .into_iter()
        .filter(|e| e.kind == "transfer_accepted")
        .map(|e| {
            let d: serde_json::Value = serde_json::from_str(&e.detail).expect("json");
            d["client_certificate_sha256"]
                .as_str()
                .expect("a client certificate")
                .to_string()
        })
        .collect()
}

/// The provider's certificate is replaced and the daemon reloaded: its next
/// push comes with the new certificate, as the endpoint records it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_provider_certificate_is_the_one_the_daemons_next_push_presents() {
    let net = Net::start(&[CODE]).await;
    net.add_agreement(CODE);
    let old = std::fs::read(net.path("certs/provider.pem")).expect("cert");
    let old_der = CertificateDer::from_pem_slice(&old).expect("pem");
    let mut d = daemon(&net).await;
    net.run_scheduled_now(&d).await;

    let new = net
        .ca
        .issue(PROVIDER_ID, Usage::ClientAndServer, Validity::Current)
        .expect("issue");
    std::fs::write(net.path("certs/provider.pem"), &new.cert_pem).expect("cert");
    write_private_key(&net.path("certs/provider.key"), &new.key_pem);
    let done = d.reload().await.expect("reloads");
    assert_eq!(done.changed, ["tls.cert"]);

    d.deliver_due(Utc::now()).await.expect("deliver");
    d.settle().await.expect("settle");
    assert_eq!(net.inbox(CODE).len(), 1, "delivered");
    assert_eq!(accepted_with(&net, CODE), [fingerprint(&new.cert_der)]);
    assert_ne!(fingerprint(&new.cert_der), fingerprint(&old_der));

    // A CA file replaced under the same path (a second anchor added) is a
    // change, though the path is the same: what was loaded is compared,
    // not the file as it is now.
    let ca = std::fs::read_to_string(net.path("certs/ca.pem")).expect("ca");
    let bundle = format!("{ca}{}", DevCa::new("next CA").expect("ca").cert_pem());
    std::fs::write(net.path("certs/ca.pem"), &bundle).expect("ca");
    let done = d.reload().await.expect("reloads");
    assert_eq!(done.changed, ["tls.ca"]);
    let done = d.reload().await.expect("reloads");
    assert!(done.changed.is_empty(), "{done:?}");

    // The reloads are in the provider's audit log.
    let entries = net.store().audit_entries(None).expect("audit");
    let reloaded: Vec<serde_json::Value> = entries
        .iter()
        .filter(|e| e.kind == "config_reloaded")
        .map(|e| serde_json::from_str(&e.detail).expect("json"))
        .collect();
    assert_eq!(reloaded.len(), 3);
    assert_eq!(reloaded[0]["changed"], serde_json::json!(["tls.cert"]));
    assert_eq!(
        reloaded[0]["sha256"]["tls.cert"],
        serde_json::json!(fingerprint(&new.cert_der))
    );
    assert_eq!(reloaded[1]["changed"], serde_json::json!(["tls.ca"]));
    assert_eq!(
        reloaded[1]["sha256"]["tls.ca"],
        serde_json::json!(mishare::common::encoding::hex(&Sha256::digest(
            bundle.as_bytes()
        )))
    );
}

/// The `Directive` listener presents the provider's certificate as last
/// reloaded: a DWP connection made after the reload is shown the new one,
/// while one made before keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_provider_certificate_is_the_one_the_directive_listener_presents_next() {
    let mut net = Net::start(&[CODE]).await;
    let listener = net.directive_listener().await;
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    // DWP's CA in a file of its own, so a change to it is the Directive
    // listener's alone.
    std::fs::copy(net.path("certs/ca.pem"), net.path("certs/dwp-ca.pem")).expect("copy");
    net.edit_config(
        "ca = \"certs/ca.pem\"\nregulators",
        "ca = \"certs/dwp-ca.pem\"\nregulators",
    );
    let old = std::fs::read(net.path("certs/provider.pem")).expect("cert");
    let old_der = CertificateDer::from_pem_slice(&old).expect("pem");
    let stop = Shutdown::new();
    let d = Daemon::open(Arc::new(net.config()), DaemonOptions::default(), &stop)
        .await
        .expect("daemon opens");
    let reload = d.reload_handle();
    let running = tokio::spawn(d.run());

    let dwp = || {
        let identity = tls::Identity::load(&net.path("certs/dwp.pem"), &net.path("certs/dwp.key"))
            .expect("identity");
        let anchors = tls::TrustAnchors::load(&net.path("certs/ca.pem")).expect("anchors");
        tls::client_config(&identity, &anchors).expect("client config")
    };
    let connect = |config: Arc<rustls::ClientConfig>| async move {
        let mut last = String::new();
        // The daemon binds its listener as it starts running.
        for _ in 0..100 {
            match tls::connect_recording(&format!("https://{addr}"), PROVIDER_ID, config.clone())
                .await
            {
                Ok((channel, seen)) => {
                    let cert = seen.lock().expect("lock").clone().expect("a certificate");
                    return (channel, cert);
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Directive listener never answered: {last}");
    };
    let (before, seen) = connect(dwp()).await;
    assert_eq!(seen, old_der);

    let new = net
        .ca
        .issue(PROVIDER_ID, Usage::ClientAndServer, Validity::Current)
        .expect("issue");
    std::fs::write(net.path("certs/provider.pem"), &new.cert_pem).expect("cert");
    write_private_key(&net.path("certs/provider.key"), &new.key_pem);
    let done = reload.reload().await.expect("reloads");
    assert_eq!(done.changed, ["tls.cert"]);
    assert!(done.needs_restart.is_empty(), "{done:?}");

    let (_after, seen) = connect(dwp()).await;
    assert_eq!(
        seen, new.cert_der,
        "a new connection is shown the new certificate"
    );
    assert_ne!(fingerprint(&new.cert_der), fingerprint(&old_der));
    // The connection made before the reload still serves.
    let mut health = tonic_health::pb::health_client::HealthClient::new(before);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("the older connection is still served");
    assert_eq!(
        answer.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // DWP's CA file replaced under the same path (a second anchor added):
    // reloaded, reported and audited as a change of its own, and DWP
    // still connects.
    let ca = std::fs::read_to_string(net.path("certs/dwp-ca.pem")).expect("ca");
    let bundle = format!("{ca}{}", DevCa::new("next DWP CA").expect("ca").cert_pem());
    std::fs::write(net.path("certs/dwp-ca.pem"), &bundle).expect("ca");
    let done = reload.reload().await.expect("reloads");
    assert_eq!(done.changed, ["directive.ca"]);
    assert!(done.needs_restart.is_empty(), "{done:?}");
    let (_again, seen) = connect(dwp()).await;
    assert_eq!(seen, new.cert_der);
    let entries = net.store().audit_entries(None).expect("audit");
    let last = entries
        .iter()
        .rfind(|e| e.kind == "config_reloaded")
        .expect("audited");
    let detail: serde_json::Value = serde_json::from_str(&last.detail).expect("json");
    assert_eq!(detail["changed"], serde_json::json!(["directive.ca"]));
    assert_eq!(
        detail["sha256"]["directive.ca"],
        serde_json::json!(mishare::common::encoding::hex(&Sha256::digest(
            bundle.as_bytes()
        )))
    );

    // A [directive] that waits for a restart keeps the anchors it has: the
    // CA file put back is no change it took in.
    std::fs::write(net.path("certs/dwp-ca.pem"), &ca).expect("ca");
    net.edit_config(&format!("listen = \"{addr}\""), "listen = \"127.0.0.1:1\"");
    // So does a metrics address, which is bound once, at start.
    net.append_config("[metrics]\nlisten = \"127.0.0.1:9464\"\n");
    let done = reload.reload().await.expect("reloads");
    assert_eq!(done.needs_restart, ["directive", "metrics.listen"]);
    assert!(done.changed.is_empty(), "{done:?}");

    stop.cancel();
    running
        .await
        .expect("the daemon task")
        .expect("the daemon stops cleanly");
}

/// A new recipient for an LA, reloaded, is what the next run seals to; a
/// broken one is refused and the run seals to the recipient in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_recipients_seal_the_next_run_and_a_bad_one_is_refused() {
    let net = Net::start(&[CODE]).await;
    net.add_agreement(CODE);
    let mut d = daemon(&net).await;
    let old_recipient = net.la(CODE).recipient.clone();

    // A bad recipient: refused, naming provider.toml and the key.
    net.edit_config(&old_recipient, "age1notarecipient");
    let err = d.reload().await.expect_err("a bad recipient is refused");
    let text = err.to_string();
    assert!(text.contains("provider.toml"), "{text}");
    assert!(text.contains("recipients"), "{text}");
    assert!(text.contains("stays in use"), "{text}");

    // A good new one.
    let new_key = net.path("keys/new.key");
    let new_recipient = mishare::seal::generate(&new_key).expect("age key");
    net.edit_config("age1notarecipient", &new_recipient);
    let done = d.reload().await.expect("reloads");
    assert_eq!(done.changed, [format!("authority.{CODE}.recipients")]);

    net.run_scheduled_now(&d).await;
    d.deliver_due(Utc::now()).await.expect("deliver");
    d.settle().await.expect("settle");
    let files = net.inbox(CODE);
    assert_eq!(files.len(), 1, "{files:?}");
    let open = |key: &Path| {
        use std::io::Read;
        let identities = mishare::seal::Identities::load(key).expect("identity");
        let mut opened =
            mishare::seal::open(std::fs::File::open(&files[0]).expect("open"), &identities)
                .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        opened.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok::<_, String>(out)
    };
    assert!(open(&new_key).is_ok(), "sealed to the new recipient");
    assert!(
        open(&net.la(CODE).identity_file).is_err(),
        "not to the old one"
    );
}

/// Lines of a child's standard error, read as they come.
struct Log(std::sync::mpsc::Receiver<String>);

impl Log {
    fn of(child: &mut KillOnDrop) -> Self {
        use std::io::BufRead;
        let stderr = child.0.stderr.take().expect("stderr piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self(rx)
    }

    /// Reads until a line contains `text`; panics after a minute.
    fn wait_for(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {text:?} in the log: {e}"),
            }
        }
    }
}

/// Writes a provider certificate for `PROVIDER_ID` that ends in `days`,
/// with its key; returns when it ends as the log writes it.
fn provider_certificate_ending_in(net: &Net, days: u32) -> String {
    let issued = net
        .ca
        .issue(
            PROVIDER_ID,
            Usage::ClientAndServer,
            Validity::ExpiresInDays(days),
        )
        .expect("issue");
    std::fs::write(net.path("certs/provider.pem"), &issued.cert_pem).expect("cert");
    write_private_key(&net.path("certs/provider.key"), &issued.key_pem);
    let ends = mishare::common::expiry::certificate_not_after(&issued.cert_der).expect("ends");
    mishare::common::time::timestamp(ends)
}

/// `mishare provider run` under a notify socket: READY=1 once the
/// Directive listener accepts connections, a real SIGHUP answered with
/// RELOADING=1 and READY=1, and SIGTERM with STOPPING=1. Its expiry
/// warnings describe its own certificate as last reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_provider_binary_tells_systemd_when_ready_reloading_and_stopping() {
    let mut net = Net::start(&[CODE]).await;
    let directive = net.directive_listener().await;
    let addr = directive.local_addr().expect("addr");
    drop(directive);
    let first_ends = provider_certificate_ending_in(&net, 20);
    let notify = NotifySocket::bind(net.dir.path());
    let mut child = notify.spawn_with_stderr(net.dir.path(), &["provider", "run"], Stdio::piped());
    let log = Log::of(&mut child);
    assert_eq!(notify.next(), "READY=1\n");
    tokio::net::TcpStream::connect(addr)
        .await
        .expect("the Directive listener accepts right after READY=1");
    assert_eq!(notify.next(), "WATCHDOG=1\n");
    log.wait_for(&format!(
        "the provider certificate of {PROVIDER_ID} expires within 30 days (not after {first_ends})"
    ));

    // Renewed, by a certificate that ends sooner (more urgent, so warned
    // of at once): the warning is about the certificate now in use.
    let renewed_ends = provider_certificate_ending_in(&net, 3);
    signal(&child, "HUP");
    assert!(
        notify
            .next_not_watchdog()
            .starts_with("RELOADING=1\nMONOTONIC_USEC=")
    );
    assert_eq!(notify.next_not_watchdog(), "READY=1\n");
    log.wait_for(&format!(
        "the provider certificate of {PROVIDER_ID} expires within 7 days (not after {renewed_ends})"
    ));

    signal(&child, "TERM");
    assert_eq!(notify.next_not_watchdog(), "STOPPING=1\n");
    let status = child.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{status:?}");
    let entries = net.store().audit_entries(None).expect("audit");
    assert!(entries.iter().any(|e| e.kind == "config_reloaded"));
}
