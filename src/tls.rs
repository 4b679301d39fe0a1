//! Mutual TLS: TLS 1.3 only, client certificates mandatory both ways.
//!
//! A peer is identified by the DNS name in its certificate's subject
//! alternative name, checked against an allow-list during the handshake: a
//! client whose certificate chains to the CA but names no allowed identity
//! never gets a connection, let alone a request. The server side hands
//! tonic a stream of finished connections ([`incoming`]) that carry the
//! peer's identity ([`Peer`]), so handlers read who is calling from the
//! request's extensions, never from anything the peer sent.
//!
//! Keys and certificates are PEM files: the development PKI from
//! `mishare certs dev` and ones made with the `openssl` tool both work
//! (PKCS#8, SEC1 and PKCS#1 keys; ECDSA, Ed25519 and RSA).
//!
//! Trust anchors may carry certificate revocation lists ([`load_crls`]):
//! then every certificate in a peer's chain must be covered by one of them
//! and not revoked, or the handshake is refused.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::common::shutdown::Shutdown;

/// How long a peer has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes may be in progress at once, from all sources. A
/// connection beyond it is closed at once; the accept loop never waits.
pub const MAX_HANDSHAKES: usize = 256;

/// How many handshakes may be in progress at once from one [`Source`]: a
/// few idle connections from one place cannot use up [`MAX_HANDSHAKES`]. A
/// provider opens one connection per push at a time (16 pushes at most by
/// default), so this leaves room for a busy one.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 16;

/// Why TLS could not be set up, or a peer was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The certificate chain and key do not make a usable identity.
    #[error("the certificate {cert} and key {key} cannot be used together: {reason}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// A certificate could not be parsed.
    #[error("cannot read a certificate: {0}")]
    Certificate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// An endpoint address is not `https://HOST:PORT`.
    #[error("endpoint {0:?} is not https://HOST:PORT")]
    Endpoint(String),
    /// A certificate revocation list could not be read or used.
    #[error("certificate revocation list {path}: {reason}")]
    Crl { path: PathBuf, reason: String },
    /// A private key file its group or others can open: refused, as ssh
    /// refuses such a key, before it is read.
    #[error(
        "the private key {path} is open to its group or others (mode {mode:04o}); a TLS key \
         must be readable by its owner alone: chmod 600 {path}"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    /// The connection to a peer failed.
    #[error("cannot connect to {endpoint} as {server_name}: {reason}")]
    Connect {
        endpoint: String,
        server_name: String,
        reason: String,
    },
}

/// This side's certificate chain and private key.
#[derive(Clone)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Identity")
            .field("names", &self.names().unwrap_or_default())
            .finish_non_exhaustive()
    }
}

/// Two identities are the same if their chains are: a chain's leaf was
/// matched to its key when it was loaded.
impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain
    }
}

impl Eq for Identity {}

impl Identity {
    /// Loads a PEM certificate chain (leaf first) and its PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = load_certs(cert, "certificate chain")?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
            what: "private key",
            path: key.to_path_buf(),
            reason: pem_reason(&e),
        })?;
        let identity = Self {
            chain,
            key: Arc::new(key_der),
        };
        // Fail at start, not at the first handshake, if key and leaf differ.
        let signing = provider()
            .key_provider
            .load_private_key(identity.key.clone_key())
            .map_err(|e| TlsError::Identity {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                reason: e.to_string(),
            })?;
        rustls::sign::CertifiedKey::new(identity.chain.clone(), signing)
            .keys_match()
            .map_err(|e| TlsError::Identity {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(identity)
    }

    /// Builds an identity from DER already in memory (tests, `certs dev`).
    pub fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        Self {
            chain,
            key: Arc::new(key),
        }
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The DNS names in the leaf certificate.
    pub fn names(&self) -> Result<Vec<String>, TlsError> {
        dns_names(self.leaf())
    }

    /// The private key, for signing receipts with the TLS identity.
    pub fn signing_key(&self) -> Result<Arc<dyn rustls::sign::SigningKey>, TlsError> {
        Ok(provider()
            .key_provider
            .load_private_key(self.key.clone_key())?)
    }
}

