//! From releases and known figures to unknowns and constraints.
//!
//! The unknowns are the true counts of cells: measure × month (and its
//! revision, below) × a class of every declared dimension some figure of the
//! measure names. A dimension's classes are the categories some figure
//! singles out, one each, and "the rest" (the declared categories no figure
//! singles out) as one: the rest is only ever summed over, so splitting it
//! would add unknowns that nothing tells apart. A cell is therefore a
//! finest cell (measure × month × one category of every dimension any
//! figure touches) unless it lumps the rest of some dimension; it says how
//! many finest cells it holds.
//!
//! Each figure counts a region: a measure, a set of months, and a category
//! for some dimensions (its restrictions, its row and column); every other
//! dimension is summed over. A released cell r says `max(0, r−10) ≤ Σ ≤
//! r+9` over the cells of its region (R3). A released **total** adds no
//! constraint: it is the sum of the table's rounded cells (R4), not a
//! rounded true total, so its bounds follow from the cells' — treating it
//! as R(true total) would be false (T4: 1420 sent for 1398). Totals still
//! get intervals, like every released figure.
//!
//! # Revisions (choice)
//!
//! Releases are taken in id order. When a release sends a figure already
//! sent (the same measure and region) with another rounded value, late
//! records have changed the data: from that release on, every month the
//! figure covers gets a new revision, whose cells are new unknowns.
//! Earlier releases constrain the earlier revision's cells, later ones the
//! new. Known figures constrain the latest revision. A figure sent again
//! unchanged adds nothing (the same constraint twice).
//!
//! Worked case (T20): a cell sent as 20 (true 29), then after one late
//! record as 40 (true 30). Held as one unknown, [10, 29] and [30, 49] do
//! not meet, and no true count would fit the ledger. Held as two, the first
//! revision lies in [10, 29] and the second in [30, 49]. What the ledger
//! does not model is how the revisions relate: an LA that knew exactly one
//! record came late (x₂ = x₁ + 1) could pin both (29 and 30). Such
//! knowledge cannot be registered as a known figure; `W_REVISION` names
//! every revision so the operator can judge it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::reference::{LA_CODE, PERIOD};
use crate::sanitiser::{Catalogue, Measure, Period};

use super::known::Known;
use super::release::{Figures, ReleaseTable};

/// What a figure is in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FigureKind {
    /// An interior cell (in the shares view, the rounded count behind a share).
    Cell,
    /// A row total (the sum of the row's rounded cells).
    RowTotal,
    /// A column total (in the shares view, a column's rounded base).
    ColTotal,
    /// The grand total.
    Total,
}

impl FigureKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FigureKind::Cell => "cell",
            FigureKind::RowTotal => "row total",
            FigureKind::ColTotal => "column total",
            FigureKind::Total => "total",
        }
    }
}

/// Which people a figure counts, whatever the revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Region {
    pub measure: Measure,
    /// Sorted months.
    pub months: Vec<Period>,
    /// Dimension → category code, for the dimensions it names.
    pub restrict: BTreeMap<String, String>,
}

/// Where a constraint comes from, for the baselines the audit compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Scope {
    Known,
    History,
    Candidate,
}

/// A released figure, with the revision of each of its months.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    /// `None`: the candidate.
    pub release: Option<i64>,
    pub kind: FigureKind,
    pub region: Region,
    /// The period or range it covers, as the table shows it.
    pub period: String,
    pub sent: u64,
    /// The revision of each month of the region.
    pub revisions: Vec<u32>,
    /// Whether it constrains (a cell), or only gets an interval (a total).
    pub counted: bool,
}

/// A revision found: a figure sent again with another value.
#[derive(Debug, Clone)]
pub(crate) struct Revision {
    pub region: Region,
    pub period: String,
    pub before: (Option<i64>, u64),
    pub after: (Option<i64>, u64),
}

/// A category of an axis: the restriction it adds, or the period it is.
type Part = (Option<(String, String)>, Option<Period>);

