//! A confidentiality agreement as an operator asks to put it on file,
//! checked before anything is stored: the LA (in the reference data and the
//! provider's contract package areas), the named representative, the dates
//! and the signed document. The store keeps what passes
//! ([`crate::provider::store::agreements`]).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use crate::common::encoding::hex;
use crate::common::names::is_la_code;
use crate::config::ProviderConfig;

/// The largest signed-agreement document accepted.
pub const MAX_DOCUMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Why an agreement cannot be put on file. Each says what to do instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgreementError {
    /// The code does not have the shape of an LA code.
    #[error("{la:?} is not an LA code (1 to 16 ASCII letters and digits, such as E09000002)")]
    NotAnLaCode { la: String },
    /// The LA is not in the reference data.
    #[error(
        "{la} is not in the reference data {}; check the code, or update the reference \
         data if the LA is new", reference.display()
    )]
    UnknownLa { la: String, reference: PathBuf },
    /// The LA lies outside the provider's contract package areas.
    #[error(
        "{la} ({name}) lies in {cpa}, which is not one of the provider's contract package \
         areas ({areas}); agreements are only for LAs where the provider delivers"
    )]
    OutsideContractArea {
        la: String,
        name: String,
        cpa: String,
        areas: String,
    },
    /// No name before the email.
    #[error(
        "the representative {given:?} has no name; write it as \"Name <email>\", for example \
         \"Jo Bloggs <jo.bloggs@example.gov.uk>\""
    )]
    NoName { given: String },
    /// No `<email>` part.
    #[error(
        "the representative {given:?} has no email address; write it as \"Name <email>\", \
         for example \"Jo Bloggs <jo.bloggs@example.gov.uk>\""
    )]
    NoEmail { given: String },
    /// The email is not an address.
    #[error("the representative's email {email:?} is not an email address: {reason}")]
    BadEmail { email: String, reason: &'static str },
    /// A date that is not `YYYY-MM-DD`.
    #[error("the {which} date {value:?} is not a date; write it as YYYY-MM-DD")]
    BadDate { which: &'static str, value: String },
    /// Signed after today.
    #[error(
        "the agreement is dated {signed}, after today ({today}, Europe/London); record it \
         once it has been signed"
    )]
    SignedInFuture { signed: NaiveDate, today: NaiveDate },
    /// Expires before it was signed.
    #[error(
        "the agreement expires on {expires}, before it was signed on {signed}; check the dates"
    )]
    ExpiresBeforeSigned {
        signed: NaiveDate,
        expires: NaiveDate,
    },
    /// Already expired.
    #[error(
        "the agreement expired on {expires} (today is {today}, Europe/London); an expired \
         agreement allows nothing, so put the renewed one on file instead"
    )]
    AlreadyExpired {
        expires: NaiveDate,
        today: NaiveDate,
    },
    /// The document does not exist.
    #[error("the signed agreement {} does not exist; give the path to the signed copy", path.display())]
    DocumentMissing { path: PathBuf },
    /// The document is a directory or a device.
    #[error("the signed agreement {} is not a file", path.display())]
    DocumentNotAFile { path: PathBuf },
    /// The document is empty.
    #[error("the signed agreement {} is empty; give the path to the signed copy", path.display())]
    DocumentEmpty { path: PathBuf },
    /// The document is too large.
    #[error("the signed agreement {} is larger than {limit} bytes", path.display())]
    DocumentTooLarge { path: PathBuf, limit: u64 },
    /// The document could not be read.
    #[error("cannot read the signed agreement {}: {source}", path.display())]
    DocumentUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The LA's representative responsible for keeping the agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Representative {
    pub name: String,
    pub email: String,
}

impl Representative {
    /// Parses `Name <email>`.
    pub fn parse(given: &str) -> Result<Self, AgreementError> {
        let trimmed = given.trim();
        let no_email = || AgreementError::NoEmail {
            given: given.to_string(),
        };
        let (name, rest) = trimmed.rsplit_once('<').ok_or_else(no_email)?;
        let email = rest.strip_suffix('>').ok_or_else(no_email)?.trim();
        let name = name.trim();
        if email.is_empty() {
            return Err(no_email());
        }
        if name.is_empty() {
            return Err(AgreementError::NoName {
                given: given.to_string(),
            });
        }
        if name.chars().any(|c| c.is_control() || c == '<' || c == '>') {
            return Err(AgreementError::NoName {
                given: given.to_string(),
            });
        }
        check_email(email)?;
        Ok(Self {
            name: name.to_string(),
            email: email.to_string(),
        })
    }
}

impl fmt::Display for Representative {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} <{}>", self.name, self.email)
    }
}

/// A deliberately plain check: one `@`, something before it, a dotted
/// domain after it, no spaces or angle brackets. Enough to catch a typo, not
/// to prove the mailbox exists.
fn check_email(email: &str) -> Result<(), AgreementError> {
    let bad = |reason| AgreementError::BadEmail {
        email: email.to_string(),
        reason,
    };
    if email.len() > 254 {
        return Err(bad("it is longer than 254 characters"));
    }
    if email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
    {
        return Err(bad("it contains a space, a comma or an angle bracket"));
    }
    let (local, domain) = email.split_once('@').ok_or_else(|| bad("it has no @"))?;
    if domain.contains('@') {
        return Err(bad("it has more than one @"));
    }
    if local.is_empty() {
        return Err(bad("nothing comes before the @"));
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return Err(bad(
            "the part after the @ is not a domain such as example.gov.uk",
        ));
    }
    Ok(())
}