/// Refuses a private key file that anyone but its owner may read, write or
/// run (mode bits `0o077`, the test ssh makes), before it is read. A key
/// that cannot be found is left for [`Identity::load`] to report.
pub fn check_key_permissions(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Trust anchors: the CA certificates a peer's chain must lead to, and the
/// revocation lists its certificates are checked against (none: no
/// revocation checking).
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    roots: Arc<RootCertStore>,
    crls: Arc<Vec<CertificateRevocationListDer<'static>>>,
}

impl TrustAnchors {
    /// These anchors, checking peers' certificates against `crls` too.
    pub fn with_crls(mut self, crls: Vec<CertificateRevocationListDer<'static>>) -> Self {
        let mut all = (*self.crls).clone();
        all.extend(crls);
        self.crls = Arc::new(all);
        self
    }

    /// Loads every certificate in a PEM file as a trust anchor.
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        let certs = load_certs(path, "CA certificates")?;
        Self::from_der(certs).map_err(|reason| TlsError::Pem {
            what: "CA certificates",
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Trust anchors from DER certificates.
    pub fn from_der(certs: Vec<CertificateDer<'static>>) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| e.to_string())?;
        }
        Ok(Self {
            roots: Arc::new(roots),
            crls: Arc::default(),
        })
    }
}

/// Loads the certificate revocation lists in a PEM file (`-----BEGIN X509
/// CRL-----`, as `openssl ca -gencrl` writes them), checking that each is
/// one rustls can use and that it is not out of date at `now` (its
/// nextUpdate has not passed). The file is read at start and on each reload
/// (SIGHUP): replace it and reload before its nextUpdate.
pub fn load_crls(
    path: &Path,
    now: UnixTime,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crl_error = |reason: String| TlsError::Crl {
        path: path.to_path_buf(),
        reason,
    };
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| crl_error(pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crl_error(pem_reason(&e)))?;
    if crls.is_empty() {
        return Err(crl_error(
            "holds no PEM certificate revocation list (-----BEGIN X509 CRL-----)".into(),
        ));
    }
    for (i, crl) in crls.iter().enumerate() {
        let which = if crls.len() == 1 {
            String::new()
        } else {
            format!("list {} of {}: ", i + 1, crls.len())
        };
        webpki::OwnedCertRevocationList::from_der(crl.as_ref())
            .map_err(|e| crl_error(format!("{which}not a usable revocation list ({e:?})")))?;
        let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref())
            .map_err(|e| crl_error(format!("{which}not a revocation list ({e})")))?;
        if let Some(next) = parsed.next_update() {
            let next_secs = next.timestamp();
            if u64::try_from(next_secs).map_or(true, |n| n <= now.as_secs()) {
                return Err(crl_error(format!(
                    "{which}is out of date: its issuer {} promised the next one by {next} \
                     (nextUpdate); fetch a current list from the CA",
                    parsed.issuer()
                )));
            }
        }
    }
    Ok(crls)
}

fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(pem_error("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => {
            "holds no PEM item of the expected kind".into()
        }
        other => format!("not valid PEM ({other:?})"),
    }
}

/// The crypto this crate uses everywhere: rustls with *ring*.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The exact DNS subject alternative names in a certificate. Wildcards are
/// returned as written; [`AllowList`] never matches them.
pub fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// The identities a server accepts, by exact DNS name.
#[derive(Debug, Clone)]
pub struct AllowList(Arc<Vec<String>>);

impl AllowList {
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self(Arc::new(
            names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
        ))
    }

    /// Whether it allows nobody.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The one allowed identity a certificate names, if exactly one.
    pub fn identify(&self, cert: &CertificateDer<'_>) -> Option<String> {
        let names = dns_names(cert).ok()?;
        let mut allowed = names
            .into_iter()
            .filter(|n| !n.contains('*') && self.0.contains(n));
        let first = allowed.next()?;
        // A certificate naming two allowed identities is ambiguous.
        allowed.next().is_none().then_some(first)
    }
}

