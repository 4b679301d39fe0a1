//! Sealing: age encryption of each LA's file to that LA's X25519
//! recipients, and the LA's side of it (identities, opening, key generation).
//! One concept, age, kept in one file (so it is longer than most): both
//! sides of the format, and its errors, read together.
//!
//! The files are standard age v1 (<https://age-encryption.org/v1>): an LA
//! opens them with `mishare decrypt` or the standard `age -d -i KEY FILE`.
//!
//! - [`seal`] and [`seal_reader`] encrypt while streaming and return the
//!   ciphertext's size and SHA-256 ([`Sealed`]), measured on the bytes as they
//!   were written, so the provider can spool ciphertext and digest before the
//!   first byte leaves. Plaintext is never written anywhere but into the age
//!   stream.
//! - [`open`] decrypts while streaming with an LA's [`Identities`].
//! - [`check_header`] and [`is_age_v1`] let the authority endpoint refuse a
//!   payload that is not an age v1 file, without any key.
//! - [`generate`] makes a new identity file, as `age-keygen` would.
//!
//! Secrets (identities, the text of identity files) live in `secrecy` and
//! `zeroize` types and never appear in `Debug` output or error messages.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use age::secrecy::ExposeSecret;
use age::x25519;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The first line of every age v1 file.
pub const AGE_V1_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// The longest age header [`check_header`] and [`open`] accept. An X25519
/// stanza takes about 130 bytes, so this allows over a hundred recipients
/// while bounding what an untrusted payload can make us buffer (age's header
/// parser starts again from the top for each line it needs, so the cost of a
/// hostile header grows with the square of this).
pub const MAX_HEADER_BYTES: u64 = 16 * 1024;

/// The buffer the header is read through. Whatever it reads beyond the
/// header goes on to the payload decryption, so nothing is lost.
const HEADER_BUFFER_BYTES: usize = 8 * 1024;

/// The largest identity file [`Identities::load`] reads.
const MAX_IDENTITY_FILE_BYTES: u64 = 1024 * 1024;

/// The plaintext buffer [`seal_reader`] streams through: one age chunk.
const SEAL_BUFFER_BYTES: usize = 64 * 1024;

/// How many characters of a rejected recipient an error shows. Short enough
/// that a secret key pasted by mistake (`AGE-SECRET-KEY-1…`) shows none of
/// its key material.
const SHOWN_CHARS: usize = 12;

/// What can go wrong while sealing, opening or handling keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The LA has no recipients: nothing could ever open the file.
    #[error(
        "no age recipients are configured: add the LA's public key (age1…) to its \
         `recipients` list"
    )]
    NoRecipients,

    /// One of the LA's `recipients` is not an X25519 age recipient. Only a
    /// truncated form of the entry is kept, in case it is a secret.
    #[error("recipients[{index}] ({shown:?}) is not an age X25519 recipient: {reason}")]
    BadRecipient {
        /// Its position in the list, from 0.
        index: usize,
        /// Its first few characters, then `…`.
        shown: String,
        /// Why it was refused, and what to do.
        reason: &'static str,
    },

    /// age refused to build the file (not expected with X25519 recipients).
    #[error("cannot start the age encryption")]
    Encrypt(#[source] age::EncryptError),

    /// The plaintext could not be read.
    #[error("cannot read the plaintext to seal")]
    ReadPlaintext(#[source] io::Error),

    /// The ciphertext could not be written.
    #[error("cannot write the sealed file")]
    WriteCiphertext(#[source] io::Error),

    /// The ciphertext could not be read (an I/O error, not bad content).
    #[error("cannot read the encrypted file")]
    ReadCiphertext(#[source] io::Error),

    /// An identity file could not be read.
    #[error("cannot read the identity file {}", path.display())]
    IdentityFileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// An identity file holds something other than identities and comments.
    #[error("{}, line {line}: {reason}", path.display())]
    IdentityFileInvalid {
        /// The file.
        path: PathBuf,
        /// The line, from 1; 0 for the file as a whole. Its text is never
        /// shown: it may be a secret.
        line: usize,
        /// What is wrong, and what to do.
        reason: &'static str,
    },

    /// An identity file has no `AGE-SECRET-KEY-1…` line.
    #[error(
        "{} holds no age identity (a line starting AGE-SECRET-KEY-1): is it the \
         key file made by `mishare keygen` or `age-keygen`?",
        path.display()
    )]
    IdentityFileEmpty {
        /// The file.
        path: PathBuf,
    },

    /// [`generate`] will not replace an existing file: files sealed to the
    /// old key could never be opened again.
    #[error(
        "{} already exists; a key is never overwritten (files encrypted to it could \
         not be opened again): choose another name or move the old file away",
        path.display()
    )]
    KeyFileExists {
        /// The file.
        path: PathBuf,
    },

    /// A new identity file could not be written.
    #[error("cannot write the identity file {}", path.display())]
    KeyFileWrite {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// The file is sealed to recipients none of the identities match.
    #[error(
        "none of the identities in {} can open this file; is it for another LA?",
        path.display()
    )]
    WrongIdentity {
        /// The identity file that was tried.
        path: PathBuf,
    },

    /// The file is encrypted with a passphrase, which mishare never does.
    #[error(
        "this age file is encrypted with a passphrase, not to an LA's key; it was not \
         made by mishare: open it with `age -d`"
    )]
    Passphrase,

    /// The input does not start with a valid age v1 header.
    #[error("not an age v1 encrypted file (its header is missing or malformed)")]
    NotAge,

    /// The input is an age file of a format this version does not know.
    #[error("an age file of an unknown format, perhaps from a newer version of age")]
    UnknownFormat,

    /// The header goes on beyond [`MAX_HEADER_BYTES`].
    #[error("the age header is longer than {MAX_HEADER_BYTES} bytes; refusing to read on")]
    HeaderTooLarge,

    /// The input ends inside the header.
    #[error("the file ends inside its age header: it is truncated")]
    TruncatedHeader,

    /// Authentication failed: the file was altered or cut short. Nothing
    /// read from it can be trusted.
    #[error(
        "the encrypted file is damaged or incomplete ({detail}); discard anything \
         decrypted from it and ask the provider to send it again"
    )]
    Damaged {
        /// What age reported.
        detail: String,
    },
}

