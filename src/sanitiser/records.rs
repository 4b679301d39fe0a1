//! Participant records, aggregated in one streaming pass.
//!
//! One row is one participant's journey. A measure counts the participants
//! whose date for that stage is set; the derived dimension `period` is the
//! month or quarter of that date.
//!
//! The pass is parallel with bounded memory: this thread reads blocks of
//! whole records and hands them to workers through a bounded channel; each
//! worker keeps its own tally, and the tallies are merged at the end. Memory
//! is a few blocks plus one tally per worker, whatever the number of rows.
//! Errors carry line numbers, and the same input gives the same table and the
//! same messages however the blocks were shared out.

use std::io::Read;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use memchr::{memchr, memchr_iter, memrchr};
use rustc_hash::FxHashMap;

use super::findings::{Code, ErrorSink};
use super::input::{self, Header, InputError};
use super::spec::{PERIOD, PeriodGrain, TableSpec};
use super::table::{CountTable, Tally};
use crate::reference::PaymentGroups;

/// The columns that hold stage dates, checked on every row.
const DATE_COLUMNS: [&str; 5] = [
    "referral_date",
    "attachment_date",
    "job_start_date",
    "job_outcome_date",
    "first_sustainment_date",
];

/// How many bytes a block holds (records are never split across blocks).
const BLOCK: usize = 1 << 20;

/// The longest record accepted; a longer one is surely not a participant.
const MAX_RECORD: usize = 64 << 20;

/// Reads participant records into a table of true counts for `spec`, using
/// every core the machine offers. A request the rules forbid (R7, R9) is
/// refused before anything is read.
pub fn read_records(
    input: impl Read,
    source: &str,
    spec: &TableSpec,
    groups: &PaymentGroups,
) -> Result<CountTable, InputError> {
    let mut tables = read_records_with(input, source, spec, groups, None, workers(), BLOCK)?;
    Ok(tables.pop().expect("one table when not split"))
}

/// Reads participant records once and makes one table per value of
/// `column` in `parts` (for example one per recipient LA by `la_code`), each
/// the table `read_records` would give with `--where column=part`. Records
/// for other values are not counted.
pub fn read_records_split(
    input: impl Read,
    source: &str,
    spec: &TableSpec,
    groups: &PaymentGroups,
    column: &str,
    parts: &[String],
) -> Result<Vec<CountTable>, InputError> {
    read_records_with(
        input,
        source,
        spec,
        groups,
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
    groups: &PaymentGroups,
    split: Option<(&str, &[String])>,
    workers: usize,
    block: usize,
) -> Result<Vec<CountTable>, InputError> {
    super::check_spec(spec)?;
    let io = |error| InputError::Io {
        input: source.to_string(),
        error,
    };
    let mut reader = BlockReader::new(block);
    let Some(header) = reader.header(&mut input).map_err(io)? else {
        return Err(super::findings::Blocked::one(
            Code::MalformedCsv,
            format!("{source} is empty: expected a header of participant records"),
        )
        .into());
    };
    let header = parse_header(&header, source)?;
    let plan = Plan::new(&header, spec, split, source)?;

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
        let tallies: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("a records worker panicked"))
            .collect();
        (read, tallies)
    });
    let (read, tallies) = results;
    read.map_err(io)?;

    let mut merged: Vec<Tally> = (0..plan.parts()).map(|_| Tally::default()).collect();
    let mut errors = ErrorSink::default();
    for (parts, e) in tallies {
        for (into, t) in merged.iter_mut().zip(parts) {
            into.merge(t);
        }
        errors.merge(e);
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
    let tables = merged
        .into_iter()
        .map(|t| t.into_table(spec, groups, source))
        .collect::<Result<_, _>>()?;
    Ok(tables)
}

/// A run of whole records and the line the first one starts on.
struct Block {
    bytes: Vec<u8>,
    first_line: u64,
}

/// How to get a dimension's value from a record.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A column, by position.
    Column(usize),
    /// The period of the measure's date.
    Period,
}

/// What to do with each record, worked out once from the header.
#[derive(Debug)]
struct Plan {
    fields: usize,
    names: Vec<String>,
    date: usize,
    dates: Vec<usize>,
    grain: PeriodGrain,
    rows: Source,
    cols: Option<Source>,
    filters: Vec<(Source, Vec<u8>)>,
    /// Count only stage dates on or before this `YYYY-MM-DD`.
    until: Option<[u8; 10]>,
    /// The column that splits records into parts, and each part's index.
    split: Option<(usize, FxHashMap<Vec<u8>, usize>)>,
}

