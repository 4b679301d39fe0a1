//! `provider.toml`, finished: the LA reference data loaded, the TLS identity
//! and trust anchors loaded and matched, every LA's age recipients parsed,
//! every schedule parsed and every report's table checked against the
//! disclosure rules, so that nothing is parsed twice and no report fails at
//! its first scheduled run for a reason known at start.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Checker, ConfigError, RawTls, TlsPaths};
use crate::common::names::{is_la_code, is_report_name};
use crate::cron::Schedule;
use crate::reference::{Dimensions, LaReference};
use crate::sanitiser::{
    self, Catalogue, Classification, Measure, Period, PeriodGrain, PeriodRange, TableSpec, View,
};
use crate::seal::Recipients;
use crate::tls::{Identity, TrustAnchors};

/// The name of the provider's state database under `data_dir`.
pub const DATABASE_FILE: &str = "provider.db";

/// A finished provider configuration.
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
    /// The declared dimensions every table may use: payment groups and
    /// characteristics (from `dimensions`, or the built-in ones) and the
    /// LAs of the reference data.
    pub catalogue: Catalogue,
    /// The provider's TLS identity and the anchors it trusts endpoints by.
    pub tls: ProviderTls,
    /// DWP's `Directive` channel, if the provider serves it.
    pub directive: Option<DirectiveConfig>,
    /// The LAs the provider can send to, in file order.
    pub authorities: Vec<LaEndpoint>,
    /// Scheduled reports, in file order.
    pub reports: Vec<ReportConfig>,
    /// How the daemon's outbox retries deliveries.
    pub delivery: DeliveryPolicy,
    /// `[disclosure]`: what the release ledger's audit flags and blocks
    /// (R11).
    pub disclosure: DisclosurePolicy,
    /// `[metrics] listen`: where the daemon serves Prometheus metrics
    /// (loopback only); `None`: not served.
    pub metrics: Option<SocketAddr>,
}

/// `[disclosure]`: what the release ledger's audit (R11) flags and blocks.
/// The provider's ledger turns it into its own policy; configuration
/// depends on no provider module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisclosurePolicy {
    /// An interval of true values this wide or narrower (`hi - lo`) is
    /// `W_NARROWED`.
    pub min_interval_width: u64,
    /// Warnings block too (R13).
    pub strict: bool,
}

impl Default for DisclosurePolicy {
    fn default() -> Self {
        Self {
            min_interval_width: 4,
            strict: false,
        }
    }
}

/// The widest `[disclosure] min_interval_width`: a released figure alone
/// is known to within 19 (r − 10 to r + 9), so 19 or more would flag every
/// figure ever sent.
pub const MAX_MIN_INTERVAL_WIDTH: u64 = 18;

/// `[tls]`, loaded.
#[derive(Debug, Clone)]
pub struct ProviderTls {
    /// Where the files are.
    pub paths: TlsPaths,
    /// The provider's certificate chain and key (a client to endpoints, a
    /// server to DWP).
    pub identity: Identity,
    /// Trust anchors for authority endpoints.
    pub anchors: TrustAnchors,
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

/// `[directive]`: the listener for DWP's `Directive` service, loaded.
#[derive(Debug, Clone)]
pub struct DirectiveConfig {
    pub listen: SocketAddr,
    /// Where the trust anchors for DWP client certificates are.
    pub ca: PathBuf,
    /// Revocation lists for DWP client certificates.
    pub crls: Vec<PathBuf>,
    /// Those anchors.
    pub anchors: TrustAnchors,
    /// DNS names in DWP client certificates that may direct suspensions.
    pub regulators: Vec<String>,
}

/// One `[[authority]]`: an LA's endpoint the provider may push to.
#[derive(Debug, Clone)]
pub struct LaEndpoint {
    /// The LA code (shape checked; the gate checks it against reference data).
    pub code: String,
    /// `https://host:port` of the LA's endpoint.
    pub endpoint: String,
    /// The name its server certificate must carry.
    pub server_name: String,
    /// The LA's age public keys, parsed.
    pub recipients: Recipients,
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
    /// How many complete periods each run covers, ending with the run's
    /// period (`periods`, default 1: the run's period alone).
    pub periods: usize,
    /// Five-field cron in Europe/London, parsed.
    pub schedule: Schedule,
    pub recipients: ReportRecipients,
    /// Each LA gets only its own `la_code`'s rows.
    pub split_by_recipient: bool,
    pub classification: Classification,
    pub missed: Missed,
}

impl ReportConfig {
    /// The table a run whose last complete period is `last` asks for,
    /// before any LA is chosen: its range is the report's `periods`
    /// complete periods ending with `last`.
    pub fn table_spec(&self, last: Period) -> TableSpec {
        TableSpec {
            view: self.view,
            cols: self.cols.clone(),
            period: self.period,
            periods: PeriodRange::ending(last, self.periods),
            classification: Some(self.classification),
            ..TableSpec::new(self.measure, self.rows.clone())
        }
    }
}

/// The default `periods` of a report: the run's period alone.
pub const DEFAULT_PERIODS: usize = 1;

/// Where a report reads its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Participant records.
    Records(PathBuf),
    /// Pre-aggregated counts.
    Counts(PathBuf),
}

