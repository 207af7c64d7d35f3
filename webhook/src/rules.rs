//! The admission rules: the single-object rules of the API crate again (so a
//! webhook denial reads like the schema's), plus the rules that need the other
//! objects — overlapping pools, peers on the same address for the same nodes,
//! aggregation lengths wider than a pool, conflicting local preferences — and the
//! warnings: references to objects not there yet, edits that strand in-use IPs.
//!
//! Pure functions over a [`Snapshot`]; the server feeds it from watches.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ferrolb_api::address::{AddressRange, Family, parse_pool_entry};
use ferrolb_api::overlap::{cidr_blocks, selector_lists_intersect};
use ferrolb_api::selector::label_selector_matches;
use ferrolb_api::{BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement, Validate};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

/// A Service holding IPs, for the stranding warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceIps {
    /// `namespace/name`.
    pub name: String,
    /// Its ingress IPs.
    pub ips: Vec<IpAddr>,
}

/// The objects admission decisions look at.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every IPAddressPool.
    pub pools: Vec<IPAddressPool>,
    /// Every BGPPeer.
    pub peers: Vec<BGPPeer>,
    /// Every BGPAdvertisement.
    pub bgp_advertisements: Vec<BGPAdvertisement>,
    /// Services holding IPs.
    pub services: Vec<ServiceIps>,
    /// The names of every BFDProfile.
    pub bfd_profiles: Vec<String>,
}

/// What admission answers: denied when there is any denial; warnings are shown
/// by kubectl either way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Why the object is refused.
    pub denials: Vec<String>,
    /// What the user should know although the object is accepted.
    pub warnings: Vec<String>,
}

impl Verdict {
    fn deny(&mut self, message: impl Into<String>) {
        self.denials.push(message.into());
    }

    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    fn single_object(&mut self, spec: &impl Validate) {
        for error in spec.validate() {
            self.deny(error.to_string());
        }
    }

    /// Whether the object is allowed.
    pub fn allowed(&self) -> bool {
        self.denials.is_empty()
    }
}

fn parsed_entries(pool: &IPAddressPool) -> Vec<(usize, &str, AddressRange)> {
    pool.spec
        .addresses
        .iter()
        .enumerate()
        .filter_map(|(i, a)| parse_pool_entry(a).ok().map(|r| (i, a.as_str(), r)))
        .collect()
}

/// Lists at most ten names, then how many more.
fn some_of(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        text.push_str(&format!(" and {} more", names.len() - 10));
    }
    text
}

/// Duplicate selectors in a list are a mistake: each adds nothing.
fn duplicate_selectors(verdict: &mut Verdict, path: &str, selectors: &[LabelSelector]) {
    for (i, s) in selectors.iter().enumerate() {
        if let Some(j) = selectors[..i].iter().position(|t| t == s) {
            verdict.deny(format!("{path}[{i}]: duplicate of {path}[{j}]; remove one"));
        }
    }
}

/// A pool being created or updated (`new`), or deleted (`new` is `None`).
pub fn pool(
    new: Option<&IPAddressPool>,
    old: Option<&IPAddressPool>,
    snapshot: &Snapshot,
) -> Verdict {
    let mut verdict = Verdict::default();
    let name = new.or(old).map(|p| p.name_any()).unwrap_or_default();
    if let Some(new) = new {
        verdict.single_object(&new.spec);
        for (i, j, shared) in new.spec.self_overlaps() {
            verdict.deny(format!(
                "spec.addresses[{j}]: {} overlaps spec.addresses[{i}] ({}) on {shared}: an address may appear once",
                new.spec.addresses[j], new.spec.addresses[i]
            ));
        }
        let mine = parsed_entries(new);
        for other in snapshot.pools.iter().filter(|p| p.name_any() != name) {
            for (i, text, range) in &mine {
                for (_, their_text, theirs) in parsed_entries(other) {
                    if let Some(shared) = range.intersection(&theirs) {
                        verdict.deny(format!(
                            "spec.addresses[{i}]: {text} overlaps IPAddressPool '{}' (its {their_text}) on {shared}: pools must not share addresses",
                            other.name_any()
                        ));
                    }
                }
            }
        }
        for advertisement in &snapshot.bgp_advertisements {
            let selected = selection(
                &advertisement.spec.ip_address_pools,
                &advertisement.spec.ip_address_pool_selectors,
                snapshot,
            );
            if selected.covers(new) {
                for message in aggregation_conflicts(advertisement, new) {
                    verdict.deny(format!(
                        "spec.addresses: BGPAdvertisement '{}' advertises this pool with {message}",
                        advertisement.name_any()
                    ));
                }
            }
        }
    }
    // Updates and deletes that leave in-use IPs outside every pool.
    if let Some(old) = old {
        let before: Vec<AddressRange> = old.spec.ranges();
        let after: Vec<AddressRange> = new.map(|p| p.spec.ranges()).unwrap_or_default();
        let elsewhere: Vec<AddressRange> = snapshot
            .pools
            .iter()
            .filter(|p| p.name_any() != name)
            .flat_map(|p| p.spec.ranges())
            .collect();
        let mut stranded = Vec::new();
        for service in &snapshot.services {
            let lost: Vec<String> = service
                .ips
                .iter()
                .filter(|ip| {
                    before.iter().any(|r| r.contains(**ip))
                        && !after.iter().any(|r| r.contains(**ip))
                        && !elsewhere.iter().any(|r| r.contains(**ip))
                })
                .map(ToString::to_string)
                .collect();
            if !lost.is_empty() {
                stranded.push(format!("{} ({})", service.name, lost.join(", ")));
            }
        }
        if !stranded.is_empty() {
            verdict.warn(format!(
                "IPAddressPool '{name}': {} keep IPs that will be in no pool; they stay announced as this pool's advertisements say (until the operator restarts), their condition says IPNotInAnyPool until the addresses are back in a pool or the Services name another pool",
                some_of(&stranded)
            ));
        }
    }
    verdict
}

