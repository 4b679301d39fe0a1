//! The outbox: report runs, one delivery per LA and run, the spooled
//! ciphertext and the receipts.
//!
//! A delivery is born **spooled**: its file sealed with age to the LA's
//! recipients and written to `data_dir/spool/<transfer id>.age` (owner-only,
//! file and directory fsynced), its size and SHA-256 stored, all before the
//! first byte goes out. age uses a fresh file key each time, so a resumed
//! transfer must send these same bytes; only ciphertext ever touches disk.
//!
//! ```text
//! queued ─► sending ─► delivered            (receipt stored, spool removed)
//!    ▲         │ └───► refused              (the gate said no; spool removed)
//!    │         ├─────► failed ─► (backoff) ─► sending …   (spool kept)
//!    │         └─────► dead                 (the endpoint refused it for good,
//!    │                   │                   or attempts or age ran out; spool kept)
//!    └── mishare retry ──┘                  (the gate asked again)
//! ```
//!
//! The ciphertext is kept until the receipt is stored (or the gate refuses
//! the delivery), so a dead delivery can be retried with the same bytes.
//! A delivery left `sending` by a stopped process is queued again at the
//! next start ([`recover_interrupted`]) and resumes from what the endpoint
//! committed.
//!
//! Every change of state is one transaction with its audit entry.

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{Row, params};
use serde_json::json;

use crate::audit::{self, Kind};
use crate::config::DeliveryPolicy;
use crate::gate::Reason;
use crate::sanitiser::Classification;
use crate::seal::{self, Recipients, SealError};
use crate::store::{Optional, Store, StoreError, hex, parse_timestamp, timestamp};
use crate::wire::v1;

/// The folder under `data_dir` holding spooled ciphertext.
pub const SPOOL_DIR: &str = "spool";

/// Why the outbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file could not be sealed.
    #[error("cannot seal the file for {la}: {source}")]
    Seal {
        la: String,
        #[source]
        source: Box<SealError>,
    },
    /// The spool could not be written or read.
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The system could not give random bytes for a transfer id.
    #[error("cannot make a transfer id: {0}")]
    Random(String),
    /// No delivery has this id.
    #[error("there is no delivery {0}")]
    UnknownDelivery(i64),
}

/// Whether `id` is a transfer id as the wire contract allows:
/// `[A-Za-z0-9-]{8,64}`.
pub fn is_transfer_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A fresh transfer id: 128 random bits in lower-case hex (32 characters),
/// unique per provider without coordination.
pub fn new_transfer_id() -> Result<String, OutboxError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| OutboxError::Random(e.to_string()))?;
    Ok(hex(&bytes))
}

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
    /// The endpoint refused it for good.
    Dead,
    /// It could not be completed; it may be resumed with the same ciphertext.
    Failed,
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
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "queued" => DeliveryState::Queued,
            "sending" => DeliveryState::Sending,
            "delivered" => DeliveryState::Delivered,
            "refused" => DeliveryState::Refused,
            "dead" => DeliveryState::Dead,
            "failed" => DeliveryState::Failed,
            _ => {
                return Err(StoreError::Corrupt {
                    what: "delivery state",
                    value: s.to_string(),
                });
            }
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

    /// The manifest opening a stream that starts at `offset`.
    pub fn manifest(&self, offset: u64) -> v1::Manifest {
        v1::Manifest {
            transfer_id: self.transfer_id.clone(),
            report: self.report.clone(),
            period: self.period.clone(),
            classification: match self.classification {
                Classification::Internal => v1::Classification::Internal,
                Classification::Published => v1::Classification::Published,
            } as i32,
            la_code: self.la.clone(),
            size: self.size,
            sha256: self.sha256.to_vec(),
            offset,
        }
    }
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