/// The figures of one table, in table order: cells first, then row
/// totals, column totals and the total, each region once. A cell whose
/// restrictions contradict (rows by payment group with a filter on one)
/// counts nobody, a zero everyone knows: it is left out.
pub(crate) fn figures_of(table: &ReleaseTable, release: Option<i64>) -> Vec<Figure> {
    let restricted_period = table
        .fixed
        .iter()
        .find(|(d, _)| d == PERIOD)
        .and_then(|(_, p)| p.parse::<Period>().ok());
    let table_periods: Vec<Period> = match restricted_period {
        Some(p) => vec![p],
        None => table.range.periods().collect(),
    };
    let base: BTreeMap<String, String> = (table.fixed.iter())
        .filter(|(d, _)| d != PERIOD)
        .cloned()
        .collect();
    // A category of an axis: its restriction and its periods.
    let part = |dimension: &str, code: &str| -> Part {
        if dimension == PERIOD {
            (None, code.parse().ok())
        } else {
            (Some((dimension.to_string(), code.to_string())), None)
        }
    };
    let region = |parts: &[Part]| -> Option<(Region, String)> {
        let mut restrict = base.clone();
        let mut periods = table_periods.clone();
        let mut label = match restricted_period {
            Some(p) => p.to_string(),
            None => table.range.to_string(),
        };
        for (r, p) in parts {
            if let Some((d, c)) = r {
                match restrict.get(d) {
                    Some(existing) if existing != c => return None,
                    _ => {
                        restrict.insert(d.clone(), c.clone());
                    }
                }
            }
            if let Some(p) = p {
                if !periods.contains(p) {
                    return None;
                }
                periods = vec![*p];
                label = p.to_string();
            }
        }
        let mut months: Vec<Period> = periods
            .into_iter()
            .flat_map(ReleaseTable::months_of)
            .collect();
        months.sort();
        Some((
            Region {
                measure: table.measure,
                months,
                restrict,
            },
            label,
        ))
    };
    let rows: Vec<_> = (table.rows.codes.iter())
        .map(|c| part(&table.rows.dimension, c))
        .collect();
    let cols: Vec<_> = match &table.cols {
        Some(axis) => axis
            .codes
            .iter()
            .map(|c| part(&axis.dimension, c))
            .collect(),
        None => vec![(None, None)],
    };
    let mut out: Vec<Figure> = Vec::new();
    let mut push = |kind: FigureKind, parts: &[_], sent: u64, counted: bool| {
        if let Some((region, period)) = region(parts)
            && !out.iter().any(|f| f.region == region)
        {
            let revisions = vec![0; region.months.len()];
            out.push(Figure {
                release,
                kind,
                region,
                period,
                sent,
                revisions,
                counted,
            });
        }
    };
    let (cells, row_totals, col_totals, total) = match &table.figures {
        Figures::Counts {
            cells,
            row_totals,
            col_totals,
            total,
        } => (cells, Some(row_totals), col_totals.clone(), Some(*total)),
        Figures::Shares { rounded, .. } => {
            let bases = (0..cols.len())
                .map(|c| rounded.iter().map(|row| row[c]).sum())
                .collect();
            (rounded, None, bases, None)
        }
    };
    for (r, row) in rows.iter().enumerate() {
        for (c, col) in cols.iter().enumerate() {
            push(
                FigureKind::Cell,
                &[row.clone(), col.clone()],
                cells[r][c],
                true,
            );
        }
    }
    if let Some(row_totals) = row_totals {
        for (r, row) in rows.iter().enumerate() {
            push(
                FigureKind::RowTotal,
                std::slice::from_ref(row),
                row_totals[r],
                false,
            );
        }
    }
    for (c, col) in cols.iter().enumerate() {
        push(
            FigureKind::ColTotal,
            std::slice::from_ref(col),
            col_totals[c],
            false,
        );
    }
    if let Some(total) = total {
        push(FigureKind::Total, &[], total, false);
    }
    out
}

/// The bounds a released cell puts on the true count (R3).
pub(crate) fn released_bounds(r: u64) -> (u64, u64) {
    (r.saturating_sub(10), r.saturating_add(9))
}

/// Applies revisions in release order: every table's figures with the
/// revision of each month, and the revisions found.
pub(crate) struct Revisions {
    current: HashMap<(Measure, Period), u32>,
    last: HashMap<Region, (Option<i64>, u64)>,
    pub found: Vec<Revision>,
}

impl Revisions {
    pub(crate) fn new() -> Self {
        Self {
            current: HashMap::new(),
            last: HashMap::new(),
            found: Vec::new(),
        }
    }

    /// Takes the next release's figures: finds revisions among its cells,
    /// opens new revisions of the months they cover, and stamps every
    /// figure with its months' revisions.
    pub(crate) fn take(&mut self, figures: &mut [Figure]) {
        let mut revised: BTreeSet<(Measure, Period)> = BTreeSet::new();
        for f in figures.iter().filter(|f| f.counted) {
            if let Some(&(release, sent)) = self.last.get(&f.region)
                && sent != f.sent
            {
                self.found.push(Revision {
                    region: f.region.clone(),
                    period: f.period.clone(),
                    before: (release, sent),
                    after: (f.release, f.sent),
                });
                for &m in &f.region.months {
                    revised.insert((f.region.measure, m));
                }
            }
        }
        for key in revised {
            *self.current.entry(key).or_insert(0) += 1;
        }
        for f in figures.iter_mut() {
            f.revisions = self.revisions_of(&f.region);
            if f.counted {
                self.last.insert(f.region.clone(), (f.release, f.sent));
            }
        }
    }

    /// The current revision of each month of a region.
    pub(crate) fn revisions_of(&self, region: &Region) -> Vec<u32> {
        (region.months.iter())
            .map(|&m| self.current.get(&(region.measure, m)).copied().unwrap_or(0))
            .collect()
    }
}

/// One unknown: a cell of the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CellKey {
    pub measure: Measure,
    pub month: Period,
    pub revision: u32,
    /// A class index for each of the measure's dimensions, in the order of
    /// [`Classes::dims`].
    pub classes: Vec<usize>,
}

