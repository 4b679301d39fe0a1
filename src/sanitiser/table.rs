//! True counts laid out by row and column, and the dense tally the readers
//! build one with.
//!
//! A [`CountTable`] holds unrounded figures. It is not `Serialize` and
//! nothing renders it: the only way out is through [`super::sanitise`].

use super::findings::{Blocked, Code};
use super::spec::ALL_COLUMN;

/// True counts laid out by the row and column dimensions, in output order.
///
/// Each row and column has a label (what the file shows: `Disabled`) and a
/// category code (what the input holds and the release ledger records:
/// `Y`). For periods and LA codes the two are the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountTable {
    rows: Vec<String>,
    cols: Vec<String>,
    row_codes: Vec<String>,
    col_codes: Vec<String>,
    /// `cells[r][c]`.
    cells: Vec<Vec<u64>>,
}

impl CountTable {
    /// A table from labels in output order and a cell per (row, column).
    /// Each label is taken as its category's code too; [`Self::with_codes`]
    /// says otherwise where a label is not its code.
    ///
    /// # Panics
    /// If `cells` is not `rows.len()` by `cols.len()`: that is a bug in the
    /// caller, not bad input. The readers size their tables from the layout
    /// before reading anything, so no input can reach it.
    pub fn new(rows: Vec<String>, cols: Vec<String>, cells: Vec<Vec<u64>>) -> Self {
        assert_eq!(cells.len(), rows.len(), "one cell row per row label");
        assert!(
            cells.iter().all(|r| r.len() == cols.len()),
            "one cell per column label"
        );
        Self {
            row_codes: rows.clone(),
            col_codes: cols.clone(),
            rows,
            cols,
            cells,
        }
    }

    /// The same table with the category codes of its rows and columns, in
    /// the order of the labels.
    ///
    /// # Panics
    /// If there is not one code per label: a bug in the caller (the readers
    /// take both from the same layout).
    pub fn with_codes(mut self, row_codes: Vec<String>, col_codes: Vec<String>) -> Self {
        assert_eq!(row_codes.len(), self.rows.len(), "one code per row label");
        assert_eq!(
            col_codes.len(),
            self.cols.len(),
            "one code per column label"
        );
        self.row_codes = row_codes;
        self.col_codes = col_codes;
        self
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

    /// The rows' category codes, in the order of [`Self::rows`].
    pub fn row_codes(&self) -> &[String] {
        &self.row_codes
    }

    /// The columns' category codes, in the order of [`Self::cols`].
    pub fn col_codes(&self) -> &[String] {
        &self.col_codes
    }

    pub(crate) fn cells(&self) -> &[Vec<u64>] {
        &self.cells
    }
}

/// Counts by (row category, column category) in one dense array, sized by
/// the layout before any input is read. Every category has its cell whether
/// or not anyone falls in it, so a full layout (R15) costs nothing extra.
///
/// The array is allocated on the first count, so a split pass's parts that
/// nobody falls in cost nothing.
#[derive(Debug)]
pub(crate) struct Tally {
    nrows: usize,
    ncols: usize,
    /// `cells[r * ncols + c]`; empty until the first count.
    cells: Vec<u64>,
    /// The earliest line at which a cell's sum overflowed.
    overflow: Option<u64>,
}

impl Tally {
    /// An empty tally of `nrows` by `ncols` categories.
    pub(crate) fn new(nrows: usize, ncols: usize) -> Self {
        Self {
            nrows,
            ncols,
            cells: Vec::new(),
            overflow: None,
        }
    }

    /// Adds `count` to the cell at (`r`, `c`); the readers pass indices of
    /// the layout only.
    #[inline]
    pub(crate) fn add(&mut self, r: usize, c: usize, count: u64, line: u64) {
        if self.cells.is_empty() {
            self.cells = vec![0; self.nrows * self.ncols];
        }
        let cell = &mut self.cells[r * self.ncols + c];
        match cell.checked_add(count) {
            Some(sum) => *cell = sum,
            None => self.overflow = Some(self.overflow.map_or(line, |l| l.min(line))),
        }
    }