/// The spool folder under `data_dir`, created owner-only if missing.
pub fn spool_dir(data_dir: &Path) -> Result<PathBuf, OutboxError> {
    let dir = data_dir.join(SPOOL_DIR);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| OutboxError::Io {
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

/// Records the start of a run of `report` for `period`.
pub fn start_run(
    store: &mut Store,
    report: &str,
    period: &str,
    scheduled_for: Option<DateTime<Utc>>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<i64, OutboxError> {
    let tx = store.write()?;
    tx.execute(
        "INSERT INTO report_runs (report, period, scheduled_for, started_at, actor)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            report,
            period,
            scheduled_for.map(timestamp),
            timestamp(now),
            actor
        ],
    )
    .map_err(StoreError::from)?;
    let id = tx.last_insert_rowid();
    tx.commit().map_err(StoreError::from)?;
    Ok(id)
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

/// Seals `plaintext` to `recipients`, spools the ciphertext durably and
/// records the delivery as queued with the ciphertext's size and digest.
/// Blocking.
pub fn spool(
    store: &mut Store,
    to: Addressed<'_>,
    plaintext: &[u8],
    recipients: &Recipients,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Delivery, OutboxError> {
    spool_reader(store, to, plaintext, recipients, actor, now)
}

/// [`spool`] for plaintext read as a stream: memory stays bounded whatever
/// its size.
pub fn spool_reader(
    store: &mut Store,
    to: Addressed<'_>,
    plaintext: impl std::io::Read,
    recipients: &Recipients,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Delivery, OutboxError> {
    let dir = spool_dir(store.data_dir())?;
    let transfer_id = new_transfer_id()?;
    let file_name = format!("{transfer_id}.age");
    let path = dir.join(&file_name);
    let io = |source| OutboxError::Io {
        path: path.clone(),
        source,
    };
    let sealed = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let mut out = BufWriter::new(file);
        let sealed = seal::seal_reader(plaintext, recipients, &mut out).map_err(|source| {
            OutboxError::Seal {
                la: to.la.to_string(),
                source: Box::new(source),
            }
        })?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        sync_dir(&dir)?;
        Ok(sealed)
    })();
    let sealed = match sealed {
        Ok(s) => s,
        Err(e) => {
            remove_spool_file(&path);
            return Err(e);
        }
    };
    let recorded = (|| -> Result<i64, StoreError> {
        let tx = store.write()?;
        tx.execute(
            "INSERT INTO deliveries (run_id, la_code, transfer_id, report, period, classification,
                 state, size, sha256, spool_file, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9, ?10, ?10)",
            params![
                to.run_id,
                to.la,
                transfer_id,
                to.report,
                to.period,
                to.classification.as_str(),
                sealed.size as i64,
                hex(&sealed.sha256),
                file_name,
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
                "transfer_id": transfer_id,
                "report": to.report,
                "period": to.period,
                "size": sealed.size,
                "sha256": hex(&sealed.sha256),
            }),
        )?;
        tx.commit()?;
        Ok(id)
    })();
    match recorded {
        Ok(id) => {
            crate::fault::dangerous_crash_point(crate::fault::CrashPoint::AfterSpool);
            delivery(store, id)
        }
        Err(e) => {
            remove_spool_file(&path);
            Err(e.into())
        }
    }
}

macro_rules! select_deliveries {
    ($rest:literal) => {
        concat!(
            "SELECT id, run_id, la_code, transfer_id, report, period, classification, state, \
             size, sha256, spool_file, attempts, reason, last_error, created_at, \
             next_attempt_at, coalesce(age_from, created_at) \
             FROM deliveries ",
            $rest
        )
    };
}

fn from_row(spool: &Path, r: &Row<'_>) -> rusqlite::Result<Result<Delivery, StoreError>> {
    let build = || -> Result<Delivery, StoreError> {
        let classification: String = r.get(6)?;
        let sha: String = r.get(9)?;
        let corrupt = |what, value: &str| StoreError::Corrupt {
            what,
            value: value.to_string(),
        };
        let sha256 = parse_sha256(&sha).ok_or_else(|| corrupt("delivery digest", &sha))?;
        let spool_file: Option<String> = r.get(10)?;
        let spool_path = match spool_file {
            None => None,
            // The name is one this module made from a checked id; check
            // again so an edited database cannot point outside the spool.
            Some(name) => match name.strip_suffix(".age") {
                Some(id) if is_transfer_id(id) => Some(spool.join(&name)),
                _ => return Err(corrupt("spool file name", &name)),
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
                other => return Err(corrupt("classification", other)),
            },
            state: DeliveryState::parse(&r.get::<_, String>(7)?)?,
            size: u64::try_from(r.get::<_, i64>(8)?)
                .map_err(|_| corrupt("delivery size", "negative"))?,
            sha256,
            spool_path,
            attempts: r.get(11)?,
            reason: r.get(12)?,
            last_error: r.get(13)?,
            created_at: parse_timestamp(&r.get::<_, String>(14)?)?,
            next_attempt_at: r
                .get::<_, Option<String>>(15)?
                .as_deref()
                .map(parse_timestamp)
                .transpose()?,
            age_from: parse_timestamp(&r.get::<_, String>(16)?)?,
        })
    };
    Ok(build())
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The delivery with this id.
pub fn delivery(store: &Store, id: i64) -> Result<Delivery, OutboxError> {
    let spool = store.data_dir().join(SPOOL_DIR);
    store
        .conn()
        .query_row(select_deliveries!("WHERE id = ?1"), [id], |r| {
            from_row(&spool, r)
        })
        .optional()?
        .transpose()?
        .ok_or(OutboxError::UnknownDelivery(id))
}

/// Deliveries of a run, in id order.
pub fn deliveries_of_run(store: &Store, run_id: i64) -> Result<Vec<Delivery>, OutboxError> {
    let spool = store.data_dir().join(SPOOL_DIR);
    let mut stmt = store
        .conn()
        .prepare(select_deliveries!("WHERE run_id = ?1 ORDER BY id"))
        .map_err(StoreError::from)?;
    let rows = stmt
        .query_map([run_id], |r| from_row(&spool, r))
        .map_err(StoreError::from)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(StoreError::from)??);
    }
    Ok(out)
}

