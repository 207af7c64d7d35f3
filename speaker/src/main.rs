//! `ferrolb-speaker`: applies its node's NodeAnnouncement — answers ARP and NDP
//! for the node's active IPs and announces each IP it takes. In a cluster it
//! watches its own NodeAnnouncement, renews its Lease and reports in the status;
//! with `--from-file` it runs with no cluster. It opens a BGP session per
//! `spec.bgp` entry and advertises that entry's prefixes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ferrolb_api::bgppeer::SecretKeyRef;
use ferrolb_api::constants::NAMESPACE;
use ferrolb_api::{NodeAnnouncement, NodeAnnouncementSpec};
use ferrolb_speaker::bgp::Bgp;
use ferrolb_speaker::bgp::session::Passwords;
use ferrolb_speaker::cluster;
use ferrolb_speaker::l2::responder::Counters;
use ferrolb_speaker::node::{Layer2, Wanted};
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "ferrolb speaker: applies its node's NodeAnnouncement"
)]
struct Cli {
    /// This node's name (its NodeAnnouncement and Lease are named after it).
    #[arg(long, env = "NODE_NAME")]
    node: Option<String>,
    /// Run without a cluster from this NodeAnnouncement (YAML); re-read when it
    /// changes.
    #[arg(long)]
    from_file: Option<PathBuf>,
    /// The interface to answer on when the NodeAnnouncement names none (default:
    /// the one carrying the node's address).
    #[arg(long)]
    interface: Option<String>,
    /// Answer inside this network namespace (a file such as /run/netns/NAME)
    /// while talking to the apiserver from the process's own: for tests that
    /// run nodes as namespaces.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// The namespace of the speaker Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = NAMESPACE)]
    namespace: String,
    /// Seconds the speaker Lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Where to serve /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:9092")]
    metrics_addr: SocketAddr,
    /// Without a cluster: where TCP-MD5 passwords are, laid out as mounted
    /// Secrets (`DIR/<namespace>/<name>/<key>`).
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn read(path: &Path) -> Result<NodeAnnouncementSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let announcement: NodeAnnouncement = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a NodeAnnouncement", path.display()))?;
    Ok(announcement.spec)
}

/// Reads TCP-MD5 passwords laid out as a mounted Secret would be:
/// `DIR/<namespace>/<name>/<key>`.
fn file_passwords(dir: Option<PathBuf>) -> Passwords {
    Arc::new(move |reference: SecretKeyRef| {
        let dir = dir.clone();
        Box::pin(async move {
            let dir = dir.ok_or_else(|| {
                "passwords are read from Secrets in a cluster, or from --secrets-dir".to_string()
            })?;
            let path = dir
                .join(&reference.namespace)
                .join(&reference.name)
                .join(&reference.key);
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        })
    })
}

fn metrics(counters: &Counters) -> String {
    let line = |name: &str, help: &str, value: u64| {
        format!(
            "# HELP ferrolb_speaker_{name} {help}\n# TYPE ferrolb_speaker_{name} counter\nferrolb_speaker_{name}_total {value}\n"
        )
    };
    [
        line(
            "arp_requests",
            "ARP requests for an IP this node announces",
            counters.arp_requests.load(Ordering::Relaxed),
        ),
        line(
            "arp_replies",
            "ARP replies sent",
            counters.arp_replies.load(Ordering::Relaxed),
        ),
        line(
            "ndp_requests",
            "Neighbor Solicitations for an IP this node announces",
            counters.ndp_requests.load(Ordering::Relaxed),
        ),
        line(
            "ndp_replies",
            "Neighbor Advertisements sent in reply",
            counters.ndp_replies.load(Ordering::Relaxed),
        ),
        line(
            "gratuitous",
            "Gratuitous ARPs and unsolicited Neighbor Advertisements sent",
            counters.gratuitous.load(Ordering::Relaxed),
        ),
        line(
            "malformed_frames",
            "Frames dropped as malformed",
            counters.malformed.load(Ordering::Relaxed),
        ),
    ]
    .concat()
        + "# EOF\n"
}

/// Follows a NodeAnnouncement file: IPs added are announced, IPs removed are
/// silent at once; BGP sessions follow `spec.bgp`. Session states are logged.
async fn from_file(
    path: PathBuf,
    mut layer2: Layer2,
    mut bgp: Bgp,
    mut stopping: watch::Receiver<bool>,
) -> Result<()> {
    let mut last = read(&path)?;
    layer2.apply(&Wanted::from_spec(&last));
    bgp.apply(&last.bgp);
    let changed = bgp.changed();
    let mut reported = String::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = changed.notified() => {}
            _ = stopping.wait_for(|s| *s) => {
                bgp.shutdown().await;
                return Ok(());
            }
        }
        match read(&path) {
            Ok(spec) if spec != last => {
                layer2.apply(&Wanted::from_spec(&spec));
                bgp.apply(&spec.bgp);
                last = spec;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the NodeAnnouncement; keeping the last one")
            }
        }
        let states = serde_json::to_string(&bgp.states())?;
        if states != reported {
            tracing::info!(sessions = %states, "BGP sessions");
            reported = states;
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    ferrolb_runtime::init_logs(cli.log_json);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let layer2 = Layer2::new(cli.netns.clone(), cli.interface.clone());
    let counters: Arc<Counters> = layer2.counters.clone();
    let client = match &cli.from_file {
        Some(_) => None,
        None => Some(kube::Client::try_default().await?),
    };
    let passwords = match &client {
        Some(client) => cluster::secret_passwords(client.clone()),
        None => file_passwords(cli.secrets_dir.clone()),
    };
    let bgp = Bgp::new(cli.netns.clone(), passwords);
    let registry = bgp.registry();
    tokio::spawn(ferrolb_runtime::serve(
        cli.metrics_addr,
        move || {
            let text = metrics(&counters);
            let text = text.strip_suffix("# EOF\n").unwrap_or(&text).to_string();
            text + &registry.metrics() + "# EOF\n"
        },
        || true,
    ));
    let (stop, stopping) = watch::channel(false);
    let work = async {
        match &cli.from_file {
            Some(path) => from_file(path.clone(), layer2, bgp, stopping).await,
            None => {
                let node = cli
                    .node
                    .clone()
                    .context("--node (or NODE_NAME) is needed in a cluster")?;
                let client = client.context("a cluster client")?;
                let config = cluster::Config {
                    node,
                    namespace: cli.namespace.clone(),
                    lease_seconds: cli.lease_seconds,
                };
                cluster::run(client, config, layer2, bgp, stopping).await
            }
        }
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut work = std::pin::pin!(work);
    tokio::select! {
        result = &mut work => return result,
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: ending BGP sessions");
    let _ = stop.send(true);
    if let Ok(result) = tokio::time::timeout(Duration::from_secs(5), work).await {
        result?;
    }
    tracing::info!("stopped");
    Ok(())
}
