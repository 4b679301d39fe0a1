//! What a table is asked to show: measure, view, dimensions, filters, period
//! grain and range, classification, recipient, and who made it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use super::period::PeriodGrain;

use super::period::PeriodRange;

/// A Work Programme measure. Ordered in programme order.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Measure {
    Referrals,
    Attachments,
    JobStarts,
    JobOutcomes,
    Sustainments,
}

impl Measure {
    /// Every measure, in programme order.
    pub const ALL: [Measure; 5] = [
        Measure::Referrals,
        Measure::Attachments,
        Measure::JobStarts,
        Measure::JobOutcomes,
        Measure::Sustainments,
    ];

    /// The name used on the command line, in config and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Referrals => "referrals",
            Measure::Attachments => "attachments",
            Measure::JobStarts => "job_starts",
            Measure::JobOutcomes => "job_outcomes",
            Measure::Sustainments => "sustainments",
        }
    }

    /// Outcomes and sustainments may never leave as volumes (R7), nor as a
    /// rate against another measure (R9).
    pub fn is_outcome(self) -> bool {
        matches!(self, Measure::JobOutcomes | Measure::Sustainments)
    }

    /// The participant-record column holding the date this stage was reached.
    pub fn date_column(self) -> &'static str {
        let [referral, attachment, job_start, job_outcome, sustainment] =
            crate::reference::STAGE_DATE_COLUMNS;
        match self {
            Measure::Referrals => referral,
            Measure::Attachments => attachment,
            Measure::JobStarts => job_start,
            Measure::JobOutcomes => job_outcome,
            Measure::Sustainments => sustainment,
        }
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Measure {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Measure::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown measure {s:?}; expected one of referrals, attachments, \
                     job_starts, job_outcomes, sustainments"
                )
            })
    }
}

/// How the figures are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum View {
    /// Rounded volumes with totals recomputed from the rounded cells.
    #[default]
    Counts,
    /// Whole column percentages computed from rounded cells; no volumes.
    Shares,
}

impl View {
    /// The name used on the command line, in config and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            View::Counts => "counts",
            View::Shares => "shares",
        }
    }
}

/// Whether a file may be published or is internal MI for one LA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Classification {
    /// Internal MI for the recipient LA only; not for publication.
    Internal,
    /// Public domain.
    Published,
}

impl Classification {
    /// The name used on the command line, in config and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Internal => "internal",
            Classification::Published => "published",
        }
    }
}

/// The name of the period dimension (derived from the measure's own stage
/// date for participant records).
pub const PERIOD: &str = crate::reference::PERIOD;

/// The name of the dimension of LA codes (categories from the LA reference
/// data, in file order).
pub const LA_CODE: &str = crate::reference::LA_CODE;

/// The name of the dimension holding payment groups (ordered by reference).
pub const PAYMENT_GROUP: &str = crate::reference::PAYMENT_GROUP;

/// The name of the column holding a count in the long counts CSV.
pub const COUNT: &str = crate::reference::COUNT;

/// The name of the single column of a table that has no column dimension.
pub const ALL_COLUMN: &str = "All";

/// The name of the column that, in a counts CSV carrying several measures,
/// says which measure a row counts.
pub const MEASURE_COLUMN: &str = crate::reference::MEASURE_COLUMN;

/// The recipient of an internal file, as its label names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The LA code, for example `E09000002`.
    pub code: String,
    /// The LA's name from the reference data.
    pub name: String,
}

/// The default smallest column base (sum of rounded cells) for which shares
/// are shown (R8).
pub const DEFAULT_MIN_SHARE_BASE: u64 = 100;

/// Who made a file and when, for its leading lines (R10). A report fills
/// it; the command line leaves it empty. Each part is said only when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct About {
    /// The provider's name, as `provider.toml` gives it.
    pub provider: Option<String>,
    /// The `[[report]]` that made the file.
    pub report: Option<String>,
    /// When the run was made for (the run's time, not the clock's, so the
    /// same run gives the same bytes).
    pub made_at: Option<DateTime<Utc>>,
}

/// Everything a table is asked to show. Built by the CLI or by a report.
///
/// Rows, columns and filters name declared dimensions only (R14): `period`,
/// `la_code`, `payment_group` and the declared characteristics. Which of
/// these exist, and their categories, is the [`super::Catalogue`] the spec
/// is checked against ([`super::check_spec`]).
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub measure: Measure,
    pub view: View,
    /// The row dimension.
    pub rows: String,
    /// The column dimension; `None` gives one column named `All`.
    pub cols: Option<String>,
    /// Keep only input whose dimension has this category (all must hold).
    pub filters: Vec<(String, String)>,
    /// The grain of `period`.
    pub period: PeriodGrain,
    /// The periods the table covers: stage dates (records) or `period`
    /// values (counts) outside it are not counted. Required when `period`
    /// lays the table out, so its labels never depend on the data (R15).
    /// `None` counts every period in the input.
    pub periods: Option<PeriodRange>,
    /// `None` is treated as internal, with `W_UNCLASSIFIED` (R10).
    pub classification: Option<Classification>,
    /// For an internal table, the LA it is for: the readers count only that
    /// LA's participants (R16).
    pub recipient: Option<Recipient>,
    /// Warnings block (R13).
    pub strict: bool,
    /// The smallest column base for which shares are shown (R8).
    pub min_share_base: u64,
    /// Who made the file and when (R10).
    pub about: About,
}

impl TableSpec {
    /// A counts-view spec with the defaults of the command line.
    pub fn new(measure: Measure, rows: impl Into<String>) -> Self {
        Self {
            measure,
            view: View::default(),
            rows: rows.into(),
            cols: None,
            filters: Vec::new(),
            period: PeriodGrain::default(),
            periods: None,
            classification: None,
            recipient: None,
            strict: false,
            min_share_base: DEFAULT_MIN_SHARE_BASE,
            about: About::default(),
        }
    }

    /// Whether the file is internal MI (R10: no classification means
    /// internal).
    pub fn is_internal(&self) -> bool {
        self.classification != Some(Classification::Published)
    }

    /// The dimensions the table is laid out by: rows, then columns if any.
    pub fn dimensions(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.rows.as_str()).chain(self.cols.as_deref())
    }
}
