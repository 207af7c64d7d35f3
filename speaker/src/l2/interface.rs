//! Network interfaces as the responder needs them: index, MAC, the node's own
//! addresses (never answered for), and the default interface to answer on.

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;

use anyhow::{Context, Result};

use super::packet::Mac;

/// Interface name prefixes that are never the node's own network: container
/// veths, CNI and overlay devices, kube-proxy's dummy.
const NOT_NODE_NETWORK: [&str; 10] = [
    "lo",
    "veth",
    "cni",
    "flannel",
    "cali",
    "docker",
    "kube-ipvs",
    "cilium",
    "vxlan",
    "tunl",
];

/// One interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its MAC address.
    pub mac: Mac,
}

impl Interface {
    /// Looks an interface up in /sys.
    pub fn named(name: &str) -> Result<Interface> {
        let base = format!("/sys/class/net/{name}");
        let index: u32 = fs::read_to_string(format!("{base}/ifindex"))
            .with_context(|| format!("no interface {name}"))?
            .trim()
            .parse()
            .with_context(|| format!("interface {name}: unreadable index"))?;
        let text = fs::read_to_string(format!("{base}/address"))?;
        let mut mac = [0u8; 6];
        let parts: Vec<&str> = text.trim().split(':').collect();
        if parts.len() != 6 {
            anyhow::bail!("interface {name}: no Ethernet address");
        }
        for (slot, part) in mac.iter_mut().zip(parts) {
            *slot = u8::from_str_radix(part, 16)?;
        }
        Ok(Interface {
            name: name.to_string(),
            index,
            mac: Mac(mac),
        })
    }
}

/// Whether `name` is a bridge port (its frames belong to the bridge).
fn bridge_port(name: &str) -> bool {
    fs::metadata(format!("/sys/class/net/{name}/brport")).is_ok()
}

/// Every address this host has: the responder never answers for them.
pub fn own_addresses() -> Result<BTreeSet<IpAddr>> {
    let mut own = BTreeSet::new();
    for entry in nix::ifaddrs::getifaddrs()? {
        let Some(address) = entry.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            own.insert(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            own.insert(IpAddr::V6(v6.ip()));
        }
    }
    Ok(own)
}

/// The interface carrying the node's own network: the first one, by name, with
/// an IP address that is neither loopback, a bridge port nor a container or
/// overlay device.
pub fn default_interface() -> Result<Interface> {
    let mut candidates: BTreeSet<String> = BTreeSet::new();
    for entry in nix::ifaddrs::getifaddrs()? {
        let has_ip = entry.address.is_some_and(|a| {
            a.as_sockaddr_in().is_some()
                || a.as_sockaddr_in6()
                    .is_some_and(|s| !s.ip().is_unicast_link_local())
        });
        let name = entry.interface_name;
        if has_ip && !NOT_NODE_NETWORK.iter().any(|p| name.starts_with(p)) && !bridge_port(&name) {
            candidates.insert(name);
        }
    }
    let name = candidates
        .into_iter()
        .next()
        .context("no interface with an address besides loopback and container devices; name one")?;
    Interface::named(&name)
}
