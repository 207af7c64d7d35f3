//! `PrefixSet`: one shard of the prefixes a BGPAdvertisement makes every
//! selected node advertise, written by the operator and read by the speakers.
//!
//! Prefixes of Services with `externalTrafficPolicy: Cluster` are advertised
//! by every node an advertisement selects, so they are not copied into each
//! node's NodeAnnouncement: a session there names the advertisements it
//! carries (`spec.bgp[].advertisements`) and the speaker takes their prefixes
//! from the PrefixSets of those advertisements. A Service change rewrites the
//! one shard holding its prefix, whatever the number of nodes; the number of
//! shards grows with the number of prefixes, so no object nears the size
//! limits.

use std::collections::{BTreeMap, BTreeSet};

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::cel;
use crate::nodeannouncement::{AdvertisedPrefix, BgpSession};

/// The label carrying the advertisement a PrefixSet belongs to (for
/// `kubectl get prefixsets -l ferrolb.io/advertisement=NAME`).
pub const ADVERTISEMENT_LABEL: &str = "ferrolb.io/advertisement";

/// The most prefixes one shard may hold (the operator aims at far fewer).
pub const MAX_PREFIXES: u64 = 4096;

/// One shard of an advertisement's shared prefixes, with their path
/// attributes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "PrefixSet",
    plural = "prefixsets",
    category = "ferrolb",
    doc = "Prefixes every node selected by a BGPAdvertisement advertises (one shard), written by the operator.",
    printcolumn(
        name = "Advertisement",
        type_ = "string",
        json_path = ".spec.advertisement"
    ),
    printcolumn(name = "Shard", type_ = "integer", json_path = ".spec.shard"),
    printcolumn(name = "Of", type_ = "integer", json_path = ".spec.shards"),
    printcolumn(name = "Prefixes", type_ = "integer", json_path = ".spec.count"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PrefixSetSpec {
    /// The BGPAdvertisement whose prefixes these are.
    #[schemars(schema_with = "cel::name_string")]
    pub advertisement: String,
    /// This shard's number, from 0.
    pub shard: u32,
    /// How many shards the advertisement's prefixes are spread over.
    pub shards: u32,
    /// How many prefixes this shard holds (for `kubectl get`).
    pub count: u32,
    /// Standard and large communities of every prefix here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 40)))]
    pub communities: Vec<String>,
    /// LOCAL_PREF of every prefix here, for iBGP sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::local_pref")]
    pub local_pref: Option<u32>,
    /// The prefixes, such as `172.20.1.5/32` or `fd00::5/128`; each session
    /// takes those of its peer's family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "prefix_set")]
    pub prefixes: Vec<String>,
}

fn prefix_set(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": MAX_PREFIXES,
        "x-kubernetes-list-type": "set",
        "items": { "type": "string", "maxLength": 49 },
    })
}

/// Prefixes with their path attributes merged as both sides merge them: a
/// prefix found several times (overlapping advertisements) keeps every
/// community and the highest LOCAL_PREF.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergedPrefixes(BTreeMap<String, (BTreeSet<String>, Option<u32>)>);

impl MergedPrefixes {
    /// Adds a prefix with its attributes, merging them with any already there.
    pub fn add(&mut self, prefix: &str, communities: &[String], local_pref: Option<u32>) {
        let entry = self.0.entry(prefix.to_string()).or_default();
        entry.0.extend(communities.iter().cloned());
        entry.1 = entry.1.max(local_pref);
    }

    /// The prefixes, sorted, as a NodeAnnouncement lists them.
    pub fn into_prefixes(self) -> Vec<AdvertisedPrefix> {
        self.0
            .into_iter()
            .map(|(prefix, (communities, local_pref))| AdvertisedPrefix {
                prefix,
                communities: communities.into_iter().collect(),
                local_pref,
            })
            .collect()
    }
}

