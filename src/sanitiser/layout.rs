//! The table model: which dimensions a table may use, and how a request
//! becomes a layout whose every label is known before any input is read.
//!
//! A table may be laid out or filtered only by declared dimensions (R14):
//! `period` (from the measure's own stage date), `la_code` (the LA
//! reference data), `payment_group` and the declared characteristics. Each
//! has a full, ordered list of categories, and every table shows all of
//! them in reference order, whoever falls in them (R15). So the labels of a
//! table depend on its specification and period range alone, and a
//! published 0 always means 0–9.
//!
//! [`check_spec`] is the one place for the rules that depend on the request
//! alone. It needs no input: `provider.toml` runs every `[[report]]`
//! through it at load.

use std::fmt;

use rustc_hash::FxHashMap;

use super::findings::{Blocked, Code, Finding};
use super::input::InputError;
use super::period::{Period, PeriodRange};
use super::spec::{
    ALL_COLUMN, COUNT, LA_CODE, MEASURE_COLUMN, Measure, PERIOD, PeriodGrain, TableSpec, View,
};
use crate::reference::{Dimension, Dimensions, LaReference};

/// The declared dimensions a table may use: the characteristics and
/// payment groups ([`Dimensions`]) and the LAs ([`LaReference`]).
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    dimensions: Dimensions,
    las: LaReference,
}

impl Catalogue {
    /// Declared dimensions with the LA reference data. With no LAs (an
    /// empty [`LaReference`]), `la_code` is not a dimension.
    pub fn new(dimensions: Dimensions, las: LaReference) -> Self {
        Self { dimensions, las }
    }

    pub fn dimensions(&self) -> &Dimensions {
        &self.dimensions
    }

    pub fn las(&self) -> &LaReference {
        &self.las
    }

    /// The names a table may be laid out or filtered by, in the order
    /// messages list them.
    pub fn names(&self) -> Vec<&str> {
        let mut names = vec![PERIOD];
        if !self.las.is_empty() {
            names.push(LA_CODE);
        }
        names.extend(self.dimensions.iter().map(Dimension::name));
        names
    }
}

/// The part of a request an error is about, so a caller can say where:
/// `--rows` on the command line, `report[2].rows` in `provider.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecKey {
    /// The view (`E_OUTCOME_VOLUME`).
    View,
    /// The row dimension.
    Rows,
    /// The column dimension.
    Cols,
    /// The filter at this index of [`TableSpec::filters`].
    Where(usize),
    /// The period range, or its absence (`E_PERIOD_RANGE`).
    Periods,
    /// The recipient of an internal file (`E_OTHER_LA`).
    Recipient,
}

impl SpecKey {
    /// The key's name: `view`, `rows`, `cols`, `where`, `periods`,
    /// `recipient`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecKey::View => "view",
            SpecKey::Rows => "rows",
            SpecKey::Cols => "cols",
            SpecKey::Where(_) => "where",
            SpecKey::Periods => "periods",
            SpecKey::Recipient => "recipient",
        }
    }
}

impl fmt::Display for SpecKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a request is refused before any input is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// What part of the request is wrong.
    pub key: SpecKey,
    /// The finding code, as scripts match it.
    pub code: Code,
    /// What is wrong and what to do, for the operator.
    pub message: String,
}

impl fmt::Display for SpecError {
    /// `rows: E_NOT_A_DIMENSION: …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.key, self.code, self.message)
    }
}