/// The classes of each dimension some figure names, per measure.
#[derive(Debug, Default)]
pub(crate) struct Classes {
    /// Per measure: (dimension, its singled-out codes (sorted), whether the
    /// rest exists, how many categories the rest lumps).
    per_measure: BTreeMap<Measure, Vec<DimClasses>>,
}

#[derive(Debug)]
pub(crate) struct DimClasses {
    pub dimension: String,
    pub codes: Vec<String>,
    /// How many declared categories no figure singles out (a class of its
    /// own when more than 0).
    pub rest: u64,
}

impl DimClasses {
    fn all(&self) -> impl Iterator<Item = usize> + '_ {
        0..self.codes.len() + usize::from(self.rest > 0)
    }
}

impl Classes {
    /// The classes of every dimension the regions name, by measure.
    pub(crate) fn new<'r>(
        catalogue: &Catalogue,
        regions: impl Iterator<Item = &'r Region>,
    ) -> Self {
        let mut named: BTreeMap<Measure, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for r in regions {
            let dims = named.entry(r.measure).or_default();
            for (d, c) in &r.restrict {
                dims.entry(d.clone()).or_default().insert(c.clone());
            }
        }
        let per_measure = named
            .into_iter()
            .map(|(m, dims)| {
                let classes = dims
                    .into_iter()
                    .map(|(dimension, codes)| {
                        let declared: Option<Vec<&str>> = if dimension == LA_CODE {
                            Some(
                                catalogue
                                    .las()
                                    .in_file_order()
                                    .map(|l| l.code.as_str())
                                    .collect(),
                            )
                        } else {
                            (catalogue.dimensions().get(&dimension))
                                .map(|d| d.categories().iter().map(|c| c.code.as_str()).collect())
                        };
                        // An undeclared dimension (the reference data changed
                        // since the release) may have other categories: its
                        // rest is taken as one category, which flags more.
                        let rest = match declared {
                            Some(all) => all.iter().filter(|c| !codes.contains(**c)).count() as u64,
                            None => 1,
                        };
                        DimClasses {
                            dimension,
                            codes: codes.into_iter().collect(),
                            rest,
                        }
                    })
                    .collect();
                (m, classes)
            })
            .collect();
        Self { per_measure }
    }

    pub(crate) fn dims(&self, measure: Measure) -> &[DimClasses] {
        self.per_measure.get(&measure).map_or(&[], Vec::as_slice)
    }

    /// Every cell of a region at the given revisions.
    pub(crate) fn cells_of(&self, region: &Region, revisions: &[u32]) -> Vec<CellKey> {
        let dims = self.dims(region.measure);
        let choices: Vec<Vec<usize>> = dims
            .iter()
            .map(|d| match region.restrict.get(&d.dimension) {
                Some(code) => vec![
                    d.codes
                        .binary_search(code)
                        .expect("every named code has a class"),
                ],
                None => d.all().collect(),
            })
            .collect();
        let mut out = Vec::new();
        for (&month, &revision) in region.months.iter().zip(revisions) {
            let mut index = vec![0usize; choices.len()];
            'product: loop {
                out.push(CellKey {
                    measure: region.measure,
                    month,
                    revision,
                    classes: index.iter().zip(&choices).map(|(&i, c)| c[i]).collect(),
                });
                for k in (0..index.len()).rev() {
                    index[k] += 1;
                    if index[k] < choices[k].len() {
                        continue 'product;
                    }
                    index[k] = 0;
                }
                break;
            }
        }
        out
    }

    /// How many finest cells a cell holds, and its categories (dimension →
    /// code) for the dimensions where it is one category; the others lump
    /// the rest.
    pub(crate) fn describe(&self, key: &CellKey) -> (u64, BTreeMap<String, String>, Vec<String>) {
        let mut finest = 1u64;
        let mut categories = BTreeMap::new();
        let mut rest = Vec::new();
        for (d, &class) in self.dims(key.measure).iter().zip(&key.classes) {
            match d.codes.get(class) {
                Some(code) => {
                    categories.insert(d.dimension.clone(), code.clone());
                }
                None => {
                    finest = finest.saturating_mul(d.rest);
                    rest.push(d.dimension.clone());
                }
            }
        }
        (finest, categories, rest)
    }
}

/// The constraint of a known figure.
pub(crate) fn known_region(known: &Known) -> Region {
    Region {
        measure: known.measure,
        months: known.period.months(),
        restrict: known.fixed.iter().cloned().collect(),
    }
}

/// Union-find over cell indices.
#[derive(Debug)]
pub(crate) struct Components {
    parent: Vec<usize>,
}

impl Components {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    pub(crate) fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    pub(crate) fn join(&mut self, cells: &[usize]) {
        if let Some((&first, rest)) = cells.split_first() {
            let root = self.find(first);
            for &c in rest {
                let r = self.find(c);
                if r != root {
                    self.parent[r] = root;
                }
            }
        }
    }
}
