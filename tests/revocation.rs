//! Certificate revocation: CRLs named by `crls = [...]` under `[tls]` (both
//! sides) and `[directive]` (the provider), made the way operators make
//! them, with `openssl ca -gencrl` over a CA made with `openssl`. A revoked
//! peer is refused at the handshake, on every side; one the CRL does not
//! name is still served; a bad CRL file is a configuration error naming
//! the file.

#[path = "common/net.rs"]
mod net;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use mishare::authority::store::Store as AuthorityStore;
use mishare::common::shutdown::Shutdown;
use mishare::config::{AuthorityConfig, ProviderConfig};
use mishare::provider::directive;
use mishare::provider::store::SharedStore;
use mishare::tls;
use mishare::wire::v1::directive_client::DirectiveClient;
use mishare::wire::v1::exchange_client::ExchangeClient;
use mishare::wire::v1::{ListRequest, QueryTransferRequest};

const CODE: &str = "E09000002";
const LA_NAME: &str = "la-e09000002.test";

/// A PKI made with the `openssl` tool in a temporary directory: a CA whose
/// key can sign CRLs, good and revoked certificates for each kind of peer,
/// `empty.crl` (made before anything was revoked) and `ca.crl` (revoking
/// `provider-revoked`, `la-revoked` and `dwp-revoked`).
struct OpensslPki {
    dir: tempfile::TempDir,
}

impl OpensslPki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Self { dir };
        pki.write(
            "ca.cnf",
            "[ ca ]\ndefault_ca = test_ca\n\n[ test_ca ]\ndatabase = index.txt\n\
             crlnumber = crlnumber\ncertificate = ca.pem\nprivate_key = ca.key\n\
             default_md = sha256\ndefault_crl_days = 30\n",
        );
        pki.write("index.txt", "");
        pki.write("crlnumber", "01\n");
        pki.openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ]);
        pki.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=openssl revocation test CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.pem",
        ]);
        for (stem, name, usage) in [
            ("provider", "provider.test", "clientAuth,serverAuth"),
            ("provider-revoked", "provider.test", "clientAuth,serverAuth"),
            ("other", "other.test", "clientAuth"),
            ("la", LA_NAME, "serverAuth"),
            ("la-revoked", LA_NAME, "serverAuth"),
            ("dwp", "dwp.test", "clientAuth"),
            ("dwp-revoked", "dwp.test", "clientAuth"),
        ] {
            pki.leaf(stem, name, usage);
        }
        pki.openssl(&["ca", "-config", "ca.cnf", "-gencrl", "-out", "empty.crl"]);
        for stem in ["provider-revoked", "la-revoked", "dwp-revoked"] {
            pki.openssl(&["ca", "-config", "ca.cnf", "-revoke", &format!("{stem}.pem")]);
        }
        pki.openssl(&["ca", "-config", "ca.cnf", "-gencrl", "-out", "ca.crl"]);
        pki
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).expect("write");
    }

    fn openssl(&self, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}); install Debian's openssl"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `STEM.key` (owner-only, as openssl writes it) and `STEM.pem`, signed
    /// by the CA, naming `name`.
    fn leaf(&self, stem: &str, name: &str, usage: &str) {
        let key = format!("{stem}.key");
        self.openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ]);
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &format!("{stem}.csr"),
        ]);
        self.write(
            &format!("{stem}.ext"),
            &format!(
                "subjectAltName=DNS:{name}\nextendedKeyUsage={usage}\n\
                 keyUsage=critical,digitalSignature\n"
            ),
        );
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{stem}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &format!("{stem}.ext"),
            "-out",
            &format!("{stem}.pem"),
        ]);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(&key), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }

    fn identity(&self, stem: &str) -> tls::Identity {
        tls::Identity::load(
            &self.path(&format!("{stem}.pem")),
            &self.path(&format!("{stem}.key")),
        )
        .expect("identity")
    }

    fn anchors(&self) -> tls::TrustAnchors {
        tls::TrustAnchors::load(&self.path("ca.pem")).expect("anchors")
    }
}

