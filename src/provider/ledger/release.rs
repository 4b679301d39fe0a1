//! What an LA was sent, as the ledger records it: rounded figures only, in
//! category codes, with everything that says which people each figure
//! counts (measure, period range, the dimensions laid out, the categories
//! the whole table is restricted to).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reference::{LA_CODE, MEASURE_COLUMN, PERIOD};
use crate::sanitiser::{
    Body, Classification, Measure, Period, PeriodGrain, PeriodRange, Sanitised, View,
};

/// A dimension a table is laid out by, and its categories in table order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    /// `period`, `la_code`, `payment_group` or a declared characteristic;
    /// `All` for the one column of a table with no column dimension is not
    /// an axis (see [`ReleaseTable::cols`]).
    pub dimension: String,
    /// Category codes (`Y`, not `Disabled`); for `period`, period labels.
    pub codes: Vec<String>,
}

/// The figures of a release: what left, never an unrounded count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Figures {
    /// Rounded cells and the totals recomputed from them (R4).
    Counts {
        cells: Vec<Vec<u64>>,
        row_totals: Vec<u64>,
        col_totals: Vec<u64>,
        total: u64,
    },
    /// Shares, and the rounded counts they were computed from. The LA never
    /// sees those counts, but the audit takes a shares table to reveal them
    /// (R11, conservative), so the ledger keeps them.
    Shares {
        rounded: Vec<Vec<u64>>,
        shares: Vec<Vec<Option<u8>>>,
    },
}

/// One table sent to an LA, as the ledger stores it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseTable {
    pub measure: Measure,
    pub view: View,
    /// The periods the table covers (months or quarters). When `period`
    /// lays the table out, its codes are these periods' labels.
    pub range: PeriodRange,
    pub rows: Axis,
    /// `None` for a table with one column (`All`).
    pub cols: Option<Axis>,
    /// The categories the whole table is restricted to, sorted by
    /// dimension, one per dimension: `("la_code", "E09000002")` for an LA's
    /// internal file, a `--where` filter. A `period` entry restricts the
    /// table to one period of its range.
    pub fixed: Vec<(String, String)>,
    pub figures: Figures,
}

/// Why a table cannot be recorded, or a record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The table covers every period in its input: the ledger could not
    /// say which people its figures count. Reports always have a range.
    #[error(
        "the table has no period range, so the ledger cannot say which people it counts; \
         make it with --periods (every report has one)"
    )]
    NoPeriodRange,
    /// Two restrictions of one dimension disagree.
    #[error(
        "the table is restricted to {dimension}={first} and to {dimension}={second}; a table \
         restricted twice counts nobody — correct its filters"
    )]
    ConflictingRestriction {
        dimension: String,
        first: String,
        second: String,
    },
    /// A stored record is not well formed.
    #[error("the release record is malformed: {0}")]
    Malformed(String),
}

impl ReleaseTable {
    /// The record of a sanitised table about to be sent.
    ///
    /// `fixed` holds the restrictions the caller knows and the table does
    /// not (a report split by recipient counts one LA's records:
    /// `("la_code", LA)`). To them are added the table's own `--where`
    /// filters and, for an internal file, its recipient (R16): a record
    /// never claims a table counts more people than it does, since that
    /// would loosen the audit. A `--where period=` filter becomes a
    /// `period` restriction; `--where measure=` (a repeat of the measure)
    /// is dropped.
    pub fn from_sanitised(
        table: &Sanitised,
        fixed: Vec<(String, String)>,
    ) -> Result<Self, ReleaseError> {
        let range = table.periods().ok_or(ReleaseError::NoPeriodRange)?;
        let mut restrictions: BTreeMap<String, String> = BTreeMap::new();
        let mut restrict = |dimension: &str, code: &str| match restrictions.get(dimension) {
            Some(first) if first != code => Err(ReleaseError::ConflictingRestriction {
                dimension: dimension.to_string(),
                first: first.clone(),
                second: code.to_string(),
            }),
            _ => {
                restrictions.insert(dimension.to_string(), code.to_string());
                Ok(())
            }
        };
        for (dimension, code) in &fixed {
            restrict(dimension, code)?;
        }
        for (dimension, code) in table.filters() {
            if dimension != MEASURE_COLUMN {
                restrict(dimension, code)?;
            }
        }
        if table.classification() == Classification::Internal
            && let Some(r) = table.recipient()
        {
            restrict(LA_CODE, &r.code)?;
        }
        let rows = Axis {
            dimension: table.row_dimension().to_string(),
            codes: table.row_codes().to_vec(),
        };
        let cols = table.col_dimension().map(|d| Axis {
            dimension: d.to_string(),
            codes: table.col_codes().to_vec(),
        });
        let values = |v: &[crate::sanitiser::Rounded]| v.iter().map(|r| r.get()).collect();
        let figures = match (table.body(), table.shares_rounded()) {
            (
                Body::Counts {
                    cells,
                    row_totals,
                    col_totals,
                    total,
                },
                _,
            ) => Figures::Counts {
                cells: cells.iter().map(|r| values(r)).collect(),
                row_totals: values(row_totals),
                col_totals: values(col_totals),
                total: total.get(),
            },
            (Body::Shares { cells }, Some(rounded)) => Figures::Shares {
                rounded: rounded.iter().map(|r| values(r)).collect(),
                shares: cells.clone(),
            },
            (Body::Shares { .. }, None) => {
                unreachable!("the sanitiser keeps the rounded counts of every shares table")
            }
        };
        let record = Self {
            measure: table.measure(),
            view: table.view(),
            range,
            rows,
            cols,
            fixed: restrictions.into_iter().collect(),
            figures,
        };
        record.check()?;
        Ok(record)
    }

