//! Confidentiality agreements: the current one per LA, every one ever put on
//! file, and their history (added, replaced, revoked).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, Row, params};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{AGREEMENTS_DIR, Store, StoreError};
use crate::common::audit::{self, Kind};
use crate::common::db::{DbError, Optional, date_column, time_column};
use crate::common::encoding::hex;
use crate::common::files;
use crate::common::names::is_la_code;
use crate::common::time::timestamp;
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
    la_code: String,
    la_name: String,
    representative: Representative,
    signed_on: NaiveDate,
    expires_on: Option<NaiveDate>,
    document: Vec<u8>,
    document_sha256: String,
    document_name: String,
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
            .get(la)
            .ok_or_else(|| AgreementError::UnknownLa {
                la: la.to_string(),
                reference: config.reference_path.clone(),
            })?;
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

/// An agreement as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub id: i64,
    pub la_code: String,
    pub la_name: String,
    pub representative: Representative,
    pub signed_on: NaiveDate,
    /// The last day covered (inclusive), if it expires.
    pub expires_on: Option<NaiveDate>,
    /// SHA-256 of the stored copy (also its file name under `agreements/`).
    pub document_sha256: String,
    /// The file name the operator gave.
    pub document_name: String,
    pub added_at: DateTime<Utc>,
    pub added_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    /// When a newer agreement took this one's place.
    pub replaced_at: Option<DateTime<Utc>>,
    pub replaced_by: Option<i64>,
}

impl Agreement {
    /// The agreement for the audit log and JSON output.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "la": self.la_code,
            "la_name": self.la_name,
            "representative": { "name": self.representative.name, "email": self.representative.email },
            "signed": self.signed_on.to_string(),
            "expires": self.expires_on.map(|d| d.to_string()),
            "document_sha256": self.document_sha256,
            "document_name": self.document_name,
            "added_at": timestamp(self.added_at),
            "added_by": self.added_by,
            "revoked_at": self.revoked_at.map(timestamp),
            "revoked_by": self.revoked_by,
            "revoke_reason": self.revoke_reason,
        })
    }
}

/// The columns [`agreement_from_row`] reads, as a literal so that every
/// query is a compile-time constant (no SQL is built at run time).
macro_rules! select_agreements {
    ($($rest:literal)*) => {
        concat!(
            "SELECT id, la_code, la_name, representative_name, representative_email, \
             signed_on, expires_on, document_sha256, document_name, added_at, added_by, \
             revoked_at, revoked_by, revoke_reason, replaced_at, replaced_by FROM agreements ",
            $($rest),*
        )
    };
}

fn agreement_from_row(r: &Row<'_>) -> rusqlite::Result<Result<Agreement, StoreError>> {
    let text = |i| r.get::<_, String>(i);
    let opt = |i| r.get::<_, Option<String>>(i);
    let build = || -> Result<Agreement, StoreError> {
        Ok(Agreement {
            id: r.get(0)?,
            la_code: text(1)?,
            la_name: text(2)?,
            representative: Representative {
                name: text(3)?,
                email: text(4)?,
            },
            signed_on: date_column(&text(5)?)?,
            expires_on: opt(6)?.as_deref().map(date_column).transpose()?,
            document_sha256: text(7)?,
            document_name: text(8)?,
            added_at: time_column(&text(9)?)?,
            added_by: text(10)?,
            revoked_at: opt(11)?.as_deref().map(time_column).transpose()?,
            revoked_by: opt(12)?,
            revoke_reason: opt(13)?,
            replaced_at: opt(14)?.as_deref().map(time_column).transpose()?,
            replaced_by: r.get(15)?,
        })
    };
    Ok(build())
}

/// The LA's current agreement (revoked or not), if any.
pub(crate) fn current(conn: &Connection, la: &str) -> Result<Option<Agreement>, StoreError> {
    let sql = select_agreements!("WHERE la_code = ?1 AND replaced_at IS NULL");
    conn.query_row(sql, [la], agreement_from_row)
        .optional()?
        .transpose()
}

fn by_id(conn: &Connection, id: i64) -> Result<Agreement, StoreError> {
    let sql = select_agreements!("WHERE id = ?1");
    conn.query_row(sql, [id], agreement_from_row)?
}

/// What happened to an agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgreementEventKind {
    Added,
    Replaced,
    Revoked,
}

impl AgreementEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgreementEventKind::Added => "added",
            AgreementEventKind::Replaced => "replaced",
            AgreementEventKind::Revoked => "revoked",
        }
    }
}

/// One line of an LA's agreement history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementEvent {
    pub id: i64,
    pub agreement_id: i64,
    pub la_code: String,
    pub kind: AgreementEventKind,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub reason: Option<String>,
}

/// The result of putting an agreement on file.
#[derive(Debug, Clone)]
pub struct Added {
    pub agreement: Agreement,
    /// The agreement it took the place of, as it was before.
    pub replaced: Option<Agreement>,
}

fn event(
    conn: &Connection,
    agreement_id: i64,
    la: &str,
    kind: AgreementEventKind,
    now: &str,
    actor: &str,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO agreement_events (agreement_id, la_code, event, at, actor, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![agreement_id, la, kind.as_str(), now, actor, reason],
    )?;
    Ok(())
}

