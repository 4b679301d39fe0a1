//! The audit log: append-only and hash-chained, in the state database.
//!
//! Each entry's hash is SHA-256 over an unambiguous, length-prefixed encoding
//! of its sequence number, time, kind, actor, LA, detail and the previous
//! entry's hash ([`entry_hash`]); the first entry's predecessor is
//! [`GENESIS`]. The table `audit_head` holds the last entry's number and hash
//! and is updated in the same transaction as each append, so deleting the
//! last entries is caught as well as changing or deleting any other.
//!
//! [`verify`] works straight from the rows, so an edit made with the `sqlite3`
//! tool is found. The chain has no secret: someone who can write the database
//! can also rewrite every hash after their edit. Copying the head (seq and
//! hash, see `mishare audit export`) somewhere they cannot write turns that
//! into a detectable change too.

use std::fmt;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, Transaction};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::db::DbError;
use super::encoding::hex;
use super::time::timestamp;

/// The `prev_hash` of the first entry: 32 zero bytes, in hex.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// An agreement was put on file for an LA that had no current one.
    AgreementAdded,
    /// An agreement was put on file in place of the LA's previous one.
    AgreementReplaced,
    /// An agreement was revoked.
    AgreementRevoked,
    /// A suspension was made.
    SuspensionMade,
    /// A suspension was lifted.
    SuspensionLifted,
    /// The gate allowed a file to go to an LA.
    GatePermit,
    /// The gate refused a file for an LA.
    GateRefusal,
    /// An authority endpoint stored a file and signed its receipt.
    TransferAccepted,
    /// An authority endpoint answered a repeated push of a stored file with
    /// its original receipt.
    TransferRepeated,
    /// An authority endpoint refused a push (with the gRPC code).
    TransferRefused,
    /// An authority endpoint found at start a file it had stored but not
    /// recorded (it stopped between the two), and recorded it.
    TransferRecovered,
    /// An authority endpoint removed a partial transfer left idle too long.
    PartialRemoved,
    /// A received file was deleted from the inbox (retention, or by hand).
    InboxFileDeleted,
    /// An authority endpoint, or a provider's `Directive` service, refused a
    /// TLS handshake.
    HandshakeRefused,
    /// An LA's file was sealed and its ciphertext spooled for delivery.
    DeliverySpooled,
    /// An LA's endpoint stored a file and its receipt was kept.
    DeliveryDelivered,
    /// A delivery was stopped by the gate: refused at a check, or cut off in
    /// flight by a suspension. Nothing was committed.
    DeliveryRefused,
    /// A delivery could not be completed (the endpoint refused it, or it
    /// stayed unreachable).
    DeliveryFailed,
    /// A call to the `Directive` service, by a DWP identity.
    DirectiveCall,
    /// A scheduled run missed while the daemon was down was skipped (the
    /// report's `missed` is `skip`).
    RunSkipped,
    /// A dead delivery was queued again by `mishare retry`, the gate
    /// permitting.
    DeliveryRequeued,
    /// A dead delivery was ended by `mishare abandon`: its ciphertext
    /// removed, never to be sent (the detail holds its digest and the
    /// reason).
    DeliveryAbandoned,
    /// A delivery's Commit was on the wire before a suspension or another
    /// refusal came; the endpoint committed the file, so the LA has it.
    DeliveryCommittedBeforeRefusal,
    /// A release was recorded in the ledger as its file was spooled (the
    /// detail holds the SHA-256 of the ledger row).
    LedgerRelease,
    /// A release's delivery time was recorded (the SHA-256 of the row's id
    /// and delivery time).
    LedgerReleaseDelivered,
    /// The ledger audit withheld an LA's file (the finding codes).
    LedgerAuditBlocked,
    /// A figure an LA knows from elsewhere was registered (the SHA-256 of
    /// the row).
    KnownAdded,
    /// A known figure was removed (the SHA-256 of the removal).
    KnownRemoved,
    /// A running endpoint or daemon reloaded its certificates, keys,
    /// revocation lists, allow-list or recipients (the SHA-256 of each, and
    /// what changed).
    ConfigReloaded,
    /// A reload was refused and the old material stayed (the file and the
    /// reason).
    ConfigReloadRefused,
}

