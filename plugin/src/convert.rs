//! MetalLB configuration → `ferrolb.io` objects. Pure: text in, YAML and
//! warnings out. The same input always gives the same output; objects are
//! named after what they came from; BGP passwords go into the one Secret
//! speakers may read, never inline.

use std::collections::BTreeMap;

use ferrolb_api::constants::{BGP_PASSWORDS_SECRET, NAMESPACE};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::legacy::{self, Config};

/// The converted objects, each with the notes a reader should see above it.
#[derive(Debug, Default)]
pub struct Converted {
    /// (notes, object)
    pub objects: Vec<(Vec<String>, Value)>,
    /// Every field without an equivalent, for stderr.
    pub warnings: Vec<String>,
    /// BGP passwords by key in the passwords Secret.
    passwords: BTreeMap<String, String>,
}

impl Converted {
    /// The objects as one YAML stream, each note a comment above its object.
    pub fn to_yaml(&self) -> String {
        let mut out =
            String::from("# Converted from MetalLB configuration by kubectl ferrolb convert.\n");
        for (notes, object) in &self.objects {
            out.push_str("---\n");
            for note in notes {
                out.push_str(&format!("# {note}\n"));
            }
            out.push_str(&serde_yaml::to_string(object).expect("a JSON value is YAML"));
        }
        out
    }

    /// The passwords Secret after the objects that refer to it.
    fn finish(&mut self) {
        if self.passwords.is_empty() {
            return;
        }
        self.objects.push((
            vec!["BGP passwords, one key per BGPPeer (speakers read only this Secret)".into()],
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": BGP_PASSWORDS_SECRET, "namespace": NAMESPACE},
                "type": "Opaque",
                "stringData": std::mem::take(&mut self.passwords),
            }),
        ));
    }

    fn warn(&mut self, notes: &mut Vec<String>, text: String) {
        self.warnings.push(text.clone());
        notes.push(text);
    }
}

/// Why echo settings are left out.
pub const NO_ECHO: &str = "ferrolb runs BFD in asynchronous mode only (no echo)";

/// Converts a legacy ConfigMap (or its `config` text).
pub fn legacy(text: &str) -> Result<Converted, String> {
    let config = legacy::read(text)?;
    let mut out = from_legacy(&config, text)?;
    out.finish();
    Ok(out)
}

/// Converts what a MetalLB user has, as one YAML stream: legacy ConfigMaps
/// (any name), the text of their `config` key, Helm values with
/// `configInline`, and `metallb.io` objects.
pub fn convert(text: &str) -> Result<Converted, String> {
    let mut docs: Vec<Value> = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| format!("document {}: not YAML: {e}", i + 1))?;
        if value.is_null() {
            continue;
        }
        docs.push(serde_json::to_value(&value).map_err(|e| format!("document {}: {e}", i + 1))?);
    }
    if docs.is_empty() {
        return Err("the input is empty".into());
    }
    let aliases = crate::resources::aliases(&docs);
    let mut out = Converted::default();
    for (i, doc) in docs.iter().enumerate() {
        let api = doc["apiVersion"].as_str().unwrap_or_default();
        let part = if doc["kind"] == "ConfigMap" {
            let map = serde_yaml::to_string(doc).expect("JSON is YAML");
            from_legacy(&legacy::read(&map)?, text)?
        } else if doc.get("configInline").is_some() {
            let config: Config = serde_json::from_value(doc["configInline"].clone())
                .map_err(|e| format!("document {}: configInline: {e}", i + 1))?;
            from_legacy(&config, text)?
        } else if api.starts_with("metallb.io/") {
            let one = crate::resources::convert(doc, &aliases, text)?;
            let mut part = Converted {
                warnings: one.warnings,
                ..Converted::default()
            };
            if let Some(object) = one.object {
                part.objects.push((one.notes, object));
            }
            part.passwords.extend(one.password);
            part
        } else if doc.get("kind").is_none()
            && (doc.get("peers").is_some() || doc.get("address-pools").is_some())
        {
            // Alone, read from the text itself, so an error names its line.
            let config: Config = if docs.len() == 1 {
                legacy::read(text)?
            } else {
                serde_json::from_value(doc.clone())
                    .map_err(|e| format!("document {}: {e}", i + 1))?
            };
            from_legacy(&config, text)?
        } else {
            return Err(format!(
                "document {}: not MetalLB configuration (a legacy ConfigMap, its config, Helm values with configInline, or a metallb.io object); kind {}",
                i + 1,
                doc["kind"].as_str().unwrap_or("none")
            ));
        };
        out.objects.extend(part.objects);
        out.warnings.extend(part.warnings);
        out.passwords.extend(part.passwords);
    }
    out.finish();
    if out.objects.is_empty() {
        return Err("nothing to convert".into());
    }
    Ok(out)
}

