//! The outbox's rows: one delivery per LA and run, its state, and the
//! endpoint's receipt once it has one. The state machine itself (what may
//! follow what, backoff, when a delivery is dead) is [`crate::provider::outbox`];
//! this module only reads and writes, each change one transaction with its
//! audit entry.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{Row, params};
use serde_json::json;

use super::{NewRelease, Store, StoreError};
use crate::common::audit::{self, Kind};
use crate::common::db::{DbError, Optional, time_column};
use crate::common::encoding::{hex, sha256_from_hex, unhex};
use crate::common::fault::{CrashPoint, dangerous_crash_point};
use crate::common::names::is_transfer_id;
use crate::common::time::timestamp;
use crate::provider::spool::SPOOL_DIR;
use crate::sanitiser::Classification;
use crate::wire::v1;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Spooled, not yet sent.
    Queued,
    /// A push is (or was, if the process stopped) in progress.
    Sending,
    /// The endpoint stored the file; its receipt is kept.
    Delivered,
    /// The gate refused it; nothing was committed.
    Refused,
    /// The endpoint refused it for good, or attempts or time ran out.
    Dead,
    /// It could not be completed; it may be resumed with the same ciphertext.
    Failed,
    /// It was dead and an operator ended it (`mishare abandon`): its
    /// ciphertext is removed and it is never sent. Stored as `dead` with
    /// `abandoned_at` set.
    Abandoned,
}

impl DeliveryState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Sending => "sending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Refused => "refused",
            DeliveryState::Dead => "dead",
            DeliveryState::Failed => "failed",
            DeliveryState::Abandoned => "abandoned",
        }
    }

    fn parse(s: &str) -> Result<Self, DbError> {
        Ok(match s {
            "queued" => DeliveryState::Queued,
            "sending" => DeliveryState::Sending,
            "delivered" => DeliveryState::Delivered,
            "refused" => DeliveryState::Refused,
            "dead" => DeliveryState::Dead,
            "failed" => DeliveryState::Failed,
            "abandoned" => DeliveryState::Abandoned,
            _ => return Err(DbError::corrupt("delivery state", s)),
        })
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One LA's file of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub run_id: i64,
    pub la: String,
    pub transfer_id: String,
    pub report: String,
    pub period: String,
    pub classification: Classification,
    pub state: DeliveryState,
    /// Ciphertext bytes.
    pub size: u64,
    /// SHA-256 of the ciphertext.
    pub sha256: [u8; 32],
    /// The spooled ciphertext, while it is kept.
    pub spool_path: Option<PathBuf>,
    pub attempts: u32,
    /// The gate's reason code, when refused.
    pub reason: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When a failed delivery may be tried again (`None`: at once).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When its age (for `max_age_hours`) began: when it was queued, or
    /// requeued by `mishare retry`.
    pub age_from: DateTime<Utc>,
}

impl Delivery {
    /// The digest in lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// What a delivery is for, before it is spooled.
#[derive(Debug, Clone, Copy)]
pub struct Addressed<'a> {
    pub run_id: i64,
    pub la: &'a str,
    pub report: &'a str,
    pub period: &'a str,
    pub classification: Classification,
}

/// A delivery about to be recorded: its file is sealed and spooled.
#[derive(Debug, Clone, Copy)]
pub struct NewDelivery<'a> {
    pub to: Addressed<'a>,
    pub transfer_id: &'a str,
    /// The spool file's name under `data_dir/spool`.
    pub spool_file: &'a str,
    pub size: u64,
    pub sha256: &'a [u8; 32],
}

/// A receipt as stored with its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    pub transfer_id: String,
    pub stored_as: String,
    pub received_unix_ms: i64,
    /// How its signature was checked, in words.
    pub verification: String,
}

/// How a delivery ends without reaching the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// The gate refused it; its ciphertext is removed.
    Refused,
    /// It failed and may be tried again; its ciphertext is kept.
    Failed,
    /// It is dead; its ciphertext is kept for `mishare retry`.
    Dead,
}

