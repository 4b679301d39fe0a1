//! The provider's state: one SQLite database, `data_dir/provider.db`, and the
//! only place the provider's SQL lives.
//!
//! - Opened the way every mishare database is ([`crate::common::db`]):
//!   owner-only, WAL, `synchronous = FULL`, numbered migrations
//!   ([`migrations`]).
//! - Every change that also writes an audit entry is one `BEGIN IMMEDIATE`
//!   transaction: two processes writing at once queue on the write lock (with
//!   a busy timeout) instead of losing a change or forking the audit chain.
//! - [`agreements`] and [`suspensions`]: what the gate reads;
//!   [`runs`]: report runs, schedule marks and plan-time refusals;
//!   [`deliveries`]: the outbox's rows and the receipts;
//!   [`ledger`]: the release ledger and known figures, each row covered by
//!   the audit chain.
//!
//! The API is synchronous. A process that does async work shares one
//! [`Store`] through a [`SharedStore`], whose [`SharedStore::run`] takes it
//! off the reactor; one-off commands open their own.

pub mod agreements;
pub mod deliveries;
pub mod ledger;
mod migrations;
pub mod observe;
pub mod runs;
pub mod suspensions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction};

use crate::common::audit::{self, Kind, Verification};
use crate::common::blocking::{TaskFailed, blocking};
use crate::common::db::{self, DbError};

pub use agreements::{Added, Agreement, AgreementEvent, AgreementEventKind};
pub use deliveries::{Delivery, DeliveryState, StoredReceipt};
pub use ledger::{KnownRow, LedgerCheck, LedgerProblem, NewRelease, ReleaseRow};
pub use observe::{OutboxSummary, PeerCertificate};
pub use runs::UnfinishedRun;
pub use suspensions::{Maker, Scope, Suspension};

/// The database file under `data_dir`.
pub const DATABASE_FILE: &str = crate::config::provider::DATABASE_FILE;

const SCHEMA: db::Schema = db::Schema {
    file: DATABASE_FILE,
    whose: "the provider's state",
    migrations: migrations::MIGRATIONS,
};

/// Where copies of signed agreements are kept under `data_dir`, named by
/// their SHA-256.
pub const AGREEMENTS_DIR: &str = "agreements";

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or read, or holds something this
    /// program never writes.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A stored agreement document could not be written.
    #[error("{path}: {source}")]
    Document {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A revocation or suspension with no reason.
    #[error("give a reason (--reason TEXT); it goes in the audit log")]
    NoReason,
    /// There is no current agreement for the LA.
    #[error(
        "there is no agreement on file for {la}; `mishare agreement list` shows those there are"
    )]
    NoAgreement { la: String },
    /// The LA's agreement is already revoked.
    #[error("the agreement for {la} was already revoked at {at}")]
    AlreadyRevoked { la: String, at: String },
    /// Only a dead delivery can be abandoned.
    #[error("delivery {id} is {state}, not dead; only a dead delivery can be abandoned")]
    NotDead { id: i64, state: DeliveryState },
    /// The same maker already suspended the same scope.
    #[error(
        "{scope} is already suspended by {maker} (suspension {id}); \
         `mishare status` lists active suspensions"
    )]
    AlreadySuspended { id: i64, scope: Scope, maker: Maker },
    /// No suspension has this id.
    #[error("there is no suspension {id}; `mishare status` lists active suspensions")]
    UnknownSuspension { id: i64 },
    /// The suspension was already lifted.
    #[error("suspension {id} was already lifted at {at} by {by}")]
    AlreadyLifted { id: i64, at: String, by: String },
    /// A provider tried to lift a suspension DWP required.
    #[error("suspension {id} was required by DWP; only DWP can lift it")]
    OnlyDwpCanLift { id: i64 },
    /// DWP tried to lift a suspension the provider made.
    #[error("suspension {id} was made by the provider; only the provider can lift it")]
    OnlyProviderCanLift { id: i64 },
    /// No delivery has this id.
    #[error("there is no delivery {0}; `mishare status` lists deliveries")]
    UnknownDelivery(i64),
    /// No release has this id.
    #[error("there is no release {0}; `mishare ledger list` lists them")]
    UnknownRelease(i64),
    /// No known figure has this id.
    #[error("there is no known figure {0}; `mishare known list` lists them")]
    UnknownKnown(i64),
    /// The known figure was already removed.
    #[error("known figure {id} was already removed at {at} by {by}")]
    KnownAlreadyRemoved { id: i64, at: String, by: String },
    /// A known figure larger than the database holds.
    #[error("{0} is larger than any count the ledger can hold")]
    KnownTooLarge(u64),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(DbError::Sqlite(e))
    }
}

