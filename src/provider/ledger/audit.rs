//! The audit (R11): for every released figure and every finest cell, the
//! exact interval of true values consistent with everything an LA has
//! received and knows, and the findings that decide whether the next
//! release may go.
//!
//! The unknowns, constraints and revisions are those of [`super::model`];
//! the intervals are exact integer ones ([`super::solve`]). The problem
//! falls apart into connected components (cells joined by a constraint:
//! typically one measure and one quarter's months of one LA), each solved
//! on its own. Given the next release, only the components it touches are
//! solved: the rest of the ledger cannot have changed, since the candidate
//! adds constraints only to its own cells. Nor is the rest modelled: only
//! the releases and known figures the candidate can reach through shared
//! months are turned into cells and constraints (`reach`), with the
//! classes of the whole ledger, so the answer is the same.
//!
//! # What is flagged (choice)
//!
//! An interval is flagged only when what is being audited made it so: the
//! candidate, against the ledger and known figures without it (with
//! `next`); the whole history, against the known figures alone (without).
//! A released total whose people an LA already knows exactly is pinned, but
//! the release told it nothing: flagging it would block every file forever.
//! A finest cell is judged as such: a cell that lumps several finest cells
//! (the categories no figure singles out) tells nothing about any one of
//! them unless its upper bound does, so its finest cells' interval is
//! `[0, hi]`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::reference::PERIOD;
use crate::sanitiser::{Catalogue, Code, Finding, Measure, Period, PeriodGrain, Severity};

use super::known::Known;
use super::model::{
    CellKey, Classes, Components, Figure, FigureKind, Region, Revisions, Scope, figures_of,
    known_region, released_bounds,
};
use super::release::ReleaseTable;
use super::solve::{Method, Row, System};

/// A release in the ledger: the id the storage gave it, and what was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub id: i64,
    pub table: ReleaseTable,
}

/// What the audit flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPolicy {
    /// An interval this wide or narrower (`hi − lo`) is `W_NARROWED`.
    pub min_interval_width: u64,
    /// Warnings block too (R13).
    pub strict: bool,
}

impl From<crate::config::provider::DisclosurePolicy> for AuditPolicy {
    fn from(d: crate::config::provider::DisclosurePolicy) -> Self {
        Self {
            min_interval_width: d.min_interval_width,
            strict: d.strict,
        }
    }
}

impl Default for AuditPolicy {
    fn default() -> Self {
        Self {
            min_interval_width: 4,
            strict: false,
        }
    }
}

/// A released figure and the interval of true values it may have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FigureInterval {
    /// The release it was sent in; `None` for the candidate.
    pub release: Option<i64>,
    pub measure: Measure,
    /// Cell, row total, column total or total.
    pub kind: FigureKind,
    /// The period or range it covers, as its table shows it.
    pub period: String,
    /// Every dimension the figure fixes, and its category code.
    pub categories: BTreeMap<String, String>,
    /// The rounded value sent (for a shares table, the rounded count behind
    /// the share or the column's rounded base).
    pub sent: u64,
    pub lo: u64,
    pub hi: u64,
}

/// A cell of the model and the interval of its true count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CellInterval {
    pub measure: Measure,
    /// A month, `YYYY-MM`.
    pub period: String,
    /// 0 for the data as first sent; n after the month's n-th revision.
    pub revision: u32,
    /// Every dimension where the cell is one category, and its code.
    pub categories: BTreeMap<String, String>,
    /// Dimensions where the cell lumps every category no figure singles
    /// out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rest: Vec<String>,
    /// How many finest cells it holds (1: it is one). A finest cell inside
    /// a cell of several lies in `[0, hi]`.
    pub finest: u64,
    /// The interval of the cell's (summed) true count.
    pub lo: u64,
    pub hi: u64,
}

impl CellInterval {
    /// The interval of any one finest cell inside it.
    pub fn finest_interval(&self) -> (u64, u64) {
        finest_interval(self.finest, (self.lo, self.hi))
    }
}

/// How much work an audit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AuditStats {
    /// Connected components of what was modelled: the whole ledger
    /// without a candidate; with one, what it can reach through shared
    /// months.
    pub components: usize,
    /// Components solved (all without `next`; those it touches with it).
    pub solved: usize,
    /// Solved components that are totally unimodular (exact at the root).
    pub unimodular: usize,
    /// Solved components that needed branch and bound.
    pub branch_and_bound: usize,
    /// LP relaxations solved, baselines included.
    pub lp_solves: u64,
    /// Branch-and-bound nodes that branched.
    pub branched: u64,
}