impl Kind {
    /// The name stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AgreementAdded => "agreement_added",
            Kind::AgreementReplaced => "agreement_replaced",
            Kind::AgreementRevoked => "agreement_revoked",
            Kind::SuspensionMade => "suspension_made",
            Kind::SuspensionLifted => "suspension_lifted",
            Kind::GatePermit => "gate_permit",
            Kind::GateRefusal => "gate_refusal",
            Kind::TransferAccepted => "transfer_accepted",
            Kind::TransferRepeated => "transfer_repeated",
            Kind::TransferRefused => "transfer_refused",
            Kind::TransferRecovered => "transfer_recovered",
            Kind::PartialRemoved => "partial_removed",
            Kind::InboxFileDeleted => "inbox_file_deleted",
            Kind::HandshakeRefused => "handshake_refused",
            Kind::DeliverySpooled => "delivery_spooled",
            Kind::DeliveryDelivered => "delivery_delivered",
            Kind::DeliveryRefused => "delivery_refused",
            Kind::DeliveryFailed => "delivery_failed",
            Kind::DirectiveCall => "directive_call",
            Kind::RunSkipped => "run_skipped",
            Kind::DeliveryRequeued => "delivery_requeued",
            Kind::DeliveryAbandoned => "delivery_abandoned",
            Kind::DeliveryCommittedBeforeRefusal => "delivery_committed_before_refusal",
            Kind::LedgerRelease => "ledger_release",
            Kind::LedgerReleaseDelivered => "ledger_release_delivered",
            Kind::LedgerAuditBlocked => "ledger_audit_blocked",
            Kind::KnownAdded => "known_added",
            Kind::KnownRemoved => "known_removed",
            Kind::ConfigReloaded => "config_reloaded",
            Kind::ConfigReloadRefused => "config_reload_refused",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: i64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub kind: String,
    /// Who acted: `provider:<user>`, `dwp:<identity>`, `daemon`, ...
    pub actor: String,
    pub la: Option<String>,
    /// A JSON object, as text.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl Entry {
    /// The entry as one JSON object, with `detail` as an object (or as a
    /// string, should the stored text not be JSON).
    pub fn to_json(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Line<'a> {
            seq: i64,
            time: &'a str,
            kind: &'a str,
            actor: &'a str,
            la: Option<&'a str>,
            detail: serde_json::Value,
            prev_hash: &'a str,
            hash: &'a str,
        }
        let detail = serde_json::from_str(&self.detail)
            .unwrap_or_else(|_| serde_json::Value::String(self.detail.clone()));
        serde_json::to_value(Line {
            seq: self.seq,
            time: &self.time,
            kind: &self.kind,
            actor: &self.actor,
            la: self.la.as_deref(),
            detail,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
        })
        .expect("an entry is plain JSON")
    }
}

