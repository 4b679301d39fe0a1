//! Exact integer intervals of sums of non-negative integer unknowns under
//! interval constraints on subset sums: `lo ≤ Σ_{j∈S} x_j ≤ hi`, `x ≥ 0`,
//! `x` integer.
//!
//! # Where exactness comes from
//!
//! Every bound is the optimum of an integer linear programme (ILP), found
//! by branch and bound over linear relaxations solved by `microlp` (pure
//! Rust, floating point):
//!
//! - **Totally unimodular systems.** When the constraint sets split into
//!   two laminar families (any two sets of one family are disjoint or
//!   nested), the constraint matrix is totally unimodular (the union of two
//!   laminar families; Schrijver, *Combinatorial Optimization*, §41.3), so
//!   every vertex of the relaxation is integral (Hoffman–Kruskal) and the
//!   relaxation's optimum *is* the integer one: the root solve answers, no
//!   branching. One- and two-way tables of one period grain, monthly tables
//!   with quarterly ones of one cut, and known totals over them are of this
//!   kind. The split is found by 2-colouring the graph of crossing sets
//!   (sets that meet with neither inside the other), which is bipartite
//!   exactly when such a split exists.
//! - **Other systems** (three or more cuts of the same people, a known
//!   figure that crosses two cuts): branch and bound on a fractional unknown
//!   (`x ≤ ⌊v⌋` or `x ≥ ⌈v⌉`) until every open node's relaxation is no better
//!   than the best integer point found.
//!
//! Either way an optimum is only ever an integer point checked **in exact
//! integer arithmetic** against every constraint, so a reported bound is
//! always attained: a reported interval is never wider than the true one.
//! Floating point enters only where a node is pruned (its relaxation no
//! better than the incumbent, with a 10⁻⁶ margin): an error there could only
//! make an interval narrower than the truth, which errs towards flagging,
//! never towards a looser bound reported as exact. A problem that exceeds
//! [`NODE_LIMIT`] nodes, or that the LP solver cannot finish, is an error,
//! and the audit fails closed.

use microlp::{ComparisonOp, Error as LpError, OptimizationDirection, Problem};

/// The most branch-and-bound nodes one bound may take before the audit
/// gives up on it (and blocks).
pub(crate) const NODE_LIMIT: u64 = 20_000;

/// Tolerance for integrality and for pruning on floating-point optima.
const EPS: f64 = 1e-6;

/// One constraint: the sum of the unknowns in `cells` lies in `[lo, hi]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    /// Indices of unknowns, sorted, no repeats.
    pub cells: Vec<usize>,
    pub lo: u64,
    pub hi: u64,
}

/// Why a bound could not be found exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SolveError {
    #[error("branch and bound took more than {NODE_LIMIT} nodes")]
    TooHard,
    #[error("the LP solver failed: {0}")]
    Lp(String),
}

/// How the bounds of a system are exact (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Two laminar families: the relaxation is integral.
    Unimodular,
    /// Branch and bound.
    BranchAndBound,
}

/// Counts, for the benchmark and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Work {
    /// LP relaxations solved.
    pub lps: u64,
    /// Nodes that branched (0 in a unimodular system).
    pub branched: u64,
}

/// A system of `n` unknowns and its constraints, ready for bounds.
#[derive(Debug)]
pub(crate) struct System {
    n: usize,
    rows: Vec<Row>,
    /// The smallest `hi` of a row holding the unknown; `None` if no row
    /// does (the unknown is unbounded above).
    upper: Vec<Option<u64>>,
    method: Method,
    pub work: Work,
}

impl System {
    pub(crate) fn new(n: usize, rows: Vec<Row>) -> Self {
        let mut upper: Vec<Option<u64>> = vec![None; n];
        for row in &rows {
            for &j in &row.cells {
                upper[j] = Some(upper[j].map_or(row.hi, |u| u.min(row.hi)));
            }
        }
        let method = if two_laminar_families(&rows) {
            Method::Unimodular
        } else {
            Method::BranchAndBound
        };
        Self {
            n,
            rows,
            upper,
            method,
            work: Work::default(),
        }
    }

    pub(crate) fn method(&self) -> Method {
        self.method
    }

    /// Whether any non-negative integer point meets every constraint.
    pub(crate) fn feasible(&mut self) -> Result<bool, SolveError> {
        Ok(self.optimum(&[], true)?.is_some())
    }

