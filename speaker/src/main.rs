//! `ferrolb-speaker`: applies its node's NodeAnnouncement. So far the layer 2
//! part, from a file (`--from-file`): it answers ARP and NDP for the node's
//! active IPs and announces each IP it takes. Watching the NodeAnnouncement in
//! a cluster, the speaker Lease, status reporting and BGP are still to come.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ferrolb_api::NodeAnnouncement;
use ferrolb_api::address::parse_ip;
use ferrolb_api::nodeannouncement::L2Role;
use ferrolb_speaker::l2::interface::{Interface, default_interface, own_addresses};
use ferrolb_speaker::l2::responder::{self, Counters};
use ferrolb_speaker::l2::socket::PacketSocket;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(version, about = "ferrolb speaker: answers ARP/NDP for its node's IPs")]
struct Cli {
    /// Run without a cluster from this NodeAnnouncement (YAML); re-read when it
    /// changes.
    #[arg(long)]
    from_file: PathBuf,
    /// The interface to answer on when the NodeAnnouncement names none (default:
    /// the one carrying the node's address).
    #[arg(long)]
    interface: Option<String>,
    /// Where to serve /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:9092")]
    metrics_addr: SocketAddr,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

/// The active IPs of a NodeAnnouncement file, and the interfaces they name.
fn read(path: &Path) -> Result<(BTreeSet<IpAddr>, BTreeSet<String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let announcement: NodeAnnouncement = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a NodeAnnouncement", path.display()))?;
    let mut ips = BTreeSet::new();
    let mut interfaces = BTreeSet::new();
    for entry in announcement
        .spec
        .l2
        .iter()
        .filter(|e| e.role == L2Role::Active)
    {
        ips.insert(parse_ip(&entry.ip)?);
        interfaces.extend(entry.interfaces.iter().cloned());
    }
    Ok((ips, interfaces))
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

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    ferrolb_runtime::init_logs(cli.log_json);
    let (ips, named) = read(&cli.from_file)?;
    let interfaces: Vec<Interface> = if !named.is_empty() {
        named
            .iter()
            .map(|n| Interface::named(n))
            .collect::<Result<_>>()?
    } else if let Some(name) = &cli.interface {
        vec![Interface::named(name)?]
    } else {
        vec![default_interface()?]
    };
    let own = own_addresses()?;
    let (tx, rx) = watch::channel(ips);
    let counters = Arc::new(Counters::default());
    for interface in &interfaces {
        let socket = Arc::new(
            PacketSocket::open(interface.index)
                .with_context(|| format!("opening a packet socket on {}", interface.name))?,
        );
        tracing::info!(interface = %interface.name, mac = %interface.mac, "answering ARP and NDP");
        tokio::spawn(responder::answer(
            socket.clone(),
            interface.mac,
            rx.clone(),
            own.clone(),
            counters.clone(),
        ));
        tokio::spawn(responder::announce(
            socket,
            interface.mac,
            rx.clone(),
            counters.clone(),
        ));
    }
    {
        let counters = counters.clone();
        tokio::spawn(ferrolb_runtime::serve(
            cli.metrics_addr,
            move || metrics(&counters),
            || true,
        ));
    }
    // Follow the file: IPs added are announced, IPs removed are silent at once.
    let path = cli.from_file.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match read(&path) {
                Ok((ips, _)) => {
                    tx.send_if_modified(|current| {
                        let changed = *current != ips;
                        *current = ips;
                        changed
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the NodeAnnouncement; keeping the last one")
                }
            }
        }
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    Ok(())
}
