//! `authority.toml`: an LA's endpoint, finished with its TLS identity and
//! trust anchors loaded and its key checked for signing receipts, so a bad
//! file or key fails at start.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Checker, ConfigError, RawTls, TlsPaths};
use crate::common::names::{is_la_code, is_provider_id};

/// Default `max_chunk_bytes`: 1 MiB.
pub const DEFAULT_MAX_CHUNK_BYTES: u64 = 1 << 20;
/// The largest `max_chunk_bytes` allowed: a chunk is held in memory whole.
pub const MAX_MAX_CHUNK_BYTES: u64 = 16 << 20;
/// Default `max_streams`: concurrent pushes.
pub const DEFAULT_MAX_STREAMS: usize = 32;
/// Default `max_streams_per_provider` (or `max_streams`, if that is
/// smaller): one provider may not hold every stream.
pub const DEFAULT_MAX_STREAMS_PER_PROVIDER: usize = 8;
/// Default `max_partial_bytes_per_provider`, as a multiple of
/// `max_file_bytes`: room for a few files of the largest size in flight or
/// waiting to resume.
pub const DEFAULT_PARTIAL_FILES_PER_PROVIDER: u64 = 4;
/// Default `min_free_bytes`: 1 GiB. A fixed amount rather than a share of
/// the disk, because what it protects is fixed too: room for the database
/// (its WAL and audit log must stay writable to record anything, refusals
/// included) and for the pushes already running to finish. A percentage
/// would keep tens of GiB idle on a large disk and next to nothing on a
/// small one.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;
/// Default `stream_idle_secs`.
pub const DEFAULT_STREAM_IDLE_SECS: u64 = 30;
/// Default `partial_ttl_secs`: a day.
pub const DEFAULT_PARTIAL_TTL_SECS: u64 = 86_400;
/// Default `shutdown_grace_secs`.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Default `sync_every_bytes`: received bytes are fsynced (and only then
/// count as committed) at least this often, and at every commit.
pub const DEFAULT_SYNC_EVERY_BYTES: u64 = 8 << 20;

/// The folder under `data_dir` that holds partial transfers.
pub const PARTIAL_DIR: &str = "partial";

/// A finished `authority.toml`.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    /// The file this was read from.
    pub path: PathBuf,
    /// This LA's code: every manifest's `la_code` must equal it.
    pub code: String,
    /// The address the endpoint listens on.
    pub listen: SocketAddr,
    /// Received files, one folder per provider identity.
    pub inbox: PathBuf,
    /// SQLite state and partial transfers.
    pub data_dir: PathBuf,
    /// The largest file accepted, in bytes.
    pub max_file_bytes: u64,
    /// The largest chunk accepted, in bytes.
    pub max_chunk_bytes: u64,
    /// How many pushes may run at once.
    pub max_streams: usize,
    /// How many of them one provider may run.
    pub max_streams_per_provider: usize,
    /// The most one provider may hold in partial files: the sizes of its
    /// unfinished transfers (in flight or interrupted), counted in full.
    pub max_partial_bytes_per_provider: u64,
    /// Bytes that must stay free on the filesystem of the partial files
    /// (and inbox); below it, pushes are refused before a byte is written.
    /// 0: no floor.
    pub min_free_bytes: u64,
    /// A push that sends nothing for this long is cancelled.
    pub stream_idle: Duration,
    /// Partial transfers idle for longer are removed.
    pub partial_ttl: Duration,
    /// How long in-flight pushes may run on after shutdown begins.
    pub shutdown_grace: Duration,
    /// Received bytes are fsynced at least every this many bytes.
    pub sync_every_bytes: u64,
    /// Where the TLS files are.
    pub tls: TlsPaths,
    /// The endpoint's certificate chain and key.
    pub identity: crate::tls::Identity,
    /// Trust anchors for provider certificates.
    pub provider_anchors: crate::tls::TrustAnchors,
    /// The providers served, by the DNS name in their certificate.
    pub providers: Vec<ProviderEntry>,
    /// `[retention] inbox_days`: received files older than this many days
    /// are deleted from the inbox (each deletion audited with the file's
    /// digest). `None`: kept until someone deletes them.
    pub inbox_days: Option<u32>,
    /// `[metrics] listen`: where Prometheus metrics are served (loopback
    /// only); `None`: not served.
    pub metrics: Option<SocketAddr>,
}

/// The largest `[retention] inbox_days`: a hundred years.
pub const MAX_INBOX_DAYS: u32 = 36_500;

/// One `[[provider]]`: an identity the endpoint serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEntry {
    /// The DNS name in the provider's client certificate (lower case).
    pub id: String,
    /// The provider's name, for people.
    pub name: String,
}

