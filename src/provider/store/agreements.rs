//! Confidentiality agreements as stored: the current one per LA, every one
//! ever put on file, and their history (added, replaced, revoked). What may
//! be put on file is checked first ([`crate::provider::agreement`]).

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, Row, params};
use serde_json::json;

use super::{AGREEMENTS_DIR, Store, StoreError};
use crate::common::audit::{self, Kind};
use crate::common::db::{DbError, Optional, date_column, time_column};
use crate::common::files;
use crate::common::time::timestamp;
use crate::provider::agreement::{NewAgreement, Representative};

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
