//! `IPAddressPool`: the addresses ferrolb may give to LoadBalancer Services.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::address::{AddressRange, parse_pool_entry};
use crate::cel;
use crate::validation::{Errors, FieldError, NOT_A_NAMESPACE, Validate, selector};

fn yes() -> bool {
    true
}

/// A set of IP addresses ferrolb hands out to Services of `type: LoadBalancer`.
/// Pools never overlap (the admission webhook denies it); a Service takes its
/// address from the first pool that fits it, see `serviceAllocation`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    shortname = "ipp",
    category = "ferrolb",
    status = "IPAddressPoolStatus",
    doc = "A pool of IP addresses for LoadBalancer Services.",
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses"),
    printcolumn(
        name = "Auto Assign",
        type_ = "boolean",
        json_path = ".spec.autoAssign"
    ),
    printcolumn(name = "Assigned", type_ = "integer", json_path = ".status.assigned"),
    printcolumn(name = "Available", type_ = "string", json_path = ".status.available"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// The addresses of the pool. Each entry is a CIDR (`192.168.10.0/24`,
    /// `fd00:10::/64`), an inclusive range (`192.168.10.10-192.168.10.20`) or a
    /// single IP; IPv4 and IPv6 entries may be mixed. A CIDR must not have host
    /// bits set, a range must run from low to high within one family.
    #[schemars(schema_with = "cel::pool_addresses")]
    pub addresses: Vec<String>,

    /// Whether Services may get an address from this pool without asking for it.
    /// When false, only Services that name the pool (annotation
    /// `ferrolb.io/address-pool`) or request one of its IPs get its addresses.
    #[serde(default = "yes")]
    pub auto_assign: bool,

    /// Skip addresses ending in .0 and .255 (IPv4), which some old or buggy
    /// client stacks treat as broadcast addresses.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,

    /// Restricts which Services the pool serves and orders it among other pools.
    /// Without it the pool serves every Service, after the pools that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// Which Services a pool serves, and in which order pools are tried.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Pools are tried by priority, lower first; pools without a priority come
    /// after those with one, then ties are broken by pool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,

    /// Namespaces whose Services may use the pool. A namespace qualifies when it
    /// is listed here or matches one of `namespaceSelectors`; with both empty,
    /// every namespace does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::namespace_set")]
    pub namespaces: Vec<String>,

    /// Label selectors on Namespaces whose Services may use the pool; a
    /// namespace matching any one of them qualifies (as does one listed in
    /// `namespaces`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::selector_list")]
    pub namespace_selectors: Vec<LabelSelector>,

    /// Label selectors on Services that may use the pool; a Service matching any
    /// one of them qualifies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::selector_list")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the operator reports about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` (the pool is valid and in use) and `Overlapping` or other problems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::conditions")]
    pub conditions: Vec<Condition>,

    /// Addresses handed out, both families together.
    #[serde(default)]
    pub assigned: i64,

    /// Addresses still free, both families together, in decimal (an IPv6 pool
    /// can hold more than fits in a 64-bit integer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<String>,

    /// IPv4 counts; absent when the pool has no IPv4 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<AddressCounts>,

    /// IPv6 counts; absent when the pool has no IPv6 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<AddressCounts>,
}

/// Address counts of one family of a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressCounts {
    /// Usable addresses in the pool, in decimal.
    pub total: String,
    /// Addresses handed out.
    pub assigned: i64,
    /// Addresses still free, in decimal.
    pub available: String,
}

impl IPAddressPoolSpec {
    /// The parsed address ranges, in spec order; entries that do not parse are
    /// left out (they are reported by [`Validate::validate`]).
    pub fn ranges(&self) -> Vec<AddressRange> {
        self.addresses
            .iter()
            .filter_map(|a| parse_pool_entry(a).ok())
            .collect()
    }

    /// Entries of this pool that overlap each other, as
    /// `(index, other index, shared range)`: the webhook denies these.
    pub fn self_overlaps(&self) -> Vec<(usize, usize, AddressRange)> {
        let parsed: Vec<(usize, AddressRange)> = self
            .addresses
            .iter()
            .enumerate()
            .filter_map(|(i, a)| parse_pool_entry(a).ok().map(|r| (i, r)))
            .collect();
        let mut found = Vec::new();
        for (n, (i, a)) in parsed.iter().enumerate() {
            for (j, b) in &parsed[n + 1..] {
                if let Some(shared) = a.intersection(b) {
                    found.push((*i, *j, shared));
                }
            }
        }
        found
    }
}

impl Validate for IPAddressPoolSpec {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Errors::new();
        if self.addresses.is_empty() {
            errors.add("spec.addresses", "a pool needs at least one address");
        }
        for (i, entry) in self.addresses.iter().enumerate() {
            errors.check(&format!("spec.addresses[{i}]"), parse_pool_entry(entry));
        }
        errors.no_duplicates("spec.addresses", &self.addresses);
        if let Some(allocation) = &self.service_allocation {
            for (i, ns) in allocation.namespaces.iter().enumerate() {
                if !selector::is_dns_label(ns) {
                    errors.add(
                        format!("spec.serviceAllocation.namespaces[{i}]"),
                        format!("'{ns}' {NOT_A_NAMESPACE}"),
                    );
                }
            }
            errors.no_duplicates("spec.serviceAllocation.namespaces", &allocation.namespaces);
            selector::check_all(
                &mut errors,
                "spec.serviceAllocation.namespaceSelectors",
                &allocation.namespace_selectors,
            );
            selector::check_all(
                &mut errors,
                "spec.serviceAllocation.serviceSelectors",
                &allocation.service_selectors,
            );
        }
        errors.into_vec()
    }
}
