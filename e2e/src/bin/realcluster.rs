//! `ferrolb-realcluster`: a real multi-node Kubernetes cluster on this
//! machine (kubelet, containerd and kube-proxy per node, each node a network
//! namespace), with ferrolb's image and the test images loaded into every
//! node. `up` leaves it running; `down` removes everything it made, even
//! after a killed run.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ferrolb_e2e::controlplane::workspace_root;
use ferrolb_e2e::image::{PAUSE, TAG, build_all};
use ferrolb_e2e::real::{Options, ProxyMode, RealCluster, down_dir};

#[derive(Parser)]
#[command(about = "Start or stop a real multi-node Kubernetes cluster on this machine")]
struct Cli {
    /// Where the cluster keeps its state, certificates, kubeconfig and logs.
    #[arg(long, env = "FERROLB_REAL_DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the images, start the control plane and the nodes, wait until
    /// every node is Ready, and leave it running.
    Up {
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// kube-proxy's mode: iptables or nftables.
        #[arg(long, default_value = "iptables")]
        proxy: String,
    },
    /// Stop everything and remove the folder, processes, namespaces, mounts,
    /// cgroups and routes.
    Down,
    /// Kill a node's kubelet, containerd, kube-proxy and Pods at once, as a
    /// crash would.
    Crash {
        /// The node.
        node: String,
    },
    /// Start a crashed node's daemons again.
    Restart {
        /// The node.
        node: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    let dir = cli.dir.unwrap_or_else(|| root.join(".cache/real"));
    match cli.command {
        Cmd::Up { nodes, proxy } => {
            down_dir(&dir);
            let built = build_all(&root.join("target/debug"), &root.join(".cache/images"))?;
            let cluster = RealCluster::start(Options {
                nodes,
                proxy: if proxy == "nftables" {
                    ProxyMode::Nftables
                } else {
                    ProxyMode::Iptables
                },
                images: built.archives.iter().map(|(_, p)| p.clone()).collect(),
                sandbox_image: format!("{PAUSE}:{TAG}"),
                dir: dir.clone(),
            })?;
            eprintln!(
                "{} node(s) Ready after {:.1}s (slot {})",
                cluster.nodes.len(),
                cluster.ready_after.as_secs_f64(),
                cluster.slot.0
            );
            println!("export KUBECONFIG={}", cluster.kubeconfig.display());
            println!("alias kubectl={}", cluster.kubectl_bin.display());
            cluster.detach();
        }
        Cmd::Crash { node } => RealCluster::attach(&dir)?.crash(&node)?,
        Cmd::Restart { node } => RealCluster::attach(&dir)?.restart(&node)?,
        Cmd::Down => {
            if down_dir(&dir) {
                eprintln!("cluster in {} removed", dir.display());
            }
        }
    }
    Ok(())
}