impl Plan {
    fn new(
        header: &Header,
        spec: &TableSpec,
        split: Option<(&str, &[String])>,
        source: &str,
    ) -> Result<Self, super::Blocked> {
        let date_column = spec.measure.date_column();
        let date = header.require(date_column, Code::MissingColumn, source, || {
            format!(
                "participant records need `{date_column}` to count {}",
                spec.measure
            )
        })?;
        let resolve = |dim: &str| -> Result<Source, super::Blocked> {
            if dim == PERIOD {
                return Ok(Source::Period);
            }
            header
                .require(dim, Code::UnknownDimension, source, || {
                    format!("no column `{dim}` to lay out or filter the table by")
                })
                .map(Source::Column)
        };
        let mut filters = Vec::new();
        for (dim, value) in &spec.filters {
            let at = resolve(dim)?;
            if let Source::Period = at {
                check_period_label(value, spec.period)?;
            }
            filters.push((at, value.as_bytes().to_vec()));
        }
        let split = match split {
            Some((column, parts)) => {
                let at = header.require(column, Code::UnknownDimension, source, || {
                    format!("no column `{column}` to split the records by")
                })?;
                let index = parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.as_bytes().to_vec(), i))
                    .collect();
                Some((at, index))
            }
            None => None,
        };
        let until = spec.until.map(|d| {
            let text = d.format("%Y-%m-%d").to_string();
            let mut bytes = [0u8; 10];
            bytes.copy_from_slice(text.as_bytes());
            bytes
        });
        Ok(Self {
            until,
            split,
            fields: header.len(),
            names: (0..header.len())
                .map(|i| header.name(i).to_string())
                .collect(),
            date,
            dates: DATE_COLUMNS
                .iter()
                .filter_map(|c| header.position(c))
                .collect(),
            grain: spec.period,
            rows: resolve(&spec.rows)?,
            cols: spec.cols.as_deref().map(resolve).transpose()?,
            filters,
        })
    }

    /// How many tables the pass makes.
    fn parts(&self) -> usize {
        self.split.as_ref().map_or(1, |(_, index)| index.len())
    }

    /// Tallies one record (already split into fields) into its part's tally.
    #[inline]
    fn record(
        &self,
        fields: &[&[u8]],
        line: u64,
        tallies: &mut [Tally],
        errors: &mut ErrorSink,
        source: &str,
    ) {
        if fields.len() != self.fields {
            errors.push(
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
                errors.push(
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
        let date = fields[self.date];
        if !valid || date.is_empty() || self.until.is_some_and(|u| date > &u[..]) {
            return;
        }
        let tally = match &self.split {
            None => &mut tallies[0],
            Some((at, index)) => match index.get(fields[*at]) {
                Some(&i) => &mut tallies[i],
                None => return,
            },
        };
        let mut period_buf = [0u8; 7];
        let period: &[u8] = match self.grain {
            PeriodGrain::Month => &date[..7],
            PeriodGrain::Quarter => {
                let month = (date[5] - b'0') * 10 + (date[6] - b'0');
                period_buf[..4].copy_from_slice(&date[..4]);
                period_buf[4..6].copy_from_slice(b"-Q");
                period_buf[6] = b'1' + (month - 1) / 3;
                &period_buf
            }
        };
        let value = |s: Source| match s {
            Source::Column(i) => fields[i],
            Source::Period => period,
        };
        if !self.filters.iter().all(|(s, v)| value(*s) == v.as_slice()) {
            return;
        }
        let row = value(self.rows);
        let col = self.cols.map_or(&b""[..], value);
        for (s, v) in [(Some(self.rows), row), (self.cols, col)] {
            if let Some(Source::Column(i)) = s
                && v.eq_ignore_ascii_case(b"total")
            {
                errors.push(
                    line,
                    Code::InvalidValue,
                    format!(
                        "{source} line {line}, column {}: \"{}\" is reserved for totals and \
                         participant records carry none",
                        self.names[i],
                        String::from_utf8_lossy(v)
                    ),
                );
                return;
            }
        }
        tally.add(row, col, 1, line);
    }
}

/// A `--where period=…` value must be a label of the chosen grain.
fn check_period_label(value: &str, grain: PeriodGrain) -> Result<(), super::Blocked> {
    let b = value.as_bytes();
    let year = b.len() >= 4 && b[..4].iter().all(u8::is_ascii_digit);
    let ok = match grain {
        PeriodGrain::Month => {
            b.len() == 7
                && year
                && b[4] == b'-'
                && b[5..].iter().all(u8::is_ascii_digit)
                && (1..=12).contains(&((b[5] - b'0') * 10 + (b[6] - b'0')))
        }
        PeriodGrain::Quarter => {
            b.len() == 7 && year && &b[4..6] == b"-Q" && (b'1'..=b'4').contains(&b[6])
        }
    };
    if ok {
        Ok(())
    } else {
        let shape = match grain {
            PeriodGrain::Month => "a month (YYYY-MM)",
            PeriodGrain::Quarter => "a quarter (YYYY-Qn); --period quarter was given",
        };
        Err(super::Blocked::one(
            Code::InvalidValue,
            format!("--where {PERIOD}={value}: not {shape}"),
        ))
    }
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
    plan: &Plan,
    source: &str,
) -> (Vec<Tally>, ErrorSink) {
    let mut tally: Vec<Tally> = (0..plan.parts()).map(|_| Tally::default()).collect();
    let mut errors = ErrorSink::default();
    loop {
        let block = {
            let rx = blocks.lock().expect("no worker panics holding the lock");
            rx.recv()
        };
        let Ok(mut block) = block else { break };
        tally_block(&block, plan, source, &mut tally, &mut errors);
        block.bytes.clear();
        // The reader may have finished and gone: then the buffer is just freed.
        let _ = free.try_send(block.bytes);
    }
    (tally, errors)
}

/// Tallies every record in a block.
fn tally_block(
    block: &Block,
    plan: &Plan,
    source: &str,
    tally: &mut [Tally],
    errors: &mut ErrorSink,
) {
    let bytes = &block.bytes[..];
    if memchr(b'"', bytes).is_some() || std::str::from_utf8(bytes).is_err() {
        return tally_block_slowly(block, plan, source, tally, errors);
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
            plan.record(&fields, line, tally, errors, source);
        }
        line += 1;
        start = end + 1;
    }
}

/// The careful path for a block with quoted fields or invalid UTF-8: a full
/// CSV parser, and a named error for each record that is not UTF-8.
fn tally_block_slowly(
    block: &Block,
    plan: &Plan,
    source: &str,
    tally: &mut [Tally],
    errors: &mut ErrorSink,
) {
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
                errors.push(
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
            errors.push(
                line,
                Code::MalformedCsv,
                format!("{source} line {line}, column {column}: invalid UTF-8"),
            );
            continue;
        }
        let fields: Vec<&[u8]> = record.iter().collect();
        plan.record(&fields, line, tally, errors, source);
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
    use crate::sanitiser::{Blocked, Code, Measure};
    use proptest::prelude::*;

    const HEADER: &str = "participant_id,la_code,payment_group,disability,referral_date,\
                          attachment_date,job_start_date,job_outcome_date,first_sustainment_date\n";

    fn spec(rows: &str, cols: Option<&str>) -> TableSpec {
        TableSpec {
            cols: cols.map(str::to_string),
            ..TableSpec::new(Measure::Referrals, rows)
        }
    }

    fn read(
        input: &[u8],
        spec: &TableSpec,
        workers: usize,
        block: usize,
    ) -> Result<CountTable, Blocked> {
        read_records_with(
            input,
            "in.csv",
            spec,
            &PaymentGroups::default(),
            None,
            workers,
            block,
        )
        .map(|mut tables| tables.pop().expect("one table"))
        .map_err(|e| match e {
            InputError::Blocked(b) => b,
            other => panic!("unexpected I/O error: {other}"),
        })
    }

    fn record(id: u32, la: &str, group: &str, disability: &str, dates: [&str; 5]) -> String {
        format!("P{id:09},{la},{group},{disability},{}\n", dates.join(","))
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
        let month = read(
            input.as_bytes(),
            &spec("payment_group", Some("period")),
            1,
            BLOCK,
        )
        .expect("ok");
        assert_eq!(month.rows(), ["JSA 18-24", "JSA 25+"]);
        assert_eq!(month.cols(), ["2012-01", "2012-03", "2012-04"]);
        assert_eq!(month.cells(), [vec![0, 0, 1], vec![1, 1, 0]]);

        let mut quarter = spec("period", None);
        quarter.period = PeriodGrain::Quarter;
        let q = read(input.as_bytes(), &quarter, 2, 64).expect("ok");
        assert_eq!(q.rows(), ["2012-Q1", "2012-Q2"]);
        assert_eq!(q.cells(), [vec![2], vec![1]]);

        let mut starts = spec("la_code", None);
        starts.measure = Measure::JobStarts;
        let s = read(input.as_bytes(), &starts, 1, BLOCK).expect("ok");
        assert_eq!(
            (s.rows(), s.cells()),
            (&["E2".to_string()][..], &[vec![1]][..])
        );
    }

    #[test]
    fn filters_narrow_the_population() {
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
        assert_eq!(
            (t.rows(), t.cells()),
            (&["Y".to_string()][..], &[vec![1]][..])
        );

        s.filters = vec![("period".into(), "2012-13".into())];
        let blocked = read(input.as_bytes(), &s, 1, BLOCK).expect_err("not a month");
        assert!(blocked.has(Code::InvalidValue), "{blocked}");
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
                "error[E_INVALID_VALUE]: in.csv line 6, column payment_group: \"Total\" is reserved for totals and participant records carry none",
            ]
        );
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
    fn missing_columns_and_unknown_dimensions_are_named() {
        let no_date = "participant_id,la_code,payment_group\nP1,E1,JSA 25+\n";
        let blocked =
            read(no_date.as_bytes(), &spec("payment_group", None), 1, BLOCK).expect_err("no date");
        assert!(blocked.has(Code::MissingColumn));
        assert!(blocked.to_string().contains("referral_date"), "{blocked}");

        let input = format!(
            "{HEADER}{}",
            record(1, "E1", "JSA 25+", "N", ["2012-01-31", "", "", "", ""])
        );
        let blocked = read(input.as_bytes(), &spec("gender", None), 1, BLOCK).expect_err("unknown");
        assert!(blocked.has(Code::UnknownDimension));
        assert!(blocked.to_string().contains("`gender`"), "{blocked}");

        let blocked = read(b"", &spec("payment_group", None), 1, BLOCK).expect_err("empty");
        assert!(blocked.has(Code::MalformedCsv));
    }

    #[test]
    fn until_leaves_out_later_dates() {
        let mut input = String::from(HEADER);
        input += &record(1, "E1", "JSA 25+", "N", ["2012-01-31", "", "", "", ""]);
        input += &record(2, "E1", "JSA 25+", "N", ["2012-02-01", "", "", "", ""]);
        let mut s = spec("period", None);
        s.until = chrono::NaiveDate::from_ymd_opt(2012, 1, 31);
        let t = read(input.as_bytes(), &s, 1, BLOCK).expect("ok");
        assert_eq!(
            (t.rows(), t.cells()),
            (&["2012-01".to_string()][..], &[vec![1]][..])
        );
    }

    #[test]
    fn a_header_alone_is_an_empty_table() {
        let t = read(HEADER.as_bytes(), &spec("payment_group", None), 2, 16).expect("ok");
        assert!(t.rows().is_empty());
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
        assert_eq!(t.cells(), [vec![2]]);
    }

    /// A record with optional quoting, embedded commas and newlines, CRLF.
    fn arb_record() -> impl Strategy<Value = (String, String, String, Option<String>, bool)> {
        (
            prop::sample::select(vec!["E1", "E2", "E3"]),
            prop::sample::select(vec!["JSA 25+", "JSA 18-24", "IB/IS"]),
            prop::sample::select(vec!["Y", "N", "", "a,b", "line\nbreak", "say \"\"x\"\""]),
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
        /// number of workers gives the same table as one block on one worker.
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
            let s = spec("disability", Some("la_code"));
            let whole = read(input.as_bytes(), &s, 1, 1 << 20).expect("valid");
            let split = read(input.as_bytes(), &s, workers, block).expect("valid");
            prop_assert_eq!(&whole, &split);
            let expected: usize = records.iter().filter(|r| r.3.is_some()).count();
            let counted: u64 = whole.cells().iter().flatten().sum();
            prop_assert_eq!(counted as usize, expected);
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
            let s = spec("payment_group", Some("period"));
            let parts = vec!["E1".to_string(), "E3".to_string(), "E9".to_string()];
            let split = read_records_with(input.as_bytes(), "in.csv", &s, &PaymentGroups::default(), Some(("la_code", &parts)), workers, block)
                .expect("valid");
            prop_assert_eq!(split.len(), 3);
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
}
