//! Network interfaces as the responder needs them: index, MAC, the node's own
//! addresses (never answered for), and the default interface to answer on.

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;

use anyhow::{Context, Result};

use super::packet::Mac;

/// Interface name prefixes that are never the node's own network: container
/// veths, CNI, overlay and bridge devices of container runtimes and CNIs,
/// kube-proxy's dummy. Used only when neither the node's address nor a
/// default route names the interface.
const NOT_NODE_NETWORK: [&str; 22] = [
    "lo",
    "veth",
    "cni",
    "flannel",
    "cali",
    "docker",
    "kube-ipvs",
    "kube-bridge",
    "cilium",
    "lxc",
    "vxlan",
    "tunl",
    "br-",
    "virbr",
    "cbr",
    "antrea",
    "weave",
    "genev",
    "nodelocaldns",
    "dummy",
    "ovs",
    "kube-",
];

/// Whether `name` looks like the node's own network rather than a container,
/// CNI or bridge device.
pub fn is_node_network(name: &str) -> bool {
    !NOT_NODE_NETWORK.iter().any(|p| name.starts_with(p))
}

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
        // Kube-proxy (IPVS) puts Service IPs on these: answered for.
        if entry.interface_name == "lo" || entry.interface_name.starts_with("kube-ipvs") {
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

/// Where other speakers reach this one on interface `name`: its first IPv4
/// address, else its first global IPv6 one (IPv6-only nodes), in the calling
/// thread's network namespace.
pub fn probe_ip(name: &str) -> Result<IpAddr> {
    let mut v6 = None;
    for entry in nix::ifaddrs::getifaddrs()? {
        if entry.interface_name != name {
            continue;
        }
        let Some(address) = entry.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            return Ok(IpAddr::V4(v4.ip()));
        }
        if let Some(ip) = address.as_sockaddr_in6().map(|a| a.ip())
            && !ip.is_unicast_link_local()
            && !ip.is_loopback()
            && v6.is_none()
        {
            v6 = Some(IpAddr::V6(ip));
        }
    }
    v6.with_context(|| format!("interface {name} has no IPv4 or global IPv6 address"))
}

/// The interface of the default route in a `/proc/net/route` table (IPv4),
/// the first one with the lowest metric.
pub fn default_route_v4(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let (iface, destination, flags, metric, mask) = (
                *fields.first()?,
                *fields.get(1)?,
                u32::from_str_radix(fields.get(3)?, 16).ok()?,
                fields.get(6)?.parse::<u32>().ok()?,
                *fields.get(7)?,
            );
            let up = flags & 0x1 != 0;
            (up && destination == "00000000" && mask == "00000000")
                .then(|| (metric, iface.to_string()))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface)
}

/// The interface of the default route in a `/proc/net/ipv6_route` table.
pub fn default_route_v6(table: &str) -> Option<String> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // dest plen src splen next-hop metric refcnt use flags iface
            if fields.len() < 10 {
                return None;
            }
            let default = fields[0].chars().all(|c| c == '0') && fields[1] == "00";
            let flags = u32::from_str_radix(fields[8], 16).ok()?;
            let metric = u32::from_str_radix(fields[5], 16).ok()?;
            // RTF_UP, and not a reject route.
            let usable = flags & 0x1 != 0 && flags & 0x200 == 0 && fields[9] != "lo";
            (default && usable).then(|| (metric, fields[9].to_string()))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface)
}

/// How the default interface was chosen, for logs and errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chosen {
    /// It carries the node's address.
    NodeAddress(IpAddr),
    /// It carries the default route.
    DefaultRoute,
    /// The first by name of those that look like the node's network.
    FirstByName,
}

/// The interface carrying the node's own network: the one holding `node_ip`
/// (the node's InternalIP, given by the downward API); else the one of the
/// default route (IPv4, then IPv6); else the first, by name, with an address
/// that is neither loopback, a bridge port nor a container, CNI or bridge
/// device. Looked up in the calling thread's network namespace.
pub fn default_interface(node_ip: Option<IpAddr>) -> Result<Interface> {
    let (name, _) = choose_default(node_ip)?;
    Interface::named(&name)
}

/// The name of the default interface and how it was chosen.
pub fn choose_default(node_ip: Option<IpAddr>) -> Result<(String, Chosen)> {
    let entries: Vec<(String, Option<IpAddr>)> = nix::ifaddrs::getifaddrs()?
        .map(|entry| {
            let ip = entry.address.and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            });
            (entry.interface_name, ip)
        })
        .collect();
    if let Some(node_ip) = node_ip {
        if let Some((name, _)) = entries
            .iter()
            .find(|(name, ip)| *ip == Some(node_ip) && name != "lo")
        {
            return Ok((name.clone(), Chosen::NodeAddress(node_ip)));
        }
        tracing::warn!(%node_ip, "no interface carries the node's address; using the default route's");
    }
    let routes = [
        std::fs::read_to_string("/proc/thread-self/net/route")
            .ok()
            .and_then(|t| default_route_v4(&t)),
        std::fs::read_to_string("/proc/thread-self/net/ipv6_route")
            .ok()
            .and_then(|t| default_route_v6(&t)),
    ];
    if let Some(name) = routes.into_iter().flatten().next() {
        return Ok((name, Chosen::DefaultRoute));
    }
    let mut candidates: BTreeSet<String> = BTreeSet::new();
    for (name, ip) in entries {
        let has_ip = ip.is_some_and(|ip| match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
        });
        if has_ip && is_node_network(&name) && !bridge_port(&name) {
            candidates.insert(name);
        }
    }
    let name = candidates.into_iter().next().context(
        "no interface carries the node's address or a default route, and none besides loopback, bridges and container devices has an address; name one (--interface, or interfaces in the L2Advertisement)",
    )?;
    Ok((name, Chosen::FirstByName))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
cni0\t0000F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";

    #[test]
    fn the_default_route_with_the_lowest_metric_wins() {
        assert_eq!(default_route_v4(ROUTE).as_deref(), Some("eth0"));
        assert_eq!(default_route_v4(ROUTE.lines().next().unwrap()), None);
    }

    #[test]
    fn an_ipv6_default_route_names_its_interface_and_reject_routes_do_not() {
        let table = "\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
";
        assert_eq!(default_route_v6(table).as_deref(), Some("eth0"));
        let only_reject = table.lines().nth(1).unwrap();
        assert_eq!(default_route_v6(only_reject), None);
    }

    #[test]
    fn container_cni_and_bridge_devices_are_not_the_node_network() {
        for name in [
            "cni0",
            "docker0",
            "br-3f2a9c",
            "antrea-gw0",
            "cbr0",
            "virbr0",
            "veth12ab",
            "flannel.1",
            "kube-ipvs0",
            "lxc1234",
            "cilium_host",
            "dummy0",
        ] {
            assert!(!is_node_network(name), "{name}");
        }
        for name in [
            "eth0",
            "ens3",
            "enp1s0",
            "eno1",
            "bond0",
            "bond0.100",
            "wlan0",
        ] {
            assert!(is_node_network(name), "{name}");
        }
    }
}