/// The hash of an entry: SHA-256 over a domain tag, `seq` as 8 big-endian
/// bytes, then each text field as its length (8 bytes, big-endian) and bytes;
/// `la` is preceded by 0 (absent) or 1 (present). Lower-case hex.
pub fn entry_hash(
    seq: i64,
    time: &str,
    kind: &str,
    actor: &str,
    la: Option<&str>,
    detail: &str,
    prev_hash: &str,
) -> String {
    fn field(h: &mut Sha256, s: &str) {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    let mut h = Sha256::new();
    h.update(b"mishare audit entry v1\0");
    h.update(seq.to_be_bytes());
    field(&mut h, time);
    field(&mut h, kind);
    field(&mut h, actor);
    match la {
        None => h.update([0u8]),
        Some(la) => {
            h.update([1u8]);
            field(&mut h, la);
        }
    }
    field(&mut h, detail);
    field(&mut h, prev_hash);
    hex(&h.finalize())
}

/// Appends an entry inside the caller's write transaction, which must have
/// been begun IMMEDIATE (see [`super::db::write`]) so no other writer can take
/// the same sequence number. Any database with the `audit_log` and
/// `audit_head` tables of the provider's first migration will do (the
/// authority endpoint's has them too).
pub fn append(
    tx: &Transaction<'_>,
    now: DateTime<Utc>,
    kind: Kind,
    actor: &str,
    la: Option<&str>,
    detail: &serde_json::Value,
) -> Result<Entry, DbError> {
    let (head_seq, prev_hash): (i64, String) =
        tx.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let seq = head_seq + 1;
    let time = timestamp(now);
    let detail = detail.to_string();
    let hash = entry_hash(seq, &time, kind.as_str(), actor, la, &detail, &prev_hash);
    tx.execute(
        "INSERT INTO audit_log (seq, time, kind, actor, la, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![seq, time, kind.as_str(), actor, la, detail, prev_hash, hash],
    )?;
    tx.execute(
        "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
        rusqlite::params![seq, hash],
    )?;
    Ok(Entry {
        seq,
        time,
        kind: kind.as_str().to_string(),
        actor: actor.to_string(),
        la: la.map(str::to_string),
        detail,
        prev_hash,
        hash,
    })
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every entry matches its hash and links to its predecessor, and the
    /// head names the last one.
    Intact { entries: i64, head: String },
    /// The first entry that breaks the chain.
    Broken(Break),
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at entry {seq}: {problem}")]
pub struct Break {
    /// The first entry that is wrong or missing.
    pub seq: i64,
    pub problem: Problem,
}

/// How the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The stored fields do not give the stored hash.
    HashMismatch,
    /// The entry's `prev_hash` is not its predecessor's hash.
    PrevLinkBroken,
    /// Entries `seq` up to `next - 1` are missing.
    Gap { next: i64 },
    /// A field holds something other than text.
    NotText { field: &'static str },
    /// The log ends at `last` but the head records `head_seq`.
    HeadMismatch { last: i64, head_seq: i64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::HashMismatch => f.write_str(
                "hash mismatch: its stored fields do not give its hash (the entry was changed)",
            ),
            Problem::PrevLinkBroken => f.write_str(
                "prev link broken: its prev_hash is not the hash of the entry before it \
                 (entries were changed or reordered)",
            ),
            Problem::Gap { next } => write!(
                f,
                "gap: the entry is missing and the log continues at entry {next} \
                 (entries were deleted)"
            ),
            Problem::NotText { field } => {
                write!(
                    f,
                    "hash mismatch: its {field} is not text (the entry was changed)"
                )
            }
            Problem::HeadMismatch { last, head_seq } if head_seq > last => write!(
                f,
                "head mismatch: the log ends at entry {last} but its head records entry \
                 {head_seq} (the last entries were deleted)"
            ),
            Problem::HeadMismatch { last, head_seq } => write!(
                f,
                "head mismatch: the log ends at entry {last} but its head records entry \
                 {head_seq} with another hash (the head or the last entry was changed)"
            ),
        }
    }
}

/// Recomputes the chain from the rows of any database holding an audit log
/// (the provider's or an endpoint's) and names the first broken entry.
/// `Err` only when the database cannot be read at all.
pub fn verify(conn: &Connection) -> Result<Verification, DbError> {
    let (head_seq, head_hash): (i64, String) =
        conn.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let mut stmt = conn.prepare(
        "SELECT seq, time, kind, actor, la, detail, prev_hash, hash FROM audit_log ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let mut expected = 1i64;
    let mut prev = GENESIS.to_string();
    let mut count = 0i64;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let broken = |problem| Ok(Verification::Broken(Break { seq, problem }));
        if seq != expected {
            return Ok(Verification::Broken(Break {
                seq: expected,
                problem: Problem::Gap { next: seq },
            }));
        }
        let entry = match read_entry(row)? {
            Ok(e) => e,
            Err(field) => return broken(Problem::NotText { field }),
        };
        let recomputed = entry_hash(
            entry.seq,
            &entry.time,
            &entry.kind,
            &entry.actor,
            entry.la.as_deref(),
            &entry.detail,
            &entry.prev_hash,
        );
        if recomputed != entry.hash {
            return broken(Problem::HashMismatch);
        }
        if entry.prev_hash != prev {
            return broken(Problem::PrevLinkBroken);
        }
        prev = entry.hash;
        expected += 1;
        count += 1;
    }
    let last = expected - 1;
    if head_seq != last || head_hash != prev {
        return Ok(Verification::Broken(Break {
            seq: head_seq.max(last).max(1),
            problem: Problem::HeadMismatch { last, head_seq },
        }));
    }
    Ok(Verification::Intact {
        entries: count,
        head: prev,
    })
}

/// Entries in order, those at or after `since` if given.
pub fn entries(conn: &Connection, since: Option<DateTime<Utc>>) -> Result<Vec<Entry>, DbError> {
    let since = since.map(timestamp);
    let mut stmt = conn.prepare(
        "SELECT seq, time, kind, actor, la, detail, prev_hash, hash FROM audit_log
         WHERE ?1 IS NULL OR time >= ?1 ORDER BY seq",
    )?;
    let mut rows = stmt.query([since])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        match read_entry(row)? {
            Ok(entry) => out.push(entry),
            Err(field) => {
                return Err(DbError::corrupt(
                    "audit entry",
                    format!("entry {}: {field} is not text", row.get::<_, i64>(0)?),
                ));
            }
        }
    }
    Ok(out)
}

