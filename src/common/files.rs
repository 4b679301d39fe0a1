//! Durable, owner-only files: the one place that knows how mishare makes a
//! directory private, writes a file so that it survives a crash, and makes a
//! new or removed name durable.
//!
//! Every function blocks; async callers use [`super::blocking`]. Errors are
//! plain `io::Error`s: callers add which file and why it mattered.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every directory mishare keeps state in.
pub const PRIVATE_DIR: u32 = 0o700;

/// The mode of every file mishare keeps state in.
pub const PRIVATE_FILE: u32 = 0o600;

/// Creates `dir` and any missing parents, owner-only. An existing directory
/// is left as it is (see [`mode_if_shared`] to check it).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
}

/// The permission bits of `path` if group or others have any access to it;
/// `None` if it is owner-only.
pub fn mode_if_shared(path: &Path) -> io::Result<Option<u32>> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

/// Creates a new file (never replacing one), owner-only, for writing.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(path)
}

/// Creates a new owner-only file holding `bytes`, fsynced, and makes its
/// name durable. Never replaces an existing file; a file that could not be
/// written whole is removed.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = create_private_file(path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        // The file is ours (create_new): a partial one is worse than none.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    sync_parent(path)
}

/// Puts `bytes` at `dir/name` atomically: written to a temporary file in
/// `dir`, fsynced, renamed over `name`, and the directory fsynced. A reader
/// sees the old contents or the new, never a part.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let written = (|| {
        let mut file = create_private_file(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, dir.join(name))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    sync_dir(dir)
}

/// Makes a directory's entries (a new name, a removed one) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// [`sync_dir`] on the directory holding `path`.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Removes `path` and makes the removal durable. `Ok(false)` if there was
/// nothing to remove.
pub fn remove_durably(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_parent(path).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn private_dirs_and_files_are_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("a/b");
        create_private_dir(&state).expect("mkdir");
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode_if_shared(&state).expect("mode"), None);
        let file = state.join("f");
        write_new_private(&file, b"x").expect("write");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).expect("read"), b"x");
        let again = write_new_private(&file, b"y").expect_err("never replaced");
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        assert_eq!(mode_if_shared(&state).expect("mode"), Some(0o750));
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_atomically(dir.path(), "doc", b"first").expect("write");
        write_atomically(dir.path(), "doc", b"second").expect("rewrite");
        assert_eq!(
            std::fs::read(dir.path().join("doc")).expect("read"),
            b"second"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["doc"]);
    }

    #[test]
    fn removal_says_whether_there_was_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        write_new_private(&file, b"x").expect("write");
        assert!(remove_durably(&file).expect("remove"));
        assert!(!remove_durably(&file).expect("already gone"));
    }
}
