//! The one way mishare opens an SQLite database, on either side.
//!
//! - Owner-only: the directory 0700 and the database 0600; a looser one is
//!   refused with the `chmod` that fixes it, because administration is local.
//! - WAL mode, so a running daemon reads what an operator's command has just
//!   committed, and readers never block the writer; `synchronous = FULL`.
//! - Numbered migrations tracked with `PRAGMA user_version`, applied at open
//!   in one transaction; a database from a newer mishare is refused.
//! - A busy timeout: two processes writing at once queue on the write lock.
//!
//! The provider's store and the endpoint's each hold their own schema and
//! SQL; this module holds none.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::files;

/// How long a writer waits for another process's write to finish.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a database could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// A file or directory could not be created or read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The directory or the database can be read by other users.
    #[error(
        "{path} is accessible to other users (mode {mode:o}); {whose} is owner-only: \
         run `chmod {want:o} {path}`"
    )]
    Insecure {
        path: PathBuf,
        mode: u32,
        want: u32,
        /// Whose state it is, in words.
        whose: &'static str,
    },
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
}

impl DbError {
    /// A stored value that is not what mishare writes.
    pub fn corrupt(what: &'static str, value: impl Into<String>) -> Self {
        DbError::Corrupt {
            what,
            value: value.into(),
        }
    }
}

/// One side's database: its file name, whose state it holds (for
/// messages), and its migrations, in order (migration `n` is
/// `migrations[n - 1]`; append new ones, never edit one that has shipped).
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    pub file: &'static str,
    pub whose: &'static str,
    pub migrations: &'static [&'static str],
}

/// Opens (creating if needed) `schema`'s database under `dir`: the
/// directory and file owner-only, WAL, `synchronous = FULL`, a busy
/// timeout, foreign keys on, and the migrations applied in order.
pub fn open(dir: &Path, schema: &Schema) -> Result<Connection, DbError> {
    let (file, whose, migrations) = (schema.file, schema.whose, schema.migrations);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DbError::Io { path, source }
    };
    files::create_private_dir(dir).map_err(io(dir))?;
    owner_only(dir, files::PRIVATE_DIR, whose)?;

    let db = dir.join(file);
    // Created here with 0600 so SQLite never makes it with the umask's
    // mode; SQLite gives the -wal and -shm files the database's mode.
    //
    // Only when it is missing: closing any descriptor of the database file
    // drops every POSIX lock this process holds on it, including those of
    // its open SQLite connections (https://sqlite.org/howtocorrupt.html,
    // 2.2). Another process would then think those connections gone, and
    // on closing its own could checkpoint and remove the WAL under them:
    // a corrupt database. So an existing file is touched only by SQLite.
    match std::fs::symlink_metadata(&db) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match files::create_private_file(&db) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&db)(e)),
            }
        }
        Err(e) => return Err(io(&db)(e)),
    }
    owner_only(&db, files::PRIVATE_FILE, whose)?;

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

/// Starts a write transaction that holds the write lock from its first
/// statement, so what it reads cannot change before it commits (and no
/// other writer can take the same audit sequence number).
pub fn write(conn: &mut Connection) -> Result<Transaction<'_>, DbError> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// Switches the database to WAL (a no-op once it is). Two processes creating
/// the database at once both try to switch it, and SQLite answers the loser
/// with SQLITE_BUSY at once instead of calling the busy handler; so wait and
/// retry here, within the same limit as any other wait for a lock.
fn enable_wal(conn: &Connection) -> Result<String, DbError> {
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
fn owner_only(path: &Path, want: u32, whose: &'static str) -> Result<(), DbError> {
    match files::mode_if_shared(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(DbError::Insecure {
            path: path.to_path_buf(),
            mode,
            want,
            whose,
        }),
        Err(source) => Err(DbError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<(), DbError> {
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
        return Err(DbError::TooNew {
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

/// A stored time (RFC 3339) back, or [`DbError::Corrupt`].
pub fn time_column(s: &str) -> Result<DateTime<Utc>, DbError> {
    super::time::parse_timestamp(s).ok_or_else(|| DbError::corrupt("time", s))
}

/// A stored date (`YYYY-MM-DD`) back, or [`DbError::Corrupt`].
pub fn date_column(s: &str) -> Result<NaiveDate, DbError> {
    super::time::parse_date(s).ok_or_else(|| DbError::corrupt("date", s))
}

/// One row or none, as `Option`.
pub trait Optional<T> {
    fn optional(self) -> Result<Option<T>, DbError>;
}

impl<T> Optional<T> for rusqlite::Result<T> {
    fn optional(self) -> Result<Option<T>, DbError> {
        Ok(OptionalExtension::optional(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SCHEMA: Schema = Schema {
        file: "x.db",
        whose: "the test's state",
        migrations: &["CREATE TABLE t (x INTEGER);"],
    };

    #[test]
    fn opens_twice_and_migrates_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("state");
        drop(open(&data, &SCHEMA).expect("first open"));
        let conn = open(&data, &SCHEMA).expect("second open");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, 1);
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("x.db")), 0o600);
    }

    #[test]
    fn refuses_a_directory_others_can_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let err = open(dir.path(), &SCHEMA).expect_err("insecure");
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("state");
        let conn = open(&data, &SCHEMA).expect("open");
        conn.pragma_update(None, "user_version", 999).expect("bump");
        drop(conn);
        let err = open(&data, &SCHEMA).expect_err("too new");
        assert!(err.to_string().contains("schema version 999"), "{err}");
    }
}
