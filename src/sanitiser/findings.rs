//! Findings: what the sanitiser has to say about a table.
//!
//! A code's first letter is its severity: `E_` blocks (no output at all), `W_`
//! warns, `S_` says a figure was suppressed, `N_` notes. Warnings and notes go
//! into the JSON output and the audit log, never into the file sent to an LA
//! (R13). `--strict` turns warnings into blocks.

use std::fmt;

use serde::Serialize;

/// A finding's code. The names are a public interface: scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Code {
    /// R1: a count is not an ASCII decimal integer (negative, decimal,
    /// thousands-separated, exponent, non-numeric).
    InvalidValue,
    /// R1: a count is empty.
    MissingValue,
    /// R1: a count is above 10^12.
    ValueTooLarge,
    /// R2: a declared `Total` differs from the sum of the cells it covers.
    NonAdditive,
    /// R7: the counts view of job outcomes or sustainments.
    OutcomeVolume,
    /// R9, R14: one measure set against another: `measure` as a dimension
    /// or a filter naming another measure when outcomes are involved, or a
    /// filter on another measure's stage date (whatever its value, even
    /// empty: "whether it is set").
    OutcomeRate,
    /// The input is not well-formed CSV: a ragged row, invalid UTF-8, a
    /// duplicated or empty header.
    MalformedCsv,
    /// A column the input must have is missing: `count`, the measure's
    /// date, a declared dimension the table uses, `la_code` to select an
    /// internal file's recipient, or `period` to apply a period range.
    MissingColumn,
    /// R14: rows, columns or a filter name something that is not a declared
    /// dimension: an identifier, a date, free text, `count`, any undeclared
    /// column. The message lists the dimensions allowed.
    NotADimension,
    /// R14: a value that is not one of its dimension's declared categories
    /// (an unknown payment group, LA code or characteristic, a `period`
    /// that is not a label of the grain). Names file, line and column, or
    /// the `--where` that gave it. Replaces `E_UNKNOWN_PAYMENT_GROUP`.
    UndeclaredValue,
    /// R16: an internal file would show LAs separately (`la_code` as a row
    /// or column) or select another LA than its recipient.
    OtherLa,
    /// R15: the period range is missing where `period` lays the table out,
    /// longer than allowed, or of another grain than the table's.
    PeriodRange,
    /// A participant record holds a date that is not a real `YYYY-MM-DD`.
    InvalidDate,
    /// R5: rounding moved a total by at least 20 and at least 10%.
    Distortion,
    /// R6: small cells (1–9) are at least half of the non-zero cells.
    SmallCells,
    /// R10: no classification was given, so the file is labelled internal.
    Unclassified,
    /// R8: a column's base is too small, so its shares are suppressed.
    SmallBase,
    /// R8: a column's shares do not sum to 100.
    PctSum,
    /// Nobody was counted: every cell is a true zero.
    NoData,
    /// R11: with everything the LA has received and knows, a released
    /// figure or a finest cell has a single possible true value. Blocks
    /// that LA's file.
    Unpickable,
    /// R11: a released figure's or finest cell's interval of possible true
    /// values is at most the policy's width (default 4). Strict mode blocks.
    Narrowed,
    /// R11: a release covers the same measure and population as an earlier
    /// one with a different cut (other dimensions, grain or filters).
    Overlap,
    /// R11: a figure already sent is sent again with another rounded value
    /// (late records); the revised periods' cells become new unknowns.
    Revision,
    /// R11: a release made outside the schedule (decided by the pipeline).
    Adhoc,
    /// R11: no true counts fit every release and known figure of a part of
    /// the ledger (a wrong known figure, or late records that changed a
    /// period without any figure being sent again), so the audit cannot
    /// vouch for it. Blocks.
    LedgerInconsistent,
    /// R11: a release record or known figure in the ledger is not one the
    /// audit can read (its shape, periods or categories are wrong). Blocks.
    LedgerInvalid,
    /// R11: the ledger does not verify against the audit chain (a release
    /// or known figure was changed, deleted or added outside mishare, or
    /// the chain itself is broken), so no audit over it can be trusted.
    /// Blocks: nothing is spooled for the LAs it concerns.
    LedgerUnverified,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Note,
    Suppression,
    Warning,
    Error,
}

