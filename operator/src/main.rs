//! `ferrolb-operator`: reconciles pools, Services and NodeAnnouncements.
//!
//! Only the command line exists so far; the component itself is issue #3.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "ferrolb operator: reconciles pools, Services and NodeAnnouncements"
)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "ferrolb-operator: not built yet (issue #3); this binary only parses its command line"
    );
    ExitCode::FAILURE
}