    /// The exact interval of `Σ_{j∈objective} x_j` over the integer points
    /// of a feasible system; `hi` is `None` when it is unbounded.
    pub(crate) fn interval(
        &mut self,
        objective: &[usize],
    ) -> Result<(u64, Option<u64>), SolveError> {
        // A feasible system has an optimum both ways (`None` only for an
        // infeasible one, which callers rule out first).
        let lo = self.optimum(objective, false)?.unwrap_or(0);
        let hi = if objective.iter().any(|&j| self.upper[j].is_none()) {
            None
        } else {
            Some(self.optimum(objective, true)?.unwrap_or(0))
        };
        Ok((lo, hi))
    }

    /// The best value of the objective over the integer points, or `None`
    /// if there are none. Branch and bound, depth first.
    fn optimum(&mut self, objective: &[usize], maximise: bool) -> Result<Option<u64>, SolveError> {
        let root: Vec<(u64, Option<u64>)> = (0..self.n).map(|j| (0, self.upper[j])).collect();
        let mut open = vec![root];
        let mut best: Option<u64> = None;
        let mut nodes = 0u64;
        while let Some(bounds) = open.pop() {
            nodes += 1;
            if nodes > NODE_LIMIT {
                return Err(SolveError::TooHard);
            }
            let Some((values, value)) = self.relaxation(&bounds, objective, maximise)? else {
                continue;
            };
            if let Some(b) = best {
                let no_better = if maximise {
                    (value + EPS).floor() <= b as f64
                } else {
                    (value - EPS).ceil() >= b as f64
                };
                if no_better {
                    continue;
                }
            }
            let fractional = (0..self.n)
                .map(|j| (j, (values[j] - values[j].round()).abs()))
                .filter(|&(_, f)| f > EPS)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match fractional {
                None => {
                    let point: Vec<u64> =
                        values.iter().map(|v| v.round().max(0.0) as u64).collect();
                    if !self.holds(&point, &bounds) {
                        return Err(SolveError::Lp(
                            "an integral relaxation optimum breaks a constraint when checked \
                             exactly"
                                .into(),
                        ));
                    }
                    let v: u64 = objective.iter().map(|&j| point[j]).sum();
                    best = Some(match best {
                        Some(b) if maximise => b.max(v),
                        Some(b) => b.min(v),
                        None => v,
                    });
                }
                Some((j, _)) => {
                    self.work.branched += 1;
                    let v = values[j];
                    let mut down = bounds.clone();
                    down[j].1 = Some(v.floor() as u64);
                    let mut up = bounds;
                    up[j].0 = v.ceil() as u64;
                    // Depth first into the side the relaxation leans to.
                    if v - v.floor() >= 0.5 {
                        open.push(down);
                        open.push(up);
                    } else {
                        open.push(up);
                        open.push(down);
                    }
                }
            }
        }
        Ok(best)
    }

    /// The relaxation within `bounds`: its optimal point and value, or
    /// `None` if it is infeasible.
    fn relaxation(
        &mut self,
        bounds: &[(u64, Option<u64>)],
        objective: &[usize],
        maximise: bool,
    ) -> Result<Option<(Vec<f64>, f64)>, SolveError> {
        if bounds.iter().any(|&(lo, hi)| hi.is_some_and(|h| h < lo)) {
            return Ok(None);
        }
        self.work.lps += 1;
        let direction = if maximise {
            OptimizationDirection::Maximize
        } else {
            OptimizationDirection::Minimize
        };
        let mut lp = Problem::new(direction);
        let mut weight = vec![0.0; self.n];
        for &j in objective {
            weight[j] = 1.0;
        }
        let vars: Vec<_> = (0..self.n)
            .map(|j| {
                let (lo, hi) = bounds[j];
                lp.add_var(
                    weight[j],
                    (lo as f64, hi.map_or(f64::INFINITY, |h| h as f64)),
                )
            })
            .collect();
        for row in &self.rows {
            let expr: Vec<_> = row.cells.iter().map(|&j| (vars[j], 1.0)).collect();
            if row.lo == row.hi {
                lp.add_constraint(expr.as_slice(), ComparisonOp::Eq, row.lo as f64);
                continue;
            }
            if row.lo > 0 {
                lp.add_constraint(expr.as_slice(), ComparisonOp::Ge, row.lo as f64);
            }
            lp.add_constraint(expr.as_slice(), ComparisonOp::Le, row.hi as f64);
        }
        match lp.solve() {
            Ok(outcome) => {
                let solution = outcome
                    .into_solution()
                    .map_err(|_| SolveError::Lp("the LP solve was interrupted".into()))?;
                let values = vars.iter().map(|&v| solution.var_value(v)).collect();
                Ok(Some((values, solution.objective())))
            }
            Err(LpError::Infeasible) => Ok(None),
            Err(e) => Err(SolveError::Lp(e.to_string())),
        }
    }