/// Which pools an advertisement selects.
enum Selection {
    /// Every pool (no names, no selectors).
    All,
    /// These pool names.
    Named(BTreeSet<String>),
}

impl Selection {
    fn covers(&self, pool: &IPAddressPool) -> bool {
        match self {
            Selection::All => true,
            Selection::Named(names) => names.contains(&pool.name_any()),
        }
    }

    fn intersects(&self, other: &Selection) -> Option<String> {
        match (self, other) {
            (Selection::All, Selection::All) => Some("every pool".to_string()),
            (Selection::All, Selection::Named(n)) | (Selection::Named(n), Selection::All) => {
                (!n.is_empty()).then(|| n.iter().cloned().collect::<Vec<_>>().join(", "))
            }
            (Selection::Named(a), Selection::Named(b)) => {
                let both: Vec<String> = a.intersection(b).cloned().collect();
                (!both.is_empty()).then(|| both.join(", "))
            }
        }
    }
}

fn selection(names: &[String], selectors: &[LabelSelector], snapshot: &Snapshot) -> Selection {
    if names.is_empty() && selectors.is_empty() {
        return Selection::All;
    }
    let mut selected: BTreeSet<String> = names.iter().cloned().collect();
    for pool in &snapshot.pools {
        if selectors
            .iter()
            .any(|s| label_selector_matches(s, pool.labels()))
        {
            selected.insert(pool.name_any());
        }
    }
    Selection::Named(selected)
}

/// Aggregation lengths of `advertisement` that would advertise addresses outside
/// `pool`, described.
fn aggregation_conflicts(advertisement: &BGPAdvertisement, pool: &IPAddressPool) -> Vec<String> {
    let mut found = Vec::new();
    for (_, text, range) in parsed_entries(pool) {
        let (field, length) = match range.family() {
            Family::V4 => ("aggregationLength", advertisement.spec.aggregation_length),
            Family::V6 => (
                "aggregationLengthV6",
                advertisement.spec.aggregation_length_v6,
            ),
        };
        // The widest exact block of the entry: aggregating beyond it would
        // cover addresses that are not the pool's.
        let widest = cidr_blocks(&range)
            .iter()
            .map(|(_, len)| *len)
            .min()
            .unwrap_or(0);
        if length < widest {
            found.push(format!(
                "{field} {length}, shorter than /{widest} of its {text}: the route would cover addresses outside the pool; use {widest} or more"
            ));
        }
    }
    found
}

/// A BGPPeer being created or updated; `secret_missing` when its password Secret
/// (or the key in it) does not exist.
pub fn peer(new: &BGPPeer, snapshot: &Snapshot, secret_missing: bool) -> Verdict {
    let mut verdict = Verdict::default();
    verdict.single_object(&new.spec);
    duplicate_selectors(&mut verdict, "spec.nodeSelectors", &new.spec.node_selectors);
    if let Some(address) = new.spec.peer_ip() {
        for other in snapshot
            .peers
            .iter()
            .filter(|p| p.name_any() != new.name_any())
        {
            if other.spec.peer_ip() == Some(address)
                && other.spec.peer_port == new.spec.peer_port
                && selector_lists_intersect(&new.spec.node_selectors, &other.spec.node_selectors)
            {
                verdict.deny(format!(
                    "spec.peerAddress: {address} port {} is already peered by BGPPeer '{}' from some of the same nodes: give the two peers disjoint nodeSelectors, or keep one",
                    new.spec.peer_port,
                    other.name_any()
                ));
            }
        }
    }
    if let Some(profile) = &new.spec.bfd_profile
        && !snapshot.bfd_profiles.contains(profile)
    {
        verdict.warn(format!(
            "spec.bfdProfile: BFDProfile '{profile}' does not exist yet; the sessions run without BFD until it does"
        ));
    }
    if secret_missing && let Some(secret) = &new.spec.password_secret_ref {
        verdict.warn(format!(
            "spec.passwordSecretRef: Secret {}/{} with key '{}' does not exist yet; sessions to this peer fail until it does",
            secret.namespace, secret.name, secret.key
        ));
    }
    verdict
}

