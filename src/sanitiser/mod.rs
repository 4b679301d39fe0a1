//! The disclosure-control engine (../shared/SANITISER.md).

mod spec;

pub use spec::*;