    /// Adds another tally of the same layout (from a parallel worker).
    pub(crate) fn merge(&mut self, other: Tally) {
        debug_assert_eq!((self.nrows, self.ncols), (other.nrows, other.ncols));
        if let Some(line) = other.overflow {
            self.overflow = Some(self.overflow.map_or(line, |l| l.min(line)));
        }
        if other.cells.is_empty() {
            return;
        }
        if self.cells.is_empty() {
            self.cells = other.cells;
            return;
        }
        for (into, from) in self.cells.iter_mut().zip(other.cells) {
            match into.checked_add(from) {
                Some(sum) => *into = sum,
                // Which line tipped it over is not known after a merge: the
                // message then names the input only.
                None => self.overflow = Some(self.overflow.unwrap_or(u64::MAX)),
            }
        }
    }

    /// The table with these labels and codes (the layout's, from the
    /// specification alone). `source` names the input in error messages.
    pub(crate) fn into_table(
        self,
        (rows, row_codes): (Vec<String>, Vec<String>),
        (cols, col_codes): (Vec<String>, Vec<String>),
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
        debug_assert_eq!((rows.len(), cols.len()), (self.nrows, self.ncols));
        let cells = if self.cells.is_empty() {
            vec![vec![0; self.ncols]; self.nrows]
        } else if self.ncols == 0 {
            vec![Vec::new(); self.nrows]
        } else {
            self.cells.chunks(self.ncols).map(<[u64]>::to_vec).collect()
        };
        Ok(CountTable::new(rows, cols, cells).with_codes(row_codes, col_codes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize, prefix: &str) -> (Vec<String>, Vec<String>) {
        let labels: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        (labels.clone(), labels)
    }

    #[test]
    fn every_cell_is_laid_out_whether_or_not_it_was_counted() {
        let mut t = Tally::new(3, 2);
        t.add(1, 1, 5, 2);
        t.add(1, 1, 2, 3);
        let table = t
            .into_table(labels(3, "r"), labels(2, "c"), "in.csv")
            .expect("ok");
        assert_eq!(table.cells(), [vec![0, 0], vec![0, 7], vec![0, 0]]);
        let empty = Tally::new(2, 1)
            .into_table(labels(2, "r"), labels(1, "c"), "in.csv")
            .expect("ok");
        assert_eq!(empty.cells(), [vec![0], vec![0]]);
    }

    #[test]
    fn merge_adds_cells() {
        let mut a = Tally::new(2, 2);
        a.add(0, 0, 5, 2);
        let mut b = Tally::new(2, 2);
        b.add(1, 1, 7, 3);
        b.add(0, 0, 1, 4);
        a.merge(b);
        a.merge(Tally::new(2, 2));
        let mut c = Tally::new(2, 2);
        c.merge(a);
        let table = c
            .into_table(labels(2, "r"), labels(2, "c"), "x")
            .expect("ok");
        assert_eq!(table.cells(), [vec![6, 0], vec![0, 7]]);
    }

    #[test]
    fn overflow_blocks() {
        let mut t = Tally::new(1, 1);
        t.add(0, 0, u64::MAX, 2);
        t.add(0, 0, 1, 3);
        let err = t
            .into_table(labels(1, "r"), labels(1, "c"), "x")
            .expect_err("overflow");
        assert!(err.has(Code::ValueTooLarge), "{err}");
        assert!(err.to_string().contains("x line 3"), "{err}");

        let mut a = Tally::new(1, 1);
        a.add(0, 0, u64::MAX, 2);
        let mut b = Tally::new(1, 1);
        b.add(0, 0, 1, 3);
        a.merge(b);
        let err = a
            .into_table(labels(1, "r"), labels(1, "c"), "x")
            .expect_err("overflow on merge");
        assert!(err.has(Code::ValueTooLarge), "{err}");
    }
}