/// The peer of an accepted connection, as its certificate proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The allow-listed DNS name in the peer's certificate.
    pub identity: String,
    /// Where it connected from (for logs only).
    pub addr: Option<SocketAddr>,
    /// The SHA-256 of the peer's leaf certificate (DER), lower-case hex:
    /// which of the peer's certificates it used, across its renewals.
    pub certificate_sha256: String,
    /// The identity this side presented on the connection, when the
    /// listener knows it ([`ServerTls::new`]): what this side signs for the
    /// peer must match the certificate the peer verified, even after a
    /// reload has replaced it for new connections.
    pub presented: Option<Arc<Identity>>,
}

/// What a TLS listener uses for each handshake: its configuration (our
/// certificate and key, the trust anchors and revocation lists for clients)
/// and the allow-list of identities. Built whole, checked whole, and
/// replaced whole on a reload ([`SharedServerTls`]); a connection keeps the
/// one it was accepted with.
#[derive(Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    allow: AllowList,
    identity: Option<Arc<Identity>>,
}

impl ServerTls {
    /// A listener's TLS from its identity, the anchors for clients and the
    /// allow-list. An empty allow-list is refused: it would make a listener
    /// that can serve nobody, and is always a mistake in a file.
    pub fn new(
        identity: Arc<Identity>,
        clients: &TrustAnchors,
        allow: AllowList,
    ) -> Result<Self, TlsError> {
        if allow.is_empty() {
            return Err(TlsError::Config(rustls::Error::General(
                "the allow-list of client identities is empty".into(),
            )));
        }
        let config = server_config(&identity, clients, allow.clone())?;
        Ok(Self {
            config,
            allow,
            identity: Some(identity),
        })
    }

    /// The identity this listener presents.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.identity.as_ref()
    }
}

/// The [`ServerTls`] a listener uses now, read once per connection and
/// replaced atomically by [`SharedServerTls::replace`]: connections
/// accepted before keep the one they were accepted with, and there is no
/// moment at which a listener has none (or half of one).
#[derive(Debug, Clone)]
pub struct SharedServerTls(Arc<arc_swap::ArcSwap<ServerTls>>);

impl SharedServerTls {
    pub fn new(tls: ServerTls) -> Self {
        Self(Arc::new(arc_swap::ArcSwap::from_pointee(tls)))
    }

    /// The one in use now.
    pub fn current(&self) -> Arc<ServerTls> {
        self.0.load_full()
    }

    /// Uses `tls` for every connection from now on.
    pub fn replace(&self, tls: ServerTls) {
        self.0.store(Arc::new(tls));
    }
}

/// The SHA-256 of a certificate's DER, lower-case hex.
pub fn certificate_sha256(cert: &CertificateDer<'_>) -> String {
    use sha2::Digest;
    crate::common::encoding::hex(&sha2::Sha256::digest(cert.as_ref()))
}

/// A client certificate that chains to the CA but names no allowed identity
/// (or two of them). rustls prints it with `Debug`, so that says it in words.
struct NotAllowed(Vec<String>);

impl fmt::Debug for NotAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the certificate names {:?}: not exactly one identity on the allow-list",
            self.0
        )
    }
}

impl std::error::Error for NotAllowed {}

/// Verifies a client's chain with webpki, then requires an allow-listed name.
#[derive(Debug)]
struct AllowListVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allow: AllowList,
}

