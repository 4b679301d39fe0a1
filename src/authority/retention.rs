//! Retention: received files older than `[retention] inbox_days` (or
//! `mishare authority inbox purge --older-than DAYS`) are deleted from the
//! inbox. Each deletion is an audit entry with the file's digest; the
//! transfer, its receipt and the audit log are never deleted.
//!
//! The file goes first and the record second, so a crash between leaves a
//! record still to write, which the next pass writes (noting the file was
//! already gone); nothing is ever recorded as deleted that is still there.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::common::db::DbError;
use crate::common::encoding::hex;
use crate::common::files::remove_durably;

use super::store::{Store, Transfer};

/// A day, in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// Why a purge stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    /// The database could not be read or written.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A file could not be deleted (it is kept, and not recorded).
    #[error("cannot delete {path}: {source}")]
    Delete {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A received file deleted from the inbox.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub transfer: Transfer,
    /// Where it was.
    pub path: PathBuf,
    /// Whether the file was still there (a crash after deleting it, or
    /// someone else, may have removed it first).
    pub was_present: bool,
}

/// Deletes from `inbox` every received file received more than `days` days
/// before `now_ms`, recording each (`why` says under what rule) as done by
/// `actor`.
pub fn purge(
    state: &Store,
    inbox: &Path,
    days: u32,
    why: &str,
    actor: &str,
    now_ms: i64,
) -> Result<Vec<Deleted>, PurgeError> {
    let cutoff = now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
    let mut deleted = Vec::new();
    for transfer in state.received_before(cutoff)? {
        let Some(receipt) = &transfer.receipt else {
            continue;
        };
        let path = inbox.join(&transfer.provider).join(&receipt.stored_as);
        let was_present = remove_durably(&path).map_err(|source| PurgeError::Delete {
            path: path.clone(),
            source,
        })?;
        let detail = json!({
            "provider": transfer.provider,
            "transfer_id": transfer.transfer_id,
            "stored_as": receipt.stored_as,
            "sha256": hex(&transfer.sha256),
            "size": transfer.size,
            "received_unix_ms": receipt.received_unix_ms,
            "why": why,
            "file_was_present": was_present,
        });
        if state.record_deletion(
            &transfer.provider,
            &transfer.transfer_id,
            why,
            actor,
            &detail,
        )? {
            tracing::info!(
                provider = %transfer.provider,
                file = %receipt.stored_as,
                "deleted a received file: {why}"
            );
            deleted.push(Deleted {
                transfer,
                path,
                was_present,
            });
        }
    }
    Ok(deleted)
}
