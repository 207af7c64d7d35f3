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
    /// Looks an interface up by name, in the network namespace of the calling
    /// thread (netlink, not /sys, which shows the namespace it was mounted in).
    pub fn named(name: &str) -> Result<Interface> {
        for entry in nix::ifaddrs::getifaddrs()? {
            if entry.interface_name != name {
                continue;
            }
            if let Some(link) = entry.address.as_ref().and_then(|a| a.as_link_addr())
                && let Some(mac) = link.addr()
            {
                return Ok(Interface {
                    name: name.to_string(),
                    index: u32::try_from(link.ifindex()).context("interface index")?,
                    mac: Mac(mac),
                });
            }
        }
        anyhow::bail!("no Ethernet interface named {name}")
    }
}

/// Whether `name` is a bridge port (its frames belong to the bridge).
fn bridge_port(name: &str) -> bool {
    fs::metadata(format!("/sys/class/net/{name}/brport")).is_ok()
}

/// The node's own addresses, never answered for: those on its network
/// interfaces. Addresses on loopback and on kube-proxy's `kube-ipvs0` (and
/// other container or overlay devices) are not: that is where kube-proxy in
/// IPVS mode puts the very Service IPs the responder must answer for.
pub fn own_addresses() -> Result<BTreeSet<IpAddr>> {
    let mut own = BTreeSet::new();
    for entry in nix::ifaddrs::getifaddrs()? {
        if NOT_NODE_NETWORK
            .iter()
            .any(|p| entry.interface_name.starts_with(p))
        {
            continue;
        }
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

/// The first IPv4 address of interface `name`, in the calling thread's
/// network namespace.
pub fn first_ipv4(name: &str) -> Result<std::net::Ipv4Addr> {
    for entry in nix::ifaddrs::getifaddrs()? {
        if entry.interface_name == name
            && let Some(v4) = entry.address.as_ref().and_then(|a| a.as_sockaddr_in())
        {
            return Ok(v4.ip());
        }
    }
    anyhow::bail!("interface {name} has no IPv4 address")
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
