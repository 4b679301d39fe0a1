//! The outbox: one delivery per LA and run, from spooled to delivered.
//!
//! ```text
//! queued ─► sending ─► delivered            (receipt stored, spool removed)
//!    ▲         │ └───► refused              (the gate said no; spool removed)
//!    │         ├─────► failed ─► (backoff) ─► sending …   (spool kept)
//!    │         └─────► dead                 (the endpoint refused it for good,
//!    │                   │                   or attempts or age ran out; spool kept)
//!    └── mishare retry ──┘                  (the gate asked again)
//!                        │
//!                        └─► abandoned       (mishare abandon: spool removed,
//!                                             never sent; the row and its
//!                                             release stay)
//! ```
//!
//! A delivery is born **spooled** ([`spool`]): its file sealed and written
//! durably first, with no lock held, and only then recorded with its size
//! and SHA-256, all before the first byte goes out. The ciphertext is kept
//! until the receipt is stored (or the gate refuses the delivery), so a dead
//! delivery can be retried with the same bytes. A delivery left `sending` by
//! a stopped process is queued again at the next start and resumes from
//! what the endpoint committed.
//!
//! The rows and their SQL are the store's ([`crate::provider::store::deliveries`]);
//! this module decides what happens next and keeps the spool in step.

use std::io::Read;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::common::fault::{CrashPoint, dangerous_crash_point};
use crate::config::provider::DeliveryPolicy;
use crate::provider::gate::Reason;
use crate::provider::ledger::ReleaseTable;
use crate::provider::spool::{self, SpoolError};
pub use crate::provider::store::deliveries::Addressed;
use crate::provider::store::deliveries::{NewDelivery, Unsent};
use crate::provider::store::{Delivery, DeliveryState, NewRelease, SharedStore, Store, StoreError};
use crate::sanitiser::Finding;
use crate::seal::Recipients;
use crate::wire::v1;

/// Why the outbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file could not be sealed or spooled.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// What the release ledger records of a file as it is spooled: the table
/// the LA is sent, rounded, and the ledger audit's findings that did not
/// block it.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    pub table: &'a ReleaseTable,
    pub findings: &'a [Finding],
}

/// Seals `plaintext` to `recipients` into the spool (no lock held), then
/// records the delivery as queued with the ciphertext's size and digest,
/// and `release` in the ledger with the plaintext's digest, in one
/// transaction. If they cannot be recorded, the spooled file is removed: a
/// file is never spooled without its row and its release. Blocking.
pub fn spool(
    store: &SharedStore,
    to: Addressed<'_>,
    plaintext: impl Read,
    recipients: &Recipients,
    release: Release<'_>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Delivery, OutboxError> {
    let spooled = spool::write(store.data_dir(), to.la, plaintext, recipients)?;
    let new = NewDelivery {
        to,
        transfer_id: &spooled.transfer_id,
        spool_file: &spooled.file_name,
        size: spooled.size,
        sha256: &spooled.sha256,
    };
    let release = NewRelease {
        table: release.table,
        plaintext_sha256: &spooled.plaintext_sha256,
        findings: release.findings,
    };
    match store.lock().record_spooled(&new, &release, actor, now) {
        Ok(delivery) => {
            dangerous_crash_point(CrashPoint::AfterSpool);
            Ok(delivery)
        }
        Err(e) => {
            spool::remove(&spooled.path);
            Err(e.into())
        }
    }
}

/// Stores the endpoint's receipt, marks the delivery delivered and removes
/// the spooled ciphertext (only after the receipt is committed).
pub fn delivered(
    store: &mut Store,
    id: i64,
    receipt: &v1::Receipt,
    verification: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), OutboxError> {
    if let Some(path) = store.record_receipt(id, receipt, verification, actor, now)? {
        spool::remove(&path);
    }
    dangerous_crash_point(CrashPoint::AfterReceipt);
    Ok(())
}