impl AuthorityConfig {
    /// Reads and finishes `path`, loading the TLS files it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(path, &super::read(path, "authority.toml")?)
    }

    /// Finishes `text` as if read from `path` (relative paths resolve
    /// against `path`'s directory), loading the TLS files it names.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        finish(&Checker { path }, super::parse_toml(path, text)?)
    }

    /// The provider identities served, for the TLS allow-list.
    pub fn allow_list(&self) -> crate::tls::AllowList {
        crate::tls::AllowList::new(self.providers.iter().map(|p| p.id.clone()))
    }

    /// Where partial transfers are kept: `data_dir/partial`.
    pub fn partial_dir(&self) -> PathBuf {
        self.data_dir.join(PARTIAL_DIR)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthority {
    code: String,
    listen: String,
    inbox: PathBuf,
    data_dir: PathBuf,
    max_file_bytes: u64,
    max_chunk_bytes: Option<u64>,
    max_streams: Option<usize>,
    max_streams_per_provider: Option<usize>,
    max_partial_bytes_per_provider: Option<u64>,
    min_free_bytes: Option<u64>,
    stream_idle_secs: Option<u64>,
    partial_ttl_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    sync_every_bytes: Option<u64>,
    tls: RawTls,
    #[serde(default)]
    provider: Vec<RawProviderEntry>,
    retention: Option<RawRetention>,
    metrics: Option<super::RawMetrics>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    inbox_days: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProviderEntry {
    id: String,
    name: String,
}

fn at_least_one<T: PartialOrd + From<u8> + Copy>(
    check: &Checker<'_>,
    key: &str,
    value: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    let value = value.unwrap_or(default);
    if value < T::from(1) {
        return Err(check.invalid(key, "must be at least 1"));
    }
    Ok(value)
}

fn finish(check: &Checker<'_>, raw: RawAuthority) -> Result<AuthorityConfig, ConfigError> {
    if !is_la_code(&raw.code) {
        return Err(check.invalid(
            "code",
            format!(
                "{:?} is not an LA code (1 to 16 ASCII letters and digits)",
                raw.code
            ),
        ));
    }
    let listen = check.address("listen", &raw.listen)?;
    let metrics = check.metrics(raw.metrics.as_ref())?;
    if raw.inbox.as_os_str().is_empty() {
        return Err(check.invalid("inbox", "must name a directory"));
    }
    if raw.data_dir.as_os_str().is_empty() {
        return Err(check.invalid("data_dir", "must name a directory"));
    }
    let inbox = check.resolve(&raw.inbox);
    let data_dir = check.resolve(&raw.data_dir);
    if inbox == data_dir || inbox.starts_with(&data_dir) || data_dir.starts_with(&inbox) {
        return Err(check.invalid(
            "inbox",
            "must be a directory apart from data_dir (partial transfers never appear in \
             the inbox)",
        ));
    }
    check_same_filesystem(check.path, &inbox, &data_dir.join(PARTIAL_DIR), device_of)?;
    if raw.max_file_bytes == 0 {
        return Err(check.invalid("max_file_bytes", "must be at least 1"));
    }
    let max_chunk_bytes = at_least_one(
        check,
        "max_chunk_bytes",
        raw.max_chunk_bytes,
        DEFAULT_MAX_CHUNK_BYTES,
    )?;
    if max_chunk_bytes > MAX_MAX_CHUNK_BYTES {
        return Err(check.invalid(
            "max_chunk_bytes",
            format!(
                "{max_chunk_bytes} is more than {MAX_MAX_CHUNK_BYTES}; a chunk is held in \
                 memory whole"
            ),
        ));
    }
    let max_streams = at_least_one(check, "max_streams", raw.max_streams, DEFAULT_MAX_STREAMS)?;
    let max_streams_per_provider = at_least_one(
        check,
        "max_streams_per_provider",
        raw.max_streams_per_provider,
        DEFAULT_MAX_STREAMS_PER_PROVIDER.min(max_streams),
    )?;
    if max_streams_per_provider > max_streams {
        return Err(check.invalid(
            "max_streams_per_provider",
            format!("{max_streams_per_provider} is more than max_streams ({max_streams})"),
        ));
    }
    let max_partial_bytes_per_provider = raw.max_partial_bytes_per_provider.unwrap_or(
        raw.max_file_bytes
            .saturating_mul(DEFAULT_PARTIAL_FILES_PER_PROVIDER),
    );
    if max_partial_bytes_per_provider < raw.max_file_bytes {
        return Err(check.invalid(
            "max_partial_bytes_per_provider",
            format!(
                "{max_partial_bytes_per_provider} is less than max_file_bytes ({}); a file of \
                 the largest size could never arrive",
                raw.max_file_bytes
            ),
        ));
    }
    let min_free_bytes = raw.min_free_bytes.unwrap_or(DEFAULT_MIN_FREE_BYTES);
    let stream_idle = at_least_one(
        check,
        "stream_idle_secs",
        raw.stream_idle_secs,
        DEFAULT_STREAM_IDLE_SECS,
    )?;
    let partial_ttl = at_least_one(
        check,
        "partial_ttl_secs",
        raw.partial_ttl_secs,
        DEFAULT_PARTIAL_TTL_SECS,
    )?;
    let shutdown_grace = raw
        .shutdown_grace_secs
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS);
    let sync_every_bytes = at_least_one(
        check,
        "sync_every_bytes",
        raw.sync_every_bytes,
        DEFAULT_SYNC_EVERY_BYTES,
    )?;

    if raw.provider.is_empty() {
        return Err(check.invalid(
            "provider",
            "lists no provider; add a [[provider]] with the DNS name in its client \
             certificate",
        ));
    }
    let mut providers = Vec::with_capacity(raw.provider.len());
    let mut ids = HashSet::new();
    for (i, p) in raw.provider.into_iter().enumerate() {
        let key = |field: &str| format!("provider[{}].{field}", i + 1);
        let id = p.id.to_ascii_lowercase();
        if !is_provider_id(&id) {
            return Err(check.invalid(
                key("id"),
                format!(
                    "{:?} is not a DNS name (letters, digits and '-' in labels joined by \
                     '.'; no wildcard)",
                    p.id
                ),
            ));
        }
        if !ids.insert(id.clone()) {
            return Err(check.invalid(
                key("id"),
                format!("{id} has more than one [[provider]] section"),
            ));
        }
        check.non_empty(&key("name"), &p.name)?;
        providers.push(ProviderEntry { id, name: p.name });
    }

    let inbox_days = match raw.retention.and_then(|r| r.inbox_days) {
        None => None,
        Some(days) => match u32::try_from(days) {
            Ok(d) if (1..=MAX_INBOX_DAYS).contains(&d) => Some(d),
            _ => {
                return Err(check.invalid(
                    "retention.inbox_days",
                    format!(
                        "{days} is not a number of days from 1 to {MAX_INBOX_DAYS}; leave it \
                         out to keep received files until they are deleted by hand"
                    ),
                ));
            }
        },
    };

    let tls = check.tls_paths(&raw.tls);
    let (identity, provider_anchors) = check.load_tls(&tls)?;
    // The same key signs receipts: fail now if it cannot.
    crate::receipt::ReceiptSigner::new(&identity)
        .map_err(|e| check.invalid("tls.key", e.to_string()))?;

    Ok(AuthorityConfig {
        path: check.path.to_path_buf(),
        code: raw.code,
        listen,
        inbox,
        data_dir,
        max_file_bytes: raw.max_file_bytes,
        max_chunk_bytes,
        max_streams,
        max_streams_per_provider,
        max_partial_bytes_per_provider,
        min_free_bytes,
        stream_idle: Duration::from_secs(stream_idle),
        partial_ttl: Duration::from_secs(partial_ttl),
        shutdown_grace: Duration::from_secs(shutdown_grace),
        sync_every_bytes,
        tls,
        identity,
        provider_anchors,
        providers,
        inbox_days,
        metrics,
    })
}

/// The filesystem (device number) `path` is on, or will be on once it is
/// created: that of its nearest existing ancestor.
pub fn device_of(path: &Path) -> io::Result<u64> {
    let mut at = path;
    loop {
        match std::fs::metadata(at) {
            Ok(metadata) => return Ok(metadata.dev()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match at.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                // A relative path none of whose parts exist yet.
                _ => return std::fs::metadata(".").map(|m| m.dev()),
            },
            Err(e) => return Err(e),
        }
    }
}

/// Requires the inbox and the partial transfers on one filesystem, telling
/// them apart with `device_of` ([`device_of`] at start; a test passes its
/// own).
///
/// A file is published by hard-linking its partial file into the inbox:
/// the link is atomic, never replaces an existing file, and leaves no
/// half-written file in the inbox; it cannot cross filesystems (EXDEV), so
/// on two filesystems every commit would fail. The other way out, keeping
/// partial files on the inbox's filesystem, would put them in or beside
/// the folder LA staff and their tools read, which is what keeping them in
/// `data_dir` avoids. So the mistake is refused at start instead, naming
/// both paths.
pub fn check_same_filesystem(
    config: &Path,
    inbox: &Path,
    partial: &Path,
    device_of: impl Fn(&Path) -> io::Result<u64>,
) -> Result<(), ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        path: config.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let inbox_dev = device_of(inbox).map_err(|e| {
        invalid(
            "inbox",
            format!(
                "cannot tell which filesystem {} is on: {e}",
                inbox.display()
            ),
        )
    })?;
    let partial_dev = device_of(partial).map_err(|e| {
        invalid(
            "data_dir",
            format!(
                "cannot tell which filesystem {} is on: {e}",
                partial.display()
            ),
        )
    })?;
    if inbox_dev != partial_dev {
        return Err(invalid(
            "inbox",
            format!(
                "{} is on another filesystem than the partial transfers in {}; a received \
                 file is moved into the inbox by a hard link, which cannot cross \
                 filesystems: put inbox and data_dir on the same filesystem",
                inbox.display(),
                partial.display()
            ),
        ));
    }
    Ok(())
}
