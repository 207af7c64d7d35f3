//! Applies a NodeAnnouncement's layer 2 part: one responder per interface in
//! use, fed the active IPs; interfaces come and go with the announcement.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use ferrolb_api::NodeAnnouncementSpec;
use ferrolb_api::nodeannouncement::L2Role;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::failover::{Taken, Target};
use crate::l2::interface::{Interface, default_interface, own_addresses};
use crate::l2::responder::{self, Counters, WireClaims};
use crate::l2::socket::PacketSocket;

/// What this node does for an IP it stands by for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandbyFor {
    /// The active node.
    pub active: String,
    /// Where that node's speaker answers probes.
    pub probe: Option<SocketAddr>,
    /// Interfaces to answer on after a takeover; empty for the default.
    pub interfaces: Vec<String>,
    /// Probe the active node, take nothing over yet: another node still
    /// stands by (make-before-break).
    pub arming: bool,
}

/// What one NodeAnnouncement asks of layer 2 on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// IPs to answer for, by interface (`None`: the default interface).
    pub active: BTreeMap<Option<String>, BTreeSet<IpAddr>>,
    /// IPs this node stands by for.
    pub standby: BTreeMap<IpAddr, StandbyFor>,
    /// For active IPs: where their standby's speaker answers (hand-off target).
    pub handoff: BTreeMap<IpAddr, SocketAddr>,
    /// The standbys named for active IPs, and where each answers.
    pub standbys: BTreeMap<String, SocketAddr>,
}

impl Wanted {
    /// Reads a spec's layer 2 groups.
    pub fn from_spec(spec: &NodeAnnouncementSpec) -> Wanted {
        let mut wanted = Wanted::default();
        for group in &spec.l2 {
            match group.role {
                L2Role::Active => {
                    let interfaces: Vec<Option<String>> = if group.interfaces.is_empty() {
                        vec![None]
                    } else {
                        group.interfaces.iter().cloned().map(Some).collect()
                    };
                    for interface in interfaces {
                        wanted
                            .active
                            .entry(interface)
                            .or_default()
                            .extend(group.ips.iter());
                    }
                    if let Some(probe) = group.probe {
                        wanted
                            .handoff
                            .extend(group.ips.iter().map(|ip| (ip, probe)));
                        if let Some(standby) = &group.standby {
                            wanted.standbys.insert(standby.clone(), probe);
                        }
                    }
                }
                L2Role::Standby => {
                    let standby = StandbyFor {
                        active: group.standby_for.clone().unwrap_or_default(),
                        probe: group.probe,
                        interfaces: group.interfaces.clone(),
                        arming: group.arming,
                    };
                    wanted
                        .standby
                        .extend(group.ips.iter().map(|ip| (ip, standby.clone())));
                }
            }
        }
        wanted
    }

    /// Every active IP.
    pub fn active_ips(&self) -> BTreeSet<IpAddr> {
        self.active.values().flatten().copied().collect()
    }

    /// The active nodes to probe, with the IPs this node stands by for on
    /// each: an arming standby's node is probed (so the status can say it
    /// is heard) with none of its IPs to take.
    pub fn targets(&self) -> Vec<Target> {
        let mut by_node: BTreeMap<(String, SocketAddr), BTreeSet<IpAddr>> = BTreeMap::new();
        for (ip, standby) in &self.standby {
            if let Some(probe) = standby.probe {
                let ips = by_node.entry((standby.active.clone(), probe)).or_default();
                if !standby.arming {
                    ips.insert(*ip);
                }
            }
        }
        by_node
            .into_iter()
            .map(|((node, address), ips)| Target { node, address, ips })
            .collect()
    }

    /// What to do now: the spec, plus the IPs taken over, minus those yielded
    /// to a standby and those `held_back` (a starting speaker first listens
    /// for standbys that took its IPs over).
    pub fn effective(
        &self,
        taken: &BTreeMap<IpAddr, Taken>,
        yielded: &BTreeMap<IpAddr, String>,
        held_back: &BTreeSet<IpAddr>,
    ) -> Wanted {
        let mut out = Wanted::default();
        for (interface, ips) in &self.active {
            let kept: BTreeSet<IpAddr> = ips
                .iter()
                .filter(|ip| !yielded.contains_key(ip) && !held_back.contains(ip))
                .copied()
                .collect();
            if !kept.is_empty() {
                out.active.insert(interface.clone(), kept);
            }
        }
        for (ip, standby) in &self.standby {
            if !taken.contains_key(ip) {
                out.standby.insert(*ip, standby.clone());
                continue;
            }
            if standby.interfaces.is_empty() {
                out.active.entry(None).or_default().insert(*ip);
            }
            for interface in &standby.interfaces {
                out.active
                    .entry(Some(interface.clone()))
                    .or_default()
                    .insert(*ip);
            }
        }
        out
    }
}

