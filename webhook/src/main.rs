//! `ferrolb-webhook`: validates ferrolb objects at admission.
//!
//! Only the command line exists so far; the component itself is issue #4.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "ferrolb webhook: validates ferrolb objects at admission"
)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "ferrolb-webhook: not built yet (issue #4); this binary only parses its command line"
    );
    ExitCode::FAILURE
}
