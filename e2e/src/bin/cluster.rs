//! `ferrolb-cluster`: the test control plane for people (`make cluster-up`,
//! `make cluster-down`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ferrolb_e2e::controlplane::{ControlPlane, binaries, stop_detached, workspace_root};

#[derive(Parser)]
#[command(about = "Start or stop the local test control plane (etcd + kube-apiserver)")]
struct Cli {
    /// Where the running cluster keeps its state, certificates, kubeconfig and logs.
    #[arg(long, env = "FERROLB_CLUSTER_DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start etcd and kube-apiserver in the background and wait until ready.
    Up,
    /// Stop them and remove the folder.
    Down,
    /// Print the folder holding kubectl, kube-apiserver and etcd (building them once).
    Bin,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let dir = cli
        .dir
        .unwrap_or_else(|| workspace_root().join(".cache/cluster"));
    match cli.command {
        Cmd::Up => {
            if dir.join("kube-apiserver.pid").exists() {
                stop_detached(&dir)?;
            }
            let plane = ControlPlane::start_in(&dir)?;
            let kubectl = plane.kubectl_path();
            let kubeconfig = plane.kubeconfig.clone();
            eprintln!(
                "control plane ready at {} after {:.1}s",
                plane.server,
                plane.ready_after.as_secs_f64()
            );
            plane.detach();
            println!("export KUBECONFIG={}", kubeconfig.display());
            println!("alias kubectl={}", kubectl.display());
        }
        Cmd::Down => {
            if stop_detached(&dir)? {
                eprintln!("control plane stopped, {} removed", dir.display());
            } else {
                eprintln!("no control plane was running in {}", dir.display());
            }
        }
        Cmd::Bin => println!("{}", binaries()?.display()),
    }
    Ok(())
}