/// What the operator asked to put on file, before any check.
#[derive(Debug, Clone)]
pub struct AgreementRequest<'a> {
    pub la: &'a str,
    /// `Name <email>`.
    pub representative: &'a str,
    /// `YYYY-MM-DD`.
    pub signed: &'a str,
    /// `YYYY-MM-DD`, the last day the agreement covers.
    pub expires: Option<&'a str>,
    pub document: &'a Path,
}

/// An agreement that passed every check, with its document read. Only
/// [`NewAgreement::validate`] makes one.
#[derive(Debug, Clone)]
pub struct NewAgreement {
    pub(crate) la_code: String,
    pub(crate) la_name: String,
    pub(crate) representative: Representative,
    pub(crate) signed_on: NaiveDate,
    pub(crate) expires_on: Option<NaiveDate>,
    pub(crate) document: Vec<u8>,
    pub(crate) document_sha256: String,
    pub(crate) document_name: String,
}

impl NewAgreement {
    /// Checks a request against the configuration; `today` is the date in
    /// Europe/London.
    pub fn validate(
        request: &AgreementRequest<'_>,
        config: &ProviderConfig,
        today: NaiveDate,
    ) -> Result<Self, AgreementError> {
        let la = request.la.trim();
        if !is_la_code(la) {
            return Err(AgreementError::NotAnLaCode { la: la.to_string() });
        }
        let entry = config
            .reference
            .resolve(la)
            .ok_or_else(|| AgreementError::UnknownLa {
                la: la.to_string(),
                reference: config.reference_path.clone(),
            })?;
        let la = entry.code.as_str();
        if !config.contract_areas.contains(&entry.cpa) {
            return Err(AgreementError::OutsideContractArea {
                la: la.to_string(),
                name: entry.name.clone(),
                cpa: entry.cpa.clone(),
                areas: config
                    .contract_areas
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let representative = Representative::parse(request.representative)?;
        let date = |which, value: &str| {
            NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(|_| {
                AgreementError::BadDate {
                    which,
                    value: value.to_string(),
                }
            })
        };
        let signed_on = date("signed", request.signed)?;
        let expires_on = request.expires.map(|e| date("expiry", e)).transpose()?;
        if signed_on > today {
            return Err(AgreementError::SignedInFuture {
                signed: signed_on,
                today,
            });
        }
        if let Some(expires) = expires_on {
            if expires < signed_on {
                return Err(AgreementError::ExpiresBeforeSigned {
                    signed: signed_on,
                    expires,
                });
            }
            if expires < today {
                return Err(AgreementError::AlreadyExpired { expires, today });
            }
        }
        let document = read_document(request.document)?;
        let document_sha256 = hex(&Sha256::digest(&document));
        let document_name = request.document.file_name().map_or_else(
            || "document".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(Self {
            la_code: la.to_string(),
            la_name: entry.name.clone(),
            representative,
            signed_on,
            expires_on,
            document,
            document_sha256,
            document_name,
        })
    }

    /// The LA the agreement is with.
    pub fn la_code(&self) -> &str {
        &self.la_code
    }

    /// SHA-256 of the document, lower-case hex.
    pub fn document_sha256(&self) -> &str {
        &self.document_sha256
    }
}

fn read_document(path: &Path) -> Result<Vec<u8>, AgreementError> {
    let unreadable = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            AgreementError::DocumentMissing {
                path: path.to_path_buf(),
            }
        } else {
            AgreementError::DocumentUnreadable {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(AgreementError::DocumentNotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(AgreementError::DocumentTooLarge {
            path: path.to_path_buf(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    if bytes.is_empty() {
        return Err(AgreementError::DocumentEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representative_parses_name_and_email() {
        let r = Representative::parse("  Jo Bloggs <jo.bloggs@example.gov.uk> ").expect("parses");
        assert_eq!(r.name, "Jo Bloggs");
        assert_eq!(r.email, "jo.bloggs@example.gov.uk");
        assert_eq!(r.to_string(), "Jo Bloggs <jo.bloggs@example.gov.uk>");
    }

    #[test]
    fn representative_refusals() {
        let cases: &[(&str, &str)] = &[
            ("Jo Bloggs", "has no email address"),
            ("Jo Bloggs <>", "has no email address"),
            ("Jo Bloggs <jo@example.gov.uk", "has no email address"),
            ("<jo@example.gov.uk>", "has no name"),
            ("Jo <jo.example.gov.uk>", "it has no @"),
            ("Jo <jo@@example.gov.uk>", "more than one @"),
            ("Jo <@example.gov.uk>", "nothing comes before the @"),
            ("Jo <jo@localhost>", "not a domain"),
            ("Jo <jo@example..uk>", "not a domain"),
            ("Jo <jo b@example.gov.uk>", "a space"),
        ];
        for (given, want) in cases {
            let err = Representative::parse(given).expect_err(given);
            assert!(err.to_string().contains(want), "{given}: {err}");
        }
    }
}
