//! The three-node layer 2 lab that several e2e files start: the apiserver,
//! one switch, three node namespaces, a client namespace, the Nodes
//! registered, and one layer 2 pool with its L2Advertisement. Each file adds
//! what it needs (speakers, the operator, HTTP stand-ins).

use anyhow::Result;

use crate::cluster::TestCluster;
use crate::netns::{Host, Network};

/// The nodes' names.
pub const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// The MAC of node `i` in lab `id` (`02:00:00:00:<id>:0a` …), so a test can
/// tell which node answered.
pub fn mac(id: u8, i: usize) -> String {
    format!("02:00:00:00:{id:02x}:0{}", char::from(b'a' + i as u8))
}

/// The lab.
pub struct ThreeNodes {
    /// The control plane with the CRDs.
    pub cluster: TestCluster,
    /// The node namespaces, `<subnet>.11` to `.13`.
    pub hosts: Vec<Host>,
    /// A client on the same switch, `<subnet>.2`.
    pub client: Host,
    /// The switch (dropped last).
    pub network: Network,
}

impl ThreeNodes {
    /// Starts the lab on `<subnet>.0/24` (such as `192.168.40`), MACs of lab
    /// `id`, and IPAddressPool `l2` holding `pool` with L2Advertisement `l2`.
    pub async fn start(subnet: &str, id: u8, pool: &str) -> Result<ThreeNodes> {
        let cluster = TestCluster::start().await?;
        let mut network = Network::new()?;
        let mut hosts = Vec::new();
        for (i, node) in NODES.iter().enumerate() {
            hosts.push(network.host(node, &mac(id, i), &[&format!("{subnet}.{}/24", 11 + i)])?);
            cluster.node(node)?;
        }
        let client = network.host(
            "cli",
            &format!("02:00:00:00:{id:02x}:99"),
            &[&format!("{subnet}.2/24")],
        )?;
        cluster.apply_ok(&format!(
            "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: l2}}\nspec: {{addresses: [{pool}]}}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {{name: l2}}\nspec: {{ipAddressPools: [l2]}}\n"
        ))?;
        Ok(ThreeNodes {
            cluster,
            hosts,
            client,
            network,
        })
    }
}

/// Whether a NodeAnnouncement's `ips` list (as `kubectl get -o json` shows
/// it: addresses and `first-last` ranges) holds `ip`.
pub fn holds(ips: &serde_json::Value, ip: &str) -> bool {
    let (Ok(set), Ok(ip)) = (
        serde_json::from_value::<ferrolb_api::ipset::IpSet>(ips.clone()),
        ip.parse::<std::net::IpAddr>(),
    ) else {
        return false;
    };
    set.contains(&ip)
}