// ---------------------------------------------------------------------------
// Recipients

/// An LA's age recipients (X25519 public keys, `age1…`), checked.
#[derive(Debug, Clone)]
pub struct Recipients(Vec<x25519::Recipient>);

impl Recipients {
    /// Parses the `recipients = ["age1…", …]` strings of an LA's
    /// configuration. Surrounding whitespace is ignored; the list must not be
    /// empty.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, SealError> {
        if entries.is_empty() {
            return Err(SealError::NoRecipients);
        }
        let mut parsed = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.as_ref().trim();
            match entry.parse::<x25519::Recipient>() {
                Ok(r) => parsed.push(r),
                Err(_) => {
                    return Err(SealError::BadRecipient {
                        index,
                        shown: shown(entry),
                        reason: recipient_problem(entry),
                    });
                }
            }
        }
        Ok(Recipients(parsed))
    }

    /// How many recipients there are (never 0).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: [`Recipients::parse`] refuses an empty list.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recipients in their standard form (`age1…`).
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    fn encryptor(&self) -> Result<age::Encryptor, SealError> {
        age::Encryptor::with_recipients(self.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(SealError::Encrypt)
    }
}

/// The first [`SHOWN_CHARS`] characters of `s`, then `…` if there were more.
fn shown(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(SHOWN_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

fn recipient_problem(entry: &str) -> &'static str {
    let upper = entry.to_ascii_uppercase();
    if upper.starts_with("AGE-SECRET-KEY-") {
        "this is a SECRET key, not a recipient: remove it, ask the LA for its public key \
         (age1…) and have the LA make a new key, as this one is no longer secret"
    } else if entry.starts_with("ssh-") {
        "SSH keys are not supported: ask the LA for an age X25519 public key (age1…)"
    } else if entry.is_empty() {
        "it is empty: give the LA's public key (age1…)"
    } else if entry.starts_with("age1") && entry.len() != 62 {
        "it is not a 62-character X25519 public key (plugin and post-quantum recipients are \
         not supported); check it was copied whole"
    } else if entry.starts_with("age1") {
        "it is not valid Bech32; check it was copied exactly"
    } else {
        "an age X25519 public key starts with age1 and is 62 characters long"
    }
}

// ---------------------------------------------------------------------------
// Sealing

/// What [`seal`] wrote: the ciphertext's size and SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// Bytes of ciphertext written.
    pub size: u64,
    /// SHA-256 of those bytes.
    pub sha256: [u8; 32],
}

