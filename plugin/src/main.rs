//! `kubectl ferrolb …` (a kubectl plugin: the binary is `kubectl-ferrolb` on
//! the PATH).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ferrolb from kubectl.
#[derive(Parser)]
#[command(name = "kubectl ferrolb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert MetalLB's configuration into ferrolb.io objects on stdout: its
    /// legacy configuration (the ConfigMap `metallb-system/config`, under any name,
    /// or the text of its `config` key), Helm values with `configInline`, and
    /// `metallb.io` objects, in one YAML stream. Every field without an equivalent is a warning on stderr and a
    /// comment in the YAML; anything unreadable is an error naming the field, and
    /// the exit code is 1.
    Convert {
        /// The file to read; `-` (the default) reads stdin.
        #[arg(short = 'f', long = "filename", default_value = "-")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Convert { file } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                if let Err(e) = std::io::stdin().read_to_string(&mut text) {
                    eprintln!("error: cannot read stdin: {e}");
                    return ExitCode::FAILURE;
                }
                text
            } else {
                match std::fs::read_to_string(&file) {
                    Ok(text) => text,
                    Err(e) => {
                        eprintln!("error: cannot read {}: {e}", file.display());
                        return ExitCode::FAILURE;
                    }
                }
            };
            match kubectl_ferrolb::convert::convert(&text) {
                Ok(converted) => {
                    for warning in &converted.warnings {
                        eprintln!("warning: {warning}");
                    }
                    print!("{}", converted.to_yaml());
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("error: {why}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
