//! Signed receipts: an authority endpoint's proof that it stored a file,
//! which provider sent it, and for whom and what it is.
//!
//! The endpoint signs each receipt with the private key of its TLS
//! certificate, so anyone holding that certificate can check a receipt
//! offline (`mishare receipt verify RECEIPT.json --cert ENDPOINT.pem`), and
//! the provider keeps receipts as evidence of delivery.
//!
//! ## The signed byte string
//!
//! Version 2, which endpoints sign and providers require:
//!
//! ```text
//! "mishare-receipt-v2" 0x00                        domain separation (19 bytes)
//! u32 BE length ‖ transfer_id (UTF-8)
//! u32 BE length ‖ sha256 (32 bytes)
//! u64 BE size
//! u32 BE length ‖ stored_as (UTF-8)
//! i64 BE received_unix_ms
//! u32 BE length ‖ provider (UTF-8)               the identity its certificate proved
//! u32 BE length ‖ la_code (UTF-8)
//! u32 BE length ‖ report (UTF-8)
//! u32 BE length ‖ period (UTF-8)
//! u32 BE classification                          the proto's enum: 1 INTERNAL, 2 PUBLISHED
//! ```
//!
//! Version 1 (`version` unset), signed before receipts bound who sent what
//! to whom, is the first six lines alone under the tag
//! `"mishare-receipt-v1" 0x00`. It is still verified, so receipts stored
//! before stay checkable, but it proves nothing about the provider, LA,
//! report, period or classification: a version 1 receipt that names any of
//! them is refused, and the provider refuses version 1 from an endpoint.
//! The tags differ, so a signature over one version never verifies as the
//! other.
//!
//! `Receipt.signature` is the 2-byte big-endian TLS `SignatureScheme` code
//! (e.g. `0x0403` ECDSA P-256 SHA-256, `0x0804` RSA-PSS SHA-256, `0x0807`
//! Ed25519) followed by the raw signature that scheme makes over the byte
//! string above (for ECDSA, the DER-encoded signature).
//!
//! ## JSON
//!
//! A receipt on disk is one JSON object with the proto's field names; bytes
//! are lower-case hex, the classification `internal` or `published`;
//! version 1 receipts have no `version`, `provider`, `la_code`, `report`,
//! `period` or `classification`:
//!
//! ```json
//! {"version":2,"transfer_id":"…","sha256":"<64 hex>","size":123,"stored_as":"…",
//!  "received_unix_ms":1700000000000,"provider":"provider.test","la_code":"E09000002",
//!  "report":"referrals-monthly","period":"2012-10","classification":"internal",
//!  "signature":"<hex>"}
//! ```

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::sign::SigningKey;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::common::encoding::{hex, unhex};
use crate::wire::v1::{Classification, Receipt};

/// The domain-separation prefix of the version 2 byte string.
pub const DOMAIN: &[u8] = b"mishare-receipt-v2\0";

/// The domain-separation prefix of the version 1 byte string, verified for
/// receipts signed before version 2 and never signed now.
pub const DOMAIN_V1: &[u8] = b"mishare-receipt-v1\0";

/// The `version` field of the receipts endpoints sign now.
pub const VERSION: u32 = 2;

/// The formats of the signed byte string (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `version` unset: transfer, digest, size, name and time only.
    V1,
    /// Also the provider, LA code, report, period and classification.
    V2,
}

impl Version {
    /// The format `receipt` says it is in; a version 1 receipt that names
    /// the fields only version 2 binds is refused, so a valid receipt never
    /// shows a field its signature does not cover.
    pub fn of(receipt: &Receipt) -> Result<Self, ReceiptError> {
        match receipt.version {
            0 | 1 => {
                let named = [
                    ("provider", !receipt.provider.is_empty()),
                    ("la_code", !receipt.la_code.is_empty()),
                    ("report", !receipt.report.is_empty()),
                    ("period", !receipt.period.is_empty()),
                    ("classification", receipt.classification != 0),
                ];
                match named.iter().find(|(_, set)| *set) {
                    Some((field, _)) => Err(ReceiptError::UnsignedField(field)),
                    None => Ok(Version::V1),
                }
            }
            VERSION => Ok(Version::V2),
            other => Err(ReceiptError::UnknownVersion(other)),
        }
    }
}