    /// Checks that the record is one the audit can read: figures shaped
    /// like the axes, totals that are sums of their cells (R4), periods of
    /// the range's grain inside it, restrictions sorted with one per
    /// dimension. A record read back from the database is checked again
    /// by the audit.
    pub fn check(&self) -> Result<(), ReleaseError> {
        let bad = |why: String| Err(ReleaseError::Malformed(why));
        let nrows = self.rows.codes.len();
        let ncols = self.cols.as_ref().map_or(1, |c| c.codes.len());
        if nrows == 0 || ncols == 0 {
            return bad("a table has at least one row and one column".into());
        }
        for axis in std::iter::once(&self.rows).chain(&self.cols) {
            if axis.dimension == PERIOD {
                for code in &axis.codes {
                    match Period::parse_as(code, self.range.grain()) {
                        Ok(p) if self.range.contains(p) => {}
                        _ => {
                            return bad(format!(
                                "period {code:?} is not a {} of the range {}",
                                self.range.grain().as_str(),
                                self.range
                            ));
                        }
                    }
                }
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = axis.codes.iter().find(|c| !seen.insert(c.as_str())) {
                return bad(format!("{} lists {dup:?} twice", axis.dimension));
            }
        }
        if let Some(cols) = &self.cols
            && cols.dimension == self.rows.dimension
        {
            return bad(format!("rows and columns are both {}", cols.dimension));
        }
        for pair in self.fixed.windows(2) {
            if pair[0].0 >= pair[1].0 {
                return bad(format!(
                    "restrictions must be sorted with one per dimension ({} then {})",
                    pair[0].0, pair[1].0
                ));
            }
        }
        if let Some((_, p)) = self.fixed.iter().find(|(d, _)| d == PERIOD) {
            match Period::parse_as(p, self.range.grain()) {
                Ok(p) if self.range.contains(p) => {}
                _ => {
                    return bad(format!(
                        "the period restriction {p:?} is outside {}",
                        self.range
                    ));
                }
            }
        }
        let shaped = |m: &[Vec<u64>]| m.len() == nrows && m.iter().all(|r| r.len() == ncols);
        match &self.figures {
            Figures::Counts {
                cells,
                row_totals,
                col_totals,
                total,
            } => {
                if !shaped(cells) || row_totals.len() != nrows || col_totals.len() != ncols {
                    return bad(format!("the figures are not {nrows} by {ncols}"));
                }
                let rows_add = (0..nrows).all(|r| sum(cells[r].iter().copied()) == row_totals[r]);
                let cols_add =
                    (0..ncols).all(|c| sum(cells.iter().map(|row| row[c])) == col_totals[c]);
                if !rows_add || !cols_add || sum(row_totals.iter().copied()) != *total {
                    return bad("a total is not the sum of its rounded cells (R4)".into());
                }
                if cells.iter().flatten().chain([total]).any(|x| x % 20 != 0) {
                    return bad("a figure is not a multiple of 20".into());
                }
            }
            Figures::Shares { rounded, shares } => {
                if self.view != View::Shares || !shaped(rounded) {
                    return bad(format!("the rounded counts are not {nrows} by {ncols}"));
                }
                if shares.len() != nrows || shares.iter().any(|r| r.len() != ncols) {
                    return bad(format!("the shares are not {nrows} by {ncols}"));
                }
                if rounded.iter().flatten().any(|x| x % 20 != 0) {
                    return bad("a rounded count is not a multiple of 20".into());
                }
            }
        }
        if matches!(self.figures, Figures::Counts { .. }) != (self.view == View::Counts) {
            return bad(format!(
                "a {} view with the other view's figures",
                self.view.as_str()
            ));
        }
        Ok(())
    }

    /// The months a period code of a table covers (a month, or a
    /// quarter's three).
    pub(crate) fn months_of(period: Period) -> Vec<Period> {
        match period.grain() {
            PeriodGrain::Month => vec![period],
            PeriodGrain::Quarter => {
                let first = period.first_day();
                let month = Period::containing(first, PeriodGrain::Month)
                    .expect("a quarter's first day lies in the calendar");
                let mut months = vec![month];
                while months.len() < 3 {
                    let next = months[months.len() - 1].next().expect("within year 9999");
                    months.push(next);
                }
                months
            }
        }
    }
}

/// A sum that saturates instead of overflowing (a record whose sums
/// overflow is malformed anyway).
fn sum(mut values: impl Iterator<Item = u64>) -> u64 {
    values.try_fold(0u64, u64::checked_add).unwrap_or(u64::MAX)
}
