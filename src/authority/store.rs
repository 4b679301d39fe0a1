//! The endpoint's store: one SQLite database, `data_dir/authority.db`, and
//! the only place the endpoint's SQL lives. Opened like every mishare
//! database ([`crate::common::db`]: owner-only, WAL, `synchronous = FULL`,
//! numbered migrations): transfers in progress and complete, their
//! receipts, and the endpoint's own hash-chained audit log
//! ([`crate::common::audit`]).
//!
//! Every key includes the provider identity, so one provider never sees or
//! touches another's transfer of the same id. `committed` is only ever set
//! to a length already fsynced to the partial file.
//!
//! The API is synchronous; the service calls it off the reactor.
//! One connection, behind a mutex: each call is a few small statements.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, params};

use crate::common::audit::{self, Kind, Verification};
use crate::common::db::{self, DbError};
use crate::wire::v1::{self, Receipt};

use super::manifest::Manifest;

/// The database file under `data_dir`.
pub const DATABASE_FILE: &str = "authority.db";

const SCHEMA: db::Schema = db::Schema {
    file: DATABASE_FILE,
    whose: "the endpoint's state",
    migrations: MIGRATIONS,
};

const MIGRATIONS: &[&str] = &[
    // 1: transfers (with their receipts) and the audit log.
    r#"
CREATE TABLE transfers (
    provider        TEXT NOT NULL,           -- the DNS name its certificate proved
    transfer_id     TEXT NOT NULL,
    report          TEXT NOT NULL,
    period          TEXT NOT NULL,
    classification  TEXT NOT NULL,
    size            INTEGER NOT NULL,
    sha256          BLOB NOT NULL,
    committed       INTEGER NOT NULL,        -- bytes fsynced to the partial file
    started_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,        -- last progress, for the idle sweep
    stored_as       TEXT,                    -- set when complete, with the receipt
    received_ms     INTEGER,
    signature       BLOB,
    PRIMARY KEY (provider, transfer_id),
    CHECK (committed >= 0 AND committed <= size),
    CHECK ((stored_as IS NULL) = (signature IS NULL)),
    CHECK ((stored_as IS NULL) = (received_ms IS NULL))
);
CREATE INDEX transfers_idle ON transfers(updated_ms) WHERE stored_as IS NULL;

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    la        TEXT,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#,
    // 2: receipts that bind who sent what to whom (receipt version 2). A
    // complete transfer's receipt is rebuilt from its row exactly as it was
    // signed: its version (1 for those completed before) and the LA code it
    // names (the provider, report, period and classification are the
    // row's own).
    r#"
ALTER TABLE transfers ADD COLUMN receipt_version INTEGER;
ALTER TABLE transfers ADD COLUMN receipt_la_code TEXT;
UPDATE transfers SET receipt_version = 1 WHERE stored_as IS NOT NULL;
"#,
    // 3: received files deleted from the inbox (retention, or by hand). The
    // transfer and its receipt stay; only the file goes.
    r#"
CREATE TABLE inbox_deletions (
    provider    TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    deleted_ms  INTEGER NOT NULL,
    why         TEXT NOT NULL,
    PRIMARY KEY (provider, transfer_id),
    FOREIGN KEY (provider, transfer_id) REFERENCES transfers(provider, transfer_id)
);
"#,
];

/// A transfer as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub provider: String,
    pub transfer_id: String,
    pub report: String,
    pub period: String,
    pub classification: String,
    pub size: u64,
    pub sha256: Vec<u8>,
    /// Bytes durable in the partial file (the size, once complete).
    pub committed: u64,
    pub updated_ms: i64,
    /// Set once the file is in the inbox.
    pub receipt: Option<Receipt>,
}

impl Transfer {
    /// Whether `m` describes the same transfer (a resumed push must).
    pub fn same_as(&self, m: &Manifest) -> bool {
        self.report == m.report
            && self.period == m.period
            && self.classification == m.classification
            && self.size == m.size
            && self.sha256 == m.sha256
    }

    /// The inbox file name.
    pub fn stored_as(&self) -> String {
        format!("{}_{}_{}.age", self.period, self.report, self.transfer_id)
    }
}

