//! Periods and period ranges: the categories of the derived `period`
//! dimension.
//!
//! A [`Period`] is a month (`2012-09`) or a quarter (`2012-Q3`). A
//! [`PeriodRange`] is a run of consecutive periods of one grain; it is what
//! a table covers, and when `period` is a row or column dimension it is
//! exactly the table's labels, with no gaps, whatever the data holds (R15).

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};

use serde::{Deserialize, Serialize};

/// The grain of the `period` dimension: derived from the measure's stage
/// date for participant records, the `period` column of a counts file.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum PeriodGrain {
    /// `YYYY-MM`.
    #[default]
    Month,
    /// `YYYY-Qn`.
    Quarter,
}

/// The longest range of months a table may cover (ten years).
pub const MAX_MONTHS: usize = 120;

/// The longest range of quarters a table may cover (ten years).
pub const MAX_QUARTERS: usize = 40;

/// A month or a quarter, years 0000 to 9999.
///
/// Periods of one grain are ordered in time. Comparing a month with a
/// quarter is meaningless; the order then puts every month first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    grain: PeriodGrain,
    /// Months (or quarters) since January (Q1) of year 0.
    ordinal: u32,
}

/// Why text is not a period or a period range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PeriodError(String);

impl PeriodGrain {
    /// How many periods of this grain a year holds.
    fn per_year(self) -> u32 {
        match self {
            PeriodGrain::Month => 12,
            PeriodGrain::Quarter => 4,
        }
    }

    /// The name used on the command line and in config.
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodGrain::Month => "month",
            PeriodGrain::Quarter => "quarter",
        }
    }

    /// How a label of this grain is written, for messages.
    pub fn shape(self) -> &'static str {
        match self {
            PeriodGrain::Month => "a month (YYYY-MM)",
            PeriodGrain::Quarter => "a quarter (YYYY-Qn)",
        }
    }

    /// The longest range of this grain a table may cover.
    pub fn max_range(self) -> usize {
        match self {
            PeriodGrain::Month => MAX_MONTHS,
            PeriodGrain::Quarter => MAX_QUARTERS,
        }
    }
}

impl Period {
    const YEARS: u32 = 10_000;

    /// The period of `grain` that `date` falls in. `None` for a year beyond
    /// 9999 or before 0000.
    pub fn containing(date: NaiveDate, grain: PeriodGrain) -> Option<Period> {
        let year = u32::try_from(date.year())
            .ok()
            .filter(|&y| y < Self::YEARS)?;
        Some(Self::from_year_month(year, date.month0(), grain))
    }

    /// The period of `grain` holding month `month0` (0–11) of `year`.
    pub(crate) fn from_year_month(year: u32, month0: u32, grain: PeriodGrain) -> Period {
        let index = match grain {
            PeriodGrain::Month => month0,
            PeriodGrain::Quarter => month0 / 3,
        };
        Period {
            grain,
            ordinal: year * grain.per_year() + index,
        }
    }

    /// Parses a label of one grain: `YYYY-MM` for months, `YYYY-Qn` for
    /// quarters.
    pub fn parse_as(text: &str, grain: PeriodGrain) -> Result<Period, PeriodError> {
        let p: Period = text
            .parse()
            .map_err(|_| PeriodError(format!("{text:?} is not {}", grain.shape())))?;
        if p.grain != grain {
            return Err(PeriodError(format!(
                "{text:?} is not {} (the period grain is {})",
                grain.shape(),
                grain.as_str()
            )));
        }
        Ok(p)
    }

    /// Months or quarters.
    pub fn grain(self) -> PeriodGrain {
        self.grain
    }

    fn year(self) -> u32 {
        self.ordinal / self.grain.per_year()
    }

    /// 1–12 for a month, 1–4 for a quarter.
    fn number(self) -> u32 {
        self.ordinal % self.grain.per_year() + 1
    }

    /// The month (1–12) the period starts in.
    fn first_month(self) -> u32 {
        match self.grain {
            PeriodGrain::Month => self.number(),
            PeriodGrain::Quarter => (self.number() - 1) * 3 + 1,
        }
    }

    /// Its first day.
    pub fn first_day(self) -> NaiveDate {
        let year = i32::try_from(self.year()).expect("years are at most 9999");
        NaiveDate::from_ymd_opt(year, self.first_month(), 1).expect("the first of a month exists")
    }

    /// Its last day.
    pub fn last_day(self) -> NaiveDate {
        match self.next() {
            Some(next) => next.first_day().pred_opt().expect("after 0000-01-01"),
            None => NaiveDate::from_ymd_opt(9999, 12, 31).expect("a real date"),
        }
    }

    /// The period before, if it is not before year 0000.
    pub fn prev(self) -> Option<Period> {
        Some(Period {
            ordinal: self.ordinal.checked_sub(1)?,
            ..self
        })
    }

    /// The period after, if it is not after year 9999.
    pub fn next(self) -> Option<Period> {
        let ordinal = self.ordinal + 1;
        (ordinal < Self::YEARS * self.grain.per_year()).then_some(Period { ordinal, ..self })
    }

