//! `ferrolb-speaker`: applies its node's NodeAnnouncement — answers ARP and NDP
//! for the node's active IPs and announces each IP it takes. In a cluster it
//! watches its own NodeAnnouncement, renews its Lease and reports in the status;
//! with `--from-file` it runs with no cluster. It opens a BGP session per
//! `spec.bgp` entry and advertises that entry's prefixes.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ferrolb_api::bgppeer::SecretKeyRef;
use ferrolb_api::constants::{FAILOVER_SECRET, NAMESPACE};
use ferrolb_api::{NodeAnnouncement, NodeAnnouncementSpec};
use ferrolb_speaker::bgp::Bgp;
use ferrolb_speaker::bgp::session::Passwords;
use ferrolb_speaker::cluster::{self, StartFailover};
use ferrolb_speaker::failover::wire::Key;
use ferrolb_speaker::failover::{Counters as FailoverCounters, Failover, Settings};
use ferrolb_speaker::l2::responder::Counters;
use ferrolb_speaker::node::Layer2;
use ferrolb_speaker::runner::Runner;
use tokio::sync::{Notify, watch};

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
    /// The interface to answer on when the NodeAnnouncement names none
    /// (default: the one carrying `--node-ip`, else the default route's).
    #[arg(long)]
    interface: Option<String>,
    /// The node's InternalIP (the DaemonSet passes `status.hostIP`): the
    /// interface carrying it is answered on by default, and other speakers
    /// probe this one there.
    #[arg(long, env = "NODE_IP")]
    node_ip: Option<IpAddr>,
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
    /// Where to serve /metrics, /healthz and /readyz (the process exits when
    /// it cannot listen there).
    #[arg(long, default_value = "127.0.0.1:9092")]
    metrics_addr: SocketAddr,
    /// Without a cluster: where TCP-MD5 passwords are, laid out as mounted
    /// Secrets (`DIR/<namespace>/<name>/<key>`).
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
    /// UDP port of the fast failover path (probes between speakers).
    #[arg(long, default_value_t = 7473)]
    probe_port: u16,
    /// The address other speakers probe this one at, IPv4 or IPv6 (default:
    /// `--node-ip`, else the first IPv4 address of the interface answered on,
    /// else its first global IPv6 one).
    #[arg(long)]
    probe_address: Option<IpAddr>,
    /// Milliseconds between probes of the active node.
    #[arg(long, default_value_t = 100)]
    probe_interval_ms: u64,
    /// Probes missed in a row before the standby takes over.
    #[arg(long, default_value_t = 3)]
    probe_misses: u32,
    /// The Secret (in the speaker namespace) with the failover key; the
    /// operator creates it.
    #[arg(long, default_value = FAILOVER_SECRET)]
    failover_secret: String,
    /// Without a cluster: a file holding the failover key (no fast path
    /// without one).
    #[arg(long)]
    failover_key_file: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

/// Where other speakers reach this one: `--probe-address`, `--node-ip`, or
/// an address of the interface answered on (looked up inside `--netns`).
fn probe_address(cli: &Cli) -> Result<SocketAddr> {
    if let Some(ip) = cli.probe_address.or(cli.node_ip) {
        return Ok(SocketAddr::new(ip, cli.probe_port));
    }
    let (interface, node_ip, port) = (cli.interface.clone(), cli.node_ip, cli.probe_port);
    let ip = ferrolb_speaker::netns::run_in(cli.netns.clone(), move || {
        let found = || -> Result<IpAddr> {
            let name = match interface {
                Some(name) => name,
                None => ferrolb_speaker::l2::interface::choose_default(node_ip)?.0,
            };
            ferrolb_speaker::l2::interface::probe_ip(&name)
        };
        found().map_err(|e| std::io::Error::other(format!("{e:#}")))
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// Starts the fast path with `key`; `None` (logged) when it cannot.
fn start_failover(
    cli: &Cli,
    node: String,
    changed: Arc<Notify>,
    counters: Arc<FailoverCounters>,
) -> StartFailover {
    let settings = Settings {
        interval: Duration::from_millis(cli.probe_interval_ms.max(10)),
        misses: cli.probe_misses.max(1),
    };
    let address = probe_address(cli);
    let netns = cli.netns.clone();
    Box::new(move |key| {
        let address = match address {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "no address for the fast failover path; set --probe-address");
                return None;
            }
        };
        match Failover::start(node, netns, address, key, settings, changed, counters) {
            Ok(failover) => Some((
                Arc::new(failover),
                settings.deadline() + 2 * settings.interval,
            )),
            Err(e) => {
                tracing::warn!(error = %e, %address, "cannot start the fast failover path");
                None
            }
        }
    })
}

fn read(path: &Path) -> Result<NodeAnnouncementSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let announcement: NodeAnnouncement = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a NodeAnnouncement", path.display()))?;
    Ok(announcement.spec)
}

