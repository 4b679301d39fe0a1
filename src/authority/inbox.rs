//! Files on disk: partial transfers under `data_dir/partial/`, finished ones
//! in `inbox/<provider id>/<period>_<report>_<transfer id>.age`.
//!
//! A partial file is named by a hash of (provider, transfer id), so no
//! peer's string becomes a path there. A file reaches the inbox only whole
//! and verified, by a hard link (atomic, and it fails rather than overwrite
//! an existing file), after which the partial name is removed and both
//! directories are fsynced. Partial files never appear in the inbox.
//!
//! Everything here blocks; the service calls it through `spawn_blocking`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::common::files;

use sha2::{Digest, Sha256};

use super::error::InternalError;

/// The folder under `data_dir` holding partial transfers (on the inbox's
/// filesystem: the configuration checks it, since a file is published by a
/// hard link).
pub use crate::config::authority::PARTIAL_DIR;

/// Where received files live.
#[derive(Debug, Clone)]
pub struct Inbox {
    inbox: PathBuf,
    partial: PathBuf,
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InternalError {
    let path = path.to_path_buf();
    move |source| InternalError::Io { what, path, source }
}

impl Inbox {
    /// Creates (if needed) the inbox and `data_dir/partial`, owner-only.
    pub fn open(inbox: &Path, data_dir: &Path) -> Result<Self, InternalError> {
        let partial = data_dir.join(PARTIAL_DIR);
        for dir in [inbox, partial.as_path()] {
            files::create_private_dir(dir).map_err(io_error("cannot create directory", dir))?;
        }
        Ok(Self {
            inbox: inbox.to_path_buf(),
            partial,
        })
    }

    /// The inbox directory.
    pub fn dir(&self) -> &Path {
        &self.inbox
    }

    /// The folder of partial files (on the inbox's filesystem).
    pub fn partial_dir(&self) -> &Path {
        &self.partial
    }

    /// The partial file of a transfer.
    pub fn partial_path(&self, provider: &str, transfer_id: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(b"mishare partial v1\0");
        h.update(provider.as_bytes());
        h.update([0]);
        h.update(transfer_id.as_bytes());
        self.partial.join(format!(
            "{}.part",
            crate::common::encoding::hex(&h.finalize())
        ))
    }

    /// Where a finished file goes. Both parts were validated by the caller:
    /// `provider` is a configured DNS name, `stored_as` built from a
    /// validated manifest.
    pub fn final_path(&self, provider: &str, stored_as: &str) -> PathBuf {
        self.inbox.join(provider).join(stored_as)
    }

    /// Opens the partial file for a transfer with `committed` bytes durable:
    /// anything beyond them is cut off, and the kept prefix is hashed so the
    /// digest can be checked at commit. `Ok(None)` if the file holds fewer
    /// than `committed` bytes (it was changed outside mishare).
    pub fn open_partial(
        &self,
        provider: &str,
        transfer_id: &str,
        committed: u64,
    ) -> Result<Option<PartialFile>, InternalError> {
        let path = self.partial_path(provider, transfer_id);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(files::PRIVATE_FILE)
            .open(&path)
            .map_err(io_error("cannot open partial file", &path))?;
        let len = file
            .metadata()
            .map_err(io_error("cannot read partial file", &path))?
            .len();
        if len < committed {
            return Ok(None);
        }
        if len > committed {
            // Bytes past the durable offset were never committed.
            file.set_len(committed)
                .map_err(io_error("cannot truncate partial file", &path))?;
        }
        let mut hasher = Sha256::new();
        file.seek(SeekFrom::Start(0))
            .map_err(io_error("cannot read partial file", &path))?;
        let hashed = io::copy(
            &mut (&mut file).take(committed),
            &mut HashWriter(&mut hasher),
        )
        .map_err(io_error("cannot read partial file", &path))?;
        if hashed != committed {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(committed))
            .map_err(io_error("cannot seek partial file", &path))?;
        Ok(Some(PartialFile {
            file,
            path,
            hasher,
            len: committed,
            synced: committed,
        }))
    }

    /// Removes a transfer's partial file, if there is one.
    pub fn discard(&self, provider: &str, transfer_id: &str) -> Result<(), InternalError> {
        remove_if_exists(&self.partial_path(provider, transfer_id))
    }

