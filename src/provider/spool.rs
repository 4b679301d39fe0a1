//! The spool: each LA's file sealed with age to that LA's recipients and
//! written to `data_dir/spool/<transfer id>.age`, owner-only, file and
//! folder fsynced, before anything is recorded or sent.
//!
//! age uses a fresh file key each time, so a resumed transfer must send
//! these same bytes; only ciphertext ever touches the provider's disk. No
//! database lock is held while sealing: the outbox records the file after
//! it is written.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use crate::common::encoding::hex;
use crate::common::files;
use crate::seal::{self, Recipients, SealError};

/// The folder under `data_dir` holding spooled ciphertext.
pub const SPOOL_DIR: &str = "spool";

/// Why a file could not be spooled or read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
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
    Random(getrandom::Error),
    /// The delivery's ciphertext is no longer spooled.
    #[error("{0}: the ciphertext is no longer spooled")]
    Gone(PathBuf),
}

/// A fresh transfer id: 128 random bits in lower-case hex (32 characters),
/// unique per provider without coordination.
pub fn new_transfer_id() -> Result<String, SpoolError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(SpoolError::Random)?;
    Ok(hex(&bytes))
}

/// A sealed file in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub transfer_id: String,
    /// Its name under `data_dir/spool`.
    pub file_name: String,
    pub path: PathBuf,
    /// Ciphertext bytes.
    pub size: u64,
    /// SHA-256 of the ciphertext.
    pub sha256: [u8; 32],
    /// SHA-256 of the plaintext sealed (what the LA decrypts), for the
    /// release ledger.
    pub plaintext_sha256: [u8; 32],
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Seals `plaintext` (read as a stream, so memory stays bounded whatever its
/// size) for `la` to `recipients` into a new spool file under `data_dir`,
/// durably. A file that could not be written whole is removed. Blocking.
pub fn write(
    data_dir: &Path,
    la: &str,
    plaintext: impl Read,
    recipients: &Recipients,
) -> Result<Spooled, SpoolError> {
    let dir = data_dir.join(SPOOL_DIR);
    let transfer_id = new_transfer_id()?;
    let file_name = format!("{transfer_id}.age");
    let path = dir.join(&file_name);
    let io = |source| SpoolError::Io {
        path: path.clone(),
        source,
    };
    files::create_private_dir(&dir).map_err(io)?;
    let mut plaintext = Hashing {
        inner: plaintext,
        hash: <sha2::Sha256 as sha2::Digest>::new(),
    };
    let written = (|| {
        let mut out = BufWriter::new(files::create_private_file(&path).map_err(io)?);
        let sealed = seal::seal_reader(&mut plaintext, recipients, &mut out).map_err(|source| {
            SpoolError::Seal {
                la: la.to_string(),
                source: Box::new(source),
            }
        })?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        files::sync_dir(&dir).map_err(io)?;
        Ok(sealed)
    })();
    match written {
        Ok(sealed) => Ok(Spooled {
            transfer_id,
            file_name,
            path,
            size: sealed.size,
            sha256: sealed.sha256,
            plaintext_sha256: sha2::Digest::finalize(plaintext.hash).into(),
        }),
        Err(e) => {
            remove(&path);
            Err(e)
        }
    }
}

/// Opens spooled ciphertext for reading.
pub fn open(path: Option<&Path>) -> Result<File, SpoolError> {
    let path = path.ok_or_else(|| SpoolError::Gone(PathBuf::from(SPOOL_DIR)))?;
    File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            SpoolError::Gone(path.to_path_buf())
        } else {
            SpoolError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Removes spooled ciphertext no row points at any more. Best effort: a
/// file left behind is only disk space, and it is logged.
pub fn remove(path: &Path) {
    if let Err(e) = files::remove_durably(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove spooled ciphertext");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_ids_are_fresh_and_well_formed() {
        let id = new_transfer_id().expect("random");
        assert!(crate::common::names::is_transfer_id(&id), "{id}");
        assert_eq!(id.len(), 32);
        assert_ne!(id, new_transfer_id().expect("random"));
    }

    #[test]
    fn a_file_that_cannot_be_sealed_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recipients =
            Recipients::parse(&["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"])
                .expect("recipient");
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("the source broke"))
            }
        }
        let err = write(dir.path(), "E09000002", Broken, &recipients).expect_err("broken");
        assert!(matches!(err, SpoolError::Seal { .. }), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join(SPOOL_DIR))
            .expect("spool")
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let spooled = write(dir.path(), "E09000002", &b"a,b\n"[..], &recipients).expect("spooled");
        assert!(spooled.size > 0);
        assert!(open(Some(&spooled.path)).is_ok());
    }
}