impl ClientCertVerifier for AllowListVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.allow.identify(end_entity).is_none() {
            let names = dns_names(end_entity).unwrap_or_default();
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(NotAllowed(names)))),
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// A TLS 1.3 server configuration that demands a client certificate chaining
/// to `clients` and naming an identity on `allow`.
pub fn server_config(
    identity: &Identity,
    clients: &TrustAnchors,
    allow: AllowList,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    // With revocation lists, rustls' defaults: every certificate in the
    // chain is checked, and one no list covers is refused (fail closed).
    let inner =
        WebPkiClientVerifier::builder_with_provider(clients.roots.clone(), provider.clone())
            .with_crls(clients.crls.iter().cloned())
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    let verifier = Arc::new(AllowListVerifier { inner, allow });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS 1.3 client configuration presenting `identity` and trusting only
/// servers whose chain leads to `servers`.
pub fn client_config(
    identity: &Identity,
    servers: &TrustAnchors,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    // As for clients: with revocation lists, the whole chain is checked and
    // a certificate no list covers is refused.
    let verifier =
        WebPkiServerVerifier::builder_with_provider(servers.roots.clone(), provider.clone())
            .with_crls(servers.crls.iter().cloned())
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// An accepted, authenticated connection.
#[derive(Debug)]
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: Peer,
}

impl TlsConnection {
    /// The peer's leaf certificate, as the handshake verified it.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.stream.get_ref().1.peer_certificates()?.first()
    }

    /// The peer, as its certificate proved it.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Where a connection comes from, as far as limits and refusal counts are
/// concerned: an IPv4 address, or the /64 network of an IPv6 address (one
/// host commonly holds a whole /64, so counting its addresses apart would
/// count nothing). An IPv4 address mapped into IPv6 is the IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The source an address belongs to.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let network = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(Ipv6Addr::from(network)))
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Handshakes in progress, by source, with a bound for each source and one
/// for all. Admission never waits: over a bound, the caller closes the
/// connection at once.
#[derive(Debug)]
pub struct PendingHandshakes {
    total_limit: usize,
    per_source_limit: usize,
    state: std::sync::Mutex<PendingState>,
}

#[derive(Debug, Default)]
struct PendingState {
    total: usize,
    by_source: HashMap<Source, usize>,
}

/// One admitted handshake; dropping it frees its place.
#[derive(Debug)]
pub struct HandshakeSlot {
    pending: Arc<PendingHandshakes>,
    source: Source,
}

/// Why a connection was closed before its handshake began.
pub const TOO_MANY_FROM_SOURCE: &str = "too many handshakes pending from this address";
/// Why a connection was closed before its handshake began.
pub const TOO_MANY_IN_ALL: &str = "too many handshakes pending from all addresses";

impl PendingHandshakes {
    /// At most `total` handshakes at once, and `per_source` from one source.
    pub fn new(total: usize, per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            total_limit: total,
            per_source_limit: per_source,
            state: std::sync::Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PendingState> {
        // Counts only: a panic elsewhere leaves them usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a handshake from `source`, or why there is none.
    pub fn admit(self: &Arc<Self>, source: Source) -> Result<HandshakeSlot, &'static str> {
        let mut state = self.state();
        let from_source = state.by_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.per_source_limit {
            return Err(TOO_MANY_FROM_SOURCE);
        }
        if state.total >= self.total_limit {
            return Err(TOO_MANY_IN_ALL);
        }
        state.total += 1;
        state.by_source.insert(source, from_source + 1);
        Ok(HandshakeSlot {
            pending: self.clone(),
            source,
        })
    }

    /// Handshakes in progress (from `source`, or from all).
    pub fn pending(&self, source: Option<Source>) -> usize {
        let state = self.state();
        match source {
            Some(s) => state.by_source.get(&s).copied().unwrap_or(0),
            None => state.total,
        }
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut state = self.pending.state();
        state.total = state.total.saturating_sub(1);
        if let Some(n) = state.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                state.by_source.remove(&self.source);
            }
        }
    }
}