/// The schemes a receipt may be signed with (the key picks the one it
/// supports; rustls prefers RSA-PSS SHA-512 for RSA keys). Legacy schemes
/// (SHA-1, RSA PKCS#1 v1.5) are not offered, and not accepted.
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
];

/// Why a receipt could not be signed, read or verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The endpoint's key supports none of the receipt signature schemes.
    #[error(
        "the endpoint's TLS key cannot sign receipts with any of {SCHEMES:?}; use an ECDSA, \
         Ed25519 or RSA key"
    )]
    NoScheme,
    /// The key could not be loaded.
    #[error("cannot use the endpoint's TLS key to sign receipts: {0}")]
    Key(String),
    /// Signing failed.
    #[error("cannot sign a receipt: {0}")]
    Sign(String),
    /// The receipt's signature field is too short to hold a scheme.
    #[error("the receipt has no signature")]
    NoSignature,
    /// The signature names a scheme receipts never use.
    #[error("the receipt is signed with {0:?}, which receipts never use")]
    UnsupportedScheme(SignatureScheme),
    /// The certificate could not be parsed.
    #[error("cannot read the endpoint certificate: {0}")]
    Certificate(String),
    /// The signature does not match the receipt and certificate.
    #[error(
        "the signature does not match: the receipt was changed, or was not signed by the \
         endpoint with this certificate"
    )]
    BadSignature,
    /// The receipt's `sha256` is not 32 bytes.
    #[error("the receipt's sha256 is {0} bytes, not 32")]
    DigestLength(usize),
    /// The receipt JSON could not be read.
    #[error("not a receipt: {0}")]
    Json(String),
    /// The receipt's `version` is one this mishare does not know.
    #[error("the receipt is version {0}; this mishare knows versions 1 and 2")]
    UnknownVersion(u32),
    /// A version 1 receipt names a field only version 2 signs.
    #[error(
        "the receipt is version 1, whose signature does not cover `{0}`, yet it names one: it \
         was altered"
    )]
    UnsignedField(&'static str),
}

/// Signs receipts with the endpoint's TLS key.
#[derive(Clone)]
pub struct ReceiptSigner {
    key: Arc<dyn SigningKey>,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ReceiptSigner")
            .field("algorithm", &self.key.algorithm())
            .finish_non_exhaustive()
    }
}

impl ReceiptSigner {
    /// A signer for `identity`'s key; fails if the key can sign with none of
    /// the receipt schemes.
    pub fn new(identity: &crate::tls::Identity) -> Result<Self, ReceiptError> {
        let key = identity
            .signing_key()
            .map_err(|e| ReceiptError::Key(e.to_string()))?;
        if key.choose_scheme(SCHEMES).is_none() {
            return Err(ReceiptError::NoScheme);
        }
        Ok(Self { key })
    }

    /// `unsigned`, signed as a version 2 receipt: its `version` and
    /// `signature` are set here, every other field is as given.
    pub fn sign(&self, unsigned: Receipt) -> Result<Receipt, ReceiptError> {
        let signer = self
            .key
            .choose_scheme(SCHEMES)
            .ok_or(ReceiptError::NoScheme)?;
        let mut receipt = Receipt {
            version: VERSION,
            signature: Vec::new(),
            ..unsigned
        };
        let message = signed_bytes(&receipt)?;
        let raw = signer
            .sign(&message)
            .map_err(|e| ReceiptError::Sign(e.to_string()))?;
        let mut signature = Vec::with_capacity(2 + raw.len());
        signature.extend_from_slice(&u16::from(signer.scheme()).to_be_bytes());
        signature.extend_from_slice(&raw);
        receipt.signature = signature;
        Ok(receipt)
    }
}