/// Reads a row; `Ok(Err(field))` names a field that is not text (someone
/// stored a number or a blob there).
fn read_entry(row: &Row<'_>) -> rusqlite::Result<Result<Entry, &'static str>> {
    use rusqlite::types::ValueRef;
    let text = |i: usize, field: &'static str| -> rusqlite::Result<Result<Option<String>, _>> {
        Ok(match row.get_ref(i)? {
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map(|s| Some(s.to_string()))
                .map_err(|_| field),
            ValueRef::Null => Ok(None),
            _ => Err(field),
        })
    };
    macro_rules! field {
        ($i:expr, $name:literal, optional) => {
            match text($i, $name)? {
                Ok(v) => v,
                Err(f) => return Ok(Err(f)),
            }
        };
        ($i:expr, $name:literal) => {
            match text($i, $name)? {
                Ok(Some(v)) => v,
                _ => return Ok(Err($name)),
            }
        };
    }
    Ok(Ok(Entry {
        seq: row.get(0)?,
        time: field!(1, "time"),
        kind: field!(2, "kind"),
        actor: field!(3, "actor"),
        la: field!(4, "la", optional),
        detail: field!(5, "detail"),
        prev_hash: field!(6, "prev_hash"),
        hash: field!(7, "hash"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_unambiguous() {
        let a = entry_hash(1, "t", "k", "ab", Some("c"), "{}", GENESIS);
        let b = entry_hash(1, "t", "k", "a", Some("bc"), "{}", GENESIS);
        let c = entry_hash(1, "t", "k", "ab", None, "{}", GENESIS);
        let d = entry_hash(1, "t", "k", "ab", Some(""), "{}", GENESIS);
        assert_ne!(a, b);
        assert_ne!(c, d);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn hash_covers_every_field() {
        let base = entry_hash(2, "t", "k", "a", Some("l"), "{}", GENESIS);
        assert_ne!(base, entry_hash(3, "t", "k", "a", Some("l"), "{}", GENESIS));
        assert_ne!(base, entry_hash(2, "u", "k", "a", Some("l"), "{}", GENESIS));
        assert_ne!(base, entry_hash(2, "t", "j", "a", Some("l"), "{}", GENESIS));
        assert_ne!(base, entry_hash(2, "t", "k", "b", Some("l"), "{}", GENESIS));
        assert_ne!(base, entry_hash(2, "t", "k", "a", Some("m"), "{}", GENESIS));
        assert_ne!(base, entry_hash(2, "t", "k", "a", Some("l"), "[]", GENESIS));
        assert_ne!(
            base,
            entry_hash(2, "t", "k", "a", Some("l"), "{}", &"1".repeat(64))
        );
    }
}