/// Encrypts `plaintext` to `recipients`, writing the age file to `out`.
///
/// `out` receives only ciphertext. Wrap it in a `BufWriter` if it is
/// unbuffered: age writes the header in small pieces.
pub fn seal(
    plaintext: &[u8],
    recipients: &Recipients,
    out: impl Write,
) -> Result<Sealed, SealError> {
    let mut writer = recipients
        .encryptor()?
        .wrap_output(HashingWriter::new(out))
        .map_err(SealError::WriteCiphertext)?;
    writer
        .write_all(plaintext)
        .map_err(SealError::WriteCiphertext)?;
    finish(writer)
}

/// Like [`seal`], but reads the plaintext from `plaintext` through one fixed
/// buffer (64 KiB, zeroed afterwards), so memory stays bounded whatever the
/// size.
pub fn seal_reader(
    mut plaintext: impl Read,
    recipients: &Recipients,
    out: impl Write,
) -> Result<Sealed, SealError> {
    let mut writer = recipients
        .encryptor()?
        .wrap_output(HashingWriter::new(out))
        .map_err(SealError::WriteCiphertext)?;
    let mut buf = Zeroizing::new(vec![0u8; SEAL_BUFFER_BYTES]);
    loop {
        let n = match plaintext.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SealError::ReadPlaintext(e)),
        };
        writer
            .write_all(&buf[..n])
            .map_err(SealError::WriteCiphertext)?;
    }
    finish(writer)
}

fn finish<W: Write>(
    writer: age::stream::StreamWriter<HashingWriter<W>>,
) -> Result<Sealed, SealError> {
    let mut hashing = writer.finish().map_err(SealError::WriteCiphertext)?;
    hashing.flush().map_err(SealError::WriteCiphertext)?;
    Ok(hashing.sealed())
}

/// Passes writes through to `inner`, counting and hashing exactly the bytes
/// `inner` accepted.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn sealed(self) -> Sealed {
        Sealed {
            size: self.size,
            sha256: self.hasher.finalize().into(),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------------------
// The header

/// Whether `prefix` starts with the age v1 magic line. False when `prefix` is
/// shorter than [`AGE_V1_MAGIC`]: a caller must pass at least that much.
pub fn is_age_v1(prefix: &[u8]) -> bool {
    prefix.starts_with(AGE_V1_MAGIC)
}

/// Reads and parses a whole age v1 header (and the payload nonce after it)
/// from `reader`, without any key, reading at most [`MAX_HEADER_BYTES`] plus
/// the nonce. The header's MAC can only be checked with a key, so this proves
/// the shape of the file, not who made it.
pub fn check_header(reader: impl Read) -> Result<(), SealError> {
    let (limited, _) = HeaderLimit::new(reader);
    age::Decryptor::new_buffered(io::BufReader::with_capacity(HEADER_BUFFER_BYTES, limited))
        .map_err(header_error)?;
    Ok(())
}

/// Limits the bytes read while `armed`, so a hostile header cannot make the
/// parser buffer without end; disarmed once the header has been read.
struct HeaderLimit<R> {
    inner: R,
    remaining: u64,
    armed: Arc<AtomicBool>,
}

impl<R> HeaderLimit<R> {
    /// The reader, and the switch that lifts the limit.
    fn new(inner: R) -> (Self, Arc<AtomicBool>) {
        let armed = Arc::new(AtomicBool::new(true));
        let limited = HeaderLimit {
            inner,
            // The 16-byte payload nonce is read with the header.
            remaining: MAX_HEADER_BYTES + 16,
            armed: Arc::clone(&armed),
        };
        (limited, armed)
    }
}

impl<R: Read> Read for HeaderLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.armed.load(Ordering::Relaxed) {
            return self.inner.read(buf);
        }
        if self.remaining == 0 {
            return Err(io::Error::other(HeaderTooLarge));
        }
        let max = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        let cap = buf.len().min(max);
        let n = self.inner.read(&mut buf[..cap])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Carried inside an `io::Error` by [`HeaderLimit`].
#[derive(Debug)]
struct HeaderTooLarge;

impl fmt::Display for HeaderTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("age header over the limit")
    }
}

impl std::error::Error for HeaderTooLarge {}

fn header_error(e: age::DecryptError) -> SealError {
    match e {
        age::DecryptError::InvalidHeader => SealError::NotAge,
        age::DecryptError::UnknownFormat => SealError::UnknownFormat,
        age::DecryptError::Io(io) => io_while_reading(io, SealError::TruncatedHeader),
        other => SealError::Damaged {
            detail: other.to_string(),
        },
    }
}

/// Sorts an I/O error from reading ciphertext: our own limit, the input
/// ending early (`eof`), or a genuine read failure.
fn io_while_reading(e: io::Error, eof: SealError) -> SealError {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<HeaderTooLarge>())
    {
        SealError::HeaderTooLarge
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        eof
    } else {
        SealError::ReadCiphertext(e)
    }
}