    /// Whether an integer point meets every constraint and the node's
    /// bounds, in exact arithmetic.
    fn holds(&self, point: &[u64], bounds: &[(u64, Option<u64>)]) -> bool {
        let in_bounds =
            (point.iter().zip(bounds)).all(|(&x, &(lo, hi))| x >= lo && hi.is_none_or(|h| x <= h));
        in_bounds
            && self.rows.iter().all(|row| {
                let sum: u128 = row.cells.iter().map(|&j| u128::from(point[j])).sum();
                u128::from(row.lo) <= sum && sum <= u128::from(row.hi)
            })
    }
}

/// Whether the constraint sets split into two laminar families: whether
/// the graph joining every two sets that cross (meet, neither inside the
/// other) is bipartite.
pub(crate) fn two_laminar_families(rows: &[Row]) -> bool {
    let crosses = |a: &[usize], b: &[usize]| {
        let (mut i, mut j, mut common) = (0, 0, 0);
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    common += 1;
                    i += 1;
                    j += 1;
                }
            }
        }
        common > 0 && common < a.len() && common < b.len()
    };
    let n = rows.len();
    let mut colour: Vec<Option<bool>> = vec![None; n];
    for start in 0..n {
        if colour[start].is_some() {
            continue;
        }
        colour[start] = Some(false);
        let mut stack = vec![start];
        while let Some(u) = stack.pop() {
            let cu = colour[u].expect("coloured when pushed");
            for v in 0..n {
                if v == u || !crosses(&rows[u].cells, &rows[v].cells) {
                    continue;
                }
                match colour[v] {
                    Some(cv) if cv == cu => return false,
                    Some(_) => {}
                    None => {
                        colour[v] = Some(!cu);
                        stack.push(v);
                    }
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[usize], lo: u64, hi: u64) -> Row {
        Row {
            cells: cells.to_vec(),
            lo,
            hi,
        }
    }

    #[test]
    fn a_one_way_table_against_an_exact_total() {
        // R11's one-way example: cells sent as 0 and 20, total known 25.
        let mut s = System::new(
            2,
            vec![row(&[0], 0, 9), row(&[1], 10, 29), row(&[0, 1], 25, 25)],
        );
        assert_eq!(s.method(), Method::Unimodular);
        assert_eq!(s.interval(&[0]).expect("ok"), (0, Some(9)));
        assert_eq!(s.interval(&[1]).expect("ok"), (16, Some(25)));
        assert_eq!(s.work.branched, 0);
    }

    #[test]
    fn an_infeasible_system_is_seen() {
        let mut s = System::new(1, vec![row(&[0], 10, 29), row(&[0], 30, 49)]);
        assert!(!s.feasible().expect("ok"));
    }

    #[test]
    fn an_unconstrained_unknown_is_unbounded_above() {
        let mut s = System::new(2, vec![row(&[0], 10, 29)]);
        assert_eq!(s.interval(&[0, 1]).expect("ok"), (10, None));
    }

    /// Three cuts of one 2×2×2 population (by a, by b, by c), each
    /// one-way cell known to be exactly 1: two people, in opposite corners.
    /// The cuts cross pairwise in a triangle, so the system is not
    /// unimodular, and the relaxation has fractional optima (½ on each of
    /// the four even-parity cells) that branch and bound must cut off.
    #[test]
    fn three_crossing_cuts_need_branch_and_bound() {
        // Cell i is (a, b, c) = the bits of i.
        let by = |dim: usize, v: usize| -> Vec<usize> {
            (0..8).filter(|i| (i >> (2 - dim)) & 1 == v).collect()
        };
        let mut rows = Vec::new();
        for dim in 0..3 {
            for v in 0..2 {
                rows.push(row(&by(dim, v), 1, 1));
            }
        }
        let mut s = System::new(8, rows);
        assert_eq!(s.method(), Method::BranchAndBound);
        for j in 0..8 {
            assert_eq!(s.interval(&[j]).expect("ok"), (0, Some(1)), "cell {j}");
        }
        // Opposite corners differ in parity, so exactly one of the two
        // people is in an even cell: the relaxation says 0 to 2.
        let even = [0, 3, 5, 6];
        assert_eq!(s.interval(&even).expect("ok"), (1, Some(1)));
        assert!(s.work.branched > 0);
    }

    /// Every integer point of a system with each unknown at most `cap`,
    /// by depth-first search that prunes on partial sums.
    fn brute_force(n: usize, rows: &[Row], cap: u64, objectives: &[Vec<usize>]) -> Vec<(u64, u64)> {
        fn go(
            j: usize,
            x: &mut Vec<u64>,
            n: usize,
            rows: &[Row],
            cap: u64,
            visit: &mut dyn FnMut(&[u64]),
        ) {
            if j == n {
                if rows
                    .iter()
                    .all(|r| (r.lo..=r.hi).contains(&r.cells.iter().map(|&k| x[k]).sum()))
                {
                    visit(x);
                }
                return;
            }
            for v in 0..=cap {
                x[j] = v;
                let partial =
                    |r: &Row| -> u64 { r.cells.iter().filter(|&&k| k <= j).map(|&k| x[k]).sum() };
                if rows.iter().any(|r| partial(r) > r.hi) {
                    break;
                }
                if rows
                    .iter()
                    .any(|r| r.cells.last() == Some(&j) && partial(r) < r.lo)
                {
                    continue;
                }
                go(j + 1, x, n, rows, cap, visit);
            }
            x[j] = 0;
        }
        let mut bounds = vec![(u64::MAX, 0); objectives.len()];
        go(0, &mut vec![0; n], n, rows, cap, &mut |x: &[u64]| {
            for (b, o) in bounds.iter_mut().zip(objectives) {
                let v: u64 = o.iter().map(|&j| x[j]).sum();
                *b = (b.0.min(v), b.1.max(v));
            }
        });
        bounds
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

        /// Three one-way cuts (and perhaps the total) of a 2×2×2
        /// population, each margin known to within a random slack: a
        /// system that is not unimodular. Every bound equals brute force.
        #[test]
        fn branch_and_bound_equals_brute_force(
            truth in proptest::collection::vec(0u64..=3, 8),
            slack in proptest::collection::vec(0u64..=2, 7),
            objective in proptest::collection::vec(proptest::bool::ANY, 8),
        ) {
            let by = |dim: usize, v: usize| -> Vec<usize> {
                (0..8).filter(|i| (i >> (2 - dim)) & 1 == v).collect()
            };
            let mut sets: Vec<Vec<usize>> = (0..3).flat_map(|d| (0..2).map(move |v| (d, v))).map(|(d, v)| by(d, v)).collect();
            sets.push((0..8).collect());
            let rows: Vec<Row> = sets.iter().zip(&slack).map(|(cells, &s)| {
                let v: u64 = cells.iter().map(|&j| truth[j]).sum();
                row(cells, v.saturating_sub(s), v + s)
            }).collect();
            // Every unknown is in the total (the last row): at most its upper end.
            let cap = rows.last().map_or(0, |r| r.hi);
            let mut objectives: Vec<Vec<usize>> = (0..8).map(|j| vec![j]).collect();
            objectives.push((0..8).filter(|&j| objective[j]).collect());
            let expected = brute_force(8, &rows, cap, &objectives);
            let mut s = System::new(8, rows);
            proptest::prop_assert_eq!(s.method(), Method::BranchAndBound);
            let got: Vec<(u64, u64)> = objectives.iter().map(|o| {
                let (lo, hi) = s.interval(o).expect("solved");
                (lo, hi.expect("bounded"))
            }).collect();
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn crossing_sets_are_found() {
        // Two one-way tables of the same 2×2: a's rows and b's columns cross.
        let two = vec![
            row(&[0, 1], 0, 9),
            row(&[2, 3], 0, 9),
            row(&[0, 2], 0, 9),
            row(&[1, 3], 0, 9),
            row(&[0, 1, 2, 3], 0, 9),
        ];
        assert!(two_laminar_families(&two));
        let mut three = two;
        three.push(row(&[0, 3], 0, 9));
        assert!(!two_laminar_families(&three));
    }
}