/// Accepts TCP connections, completes the TLS handshake and yields only
/// authenticated connections.
///
/// Handshakes are bounded in time ([`HANDSHAKE_TIMEOUT`]) and in number,
/// per source ([`MAX_HANDSHAKES_PER_SOURCE`]) and in all
/// ([`MAX_HANDSHAKES`]); the accept loop never waits for a place: a
/// connection over a bound is closed at once, so idle connections from one
/// place never stop anyone else connecting. Every refusal (over a bound, a
/// failed or timed-out handshake) is told to `on_refused` with the peer's
/// address and the reason, before the connection is closed, so the caller
/// can audit it. The accept loop and each handshake are tasks of `tasks`;
/// the stream ends when it is dropped or `tasks` is cancelled.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    allow: AllowList,
    tasks: &Shutdown,
    on_refused: impl Fn(SocketAddr, String) + Send + Sync + 'static,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let tls = SharedServerTls::new(ServerTls {
        config,
        allow,
        identity: None,
    });
    incoming_reloadable(listener, tls, tasks, on_refused)
}

/// [`incoming`], taking each connection's configuration and allow-list
/// from `tls` as the connection is accepted: after a reload, new
/// connections get the new ones, and connections already accepted (and the
/// pushes on them) go on with what they were accepted with.
pub fn incoming_reloadable(
    listener: TcpListener,
    tls: SharedServerTls,
    tasks: &Shutdown,
    on_refused: impl Fn(SocketAddr, String) + Send + Sync + 'static,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = mpsc::channel(16);
    let pending = PendingHandshakes::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE);
    let on_refused = Arc::new(on_refused);
    let spawner = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
                () = spawner.cancelled() => return,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match pending.admit(Source::of(addr.ip())) {
                Ok(slot) => slot,
                Err(why) => {
                    // Per connection only at debug: a flood would flood the
                    // log too. The caller's audit counts every one.
                    tracing::debug!(peer = %addr, reason = why, "connection closed at once");
                    on_refused(addr, why.to_string());
                    drop(tcp);
                    continue;
                }
            };
            // Read once per connection: a reload from here on does not
            // change what this connection is accepted with.
            let current = tls.current();
            let (acceptor, allow, presented) = (
                TlsAcceptor::from(current.config.clone()),
                current.allow.clone(),
                current.identity.clone(),
            );
            let (tx, on_refused, stop) = (tx.clone(), on_refused.clone(), spawner.clone());
            spawner.spawn(async move {
                let _ = tcp.set_nodelay(true);
                let handshake = tokio::select! {
                    handshake = tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(tcp).into_fallible(),
                    ) => handshake,
                    // The listener is stopping: nobody was refused, and the
                    // caller's audit can finish once these tasks are gone.
                    () = stop.cancelled() => return,
                };
                drop(slot);
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err((e, tcp))) => {
                        tracing::info!(peer = %addr, error = %e, "TLS handshake refused");
                        // Told before the connection closes, so a peer that
                        // sees it closed knows the refusal was counted.
                        on_refused(addr, e.to_string());
                        drop(tcp);
                        return;
                    }
                    Err(_) => {
                        tracing::info!(peer = %addr, "TLS handshake timed out");
                        on_refused(addr, "handshake timed out".into());
                        return;
                    }
                };
                let leaf = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first());
                let identity = leaf.and_then(|leaf| Some((allow.identify(leaf)?, leaf)));
                // The verifier already required this; checked again so a
                // connection without an identity can never be served.
                let Some((identity, leaf)) = identity else {
                    on_refused(addr, "no allowed identity after handshake".into());
                    return;
                };
                let peer = Peer {
                    identity,
                    addr: Some(addr),
                    certificate_sha256: certificate_sha256(leaf),
                    presented,
                };
                let _ = tx.send(Ok(TlsConnection { stream, peer })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Splits `https://HOST:PORT` into the address to dial.
pub fn dial_address(endpoint: &str) -> Result<String, TlsError> {
    let rest = endpoint
        .strip_prefix("https://")
        .ok_or_else(|| TlsError::Endpoint(endpoint.to_string()))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let ok = !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@'])
        && rest
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(rest.to_string())
    } else {
        Err(TlsError::Endpoint(endpoint.to_string()))
    }
}

