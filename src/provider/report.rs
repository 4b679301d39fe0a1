//! A report run: one configured `[[report]]`, made into one sanitised CSV per
//! recipient LA, in memory.
//!
//! The source is read **once** for all the LAs of a run: participant records
//! in one pass split by `la_code` ([`sanitiser::read_records_split`]), a
//! counts file read into memory once and filtered per LA. Each LA's table is
//! then sanitised with that LA named on the label. A table the sanitiser
//! blocks is that LA's failure, with every reason kept; the other LAs go on.
//!
//! A run is for the last **complete** period before the time it is made for
//! (Europe/London): at any time in October 2012 a monthly report's run is
//! for `2012-09`. Its files cover an explicit, bounded range: the report's
//! `periods` complete periods ending with that one (by default that period
//! alone), so an unfinished period never leaves and a table never grows
//! from the first record ever seen. Each file says who made it, which
//! report and measure it is, the range it covers and when it was made (the
//! run's time, so the same run makes the same bytes).
//!
//! Plaintext lives only here, in [`Zeroizing`] buffers, until it is sealed.

use std::fs::File;
use std::io::{BufReader, Read};

use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use crate::common::time::london_date;
use crate::config::provider::{ProviderConfig, ReportConfig, Source};
use crate::provider::ledger::{ReleaseError, ReleaseTable};
use crate::reference::LA_CODE;
use crate::sanitiser::{
    self, About, Blocked, Finding, InputError, Period, PeriodGrain, PeriodRange, Recipient,
    TableSpec, render,
};

/// The largest counts file a report reads into memory. Counts are
/// pre-aggregated; a file this size is surely participant records.
pub const MAX_COUNTS_BYTES: u64 = 256 << 20;

/// Why a report could not be run at all (for any LA).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// No `[[report]]` has this name.
    #[error("there is no [[report]] named {0:?} in the configuration")]
    UnknownReport(String),
    /// The LA is not one of the report's recipients.
    #[error(
        "{la} is not a recipient of report {report}; its `recipients` and [[authority]] \
         sections say who is"
    )]
    NotARecipient { report: String, la: String },
    /// The source file could not be opened or read.
    #[error("report {report}: cannot read {path}: {source}")]
    Read {
        report: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The counts file is larger than [`MAX_COUNTS_BYTES`].
    #[error(
        "report {report}: {path} is over {MAX_COUNTS_BYTES} bytes, too large for a counts \
         file; is it participant records (source = {{ records = … }})?"
    )]
    CountsTooLarge { report: String, path: String },
    /// The source itself is blocked (bad rows, missing columns): no LA can
    /// get a file from it.
    #[error("report {report}: the source is blocked:\n{blocked}")]
    SourceBlocked { report: String, blocked: Blocked },
}

/// The last complete period of `grain` before `at`, in Europe/London: the
/// period a run made at `at` is for.
pub fn last_complete_period(grain: PeriodGrain, at: DateTime<Utc>) -> Period {
    Period::containing(london_date(at), grain)
        .and_then(Period::prev)
        .expect("run times come from the clock or a schedule, inside the calendar's range")
}

/// One LA's file from a run.
#[derive(Debug)]
pub struct LaFile {
    /// The LA's code.
    pub la: String,
    /// The CSV and its findings, or why the sanitiser blocked it.
    pub outcome: Result<Rendered, Blocked>,
}

/// A sanitised table, rendered: exactly the bytes the LA receives.
#[derive(Debug)]
pub struct Rendered {
    /// The CSV. Plaintext: zeroed when dropped, never written to disk.
    pub csv: Zeroizing<Vec<u8>>,
    /// Findings for the provider's operator (never part of the file).
    pub findings: Vec<Finding>,
    /// What the release ledger records of it (rounded figures in codes),
    /// or why it cannot: then the file is not spooled.
    pub release: Result<ReleaseTable, ReleaseError>,
}

/// A whole run: its period, the range of periods its files cover (the
/// report's `periods` ending with it) and one file per LA, in the order
/// asked.
#[derive(Debug)]
pub struct ReportRun {
    pub report: String,
    pub period: Period,
    pub range: PeriodRange,
    pub files: Vec<LaFile>,
}

/// Finds report `name` and checks that every one of `las` is a recipient;
/// `None` means all of the report's recipients.
pub fn select<'c>(
    config: &'c ProviderConfig,
    name: &str,
    la: Option<&str>,
) -> Result<(&'c ReportConfig, Vec<String>), ReportError> {
    let report = config
        .report(name)
        .ok_or_else(|| ReportError::UnknownReport(name.to_string()))?;
    let all = config.recipients_of(report);
    let las = match la {
        None => all,
        Some(la) if all.iter().any(|c| c == la) => vec![la.to_string()],
        Some(la) => {
            return Err(ReportError::NotARecipient {
                report: name.to_string(),
                la: la.to_string(),
            });
        }
    };
    Ok((report, las))
}

