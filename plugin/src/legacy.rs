//! MetalLB's legacy configuration: the `config` key of the ConfigMap
//! `metallb-system/config` (`peers`, `address-pools`, `bgp-communities`,
//! `bfd-profiles`), as every MetalLB release up to 0.12 read it. Read strictly,
//! as MetalLB did: an unknown key is an error naming it and its line.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole legacy configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub bgp_communities: BTreeMap<String, String>,
    #[serde(default)]
    pub address_pools: Vec<Pool>,
    #[serde(default)]
    pub bfd_profiles: Vec<BfdProfile>,
}

/// One BGP peer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Peer {
    pub my_asn: u32,
    pub peer_asn: u32,
    pub peer_address: String,
    #[serde(default)]
    pub source_address: Option<String>,
    #[serde(default)]
    pub peer_port: Option<u16>,
    #[serde(default)]
    pub hold_time: Option<String>,
    #[serde(default)]
    pub keepalive_time: Option<String>,
    #[serde(default)]
    pub router_id: Option<String>,
    #[serde(default)]
    pub node_selectors: Vec<NodeSelector>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub bfd_profile: Option<String>,
    #[serde(default)]
    pub ebgp_multihop: Option<bool>,
}

/// A node selector as the legacy format spells it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<Expression>,
}

/// One `match-expressions` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expression {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// One address pool.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    pub protocol: String,
    pub addresses: Vec<String>,
    #[serde(default)]
    pub avoid_buggy_ips: bool,
    #[serde(default)]
    pub auto_assign: Option<bool>,
    #[serde(default)]
    pub bgp_advertisements: Vec<Advertisement>,
}

/// One `bgp-advertisements` entry of a pool.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Advertisement {
    #[serde(default)]
    pub aggregation_length: Option<u8>,
    #[serde(default)]
    pub aggregation_length_v6: Option<u8>,
    #[serde(default)]
    pub localpref: Option<u32>,
    #[serde(default)]
    pub communities: Vec<String>,
}

/// One BFD profile.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BfdProfile {
    pub name: String,
    pub receive_interval: Option<u32>,
    pub transmit_interval: Option<u32>,
    pub detect_multiplier: Option<u32>,
    pub echo_interval: Option<u32>,
    pub echo_mode: Option<bool>,
    pub passive_mode: Option<bool>,
    pub minimum_ttl: Option<u32>,
}

/// Reads the configuration from what a user has: the ConfigMap object (any
/// name: Helm names it after the release), or the text of its `config` key.
pub fn read(text: &str) -> Result<Config, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let config = if value.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap") {
        value
            .get("data")
            .and_then(|d| d.get("config"))
            .and_then(|c| c.as_str())
            .ok_or("the ConfigMap has no data.config: not a MetalLB configuration")?
            .to_string()
    } else {
        text.to_string()
    };
    if config.trim().is_empty() {
        return Err("the configuration is empty".into());
    }
    serde_yaml::from_str(&config).map_err(|e| format!("data.config: {e}"))
}
