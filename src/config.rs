//! `provider.toml` and `authority.toml`: parsed in full (serde,
//! `deny_unknown_fields`), then
//! validated into a finished [`ProviderConfig`] before anything runs.
//!
//! Relative paths are resolved against the directory holding the config file,
//! so a daemon started from anywhere reads the same files. For `provider.toml`
//! the reference data is loaded here and the TLS and directive files are only
//! located (the network layer loads them); for `authority.toml` the TLS
//! identity and trust anchors are loaded and the key checked here.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::reference::{LaReference, ReferenceError, is_la_code};
use crate::sanitiser::{Classification, Measure, PeriodGrain, View};

/// Why a configuration file cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// There is no file at the path.
    #[error(
        "no configuration file at {path}; run the command in the directory that holds \
         provider.toml, or name the file with --config FILE"
    )]
    NotFound { path: PathBuf },
    /// The file exists but could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown, missing or mistyped key.
    #[error("{path}: line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key has a value that parses but is not allowed.
    #[error("{path}: `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// The reference data the config names cannot be loaded.
    #[error("{path}: `reference`: {source}")]
    Reference {
        path: PathBuf,
        #[source]
        source: ReferenceError,
    },
}

/// A validated provider configuration.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The file this was read from.
    pub path: PathBuf,
    /// The provider's name, as labels show it.
    pub provider: String,
    /// Where the state database, agreement copies and spooled ciphertext live.
    pub data_dir: PathBuf,
    /// The contract package areas where the provider delivers (gate rule 2).
    pub contract_areas: BTreeSet<String>,
    /// The reference data file.
    pub reference_path: PathBuf,
    /// The LAs and the contract package areas they lie in.
    pub reference: LaReference,
    /// Locations of the provider's TLS material (not loaded yet).
    pub tls: TlsPaths,
    /// DWP's `Directive` channel, if the provider serves it.
    pub directive: Option<DirectiveConfig>,
    /// The LAs the provider can send to, in file order.
    pub authorities: Vec<AuthorityConfig>,
    /// Scheduled reports, in file order.
    pub reports: Vec<ReportConfig>,
    /// How the daemon's outbox retries deliveries.
    pub delivery: DeliveryPolicy,
}

/// `[delivery]`: how the daemon retries a delivery that could not be
/// completed, and when it gives up on it (it becomes `dead`, kept with its
/// ciphertext for `mishare retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Push attempts before a delivery is dead.
    pub max_attempts: u32,
    /// Hours after it was queued before a delivery is dead.
    pub max_age_hours: u32,
    /// The pause after the first failed attempt; it doubles each time.
    pub backoff_first_secs: u32,
    /// The longest pause between attempts.
    pub backoff_cap_secs: u32,
    /// Pushes in flight at once, across all LAs.
    pub concurrency: u32,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            max_age_hours: 72,
            backoff_first_secs: 10,
            backoff_cap_secs: 3600,
            concurrency: 16,
        }
    }
}

/// Where the provider's TLS files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// Client certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Trust anchors for authority endpoints.
    pub ca: PathBuf,
}

/// The optional listener for DWP's `Directive` service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveConfig {
    pub listen: SocketAddr,
    /// Trust anchors for DWP client certificates.
    pub ca: PathBuf,
    /// DNS names in DWP client certificates that may direct suspensions.
    pub regulators: Vec<String>,
}

/// One LA the provider may push to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityConfig {
    /// The LA code (shape checked; the gate checks it against reference data).
    pub code: String,
    /// `https://host:port` of the LA's endpoint.
    pub endpoint: String,
    /// The name its server certificate must carry.
    pub server_name: String,
    /// The LA's age public keys.
    pub recipients: Vec<String>,
}

/// One scheduled report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportConfig {
    pub name: String,
    pub source: Source,
    pub measure: Measure,
    pub view: View,
    pub rows: String,
    pub cols: Option<String>,
    pub period: PeriodGrain,
    /// A five-field cron expression in Europe/London, checked at load
    /// ([`crate::schedule::Schedule`]).
    pub schedule: String,
    pub recipients: Recipients,
    /// Each LA gets only its own `la_code`'s rows.
    pub split_by_recipient: bool,
    pub classification: Classification,
    pub missed: Missed,
}