/// The exact bytes a receipt's signature covers, in the format its
/// `version` names (see the module docs).
pub fn signed_bytes(receipt: &Receipt) -> Result<Vec<u8>, ReceiptError> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).expect("receipt fields are far shorter than 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
    }
    if receipt.sha256.len() != 32 {
        return Err(ReceiptError::DigestLength(receipt.sha256.len()));
    }
    let version = Version::of(receipt)?;
    let mut out = Vec::with_capacity(
        DOMAIN.len()
            + 80
            + receipt.transfer_id.len()
            + receipt.stored_as.len()
            + receipt.provider.len()
            + receipt.la_code.len()
            + receipt.report.len()
            + receipt.period.len(),
    );
    out.extend_from_slice(match version {
        Version::V1 => DOMAIN_V1,
        Version::V2 => DOMAIN,
    });
    field(&mut out, receipt.transfer_id.as_bytes());
    field(&mut out, &receipt.sha256);
    out.extend_from_slice(&receipt.size.to_be_bytes());
    field(&mut out, receipt.stored_as.as_bytes());
    out.extend_from_slice(&receipt.received_unix_ms.to_be_bytes());
    if version == Version::V2 {
        field(&mut out, receipt.provider.as_bytes());
        field(&mut out, receipt.la_code.as_bytes());
        field(&mut out, receipt.report.as_bytes());
        field(&mut out, receipt.period.as_bytes());
        out.extend_from_slice(&receipt.classification.to_be_bytes());
    }
    Ok(out)
}

/// Checks `receipt`'s signature against the endpoint certificate (DER), in
/// the format its `version` names, and says which that was. The
/// certificate's own validity is the caller's business: this proves only
/// that its key signed these exact fields. A provider taking a receipt from
/// an endpoint requires [`Version::V2`]; version 1 is verified for receipts
/// stored before it.
pub fn verify(
    receipt: &Receipt,
    endpoint_cert: &CertificateDer<'_>,
) -> Result<Version, ReceiptError> {
    let message = signed_bytes(receipt)?;
    let (code, raw) = match receipt.signature.as_slice() {
        [a, b, rest @ ..] if !rest.is_empty() => (u16::from_be_bytes([*a, *b]), rest),
        _ => return Err(ReceiptError::NoSignature),
    };
    let scheme = SignatureScheme::from(code);
    if !SCHEMES.contains(&scheme) {
        return Err(ReceiptError::UnsupportedScheme(scheme));
    }
    let algorithms = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, algs)| *algs)
        .ok_or(ReceiptError::UnsupportedScheme(scheme))?;
    let cert = webpki::EndEntityCert::try_from(endpoint_cert)
        .map_err(|e| ReceiptError::Certificate(e.to_string()))?;
    // A scheme maps to one algorithm per key type it allows (P-256 or P-384
    // keys for ECDSA); the one matching the certificate's key decides.
    if algorithms
        .iter()
        .any(|alg| cert.verify_signature(*alg, &message, raw).is_ok())
    {
        Version::of(receipt)
    } else {
        Err(ReceiptError::BadSignature)
    }
}

