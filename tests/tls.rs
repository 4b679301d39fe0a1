//! Mutual TLS on real sockets: a gRPC server on 127.0.0.1:0 behind
//! `tls::incoming`, a client through `tls::connect`, and a PKI made in the
//! test. Every way a peer can be wrong is refused.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mishare::certs::{DevCa, Issued, Usage, Validity};
use mishare::tls::{self, AllowList, Peer};
use mishare::wire::v1::exchange_client::ExchangeClient;
use mishare::wire::v1::exchange_server::{Exchange, ExchangeServer};
use mishare::wire::v1::{PushRequest, QueryTransferRequest, Receipt, TransferStatus};
use tonic::{Request, Response, Status, Streaming};

/// Answers `QueryTransfer` with the identity the connection proved, so the
/// test sees what a real handler would see.
struct WhoAmI;

#[tonic::async_trait]
impl Exchange for WhoAmI {
    async fn push(&self, _: Request<Streaming<PushRequest>>) -> Result<Response<Receipt>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn query_transfer(
        &self,
        request: Request<QueryTransferRequest>,
    ) -> Result<Response<TransferStatus>, Status> {
        let peer = request
            .extensions()
            .get::<Peer>()
            .ok_or_else(|| Status::permission_denied("no peer"))?;
        Ok(Response::new(TransferStatus {
            transfer_id: peer.identity.clone(),
            ..TransferStatus::default()
        }))
    }
}

struct Server {
    addr: SocketAddr,
    refused: Arc<Mutex<Vec<String>>>,
}

async fn serve(
    server_identity: tls::Identity,
    anchors: &tls::TrustAnchors,
    allow: &[&str],
) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let allow = AllowList::new(allow.iter().map(|s| s.to_string()));
    let config =
        tls::server_config(&server_identity, anchors, allow.clone()).expect("server config");
    let refused = Arc::new(Mutex::new(Vec::new()));
    let log = refused.clone();
    let incoming = tls::incoming(
        listener,
        config,
        allow,
        &Default::default(),
        move |_, why| {
            log.lock().expect("lock").push(why);
        },
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ExchangeServer::new(WhoAmI))
            .serve_with_incoming(incoming),
    );
    Server { addr, refused }
}

/// Connects and asks who we are; `Err` holds the whole error text.
async fn call(
    server: &Server,
    client: rustls::ClientConfig,
    server_name: &str,
) -> Result<String, String> {
    let endpoint = format!("https://{}", server.addr);
    let channel = tls::connect(&endpoint, server_name, Arc::new(client))
        .await
        .map_err(|e| e.to_string())?;
    let reply = ExchangeClient::new(channel)
        .query_transfer(QueryTransferRequest::default())
        .await
        .map_err(|e| format!("{e}: {}", tls::error_chain(&e)))?;
    Ok(reply.into_inner().transfer_id)
}

fn client_config(identity: &Issued, anchors: &tls::TrustAnchors) -> rustls::ClientConfig {
    (*tls::client_config(&identity.identity(), anchors).expect("client config")).clone()
}

struct Pki {
    ca: DevCa,
    server: Issued,
    provider: Issued,
}

fn pki() -> Pki {
    let ca = DevCa::new("test CA").expect("ca");
    let server = ca
        .issue("la-e1.test", Usage::Server, Validity::Current)
        .expect("server");
    let provider = ca
        .issue("provider.test", Usage::Client, Validity::Current)
        .expect("client");
    Pki {
        ca,
        server,
        provider,
    }
}