/// Where a report reads its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Participant records.
    Records(PathBuf),
    /// Pre-aggregated counts.
    Counts(PathBuf),
}

/// Who a report goes to (gate rule 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// Every `[[authority]]` (the gate still demands an agreement for each).
    All,
    /// Only these LA codes, each of which is an `[[authority]]`.
    Only(Vec<String>),
}

impl Recipients {
    /// Whether `la` is one of the report's recipients, given the configured
    /// authorities.
    pub fn includes(&self, la: &str, authorities: &[AuthorityConfig]) -> bool {
        match self {
            Recipients::All => authorities.iter().any(|a| a.code == la),
            Recipients::Only(codes) => codes.iter().any(|c| c == la),
        }
    }
}

/// What to do about runs missed while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// Run once for all the missed runs.
    RunOnce,
    /// Skip them; wait for the next scheduled time.
    Skip,
}

/// Reads a configuration file, telling a missing file from an unreadable one.
fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Parses TOML into raw structs, naming the line and column of a mistake.
fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let (line, column) = e
            .span()
            .map_or((1, 1), |span| line_column(text, span.start));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

impl ProviderConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(path, &read_config(path)?)
    }

    /// Validates `text` as if read from `path` (relative paths resolve
    /// against `path`'s directory).
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Validator { path }.finish(parse_toml(path, text)?)
    }

    /// The `[[authority]]` with this code.
    pub fn authority(&self, code: &str) -> Option<&AuthorityConfig> {
        self.authorities.iter().find(|a| a.code == code)
    }

    /// The `[[report]]` with this name.
    pub fn report(&self, name: &str) -> Option<&ReportConfig> {
        self.reports.iter().find(|r| r.name == name)
    }

    /// The SQLite database under `data_dir`.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(crate::store::DATABASE_FILE)
    }
}