/// The receipt kept for a delivery, if any.
pub fn receipt(store: &Store, delivery_id: i64) -> Result<Option<StoredReceipt>, OutboxError> {
    Ok(store
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

/// Marks a push attempt as begun.
pub fn mark_sending(store: &mut Store, id: i64, now: DateTime<Utc>) -> Result<(), OutboxError> {
    let tx = store.write()?;
    tx.execute(
        "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, updated_at = ?2
         WHERE id = ?1",
        params![id, timestamp(now)],
    )
    .map_err(StoreError::from)?;
    tx.commit().map_err(StoreError::from)?;
    Ok(())
}

/// Stores the endpoint's receipt, marks the delivery delivered and removes
/// the spooled ciphertext (only after the receipt is committed).
pub fn record_receipt(
    store: &mut Store,
    id: i64,
    receipt: &v1::Receipt,
    verification: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), OutboxError> {
    let before = delivery(store, id)?;
    let tx = store.write()?;
    tx.execute(
        "INSERT INTO receipts (delivery_id, transfer_id, sha256, size, stored_as,
             received_unix_ms, signature, verification, stored_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
        ],
    )
    .map_err(StoreError::from)?;
    tx.execute(
        "UPDATE deliveries SET state = 'delivered', spool_file = NULL, last_error = NULL,
             updated_at = ?2 WHERE id = ?1",
        params![id, timestamp(now)],
    )
    .map_err(StoreError::from)?;
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
    tx.commit().map_err(StoreError::from)?;
    if let Some(path) = &before.spool_path {
        remove_spool_file(path);
    }
    crate::fault::dangerous_crash_point(crate::fault::CrashPoint::AfterReceipt);
    Ok(())
}

/// Marks a delivery refused by the gate (at `stage`, or in flight) and
/// removes its ciphertext: nothing withheld is sent later by itself.
pub fn mark_refused(
    store: &mut Store,
    id: i64,
    reason: Reason,
    detail: &str,
    stage: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), OutboxError> {
    finish_unsent(
        store,
        id,
        (DeliveryState::Refused, Kind::DeliveryRefused),
        Some(reason.as_str()),
        detail,
        json!({ "reason": reason.as_str(), "stage": stage, "detail": detail }),
        actor,
        now,
    )
}

/// Marks a delivery that could not be completed: `dead` (the endpoint
/// refused it for good) or `failed` (worth another attempt). Either way the
/// ciphertext is kept, so a later attempt, or `mishare retry`, resumes with
/// the same bytes.
pub fn mark_failed(
    store: &mut Store,
    id: i64,
    error: &str,
    dead: bool,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), OutboxError> {
    let state = if dead {
        DeliveryState::Dead
    } else {
        DeliveryState::Failed
    };
    finish_unsent(
        store,
        id,
        (state, Kind::DeliveryFailed),
        None,
        error,
        json!({ "state": state.as_str(), "error": error }),
        actor,
        now,
    )
}

#[allow(
    clippy::too_many_arguments,
    reason = "one private helper for two callers"
)]
fn finish_unsent(
    store: &mut Store,
    id: i64,
    (state, kind): (DeliveryState, Kind),
    reason: Option<&str>,
    error: &str,
    detail: serde_json::Value,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), OutboxError> {
    let before = delivery(store, id)?;
    let keep = matches!(state, DeliveryState::Failed | DeliveryState::Dead);
    let tx = store.write()?;
    tx.execute(
        "UPDATE deliveries SET state = ?2, reason = ?3, last_error = ?4, updated_at = ?5,
             spool_file = CASE WHEN ?6 THEN spool_file ELSE NULL END
         WHERE id = ?1",
        params![id, state.as_str(), reason, error, timestamp(now), keep],
    )
    .map_err(StoreError::from)?;
    let mut detail = detail;
    detail["delivery"] = json!(id);
    detail["transfer_id"] = json!(before.transfer_id);
    audit::append(&tx, now, kind, actor, Some(&before.la), &detail)?;
    tx.commit().map_err(StoreError::from)?;
    if !keep && let Some(path) = &before.spool_path {
        remove_spool_file(path);
    }
    Ok(())
}