/// An `authority.toml` in the PKI's directory presenting `cert`, with
/// `tls_extra` lines under `[tls]`.
fn authority_toml(pki: &OpensslPki, name: &str, cert: &str, tls_extra: &str) -> PathBuf {
    let text = format!(
        "code = \"{CODE}\"\nlisten = \"127.0.0.1:0\"\ninbox = \"{name}/inbox\"\n\
         data_dir = \"{name}/state\"\nmax_file_bytes = 1048576\nshutdown_grace_secs = 1\n\n\
         [tls]\ncert = \"{cert}.pem\"\nkey = \"{cert}.key\"\nca = \"ca.pem\"\n{tls_extra}\n\
         [[provider]]\nid = \"provider.test\"\nname = \"Example Provider Ltd\"\n\n\
         [[provider]]\nid = \"other.test\"\nname = \"Other Provider Ltd\"\n"
    );
    let path = pki.path(&format!("{name}.toml"));
    std::fs::write(&path, text).expect("authority.toml");
    path
}

/// A `provider.toml` in the PKI's directory presenting `cert`, with `tls`
/// and `directive` lines added to those sections.
fn provider_toml(pki: &OpensslPki, cert: &str, tls_extra: &str, directive: &str) -> PathBuf {
    pki.write(
        "las.csv",
        &format!("la_code,la_name,cpa\n{CODE},Barking and Dagenham,London East\n"),
    );
    let text = format!(
        "provider = \"Example Provider Ltd\"\ndata_dir = \"provider-state\"\n\
         contract_areas = [\"London East\"]\nreference = \"las.csv\"\n\n\
         [tls]\ncert = \"{cert}.pem\"\nkey = \"{cert}.key\"\nca = \"ca.pem\"\n{tls_extra}\n\
         {directive}"
    );
    let path = pki.path("provider.toml");
    std::fs::write(&path, text).expect("provider.toml");
    path
}

/// A running endpoint.
struct Endpoint {
    addr: SocketAddr,
    stop: Shutdown,
    task: tokio::task::JoinHandle<()>,
    data_dir: PathBuf,
}

async fn start_endpoint(config: AuthorityConfig) -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let data_dir = config.data_dir.clone();
    let stop = Shutdown::new();
    let serving = stop.clone();
    let task = tokio::spawn(async move {
        mishare::authority::serve(config, listener, &serving)
            .await
            .expect("the endpoint serves");
    });
    Endpoint {
        addr,
        stop,
        task,
        data_dir,
    }
}

impl Endpoint {
    async fn stop(self) -> Vec<(String, serde_json::Value)> {
        self.stop.cancel();
        self.task.await.expect("serve task");
        AuthorityStore::open(&self.data_dir, CODE)
            .expect("state")
            .audit_entries()
            .expect("audit")
            .into_iter()
            .map(|e| (e.kind, serde_json::from_str(&e.detail).expect("json")))
            .collect()
    }
}

