//! The long counts CSV: a header, one row per cell, the columns of the
//! declared dimensions the table uses and a `count` column. Other columns
//! are summed over; a combination with no row is a true zero.
//!
//! R1 (every count valid) and R2 (every declared `Total` adds up) are
//! checked over the whole file before anything is tallied; then every value
//! in a column the table uses must be a declared category (R14), every
//! value of a `period` column a label of the table's grain, and the table
//! is laid out from the specification alone (R15).

use std::collections::HashMap;
use std::io::Read;

use super::findings::{Blocked, Code, ErrorSink};
use super::input::{self, Header, InputError};
use super::layout::{Catalogue, Dim, Kind, Layout, Lookup, Origin, Wanted, undeclared};
use super::period::Period;
use super::rounding::MAX_COUNT;
use super::spec::{COUNT, LA_CODE, MEASURE_COLUMN, PERIOD, TableSpec};
use super::table::{CountTable, Tally};

/// One data row: its values (every column but `count`), count and line.
struct Row {
    values: Vec<Box<str>>,
    count: u64,
    line: u64,
}

/// A column whose values are categories: looked up, or parsed as periods.
enum Slot<'c> {
    Category {
        at: usize,
        dim: Dim<'c>,
        lookup: Lookup,
    },
    Period {
        at: usize,
    },
}

/// The columns the table reads categories from, each once.
struct Slots<'a, 'c> {
    list: Vec<(String, Slot<'c>)>,
    header: &'a Header,
    count_at: usize,
    layout: &'a Layout<'c>,
    source: &'a str,
}

impl<'c> Slots<'_, 'c> {
    /// The slot of `dim`'s column, added if new; `why` says why the column
    /// is needed if the header lacks it.
    fn get(&mut self, dim: Dim<'c>, why: &dyn Fn() -> String) -> Result<usize, Blocked> {
        let name = dim.column();
        if let Some(k) = self.list.iter().position(|(n, _)| n == name) {
            return Ok(k);
        }
        let i = self
            .header
            .require(name, Code::MissingColumn, self.source, why)?;
        // Positions in `Row::values`, which skip the count column.
        let at = if i > self.count_at { i - 1 } else { i };
        let s = match dim.kind {
            Kind::Period => Slot::Period { at },
            Kind::La | Kind::Declared(_) => Slot::Category {
                at,
                dim,
                lookup: self.layout.lookup(dim),
            },
        };
        self.list.push((name.to_string(), s));
        Ok(self.list.len() - 1)
    }
}

