//! The provider's state: one SQLite database, `data_dir/provider.db`.
//!
//! - WAL mode, so a running daemon reads what an operator's command has just
//!   committed, and readers never block the writer.
//! - Numbered migrations (`src/store/migrations.rs`) tracked with `PRAGMA user_version`,
//!   applied at open in one transaction.
//! - Every change that also writes an audit entry is one `BEGIN IMMEDIATE`
//!   transaction: two processes writing at once queue on the write lock (with
//!   a busy timeout) instead of losing a change or forking the audit chain.
//! - Owner-only: `data_dir` is 0700 and the database 0600, because
//!   administration is local to the daemon's machine.
//!
//! The API is synchronous; async callers use `spawn_blocking`.

mod agreements;
mod migrations;
mod suspensions;

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

pub(crate) use agreements::current as agreements_current;
pub use agreements::{
    Added, Agreement, AgreementError, AgreementEvent, AgreementEventKind, AgreementRequest,
    NewAgreement, Representative,
};
pub(crate) use suspensions::covering as suspensions_covering;
pub use suspensions::{Maker, Scope, Suspension};

/// The database file under `data_dir`.
pub const DATABASE_FILE: &str = "provider.db";

/// Where copies of signed agreements are kept under `data_dir`, named by
/// their SHA-256.
pub const AGREEMENTS_DIR: &str = "agreements";

/// How long a writer waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory under `data_dir` could not be created or read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `data_dir` or the database can be read by other users.
    #[error(
        "{path} is accessible to other users (mode {mode:o}); the provider's state is \
         owner-only: run `chmod {want:o} {path}`"
    )]
    Insecure { path: PathBuf, mode: u32, want: u32 },
    /// The database was written by a newer mishare.
    #[error(
        "the database {path} has schema version {found} but this mishare knows only up to \
         {known}; use the newer mishare that wrote it"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value does not have the shape this program writes.
    #[error("the database holds an unreadable {what}: {value:?}; it was changed outside mishare")]
    Corrupt { what: &'static str, value: String },
    /// An agreement request was refused.
    #[error(transparent)]
    Agreement(#[from] AgreementError),
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
}

/// An open connection to the provider's state. Cheap to open: one per
/// command, one per blocking task of the daemon.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    data_dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database under `data_dir` and brings
    /// its schema up to date.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let conn = open_database(data_dir, DATABASE_FILE, migrations::MIGRATIONS)?;
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
    /// statement, so what it reads cannot change before it commits.
    pub(crate) fn write(&mut self) -> Result<Transaction<'_>, StoreError> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }
}

/// Opens (creating if needed) the database `file` under `data_dir` the way
/// every mishare daemon keeps its state: `data_dir` 0700 and the database
/// 0600, WAL, `synchronous = FULL`, a busy timeout, and `migrations` applied
/// in order (tracked with `PRAGMA user_version`).
pub(crate) fn open_database(
    data_dir: &Path,
    file: &str,
    migrations: &[&str],
) -> Result<Connection, StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io(data_dir))?;
    owner_only(data_dir, 0o700)?;

    let db = data_dir.join(file);
    // Created here with 0600 so SQLite never makes it with the umask's
    // mode; SQLite gives the -wal and -shm files the database's mode.
    //
    // Only when it is missing: closing any descriptor of the database file
    // drops every POSIX lock this process holds on it, including those of
    // its open SQLite connections (https://sqlite.org/howtocorrupt.html,
    // 2.2). Another process would then think those connections gone, and
    // on closing its own could checkpoint and remove the WAL under them:
    // a corrupt database. A daemon opens a Store per blocking task while
    // others are open, so an existing file is touched only by SQLite.
    match std::fs::symlink_metadata(&db) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&db)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&db)(e)),
            }
        }
        Err(e) => return Err(io(&db)(e)),
    }
    owner_only(&db, 0o600)?;

    let mut conn = Connection::open(&db)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    let mode = enable_wal(&conn)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%mode, "SQLite refused WAL mode; readers may wait for writers");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    migrate(&mut conn, &db, migrations)?;
    Ok(conn)
}

/// Switches the database to WAL (a no-op once it is). Two processes creating
/// the database at once both try to switch it, and SQLite answers the loser
/// with SQLITE_BUSY at once instead of calling the busy handler; so wait and
/// retry here, within the same limit as any other wait for a lock.
fn enable_wal(conn: &Connection) -> Result<String, StoreError> {
    let started = Instant::now();
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return Ok(other?),
        }
    }
}

/// Refuses a path that group or others can use.
fn owner_only(path: &Path, want: u32) -> Result<(), StoreError> {
    let meta = std::fs::metadata(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Insecure {
            path: path.to_path_buf(),
            mode,
            want,
        });
    }
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<(), StoreError> {
    let version = |conn: &Connection| -> rusqlite::Result<i64> {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
    };
    let known = migrations.len();
    if version(conn)? == known as i64 {
        return Ok(());
    }
    // Another process may be migrating too: take the write lock, then look
    // again.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    if found < 0 || found > known as i64 {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

/// How times are stored: RFC 3339, UTC, milliseconds. Fixed width, so text
/// order is time order.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt {
            what: "time",
            value: s.to_string(),
        })
}

pub(crate) fn parse_date(s: &str) -> Result<NaiveDate, StoreError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| StoreError::Corrupt {
        what: "date",
        value: s.to_string(),
    })
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// One row or none, as `Option`.
pub(crate) trait Optional<T> {
    fn optional(self) -> Result<Option<T>, StoreError>;
}

impl<T> Optional<T> for rusqlite::Result<T> {
    fn optional(self) -> Result<Option<T>, StoreError> {
        Ok(OptionalExtension::optional(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_twice_and_migrates_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("state");
        drop(Store::open(&data).expect("first open"));
        let store = Store::open(&data).expect("second open");
        let version: i64 = store
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, migrations::MIGRATIONS.len() as i64);
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(DATABASE_FILE)), 0o600);
    }

    #[test]
    fn refuses_a_data_dir_others_can_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let err = Store::open(dir.path()).expect_err("insecure");
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("state");
        let store = Store::open(&data).expect("open");
        store
            .conn()
            .pragma_update(None, "user_version", 999)
            .expect("bump");
        drop(store);
        let err = Store::open(&data).expect_err("too new");
        assert!(err.to_string().contains("schema version 999"), "{err}");
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
