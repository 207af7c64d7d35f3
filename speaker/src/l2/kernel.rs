//! What the node's kernel does on its own with ARP for Service IPs. With
//! kube-proxy in IPVS mode every node holds every LoadBalancer IP on
//! `kube-ipvs0`; unless `arp_ignore` is at least 1 (kube-proxy's `strictARP`)
//! the kernel of every node answers ARP for them, so clients reach whichever
//! node answered last and "one node answers" no longer holds. The speaker
//! cannot change that (it is kube-proxy's setting to make), so it reports it.

use std::net::IpAddr;
use std::path::PathBuf;

use ferrolb_api::nodeannouncement::{KERNEL_ANSWERS_ARP, NodeProblem};

/// What the check reads on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArpView {
    /// Addresses on `kube-ipvs0`, and on `lo` outside 127.0.0.0/8: where
    /// kube-proxy (IPVS) puts Service IPs.
    pub service_addresses: usize,
    /// The interface the speaker answers on.
    pub interface: String,
    /// `arp_ignore` in force there: the larger of `all` and the interface's.
    pub arp_ignore: u8,
    /// `arp_announce` in force there: the larger of `all` and the interface's.
    pub arp_announce: u8,
}

/// The problem `view` shows, if any.
pub fn problem(view: &ArpView) -> Option<NodeProblem> {
    if view.service_addresses == 0 || view.arp_ignore >= 1 {
        return None;
    }
    Some(NodeProblem {
        reason: KERNEL_ANSWERS_ARP.to_string(),
        message: format!(
            "the kernel answers ARP for Service IPs too: kube-ipvs0/lo hold {} address(es) and arp_ignore is {} on {} (arp_announce {}), so clients may reach any node — set strictARP: true in kube-proxy's configuration (IPVS mode; it sets arp_ignore=1 and arp_announce=2)",
            view.service_addresses, view.arp_ignore, view.interface, view.arp_announce
        ),
    })
}

fn sysctl(name: &str, interface: &str) -> u8 {
    let read = |scope: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{scope}/{name}"))
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(0)
    };
    read("all").max(read(interface))
}

/// Reads the view inside `netns` for `interface` (or the default interface).
pub fn read(
    netns: Option<PathBuf>,
    interface: Option<String>,
    node_ip: Option<IpAddr>,
) -> std::io::Result<ArpView> {
    crate::netns::run_in(netns, move || {
        let interface = match interface {
            Some(name) => name,
            None => {
                super::interface::choose_default(node_ip)
                    .map_err(|e| std::io::Error::other(format!("{e:#}")))?
                    .0
            }
        };
        let mut service_addresses = 0;
        for entry in nix::ifaddrs::getifaddrs()? {
            let Some(v4) = entry
                .address
                .and_then(|a| a.as_sockaddr_in().map(|s| s.ip()))
            else {
                continue;
            };
            let ipvs = entry.interface_name.starts_with("kube-ipvs");
            let on_lo = entry.interface_name == "lo" && !v4.is_loopback();
            if ipvs || on_lo {
                service_addresses += 1;
            }
        }
        Ok(ArpView {
            service_addresses,
            arp_ignore: sysctl("arp_ignore", &interface),
            arp_announce: sysctl("arp_announce", &interface),
            interface,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(service_addresses: usize, arp_ignore: u8) -> ArpView {
        ArpView {
            service_addresses,
            interface: "eth0".into(),
            arp_ignore,
            arp_announce: 0,
        }
    }

    #[test]
    fn service_ips_on_the_node_with_arp_ignore_0_are_a_problem_naming_strict_arp() {
        let found = problem(&view(2, 0)).expect("a problem");
        assert_eq!(found.reason, "KernelAnswersARP");
        assert!(
            found.message.contains("strictARP: true"),
            "{}",
            found.message
        );
        assert!(found.message.contains("arp_ignore is 0 on eth0"));
    }

    #[test]
    fn strict_arp_or_no_service_ips_is_fine() {
        assert_eq!(problem(&view(2, 1)), None);
        assert_eq!(problem(&view(2, 2)), None);
        assert_eq!(problem(&view(0, 0)), None);
    }
}