impl Code {
    /// The code as printed and as scripts match it.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidValue => "E_INVALID_VALUE",
            Code::MissingValue => "E_MISSING_VALUE",
            Code::ValueTooLarge => "E_VALUE_TOO_LARGE",
            Code::NonAdditive => "E_NON_ADDITIVE",
            Code::OutcomeVolume => "E_OUTCOME_VOLUME",
            Code::OutcomeRate => "E_OUTCOME_RATE",
            Code::MalformedCsv => "E_MALFORMED_CSV",
            Code::MissingColumn => "E_MISSING_COLUMN",
            Code::NotADimension => "E_NOT_A_DIMENSION",
            Code::UndeclaredValue => "E_UNDECLARED_VALUE",
            Code::OtherLa => "E_OTHER_LA",
            Code::PeriodRange => "E_PERIOD_RANGE",
            Code::InvalidDate => "E_INVALID_DATE",
            Code::Distortion => "W_DISTORTION",
            Code::SmallCells => "W_SMALL_CELLS",
            Code::Unclassified => "W_UNCLASSIFIED",
            Code::SmallBase => "S_SMALL_BASE",
            Code::PctSum => "N_PCT_SUM",
            Code::NoData => "N_NO_DATA",
            Code::Unpickable => "E_UNPICKABLE",
            Code::Narrowed => "W_NARROWED",
            Code::Overlap => "W_OVERLAP",
            Code::Revision => "W_REVISION",
            Code::Adhoc => "W_ADHOC",
            Code::LedgerInconsistent => "E_LEDGER_INCONSISTENT",
            Code::LedgerInvalid => "E_LEDGER_INVALID",
            Code::LedgerUnverified => "E_LEDGER_UNVERIFIED",
        }
    }

    /// The severity, read from the code's prefix.
    pub fn severity(self) -> Severity {
        match self.as_str().as_bytes()[0] {
            b'E' => Severity::Error,
            b'W' => Severity::Warning,
            b'S' => Severity::Suppression,
            _ => Severity::Note,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One finding: a code and a message for the provider's operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: Code,
    pub message: String,
}

impl Finding {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self.code.severity() {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Suppression => "suppressed",
            Severity::Note => "note",
        };
        write!(f, "{word}[{}]: {}", self.code, self.message)
    }
}

/// A table that may not leave: every reason, in input order.
///
/// `Display` prints one `error[CODE]: …` line per error, the format the
/// command line promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Blocked {
    /// The errors, at most [`Blocked::MAX_LISTED`] of them.
    pub errors: Vec<Finding>,
    /// How many more errors there were beyond those listed.
    pub more: u64,
}

impl Blocked {
    /// How many errors are kept; a file with a million bad rows needs its
    /// first hundred named, not all of them.
    pub const MAX_LISTED: usize = 100;

    /// A block with a single reason.
    pub fn one(code: Code, message: impl Into<String>) -> Self {
        Self {
            errors: vec![Finding::new(code, message)],
            more: 0,
        }
    }

    /// Whether any listed error has this code.
    pub fn has(&self, code: Code) -> bool {
        self.errors.iter().any(|e| e.code == code)
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error[{}]: {}", e.code, e.message)?;
        }
        if self.more > 0 {
            write!(
                f,
                "\nerror: … and {} more errors not listed; fix the ones above and run again",
                self.more
            )?;
        }
        Ok(())
    }
}

/// Collects input errors while a reader goes on, keeping the first
/// [`Blocked::MAX_LISTED`] and counting the rest.
#[derive(Debug, Default)]
pub(crate) struct ErrorSink {
    /// (line, finding), so errors found out of order can be sorted.
    kept: Vec<(u64, Finding)>,
    more: u64,
}

impl ErrorSink {
    pub(crate) fn push(&mut self, line: u64, code: Code, message: String) {
        if self.kept.len() < Blocked::MAX_LISTED {
            self.kept.push((line, Finding::new(code, message)));
        } else {
            self.more += 1;
        }
    }

    /// Adds another sink's errors (from a parallel worker). Each sink keeps
    /// its own first errors, so after sorting, the first listed are the
    /// first in the file whichever worker found them.
    pub(crate) fn merge(&mut self, other: ErrorSink) {
        self.more += other.more;
        self.kept.extend(other.kept);
    }

    /// `Ok` if nothing was pushed, else the errors in line order.
    pub(crate) fn finish(mut self) -> Result<(), Blocked> {
        if self.kept.is_empty() {
            return Ok(());
        }
        self.kept.sort_by_key(|(line, _)| *line);
        if self.kept.len() > Blocked::MAX_LISTED {
            self.more += (self.kept.len() - Blocked::MAX_LISTED) as u64;
            self.kept.truncate(Blocked::MAX_LISTED);
        }
        Err(Blocked {
            errors: self.kept.into_iter().map(|(_, f)| f).collect(),
            more: self.more,
        })
    }
}
