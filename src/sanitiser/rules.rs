//! The disclosure rules (SANITISER.md R2–R10, R12, R13) applied to a table
//! of true counts, giving a [`Sanitised`] table that holds only rounded
//! figures or whole percentages, its label and its findings.

use super::findings::{Blocked, Code, Finding, Severity};
use super::period::PeriodRange;
use super::rounding::{self, Rounded};
use super::spec::{About, Classification, Measure, Recipient, TableSpec, View};
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
    row_codes: Vec<String>,
    col_codes: Vec<String>,
    /// The `--where` filters the table was made with, as given.
    filters: Vec<(String, String)>,
    body: Body,
    /// In the shares view, the rounded counts each share was computed from
    /// (`rounded[r][c]`). Never rendered, never in the JSON of `mishare
    /// sanitise`: kept only for the release ledger (R11), which takes a
    /// shares table to reveal the rounded counts behind it (conservative:
    /// with a known base, shares give them back) and so must record them.
    /// Rounded figures only, like everything else here.
    shares_rounded: Option<Vec<Vec<Rounded>>>,
    findings: Vec<Finding>,
    periods: Option<PeriodRange>,
    about: About,
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
    /// The rows' category codes (`Y`, where the file shows `Disabled`), in
    /// the order of [`Self::rows`]. Periods and LA codes are their own codes.
    pub fn row_codes(&self) -> &[String] {
        &self.row_codes
    }
    /// The columns' category codes, in the order of [`Self::cols`] (`All`
    /// for a table with no column dimension).
    pub fn col_codes(&self) -> &[String] {
        &self.col_codes
    }
    /// The `--where` filters (dimension, value) the table was made with.
    /// An internal file for a recipient is restricted to that LA too (R16)
    /// whether or not a filter says so.
    pub fn filters(&self) -> &[(String, String)] {
        &self.filters
    }
    pub fn body(&self) -> &Body {
        &self.body
    }
    /// In the shares view, the rounded counts behind the shares
    /// (`[row][column]`); `None` in the counts view. For the release ledger
    /// only (R11): never rendered and never sent.
    pub fn shares_rounded(&self) -> Option<&[Vec<Rounded>]> {
        self.shares_rounded.as_deref()
    }
    /// The periods the table covers; `None` for every period in the input.
    pub fn periods(&self) -> Option<PeriodRange> {
        self.periods
    }
    /// Who made the file and when, as far as known.
    pub fn about(&self) -> &About {
        &self.about
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

/// Applies the rules to a table of true counts.
///
/// Blocks (`Err`) carry error codes and nothing else; a `Sanitised` carries
/// only rounded figures or shares. In strict mode warnings block too (R13).
/// The result depends only on the rounded cells and the spec (R12).
///
/// The table comes from a reader, which refused a forbidden request
/// ([`super::check_spec`]) before reading; the rule that needs no declared
/// dimensions (R7) is checked here again, so no path skips it.
pub fn sanitise(spec: &TableSpec, table: &CountTable) -> Result<Sanitised, Blocked> {
    if let Some(refused) = super::layout::outcome_volume(spec) {
        return Err(Blocked::one(refused.code, refused.message));
    }
    let overflow = || Blocked::one(Code::ValueTooLarge, "a figure overflows 64 bits");
    let rounded: Vec<Vec<Rounded>> = table
        .cells()
        .iter()
        .map(|row| row.iter().map(|&x| Rounded::round(x)).collect())
        .collect::<Option<_>>()
        .ok_or_else(overflow)?;

    let mut findings = Vec::new();
    let (body, shares_rounded) = match spec.view {
        View::Counts => (
            counts(table, rounded, &mut findings).ok_or_else(overflow)?,
            None,
        ),
        View::Shares => {
            let body = shares(spec, table, &rounded, &mut findings);
            (body, Some(rounded))
        }
    };
    small_cells(table, &mut findings);
    if table.cells().iter().flatten().all(|&x| x == 0) {
        findings.push(Finding::new(
            Code::NoData,
            "nobody was counted: every cell is a true zero; check the input, the filters \
             and the period range",
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
        row_codes: table.row_codes().to_vec(),
        col_codes: table.col_codes().to_vec(),
        filters: spec.filters.clone(),
        body,
        shares_rounded,
        findings,
        periods: spec.periods,
        about: spec.about.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sanitiser::render;
    use proptest::prelude::*;

    fn table(cells: Vec<Vec<u64>>) -> CountTable {
        let rows = (0..cells.len()).map(|r| format!("r{r}")).collect();
        let cols = (0..cells[0].len()).map(|c| format!("c{c}")).collect();
        CountTable::new(rows, cols, cells)
    }

    fn spec(view: View) -> TableSpec {
        let measure = match view {
            View::Counts => Measure::Referrals,
            View::Shares => Measure::JobOutcomes,
        };
        TableSpec {
            view,
            cols: Some("c".into()),
            classification: Some(Classification::Published),
            ..TableSpec::new(measure, "r")
        }
    }

    /// Tables of 1–5 rows by 1–4 columns; cells mostly small, sometimes large.
    fn tables() -> impl Strategy<Value = Vec<Vec<u64>>> {
        (1usize..=5, 1usize..=4).prop_flat_map(|(r, c)| {
            let cell = prop_oneof![3 => 0u64..200, 1 => 0u64..=crate::sanitiser::MAX_COUNT];
            prop::collection::vec(prop::collection::vec(cell, c), r)
        })
    }

    /// The same table with every cell moved to another value that rounds the same.
    fn same_rounding(cells: &[Vec<u64>], seed: u64) -> Vec<Vec<u64>> {
        let mut s = seed;
        cells
            .iter()
            .map(|row| {
                row.iter()
                    .map(|&x| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let r = Rounded::round(x).expect("in range").get();
                        let (lo, hi) = if r == 0 { (0, 9) } else { (r - 10, r + 9) };
                        lo + (s >> 33) % (hi - lo + 1)
                    })
                    .collect()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn totals_are_sums_of_rounded_cells(cells in tables()) {
            let out = sanitise(&spec(View::Counts), &table(cells.clone())).expect("valid");
            let Body::Counts { cells: rounded, row_totals, col_totals, total } = out.body() else {
                panic!("counts view");
            };
            for (r, row) in rounded.iter().enumerate() {
                for (c, x) in row.iter().enumerate() {
                    prop_assert_eq!(x.get() % 20, 0);
                    prop_assert!(x.get().abs_diff(cells[r][c]) <= 10);
                }
                prop_assert_eq!(row_totals[r].get(), row.iter().map(|x| x.get()).sum::<u64>());
            }
            for (c, t) in col_totals.iter().enumerate() {
                prop_assert_eq!(t.get(), rounded.iter().map(|row| row[c].get()).sum::<u64>());
            }
            prop_assert_eq!(total.get(), row_totals.iter().map(|x| x.get()).sum::<u64>());
            prop_assert_eq!(total.get(), col_totals.iter().map(|x| x.get()).sum::<u64>());
            prop_assert_eq!(total.get() % 20, 0);
        }

        #[test]
        fn shares_are_whole_percentages_or_suppressed(cells in tables()) {
            let s = spec(View::Shares);
            let out = sanitise(&s, &table(cells.clone())).expect("valid");
            let Body::Shares { cells: shares } = out.body() else { panic!("shares view") };
            for c in 0..cells[0].len() {
                let base: u64 = cells.iter().map(|row| Rounded::round(row[c]).expect("ok").get()).sum();
                let column: Vec<Option<u8>> = shares.iter().map(|row| row[c]).collect();
                if base < s.min_share_base {
                    prop_assert!(column.iter().all(Option::is_none));
                } else {
                    let sum: i64 = column.iter().map(|p| i64::from(p.expect("shown"))).sum();
                    prop_assert!(column.iter().all(|p| p.is_some_and(|p| p <= 100)));
                    prop_assert!((sum - 100).abs() <= cells.len() as i64);
                }
            }
        }

        #[test]
        fn output_depends_only_on_rounded_cells(cells in tables(), seed in any::<u64>()) {
            let other = same_rounding(&cells, seed);
            for view in [View::Counts, View::Shares] {
                let a = sanitise(&spec(view), &table(cells.clone())).expect("valid");
                let b = sanitise(&spec(view), &table(other.clone())).expect("valid");
                prop_assert_eq!(a.body(), b.body());
                prop_assert_eq!(render::csv(&a), render::csv(&b));
            }
        }

        #[test]
        fn the_same_input_gives_byte_identical_output(cells in tables()) {
            for view in [View::Counts, View::Shares] {
                let a = sanitise(&spec(view), &table(cells.clone())).expect("valid");
                let b = sanitise(&spec(view), &table(cells.clone())).expect("valid");
                prop_assert_eq!(render::csv(&a), render::csv(&b));
                prop_assert_eq!(render::json(&a), render::json(&b));
            }
        }

        #[test]
        fn every_number_in_the_las_file_is_a_multiple_of_20(cells in tables()) {
            let out = sanitise(&spec(View::Counts), &table(cells)).expect("valid");
            let csv = String::from_utf8(render::csv(&out)).expect("utf8");
            for line in csv.lines().filter(|l| !l.starts_with('#')).skip(1) {
                for field in line.split(',').skip(1) {
                    let n: u64 = field.parse().expect("a number");
                    prop_assert_eq!(n % 20, 0, "{}", line);
                }
            }
        }
    }

    #[test]
    fn strict_mode_turns_warnings_into_blocks() {
        let mut s = spec(View::Counts);
        s.strict = true;
        let blocked = sanitise(&s, &table(vec![vec![9], vec![9], vec![9]])).expect_err("strict");
        let codes: Vec<Code> = blocked.errors.iter().map(|e| e.code).collect();
        assert_eq!(codes, [Code::Distortion, Code::SmallCells]);
        assert!(
            blocked.to_string().starts_with("error[W_DISTORTION]: "),
            "{blocked}"
        );
        // Notes are not warnings: strict mode lets a table with only notes through.
        let mut shares = spec(View::Shares);
        shares.strict = true;
        let out =
            sanitise(&shares, &table(vec![vec![35], vec![41], vec![44]])).expect("notes only");
        assert!(out.has(Code::PctSum));
    }

    #[test]
    fn labels_name_the_recipient() {
        let mut s = spec(View::Counts);
        s.classification = Some(Classification::Internal);
        s.recipient = Some(Recipient {
            code: "E09000002".into(),
            name: "Barking and Dagenham".into(),
        });
        let out = sanitise(&s, &table(vec![vec![100]])).expect("ok");
        assert_eq!(
            out.label(),
            "Internal MI – for Barking and Dagenham (E09000002) only – not for publication"
        );
        s.classification = Some(Classification::Published);
        let out = sanitise(&s, &table(vec![vec![100]])).expect("ok");
        assert_eq!(out.label(), PUBLISHED_LABEL);
    }

    #[test]
    fn a_shares_table_keeps_the_rounded_counts_behind_it_and_never_shows_them() {
        let t = table(vec![vec![47], vec![133]])
            .with_codes(vec!["Y".into(), "N".into()], vec!["All".into()]);
        let out = sanitise(&spec(View::Shares), &t).expect("ok");
        assert_eq!(
            out.body(),
            &Body::Shares {
                cells: vec![vec![Some(22)], vec![Some(78)]]
            }
        );
        let behind: Vec<Vec<u64>> = (out.shares_rounded().expect("shares").iter())
            .map(|row| row.iter().map(|r| r.get()).collect())
            .collect();
        assert_eq!(behind, [vec![40], vec![140]]);
        assert_eq!(out.row_codes(), ["Y", "N"]);
        assert_eq!(out.rows(), ["r0", "r1"]);
        let json = render::json(&out);
        let csv = String::from_utf8(render::csv(&out)).expect("utf8");
        for text in [&json, &csv] {
            assert!(!text.contains("140") && !text.contains("40,"), "{text}");
        }
        let counts = sanitise(&spec(View::Counts), &t).expect("ok");
        assert!(counts.shares_rounded().is_none());
    }

    #[test]
    fn a_table_of_true_zeros_is_noted() {
        for view in [View::Counts, View::Shares] {
            let out = sanitise(&spec(view), &table(vec![vec![0, 0], vec![0, 0]])).expect("ok");
            assert!(out.has(Code::NoData), "{view:?}");
            let out = sanitise(&spec(view), &table(vec![vec![0, 0], vec![0, 1]])).expect("ok");
            assert!(!out.has(Code::NoData), "{view:?}");
        }
    }
}