/// Deliveries not finished yet (queued, sending or failed), in id order.
pub fn pending(store: &Store) -> Result<Vec<Delivery>, OutboxError> {
    let spool = store.data_dir().join(SPOOL_DIR);
    let mut stmt = store
        .conn()
        .prepare(select_deliveries!(
            "WHERE state IN ('queued', 'sending', 'failed') ORDER BY id"
        ))
        .map_err(StoreError::from)?;
    let rows = stmt
        .query_map([], |r| from_row(&spool, r))
        .map_err(StoreError::from)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(StoreError::from)??);
    }
    Ok(out)
}

/// Deliveries in `state`, in id order.
pub fn in_state(store: &Store, state: DeliveryState) -> Result<Vec<Delivery>, OutboxError> {
    let spool = store.data_dir().join(SPOOL_DIR);
    let mut stmt = store
        .conn()
        .prepare(select_deliveries!("WHERE state = ?1 ORDER BY id"))
        .map_err(StoreError::from)?;
    let rows = stmt
        .query_map([state.as_str()], |r| from_row(&spool, r))
        .map_err(StoreError::from)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(StoreError::from)??);
    }
    Ok(out)
}

/// At start: deliveries a stopped process left `sending` are queued again
/// (each resumes from what its endpoint committed, and asks the gate
/// again). Returns how many.
pub fn recover_interrupted(store: &mut Store, now: DateTime<Utc>) -> Result<usize, OutboxError> {
    let tx = store.write()?;
    let n = tx
        .execute(
            "UPDATE deliveries SET state = 'queued', next_attempt_at = NULL, updated_at = ?1,
                 last_error = 'interrupted: the daemon stopped during the push'
             WHERE state = 'sending'",
            [timestamp(now)],
        )
        .map_err(StoreError::from)?;
    tx.commit().map_err(StoreError::from)?;
    Ok(n)
}