/// The name of the scheme a receipt is signed with, for people.
pub fn scheme_name(receipt: &Receipt) -> Option<String> {
    match receipt.signature.as_slice() {
        [a, b, ..] => Some(format!(
            "{:?}",
            SignatureScheme::from(u16::from_be_bytes([*a, *b]))
        )),
        _ => None,
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptJson {
    #[serde(default, skip_serializing_if = "is_zero")]
    version: u32,
    transfer_id: String,
    sha256: String,
    size: u64,
    stored_as: String,
    received_unix_ms: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    provider: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    la_code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    report: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    period: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    classification: String,
    signature: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The classification's name in JSON (empty when unset; the number when it
/// is not one the proto names, so nothing is lost).
fn classification_name(value: i32) -> String {
    match Classification::try_from(value) {
        Ok(Classification::Unspecified) => String::new(),
        Ok(Classification::Internal) => "internal".into(),
        Ok(Classification::Published) => "published".into(),
        Err(_) => value.to_string(),
    }
}

/// A receipt as one line of JSON (bytes in lower-case hex).
pub fn to_json(receipt: &Receipt) -> String {
    serde_json::to_string(&ReceiptJson {
        version: receipt.version,
        transfer_id: receipt.transfer_id.clone(),
        sha256: hex(&receipt.sha256),
        size: receipt.size,
        stored_as: receipt.stored_as.clone(),
        received_unix_ms: receipt.received_unix_ms,
        provider: receipt.provider.clone(),
        la_code: receipt.la_code.clone(),
        report: receipt.report.clone(),
        period: receipt.period.clone(),
        classification: classification_name(receipt.classification),
        signature: hex(&receipt.signature),
    })
    .expect("a receipt is plain JSON")
}

/// Reads a receipt written by [`to_json`].
pub fn from_json(text: &str) -> Result<Receipt, ReceiptError> {
    let json: ReceiptJson =
        serde_json::from_str(text).map_err(|e| ReceiptError::Json(e.to_string()))?;
    let bytes = |field: &str, s: &str| {
        unhex(s).ok_or_else(|| ReceiptError::Json(format!("{field} is not hex")))
    };
    let classification = match json.classification.as_str() {
        "" => Classification::Unspecified as i32,
        "internal" => Classification::Internal as i32,
        "published" => Classification::Published as i32,
        other => other.parse().map_err(|_| {
            ReceiptError::Json(format!(
                "classification {other:?} is neither \"internal\" nor \"published\""
            ))
        })?,
    };
    Ok(Receipt {
        sha256: bytes("sha256", &json.sha256)?,
        signature: bytes("signature", &json.signature)?,
        transfer_id: json.transfer_id,
        size: json.size,
        stored_as: json.stored_as,
        received_unix_ms: json.received_unix_ms,
        provider: json.provider,
        la_code: json.la_code,
        report: json.report,
        period: json.period,
        classification,
        version: json.version,
    })
}

/// `receipt`, with every field version 2 binds cleared, signed by
/// `identity` in version 1 as endpoints signed before version 2: for tests
/// of what was stored then.
#[cfg(test)]
pub(crate) fn signed_as_v1(identity: &crate::tls::Identity, receipt: Receipt) -> Receipt {
    let mut receipt = Receipt {
        provider: String::new(),
        la_code: String::new(),
        report: String::new(),
        period: String::new(),
        classification: 0,
        version: 0,
        signature: Vec::new(),
        ..receipt
    };
    let message = signed_bytes(&receipt).expect("a version 1 receipt");
    assert!(message.starts_with(DOMAIN_V1));
    let key = identity.signing_key().expect("key");
    let signer = key.choose_scheme(SCHEMES).expect("scheme");
    receipt.signature = u16::from(signer.scheme()).to_be_bytes().to_vec();
    receipt
        .signature
        .extend(signer.sign(&message).expect("sign"));
    receipt
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{DevCa, Issued, Usage, Validity};

    fn unsigned() -> Receipt {
        Receipt {
            transfer_id: "transfer-0001".into(),
            sha256: vec![7u8; 32],
            size: 1234,
            stored_as: "2012-10_r_transfer-0001.age".into(),
            received_unix_ms: 99,
            provider: "provider.test".into(),
            la_code: "E09000002".into(),
            report: "r".into(),
            period: "2012-10".into(),
            classification: Classification::Internal as i32,
            ..Receipt::default()
        }
    }

    fn la() -> (Issued, Issued) {
        let ca = DevCa::new("ca").expect("ca");
        let la = ca
            .issue("la-e1.test", Usage::Server, Validity::Current)
            .expect("la");
        let other = ca
            .issue("la-e2.test", Usage::Server, Validity::Current)
            .expect("other");
        (la, other)
    }

    /// A version 1 receipt as endpoints signed them before version 2.
    fn signed_v1(la: &Issued) -> Receipt {
        signed_as_v1(&la.identity(), unsigned())
    }

    #[test]
    fn signed_bytes_are_unambiguous() {
        let with = |transfer_id: &str, stored_as: &str, report: &str, period: &str| {
            signed_bytes(&Receipt {
                transfer_id: transfer_id.into(),
                stored_as: stored_as.into(),
                report: report.into(),
                period: period.into(),
                version: VERSION,
                ..unsigned()
            })
            .expect("bytes")
        };
        assert_ne!(with("ab", "c", "r", "p"), with("a", "bc", "r", "p"));
        assert_ne!(with("a", "c", "rp", ""), with("a", "c", "r", "p"));
        let v2 = signed_bytes(&Receipt {
            version: VERSION,
            ..unsigned()
        })
        .expect("bytes");
        assert!(v2.starts_with(DOMAIN));
        let text = |s: &str| 4 + s.len();
        assert_eq!(
            v2.len(),
            DOMAIN.len()
                + text("transfer-0001")
                + (4 + 32)
                + 8
                + text("2012-10_r_transfer-0001.age")
                + 8
                + text("provider.test")
                + text("E09000002")
                + text("r")
                + text("2012-10")
                + 4
        );
        let v1 = Receipt {
            provider: String::new(),
            la_code: String::new(),
            report: String::new(),
            period: String::new(),
            classification: 0,
            ..unsigned()
        };
        let v1 = signed_bytes(&v1).expect("bytes");
        assert!(v1.starts_with(DOMAIN_V1));
        assert_ne!(DOMAIN, DOMAIN_V1);
        assert_eq!(DOMAIN.len(), DOMAIN_V1.len());
    }

    #[test]
    fn sign_verify_and_tamper() {
        let (la, other) = la();
        let signer = ReceiptSigner::new(&la.identity()).expect("signer");
        let receipt = signer.sign(unsigned()).expect("sign");
        assert_eq!(receipt.version, VERSION);
        assert_eq!(verify(&receipt, &la.cert_der).expect("valid"), Version::V2);
        assert!(matches!(
            verify(&receipt, &other.cert_der),
            Err(ReceiptError::BadSignature)
        ));
        // Every field is covered: change one and the signature fails.
        type Change = fn(&mut Receipt);
        let changes: &[(&str, Change)] = &[
            ("size", |r| r.size += 1),
            ("transfer_id", |r| r.transfer_id.push('x')),
            ("stored_as", |r| r.stored_as.push('x')),
            ("received_unix_ms", |r| r.received_unix_ms += 1),
            ("provider", |r| r.provider = "other.test".into()),
            ("la_code", |r| r.la_code = "E09000030".into()),
            ("report", |r| r.report = "s".into()),
            ("period", |r| r.period = "2012-11".into()),
            ("classification", |r| {
                r.classification = Classification::Published as i32;
            }),
        ];
        for (field, change) in changes {
            let mut changed = receipt.clone();
            change(&mut changed);
            assert!(
                matches!(
                    verify(&changed, &la.cert_der),
                    Err(ReceiptError::BadSignature)
                ),
                "{field}"
            );
        }
        let back = from_json(&to_json(&receipt)).expect("json");
        assert_eq!(back, receipt);
    }

    #[test]
    fn version_1_still_verifies_but_never_as_version_2() {
        let (la, _) = la();
        let old = signed_v1(&la);
        assert_eq!(verify(&old, &la.cert_der).expect("valid"), Version::V1);
        let back = from_json(&to_json(&old)).expect("json");
        assert_eq!(back, old);
        assert!(!to_json(&old).contains("version"), "{}", to_json(&old));

        // Fields a version 1 signature does not cover are never shown as
        // verified: naming one is refused, whatever the signature.
        let mut named = old.clone();
        named.la_code = "E09000002".into();
        assert!(matches!(
            verify(&named, &la.cert_der),
            Err(ReceiptError::UnsignedField("la_code"))
        ));
        // Relabelled as version 2, with the fields, it does not verify: the
        // tags differ.
        let relabelled = Receipt {
            signature: old.signature.clone(),
            ..unsigned()
        };
        let relabelled = Receipt {
            version: VERSION,
            ..relabelled
        };
        assert!(matches!(
            verify(&relabelled, &la.cert_der),
            Err(ReceiptError::BadSignature)
        ));
        // Nor does a version 2 receipt stripped down to version 1.
        let signer = ReceiptSigner::new(&la.identity()).expect("signer");
        let new = signer
            .sign(Receipt {
                signature: Vec::new(),
                ..unsigned()
            })
            .expect("sign");
        let stripped = Receipt {
            version: 0,
            provider: String::new(),
            la_code: String::new(),
            report: String::new(),
            period: String::new(),
            classification: 0,
            ..new
        };
        assert!(matches!(
            verify(&stripped, &la.cert_der),
            Err(ReceiptError::BadSignature)
        ));
        let unknown = Receipt { version: 3, ..old };
        assert!(matches!(
            verify(&unknown, &la.cert_der),
            Err(ReceiptError::UnknownVersion(3))
        ));
    }

    #[test]
    fn json_names_the_classification_and_refuses_others() {
        let (la, _) = la();
        let signer = ReceiptSigner::new(&la.identity()).expect("signer");
        let json = to_json(&signer.sign(unsigned()).expect("sign"));
        assert!(json.starts_with("{\"version\":2,"), "{json}");
        assert!(json.contains("\"classification\":\"internal\""), "{json}");
        let bad = json.replace("\"internal\"", "\"secret\"");
        let err = from_json(&bad).expect_err("unknown classification");
        assert!(err.to_string().contains("\"secret\""), "{err}");
    }
}
