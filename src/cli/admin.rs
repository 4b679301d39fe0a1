//! The operator's commands on the provider's state.

use super::{Global, Outcome};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdminCommand {}

pub(crate) fn run(command: AdminCommand, _global: &Global) -> Outcome {
    match command {}
}