/// A responder running on one interface.
struct Running {
    interface: Interface,
    ips: watch::Sender<BTreeSet<IpAddr>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The layer 2 side of a node: responders per interface.
pub struct Layer2 {
    netns: Option<PathBuf>,
    default_interface: Option<String>,
    node_ip: Option<IpAddr>,
    running: BTreeMap<Option<String>, Running>,
    /// Frame counters, shared by every responder.
    pub counters: Arc<Counters>,
    /// Other nodes' gratuitous ARPs for IPs answered here.
    pub claims: Arc<WireClaims>,
}

/// Opens the socket for `name` (or the default interface, the one carrying
/// `node_ip`), inside `netns` when given.
fn open(
    netns: Option<PathBuf>,
    name: Option<String>,
    node_ip: Option<IpAddr>,
) -> Result<(Interface, BTreeSet<IpAddr>, OwnedFd)> {
    let opened = crate::netns::run_in(netns, move || {
        let inner = || -> Result<(Interface, BTreeSet<IpAddr>, OwnedFd)> {
            let interface = match &name {
                Some(name) => Interface::named(name)?,
                None => default_interface(node_ip)?,
            };
            let own = own_addresses()?;
            let fd = PacketSocket::open_fd(interface.index)
                .with_context(|| format!("opening a packet socket on {}", interface.name))?;
            Ok((interface, own, fd))
        };
        inner().map_err(|e| std::io::Error::other(format!("{e:#}")))
    })?;
    Ok(opened)
}

impl Layer2 {
    /// No responders yet; `default_interface` overrides the automatic choice
    /// (the interface carrying `node_ip`, else the default route's).
    pub fn new(
        netns: Option<PathBuf>,
        default_interface: Option<String>,
        node_ip: Option<IpAddr>,
    ) -> Layer2 {
        Layer2 {
            netns,
            default_interface,
            node_ip,
            running: BTreeMap::new(),
            counters: Arc::default(),
            claims: Arc::default(),
        }
    }

    /// Makes the responders match `wanted`; returns the interfaces that failed.
    pub fn apply(&mut self, wanted: &Wanted) -> BTreeMap<Option<String>, String> {
        let mut failed = BTreeMap::new();
        self.running
            .retain(|name, _| wanted.active.contains_key(name));
        for (name, ips) in &wanted.active {
            if let Some(running) = self.running.get(name) {
                running.ips.send_if_modified(|current| {
                    let changed = current != ips;
                    *current = ips.clone();
                    changed
                });
                continue;
            }
            let chosen = name.clone().or_else(|| self.default_interface.clone());
            match open(self.netns.clone(), chosen, self.node_ip)
                .and_then(|(interface, own, fd)| Ok((interface, own, PacketSocket::register(fd)?)))
            {
                Ok((interface, own, socket)) => {
                    let socket = Arc::new(socket);
                    let (tx, rx) = watch::channel(ips.clone());
                    tracing::info!(interface = %interface.name, mac = %interface.mac, "answering ARP and NDP");
                    let answer = tokio::spawn({
                        let (socket, rx, counters, mac, claims) = (
                            socket.clone(),
                            rx.clone(),
                            self.counters.clone(),
                            interface.mac,
                            self.claims.clone(),
                        );
                        async move {
                            if let Err(e) =
                                responder::answer(socket, mac, rx, own, counters, claims).await
                            {
                                tracing::warn!(error = %e, "responder stopped");
                            }
                        }
                    });
                    let announce = tokio::spawn(responder::announce(
                        socket,
                        interface.mac,
                        rx,
                        self.counters.clone(),
                    ));
                    self.running.insert(
                        name.clone(),
                        Running {
                            interface,
                            ips: tx,
                            tasks: vec![answer, announce],
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(interface = ?name, error = %e, "cannot answer on this interface");
                    failed.insert(name.clone(), format!("{e:#}"));
                }
            }
        }
        failed
    }

    /// What the kernel does with ARP on the interface answered on by default.
    pub fn kernel_view(&self) -> std::io::Result<crate::l2::kernel::ArpView> {
        crate::l2::kernel::read(
            self.netns.clone(),
            self.default_interface.clone(),
            self.node_ip,
        )
    }

    /// The interfaces answering for `ip`.
    pub fn interfaces_for(&self, ip: IpAddr) -> Vec<String> {
        self.running
            .values()
            .filter(|r| r.ips.borrow().contains(&ip))
            .map(|r| r.interface.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> NodeAnnouncementSpec {
        serde_yaml::from_str(yaml).expect("a spec")
    }

    #[test]
    fn an_arming_standby_probes_its_active_node_and_stands_by_for_nothing_yet() {
        let wanted = Wanted::from_spec(&spec(
            "l2:\n- {role: standby, standbyFor: a, probe: '10.0.0.1:7473', arming: true, ips: [10.1.0.1]}\n- {role: standby, standbyFor: b, probe: '10.0.0.2:7473', ips: [10.1.0.2]}\n",
        ));
        let targets = wanted.targets();
        let by_node: BTreeMap<&str, &BTreeSet<IpAddr>> =
            targets.iter().map(|t| (t.node.as_str(), &t.ips)).collect();
        assert!(
            by_node["a"].is_empty(),
            "a is probed, nothing taken from it"
        );
        assert_eq!(
            by_node["b"].iter().copied().collect::<Vec<_>>(),
            vec!["10.1.0.2".parse::<IpAddr>().unwrap()]
        );
    }
}
