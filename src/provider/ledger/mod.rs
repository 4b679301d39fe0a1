//! The release ledger's model and its exact audit (R11), as pure library
//! code: no I/O, no clock, no database; the same arguments give the same
//! answer. The storage, the pipeline hook and the commands build on it.
//!
//! - [`release`]: what an LA was sent ([`ReleaseTable`]), rounded figures
//!   only, in category codes, made from a [`crate::sanitiser::Sanitised`].
//! - [`known`]: figures an LA knows from elsewhere ([`Known`]), checked
//!   against the declared dimensions.
//! - [`model`]: from releases and known figures to unknowns (the true
//!   counts of cells) and constraints; revisions.
//! - [`solve`]: exact integer intervals (totally unimodular systems at the
//!   root, branch and bound elsewhere).
//! - [`audit`](mod@audit): [`audit()`], the intervals of every released
//!   figure and cell, and the findings (`E_UNPICKABLE`, `W_NARROWED`,
//!   `W_OVERLAP`, `W_REVISION`, `E_LEDGER_INCONSISTENT`, `E_LEDGER_INVALID`).

pub mod audit;
pub mod known;
pub mod model;
pub mod release;
mod solve;

pub use audit::{
    Audit, AuditPolicy, AuditStats, CellInterval, FigureInterval, Released, audit,
    audit_whole_ledger,
};
pub use known::{Known, KnownError, KnownPeriod, KnownValue};
pub use model::FigureKind;
pub use release::{Axis, Figures, ReleaseError, ReleaseTable};
