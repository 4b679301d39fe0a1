//! One process at a time pushes from a `data_dir`: the provider daemon, or
//! `send-now` when no daemon runs. Each holds an exclusive lock on
//! `data_dir/daemon.lock` while it may push, and writes who it is into the
//! file, so that whoever finds it locked can say who holds it; `send-now`
//! that finds a daemon hands its deliveries to it instead of racing it.
//!
//! The lock lasts as long as the file is open; the system drops it if the
//! process dies, even after `kill -9`.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::common::files;

/// The file under `data_dir` the pushing process holds an exclusive lock on.
pub const LOCK_FILE: &str = "daemon.lock";

/// Who holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// `mishare provider run`.
    Daemon,
    /// `mishare send-now`, pushing itself because no daemon runs.
    SendNow,
}

impl Holder {
    fn as_str(self) -> &'static str {
        match self {
            Holder::Daemon => "daemon",
            Holder::SendNow => "send-now",
        }
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds it; `holder` is what it wrote (a daemon if it
    /// wrote nothing readable: versions before `send-now` took the lock).
    #[error("{} is locked by {}", lock.display(), holder.map_or("another process", Holder::as_str))]
    Held {
        lock: PathBuf,
        holder: Option<Holder>,
    },
    /// The lock file cannot be made or locked.
    #[error("cannot lock {}: {source}", lock.display())]
    Io {
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LockError {
    /// Whether a daemon holds the lock.
    pub fn held_by_daemon(&self) -> bool {
        matches!(
            self,
            LockError::Held {
                holder: Some(Holder::Daemon) | None,
                ..
            }
        )
    }
}

/// The lock, held while this value lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes the lock for `holder`, creating `data_dir` (owner-only) and the
/// file if needed.
pub fn lock(data_dir: &Path, holder: Holder) -> Result<DataDirLock, LockError> {
    let lock = data_dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        lock: lock.clone(),
        source,
    };
    files::create_private_dir(data_dir).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(files::PRIVATE_FILE)
        .open(&lock)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let said = std::fs::read_to_string(&lock).unwrap_or_default();
            let holder = match said.split_whitespace().next() {
                Some("send-now") => Some(Holder::SendNow),
                Some("daemon") => Some(Holder::Daemon),
                _ => None,
            };
            return Err(LockError::Held { lock, holder });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    // Who holds it, for whoever finds it locked; the lock itself is what
    // counts, so a failure to say so is not fatal.
    let said = format!("{} pid {}\n", holder.as_str(), std::process::id());
    let written = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(said.as_bytes()));
    if let Err(e) = written {
        tracing::warn!(lock = %lock.display(), error = %e, "cannot write who holds the lock");
    }
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("state");
        let held = lock(&data, Holder::SendNow).expect("first");
        let err = lock(&data, Holder::Daemon).expect_err("second");
        assert!(!err.held_by_daemon());
        assert!(err.to_string().ends_with("is locked by send-now"), "{err}");
        drop(held);
        let _daemon = lock(&data, Holder::Daemon).expect("free again");
        let err = lock(&data, Holder::SendNow).expect_err("held");
        assert!(err.held_by_daemon(), "{err}");
    }
}
