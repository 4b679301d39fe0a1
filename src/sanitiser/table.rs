//! The table model: true counts by row and column, and the tally that builds
//! one from input rows.
//!
//! A [`CountTable`] holds unrounded figures. It is not `Serialize` and nothing
//! renders it: the only way out is through [`super::sanitise`].

use rustc_hash::FxHashMap;

use super::findings::{Blocked, Code};
use super::spec::{ALL_COLUMN, PAYMENT_GROUP, TableSpec};
use crate::reference::PaymentGroups;

/// True counts laid out by the row and column dimensions, in output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountTable {
    rows: Vec<String>,
    cols: Vec<String>,
    /// `cells[r][c]`.
    cells: Vec<Vec<u64>>,
}

impl CountTable {
    /// A table from labels in output order and a cell per (row, column).
    ///
    /// # Panics
    /// If `cells` is not `rows.len()` by `cols.len()`: that is a bug in the
    /// caller, not bad input.
    pub fn new(rows: Vec<String>, cols: Vec<String>, cells: Vec<Vec<u64>>) -> Self {
        assert_eq!(cells.len(), rows.len(), "one cell row per row label");
        assert!(
            cells.iter().all(|r| r.len() == cols.len()),
            "one cell per column label"
        );
        Self { rows, cols, cells }
    }

    /// A one-column table (the column is named `All`).
    pub fn column(rows: Vec<String>, cells: Vec<u64>) -> Self {
        let cells = cells.into_iter().map(|c| vec![c]).collect();
        Self::new(rows, vec![ALL_COLUMN.to_string()], cells)
    }

    pub fn rows(&self) -> &[String] {
        &self.rows
    }

    pub fn cols(&self) -> &[String] {
        &self.cols
    }

    pub(crate) fn cells(&self) -> &[Vec<u64>] {
        &self.cells
    }
}

/// Distinct values of one dimension, each with a dense id and the line it
/// was first seen on (for error messages).
#[derive(Debug, Default)]
pub(crate) struct Interner {
    ids: FxHashMap<Box<[u8]>, u32>,
    values: Vec<(Box<[u8]>, u64)>,
}

impl Interner {
    /// The id of `value`, adding it if new.
    #[inline]
    pub(crate) fn intern(&mut self, value: &[u8], line: u64) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = u32::try_from(self.values.len()).expect("fewer than 2^32 distinct values");
        self.ids.insert(value.into(), id);
        self.values.push((value.into(), line));
        id
    }

    /// Like [`Interner::intern`], but keeps the earliest line, so merging
    /// parallel workers' tallies gives the same messages in any order.
    fn intern_earliest(&mut self, value: &[u8], line: u64) -> u32 {
        let id = self.intern(value, line);
        let first = &mut self.values[id as usize].1;
        *first = (*first).min(line);
        id
    }

    fn len(&self) -> usize {
        self.values.len()
    }
}

/// Counts accumulated by (row value, column value), before ordering.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    rows: Interner,
    cols: Interner,
    /// `cells[row id][col id]`, grown on demand.
    cells: Vec<Vec<u64>>,
    /// The earliest line at which a cell's sum overflowed.
    overflow: Option<u64>,
}

impl Tally {
    /// Adds `count` to the cell at (`row`, `col`). Values must be UTF-8; the
    /// readers check that before calling.
    #[inline]
    pub(crate) fn add(&mut self, row: &[u8], col: &[u8], count: u64, line: u64) {
        let r = self.rows.intern(row, line);
        let c = self.cols.intern(col, line);
        self.add_at(r, c, count, line);
    }

    #[inline]
    fn add_at(&mut self, r: u32, c: u32, count: u64, line: u64) {
        let (r, c) = (r as usize, c as usize);
        if r >= self.cells.len() {
            self.cells.resize_with(r + 1, Vec::new);
        }
        let cells = &mut self.cells[r];
        if c >= cells.len() {
            cells.resize(c + 1, 0);
        }
        match cells[c].checked_add(count) {
            Some(sum) => cells[c] = sum,
            None => self.overflow = Some(self.overflow.map_or(line, |l| l.min(line))),
        }
    }

    /// Adds another tally (from a parallel worker) into this one.
    pub(crate) fn merge(&mut self, other: Tally) {
        let rows: Vec<u32> = (other.rows.values.iter())
            .map(|(v, line)| self.rows.intern_earliest(v, *line))
            .collect();
        let cols: Vec<u32> = (other.cols.values.iter())
            .map(|(v, line)| self.cols.intern_earliest(v, *line))
            .collect();
        if let Some(line) = other.overflow {
            self.overflow = Some(self.overflow.map_or(line, |l| l.min(line)));
        }
        for (r, row) in other.cells.iter().enumerate() {
            for (c, &count) in row.iter().enumerate() {
                if count > 0 {
                    self.add_at(rows[r], cols[c], count, u64::MAX);
                }
            }
        }
    }