#[tokio::test]
async fn an_allowed_provider_is_served_and_identified_by_its_certificate() {
    let pki = pki();
    let server = serve(pki.server.identity(), &pki.ca.anchors(), &["provider.test"]).await;
    let who = call(
        &server,
        client_config(&pki.provider, &pki.ca.anchors()),
        "la-e1.test",
    )
    .await;
    assert_eq!(who.as_deref(), Ok("provider.test"));
    assert!(server.refused.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_client_certificate_from_an_unknown_ca_is_refused() {
    let pki = pki();
    let server = serve(pki.server.identity(), &pki.ca.anchors(), &["provider.test"]).await;
    let stranger = DevCa::new("another CA").expect("ca");
    let forged = stranger
        .issue("provider.test", Usage::Client, Validity::Current)
        .expect("client");
    let who = call(
        &server,
        client_config(&forged, &pki.ca.anchors()),
        "la-e1.test",
    )
    .await;
    assert!(who.is_err(), "{who:?}");
    let refused = server.refused.lock().expect("lock").clone();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("UnknownIssuer"), "{refused:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = pki();
    let server = serve(pki.server.identity(), &pki.ca.anchors(), &["provider.test"]).await;
    let anonymous = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(root_store(&pki.ca))
        .with_no_client_auth();
    let mut anonymous = anonymous;
    anonymous.alpn_protocols = vec![b"h2".to_vec()];
    let who = call(&server, anonymous, "la-e1.test").await;
    assert!(who.is_err(), "{who:?}");
    let refused = server.refused.lock().expect("lock").clone();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("peer sent no certificates"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_certificate_not_on_the_allow_list_is_refused() {
    let pki = pki();
    let server = serve(pki.server.identity(), &pki.ca.anchors(), &["provider.test"]).await;
    let other = pki
        .ca
        .issue("other-provider.test", Usage::Client, Validity::Current)
        .expect("client");
    let who = call(
        &server,
        client_config(&other, &pki.ca.anchors()),
        "la-e1.test",
    )
    .await;
    assert!(who.is_err(), "{who:?}");
    let refused = server.refused.lock().expect("lock").clone();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("\"other-provider.test\"") && refused[0].contains("allow-list"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_wildcard_certificate_never_matches_an_allowed_name() {
    let pki = pki();
    let server = serve(pki.server.identity(), &pki.ca.anchors(), &["provider.test"]).await;
    let wildcard = pki
        .ca
        .issue("*.test", Usage::Client, Validity::Current)
        .expect("client");
    let who = call(
        &server,
        client_config(&wildcard, &pki.ca.anchors()),
        "la-e1.test",
    )
    .await;
    assert!(who.is_err(), "{who:?}");
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let pki = pki();
    let server = serve(pki.server.identity(), &pki.ca.anchors(), &["provider.test"]).await;
    let expired = pki
        .ca
        .issue("provider.test", Usage::Client, Validity::Expired)
        .expect("client");
    let who = call(
        &server,
        client_config(&expired, &pki.ca.anchors()),
        "la-e1.test",
    )
    .await;
    assert!(who.is_err(), "{who:?}");
    let refused = server.refused.lock().expect("lock").clone();
    assert!(
        refused.iter().any(|r| r.contains("certificate expired")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_by_the_provider() {
    let pki = pki();
    let expired = pki
        .ca
        .issue("la-e1.test", Usage::Server, Validity::Expired)
        .expect("server");
    let server = serve(expired.identity(), &pki.ca.anchors(), &["provider.test"]).await;
    let who = call(
        &server,
        client_config(&pki.provider, &pki.ca.anchors()),
        "la-e1.test",
    )
    .await;
    let error = who.expect_err("expired server");
    assert!(error.contains("certificate expired"), "{error}");
}

#[tokio::test]
async fn a_server_certificate_with_the_wrong_name_is_refused_by_the_provider() {
    let pki = pki();
    let server = serve(pki.server.identity(), &pki.ca.anchors(), &["provider.test"]).await;
    let who = call(
        &server,
        client_config(&pki.provider, &pki.ca.anchors()),
        "la-e2.test",
    )
    .await;
    let error = who.expect_err("wrong name");
    assert!(error.contains("certificate not valid for name"), "{error}");
    assert!(
        error.contains("la-e2.test"),
        "names the server name it wanted: {error}"
    );
}

#[tokio::test]
async fn a_server_from_an_unknown_ca_is_refused_by_the_provider() {
    let pki = pki();
    let stranger = DevCa::new("another CA").expect("ca");
    let impostor = stranger
        .issue("la-e1.test", Usage::Server, Validity::Current)
        .expect("server");
    let server = serve(impostor.identity(), &pki.ca.anchors(), &["provider.test"]).await;
    let who = call(
        &server,
        client_config(&pki.provider, &pki.ca.anchors()),
        "la-e1.test",
    )
    .await;
    let error = who.expect_err("unknown CA");
    assert!(error.contains("UnknownIssuer"), "{error}");
}

fn root_store(ca: &DevCa) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("root");
    roots
}

/// Certificates and keys made with the `openssl` tool work on both sides:
/// EC keys in SEC1 form and RSA keys in PKCS#8, as operators make them.
#[tokio::test]
async fn certificates_made_with_openssl_work() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run openssl ({e}); install Debian's openssl package")
            });
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ca.key",
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=openssl test CA",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-out",
        "ca.pem",
    ]);
    let leaf = |name: &str, key_args: &[&str], usage: &str| {
        openssl(key_args);
        openssl(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &format!("{name}.csr"),
        ]);
        std::fs::write(
            d.join(format!("{name}.ext")),
            format!("subjectAltName=DNS:{name}\nextendedKeyUsage={usage}\nkeyUsage=critical,digitalSignature,keyEncipherment\n"),
        )
        .expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
    };
    leaf(
        "la-e1.test",
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "la-e1.test.key",
        ],
        "serverAuth",
    );
    leaf(
        "provider.test",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "provider.test.key",
        ],
        "clientAuth",
    );
    let anchors = tls::TrustAnchors::load(&d.join("ca.pem")).expect("openssl CA");
    let server_id = tls::Identity::load(&d.join("la-e1.test.pem"), &d.join("la-e1.test.key"))
        .expect("EC server identity");
    let client_id = tls::Identity::load(&d.join("provider.test.pem"), &d.join("provider.test.key"))
        .expect("RSA client identity");
    let server = serve(server_id, &anchors, &["provider.test"]).await;
    let client = (*tls::client_config(&client_id, &anchors).expect("client")).clone();
    assert_eq!(
        call(&server, client, "la-e1.test").await.as_deref(),
        Ok("provider.test")
    );
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused_at_load() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("cert.pem"), &pki.provider.cert_pem).expect("cert");
    std::fs::write(dir.path().join("key.pem"), &pki.server.key_pem).expect("key");
    let err = tls::Identity::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem"))
        .expect_err("mismatch");
    assert!(err.to_string().contains("cannot be used together"), "{err}");
    let err = tls::Identity::load(
        &dir.path().join("cert.pem"),
        &dir.path().join("missing.pem"),
    )
    .expect_err("missing");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