/// The audit's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Every released figure of the components solved, in release order.
    pub figures: Vec<FigureInterval>,
    /// Every cell of the components solved, in (measure, month, revision,
    /// categories) order.
    pub cells: Vec<CellInterval>,
    /// For the provider's operator and the audit log; never for an LA.
    pub findings: Vec<Finding>,
    pub stats: AuditStats,
    /// Whether warnings block (the policy's `strict`).
    #[serde(skip)]
    pub strict: bool,
}

impl Audit {
    /// The findings that stop the candidate: errors, and in strict mode
    /// warnings too.
    pub fn blocking(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| match f.code.severity() {
            Severity::Error => true,
            Severity::Warning => self.strict,
            _ => false,
        })
    }

    /// Whether anything stops the candidate.
    pub fn blocks(&self) -> bool {
        self.blocking().next().is_some()
    }

    /// Whether a finding with this code was made.
    pub fn has(&self, code: Code) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
}

/// A constraint and where it comes from.
#[derive(Debug)]
struct Constraint {
    cells: Vec<usize>,
    lo: u64,
    hi: u64,
    scope: Scope,
    origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    Release(Option<i64>),
    Known(i64),
}

/// Audits the ledger of one LA: its releases (`history`, any order: taken
/// in id order), the figures it knows, and the release about to be sent
/// (`next`, if any). See the module's documentation for what is flagged.
///
/// Pure and deterministic: the same arguments give the same `Audit`.
pub fn audit(
    catalogue: &Catalogue,
    history: &[Released],
    known: &[Known],
    next: Option<&ReleaseTable>,
    policy: &AuditPolicy,
) -> Audit {
    audit_model(catalogue, history, known, next, policy, false)
}

/// [`audit()`] modelling the whole ledger even with a candidate, as it did
/// before [`reach`] left out what the candidate cannot reach: the same
/// answer but for [`AuditStats::components`], slower. For the tests that
/// show it is the same answer.
#[doc(hidden)]
pub fn audit_whole_ledger(
    catalogue: &Catalogue,
    history: &[Released],
    known: &[Known],
    next: Option<&ReleaseTable>,
    policy: &AuditPolicy,
) -> Audit {
    audit_model(catalogue, history, known, next, policy, true)
}

/// Which releases (in id order) and known figures the candidate can reach
/// through shared cells: those with a (measure, month) the candidate
/// covers, and, transitively, those sharing one with any release or known
/// figure already reached. A constraint's cells are all of its measure and
/// months, so a cell of the candidate's components is of a (measure, month)
/// reached, and whatever is not reached constrains none of them: it is in
/// components the audit with a candidate neither solves nor reports.
/// Leaving it out changes no interval and no finding, since the classes of
/// the cells are still those of the whole ledger and what is reached keeps
/// its order (so the same systems are solved). A release with a figure of
/// no months (none is made) is always reached, and so is what it reaches.
///
/// Each release's and known figure's (measure, month) pairs are found once
/// and joined in a union-find with a node that stands for the candidate:
/// what ends up with the candidate's root is reached.
fn reach(next: &[Figure], history: &[Vec<Figure>], known: &[Region]) -> (Vec<bool>, Vec<bool>) {
    /// The candidate's node; a (measure, month) is node 1 on.
    const CANDIDATE: usize = 0;
    /// The nodes of some regions: their (measure, month) pairs, and the
    /// candidate for a region of no months.
    fn nodes_of<'r>(
        index: &mut HashMap<(Measure, Period), usize>,
        regions: impl IntoIterator<Item = &'r Region>,
    ) -> Vec<usize> {
        let mut nodes = Vec::new();
        for r in regions {
            if r.months.is_empty() {
                nodes.push(CANDIDATE);
            }
            for &m in &r.months {
                let new = index.len() + 1;
                nodes.push(*index.entry((r.measure, m)).or_insert(new));
            }
        }
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }
    let mut index = HashMap::new();
    let mut next_nodes = nodes_of(&mut index, next.iter().map(|f| &f.region));
    next_nodes.push(CANDIDATE);
    let history_nodes: Vec<Vec<usize>> = (history.iter())
        .map(|figures| nodes_of(&mut index, figures.iter().map(|f| &f.region)))
        .collect();
    let known_nodes: Vec<Vec<usize>> = (known.iter())
        .map(|region| nodes_of(&mut index, [region]))
        .collect();
    let mut uf = Components::new(index.len() + 1);
    uf.join(&next_nodes);
    for nodes in history_nodes.iter().chain(&known_nodes) {
        uf.join(nodes);
    }
    let candidate = uf.find(CANDIDATE);
    // An item's nodes are joined: any one of them tells.
    let mut reached = |nodes: &Vec<usize>| nodes.first().is_some_and(|&n| uf.find(n) == candidate);
    (
        history_nodes.iter().map(&mut reached).collect(),
        known_nodes.iter().map(&mut reached).collect(),
    )
}