/// Every reason a request is refused, in the order rows, columns, filters,
/// then the rest. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    /// Whether any error has this code.
    pub fn has(&self, code: Code) -> bool {
        self.0.iter().any(|e| e.code == code)
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<SpecErrors> for Blocked {
    fn from(errors: SpecErrors) -> Self {
        Blocked {
            errors: (errors.0.into_iter())
                .map(|e| Finding::new(e.code, e.message))
                .collect(),
            more: 0,
        }
    }
}

impl From<SpecErrors> for InputError {
    fn from(errors: SpecErrors) -> Self {
        InputError::Blocked(errors.into())
    }
}

/// Checks the rules that depend on the request alone, against the declared
/// dimensions, before any input is read:
///
/// - R7: no counts view of job outcomes or sustainments (`E_OUTCOME_VOLUME`,
///   key `view`).
/// - R9, R14: no measure set against another (`E_OUTCOME_RATE`): `measure`
///   as a dimension of an outcome table, a filter naming another measure
///   when either is an outcome measure, a filter on another measure's stage
///   date.
/// - R14: rows, columns and filters are declared dimensions
///   (`E_NOT_A_DIMENSION`), and filter values declared categories
///   (`E_UNDECLARED_VALUE`; `E_INVALID_VALUE` for a period outside the
///   range).
/// - R15: a period range where `period` lays the table out, of the table's
///   grain, at most [`PeriodGrain::max_range`] long (`E_PERIOD_RANGE`, key
///   `periods`).
/// - R16: an internal table never shows `la_code` as a row or column, nor
///   selects another LA than its recipient (`E_OTHER_LA`).
pub fn check_spec(spec: &TableSpec, catalogue: &Catalogue) -> Result<(), SpecErrors> {
    Layout::new(spec, catalogue).map(drop)
}

/// R7: job outcomes and sustainments never leave as volumes.
pub(crate) fn outcome_volume(spec: &TableSpec) -> Option<SpecError> {
    (spec.measure.is_outcome() && spec.view == View::Counts).then(|| SpecError {
        key: SpecKey::View,
        code: Code::OutcomeVolume,
        message: format!(
            "{} may not be shared as volumes; use --view shares for a percentage breakdown \
             (by payment group or a characteristic such as disability)",
            spec.measure
        ),
    })
}

/// Where a dimension's categories come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind<'c> {
    /// The periods of the table's range.
    Period,
    /// The LA reference data, in file order.
    La,
    /// `payment_group` or a characteristic.
    Declared(&'c Dimension),
}

/// A declared dimension the table uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dim<'c> {
    pub(crate) name: &'c str,
    pub(crate) kind: Kind<'c>,
}

impl Dim<'_> {
    /// The column of the input that holds it (for participant records,
    /// `period` is derived instead).
    pub(crate) fn column(&self) -> &str {
        self.name
    }
}

/// What a filter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// The category at this index.
    Category(u32),
    /// This period.
    Period(Period),
    /// Nothing: an internal file's recipient the reference data does not
    /// list has no participants in input whose LA codes are all declared.
    Nothing,
}

/// Why a filter is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `--where`.
    Where,
    /// An internal file counts its recipient's participants only (R16).
    Recipient,
}

/// A filter on a declared dimension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filter<'c> {
    pub(crate) dim: Dim<'c>,
    pub(crate) wanted: Wanted,
    pub(crate) origin: Origin,
}

/// A request checked against the catalogue: every dimension resolved, every
/// filter value a category, every label known.
#[derive(Debug)]
pub(crate) struct Layout<'c> {
    pub(crate) rows: Dim<'c>,
    pub(crate) cols: Option<Dim<'c>>,
    pub(crate) filters: Vec<Filter<'c>>,
    pub(crate) grain: PeriodGrain,
    pub(crate) periods: Option<PeriodRange>,
    catalogue: &'c Catalogue,
}

/// What a name in rows, columns or a filter is.
enum Name<'c> {
    Dim(Dim<'c>),
    Measure,
    StageDate(Measure),
    Count,
    Other,
}