/// Reads a long counts CSV into a table of true counts for `spec`.
///
/// `source` names the input in messages (the path as the user gave it).
/// A request the rules forbid ([`super::check_spec`]) is refused before
/// anything is read. Counts files are pre-aggregated and small, so rows are
/// held in memory to check declared totals against the cells they cover.
pub fn read_counts(
    input: impl Read,
    source: &str,
    spec: &TableSpec,
    catalogue: &Catalogue,
) -> Result<CountTable, InputError> {
    let layout = Layout::new(spec, catalogue)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut record = csv::ByteRecord::new();
    let read = |reader: &mut csv::Reader<_>, record: &mut csv::ByteRecord| {
        reader
            .read_byte_record(record)
            .map_err(|e| input::csv_error(source, e))
    };
    if !read(&mut reader, &mut record)? {
        return Err(Blocked::one(
            Code::MalformedCsv,
            format!("{source} is empty: expected a header naming the dimensions and `{COUNT}`"),
        )
        .into());
    }
    let header = Header::parse(&record, source)?;
    let count_at = header.require(COUNT, Code::MissingColumn, source, || {
        "the counts input needs a `count` column".to_string()
    })?;
    let value_at = |i: usize| if i > count_at { i - 1 } else { i };

    let mut slots = Slots {
        list: Vec::new(),
        header: &header,
        count_at,
        layout: &layout,
        source,
    };
    let mut slot = |dim, why: &dyn Fn() -> String| slots.get(dim, why);
    let lay_out = |dim: Dim<'_>| {
        let name = dim.name.to_string();
        move || format!("no column `{name}` to lay out or filter the table by")
    };
    let rows_at = slot(layout.rows, &lay_out(layout.rows))?;
    let cols_at = match layout.cols {
        Some(c) => Some(slot(c, &lay_out(c))?),
        None => None,
    };
    let mut filters = Vec::new();
    let mut nothing = false;
    for f in &layout.filters {
        let at = match f.origin {
            Origin::Where => slot(f.dim, &lay_out(f.dim))?,
            Origin::Recipient => slot(f.dim, &|| {
                format!(
                    "the counts need a `{LA_CODE}` column to select the recipient's \
                     participants: an internal file counts only its recipient's"
                )
            })?,
        };
        match f.wanted {
            Wanted::Category(i) => filters.push((at, i)),
            Wanted::Period(p) => filters.push((at, p.ordinal())),
            Wanted::Nothing => nothing = true,
        }
    }
    let range_at = match layout.periods {
        Some(range) => {
            let period = Dim {
                name: PERIOD,
                kind: Kind::Period,
            };
            let at = slot(period, &|| {
                format!(
                    "a period range ({range}) was given, so the counts need a `{PERIOD}` \
                     column to select it"
                )
            })?;
            Some((at, range.first().ordinal(), range.last().ordinal()))
        }
        None => None,
    };
    // A `period` column holds labels of the table's grain whether or not
    // the table uses it: summing months with quarters would mislead.
    if header.position(PERIOD).is_some() {
        let period = Dim {
            name: PERIOD,
            kind: Kind::Period,
        };
        slot(period, &String::new)?;
    }
    let measure_at = header.position(MEASURE_COLUMN).map(value_at);

    let mut errors = ErrorSink::default();
    let mut rows = Vec::new();
    loop {
        if !read(&mut reader, &mut record)? {
            break;
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1 && record[0].is_empty() {
            continue;
        }
        if record.len() != header.len() {
            errors.push(
                line,
                Code::MalformedCsv,
                format!(
                    "{source} line {line}: the row has {} fields but the header has {}",
                    record.len(),
                    header.len()
                ),
            );
            continue;
        }
        let mut values = Vec::with_capacity(header.len() - 1);
        let mut count = None;
        for (i, field) in record.iter().enumerate() {
            let column = header.name(i);
            if i == count_at {
                count = parse_count(field, source, line, column, &mut errors);
                continue;
            }
            match std::str::from_utf8(field) {
                Ok(v) => values.push(Box::<str>::from(v)),
                Err(_) => errors.push(
                    line,
                    Code::MalformedCsv,
                    format!("{source} line {line}, column {column}: invalid UTF-8"),
                ),
            }
        }
        if let (Some(m), true) = (measure_at, values.len() == header.len() - 1) {
            let v = values[m].trim();
            if !is_total(v) && v.parse::<super::Measure>().is_err() {
                errors.push(
                    line,
                    Code::InvalidValue,
                    format!(
                        "{source} line {line}, column {MEASURE_COLUMN}: {} is not a measure",
                        input::quote(v)
                    ),
                );
            }
        }
        if let Some(count) = count
            && values.len() == header.len() - 1
        {
            rows.push(Row {
                values,
                count,
                line,
            });
        }
    }
    errors.finish()?;
    check_declared_totals(&rows, source)?;
    let mut errors = ErrorSink::default();

    // Every detail row's value in every column the table uses is a
    // category, whether or not the row is counted.
    let column_name = |at: usize| header.name(if at >= count_at { at + 1 } else { at });
    let mut tally = Tally::new(
        layout.len(layout.rows),
        layout.cols.map_or(1, |c| layout.len(c)),
    );
    let slots = slots.list;
    let mut ids = vec![0u32; slots.len()];
    for row in rows
        .iter()
        .filter(|r| !r.values.iter().any(|v| is_total(v)))
    {
        let mut valid = true;
        for (k, (_, s)) in slots.iter().enumerate() {
            let (at, id) = match s {
                Slot::Category { at, lookup, .. } => (*at, lookup.get(row.values[*at].as_bytes())),
                Slot::Period { at } => (
                    *at,
                    Period::parse_as(&row.values[*at], layout.grain)
                        .ok()
                        .map(Period::ordinal),
                ),
            };
            if let Some(id) = id {
                ids[k] = id;
                continue;
            }
            let v = &row.values[at];
            let why = match s {
                Slot::Category { dim, .. } => undeclared(*dim, v),
                Slot::Period { .. } => {
                    format!("{} is not {}", input::quote(v), layout.grain.shape())
                }
            };
            errors.push(
                row.line,
                Code::UndeclaredValue,
                format!(
                    "{source} line {}, column {}: {why}",
                    row.line,
                    column_name(at)
                ),
            );
            valid = false;
        }
        if !valid || nothing {
            continue;
        }
        if measure_at.is_some_and(|m| &*row.values[m] != spec.measure.as_str()) {
            continue;
        }
        if let Some((at, first, last)) = range_at
            && !(first..=last).contains(&ids[at])
        {
            continue;
        }
        if !filters.iter().all(|&(at, wanted)| ids[at] == wanted) {
            continue;
        }
        let base = layout.periods.map_or(0, |r| r.first().ordinal());
        let index = |k: usize| match slots[k].1 {
            Slot::Period { .. } => (ids[k] - base) as usize,
            Slot::Category { .. } => ids[k] as usize,
        };
        let c = cols_at.map_or(0, index);
        tally.add(index(rows_at), c, row.count, row.line);
    }
    errors.finish()?;
    let rows = layout.axis(Some(layout.rows));
    let cols = layout.axis(layout.cols);
    Ok(tally.into_table(rows, cols, source)?)
}

