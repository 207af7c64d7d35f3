//! `make image`: ferrolb's image from cargo's output, and the test images
//! (pause, echo), as OCI archives with a version tag — no container engine,
//! no registry. Load one into containerd with
//! `ctr -n k8s.io images import FILE`, into kind with
//! `kind load image-archive FILE`, into k3s with `k3s ctr images import FILE`.

use std::path::PathBuf;

use clap::Parser;
use ferrolb_e2e::controlplane::workspace_root;
use ferrolb_e2e::image::{build_all, ferrolb_image};

#[derive(Parser)]
#[command(about = "Builds ferrolb's image and the test images as OCI archives")]
struct Cli {
    /// Where the ferrolb binaries are (cargo's output folder).
    #[arg(long)]
    binaries: Option<PathBuf>,
    /// Where to write the archives.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write only ferrolb's image, tagged with this reference (a release:
    /// the name `config/default` pins, so the manifest finds it once the
    /// archive is loaded into the nodes' containerd).
    #[arg(long)]
    reference: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    let binaries = cli.binaries.unwrap_or_else(|| root.join("target/debug"));
    let out = cli.out.unwrap_or_else(|| root.join(".cache/images"));
    if let Some(reference) = cli.reference {
        let path = ferrolb_image(&binaries, &out, &reference)?;
        println!("{reference}\t{}", path.display());
        return Ok(());
    }
    let built = build_all(&binaries, &out)?;
    for (reference, path) in &built.archives {
        let size = std::fs::metadata(path)?.len();
        println!(
            "{reference}\t{}\t{:.1} MB",
            path.display(),
            size as f64 / 1e6
        );
    }
    Ok(())
}