impl<'c> Layout<'c> {
    /// Checks `spec` against `catalogue` (see [`check_spec`]).
    pub(crate) fn new(spec: &'c TableSpec, catalogue: &'c Catalogue) -> Result<Self, SpecErrors> {
        let mut errors = Vec::new();
        let mut error = |key: SpecKey, code: Code, message: String| {
            errors.push(SpecError { key, code, message });
        };
        if let Some(e) = outcome_volume(spec) {
            error(e.key, e.code, e.message);
        }
        let allowed = catalogue.names().join(", ");
        let not_a_dimension = |name: &str, what: &str| {
            format!(
                "`{name}` {what}: rows, columns and filters may use only the declared \
                 dimensions {allowed}"
            )
        };
        let one_measure = "a table holds one measure, the one --measure names";
        let rate = "setting outcomes or sustainments beside another measure gives a rate, and \
                    with shared referral volumes the outcome volume back";

        let mut layout_dim = |key: SpecKey, name: &'c str| -> Option<Dim<'c>> {
            match classify(name, catalogue) {
                Name::Dim(dim) => {
                    if let Kind::Period = dim.kind
                        && spec.periods.is_none()
                    {
                        error(
                            SpecKey::Periods,
                            Code::PeriodRange,
                            format!(
                                "`{PERIOD}` lays the table out (--{key}), so its periods must be \
                                 given, not taken from the data: give --periods FROM..TO (or one \
                                 PERIOD), at most {MAX_MONTHS} months or {MAX_QUARTERS} quarters",
                                MAX_MONTHS = super::period::MAX_MONTHS,
                                MAX_QUARTERS = super::period::MAX_QUARTERS,
                            ),
                        );
                    }
                    if let Kind::La = dim.kind
                        && spec.is_internal()
                    {
                        error(
                            key,
                            Code::OtherLa,
                            format!(
                                "`{LA_CODE}` cannot lay out an internal file: internal MI is for \
                                 one LA and never shows LAs separately; filter by the recipient \
                                 instead, or classify the table as published"
                            ),
                        );
                    }
                    return Some(dim);
                }
                Name::Measure if spec.measure.is_outcome() => {
                    error(key, Code::OutcomeRate, format!("{one_measure}: {rate}"));
                }
                Name::Measure => error(
                    key,
                    Code::NotADimension,
                    not_a_dimension(name, &format!("cannot be a dimension ({one_measure})")),
                ),
                Name::StageDate(_) => error(
                    key,
                    Code::NotADimension,
                    not_a_dimension(
                        name,
                        "is a stage date, not a dimension (the periods of --measure's own \
                         date are the dimension `period`)",
                    ),
                ),
                Name::Count => error(
                    key,
                    Code::NotADimension,
                    not_a_dimension(name, "holds the figures, not a breakdown"),
                ),
                Name::Other => error(
                    key,
                    Code::NotADimension,
                    not_a_dimension(name, "is not a declared dimension"),
                ),
            }
            None
        };
        let rows = layout_dim(SpecKey::Rows, &spec.rows);
        // `None` for no column dimension, `Some(None)` for a refused one.
        let cols = spec.cols.as_deref().map(|c| layout_dim(SpecKey::Cols, c));

        if let Some(range) = spec.periods {
            if range.grain() != spec.period {
                error(
                    SpecKey::Periods,
                    Code::PeriodRange,
                    format!(
                        "the period range {range} is in {}s but the table's period grain is \
                         {}; give both in one grain",
                        range.grain().as_str(),
                        spec.period.as_str()
                    ),
                );
            } else if range.len() > range.grain().max_range() {
                error(
                    SpecKey::Periods,
                    Code::PeriodRange,
                    format!(
                        "the period range {range} holds {} {}s; a table covers at most {} \
                         (ten years): ask for a shorter range",
                        range.len(),
                        range.grain().as_str(),
                        range.grain().max_range()
                    ),
                );
            }
        }

        let mut filters = Vec::new();
        for (i, (name, value)) in spec.filters.iter().enumerate() {
            let key = SpecKey::Where(i);
            let at = format!("--where {name}={value}");
            match classify(name, catalogue) {
                Name::Dim(dim) => {
                    let wanted = match dim.kind {
                        Kind::Period => match Period::parse_as(value, spec.period) {
                            Err(e) => {
                                error(key, Code::InvalidValue, format!("{at}: {e}"));
                                continue;
                            }
                            Ok(p) if spec.periods.is_some_and(|r| !r.contains(p)) => {
                                let range = spec.periods.expect("checked just above");
                                error(
                                    key,
                                    Code::InvalidValue,
                                    format!(
                                        "{at}: {p} lies outside the period range {range}, \
                                         so nothing could be counted"
                                    ),
                                );
                                continue;
                            }
                            Ok(p) => Wanted::Period(p),
                        },
                        Kind::La | Kind::Declared(_) => match category(dim, value, catalogue) {
                            Some(i) => Wanted::Category(i),
                            None => {
                                error(
                                    key,
                                    Code::UndeclaredValue,
                                    format!("{at}: {}", undeclared(dim, value)),
                                );
                                continue;
                            }
                        },
                    };
                    if let (Kind::La, Some(r)) = (dim.kind, &spec.recipient)
                        && spec.is_internal()
                        && value != &r.code
                    {
                        error(
                            key,
                            Code::OtherLa,
                            format!(
                                "{at}: an internal file for {} holds only {}'s participants; \
                                 it cannot select another LA",
                                r.code, r.code
                            ),
                        );
                        continue;
                    }
                    filters.push(Filter {
                        dim,
                        wanted,
                        origin: Origin::Where,
                    });
                }
                // Repeating --measure is harmless: a counts file's `measure`
                // column is always filtered by it.
                Name::Measure if value == spec.measure.as_str() => {}
                Name::Measure => {
                    let outcomes =
                        spec.measure.is_outcome() || value.parse().is_ok_and(Measure::is_outcome);
                    if outcomes {
                        error(
                            key,
                            Code::OutcomeRate,
                            format!("{at}: {one_measure}: {rate}"),
                        );
                    } else {
                        error(
                            key,
                            Code::NotADimension,
                            not_a_dimension(
                                name,
                                &format!("can only repeat --measure ({one_measure})"),
                            ),
                        );
                    }
                }
                Name::StageDate(m) if m == spec.measure => error(
                    key,
                    Code::NotADimension,
                    not_a_dimension(
                        name,
                        "is --measure's own stage date, not a dimension: select periods with \
                         --where period=… or --periods",
                    ),
                ),
                Name::StageDate(m) => error(
                    key,
                    Code::OutcomeRate,
                    format!(
                        "{at}: selecting {} by `{name}` (whether or when {m} happened) sets one \
                         measure against another; {one_measure}, and {rate}",
                        spec.measure
                    ),
                ),
                Name::Count => error(
                    key,
                    Code::NotADimension,
                    not_a_dimension(name, "holds the figures, not a breakdown"),
                ),
                Name::Other => error(
                    key,
                    Code::NotADimension,
                    not_a_dimension(name, "is not a declared dimension"),
                ),
            }
        }

        // R16: an internal file for an LA counts that LA's participants
        // only, whatever else the request says. A preview with no recipient
        // is not restricted.
        if let Some(r) = &spec.recipient
            && spec.is_internal()
        {
            if catalogue.las.is_empty() {
                error(
                    SpecKey::Recipient,
                    Code::OtherLa,
                    format!(
                        "an internal file for {} counts only {}'s participants, which needs the \
                         LA reference data to select them; none was given",
                        r.code, r.code
                    ),
                );
            } else {
                let dim = Dim {
                    name: LA_CODE,
                    kind: Kind::La,
                };
                let wanted =
                    category(dim, &r.code, catalogue).map_or(Wanted::Nothing, Wanted::Category);
                filters.push(Filter {
                    dim,
                    wanted,
                    origin: Origin::Recipient,
                });
            }
        }

        match (rows, cols) {
            (Some(rows), None) if errors.is_empty() => Ok(Self {
                rows,
                cols: None,
                filters,
                grain: spec.period,
                periods: spec.periods,
                catalogue,
            }),
            (Some(rows), Some(Some(cols))) if errors.is_empty() => Ok(Self {
                rows,
                cols: Some(cols),
                filters,
                grain: spec.period,
                periods: spec.periods,
                catalogue,
            }),
            _ => Err(SpecErrors(errors)),
        }
    }