/// A name the API accepts, from one MetalLB gave: lower case, `-` for what
/// a DNS label cannot hold.
fn name_of(source: &str) -> String {
    let mut name: String = source
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    name.trim_matches('-').chars().take(253).collect()
}

fn api(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn selector(legacy: &legacy::NodeSelector) -> Value {
    let mut out = serde_json::Map::new();
    if !legacy.match_labels.is_empty() {
        out.insert("matchLabels".into(), json!(legacy.match_labels));
    }
    if !legacy.match_expressions.is_empty() {
        out.insert(
            "matchExpressions".into(),
            legacy
                .match_expressions
                .iter()
                .map(|e| json!({"key": e.key, "operator": e.operator, "values": e.values}))
                .collect(),
        );
    }
    Value::Object(out)
}

/// One address as ferrolb writes it: a range without spaces, or as given.
/// One pool entry as ferrolb writes it (a range's ends without spaces),
/// refused when ferrolb would refuse it: `at` names the field, and the
/// error gives the entry's line in `source` (the input) and, when the entry
/// holds two addresses joined some other way (`A ~ B`, `A to B`), the range
/// to write instead.
pub fn pool_address(entry: &str, at: &str, source: &str) -> Result<String, String> {
    let written = match entry.split_once('-') {
        Some((a, b)) if !entry.contains('/') => format!("{}-{}", a.trim(), b.trim()),
        _ => entry.trim().to_string(),
    };
    let Err(e) = ferrolb_api::address::parse_pool_entry(&written) else {
        return Ok(written);
    };
    let line = source
        .lines()
        .position(|l| l.contains(entry.trim()))
        .map(|n| format!(" (line {} of the input)", n + 1))
        .unwrap_or_default();
    let ends: Vec<std::net::IpAddr> = entry
        .split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .filter_map(|t| t.parse().ok())
        .collect();
    let instead = match ends.as_slice() {
        [a, b] => format!("; here that is {a}-{b}"),
        _ => String::new(),
    };
    Err(format!("{at}{line}: {e}{instead}"))
}

fn from_legacy(config: &Config, source: &str) -> Result<Converted, String> {
    let mut out = Converted::default();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut unique = |kind: &str, name: String, source: &str| -> Result<String, String> {
        if let Some(other) = seen.insert(format!("{kind}/{name}"), source.to_string()) {
            return Err(format!(
                "{source} and {other} both become {kind} {name}: rename one"
            ));
        }
        Ok(name)
    };

    // Pools, then what advertises them.
    let mut advertisements = Vec::new();
    for (i, pool) in config.address_pools.iter().enumerate() {
        let at = format!("address-pools[{i}] ({})", pool.name);
        let name = unique("IPAddressPool", name_of(&pool.name), &at)?;
        if name.is_empty() {
            return Err(format!(
                "{at}: the name has nothing a Kubernetes name can hold"
            ));
        }
        let mut notes = vec![format!("from address-pools[{i}] `{}`", pool.name)];
        if name != pool.name {
            out.warn(
                &mut notes,
                format!(
                    "{at}: named {name} (Kubernetes names are lower case, letters, digits and -)"
                ),
            );
        }
        if pool.addresses.is_empty() {
            return Err(format!("{at}.addresses: no addresses"));
        }
        let addresses = pool
            .addresses
            .iter()
            .enumerate()
            .map(|(j, a)| pool_address(a, &format!("{at}.addresses[{j}]"), source))
            .collect::<Result<Vec<_>, _>>()?;
        let mut spec = json!({ "addresses": addresses });
        if pool.avoid_buggy_ips {
            spec["avoidBuggyIPs"] = json!(true);
        }
        if pool.auto_assign == Some(false) {
            spec["autoAssign"] = json!(false);
        }
        out.objects.push((notes, api("IPAddressPool", &name, spec)));
        match pool.protocol.as_str() {
            "layer2" | "arp" | "ndp" => {
                let mut notes = vec![format!("layer 2 for address-pools[{i}] `{}`", pool.name)];
                if pool.protocol != "layer2" {
                    out.warn(
                        &mut notes,
                        format!("{at}.protocol: `{}` is MetalLB's old spelling of layer2; both ARP and NDP are answered", pool.protocol),
                    );
                }
                if !pool.bgp_advertisements.is_empty() {
                    out.warn(&mut notes, format!("{at}.bgp-advertisements: ignored for a layer 2 pool (MetalLB ignored them too)"));
                }
                let adv = unique("L2Advertisement", name.clone(), &at)?;
                advertisements.push((
                    notes,
                    api("L2Advertisement", &adv, json!({"ipAddressPools": [name]})),
                ));
            }
            "bgp" => {
                let defaults = [legacy::Advertisement {
                    aggregation_length: None,
                    aggregation_length_v6: None,
                    localpref: None,
                    communities: Vec::new(),
                }];
                let list = if pool.bgp_advertisements.is_empty() {
                    &defaults[..]
                } else {
                    &pool.bgp_advertisements[..]
                };
                for (j, adv) in list.iter().enumerate() {
                    let at = format!("{at}.bgp-advertisements[{j}]");
                    let adv_name = if list.len() == 1 {
                        name.clone()
                    } else {
                        format!("{name}-{j}")
                    };
                    let adv_name = unique("BGPAdvertisement", adv_name, &at)?;
                    let mut spec = json!({"ipAddressPools": [name]});
                    if let Some(len) = adv.aggregation_length {
                        spec["aggregationLength"] = json!(len);
                    }
                    if let Some(len) = adv.aggregation_length_v6 {
                        spec["aggregationLengthV6"] = json!(len);
                    }
                    if let Some(pref) = adv.localpref {
                        spec["localPref"] = json!(pref);
                    }
                    let mut communities = Vec::new();
                    for (k, community) in adv.communities.iter().enumerate() {
                        let value = config.bgp_communities.get(community).unwrap_or(community);
                        if ferrolb_api::community::Community::parse(value).is_err() {
                            return Err(format!(
                                "{at}.communities[{k}]: `{community}` is neither a community (65000:1, large:1:2:3) nor a name in bgp-communities"
                            ));
                        }
                        communities.push(value.clone());
                    }
                    if !communities.is_empty() {
                        spec["communities"] = json!(communities);
                    }
                    let notes = vec![format!(
                        "BGP for address-pools[{i}] `{}`, bgp-advertisements[{j}]",
                        pool.name
                    )];
                    advertisements.push((notes, api("BGPAdvertisement", &adv_name, spec)));
                }
            }
            other => {
                return Err(format!(
                    "{at}.protocol: `{other}` is not layer2, bgp, arp or ndp"
                ));
            }
        }
    }
    out.objects.extend(advertisements);

    // Profiles before the peers naming them.
    for (i, profile) in config.bfd_profiles.iter().enumerate() {
        let at = format!("bfd-profiles[{i}] ({})", profile.name);
        let name = unique("BFDProfile", name_of(&profile.name), &at)?;
        let mut notes = vec![format!("from {at}")];
        let mut spec = json!({});
        for (field, value) in [
            ("receiveInterval", profile.receive_interval),
            ("transmitInterval", profile.transmit_interval),
            ("detectMultiplier", profile.detect_multiplier),
            ("minimumTtl", profile.minimum_ttl),
        ] {
            if let Some(value) = value {
                spec[field] = json!(value);
            }
        }
        if let Some(passive) = profile.passive_mode {
            spec["passiveMode"] = json!(passive);
        }
        if profile.echo_mode == Some(true) || profile.echo_interval.is_some() {
            out.warn(
                &mut notes,
                format!("{at}: echo-mode/echo-interval: {NO_ECHO}; left out"),
            );
        }
        out.objects.push((notes, api("BFDProfile", &name, spec)));
    }
    let mut passwords: BTreeMap<String, String> = BTreeMap::new();
    for (i, peer) in config.peers.iter().enumerate() {
        let at = format!("peers[{i}] ({})", peer.peer_address);
        let name = unique(
            "BGPPeer",
            name_of(&format!("peer-{}", peer.peer_address)),
            &at,
        )?;
        let mut notes = vec![format!(
            "from peers[{i}], {} AS {}",
            peer.peer_address, peer.peer_asn
        )];
        let mut spec = json!({
            "myASN": peer.my_asn,
            "peerASN": peer.peer_asn,
            "peerAddress": peer.peer_address,
        });
        if let Some(port) = peer.peer_port {
            spec["peerPort"] = json!(port);
        }
        if let Some(hold) = &peer.hold_time {
            spec["holdTime"] = json!(hold);
        }
        if let Some(keepalive) = &peer.keepalive_time {
            spec["keepaliveTime"] = json!(keepalive);
        }
        if let Some(id) = &peer.router_id {
            spec["routerID"] = json!(id);
        }
        if let Some(source) = &peer.source_address {
            spec["sourceAddress"] = json!(source);
        }
        if peer.ebgp_multihop == Some(true) {
            spec["ebgpMultiHop"] = json!(true);
        }
        if !peer.node_selectors.is_empty() {
            spec["nodeSelectors"] = peer.node_selectors.iter().map(selector).collect();
        }
        if let Some(password) = &peer.password {
            passwords.insert(name.clone(), password.clone());
            spec["passwordSecretRef"] = json!({"name": BGP_PASSWORDS_SECRET, "key": name});
            notes.push(format!(
                "its password is in Secret {NAMESPACE}/{BGP_PASSWORDS_SECRET}, key {name}"
            ));
        }
        if let Some(profile) = &peer.bfd_profile {
            spec["bfdProfile"] = json!(name_of(profile));
        }
        out.objects.push((notes, api("BGPPeer", &name, spec)));
    }
    out.passwords = passwords;
    if out.objects.is_empty() {
        return Err(
            "the configuration has no peers and no address-pools: nothing to convert".into(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_kubernetes_names() {
        assert_eq!(name_of("My_IP Space"), "my-ip-space");
        assert_eq!(name_of("peer-10.0.0.1"), "peer-10-0-0-1");
        assert_eq!(name_of("peer-fd00::1"), "peer-fd00-1");
    }

    #[test]
    fn a_range_loses_its_spaces_and_a_cidr_stays() {
        let address = |a: &str| pool_address(a, "here", "").expect(a);
        assert_eq!(
            address("192.168.1.240 - 192.168.1.250"),
            "192.168.1.240-192.168.1.250"
        );
        assert_eq!(address(" 10.0.0.0/24"), "10.0.0.0/24");
        assert_eq!(address("fd00::1-fd00::9"), "fd00::1-fd00::9");
        assert_eq!(address("10.0.0.7"), "10.0.0.7");
    }

    #[test]
    fn an_entry_ferrolb_would_refuse_is_refused_with_its_line_and_what_to_write() {
        let config = "address-pools:\n- name: lan\n  protocol: layer2\n  addresses:\n  - 10.0.0.0/24\n  - 172.17.30.171 ~ 172.17.30.179\n";
        let error = legacy(config).unwrap_err();
        for part in [
            "address-pools[0] (lan).addresses[1]",
            "line 6 of the input",
            "'172.17.30.171 ~ 172.17.30.179' is not an address",
            "here that is 172.17.30.171-172.17.30.179",
        ] {
            assert!(error.contains(part), "{part}: {error}");
        }
        for (entry, wanted) in [
            ("10.0.0.1/24", "host bits"),
            ("10.0.0.9-10.0.0.1", "10.0.0.9-10.0.0.1"),
            ("10.0.0.1-fd00::1", "10.0.0.1-fd00::1"),
            ("pool-a", "is not an address"),
        ] {
            let error = pool_address(entry, "x", "").unwrap_err();
            assert!(error.contains(wanted), "{entry}: {error}");
        }
    }

    #[test]
    fn a_metallb_peer_local_asn_becomes_its_my_asn_and_dual_stack_is_kept() {
        let text = "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: tor, namespace: metallb-system}\nspec: {myASN: 64512, localASN: 64600, dynamicASN: external, peerAddress: 10.0.0.1, dualStackAddressFamily: true}\n";
        let out = convert(text).unwrap();
        let (notes, peer) = &out.objects[0];
        assert_eq!(peer["spec"]["myASN"], 64600);
        assert!(peer["spec"].get("localASN").is_none());
        assert_eq!(peer["spec"]["dynamicASN"], "external");
        assert_eq!(peer["spec"]["dualStackAddressFamily"], true);
        assert!(
            notes
                .iter()
                .any(|n| n.contains("localASN 64600 is this peer's myASN")),
            "{notes:?}"
        );
    }

    #[test]
    fn a_metallb_io_pool_entry_is_checked_too() {
        let text = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan, namespace: metallb-system}\nspec:\n  addresses:\n  - 10.0.0.1 to 10.0.0.9\n";
        let error = convert(text).unwrap_err();
        assert!(
            error.contains("IPAddressPool lan: spec.addresses[0] (line 6 of the input)")
                && error.contains("here that is 10.0.0.1-10.0.0.9"),
            "{error}"
        );
    }

    #[test]
    fn what_cannot_be_read_is_an_error_naming_the_place() {
        let cases = [
            (
                "address-pools:\n- name: a\n  protocol: layer2\n  adresses: [10.0.0.0/24]\n",
                "unknown field `adresses`",
            ),
            (
                "address-pools:\n- name: a\n  protocol: vrrp\n  addresses: [10.0.0.0/24]\n",
                "address-pools[0] (a).protocol: `vrrp`",
            ),
            (
                "address-pools:\n- name: a\n  protocol: bgp\n  addresses: [10.0.0.0/24]\n  bgp-advertisements:\n  - communities: [nope]\n",
                "address-pools[0] (a).bgp-advertisements[0].communities[0]: `nope`",
            ),
            ("peers: []\n", "nothing to convert"),
            ("", "empty"),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config}\ndata: {}\n",
                "no data.config",
            ),
            (
                "address-pools:\n- name: A\n  protocol: layer2\n  addresses: [10.0.0.0/24]\n- name: a\n  protocol: layer2\n  addresses: [10.0.1.0/24]\n",
                "both become IPAddressPool a",
            ),
        ];
        for (text, wanted) in cases {
            let error = legacy(text).expect_err(text);
            assert!(error.contains(wanted), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_line_of_an_unknown_key_is_named() {
        let error = legacy(
            "peers:\n- my-asn: 1\n  peer-asn: 2\n  peer-address: 10.0.0.1\n  hold-tme: 90s\n",
        )
        .unwrap_err();
        assert!(
            error.contains("hold-tme") && error.contains("line 5"),
            "{error}"
        );
    }
}