macro_rules! select_deliveries {
    ($rest:literal) => {
        concat!(
            "SELECT id, run_id, la_code, transfer_id, report, period, classification, \
             CASE WHEN abandoned_at IS NULL THEN state ELSE 'abandoned' END, size, sha256, spool_file, attempts, reason, last_error, created_at, \
             next_attempt_at, coalesce(age_from, created_at) \
             FROM deliveries ",
            $rest
        )
    };
}

fn from_row(spool: &Path, r: &Row<'_>) -> rusqlite::Result<Result<Delivery, DbError>> {
    let build = || -> Result<Delivery, DbError> {
        let classification: String = r.get(6)?;
        let sha: String = r.get(9)?;
        let sha256 =
            sha256_from_hex(&sha).ok_or_else(|| DbError::corrupt("delivery digest", &sha))?;
        let spool_file: Option<String> = r.get(10)?;
        let spool_path = match spool_file {
            None => None,
            // The name is one the outbox made from a checked id; check again
            // so an edited database cannot point outside the spool.
            Some(name) => match name.strip_suffix(".age") {
                Some(id) if is_transfer_id(id) => Some(spool.join(&name)),
                _ => return Err(DbError::corrupt("spool file name", name)),
            },
        };
        Ok(Delivery {
            id: r.get(0)?,
            run_id: r.get(1)?,
            la: r.get(2)?,
            transfer_id: r.get(3)?,
            report: r.get(4)?,
            period: r.get(5)?,
            classification: match classification.as_str() {
                "internal" => Classification::Internal,
                "published" => Classification::Published,
                other => return Err(DbError::corrupt("classification", other)),
            },
            state: DeliveryState::parse(&r.get::<_, String>(7)?)?,
            size: u64::try_from(r.get::<_, i64>(8)?)
                .map_err(|_| DbError::corrupt("delivery size", "negative"))?,
            sha256,
            spool_path,
            attempts: r.get(11)?,
            reason: r.get(12)?,
            last_error: r.get(13)?,
            created_at: time_column(&r.get::<_, String>(14)?)?,
            next_attempt_at: r
                .get::<_, Option<String>>(15)?
                .as_deref()
                .map(time_column)
                .transpose()?,
            age_from: time_column(&r.get::<_, String>(16)?)?,
        })
    };
    Ok(build())
}

/// The counter a daemon's state watch reads to notice new or requeued
/// deliveries at once.
fn bump_outbox_generation(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("UPDATE outbox_generation SET n = n + 1 WHERE id = 1", [])?;
    Ok(())
}

impl Store {
    fn spool_dir(&self) -> PathBuf {
        self.data_dir().join(SPOOL_DIR)
    }