/// Marks a delivery refused by the gate (at `stage`, or in flight) and
/// removes its ciphertext: nothing withheld is sent later by itself.
pub fn refused(
    store: &mut Store,
    id: i64,
    reason: Reason,
    detail: &str,
    stage: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), OutboxError> {
    let removed = store.record_unsent(
        id,
        Unsent::Refused,
        Some(reason.as_str()),
        detail,
        json!({ "reason": reason.as_str(), "stage": stage, "detail": detail }),
        actor,
        now,
    )?;
    if let Some(path) = removed {
        spool::remove(&path);
    }
    Ok(())
}

/// Marks a delivery that could not be completed: `dead` (the endpoint
/// refused it for good) or `failed` (worth another attempt). Either way the
/// ciphertext is kept, so a later attempt, or `mishare retry`, resumes with
/// the same bytes.
pub fn failed(
    store: &mut Store,
    id: i64,
    error: &str,
    dead: bool,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), OutboxError> {
    let how = if dead { Unsent::Dead } else { Unsent::Failed };
    let state = if dead {
        DeliveryState::Dead
    } else {
        DeliveryState::Failed
    };
    store.record_unsent(
        id,
        how,
        None,
        error,
        json!({ "state": state.as_str(), "error": error }),
        actor,
        now,
    )?;
    Ok(())
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
    let d = store.delivery(id)?;
    if d.state != DeliveryState::Failed {
        return Ok(AfterFailure::Dead);
    }
    let too_old = now - d.age_from > chrono::Duration::hours(i64::from(policy.max_age_hours));
    if d.attempts >= policy.max_attempts || too_old {
        let last = d.last_error.as_deref().unwrap_or("none");
        let why = if too_old {
            format!(
                "gave up: not delivered within max_age_hours = {} ({} attempts); last error: \
                 {last}",
                policy.max_age_hours, d.attempts
            )
        } else {
            format!(
                "gave up after max_attempts = {} attempts; last error: {last}",
                d.attempts
            )
        };
        failed(store, id, &why, true, actor, now)?;
        return Ok(AfterFailure::Dead);
    }
    let at = now + backoff(policy, d.attempts, jitter);
    store.set_next_attempt(id, at)?;
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

/// Whether dead delivery `id` can be queued again: it is dead and its
/// ciphertext is still spooled.
pub fn can_requeue(delivery: &Delivery) -> Result<(), RequeueError> {
    if delivery.state != DeliveryState::Dead {
        return Err(RequeueError::NotDead {
            id: delivery.id,
            state: delivery.state,
        });
    }
    if !delivery.spool_path.as_ref().is_some_and(|p| p.exists()) {
        return Err(RequeueError::NoCiphertext { id: delivery.id });
    }
    Ok(())
}

/// What `mishare abandon` did.
#[derive(Debug)]
pub struct Abandoned {
    /// The delivery, now abandoned.
    pub delivery: Delivery,
    /// Its spooled ciphertext, if it still had one, and whether removing it
    /// failed (the delivery is abandoned either way; the file is only disk
    /// space, and the operator is told where it is).
    pub ciphertext: Option<(std::path::PathBuf, Option<std::io::Error>)>,
}

/// Ends dead delivery `id` for good: it is never sent, its spooled
/// ciphertext is deleted, and the step is audited with `reason`. Its row,
/// its audit entries and its release in the ledger stay (the ledger audit
/// keeps counting the release: the LA may not have it, but nothing the
/// audit assumes is weakened by assuming it does).
pub fn abandon(
    store: &mut Store,
    id: i64,
    reason: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Abandoned, StoreError> {
    let spooled = store.abandon_dead(id, reason, actor, now)?;
    let ciphertext = spooled.map(|path| {
        let failed = crate::common::files::remove_durably(&path).err();
        (path, failed)
    });
    Ok(Abandoned {
        delivery: store.delivery(id)?,
        ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
