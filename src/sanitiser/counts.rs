//! The long counts CSV: a header, one row per cell, the table's dimension
//! columns and a `count` column. Other columns may be filtered on and are
//! otherwise summed over; a combination with no row is a true zero.
//!
//! R1 (every count valid) and R2 (every declared `Total` adds up) are
//! checked over the whole file before anything is tallied.

use std::collections::HashMap;
use std::io::Read;

use super::findings::{Blocked, Code, ErrorSink};
use super::input::{self, Header, InputError};
use super::rounding::MAX_COUNT;
use super::spec::{COUNT, MEASURE_COLUMN, TableSpec};
use super::table::{CountTable, Tally};
use crate::reference::PaymentGroups;

/// One data row: its values (every column but `count`), count and line.
struct Row {
    values: Vec<Box<str>>,
    count: u64,
    line: u64,
}

/// Reads a long counts CSV into a table of true counts for `spec`.
///
/// `source` names the input in messages (the path as the user gave it).
/// A request the rules forbid (R7, R9) is refused before anything is read.
/// Counts files are pre-aggregated and small, so rows are held in memory to
/// check declared totals against the cells they cover.
pub fn read_counts(
    input: impl Read,
    source: &str,
    spec: &TableSpec,
    groups: &PaymentGroups,
) -> Result<CountTable, InputError> {
    super::check_spec(spec)?;
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
    for dim in spec
        .dimensions()
        .chain(spec.filters.iter().map(|(d, _)| d.as_str()))
    {
        if dim == COUNT {
            return Err(Blocked::one(
                Code::UnknownDimension,
                format!("`{COUNT}` holds the figures and cannot be a dimension or filter"),
            )
            .into());
        }
        header.require(dim, Code::UnknownDimension, source, || {
            format!("no column `{dim}` to lay out or filter the table by")
        })?;
    }
    // Positions in `Row::values`, which skip the count column.
    let value_at = |name: &str| {
        let i = header.position(name).expect("checked above");
        if i > count_at { i - 1 } else { i }
    };
    let measure_at = header
        .position(MEASURE_COLUMN)
        .map(|_| value_at(MEASURE_COLUMN));

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

    let rows_at = value_at(&spec.rows);
    let cols_at = spec.cols.as_deref().map(value_at);
    let filters: Vec<(usize, &str)> = spec
        .filters
        .iter()
        .map(|(d, v)| (value_at(d), v.as_str()))
        .chain(measure_at.map(|m| (m, spec.measure.as_str())))
        .collect();
    let mut tally = Tally::default();
    for row in rows
        .iter()
        .filter(|r| !r.values.iter().any(|v| is_total(v)))
    {
        if filters.iter().all(|&(i, v)| &*row.values[i] == v) {
            let col = cols_at.map_or("", |c| &row.values[c]);
            tally.add(
                row.values[rows_at].as_bytes(),
                col.as_bytes(),
                row.count,
                row.line,
            );
        }
    }
    Ok(tally.into_table(spec, groups, source)?)
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