/// How a speaker reads the PrefixSets: it keeps those it has seen and
/// [`SharedPrefixes::resolve`] turns a NodeAnnouncement's sessions into
/// sessions with every prefix they carry.
///
/// The PrefixSets seen, by advertisement and object name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SharedPrefixes {
    by_advertisement: BTreeMap<String, BTreeMap<String, PrefixSetSpec>>,
    /// Object name → its advertisement, to find it again on delete.
    names: BTreeMap<String, String>,
}

impl SharedPrefixes {
    /// A PrefixSet created or changed. Returns whether anything changed.
    pub fn set(&mut self, name: &str, spec: PrefixSetSpec) -> bool {
        if let Some(old) = self.names.get(name)
            && *old != spec.advertisement
        {
            let old = old.clone();
            self.remove_from(&old, name);
        }
        self.names
            .insert(name.to_string(), spec.advertisement.clone());
        let shards = self
            .by_advertisement
            .entry(spec.advertisement.clone())
            .or_default();
        if shards.get(name) == Some(&spec) {
            return false;
        }
        shards.insert(name.to_string(), spec);
        true
    }

    /// A PrefixSet deleted. Returns whether it was known.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.names.remove(name) {
            Some(advertisement) => {
                self.remove_from(&advertisement, name);
                true
            }
            None => false,
        }
    }

    /// Replaces everything (a watch that listed anew).
    pub fn replace(&mut self, all: impl IntoIterator<Item = (String, PrefixSetSpec)>) {
        *self = SharedPrefixes::default();
        for (name, spec) in all {
            self.set(&name, spec);
        }
    }

    fn remove_from(&mut self, advertisement: &str, name: &str) {
        if let Some(shards) = self.by_advertisement.get_mut(advertisement) {
            shards.remove(name);
            if shards.is_empty() {
                self.by_advertisement.remove(advertisement);
            }
        }
    }

    /// How many prefixes the PrefixSets hold in all.
    pub fn len(&self) -> usize {
        self.by_advertisement
            .values()
            .flat_map(|shards| shards.values())
            .map(|s| s.prefixes.len())
            .sum()
    }

    /// Whether no PrefixSet is known.
    pub fn is_empty(&self) -> bool {
        self.by_advertisement.is_empty()
    }

    /// The sessions with the shared prefixes of the advertisements each names
    /// (those of the peer's family) added to its own. A prefix found several
    /// times keeps every community and the highest LOCAL_PREF, as the
    /// operator merges overlapping advertisements.
    pub fn resolve(&self, sessions: &[BgpSession]) -> Vec<BgpSession> {
        sessions
            .iter()
            .map(|session| {
                if session.advertisements.is_empty() {
                    return session.clone();
                }
                let mut merged = MergedPrefixes::default();
                for p in &session.prefixes {
                    merged.add(&p.prefix, &p.communities, p.local_pref);
                }
                for advertisement in &session.advertisements {
                    let Some(shards) = self.by_advertisement.get(advertisement) else {
                        continue;
                    };
                    for set in shards.values() {
                        for prefix in set
                            .prefixes
                            .iter()
                            .filter(|p| session.carries_family(p.contains(':')))
                        {
                            merged.add(prefix, &set.communities, set.local_pref);
                        }
                    }
                }
                let mut resolved = session.clone();
                resolved.advertisements.clear();
                resolved.prefixes = merged.into_prefixes();
                resolved
            })
            .collect()
    }
}

#[cfg(test)]
mod resolve_tests {
    use super::*;

    fn session(name: &str, peer: &str, advertisements: &[&str]) -> BgpSession {
        let mut session: BgpSession = serde_json::from_value(serde_json::json!({
            "name": name, "myASN": 64512, "peerASN": 64500,
            "peerAddress": peer, "peerPort": 179,
            "holdTime": "90s", "keepaliveTime": "30s", "connectTime": "10s",
        }))
        .unwrap();
        session.advertisements = advertisements.iter().map(|a| a.to_string()).collect();
        session
    }