/// Whether `name` is a valid report name: `[a-z0-9][a-z0-9-]{0,63}`.
pub fn is_report_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    provider: String,
    data_dir: PathBuf,
    contract_areas: Vec<String>,
    reference: PathBuf,
    tls: RawTls,
    directive: Option<RawDirective>,
    #[serde(default)]
    authority: Vec<RawAuthority>,
    #[serde(default)]
    report: Vec<RawReport>,
    delivery: Option<RawDelivery>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    max_attempts: Option<u32>,
    max_age_hours: Option<u32>,
    backoff_first_secs: Option<u32>,
    backoff_cap_secs: Option<u32>,
    concurrency: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirective {
    listen: String,
    ca: PathBuf,
    regulators: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthority {
    code: String,
    endpoint: String,
    server_name: String,
    recipients: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    name: String,
    source: RawSource,
    measure: Measure,
    #[serde(default)]
    view: View,
    rows: String,
    cols: Option<String>,
    #[serde(default)]
    period: PeriodGrain,
    schedule: String,
    recipients: RawRecipients,
    /// Defaults to the safer choice: each LA sees only its own rows.
    #[serde(default = "default_split")]
    split_by_recipient: bool,
    classification: Classification,
    missed: Missed,
}

fn default_split() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    records: Option<PathBuf>,
    counts: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRecipients {
    Word(String),
    List(Vec<String>),
}

struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new(""));
        if p.is_absolute() || dir.as_os_str().is_empty() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    }

    fn non_empty(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        if value.trim().is_empty() {
            return Err(self.invalid(key, "must not be empty"));
        }
        Ok(())
    }

    fn finish(&self, raw: RawConfig) -> Result<ProviderConfig, ConfigError> {
        self.non_empty("provider", &raw.provider)?;
        if raw.data_dir.as_os_str().is_empty() {
            return Err(self.invalid("data_dir", "must name a directory"));
        }
        let reference_path = self.resolve(&raw.reference);
        let reference =
            LaReference::load(&reference_path).map_err(|source| ConfigError::Reference {
                path: self.path.to_path_buf(),
                source,
            })?;

        if raw.contract_areas.is_empty() {
            return Err(self.invalid(
                "contract_areas",
                "lists no area; name the contract package areas where the provider delivers",
            ));
        }
        let known_areas: BTreeSet<&str> = reference.iter().map(|la| la.cpa.as_str()).collect();
        let mut contract_areas = BTreeSet::new();
        for area in &raw.contract_areas {
            if !known_areas.contains(area.as_str()) {
                return Err(self.invalid(
                    "contract_areas",
                    format!(
                        "{area:?} is not a contract package area in {}; the areas there are: {}",
                        reference_path.display(),
                        known_areas.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if !contract_areas.insert(area.clone()) {
                return Err(self.invalid("contract_areas", format!("{area:?} appears twice")));
            }
        }

        let tls = TlsPaths {
            cert: self.resolve(&raw.tls.cert),
            key: self.resolve(&raw.tls.key),
            ca: self.resolve(&raw.tls.ca),
        };

        let directive = match raw.directive {
            None => None,
            Some(d) => {
                let listen = d.listen.parse().map_err(|_| {
                    self.invalid(
                        "directive.listen",
                        format!(
                            "{:?} is not an address and port such as 127.0.0.1:7444",
                            d.listen
                        ),
                    )
                })?;
                if d.regulators.is_empty() {
                    return Err(self.invalid(
                        "directive.regulators",
                        "lists no DWP identity; name the DNS names in DWP client certificates",
                    ));
                }
                for name in &d.regulators {
                    self.non_empty("directive.regulators", name)?;
                }
                Some(DirectiveConfig {
                    listen,
                    ca: self.resolve(&d.ca),
                    regulators: d.regulators,
                })
            }
        };

        let mut authorities = Vec::with_capacity(raw.authority.len());
        let mut codes = HashSet::new();
        for (i, a) in raw.authority.into_iter().enumerate() {
            let key = |field: &str| format!("authority[{}].{field}", i + 1);
            if !is_la_code(&a.code) {
                return Err(self.invalid(
                    key("code"),
                    format!(
                        "{:?} is not an LA code (1 to 16 ASCII letters and digits)",
                        a.code
                    ),
                ));
            }
            if !codes.insert(a.code.clone()) {
                return Err(self.invalid(
                    key("code"),
                    format!("{} has more than one [[authority]] section", a.code),
                ));
            }
            if !a.endpoint.starts_with("https://") || a.endpoint.len() <= "https://".len() {
                return Err(self.invalid(
                    key("endpoint"),
                    format!("{:?} must be an https:// URL", a.endpoint),
                ));
            }
            self.non_empty(&key("server_name"), &a.server_name)?;
            if a.recipients.is_empty() {
                return Err(self.invalid(
                    key("recipients"),
                    "lists no age public key; ask the LA for theirs (mishare keygen makes one)",
                ));
            }
            // Parsed now so a mistyped key fails at start, not at the first
            // send; the error shows at most a few characters of the entry.
            if let Err(e) = crate::seal::Recipients::parse(&a.recipients) {
                return Err(self.invalid(key("recipients"), e.to_string()));
            }
            authorities.push(AuthorityConfig {
                code: a.code,
                endpoint: a.endpoint,
                server_name: a.server_name,
                recipients: a.recipients,
            });
        }

        let mut reports = Vec::with_capacity(raw.report.len());
        let mut names = HashSet::new();
        for (i, r) in raw.report.into_iter().enumerate() {
            let key = |field: &str| format!("report[{}].{field}", i + 1);
            if !is_report_name(&r.name) {
                return Err(self.invalid(
                    key("name"),
                    format!(
                        "{:?} is not a report name: lower-case letters, digits and '-', \
                         starting with a letter or digit, at most 64",
                        r.name
                    ),
                ));
            }
            if !names.insert(r.name.clone()) {
                return Err(self.invalid(
                    key("name"),
                    format!("{} names more than one report", r.name),
                ));
            }
            let source = match (r.source.records, r.source.counts) {
                (Some(p), None) => Source::Records(self.resolve(&p)),
                (None, Some(p)) => Source::Counts(self.resolve(&p)),
                _ => {
                    return Err(self.invalid(
                        key("source"),
                        "needs exactly one of { records = PATH } or { counts = PATH }",
                    ));
                }
            };
            self.non_empty(&key("rows"), &r.rows)?;
            self.non_empty(&key("schedule"), &r.schedule)?;
            if let Err(e) = r.schedule.parse::<crate::schedule::Schedule>() {
                return Err(self.invalid(key("schedule"), e.to_string()));
            }
            let recipients = match r.recipients {
                RawRecipients::Word(w) if w == "all" => Recipients::All,
                RawRecipients::Word(w) => {
                    return Err(self.invalid(
                        key("recipients"),
                        format!("{w:?} is neither \"all\" nor a list of LA codes"),
                    ));
                }
                RawRecipients::List(list) => {
                    if list.is_empty() {
                        return Err(self.invalid(
                            key("recipients"),
                            "is an empty list; name LA codes or write \"all\"",
                        ));
                    }
                    let mut seen = HashSet::new();
                    for code in &list {
                        if !codes.contains(code) {
                            return Err(self.invalid(
                                key("recipients"),
                                format!(
                                    "{code:?} has no [[authority]] section; add one with its \
                                     endpoint and key, or remove it from the list"
                                ),
                            ));
                        }
                        if !seen.insert(code) {
                            return Err(
                                self.invalid(key("recipients"), format!("{code} appears twice"))
                            );
                        }
                    }
                    Recipients::Only(list)
                }
            };
            reports.push(ReportConfig {
                name: r.name,
                source,
                measure: r.measure,
                view: r.view,
                rows: r.rows,
                cols: r.cols,
                period: r.period,
                schedule: r.schedule,
                recipients,
                split_by_recipient: r.split_by_recipient,
                classification: r.classification,
                missed: r.missed,
            });
        }

        let defaults = DeliveryPolicy::default();
        let delivery = match raw.delivery {
            None => defaults,
            Some(d) => {
                let positive = |key: &str, v: Option<u32>, default: u32| match v {
                    Some(0) => Err(self.invalid(format!("delivery.{key}"), "must be at least 1")),
                    Some(n) => Ok(n),
                    None => Ok(default),
                };
                let policy = DeliveryPolicy {
                    max_attempts: positive("max_attempts", d.max_attempts, defaults.max_attempts)?,
                    max_age_hours: positive(
                        "max_age_hours",
                        d.max_age_hours,
                        defaults.max_age_hours,
                    )?,
                    backoff_first_secs: positive(
                        "backoff_first_secs",
                        d.backoff_first_secs,
                        defaults.backoff_first_secs,
                    )?,
                    backoff_cap_secs: positive(
                        "backoff_cap_secs",
                        d.backoff_cap_secs,
                        defaults.backoff_cap_secs,
                    )?,
                    concurrency: positive("concurrency", d.concurrency, defaults.concurrency)?,
                };
                if policy.backoff_cap_secs < policy.backoff_first_secs {
                    return Err(self.invalid(
                        "delivery.backoff_cap_secs",
                        "must be at least backoff_first_secs",
                    ));
                }
                policy
            }
        };

        Ok(ProviderConfig {
            path: self.path.to_path_buf(),
            provider: raw.provider,
            data_dir: self.resolve(&raw.data_dir),
            contract_areas,
            reference_path,
            reference,
            tls,
            directive,
            authorities,
            reports,
            delivery,
        })
    }
}

// ---------------------------------------------------------------------------
// authority.toml
// ---------------------------------------------------------------------------

/// Default `max_chunk_bytes`: 1 MiB.
pub const DEFAULT_MAX_CHUNK_BYTES: u64 = 1 << 20;
/// The largest `max_chunk_bytes` allowed: a chunk is held in memory whole.
pub const MAX_MAX_CHUNK_BYTES: u64 = 16 << 20;
/// Default `max_streams`: concurrent pushes.
pub const DEFAULT_MAX_STREAMS: usize = 32;
/// Default `stream_idle_secs`.
pub const DEFAULT_STREAM_IDLE_SECS: u64 = 30;
/// Default `partial_ttl_secs`: a day.
pub const DEFAULT_PARTIAL_TTL_SECS: u64 = 86_400;
/// Default `shutdown_grace_secs`.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Default `sync_every_bytes`: received bytes are fsynced (and only then
/// count as committed) at least this often, and at every commit.
pub const DEFAULT_SYNC_EVERY_BYTES: u64 = 8 << 20;

/// A validated `authority.toml`, with its TLS identity and trust anchors
/// loaded and the key checked, so a bad file or key fails at start.
///
/// (Named for the endpoint because [`AuthorityConfig`] is the provider's
/// `[[authority]]` entry.)
#[derive(Debug, Clone)]
pub struct AuthorityEndpointConfig {
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
    /// A push that sends nothing for this long is cancelled.
    pub stream_idle: std::time::Duration,
    /// Partial transfers idle for longer are removed.
    pub partial_ttl: std::time::Duration,
    /// How long in-flight pushes may run on after shutdown begins.
    pub shutdown_grace: std::time::Duration,
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
}

/// One `[[provider]]`: an identity the endpoint serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEntry {
    /// The DNS name in the provider's client certificate (lower case).
    pub id: String,
    /// The provider's name, for people.
    pub name: String,
}

impl AuthorityEndpointConfig {
    /// Reads and validates `path`, loading the TLS files it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(path, &read_config(path)?)
    }

    /// Validates `text` as if read from `path` (relative paths resolve
    /// against `path`'s directory), loading the TLS files it names.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Validator { path }.finish_authority(parse_toml(path, text)?)
    }

    /// The provider identities served, for the TLS allow-list.
    pub fn allow_list(&self) -> crate::tls::AllowList {
        crate::tls::AllowList::new(self.providers.iter().map(|p| p.id.clone()))
    }

    /// Whether `identity` is a configured `[[provider]]`.
    pub fn serves(&self, identity: &str) -> bool {
        self.providers.iter().any(|p| p.id == identity)
    }
}