/// Connects as `who` (trusting `anchors`) and asks about a transfer: `Ok`
/// if served, `Err` with the whole error text if refused.
async fn query_as(
    addr: SocketAddr,
    who: &tls::Identity,
    anchors: &tls::TrustAnchors,
) -> Result<(), String> {
    let config = tls::client_config(who, anchors).expect("client config");
    let channel = tls::connect(&format!("https://{addr}"), LA_NAME, config)
        .await
        .map_err(|e| e.to_string())?;
    ExchangeClient::new(channel)
        .query_transfer(QueryTransferRequest {
            transfer_id: "transfer-0001".into(),
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("{s}: {}", tls::error_chain(&s)))
}

fn refusals(audit: &[(String, serde_json::Value)]) -> Vec<String> {
    audit
        .iter()
        .filter(|(kind, _)| kind == "handshake_refused")
        .map(|(_, d)| d["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn the_endpoint_refuses_a_provider_whose_certificate_is_revoked() {
    let pki = OpensslPki::new();
    let anchors = pki.anchors();

    let crl = authority_toml(&pki, "with-crl", "la", "crls = [\"ca.crl\"]");
    let endpoint = start_endpoint(AuthorityConfig::load(&crl).expect("config with a CRL")).await;
    let refused = query_as(endpoint.addr, &pki.identity("provider-revoked"), &anchors).await;
    assert!(refused.is_err(), "a revoked provider is refused");
    query_as(endpoint.addr, &pki.identity("provider"), &anchors)
        .await
        .expect("the same identity with a certificate not revoked is served");
    query_as(endpoint.addr, &pki.identity("other"), &anchors)
        .await
        .expect("another provider is served");
    let audit = endpoint.stop().await;
    let why = refusals(&audit);
    assert!(!why.is_empty(), "{audit:?}");
    assert!(why.iter().all(|r| r.contains("Revoked")), "{why:?}");

    // The same endpoint without the CRL, or with one revoking nothing,
    // serves that certificate: the CRL is what refuses it.
    for (name, extra) in [("without", ""), ("empty", "crls = [\"empty.crl\"]")] {
        let path = authority_toml(&pki, name, "la", extra);
        let endpoint = start_endpoint(AuthorityConfig::load(&path).expect("config")).await;
        query_as(endpoint.addr, &pki.identity("provider-revoked"), &anchors)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        endpoint.stop().await;
    }
}

#[tokio::test]
async fn the_provider_refuses_an_endpoint_whose_certificate_is_revoked() {
    let pki = OpensslPki::new();
    let revoked = authority_toml(&pki, "revoked", "la-revoked", "");
    let revoked = start_endpoint(AuthorityConfig::load(&revoked).expect("config")).await;
    let good = authority_toml(&pki, "good", "la", "");
    let good = start_endpoint(AuthorityConfig::load(&good).expect("config")).await;

    let path = provider_toml(&pki, "provider", "crls = [\"ca.crl\"]", "");
    let config = ProviderConfig::load(&path).expect("provider.toml with a CRL");
    let error = query_as(revoked.addr, &config.tls.identity, &config.tls.anchors)
        .await
        .expect_err("a revoked endpoint is refused");
    assert!(error.contains("Revoked"), "{error}");
    query_as(good.addr, &config.tls.identity, &config.tls.anchors)
        .await
        .expect("an endpoint not revoked is used");

    // Without the CRL the provider would have used it.
    let path = provider_toml(&pki, "provider", "", "");
    let config = ProviderConfig::load(&path).expect("provider.toml");
    query_as(revoked.addr, &config.tls.identity, &config.tls.anchors)
        .await
        .expect("no CRL, no revocation");
    revoked.stop().await;
    good.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directive_listener_refuses_a_dwp_certificate_that_is_revoked() {
    let pki = OpensslPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let path = provider_toml(
        &pki,
        "provider",
        "",
        &format!(
            "[directive]\nlisten = \"{addr}\"\nca = \"ca.pem\"\ncrls = [\"ca.crl\"]\n\
             regulators = [\"dwp.test\"]\n"
        ),
    );
    let config = Arc::new(ProviderConfig::load(&path).expect("provider.toml"));
    let store = SharedStore::open(&config.data_dir).expect("store");
    let stop = Shutdown::new();
    let serving = stop.clone();
    let served = {
        let (config, store) = (config.clone(), store.clone());
        tokio::spawn(async move {
            directive::serve(config, store, listener, &serving)
                .await
                .expect("Directive serves");
        })
    };

    let list_as = |stem: &str| {
        let identity = pki.identity(stem);
        let anchors = pki.anchors();
        async move {
            let config = tls::client_config(&identity, &anchors).expect("client config");
            let channel = tls::connect(&format!("https://{addr}"), "provider.test", config)
                .await
                .map_err(|e| e.to_string())?;
            DirectiveClient::new(channel)
                .list(ListRequest {
                    include_lifted: true,
                })
                .await
                .map(|_| ())
                .map_err(|s| s.to_string())
        }
    };
    assert!(
        list_as("dwp-revoked").await.is_err(),
        "a revoked DWP certificate"
    );
    list_as("dwp").await.expect("a DWP certificate not revoked");
    stop.cancel();
    served.await.expect("serve task");

    let entries = store
        .run(|s| s.audit_entries(None))
        .await
        .expect("task")
        .expect("audit");
    let why: Vec<String> = entries
        .iter()
        .filter(|e| e.kind == "handshake_refused")
        .map(|e| e.detail.clone())
        .collect();
    assert!(!why.is_empty());
    assert!(why.iter().all(|d| d.contains("Revoked")), "{why:?}");
}

/// A CRL file that is missing, not a CRL, or out of date is a
/// configuration error naming the key and the file, on every side.
#[test]
fn a_bad_crl_file_is_a_configuration_error_naming_the_file() {
    let pki = OpensslPki::new();
    pki.write(
        "garbage.crl",
        "-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n",
    );
    pki.write(
        "no-crl.pem",
        &std::fs::read_to_string(pki.path("ca.pem")).expect("ca"),
    );
    // A list whose nextUpdate passed long ago, signed by the right CA.
    pki.openssl(&[
        "ca",
        "-config",
        "ca.cnf",
        "-gencrl",
        "-crl_lastupdate",
        "20200101000000Z",
        "-crl_nextupdate",
        "20200201000000Z",
        "-out",
        "stale.crl",
    ]);

    let cases: &[(&str, &str)] = &[
        ("missing.crl", "No such file"),
        ("garbage.crl", "not a usable revocation list"),
        ("no-crl.pem", "holds no PEM certificate revocation list"),
        ("stale.crl", "is out of date"),
    ];
    let check = |err: String, file: &str, want: &str, key: &str| {
        assert!(err.contains(&format!("`{key}`")), "{err}");
        assert!(
            err.contains(&pki.path(file).display().to_string()),
            "names the file: {err}"
        );
        assert!(err.contains(want), "{err}");
    };
    for (file, want) in cases {
        let crls = format!("crls = [\"ca.crl\", \"{file}\"]");
        let path = authority_toml(&pki, "bad", "la", &crls);
        let err = AuthorityConfig::load(&path).expect_err(file).to_string();
        check(err, file, want, "tls.crls");

        let path = provider_toml(&pki, "provider", &crls, "");
        let err = ProviderConfig::load(&path).expect_err(file).to_string();
        check(err, file, want, "tls.crls");

        let directive = format!(
            "[directive]\nlisten = \"127.0.0.1:7444\"\nca = \"ca.pem\"\n{crls}\n\
             regulators = [\"dwp.test\"]\n"
        );
        let path = provider_toml(&pki, "provider", "", &directive);
        let err = ProviderConfig::load(&path).expect_err(file).to_string();
        check(err, file, want, "directive.crls");
    }
}

/// A revocation list published while the endpoint runs takes effect on a
/// reload, from the revoked provider's next connection; a broken list on a
/// later reload is refused and the list in use stays, still refusing it.
#[tokio::test]
async fn a_revocation_list_reloaded_refuses_the_revoked_provider_from_its_next_connection() {
    let pki = OpensslPki::new();
    let anchors = pki.anchors();
    let path = authority_toml(&pki, "reloaded", "la", "crls = [\"empty.crl\"]");
    let config = AuthorityConfig::load(&path).expect("config");
    let data_dir = config.data_dir.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (reload, reloads) = mishare::common::reload::channel();
    let stop = Shutdown::new();
    let serving = stop.clone();
    let task = tokio::spawn(async move {
        let options = mishare::authority::ServeOptions {
            reloads: Some(reloads),
            ..Default::default()
        };
        mishare::authority::serve_with(config, listener, &serving, options)
            .await
            .expect("the endpoint serves");
    });
    let endpoint = Endpoint {
        addr,
        stop,
        task,
        data_dir,
    };
    query_as(addr, &pki.identity("provider-revoked"), &anchors)
        .await
        .expect("served while the list in use revokes nothing");

    authority_toml(&pki, "reloaded", "la", "crls = [\"ca.crl\"]");
    let done = reload.reload().await.expect("reloads");
    let ca_crl = format!("tls.crls[{}]", pki.path("ca.crl").display());
    let empty_crl = format!("tls.crls[{}]", pki.path("empty.crl").display());
    assert_eq!(done.changed, [ca_crl, empty_crl]);
    let refused = query_as(addr, &pki.identity("provider-revoked"), &anchors).await;
    assert!(refused.is_err(), "refused after the reload");
    query_as(addr, &pki.identity("provider"), &anchors)
        .await
        .expect("a certificate not revoked is served");

    pki.write(
        "broken.crl",
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    );
    authority_toml(&pki, "reloaded", "la", "crls = [\"broken.crl\"]");
    let err = reload.reload().await.expect_err("a broken list is refused");
    assert!(err.to_string().contains("broken.crl"), "{err}");
    assert!(
        query_as(addr, &pki.identity("provider-revoked"), &anchors)
            .await
            .is_err(),
        "the list in use still refuses it"
    );
    let audit = endpoint.stop().await;
    assert!(
        refusals(&audit).iter().any(|r| r.contains("Revoked")),
        "{audit:?}"
    );
}
