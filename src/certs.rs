//! A development PKI, for trying mishare out and for tests. **Never for
//! production**: one CA signs every certificate, and its key is thrown away
//! once they are made.
//!
//! `mishare certs dev --out DIR --la CODE…` writes:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem` | the CA certificate: the trust anchor on both sides |
//! | `provider.pem`, `provider.key` | the provider's certificate (DNS name `provider.test` by default), for client and server authentication: it pushes to LA endpoints and serves `Directive` |
//! | `la-<code>.pem`, `la-<code>.key` | each LA endpoint's server certificate, DNS name `la-<code>.test` |
//! | `dwp.pem`, `dwp.key` | a DWP client certificate (`dwp.test`), for the `Directive` service |
//! | `README.txt` | this warning |

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertsError {
    /// rcgen could not make a key or certificate.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The output directory already holds a PKI.
    #[error("{0} already exists; choose an empty directory (a PKI is never overwritten)")]
    Exists(PathBuf),
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS client (a provider, DWP).
    Client,
    /// A TLS server (an LA endpoint).
    Server,
    /// Both: a provider, which is a client of LA endpoints and serves DWP's
    /// `Directive` service with the same certificate.
    ClientAndServer,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From a day ago for ten years.
    Current,
    /// Expired: valid only during 2000. For negative tests.
    Expired,
    /// From a day ago until this many days from now: a certificate about
    /// to expire, for expiry warnings.
    ExpiresInDays(u32),
}

/// A certificate and its key, in PEM and DER.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

impl Issued {
    /// The private key in DER (PKCS#8).
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// The certificate and key as a TLS identity.
    pub fn identity(&self) -> crate::tls::Identity {
        crate::tls::Identity::from_der(vec![self.cert_der.clone()], self.key_der())
    }
}

/// A certificate authority that lives only in memory.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new CA with a fresh key.
    pub fn new(name: &str) -> Result<Self, CertsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name = name_of(name);
        set_validity(&mut params, Validity::Current);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA as trust anchors.
    pub fn anchors(&self) -> crate::tls::TrustAnchors {
        crate::tls::TrustAnchors::from_der(vec![self.cert_der.clone()])
            .expect("a CA certificate this module made is a valid trust anchor")
    }

    /// A certificate for `dns_name`, signed by this CA.
    pub fn issue(
        &self,
        dns_name: &str,
        usage: Usage,
        validity: Validity,
    ) -> Result<Issued, CertsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![dns_name.to_string()])?;
        params.distinguished_name = name_of(dns_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match usage {
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::ClientAndServer => vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
        };
        set_validity(&mut params, validity);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }
}

fn name_of(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(
        DnType::OrganizationName,
        "mishare development PKI (not for production)",
    );
    name
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let (from, to) = match validity {
        Validity::Current => {
            let now = time_now();
            (now - DAY, now + 3650 * DAY)
        }
        Validity::Expired => (
            rcgen::date_time_ymd(2000, 1, 1),
            rcgen::date_time_ymd(2000, 12, 31),
        ),
        Validity::ExpiresInDays(days) => {
            let now = time_now();
            (now - DAY, now + DAY * days)
        }
    };
    params.not_before = from;
    params.not_after = to;
}

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The server name an LA endpoint's development certificate carries.
pub fn la_server_name(code: &str) -> String {
    format!("la-{}.test", code.to_ascii_lowercase())
}

/// What [`write_dev_pki`] wrote.
#[derive(Debug)]
pub struct DevPki {
    pub ca: PathBuf,
    pub provider: (PathBuf, PathBuf),
    pub dwp: (PathBuf, PathBuf),
    /// (LA code, server name, certificate, key).
    pub las: Vec<(String, String, PathBuf, PathBuf)>,
}

/// Writes a development PKI into `out` (created if missing; refused if it
/// already holds one). Keys are written owner-only.
pub fn write_dev_pki(
    out: &Path,
    provider: &str,
    dwp: &str,
    las: &[String],
) -> Result<DevPki, CertsError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertsError::Write { path, source }
    };
    std::fs::create_dir_all(out).map_err(write_err(out))?;
    let ca_path = out.join("ca.pem");
    if ca_path.exists() {
        return Err(CertsError::Exists(ca_path));
    }
    let ca = DevCa::new("mishare development CA")?;
    let write_pair = |stem: &str, issued: &Issued| -> Result<(PathBuf, PathBuf), CertsError> {
        let cert = out.join(format!("{stem}.pem"));
        let key = out.join(format!("{stem}.key"));
        write_file(&cert, issued.cert_pem.as_bytes(), 0o644).map_err(write_err(&cert))?;
        write_file(&key, issued.key_pem.as_bytes(), 0o600).map_err(write_err(&key))?;
        Ok((cert, key))
    };
    let provider_pair = write_pair(
        "provider",
        &ca.issue(provider, Usage::ClientAndServer, Validity::Current)?,
    )?;
    let dwp_pair = write_pair("dwp", &ca.issue(dwp, Usage::Client, Validity::Current)?)?;
    let mut la_files = Vec::new();
    for code in las {
        let name = la_server_name(code);
        let (cert, key) = write_pair(
            &format!("la-{}", code.to_ascii_lowercase()),
            &ca.issue(&name, Usage::Server, Validity::Current)?,
        )?;
        la_files.push((code.clone(), name, cert, key));
    }
    let readme = out.join("README.txt");
    write_file(
        &readme,
        format!(
            "A mishare DEVELOPMENT PKI. NOT FOR PRODUCTION.\n\n\
             One throwaway CA (its key was never written) signed:\n\
             - provider.pem/.key: the provider's client certificate ({provider})\n\
             - dwp.pem/.key: a DWP client certificate ({dwp}) for the Directive service\n\
             - la-<code>.pem/.key: each LA endpoint's server certificate (la-<code>.test)\n\
             ca.pem is the trust anchor on both sides. Keys are owner-only; never commit them.\n"
        )
        .as_bytes(),
        0o644,
    )
    .map_err(write_err(&readme))?;
    write_file(&ca_path, ca.cert_pem().as_bytes(), 0o644).map_err(write_err(&ca_path))?;
    Ok(DevPki {
        ca: ca_path,
        provider: provider_pair,
        dwp: dwp_pair,
        las: la_files,
    })
}

/// Creates `path` (never overwriting) with `mode` on Unix.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