fn read_name(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)?;
    let announcement: NodeAnnouncement = serde_yaml::from_str(&text)?;
    announcement
        .metadata
        .name
        .context("the NodeAnnouncement has no name")
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

/// Follows a NodeAnnouncement file: IPs added are announced, IPs removed are
/// silent at once; BGP sessions follow `spec.bgp`; with a failover key the
/// fast path runs too. Session and takeover states are logged.
async fn from_file(
    path: PathBuf,
    mut runner: Runner,
    failover: Option<(Arc<Failover>, Duration)>,
    failover_changed: Arc<Notify>,
    mut stopping: watch::Receiver<bool>,
) -> Result<()> {
    if let Some((failover, grace)) = failover {
        runner.set_failover(failover, grace);
    }
    let mut last = read(&path)?;
    runner.apply(&last);
    let changed = runner.bgp.changed();
    let mut reported = String::new();
    loop {
        let hold = runner.holding_until();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = changed.notified() => {}
            _ = failover_changed.notified() => runner.reapply(),
            _ = tokio::time::sleep_until(hold.unwrap_or_else(tokio::time::Instant::now)), if hold.is_some() => runner.reapply(),
            _ = stopping.wait_for(|s| *s) => {
                runner.stop().await;
                return Ok(());
            }
        }
        match read(&path) {
            Ok(spec) if spec != last => {
                runner.apply(&spec);
                last = spec;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the NodeAnnouncement; keeping the last one")
            }
        }
        let (taken, yielded) = runner.failover_view();
        let states = format!(
            "{} taken={taken:?} yielded={yielded:?}",
            serde_json::to_string(&runner.bgp.states())?
        );
        if states != reported {
            tracing::info!(sessions = %states, "state");
            reported = states;
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    ferrolb_runtime::init_logs(cli.log_json);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let layer2 = Layer2::new(cli.netns.clone(), cli.interface.clone(), cli.node_ip);
    // Another node's gratuitous ARP for an IP answered here wakes the loop
    // that yields it.
    let failover_changed = Arc::new(Notify::new());
    layer2.claims.wake(failover_changed.clone());
    let counters: Arc<Counters> = layer2.counters.clone();
    let client = match &cli.from_file {
        Some(_) => None,
        None => Some(
            ferrolb_runtime::client()
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach the apiserver: {e}"))?,
        ),
    };
    let passwords = match &client {
        Some(client) => cluster::secret_passwords(client.clone()),
        None => file_passwords(cli.secrets_dir.clone()),
    };
    let bgp = Bgp::new(cli.netns.clone(), passwords);
    let registry = bgp.registry();
    let mut runner = Runner::new(layer2, bgp);
    runner.check_node();
    let kernel_answers_arp = runner.kernel_answers_arp.clone();
    let failover_counters = Arc::new(FailoverCounters::default());
    let node_name = cli
        .node
        .clone()
        .or_else(|| cli.from_file.as_deref().and_then(|p| read_name(p).ok()))
        .unwrap_or_else(|| "node".to_string());
    let start = start_failover(
        &cli,
        node_name.clone(),
        failover_changed.clone(),
        failover_counters.clone(),
    );
    // Without a cluster there is nothing to wait for.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(cli.from_file.is_some()));
    let ready_now = ready.clone();
    let metrics = Arc::new(ferrolb_speaker::metrics::registry(
        &counters,
        &failover_counters,
        &kernel_answers_arp,
        registry,
    ));
    let served = ferrolb_runtime::serve(
        cli.metrics_addr,
        move || ferrolb_runtime::encode(&metrics),
        move || ready_now.load(Ordering::Relaxed),
    )?;
    let (stop, stopping) = watch::channel(false);
    let work = async {
        match &cli.from_file {
            Some(path) => {
                let failover = match &cli.failover_key_file {
                    Some(file) => {
                        let key = std::fs::read(file)
                            .with_context(|| format!("reading {}", file.display()))?;
                        start(Key::new(&key))
                    }
                    None => None,
                };
                from_file(path.clone(), runner, failover, failover_changed, stopping).await
            }
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
                    failover_secret: cli.failover_secret.clone(),
                    failover_changed,
                    ready,
                };
                cluster::run(client, config, runner, start, stopping).await
            }
        }
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut work = std::pin::pin!(work);
    tokio::select! {
        result = &mut work => return result,
        served = served => anyhow::bail!("the metrics server stopped: {served:?}"),
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: handing IPs over, ending BGP sessions");
    let _ = stop.send(true);
    if let Ok(result) = tokio::time::timeout(Duration::from_secs(5), work).await {
        result?;
    }
    tracing::info!("stopped");
    Ok(())
}
