//! The disclosure-control engine (../shared/SANITISER.md).
//!
//! Data meets it in this order:
//!
//! 1. [`check_spec`]: rules that depend on the request alone, against the
//!    declared dimensions of a [`Catalogue`], before any input is read: R7
//!    no outcome volumes, R9 no outcome rates, R14 declared dimensions only,
//!    R15 an explicit, bounded [`PeriodRange`] where `period` lays a table
//!    out, R16 an internal file for one LA.
//! 2. A reader turns the source into a [`CountTable`] of true counts, laid
//!    out from the specification alone: every declared category of every
//!    dimension used, in reference order (R15). [`read_counts`] for the long
//!    counts CSV (R1 validation, R2 declared totals), [`read_records`] for
//!    participant records in one streaming, parallel pass with bounded
//!    memory. Every value in a column the table uses must be declared
//!    (R14), and an internal file counts only its recipient's participants
//!    (R16).
//! 3. [`sanitise`] rounds (R3), recomputes totals from rounded cells (R4),
//!    turns outcome measures into shares (R8), flags distortion and small
//!    cells (R5, R6), labels the file (R10), and in strict mode turns
//!    warnings into blocks (R13). Its [`Sanitised`] holds only
//!    [`Rounded`] figures or whole percentages.
//! 4. The release ledger (R11, [`crate::provider::ledger`]) slots in here:
//!    a [`Sanitised`] becomes a release record (its category codes, filters
//!    and, for shares, the rounded counts behind them), the audit judges it
//!    against what the same recipient already holds and knows, and its
//!    findings join the table's with [`Sanitised::add_findings`] before
//!    anything renders.
//! 5. [`render`] writes the CSV an LA receives (saying what it is, who made
//!    it, for which period, R10), or the JSON with findings.
//!
//! Everything here is pure and deterministic (R12): no clock, no randomness,
//! no I/O beyond the reader it is handed.

mod counts;
mod findings;
mod input;
mod layout;
mod period;
mod records;
pub mod render;
mod rounding;
mod rules;
mod spec;
mod table;

pub use counts::read_counts;
pub use findings::{Blocked, Code, Finding, Severity};
pub use input::InputError;
pub use layout::{Catalogue, SpecError, SpecErrors, SpecKey, check_spec};
pub use period::{MAX_MONTHS, MAX_QUARTERS, Period, PeriodError, PeriodRange};
pub use records::{read_records, read_records_split};
pub use rounding::{MAX_COUNT, Rounded};
pub use rules::{Body, METHOD, PUBLISHED_LABEL, Sanitised, internal_label, sanitise};
pub use spec::*;
pub use table::CountTable;