    /// Orders the labels (payment groups by reference order, everything else
    /// by bytes, which is time order for periods) and lays out the table.
    /// `source` names the input in error messages.
    pub(crate) fn into_table(
        self,
        spec: &TableSpec,
        groups: &PaymentGroups,
        source: &str,
    ) -> Result<CountTable, Blocked> {
        if let Some(line) = self.overflow {
            let place = if line == u64::MAX {
                source.to_string()
            } else {
                format!("{source} line {line}")
            };
            return Err(Blocked::one(
                Code::ValueTooLarge,
                format!("{place}: a cell's sum overflows 64 bits"),
            ));
        }
        let row_order = order(&self.rows, &spec.rows, groups, source)?;
        let col_order = match &spec.cols {
            Some(dim) => order(&self.cols, dim, groups, source)?,
            None => (0..self.cols.len()).collect(),
        };
        let label = |i: &Interner, id: usize| {
            String::from_utf8(i.values[id].0.to_vec()).expect("readers pass UTF-8 only")
        };
        let rows = row_order.iter().map(|&r| label(&self.rows, r)).collect();
        let cols = if spec.cols.is_some() {
            col_order.iter().map(|&c| label(&self.cols, c)).collect()
        } else {
            vec![ALL_COLUMN.to_string()]
        };
        let cells = row_order
            .iter()
            .map(|&r| {
                let row = self.cells.get(r).map(Vec::as_slice).unwrap_or_default();
                if spec.cols.is_some() {
                    col_order
                        .iter()
                        .map(|&c| row.get(c).copied().unwrap_or(0))
                        .collect()
                } else {
                    vec![row.iter().sum::<u64>()]
                }
            })
            .collect();
        Ok(CountTable::new(rows, cols, cells))
    }
}

/// The ids of `values` in output order for dimension `dim`.
fn order(
    values: &Interner,
    dim: &str,
    groups: &PaymentGroups,
    source: &str,
) -> Result<Vec<usize>, Blocked> {
    let mut ids: Vec<usize> = (0..values.len()).collect();
    if dim == PAYMENT_GROUP {
        let mut unknown: Vec<&(Box<[u8]>, u64)> = values
            .values
            .iter()
            .filter(|(v, _)| groups.position(&String::from_utf8_lossy(v)).is_none())
            .collect();
        if !unknown.is_empty() {
            unknown.sort_by_key(|(_, line)| *line);
            let errors = unknown
                .iter()
                .take(Blocked::MAX_LISTED)
                .map(|(v, line)| {
                    super::findings::Finding::new(
                        Code::UnknownPaymentGroup,
                        format!(
                            "{source} line {line}, column {PAYMENT_GROUP}: {:?} is not a payment \
                             group in the reference data; correct the input or pass \
                             --payment-groups FILE",
                            String::from_utf8_lossy(v)
                        ),
                    )
                })
                .collect();
            return Err(Blocked {
                errors,
                more: unknown.len().saturating_sub(Blocked::MAX_LISTED) as u64,
            });
        }
        ids.sort_by_key(|&id| groups.position(&String::from_utf8_lossy(&values.values[id].0)));
    } else {
        ids.sort_by(|&a, &b| values.values[a].0.cmp(&values.values[b].0));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sanitiser::Measure;

    #[test]
    fn payment_groups_follow_reference_order_and_others_byte_order() {
        let mut spec = TableSpec::new(Measure::Referrals, PAYMENT_GROUP);
        spec.cols = Some("period".into());
        let mut t = Tally::default();
        t.add(b"ESA Ex-IB", b"2012-Q2", 1, 2);
        t.add(b"JSA 18-24", b"2012-Q1", 2, 3);
        t.add(b"JSA 25+", b"2012-Q2", 3, 4);
        t.add(b"JSA 25+", b"2012-Q2", 4, 5);
        let table = t
            .into_table(&spec, &PaymentGroups::default(), "in.csv")
            .expect("known groups");
        assert_eq!(table.rows(), ["JSA 18-24", "JSA 25+", "ESA Ex-IB"]);
        assert_eq!(table.cols(), ["2012-Q1", "2012-Q2"]);
        assert_eq!(table.cells(), [vec![2, 0], vec![0, 7], vec![0, 1]]);
    }

    #[test]
    fn unknown_payment_group_names_its_first_line() {
        let spec = TableSpec::new(Measure::Referrals, PAYMENT_GROUP);
        let mut t = Tally::default();
        t.add(b"JSA 25+", b"", 1, 2);
        t.add(b"Martians", b"", 1, 9);
        t.add(b"Martians", b"", 1, 12);
        let err = t
            .into_table(&spec, &PaymentGroups::default(), "in.csv")
            .expect_err("unknown group");
        assert!(err.has(Code::UnknownPaymentGroup));
        assert!(err.to_string().contains("in.csv line 9"), "{err}");
    }

    #[test]
    fn merge_adds_cells_and_keeps_labels() {
        let spec = TableSpec {
            cols: Some("x".into()),
            ..TableSpec::new(Measure::Referrals, "d")
        };
        let mut a = Tally::default();
        a.add(b"a", b"1", 5, 2);
        let mut b = Tally::default();
        b.add(b"b", b"2", 7, 3);
        b.add(b"a", b"1", 1, 4);
        a.merge(b);
        let table = a
            .into_table(&spec, &PaymentGroups::default(), "x")
            .expect("ok");
        assert_eq!(table.cells(), [vec![6, 0], vec![0, 7]]);
    }

    #[test]
    fn overflow_blocks() {
        let spec = TableSpec::new(Measure::Referrals, "d");
        let mut t = Tally::default();
        t.add(b"a", b"", u64::MAX, 2);
        t.add(b"a", b"", 1, 3);
        let err = t
            .into_table(&spec, &PaymentGroups::default(), "x")
            .expect_err("overflow");
        assert!(err.has(Code::ValueTooLarge), "{err}");
    }
}
