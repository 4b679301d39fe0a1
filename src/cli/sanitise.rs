//! `mishare sanitise`.

#[derive(Debug, clap::Args)]
pub(crate) struct SanitiseArgs {}

pub(crate) fn run(_args: &SanitiseArgs) -> super::Outcome {
    Ok(0)
}