/// The endpoint's database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    /// This LA's code, recorded with every audit entry.
    code: String,
}

impl Store {
    /// Opens (creating if needed) `data_dir/authority.db`.
    pub fn open(data_dir: &Path, code: &str) -> Result<Self, DbError> {
        let conn = db::open(data_dir, &SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
            code: code.to_string(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (its
        // transaction rolls back), so a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The transfer `transfer_id` of `provider`, if any.
    pub fn get(&self, provider: &str, transfer_id: &str) -> Result<Option<Transfer>, DbError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("{SELECT} WHERE provider = ?1 AND transfer_id = ?2"),
                params![provider, transfer_id],
                read_transfer,
            )
            .optional()?)
    }

    /// Every transfer not complete.
    pub fn incomplete(&self) -> Result<Vec<Transfer>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("{SELECT} WHERE stored_as IS NULL"))?;
        let rows = stmt.query_map([], read_transfer)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The transfer ids and sizes of `provider`'s incomplete transfers.
    pub fn unfinished_of(&self, provider: &str) -> Result<Vec<(String, u64)>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT transfer_id, size FROM transfers WHERE provider = ?1 AND stored_as IS NULL",
        )?;
        let rows = stmt.query_map([provider], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every file received (complete, with its receipt), oldest first.
    pub fn received(&self) -> Result<Vec<Transfer>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE stored_as IS NOT NULL ORDER BY received_ms, provider, transfer_id"
        ))?;
        let rows = stmt.query_map([], read_transfer)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The received files with this ciphertext SHA-256 (one, unless a
    /// provider sent the same bytes twice).
    pub fn received_with_digest(&self, sha256: &[u8]) -> Result<Vec<Transfer>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE stored_as IS NOT NULL AND sha256 = ?1 ORDER BY received_ms"
        ))?;
        let rows = stmt.query_map([sha256], read_transfer)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Received files not yet deleted from the inbox that were received
    /// before `cutoff_ms`, oldest first.
    pub fn received_before(&self, cutoff_ms: i64) -> Result<Vec<Transfer>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE stored_as IS NOT NULL AND received_ms < ?1
                 AND NOT EXISTS (SELECT 1 FROM inbox_deletions d
                     WHERE d.provider = transfers.provider
                       AND d.transfer_id = transfers.transfer_id)
                 ORDER BY received_ms"
        ))?;
        let rows = stmt.query_map([cutoff_ms], read_transfer)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that a received file was deleted from the inbox, with its
    /// audit entry, in one transaction; `false` if it already was.
    pub fn record_deletion(
        &self,
        provider: &str,
        transfer_id: &str,
        why: &str,
        actor: &str,
        detail: &serde_json::Value,
    ) -> Result<bool, DbError> {
        let mut conn = self.conn();
        let tx = db::write(&mut conn)?;
        let now = Utc::now();
        let added = tx.execute(
            "INSERT OR IGNORE INTO inbox_deletions (provider, transfer_id, deleted_ms, why)
                 VALUES (?1, ?2, ?3, ?4)",
            params![provider, transfer_id, now.timestamp_millis(), why],
        )?;
        if added == 1 {
            audit::append(
                &tx,
                now,
                Kind::InboxFileDeleted,
                actor,
                Some(&self.code),
                detail,
            )?;
        }
        tx.commit()?;
        Ok(added == 1)
    }

    /// When each deleted received file was deleted, by provider and
    /// transfer id.
    pub fn deletions(&self) -> Result<HashMap<(String, String), i64>, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT provider, transfer_id, deleted_ms FROM inbox_deletions")?;
        let rows = stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Incomplete transfers with no progress since `cutoff_ms`.
    pub fn idle_before(&self, cutoff_ms: i64) -> Result<Vec<Transfer>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE stored_as IS NULL AND updated_ms < ?1"
        ))?;
        let rows = stmt.query_map([cutoff_ms], read_transfer)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that `committed` bytes of the transfer are durable (fsynced).
    pub fn record_committed(
        &self,
        provider: &str,
        m: &Manifest,
        committed: u64,
        now_ms: i64,
    ) -> Result<(), DbError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO transfers (provider, transfer_id, report, period, classification,
                 size, sha256, committed, started_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
             ON CONFLICT (provider, transfer_id) DO UPDATE
                 SET committed = excluded.committed, updated_ms = excluded.updated_ms
                 WHERE stored_as IS NULL",
            params![
                provider,
                m.transfer_id,
                m.report,
                m.period,
                m.classification,
                m.size as i64,
                m.sha256.as_slice(),
                committed as i64,
                now_ms,
            ],
        )?;
        Ok(())
    }

    /// Forgets an incomplete transfer (its partial file is gone or going).
    pub fn forget(&self, provider: &str, transfer_id: &str) -> Result<(), DbError> {
        self.conn().execute(
            "DELETE FROM transfers WHERE provider = ?1 AND transfer_id = ?2
                 AND stored_as IS NULL",
            params![provider, transfer_id],
        )?;
        Ok(())
    }

    /// Whether the database can be written now: takes the write lock and
    /// lets it go, changing nothing.
    pub fn probe_write(&self) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = crate::common::db::write(&mut conn)?;
        tx.rollback()?;
        Ok(())
    }

    /// This LA's code, which receipts name.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Marks the transfer complete with its receipt and audits it, in one
    /// transaction: a receipt exists only with its audit entry. The receipt
    /// must name the row's provider, report, period and classification, so
    /// that the row rebuilds it exactly.
    pub fn complete(
        &self,
        provider: &str,
        receipt: &Receipt,
        kind: Kind,
        detail: &serde_json::Value,
    ) -> Result<(), DbError> {
        if receipt.provider != provider {
            return Err(DbError::corrupt(
                "receipt",
                format!(
                    "{provider}/{}: the receipt names provider {:?}",
                    receipt.transfer_id, receipt.provider
                ),
            ));
        }
        let mut conn = self.conn();
        let tx = db::write(&mut conn)?;
        let changed = tx.execute(
            "UPDATE transfers SET committed = size, stored_as = ?3, received_ms = ?4,
                 signature = ?5, updated_ms = ?4, receipt_version = ?8, receipt_la_code = ?9
             WHERE provider = ?1 AND transfer_id = ?2 AND stored_as IS NULL
                 AND size = ?6 AND sha256 = ?7
                 AND report = ?10 AND period = ?11 AND classification = ?12",
            params![
                provider,
                receipt.transfer_id,
                receipt.stored_as,
                receipt.received_unix_ms,
                receipt.signature,
                receipt.size as i64,
                receipt.sha256,
                receipt.version,
                receipt.la_code,
                receipt.report,
                receipt.period,
                classification_name(receipt.classification),
            ],
        )?;
        if changed != 1 {
            return Err(DbError::corrupt(
                "transfer",
                format!(
                    "{provider}/{}: no incomplete row like the receipt's to complete",
                    receipt.transfer_id
                ),
            ));
        }
        audit::append(
            &tx,
            Utc::now(),
            kind,
            &actor(provider),
            Some(&self.code),
            detail,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes an incomplete transfer idle since before `cutoff_ms` and
    /// audits it; `false` if it made progress meanwhile or is gone.
    pub fn remove_idle(
        &self,
        provider: &str,
        transfer_id: &str,
        cutoff_ms: i64,
        detail: &serde_json::Value,
    ) -> Result<bool, DbError> {
        let mut conn = self.conn();
        let tx = db::write(&mut conn)?;
        let removed = tx.execute(
            "DELETE FROM transfers WHERE provider = ?1 AND transfer_id = ?2
                 AND stored_as IS NULL AND updated_ms < ?3",
            params![provider, transfer_id, cutoff_ms],
        )?;
        if removed == 1 {
            audit::append(
                &tx,
                Utc::now(),
                Kind::PartialRemoved,
                "endpoint",
                Some(&self.code),
                detail,
            )?;
        }
        tx.commit()?;
        Ok(removed == 1)
    }

    /// Appends one audit entry on its own.
    pub fn audit(
        &self,
        kind: Kind,
        actor: &str,
        detail: &serde_json::Value,
    ) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = db::write(&mut conn)?;
        audit::append(&tx, Utc::now(), kind, actor, Some(&self.code), detail)?;
        tx.commit()?;
        Ok(())
    }

    /// Checks the audit chain.
    pub fn verify_audit(&self) -> Result<Verification, DbError> {
        audit::verify(&self.conn())
    }

    /// Every audit entry, in order.
    pub fn audit_entries(&self) -> Result<Vec<audit::Entry>, DbError> {
        audit::entries(&self.conn(), None)
    }
}