    /// Its position in time among periods of its grain.
    pub(crate) fn ordinal(self) -> u32 {
        self.ordinal
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.grain {
            PeriodGrain::Month => write!(f, "{:04}-{:02}", self.year(), self.number()),
            PeriodGrain::Quarter => write!(f, "{:04}-Q{}", self.year(), self.number()),
        }
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    /// `YYYY-MM` (a month) or `YYYY-Qn` (a quarter), exactly.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let bad = || {
            PeriodError(format!(
                "{s:?} is not a period: expected YYYY-MM or YYYY-Qn"
            ))
        };
        if b.len() != 7 || b[4] != b'-' || !b[..4].iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let year = b[..4]
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        let (grain, number) = match (b[5], b[6]) {
            (b'Q', q @ b'1'..=b'4') => (PeriodGrain::Quarter, u32::from(q - b'0')),
            (m1 @ b'0'..=b'1', m2 @ b'0'..=b'9') => {
                let month = u32::from(m1 - b'0') * 10 + u32::from(m2 - b'0');
                if !(1..=12).contains(&month) {
                    return Err(bad());
                }
                (PeriodGrain::Month, month)
            }
            _ => return Err(bad()),
        };
        Ok(Period {
            grain,
            ordinal: year * grain.per_year() + number - 1,
        })
    }
}

/// Consecutive periods of one grain, `first` to `last` inclusive.
///
/// What a table covers. When `period` lays the table out, these are its
/// labels exactly. A range is never empty and never mixes grains; how long
/// it may be is a rule of the sanitiser ([`PeriodGrain::max_range`],
/// checked by [`super::check_spec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeriodRange {
    first: Period,
    last: Period,
}

impl PeriodRange {
    /// The range from `first` to `last`; `None` if their grains differ or
    /// `last` comes before `first`.
    pub fn new(first: Period, last: Period) -> Option<Self> {
        (first.grain == last.grain && first <= last).then_some(Self { first, last })
    }

    /// One period.
    pub fn single(period: Period) -> Self {
        Self {
            first: period,
            last: period,
        }
    }

    /// The `n` periods ending with `last` (a report's "the last n complete
    /// periods"); `None` for `n` = 0 or a start before year 0000.
    pub fn ending(last: Period, n: usize) -> Option<Self> {
        let back = u32::try_from(n.checked_sub(1)?).ok()?;
        let first = Period {
            ordinal: last.ordinal.checked_sub(back)?,
            ..last
        };
        Some(Self { first, last })
    }

    pub fn first(&self) -> Period {
        self.first
    }

    pub fn last(&self) -> Period {
        self.last
    }

    pub fn grain(&self) -> PeriodGrain {
        self.first.grain
    }

    /// How many periods it holds (at least 1).
    pub fn len(&self) -> usize {
        (self.last.ordinal - self.first.ordinal) as usize + 1
    }

    /// Always `false`: a range holds at least one period.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first day of its first period.
    pub fn first_day(&self) -> NaiveDate {
        self.first.first_day()
    }

    /// The last day of its last period.
    pub fn last_day(&self) -> NaiveDate {
        self.last.last_day()
    }

    /// Whether `period` is one of its periods (of the same grain).
    pub fn contains(&self, period: Period) -> bool {
        period.grain == self.first.grain && self.first <= period && period <= self.last
    }

    /// The position of `period` in the range, if it is in it.
    pub fn index_of(&self, period: Period) -> Option<usize> {
        self.contains(period)
            .then(|| (period.ordinal - self.first.ordinal) as usize)
    }

    /// Its periods, in time order.
    pub fn periods(&self) -> impl Iterator<Item = Period> + use<> {
        let (first, grain) = (self.first.ordinal, self.first.grain);
        (first..=self.last.ordinal).map(move |ordinal| Period { grain, ordinal })
    }

    /// Its periods' labels, in time order: the table's labels when `period`
    /// is a row or column dimension.
    pub fn labels(&self) -> impl Iterator<Item = String> + use<> {
        self.periods().map(|p| p.to_string())
    }
}

impl fmt::Display for PeriodRange {
    /// `2012-09` for one period, `2012-07 to 2012-09` for several.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{} to {}", self.first, self.last)
        }
    }
}

impl FromStr for PeriodRange {
    type Err = PeriodError;

    /// `FROM..TO` (both of one grain, `FROM` not after `TO`) or one `PERIOD`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((from, to)) = s.split_once("..") else {
            return Ok(Self::single(s.parse()?));
        };
        let (first, last): (Period, Period) = (from.parse()?, to.parse()?);
        if first.grain != last.grain {
            return Err(PeriodError(format!(
                "{s:?} mixes a {} and a {}; give both ends of one grain",
                first.grain.as_str(),
                last.grain.as_str()
            )));
        }
        Self::new(first, last).ok_or_else(|| PeriodError(format!("{s:?} ends before it starts")))
    }
}

