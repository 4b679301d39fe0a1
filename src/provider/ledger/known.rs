//! Figures an LA knows from elsewhere (DWP's official statistics, its own
//! records), registered by the operator so the audit can count them (R11).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::reference::{LA_CODE, PERIOD};
use crate::sanitiser::{Catalogue, Measure, Period, PeriodGrain};

use super::release::ReleaseTable;

/// The period a known figure counts: a month, a quarter or a calendar
/// year (January to December).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KnownPeriod {
    Month(Period),
    Quarter(Period),
    /// A calendar year, 0 to 9999.
    Year(u16),
}

impl KnownPeriod {
    /// Its months, in time order.
    pub fn months(self) -> Vec<Period> {
        match self {
            KnownPeriod::Month(p) | KnownPeriod::Quarter(p) => ReleaseTable::months_of(p),
            KnownPeriod::Year(y) => (1..=4)
                .flat_map(|q| {
                    let quarter: Period = format!("{y:04}-Q{q}").parse().expect("a quarter");
                    ReleaseTable::months_of(quarter)
                })
                .collect(),
        }
    }
}

impl fmt::Display for KnownPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KnownPeriod::Month(p) | KnownPeriod::Quarter(p) => p.fmt(f),
            KnownPeriod::Year(y) => write!(f, "{y:04}"),
        }
    }
}

impl FromStr for KnownPeriod {
    type Err = String;

    /// `YYYY-MM`, `YYYY-Qn` or `YYYY`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(KnownPeriod::Year(s.parse().expect("four digits")));
        }
        let p: Period = s.parse().map_err(|_| {
            format!(
                "{s:?} is not a period: expected a month YYYY-MM, a quarter YYYY-Qn or a year YYYY"
            )
        })?;
        Ok(match p.grain() {
            PeriodGrain::Month => KnownPeriod::Month(p),
            PeriodGrain::Quarter => KnownPeriod::Quarter(p),
        })
    }
}

impl Serialize for KnownPeriod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KnownPeriod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What the LA knows of the figure: its exact value, or that it lies in an
/// interval (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnownValue {
    Exact(u64),
    Range(u64, u64),
}

impl KnownValue {
    /// The interval, both ends included.
    pub fn bounds(self) -> (u64, u64) {
        match self {
            KnownValue::Exact(v) => (v, v),
            KnownValue::Range(lo, hi) => (lo, hi),
        }
    }
}

impl fmt::Display for KnownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KnownValue::Exact(v) => write!(f, "exactly {v}"),
            KnownValue::Range(lo, hi) => write!(f, "{lo} to {hi}"),
        }
    }
}

/// A figure an LA knows from elsewhere: the true count of `measure` in
/// `period` for the people in `fixed`.
///
/// `fixed` names declared dimensions and category codes, sorted, one per
/// dimension, and **always `la_code`** **(choice)**: every figure is about
/// some LA's participants, and one registered without saying whose would
/// be taken as covering every LA, which would quietly weaken the audit. A
/// national figure is of little use against one LA's releases anyway.
/// Dimensions not named are summed over (all payment groups, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Known {
    /// The ledger's id for it.
    pub id: i64,
    pub measure: Measure,
    pub period: KnownPeriod,
    pub fixed: Vec<(String, String)>,
    pub value: KnownValue,
    /// Where the LA has it from, for the operator ("DWP stat-xplore, …").
    pub source: String,
}

/// Why a known figure is refused. Each names what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KnownError {
    /// Not a declared dimension (or `period`, which the figure's period gives).
    #[error(
        "`{dimension}` is not a dimension a known figure can name: use {allowed} \
         (the period is the figure's own period)"
    )]
    NotADimension { dimension: String, allowed: String },
    /// A category its dimension does not declare.
    #[error("{code:?} is not a declared category of `{dimension}`{hint}")]
    UndeclaredCategory {
        dimension: String,
        code: String,
        hint: String,
    },
    /// One dimension named twice.
    #[error("`{0}` is named twice; a figure has one category per dimension")]
    Repeated(String),
    /// No `la_code`.
    #[error(
        "a known figure must say whose participants it counts: add la_code=CODE (the LA that \
         knows it, for its own area)"
    )]
    NoLa,
    /// An interval whose ends are the wrong way round.
    #[error("the interval {lo} to {hi} is empty; give the lower end first")]
    EmptyRange { lo: u64, hi: u64 },
    /// No source.
    #[error("say where the LA has the figure from (--source)")]
    NoSource,
}

impl Known {
    /// A known figure checked against the declared dimensions: only
    /// `la_code` (required), `payment_group` and declared characteristics,
    /// each with a declared category, once.
    pub fn new(
        catalogue: &Catalogue,
        id: i64,
        measure: Measure,
        period: KnownPeriod,
        mut fixed: Vec<(String, String)>,
        value: KnownValue,
        source: impl Into<String>,
    ) -> Result<Self, KnownError> {
        fixed.sort();
        let known = Self {
            id,
            measure,
            period,
            fixed,
            value,
            source: source.into(),
        };
        known.check(catalogue)?;
        Ok(known)
    }

    /// Checks a known figure (as [`Known::new`] does; the audit checks
    /// those read back from the database again).
    pub fn check(&self, catalogue: &Catalogue) -> Result<(), KnownError> {
        let allowed = || {
            let names: Vec<&str> = catalogue
                .names()
                .into_iter()
                .filter(|n| *n != PERIOD)
                .collect();
            names.join(", ")
        };
        for (i, (dimension, code)) in self.fixed.iter().enumerate() {
            if self.fixed[..i].iter().any(|(d, _)| d == dimension) {
                return Err(KnownError::Repeated(dimension.clone()));
            }
            let declared = if dimension == LA_CODE && !catalogue.las().is_empty() {
                catalogue.las().get(code).is_some()
            } else if let Some(d) = catalogue.dimensions().get(dimension) {
                d.position(code).is_some()
            } else {
                return Err(KnownError::NotADimension {
                    dimension: dimension.clone(),
                    allowed: allowed(),
                });
            };
            if !declared {
                let hint = match catalogue.dimensions().get(dimension) {
                    Some(d) => format!(
                        " ({})",
                        d.categories()
                            .iter()
                            .map(|c| c.code.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => " (not in the LA reference data)".to_string(),
                };
                return Err(KnownError::UndeclaredCategory {
                    dimension: dimension.clone(),
                    code: code.clone(),
                    hint,
                });
            }
        }
        if !self.fixed.is_sorted() {
            return Err(KnownError::Repeated("(unsorted restrictions)".into()));
        }
        if !self.fixed.iter().any(|(d, _)| d == LA_CODE) {
            return Err(KnownError::NoLa);
        }
        if let KnownValue::Range(lo, hi) = self.value
            && lo > hi
        {
            return Err(KnownError::EmptyRange { lo, hi });
        }
        if self.source.trim().is_empty() {
            return Err(KnownError::NoSource);
        }
        Ok(())
    }
}