fn audit_model(
    catalogue: &Catalogue,
    history: &[Released],
    known: &[Known],
    next: Option<&ReleaseTable>,
    policy: &AuditPolicy,
    whole: bool,
) -> Audit {
    let mut findings = Vec::new();
    let mut releases: Vec<&Released> = history.iter().collect();
    releases.sort_by_key(|r| r.id);
    releases.retain(|r| match r.table.check() {
        Ok(()) => true,
        Err(e) => {
            findings.push(Finding::new(
                Code::LedgerInvalid,
                format!(
                    "release {}: {e}; the audit left it out, so it cannot vouch for what the LA \
                     holds — repair the ledger record",
                    r.id
                ),
            ));
            false
        }
    });
    let known: Vec<&Known> = (known.iter())
        .filter(|k| match k.check(catalogue) {
            Ok(()) => true,
            Err(e) => {
                findings.push(Finding::new(
                    Code::LedgerInvalid,
                    format!(
                        "known figure {}: {e}; the audit left it out — correct or remove it",
                        k.id
                    ),
                ));
                false
            }
        })
        .collect();
    let stats = AuditStats::default();
    if let Some(next) = next
        && let Err(e) = next.check()
    {
        findings.push(Finding::new(
            Code::LedgerInvalid,
            format!("the release to audit cannot be read: {e}"),
        ));
        return Audit {
            figures: Vec::new(),
            cells: Vec::new(),
            findings,
            stats,
            strict: policy.strict,
        };
    }

    // Every release's figures and every known figure's region: the
    // classes of the cells are those of the whole ledger.
    let history_figures: Vec<Vec<Figure>> = (releases.iter())
        .map(|r| figures_of(&r.table, Some(r.id)))
        .collect();
    let next_figures: Option<Vec<Figure>> = next.map(|next| figures_of(next, None));
    let known_regions: Vec<Region> = known.iter().map(|k| known_region(k)).collect();
    let classes = Classes::new(
        catalogue,
        (history_figures.iter().flatten())
            .chain(next_figures.iter().flatten())
            .map(|f| &f.region)
            .chain(&known_regions),
    );
    // With a candidate, only what it can reach is modelled (see `reach`).
    let (history_in, known_in) = match (&next_figures, whole) {
        (Some(n), false) => reach(n, &history_figures, &known_regions),
        _ => (
            vec![true; history_figures.len()],
            vec![true; known_regions.len()],
        ),
    };

    // Figures, in release order, with their months' revisions.
    let mut revisions = Revisions::new();
    let mut figures: Vec<Figure> = Vec::new();
    for (mut f, _) in history_figures
        .into_iter()
        .zip(&history_in)
        .filter(|(_, i)| **i)
    {
        revisions.take(&mut f);
        figures.extend(f);
    }
    let history_revisions = revisions.found.len();
    if let Some(mut f) = next_figures {
        revisions.take(&mut f);
        figures.extend(f);
    }
    let knowns: Vec<(Region, Vec<u32>, &Known)> = (known.iter().zip(known_regions))
        .zip(&known_in)
        .filter(|(_, i)| **i)
        .map(|((k, region), _)| {
            let revs = revisions.revisions_of(&region);
            (region, revs, *k)
        })
        .collect();
    let revision_findings = &revisions.found[if next.is_some() { history_revisions } else { 0 }..];
    for r in revision_findings {
        findings.push(Finding::new(
            Code::Revision,
            format!(
                "{} sends {} as {}; {} sent it as {}: late records changed it, so from {} on \
                 the audit takes the counts of {} as new unknowns",
                who(r.after.0),
                describe(r.region.measure, &r.period, &r.region.restrict),
                r.after.1,
                who(r.before.0),
                r.before.1,
                who(r.after.0),
                months_text(&r.region.months),
            ),
        ));
    }
    if let Some(next) = next {
        overlap(&releases, next, &mut findings);
    }

    // Cells and constraints.
    let mut keys: Vec<CellKey> = Vec::new();
    let mut index: HashMap<CellKey, usize> = HashMap::new();
    let mut cells_of = |region: &Region, revs: &[u32]| -> Vec<usize> {
        let mut ids: Vec<usize> = (classes.cells_of(region, revs).into_iter())
            .map(|key| {
                *index.entry(key.clone()).or_insert_with(|| {
                    keys.push(key);
                    keys.len() - 1
                })
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let mut constraints: Vec<Constraint> = Vec::new();
    let figure_cells: Vec<Vec<usize>> = (figures.iter())
        .map(|f| {
            let cells = cells_of(&f.region, &f.revisions);
            if f.counted {
                let (lo, hi) = released_bounds(f.sent);
                constraints.push(Constraint {
                    cells: cells.clone(),
                    lo,
                    hi,
                    scope: if f.release.is_some() {
                        Scope::History
                    } else {
                        Scope::Candidate
                    },
                    origin: Origin::Release(f.release),
                });
            }
            cells
        })
        .collect();
    for (region, revs, k) in &knowns {
        let (lo, hi) = k.value.bounds();
        constraints.push(Constraint {
            cells: cells_of(region, revs),
            lo,
            hi,
            scope: Scope::Known,
            origin: Origin::Known(k.id),
        });
    }
    let n = keys.len();

    // Components.
    let mut uf = Components::new(n);
    for c in &constraints {
        uf.join(&c.cells);
    }
    let root: Vec<usize> = (0..n).map(|j| uf.find(j)).collect();
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (j, &r) in root.iter().enumerate() {
        members.entry(r).or_default().push(j);
    }
    let mut by_component: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, c) in constraints.iter().enumerate() {
        if let Some(&first) = c.cells.first() {
            by_component.entry(root[first]).or_default().push(i);
        }
    }
    let to_solve: BTreeSet<usize> = if next.is_some() {
        (figures.iter().zip(&figure_cells))
            .filter(|(f, _)| f.release.is_none())
            .flat_map(|(_, cells)| cells.iter().map(|&j| root[j]))
            .collect()
    } else {
        members.keys().copied().collect()
    };
    let mut stats = AuditStats {
        components: members.len(),
        ..stats
    };

    // Solve each component: the interval of every cell and every figure's
    // part in it.
    let everything = |_: Scope| true;
    let mut solved: HashMap<usize, Solved> = HashMap::new();
    for &comp in &to_solve {
        let cells = &members[&comp];
        let rows = by_component.get(&comp).map_or(&[][..], Vec::as_slice);
        let mut part = Solved::new(cells, rows, &constraints, &everything);
        match part.system.method() {
            Method::Unimodular => stats.unimodular += 1,
            Method::BranchAndBound => stats.branch_and_bound += 1,
        }
        stats.solved += 1;
        match part.system.feasible() {
            Ok(true) => {}
            Ok(false) => {
                findings.push(inconsistent(&constraints, rows, &keys, None));
                part.failed = true;
            }
            Err(e) => {
                findings.push(inconsistent(&constraints, rows, &keys, Some(e.to_string())));
                part.failed = true;
            }
        }
        solved.insert(comp, part);
    }

    // The interval of a set of cells over the solved components, or `None`
    // if a component it needs was not solved or failed.
    let mut failures: Vec<String> = Vec::new();
    let mut interval_of =
        |solved: &mut HashMap<usize, Solved>, cells: &[usize]| -> Option<(u64, Option<u64>)> {
            let mut parts: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for &j in cells {
                parts.entry(root[j]).or_default().push(j);
            }
            let (mut lo, mut hi) = (0u64, Some(0u64));
            for (comp, part) in parts {
                let s = solved.get_mut(&comp)?;
                if s.failed {
                    return None;
                }
                match s.interval(&part) {
                    Ok((l, h)) => {
                        lo = lo.saturating_add(l);
                        hi = hi.zip(h).map(|(a, b)| a.saturating_add(b));
                    }
                    Err(e) => {
                        s.failed = true;
                        failures.push(e);
                        return None;
                    }
                }
            }
            Some((lo, hi))
        };

    let mut out_figures = Vec::new();
    let mut figure_of_out = Vec::new();
    for (i, f) in figures.iter().enumerate() {
        if let Some((lo, hi)) = interval_of(&mut solved, &figure_cells[i]) {
            out_figures.push(FigureInterval {
                release: f.release,
                measure: f.region.measure,
                kind: f.kind,
                period: f.period.clone(),
                categories: f.region.restrict.clone(),
                sent: f.sent,
                lo,
                hi: hi.unwrap_or(u64::MAX),
            });
            figure_of_out.push(i);
        }
    }
    let mut out_cells = Vec::new();
    let mut cell_of_out = Vec::new();
    let mut order: Vec<usize> = (0..n).filter(|j| solved.contains_key(&root[*j])).collect();
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    for j in order {
        if let Some((lo, hi)) = interval_of(&mut solved, &[j]) {
            let (finest, categories, rest) = classes.describe(&keys[j]);
            out_cells.push(CellInterval {
                measure: keys[j].measure,
                period: keys[j].month.to_string(),
                revision: keys[j].revision,
                categories,
                rest,
                finest,
                lo,
                hi: hi.unwrap_or(u64::MAX),
            });
            cell_of_out.push(j);
        }
    }

    // Findings on narrow intervals that what is audited made narrow.
    let baseline_scope = |s: Scope| {
        matches!(
            (next.is_some(), s),
            (_, Scope::Known) | (true, Scope::History)
        )
    };
    let mut baselines: HashMap<usize, Solved> = HashMap::new();
    let mut baseline_of = |cells: &[usize]| -> Option<(u64, Option<u64>)> {
        let mut parts: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &j in cells {
            parts.entry(root[j]).or_default().push(j);
        }
        let (mut lo, mut hi) = (0u64, Some(0u64));
        for (comp, part) in parts {
            let s = baselines.entry(comp).or_insert_with(|| {
                let rows = by_component.get(&comp).map_or(&[][..], Vec::as_slice);
                Solved::new(&members[&comp], rows, &constraints, &baseline_scope)
            });
            let (l, h) = s.interval(&part).ok()?;
            lo = lo.saturating_add(l);
            hi = hi.zip(h).map(|(a, b)| a.saturating_add(b));
        }
        Some((lo, hi))
    };
    let w = policy.min_interval_width;
    let mut flagged_sets: BTreeSet<Vec<usize>> = BTreeSet::new();
    for (fi, &i) in out_figures.iter().zip(&figure_of_out) {
        if fi.hi - fi.lo > w {
            continue;
        }
        let base = baseline_of(&figure_cells[i]);
        if base == Some((fi.lo, Some(fi.hi))) {
            continue;
        }
        flagged_sets.insert(figure_cells[i].clone());
        let what = format!(
            "the {} {} of {} (sent as {})",
            fi.kind.as_str(),
            describe(fi.measure, &fi.period, &fi.categories),
            who(fi.release),
            fi.sent
        );
        findings.push(narrow_finding(what, (fi.lo, fi.hi), base, w));
    }
    for (ci, &j) in out_cells.iter().zip(&cell_of_out) {
        let (lo, hi) = ci.finest_interval();
        if hi - lo > w || flagged_sets.contains(&vec![j]) {
            continue;
        }
        let base = baseline_of(&[j]).map(|(l, h)| match h {
            Some(h) => {
                let (l, h) = finest_interval(ci.finest, (l, h));
                (l, Some(h))
            }
            None => (0, None),
        });
        if base == Some((lo, Some(hi))) {
            continue;
        }
        let mut what = format!(
            "the finest cell {}",
            describe(ci.measure, &ci.period, &ci.categories)
        );
        if ci.revision > 0 {
            what += &format!(" (revision {})", ci.revision);
        }
        if ci.finest > 1 {
            what += &format!(
                " (each of the {} finest cells of the other categories of {})",
                ci.finest,
                ci.rest.join(", ")
            );
        }
        findings.push(narrow_finding(what, (lo, hi), base, w));
    }
    for e in failures {
        findings.push(Finding::new(
            Code::LedgerInconsistent,
            format!(
                "the audit could not bound a figure exactly ({e}), so it cannot vouch for this \
                 part of the ledger; send a coarser table"
            ),
        ));
    }
    for s in solved.values().chain(baselines.values()) {
        stats.lp_solves += s.system.work.lps;
        stats.branched += s.system.work.branched;
    }
    Audit {
        figures: out_figures,
        cells: out_cells,
        findings,
        stats,
        strict: policy.strict,
    }
}

/// An interval whose upper end may be unbounded (`None`).
type Bounds = (u64, Option<u64>);

/// A table's cut: the dimensions laid out, the grain, the restrictions.
type Cut = (BTreeSet<String>, PeriodGrain, Vec<(String, String)>);

/// One component's system and its answers so far.
#[derive(Debug)]
struct Solved {
    /// Global cell index → local unknown.
    local: HashMap<usize, usize>,
    system: System,
    cache: HashMap<Vec<usize>, Result<Bounds, String>>,
    failed: bool,
}

impl Solved {
    /// The system of one component: its cells, and the constraints in
    /// `rows` whose scope is wanted. Constraints on the same cells are
    /// merged into one (their intervals intersected).
    fn new(
        cells: &[usize],
        rows: &[usize],
        constraints: &[Constraint],
        wanted: &dyn Fn(Scope) -> bool,
    ) -> Self {
        let local: HashMap<usize, usize> = cells.iter().enumerate().map(|(i, &j)| (j, i)).collect();
        let mut merged: BTreeMap<Vec<usize>, (u64, u64)> = BTreeMap::new();
        for &i in rows {
            let c = &constraints[i];
            if !wanted(c.scope) {
                continue;
            }
            let mut set: Vec<usize> = c.cells.iter().map(|j| local[j]).collect();
            set.sort_unstable();
            let entry = merged.entry(set).or_insert((0, u64::MAX));
            entry.0 = entry.0.max(c.lo);
            entry.1 = entry.1.min(c.hi);
        }
        let rows = merged
            .into_iter()
            .map(|(cells, (lo, hi))| Row { cells, lo, hi })
            .collect();
        Self {
            local,
            system: System::new(cells.len(), rows),
            cache: HashMap::new(),
            failed: false,
        }
    }

    fn interval(&mut self, cells: &[usize]) -> Result<(u64, Option<u64>), String> {
        let mut set: Vec<usize> = cells.iter().map(|j| self.local[j]).collect();
        set.sort_unstable();
        if let Some(r) = self.cache.get(&set) {
            return r.clone();
        }
        let r = self.system.interval(&set).map_err(|e| e.to_string());
        self.cache.insert(set, r.clone());
        r
    }
}

/// A finest cell's interval inside a cell of `finest` of them.
fn finest_interval(finest: u64, (lo, hi): (u64, u64)) -> (u64, u64) {
    if finest > 1 { (0, hi) } else { (lo, hi) }
}

/// `E_UNPICKABLE` or `W_NARROWED` for an interval, saying what it was
/// before.
fn narrow_finding(
    what: String,
    (lo, hi): (u64, u64),
    before: Option<(u64, Option<u64>)>,
    w: u64,
) -> Finding {
    let before = match before {
        Some((l, Some(h))) => format!("{l} to {h}"),
        Some((l, None)) => format!("at least {l}"),
        None => "unknown".to_string(),
    };
    if lo == hi {
        Finding::new(
            Code::Unpickable,
            format!(
                "{what} can only be {lo} given everything the LA has received and knows \
                 (before: {before}); the LA could work out its true value — do not send this \
                 file; send a coarser table or fewer cuts of the same people"
            ),
        )
    } else {
        Finding::new(
            Code::Narrowed,
            format!(
                "{what} lies between {lo} and {hi} given everything the LA has received and \
                 knows (before: {before}; a width of {w} or less is narrow)"
            ),
        )
    }
}

/// `E_LEDGER_INCONSISTENT` for a component no true counts fit.
fn inconsistent(
    constraints: &[Constraint],
    rows: &[usize],
    keys: &[CellKey],
    why: Option<String>,
) -> Finding {
    let origins: BTreeSet<Origin> = rows.iter().map(|&i| constraints[i].origin).collect();
    let releases: Vec<String> = (origins.iter())
        .filter_map(|o| match o {
            Origin::Release(Some(id)) => Some(id.to_string()),
            _ => None,
        })
        .collect();
    let knowns: Vec<String> = (origins.iter())
        .filter_map(|o| match o {
            Origin::Known(id) => Some(id.to_string()),
            _ => None,
        })
        .collect();
    let candidate = origins.contains(&Origin::Release(None));
    let months: BTreeSet<Period> = (rows.iter())
        .flat_map(|&i| constraints[i].cells.iter().map(|&j| keys[j].month))
        .collect();
    let measure = rows
        .first()
        .and_then(|&i| constraints[i].cells.first())
        .map_or("", |&j| keys[j].measure.as_str());
    let reason = match why {
        Some(e) => format!("the audit could not solve it ({e})"),
        None => "no true counts fit them all: a known figure is wrong, or late records \
                 changed these months without any figure being sent again"
            .to_string(),
    };
    Finding::new(
        Code::LedgerInconsistent,
        format!(
            "{measure} {}: releases [{}]{}, known figures [{}]: {reason}; the audit cannot \
             vouch for these figures — check the known figures",
            months_text(&months.into_iter().collect::<Vec<_>>()),
            releases.join(", "),
            if candidate { " and this release" } else { "" },
            knowns.join(", "),
        ),
    )
}

/// `W_OVERLAP`: earlier releases of the same measure whose people the
/// candidate counts too, cut another way.
fn overlap(releases: &[&Released], next: &ReleaseTable, findings: &mut Vec<Finding>) {
    let (population, cut) = population_and_cut(next);
    let earlier: Vec<String> = (releases.iter())
        .filter(|r| r.table.measure == next.measure)
        .filter(|r| {
            let (p, c) = population_and_cut(&r.table);
            c != cut && meets(&p, &population)
        })
        .map(|r| r.id.to_string())
        .collect();
    if earlier.is_empty() {
        return;
    }
    let shown = if earlier.len() > 12 {
        format!(
            "{} and {} more",
            earlier[..12].join(", "),
            earlier.len() - 12
        )
    } else {
        earlier.join(", ")
    };
    findings.push(Finding::new(
        Code::Overlap,
        format!(
            "this release ({} by {}, {}) counts people that release{} {shown} also counted, cut \
             another way: the audit has set them side by side",
            next.measure,
            std::iter::once(next.rows.dimension.as_str())
                .chain(next.cols.as_ref().map(|c| c.dimension.as_str()))
                .collect::<Vec<_>>()
                .join(" × "),
            describe(next.measure, &next.range.to_string(), &population.restrict),
            if earlier.len() == 1 { "" } else { "s" },
        ),
    ));
}

/// A table's people (its months and restrictions) and its cut (the
/// dimensions laid out, the period grain, the restrictions).
fn population_and_cut(table: &ReleaseTable) -> (Region, Cut) {
    let mut months: Vec<Period> = match table.fixed.iter().find(|(d, _)| d == PERIOD) {
        Some((_, p)) => p.parse().map(ReleaseTable::months_of).unwrap_or_default(),
        None => table
            .range
            .periods()
            .flat_map(ReleaseTable::months_of)
            .collect(),
    };
    months.sort();
    let region = Region {
        measure: table.measure,
        months,
        restrict: (table.fixed.iter())
            .filter(|(d, _)| d != PERIOD)
            .cloned()
            .collect(),
    };
    let dims: BTreeSet<String> = std::iter::once(table.rows.dimension.clone())
        .chain(table.cols.as_ref().map(|c| c.dimension.clone()))
        .collect();
    (region, (dims, table.range.grain(), table.fixed.clone()))
}

/// Whether two regions share a finest cell.
fn meets(a: &Region, b: &Region) -> bool {
    a.measure == b.measure
        && a.months.iter().any(|m| b.months.binary_search(m).is_ok())
        && (a.restrict.iter()).all(|(d, c)| b.restrict.get(d).is_none_or(|other| other == c))
}

/// "release 7" or "this release".
fn who(release: Option<i64>) -> String {
    match release {
        Some(id) => format!("release {id}"),
        None => "this release".to_string(),
    }
}

/// "referrals 2012-09 (disability=Y, la_code=E09000002)".
fn describe(measure: Measure, period: &str, categories: &BTreeMap<String, String>) -> String {
    if categories.is_empty() {
        return format!("{measure} {period}");
    }
    let cats: Vec<String> = categories.iter().map(|(d, c)| format!("{d}={c}")).collect();
    format!("{measure} {period} ({})", cats.join(", "))
}

/// "2012-07, 2012-08".
fn months_text(months: &[Period]) -> String {
    months
        .iter()
        .map(Period::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
