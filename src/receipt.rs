//! Signed receipts: an authority endpoint's proof that it stored a file.
//!
//! The endpoint signs each receipt with the private key of its TLS
//! certificate, so anyone holding that certificate can check a receipt
//! offline (`mishare receipt verify RECEIPT.json --cert ENDPOINT.pem`), and
//! the provider keeps receipts as evidence of delivery.
//!
//! ## The signed byte string
//!
//! ```text
//! "mishare-receipt-v1" 0x00                        domain separation (19 bytes)
//! u32 BE length ‖ transfer_id (UTF-8)
//! u32 BE length ‖ sha256 (32 bytes)
//! u64 BE size
//! u32 BE length ‖ stored_as (UTF-8)
//! i64 BE received_unix_ms
//! ```
//!
//! `Receipt.signature` is the 2-byte big-endian TLS `SignatureScheme` code
//! (e.g. `0x0403` ECDSA P-256 SHA-256, `0x0804` RSA-PSS SHA-256, `0x0807`
//! Ed25519) followed by the raw signature that scheme makes over the byte
//! string above (for ECDSA, the DER-encoded signature).
//!
//! ## JSON
//!
//! A receipt on disk is one JSON object with the proto's field names; bytes
//! are lower-case hex:
//!
//! ```json
//! {"transfer_id":"…","sha256":"<64 hex>","size":123,"stored_as":"…",
//!  "received_unix_ms":1700000000000,"signature":"<hex>"}
//! ```

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::sign::SigningKey;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::common::encoding::{hex, unhex};
use crate::wire::v1::Receipt;

/// The domain-separation prefix of the signed byte string.
pub const DOMAIN: &[u8] = b"mishare-receipt-v1\0";

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

    /// A signed receipt for these fields.
    pub fn sign(
        &self,
        transfer_id: &str,
        sha256: &[u8; 32],
        size: u64,
        stored_as: &str,
        received_unix_ms: i64,
    ) -> Result<Receipt, ReceiptError> {
        let signer = self
            .key
            .choose_scheme(SCHEMES)
            .ok_or(ReceiptError::NoScheme)?;
        let message = signed_bytes(transfer_id, sha256, size, stored_as, received_unix_ms);
        let raw = signer
            .sign(&message)
            .map_err(|e| ReceiptError::Sign(e.to_string()))?;
        let mut signature = Vec::with_capacity(2 + raw.len());
        signature.extend_from_slice(&u16::from(signer.scheme()).to_be_bytes());
        signature.extend_from_slice(&raw);
        Ok(Receipt {
            transfer_id: transfer_id.to_string(),
            sha256: sha256.to_vec(),
            size,
            stored_as: stored_as.to_string(),
            received_unix_ms,
            signature,
        })
    }
}

/// The exact bytes a receipt's signature covers (see the module docs).
pub fn signed_bytes(
    transfer_id: &str,
    sha256: &[u8],
    size: u64,
    stored_as: &str,
    received_unix_ms: i64,
) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).expect("receipt fields are far shorter than 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::with_capacity(DOMAIN.len() + 64 + transfer_id.len() + stored_as.len());
    out.extend_from_slice(DOMAIN);
    field(&mut out, transfer_id.as_bytes());
    field(&mut out, sha256);
    out.extend_from_slice(&size.to_be_bytes());
    field(&mut out, stored_as.as_bytes());
    out.extend_from_slice(&received_unix_ms.to_be_bytes());
    out
}

/// Checks `receipt`'s signature against the endpoint certificate (DER). The
/// certificate's own validity is the caller's business: this proves only
/// that its key signed these exact fields.
pub fn verify(receipt: &Receipt, endpoint_cert: &CertificateDer<'_>) -> Result<(), ReceiptError> {
    if receipt.sha256.len() != 32 {
        return Err(ReceiptError::DigestLength(receipt.sha256.len()));
    }
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
    let message = signed_bytes(
        &receipt.transfer_id,
        &receipt.sha256,
        receipt.size,
        &receipt.stored_as,
        receipt.received_unix_ms,
    );
    // A scheme maps to one algorithm per key type it allows (P-256 or P-384
    // keys for ECDSA); the one matching the certificate's key decides.
    if algorithms
        .iter()
        .any(|alg| cert.verify_signature(*alg, &message, raw).is_ok())
    {
        Ok(())
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
    transfer_id: String,
    sha256: String,
    size: u64,
    stored_as: String,
    received_unix_ms: i64,
    signature: String,
}

/// A receipt as one line of JSON (bytes in lower-case hex).
pub fn to_json(receipt: &Receipt) -> String {
    serde_json::to_string(&ReceiptJson {
        transfer_id: receipt.transfer_id.clone(),
        sha256: hex(&receipt.sha256),
        size: receipt.size,
        stored_as: receipt.stored_as.clone(),
        received_unix_ms: receipt.received_unix_ms,
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
    Ok(Receipt {
        sha256: bytes("sha256", &json.sha256)?,
        signature: bytes("signature", &json.signature)?,
        transfer_id: json.transfer_id,
        size: json.size,
        stored_as: json.stored_as,
        received_unix_ms: json.received_unix_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{DevCa, Usage, Validity};

    fn receipt_for(signer: &ReceiptSigner) -> Receipt {
        signer
            .sign(
                "transfer-0001",
                &[7u8; 32],
                1234,
                "2012-10_r_transfer-0001.age",
                99,
            )
            .expect("sign")
    }

    #[test]
    fn signed_bytes_are_unambiguous() {
        let a = signed_bytes("ab", &[1; 32], 1, "c", 0);
        let b = signed_bytes("a", &[1; 32], 1, "bc", 0);
        assert_ne!(a, b);
        assert!(a.starts_with(DOMAIN));
        assert_eq!(a.len(), DOMAIN.len() + 4 + 2 + 4 + 32 + 8 + 4 + 1 + 8);
    }

    #[test]
    fn sign_verify_and_tamper() {
        let ca = DevCa::new("ca").expect("ca");
        let la = ca
            .issue("la-e1.test", Usage::Server, Validity::Current)
            .expect("la");
        let other = ca
            .issue("la-e2.test", Usage::Server, Validity::Current)
            .expect("other");
        let signer = ReceiptSigner::new(&la.identity()).expect("signer");
        let receipt = receipt_for(&signer);
        verify(&receipt, &la.cert_der).expect("valid");
        assert!(matches!(
            verify(&receipt, &other.cert_der),
            Err(ReceiptError::BadSignature)
        ));
        let mut changed = receipt.clone();
        changed.size += 1;
        assert!(matches!(
            verify(&changed, &la.cert_der),
            Err(ReceiptError::BadSignature)
        ));
        let back = from_json(&to_json(&receipt)).expect("json");
        assert_eq!(back, receipt);
    }
}