    /// Every file in the partial folder.
    pub fn partial_files(&self) -> Result<Vec<PathBuf>, InternalError> {
        let entries = std::fs::read_dir(&self.partial)
            .map_err(io_error("cannot list partial files", &self.partial))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("cannot list partial files", &self.partial))?;
            out.push(entry.path());
        }
        Ok(out)
    }

    /// Moves a verified partial file into the inbox: hard link (which never
    /// overwrites), remove the partial name, fsync both directories. If the
    /// final file already exists it is accepted only if it holds exactly
    /// these bytes (an earlier attempt got that far and stopped).
    pub fn publish(
        &self,
        provider: &str,
        transfer_id: &str,
        stored_as: &str,
        size: u64,
        sha256: &[u8],
    ) -> Result<PathBuf, InternalError> {
        let partial = self.partial_path(provider, transfer_id);
        let folder = self.inbox.join(provider);
        if !folder.exists() {
            files::create_private_dir(&folder)
                .map_err(io_error("cannot create inbox folder", &folder))?;
            sync_dir(&self.inbox)?;
        }
        let target = folder.join(stored_as);
        match std::fs::hard_link(&partial, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let (len, digest) = hash_file(&target)?;
                if len != size || digest.as_slice() != sha256 {
                    return Err(InternalError::Inconsistent(format!(
                        "{} already exists with other contents; it is never overwritten: move \
                         it aside and have the provider push again",
                        target.display()
                    )));
                }
            }
            Err(e) => return Err(io_error("cannot link into the inbox", &target)(e)),
        }
        sync_dir(&folder)?;
        remove_if_exists(&partial)?;
        sync_dir(&self.partial)?;
        Ok(target)
    }
}

/// A partial transfer being written.
#[derive(Debug)]
pub struct PartialFile {
    file: File,
    path: PathBuf,
    hasher: Sha256,
    len: u64,
    synced: u64,
}

impl PartialFile {
    /// Bytes written so far (durable or not).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes written since the last fsync.
    pub fn unsynced(&self) -> u64 {
        self.len - self.synced
    }

    /// Appends `data` and hashes it.
    pub fn write(&mut self, data: &[u8]) -> Result<(), InternalError> {
        self.file
            .write_all(data)
            .map_err(io_error("cannot write partial file", &self.path))?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Makes everything written durable; returns the durable length.
    pub fn sync(&mut self) -> Result<u64, InternalError> {
        if self.synced != self.len {
            self.file
                .sync_data()
                .map_err(io_error("cannot fsync partial file", &self.path))?;
            self.synced = self.len;
        }
        Ok(self.synced)
    }

    /// The SHA-256 of everything written.
    pub fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    /// Whether the file parses as an age v1 file (its whole header and the
    /// payload nonce); `Err` with the reason if not.
    pub fn check_age_header(&self) -> Result<Result<(), String>, InternalError> {
        let file =
            File::open(&self.path).map_err(io_error("cannot read partial file", &self.path))?;
        Ok(check_age_header(io::BufReader::new(file)))
    }

    /// Removes the file.
    pub fn discard(self) -> Result<(), InternalError> {
        drop(self.file);
        remove_if_exists(&self.path)
    }
}

/// Whether `reader` starts with a valid age v1 header. Parsing the header
/// needs no key; [`crate::seal::check_header`] also bounds how much of a
/// hostile header is read.
pub fn check_age_header(reader: impl Read) -> Result<(), String> {
    crate::seal::check_header(reader).map_err(|e| e.to_string())
}

/// The length and SHA-256 of a file.
pub fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), InternalError> {
    let mut file = File::open(path).map_err(io_error("cannot read", path))?;
    let mut hasher = Sha256::new();
    let len =
        io::copy(&mut file, &mut HashWriter(&mut hasher)).map_err(io_error("cannot read", path))?;
    Ok((len, hasher.finalize().into()))
}

fn remove_if_exists(path: &Path) -> Result<(), InternalError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("cannot remove", path)(e)),
    }
}

/// Makes a directory's entries (a new name, a removed one) durable.
fn sync_dir(dir: &Path) -> Result<(), InternalError> {
    files::sync_dir(dir).map_err(io_error("cannot fsync directory", dir))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
