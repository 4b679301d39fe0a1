//! Participant records, aggregated in one streaming pass.
//!
//! One row is one participant's journey. A measure counts the participants
//! whose date for that stage is set (and, with a period range, falls in
//! it); the derived dimension `period` is the month or quarter of that
//! date. Every value in a column the table uses must be one of its
//! dimension's declared categories (R14); the table is laid out from the
//! specification alone (R15).
//!
//! The pass is parallel with bounded memory: this thread reads blocks of
//! whole records and hands them to workers through a bounded channel; each
//! worker keeps its own dense tally, and the tallies are merged at the end.
//! Memory is a few blocks plus one tally per worker, whatever the number of
//! rows. Errors carry line numbers, and the same input gives the same table
//! and the same messages however the blocks were shared out.

use std::io::Read;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use memchr::{memchr, memchr_iter, memrchr};

use super::findings::{Blocked, Code, ErrorSink};
use super::input::{self, Header, InputError};
use super::layout::{Catalogue, Dim, Kind, Layout, Lookup, Origin, Wanted, undeclared};
use super::period::Period;
use super::spec::{LA_CODE, PeriodGrain, TableSpec};
use super::table::{CountTable, Tally};
use crate::sanitiser::Measure;

/// How many bytes a block holds (records are never split across blocks).
const BLOCK: usize = 1 << 20;

/// The longest record accepted; a longer one is surely not a participant.
const MAX_RECORD: usize = 64 << 20;

/// Reads participant records into a table of true counts for `spec`, using
/// every core the machine offers. A request the rules forbid
/// ([`super::check_spec`]) is refused before anything is read.
pub fn read_records(
    input: impl Read,
    source: &str,
    spec: &TableSpec,
    catalogue: &Catalogue,
) -> Result<CountTable, InputError> {
    let mut tables = read_records_with(input, source, spec, catalogue, None, workers(), BLOCK)?;
    Ok(tables.pop().expect("one table when not split"))
}

/// Reads participant records once and makes one table per category of the
/// declared dimension `column` named in `parts` (for example one per
/// recipient LA by `la_code`), each the table `read_records` would give
/// with `--where column=part`.
///
/// Every record's `column` value must be declared (an LA code not in the
/// LA reference data blocks); records of declared categories not in
/// `parts` are not counted. A part that is not a declared category gets a
/// table of zeros: no record can be its.
pub fn read_records_split(
    input: impl Read,
    source: &str,
    spec: &TableSpec,
    catalogue: &Catalogue,
    column: &str,
    parts: &[String],
) -> Result<Vec<CountTable>, InputError> {
    read_records_with(
        input,
        source,
        spec,
        catalogue,
        Some((column, parts)),
        workers(),
        BLOCK,
    )
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The records pass with the split, worker count and block size chosen, so
/// tests can drive many small blocks through several workers.
pub(crate) fn read_records_with(
    mut input: impl Read,
    source: &str,
    spec: &TableSpec,
    catalogue: &Catalogue,
    split: Option<(&str, &[String])>,
    workers: usize,
    block: usize,
) -> Result<Vec<CountTable>, InputError> {
    let layout = Layout::new(spec, catalogue)?;
    let io = |error| InputError::Io {
        input: source.to_string(),
        error,
    };
    let mut reader = BlockReader::new(block);
    let Some(header) = reader.header(&mut input).map_err(io)? else {
        return Err(Blocked::one(
            Code::MalformedCsv,
            format!("{source} is empty: expected a header of participant records"),
        )
        .into());
    };
    let header = parse_header(&header, source)?;
    let plan = Plan::new(&header, spec.measure, &layout, split, source)?;

    let workers = workers.max(1);
    let (full_tx, full_rx) = sync_channel::<Block>(workers * 2);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(workers * 2 + 2);
    let full_rx = Mutex::new(full_rx);
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (full_rx, free_tx, plan) = (&full_rx, free_tx.clone(), &plan);
                scope.spawn(move || work(full_rx, free_tx, plan, source))
            })
            .collect();
        drop(free_tx);
        let read = reader.run(&mut input, &full_tx, &free_rx);
        drop(full_tx);
        let counted: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("a records worker panicked"))
            .collect();
        (read, counted)
    });
    let (read, counted) = results;
    read.map_err(io)?;

    let mut merged = plan.tallies();
    let mut errors = ErrorSink::default();
    for c in counted {
        for (into, t) in merged.iter_mut().zip(c.tallies) {
            into.merge(t);
        }
        errors.merge(c.errors);
    }
    if let Some(line) = reader.too_long {
        errors.push(
            line,
            Code::MalformedCsv,
            format!(
                "{source} line {line}: a record is longer than {} MiB; is this a records file?",
                MAX_RECORD >> 20
            ),
        );
    }
    errors.finish()?;
    let rows = layout.axis(Some(layout.rows));
    let cols = layout.axis(layout.cols);
    let tables: Vec<CountTable> = merged
        .into_iter()
        .map(|t| t.into_table(rows.clone(), cols.clone(), source))
        .collect::<Result<_, _>>()?;
    Ok(plan
        .part_of_request
        .iter()
        .map(|&i| tables[i].clone())
        .collect())
}

/// A run of whole records and the line the first one starts on.
struct Block {
    bytes: Vec<u8>,
    first_line: u64,
}

/// Where a dimension's category comes from in a record.
#[derive(Debug, Clone, Copy)]
enum Axis {
    /// The category looked up in the slot at this index.
    Slot(usize),
    /// The period of the measure's date.
    Period,
}

/// A column whose values are categories of a declared dimension.
#[derive(Debug)]
struct Slot<'c> {
    column: usize,
    dim: Dim<'c>,
    lookup: Lookup,
}