/// Which LAs a report goes to (gate rule 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRecipients {
    /// Every `[[authority]]` (the gate still demands an agreement for each).
    All,
    /// Only these LA codes, each of which is an `[[authority]]`.
    Only(Vec<String>),
}

impl ReportRecipients {
    /// Whether `la` is one of the report's recipients, given the configured
    /// authorities.
    pub fn includes(&self, la: &str, authorities: &[LaEndpoint]) -> bool {
        match self {
            ReportRecipients::All => authorities.iter().any(|a| a.code == la),
            ReportRecipients::Only(codes) => codes.iter().any(|c| c == la),
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

impl Missed {
    /// The name in `provider.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::RunOnce => "run-once",
            Missed::Skip => "skip",
        }
    }
}

impl ProviderConfig {
    /// Reads and finishes `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(path, &super::read(path, "provider.toml")?)
    }

    /// Finishes `text` as if read from `path` (relative paths resolve
    /// against `path`'s directory).
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        finish(&Checker { path }, super::parse_toml(path, text)?)
    }

    /// The `[[authority]]` with this code.
    pub fn authority(&self, code: &str) -> Option<&LaEndpoint> {
        self.authorities.iter().find(|a| a.code == code)
    }

    /// The `[[report]]` with this name.
    pub fn report(&self, name: &str) -> Option<&ReportConfig> {
        self.reports.iter().find(|r| r.name == name)
    }

    /// The LAs `report` goes to, in `[[authority]]` order (rule 3 of the gate
    /// is still checked for each at every stage).
    pub fn recipients_of(&self, report: &ReportConfig) -> Vec<String> {
        self.authorities
            .iter()
            .filter(|a| report.recipients.includes(&a.code, &self.authorities))
            .map(|a| a.code.clone())
            .collect()
    }

    /// The SQLite database under `data_dir`.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    provider: String,
    data_dir: PathBuf,
    contract_areas: Vec<String>,
    reference: PathBuf,
    dimensions: Option<PathBuf>,
    tls: RawTls,
    directive: Option<RawDirective>,
    #[serde(default)]
    authority: Vec<RawAuthority>,
    #[serde(default)]
    report: Vec<RawReport>,
    delivery: Option<RawDelivery>,
    disclosure: Option<RawDisclosure>,
    metrics: Option<super::RawMetrics>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisclosure {
    min_interval_width: Option<u64>,
    strict: Option<bool>,
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
struct RawDirective {
    listen: String,
    ca: PathBuf,
    #[serde(default)]
    crls: Vec<PathBuf>,
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
    periods: Option<usize>,
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

fn finish(check: &Checker<'_>, raw: RawConfig) -> Result<ProviderConfig, ConfigError> {
    check.non_empty("provider", &raw.provider)?;
    if raw.data_dir.as_os_str().is_empty() {
        return Err(check.invalid("data_dir", "must name a directory"));
    }
    let reference_path = check.resolve(&raw.reference);
    let reference =
        LaReference::load(&reference_path).map_err(|source| ConfigError::Reference {
            path: check.path.to_path_buf(),
            key: "reference",
            source,
        })?;
    let contract_areas = contract_areas(check, &raw.contract_areas, &reference, &reference_path)?;
    let dimensions = match &raw.dimensions {
        None => Dimensions::default(),
        Some(path) => {
            Dimensions::load(&check.resolve(path)).map_err(|source| ConfigError::Reference {
                path: check.path.to_path_buf(),
                key: "dimensions",
                source,
            })?
        }
    };
    let catalogue = Catalogue::new(dimensions, reference.clone());
    let authorities = authorities(check, raw.authority)?;
    let reports = reports(check, raw.report, &authorities, &catalogue)?;
    let delivery = delivery(check, raw.delivery)?;
    let disclosure = disclosure(check, raw.disclosure)?;
    let metrics = check.metrics(raw.metrics.as_ref())?;
    let directive_raw = raw
        .directive
        .map(|d| -> Result<_, ConfigError> {
            let listen = check.address("directive.listen", &d.listen)?;
            if d.regulators.is_empty() {
                return Err(check.invalid(
                    "directive.regulators",
                    "lists no DWP identity; name the DNS names in DWP client certificates",
                ));
            }
            for name in &d.regulators {
                check.non_empty("directive.regulators", name)?;
            }
            let crls: Vec<PathBuf> = d.crls.iter().map(|p| check.resolve(p)).collect();
            Ok((listen, check.resolve(&d.ca), crls, d.regulators))
        })
        .transpose()?;

    // Files last, so that a mistake in a key is reported whatever the state
    // of the certificates.
    let paths = check.tls_paths(&raw.tls);
    let (identity, anchors) = check.load_tls(&paths)?;
    let directive = directive_raw
        .map(|(listen, ca, crls, regulators)| -> Result<_, ConfigError> {
            let anchors = check.load_anchors(&ca, &crls, "directive.ca", "directive.crls")?;
            Ok(DirectiveConfig {
                listen,
                ca,
                crls,
                anchors,
                regulators,
            })
        })
        .transpose()?;

    Ok(ProviderConfig {
        path: check.path.to_path_buf(),
        provider: raw.provider,
        data_dir: check.resolve(&raw.data_dir),
        contract_areas,
        reference_path,
        reference,
        catalogue,
        tls: ProviderTls {
            paths,
            identity,
            anchors,
        },
        directive,
        authorities,
        reports,
        delivery,
        disclosure,
        metrics,
    })
}

fn disclosure(
    check: &Checker<'_>,
    raw: Option<RawDisclosure>,
) -> Result<DisclosurePolicy, ConfigError> {
    let defaults = DisclosurePolicy::default();
    let Some(d) = raw else {
        return Ok(defaults);
    };
    let min_interval_width = d.min_interval_width.unwrap_or(defaults.min_interval_width);
    if min_interval_width > MAX_MIN_INTERVAL_WIDTH {
        return Err(check.invalid(
            "disclosure.min_interval_width",
            format!(
                "{min_interval_width} is too wide: at most {MAX_MIN_INTERVAL_WIDTH}, since every \
                 released figure alone is known to within 19 (r-10 to r+9) and a wider width \
                 would flag them all (the default is {})",
                defaults.min_interval_width
            ),
        ));
    }
    Ok(DisclosurePolicy {
        min_interval_width,
        strict: d.strict.unwrap_or(defaults.strict),
    })
}

fn contract_areas(
    check: &Checker<'_>,
    raw: &[String],
    reference: &LaReference,
    reference_path: &Path,
) -> Result<BTreeSet<String>, ConfigError> {
    if raw.is_empty() {
        return Err(check.invalid(
            "contract_areas",
            "lists no area; name the contract package areas where the provider delivers",
        ));
    }
    let known_areas: BTreeSet<&str> = reference.iter().map(|la| la.cpa.as_str()).collect();
    let mut areas = BTreeSet::new();
    for area in raw {
        if !known_areas.contains(area.as_str()) {
            return Err(check.invalid(
                "contract_areas",
                format!(
                    "{area:?} is not a contract package area in {}; the areas there are: {}",
                    reference_path.display(),
                    known_areas.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if !areas.insert(area.clone()) {
            return Err(check.invalid("contract_areas", format!("{area:?} appears twice")));
        }
    }
    Ok(areas)
}

fn authorities(
    check: &Checker<'_>,
    raw: Vec<RawAuthority>,
) -> Result<Vec<LaEndpoint>, ConfigError> {
    let mut authorities = Vec::with_capacity(raw.len());
    let mut codes = HashSet::new();
    for (i, a) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("authority[{}].{field}", i + 1);
        if !is_la_code(&a.code) {
            return Err(check.invalid(
                key("code"),
                format!(
                    "{:?} is not an LA code (1 to 16 ASCII letters and digits)",
                    a.code
                ),
            ));
        }
        if !codes.insert(a.code.clone()) {
            return Err(check.invalid(
                key("code"),
                format!("{} has more than one [[authority]] section", a.code),
            ));
        }
        if !a.endpoint.starts_with("https://") || a.endpoint.len() <= "https://".len() {
            return Err(check.invalid(
                key("endpoint"),
                format!("{:?} must be an https:// URL", a.endpoint),
            ));
        }
        check.non_empty(&key("server_name"), &a.server_name)?;
        if a.recipients.is_empty() {
            return Err(check.invalid(
                key("recipients"),
                "lists no age public key; ask the LA for theirs (mishare keygen makes one)",
            ));
        }
        // The error shows at most a few characters of the entry.
        let recipients = Recipients::parse(&a.recipients)
            .map_err(|e| check.invalid(key("recipients"), e.to_string()))?;
        authorities.push(LaEndpoint {
            code: a.code,
            endpoint: a.endpoint,
            server_name: a.server_name,
            recipients,
        });
    }
    Ok(authorities)
}

fn reports(
    check: &Checker<'_>,
    raw: Vec<RawReport>,
    authorities: &[LaEndpoint],
    catalogue: &Catalogue,
) -> Result<Vec<ReportConfig>, ConfigError> {
    let codes: HashSet<&str> = authorities.iter().map(|a| a.code.as_str()).collect();
    let mut reports = Vec::with_capacity(raw.len());
    let mut names = HashSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("report[{}].{field}", i + 1);
        if !is_report_name(&r.name) {
            return Err(check.invalid(
                key("name"),
                format!(
                    "{:?} is not a report name: lower-case letters, digits and '-', \
                     starting with a letter or digit, at most 64",
                    r.name
                ),
            ));
        }
        if !names.insert(r.name.clone()) {
            return Err(check.invalid(
                key("name"),
                format!("{} names more than one report", r.name),
            ));
        }
        let source = match (r.source.records, r.source.counts) {
            (Some(p), None) => Source::Records(check.resolve(&p)),
            (None, Some(p)) => Source::Counts(check.resolve(&p)),
            _ => {
                return Err(check.invalid(
                    key("source"),
                    "needs exactly one of { records = PATH } or { counts = PATH }",
                ));
            }
        };
        check.non_empty(&key("rows"), &r.rows)?;
        check.non_empty(&key("schedule"), &r.schedule)?;
        let schedule: Schedule = r
            .schedule
            .parse()
            .map_err(|e: crate::cron::ScheduleError| {
                check.invalid(key("schedule"), e.to_string())
            })?;
        let recipients = match r.recipients {
            RawRecipients::Word(w) if w == "all" => ReportRecipients::All,
            RawRecipients::Word(w) => {
                return Err(check.invalid(
                    key("recipients"),
                    format!("{w:?} is neither \"all\" nor a list of LA codes"),
                ));
            }
            RawRecipients::List(list) => {
                if list.is_empty() {
                    return Err(check.invalid(
                        key("recipients"),
                        "is an empty list; name LA codes or write \"all\"",
                    ));
                }
                let mut seen = HashSet::new();
                for code in &list {
                    if !codes.contains(code.as_str()) {
                        return Err(check.invalid(
                            key("recipients"),
                            format!(
                                "{code:?} has no [[authority]] section; add one with its \
                                 endpoint and key, or remove it from the list"
                            ),
                        ));
                    }
                    if !seen.insert(code) {
                        return Err(
                            check.invalid(key("recipients"), format!("{code} appears twice"))
                        );
                    }
                }
                ReportRecipients::Only(list)
            }
        };
        let max = r.period.max_range();
        let periods = match r.periods {
            None => DEFAULT_PERIODS,
            Some(n) if (1..=max).contains(&n) => n,
            Some(n) => {
                return Err(check.invalid(
                    key("periods"),
                    format!(
                        "{n} is not a number of periods from 1 to {max}; a report covers its \
                         run's {} or that many complete {}s ending with it",
                        r.period.as_str(),
                        r.period.as_str()
                    ),
                ));
            }
        };
        let report = ReportConfig {
            name: r.name,
            source,
            measure: r.measure,
            view: r.view,
            rows: r.rows,
            cols: r.cols,
            period: r.period,
            periods,
            schedule,
            recipients,
            split_by_recipient: r.split_by_recipient,
            classification: r.classification,
            missed: r.missed,
        };
        check_report(check, &report, &key, catalogue)?;
        reports.push(report);
    }
    Ok(reports)
}

/// The disclosure rules that depend on a report's table alone, checked at
/// load for every report, so none waits for its first scheduled run: the
/// table the sanitiser would be asked for (closed dimensions, no outcome
/// volumes or rates, a bounded period range; `sanitiser::check_spec`), and
/// whose data each LA gets (R16).
fn check_report(
    check: &Checker<'_>,
    report: &ReportConfig,
    key: &dyn Fn(&str) -> String,
    catalogue: &Catalogue,
) -> Result<(), ConfigError> {
    let rule = |field: &str, code: sanitiser::Code, why: String| {
        check.invalid(key(field), format!("report {}: {code}: {why}", report.name))
    };
    if report.classification == Classification::Internal && !report.split_by_recipient {
        return Err(rule(
            "split_by_recipient",
            sanitiser::Code::OtherLa,
            "an internal file for an LA holds only that LA's participants, but with \
             split_by_recipient = false every LA would get everyone's; set \
             split_by_recipient = true, or classification = \"published\" for a table that \
             may be made public"
                .into(),
        ));
    }
    // Any run's range has the same shape; one ending in 2012 stands for all.
    let sample = Period::containing(
        chrono::NaiveDate::from_ymd_opt(2012, 12, 31).unwrap_or_default(),
        report.period,
    );
    let spec = match sample {
        Some(last) => report.table_spec(last),
        None => TableSpec::new(report.measure, report.rows.clone()),
    };
    if let Err(errors) = sanitiser::check_spec(&spec, catalogue) {
        let first = &errors.0[0];
        let field = match first.key {
            sanitiser::SpecKey::View => "view",
            sanitiser::SpecKey::Rows => "rows",
            sanitiser::SpecKey::Cols => "cols",
            sanitiser::SpecKey::Periods => "periods",
            // A report has no filters; its recipients are its LAs.
            _ => "classification",
        };
        return Err(rule(field, first.code, first.message.clone()));
    }
    Ok(())
}

fn delivery(check: &Checker<'_>, raw: Option<RawDelivery>) -> Result<DeliveryPolicy, ConfigError> {
    let defaults = DeliveryPolicy::default();
    let Some(d) = raw else {
        return Ok(defaults);
    };
    let positive = |key: &str, v: Option<u32>, default: u32| match v {
        Some(0) => Err(check.invalid(format!("delivery.{key}"), "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let policy = DeliveryPolicy {
        max_attempts: positive("max_attempts", d.max_attempts, defaults.max_attempts)?,
        max_age_hours: positive("max_age_hours", d.max_age_hours, defaults.max_age_hours)?,
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
        return Err(check.invalid(
            "delivery.backoff_cap_secs",
            "must be at least backoff_first_secs",
        ));
    }
    Ok(policy)
}