// ---------------------------------------------------------------------------
// Identities and opening

/// An LA's age identities (X25519 secret keys), loaded from an identity file.
/// `Debug` shows the file and how many keys, never the keys.
pub struct Identities {
    path: PathBuf,
    keys: Vec<x25519::Identity>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("path", &self.path)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// Reads a standard age identity file: `AGE-SECRET-KEY-1…` lines, `#`
    /// comments and blank lines (as `age-keygen` and [`generate`] write).
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let unreadable = |source| SealError::IdentityFileUnreadable {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |line, reason| SealError::IdentityFileInvalid {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let file = File::open(path).map_err(unreadable)?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_IDENTITY_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > MAX_IDENTITY_FILE_BYTES {
            return Err(invalid(
                0,
                "the file is over 1 MiB, far larger than any identity file: is it the right file?",
            ));
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Err(invalid(
                0,
                "the file is not text: is it the key file, not an encrypted file?",
            ));
        };
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            // Tolerate CRLF endings and stray trailing spaces.
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.parse::<x25519::Identity>() {
                Ok(key) => keys.push(key),
                Err(_) => return Err(invalid(i + 1, identity_problem(line))),
            }
        }
        if keys.is_empty() {
            return Err(SealError::IdentityFileEmpty {
                path: path.to_path_buf(),
            });
        }
        Ok(Identities {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The file the identities came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public recipient (`age1…`) of each identity, in file order.
    pub fn recipients(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }
}

fn identity_problem(line: &str) -> &'static str {
    if line.starts_with("age1") {
        "this is a public key (a recipient); decrypting needs the secret key file, whose key \
         line starts AGE-SECRET-KEY-1"
    } else if line.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-1") {
        "this age secret key is malformed; check the file was copied whole and unchanged"
    } else if line.starts_with("AGE-PLUGIN-") {
        "plugin identities are not supported; use the standard `age` tool for this key"
    } else {
        "not an age identity (AGE-SECRET-KEY-1…) or a # comment: is this the key file?"
    }
}

/// Starts decrypting the age file read from `ciphertext` with `identities`.
///
/// The header is read and the file key unwrapped before this returns, so a
/// wrong key or a file that is not age fails here. The payload is then
/// decrypted as it is read, 64 KiB chunk by chunk, each authenticated before
/// any of it is returned: a damaged or truncated file fails at the damaged
/// chunk with [`SealError::Damaged`] inside the `io::Error` (see
/// [`Opened`]). Bytes from earlier chunks are authentic, but a caller must
/// treat the whole output as void unless it reads to the end without error.
pub fn open<R: Read>(ciphertext: R, identities: &Identities) -> Result<Opened<R>, SealError> {
    let (limited, armed) = HeaderLimit::new(ciphertext);
    let buffered = io::BufReader::with_capacity(HEADER_BUFFER_BYTES, limited);
    let decryptor = age::Decryptor::new_buffered(buffered).map_err(header_error)?;
    armed.store(false, Ordering::Relaxed);
    if decryptor.is_scrypt() {
        return Err(SealError::Passphrase);
    }
    let stream = decryptor
        .decrypt(identities.keys.iter().map(|k| k as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => SealError::WrongIdentity {
                path: identities.path.clone(),
            },
            age::DecryptError::InvalidHeader => SealError::NotAge,
            age::DecryptError::Io(io) => io_while_reading(io, SealError::TruncatedHeader),
            other => SealError::Damaged {
                detail: other.to_string(),
            },
        })?;
    Ok(Opened { stream })
}

/// The plaintext of an age file being decrypted by [`open`].
///
/// A read fails with an `io::Error` of kind `InvalidData` or `UnexpectedEof`
/// carrying [`SealError::Damaged`] when the file was altered or cut short;
/// use [`SealError::from_io`] to get it back. Other I/O errors come from the
/// underlying reader unchanged.
pub struct Opened<R> {
    stream: age::stream::StreamReader<io::BufReader<HeaderLimit<R>>>,
}

impl<R> fmt::Debug for Opened<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened").finish_non_exhaustive()
    }
}

impl<R: Read> Read for Opened<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).map_err(|e| match e.kind() {
            // age's own verdicts: a chunk failed authentication, the last
            // chunk is missing, or data follows it.
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => io::Error::new(
                e.kind(),
                SealError::Damaged {
                    detail: e.to_string(),
                },
            ),
            _ => e,
        })
    }
}