/// What to do with each record, worked out once from the header.
#[derive(Debug)]
struct Plan<'c> {
    fields: usize,
    names: Vec<String>,
    date: usize,
    dates: Vec<usize>,
    grain: PeriodGrain,
    /// Count only stage dates within these `YYYY-MM-DD` days, inclusive.
    range: Option<([u8; 10], [u8; 10])>,
    /// The ordinal of the range's first period: a period's position in the
    /// layout is its ordinal less this.
    base: u32,
    /// Whether the period of each date is needed (a layout or filter by it).
    needs_period: bool,
    /// Every column the table reads a category from, once each.
    slots: Vec<Slot<'c>>,
    rows: Axis,
    cols: Option<Axis>,
    /// Where a filter's value is, and the category (or period ordinal) it keeps.
    filters: Vec<(Axis, u32)>,
    /// A filter keeps nothing: no record is counted.
    nothing: bool,
    /// The slot that splits records into parts, and each category's part.
    split: Option<(usize, Vec<Option<usize>>)>,
    /// How many distinct parts are tallied (1 when not split).
    parts: usize,
    /// For each part asked for, the distinct part that holds its table.
    part_of_request: Vec<usize>,
    nrows: usize,
    ncols: usize,
}

impl<'c> Plan<'c> {
    fn new(
        header: &Header,
        measure: Measure,
        layout: &Layout<'c>,
        split: Option<(&'c str, &[String])>,
        source: &str,
    ) -> Result<Self, Blocked> {
        let date_column = measure.date_column();
        let date = header.require(date_column, Code::MissingColumn, source, || {
            format!("participant records need `{date_column}` to count {measure}")
        })?;
        let mut slots: Vec<Slot<'c>> = Vec::new();
        let mut axis = |dim: Dim<'c>, why: &dyn Fn() -> String| -> Result<Axis, Blocked> {
            if let Kind::Period = dim.kind {
                return Ok(Axis::Period);
            }
            if let Some(k) = slots.iter().position(|s| s.dim.name == dim.name) {
                return Ok(Axis::Slot(k));
            }
            let column = header.require(dim.column(), Code::MissingColumn, source, why)?;
            slots.push(Slot {
                column,
                dim,
                lookup: layout.lookup(dim),
            });
            Ok(Axis::Slot(slots.len() - 1))
        };
        let lay_out = |dim: Dim<'_>| {
            let name = dim.name.to_string();
            move || format!("no column `{name}` to lay out or filter the table by")
        };
        let rows = axis(layout.rows, &lay_out(layout.rows))?;
        let cols = match layout.cols {
            Some(c) => Some(axis(c, &lay_out(c))?),
            None => None,
        };
        let mut filters = Vec::new();
        let mut nothing = false;
        for f in &layout.filters {
            let at = match f.origin {
                Origin::Where => axis(f.dim, &lay_out(f.dim))?,
                Origin::Recipient => axis(f.dim, &|| {
                    format!(
                        "participant records need `{LA_CODE}` to select the recipient's \
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
        let (split, parts, part_of_request) = match split {
            None => (None, 1, vec![0]),
            Some((column, parts)) => {
                let dim = layout.split_dim(column)?;
                let at = match axis(dim, &|| {
                    format!("no column `{column}` to split the records by")
                })? {
                    Axis::Slot(k) => k,
                    Axis::Period => unreachable!("period cannot split"),
                };
                let mut part_of = vec![None; layout.len(dim)];
                let mut distinct: Vec<&str> = Vec::new();
                let mut part_of_request = Vec::with_capacity(parts.len());
                for p in parts {
                    let i = match distinct.iter().position(|d| *d == p.as_str()) {
                        Some(i) => i,
                        None => {
                            distinct.push(p);
                            if let Some(cat) = layout.category(dim, p) {
                                part_of[cat as usize] = Some(distinct.len() - 1);
                            }
                            distinct.len() - 1
                        }
                    };
                    part_of_request.push(i);
                }
                (Some((at, part_of)), distinct.len(), part_of_request)
            }
        };
        let range = layout
            .periods
            .map(|r| (day_bytes(r.first_day()), day_bytes(r.last_day())));
        let needs_period = matches!(rows, Axis::Period)
            || matches!(cols, Some(Axis::Period))
            || filters.iter().any(|(a, _)| matches!(a, Axis::Period));
        Ok(Self {
            fields: header.len(),
            names: (0..header.len())
                .map(|i| header.name(i).to_string())
                .collect(),
            date,
            dates: Measure::ALL
                .iter()
                .filter_map(|m| header.position(m.date_column()))
                .collect(),
            grain: layout.grain,
            range,
            base: layout.periods.map_or(0, |r| r.first().ordinal()),
            needs_period,
            slots,
            rows,
            cols,
            filters,
            nothing,
            split,
            parts,
            part_of_request,
            nrows: layout.len(layout.rows),
            ncols: layout.cols.map_or(1, |c| layout.len(c)),
        })
    }

    /// An empty tally for each part.
    fn tallies(&self) -> Vec<Tally> {
        (0..self.parts)
            .map(|_| Tally::new(self.nrows, self.ncols))
            .collect()
    }

    /// Tallies one record (already split into fields) into its part's tally.
    #[inline]
    fn record(&self, fields: &[&[u8]], line: u64, out: &mut Counted, source: &str) {
        if fields.len() != self.fields {
            out.errors.push(
                line,
                Code::MalformedCsv,
                format!(
                    "{source} line {line}: the row has {} fields but the header has {}",
                    fields.len(),
                    self.fields
                ),
            );
            return;
        }
        let mut valid = true;
        for &d in &self.dates {
            let v = fields[d];
            if !v.is_empty() && !is_date(v) {
                out.errors.push(
                    line,
                    Code::InvalidDate,
                    format!(
                        "{source} line {line}, column {}: {} is not a date (YYYY-MM-DD)",
                        self.names[d],
                        input::quote_bytes(v)
                    ),
                );
                valid = false;
            }
        }
        // Every value in a column the table uses is checked, counted or not:
        // a file with values outside the declared categories is not trusted.
        let ids = &mut out.ids;
        ids.clear();
        for slot in &self.slots {
            let v = fields[slot.column];
            match slot.lookup.get(v) {
                Some(i) => ids.push(i),
                None => {
                    out.errors.push(
                        line,
                        Code::UndeclaredValue,
                        format!(
                            "{source} line {line}, column {}: {}",
                            self.names[slot.column],
                            undeclared(slot.dim, &String::from_utf8_lossy(v))
                        ),
                    );
                    valid = false;
                    ids.push(u32::MAX);
                }
            }
        }
        let date = fields[self.date];
        if !valid || self.nothing || date.is_empty() {
            return;
        }
        if let Some((first, last)) = &self.range
            && (date < &first[..] || date > &last[..])
        {
            return;
        }
        let period = if self.needs_period {
            let n = |i: usize| u32::from(date[i] - b'0');
            let year = n(0) * 1000 + n(1) * 100 + n(2) * 10 + n(3);
            let month0 = n(5) * 10 + n(6) - 1;
            Period::from_year_month(year, month0, self.grain).ordinal()
        } else {
            0
        };
        let value = |a: Axis| match a {
            Axis::Slot(k) => ids[k],
            Axis::Period => period,
        };
        if !self.filters.iter().all(|&(a, wanted)| value(a) == wanted) {
            return;
        }
        let part = match &self.split {
            None => 0,
            Some((k, part_of)) => match part_of[ids[*k] as usize] {
                Some(part) => part,
                None => return,
            },
        };
        let index = |a: Axis| match a {
            Axis::Slot(k) => ids[k] as usize,
            Axis::Period => (period - self.base) as usize,
        };
        let r = index(self.rows);
        let c = self.cols.map_or(0, index);
        out.tallies[part].add(r, c, 1, line);
    }
}

/// A day as the `YYYY-MM-DD` bytes records hold, for comparing with them.
fn day_bytes(day: chrono::NaiveDate) -> [u8; 10] {
    use chrono::Datelike;
    let text = format!("{:04}-{:02}-{:02}", day.year(), day.month(), day.day());
    let mut bytes = [0u8; 10];
    bytes.copy_from_slice(&text.as_bytes()[..10]);
    bytes
}

/// What one worker has counted.
struct Counted {
    tallies: Vec<Tally>,
    errors: ErrorSink,
    /// Scratch: the category of each slot in the record at hand.
    ids: Vec<u32>,
}

/// Whether `v` is a real calendar date written `YYYY-MM-DD`.
#[inline]
fn is_date(v: &[u8]) -> bool {
    if v.len() != 10 || v[4] != b'-' || v[7] != b'-' {
        return false;
    }
    let digits = [0, 1, 2, 3, 5, 6, 8, 9];
    if !digits.iter().all(|&i| v[i].is_ascii_digit()) {
        return false;
    }
    let n = |i: usize| u32::from(v[i] - b'0');
    let year = n(0) * 1000 + n(1) * 100 + n(2) * 10 + n(3);
    let month = n(5) * 10 + n(6);
    let day = n(8) * 10 + n(9);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// A worker: takes blocks until the channel closes, tallies them, and gives
/// the buffers back for reuse.
fn work(
    blocks: &Mutex<Receiver<Block>>,
    free: SyncSender<Vec<u8>>,
    plan: &Plan<'_>,
    source: &str,
) -> Counted {
    let mut counted = Counted {
        tallies: plan.tallies(),
        errors: ErrorSink::default(),
        ids: Vec::with_capacity(plan.slots.len()),
    };
    loop {
        let block = {
            let rx = blocks.lock().expect("no worker panics holding the lock");
            rx.recv()
        };
        let Ok(mut block) = block else { break };
        tally_block(&block, plan, source, &mut counted);
        block.bytes.clear();
        // The reader may have finished and gone: then the buffer is just freed.
        let _ = free.try_send(block.bytes);
    }
    counted
}

/// Tallies every record in a block.
fn tally_block(block: &Block, plan: &Plan<'_>, source: &str, out: &mut Counted) {
    let bytes = &block.bytes[..];
    if memchr(b'"', bytes).is_some() || std::str::from_utf8(bytes).is_err() {
        return tally_block_slowly(block, plan, source, out);
    }
    let mut fields: Vec<&[u8]> = Vec::with_capacity(plan.fields);
    let mut line = block.first_line;
    let mut start = 0;
    while start < bytes.len() {
        let end = memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
        let mut record = &bytes[start..end];
        if let [rest @ .., b'\r'] = record {
            record = rest;
        }
        if !record.is_empty() {
            fields.clear();
            let mut from = 0;
            for comma in memchr_iter(b',', record) {
                fields.push(&record[from..comma]);
                from = comma + 1;
            }
            fields.push(&record[from..]);
            plan.record(&fields, line, out, source);
        }
        line += 1;
        start = end + 1;
    }
}

/// The careful path for a block with quoted fields or invalid UTF-8: a full
/// CSV parser, and a named error for each record that is not UTF-8.
fn tally_block_slowly(block: &Block, plan: &Plan<'_>, source: &str, out: &mut Counted) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(&block.bytes[..]);
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = block.first_line + e.position().map_or(0, |p| p.line() - 1);
                out.errors.push(
                    line,
                    Code::MalformedCsv,
                    format!("{source} line {line}: not valid CSV ({e})"),
                );
                break;
            }
        }
        let line = block.first_line + record.position().map_or(0, |p| p.line() - 1);
        if record.len() == 1 && record[0].is_empty() {
            continue;
        }
        if let Some(bad) = record.iter().position(|f| std::str::from_utf8(f).is_err()) {
            let column = plan
                .names
                .get(bad)
                .map_or("(beyond the header)", String::as_str);
            out.errors.push(
                line,
                Code::MalformedCsv,
                format!("{source} line {line}, column {column}: invalid UTF-8"),
            );
            continue;
        }
        let fields: Vec<&[u8]> = record.iter().collect();
        plan.record(&fields, line, out, source);
    }
}

/// Cuts the input into blocks of whole records.
struct BlockReader {
    block: usize,
    /// Bytes read but not yet sent: the start of a record cut by a read.
    carry: Vec<u8>,
    /// The line the carried bytes start on.
    line: u64,
    /// The line of a record longer than [`MAX_RECORD`], where reading stopped.
    too_long: Option<u64>,
}

impl BlockReader {
    fn new(block: usize) -> Self {
        Self {
            block,
            carry: Vec::new(),
            line: 1,
            too_long: None,
        }
    }

    /// Reads up to the end of the first line and returns it; `None` for an
    /// empty input.
    fn header(&mut self, input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if let Some(nl) = memchr(b'\n', &self.carry) {
                self.line = 2;
                return Ok(Some(self.carry.drain(..=nl).collect()));
            }
            let n = read_some(input, &mut buf)?;
            if n == 0 {
                return Ok(Some(std::mem::take(&mut self.carry)).filter(|h| !h.is_empty()));
            }
            if self.carry.len() > MAX_RECORD {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the first line is too long to be a header",
                ));
            }
            self.carry.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads everything, sending blocks that end on a record boundary.
    fn run(
        &mut self,
        input: &mut impl Read,
        full: &SyncSender<Block>,
        free: &Receiver<Vec<u8>>,
    ) -> std::io::Result<()> {
        loop {
            let mut buf = free
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(self.block));
            buf.clear();
            buf.extend_from_slice(&self.carry);
            self.carry.clear();
            let eof = fill(input, &mut buf, self.block)?;
            let cut = if eof {
                Some(buf.len())
            } else {
                record_boundary(&buf)
            };
            match cut {
                Some(cut) => {
                    self.carry.extend_from_slice(&buf[cut..]);
                    buf.truncate(cut);
                    let first_line = self.line;
                    self.line += memchr_iter(b'\n', &buf).count() as u64;
                    if !buf.is_empty()
                        && full
                            .send(Block {
                                bytes: buf,
                                first_line,
                            })
                            .is_err()
                    {
                        return Ok(());
                    }
                }
                None if buf.len() >= MAX_RECORD => {
                    self.too_long = Some(self.line);
                    return Ok(());
                }
                None => {
                    // No record ends in this buffer: keep it all and read on.
                    self.carry = buf;
                    self.block = self.block.max(self.carry.len() * 2).min(MAX_RECORD);
                    continue;
                }
            }
            if eof {
                return Ok(());
            }
        }
    }
}