/// The leaf certificate a server presented on the latest connection of a
/// channel (a channel reconnects on its own, so it is updated each time).
pub type ServerCertificate = Arc<std::sync::Mutex<Option<CertificateDer<'static>>>>;

/// Connects to a gRPC server over mutual TLS, requiring its certificate to
/// name `server_name`. The connection is made now, so a refused handshake is
/// reported here rather than at the first request.
pub async fn connect(
    endpoint: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<tonic::transport::Channel, TlsError> {
    Ok(connect_recording(endpoint, server_name, config).await?.0)
}

/// [`connect`], also keeping the server's leaf certificate, the one just
/// verified for `server_name` (a provider checks receipts against it).
pub async fn connect_recording(
    endpoint: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<(tonic::transport::Channel, ServerCertificate), TlsError> {
    let connect_error = |reason: String| TlsError::Connect {
        endpoint: endpoint.to_string(),
        server_name: server_name.to_string(),
        reason,
    };
    let addr = dial_address(endpoint)?;
    let name =
        ServerName::try_from(server_name.to_string()).map_err(|e| connect_error(e.to_string()))?;
    let connector = TlsConnector::from(config);
    let seen: ServerCertificate = Arc::default();
    let keep = seen.clone();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| connect_error(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .initial_stream_window_size(2 << 20)
        .initial_connection_window_size(4 << 20)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let (addr, name, connector, keep) =
                (addr.clone(), name.clone(), connector.clone(), keep.clone());
            async move {
                let tcp = TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(name, tcp).await?;
                let leaf = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .cloned();
                *keep
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = leaf;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| connect_error(error_chain(&e)))?;
    Ok((channel, seen))
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(s: &str) -> Source {
        Source::of(s.parse().expect("ip"))
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_slash_64() {
        assert_eq!(source("192.0.2.7").to_string(), "192.0.2.7");
        assert_eq!(source("::ffff:192.0.2.7"), source("192.0.2.7"));
        assert_eq!(
            source("2001:db8:1:2:aaaa::1"),
            source("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
        assert_eq!(
            source("2001:db8:1:2:aaaa::1").to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn pending_handshakes_are_bounded_per_source_and_in_all() {
        let pending = PendingHandshakes::new(5, 2);
        let (a, b, c) = (
            source("192.0.2.1"),
            source("192.0.2.2"),
            source("192.0.2.3"),
        );
        let a1 = pending.admit(a).expect("a 1");
        let _a2 = pending.admit(a).expect("a 2");
        assert_eq!(pending.admit(a).expect_err("a 3"), TOO_MANY_FROM_SOURCE);
        // Another source is not held up by a's.
        let _b1 = pending.admit(b).expect("b 1");
        let _b2 = pending.admit(b).expect("b 2");
        let _c1 = pending.admit(c).expect("c 1");
        assert_eq!(pending.pending(None), 5);
        assert_eq!(pending.admit(c).expect_err("c 2"), TOO_MANY_IN_ALL);
        // A finished handshake frees its place, for its source and in all.
        drop(a1);
        assert_eq!(pending.pending(Some(a)), 1);
        let _c2 = pending.admit(c).expect("c 2 after a's ended");
        assert_eq!(pending.admit(a).expect_err("full"), TOO_MANY_IN_ALL);
    }

    #[test]
    fn dial_address_takes_only_https_host_port() {
        assert_eq!(
            dial_address("https://127.0.0.1:7443").expect("ok"),
            "127.0.0.1:7443"
        );
        assert_eq!(
            dial_address("https://la.test:443/").expect("ok"),
            "la.test:443"
        );
        for bad in [
            "http://127.0.0.1:1",
            "https://host",
            "https://h:99999",
            "https://u@h:1",
            "https://h:1/x",
        ] {
            assert!(dial_address(bad).is_err(), "{bad}");
        }
    }
}