/// Whether `id` is a DNS name usable as a provider identity (and so as a
/// folder name in the inbox): labels of ASCII letters, digits and '-', joined
/// by '.', no wildcard.
pub fn is_provider_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorityEndpoint {
    code: String,
    listen: String,
    inbox: PathBuf,
    data_dir: PathBuf,
    max_file_bytes: u64,
    max_chunk_bytes: Option<u64>,
    max_streams: Option<usize>,
    stream_idle_secs: Option<u64>,
    partial_ttl_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    sync_every_bytes: Option<u64>,
    tls: RawTls,
    #[serde(default)]
    provider: Vec<RawProviderEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProviderEntry {
    id: String,
    name: String,
}

impl Validator<'_> {
    fn at_least_one<T: PartialOrd + From<u8> + Copy>(
        &self,
        key: &str,
        value: Option<T>,
        default: T,
    ) -> Result<T, ConfigError> {
        let value = value.unwrap_or(default);
        if value < T::from(1) {
            return Err(self.invalid(key, "must be at least 1"));
        }
        Ok(value)
    }

    fn finish_authority(
        &self,
        raw: RawAuthorityEndpoint,
    ) -> Result<AuthorityEndpointConfig, ConfigError> {
        use std::time::Duration;

        if !is_la_code(&raw.code) {
            return Err(self.invalid(
                "code",
                format!(
                    "{:?} is not an LA code (1 to 16 ASCII letters and digits)",
                    raw.code
                ),
            ));
        }
        let listen = raw.listen.parse().map_err(|_| {
            self.invalid(
                "listen",
                format!(
                    "{:?} is not an address and port such as 127.0.0.1:7443",
                    raw.listen
                ),
            )
        })?;
        if raw.inbox.as_os_str().is_empty() {
            return Err(self.invalid("inbox", "must name a directory"));
        }
        if raw.data_dir.as_os_str().is_empty() {
            return Err(self.invalid("data_dir", "must name a directory"));
        }
        let inbox = self.resolve(&raw.inbox);
        let data_dir = self.resolve(&raw.data_dir);
        if inbox == data_dir || inbox.starts_with(&data_dir) || data_dir.starts_with(&inbox) {
            return Err(self.invalid(
                "inbox",
                "must be a directory apart from data_dir (partial transfers never appear in \
                 the inbox)",
            ));
        }
        if raw.max_file_bytes == 0 {
            return Err(self.invalid("max_file_bytes", "must be at least 1"));
        }
        let max_chunk_bytes = self.at_least_one(
            "max_chunk_bytes",
            raw.max_chunk_bytes,
            DEFAULT_MAX_CHUNK_BYTES,
        )?;
        if max_chunk_bytes > MAX_MAX_CHUNK_BYTES {
            return Err(self.invalid(
                "max_chunk_bytes",
                format!(
                    "{max_chunk_bytes} is more than {MAX_MAX_CHUNK_BYTES}; a chunk is held in \
                     memory whole"
                ),
            ));
        }
        let max_streams = self.at_least_one("max_streams", raw.max_streams, DEFAULT_MAX_STREAMS)?;
        let stream_idle = self.at_least_one(
            "stream_idle_secs",
            raw.stream_idle_secs,
            DEFAULT_STREAM_IDLE_SECS,
        )?;
        let partial_ttl = self.at_least_one(
            "partial_ttl_secs",
            raw.partial_ttl_secs,
            DEFAULT_PARTIAL_TTL_SECS,
        )?;
        let shutdown_grace = raw
            .shutdown_grace_secs
            .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS);
        let sync_every_bytes = self.at_least_one(
            "sync_every_bytes",
            raw.sync_every_bytes,
            DEFAULT_SYNC_EVERY_BYTES,
        )?;

        let tls = TlsPaths {
            cert: self.resolve(&raw.tls.cert),
            key: self.resolve(&raw.tls.key),
            ca: self.resolve(&raw.tls.ca),
        };
        let identity = crate::tls::Identity::load(&tls.cert, &tls.key)
            .map_err(|e| self.invalid("tls.cert", e.to_string()))?;
        // The same key signs receipts: fail now if it cannot.
        crate::receipt::ReceiptSigner::new(&identity)
            .map_err(|e| self.invalid("tls.key", e.to_string()))?;
        let provider_anchors = crate::tls::TrustAnchors::load(&tls.ca)
            .map_err(|e| self.invalid("tls.ca", e.to_string()))?;

        if raw.provider.is_empty() {
            return Err(self.invalid(
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
                return Err(self.invalid(
                    key("id"),
                    format!(
                        "{:?} is not a DNS name (letters, digits and '-' in labels joined by \
                         '.'; no wildcard)",
                        p.id
                    ),
                ));
            }
            if !ids.insert(id.clone()) {
                return Err(self.invalid(
                    key("id"),
                    format!("{id} has more than one [[provider]] section"),
                ));
            }
            self.non_empty(&key("name"), &p.name)?;
            providers.push(ProviderEntry { id, name: p.name });
        }

        Ok(AuthorityEndpointConfig {
            path: self.path.to_path_buf(),
            code: raw.code,
            listen,
            inbox,
            data_dir,
            max_file_bytes: raw.max_file_bytes,
            max_chunk_bytes,
            max_streams,
            stream_idle: Duration::from_secs(stream_idle),
            partial_ttl: Duration::from_secs(partial_ttl),
            shutdown_grace: Duration::from_secs(shutdown_grace),
            sync_every_bytes,
            tls,
            identity,
            provider_anchors,
            providers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names() {
        for good in ["a", "referrals-monthly", "0-x", &"a".repeat(64)] {
            assert!(is_report_name(good), "{good}");
        }
        for bad in ["", "-a", "A", "a_b", "a b", "a/b", &"a".repeat(65)] {
            assert!(!is_report_name(bad), "{bad}");
        }
    }

    #[test]
    fn provider_ids() {
        for good in ["provider.test", "a", "a-b.c0.example"] {
            assert!(is_provider_id(good), "{good}");
        }
        for bad in [
            "", ".", "..", "../x", "a..b", ".a", "a.", "*.test", "a/b", "-a.test", "a_b",
        ] {
            assert!(!is_provider_id(bad), "{bad}");
        }
    }

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 3));
    }
}