/// The pause before attempt `attempts + 1`, after `attempts` failed ones:
/// `backoff_first_secs` doubling each time up to `backoff_cap_secs`, the
/// second half of it scaled by `jitter` (0 to 1) so that deliveries failing
/// together do not all come back at once.
pub fn backoff(policy: &DeliveryPolicy, attempts: u32, jitter: f64) -> chrono::Duration {
    let first = i64::from(policy.backoff_first_secs) * 1000;
    let cap = i64::from(policy.backoff_cap_secs) * 1000;
    let doublings = attempts.saturating_sub(1).min(40);
    let full = first.saturating_mul(1i64 << doublings).min(cap);
    let jitter = jitter.clamp(0.0, 1.0);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_precision_loss,
        reason = "milliseconds well inside f64's exact range"
    )]
    let extra = ((full / 2) as f64 * jitter) as i64;
    chrono::Duration::milliseconds(full - full / 2 + extra)
}

/// A random jitter in 0..1 for [`backoff`].
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    }
}

/// What happens next to a delivery after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Tried again at this time.
    RetryAt(DateTime<Utc>),
    /// Out of attempts or too old: now dead.
    Dead,
}

/// After a failed attempt of delivery `id` (already marked `failed`):
/// schedules the next attempt with backoff and jitter, or makes it dead,
/// with an audit entry, once it has had `max_attempts` or is older than
/// `max_age_hours`.
pub fn after_failure(
    store: &mut Store,
    id: i64,
    policy: &DeliveryPolicy,
    jitter: f64,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<AfterFailure, OutboxError> {
    let d = delivery(store, id)?;
    if d.state != DeliveryState::Failed {
        return Ok(AfterFailure::Dead);
    }
    let too_old = now - d.age_from > chrono::Duration::hours(i64::from(policy.max_age_hours));
    if d.attempts >= policy.max_attempts || too_old {
        let why = if too_old {
            format!(
                "gave up: not delivered within max_age_hours = {} ({} attempts); last error: {}",
                policy.max_age_hours,
                d.attempts,
                d.last_error.as_deref().unwrap_or("none")
            )
        } else {
            format!(
                "gave up after max_attempts = {} attempts; last error: {}",
                d.attempts,
                d.last_error.as_deref().unwrap_or("none")
            )
        };
        mark_failed(store, id, &why, true, actor, now)?;
        return Ok(AfterFailure::Dead);
    }
    let at = now + backoff(policy, d.attempts, jitter);
    let tx = store.write()?;
    tx.execute(
        "UPDATE deliveries SET next_attempt_at = ?2 WHERE id = ?1 AND state = 'failed'",
        params![id, timestamp(at)],
    )
    .map_err(StoreError::from)?;
    tx.commit().map_err(StoreError::from)?;
    Ok(AfterFailure::RetryAt(at))
}

/// Why a delivery cannot be requeued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequeueError {
    /// Only dead deliveries are requeued; others are still being tried, or
    /// finished.
    #[error("delivery {id} is {state}, not dead; only a dead delivery can be retried")]
    NotDead { id: i64, state: DeliveryState },
    /// Its ciphertext is gone (from before ciphertext was kept for dead
    /// deliveries).
    #[error(
        "delivery {id} has no spooled ciphertext left; run the report again with mishare send-now"
    )]
    NoCiphertext { id: i64 },
}

