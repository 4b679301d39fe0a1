//! The disclosure rules (SANITISER.md R2–R10, R12, R13) applied to a table
//! of true counts, giving a [`Sanitised`] table that holds only rounded
//! figures or whole percentages, its label and its findings.

use super::findings::{Blocked, Code, Finding, Severity};
use super::rounding::{self, Rounded};
use super::spec::{Classification, MEASURE_COLUMN, Measure, Recipient, TableSpec, View};
use super::table::CountTable;

/// The method note every output carries (R10).
pub const METHOD: &str = "Rounded to nearest 20 (halves up); totals are sums of rounded figures; \
                          percentages are computed from rounded figures.";

/// The label of a published file (R10).
pub const PUBLISHED_LABEL: &str = "Published – public domain";

/// The label of an internal file for `recipient` (R10). With no recipient
/// named (a preview on the command line) the label says so rather than
/// inventing one. **(choice)**
pub fn internal_label(recipient: Option<&Recipient>) -> String {
    match recipient {
        Some(r) => format!(
            "Internal MI – for {} ({}) only – not for publication",
            r.name, r.code
        ),
        None => "Internal MI – for the recipient LA only – not for publication".to_string(),
    }
}

/// The figures of a sanitised table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Rounded volumes; every total is the sum of the rounded cells (R4).
    Counts {
        cells: Vec<Vec<Rounded>>,
        row_totals: Vec<Rounded>,
        col_totals: Vec<Rounded>,
        total: Rounded,
    },
    /// Whole column percentages of rounded cells; `None` where suppressed.
    /// No base, count or total travels with them (R8).
    Shares { cells: Vec<Vec<Option<u8>>> },
}

/// A table that may leave the provider: only rounded figures or shares, its
/// label and method note, and the findings for the provider's own eyes.
///
/// The only way to make one is [`sanitise`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanitised {
    measure: Measure,
    view: View,
    classification: Classification,
    recipient: Option<Recipient>,
    label: String,
    row_dimension: String,
    col_dimension: Option<String>,
    rows: Vec<String>,
    cols: Vec<String>,
    body: Body,
    findings: Vec<Finding>,
}

impl Sanitised {
    pub fn measure(&self) -> Measure {
        self.measure
    }
    pub fn view(&self) -> View {
        self.view
    }
    /// The classification the file carries (internal when none was given).
    pub fn classification(&self) -> Classification {
        self.classification
    }
    pub fn recipient(&self) -> Option<&Recipient> {
        self.recipient.as_ref()
    }
    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn method(&self) -> &'static str {
        METHOD
    }
    pub fn row_dimension(&self) -> &str {
        &self.row_dimension
    }
    pub fn col_dimension(&self) -> Option<&str> {
        self.col_dimension.as_deref()
    }
    pub fn rows(&self) -> &[String] {
        &self.rows
    }
    pub fn cols(&self) -> &[String] {
        &self.cols
    }
    pub fn body(&self) -> &Body {
        &self.body
    }
    /// Warnings, suppressions and notes. Never part of the file an LA gets.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }
    /// Whether a finding with this code was made.
    pub fn has(&self, code: Code) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
    /// Adds findings from a later check (the release ledger, R11), which
    /// judges a sanitised table against what the recipient already has.
    pub fn add_findings(&mut self, findings: impl IntoIterator<Item = Finding>) {
        self.findings.extend(findings);
    }
}

