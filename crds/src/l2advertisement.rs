//! `L2Advertisement`: which pools are announced in layer 2 (ARP/NDP), from which
//! nodes and on which interfaces.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cel;
use crate::validation::{
    Errors, FieldError, NOT_A_NAME, NOT_AN_INTERFACE, Validate, is_interface_name, is_object_name,
    selector,
};

/// Announces the IPs of the selected pools in layer 2: one node answers ARP (IPv4)
/// and NDP (IPv6) for each IP, another stands by to take over.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    shortname = "l2adv",
    category = "ferrolb",
    status = "AdvertisementStatus",
    doc = "Layer 2 (ARP/NDP) announcement of pools' IPs.",
    printcolumn(name = "Pools", type_ = "string", json_path = ".spec.ipAddressPools"),
    printcolumn(name = "Interfaces", type_ = "string", json_path = ".spec.interfaces"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Names of the IPAddressPools announced. When both this and
    /// `ipAddressPoolSelectors` are empty, every pool is announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::name_set")]
    pub ip_address_pools: Vec<String>,

    /// Label selectors on IPAddressPools; pools matching any one of them are
    /// announced too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::selector_list")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,

    /// Label selectors on Nodes that may announce; a node matching any one of
    /// them may. Empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::selector_list")]
    pub node_selectors: Vec<LabelSelector>,

    /// Label selectors on Services: only the Services of its pools that
    /// match any one of them are announced by this advertisement. Empty:
    /// every Service of its pools. Services sharing an IP are announced
    /// together, by the advertisements that select all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::selector_list")]
    pub service_selectors: Vec<LabelSelector>,

    /// Network interfaces to answer on, such as `eth0` or `bond0`. Empty: the
    /// interface that carries the node's own address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::interface_set")]
    pub interfaces: Vec<String>,
}

/// What the operator reports about an advertisement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvertisementStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, or why the advertisement announces nothing (a named pool that
    /// does not exist, no node selected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::conditions")]
    pub conditions: Vec<Condition>,
}

/// Checks a list of object names at `path`: each valid, none repeated.
pub(crate) fn check_names(errors: &mut Errors, path: &str, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        if !is_object_name(name) {
            errors.add(format!("{path}[{i}]"), format!("'{name}' {NOT_A_NAME}"));
        }
    }
    errors.no_duplicates(path, names);
}

impl Validate for L2AdvertisementSpec {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Errors::new();
        check_names(&mut errors, "spec.ipAddressPools", &self.ip_address_pools);
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
        for (i, name) in self.interfaces.iter().enumerate() {
            if !is_interface_name(name) {
                errors.add(
                    format!("spec.interfaces[{i}]"),
                    format!("'{name}' {NOT_AN_INTERFACE}"),
                );
            }
        }
        errors.no_duplicates("spec.interfaces", &self.interfaces);
        errors.into_vec()
    }
}