/// An open connection to the provider's state.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    data_dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database under `data_dir` and brings
    /// its schema up to date.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let conn = db::open(data_dir, &SCHEMA)?;
        Ok(Self {
            conn,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The directory holding the state.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the copy of a document with this SHA-256 (hex) is kept.
    pub fn document_path(&self, sha256_hex: &str) -> PathBuf {
        self.data_dir.join(AGREEMENTS_DIR).join(sha256_hex)
    }

    /// The connection, for reads.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Starts a write transaction that holds the write lock from its first
    /// statement ([`db::write`]).
    pub(crate) fn write(&mut self) -> Result<Transaction<'_>, StoreError> {
        Ok(db::write(&mut self.conn)?)
    }

    /// Appends one audit entry on its own transaction.
    pub fn audit(
        &mut self,
        kind: Kind,
        actor: &str,
        la: Option<&str>,
        detail: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<audit::Entry, StoreError> {
        let tx = self.write()?;
        let entry = audit::append(&tx, now, kind, actor, la, detail)?;
        tx.commit()?;
        Ok(entry)
    }

    /// Recomputes the audit chain ([`audit::verify`]).
    pub fn verify_audit(&self) -> Result<Verification, StoreError> {
        Ok(audit::verify(&self.conn)?)
    }

    /// Audit entries in order, those at or after `since` if given.
    pub fn audit_entries(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<audit::Entry>, StoreError> {
        Ok(audit::entries(&self.conn, since)?)
    }

    /// A value that changes whenever a suspension is made or lifted, an
    /// agreement added, replaced or revoked, or a dead delivery requeued by
    /// `mishare retry`: what a running daemon watches to ask the gate again.
    pub fn state_fingerprint(&self) -> Result<String, StoreError> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || count(lifted_at)
                     FROM suspensions)
                 || '/' ||
                 (SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || count(revoked_at)
                     || ':' || count(replaced_at) FROM agreements)
                 || '/' || (SELECT n FROM outbox_generation)",
            [],
            |r| r.get(0),
        )?)
    }
}

/// One [`Store`] shared by the tasks of a process (the daemon, `send-now`),
/// each use taken off the async reactor. Each use holds the connection only
/// for its few statements: nothing slow (sealing, reading a source, the
/// network) runs under it.
#[derive(Debug, Clone)]
pub struct SharedStore {
    store: Arc<Mutex<Store>>,
    data_dir: Arc<PathBuf>,
}

impl SharedStore {
    /// Opens the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self::new(Store::open(data_dir)?))
    }

    /// Shares `store`.
    pub fn new(store: Store) -> Self {
        let data_dir = Arc::new(store.data_dir().to_path_buf());
        Self {
            store: Arc::new(Mutex::new(store)),
            data_dir,
        }
    }

    /// The directory holding the state.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs `f` with the store on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, TaskFailed>
    where
        F: FnOnce(&mut Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        blocking(move || f(&mut lock(&store))).await
    }

    /// The store, for code already on the blocking pool.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }
}

/// A panic while holding the lock leaves SQLite consistent (its transaction
/// rolls back), so a poisoned lock is still usable.
fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_changes_with_suspensions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("state")).expect("open");
        let before = store.state_fingerprint().expect("fingerprint");
        store
            .suspend(Scope::All, Maker::Provider, "test", None, "t", Utc::now())
            .expect("suspend");
        assert_ne!(store.state_fingerprint().expect("fingerprint"), before);
    }

    /// A receipt stored before migration 4 (version 1, naming no provider,
    /// LA, report, period or classification) is exported as it was signed,
    /// and still verifies.
    #[test]
    fn a_receipt_stored_before_version_2_still_verifies() {
        use crate::certs::{DevCa, Usage, Validity};
        use crate::wire::v1::Receipt;

        let la = DevCa::new("ca")
            .expect("ca")
            .issue("la-e09000002.test", Usage::Server, Validity::Current)
            .expect("la");
        let transfer_id = "5f0c0000000000000000000000000001";
        let old = crate::receipt::signed_as_v1(
            &la.identity(),
            Receipt {
                transfer_id: transfer_id.into(),
                sha256: vec![7; 32],
                size: 1234,
                stored_as: format!("2012-10_referrals-monthly_{transfer_id}.age"),
                received_unix_ms: 1_700_000_000_000,
                ..Receipt::default()
            },
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("state");
        {
            // The database as mishare left it before migration 4.
            let before = db::Schema {
                migrations: &migrations::MIGRATIONS[..3],
                ..SCHEMA
            };
            let conn = db::open(&data, &before).expect("old schema");
            conn.execute_batch(&format!(
                "INSERT INTO report_runs (id, report, period, started_at, actor)
                     VALUES (1, 'referrals-monthly', '2012-10', '2012-11-02T06:00:00Z', 't');
                 INSERT INTO deliveries (id, run_id, la_code, transfer_id, report, period,
                     classification, state, size, sha256, created_at, updated_at)
                     VALUES (1, 1, 'E09000002', '{transfer_id}', 'referrals-monthly',
                     '2012-10', 'internal', 'delivered', 1234, '{}',
                     '2012-11-02T06:00:00Z', '2012-11-02T06:00:00Z');",
                crate::common::encoding::hex(&old.sha256)
            ))
            .expect("an old delivery");
            conn.execute(
                "INSERT INTO receipts (delivery_id, transfer_id, sha256, size, stored_as,
                     received_unix_ms, signature, verification, stored_at)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, 'verified', '2012-11-02T06:00:01Z')",
                rusqlite::params![
                    transfer_id,
                    crate::common::encoding::hex(&old.sha256),
                    old.size as i64,
                    old.stored_as,
                    old.received_unix_ms,
                    old.signature,
                ],
            )
            .expect("its receipt");
        }
        let store = Store::open(&data).expect("migrated");
        let exported = store
            .wire_receipt(transfer_id)
            .expect("read")
            .expect("stored");
        assert_eq!(exported, old);
        assert_eq!(
            crate::receipt::verify(&exported, &la.cert_der).expect("still valid"),
            crate::receipt::Version::V1
        );
    }
}