impl Store {
    /// Stores the document and puts the agreement on file, in place of the
    /// LA's current one if it has one; records the history and an audit
    /// entry in the same transaction.
    pub fn add_agreement(
        &mut self,
        new: &NewAgreement,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Added, StoreError> {
        self.keep_document(&new.document, &new.document_sha256)?;
        let at = timestamp(now);
        let tx = self.write()?;
        let replaced = current(&tx, &new.la_code)?;
        if let Some(old) = &replaced {
            tx.execute(
                "UPDATE agreements SET replaced_at = ?1 WHERE id = ?2",
                params![at, old.id],
            )?;
        }
        tx.execute(
            "INSERT INTO agreements (la_code, la_name, representative_name, representative_email,
                 signed_on, expires_on, document_sha256, document_name, added_at, added_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                new.la_code,
                new.la_name,
                new.representative.name,
                new.representative.email,
                new.signed_on.to_string(),
                new.expires_on.map(|d| d.to_string()),
                new.document_sha256,
                new.document_name,
                at,
                actor,
            ],
        )?;
        let id = tx.last_insert_rowid();
        let kind = if let Some(old) = &replaced {
            tx.execute(
                "UPDATE agreements SET replaced_by = ?1 WHERE id = ?2",
                params![id, old.id],
            )?;
            let reason = format!("replaced by agreement {id}");
            event(
                &tx,
                old.id,
                &new.la_code,
                AgreementEventKind::Replaced,
                &at,
                actor,
                Some(&reason),
            )?;
            Kind::AgreementReplaced
        } else {
            Kind::AgreementAdded
        };
        event(
            &tx,
            id,
            &new.la_code,
            AgreementEventKind::Added,
            &at,
            actor,
            None,
        )?;
        let agreement = by_id(&tx, id)?;
        let detail = json!({
            "agreement": agreement.to_json(),
            "replaced": replaced.as_ref().map(Agreement::to_json),
        });
        audit::append(&tx, now, kind, actor, Some(&new.la_code), &detail)?;
        tx.commit()?;
        Ok(Added {
            agreement,
            replaced,
        })
    }

    /// Revokes the LA's current agreement.
    pub fn revoke_agreement(
        &mut self,
        la: &str,
        reason: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Agreement, StoreError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(StoreError::NoReason);
        }
        let at = timestamp(now);
        let tx = self.write()?;
        let agreement =
            current(&tx, la)?.ok_or_else(|| StoreError::NoAgreement { la: la.to_string() })?;
        if let Some(revoked_at) = agreement.revoked_at {
            return Err(StoreError::AlreadyRevoked {
                la: la.to_string(),
                at: timestamp(revoked_at),
            });
        }
        tx.execute(
            "UPDATE agreements SET revoked_at = ?1, revoked_by = ?2, revoke_reason = ?3 WHERE id = ?4",
            params![at, actor, reason, agreement.id],
        )?;
        event(
            &tx,
            agreement.id,
            la,
            AgreementEventKind::Revoked,
            &at,
            actor,
            Some(reason),
        )?;
        let agreement = by_id(&tx, agreement.id)?;
        let detail = json!({ "agreement": agreement.to_json(), "reason": reason });
        audit::append(&tx, now, Kind::AgreementRevoked, actor, Some(la), &detail)?;
        tx.commit()?;
        Ok(agreement)
    }

    /// The LA's current agreement (possibly revoked or expired), if any.
    pub fn agreement(&self, la: &str) -> Result<Option<Agreement>, StoreError> {
        current(self.conn(), la)
    }

    /// Every LA's current agreement, in LA code order.
    pub fn agreements(&self) -> Result<Vec<Agreement>, StoreError> {
        let sql = select_agreements!("WHERE replaced_at IS NULL ORDER BY la_code");
        let mut stmt = self.conn().prepare(sql)?;
        let rows = stmt.query_map([], agreement_from_row)?;
        rows.map(|r| r?).collect()
    }

    /// Every agreement ever put on file for the LA, newest first.
    pub fn agreements_for(&self, la: &str) -> Result<Vec<Agreement>, StoreError> {
        let sql = select_agreements!("WHERE la_code = ?1 ORDER BY id DESC");
        let mut stmt = self.conn().prepare(sql)?;
        let rows = stmt.query_map([la], agreement_from_row)?;
        rows.map(|r| r?).collect()
    }

    /// The LA's agreement history, oldest first.
    pub fn agreement_history(&self, la: &str) -> Result<Vec<AgreementEvent>, StoreError> {
        let mut stmt = self.conn().prepare(
            "SELECT id, agreement_id, la_code, event, at, actor, reason
             FROM agreement_events WHERE la_code = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([la], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, agreement_id, la_code, kind, at, actor, reason) = row?;
            let kind = match kind.as_str() {
                "added" => AgreementEventKind::Added,
                "replaced" => AgreementEventKind::Replaced,
                "revoked" => AgreementEventKind::Revoked,
                _ => return Err(DbError::corrupt("agreement event", kind).into()),
            };
            out.push(AgreementEvent {
                id,
                agreement_id,
                la_code,
                kind,
                at: time_column(&at)?,
                actor,
                reason,
            });
        }
        Ok(out)
    }

    /// Writes the document under `agreements/<sha256>` (0600), durably,
    /// unless a copy is already there. Content-addressed, so a copy left by
    /// a transaction that then failed is harmless.
    fn keep_document(&self, bytes: &[u8], sha256: &str) -> Result<(), StoreError> {
        let dir = self.data_dir().join(AGREEMENTS_DIR);
        let kept = (|| {
            files::create_private_dir(&dir)?;
            if dir.join(sha256).is_file() {
                return Ok(());
            }
            files::write_atomically(&dir, sha256, bytes)
        })();
        kept.map_err(|source| StoreError::Document {
            path: dir.join(sha256),
            source,
        })
    }
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