    fn set(advertisement: &str, shard: u32, prefixes: &[&str]) -> PrefixSetSpec {
        PrefixSetSpec {
            advertisement: advertisement.to_string(),
            shard,
            shards: 2,
            count: prefixes.len() as u32,
            communities: Vec::new(),
            local_pref: None,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn prefixes(session: &BgpSession) -> Vec<&str> {
        session.prefixes.iter().map(|p| p.prefix.as_str()).collect()
    }

    #[test]
    fn a_session_carries_every_shard_of_its_advertisements_in_its_family() {
        let mut shared = SharedPrefixes::default();
        shared.set("a-0", set("a", 0, &["172.20.0.5/32", "fd20::5/128"]));
        shared.set("a-1", set("a", 1, &["172.20.0.6/32"]));
        shared.set("b-0", set("b", 0, &["172.30.0.1/32"]));
        let mut v4 = session("v4", "10.0.0.1", &["a"]);
        v4.prefixes.push(AdvertisedPrefix {
            prefix: "172.20.9.9/32".into(),
            communities: vec![],
            local_pref: None,
        });
        let resolved = shared.resolve(&[
            v4,
            session("v6", "fd00::1", &["a"]),
            session("none", "10.0.0.2", &[]),
        ]);
        assert_eq!(
            prefixes(&resolved[0]),
            vec!["172.20.0.5/32", "172.20.0.6/32", "172.20.9.9/32"]
        );
        assert!(resolved[0].advertisements.is_empty());
        assert_eq!(prefixes(&resolved[1]), vec!["fd20::5/128"]);
        assert!(prefixes(&resolved[2]).is_empty());
        // With dualStackAddressFamily, an IPv4 session carries both families.
        let mut both = session("both", "10.0.0.3", &["a"]);
        both.dual_stack_address_family = true;
        let resolved = shared.resolve(&[both]);
        assert_eq!(
            prefixes(&resolved[0]),
            vec!["172.20.0.5/32", "172.20.0.6/32", "fd20::5/128"]
        );
    }

    #[test]
    fn overlapping_advertisements_merge_communities_and_take_the_highest_local_pref() {
        let mut shared = SharedPrefixes::default();
        let mut a = set("a", 0, &["172.20.0.0/24"]);
        a.communities = vec!["65000:1".into()];
        a.local_pref = Some(100);
        let mut b = set("b", 0, &["172.20.0.0/24"]);
        b.communities = vec!["65000:2".into()];
        b.local_pref = Some(200);
        shared.set("a-0", a);
        shared.set("b-0", b);
        let resolved = shared.resolve(&[session("r", "10.0.0.1", &["a", "b"])]);
        assert_eq!(resolved[0].prefixes.len(), 1);
        assert_eq!(
            resolved[0].prefixes[0].communities,
            vec!["65000:1", "65000:2"]
        );
        assert_eq!(resolved[0].prefixes[0].local_pref, Some(200));
    }

    #[test]
    fn a_deleted_or_moved_shard_takes_its_prefixes_with_it() {
        let mut shared = SharedPrefixes::default();
        assert!(shared.set("a-0", set("a", 0, &["172.20.0.5/32"])));
        assert!(
            !shared.set("a-0", set("a", 0, &["172.20.0.5/32"])),
            "unchanged"
        );
        assert_eq!(shared.len(), 1);
        assert!(shared.set("a-0", set("b", 0, &["172.20.0.5/32"])));
        let resolved = shared.resolve(&[session("r", "10.0.0.1", &["a"])]);
        assert!(prefixes(&resolved[0]).is_empty(), "it moved to b");
        assert!(shared.remove("a-0"));
        assert!(!shared.remove("a-0"));
        assert!(shared.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_crd_caps_a_shard_and_shows_its_count() {
        let crd = serde_json::to_value(PrefixSet::crd()).unwrap();
        let version = &crd["spec"]["versions"][0];
        let prefixes =
            &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["prefixes"];
        assert_eq!(prefixes["maxItems"], MAX_PREFIXES);
        assert_eq!(prefixes["x-kubernetes-list-type"], "set");
        assert!(
            version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == "Prefixes")
        );
        assert_eq!(crd["spec"]["scope"], "Cluster");
    }
}