/// Runs `report` for `las` as of `at`: reads its source once, sanitises one
/// table per LA and renders each in memory. Blocking (file I/O and the
/// records pass): async callers use `spawn_blocking`.
pub fn run_report(
    config: &ProviderConfig,
    report: &ReportConfig,
    las: &[String],
    at: DateTime<Utc>,
) -> Result<ReportRun, ReportError> {
    let period = last_complete_period(report.period, at);
    let base = TableSpec {
        about: About {
            provider: Some(config.provider.clone()),
            report: Some(report.name.clone()),
            made_at: Some(at),
        },
        ..report.table_spec(period)
    };
    // Checked when the configuration was loaded; a range is always there.
    let range = base.periods.unwrap_or_else(|| PeriodRange::single(period));
    let catalogue = &config.catalogue;
    let recipient = |la: &str| Recipient {
        code: la.to_string(),
        name: config
            .reference
            .get(la)
            .map_or_else(|| la.to_string(), |e| e.name.clone()),
    };
    let spec_for = |la: &str, spec: &TableSpec| TableSpec {
        recipient: Some(recipient(la)),
        ..spec.clone()
    };
    let read_error = |path: &std::path::Path, source| ReportError::Read {
        report: report.name.clone(),
        path: path.display().to_string(),
        source,
    };
    let source_blocked = |e: InputError, path: &std::path::Path| match e {
        InputError::Blocked(blocked) => ReportError::SourceBlocked {
            report: report.name.clone(),
            blocked,
        },
        InputError::Io { error, .. } => read_error(path, error),
    };
    // A report split by recipient counts one LA's people: the ledger
    // records that, so the audit never takes the table for everyone's.
    let split = report.split_by_recipient;
    let finish = |la: &str, spec: &TableSpec, table: &sanitiser::CountTable| LaFile {
        la: la.to_string(),
        outcome: sanitiser::sanitise(spec, table).map(|s| {
            let fixed = if split {
                vec![(LA_CODE.to_string(), la.to_string())]
            } else {
                Vec::new()
            };
            Rendered {
                csv: Zeroizing::new(render::csv(&s)),
                findings: s.findings().to_vec(),
                release: ReleaseTable::from_sanitised(&s, fixed),
            }
        }),
    };

    let files = match &report.source {
        Source::Records(path) => {
            let spec = base;
            let source = path.display().to_string();
            let file = File::open(path).map_err(|e| read_error(path, e))?;
            if report.split_by_recipient {
                let tables =
                    sanitiser::read_records_split(file, &source, &spec, catalogue, "la_code", las)
                        .map_err(|e| source_blocked(e, path))?;
                las.iter()
                    .zip(&tables)
                    .map(|(la, table)| finish(la, &spec_for(la, &spec), table))
                    .collect()
            } else {
                let table = sanitiser::read_records(file, &source, &spec, catalogue)
                    .map_err(|e| source_blocked(e, path))?;
                las.iter()
                    .map(|la| finish(la, &spec_for(la, &spec), &table))
                    .collect()
            }
        }
        Source::Counts(path) => {
            let source = path.display().to_string();
            let file = File::open(path).map_err(|e| read_error(path, e))?;
            let mut bytes = Vec::new();
            BufReader::new(file)
                .take(MAX_COUNTS_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| read_error(path, e))?;
            if bytes.len() as u64 > MAX_COUNTS_BYTES {
                return Err(ReportError::CountsTooLarge {
                    report: report.name.clone(),
                    path: source,
                });
            }
            let bytes = Zeroizing::new(bytes);
            if report.split_by_recipient {
                let mut files = Vec::with_capacity(las.len());
                for la in las {
                    let mut spec = spec_for(la, &base);
                    spec.filters.push(("la_code".to_string(), la.clone()));
                    let table = sanitiser::read_counts(&bytes[..], &source, &spec, catalogue)
                        .map_err(|e| source_blocked(e, path))?;
                    files.push(finish(la, &spec, &table));
                }
                files
            } else {
                let table = sanitiser::read_counts(&bytes[..], &source, &base, catalogue)
                    .map_err(|e| source_blocked(e, path))?;
                las.iter()
                    .map(|la| finish(la, &spec_for(la, &base), &table))
                    .collect()
            }
        }
    };
    Ok(ReportRun {
        report: report.name.clone(),
        period,
        range,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn last_complete_period_in_london() {
        let cases = [
            (
                "2012-10-15T12:00:00Z",
                PeriodGrain::Month,
                "2012-09",
                "2012-09-30",
            ),
            (
                "2013-01-01T00:30:00Z",
                PeriodGrain::Month,
                "2012-12",
                "2012-12-31",
            ),
            // 23:30 UTC on 31 October is still October in London (GMT).
            (
                "2012-10-31T23:30:00Z",
                PeriodGrain::Month,
                "2012-09",
                "2012-09-30",
            ),
            // 23:30 UTC on 30 September is 00:30 BST on 1 October.
            (
                "2012-09-30T23:30:00Z",
                PeriodGrain::Month,
                "2012-09",
                "2012-09-30",
            ),
            (
                "2012-09-30T22:30:00Z",
                PeriodGrain::Month,
                "2012-08",
                "2012-08-31",
            ),
            (
                "2012-03-01T12:00:00Z",
                PeriodGrain::Month,
                "2012-02",
                "2012-02-29",
            ),
            (
                "2012-10-15T12:00:00Z",
                PeriodGrain::Quarter,
                "2012-Q3",
                "2012-09-30",
            ),
            (
                "2012-09-30T12:00:00Z",
                PeriodGrain::Quarter,
                "2012-Q2",
                "2012-06-30",
            ),
            (
                "2013-02-01T12:00:00Z",
                PeriodGrain::Quarter,
                "2012-Q4",
                "2012-12-31",
            ),
        ];
        for (when, grain, name, last) in cases {
            let p = last_complete_period(grain, at(when));
            assert_eq!(p.to_string(), name, "{when} {grain:?}");
            assert_eq!(p.last_day().to_string(), last, "{when} {grain:?}");
        }
        let q = last_complete_period(PeriodGrain::Quarter, at("2012-10-15T12:00:00Z"));
        assert_eq!(q.first_day().to_string(), "2012-07-01");
    }
}