/// As its label, `"2012-09"` or `"2012-Q3"` (the release ledger stores
/// periods as JSON).
impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// As `"FIRST..LAST"`, or one period's label when it holds one: the form
/// `--periods` takes, so it reads back with [`FromStr`].
impl Serialize for PeriodRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.collect_str(&self.first)
        } else {
            s.collect_str(&format_args!("{}..{}", self.first, self.last))
        }
    }
}

impl<'de> Deserialize<'de> for PeriodRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Period {
        s.parse().expect("a period")
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("a date")
    }

    #[test]
    fn months_and_quarters_parse_and_print() {
        for s in ["2012-09", "0000-01", "9999-12", "2012-Q3", "2012-Q1"] {
            assert_eq!(p(s).to_string(), s);
        }
        assert_eq!(p("2012-09").grain(), PeriodGrain::Month);
        assert_eq!(p("2012-Q4").grain(), PeriodGrain::Quarter);
        for bad in [
            "2012-13",
            "2012-00",
            "2012-Q5",
            "2012-Q0",
            "2012-9",
            "12-09",
            "2012/09",
            "2012-q3",
            "",
            "2012-091",
            "२०१२-09",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }

    #[test]
    fn first_and_last_days() {
        assert_eq!(p("2012-02").first_day(), day("2012-02-01"));
        assert_eq!(p("2012-02").last_day(), day("2012-02-29"));
        assert_eq!(p("2012-Q3").first_day(), day("2012-07-01"));
        assert_eq!(p("2012-Q3").last_day(), day("2012-09-30"));
        assert_eq!(p("2012-Q4").last_day(), day("2012-12-31"));
        assert_eq!(p("9999-12").last_day(), day("9999-12-31"));
    }

    #[test]
    fn neighbours_stop_at_the_ends() {
        assert_eq!(p("2012-12").next(), Some(p("2013-01")));
        assert_eq!(p("2013-Q1").prev(), Some(p("2012-Q4")));
        assert_eq!(p("0000-01").prev(), None);
        assert_eq!(p("9999-Q4").next(), None);
    }

    #[test]
    fn containing_a_date() {
        let d = day("2012-08-31");
        assert_eq!(
            Period::containing(d, PeriodGrain::Month),
            Some(p("2012-08"))
        );
        assert_eq!(
            Period::containing(d, PeriodGrain::Quarter),
            Some(p("2012-Q3"))
        );
    }

    #[test]
    fn ranges_parse_print_and_list_their_labels() {
        let r: PeriodRange = "2012-11..2013-02".parse().expect("range");
        assert_eq!(r.to_string(), "2012-11 to 2013-02");
        assert_eq!(
            r.labels().collect::<Vec<_>>(),
            ["2012-11", "2012-12", "2013-01", "2013-02"]
        );
        assert_eq!(
            (r.len(), r.first_day(), r.last_day()),
            (4, day("2012-11-01"), day("2013-02-28"))
        );
        let one: PeriodRange = "2012-Q3".parse().expect("single");
        assert_eq!((one.to_string(), one.len()), ("2012-Q3".to_string(), 1));
        assert_eq!(
            PeriodRange::ending(p("2012-09"), 3),
            Some("2012-07..2012-09".parse().expect("range"))
        );
        assert_eq!(PeriodRange::ending(p("2012-09"), 0), None);
        for bad in [
            "2012-09..2012-07",
            "2012-07..2012-Q3",
            "2012-07..",
            "..2012-07",
            "x",
        ] {
            assert!(bad.parse::<PeriodRange>().is_err(), "{bad}");
        }
        assert_eq!(r.index_of(p("2013-01")), Some(2));
        assert_eq!(r.index_of(p("2013-03")), None);
        assert_eq!(r.index_of(p("2012-Q4")), None);
    }

    #[test]
    fn periods_and_ranges_serialise_as_their_labels() {
        let r: PeriodRange = "2012-07..2012-09".parse().expect("range");
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(json, "\"2012-07..2012-09\"");
        assert_eq!(serde_json::from_str::<PeriodRange>(&json).expect("back"), r);
        let one = PeriodRange::single(p("2012-Q3"));
        assert_eq!(serde_json::to_string(&one).expect("json"), "\"2012-Q3\"");
        assert_eq!(
            serde_json::from_str::<Period>("\"2012-Q3\"").expect("p"),
            p("2012-Q3")
        );
        assert!(serde_json::from_str::<PeriodRange>("\"2012-09..2012-07\"").is_err());
        assert!(serde_json::from_str::<Period>("\"2012-13\"").is_err());
    }

    proptest! {
        #[test]
        fn a_date_lies_within_its_period(y in 0i32..10000, ord in 1u32..=366, quarter in any::<bool>()) {
            let Some(d) = NaiveDate::from_yo_opt(y, ord) else { return Ok(()) };
            let grain = if quarter { PeriodGrain::Quarter } else { PeriodGrain::Month };
            let period = Period::containing(d, grain).expect("in range");
            prop_assert!(period.first_day() <= d && d <= period.last_day());
            prop_assert_eq!(period.to_string().parse::<Period>(), Ok(period));
            if let Some(next) = period.next() {
                prop_assert_eq!(next.first_day(), period.last_day().succ_opt().expect("a day"));
            }
        }
    }
}