    /// The labels of a dimension, in order: the periods of the range, the
    /// LA codes in reference-file order, or the declared categories' labels.
    pub(crate) fn labels(&self, dim: Dim<'_>) -> Vec<String> {
        match dim.kind {
            Kind::Period => self
                .periods
                .expect("a layout by period has a range")
                .labels()
                .collect(),
            Kind::La => (self.catalogue.las.in_file_order())
                .map(|la| la.code.clone())
                .collect(),
            Kind::Declared(d) => d.categories().iter().map(|c| c.label.clone()).collect(),
        }
    }

    /// The category codes of a dimension, in the order of [`Self::labels`]:
    /// period labels, LA codes, or the declared categories' codes.
    pub(crate) fn codes(&self, dim: Dim<'_>) -> Vec<String> {
        match dim.kind {
            Kind::Period | Kind::La => self.labels(dim),
            Kind::Declared(d) => d.categories().iter().map(|c| c.code.clone()).collect(),
        }
    }

    /// The labels and codes of the rows (`None`: of the one column of a
    /// table with no column dimension, `All`).
    pub(crate) fn axis(&self, dim: Option<Dim<'_>>) -> (Vec<String>, Vec<String>) {
        match dim {
            Some(dim) => (self.labels(dim), self.codes(dim)),
            None => (vec![ALL_COLUMN.to_string()], vec![ALL_COLUMN.to_string()]),
        }
    }