/// A BFDProfile being deleted: refused while a BGPPeer names it, since
/// those peers' sessions would go on without BFD (failures found in the
/// hold time, seconds, instead of the profile's milliseconds). Unlike a
/// pool's delete, which Services survive with their IPs, this one changes
/// what runs.
pub fn bfd_profile_deleted(name: &str, snapshot: &Snapshot) -> Verdict {
    let mut verdict = Verdict::default();
    let users: Vec<String> = snapshot
        .peers
        .iter()
        .filter(|p| p.spec.bfd_profile.as_deref() == Some(name))
        .map(|p| format!("'{}'", p.name_any()))
        .collect();
    if !users.is_empty() {
        verdict.deny(format!(
            "BFDProfile '{name}' is used by BGPPeer {}: their sessions would run without BFD; remove spec.bfdProfile from them (or delete them) first",
            some_of(&users)
        ));
    }
    verdict
}

fn missing_pools(verdict: &mut Verdict, names: &[String], snapshot: &Snapshot) {
    for name in names {
        if !snapshot.pools.iter().any(|p| p.name_any() == *name) {
            verdict.warn(format!(
                "spec.ipAddressPools: IPAddressPool '{name}' does not exist yet; it is advertised as soon as it does"
            ));
        }
    }
}

/// An L2Advertisement being created or updated.
pub fn l2_advertisement(new: &L2Advertisement, snapshot: &Snapshot) -> Verdict {
    let mut verdict = Verdict::default();
    verdict.single_object(&new.spec);
    duplicate_selectors(
        &mut verdict,
        "spec.ipAddressPoolSelectors",
        &new.spec.ip_address_pool_selectors,
    );
    duplicate_selectors(&mut verdict, "spec.nodeSelectors", &new.spec.node_selectors);
    duplicate_selectors(
        &mut verdict,
        "spec.serviceSelectors",
        &new.spec.service_selectors,
    );
    missing_pools(&mut verdict, &new.spec.ip_address_pools, snapshot);
    verdict
}

/// A BGPAdvertisement being created or updated.
pub fn bgp_advertisement(new: &BGPAdvertisement, snapshot: &Snapshot) -> Verdict {
    let mut verdict = Verdict::default();
    let spec = &new.spec;
    verdict.single_object(spec);
    duplicate_selectors(
        &mut verdict,
        "spec.ipAddressPoolSelectors",
        &spec.ip_address_pool_selectors,
    );
    duplicate_selectors(&mut verdict, "spec.nodeSelectors", &spec.node_selectors);
    duplicate_selectors(
        &mut verdict,
        "spec.serviceSelectors",
        &spec.service_selectors,
    );
    missing_pools(&mut verdict, &spec.ip_address_pools, snapshot);
    for name in &spec.peers {
        if !snapshot.peers.iter().any(|p| p.name_any() == *name) {
            verdict.warn(format!(
                "spec.peers: BGPPeer '{name}' does not exist yet; routes go to it as soon as it does"
            ));
        }
    }
    let selected = selection(
        &spec.ip_address_pools,
        &spec.ip_address_pool_selectors,
        snapshot,
    );
    for pool in snapshot.pools.iter().filter(|p| selected.covers(p)) {
        for message in aggregation_conflicts(new, pool) {
            verdict.deny(format!(
                "spec: {message} (IPAddressPool '{}')",
                pool.name_any()
            ));
        }
    }
    if let Some(pref) = spec.local_pref {
        for other in snapshot
            .bgp_advertisements
            .iter()
            .filter(|a| a.name_any() != new.name_any())
        {
            let Some(theirs) = other.spec.local_pref.filter(|p| *p != pref) else {
                continue;
            };
            let peers_meet = spec.peers.is_empty()
                || other.spec.peers.is_empty()
                || spec.peers.iter().any(|p| other.spec.peers.contains(p));
            let nodes_meet =
                selector_lists_intersect(&spec.node_selectors, &other.spec.node_selectors);
            // Advertisements for disjoint sets of Services never meet on a
            // route.
            let services_meet =
                selector_lists_intersect(&spec.service_selectors, &other.spec.service_selectors);
            let theirs_selected = selection(
                &other.spec.ip_address_pools,
                &other.spec.ip_address_pool_selectors,
                snapshot,
            );
            if let Some(pools) = selected.intersects(&theirs_selected)
                && peers_meet
                && nodes_meet
                && services_meet
            {
                verdict.deny(format!(
                    "spec.localPref: {pref} conflicts with BGPAdvertisement '{}' (localPref {theirs}) for {pools} to the same peers from the same nodes: a route can carry one LOCAL_PREF; make them equal or separate their peers, nodeSelectors or serviceSelectors",
                    other.name_any()
                ));
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests;