/// How a provider appears as an audit actor.
pub fn actor(provider: &str) -> String {
    format!("provider:{provider}")
}

const SELECT: &str = "SELECT provider, transfer_id, report, period, classification, size, sha256,
    committed, updated_ms, stored_as, received_ms, signature, receipt_version, receipt_la_code
    FROM transfers";

/// The manifest's classification (`internal` or `published`, as stored) as
/// the proto's enum; anything else is `CLASSIFICATION_UNSPECIFIED`.
pub fn wire_classification(name: &str) -> v1::Classification {
    match name {
        "internal" => v1::Classification::Internal,
        "published" => v1::Classification::Published,
        _ => v1::Classification::Unspecified,
    }
}

/// The stored name of the proto's classification (empty if it is neither).
fn classification_name(value: i32) -> &'static str {
    match v1::Classification::try_from(value) {
        Ok(v1::Classification::Internal) => "internal",
        Ok(v1::Classification::Published) => "published",
        _ => "",
    }
}

fn read_transfer(r: &rusqlite::Row<'_>) -> rusqlite::Result<Transfer> {
    let provider: String = r.get(0)?;
    let transfer_id: String = r.get(1)?;
    let report: String = r.get(2)?;
    let period: String = r.get(3)?;
    let classification: String = r.get(4)?;
    let size = r.get::<_, i64>(5)? as u64;
    let sha256: Vec<u8> = r.get(6)?;
    let stored_as: Option<String> = r.get(9)?;
    let received_ms: Option<i64> = r.get(10)?;
    let signature: Option<Vec<u8>> = r.get(11)?;
    let version: Option<u32> = r.get(12)?;
    let la_code: Option<String> = r.get(13)?;
    let receipt = match (stored_as, received_ms, signature) {
        (Some(stored_as), Some(received_unix_ms), Some(signature)) => {
            let signed = Receipt {
                transfer_id: transfer_id.clone(),
                sha256: sha256.clone(),
                size,
                stored_as,
                received_unix_ms,
                signature,
                ..Receipt::default()
            };
            // Rebuilt as it was signed: a version 1 receipt (completed
            // before migration 2) names none of what version 2 binds.
            Some(match version {
                Some(v) if v >= 2 => Receipt {
                    provider: provider.clone(),
                    la_code: la_code.unwrap_or_default(),
                    report: report.clone(),
                    period: period.clone(),
                    classification: wire_classification(&classification) as i32,
                    version: v,
                    ..signed
                },
                _ => signed,
            })
        }
        _ => None,
    };
    Ok(Transfer {
        provider,
        transfer_id,
        report,
        period,
        classification,
        size,
        sha256,
        committed: r.get::<_, i64>(7)? as u64,
        updated_ms: r.get(8)?,
        receipt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{DevCa, Usage, Validity};
    use crate::receipt::{self, ReceiptSigner, Version};

    fn manifest(transfer_id: &str) -> Manifest {
        Manifest {
            transfer_id: transfer_id.into(),
            report: "referrals-monthly".into(),
            period: "2012-10".into(),
            classification: "published",
            size: 100,
            sha256: [9; 32],
            offset: 0,
        }
    }

    fn unsigned(m: &Manifest, provider: &str, la_code: &str) -> Receipt {
        Receipt {
            transfer_id: m.transfer_id.clone(),
            sha256: m.sha256.to_vec(),
            size: m.size,
            stored_as: m.stored_as(),
            received_unix_ms: 1_700_000_000_000,
            provider: provider.into(),
            la_code: la_code.into(),
            report: m.report.clone(),
            period: m.period.clone(),
            classification: wire_classification(m.classification) as i32,
            ..Receipt::default()
        }
    }

    /// A receipt stored before receipts bound who sent what (version 1)
    /// comes back as it was signed, and verifies; one stored now comes back
    /// as version 2, naming the provider, LA, report, period and
    /// classification.
    #[test]
    fn stored_receipts_are_rebuilt_as_they_were_signed() {
        let ca = DevCa::new("ca").expect("ca");
        let la = ca
            .issue("la-e09000002.test", Usage::Server, Validity::Current)
            .expect("la");
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("state");
        let old = manifest("transfer-old-1");
        let v1 = receipt::signed_as_v1(&la.identity(), unsigned(&old, "", ""));
        {
            // The database as mishare left it before migration 2.
            let before = db::Schema {
                migrations: &MIGRATIONS[..1],
                ..SCHEMA
            };
            let conn = db::open(&data, &before).expect("old schema");
            conn.execute(
                "INSERT INTO transfers (provider, transfer_id, report, period, classification,
                     size, sha256, committed, started_ms, updated_ms, stored_as, received_ms,
                     signature)
                 VALUES ('provider.test', ?1, ?2, ?3, ?4, ?5, ?6, ?5, 1, 1, ?7, ?8, ?9)",
                params![
                    old.transfer_id,
                    old.report,
                    old.period,
                    old.classification,
                    old.size as i64,
                    old.sha256.as_slice(),
                    v1.stored_as,
                    v1.received_unix_ms,
                    v1.signature,
                ],
            )
            .expect("an old complete transfer");
        }

        let store = Store::open(&data, "E09000002").expect("migrated");
        let rebuilt = store
            .get("provider.test", &old.transfer_id)
            .expect("get")
            .and_then(|t| t.receipt)
            .expect("its receipt");
        assert_eq!(rebuilt, v1);
        assert_eq!(
            receipt::verify(&rebuilt, &la.cert_der).expect("still valid"),
            Version::V1
        );

        let new = manifest("transfer-new-1");
        store
            .record_committed("provider.test", &new, new.size, 2)
            .expect("record");
        let signer = ReceiptSigner::new(&la.identity()).expect("signer");
        let v2 = signer
            .sign(unsigned(&new, "provider.test", store.code()))
            .expect("sign");
        store
            .complete("provider.test", &v2, Kind::TransferAccepted, &json())
            .expect("complete");
        let rebuilt = store
            .get("provider.test", &new.transfer_id)
            .expect("get")
            .and_then(|t| t.receipt)
            .expect("its receipt");
        assert_eq!(rebuilt, v2);
        assert_eq!(rebuilt.la_code, "E09000002");
        assert_eq!(
            receipt::verify(&rebuilt, &la.cert_der).expect("valid"),
            Version::V2
        );
    }

    /// A receipt that names another report than the transfer's is never
    /// stored with it: the row could not rebuild it.
    #[test]
    fn a_receipt_unlike_its_transfer_is_not_stored() {
        let ca = DevCa::new("ca").expect("ca");
        let la = ca
            .issue("la-e09000002.test", Usage::Server, Validity::Current)
            .expect("la");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state"), "E09000002").expect("open");
        let m = manifest("transfer-0001");
        store
            .record_committed("provider.test", &m, m.size, 1)
            .expect("record");
        let signer = ReceiptSigner::new(&la.identity()).expect("signer");
        let other_report = signer
            .sign(Receipt {
                report: "another-report".into(),
                ..unsigned(&m, "provider.test", "E09000002")
            })
            .expect("sign");
        assert!(
            store
                .complete(
                    "provider.test",
                    &other_report,
                    Kind::TransferAccepted,
                    &json()
                )
                .is_err()
        );
        let other_provider = signer
            .sign(unsigned(&m, "other.test", "E09000002"))
            .expect("sign");
        assert!(
            store
                .complete(
                    "provider.test",
                    &other_provider,
                    Kind::TransferAccepted,
                    &json()
                )
                .is_err()
        );
        let t = store
            .get("provider.test", &m.transfer_id)
            .expect("get")
            .expect("row");
        assert!(t.receipt.is_none());
    }

    fn json() -> serde_json::Value {
        serde_json::json!({})
    }
}