impl SealError {
    /// The `SealError` inside an I/O error from reading [`Opened`], if any.
    pub fn from_io(e: &io::Error) -> Option<&SealError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<SealError>())
    }
}

// ---------------------------------------------------------------------------
// Key generation

/// Makes a new X25519 identity and writes it to `out` in the standard format
/// (`# created: …`, `# public key: age1…`, `AGE-SECRET-KEY-1…`), creating the
/// file (never replacing one) with mode 0600 on Unix. Returns the recipient
/// (`age1…`): the public key the LA gives the provider.
pub fn generate(out: &Path) -> Result<String, SealError> {
    let write_error = |source| SealError::KeyFileWrite {
        path: out.to_path_buf(),
        source,
    };
    let identity = x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let contents = Zeroizing::new(format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    ));

    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(out) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(SealError::KeyFileExists {
                path: out.to_path_buf(),
            });
        }
        Err(e) => return Err(write_error(e)),
    };
    if let Err(e) = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
    {
        drop(file);
        // A half-written key is worse than none; the file is ours (create_new).
        let _ = std::fs::remove_file(out);
        return Err(write_error(e));
    }
    Ok(recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts at most 3 bytes a call, so short writes are exercised.
    struct Dribble(Vec<u8>);

    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hashing_writer_counts_only_what_was_accepted() {
        let mut w = HashingWriter::new(Dribble(Vec::new()));
        w.write_all(b"hello, world").expect("write");
        let written = w.inner.0.clone();
        let sealed = w.sealed();
        assert_eq!(written, b"hello, world");
        assert_eq!(sealed.size, 12);
        assert_eq!(
            sealed.sha256,
            <[u8; 32]>::from(Sha256::digest(b"hello, world"))
        );
    }

    #[test]
    fn shown_truncates_and_hides_secret_key_material() {
        assert_eq!(shown("age1abc"), "age1abc");
        assert_eq!(shown("age1abcdefghijklmn"), "age1abcdefgh…");
        let secret = x25519::Identity::generate().to_string();
        let s = shown(secret.expose_secret());
        assert_eq!(s, "AGE-SECRET-K…");
    }

    #[test]
    fn is_age_v1_needs_the_whole_magic_line() {
        assert!(is_age_v1(b"age-encryption.org/v1\n-> X25519"));
        assert!(!is_age_v1(b"age-encryption.org/v1"));
        assert!(!is_age_v1(b"age-encryption.org/v2\n"));
        assert!(!is_age_v1(b""));
    }

    #[test]
    fn header_limit_stops_an_endless_header() {
        // A valid start, then a stanza body line that never ends.
        let mut hostile = b"age-encryption.org/v1\n-> X25519 ".to_vec();
        hostile.extend(std::iter::repeat_n(b'A', 1 << 20));
        let err = check_header(&hostile[..]).expect_err("over the limit");
        assert!(
            matches!(err, SealError::HeaderTooLarge | SealError::NotAge),
            "{err:?}"
        );
        // Many well-formed stanzas: only the limit can stop them.
        let mut many = b"age-encryption.org/v1\n".to_vec();
        for _ in 0..2000 {
            many.extend_from_slice(b"-> X25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
            many.extend_from_slice(b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
        }
        let err = check_header(&many[..]).expect_err("over the limit");
        assert!(matches!(err, SealError::HeaderTooLarge), "{err:?}");
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key.txt");
        generate(&path).expect("generate");
        let text = std::fs::read_to_string(&path).expect("read key");
        let secret = text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .expect("a key line");
        let ids = Identities::load(&path).expect("load");
        let debug = format!("{ids:?}");
        assert!(!debug.contains(secret), "{debug}");
        assert!(!debug.contains("AGE-SECRET"), "{debug}");
        assert!(debug.contains("keys: 1"), "{debug}");
    }

    #[test]
    fn recipient_errors_name_the_entry_and_never_echo_a_secret() {
        let good = x25519::Identity::generate().to_public().to_string();
        let secret = x25519::Identity::generate().to_string();
        let secret = secret.expose_secret();
        let err = Recipients::parse(&[good.as_str(), secret]).expect_err("a secret key");
        let msg = err.to_string();
        assert!(
            msg.starts_with("recipients[1] (\"AGE-SECRET-K…\")"),
            "{msg}"
        );
        assert!(msg.contains("SECRET key"), "{msg}");
        assert!(!msg.contains(&secret[12..]), "{msg}");
        let dbg = format!("{err:?}");
        assert!(!dbg.contains(&secret[12..]), "{dbg}");
    }
}