    /// How many categories a dimension has.
    pub(crate) fn len(&self, dim: Dim<'_>) -> usize {
        match dim.kind {
            Kind::Period => self.periods.map_or(0, |r| r.len()),
            Kind::La => self.catalogue.las.len(),
            Kind::Declared(d) => d.len(),
        }
    }

    /// A lookup from an input value to its category index (not for
    /// `period`).
    pub(crate) fn lookup(&self, dim: Dim<'_>) -> Lookup {
        let codes: Vec<&[u8]> = match dim.kind {
            Kind::Period => unreachable!("period values are parsed, not looked up"),
            Kind::La => (self.catalogue.las.in_file_order())
                .map(|la| la.code.as_bytes())
                .collect(),
            Kind::Declared(d) => d.categories().iter().map(|c| c.code.as_bytes()).collect(),
        };
        Lookup::new(&codes)
    }

    /// The dimension named `name` if it is one a table may be split by (a
    /// declared dimension other than `period`).
    pub(crate) fn split_dim(&self, name: &'c str) -> Result<Dim<'c>, Blocked> {
        match classify(name, self.catalogue) {
            Name::Dim(dim) if !matches!(dim.kind, Kind::Period) => Ok(dim),
            _ => Err(Blocked::one(
                Code::NotADimension,
                format!(
                    "`{name}` cannot split the records: only {} can",
                    self.catalogue.names()[1..].join(", ")
                ),
            )),
        }
    }

    /// The category index of `value` in `dim`, for split parts.
    pub(crate) fn category(&self, dim: Dim<'_>, value: &str) -> Option<u32> {
        category(dim, value, self.catalogue)
    }
}

/// What `name` is in this catalogue.
fn classify<'c>(name: &'c str, catalogue: &'c Catalogue) -> Name<'c> {
    let kind = if name == PERIOD {
        Some(Kind::Period)
    } else if name == LA_CODE && !catalogue.las.is_empty() {
        Some(Kind::La)
    } else {
        catalogue.dimensions.get(name).map(Kind::Declared)
    };
    if let Some(kind) = kind {
        return Name::Dim(Dim { name, kind });
    }
    if name == MEASURE_COLUMN {
        Name::Measure
    } else if name == COUNT {
        Name::Count
    } else if let Some(m) = Measure::ALL.into_iter().find(|m| m.date_column() == name) {
        Name::StageDate(m)
    } else {
        Name::Other
    }
}

/// The index of the category whose code is `value`.
fn category(dim: Dim<'_>, value: &str, catalogue: &Catalogue) -> Option<u32> {
    let i = match dim.kind {
        Kind::Period => return None,
        Kind::La => catalogue.las.position(value)?,
        Kind::Declared(d) => d.position(value)?,
    };
    u32::try_from(i).ok()
}

/// Why `value` is not a category of `dim`, and what to do.
pub(crate) fn undeclared(dim: Dim<'_>, value: &str) -> String {
    let shown = super::input::quote(value);
    match dim.kind {
        Kind::La => format!(
            "{shown} is not an LA code in the LA reference data; correct the input or the \
             reference data (--las FILE)"
        ),
        Kind::Declared(d) if d.name() == super::spec::PAYMENT_GROUP => format!(
            "{shown} is not a payment group in the reference data; correct the input or pass \
             --payment-groups FILE or --dimensions FILE"
        ),
        Kind::Declared(d) => format!(
            "{shown} is not a declared category of `{}` ({}); correct the input or declare it \
             (--dimensions FILE)",
            d.name(),
            (d.categories().iter())
                .map(|c| c.code.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::Period => format!("{shown} is not a period"),
    }
}

/// From an input value to its category index: a scan for a few categories,
/// a hash for many.
#[derive(Debug)]
pub(crate) enum Lookup {
    Few(Vec<Box<[u8]>>),
    Many(FxHashMap<Box<[u8]>, u32>),
}

impl Lookup {
    /// Up to this many categories are scanned.
    const FEW: usize = 16;

    fn new(codes: &[&[u8]]) -> Self {
        if codes.len() <= Self::FEW {
            Lookup::Few(codes.iter().map(|&c| c.into()).collect())
        } else {
            Lookup::Many(
                (codes.iter().enumerate())
                    .map(|(i, &c)| (c.into(), u32::try_from(i).expect("few categories")))
                    .collect(),
            )
        }
    }

    #[inline]
    pub(crate) fn get(&self, value: &[u8]) -> Option<u32> {
        match self {
            Lookup::Few(codes) => codes.iter().position(|c| **c == *value).map(|i| i as u32),
            Lookup::Many(map) => map.get(value).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::LocalAuthority;
    use crate::sanitiser::{Classification, Recipient};

    fn catalogue() -> Catalogue {
        let las = ["E1", "E2"].map(|c| LocalAuthority {
            code: c.to_string(),
            name: format!("LA {c}"),
            cpa: "Area".to_string(),
        });
        Catalogue::new(Dimensions::default(), LaReference::from_entries(las))
    }

    fn errors(spec: &TableSpec) -> Vec<(SpecKey, Code)> {
        match check_spec(spec, &catalogue()) {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(|e| (e.key, e.code)).collect(),
        }
    }

    fn spec(measure: Measure, rows: &str) -> TableSpec {
        let mut s = TableSpec::new(measure, rows);
        s.classification = Some(Classification::Published);
        if measure.is_outcome() {
            s.view = View::Shares;
        }
        s
    }

    #[test]
    fn only_declared_dimensions_lay_a_table_out() {
        for ok in ["payment_group", "disability", "la_code"] {
            assert_eq!(errors(&spec(Measure::Referrals, ok)), [], "{ok}");
        }
        for bad in [
            "participant_id",
            "referral_date",
            "job_outcome_date",
            "count",
            "gender",
            "Payment_Group",
        ] {
            assert_eq!(
                errors(&spec(Measure::Referrals, bad)),
                [(SpecKey::Rows, Code::NotADimension)],
                "{bad}"
            );
        }
        let mut s = spec(Measure::Referrals, "payment_group");
        s.cols = Some("job_outcome_date".into());
        assert_eq!(errors(&s), [(SpecKey::Cols, Code::NotADimension)]);
    }

    #[test]
    fn the_message_lists_the_allowed_dimensions() {
        let err = check_spec(&spec(Measure::Referrals, "participant_id"), &catalogue())
            .expect_err("identifier");
        assert_eq!(
            err.to_string(),
            "rows: E_NOT_A_DIMENSION: `participant_id` is not a declared dimension: rows, \
             columns and filters may use only the declared dimensions period, la_code, \
             payment_group, disability"
        );
        let no_las = Catalogue::default();
        let err = check_spec(&spec(Measure::Referrals, "la_code"), &no_las).expect_err("no LAs");
        assert!(
            err.to_string()
                .ends_with("only the declared dimensions period, payment_group, disability"),
            "{err}"
        );
    }

    #[test]
    fn filters_on_stage_dates() {
        let with = |name: &str, value: &str| {
            let mut s = spec(Measure::Referrals, "payment_group");
            s.filters.push((name.into(), value.into()));
            errors(&s)
        };
        for other in [
            "job_outcome_date",
            "attachment_date",
            "first_sustainment_date",
        ] {
            for value in ["", "2012-09-01"] {
                assert_eq!(
                    with(other, value),
                    [(SpecKey::Where(0), Code::OutcomeRate)],
                    "{other}={value}"
                );
            }
        }
        assert_eq!(
            with("referral_date", ""),
            [(SpecKey::Where(0), Code::NotADimension)]
        );
        assert_eq!(
            with("payment_group", "Martians"),
            [(SpecKey::Where(0), Code::UndeclaredValue)]
        );
        assert_eq!(with("disability", "Y"), []);
        assert_eq!(
            with("period", "2012-Q3"),
            [(SpecKey::Where(0), Code::InvalidValue)]
        );
        assert_eq!(with("period", "2012-09"), []);
    }

    #[test]
    fn measure_as_a_dimension_is_an_outcome_rate_for_outcomes() {
        assert_eq!(
            errors(&spec(Measure::JobOutcomes, "measure")),
            [(SpecKey::Rows, Code::OutcomeRate)]
        );
        let mut s = spec(Measure::Referrals, "payment_group");
        s.filters.push(("measure".into(), "job_outcomes".into()));
        assert_eq!(errors(&s), [(SpecKey::Where(0), Code::OutcomeRate)]);
        assert_eq!(
            errors(&spec(Measure::Referrals, "measure")),
            [(SpecKey::Rows, Code::NotADimension)]
        );
        let mut s = spec(Measure::Referrals, "payment_group");
        s.filters.push(("measure".into(), "attachments".into()));
        assert_eq!(errors(&s), [(SpecKey::Where(0), Code::NotADimension)]);
        let mut s = spec(Measure::Referrals, "payment_group");
        s.filters.push(("measure".into(), "referrals".into()));
        assert_eq!(errors(&s), [], "repeating --measure is harmless");
    }

    #[test]
    fn outcome_volumes_are_refused() {
        let mut s = spec(Measure::Sustainments, "payment_group");
        s.view = View::Counts;
        assert_eq!(errors(&s), [(SpecKey::View, Code::OutcomeVolume)]);
    }

    #[test]
    fn a_period_layout_needs_a_bounded_range_of_its_grain() {
        let mut s = spec(Measure::Referrals, "period");
        assert_eq!(errors(&s), [(SpecKey::Periods, Code::PeriodRange)]);
        s.periods = Some("2012-01..2021-12".parse().expect("range"));
        assert_eq!(errors(&s), []);
        s.periods = Some("2012-01..2022-01".parse().expect("range"));
        assert_eq!(errors(&s), [(SpecKey::Periods, Code::PeriodRange)]);
        s.periods = Some("2012-Q1..2012-Q2".parse().expect("range"));
        assert_eq!(errors(&s), [(SpecKey::Periods, Code::PeriodRange)]);
        s.period = PeriodGrain::Quarter;
        assert_eq!(errors(&s), []);
        s.filters.push(("period".into(), "2012-Q3".into()));
        assert_eq!(errors(&s), [(SpecKey::Where(0), Code::InvalidValue)]);
    }

    #[test]
    fn an_internal_file_is_for_one_la() {
        let mut s = spec(Measure::Referrals, "la_code");
        s.classification = Some(Classification::Internal);
        assert_eq!(errors(&s), [(SpecKey::Rows, Code::OtherLa)]);
        s.classification = None;
        assert_eq!(
            errors(&s),
            [(SpecKey::Rows, Code::OtherLa)],
            "unclassified is internal"
        );

        let mut s = spec(Measure::Referrals, "payment_group");
        s.classification = Some(Classification::Internal);
        s.recipient = Some(Recipient {
            code: "E1".into(),
            name: "LA E1".into(),
        });
        s.filters.push(("la_code".into(), "E2".into()));
        assert_eq!(errors(&s), [(SpecKey::Where(0), Code::OtherLa)]);
        s.filters = vec![("la_code".into(), "E1".into())];
        assert_eq!(errors(&s), []);
        let catalogue = catalogue();
        let layout = Layout::new(&s, &catalogue).expect("valid");
        let restrictions: Vec<_> = (layout.filters.iter())
            .map(|f| (f.dim.name, f.wanted, f.origin))
            .collect();
        assert_eq!(
            restrictions,
            [
                ("la_code", Wanted::Category(0), Origin::Where),
                ("la_code", Wanted::Category(0), Origin::Recipient)
            ]
        );

        let check = check_spec(&s, &Catalogue::default()).expect_err("no LAs");
        assert!(check.has(Code::OtherLa), "{check}");

        // Published tables may show LAs side by side.
        s.classification = Some(Classification::Published);
        s.filters = vec![("la_code".into(), "E2".into())];
        s.cols = Some("la_code".into());
        assert_eq!(errors(&s), []);
    }

    #[test]
    fn every_error_is_listed() {
        let mut s = TableSpec::new(Measure::JobOutcomes, "participant_id");
        s.cols = Some("period".into());
        s.filters.push(("job_start_date".into(), String::new()));
        let keys = errors(&s);
        assert_eq!(
            keys,
            [
                (SpecKey::View, Code::OutcomeVolume),
                (SpecKey::Rows, Code::NotADimension),
                (SpecKey::Periods, Code::PeriodRange),
                (SpecKey::Where(0), Code::OutcomeRate),
            ]
        );
    }
}
