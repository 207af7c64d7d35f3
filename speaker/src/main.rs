//! `ferrolb-speaker`: applies its node's NodeAnnouncement: ARP/NDP and BGP.
//!
//! Only the command line exists so far; the component itself is issue #5.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "ferrolb speaker: applies its node's NodeAnnouncement: ARP/NDP and BGP"
)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "ferrolb-speaker: not built yet (issue #5); this binary only parses its command line"
    );
    ExitCode::FAILURE
}
