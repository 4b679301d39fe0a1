//! The `mishare` binary: parse the command line, set up logging, run the
//! command, and turn its result into an exit status. Everything else lives in
//! the library (`src/lib.rs`) or in the command-line edge (`src/cli/`).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