/// R1: an ASCII decimal integer from 0 to 10^12.
fn parse_count(
    field: &[u8],
    source: &str,
    line: u64,
    column: &str,
    errors: &mut ErrorSink,
) -> Option<u64> {
    let at = format!("{source} line {line}, column {column}");
    if field.is_empty() {
        errors.push(
            line,
            Code::MissingValue,
            format!("{at}: the count is empty"),
        );
        return None;
    }
    if !field.iter().all(u8::is_ascii_digit) {
        let shown = input::quote(&String::from_utf8_lossy(field));
        errors.push(
            line,
            Code::InvalidValue,
            format!("{at}: {shown} is not a whole number"),
        );
        return None;
    }
    let digits = field.iter().skip_while(|&&b| b == b'0').count();
    let value = if digits > 13 {
        None
    } else {
        field.iter().try_fold(0u64, |n, &b| {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
    };
    match value {
        Some(v) if v <= MAX_COUNT => Some(v),
        _ => {
            let shown = input::quote(&String::from_utf8_lossy(field));
            errors.push(
                line,
                Code::ValueTooLarge,
                format!("{at}: {shown} is above the largest count accepted ({MAX_COUNT})"),
            );
            None
        }
    }
}

/// A declared total: the value `Total` in any case.
fn is_total(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("total")
}

/// R2: every row with `Total` in one or more columns must equal the sum of
/// the detail rows that agree with it on every other column.
fn check_declared_totals(rows: &[Row], source: &str) -> Result<(), Blocked> {
    let mask = |row: &Row| -> Vec<bool> { row.values.iter().map(|v| is_total(v)).collect() };
    let (totals, details): (Vec<&Row>, Vec<&Row>) = rows
        .iter()
        .partition(|r| r.values.iter().any(|v| is_total(v)));
    if totals.is_empty() {
        return Ok(());
    }
    // One marginal sum per distinct set of total columns.
    let mut margins: HashMap<Vec<bool>, HashMap<Vec<&str>, u128>> = HashMap::new();
    for t in &totals {
        margins.entry(mask(t)).or_default();
    }
    for (m, sums) in &mut margins {
        for d in &details {
            let key = project(d, m);
            *sums.entry(key).or_default() += u128::from(d.count);
        }
    }
    let mut errors = ErrorSink::default();
    for t in totals {
        let m = mask(t);
        let covered = margins[&m].get(&project(t, &m)).copied().unwrap_or(0);
        if covered != u128::from(t.count) {
            errors.push(
                t.line,
                Code::NonAdditive,
                format!(
                    "{source} line {}: the declared Total {} does not equal the sum of the \
                     cells it covers ({covered}); correct the input or drop the Total rows",
                    t.line, t.count
                ),
            );
        }
    }
    errors.finish()
}

/// The row's values on the columns that are not totals in `mask`.
fn project<'a>(row: &'a Row, mask: &[bool]) -> Vec<&'a str> {
    row.values
        .iter()
        .zip(mask)
        .filter(|(_, total)| !**total)
        .map(|(v, _)| &**v)
        .collect()
}