/// Queues dead delivery `id` again: its attempts start from zero and its
/// age from `now`. The caller has asked the gate. Tells a running daemon
/// (through `outbox_generation`).
pub fn requeue(
    store: &mut Store,
    id: i64,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Result<Delivery, RequeueError>, OutboxError> {
    let d = delivery(store, id)?;
    if d.state != DeliveryState::Dead {
        return Ok(Err(RequeueError::NotDead { id, state: d.state }));
    }
    if !d.spool_path.as_ref().is_some_and(|p| p.exists()) {
        return Ok(Err(RequeueError::NoCiphertext { id }));
    }
    let tx = store.write()?;
    tx.execute(
        "UPDATE deliveries SET state = 'queued', attempts = 0, next_attempt_at = NULL,
             age_from = ?2, updated_at = ?2
         WHERE id = ?1",
        params![id, timestamp(now)],
    )
    .map_err(StoreError::from)?;
    tx.execute("UPDATE outbox_generation SET n = n + 1 WHERE id = 1", [])
        .map_err(StoreError::from)?;
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
    tx.commit().map_err(StoreError::from)?;
    Ok(Ok(delivery(store, id)?))
}

/// Opens a delivery's spooled ciphertext for reading.
pub fn open_spooled(delivery: &Delivery) -> Result<File, OutboxError> {
    let path = delivery
        .spool_path
        .as_ref()
        .ok_or_else(|| OutboxError::Io {
            path: PathBuf::from(format!("{SPOOL_DIR}/{}.age", delivery.transfer_id)),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the ciphertext is no longer spooled",
            ),
        })?;
    File::open(path).map_err(|source| OutboxError::Io {
        path: path.clone(),
        source,
    })
}

/// Best effort: the row no longer points at the file, so a file left behind
/// is only disk space, and it is logged.
fn remove_spool_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if let Err(e) = path.parent().map_or(Ok(()), sync_dir) {
                tracing::warn!(error = %e, "cannot fsync the spool folder after a removal");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove spooled ciphertext");
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| OutboxError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// A stored receipt as the endpoint sent it (signature included), for
/// `mishare receipt export` and offline verification; `None` if no receipt
/// is stored for `transfer_id`.
pub fn wire_receipt(store: &Store, transfer_id: &str) -> Result<Option<v1::Receipt>, OutboxError> {
    let row = store
        .conn()
        .query_row(
            "SELECT sha256, size, stored_as, received_unix_ms, signature FROM receipts
             WHERE transfer_id = ?1",
            [transfer_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            },
        )
        .optional()?;
    Ok(row.map(
        |(sha256, size, stored_as, received_unix_ms, signature)| v1::Receipt {
            transfer_id: transfer_id.to_string(),
            sha256: crate::receipt::unhex(&sha256).unwrap_or_default(),
            size: u64::try_from(size).unwrap_or_default(),
            stored_as,
            received_unix_ms,
            signature,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_ids() {
        let id = new_transfer_id().expect("random");
        assert!(is_transfer_id(&id), "{id}");
        assert_ne!(id, new_transfer_id().expect("random"));
        for good in ["abcdEF12", "a-b-c-d-e", &"a".repeat(64)] {
            assert!(is_transfer_id(good), "{good}");
        }
        for bad in [
            "short",
            "",
            "abc/defgh",
            "abc.defgh",
            "../../etc",
            &"a".repeat(65),
        ] {
            assert!(!is_transfer_id(bad), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_its_upper_half() {
        let policy = DeliveryPolicy {
            backoff_first_secs: 10,
            backoff_cap_secs: 60,
            ..DeliveryPolicy::default()
        };
        let secs = |attempts, jitter| backoff(&policy, attempts, jitter).num_milliseconds();
        assert_eq!(secs(1, 1.0), 10_000);
        assert_eq!(secs(1, 0.0), 5_000);
        assert_eq!(secs(2, 1.0), 20_000);
        assert_eq!(secs(3, 1.0), 40_000);
        assert_eq!(secs(4, 1.0), 60_000);
        assert_eq!(secs(40, 0.0), 30_000);
        assert_eq!(secs(u32::MAX, 1.0), 60_000);
        for a in 1..50 {
            let (lo, hi) = (secs(a, 0.0), secs(a, 1.0));
            assert!(lo <= hi && hi <= 60_000 && lo * 2 >= hi, "{a}: {lo} {hi}");
        }
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let d: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(parse_sha256(&hex(&d)), Some(d));
        assert_eq!(parse_sha256("zz"), None);
        assert_eq!(parse_sha256(&"g".repeat(64)), None);
    }
}
