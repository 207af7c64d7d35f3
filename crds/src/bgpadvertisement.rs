//! `BGPAdvertisement`: which pools are advertised over BGP, how, and to whom.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cel;
use crate::community::Community;
use crate::l2advertisement::{AdvertisementStatus, check_names};
use crate::validation::{Errors, FieldError, Validate, selector};

fn default_v4_len() -> u8 {
    32
}

fn default_v6_len() -> u8 {
    128
}

/// Advertises the IPs of the selected pools to BGP peers, with the attributes
/// given here. Several advertisements may select the same pool (for example a
/// /32 to one peer and an aggregate to another).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    shortname = "bgpadv",
    category = "ferrolb",
    status = "AdvertisementStatus",
    doc = "BGP advertisement of pools' IPs to peers.",
    printcolumn(name = "Pools", type_ = "string", json_path = ".spec.ipAddressPools"),
    printcolumn(name = "Peers", type_ = "string", json_path = ".spec.peers"),
    printcolumn(name = "Local Pref", type_ = "integer", json_path = ".spec.localPref"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Prefix length advertised for IPv4 addresses, 1-32: 32 advertises each IP,
    /// shorter lengths advertise the covering block once. Must not be shorter
    /// than the prefix of any selected pool's CIDR.
    #[serde(default = "default_v4_len")]
    #[schemars(range(min = 1, max = 32), extend("format" = "int32"))]
    pub aggregation_length: u8,

    /// Prefix length advertised for IPv6 addresses, 1-128.
    #[serde(default = "default_v6_len", rename = "aggregationLengthV6")]
    #[schemars(range(min = 1, max = 128), extend("format" = "int32"))]
    pub aggregation_length_v6: u8,

    /// BGP LOCAL_PREF (0-4294967295), sent to iBGP peers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::local_pref")]
    pub local_pref: Option<u32>,

    /// Communities attached to the routes: standard `65000:100`, large
    /// `large:64512:1:2`, or `no-export`, `no-advertise`, `no-export-subconfed`,
    /// `no-peer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::communities")]
    pub communities: Vec<String>,

    /// Names of the IPAddressPools advertised. When both this and
    /// `ipAddressPoolSelectors` are empty, every pool is advertised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::name_set")]
    pub ip_address_pools: Vec<String>,

    /// Label selectors on IPAddressPools; pools matching any one of them are
    /// advertised too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::selector_list")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,

    /// Label selectors on Nodes that advertise; a node matching any one of them
    /// does. Empty: every node with a session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::selector_list")]
    pub node_selectors: Vec<LabelSelector>,

    /// Label selectors on Services: only the Services of its pools that
    /// match any one of them are advertised by this advertisement. Empty:
    /// every Service of its pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::selector_list")]
    pub service_selectors: Vec<LabelSelector>,

    /// Names of the BGPPeers to advertise to. Empty: every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::name_set")]
    pub peers: Vec<String>,
}

impl BGPAdvertisementSpec {
    /// The parsed communities; invalid entries are left out (they are reported
    /// by [`Validate::validate`]).
    pub fn parsed_communities(&self) -> Vec<Community> {
        self.communities
            .iter()
            .filter_map(|c| Community::parse(c).ok())
            .collect()
    }
}

impl Validate for BGPAdvertisementSpec {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Errors::new();
        if !(1..=32).contains(&self.aggregation_length) {
            errors.add(
                "spec.aggregationLength",
                "an IPv4 aggregation length is 1-32",
            );
        }
        if !(1..=128).contains(&self.aggregation_length_v6) {
            errors.add(
                "spec.aggregationLengthV6",
                "an IPv6 aggregation length is 1-128",
            );
        }
        for (i, community) in self.communities.iter().enumerate() {
            errors.check(
                &format!("spec.communities[{i}]"),
                Community::parse(community),
            );
        }
        errors.no_duplicates("spec.communities", &self.communities);
        check_names(&mut errors, "spec.ipAddressPools", &self.ip_address_pools);
        check_names(&mut errors, "spec.peers", &self.peers);
        selector::check_all(
            &mut errors,
            "spec.ipAddressPoolSelectors",
            &self.ip_address_pool_selectors,
        );
        selector::check_all(&mut errors, "spec.nodeSelectors", &self.node_selectors);
        selector::check_all(
            &mut errors,
            "spec.serviceSelectors",
            &self.service_selectors,
        );
        errors.into_vec()
    }
}