/// The rules that depend on the request alone (R7, R9). Run them before
/// reading any input: a forbidden table is refused whatever the data says.
pub fn check_spec(spec: &TableSpec) -> Result<(), Blocked> {
    if spec.measure.is_outcome() && spec.view == View::Counts {
        return Err(Blocked::one(
            Code::OutcomeVolume,
            format!(
                "{} may not be shared as volumes; use --view shares for a percentage \
                 breakdown (by payment group or a characteristic such as disability)",
                spec.measure
            ),
        ));
    }
    // A table holds one measure. A counts file may carry several in a
    // `measure` column; rows of other measures are left out when it is read.
    let measure_dimension = spec.dimensions().any(|d| d == MEASURE_COLUMN);
    let other_measure = spec
        .filters
        .iter()
        .find(|(d, v)| d == MEASURE_COLUMN && v != spec.measure.as_str())
        .map(|(_, v)| v.as_str());
    if measure_dimension || other_measure.is_some() {
        let outcomes = spec.measure.is_outcome()
            || other_measure.is_some_and(|v| v.parse().is_ok_and(Measure::is_outcome));
        let why = "a table holds one measure, the one --measure names";
        return Err(if outcomes {
            Blocked::one(
                Code::OutcomeRate,
                format!(
                    "{why}: setting outcomes or sustainments beside another measure gives \
                     a rate, and with shared referral volumes the outcome volume back"
                ),
            )
        } else {
            Blocked::one(
                Code::UnknownDimension,
                format!(
                    "{why}: `{MEASURE_COLUMN}` cannot be a dimension, and \
                     --where {MEASURE_COLUMN}=… can only repeat --measure"
                ),
            )
        });
    }
    Ok(())
}

/// Applies the rules to a table of true counts.
///
/// Blocks (`Err`) carry error codes and nothing else; a `Sanitised` carries
/// only rounded figures or shares. In strict mode warnings block too (R13).
/// The result depends only on the rounded cells and the spec (R12).
pub fn sanitise(spec: &TableSpec, table: &CountTable) -> Result<Sanitised, Blocked> {
    check_spec(spec)?;
    let overflow = || Blocked::one(Code::ValueTooLarge, "a figure overflows 64 bits");
    let rounded: Vec<Vec<Rounded>> = table
        .cells()
        .iter()
        .map(|row| row.iter().map(|&x| Rounded::round(x)).collect())
        .collect::<Option<_>>()
        .ok_or_else(overflow)?;

    let mut findings = Vec::new();
    let body = match spec.view {
        View::Counts => counts(table, rounded, &mut findings).ok_or_else(overflow)?,
        View::Shares => shares(spec, table, &rounded, &mut findings),
    };
    small_cells(table, &mut findings);
    if table.rows().is_empty() || table.cols().is_empty() {
        findings.push(Finding::new(
            Code::NoData,
            "no input rows matched, so the table is empty",
        ));
    }

    let classification = spec.classification.unwrap_or_else(|| {
        findings.push(Finding::new(
            Code::Unclassified,
            "no classification given, so the file is labelled internal MI; say \
             --classification internal or --classification published",
        ));
        Classification::Internal
    });
    let label = match classification {
        Classification::Published => PUBLISHED_LABEL.to_string(),
        Classification::Internal => internal_label(spec.recipient.as_ref()),
    };

    if spec.strict {
        let warnings: Vec<Finding> = findings
            .iter()
            .filter(|f| f.code.severity() == Severity::Warning)
            .map(|f| {
                Finding::new(
                    f.code,
                    format!("{} (--strict makes this an error)", f.message),
                )
            })
            .collect();
        if !warnings.is_empty() {
            return Err(Blocked {
                errors: warnings,
                more: 0,
            });
        }
    }

    Ok(Sanitised {
        measure: spec.measure,
        view: spec.view,
        classification,
        recipient: spec.recipient.clone(),
        label,
        row_dimension: spec.rows.clone(),
        col_dimension: spec.cols.clone(),
        rows: table.rows().to_vec(),
        cols: table.cols().to_vec(),
        body,
        findings,
    })
}