    fn deliveries_where(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Delivery>, StoreError> {
        let spool = self.spool_dir();
        let mut stmt = self.conn().prepare(sql)?;
        let rows = stmt.query_map(params, |r| from_row(&spool, r))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    /// Records a delivery as queued with its spooled file, size and digest,
    /// and its release in the ledger, and audits both, in one transaction:
    /// a crash leaves both or neither.
    pub fn record_spooled(
        &mut self,
        new: &NewDelivery<'_>,
        release: &NewRelease<'_>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Delivery, StoreError> {
        let to = &new.to;
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO deliveries (run_id, la_code, transfer_id, report, period, classification,
                 state, size, sha256, spool_file, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9, ?10, ?10)",
            params![
                to.run_id,
                to.la,
                new.transfer_id,
                to.report,
                to.period,
                to.classification.as_str(),
                new.size as i64,
                hex(new.sha256),
                new.spool_file,
                timestamp(now),
            ],
        )?;
        let id = tx.last_insert_rowid();
        audit::append(
            &tx,
            now,
            Kind::DeliverySpooled,
            actor,
            Some(to.la),
            &json!({
                "delivery": id,
                "run": to.run_id,
                "transfer_id": new.transfer_id,
                "report": to.report,
                "period": to.period,
                "size": new.size,
                "sha256": hex(new.sha256),
            }),
        )?;
        // A crash here, inside the transaction, must lose the delivery row
        // too: the fault suite aborts at this point.
        dangerous_crash_point(CrashPoint::BeforeLedger);
        Store::insert_release(&tx, id, to, new.transfer_id, release, actor, now)?;
        tx.commit()?;
        self.delivery(id)
    }

    /// The delivery with this id.
    pub fn delivery(&self, id: i64) -> Result<Delivery, StoreError> {
        let spool = self.spool_dir();
        self.conn()
            .query_row(select_deliveries!("WHERE id = ?1"), [id], |r| {
                from_row(&spool, r)
            })
            .optional()?
            .transpose()?
            .ok_or(StoreError::UnknownDelivery(id))
    }

    /// Deliveries of a run, in id order.
    pub fn deliveries_of_run(&self, run_id: i64) -> Result<Vec<Delivery>, StoreError> {
        self.deliveries_where(
            select_deliveries!("WHERE run_id = ?1 ORDER BY id"),
            [run_id],
        )
    }

    /// Deliveries not finished yet (queued, sending or failed), in id order.
    pub fn pending_deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        self.deliveries_where(
            select_deliveries!("WHERE state IN ('queued', 'sending', 'failed') ORDER BY id"),
            [],
        )
    }

    /// Deliveries in `state`, in id order.
    pub fn deliveries_in(&self, state: DeliveryState) -> Result<Vec<Delivery>, StoreError> {
        // An abandoned delivery is stored as dead with `abandoned_at` set;
        // the schema's triggers let no other state have it.
        let (stored, abandoned) = match state {
            DeliveryState::Abandoned => (DeliveryState::Dead, true),
            other => (other, false),
        };
        self.deliveries_where(
            select_deliveries!("WHERE state = ?1 AND (abandoned_at IS NOT NULL) = ?2 ORDER BY id"),
            params![stored.as_str(), abandoned],
        )
    }