/// Where the last complete record in `buf` ends (after its newline), or
/// `None` if no record ends in it. `buf` starts at a record boundary.
fn record_boundary(buf: &[u8]) -> Option<usize> {
    if memchr(b'"', buf).is_none() {
        return memrchr(b'\n', buf).map(|i| i + 1);
    }
    // Quoted fields may hold newlines: only a newline outside quotes ends a
    // record. `""` toggles twice, so parity is all that matters.
    let mut in_quote = false;
    let mut last = None;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'"' => in_quote = !in_quote,
            b'\n' if !in_quote => last = Some(i + 1),
            _ => {}
        }
    }
    last
}

/// Reads until `buf` holds `target` bytes or the input ends; `true` at end.
fn fill(input: &mut impl Read, buf: &mut Vec<u8>, target: usize) -> std::io::Result<bool> {
    let target = target.max(buf.len() + 1);
    let start = buf.len();
    buf.resize(target, 0);
    let mut len = start;
    while len < target {
        let n = read_some(input, &mut buf[len..])?;
        if n == 0 {
            buf.truncate(len);
            return Ok(true);
        }
        len += n;
    }
    buf.truncate(len);
    Ok(false)
}

/// `read`, retried on interruption.
fn read_some(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn parse_header(bytes: &[u8], source: &str) -> Result<Header, InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    reader
        .read_byte_record(&mut record)
        .map_err(|e| input::csv_error(source, e))?;
    Ok(Header::parse(&record, source)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{DEFAULT_PAYMENT_GROUPS, Dimensions, LaReference, LocalAuthority};
    use crate::sanitiser::{Blocked, Classification, Code, Measure, PeriodRange, Recipient};
    use proptest::prelude::*;

    const HEADER: &str = "participant_id,la_code,payment_group,disability,referral_date,\
                          attachment_date,job_start_date,job_outcome_date,first_sustainment_date\n";

    const LAS: [&str; 3] = ["E1", "E2", "E3"];

    fn catalogue() -> Catalogue {
        let las = LAS.map(|c| LocalAuthority {
            code: c.to_string(),
            name: format!("LA {c}"),
            cpa: "Area".to_string(),
        });
        Catalogue::new(Dimensions::default(), LaReference::from_entries(las))
    }

    fn spec(rows: &str, cols: Option<&str>) -> TableSpec {
        TableSpec {
            cols: cols.map(str::to_string),
            classification: Some(Classification::Published),
            ..TableSpec::new(Measure::Referrals, rows)
        }
    }

    fn range(s: &str) -> Option<PeriodRange> {
        Some(s.parse().expect("a range"))
    }

    fn blocked(e: InputError) -> Blocked {
        match e {
            InputError::Blocked(b) => b,
            other => panic!("unexpected I/O error: {other}"),
        }
    }

    fn read(
        input: &[u8],
        spec: &TableSpec,
        workers: usize,
        block: usize,
    ) -> Result<CountTable, Blocked> {
        read_records_with(input, "in.csv", spec, &catalogue(), None, workers, block)
            .map(|mut tables| tables.pop().expect("one table"))
            .map_err(blocked)
    }

    fn record(id: u32, la: &str, group: &str, disability: &str, dates: [&str; 5]) -> String {
        format!("P{id:09},{la},{group},{disability},{}\n", dates.join(","))
    }

    fn groups() -> Vec<String> {
        DEFAULT_PAYMENT_GROUPS.map(String::from).to_vec()
    }

    /// A column of `n` cells, with `at` set to the given counts.
    fn sparse(n: usize, at: &[(usize, u64)]) -> Vec<Vec<u64>> {
        let mut cells = vec![vec![0]; n];
        for &(i, x) in at {
            cells[i][0] = x;
        }
        cells
    }

    #[test]
    fn counts_the_measure_by_month_and_quarter() {
        let mut input = String::from(HEADER);
        input += &record(
            1,
            "E1",
            "JSA 25+",
            "N",
            ["2012-01-31", "2012-02-01", "", "", ""],
        );
        input += &record(2, "E1", "JSA 25+", "Y", ["2012-03-01", "", "", "", ""]);
        input += &record(
            3,
            "E2",
            "JSA 18-24",
            "N",
            ["2012-04-01", "2012-04-02", "2012-05-01", "", ""],
        );
        input += &record(4, "E2", "JSA 18-24", "N", ["", "", "", "", ""]);
        let mut by_month = spec("payment_group", Some("period"));
        by_month.periods = range("2011-12..2012-04");
        let month = read(input.as_bytes(), &by_month, 1, BLOCK).expect("ok");
        assert_eq!(month.rows(), groups(), "every group, in reference order");
        assert_eq!(
            month.cols(),
            ["2011-12", "2012-01", "2012-02", "2012-03", "2012-04"],
            "every month of the range, none skipped"
        );
        let mut expected = vec![vec![0; 5]; 9];
        expected[0][4] = 1;
        expected[1][1] = 1;
        expected[1][3] = 1;
        assert_eq!(month.cells(), expected);

        let mut quarter = spec("period", None);
        quarter.period = PeriodGrain::Quarter;
        quarter.periods = range("2012-Q1..2012-Q3");
        let q = read(input.as_bytes(), &quarter, 2, 64).expect("ok");
        assert_eq!(q.rows(), ["2012-Q1", "2012-Q2", "2012-Q3"]);
        assert_eq!(q.cells(), [vec![2], vec![1], vec![0]]);

        let mut starts = spec("la_code", None);
        starts.measure = Measure::JobStarts;
        let s = read(input.as_bytes(), &starts, 1, BLOCK).expect("ok");
        assert_eq!(s.rows(), LAS, "LAs in reference-file order");
        assert_eq!(s.cells(), [vec![0], vec![1], vec![0]]);
    }

    #[test]
    fn characteristics_show_their_declared_labels() {
        let mut input = String::from(HEADER);
        input += &record(1, "E1", "JSA 25+", "N", ["2012-01-31", "", "", "", ""]);
        input += &record(2, "E1", "JSA 25+", "Y", ["2012-03-01", "", "", "", ""]);
        input += &record(3, "E2", "JSA 25+", "Y", ["2012-03-01", "", "", "", ""]);
        let mut s = spec("disability", None);
        s.filters = vec![
            ("la_code".into(), "E1".into()),
            ("period".into(), "2012-03".into()),
        ];
        let t = read(input.as_bytes(), &s, 1, BLOCK).expect("ok");
        assert_eq!(t.rows(), ["Disabled", "Not disabled"]);
        assert_eq!(t.row_codes(), ["Y", "N"], "the ledger records codes");
        assert_eq!(t.cols(), ["All"]);
        assert_eq!(t.col_codes(), ["All"]);
        assert_eq!(t.cells(), [vec![1], vec![0]]);
    }

    #[test]
    fn a_period_range_leaves_out_dates_on_either_side() {
        let mut input = String::from(HEADER);
        for date in ["2011-12-31", "2012-01-01", "2012-01-31", "2012-02-01"] {
            input += &record(1, "E1", "JSA 25+", "N", [date, "", "", "", ""]);
        }
        let mut s = spec("payment_group", None);
        s.periods = range("2012-01");
        let t = read(input.as_bytes(), &s, 1, BLOCK).expect("ok");
        assert_eq!(t.cells(), sparse(9, &[(1, 2)]));
        s.periods = range("2011-12..2012-02");
        let t = read(input.as_bytes(), &s, 2, 50).expect("ok");
        assert_eq!(t.cells(), sparse(9, &[(1, 4)]));
    }

    #[test]
    fn bad_rows_are_named_by_line_and_column() {
        let mut input = String::from(HEADER);
        input += &record(1, "E1", "JSA 25+", "N", ["2012-01-31", "", "", "", ""]);
        input += &record(2, "E1", "JSA 25+", "N", ["2012-02-30", "", "", "", ""]);
        input += "P3,E1,JSA 25+,N,2012-01-01\n";
        input += &record(
            4,
            "E1",
            "JSA 25+",
            "N",
            ["2012-01-01", "", "", "31/01/2013", ""],
        );
        input += &record(5, "E1", "Total", "N", ["2012-01-01", "", "", "", ""]);
        let blocked =
            read(input.as_bytes(), &spec("payment_group", None), 1, BLOCK).expect_err("bad");
        let lines: Vec<String> = blocked.to_string().lines().map(str::to_string).collect();
        assert_eq!(
            lines,
            [
                "error[E_INVALID_DATE]: in.csv line 3, column referral_date: \"2012-02-30\" is not a date (YYYY-MM-DD)",
                "error[E_MALFORMED_CSV]: in.csv line 4: the row has 5 fields but the header has 9",
                "error[E_INVALID_DATE]: in.csv line 5, column job_outcome_date: \"31/01/2013\" is not a date (YYYY-MM-DD)",
                "error[E_UNDECLARED_VALUE]: in.csv line 6, column payment_group: \"Total\" is not a payment group in the reference data; correct the input or pass --payment-groups FILE or --dimensions FILE",
            ]
        );
    }

    #[test]
    fn undeclared_values_block_in_every_column_the_table_uses() {
        let mut input = String::from(HEADER);
        input += &record(1, "E1", "JSA 25+", "N", ["2012-01-31", "", "", "", ""]);
        // Not counted (no referral date), but still not trusted.
        input += &record(2, "E1", "Martians", "N", ["", "", "", "", ""]);
        input += &record(3, "E9", "JSA 25+", "N", ["2012-01-31", "", "", "", ""]);
        input += &record(4, "E1", "JSA 25+", "maybe", ["2012-01-31", "", "", "", ""]);
        let mut s = spec("payment_group", Some("disability"));
        s.filters.push(("la_code".into(), "E1".into()));
        let blocked = read(input.as_bytes(), &s, 2, 40).expect_err("undeclared");
        let lines: Vec<String> = blocked.to_string().lines().map(str::to_string).collect();
        assert_eq!(
            lines,
            [
                "error[E_UNDECLARED_VALUE]: in.csv line 3, column payment_group: \"Martians\" is not a payment group in the reference data; correct the input or pass --payment-groups FILE or --dimensions FILE",
                "error[E_UNDECLARED_VALUE]: in.csv line 4, column la_code: \"E9\" is not an LA code in the LA reference data; correct the input or the reference data (--las FILE)",
                "error[E_UNDECLARED_VALUE]: in.csv line 5, column disability: \"maybe\" is not a declared category of `disability` (Y, N); correct the input or declare it (--dimensions FILE)",
            ]
        );
        // A column the table does not use is not looked at.
        let t = read(input.as_bytes(), &spec("period", None), 1, BLOCK);
        assert!(t.is_err(), "period needs a range: {t:?}");
        let mut p = spec("period", None);
        p.periods = range("2012-01");
        let mut only_dates = String::from(HEADER);
        only_dates += &record(1, "anything", "at all", "?", ["2012-01-31", "", "", "", ""]);
        let t = read(only_dates.as_bytes(), &p, 1, BLOCK).expect("no categories read");
        assert_eq!(t.cells(), [vec![1]]);
    }

    #[test]
    fn invalid_utf8_is_named_not_replaced() {
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(b"P1,E1,JSA 25+,N\xff,2012-01-31,,,,\n");
        let blocked = read(&input, &spec("disability", None), 1, BLOCK).expect_err("utf8");
        assert_eq!(
            blocked.to_string(),
            "error[E_MALFORMED_CSV]: in.csv line 2, column disability: invalid UTF-8"
        );
    }

    #[test]
    fn missing_columns_and_undeclared_dimensions_are_named() {
        let no_date = "participant_id,la_code,payment_group\nP1,E1,JSA 25+\n";
        let blocked =
            read(no_date.as_bytes(), &spec("payment_group", None), 1, BLOCK).expect_err("no date");
        assert!(blocked.has(Code::MissingColumn));
        assert!(blocked.to_string().contains("referral_date"), "{blocked}");

        let no_disability = "participant_id,la_code,payment_group,referral_date\nP1,E1,JSA 25+,\n";
        let blocked = read(
            no_disability.as_bytes(),
            &spec("disability", None),
            1,
            BLOCK,
        )
        .expect_err("declared, but not in the input");
        assert_eq!(
            blocked.to_string(),
            "error[E_MISSING_COLUMN]: in.csv: no column `disability` to lay out or filter the \
             table by; its columns are: participant_id, la_code, payment_group, referral_date"
        );

        let input = format!(
            "{HEADER}{}",
            record(1, "E1", "JSA 25+", "N", ["2012-01-31", "", "", "", ""])
        );
        let blocked = read(input.as_bytes(), &spec("gender", None), 1, BLOCK).expect_err("unknown");
        assert!(blocked.has(Code::NotADimension));
        assert!(blocked.to_string().contains("`gender`"), "{blocked}");

        let blocked = read(b"", &spec("payment_group", None), 1, BLOCK).expect_err("empty");
        assert!(blocked.has(Code::MalformedCsv));
    }

    #[test]
    fn an_internal_file_counts_its_recipients_participants_only() {
        let mut input = String::from(HEADER);
        input += &record(1, "E1", "JSA 25+", "N", ["2012-01-31", "", "", "", ""]);
        input += &record(2, "E2", "JSA 25+", "N", ["2012-01-31", "", "", "", ""]);
        input += &record(3, "E2", "IB/IS", "N", ["2012-01-31", "", "", "", ""]);
        let mut s = spec("payment_group", None);
        s.classification = Some(Classification::Internal);
        s.recipient = Some(Recipient {
            code: "E2".into(),
            name: "LA E2".into(),
        });
        let t = read(input.as_bytes(), &s, 2, 30).expect("ok");
        assert_eq!(t.cells(), sparse(9, &[(1, 1), (7, 1)]));

        // A recipient the reference data does not list has nobody.
        s.recipient = Some(Recipient {
            code: "E7".into(),
            name: "LA E7".into(),
        });
        let t = read(input.as_bytes(), &s, 1, BLOCK).expect("ok");
        assert_eq!(t.cells(), sparse(9, &[]));

        // Without la_code there is no telling whose participants they are.
        let no_la = "participant_id,payment_group,referral_date\nP1,JSA 25+,2012-01-31\n";
        let blocked = read(no_la.as_bytes(), &s, 1, BLOCK).expect_err("no la_code");
        assert_eq!(
            blocked.to_string(),
            "error[E_MISSING_COLUMN]: in.csv: participant records need `la_code` to select the \
             recipient's participants: an internal file counts only its recipient's; its \
             columns are: participant_id, payment_group, referral_date"
        );
    }

    #[test]
    fn a_header_alone_is_a_full_table_of_zeros() {
        let t = read(HEADER.as_bytes(), &spec("payment_group", None), 2, 16).expect("ok");
        assert_eq!(t.rows(), groups());
        assert_eq!(t.cells(), sparse(9, &[]));
    }

    #[test]
    fn errors_are_capped_and_listed_in_line_order_whatever_the_workers() {
        let mut input = String::from(HEADER);
        for i in 0..500 {
            input += &record(i, "E1", "JSA 25+", "N", ["2012-13-01", "", "", "", ""]);
        }
        let one = read(input.as_bytes(), &spec("payment_group", None), 1, BLOCK).expect_err("bad");
        let many = read(input.as_bytes(), &spec("payment_group", None), 4, 100).expect_err("bad");
        assert_eq!(one, many);
        assert_eq!((one.errors.len(), one.more), (Blocked::MAX_LISTED, 400));
        assert!(
            one.errors[0].message.contains("line 2,"),
            "{}",
            one.errors[0].message
        );
    }

    #[test]
    fn a_record_longer_than_a_block_is_read_whole() {
        let long = "x".repeat(5000);
        let mut input = String::from(HEADER);
        input += &format!("\"{long}\",E1,JSA 25+,N,2012-01-01,,,,\n");
        input += &record(2, "E1", "JSA 25+", "N", ["2012-01-02", "", "", "", ""]);
        let t = read(input.as_bytes(), &spec("la_code", None), 2, 64).expect("ok");
        assert_eq!(t.cells(), [vec![2], vec![0], vec![0]]);
    }

    #[test]
    fn a_split_pass_checks_every_la_and_lays_out_every_part() {
        let mut input = String::from(HEADER);
        input += &record(1, "E1", "JSA 25+", "N", ["2012-01-31", "", "", "", ""]);
        input += &record(2, "E3", "IB/IS", "N", ["2012-01-31", "", "", "", ""]);
        let parts = ["E3", "E7", "E1", "E3"].map(String::from);
        let s = spec("payment_group", None);
        let tables = read_records_with(
            input.as_bytes(),
            "in.csv",
            &s,
            &catalogue(),
            Some(("la_code", &parts)),
            2,
            40,
        )
        .expect("ok");
        let cells: Vec<_> = tables.iter().map(|t| t.cells().to_vec()).collect();
        assert_eq!(
            cells,
            [
                sparse(9, &[(7, 1)]),
                sparse(9, &[]),
                sparse(9, &[(1, 1)]),
                sparse(9, &[(7, 1)])
            ]
        );
        input += &record(3, "E9", "IB/IS", "N", ["", "", "", "", ""]);
        let err = read_records_with(
            input.as_bytes(),
            "in.csv",
            &s,
            &catalogue(),
            Some(("la_code", &parts)),
            1,
            BLOCK,
        )
        .map_err(blocked)
        .expect_err("an LA the reference data does not know");
        assert!(err.has(Code::UndeclaredValue), "{err}");
        let err = read_records_with(
            input.as_bytes(),
            "in.csv",
            &s,
            &catalogue(),
            Some(("participant_id", &parts)),
            1,
            BLOCK,
        )
        .map_err(blocked)
        .expect_err("not a dimension");
        assert!(err.has(Code::NotADimension), "{err}");
    }

    /// A record with optional quoting, embedded commas and newlines, CRLF.
    fn arb_record() -> impl Strategy<Value = (String, String, String, Option<String>, bool)> {
        (
            prop::sample::select(vec!["E1", "E2", "E3"]),
            prop::sample::select(vec!["JSA 25+", "JSA 18-24", "IB/IS"]),
            prop::sample::select(vec!["Y", "N", "a,b", "line\nbreak", "say \"\"x\"\""]),
            prop::option::of((2011u32..2014, 1u32..=12, 1u32..=28)),
            any::<bool>(),
        )
            .prop_map(|(la, g, d, date, crlf)| {
                let date = date.map(|(y, m, d)| format!("{y}-{m:02}-{d:02}"));
                (la.to_string(), g.to_string(), d.to_string(), date, crlf)
            })
    }

    proptest! {
        /// Cutting the input into blocks anywhere and tallying them on any
        /// number of workers gives the same table (or the same errors) as
        /// one block on one worker.
        #[test]
        fn blocks_and_workers_do_not_change_the_table(
            records in prop::collection::vec(arb_record(), 0..60),
            block in 8usize..300,
            workers in 1usize..4,
        ) {
            let mut input = String::from(HEADER);
            for (i, (la, g, d, date, crlf)) in records.iter().enumerate() {
                let quoted = if d.contains([',', '\n', '"']) { format!("\"{d}\"") } else { d.clone() };
                let date = date.clone().unwrap_or_default();
                input += &format!("P{i},{la},{g},{quoted},{date},,,,");
                input += if *crlf { "\r\n" } else { "\n" };
            }
            let s = spec("payment_group", Some("la_code"));
            let whole = read(input.as_bytes(), &s, 1, 1 << 20).expect("valid");
            let split = read(input.as_bytes(), &s, workers, block).expect("valid");
            prop_assert_eq!(&whole, &split);
            let expected: usize = records.iter().filter(|r| r.3.is_some()).count();
            let counted: u64 = whole.cells().iter().flatten().sum();
            prop_assert_eq!(counted as usize, expected);

            // Undeclared characteristics block the same way however read.
            let d = spec("disability", Some("la_code"));
            let whole = read(input.as_bytes(), &d, 1, 1 << 20);
            let split = read(input.as_bytes(), &d, workers, block);
            prop_assert_eq!(&whole, &split);
            let undeclared = records.iter().any(|r| r.2 != "Y" && r.2 != "N");
            prop_assert_eq!(whole.is_err(), undeclared);
        }

        /// One pass split by LA gives each LA the table a filtered pass gives.
        #[test]
        fn a_split_pass_equals_one_filtered_pass_per_part(
            records in prop::collection::vec(arb_record(), 0..60),
            block in 8usize..300,
            workers in 1usize..4,
        ) {
            let mut input = String::from(HEADER);
            for (i, (la, g, _, date, _)) in records.iter().enumerate() {
                let date = date.clone().unwrap_or_default();
                input += &format!("P{i},{la},{g},N,{date},,,,\n");
            }
            let mut s = spec("payment_group", Some("period"));
            s.periods = range("2011-01..2014-12");
            let parts = vec!["E1".to_string(), "E3".to_string()];
            let split = read_records_with(input.as_bytes(), "in.csv", &s, &catalogue(), Some(("la_code", &parts)), workers, block)
                .expect("valid");
            prop_assert_eq!(split.len(), 2);
            for (part, table) in parts.iter().zip(&split) {
                let mut filtered = s.clone();
                filtered.filters.push(("la_code".into(), part.clone()));
                let expected = read(input.as_bytes(), &filtered, 1, BLOCK).expect("valid");
                prop_assert_eq!(table, &expected);
            }
        }

        #[test]
        fn is_date_agrees_with_chrono(y in 0u32..10000, m in 0u32..14, d in 0u32..33) {
            let text = format!("{y:04}-{m:02}-{d:02}");
            let real = chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").is_ok();
            prop_assert_eq!(is_date(text.as_bytes()), real, "{}", text);
        }
    }

    /// Full layouts (R15): whatever the records hold, nobody at all
    /// included, a table's labels are exactly the declared categories of
    /// its dimensions (for `period`, exactly the range's periods), and each
    /// cell holds what a plain count over the records gives.
    mod full_layouts {
        use super::*;
        use crate::sanitiser::sanitise;

        const DIMS: [&str; 4] = ["period", "la_code", "payment_group", "disability"];

        /// A participant: LA, group, disability, referral date (or none).
        type Person = (usize, usize, usize, Option<(i32, u32, u32)>);

        fn arb_person() -> impl Strategy<Value = Person> {
            (
                0usize..3,
                0usize..9,
                0usize..2,
                prop::option::weighted(0.8, (2010i32..2014, 1u32..=12, 1u32..=28)),
            )
        }

        /// The spec's grain, first period (year, index from 0) and length.
        fn arb_range() -> impl Strategy<Value = (bool, i32, u32, u32)> {
            (any::<bool>(), 2010i32..2014, 0u32..12, 1u32..=14)
        }

        fn label(grain_quarter: bool, ordinal: u32) -> String {
            if grain_quarter {
                format!("{}-Q{}", ordinal / 4, ordinal % 4 + 1)
            } else {
                format!("{}-{:02}", ordinal / 12, ordinal % 12 + 1)
            }
        }

        proptest! {
            #[test]
            fn labels_are_the_declared_categories_whatever_the_data(
                people in prop::collection::vec(arb_person(), 0..40),
                rows in 0usize..4,
                cols in prop::option::of(0usize..4),
                filter in prop::option::of((0usize..4, 0usize..9)),
                (quarter, year, start, len) in arb_range(),
                workers in 1usize..3,
            ) {
                let per_year = if quarter { 4 } else { 12 };
                let first = year as u32 * per_year + start % per_year;
                let last = first + len - 1;
                let mut s = spec(DIMS[rows], cols.map(|c| DIMS[c]));
                s.period = if quarter { PeriodGrain::Quarter } else { PeriodGrain::Month };
                s.periods = Some(
                    format!("{}..{}", label(quarter, first), label(quarter, last))
                        .parse()
                        .expect("a range"),
                );
                let labels_of = |dim: usize| -> Vec<String> {
                    match dim {
                        0 => (first..=last).map(|o| label(quarter, o)).collect(),
                        1 => LAS.map(String::from).to_vec(),
                        2 => groups(),
                        _ => vec!["Disabled".to_string(), "Not disabled".to_string()],
                    }
                };
                // A filter on a declared category (a period filter picks one
                // inside the range).
                let mut wanted: Option<(usize, usize)> = None;
                if let Some((dim, pick)) = filter {
                    let categories = labels_of(dim).len();
                    let pick = pick % categories;
                    let value = match dim {
                        0 => label(quarter, first + pick as u32),
                        1 => LAS[pick].to_string(),
                        2 => groups()[pick].clone(),
                        _ => ["Y", "N"][pick].to_string(),
                    };
                    s.filters.push((DIMS[dim].to_string(), value));
                    wanted = Some((dim, pick));
                }

                let mut input = String::from(HEADER);
                let mut expected = vec![vec![0u64; cols.map_or(1, |c| labels_of(c).len())]; labels_of(rows).len()];
                for (i, &(la, group, disability, date)) in people.iter().enumerate() {
                    let day = date.map(|(y, m, d)| format!("{y}-{m:02}-{d:02}")).unwrap_or_default();
                    input += &format!(
                        "P{i},{},{},{},{day},,,,\n",
                        LAS[la], groups()[group], ["Y", "N"][disability]
                    );
                    let Some((y, m, _)) = date else { continue };
                    let ordinal = y as u32 * per_year + (m - 1) / (12 / per_year);
                    if !(first..=last).contains(&ordinal) {
                        continue;
                    }
                    let category = |dim: usize| match dim {
                        0 => (ordinal - first) as usize,
                        1 => la,
                        2 => group,
                        _ => disability,
                    };
                    if wanted.is_some_and(|(dim, pick)| category(dim) != pick) {
                        continue;
                    }
                    expected[category(rows)][cols.map_or(0, category)] += 1;
                }

                let table = read(input.as_bytes(), &s, workers, 64).expect("valid");
                prop_assert_eq!(table.rows(), labels_of(rows));
                let expected_cols = cols.map_or_else(|| vec!["All".to_string()], labels_of);
                prop_assert_eq!(table.cols(), &expected_cols[..]);
                prop_assert_eq!(table.cells(), &expected[..]);

                let out = sanitise(&s, &table).expect("sanitised");
                prop_assert_eq!(out.rows(), labels_of(rows));
                prop_assert_eq!(out.cols(), &expected_cols[..]);
            }
        }
    }
}