/// R4 and R5: totals from rounded cells, and a warning where rounding moved
/// a total a long way. `None` on overflow.
fn counts(
    table: &CountTable,
    cells: Vec<Vec<Rounded>>,
    findings: &mut Vec<Finding>,
) -> Option<Body> {
    let ncols = table.cols().len();
    let row_totals: Vec<Rounded> = cells
        .iter()
        .map(|row| rounding::sum(row.iter().copied()))
        .collect::<Option<_>>()?;
    let col_totals: Vec<Rounded> = (0..ncols)
        .map(|c| rounding::sum(cells.iter().map(|row| row[c])))
        .collect::<Option<_>>()?;
    let total = rounding::sum(row_totals.iter().copied())?;

    let true_row = |r: usize| {
        table.cells()[r]
            .iter()
            .map(|&x| u128::from(x))
            .sum::<u128>()
    };
    let true_col = |c: usize| {
        table
            .cells()
            .iter()
            .map(|row| u128::from(row[c]))
            .sum::<u128>()
    };
    // With one row or one column, row or column totals repeat the cells or
    // the grand total; only distinct figures are judged.
    let interior_totals = table.rows().len() > 1 && ncols > 1;
    if interior_totals {
        for (r, name) in table.rows().iter().enumerate() {
            distortion(
                format!("the total of row {name:?}"),
                row_totals[r],
                true_row(r),
                findings,
            );
        }
        for (c, name) in table.cols().iter().enumerate() {
            distortion(
                format!("the total of column {name:?}"),
                col_totals[c],
                true_col(c),
                findings,
            );
        }
    }
    let true_total = (0..table.rows().len()).map(true_row).sum();
    distortion("the grand total".to_string(), total, true_total, findings);

    Some(Body::Counts {
        cells,
        row_totals,
        col_totals,
        total,
    })
}

/// R5: `W_DISTORTION` when |D| ≥ 20 and |D| ≥ 10% of the true total.
fn distortion(what: String, rounded: Rounded, truth: u128, findings: &mut Vec<Finding>) {
    let rounded = u128::from(rounded.get());
    let d = rounded.abs_diff(truth);
    if d >= 20 && d * 10 >= truth {
        let sign = if rounded >= truth { '+' } else { '-' };
        let pct = (d * 100)
            .checked_div(truth)
            .map_or_else(|| "of a true zero".to_string(), |p| format!("{p}%"));
        findings.push(Finding::new(
            Code::Distortion,
            format!(
                "{what} is {rounded} after rounding ({sign}{d}, {pct}); the total misleads \
                 because its cells are small — consider a coarser breakdown"
            ),
        ));
    }
}

/// R6: `W_SMALL_CELLS` when at least one interior cell is small (1–9) and
/// small cells are at least half of the non-zero interior cells.
fn small_cells(table: &CountTable, findings: &mut Vec<Finding>) {
    let cells = table.cells().iter().flatten();
    let nonzero = cells.clone().filter(|&&x| x > 0).count();
    let small = cells.filter(|&&x| (1..=9).contains(&x)).count();
    if small > 0 && small * 2 >= nonzero {
        findings.push(Finding::new(
            Code::SmallCells,
            format!(
                "{small} of {nonzero} non-zero cells are small (1–9) and round to 0 or 20, so \
                 the breakdown is too detailed to be useful; consider a coarser one (for \
                 example JSA / ESA / other instead of nine payment groups)"
            ),
        ));
    }
}

/// R8: column percentages of rounded cells, suppressed where the column's
/// rounded base is small.
fn shares(
    spec: &TableSpec,
    table: &CountTable,
    rounded: &[Vec<Rounded>],
    findings: &mut Vec<Finding>,
) -> Body {
    let nrows = table.rows().len();
    let mut cells = vec![vec![None; table.cols().len()]; nrows];
    for (c, name) in table.cols().iter().enumerate() {
        let base: u128 = rounded.iter().map(|row| u128::from(row[c].get())).sum();
        if base == 0 || base < u128::from(spec.min_share_base) {
            findings.push(Finding::new(
                Code::SmallBase,
                format!(
                    "column {name:?}: shares suppressed because the rounded base is {base} \
                     (below {})",
                    spec.min_share_base
                ),
            ));
            continue;
        }
        let mut sum = 0u128;
        for (r, row) in rounded.iter().enumerate() {
            let p = (200 * u128::from(row[c].get()) + base) / (2 * base);
            sum += p;
            cells[r][c] = Some(u8::try_from(p).expect("a share of a column is at most 100"));
        }
        if sum != 100 {
            findings.push(Finding::new(
                Code::PctSum,
                format!(
                    "column {name:?}: shares sum to {sum}, not 100, because each is rounded \
                     on its own"
                ),
            ));
        }
    }
    Body::Shares { cells }
}