    /// Marks a push attempt as begun.
    pub fn mark_sending(&mut self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.execute(
            "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, updated_at = ?2
             WHERE id = ?1",
            params![id, timestamp(now)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Stores the endpoint's receipt and marks the delivery delivered, with
    /// its audit entry, in one transaction. Returns the spooled file, which
    /// the caller may now remove.
    pub fn record_receipt(
        &mut self,
        id: i64,
        receipt: &v1::Receipt,
        verification: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PathBuf>, StoreError> {
        let before = self.delivery(id)?;
        let tx = self.write()?;
        // Version 1 names none of provider..classification: NULL, as for
        // the receipts stored before migration 4.
        let v2 = receipt.version >= 2;
        let bound = |text: &str| v2.then(|| text.to_string());
        tx.execute(
            "INSERT INTO receipts (delivery_id, transfer_id, sha256, size, stored_as,
                 received_unix_ms, signature, verification, stored_at, version, provider,
                 la_code, report, period, classification)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                id,
                receipt.transfer_id,
                hex(&receipt.sha256),
                receipt.size as i64,
                receipt.stored_as,
                receipt.received_unix_ms,
                receipt.signature,
                verification,
                timestamp(now),
                receipt.version.max(1),
                bound(&receipt.provider),
                bound(&receipt.la_code),
                bound(&receipt.report),
                bound(&receipt.period),
                v2.then_some(receipt.classification),
            ],
        )?;
        tx.execute(
            "UPDATE deliveries SET state = 'delivered', spool_file = NULL, last_error = NULL,
                 updated_at = ?2 WHERE id = ?1",
            params![id, timestamp(now)],
        )?;
        audit::append(
            &tx,
            now,
            Kind::DeliveryDelivered,
            actor,
            Some(&before.la),
            &json!({
                "delivery": id,
                "transfer_id": receipt.transfer_id,
                "stored_as": receipt.stored_as,
                "size": receipt.size,
                "sha256": hex(&receipt.sha256),
                "received_unix_ms": receipt.received_unix_ms,
                "receipt_signature": verification,
            }),
        )?;
        Store::release_delivered(&tx, id, &before.la, actor, now)?;
        tx.commit()?;
        Ok(before.spool_path)
    }

    /// Records how a delivery ended without reaching the endpoint, with its
    /// audit entry (`detail` gains the delivery and transfer id). Returns
    /// the spooled file when the caller should now remove it (a refusal:
    /// nothing withheld is sent later by itself).
    #[allow(
        clippy::too_many_arguments,
        reason = "every field is recorded; a struct would only rename them"
    )]
    pub fn record_unsent(
        &mut self,
        id: i64,
        how: Unsent,
        reason: Option<&str>,
        error: &str,
        mut detail: serde_json::Value,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PathBuf>, StoreError> {
        let before = self.delivery(id)?;
        let (state, kind) = match how {
            Unsent::Refused => (DeliveryState::Refused, Kind::DeliveryRefused),
            Unsent::Failed => (DeliveryState::Failed, Kind::DeliveryFailed),
            Unsent::Dead => (DeliveryState::Dead, Kind::DeliveryFailed),
        };
        let keep = how != Unsent::Refused;
        let tx = self.write()?;
        tx.execute(
            "UPDATE deliveries SET state = ?2, reason = ?3, last_error = ?4, updated_at = ?5,
                 spool_file = CASE WHEN ?6 THEN spool_file ELSE NULL END
             WHERE id = ?1",
            params![id, state.as_str(), reason, error, timestamp(now), keep],
        )?;
        detail["delivery"] = json!(id);
        detail["transfer_id"] = json!(before.transfer_id);
        audit::append(&tx, now, kind, actor, Some(&before.la), &detail)?;
        tx.commit()?;
        Ok(if keep { None } else { before.spool_path })
    }

    /// When a failed delivery may be tried again.
    pub fn set_next_attempt(&mut self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.execute(
            "UPDATE deliveries SET next_attempt_at = ?2 WHERE id = ?1 AND state = 'failed'",
            params![id, timestamp(at)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Deliveries a stopped process left `sending` are queued again (each
    /// resumes from what its endpoint committed, and asks the gate again).
    /// Returns how many.
    pub fn requeue_interrupted(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let n = tx.execute(
            "UPDATE deliveries SET state = 'queued', next_attempt_at = NULL, updated_at = ?1,
                 last_error = 'interrupted: the daemon stopped during the push'
             WHERE state = 'sending'",
            [timestamp(now)],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Queues dead delivery `id` again: its attempts start from zero and its
    /// age from `now`; a running daemon notices (through
    /// `outbox_generation`). The caller has checked that it may.
    pub fn requeue_dead(
        &mut self,
        id: i64,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Delivery, StoreError> {
        let d = self.delivery(id)?;
        let tx = self.write()?;
        tx.execute(
            "UPDATE deliveries SET state = 'queued', attempts = 0, next_attempt_at = NULL,
                 age_from = ?2, updated_at = ?2
             WHERE id = ?1 AND state = 'dead'",
            params![id, timestamp(now)],
        )?;
        bump_outbox_generation(&tx)?;
        audit::append(
            &tx,
            now,
            Kind::DeliveryRequeued,
            actor,
            Some(&d.la),
            &json!({
                "delivery": id,
                "transfer_id": d.transfer_id,
                "previous_attempts": d.attempts,
                "last_error": d.last_error,
            }),
        )?;
        tx.commit()?;
        self.delivery(id)
    }

    /// Ends dead delivery `id` for good (`mishare abandon`): records who,
    /// when and why, forgets its spooled file and audits the step, in one
    /// transaction. Returns the spooled file, which the caller now removes.
    /// Refuses, in this order, a delivery that does not exist, one that is
    /// not dead ([`StoreError::NotDead`], also when it stopped being dead
    /// meanwhile, requeued by `mishare retry`: it is not touched) and a
    /// blank reason.
    pub fn abandon_dead(
        &mut self,
        id: i64,
        reason: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PathBuf>, StoreError> {
        let d = self.delivery(id)?;
        if d.state != DeliveryState::Dead {
            return Err(StoreError::NotDead { id, state: d.state });
        }
        if reason.trim().is_empty() {
            return Err(StoreError::NoReason);
        }
        let tx = self.write()?;
        let changed = tx.execute(
            "UPDATE deliveries SET abandoned_at = ?2, abandoned_by = ?3, abandon_reason = ?4,
                 spool_file = NULL, updated_at = ?2
             WHERE id = ?1 AND state = 'dead' AND abandoned_at IS NULL",
            params![id, timestamp(now), actor, reason],
        )?;
        if changed == 0 {
            drop(tx);
            return Err(StoreError::NotDead {
                id,
                state: self.delivery(id)?.state,
            });
        }
        audit::append(
            &tx,
            now,
            Kind::DeliveryAbandoned,
            actor,
            Some(&d.la),
            &json!({
                "delivery": id,
                "transfer_id": d.transfer_id,
                "report": d.report,
                "period": d.period,
                "size": d.size,
                "sha256": d.sha256_hex(),
                "attempts": d.attempts,
                "last_error": d.last_error,
                "reason": reason,
                "ciphertext_removed": d.spool_path.is_some(),
            }),
        )?;
        tx.commit()?;
        Ok(d.spool_path)
    }

    /// Tells a running daemon, through its state watch, that deliveries
    /// were queued for it (by `send-now`, which hands them over).
    pub fn wake_daemon(&mut self) -> Result<(), StoreError> {
        let tx = self.write()?;
        bump_outbox_generation(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// The receipt kept for a delivery, if any.
    pub fn receipt(&self, delivery_id: i64) -> Result<Option<StoredReceipt>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT transfer_id, stored_as, received_unix_ms, verification FROM receipts
                 WHERE delivery_id = ?1",
                [delivery_id],
                |r| {
                    Ok(StoredReceipt {
                        transfer_id: r.get(0)?,
                        stored_as: r.get(1)?,
                        received_unix_ms: r.get(2)?,
                        verification: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// A stored receipt as the endpoint sent it (signature included), for
    /// `mishare receipt export` and offline verification; `None` if no
    /// receipt is stored for `transfer_id`.
    pub fn wire_receipt(&self, transfer_id: &str) -> Result<Option<v1::Receipt>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT sha256, size, stored_as, received_unix_ms, signature, version, provider,
                     la_code, report, period, classification
                 FROM receipts WHERE transfer_id = ?1",
                [transfer_id],
                |r| {
                    let signed = (
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                    );
                    let bound = (
                        r.get::<_, u32>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                        r.get::<_, Option<String>>(9)?,
                        r.get::<_, Option<i32>>(10)?,
                    );
                    Ok((signed, bound))
                },
            )
            .optional()?;
        row.map(|(signed, bound)| {
            let (sha256, size, stored_as, received_unix_ms, signature) = signed;
            let (version, provider, la_code, report, period, classification) = bound;
            Ok(v1::Receipt {
                transfer_id: transfer_id.to_string(),
                sha256: unhex(&sha256)
                    .ok_or_else(|| DbError::corrupt("receipt digest", &sha256))?,
                size: u64::try_from(size)
                    .map_err(|_| DbError::corrupt("receipt size", "negative"))?,
                stored_as,
                received_unix_ms,
                signature,
                provider: provider.unwrap_or_default(),
                la_code: la_code.unwrap_or_default(),
                report: report.unwrap_or_default(),
                period: period.unwrap_or_default(),
                classification: classification.unwrap_or_default(),
                // On the wire, version 1 is the field unset.
                version: if version >= 2 { version } else { 0 },
            })
        })
        .transpose()
    }
}
